"""The training segment index: where training crops may be drawn from.

segments (Parquet): one row per training view: utterance_id (the view), source_id,
speaker_id, start_frame (the view's), num_frames (crop length), view_frames (the view's
length), hop, windows: crop window k starts at start_frame + k * hop, and a crop drawn
from it starts anywhere up to the next window. Crops never cross a view's end.
"""

from __future__ import annotations

import pyarrow as pa

from spkid.data.views import TRAINING

SEGMENT_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("source_id", pa.string()), ("speaker_id", pa.int32()),
    ("start_frame", pa.int64()), ("num_frames", pa.int64()), ("view_frames", pa.int64()),
    ("hop", pa.int64()), ("windows", pa.int64()),
])


def segment_index(views: list[dict], speakers: list[str], segment_len: int) -> list[dict]:
    """Training crops of each train view: a window every half segment, each crop free to
    start anywhere up to the next window (so every valid crop can be drawn); a view
    shorter than a segment gives one shorter crop."""
    ids = {s: i for i, s in enumerate(speakers)}
    hop = max(1, segment_len // 2)
    out = []
    for v in views:
        if v["role"] not in TRAINING or v["num_frames"] <= 0:
            continue
        length = min(segment_len, v["num_frames"])
        out.append({"utterance_id": v["utterance_id"], "source_id": v["source_id"],
                    "speaker_id": ids[v["speaker"]], "start_frame": v["start_frame"],
                    "num_frames": length, "view_frames": v["num_frames"], "hop": hop,
                    "windows": (v["num_frames"] - length) // hop + 1})
    return out
