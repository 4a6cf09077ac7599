"""What every stage command shares: the --params option and one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer

from spkid.core.errors import SpkidError, StaleInputError
from spkid.core.lock import StageLock
from spkid.core.memory import keep_large_blocks_mapped
from spkid.core.params import load_params
from stages.layout import PRODUCERS, STAGE_LOCK

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="params file to read")


def one_line_errors(fn):
    """User errors end the command with one line on stderr and exit status 2; an input
    that a stage writes gets the advice to run that stage."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpkidError as exc:
            advice = f" ({remedy(exc.output)})" if isinstance(exc, StaleInputError) else ""
            if not exc.every_rank or os.environ.get("RANK", "0") == "0":
                print(f"spkid: error: {exc}{advice}", file=sys.stderr)
            raise typer.Exit(2) from None
    return wrapper


def remedy(output) -> str:
    """What makes `output` (a path spkid writes) again: its stage, else the pipeline."""
    if output is not None:
        here = Path(output).absolute()
        for folder, stage in PRODUCERS.items():
            if here.is_relative_to(folder.absolute()):
                return f"run `spkid {stage}` or `dvc repro`"
    return "run `dvc repro`"


def exclusive(fn):
    """Run a stage command holding the repository's stage lock (rank 0 alone under torchrun:
    the other ranks are the same command). Bad params fail first, leaving no trace."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        load_params(kwargs.get("params", args[0] if args else Path("params.yaml")))
        keep_large_blocks_mapped()  # memory that stays flat over many batches (spkid.core.memory)
        if os.environ.get("RANK", "0") != "0":
            return fn(*args, **kwargs)
        with StageLock(STAGE_LOCK, f"spkid {fn.__name__}"):
            return fn(*args, **kwargs)
    return wrapper


def summary(stage: str, text: str, seconds: float) -> None:
    print(f"[{stage}] {text} in {seconds:.1f} s", flush=True)
