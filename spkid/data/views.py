"""Views and the train / val / test split, as Arrow tables (one row per view, no Python
object per row: VoxCeleb2 has a million utterances).

A *view* is a stretch of frames of one stored utterance with a role (train / val / test /
submit). With `split_by: utterance` every view is a whole utterance; with `split_by: time`
each recording is cut (first part trains, then val, then test) and the held-out parts are
cut into pieces of `trial_seconds`, so one long recording per speaker still yields several
same-speaker val and test trials.

views (Parquet): utterance_id, source_id, speaker, role, start_frame, num_frames,
speaker_id (position in speakers.json, -1 for submit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spkid.core.errors import DataError
from spkid.core.memory import release_free_memory
from spkid.core.seeding import named_rng

VIEW_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("source_id", pa.string()), ("speaker", pa.string()),
    ("role", pa.string()), ("start_frame", pa.int64()), ("num_frames", pa.int64()),
    ("speaker_id", pa.int32()),
])
SPLIT_SCHEMA = pa.schema(list(VIEW_SCHEMA)[:6])  # views before label_views gives speaker_id
SEPARATOR = "~"  # a speed copy's class is <speaker>~sp<factor>, and a speaker never holds one
ROLES = np.array(["train", "val", "test"])


def speed_copy_name(name: str, factor: float) -> str:
    """The class of a speaker's voice at speed `factor` (a voice of its own)."""
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


def _table(ids, sources, speakers, roles, starts, lengths) -> pa.Table:
    return pa.table([pa.array(ids, pa.string()) if not isinstance(ids, (pa.Array, pa.ChunkedArray))
                     else ids, sources, speakers, pa.array(roles, pa.string()),
                     pa.array(starts, pa.int64()), pa.array(lengths, pa.int64())],
                    schema=SPLIT_SCHEMA)


def split_views(catalog: pa.Table, cfg: SplitConfig) -> pa.Table:
    """Views of every catalog row (a table with utterance_id, speaker, role, num_frames):
    the submit rows whole, in catalog order, then each speaker's (speakers sorted, each
    one's utterances sorted by id) split as `cfg` says."""
    role = catalog["role"]
    odd = pc.filter(catalog["utterance_id"], pc.and_(pc.is_valid(role), pc.not_equal(role, "submit")))
    if len(odd):
        bad = catalog.filter(pc.equal(catalog["utterance_id"], odd[0]))["role"][0].as_py()
        raise DataError(f"utterance {odd[0].as_py()}: unexpected role {bad!r}")
    submit = catalog.filter(pc.equal(role, "submit"))
    labelled = catalog.filter(pc.is_null(role))
    unnamed = pc.filter(labelled["utterance_id"], pc.invert(pc.fill_null(
        pc.greater(pc.utf8_length(labelled["speaker"]), 0), False)))
    if len(unnamed):
        raise DataError(f"utterance {unnamed[0].as_py()} is labelled but has no speaker")
    labelled = labelled.take(pc.sort_indices(labelled, [("speaker", "ascending"),
                                                        ("utterance_id", "ascending")]))
    parts = [_table(submit["utterance_id"], submit["utterance_id"], submit["speaker"],
                    np.full(len(submit), "submit"), np.zeros(len(submit), np.int64),
                    submit["num_frames"].to_numpy())]
    split = _split_utterances if cfg.split_by == "utterance" else _split_time
    parts.append(split(labelled, cfg))
    return pa.concat_tables(parts).combine_chunks()


def _speaker_groups(speakers: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal speakers in a sorted array."""
    cuts = np.flatnonzero(speakers[1:] != speakers[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(speakers)]]).tolist()
    return list(zip(bounds[:-1], bounds[1:])) if len(speakers) else []


def _split_utterances(rows: pa.Table, cfg: SplitConfig) -> pa.Table:
    speakers = rows["speaker"].to_numpy(zero_copy_only=False)
    codes = np.zeros(len(rows), np.int64)
    for a, b in _speaker_groups(speakers):
        # Per-speaker streams keep a speaker's split stable when other speakers come or go.
        order = named_rng(cfg.seed, speakers[a]).permutation(b - a)
        n_val, n_test = _role_counts(b - a, cfg.val_fraction, cfg.test_fraction)
        codes[a + order[:n_val]] = 1
        codes[a + order[n_val:n_val + n_test]] = 2
    return _table(rows["utterance_id"], rows["utterance_id"], rows["speaker"], ROLES[codes],
                  np.zeros(len(rows), np.int64), rows["num_frames"].to_numpy())


def _split_time(rows: pa.Table, cfg: SplitConfig) -> pa.Table:
    n = rows["num_frames"].to_numpy().astype(np.int64)
    n_val = (n * cfg.val_fraction).astype(np.int64)
    n_test = (n * cfg.test_fraction).astype(np.int64)
    n_train = n - n_val - n_test
    # Per row: its train view, then val's pieces, then test's; a short tail joins the
    # last piece of its part.
    row, code, start, length = [np.arange(len(n))], [np.zeros(len(n), np.int64)], \
        [np.zeros(len(n), np.int64)], [n_train]
    for c, first, size in ((1, n_train, n_val), (2, n_train + n_val, n_test)):
        count = np.where(size > 0, np.maximum(1, size // cfg.trial_frames), 0)
        r = np.repeat(np.arange(len(n)), count)
        k = np.arange(len(r)) - np.repeat(np.cumsum(count) - count, count)
        last = k == count[r] - 1
        row.append(r)
        code.append(np.full(len(r), c))
        start.append(first[r] + k * cfg.trial_frames)
        length.append(np.where(last, size[r] - k * cfg.trial_frames, cfg.trial_frames))
    row, code, start, length = (np.concatenate(x) for x in (row, code, start, length))
    order = np.lexsort((start, code, row))
    row, code, start, length = row[order], code[order], start[order], length[order]
    source = rows["utterance_id"].take(pa.array(row))
    ends = pc.cast(pa.array(start + length), pa.string())
    ids = pc.binary_join_element_wise(
        pc.binary_join_element_wise(source, pc.cast(pa.array(start), pa.string()), "@"), ends, "-")
    return _table(ids, source, rows["speaker"].take(pa.array(row)), ROLES[code], start, length)


def speaker_table(views: pa.Table) -> list[str]:
    """Speakers the classifier knows: those with training data, sorted by name."""
    role = views["role"]
    train = set(pc.unique(pc.filter(views["speaker"], pc.equal(role, "train"))).to_pylist())
    held_out = pc.unique(pc.filter(views["speaker"], pc.is_in(role, pa.array(["val", "test"]))))
    if not train:
        raise DataError("no training utterances after the split (check index.* fractions)")
    unseen = sorted(set(held_out.to_pylist()) - train)
    if unseen:
        raise DataError(f"speaker {unseen[0]!r} has val/test data but nothing to train on")
    return sorted(train)


def label_views(views: pa.Table, speakers: list[str]) -> pa.Table:
    """`views` with speaker_id: the speaker's position in `speakers`, -1 for none."""
    ids = pc.fill_null(pc.index_in(views["speaker"], value_set=pa.array(speakers, pa.string())), -1)
    return views.append_column("speaker_id", pc.cast(ids, pa.int32()))


def read_views(path, roles) -> dict[str, pa.Table]:
    """The views of each role in `roles`, from a views Parquet file."""
    table = pq.read_table(path)
    views = {role: table.filter(pc.equal(table["role"], role)) for role in roles}
    del table
    release_free_memory()  # the whole table's pages, once the roles are copied out
    return views


def take_views(views, keep: np.ndarray):
    """Rows `keep` of views given as a table or as a dict of columns."""
    if isinstance(views, pa.Table):
        return views.take(pa.array(np.asarray(keep, np.int64)))
    return {k: [v[i] for i in keep] for k, v in views.items()}
