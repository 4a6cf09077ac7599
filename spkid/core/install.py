"""Imports that fail for reasons of the install rather than of the data, each failing in
one line that says how to fix it."""

from __future__ import annotations

from importlib.util import find_spec

from spkid.core.errors import SpkidError

TORCHAUDIO_FIX = ("install a CUDA-linked torch from PyPI next to it, in a fresh virtual "
                  "environment: pip install 'torch>=2.11,<2.15' 'torchaudio==2.11.*' "
                  "(a +cpu torch or torch 2.15 cannot load torchaudio 2.11)")


def require_torchaudio():
    """Import torchaudio, or fail in one line that says how to fix the install."""
    try:
        import torchaudio  # here, not at the top: a broken install must fail as one line
    except Exception as exc:  # an ABI mismatch raises OSError/ImportError/RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpkidError(f"torchaudio failed to import ({first}); {TORCHAUDIO_FIX}") from None
    return torchaudio


def onnx_missing() -> str | None:
    """Why ONNX export or inference cannot run here (None when it can)."""
    absent = [name for name in ("onnx", "onnxscript", "onnxruntime") if find_spec(name) is None]
    if not absent:
        return None
    return f"{', '.join(absent)} not installed (pip install -e '.[onnx]')"
