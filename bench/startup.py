"""Start-up of using a model: `import spkid`, `from spkid import SpeakerModel`, `import
stages.cli` and a whole `spkid verify a b` (each a fresh process, wall seconds), then in
one process the API's load, first verify and the verifies after it (what a script scoring
many pairs pays per pair).

    flock /tmp/spkid-cpu.lock python bench/startup.py --model data/export/model \
        --audio A.flac B.flac C.flac [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(argv: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/export/model")
    ap.add_argument("--audio", nargs="+", required=True, help="at least 3 recordings")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    py = sys.executable
    out = {
        "import spkid": wall([py, "-c", "import spkid"], a.runs),
        "from spkid import SpeakerModel": wall([py, "-c", "from spkid import SpeakerModel"], a.runs),
        "import stages.cli": wall([py, "-c", "import stages.cli"], a.runs),
        "spkid verify a b": wall([py, "-m", "stages.cli", "verify", a.audio[0], a.audio[1],
                                  "--model", a.model, "--device", "cpu"], a.runs),
    }
    start = time.perf_counter()
    from spkid import SpeakerModel
    imported = time.perf_counter()
    model = SpeakerModel.load(a.model, "cpu")
    loaded = time.perf_counter()
    model.verify(a.audio[0], a.audio[1])
    first = time.perf_counter()
    pairs = [(x, y) for x in a.audio for y in a.audio if x < y]
    for x, y in pairs:
        model.verify(x, y)
    out["api import"] = [imported - start]
    out["api load"] = [loaded - imported]
    out["api first verify"] = [first - loaded]
    out["api verify per pair after"] = [(time.perf_counter() - first) / len(pairs)]
    for name, times in out.items():
        print(f"{name:32s} median {statistics.median(times):6.3f} s  "
              f"(min {min(times):.3f}, max {max(times):.3f}, n {len(times)})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
