"""The split and segment index as spkid computed them row by row, one Python dict per view,
before they became columnar: the oracle the Arrow versions must equal exactly."""

from collections import defaultdict

import numpy as np

from spkid.core.seeding import named_rng
from spkid.data.views import _role_counts


def split_views(catalog: list[dict], cfg) -> list[dict]:
    views, by_speaker = [], defaultdict(list)
    for row in catalog:
        if row["role"] == "submit":
            views.append(_view(row, "submit", 0, row["num_frames"], row["utterance_id"]))
        else:
            by_speaker[row["speaker"]].append(row)
    for speaker in sorted(by_speaker):
        rows = sorted(by_speaker[speaker], key=lambda r: r["utterance_id"])
        if cfg.split_by == "utterance":
            order = named_rng(cfg.seed, speaker).permutation(len(rows))
            n_val, n_test = _role_counts(len(rows), cfg.val_fraction, cfg.test_fraction)
            roles = ["val"] * n_val + ["test"] * n_test + ["train"] * (len(rows) - n_val - n_test)
            out = [_view(rows[i], role, 0, rows[i]["num_frames"], rows[i]["utterance_id"])
                   for i, role in zip(order, roles)]
            views += sorted(out, key=lambda v: v["utterance_id"])
        else:
            for row in rows:
                n = row["num_frames"]
                n_val, n_test = int(n * cfg.val_fraction), int(n * cfg.test_fraction)
                n_train, uid = n - n_val - n_test, row["utterance_id"]
                views.append(_view(row, "train", 0, n_train, f"{uid}@0-{n_train}"))
                for role, start, length in (("val", n_train, n_val),
                                            ("test", n_train + n_val, n_test)):
                    for a, m in _pieces(start, length, cfg.trial_frames):
                        views.append(_view(row, role, a, m, f"{uid}@{a}-{a + m}"))
    return views


def _pieces(start, length, piece):
    if length <= 0:
        return []
    count = max(1, length // piece)
    bounds = [start + k * piece for k in range(count)] + [start + length]
    return [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _view(row, role, start, length, view_id):
    return {"utterance_id": view_id, "source_id": row["utterance_id"], "speaker": row["speaker"],
            "role": role, "start_frame": start, "num_frames": length}


def segment_index(views: list[dict], speakers: list[str], segment_len: int) -> list[dict]:
    ids = {s: i for i, s in enumerate(speakers)}
    hop, out = max(1, segment_len // 2), []
    for v in views:
        if v["role"] != "train" or v["num_frames"] <= 0:
            continue
        length = min(segment_len, v["num_frames"])
        out.append({"utterance_id": v["utterance_id"], "source_id": v["source_id"],
                    "speaker_id": ids[v["speaker"]], "start_frame": v["start_frame"],
                    "num_frames": length, "view_frames": v["num_frames"], "hop": hop,
                    "windows": (v["num_frames"] - length) // hop + 1})
    return out


def random_catalog(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [{"utterance_id": f"u{rng.integers(10 ** 6):06d}-{k}", "speaker": f"s{rng.integers(9)}",
             "role": None, "num_frames": int(rng.integers(1, 900))}
            for k in range(int(rng.integers(1, 120)))]
    rows += [{"utterance_id": f"x{k}", "speaker": None, "role": "submit",
              "num_frames": int(rng.integers(1, 300))} for k in range(int(rng.integers(0, 5)))]
    return [rows[i] for i in rng.permutation(len(rows))]
