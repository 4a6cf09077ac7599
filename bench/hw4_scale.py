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

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.pipeline import STAGES, copy_project, git  # noqa: E402
from spkid.core.recipes import apply, parse_override  # noqa: E402

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


class PeakMemory:
    """Polls /proc for the spkid processes under a PID: the peak of their summed anonymous
    resident memory (RssAnon + RssShmem) and of their VmRSS."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.anon = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d.name))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            anon = rss = 0
            for p in self._descendants():
                try:
                    if b"spkid" not in Path(f"/proc/{p}/cmdline").read_bytes():
                        continue
                    status = Path(f"/proc/{p}/status").read_text().splitlines()
                except OSError:
                    continue
                kb = {line.split(":")[0]: int(line.split()[1]) for line in status
                      if line.startswith(("RssAnon", "RssShmem", "VmRSS"))}
                anon += kb.get("RssAnon", 0) + kb.get("RssShmem", 0)
                rss += kb.get("VmRSS", 0)
            self.anon, self.rss = max(self.anon, anon * 1024), max(self.rss, rss * 1024)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def disk(repo: Path) -> dict[str, int]:
    def du(*paths: str) -> int:
        existing = [p for p in paths if (repo / p).exists()]
        if not existing:
            return 0
        out = subprocess.run(["du", "-s", "-B1", "-c", *existing], cwd=repo,
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[-1].split()[0])
    return {"data": du("data"), "cache": du(".dvc/cache"), "both": du("data", ".dvc/cache")}


def run(folder: Path, project: Path, overrides: list[str], keep: bool, workdir: Path | None) -> int:
    import yaml

    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
           "DVC_NO_ANALYTICS": "1"}
    if project != ROOT:  # run that tree's code, not the installed one
        env["PYTHONPATH"] = str(project)
    repo = Path(tempfile.mkdtemp(prefix="spkid-hw4scale-", dir=workdir))
    rows = []
    try:
        git(["init", "-q", "-b", "main"], repo, env)
        copy_project(repo, project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params = apply(params, {"data.source": "hw4", "data.path": str(folder)})
        params = apply(params, dict(parse_override(item) for item in overrides))
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git(["add", "-A"], repo, env)
        git(["commit", "-q", "-m", "bench"], repo, env)
        print(f"repository {repo}; code {project}; {os.cpu_count()} CPUs", flush=True)
        total = time.perf_counter()
        for stage in STAGES:
            started = time.perf_counter()
            proc = subprocess.Popen(["dvc", "repro", "--single-item", stage], cwd=repo, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            peak = PeakMemory(proc.pid)
            out, _ = proc.communicate()
            peak.stop()
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                print(out[-4000:], file=sys.stderr)
                print(f"{stage} failed with status {proc.returncode}", file=sys.stderr)
                return proc.returncode
            summary = next((line.split("\r")[-1] for line in out.splitlines()
                            if line.split("\r")[-1].startswith(f"[{stage}]")), "")
            used = disk(repo)
            rows.append({"stage": stage, "wall_s": round(wall, 1), "peak_anon": peak.anon,
                         "peak_rss": peak.rss, **{f"disk_{k}": v for k, v in used.items()},
                         "summary": summary})
            print(f"{stage:<9} {wall:7.1f} s  anon {peak.anon / 2**30:5.2f} GiB  "
                  f"rss {peak.rss / 2**30:5.2f} GiB  data {used['data'] / 2**30:5.2f} GiB  "
                  f"cache {used['cache'] / 2**30:5.2f} GiB  both {used['both'] / 2**30:5.2f} GiB"
                  f"\n          {summary}", flush=True)
        print(f"total     {time.perf_counter() - total:7.1f} s")
        for name in ("eval.json", "train.json"):
            print(name, (repo / "metrics" / name).read_text())
        print(json.dumps(rows))
        return 0
    finally:
        if keep:
            print(f"kept {repo}")
        else:
            shutil.rmtree(repo, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="write the HW4-format folder")
    mk.add_argument("folder", type=Path)
    mk.add_argument("--speakers", type=int, default=SPEAKERS)
    mk.add_argument("--labelled", type=int, default=LABELLED)
    mk.add_argument("--test", type=int, default=TEST)
    rn = sub.add_parser("run", help="run the pipeline on it, stage by stage")
    rn.add_argument("folder", type=Path)
    rn.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rn.add_argument("--project", type=Path, default=ROOT, help="source tree to run (default: this one)")
    rn.add_argument("--keep", action="store_true", help="keep the temporary repository")
    rn.add_argument("--workdir", type=Path, help="parent folder of the temporary repository")
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
