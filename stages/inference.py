"""Using a trained model on audio files: `spkid embed`, `spkid verify`, `spkid predict`.

These read an exported model folder (weights + model.json, default data/export/model) or
its model.onnx, not training internals, and extract features exactly as training did."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from spkid.core.atomic import check_writable
from spkid.core.errors import DataError
from spkid.scoring.calibration import bayes_threshold
from spkid.serve.embedder import AudioEmbedder
from spkid.serve.inputs import audio_inputs, recording, write_embeddings
from stages.common import one_line_errors
from stages.layout import EXPORT_MODEL

app = typer.Typer(add_completion=False)
ModelOption = typer.Option(EXPORT_MODEL, "--model", help="exported model folder (PyTorch), or the "
                           "model.onnx in it (ONNX Runtime)")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
InputsArgument = typer.Argument(..., help="audio files and/or folders")


def _load(model_dir: Path, device: str, closed_set: bool = False) -> AudioEmbedder:
    embedder = AudioEmbedder.load(model_dir, device, closed_set=closed_set)
    for warning in embedder.warnings():
        print(f"spkid: warning: {model_dir} {warning}", file=sys.stderr)
    return embedder


@app.command()
@one_line_errors
def embed(inputs: list[Path] = InputsArgument,
          out: Path = typer.Option(..., "--out", help="Parquet file to write"),
          model: Path = ModelOption, device: str = DeviceOption):
    """Speaker embeddings of audio files -> Parquet (path, speaker, embedding)."""
    check_writable(out)
    files = audio_inputs(inputs)
    emb = _load(model, device).scored_embeddings([f for f, _ in files])
    write_embeddings(out, files, emb)
    print(f"[embed] {len(files)} files -> {out} ({emb.shape[1]}-dim)")


@app.command()
@one_line_errors
def verify(a: Path = typer.Argument(..., help="first recording"),
           b: Path = typer.Argument(..., help="second recording"),
           model: Path = ModelOption, device: str = DeviceOption,
           p_target: float = typer.Option(0.5, "--p-target", min=1e-6, max=1 - 1e-6,
                                          help="prior of a same-speaker pair, for the Bayes "
                                          "decision on the calibrated LLR")):
    """Score of two recordings (cosine, normalised as the model was exported) and a
    same/different decision: on the calibrated log-likelihood ratio at the Bayes threshold
    of --p-target when the model carries a calibration, else at the EER threshold."""
    a, b, embedder = recording(a), recording(b), _load(model, device)
    calibration = embedder.calibration
    if embedder.threshold is None and calibration is None:
        raise DataError(f"{model}: model.json has no eer_threshold (export a model that was evaluated)")
    score = embedder.pair_score(a, b)
    if calibration is None:
        same = score >= embedder.threshold
        print(f"score {score:.4f} threshold {embedder.threshold:.4f} -> "
              f"{'same' if same else 'different'} speaker")
        return
    llr, threshold = float(calibration.llr(score)), bayes_threshold(p_target)
    print(f"score {score:.4f} llr {llr:.3f} Bayes threshold {threshold:.3f} (p_target "
          f"{p_target:g}) -> {'same' if llr >= threshold else 'different'} speaker")


@app.command()
@one_line_errors
def predict(inputs: list[Path] = InputsArgument, model: Path = ModelOption,
            device: str = DeviceOption):
    """The closed-set speaker of each recording and its probability."""
    files = [f for f, _ in audio_inputs(inputs)]
    for f, (speaker, prob) in zip(files, _load(model, device, closed_set=True).closed_set(files)):
        print(f"{f}\t{speaker}\t{prob:.4f}")
