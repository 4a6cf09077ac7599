import numpy as np
import pytest
import torch

from spkid.batching import SegmentBatches, pad_views, view_batches
from spkid.checkpoint import build_model, load_model_dir, save_model_dir
from spkid.errors import DataError
from spkid.params import validate_params
from spkid.shards import FeatureStore
from spkid.training import embed_views, train, warmup_cosine

N_MELS, SPEAKERS = 8, 3


def toy_store(seed=0):
    """Three 'speakers' whose frames differ in mean: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    mats, ids, labels = [], [], []
    for s in range(SPEAKERS):
        for u in range(4):
            n = int(rng.integers(40, 90))
            mats.append((rng.standard_normal((n, N_MELS)) + 2.0 * np.eye(N_MELS)[s]).astype(np.float32))
            ids.append(f"s{s}-u{u}")
            labels.append(s)
    length = np.array([len(m) for m in mats])
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    return FeatureStore(np.concatenate(mats), ids, offset, length), labels


def segments_for(store, labels, seg=32):
    rows = {"source_id": [], "start_frame": [], "num_frames": [], "jitter": [], "speaker_id": []}
    for uid, n, y in zip(store.ids, store.length, labels):
        rows["source_id"].append(uid)
        rows["start_frame"].append(0)
        rows["num_frames"].append(min(seg, int(n)))
        rows["jitter"].append(int(n) - min(seg, int(n)))
        rows["speaker_id"].append(y)
    return rows


def views_for(store, labels):
    return {"source_id": store.ids, "start_frame": [0] * len(store.ids),
            "num_frames": [int(n) for n in store.length], "speaker_id": labels}


PARAMS = validate_params({
    "model": {"encoder": "transformer", "pooling": "sap", "d_model": 16, "layers": 1, "heads": 2, "ffn_dim": 32, "embedding_dim": 16, "input_norm": "none",
              "dropout": 0.1},
    "train": {"steps": 30, "batch_size": 8, "valid_every": 10, "warmup_steps": 3, "lr": 3e-3},
    "loss": {"name": "am_softmax", "s": 10.0},
})


def run_training(tmp_path, seed=0):
    store, labels = toy_store()
    torch.manual_seed(seed)
    config = {"model": PARAMS.model.to_dict(), "loss": PARAMS.loss.to_dict(), "n_mels": N_MELS,
              "speakers": ["a", "b", "c"], "features": {}}
    model = build_model(config)
    batches = SegmentBatches(store, segments_for(store, labels), 8, seed, 30)
    saved = {}
    result = train(model, batches, views_for(store, labels), store, PARAMS.train,
                   device=torch.device("cpu"), batch_frames=400,
                   save_best=lambda s: saved.update(state=s), progress=False)
    return result, saved["state"], model, config, store, labels


def test_training_learns_and_is_deterministic(tmp_path):
    a, state_a, model, config, store, labels = run_training(tmp_path)
    b, state_b, *_ = run_training(tmp_path)
    assert [h["train/loss"] for h in a.history] == [h["train/loss"] for h in b.history]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a.history[-1]["train/loss"] < a.history[0]["train/loss"]
    assert a.best_val_accuracy >= 2 / 3
    # The saved best weights round-trip through a model folder with weights_only loading.
    save_model_dir(tmp_path / "m", state_a, config)
    loaded, cfg = load_model_dir(tmp_path / "m")
    model.load_state_dict(state_a)
    e1, z1 = embed_views(model, store, views_for(store, labels), 400, torch.device("cpu"))
    e2, z2 = embed_views(loaded, store, views_for(store, labels), 400, torch.device("cpu"))
    np.testing.assert_allclose(e1, e2, atol=1e-6)
    assert (z1.argmax(1) == np.array(labels)).mean() == pytest.approx(a.best_val_accuracy)


def test_segment_batches_are_a_function_of_step():
    store, labels = toy_store()
    batches = SegmentBatches(store, segments_for(store, labels), 6, seed=5, steps=10)
    x1, m1, y1 = batches[3]
    x2, m2, y2 = batches[3]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(batches[4][0], x1)
    assert x1.shape == (6, 32, N_MELS) and m1.all()
    # Every crop is a real stretch of its utterance, of the right speaker.
    for k in range(6):
        crop = x1[k].numpy()
        hits = [i for i in range(len(store.ids))
                if any(np.array_equal(crop, store.matrix(i)[s:s + 32])
                       for s in range(int(store.length[i]) - 31))]
        assert hits and labels[hits[0]] == int(y1[k])


def test_view_batches_bound_padding():
    lengths = np.array([100, 10, 50, 55, 300, 12])
    batches = list(view_batches(lengths, batch_frames=120))
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 120


def test_pad_views_masks():
    store, _ = toy_store()
    x, mask = pad_views(store, np.array([0, 1]), np.array([5, 0]), np.array([10, 20]))
    assert x.shape == (2, 20, N_MELS) and mask.sum(1).tolist() == [10, 20]
    np.testing.assert_array_equal(x[0, :10].numpy(), store.matrix(0)[5:15])
    assert not x[0, 10:].any()


def test_warmup_cosine_shape():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-9)


def test_model_dir_errors_name_files(tmp_path):
    with pytest.raises(DataError, match="model.json"):
        load_model_dir(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DataError, match="model.json.*invalid JSON"):
        load_model_dir(tmp_path)
