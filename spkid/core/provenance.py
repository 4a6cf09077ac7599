"""What a stored result was computed with: the digest of the source files that compute it,
so that editing that code makes the result stale (feature blocks, remembered audio
checks) and editing anything else does not."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from types import ModuleType


def source_digest(*modules: ModuleType) -> str:
    """SHA-256 of the source files of `modules`, in order."""
    h = hashlib.sha256()
    for module in modules:
        h.update(Path(inspect.getfile(module)).read_bytes())
    return h.hexdigest()
