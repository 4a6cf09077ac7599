"""Using a trained model on audio files: `spkid embed`, `spkid verify`, `spkid predict`,
thin wrappers over the Python API (spkid.SpeakerModel).

These read an exported model folder (weights + model.json, default data/export/model) or
its model.onnx, not training internals, and extract features exactly as training did."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from spkid.core.atomic import check_writable
from spkid.serve.embedder import SpeakerModel
from spkid.serve.inputs import audio_inputs, recording, write_embeddings
from stages.common import one_line_errors
from stages.layout import EXPORT_MODEL

app = typer.Typer(add_completion=False)
ModelOption = typer.Option(EXPORT_MODEL, "--model", help="exported model folder (PyTorch), its "
                           "model.onnx (ONNX Runtime), or a training model folder or .pt checkpoint")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
VadOption = typer.Option(None, "--vad/--no-vad", help="keep only the speech of each recording "
                         "(Silero VAD, the vad extra); default: as the model was trained "
                         "(features.vad)")
InputsArgument = typer.Argument(..., help="audio files and/or folders")


def load_model(model_dir: Path, device: str, vad: bool | None = None) -> SpeakerModel:
    model = SpeakerModel.load(model_dir, device, vad=vad)
    for warning in model.warnings():
        print(f"spkid: warning: {model_dir} {warning}", file=sys.stderr)
    return model


@app.command()
@one_line_errors
def embed(inputs: list[Path] = InputsArgument,
          out: Path = typer.Option(..., "--out", help="Parquet file to write"),
          model: Path = ModelOption, device: str = DeviceOption,
          window: float = typer.Option(None, "--window", help="seconds: embed windows of each "
                                       "recording instead (one row per window)"),
          hop: float = typer.Option(None, "--hop", help="seconds between window starts "
                                    "(default: --window)"),
          min_window: float = typer.Option(None, "--min-window", help="seconds: the shortest "
                                           "last window kept (default: half a window)"),
          vad: Optional[bool] = VadOption):
    """Speaker embeddings of audio files -> Parquet (path, speaker, embedding); with
    --window, of each recording's windows (path, speaker, start, end, embedding)."""
    check_writable(out)
    files = audio_inputs(inputs)
    speaker_model = load_model(model, device, vad)
    if window is None:
        emb = speaker_model.embed([f for f, _ in files])
        write_embeddings(out, files, emb)
        print(f"[embed] {len(files)} files -> {out} ({emb.shape[1]}-dim)")
        return
    segments = [speaker_model.embed_segments(f, window, window if hop is None else hop,
                                             min_window=min_window) for f, _ in files]
    write_embeddings(out, files, segments=segments)
    print(f"[embed] {sum(len(s.start) for s in segments)} windows of {len(files)} files -> {out}")


@app.command()
@one_line_errors
def verify(a: Path = typer.Argument(..., help="first recording"),
           b: Path = typer.Argument(..., help="second recording"),
           model: Path = ModelOption, device: str = DeviceOption,
           p_target: float = typer.Option(0.5, "--p-target", min=1e-6, max=1 - 1e-6,
                                          help="prior of a same-speaker pair, for the Bayes "
                                          "decision on the calibrated LLR"),
           vad: Optional[bool] = VadOption):
    """Score of two recordings (cosine, normalised as the model was exported) and a
    same/different decision: on the calibrated log-likelihood ratio at the Bayes threshold
    of --p-target when the model carries a calibration, else at the EER threshold."""
    a, b, speaker_model = recording(a), recording(b), load_model(model, device, vad)
    v = speaker_model.verify(a, b, p_target=p_target)
    decision = f"-> {'same' if v.same else 'different'} speaker"
    if v.llr is None:
        print(f"score {v.score:.4f} threshold {v.threshold:.4f} {decision}")
    else:
        print(f"score {v.score:.4f} llr {v.llr:.3f} Bayes threshold {v.threshold:.3f} (p_target "
              f"{p_target:g}) {decision}")


@app.command()
@one_line_errors
def predict(inputs: list[Path] = InputsArgument, model: Path = ModelOption,
            device: str = DeviceOption, vad: Optional[bool] = VadOption):
    """The closed-set speaker of each recording and its probability."""
    files = [f for f, _ in audio_inputs(inputs)]
    speaker_model = load_model(model, device, vad)
    for f, (speaker, prob) in zip(files, speaker_model.predict(files)):
        print(f"{f}\t{speaker}\t{prob:.4f}")
