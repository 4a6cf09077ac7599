"""spkid's data path against the homework's, side by side in one run on the same audio.

    python bench/throughput.py all ../shared/data/librispeech-125 [--rounds 3]

The reference is what a student runs today: the homework's sample pipeline, which saves
one `.pt` log-mel tensor per utterance (torchaudio MelSpectrogram, 40 mels, n_fft 400,
hop 160) and reads them back with a map-style Dataset that `torch.load`s one file per item
and crops 128 frames, through a DataLoader with 2 workers and batch 32.

- features: decode + log-mel + write, in audio seconds per wall second: the reference's
  per-file loop against spkid's `features` path (`write_blocks`, every core).
- loader: training segments (128 frames) per second, the loader alone: the reference's
  Dataset + DataLoader against spkid's `SegmentBatches` over the memory-mapped shards.

    python bench/throughput.py floor ../shared/data/librispeech-125 [--rounds 3]

- floor: spkid's `features` path against the machine's floor for the same work, A B A B:
  decoding alone (every file, spread over `--workers` processes) plus log-mels alone
  (of the decoded audio, spread the same way), each timed on its own.

Each figure is measured A B A B ... (`--rounds` pairs, in fresh processes) and the median
of each side and of the pairwise ratios is printed. The single measurements are also
subcommands (`features-reference`, `features-spkid`, `loader-reference`, `loader-spkid`),
each printing one JSON line, so any outside timer can run them."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spkid.data.audio import find_audio  # noqa: E402
from spkid.data.audio import audio_info, read_audio  # noqa: E402
from spkid.data.manifest import ManifestRow  # noqa: E402

SEGMENT, BATCH = 128, 32


def audio_rows(folder: Path) -> list[ManifestRow]:
    files = [folder / f for f in find_audio(folder)]
    if not files:
        raise SystemExit(f"no audio files under {folder}")
    return [ManifestRow(f"utt{k:05d}", p.parent.name, str(p.resolve()), duration=audio_info(p)[0])
            for k, p in enumerate(files)]


def features_reference(folder: Path, out: Path) -> dict:
    """The homework's preparation: one MelSpectrogram call and one torch.save per file."""
    import torchaudio
    rows = audio_rows(folder)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160,
                                               n_mels=40)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for r in rows:
        wave = torch.from_numpy(read_audio(r.path, 16000))
        logmel = (mel(wave) + 1e-6).log().T.contiguous()
        torch.save(logmel, out / f"{r.utterance_id}.pt")
    wall = time.perf_counter() - started
    (out / "speakers.json").write_text(json.dumps({r.utterance_id: r.speaker for r in rows}))
    return {"wall_s": wall, "audio_s": sum(r.duration for r in rows),
            "audio_s_per_s": sum(r.duration for r in rows) / wall}


def features_spkid(folder: Path, out: Path, workers: int) -> dict:
    from dataclasses import asdict

    import pyarrow as pa

    from spkid.data.manifest import SCHEMA
    from spkid.features.blocks import plan_blocks, write_blocks
    from spkid.features.extract import BlockJob
    from spkid.features.logmel import LogMelExtractor
    rows = audio_rows(folder)
    manifest = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    extractor = LogMelExtractor()
    job = BlockJob(str(folder / "manifest.parquet"), {"format": "audio"}, extractor.config(),
                   str(out), {"features": extractor.config()}, "float32", 1, 0.0, "pad")
    started = time.perf_counter()
    write_blocks(manifest, job, plan_blocks(manifest, 512, {}), workers=workers, progress=False)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "audio_s": sum(r.duration for r in rows),
            "audio_s_per_s": sum(r.duration for r in rows) / wall}


def _decode_then_logmel(args) -> float:
    """Decode a share of the files; with `logmel`, then time their log-mels alone."""
    from spkid.features.logmel import LogMelExtractor
    paths, logmel = args
    torch.set_num_threads(1)
    waves = [read_audio(path, 16000) for path in paths]
    if not logmel:
        return 0.0
    extractor = LogMelExtractor()
    started = time.perf_counter()
    for wave in waves:
        extractor([wave])
    return time.perf_counter() - started


def features_floor(folder: Path, workers: int) -> dict:
    """Decoding alone, then log-mels alone, each spread over `workers` processes (files
    dealt longest first, in turn), in wall seconds: what no features path can beat."""
    import multiprocessing
    rows = sorted(audio_rows(folder), key=lambda r: -r.duration)
    shares = [[r.path for r in rows[k::workers]] for k in range(workers)]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(_decode_then_logmel, [([], False)] * workers)  # the workers are up
        started = time.perf_counter()
        pool.map(_decode_then_logmel, [(share, False) for share in shares], chunksize=1)
        decode_s = time.perf_counter() - started
        logmel_s = max(pool.map(_decode_then_logmel, [(share, True) for share in shares],
                                chunksize=1))
    audio_s = sum(r.duration for r in rows)
    return {"decode_s": decode_s, "logmel_s": logmel_s, "wall_s": decode_s + logmel_s,
            "audio_s": audio_s, "audio_s_per_s": audio_s / (decode_s + logmel_s)}


class ReferenceDataset(torch.utils.data.Dataset):
    """The homework's Dataset: torch.load one file per item, random 128-frame crop."""

    def __init__(self, folder: Path):
        speakers = json.loads((folder / "speakers.json").read_text())
        names = sorted(set(speakers.values()))
        self.items = [(folder / f"{u}.pt", names.index(s)) for u, s in sorted(speakers.items())]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import random
        path, speaker = self.items[i]
        mel = torch.load(path)
        if len(mel) > SEGMENT:
            start = random.randint(0, len(mel) - SEGMENT)
            mel = mel[start:start + SEGMENT]
        return mel.float(), torch.tensor(speaker).long()


def _collate(batch):
    from torch.nn.utils.rnn import pad_sequence
    mel, speaker = zip(*batch)
    return pad_sequence(mel, batch_first=True, padding_value=-20), torch.stack(speaker)


def loader_reference(folder: Path, batches: int) -> dict:
    data = ReferenceDataset(folder)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=2,
                                         drop_last=True, collate_fn=_collate,
                                         persistent_workers=True)
    seen, started = 0, None
    while seen < batches:
        for x, _ in loader:  # an epoch is short: loop over epochs as training does
            if started is None:  # the clock starts once the workers are up
                started = time.perf_counter()
                continue
            seen += 1
            if seen >= batches:
                break
    wall = time.perf_counter() - started
    return {"wall_s": wall, "segments_per_s": batches * BATCH / wall}


def loader_spkid(folder: Path, batches: int) -> dict:
    import pyarrow as pa

    from spkid.data.segments import segment_index
    from spkid.data.views import label_views
    from spkid.features.store import open_features
    from spkid.train.batches import SegmentBatches
    store = open_features(folder)
    views = pa.table({"utterance_id": store.ids, "source_id": store.ids,
                      "speaker": pa.array(["s"] * len(store.ids)),
                      "role": pa.array(["train"] * len(store.ids)),
                      "start_frame": pa.array([0] * len(store.ids), pa.int64()),
                      "num_frames": pa.array(store.length)})
    segments = segment_index(label_views(views, ["s"]), SEGMENT)
    data = SegmentBatches(store, segments, BATCH, seed=0, steps=batches + 1)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=0)
    started = None
    for k, _ in enumerate(loader):
        if k == 0:
            started = time.perf_counter()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "segments_per_s": batches * BATCH / wall}


def _subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_all(folder: Path, rounds: int, batches: int, workers: int) -> None:
    print(f"{folder}: {len(audio_rows(folder))} files, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = {"features": ([], [], "audio_s_per_s"), "loader": ([], [], "segments_per_s")}
        for r in range(rounds):
            ref = _subprocess("features-reference", str(folder), str(tmp / f"pt{r}"))
            ours = _subprocess("features-spkid", str(folder), str(tmp / f"shards{r}"),
                               "--workers", str(workers))
            pairs["features"][0].append(ref)
            pairs["features"][1].append(ours)
            print(f"features round {r + 1}: reference {ref['audio_s_per_s']:.0f}, spkid "
                  f"{ours['audio_s_per_s']:.0f} audio s / wall s", flush=True)
        for r in range(rounds):
            ref = _subprocess("loader-reference", str(tmp / "pt0"), "--batches", str(batches))
            ours = _subprocess("loader-spkid", str(tmp / "shards0"), "--batches", str(batches * 10))
            pairs["loader"][0].append(ref)
            pairs["loader"][1].append(ours)
            print(f"loader round {r + 1}: reference {ref['segments_per_s']:.0f}, spkid "
                  f"{ours['segments_per_s']:.0f} segments / s", flush=True)
    print("\nfigure     reference     spkid   ratio (median of pairs)")
    for name, (refs, ours, key) in pairs.items():
        ratio = statistics.median(o[key] / r[key] for r, o in zip(refs, ours))
        print(f"{name:<9} {statistics.median(r[key] for r in refs):10.0f} "
              f"{statistics.median(o[key] for o in ours):10.0f}   {ratio:.2f}x")


def run_floor(folder: Path, rounds: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ratios = []
        for r in range(rounds):
            floor = _subprocess("features-floor", str(folder), "--workers", str(workers))
            ours = _subprocess("features-spkid", str(folder), str(Path(tmp) / f"shards{r}"),
                               "--workers", str(workers))
            ratios.append(ours["wall_s"] / floor["wall_s"])
            print(f"round {r + 1}: floor {floor['wall_s']:.2f} s (decode {floor['decode_s']:.2f}"
                  f" + log-mel {floor['logmel_s']:.2f}), spkid features {ours['wall_s']:.2f} s:"
                  f" {ratios[-1]:.2f}x the floor", flush=True)
    print(f"median: spkid features at {statistics.median(ratios):.2f}x the floor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("all")
    a.add_argument("folder", type=Path)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--batches", type=int, default=100, help="reference batches (spkid: 10x)")
    a.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    for name in ("features-reference", "features-spkid"):
        s = sub.add_parser(name)
        s.add_argument("folder", type=Path)
        s.add_argument("out", type=Path)
        s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    f = sub.add_parser("floor")
    f.add_argument("folder", type=Path)
    f.add_argument("--rounds", type=int, default=3)
    f.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s = sub.add_parser("features-floor")
    s.add_argument("folder", type=Path)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    for name in ("loader-reference", "loader-spkid"):
        s = sub.add_parser(name)
        s.add_argument("folder", type=Path)
        s.add_argument("--batches", type=int, default=100)
    args = ap.parse_args()
    if args.cmd == "all":
        return run_all(args.folder.absolute(), args.rounds, args.batches, args.workers)
    if args.cmd == "floor":
        return run_floor(args.folder.absolute(), args.rounds, args.workers)
    result = {"features-reference": lambda: features_reference(args.folder, args.out),
              "features-spkid": lambda: features_spkid(args.folder, args.out, args.workers),
              "features-floor": lambda: features_floor(args.folder, args.workers),
              "loader-reference": lambda: loader_reference(args.folder, args.batches),
              "loader-spkid": lambda: loader_spkid(args.folder, args.batches)}[args.cmd]()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
