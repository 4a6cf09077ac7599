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
from pathlib import Path

from spkid.core.errors import DataError
from spkid.data.audio import AUDIO_SUFFIXES
from spkid.data.manifest import ManifestRow
from spkid.data.sources.audio_dir import audio_row, existing_dir

REQUIRED = ("wav.scp", "utt2spk")


def is_kaldi_dir(folder: str | Path) -> bool:
    return all((Path(folder) / name).is_file() for name in REQUIRED)


def scan_kaldi(folder: str | Path, *, min_seconds: float, short: str,
               only: set[str] | None = None) -> tuple[list[ManifestRow], dict]:
    """(rows, meta) of every utterance of a Kaldi folder, sorted by utterance id, with the
    same handling of short utterances as scan_audio_dir. With `only`, the lists are still
    checked whole but only those utterances' audio is opened and returned (a trial list's
    few thousand out of a whole corpus)."""
    folder = existing_dir(folder, "Kaldi data folder")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: not found (a Kaldi data folder needs "
                            f"{' and '.join(REQUIRED)})")
    wav_scp = folder / "wav.scp"
    recordings = {key: (_audio_path(folder, wav_scp, n, key, value), n)
                  for key, value, n in _table(wav_scp, 2, "<recording-id> <path>")}
    utt2spk = {utt: (spk, n) for utt, spk, n in _table(folder / "utt2spk", 2,
                                                      "<utterance-id> <speaker>", exact=True)}
    for name, table in (("wav.scp", recordings), ("utt2spk", utt2spk)):
        if not table:
            raise DataError(f"{folder / name}: lists nothing (a Kaldi data folder needs "
                            "at least one line in each of wav.scp and utt2spk)")
    if (folder / "segments").is_file():
        spans = _segments(folder / "segments", recordings)
    else:
        spans = {key: (key, None, None, n, wav_scp) for key, (_, n) in recordings.items()}

    for utt, (spk, n) in utt2spk.items():
        if utt not in spans:
            where = "segments" if (folder / "segments").is_file() else "wav.scp"
            raise DataError(f"{folder / 'utt2spk'}:{n}: utterance {utt!r} (speaker {spk!r}) "
                            f"has no audio in {where}")
    for utt, (_, _, _, n, listed_in) in spans.items():
        if utt not in utt2spk:
            raise DataError(f"{listed_in}:{n}: utterance {utt!r} has no speaker in "
                            f"{folder / 'utt2spk'}")
    if (folder / "spk2utt").is_file():
        _check_spk2utt(folder / "spk2utt", utt2spk)
    rows, skipped, info = [], 0, {}
    for utt in sorted(spans if only is None else set(spans) & set(only)):
        rec, start, end, n, listed_in = spans[utt]
        path, rec_line = recordings[rec]
        if rec not in info:
            try:
                info[rec] = audio_row(path, rec, speaker=None, role=None)
            except DataError as exc:
                raise DataError(f"{wav_scp}:{rec_line}: {exc}") from None
        whole = info[rec]
        if end is not None and end > whole.duration + 0.01:
            raise DataError(f"{listed_in}:{n}: segment {utt!r} ends at {end:g} s but "
                            f"{path} is {whole.duration:.2f} s long")
        if start is not None and start >= whole.duration:
            raise DataError(f"{listed_in}:{n}: segment {utt!r} starts at {start:g} s, after "
                            f"the end of {path} ({whole.duration:.2f} s)")
        duration = (min(end, whole.duration) if end is not None else whole.duration) - (start or 0.0)
        if duration < min_seconds and short == "skip":
            skipped += 1
            continue
        rows.append(ManifestRow(utterance_id=utt, speaker=utt2spk[utt][0], path=whole.path,
                                duration=duration, size=whole.size, mtime_ns=whole.mtime_ns,
                                start=start, end=end))
    if not rows and only is None:
        raise DataError(f"{folder}: all {len(spans)} utterances are shorter than "
                        f"min_seconds = {min_seconds:g} (use short: pad to keep them)")
    return rows, {"format": "audio", "skipped_short": skipped,
                  "speakers": sorted({r.speaker for r in rows})}


def _table(path: Path, columns: int, expected: str, exact: bool = False):
    """(key, rest of the line, line number) of each non-blank line; keys are unique. With
    `exact` a line has exactly `columns` fields (a speaker name holds no spaces)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first key
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(None, columns - 1)
        if len(fields) < columns or (exact and len(fields[-1].split()) > 1):
            raise DataError(f"{path}:{n}: expected '{expected}', got {line.strip()!r:.100}")
        key = fields[0]
        if key in seen:
            raise DataError(f"{path}:{n}: {key!r} is listed again (first on line {seen[key]})")
        seen[key] = n
        yield key, fields[-1].strip(), n


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


def _check_spk2utt(path: Path, utt2spk: dict) -> None:
    listed = set()
    for spk, rest, n in _table(path, 2, "<speaker> <utterance-id>..."):
        for utt in rest.split():
            if utt2spk.get(utt, (None,))[0] != spk:
                said = utt2spk[utt][0] if utt in utt2spk else "nothing"
                raise DataError(f"{path}:{n}: utterance {utt!r} of speaker {spk!r}, but "
                                f"utt2spk says {said!r}")
            listed.add(utt)
    missing = sorted(set(utt2spk) - listed)
    if missing:
        raise DataError(f"{path}: utterance {missing[0]!r} of utt2spk is not listed"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _segments(path: Path, recordings: dict) -> dict:
    spans = {}
    for utt, rest, n in _table(path, 2, "<utterance-id> <recording-id> <start> <end>"):
        fields = rest.split()
        if len(fields) != 3:
            raise DataError(f"{path}:{n}: expected '<utterance-id> <recording-id> <start> "
                            f"<end>', got {len(fields) + 1} fields")
        rec = fields[0]
        if rec not in recordings:
            raise DataError(f"{path}:{n}: recording {rec!r} is not in wav.scp")
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataError(f"{path}:{n}: start and end must be seconds, got "
                            f"{fields[1]!r} {fields[2]!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end != -1 and end <= start):
            raise DataError(f"{path}:{n}: segment {utt!r} has start {start:g} s and end "
                            f"{end:g} s (need 0 <= start < end, or end -1 for the whole rest)")
        spans[utt] = (rec, start, None if end == -1 else end, n, path)
    return spans
