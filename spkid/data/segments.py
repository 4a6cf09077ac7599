"""The training segment index: where training crops may be drawn from.

segments (Parquet): one row per training view: utterance_id (the view), source_id,
speaker_id, start_frame (the view's), num_frames (crop length), view_frames (the view's
length), hop, windows: crop window k starts at start_frame + k * hop, and a crop drawn
from it starts anywhere up to the next window. Crops never cross a view's end.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEGMENT_SCHEMA = pa.schema([
    ("utterance_id", pa.string()), ("source_id", pa.string()), ("speaker_id", pa.int32()),
    ("start_frame", pa.int64()), ("num_frames", pa.int64()), ("view_frames", pa.int64()),
    ("hop", pa.int64()), ("windows", pa.int64()),
])


def segment_index(views: pa.Table, segment_len: int) -> pa.Table:
    """Training crops of each train view of labelled `views` (spkid.data.views.label_views):
    a window every half segment, each crop free to start anywhere up to the next window (so
    every valid crop can be drawn); a view shorter than a segment gives one shorter crop."""
    train = views.filter(pc.and_(pc.equal(views["role"], "train"),
                                 pc.greater(views["num_frames"], 0)))
    frames = train["num_frames"].to_numpy()
    hop = max(1, segment_len // 2)
    length = np.minimum(segment_len, frames)
    return pa.table([train["utterance_id"], train["source_id"], train["speaker_id"],
                     train["start_frame"], pa.array(length), train["num_frames"],
                     pa.array(np.full(len(frames), hop, np.int64)),
                     pa.array((frames - length) // hop + 1)], schema=SEGMENT_SCHEMA)
