"""The whole pipeline on a folder of recordings: per-stage wall time and the eval metrics.

    python bench/pipeline.py /work/shared/data/librispeech-125 [--set train.steps=500] [--keep]

Copies the project (dvc.yaml, params.yaml, spkid/, stages/, ...) into a temporary git
repository, writes params with data.source audio_dir, data.path <folder> (absolute) and
index.split_by time (every other param keeps its default, unless given with --set), runs
the real `dvc repro` there and prints the `[stage] ... in X s` summary of each stage, the
wall time of the whole run and the val/test (and verify) metrics. Run it with the
project's virtual environment active (`spkid` and `dvc` on PATH). On a shared machine the
timings are approximate."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spkid.core.recipes import apply, parse_override  # noqa: E402

PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore",
                 ".dvc/config", ".dvc/.gitignore", "spkid", "stages"]
SUMMARY = re.compile(r"^\[(?P<stage>\w+)\] (?P<text>.*) in (?P<seconds>[0-9.]+) s$")
STAGES = ("download", "features", "index", "train", "evaluate", "export")


def copy_project(dest: Path, source: Path = ROOT) -> None:
    for name in PROJECT_FILES:
        src = source / name
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def write_params(dest: Path, folder: Path, overrides: list[str]) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    params = apply(params, {"data.source": "audio_dir", "data.path": str(folder),
                            "index.split_by": "time"})
    params.setdefault("evaluate", {}).setdefault("trials", None)  # listed in dvc.yaml
    try:
        params = apply(params, dict(parse_override(item) for item in overrides))
    except ValueError as exc:
        raise SystemExit(f"--set {exc}")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def git(args: list[str], cwd: Path, env: dict) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="audio folder: <speaker>/**/<audio files>")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="extra param, e.g. train.steps=500 (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    ap.add_argument("--workdir", type=Path, help="parent folder of the temporary repository")
    args = ap.parse_args()
    folder = args.folder.absolute()
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder")
    if shutil.which("dvc") is None or shutil.which("spkid") is None:
        raise SystemExit("dvc and spkid must be on PATH (activate the project's virtual environment)")

    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
           "DVC_NO_ANALYTICS": "1"}
    repo = Path(tempfile.mkdtemp(prefix="spkid-bench-", dir=args.workdir))
    try:
        git(["init", "-q", "-b", "main"], repo, env)
        copy_project(repo)
        params = write_params(repo, folder, args.overrides)
        git(["add", "-A"], repo, env)
        git(["commit", "-q", "-m", "bench"], repo, env)
        print(f"repository {repo}; data {folder}; split_by {params['index']['split_by']}; "
              f"{os.cpu_count()} CPUs", flush=True)

        started = time.perf_counter()
        proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        stages: dict[str, tuple[float, str]] = {}
        tail: list[str] = []
        for line in proc.stdout:
            line = line.rstrip("\n").split("\r")[-1]
            tail = (tail + [line])[-40:]
            m = SUMMARY.match(line)
            if m:
                stages[m["stage"]] = (float(m["seconds"]), m["text"])
                print(line, flush=True)
        code = proc.wait()
        total = time.perf_counter() - started
        if code != 0:
            print("\n".join(tail), file=sys.stderr)
            print(f"dvc repro failed with status {code}", file=sys.stderr)
            return code

        print("\nstage      wall s")
        for name in STAGES:
            if name in stages:
                print(f"{name:<10} {stages[name][0]:7.1f}")
        print(f"{'sum':<10} {sum(s for s, _ in stages.values()):7.1f}")
        print(f"{'dvc repro':<10} {total:7.1f}  (with DVC and process start-up)")

        report = json.loads((repo / "metrics" / "eval.json").read_text())
        train = json.loads((repo / "metrics" / "train.json").read_text())
        print("\nrole    items  top1    top5    EER      minDCF(0.01) minDCF(0.05) trials")
        for role in ("val", "test", "verify"):
            r = report.get(role)
            if r is None:
                continue
            print(f"{role:<7} {r.get('utterances', r.get('recordings', 0)):<6} "
                  f"{_num(r.get('accuracy_top1'))}  {_num(r.get('accuracy_top5'))}  "
                  f"{_pct(r.get('eer'))}  {_num(r.get('min_dcf_p01'))}       "
                  f"{_num(r.get('min_dcf_p05'))}       {r.get('trials')}")
        if any(report.get(r, {}).get("eer", 0) is None for r in ("val", "test")):
            print("EER n/a: no same-speaker trials (one held-out piece per speaker); with "
                  "split_by time try --set index.val_fraction=0.2 --set "
                  "index.test_fraction=0.2 --set index.trial_seconds=1.0")
        print(f"\ntrain: {train['steps']} steps, best val accuracy "
              f"{train['best_val_accuracy']:.3f} at step {train['best_step']}, "
              f"{train['parameters']} parameters")
        print(json.dumps({"stages_s": {k: v[0] for k, v in stages.items()},
                          "dvc_repro_s": round(total, 1), "eval": report}))
        return 0
    finally:
        if args.keep:
            print(f"kept {repo}")
        else:
            shutil.rmtree(repo, ignore_errors=True)


def _num(x) -> str:
    return "  -   " if x is None else f"{x:.4f}"


def _pct(x) -> str:
    return "   -   " if x is None else f"{100 * x:6.2f}%"


if __name__ == "__main__":
    sys.exit(main())
