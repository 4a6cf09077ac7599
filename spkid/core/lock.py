"""One spkid stage at a time in a repository, as DVC allows one `dvc repro` at a time.

The lock is an advisory `flock` on a file: the kernel releases it when its holder exits,
however it exits (even SIGKILL), so a crash never leaves a stale lock behind. The file
holds a line naming the holder, for the refusal message."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from spkid.core.errors import SpkidError


class StageLock:
    def __init__(self, path: str | Path, holder: str):
        self.path, self.holder = Path(path), holder
        self._fd: int | None = None

    def __enter__(self) -> "StageLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.read(fd, 500).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SpkidError(f"{held_by} is running in this repository ({self.path} is locked): "
                             "one spkid stage at a time; wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.holder} (pid {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
