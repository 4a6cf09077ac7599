"""Training steps/s when the features do not fit in the page cache, with and without
`train.shard_window`.

    python bench/page_cache.py make DIR [--gib 3]        # synthetic float32 shards
    sudo python bench/page_cache.py all DIR [--steps 120] [--window 4] [--window-steps 25]

`make` writes feature shards of random log-mels (512 utterances of 2-4 s each) until they
hold `--gib` GiB. `run` (one measurement, a JSON line) trains the default model (ECAPA-TDNN
128, AAM-softmax, AdamW) on crops drawn by spkid's SegmentBatches from those shards for
`--steps` steps after 5 warm-up steps, one process, and prints steps per second. `all`
runs four: fully cached (every shard read once beforehand) and "limited", where the
process runs in a memory cgroup (v1, /sys/fs/cgroup/memory) whose limit is the process's
own peak anonymous memory in the cached run plus a quarter of the shards' bytes, after
the page cache was dropped (so no shard page is cached outside the cgroup); each without
and with the shard window. Needs root for the cgroup and for dropping caches."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import file_bytes  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/memory/spkid-page-cache")


def make(folder: Path, gib: float) -> None:
    from spkid.features.store import ShardWriter
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    block = 0
    while file_bytes(folder) < gib * 2**30:
        writer = ShardWriter(folder, f"{block:05d}-{block:016x}", {"features": {}}, "float32")
        for u in range(512):
            frames = int(rng.integers(200, 400))
            writer.add(f"b{block:05d}-u{u:03d}", f"spk{(block * 512 + u) % 1000:04d}", None,
                       rng.standard_normal((frames, 40), dtype=np.float32) - 5.0)
        writer.finish({"utterances": 512})
        block += 1
    print(f"{folder}: {block} shards, {file_bytes(folder) / 2**30:.2f} GiB")


def run(folder: Path, steps: int, window: int, window_steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from spkid.core.params import validate_params
    from spkid.features.store import open_features
    from spkid.models.folder import build_model
    from spkid.train.batches import SegmentBatches
    torch.manual_seed(0)
    store = open_features(folder)
    speakers = sorted(set(pa_speakers(folder)))
    label = {s: k for k, s in enumerate(speakers)}
    seg = 64
    n = store.length.astype(np.int64)
    segments = {"source_id": store.ids.to_pylist(), "start_frame": np.zeros(len(n), np.int64),
                "num_frames": np.full(len(n), seg), "view_frames": n, "hop": np.full(len(n), seg // 2),
                "windows": (n - seg) // (seg // 2) + 1,
                "speaker_id": [label[s] for s in pa_speakers(folder)]}
    p = validate_params({})
    model = build_model({"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": 40,
                         "speakers": speakers})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = SegmentBatches(store, segments, 32, seed=0, steps=steps + 5,
                             shard_window=window, window_steps=window_steps)
    for step in range(steps + 5):
        if step == 5:
            started = time.perf_counter()
        x, mask, y = batches[step]
        _, logits = model(x, mask, y)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - started
    anon = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("RssAnon")))
    return {"steps_per_s": steps / wall, "anon_bytes": anon * 1024,
            "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def pa_speakers(folder: Path) -> list[str]:
    from spkid.features.store import read_catalog
    return read_catalog(folder).column("speaker").to_pylist()


def measure(folder: Path, steps: int, window: int, window_steps: int, limit: int | None) -> dict:
    cmd = [sys.executable, __file__, "run", str(folder), "--steps", str(steps), "--window",
           str(window), "--window-steps", str(window_steps)]
    if limit is None:
        for path in sorted(folder.glob("*.parquet")):  # everything in the page cache
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
    else:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(limit))
        cmd = ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "sh", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_all(folder: Path, steps: int, window: int, window_steps: int) -> None:
    shards = file_bytes(folder)
    cached = measure(folder, steps, 0, window_steps, None)
    limit = int(cached["anon_bytes"] * 1.1) + shards // 4
    print(f"{shards / 2**30:.2f} GiB of shards; limit {limit / 2**30:.2f} GiB = 1.1 x the "
          f"process's anonymous memory + a quarter of the shards", flush=True)
    rows = {"cached": cached,
            "cached, window": measure(folder, steps, window, window_steps, None),
            "limited": measure(folder, steps, 0, window_steps, limit),
            "limited, window": measure(folder, steps, window, window_steps, limit)}
    for name, r in rows.items():
        print(f"{name:<16} {r['steps_per_s']:6.2f} steps/s  "
              f"({r['steps_per_s'] / cached['steps_per_s']:.2f}x fully cached)", flush=True)
    print(json.dumps({"shards_bytes": shards, "limit_bytes": limit, "window": window,
                      "window_steps": window_steps, "steps": steps, "rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("folder", type=Path)
    mk.add_argument("--gib", type=float, default=3.0)
    for name in ("run", "all"):
        s = sub.add_parser(name)
        s.add_argument("folder", type=Path)
        s.add_argument("--steps", type=int, default=120)
        s.add_argument("--window", type=int, default=4)
        s.add_argument("--window-steps", type=int, default=25)
    args = ap.parse_args()
    if args.cmd == "make":
        return make(args.folder, args.gib)
    if args.cmd == "run":
        print(json.dumps(run(args.folder, args.steps, args.window, args.window_steps)))
        return None
    return run_all(args.folder, args.steps, args.window, args.window_steps)


if __name__ == "__main__":
    main()
