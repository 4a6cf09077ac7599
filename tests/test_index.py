from collections import Counter, defaultdict

import pyarrow as pa
import pytest

import split_reference
from segment_windows import crop_windows
from spkid.core.errors import DataError
from spkid.data import segments as segments_module
from spkid.data import views as views_module
from spkid.data.views import SplitConfig

CATALOG = pa.schema([("utterance_id", pa.string()), ("speaker", pa.string()),
                     ("role", pa.string()), ("num_frames", pa.int32())])


def split_views(cat: list[dict], cfg) -> list[dict]:
    return views_module.split_views(pa.Table.from_pylist(cat, schema=CATALOG), cfg).to_pylist()


def as_table(views: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(views, schema=views_module.SPLIT_SCHEMA)


def speaker_table(views: list[dict]) -> list[str]:
    return views_module.speaker_table(as_table(views))


def label_views(views: list[dict], speakers) -> list[dict]:
    return views_module.label_views(as_table(views), speakers).to_pylist()


def segment_index(views: list[dict], speakers, segment_len: int) -> list[dict]:
    labelled = views_module.label_views(as_table(views), speakers)
    return segments_module.segment_index(labelled, segment_len).to_pylist()


def catalog(speakers=5, per_speaker=10, frames=300, submit=4):
    rows = [{"utterance_id": f"s{s}-u{u}", "speaker": f"s{s}", "role": None,
             "num_frames": frames + 7 * u} for s in range(speakers) for u in range(per_speaker)]
    rows += [{"utterance_id": f"x{k}", "speaker": None, "role": "submit", "num_frames": 200}
             for k in range(submit)]
    return rows


def test_utterance_split_is_stratified_seeded_and_complete():
    cat = catalog()
    cfg = SplitConfig(0.2, 0.1, seed=3)
    views = split_views(cat, cfg)
    assert sorted(v["utterance_id"] for v in views) == sorted(r["utterance_id"] for r in cat)
    per = defaultdict(Counter)
    for v in views:
        per[v["speaker"]][v["role"]] += 1
    for s in range(5):
        assert per[f"s{s}"] == Counter({"train": 7, "val": 2, "test": 1})
    assert per[None] == Counter({"submit": 4})
    assert views == split_views(cat, cfg)
    other = split_views(cat, SplitConfig(0.2, 0.1, seed=4))
    assert {v["utterance_id"] for v in views if v["role"] == "val"} != \
        {v["utterance_id"] for v in other if v["role"] == "val"}


def test_small_speakers_keep_training_data():
    cat = catalog(speakers=2, per_speaker=3, submit=0)
    views = split_views(cat, SplitConfig(0.1, 0.1, 0))
    roles = Counter(v["role"] for v in views if v["speaker"] == "s0")
    assert roles == Counter({"train": 1, "val": 1, "test": 1})
    two = split_views(catalog(speakers=1, per_speaker=2, submit=0), SplitConfig(0.3, 0.3, 0))
    assert Counter(v["role"] for v in two)["train"] >= 1


def test_time_split_cuts_recordings_without_overlap():
    cat = [{"utterance_id": "a", "speaker": "A", "role": None, "num_frames": 1000},
           {"utterance_id": "b", "speaker": "B", "role": None, "num_frames": 1000}]
    views = split_views(cat, SplitConfig(0.2, 0.2, 0, split_by="time", trial_frames=60))
    a = sorted((v for v in views if v["source_id"] == "a"), key=lambda v: v["start_frame"])
    assert a[0] == {"utterance_id": "a@0-600", "source_id": "a", "speaker": "A", "role": "train",
                    "start_frame": 0, "num_frames": 600}
    # Contiguous, non-overlapping cover of the recording; held-out parts in trial pieces.
    ends = [v["start_frame"] + v["num_frames"] for v in a]
    assert [v["start_frame"] for v in a[1:]] == ends[:-1] and ends[-1] == 1000
    assert Counter(v["role"] for v in a) == Counter({"train": 1, "val": 3, "test": 3})
    assert all(60 <= v["num_frames"] < 120 for v in a[1:])
    speakers = speaker_table(views)
    segs = segment_index(label_views(views, speakers), speakers, segment_len=128)
    for s in segs:  # every crop, jitter included, stays inside the training part
        for start, jitter in crop_windows(s):
            assert start >= 0 and start + jitter + s["num_frames"] <= 600


def test_segments_cover_views_and_short_views():
    views = [{"utterance_id": "v1", "source_id": "u1", "speaker": "A", "role": "train",
              "start_frame": 10, "num_frames": 300},
             {"utterance_id": "v2", "source_id": "u2", "speaker": "B", "role": "train",
              "start_frame": 0, "num_frames": 50},
             {"utterance_id": "v3", "source_id": "u3", "speaker": "B", "role": "val",
              "start_frame": 0, "num_frames": 500}]
    segs = segment_index(views, ["A", "B"], segment_len=128)
    v1 = [s for s in segs if s["utterance_id"] == "v1"]
    assert len(v1) == 1  # one row per view, whatever its length
    assert [w for w, _ in crop_windows(v1[0])] == [10, 74, 138]
    reachable = {w + j for w, jitter in crop_windows(v1[0]) for j in range(jitter + 1)}
    assert reachable == set(range(10, 10 + 300 - 128 + 1))  # every valid crop can be drawn
    assert [s for s in segs if s["utterance_id"] == "v2"] == [
        {"utterance_id": "v2", "source_id": "u2", "speaker_id": 1, "start_frame": 0,
         "num_frames": 50, "view_frames": 50, "hop": 64, "windows": 1}]
    assert not [s for s in segs if s["utterance_id"] == "v3"]


def test_speaker_table_and_labels():
    views = split_views(catalog(speakers=3, per_speaker=5), SplitConfig(0.2, 0.2, 0))
    speakers = speaker_table(views)
    assert speakers == ["s0", "s1", "s2"]
    labelled = label_views(views, speakers)
    assert {v["speaker_id"] for v in labelled if v["role"] == "submit"} == {-1}
    assert all(speakers[v["speaker_id"]] == v["speaker"] for v in labelled if v["role"] != "submit")
    with pytest.raises(DataError, match="s9"):
        speaker_table([{"utterance_id": "a", "source_id": "a", "speaker": "s9", "role": "val",
                        "start_frame": 0, "num_frames": 5},
                       {"utterance_id": "b", "source_id": "b", "speaker": "s1", "role": "train",
                        "start_frame": 0, "num_frames": 5}])


@pytest.mark.parametrize("split_by", ["utterance", "time"])
def test_the_columnar_split_is_the_row_by_row_one(split_by):
    """Views and segments equal, in order and value, what spkid computed one dict per view
    (tests/split_reference.py) on random catalogs."""
    for seed in range(25):
        cat = split_reference.random_catalog(seed)
        cfg = SplitConfig(0.2, 0.15, seed, split_by=split_by, trial_frames=40)
        want = split_reference.split_views(cat, cfg)
        assert split_views(cat, cfg) == want
        speakers = sorted({v["speaker"] for v in want if v["role"] == "train"})
        assert segment_index(want, speakers, 48) == split_reference.segment_index(want, speakers, 48)


def test_bad_catalog_rows_are_named():
    with pytest.raises(DataError, match="utterance u2: unexpected role 'augment'"):
        split_views([{"utterance_id": "u1", "speaker": "a", "role": None, "num_frames": 9},
                     {"utterance_id": "u2", "speaker": "a", "role": "augment", "num_frames": 9}],
                    SplitConfig(0.1, 0.1, 0))
    with pytest.raises(DataError, match="utterance u1 is labelled but has no speaker"):
        split_views([{"utterance_id": "u1", "speaker": None, "role": None, "num_frames": 9}],
                    SplitConfig(0.1, 0.1, 0))
