"""VAD at embedding time (spkid.features.vad) on recordings padded with long silences.

    python bench/vad.py ../shared/data/librispeech-125 --out bench/vad.json

bench/unseen_cv.py's first fold: the default model trained on 100 LibriSpeech-125
speakers (`--steps`), the other 25 held out, their recordings cut into 3 s pieces. Every
piece is scored (every same- and different-speaker pair a trial, as `data.verify_dir`):

* clean: as it is;
* padded, silence: `--pad` seconds of digital silence before and after (half each side);
* padded, low noise: the same length of white noise 30 dB under the piece's level;

each as it is and after `speech_only` (the speech Silero VAD finds, concatenated), so
the EER with and without VAD compare on the same trials. 95 % intervals: 1,000 bootstrap
rounds over held-out speakers (spkid.scoring.bootstrap), differences paired."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from recipes import run  # noqa: E402
from unseen_cv import PROTOCOL, folds_of, prepare_fold, trial_scores  # noqa: E402

from spkid.core.params import defaults  # noqa: E402
from spkid.core.recipes import apply  # noqa: E402
from spkid.features.vad import speech_only  # noqa: E402
from spkid.scoring.bootstrap import interval, replicates, speaker_weights  # noqa: E402
from spkid.scoring.metrics import eer  # noqa: E402

ROUNDS = 1000
NOISE_DB = 30.0


def pad(wave: np.ndarray, rate: int, seconds: float, kind: str, rng) -> np.ndarray:
    n = int(seconds * rate / 2)
    if kind == "silence":
        return np.concatenate([np.zeros(n), wave, np.zeros(n)]).astype(np.float32)
    level = np.sqrt(np.mean(wave.astype(np.float64) ** 2)) * 10 ** (-NOISE_DB / 20)
    return np.concatenate([level * rng.standard_normal(n), wave,
                           level * rng.standard_normal(n)]).astype(np.float32)


def conditions(clean: Path, out: Path, seconds: float) -> dict[str, dict]:
    """Folders of the pieces of `clean` under each condition, with and without VAD; the
    seconds VAD kept of each."""
    made = {}
    for path in sorted(clean.rglob("*.wav")):
        wave, rate = sf.read(path, dtype="float32")
        rng = np.random.default_rng([7, *path.name.encode()])
        for name, w in (("clean", wave), ("padded, silence", pad(wave, rate, seconds, "silence", rng)),
                        ("padded, low noise", pad(wave, rate, seconds, "noise", rng))):
            for vad, v in ((False, w), (True, speech_only(w, rate))):
                key = f"{name}{', VAD' if vad else ''}"
                entry = made.setdefault(key, {"folder": out / key.replace(", ", "-").replace(" ", "_"),
                                              "seconds": []})
                (entry["folder"] / path.parent.name).mkdir(parents=True, exist_ok=True)
                sf.write(entry["folder"] / path.parent.name / path.name, v, rate)
                entry["seconds"].append(len(v) / rate)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--pad", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "vad.json")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    speakers = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    held = folds_of(speakers, 5, 0)[0]
    state = {"protocol": {**PROTOCOL, "steps": args.steps, "pad_seconds": args.pad,
                          "noise_db_under_speech": NOISE_DB, "held_out_speakers": len(held),
                          "bootstrap_rounds": ROUNDS}, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_fold(args.data.resolve(), tmp / "audio", held, 3.0, 0)
        started = time.perf_counter()
        made = conditions(tmp / "audio" / "verify-clean", tmp / "pieces", args.pad)
        print(f"padding and VAD: {time.perf_counter() - started:.0f} s", flush=True)
        project = tmp / "project"
        project.mkdir()
        got = {}
        for k, (name, entry) in enumerate(made.items()):
            params = apply(defaults(), {
                **PROTOCOL, "data.path": str(tmp / "audio" / "train"),
                "data.verify_dir": str(entry["folder"]), "train.steps": args.steps,
                "train.valid_every": max(1, args.steps // 10),
                "train.warmup_steps": max(1, args.steps // 10)})
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            for stage in (["download", "features", "index", "train"] if k == 0 else ["download"]):
                run(["spkid", stage], project, env)
            run(["spkid", "evaluate"], project, env)
            got[name] = trial_scores(project)
            print(f"{name}: EER {100 * eer(got[name]['scores'], got[name]['labels'])[0]:.2f} %",
                  flush=True)
        for name, t in got.items():
            draw = lambda rng, t=t: speaker_weights(rng, t["a"], t["b"])  # noqa: E731
            score = lambda w, t=t: eer(t["scores"], t["labels"], w)[0]  # noqa: E731
            r = {"eer": score(None), "eer_ci95": interval(replicates(score, draw, ROUNDS, 0)),
                 "target_trials": int(t["labels"].sum()), "trials": len(t["labels"]),
                 "mean_seconds": float(np.mean(made[name]["seconds"]))}
            if name.endswith(", VAD"):
                base = got[name[:-len(", VAD")]]
                assert np.array_equal(base["a"], t["a"]) and np.array_equal(base["b"], t["b"])
                r["eer_minus_without_vad_ci95"] = interval(replicates(
                    lambda w, t=t: eer(t["scores"], t["labels"], w)[0]
                    - eer(base["scores"], base["labels"], w)[0], draw, ROUNDS, 0))
            state["results"][name] = r
    args.out.write_text(json.dumps(state, indent=1))
    print_table(state)


def print_table(state: dict) -> None:
    print("| test pieces | mean length s | EER % (95 % CI) | VAD − without, points (95 % CI) | "
          "target / all trials |")
    print("|---|---|---|---|---|")
    results = state["results"]
    for name, r in results.items():
        diff = "–"
        if "eer_minus_without_vad_ci95" in r:
            lo, hi = r["eer_minus_without_vad_ci95"]
            point = r["eer"] - results[name[:-len(", VAD")]]["eer"]
            diff = f"{100 * point:+.2f} ({100 * lo:+.2f}, {100 * hi:+.2f})"
        lo, hi = r["eer_ci95"]
        print(f"| {name} | {r['mean_seconds']:.1f} | {100 * r['eer']:.2f} ({100 * lo:.2f}, "
              f"{100 * hi:.2f}) | {diff} | {r['target_trials']} / {r['trials']} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print_table(json.loads(Path(sys.argv[2]).read_text()))
    else:
        main()
