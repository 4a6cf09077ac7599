"""index: split utterances into train / val / test / submit and list the training segments."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from spkid.core.atomic import atomic_dir, write_json
from spkid.core.params import load_params
from spkid.data.segments import segment_index
from spkid.data.views import SplitConfig, label_views, speaker_table, split_views
from spkid.features.store import read_catalog, read_meta
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
    views = split_views(read_catalog(FEATURES), cfg)
    speakers = speaker_table(views)
    views = label_views(views, speakers)
    segments = segment_index(views, p.index.segment_len)
    with atomic_dir(INDEX) as tmp:
        pq.write_table(views, tmp / VIEWS.name)
        pq.write_table(segments, tmp / SEGMENTS.name)
        write_json(tmp / SPEAKERS.name, {"speakers": speakers,
                                         "speaker2id": {s: i for i, s in enumerate(speakers)}})
    roles = {c["values"]: c["counts"] for c in pc.value_counts(views["role"]).to_pylist()}
    summary("index", f"{len(speakers)} speakers; " + ", ".join(
        f"{r} {roles.get(r, 0)}" for r in ("train", "val", "test", "submit"))
        + f"; {int(segments['windows'].to_numpy().sum())} crop windows",
        time.perf_counter() - started)
