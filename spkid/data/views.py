"""Views and the train / val / test split.

A *view* is a stretch of frames of one stored utterance with a role (train / val / test /
submit, and augment for the augmented copies `features` made of train views). With
`split_by: utterance` every view is a whole utterance; with `split_by: time` each recording
is cut (first part trains, then val, then test) and the held-out parts are cut into pieces
of `trial_seconds`, so one long recording per speaker still yields several same-speaker
val and test trials.

views (Parquet): utterance_id, source_id, speaker, role, start_frame, num_frames,
speaker_id (position in speakers.json, -1 for submit).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spkid.core.errors import DataError
from spkid.core.seeding import named_rng

VIEW_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("source_id", pa.string()), ("speaker", pa.string()),
    ("role", pa.string()), ("start_frame", pa.int64()), ("num_frames", pa.int64()),
    ("speaker_id", pa.int32()),
])


AUGMENT = "augment"
# Roles the classifier trains on: the split's train views and their augmented copies
# (evaluate's cohort and mean use the clean "train" views only).
TRAINING = ("train", AUGMENT)
SEPARATOR = "~"  # an augmented copy is <view id>~<tag>, and a tag never holds one


def view_of(copy_id: str) -> str:
    """The view id an augmented copy was made from."""
    return copy_id.rsplit(SEPARATOR, 1)[0]


def speed_copy_name(name: str, factor: float) -> str:
    """The name of a view's speed copy at `factor`, and of its speaker's class (a voice of
    its own)."""
    return f"{name}{SEPARATOR}sp{factor:g}"


def real_speakers(speakers: list[str]) -> np.ndarray:
    """Which classes are speakers rather than speed copies of one: closed-set predictions
    name a real speaker (a speed copy's class is only a training target)."""
    return np.array([re.search(rf"{re.escape(SEPARATOR)}sp[0-9.]+$", s) is None for s in speakers],
                    dtype=bool)


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float
    test_fraction: float
    seed: int
    split_by: str = "utterance"
    trial_frames: int = 300

    @classmethod
    def from_params(cls, index, frames_per_second: float) -> "SplitConfig":
        return cls(index.val_fraction, index.test_fraction, index.seed, index.split_by,
                   max(1, int(round(index.trial_seconds * frames_per_second))))


def _role_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    # A speaker with a handful of utterances still gets one of each held-out role
    # when the fraction asks for any, as long as one utterance is left to train on.
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    if test_fraction > 0 and n_test == 0 and n - n_val >= 2:
        n_test = 1
    while n_val + n_test >= n and (n_val or n_test):
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _pieces(start: int, length: int, piece: int) -> list[tuple[int, int]]:
    """Cut [start, start+length) into pieces of `piece` frames; a short tail joins the last."""
    if length <= 0:
        return []
    count = max(1, length // piece)
    bounds = [start + k * piece for k in range(count)] + [start + length]
    return [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def split_views(catalog: list[dict], cfg: SplitConfig) -> list[dict]:
    """Views for every catalog row (dicts with utterance_id, speaker, role, num_frames).
    Augmented copies (spkid.features.copies) train, whole, as long as the view they were made
    from trains: a copy of any other view means the features were augmented for another
    split, which is an error rather than a leak of held-out audio into training."""
    views: list[dict] = []
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    copies = []
    for row in catalog:
        if row["role"] == "submit":
            views.append(_view(row, "submit", 0, row["num_frames"], row["utterance_id"]))
        elif row["role"] == AUGMENT:
            copies.append(row)
        elif row["role"] is None:
            if not row["speaker"]:
                raise DataError(f"utterance {row['utterance_id']} is labelled but has no speaker")
            by_speaker[row["speaker"]].append(row)
        else:
            raise DataError(f"utterance {row['utterance_id']}: unexpected role {row['role']!r}")
    for speaker in sorted(by_speaker):
        rows = sorted(by_speaker[speaker], key=lambda r: r["utterance_id"])
        if cfg.split_by == "utterance":
            views += _split_utterances(speaker, rows, cfg)
        else:
            views += _split_time(rows, cfg)
    train = {v["utterance_id"] for v in views if v["role"] == "train"}
    for row in copies:
        if view_of(row["utterance_id"]) not in train:
            raise DataError(f"augmented copy {row['utterance_id']!r} was made from "
                            f"{view_of(row['utterance_id'])!r}, which this split does not train "
                            "on: the features were augmented for other index params (re-run "
                            "`spkid features`)")
        views.append(_view(row, AUGMENT, 0, row["num_frames"], row["utterance_id"]))
    return views


def _split_utterances(speaker: str, rows: list[dict], cfg: SplitConfig) -> list[dict]:
    # Per-speaker streams keep a speaker's split stable when other speakers come or go.
    order = named_rng(cfg.seed, speaker).permutation(len(rows))
    n_val, n_test = _role_counts(len(rows), cfg.val_fraction, cfg.test_fraction)
    roles = ["val"] * n_val + ["test"] * n_test + ["train"] * (len(rows) - n_val - n_test)
    out = [_view(rows[i], role, 0, rows[i]["num_frames"], rows[i]["utterance_id"])
           for i, role in zip(order, roles)]
    return sorted(out, key=lambda v: v["utterance_id"])


def _split_time(rows: list[dict], cfg: SplitConfig) -> list[dict]:
    out = []
    for row in rows:
        n = row["num_frames"]
        n_val = int(n * cfg.val_fraction)
        n_test = int(n * cfg.test_fraction)
        n_train = n - n_val - n_test
        uid = row["utterance_id"]
        out.append(_view(row, "train", 0, n_train, f"{uid}@0-{n_train}"))
        for role, start, length in (("val", n_train, n_val), ("test", n_train + n_val, n_test)):
            for a, m in _pieces(start, length, cfg.trial_frames):
                out.append(_view(row, role, a, m, f"{uid}@{a}-{a + m}"))
    return out


def _view(row: dict, role: str, start: int, length: int, view_id: str) -> dict:
    return {"utterance_id": view_id, "source_id": row["utterance_id"], "speaker": row["speaker"],
            "role": role, "start_frame": start, "num_frames": length}


def speaker_table(views: list[dict]) -> list[str]:
    """Speakers the classifier knows: those with training data (speed copies are speakers
    of their own), sorted by name."""
    train = {v["speaker"] for v in views if v["role"] in TRAINING}
    held_out = {v["speaker"] for v in views if v["role"] in ("val", "test")}
    if not train:
        raise DataError("no training utterances after the split (check index.* fractions)")
    unseen = held_out - train
    if unseen:
        raise DataError(f"speaker {sorted(unseen)[0]!r} has val/test data but nothing to train on")
    return sorted(train)


def label_views(views: list[dict], speakers: list[str]) -> list[dict]:
    ids = {s: i for i, s in enumerate(speakers)}
    return [{**v, "speaker_id": ids.get(v["speaker"], -1)} for v in views]


def read_views(path, roles) -> dict[str, dict]:
    """The views of each role in `roles`, as column dicts, from a views Parquet file."""
    table = pq.read_table(path)
    return {role: table.filter(pc.equal(table["role"], role)).to_pydict() for role in roles}
