"""Enrolment and open-set identification with a trained model: `spkid enroll` keeps one
embedding per speaker in a Parquet gallery, `spkid identify` names the enrolled speaker of
each recording, or "unknown" (spkid.serve.gallery says how)."""

from __future__ import annotations

from pathlib import Path

import typer

from spkid.core.atomic import check_writable
from spkid.serve.gallery import Gallery
from spkid.serve.inputs import audio_inputs
from stages.common import one_line_errors
from stages.inference import DeviceOption, InputsArgument, ModelOption, load_model

app = typer.Typer(add_completion=False)
GalleryOption = typer.Option(..., "--gallery", help="the gallery's Parquet file")


@app.command()
@one_line_errors
def enroll(name: str = typer.Argument(..., help="the speaker's name"),
           inputs: list[Path] = InputsArgument, gallery: Path = GalleryOption,
           model: Path = ModelOption, device: str = DeviceOption):
    """Enrol a speaker from recordings of them (again: replaces their entry)."""
    check_writable(gallery)
    files = [f for f, _ in audio_inputs(inputs)]
    enrolled = Gallery.open(gallery, load_model(model, device))
    enrolled.enroll(name, files)
    enrolled.save()
    print(f"[enroll] {name} from {len(files)} files -> {gallery} ({len(enrolled.names)} speakers)")


@app.command()
@one_line_errors
def identify(inputs: list[Path] = InputsArgument, gallery: Path = GalleryOption,
             top: int = typer.Option(1, "--top", min=1, help="how many enrolled speakers to list"),
             model: Path = ModelOption, device: str = DeviceOption,
             p_target: float = typer.Option(0.5, "--p-target", min=1e-6, max=1 - 1e-6,
                                            help="prior of a same-speaker pair (calibrated "
                                            "models, as verify)")):
    """Each recording's speaker among the enrolled ones, or "unknown" below the threshold:
    path, decision, then the --top enrolled speakers as name:score."""
    files = [f for f, _ in audio_inputs(inputs)]
    enrolled = Gallery.open(gallery, load_model(model, device), must_exist=True)
    for f, found in zip(files, enrolled.identify(files, top=top, p_target=p_target)):
        print("\t".join([str(f), found.speaker, *(f"{n}:{s:.4f}" for n, s in found.candidates)]))
