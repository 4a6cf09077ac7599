"""The GPU check's Python half (bench/gpu_check.sh runs it; see BENCHMARKS.md, "GPU check").

    python bench/gpu_check.py download DEST [--python 3.10 ... 3.14] [--onnx-python 3.12]
    python bench/gpu_check.py missing WHEELS      # the distributions this python lacks
    python bench/gpu_check.py train WORK [--cpu] [--steps N] [--set KEY=VALUE ...]

`download` (on a machine with PyPI) fills DEST with the wheels a bare CUDA machine may
lack: what spkid's training path imports beyond torch, torchaudio, numpy and pyarrow
(PyYAML, tqdm, soundfile and its cffi), pytest for the cuda tests, and the ONNX stack
for the export test (ONNX Runtime is large: for one Python version only). PyAV is not
needed: spkid.data.audio imports it only to decode the formats libsndfile lacks.
`missing` prints, from that table, the distributions whose modules do not import here,
standard library only, so it runs before anything is installed.

`train` writes HW4-size random log-mel shards straight into WORK/features (600 speakers,
56,666 utterances of VoxCeleb2-like lengths, 40 mels, about 39 M frames: what
bench/hw4_scale.py makes as audio-free HW4 files, without the `features` stage), splits
them as `spkid index` does, and trains spkid's default model and the hw4_best recipe with
the real training loop (spkid.train.loop.train) for a fixed number of steps: a warm-up
run, then a timed one without validation, then one validation pass, timed apart. Each
model ends in one line: steps, steps/s, GPU utilisation (nvidia-smi sampled every 500 ms,
else pynvml), torch.cuda.max_memory_allocated(). `--cpu` is the dry run of the same path
on tiny data (tests/test_gpu_check.py runs it)."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (module, distribution==version, who needs it). Required: the check fails without them.
REQUIRED = [
    ("yaml", "PyYAML==6.0.4", "spkid.core.params"),
    ("tqdm", "tqdm==4.70.1", "spkid.train.loop"),
    ("soundfile", "soundfile==0.14.0", "spkid.data.audio, which spkid.train imports"),
    ("cffi", "cffi==2.1.1", "soundfile"),
    ("pycparser", "pycparser==3.12", "cffi"),
    ("pytest", "pytest==9.2.0", "the cuda tests"),
    ("pluggy", "pluggy==1.7.0", "pytest"),
    ("iniconfig", "iniconfig==2.3.1", "pytest"),
    ("packaging", "packaging==26.4", "pytest"),
    ("pygments", "Pygments==2.21.0", "pytest"),
    ("exceptiongroup", "exceptiongroup==1.3.0", "pytest on Python 3.10"),
    ("tomli", "tomli==2.2.1", "pytest on Python 3.10"),
]
# Optional: without them the ONNX test skips (spkid.core.install.onnx_missing).
OPTIONAL = [
    ("onnx", "onnx==1.23.2", "ONNX export"),
    ("onnxscript", "onnxscript==0.7.2", "ONNX export"),
    ("onnx_ir", "onnx-ir==1.1.0", "onnxscript"),
    ("ml_dtypes", "ml_dtypes==0.7.0", "onnx"),
    ("google.protobuf", "protobuf==7.36.2", "onnx"),
    ("onnxruntime", "onnxruntime==1.32.0", "the ONNX test"),
    ("flatbuffers", "flatbuffers==25.12.19", "onnxruntime"),
]
PY310_ONLY = {"exceptiongroup", "tomli"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]


def importable(module: str) -> bool:
    """Whether `import module` works here (an import, not a look-up: a package whose
    compiled part is missing is found, and fails)."""
    try:
        importlib.import_module(module)
        return True
    except Exception:  # ImportError, or whatever a broken package raises
        return False


def missing(args) -> int:
    """Print the distributions of the `which` table (required or optional) whose modules do
    not import here and whose wheels are in args.wheels; say on stderr what cannot be had,
    and fail when a required one cannot."""
    folder = Path(args.wheels)
    here = [f.name.lower() for f in folder.glob("*.whl")] if folder.is_dir() else []
    required = args.which == "required"
    names, failed = [], False
    for module, dist, why in REQUIRED if required else OPTIONAL:
        if module in PY310_ONLY and sys.version_info >= (3, 11) or importable(module):
            continue
        name = dist.split("==")[0]
        if any(w.startswith(name.lower().replace("-", "_") + "-") for w in here):
            names.append(name)
        else:
            failed |= required
            print(f"gpu_check: no wheel of {name} ({module}, for {why}) in {folder}"
                  + ("" if required else "; its test will be skipped"), file=sys.stderr)
    print(" ".join(names))
    return 1 if failed else 0


def download(args) -> int:
    """pip download --no-deps --only-binary of every wheel above: the pure-Python ones once,
    the compiled ones for each of args.python (ONNX Runtime's stack for args.onnx_python)."""
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(version: str, dists: list[str]) -> None:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
               "--dest", str(dest), *(f"--platform={p}" for p in PLATFORMS), *dists]
        print(f"gpu_check: downloading for Python {version}: {' '.join(dists)}", flush=True)
        subprocess.run(cmd, check=True)

    compiled = {"PyYAML", "cffi"}
    onnx_compiled = {"onnx", "ml_dtypes", "onnxruntime", "protobuf"}
    pure = [d for _, d, _ in REQUIRED if d.split("==")[0] not in compiled]
    fetch(args.python[-1], [d for d in pure if d.split("==")[0] not in ("exceptiongroup", "tomli")])
    if "3.10" in args.python:
        fetch("3.10", [d for m, d, _ in REQUIRED if m in PY310_ONLY])
    for version in args.python:
        fetch(version, [d for _, d, _ in REQUIRED if d.split("==")[0] in compiled])
    fetch(args.onnx_python, [d for _, d, _ in OPTIONAL if d.split("==")[0] not in onnx_compiled])
    for version in sorted({args.onnx_python}):
        fetch(version, [d for _, d, _ in OPTIONAL if d.split("==")[0] in onnx_compiled])
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"gpu_check: {len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest}")
    return 0


# --- the training check ---------------------------------------------------------------

HW4 = dict(speakers=600, utterances=56_666, median_s=5.9)  # bench/hw4_scale.py's sizes
TINY = dict(speakers=12, utterances=96, median_s=1.5)
MIN_S, MAX_S, N_MELS, SHARD = 1.3, 20.0, 40, 512
POOL_FRAMES = 1 << 18  # a worker's block of noise, sliced at random offsets


def utterance_frames(utterances: int, median_s: float, seed: int):
    import numpy as np  # here and below: `missing` and `download` run before anything is installed
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(np.log(median_s), 0.6, utterances), MIN_S, MAX_S)
    return (seconds * 100).astype(np.int64)


def write_block(job) -> int:
    """Shard `block` of the random features: speaker mean plus a slice of seeded noise."""
    import numpy as np

    from spkid.features.store import ShardWriter
    folder, block, first, frames, speakers, seed = job
    means = np.random.default_rng(seed).normal(0, 1.0, (speakers, N_MELS)).astype(np.float32) - 4
    rng = np.random.default_rng([seed, block])
    pool = rng.standard_normal((POOL_FRAMES, N_MELS), dtype=np.float32)
    writer = ShardWriter(folder, f"{block:05d}", {"features": {"n_mels": N_MELS,
                         "sample_rate": 16000, "hop_length": 160}, "precomputed": True})
    for k, n in enumerate(frames, start=first):
        at = int(rng.integers(0, POOL_FRAMES - n))
        writer.add(f"uttr-{k:08x}", f"id{10000 + k % speakers:05d}", None, means[k % speakers]
                   + pool[at:at + n])
    writer.finish({"utterances": len(frames)})
    return int(sum(frames))


def make_features(folder: Path, speakers: int, utterances: int, median_s: float,
                  seed: int = 0) -> str:
    import concurrent.futures
    import multiprocessing
    frames = utterance_frames(utterances, median_s, seed)
    jobs = [(str(folder), b, s, frames[s:s + SHARD].tolist(), speakers, seed)
            for b, s in enumerate(range(0, utterances, SHARD))]
    workers = min(len(jobs), os.cpu_count() or 1, 8)
    started = time.perf_counter()
    if workers == 1:
        total = sum(map(write_block, jobs))
    else:  # spawn: the parent may hold threads (pyarrow's); workers import numpy and pyarrow
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            total = sum(pool.map(write_block, jobs))
    seconds = time.perf_counter() - started
    size = total * N_MELS * 4
    size = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    return (f"data: {speakers} speakers, {utterances} utterances, {total / 1e6:.2f} M frames "
            f"({size} float32) in {len(jobs)} shards, written in {seconds:.1f} s with "
            f"{workers} processes")


class Utilisation:
    """GPU utilisation and memory used, sampled every 500 ms while the block runs:
    `nvidia-smi -lms 500` in the background, else pynvml, else nothing (CPU)."""

    def __init__(self, device):
        self.device, self.samples, self.how, self.uuid, self._rows = device, [], None, "", []
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.type != "cuda":
            return self
        import torch
        # nvidia-smi numbers the GPUs its own way (CUDA_VISIBLE_DEVICES aside): match by UUID.
        try:
            self.uuid = str(torch.cuda.get_device_properties(self.device).uuid)
        except Exception:  # an older torch without it: fine with one GPU
            self.uuid = ""
        smi = shutil.which("nvidia-smi")
        if smi:
            cmd = [smi, "--query-gpu=uuid,utilization.gpu,memory.used",
                   "--format=csv,noheader,nounits", "-lms", "500"]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self.how = "nvidia-smi"
        else:
            try:
                import pynvml  # nvidia-ml-py, where nvidia-smi is not on the PATH
                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
            except Exception:  # no NVML either: no utilisation figure
                return self
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self.how = "pynvml"
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                uuid, util, used = (v.strip() for v in line.split(",")[:3])
                self._rows.append((uuid, float(util), float(used)))
            except ValueError:
                continue

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
            self.samples.append((float(util), used))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.how == "nvidia-smi":
            self._proc.terminate()
            self._proc.wait(5)
            self._thread.join(1)
            # Lines `GPU-<uuid>, util, MiB` of every GPU: this device's (all, with one GPU).
            mine = [r for r in self._rows if self.uuid and self.uuid in r[0]]
            if not mine and len({r[0] for r in self._rows}) == 1:
                mine = self._rows
            self.samples = [(util, used) for _, util, used in mine]
        elif self.how:
            self._thread.join(1)

    def text(self) -> str:
        if not self.samples:
            return "util n/a " + ("(cpu)" if self.device.type != "cuda"
                                  else f"({self.how or 'no nvidia-smi, no pynvml'})")
        util = [u for u, _ in self.samples]
        return (f"util mean {sum(util) / len(util):.0f} % (max {max(util):.0f} %, "
                f"{len(util)} samples, {self.how}), {max(m for _, m in self.samples) / 1024:.1f} "
                "GiB used at most")


def train_one(name: str, overrides: dict, store, views, speakers: list[str], steps: int,
              warmup: int, device) -> tuple[dict, str]:
    """Warm-up run, timed run, one validation pass: the figures and the line."""
    import pyarrow.compute as pc
    import torch

    from spkid.core.device import training_dtype
    from spkid.core.params import defaults, validate_params
    from spkid.core.recipes import RECIPES, apply
    from spkid.data.segments import segment_index
    from spkid.models.folder import build_model, model_config
    from spkid.train.batches import training_batches
    from spkid.train.loop import train
    from spkid.train.validation import Validation
    base = {**RECIPES.get(name, {}), **overrides}
    p = validate_params(apply(defaults(), {**base, "train.steps": steps, "train.valid_every": steps,
                                           "train.checkpoint_every": steps}))
    segments = segment_index(views, p.index.segment_len)
    val = views.filter(pc.equal(views["role"], "val"))
    validation = Validation.sample(store, val, p.train, p.evaluate.batch_frames, speakers)
    unscored = Validation(store, val, None, p.evaluate.batch_frames, p.train.valid_max_frames)
    config = model_config(p, store.n_mels, speakers, {"n_mels": store.n_mels})
    torch.manual_seed(p.train.seed)
    model = build_model(config)
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[
        training_dtype(device, p.train.precision)]
    short = validate_params(apply(p.to_dict(), {"train.steps": warmup, "train.valid_every": warmup,
                                                "train.checkpoint_every": warmup}))
    train(model, training_batches(store, segments, short.train, speakers=len(speakers)), unscored,
          short, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with Utilisation(device) as util:
        started = time.perf_counter()
        result = train(model, training_batches(store, segments, p.train, speakers=len(speakers)),
                       unscored, p, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started - result.validation_seconds
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    started = time.perf_counter()
    accuracy = validation.accuracy(model, device)
    val_seconds = time.perf_counter() - started
    figures = {"model": name, "steps": steps, "steps_per_s": steps / seconds, "seconds": seconds,
               "precision": dtype, "loss": result.final_train_loss,
               "util_samples": util.samples, "peak_allocated": peak,
               "val_accuracy": accuracy, "val_utterances": len(validation.views["source_id"]),
               "val_seconds": val_seconds, "batch_size": p.train.batch_size,
               "crop_frames": p.index.segment_len,
               "parameters": int(sum(w.numel() for w in model.parameters()))}
    line = (f"{name}: {steps} steps, {figures['steps_per_s']:.1f} steps/s, {util.text()}, "
            + (f"peak {peak / 2**30:.2f} GiB allocated" if peak is not None else "peak n/a (cpu)")
            + f"; {dtype}, batch {p.train.batch_size} x {p.index.segment_len} frames, "
            f"{figures['parameters'] / 1e6:.2f} M parameters, loss {result.final_train_loss:.3f}, "
            f"val accuracy {accuracy:.3f} on {figures['val_utterances']} utterances in "
            f"{val_seconds:.1f} s")
    if not math.isfinite(result.final_train_loss):
        raise RuntimeError(f"the training loss is {result.final_train_loss}")
    return figures, line


def train_check(args) -> int:
    import torch

    from spkid.core.params import defaults, validate_params
    from spkid.core.recipes import parse_override
    from spkid.data.views import SplitConfig, label_views, speaker_table, split_views
    from spkid.features.store import open_features, read_catalog
    device = torch.device("cpu" if args.cpu else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        say("FAILED: torch sees no CUDA device (--cpu is the dry run)")
        return 1
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    say(f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        + (f"{props.name} (compute capability {props.major}.{props.minor}, "
           f"{props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}" if props
           else f"cpu ({torch.get_num_threads()} threads)"))
    work = Path(args.work)
    features = work / "features"
    if features.exists():
        shutil.rmtree(features)
    say(make_features(features, **{"hw4": HW4, "tiny": TINY}[args.data or
                                                              ("tiny" if args.cpu else "hw4")]))
    overrides = dict(parse_override(text) for text in args.set)
    if args.cpu:  # the dry run: a few small steps
        overrides = {"train.valid_utterances": 16, "train.batch_size": 8, **overrides}
    store = open_features(features)
    p = validate_params(defaults())
    views = split_views(read_catalog(features), SplitConfig.from_params(p.index, 100.0))
    speakers = speaker_table(views)  # as `spkid index` does
    views = label_views(views, speakers)
    steps = args.steps or (3 if args.cpu else 500)
    warmup = 1 if args.cpu else 30
    results, failed = [], []
    for name in ("default", "hw4_best"):
        try:
            figures, line = train_one(name, overrides, store, views, speakers, steps, warmup,
                                      device)
            results.append(figures)
            say(line)
        except Exception as exc:  # the next model still runs; the summary names this one
            failed.append(name)
            say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            import traceback
            traceback.print_exc()
    (work / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


def say(text: str) -> None:
    print(f"gpu_check: {text}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download")
    d.add_argument("dest")
    d.add_argument("--python", nargs="+", default=["3.10", "3.11", "3.12", "3.13", "3.14"])
    d.add_argument("--onnx-python", default="3.12")
    m = sub.add_parser("missing")
    m.add_argument("wheels")
    m.add_argument("which", choices=["required", "optional"])
    t = sub.add_parser("train")
    t.add_argument("work")
    t.add_argument("--cpu", action="store_true")
    t.add_argument("--steps", type=int, default=0)
    t.add_argument("--data", choices=["hw4", "tiny"], help="default: hw4, tiny with --cpu")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.command != "download" and args.command != "missing":
        sys.path.insert(0, str(ROOT))
    return {"download": download, "missing": missing, "train": train_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
