"""index: split utterances into train / val / test / submit and list the training segments."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import typer

from spkid.atomic import atomic_dir, write_json
from spkid.index import (SEGMENT_SCHEMA, VIEW_SCHEMA, SplitConfig, label_views, segment_index,
                         speaker_table, split_views, to_table)
from spkid.params import load_params
from spkid.shards import read_catalog, read_meta
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import FEATURES, INDEX, SEGMENTS, SPEAKERS, VIEWS

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
@exclusive
def index(params: Path = ParamsOption):
    """Write the split (utterances.parquet), segments.parquet and speakers.json."""
    started = time.perf_counter()
    p = load_params(params)
    feats = read_meta(FEATURES)["features"]
    cfg = SplitConfig.from_params(p.index, feats["sample_rate"] / feats["hop_length"])
    views = split_views(read_catalog(FEATURES).to_pylist(), cfg)
    speakers = speaker_table(views)
    views = label_views(views, speakers)
    segments = segment_index(views, speakers, p.index.segment_len)
    with atomic_dir(INDEX) as tmp:
        pq.write_table(to_table(views, VIEW_SCHEMA), tmp / VIEWS.name)
        pq.write_table(to_table(segments, SEGMENT_SCHEMA), tmp / SEGMENTS.name)
        write_json(tmp / SPEAKERS.name, {"speakers": speakers,
                                         "speaker2id": {s: i for i, s in enumerate(speakers)}})
    roles = Counter(v["role"] for v in views)
    summary("index", f"{len(speakers)} speakers; " + ", ".join(
        f"{r} {roles.get(r, 0)}" for r in ("train", "augment", "val", "test", "submit")
        if r != "augment" or roles.get(r))
        + f"; {sum(s['windows'] for s in segments)} crop windows", time.perf_counter() - started)
