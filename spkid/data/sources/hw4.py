"""The ML2021/2022/2023 HW4 Kaggle dataset: precomputed 40-bin log-mel features.

The folder holds
    mapping.json   {"speaker2id": {"id00464": 0, ...}, "id2speaker": {"0": "id00464", ...}}
    metadata.json  {"n_mels": 40, "speakers": {"id10473": [{"feature_path": "uttr-<hex>.pt",
                                                              "mel_len": 702}, ...], ...}}
    testdata.json  {"n_mels": 40, "utterances": [{"feature_path": ..., "mel_len": ...}, ...]}
    uttr-*.pt      one float32 tensor (mel_len, n_mels) each

The JSON files are checked in full before any row is produced: a typo found after an
hour of feature extraction, or a speaker silently missing from training, costs far more
than reading three small files carefully. Every complaint names the file and the key.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from spkid.core.errors import DataError
from spkid.data.manifest import ManifestRow

MAPPING = "mapping.json"
METADATA = "metadata.json"
TESTDATA = "testdata.json"


def scan_hw4(folder: str | Path) -> tuple[list[ManifestRow], dict]:
    """Manifest rows for a HW4 folder: labelled utterances (speakers in mapping.json
    order, utterances in metadata.json order), then the unlabelled `submit` utterances
    in testdata.json order (the order Kaggle's sample submission uses)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: HW4 data folder not found")
    speakers = _read_mapping(folder / MAPPING)
    n_mels, labelled = _read_metadata(folder / METADATA)
    submit = _read_testdata(folder / TESTDATA, n_mels)
    _check_speakers_match(folder, speakers, labelled)
    _check_unique_paths(folder, labelled, submit)

    # One abspath for the folder, joined per file: resolving each file would follow
    # per-file symlinks (e.g. into a DVC or annex cache) and lose the .pt name.
    base = Path(os.path.abspath(folder))
    rows = [_row(base, fp, mel_len, speaker, None, METADATA, where)
            for speaker in speakers
            for fp, mel_len, where in labelled[speaker]]
    rows += [_row(base, fp, mel_len, None, "submit", TESTDATA, where)
             for fp, mel_len, where in submit]
    return rows, {"format": "hw4", "n_mels": n_mels, "speakers": speakers}


def load_hw4_features(path: str | Path, expected_frames: int, n_mels: int) -> np.ndarray:
    """One utterance's log-mels as float32 (expected_frames, n_mels).

    Float16/bfloat16/float64 tensors are accepted and converted: they hold the same
    log-mels at another precision (a re-saved copy of the data, say), and float32 is what
    the model trains on. Integer, bool and complex tensors are refused: they cannot be
    log-mel energies, so the file is not what metadata.json claims.
    """
    import torch  # imported here: scanning the JSON files must not pay for torch

    path = Path(path)
    tensor = _torch_load(path)
    if not isinstance(tensor, torch.Tensor):
        raise DataError(f"{path}: holds a {type(tensor).__name__}, not a tensor")
    if tensor.layout != torch.strided:
        raise DataError(f"{path}: holds a {tensor.layout} tensor, expected a dense tensor")
    if not tensor.dtype.is_floating_point:
        raise DataError(f"{path}: tensor has dtype {tensor.dtype}, expected floating point "
                        "log-mel features (float32)")
    if tuple(tensor.shape) != (expected_frames, n_mels):
        raise DataError(f"{path}: tensor has shape {tuple(tensor.shape)}, expected "
                        f"({expected_frames}, {n_mels}) (mel_len from the JSON, n_mels)")
    # Convert before the finiteness check: a float64 value too large for float32 turns
    # into inf here and must be caught too.
    feats = tensor.detach().to(torch.float32).contiguous().numpy()
    bad = ~np.isfinite(feats)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: {int(bad.sum())} NaN or inf values (first in frame {frame})")
    return feats


def _torch_load(path: Path) -> Any:
    import torch  # as in load_hw4_features

    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    try:
        # weights_only: the restricted unpickler builds tensors and plain containers only,
        # so a downloaded .pt cannot run code on this machine.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = _torch_reason(exc)
        refused = isinstance(exc, pickle.UnpicklingError)
        # A pickle naming a forbidden global is refused whatever else it looks like.
        if not (refused and "GLOBAL" in reason):
            head = _head(path)
            if head is not None and not head.startswith(_TORCH_MAGIC) and head[257:262] != b"ustar":
                start = f"starts with {head[:16]!r}" if head else "is empty"
                raise DataError(f"{path}: not a torch file (it {start}; torch.save writes a "
                                "zip archive)") from None
        if refused:
            raise DataError(f"{path}: refused to load: holds objects other than tensors "
                            f"(weights_only: {reason})") from None
        raise DataError(f"{path}: not a readable torch file ({reason})") from None


# torch.save writes a zip archive; the legacy format is a pickle (protocol 2 or later
# starts with \x80), and the oldest one a tar archive ("ustar" at offset 257).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
# torch wraps the reason for a refusal in paragraphs of advice; these lines are advice.
_TORCH_ADVICE = ("Weights only load failed", "Check the documentation", "(1)", "(2)",
                 "Please file an issue")


def _torch_reason(exc: Exception) -> str:
    """The part of torch's load error that says what is wrong with the file, e.g.
    "Unsupported global: GLOBAL os.system was not an allowed global by default"."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("WeightsUnpickler error:", 1)[-1]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(_TORCH_ADVICE):
            return re.split(r"\.\s+(?:Please|This|If) ", line)[0].rstrip(".")[:200]
    return type(exc).__name__


def _head(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(262)
    except OSError:  # unreadable: torch's own error says why
        return None


# --- the JSON files -------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: not found (a HW4 folder needs {MAPPING}, {METADATA} "
                        f"and {TESTDATA})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None


def _bad(path: Path, key: str, why: str) -> DataError:
    return DataError(f"{path}: {key or 'top level'}: {why}")


def _typename(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _get(path: Path, obj: dict, key: str, kind: type, where: str = "") -> Any:
    """obj[key], which must exist and have JSON type `kind` (bool is not an int here)."""
    name = f"{where}.{key}" if where else key
    if key not in obj:
        raise _bad(path, name, "missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(path, name, f"must be {_typename(kind())}, got {_typename(value)} {value!r:.60}")
    return value


def _object(path: Path, doc: Any) -> dict:
    if not isinstance(doc, dict):
        raise _bad(path, "", f"must be a JSON object, got {_typename(doc)}")
    return doc


def _read_mapping(path: Path) -> list[str]:
    """Speaker names in class-id order, after checking both directions agree."""
    doc = _object(path, _read_json(path))
    s2i = _get(path, doc, "speaker2id", dict)
    i2s = _get(path, doc, "id2speaker", dict)
    if not s2i:
        raise _bad(path, "speaker2id", "no speakers")
    for name in s2i:
        idx = _get(path, s2i, name, int, "speaker2id")
        if idx < 0:
            raise _bad(path, f"speaker2id.{name}", f"id must be >= 0, got {idx}")
    for key in i2s:
        _get(path, i2s, key, str, "id2speaker")
    # The two tables are redundant, so any disagreement means one was edited by hand
    # and we cannot tell which is right.
    by_id: dict[int, str] = {}
    for name, idx in s2i.items():
        if idx in by_id:
            raise _bad(path, f"speaker2id.{name}", f"id {idx} is also given to {by_id[idx]!r}")
        by_id[idx] = name
        if i2s.get(str(idx)) != name:
            raise _bad(path, f"id2speaker.{idx}", f"is {i2s.get(str(idx))!r} but "
                       f"speaker2id.{name} = {idx} (the two tables disagree)")
    if len(i2s) != len(s2i):
        extra = sorted(set(i2s) - {str(i) for i in by_id})
        raise _bad(path, f"id2speaker.{extra[0]}", "has no entry in speaker2id "
                   "(the two tables disagree)")
    return [by_id[i] for i in sorted(by_id)]


def _read_utterance_list(path: Path, items: Any, where: str) -> list[tuple[str, int, str]]:
    """[(feature_path, mel_len, json key)] from a list of {"feature_path", "mel_len"}."""
    if not isinstance(items, list):
        raise _bad(path, where, f"must be array, got {_typename(items)}")
    out = []
    for i, item in enumerate(items):
        key = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise _bad(path, key, f"must be object, got {_typename(item)}")
        fp = _get(path, item, "feature_path", str, key)
        mel_len = _get(path, item, "mel_len", int, key)
        pure = PurePosixPath(fp)
        # The feature path is joined to the folder: an absolute path or `..` would make
        # the manifest point at files outside the dataset.
        if not fp or pure.is_absolute() or ".." in pure.parts or "\\" in fp:
            raise _bad(path, f"{key}.feature_path", f"{fp!r} must be a relative path "
                       "inside the HW4 folder")
        if mel_len <= 0:
            raise _bad(path, f"{key}.mel_len", f"must be > 0, got {mel_len}")
        out.append((fp, mel_len, key))
    return out


def _read_n_mels(path: Path, doc: dict) -> int:
    n_mels = _get(path, doc, "n_mels", int)
    if n_mels <= 0:
        raise _bad(path, "n_mels", f"must be > 0, got {n_mels}")
    return n_mels


def _read_metadata(path: Path) -> tuple[int, dict[str, list[tuple[str, int, str]]]]:
    doc = _object(path, _read_json(path))
    n_mels = _read_n_mels(path, doc)
    speakers = _get(path, doc, "speakers", dict)
    return n_mels, {name: _read_utterance_list(path, items, f"speakers.{name}")
                    for name, items in speakers.items()}


def _read_testdata(path: Path, n_mels: int) -> list[tuple[str, int, str]]:
    doc = _object(path, _read_json(path))
    own = _read_n_mels(path, doc)
    if own != n_mels:
        raise _bad(path, "n_mels", f"is {own} but {METADATA} says {n_mels}")
    return _read_utterance_list(path, _get(path, doc, "utterances", list), "utterances")


def _check_speakers_match(folder: Path, speakers: list[str], labelled: dict) -> None:
    # A speaker without utterances would still get a class (and a softmax row) that never
    # sees data; one without an id cannot be trained on at all. Both mean the two files
    # come from different versions of the dataset.
    for name in speakers:
        if not labelled.get(name):
            raise DataError(f"{folder / MAPPING}: speaker {name!r} has no utterances in "
                            f"{folder / METADATA}")
    known = set(speakers)
    unknown = [name for name in labelled if name not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise DataError(f"{folder / METADATA}: speaker {unknown[0]!r}{more} is not in "
                        f"{folder / MAPPING}")


def _check_unique_paths(folder: Path, labelled: dict, submit: list) -> None:
    # feature_path is the utterance id (Kaggle's submission key), so it must be unique.
    seen: dict[str, str] = {}
    entries = [(METADATA, fp, key) for items in labelled.values() for fp, _, key in items]
    entries += [(TESTDATA, fp, key) for fp, _, key in submit]
    for fname, fp, key in entries:
        here = f"{fname} {key}"
        if fp in seen:
            raise DataError(f"{folder / fname}: {key}.feature_path: {fp!r} is listed twice "
                            f"(also at {seen[fp]})")
        seen[fp] = here


def _row(base: Path, fp: str, mel_len: int, speaker: str | None, role: str | None,
         listed_in: str, where: str) -> ManifestRow:
    path = base / fp
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: feature file not found (listed in {listed_in} at "
                        f"{where})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot stat ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (listed in {listed_in} at {where})")
    return ManifestRow(utterance_id=fp, speaker=speaker, path=str(path), num_frames=mel_len,
                       role=role, size=st.st_size, mtime_ns=st.st_mtime_ns)
