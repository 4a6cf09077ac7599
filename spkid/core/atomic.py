"""Write-then-rename helpers, so an interrupted stage never leaves a half-written output
that a later run (or DVC) would trust.

A temporary is a sibling of its target, `.<name>.<pid>-<host>.<random>.tmp` (and `.old`
for a replaced folder on its way out). A process killed outright (SIGKILL, the OOM killer,
a power cut) cannot remove its own, and at full size a leaked features folder is
gigabytes; so whoever next writes the same target removes the temporaries whose process
is gone. The pid says whose a temporary is, so a concurrent run's is never touched; the
host, because a pid means nothing on another machine sharing the folder.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from spkid.core.errors import DataError

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-{_HOST}."


def _prepare(path: Path) -> str:
    """Create the parent folder, clean up after dead writers, and return the prefix of
    this process's temporaries for `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return _prefix(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_prepare(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it takes the place of `path`
    (the old folder is removed only after the new one is complete)."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prepare(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = tmp.with_suffix(".old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` (from atomic_path or atomic_dir) that processes of
    this host left behind and that no running process owns; return what was removed.

    Only names of exactly that shape are touched: a user's `.features.backup` stays."""
    path = Path(path)
    return _remove_dead(path.parent, re.escape(f".{path.name}."))


def remove_dead_temporaries(folder: str | Path) -> list[Path]:
    """remove_stale_temporaries for the temporaries of every file in `folder` (what
    writers of files inside it that were killed outright left)."""
    return _remove_dead(Path(folder), r"\..+?\.")


def _remove_dead(folder: Path, target: str) -> list[Path]:
    shape = re.compile(target + r"(\d+)-([A-Za-z0-9]*)\.[a-z0-9_]+\.(?:tmp|old)")
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".")]
    except OSError:  # no folder yet, or unreadable: then there is nothing of ours to clean
        return []
    removed = []
    for name in names:
        found = shape.fullmatch(name)
        if found and found[2] == _HOST and not _running(int(found[1])):
            _remove(folder / name)
            removed.append(folder / name)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows has no signal 0 to probe with
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True


def _remove(path: Path) -> None:
    # Two runs may clean up the same leftover at once: whichever is second finds less.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class _Unchanged(Exception):
    """Raised inside replace_if_changed to keep the old target."""


def replace_if_changed(target: Path, write, is_dir: bool = True) -> bool:
    """Build the new `target` in a temporary sibling with write(tmp) and put it in place
    in one rename, unless it is byte for byte what is already there: then the old one
    stays untouched (same mtimes, so DVC need not even re-hash it). Returns whether it
    was replaced."""
    try:
        with (atomic_dir(target) if is_dir else atomic_path(target)) as tmp:
            write(tmp)
            if _same(tmp, target, is_dir):
                raise _Unchanged
    except _Unchanged:
        return False
    return True


def _same(new: Path, old: Path, is_dir: bool) -> bool:
    if not is_dir:
        return old.is_file() and filecmp.cmp(new, old, shallow=False)
    if not old.is_dir():
        return False
    names = sorted(f.name for f in new.iterdir())
    if names != sorted(f.name for f in old.iterdir()):
        return False
    return all((new / n).is_file() and (old / n).is_file()
               and filecmp.cmp(new / n, old / n, shallow=False) for n in names)


def check_writable(out: Path) -> None:
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
