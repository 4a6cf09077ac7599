"""Using a trained model on audio files: `spkid embed`, `spkid verify`, `spkid predict`.

These read an exported model folder (weights + model.json, default data/export/model),
not training internals, and extract features exactly as training did."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import typer

from spkid.atomic import atomic_path
from spkid.audio import AUDIO_SUFFIXES
from spkid.errors import DataError
from spkid.inference import embed_audio_files, extractor_for_model
from spkid.onnx_export import load_embedder
from spkid.sources.audio_dir import find_audio
from spkid.device import pick_device
from stages.common import one_line_errors
from stages.layout import EXPORT_MODEL

app = typer.Typer(add_completion=False)
ModelOption = typer.Option(EXPORT_MODEL, "--model", help="exported model folder (PyTorch), or the "
                           "model.onnx in it (ONNX Runtime)")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
BATCH_FRAMES = 20000


def _load(model_dir: Path, device: str):
    # norm: the score normalisation evaluate measured and export shipped (spkid.score_norm).
    model, config, norm, device = load_embedder(model_dir, pick_device(device))
    if config["features"].get("precomputed"):
        print(f"spkid: warning: {model_dir} was trained on precomputed features; features "
              "extracted here from raw audio may not match the data set's extraction",
              file=sys.stderr)
    return model, config, extractor_for_model(config["features"]), device, norm


def _embed(paths: list[Path], model_dir: Path, device: str):
    model, config, extractor, device, norm = _load(model_dir, device)
    return embed_audio_files(model, extractor, paths, BATCH_FRAMES, device), model, config, norm


def _audio_files(inputs: list[Path]) -> list[tuple[Path, str | None]]:
    """(file, speaker) pairs: folders are searched recursively and the first folder level
    below a given folder names the speaker."""
    found = []
    for item in inputs:
        if item.is_dir():
            files = find_audio(item)
            if not files:
                raise DataError(f"{item}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
            found += [(item / f, f.split("/")[0] if "/" in f else None) for f in files]
        elif item.is_file():
            found.append((item, None))
        else:
            raise DataError(f"{item}: no such file or folder")
    return found


def _check_writable(out: Path) -> None:
    """Fail before any embedding is computed where the result could not be written."""
    if out.is_dir():
        raise DataError(f"{out}: is a folder (--out names the Parquet file to write)")
    folder = Path(os.path.abspath(out)).parent
    while not folder.exists():  # atomic_path creates the missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{out}: cannot be created: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{out}: cannot be written: no write permission in {folder}")


@app.command()
@one_line_errors
def embed(inputs: list[Path] = typer.Argument(..., help="audio files and/or folders"),
          out: Path = typer.Option(..., "--out", help="Parquet file to write"),
          model: Path = ModelOption, device: str = DeviceOption):
    """Speaker embeddings of audio files -> Parquet (path, speaker, embedding)."""
    _check_writable(out)
    files = _audio_files(inputs)
    emb, _, _, norm = _embed([f for f, _ in files], model, device)
    emb = norm.center(emb)  # the embeddings as scored: minus the training mean when shipped
    table = pa.table({"path": [str(f) for f, _ in files], "speaker": [s for _, s in files],
                      "embedding": pa.array(list(emb), pa.list_(pa.float32()))})
    try:
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:  # what no check beforehand can rule out: a full disk, a race
        raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None
    print(f"[embed] {len(files)} files -> {out} ({emb.shape[1]}-dim)")


@app.command()
@one_line_errors
def verify(a: Path = typer.Argument(..., help="first recording"),
           b: Path = typer.Argument(..., help="second recording"),
           model: Path = ModelOption, device: str = DeviceOption):
    """Score of two recordings (cosine, normalised as the model was exported) and a
    same/different decision at the EER threshold."""
    for path in (a, b):
        if path.is_dir():
            raise DataError(f"{path}: is a folder (verify compares two recordings)")
        if not path.is_file():
            raise DataError(f"{path}: not found")
    net, config, extractor, device, norm = _load(model, device)
    threshold = config.get("eer_threshold")
    if threshold is None:
        raise DataError(f"{model}: model.json has no eer_threshold (export a model that was evaluated)")
    emb = norm.center(embed_audio_files(net, extractor, [a, b], BATCH_FRAMES, device))
    score = float(norm.decision_scores(emb, np.array([0]), np.array([1]))[0])
    decision = "same" if score >= threshold else "different"
    print(f"score {score:.4f} threshold {threshold:.4f} -> {decision} speaker")


@app.command()
@one_line_errors
def predict(inputs: list[Path] = typer.Argument(..., help="audio files and/or folders"),
            model: Path = ModelOption, device: str = DeviceOption):
    """The closed-set speaker of each recording and its probability."""
    files = _audio_files(inputs)
    if model.suffix == ".onnx":
        raise DataError(f"{model}: predict needs the PyTorch model folder (an ONNX graph "
                        "outputs embeddings only)")
    emb, net, config, _ = _embed([f for f, _ in files], model, device)
    with torch.no_grad():
        logits = net.head(torch.from_numpy(emb).to(next(net.parameters()).device))
        prob = torch.softmax(logits.float(), dim=1).cpu().numpy()
    for (f, _), row in zip(files, prob):
        k = int(row.argmax())
        print(f"{f}\t{config['speakers'][k]}\t{row[k]:.4f}")
