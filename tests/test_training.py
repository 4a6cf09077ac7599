import numpy as np
import pyarrow as pa
import pytest
import torch

from segment_windows import crop_windows
from spkid.core.errors import DataError
from spkid.core.params import validate_params
from spkid.features.store import FeatureStore
from spkid.models.embedding import embed_views, view_batches
from spkid.models.folder import build_model, load_model_dir, save_model_dir
from spkid.train.batches import SegmentBatches, training_batches
from spkid.train.loop import RunHooks, train
from spkid.train.schedule import warmup_cosine
from spkid.train.validation import Validation, subset_views

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
    return FeatureStore.from_matrices(ids, mats), labels


def segments_for(store, labels, seg=32, start=0):
    rows = {k: [] for k in ("source_id", "start_frame", "num_frames", "view_frames", "hop",
                            "windows", "speaker_id")}
    for uid, n, y in zip(store.ids.to_pylist(), store.length, labels):
        n = int(n) - start
        for key, value in (("source_id", uid), ("start_frame", start), ("num_frames", min(seg, n)),
                           ("view_frames", n), ("hop", seg // 2),
                           ("windows", (n - min(seg, n)) // (seg // 2) + 1), ("speaker_id", y)):
            rows[key].append(value)
    return rows


def views_for(store, labels):
    return {"source_id": store.ids.to_pylist(), "start_frame": [0] * len(store.ids),
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
    saved, curve = {}, []
    validation = Validation.sample(store, views_for(store, labels), PARAMS.train, 400)
    result = train(model, batches, validation, PARAMS, device=torch.device("cpu"),
                   hooks=RunHooks(save_best=lambda s: saved.update(state=s),
                                  log=lambda metrics, step: curve.append(metrics["train/loss"])),
                   progress=False)
    return result, curve, saved["state"], model, config, store, labels


def test_training_learns_and_is_deterministic(tmp_path):
    a, curve_a, state_a, model, config, store, labels = run_training(tmp_path)
    b, curve_b, state_b, *_ = run_training(tmp_path)
    assert len(curve_a) == 3 and curve_a == curve_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert curve_a[-1] < curve_a[0]
    assert a.best_val_accuracy >= 2 / 3
    # The saved best weights round-trip through a model folder with weights_only loading.
    save_model_dir(tmp_path / "m", state_a, config)
    loaded, cfg = load_model_dir(tmp_path / "m")
    model.load_state_dict(state_a)
    o1 = embed_views(model, store, views_for(store, labels), 400, torch.device("cpu"), labels=labels)
    o2 = embed_views(loaded, store, views_for(store, labels), 400, torch.device("cpu"))
    np.testing.assert_allclose(o1.embeddings, o2.embeddings, atol=1e-6)
    assert (o1.predicted == np.array(labels)).mean() == pytest.approx(a.best_val_accuracy)
    assert o2.true_rank is None and ((o1.true_rank == 0) == (o1.predicted == labels)).all()


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


def test_segment_batches_draw_what_one_row_per_window_drew():
    """The per-view index draws exactly the batches of the former one-row-per-window index
    (so results did not move), for every rank of a DDP run."""
    store, labels = toy_store()
    segments = segments_for(store, labels, seg=20, start=3)
    rows = [dict(zip(segments, values)) for values in zip(*segments.values())]
    expanded = [(store.positions([r["source_id"]])[0], w, jitter, r["num_frames"], r["speaker_id"])
                for r in rows for w, jitter in crop_windows(r)]
    for rank, world in ((0, 1), (1, 3)):
        batches = SegmentBatches(store, segments, 5, seed=7, steps=4, rank=rank, world=world)
        mine = expanded[rank::world]
        for step in range(4):
            rng = np.random.default_rng([7, rank, step])
            pick = rng.integers(0, len(mine), 5)
            jitter = np.array([mine[k][2] for k in pick])
            starts = [mine[k][1] for k in pick] + (rng.random(5) * (jitter + 1)).astype(np.int64)
            x, mask, y = batches[step]
            for b, k in enumerate(pick):
                p, _, _, n, label = mine[k]
                np.testing.assert_array_equal(x[b, :n].numpy(), store.matrix(p)[starts[b]:starts[b] + n])
                assert int(y[b]) == label


def test_validation_subset_and_middle_frames():
    store, labels = toy_store()
    views = views_for(store, labels)
    part = subset_views(views, 5, seed=1)
    assert part == subset_views(views, 5, seed=1) and len(part["source_id"]) == 5
    assert set(part["source_id"]) < set(views["source_id"]) and subset_views(views, 0, 1) is views
    assert part["source_id"] == sorted(part["source_id"], key=views["source_id"].index)
    # max_frames scores the middle of each view: the same as scoring that stretch whole.
    torch.manual_seed(0)
    model = build_model({"model": PARAMS.model.to_dict(), "loss": PARAMS.loss.to_dict(),
                         "n_mels": N_MELS, "speakers": ["a", "b", "c"], "features": {}})
    middle = {**views, "start_frame": [(int(n) - 20) // 2 for n in store.length],
              "num_frames": [20] * len(store.length)}
    cpu = torch.device("cpu")
    np.testing.assert_allclose(embed_views(model, store, views, 400, cpu, max_frames=20).embeddings,
                               embed_views(model, store, middle, 400, cpu).embeddings, atol=1e-6)


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


FINETUNE = {"train": {"steps": 12, "batch_size": 8, "valid_every": 5, "warmup_steps": 3,
                      "lr": 3e-3, "checkpoint_every": 4,
                      "finetune": {"steps": 8, "crop_frames": 60, "margin": 0.4, "lr": 5e-4}},
            "model": PARAMS.model.to_dict(), "loss": {"name": "am_softmax", "s": 10.0, "m": 0.1}}


def test_finetune_crops_are_longer_and_stay_inside_their_views():
    store, labels = toy_store()
    segments = segments_for(store, labels)
    main = SegmentBatches(store, segments, 64, 0, 5)
    long = SegmentBatches(store, segments, 64, 0, 5, crop_frames=60, phase=1)
    x, mask, _ = main[0]
    assert x.shape[1] == 32 and bool(mask.all())
    x, mask, y = long[0]
    lengths = mask.sum(1).numpy()
    assert x.shape[1] == 60 and set(lengths) <= {60} | set(int(n) for n in store.length if n < 60)
    assert (lengths == 60).any()
    # Every crop is frames of its own utterance: rows match the store at some offset.
    for row in range(8):
        n = int(lengths[row])
        mats = [store.matrix(k) for k in range(len(store.ids)) if labels[k] == int(y[row])]
        assert any(any(np.array_equal(m[s:s + n], x[row, :n].numpy()) for s in range(len(m) - n + 1))
                   for m in mats)


def _finetune_run(p, resume=None, stop_after=None):
    store, labels = toy_store()
    torch.manual_seed(0)
    config = {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": N_MELS,
              "speakers": ["a", "b", "c"], "features": {}}
    model = build_model(config)
    batches = training_batches(store, segments_for(store, labels), p.train)
    seen, snaps, best = [], {}, {}

    class Stop(Exception):
        pass

    def checkpoint(snapshot):
        snaps[snapshot["progress"]["step"]] = snapshot
        if snapshot["progress"]["step"] == stop_after:
            raise Stop

    def log(metrics, step):
        seen.append((step, metrics["lr"], metrics["margin"]))
    validation = Validation.sample(store, views_for(store, labels), p.train, 400)
    try:
        result = train(model, batches, validation, p, device=torch.device("cpu"), resume=resume,
                       hooks=RunHooks(save_best=lambda w: best.update(w=w),
                                      save_checkpoint=checkpoint, log=log), progress=False)
    except Stop:
        return None, snaps, seen, best
    return result, model.state_dict(), seen, best


def test_finetune_phase_switches_lr_margin_and_crops_and_resumes_exactly():
    p = validate_params(FINETUNE)
    store, labels = toy_store()
    batches = training_batches(store, segments_for(store, labels), p.train)
    assert len(batches) == 20 and batches[11][0].shape[1] == 32 and batches[12][0].shape[1] == 60
    result, weights, seen, best = _finetune_run(p)
    assert result.step == 20
    by_step = {step: (lr, margin) for step, lr, margin in seen}
    assert sorted(by_step) == [5, 10, 12, 15, 20]
    assert by_step[10][1] == pytest.approx(0.1) and by_step[15][1] == pytest.approx(0.4)
    assert by_step[15][0] == pytest.approx(5e-4) and by_step[20][0] == pytest.approx(5e-4)
    # data/model comes from the fine-tuning phase's validations, whatever came before.
    assert result.best_step in (15, 20)
    # Interrupted inside the fine-tuning phase, the resumed run ends where this one did.
    _, snaps, _, _ = _finetune_run(p, stop_after=16)
    resumed, weights2, _, _ = _finetune_run(p, resume=snaps[16])
    assert resumed.step == 20 and resumed.best_step == result.best_step
    for k in weights:
        assert torch.equal(weights[k], weights2[k]), k


def test_finetune_off_keeps_the_schedule():
    p = validate_params({"train": {"steps": 10, "warmup_steps": 2}})
    plain = warmup_cosine(2, 10)
    from spkid.train.schedule import phase_schedule
    assert [phase_schedule(p.train)(s) for s in range(12)] == [plain(s) for s in range(12)]


def _sharded_store(shards=6, per_shard=5, seed=0):
    """A store whose utterances lie in `shards` shards, as open_features maps them."""
    rng = np.random.default_rng(seed)
    ids, labels, shard, lengths, arrays = [], [], [], [], []
    for s in range(shards):
        mats = [rng.standard_normal((int(rng.integers(40, 90)), N_MELS)).astype(np.float32)
                for _ in range(per_shard)]
        for u, m in enumerate(mats):
            ids.append(f"sh{s}-u{u}")
            labels.append(u % SPEAKERS)
            shard.append(s)
            lengths.append(len(m))
        arrays.append(np.concatenate(mats))
    length = np.array(lengths, np.int64)
    shard = np.array(shard, np.int64)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]]) - np.repeat(
        [0] + [sum(lengths[:per_shard * s]) for s in range(1, shards)], per_shard)
    return FeatureStore(pa.array(ids), shard, offset.astype(np.int64), length, arrays, N_MELS), labels


def test_shard_window_draws_only_from_its_shards_and_visits_them_all():
    store, labels = _sharded_store()
    segments = segments_for(store, labels, seg=20)
    size, every = 2, 3
    batches = SegmentBatches(store, segments, 16, seed=4, steps=60, shard_window=size,
                             window_steps=every)
    shard_of = {uid: int(s) for uid, s in zip(store.ids.to_pylist(), store.shard)}
    seen = set()
    for step in range(0, 60):
        active = set(batches.window.shards[batches.window.active(step)].tolist())
        assert len(active) == size  # distinct shards, also across a pass's end
        # the window moves only every `every` steps
        if step % every:
            assert active == set(batches.window.shards[batches.window.active(step - 1)].tolist())
        x, _, y = batches[step]
        rng = np.random.default_rng([4, 0, step])
        v, _ = batches.window.draw(rng, step, 16)
        drawn = {shard_of[segments["source_id"][k]] for k in v}
        assert drawn <= active
        seen |= drawn
        # each crop is a slice of its view's frames
        for b, k in enumerate(v):
            m = store.matrix(store.positions([segments["source_id"][k]])[0])
            n = segments["num_frames"][k]
            rows = x[b, :n].numpy()
            assert any(np.array_equal(rows, m[t:t + n]) for t in range(len(m) - n + 1))
            assert int(y[b]) == segments["speaker_id"][k]
    assert seen == set(range(6))  # 20 window positions: every shard came round
    # a pure function of (seed, step): a fresh object (a resumed run) draws the same
    again = SegmentBatches(store, segments, 16, seed=4, steps=60, shard_window=size,
                           window_steps=every)
    for step in (0, 7, 59):
        for a, b in zip(batches[step], again[step]):
            assert torch.equal(a, b)


def test_shard_window_off_or_wider_than_the_data_changes_no_crop_position():
    store, labels = _sharded_store(shards=3)
    segments = segments_for(store, labels, seg=20)
    plain = SegmentBatches(store, segments, 8, seed=1, steps=5)
    off = SegmentBatches(store, segments, 8, seed=1, steps=5, shard_window=0, window_steps=7)
    for step in range(5):
        for a, b in zip(plain[step], off[step]):
            assert torch.equal(a, b)
    wide = SegmentBatches(store, segments, 8, seed=1, steps=5, shard_window=10, window_steps=2)
    assert sorted(wide.window.shards[wide.window.active(3)].tolist()) == [0, 1, 2]


def test_averaging_and_the_best_model_stay_within_the_fine_tuning_phase():
    """With train.finetune.steps the model comes from that phase: the states kept for
    averaging and the best checkpoint are all from validations after train.steps, however
    large train.average_last is."""
    store, labels = toy_store()
    p = validate_params({"model": PARAMS.model.to_dict(), "loss": PARAMS.loss.to_dict(),
                         "train": {**PARAMS.train.to_dict(), "steps": 20, "valid_every": 5,
                                   "average_last": 10,
                                   "finetune": {"steps": 10, "crop_frames": 32}}})
    torch.manual_seed(0)
    model = build_model({"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": N_MELS,
                         "speakers": ["a", "b", "c"], "features": {}})
    kept, best, logged = [], [], []
    hooks = RunHooks(save_best=lambda w: best.append(len(logged)),
                     log=lambda metrics, step: logged.append(step),
                     save_validated=lambda w, step: kept.append(step))
    batches = SegmentBatches(store, segments_for(store, labels), 8, 0, 30)
    result = train(model, batches, Validation.sample(store, views_for(store, labels), p.train, 400),
                   p, device=torch.device("cpu"), hooks=hooks, progress=False)
    assert logged == [5, 10, 15, 20, 25, 30]  # validations of both phases are logged
    assert kept == [25, 30] and result.best_step in (25, 30)
    assert all(logged[n - 1] > 20 for n in best)


@pytest.mark.parametrize("rule,world,factor", [("none", 4, 1.0), ("linear", 4, 4.0),
                                               ("sqrt", 4, 2.0), ("linear", 1, 1.0)])
def test_lr_scaling_multiplies_both_phases_learning_rates(rule, world, factor):
    from spkid.train.run import batch_summary
    from spkid.train.state import RunState
    p = validate_params({"train": {"lr": 1e-3, "warmup_steps": 0, "steps": 4, "lr_scaling": rule,
                                   "finetune": {"steps": 2, "lr": 1e-4}}})
    run = RunState(torch.nn.Linear(2, 2), p.train, torch.device("cpu"), world)
    rates = []
    for _ in range(6):
        rates.append(run.optimizer.param_groups[0]["lr"])
        run.optimizer.step()
        run.schedule.step()
    assert rates[0] == pytest.approx(1e-3 * factor) and rates[-1] == pytest.approx(1e-4 * factor)
    summary = batch_summary(p.train, world)
    assert summary == {"world_size": world, "batch_per_rank": 32, "effective_batch": 32 * world,
                       "lr": pytest.approx(1e-3 * factor)}


def test_a_checkpoint_of_another_shape_or_world_size_is_not_resumed(tmp_path):
    from spkid.core.errors import WorldSizeChanged
    from spkid.train.checkpoints import resumable
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    model = torch.nn.Linear(3, 2)
    torch.save({"fingerprint": "f", "progress": {"step": 5, "best_step": 0},
                "model": torch.nn.Linear(4, 2).state_dict(), "rng": [{}]}, last)
    assert resumable(last, best, "f", 1, model) == (
        None, f"{last} holds a model of other shapes: starting afresh")
    torch.save({"fingerprint": "f", "progress": {"step": 5, "best_step": 0},
                "model": model.state_dict(), "rng": [{}, {}]}, last)
    assert resumable(last, best, "f", 2, model)[0]["progress"]["step"] == 5
    with pytest.raises(WorldSizeChanged, match="a run of 2 ranks and this run has 4"):
        resumable(last, best, "f", 4, model)


def test_the_fingerprint_holds_what_changes_the_model_and_nothing_else(tmp_path):
    from spkid.train.checkpoints import fingerprint
    index = tmp_path / "segments.parquet"
    index.write_bytes(b"index")
    meta = {"dtype": "float32", "precomputed": False, "part": 3,
            "features": {"n_mels": 40, "n_fft": 400}, "stats": {"frames": 10}}
    base = fingerprint(validate_params({}), meta, [index])
    for params in ({"train": {"num_workers": 2}}, {"train": {"device": "cpu"}},
                   {"train": {"compile": True}}, {"train": {"checkpoint_every": 7}}):
        assert fingerprint(validate_params(params), meta, [index]) == base, params
    # A shard's own counters are not feature params.
    assert fingerprint(validate_params({}), {**meta, "part": 0, "stats": {}}, [index]) == base
    for params in ({"train": {"steps": 7}}, {"train": {"augment": {"specaugment": True}}},
                   {"train": {"precision": "fp16"}}, {"model": {"channels": 64}},
                   {"loss": {"m": 0.3}}, {"index": {"segment_len": 100}}):
        assert fingerprint(validate_params(params), meta, [index]) != base, params
    for changed in ({"features": {"n_mels": 40, "n_fft": 512}}, {"dtype": "float16"},
                    {"precomputed": True}):
        assert fingerprint(validate_params({}), {**meta, **changed}, [index]) != base, changed
    index.write_bytes(b"other index")
    assert fingerprint(validate_params({}), meta, [index]) != base
