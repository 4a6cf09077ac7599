"""Using a trained model on audio files: `spkid embed`, `spkid verify`, `spkid predict`.

These read an exported model folder (weights + model.json, default data/export/model) or
its model.onnx, not training internals, and extract features exactly as training did."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import typer

from spkid.atomic import atomic_path, check_writable
from spkid.errors import DataError
from spkid.inference import AudioEmbedder, audio_inputs
from stages.common import one_line_errors
from stages.layout import EXPORT_MODEL

app = typer.Typer(add_completion=False)
ModelOption = typer.Option(EXPORT_MODEL, "--model", help="exported model folder (PyTorch), or the "
                           "model.onnx in it (ONNX Runtime)")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")


def _load(model_dir: Path, device: str) -> AudioEmbedder:
    embedder = AudioEmbedder.load(model_dir, device)
    if embedder.config["features"].get("precomputed"):
        print(f"spkid: warning: {model_dir} was trained on precomputed features; features "
              "extracted here from raw audio may not match the data set's extraction",
              file=sys.stderr)
    return embedder


@app.command()
@one_line_errors
def embed(inputs: list[Path] = typer.Argument(..., help="audio files and/or folders"),
          out: Path = typer.Option(..., "--out", help="Parquet file to write"),
          model: Path = ModelOption, device: str = DeviceOption):
    """Speaker embeddings of audio files -> Parquet (path, speaker, embedding)."""
    check_writable(out)
    files = audio_inputs(inputs)
    embedder = _load(model, device)
    emb = embedder.norm.center(embedder.embed([f for f, _ in files]))  # the embeddings as scored: minus the training mean when shipped
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
    embedder = _load(model, device)
    threshold, norm = embedder.config.get("eer_threshold"), embedder.norm
    if threshold is None:
        raise DataError(f"{model}: model.json has no eer_threshold (export a model that was evaluated)")
    emb = norm.center(embedder.embed([a, b]))
    score = float(norm.decision_scores(emb, np.array([0]), np.array([1]))[0])
    decision = "same" if score >= threshold else "different"
    print(f"score {score:.4f} threshold {threshold:.4f} -> {decision} speaker")


@app.command()
@one_line_errors
def predict(inputs: list[Path] = typer.Argument(..., help="audio files and/or folders"),
            model: Path = ModelOption, device: str = DeviceOption):
    """The closed-set speaker of each recording and its probability."""
    files = audio_inputs(inputs)
    if model.suffix == ".onnx":
        raise DataError(f"{model}: predict needs the PyTorch model folder (an ONNX graph "
                        "outputs embeddings only)")
    embedder = _load(model, device)
    emb, net, config = embedder.embed([f for f, _ in files]), embedder.model, embedder.config
    with torch.no_grad():
        logits = net.head(torch.from_numpy(emb).to(next(net.parameters()).device))
        prob = torch.softmax(logits.float(), dim=1).cpu().numpy()
    for (f, _), row in zip(files, prob):
        k = int(row.argmax())
        print(f"{f}\t{config['speakers'][k]}\t{row[k]:.4f}")
