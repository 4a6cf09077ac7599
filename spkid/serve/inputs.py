"""What the commands that use a model take from the command line and write: audio files
and folders given as arguments, and the embeddings table of `spkid embed`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.data.audio import AUDIO_SUFFIXES, find_audio


def write_embeddings(out: Path, files: list[tuple[Path, str | None]],
                     emb: np.ndarray | None = None, *, segments: list | None = None) -> None:
    """A Parquet table at `out`, written whole or not at all: (path, speaker, embedding),
    one row per file's embedding `emb`; or, given each file's `segments`
    (spkid.serve.embedder.Segments), (path, speaker, start, end, embedding), one row per
    window, times in seconds."""
    if segments is None:
        columns = {"path": [str(f) for f, _ in files], "speaker": [s for _, s in files]}
    else:
        counts = [len(s.start) for s in segments]
        columns = {"path": [str(f) for (f, _), n in zip(files, counts) for _ in range(n)],
                   "speaker": [s for (_, s), n in zip(files, counts) for _ in range(n)],
                   "start": np.concatenate([s.start for s in segments]),
                   "end": np.concatenate([s.end for s in segments])}
        emb = np.concatenate([s.embeddings for s in segments])
    table = pa.table({**columns, "embedding": pa.array(list(emb), pa.list_(pa.float32()))})
    try:
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:  # what no check beforehand can rule out: a full disk, a race
        raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None


def recording(path: Path) -> Path:
    """`path` if it names one recording; a folder or a missing file is refused by name."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder (verify compares two recordings)")
    if not path.is_file():
        raise DataError(f"{path}: not found")
    return path


def audio_inputs(inputs) -> list[tuple[Path, str | None]]:
    """(file, speaker) pairs of files and folders given on a command line: folders are
    searched recursively and the first folder level below a given folder names the speaker."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = find_audio(item)
            if not files:
                raise DataError(f"{item}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
            found += [(item / f, f.split("/")[0] if "/" in f else None) for f in files]
        elif item.is_file():
            found.append((item, None))
        else:
            raise DataError(f"{item}: no such file or folder")
    return found
