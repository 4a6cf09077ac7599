"""A Kaldi-style data folder, as WeSpeaker, ESPnet and Kaldi keep their data:

    wav.scp    <recording-id> <path>        one recording per line (relative paths are
                                            relative to the folder)
    utt2spk    <utterance-id> <speaker>     every utterance's speaker
    spk2utt    <speaker> <utterance-id>...  optional; when present it must agree with utt2spk
    segments   <utterance-id> <recording-id> <start> <end>
                                            optional: utterances are these spans (seconds;
                                            end -1 = to the end of the recording), else
                                            each recording is one utterance

wav.scp entries that are commands (`sox x.flac -t wav - |`) are refused: spkid never runs
shell commands from data files. Kaldi archives (`foo.ark:123`) are refused too. Every
problem is one line naming the file and line.
"""

from __future__ import annotations

import math
import os
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spkid.core.errors import DataError
from spkid.data.audio import AUDIO_SUFFIXES
from spkid.data.manifest import SCHEMA, ManifestRow
from spkid.data.sources.audio_dir import existing_dir
from spkid.data.sources.checks import AudioChecks, CheckFailed

REQUIRED = ("wav.scp", "utt2spk")


def is_kaldi_dir(folder: str | Path) -> bool:
    return all((Path(folder) / name).is_file() for name in REQUIRED)


def scan_kaldi(folder: str | Path, *, min_seconds: float, short: str,
               only: set[str] | None = None, checks: AudioChecks | None = None
               ) -> tuple[list[ManifestRow], dict]:
    """scan_kaldi_table's rows as ManifestRows: for the small folders (a trial list's
    utterances, tests)."""
    table, meta = scan_kaldi_table(folder, min_seconds=min_seconds, short=short, only=only,
                                   checks=checks)
    return [ManifestRow(**d) for d in table.to_pylist()], meta


def scan_kaldi_table(folder: str | Path, *, min_seconds: float, short: str,
                     only: set[str] | None = None, checks: AudioChecks | None = None
                     ) -> tuple[pa.Table, dict]:
    """(manifest table, meta) of every utterance of a Kaldi folder, sorted by utterance id,
    with the same handling of short utterances as scan_audio_dir. With `only`, the lists
    are still checked whole but only those utterances' audio is opened and returned (a
    trial list's few thousand out of a whole corpus). `checks` remembers which recordings
    were already checked (default: check every one).

    Columns, not rows: a VoxCeleb2-size folder has a million utterances, and a Python
    object per utterance would cost a gigabyte and most of a minute."""
    folder = existing_dir(folder, "Kaldi data folder")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: not found (a Kaldi data folder needs "
                            f"{' and '.join(REQUIRED)})")
    wav_scp = folder / "wav.scp"
    rec_ids, rec_paths, rec_lines = [], [], []
    for n, (key, value) in _lines(wav_scp, 2, "<recording-id> <path>"):
        rec_ids.append(key)
        rec_paths.append(_audio_path(folder, wav_scp, n, key, value))
        rec_lines.append(n)
    _check_unique(wav_scp, rec_ids, rec_lines)
    utts, spks, utt_lines = _Strings(), _Strings(), array("l")
    for n, (utt, spk) in _lines(folder / "utt2spk", 2, "<utterance-id> <speaker>", exact=True):
        utts.append(utt)
        spks.append(spk)
        utt_lines.append(n)
    utt2spk = pa.table({"utt": utts.finish(), "spk": spks.finish()})
    _check_unique(folder / "utt2spk", utt2spk["utt"], utt_lines)
    for name, n in (("wav.scp", len(rec_ids)), ("utt2spk", len(utt2spk))):
        if not n:
            raise DataError(f"{folder / name}: lists nothing (a Kaldi data folder needs "
                            "at least one line in each of wav.scp and utt2spk)")
    recording_of = {key: k for k, key in enumerate(rec_ids)}
    if (folder / "segments").is_file():
        spans = _segments(folder / "segments", recording_of)
    else:
        spans = {"utt": pa.array(rec_ids, pa.string()),
                 "rec": np.arange(len(rec_ids), dtype=np.int64),
                 "start": np.full(len(rec_ids), np.nan), "end": np.full(len(rec_ids), np.nan),
                 "line": np.asarray(rec_lines), "file": wav_scp}
    span_utts = spans["utt"]

    has_audio = pc.is_in(utt2spk["utt"], value_set=span_utts).to_numpy(zero_copy_only=False)
    if not has_audio.all():
        k = int(np.argmin(has_audio))
        where = "segments" if (folder / "segments").is_file() else "wav.scp"
        raise DataError(f"{folder / 'utt2spk'}:{utt_lines[k]}: utterance "
                        f"{utt2spk['utt'][k].as_py()!r} (speaker {utt2spk['spk'][k].as_py()!r}) "
                        f"has no audio in {where}")
    speaker_at = pc.index_in(span_utts, value_set=utt2spk["utt"])
    if speaker_at.null_count:
        k = int(np.argmax(speaker_at.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{spans['file']}:{spans['line'][k]}: utterance "
                        f"{span_utts[k].as_py()!r} has no speaker in {folder / 'utt2spk'}")
    if (folder / "spk2utt").is_file():
        _check_spk2utt(folder / "spk2utt", utt2spk)

    chosen = pc.sort_indices(span_utts).to_numpy()
    if only is not None:
        keep = pc.is_in(span_utts.take(chosen), value_set=pa.array(sorted(only), pa.string()))
        chosen = chosen[keep.to_numpy(zero_copy_only=False)]
    rec, start, end = spans["rec"][chosen], spans["start"][chosen], spans["end"][chosen]
    used = np.unique(rec)  # wav.scp order: the first bad recording is the first listed
    try:
        found = (checks or AudioChecks()).check([rec_paths[k] for k in used])
    except CheckFailed as exc:
        line = next(rec_lines[k] for k in used if rec_paths[k] == exc.path)
        raise DataError(f"{wav_scp}:{line}: {exc}") from None
    length = np.full(len(rec_ids), np.nan)
    size = np.zeros(len(rec_ids), np.int64)
    mtime = np.zeros(len(rec_ids), np.int64)
    for k, c in zip(used, found):
        length[k], size[k], mtime[k] = c.duration, c.size, c.mtime_ns
    whole = length[rec]
    late_end = end > whole + 0.01  # NaN (to the end) compares False
    late_start = start >= whole
    bad = np.nonzero(late_end | late_start)[0]
    if len(bad):
        k = bad[0]
        utt, r = span_utts[int(chosen[k])].as_py(), rec_paths[rec[k]]
        at = f"{spans['file']}:{spans['line'][chosen[k]]}"
        if late_end[k]:
            raise DataError(f"{at}: segment {utt!r} ends at {end[k]:g} s but {r} is "
                            f"{whole[k]:.2f} s long")
        raise DataError(f"{at}: segment {utt!r} starts at {start[k]:g} s, after the end of "
                        f"{r} ({whole[k]:.2f} s)")
    duration = np.where(np.isnan(end), whole, np.minimum(end, whole)) - np.nan_to_num(start)
    skipped = 0
    if short == "skip":
        long_enough = duration >= min_seconds
        skipped = int((~long_enough).sum())
        chosen, rec, start, end, duration = (x[long_enough] for x in
                                             (chosen, rec, start, end, duration))
    if len(chosen) == 0 and only is None:
        raise DataError(f"{folder}: all {len(span_utts)} utterances are shorter than "
                        f"min_seconds = {min_seconds:g} (use short: pad to keep them)")
    rec_path = pa.array([str(path) for path in rec_paths], pa.string())
    n = len(chosen)
    table = pa.table({
        "utterance_id": span_utts.take(chosen),
        "speaker": utt2spk["spk"].take(speaker_at.take(chosen)),
        "path": rec_path.take(rec),
        "duration": duration,
        "num_frames": pa.nulls(n, pa.int64()),
        "role": pa.nulls(n, pa.string()),
        "size": size[rec],
        "mtime_ns": mtime[rec],
        "start": pa.array(start, pa.float64(), mask=np.isnan(start)),
        "end": pa.array(end, pa.float64(), mask=np.isnan(end)),
    }, schema=SCHEMA)
    found_speakers = pc.unique(table["speaker"]).to_pylist()
    return table, {"format": "audio", "skipped_short": skipped,
                   "speakers": sorted(found_speakers)}


def _lines(path: Path, columns: int, expected: str, exact: bool = False):
    """(line number, fields) of each non-blank line: the first `columns - 1` fields and
    the rest of the line. With `exact` a line has exactly `columns` fields (a speaker name
    holds no spaces)."""
    # Line by line, not the whole text: a VoxCeleb2 segments file is a million lines.
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM is not part of the first key
            for n, line in enumerate(f, start=1):
                fields = line.split(None, columns - 1)
                if not fields:
                    continue
                if len(fields) < columns or (exact and len(fields[-1].split()) > 1):
                    raise DataError(f"{path}:{n}: expected '{expected}', got "
                                    f"{line.strip()!r:.100}")
                fields[-1] = fields[-1].strip()
                yield n, fields
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


class _Strings:
    """A string column built a chunk at a time: a million Python strings held at once
    would cost more than the whole table."""
    CHUNK = 65536

    def __init__(self):
        self.chunks, self.pending = [], []

    def append(self, value: str) -> None:
        self.pending.append(value)
        if len(self.pending) == self.CHUNK:
            self.chunks.append(pa.array(self.pending, pa.string()))
            self.pending = []

    def finish(self) -> pa.Array:
        chunks = self.chunks + [pa.array(self.pending, pa.string())]
        return pa.chunked_array(chunks, pa.string()).combine_chunks()


def _check_unique(path: Path, keys: list[str] | pa.Array, lines) -> None:
    keys = pa.array(keys, pa.string()) if isinstance(keys, list) else keys
    if len(pc.unique(keys)) == len(keys):
        return
    seen: dict[str, int] = {}  # only on the way to an error: say which line, and where first
    for key, n in zip(keys.to_pylist(), lines):
        if key in seen:
            raise DataError(f"{path}:{n}: {key!r} is listed again (first on line {seen[key]})")
        seen[key] = n


def _audio_path(folder: Path, wav_scp: Path, n: int, key: str, value: str) -> Path:
    if value.endswith("|"):
        # Kaldi's VoxCeleb2 recipe pipes each m4a through ffmpeg; spkid decodes it itself.
        named = [word for word in value.split() if word.lower().endswith(AUDIO_SUFFIXES)]
        fix = (f"list {named[0]} itself, spkid decodes it" if named else
               "write the audio to files and list their paths")
        raise DataError(f"{wav_scp}:{n}: {key!r} is a command ({value!r:.60}); spkid never "
                        f"runs commands from data files: {fix}")
    if ".ark:" in value or value.endswith(".ark"):
        raise DataError(f"{wav_scp}:{n}: {key!r} points into a Kaldi archive ({value!r:.60}); "
                        "list audio files instead")
    return Path(os.path.normpath(folder / value))


def _check_spk2utt(path: Path, utt2spk: pa.Table) -> None:
    speaker_of = dict(zip(utt2spk["utt"].to_pylist(), utt2spk["spk"].to_pylist()))
    listed = set()
    for n, (spk, rest) in _lines(path, 2, "<speaker> <utterance-id>..."):
        for utt in rest.split():
            if speaker_of.get(utt) != spk:
                said = speaker_of.get(utt, "nothing")
                raise DataError(f"{path}:{n}: utterance {utt!r} of speaker {spk!r}, but "
                                f"utt2spk says {said!r}")
            listed.add(utt)
    missing = [utt for utt in speaker_of if utt not in listed]
    if missing:
        missing.sort()
        raise DataError(f"{path}: utterance {missing[0]!r} of utt2spk is not listed"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _segments(path: Path, recording_of: dict[str, int]) -> dict:
    """The segments file as columns: utt (Arrow), rec (index into wav.scp), start, end
    (NaN = to the end), line; and the file, for messages."""
    utts, rec, start, end, lines = _Strings(), array("l"), array("d"), array("d"), array("l")
    for n, (utt, rest) in _lines(path, 2, "<utterance-id> <recording-id> <start> <end>"):
        fields = rest.split()
        if len(fields) != 3:
            raise DataError(f"{path}:{n}: expected '<utterance-id> <recording-id> <start> "
                            f"<end>', got {len(fields) + 1} fields")
        if fields[0] not in recording_of:
            raise DataError(f"{path}:{n}: recording {fields[0]!r} is not in wav.scp")
        try:
            a, b = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataError(f"{path}:{n}: start and end must be seconds, got "
                            f"{fields[1]!r} {fields[2]!r}") from None
        if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or (b != -1 and b <= a):
            raise DataError(f"{path}:{n}: segment {utt!r} has start {a:g} s and end "
                            f"{b:g} s (need 0 <= start < end, or end -1 for the whole rest)")
        utts.append(utt)
        rec.append(recording_of[fields[0]])
        start.append(a)
        end.append(math.nan if b == -1 else b)
        lines.append(n)
    utts = utts.finish()
    _check_unique(path, utts, lines)
    return {"utt": utts, "rec": np.array(rec, np.int64),
            "start": np.array(start, np.float64), "end": np.array(end, np.float64),
            "line": np.array(lines, np.int64), "file": path}
