"""The pipeline at the HW4 homework's real size: wall time, peak memory and disk per stage.

    python bench/hw4_scale.py make DATA_DIR          # write the HW4-format folder (~6.6 GB)
    python bench/hw4_scale.py make TINY_DIR --speakers 40 --labelled 800 --test 80  # the baseline
    python bench/hw4_scale.py run DATA_DIR [--set train.steps=300] [--project DIR] [--keep]

`make` writes a folder in the exact Kaggle HW4 format (mapping.json, metadata.json,
testdata.json, uttr-*.pt) at the homework's size: 600 speakers, 56,666 labelled and 4,000
test utterances, lengths drawn like VoxCeleb2 utterances (log-normal, 1.3 to 20 s, about
41 M frames in all). Each speaker's frames are a speaker-specific mean plus noise, so
training has something to learn; the figures that matter here are resources, not EER.

`run` copies the project (or `--project DIR`, e.g. a checkout of an older commit) into a
temporary git repository, points `data.source: hw4` at the folder and runs each stage
with `dvc repro --single-item STAGE`, in order. For each it prints the wall time, the
peak resident memory of the stage's process (anonymous memory, which is what grows with
the data: the page cache behind memory-mapped files is reclaimable and not counted; the
peak VmRSS including it is printed beside it), and the disk used by `data/` and
`.dvc/cache` (hard-linked files counted once). Run it with the project's virtual
environment active (`spkid` and `dvc` on PATH)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import make_and_run_parsers, measured_stage, scratch_repo  # noqa: E402
from bench.pipeline import STAGES  # noqa: E402

SPEAKERS, LABELLED, TEST, N_MELS = 600, 56_666, 4_000, 40
MIN_S, MAX_S, MEDIAN_S = 1.3, 20.0, 5.9  # median tuned so the total is about 41 M frames


def make(folder: Path, speakers: int = SPEAKERS, labelled: int = LABELLED, test: int = TEST,
         seed: int = 0) -> None:
    import torch

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = labelled + test
    seconds = np.clip(rng.lognormal(np.log(MEDIAN_S), 0.6, n), MIN_S, MAX_S)
    frames = (seconds * 100).astype(int)
    speaker_of = np.concatenate([np.arange(labelled) % speakers, rng.integers(0, speakers, test)])
    means = rng.normal(0, 1.0, (speakers, N_MELS)).astype(np.float32) - 4.0
    names = [f"id{10000 + k:05d}" for k in range(speakers)]
    meta = {name: [] for name in names}
    unlabelled = []
    for k in range(n):
        x = means[speaker_of[k]] + rng.standard_normal((frames[k], N_MELS), dtype=np.float32)
        name = f"uttr-{k:08x}.pt"
        torch.save(torch.from_numpy(x), folder / name)
        item = {"feature_path": name, "mel_len": int(frames[k])}
        (meta[names[speaker_of[k]]] if k < labelled else unlabelled).append(item)
        if k % 5000 == 0:
            print(f"{k}/{n} utterances", flush=True)
    (folder / "mapping.json").write_text(json.dumps({
        "speaker2id": {s: i for i, s in enumerate(names)},
        "id2speaker": {str(i): s for i, s in enumerate(names)}}))
    (folder / "metadata.json").write_text(json.dumps({"n_mels": N_MELS, "speakers": meta}))
    (folder / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": unlabelled}))
    print(f"{n} utterances, {int(frames.sum())} frames ({frames.sum() * N_MELS * 4 / 2**30:.2f} "
          f"GiB as float32) in {folder}")


def run(folder: Path, project: Path, overrides: list[str], keep: bool, workdir: Path | None) -> int:
    settings = {"data.source": "hw4", "data.path": str(folder)}
    with scratch_repo(project, settings, overrides, workdir, "spkid-hw4scale-", keep) as (repo, env):
        total = time.perf_counter()
        rows = [measured_stage(repo, env, stage) for stage in STAGES]
        print(f"total     {time.perf_counter() - total:7.1f} s")
        for name in ("eval.json", "train.json"):
            print(name, (repo / "metrics" / name).read_text())
        print(json.dumps(rows))
    return 0


def main() -> int:
    ap, mk, rn = make_and_run_parsers(__doc__, "write the HW4-format folder")
    mk.add_argument("--speakers", type=int, default=SPEAKERS)
    mk.add_argument("--labelled", type=int, default=LABELLED)
    mk.add_argument("--test", type=int, default=TEST)
    rn.add_argument("--project", type=Path, default=ROOT, help="source tree to run (default: this one)")
    rn.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.folder, args.speakers, args.labelled, args.test)
        return 0
    if shutil.which("dvc") is None or shutil.which("spkid") is None:
        raise SystemExit("dvc and spkid must be on PATH (activate the project's virtual environment)")
    return run(args.folder.absolute(), args.project.absolute(), args.overrides, args.keep,
               args.workdir)


if __name__ == "__main__":
    sys.exit(main())
