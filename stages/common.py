"""What every stage command shares: the --params option and one-line errors."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from spkid.errors import SpkidError

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="params file to read")


def one_line_errors(fn):
    """User errors end the command with one line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpkidError as exc:
            print(f"spkid: error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
    return wrapper


def summary(stage: str, text: str, seconds: float) -> None:
    print(f"[{stage}] {text} in {seconds:.1f} s", flush=True)
