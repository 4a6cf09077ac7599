"""spkid.data.sources.hw4: the HW4 Kaggle folder (JSON files + uttr-*.pt tensors)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from spkid.core.errors import DataError
from spkid.data.manifest import read_manifest, write_manifest
from spkid.data.sources.hw4 import load_hw4_features, scan_hw4

N_MELS = 40
# Class ids deliberately not in name order: rows must follow mapping.json's id order.
SPEAKERS = ["id10473", "id00464", "id10001"]


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def make_hw4(folder: Path, n_utts: int = 4, n_test: int = 2, seed: int = 0) -> Path:
    """A small but complete HW4 folder: 3 speakers x 4 utterances, 2 test utterances."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    speakers, k = {}, 0

    def utt() -> dict:
        nonlocal k
        mel_len = int(rng.integers(5, 20))
        name = f"uttr-{k:032x}.pt"
        k += 1
        torch.save(torch.from_numpy(rng.standard_normal((mel_len, N_MELS), dtype=np.float32)),
                   folder / name)
        return {"feature_path": name, "mel_len": mel_len}

    for spk in SPEAKERS:
        speakers[spk] = [utt() for _ in range(n_utts)]
    tests = [utt() for _ in range(n_test)]
    _write_json(folder / "mapping.json", {
        "speaker2id": {s: i for i, s in enumerate(SPEAKERS)},
        "id2speaker": {str(i): s for i, s in enumerate(SPEAKERS)}})
    # metadata lists speakers in another order than the mapping
    _write_json(folder / "metadata.json", {"n_mels": N_MELS,
                                           "speakers": dict(sorted(speakers.items()))})
    _write_json(folder / "testdata.json", {"n_mels": N_MELS, "utterances": tests})
    return folder


@pytest.fixture
def hw4(tmp_path) -> Path:
    return make_hw4(tmp_path / "hw4")


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    _write_json(path, doc)


# --- scan_hw4: the good case ------------------------------------------------------------

def test_scan_rows_meta_and_order(hw4):
    rows, meta = scan_hw4(hw4)
    assert meta == {"format": "hw4", "n_mels": N_MELS, "speakers": SPEAKERS}
    metadata = json.loads((hw4 / "metadata.json").read_text())
    testdata = json.loads((hw4 / "testdata.json").read_text())

    labelled = [r for r in rows if r.role is None]
    expected = [(s, u["feature_path"], u["mel_len"]) for s in SPEAKERS
                for u in metadata["speakers"][s]]
    assert [(r.speaker, r.utterance_id, r.num_frames) for r in labelled] == expected

    submit = rows[len(labelled):]
    assert [r.utterance_id for r in submit] == [u["feature_path"] for u in testdata["utterances"]]
    assert all(r.role == "submit" and r.speaker is None for r in submit)

    for r in rows:
        assert Path(r.path).is_absolute() and Path(r.path) == (hw4 / r.utterance_id).absolute()
        st = os.stat(r.path)
        assert (r.size, r.mtime_ns, r.duration) == (st.st_size, st.st_mtime_ns, None)


def test_rows_fit_the_manifest_contract(hw4, tmp_path):
    rows, meta = scan_hw4(hw4)
    write_manifest(tmp_path / "manifest.parquet", rows, meta)
    back, back_meta = read_manifest(tmp_path / "manifest.parquet")
    assert back == rows and back_meta == meta


def test_a_changed_feature_file_changes_its_fingerprint(hw4):
    rows, _ = scan_hw4(hw4)
    target = Path(rows[0].path)
    torch.save(torch.zeros(rows[0].num_frames + 3, N_MELS), target)
    again, _ = scan_hw4(hw4)
    assert again[0].size != rows[0].size


# --- scan_hw4: bad folders ----------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        scan_hw4(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["mapping.json", "metadata.json", "testdata.json"])
def test_missing_json_file(hw4, name):
    (hw4 / name).unlink()
    with pytest.raises(DataError, match=f"{name}: not found"):
        scan_hw4(hw4)


@pytest.mark.parametrize("name", ["mapping.json", "metadata.json", "testdata.json"])
def test_invalid_json(hw4, name):
    (hw4 / name).write_text('{"n_mels": 40,\n "speakers": {oops}}')
    with pytest.raises(DataError, match=rf"{name}: invalid JSON at line 2"):
        scan_hw4(hw4)


def _set(*keys, value):
    def change(doc):
        for k in keys[:-1]:
            doc = doc[k]
        doc[keys[-1]] = value
    return change


def _delete(*keys):
    def change(doc):
        for k in keys[:-1]:
            doc = doc[k]
        del doc[keys[-1]]
    return change


BAD_JSON = [
    # (file, change, what the message must say besides the file name)
    ("mapping.json", lambda d: d.clear() or d.update({"speaker2id": []}), "speaker2id: must be object"),
    ("mapping.json", _delete("id2speaker"), "id2speaker: missing"),
    ("mapping.json", _set("speaker2id", "id10473", value="0"), "speaker2id.id10473: must be int"),
    ("mapping.json", _set("speaker2id", "id10473", value=True), "speaker2id.id10473: must be int"),
    ("mapping.json", _set("speaker2id", value={}), "speaker2id: no speakers"),
    ("mapping.json", _set("id2speaker", "1", value=7), "id2speaker.1: must be string"),
    ("metadata.json", _delete("n_mels"), "n_mels: missing"),
    ("metadata.json", _set("n_mels", value=0), "n_mels: must be > 0"),
    ("metadata.json", _set("speakers", value=[]), "speakers: must be object, got array"),
    ("metadata.json", _set("speakers", "id00464", value={"feature_path": "x"}),
     "speakers.id00464: must be array"),
    ("metadata.json", _set("speakers", "id00464", 1, value="uttr-x.pt"),
     r"speakers.id00464\[1\]: must be object"),
    ("metadata.json", _set("speakers", "id00464", 2, "mel_len", value="702"),
     r"speakers.id00464\[2\].mel_len: must be int, got string"),
    ("metadata.json", _set("speakers", "id00464", 2, "mel_len", value=-3),
     r"speakers.id00464\[2\].mel_len: must be > 0"),
    ("metadata.json", _delete("speakers", "id00464", 0, "feature_path"),
     r"speakers.id00464\[0\].feature_path: missing"),
    ("metadata.json", _set("speakers", "id00464", 0, "feature_path", value="../../etc/passwd"),
     r"speakers.id00464\[0\].feature_path: '../../etc/passwd' must be a relative path"),
    ("metadata.json", _set("speakers", "id00464", 0, "feature_path", value="/etc/passwd"),
     r"speakers.id00464\[0\].feature_path: '/etc/passwd' must be a relative path"),
    ("testdata.json", _set("n_mels", value=80), "n_mels: is 80 but metadata.json says 40"),
    ("testdata.json", _delete("utterances"), "utterances: missing"),
    ("testdata.json", _set("utterances", value={}), "utterances: must be array"),
    ("testdata.json", _set("utterances", 0, "mel_len", value=1.5), r"utterances\[0\].mel_len: must be int"),
]


@pytest.mark.parametrize("name,change,message", BAD_JSON,
                         ids=[f"{n}-{m.split(':')[0]}" for n, _, m in BAD_JSON])
def test_json_not_matching_the_format(hw4, name, change, message):
    _edit(hw4 / name, change)
    with pytest.raises(DataError, match=rf"{name}: {message}"):
        scan_hw4(hw4)


def test_top_level_must_be_an_object(hw4):
    (hw4 / "metadata.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="metadata.json: top level: must be a JSON object, got array"):
        scan_hw4(hw4)


@pytest.mark.parametrize("how", ["absent", "empty list"])
def test_mapping_speaker_without_utterances(hw4, how):
    change = _delete("speakers", "id10001") if how == "absent" else _set("speakers", "id10001", value=[])
    _edit(hw4 / "metadata.json", change)
    with pytest.raises(DataError, match="mapping.json: speaker 'id10001' has no utterances in .*metadata.json"):
        scan_hw4(hw4)


def test_metadata_speaker_missing_from_mapping(hw4):
    _edit(hw4 / "metadata.json", _set("speakers", "id99999",
                                      value=[{"feature_path": "uttr-0.pt", "mel_len": 3}]))
    with pytest.raises(DataError, match="metadata.json: speaker 'id99999' is not in .*mapping.json"):
        scan_hw4(hw4)


@pytest.mark.parametrize("change,message", [
    (_set("id2speaker", "1", value="id10001"), r"id2speaker.1: is 'id10001' but speaker2id.id00464 = 1"),
    (_set("speaker2id", "id10001", value=0), "speaker2id.id10001: id 0 is also given to 'id10473'"),
    (_set("id2speaker", "7", value="id77777"), "id2speaker.7: has no entry in speaker2id"),
], ids=["names-differ", "duplicate-id", "extra-id"])
def test_mapping_tables_disagree(hw4, change, message):
    _edit(hw4 / "mapping.json", change)
    with pytest.raises(DataError, match=rf"mapping.json: {message}"):
        scan_hw4(hw4)


def test_feature_path_listed_twice(hw4):
    meta = json.loads((hw4 / "metadata.json").read_text())
    first = meta["speakers"]["id00464"][0]["feature_path"]
    _edit(hw4 / "testdata.json", _set("utterances", 1, "feature_path", value=first))
    with pytest.raises(DataError, match=rf"testdata.json: utterances\[1\].feature_path: '{first}' is listed twice"):
        scan_hw4(hw4)


def test_missing_feature_file(hw4):
    meta = json.loads((hw4 / "metadata.json").read_text())
    name = meta["speakers"]["id10473"][2]["feature_path"]
    (hw4 / name).unlink()
    with pytest.raises(DataError, match=rf"{name}: feature file not found \(listed in metadata.json at speakers.id10473\[2\]\)"):
        scan_hw4(hw4)


# --- load_hw4_features ------------------------------------------------------------------

def test_load_features_roundtrip(hw4):
    rows, _ = scan_hw4(hw4)
    for r in rows[:3]:
        feats = load_hw4_features(r.path, r.num_frames, N_MELS)
        assert feats.dtype == np.float32 and feats.shape == (r.num_frames, N_MELS)
        np.testing.assert_array_equal(feats, torch.load(r.path).numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_precisions_are_converted(tmp_path, dtype):
    path = tmp_path / "uttr-half.pt"
    torch.save(torch.linspace(-3, 3, 6 * N_MELS).reshape(6, N_MELS).to(dtype), path)
    feats = load_hw4_features(path, 6, N_MELS)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, torch.load(path).float().numpy())


def _bad_pt(tmp_path, obj) -> Path:
    path = tmp_path / "uttr-bad.pt"
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("obj,message", [
    (torch.ones(6, N_MELS, dtype=torch.int64), "dtype torch.int64, expected floating point"),
    (torch.ones(6, N_MELS, dtype=torch.bool), "dtype torch.bool"),
    ({"feats": torch.ones(6, N_MELS)}, "holds a dict, not a tensor"),
    ([torch.ones(6, N_MELS)], "holds a list, not a tensor"),
    (torch.ones(7, N_MELS), r"shape \(7, 40\), expected \(6, 40\)"),
    (torch.ones(6, 80), r"shape \(6, 80\), expected \(6, 40\)"),
    (torch.ones(6 * N_MELS), r"shape \(240,\), expected \(6, 40\)"),
    (torch.ones(1, 6, N_MELS), r"shape \(1, 6, 40\)"),
], ids=["int", "bool", "dict", "list", "mel_len", "n_mels", "1d", "3d"])
def test_load_rejects_wrong_content(tmp_path, obj, message):
    path = _bad_pt(tmp_path, obj)
    with pytest.raises(DataError, match=rf"uttr-bad.pt: .*{message}"):
        load_hw4_features(path, 6, N_MELS)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_load_rejects_non_finite(tmp_path, value):
    t = torch.zeros(6, N_MELS)
    t[4, 7] = value
    path = _bad_pt(tmp_path, t)
    with pytest.raises(DataError, match=r"uttr-bad.pt: 1 NaN or inf values \(first in frame 4\)"):
        load_hw4_features(path, 6, N_MELS)


def test_float64_too_large_for_float32_is_caught(tmp_path):
    t = torch.zeros(6, N_MELS, dtype=torch.float64)
    t[0, 0] = 1e300
    with pytest.raises(DataError, match="uttr-bad.pt: 1 NaN or inf"):
        load_hw4_features(_bad_pt(tmp_path, t), 6, N_MELS)


class RunsCode:
    """Unpickling this runs a shell command: exactly what weights_only must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer,reason", [
    ("torch.save", r"GLOBAL (os|posix)\.system"),
    ("pickle.dump", r"Unsupported operand"),
    ("pickle.dump protocol 0", r"GLOBAL (os|posix)\.system"),  # text, but a pickle all the same
])
def test_pickle_with_code_is_refused_without_running(tmp_path, writer, reason):
    marker = tmp_path / "code-ran"
    path = tmp_path / "uttr-evil.pt"
    if writer == "torch.save":
        torch.save(RunsCode(marker), path)
    else:
        with open(path, "wb") as f:
            pickle.dump(RunsCode(marker), f, protocol=0 if writer.endswith("0") else None)
    # torch's own reason is kept, without its paragraphs of advice
    with pytest.raises(DataError, match=r"^\S*uttr-evil.pt: refused to load: holds objects other "
                       rf"than tensors \(weights_only: [^\n]*{reason}[^\n]{{0,80}}\)$"):
        load_hw4_features(path, 6, N_MELS)
    assert not marker.exists()


@pytest.mark.parametrize("content,start", [
    (b"hello, this is not a torch file", r"starts with b'hello, this is n'"),
    (b"id10001 uttr-0.pt 702\n", "starts with b'id10001 uttr-0.p'"),
    (bytes(range(200, 256)), r"starts with b'\\xc8\\xc9"),
    (b"", "is empty"),
], ids=["text", "listing", "binary", "empty"])
def test_load_garbage_is_not_a_torch_file(tmp_path, content, start):
    garbage = tmp_path / "uttr-garbage.pt"
    garbage.write_bytes(content)
    with pytest.raises(DataError, match=rf"uttr-garbage.pt: not a torch file \(it {start}.*; "
                                        r"torch.save writes a zip archive\)$"):
        load_hw4_features(garbage, 6, N_MELS)


def test_load_truncated_file(tmp_path):
    good = tmp_path / "uttr-good.pt"
    torch.save(torch.ones(6, N_MELS), good)
    cut = tmp_path / "uttr-cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match=r"uttr-cut.pt: not a readable torch file \(PytorchStreamReader"):
        load_hw4_features(cut, 6, N_MELS)


def test_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="uttr-none.pt: feature file not found"):
        load_hw4_features(tmp_path / "uttr-none.pt", 6, N_MELS)
