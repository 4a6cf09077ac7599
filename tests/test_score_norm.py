"""Tests for spkid.scoring.norm: AS-norm and mean subtraction against a brute-force computation
written from the formula, the cohort sample, and the normalised metrics beside the raw ones."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from spkid.core.errors import DataError
from spkid.scoring import norm as score_norm
from spkid.scoring.evaluation import score_trials
from spkid.scoring.norm import ScoreNorm, cohort_sample


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _brute_asnorm(emb, cohort, top_n, i, j):
    """Loop by loop: each side's top-n cohort cosines, their mean and population std."""
    def stats(e):
        top = sorted((_cos(e, c) for c in cohort), reverse=True)[:top_n]
        return statistics.fmean(top), statistics.pstdev(top)
    out = []
    for a, b in zip(i, j):
        s = _cos(emb[a], emb[b])
        (ma, sa), (mb, sb) = stats(emb[a]), stats(emb[b])
        out.append(0.5 * ((s - ma) / sa + (s - mb) / sb))
    return np.array(out)


def _data(seed=0, n=14, dim=6, speakers=5, per=4):
    rng = np.random.default_rng(seed)
    train_spk = np.repeat(np.arange(speakers), per)
    centres = rng.normal(size=(speakers, dim)) + 1.5  # a shared offset, as real embeddings have
    train = (centres[train_spk] + 0.5 * rng.normal(size=(len(train_spk), dim))).astype(np.float32)
    emb = (rng.normal(size=(n, dim)) + 1.5).astype(np.float32)
    i, j = rng.integers(0, n, 30), rng.integers(0, n, 30)
    keep = i != j
    return train, train_spk, emb, i[keep], j[keep]


@pytest.mark.parametrize("subtract_mean", [False, True])
@pytest.mark.parametrize("top_n", [2, 3, 50])
def test_asnorm_matches_brute_force(subtract_mean, top_n):
    train, spk, emb, i, j = _data()
    norm = ScoreNorm.fit(train, spk, subtract_mean, top_n)
    mean = train.astype(np.float64).mean(0) if subtract_mean else np.zeros(train.shape[1])
    cohort = [train[spk == s].astype(np.float64).mean(0) - mean for s in range(5)]
    centred = emb.astype(np.float64) - mean
    got = norm.scores(emb, i, j)
    np.testing.assert_allclose(got["asnorm"], _brute_asnorm(centred, cohort, top_n, i, j),
                               rtol=1e-4, atol=1e-4)
    if subtract_mean:
        np.testing.assert_allclose(got["mean_sub"], [_cos(centred[a], centred[b]) for a, b in zip(i, j)],
                                   rtol=1e-5, atol=1e-6)
    else:
        assert "mean_sub" not in got


def test_top_n_beyond_the_cohort_is_snorm_and_chunking_does_not_matter(monkeypatch):
    train, spk, emb, i, j = _data(seed=1)
    whole = ScoreNorm.fit(train, spk, True, 5).scores(emb, i, j)["asnorm"]
    np.testing.assert_allclose(ScoreNorm.fit(train, spk, True, 500).scores(emb, i, j)["asnorm"], whole)
    monkeypatch.setattr(score_norm, "_ROWS", 3)
    np.testing.assert_allclose(ScoreNorm.fit(train, spk, True, 5).scores(emb, i, j)["asnorm"], whole,
                               rtol=1e-6)


def test_mean_subtraction_changes_scores_of_offset_embeddings():
    train, spk, emb, i, j = _data(seed=2)
    norm = ScoreNorm.fit(train, spk, True, 0)
    raw = ScoreNorm().scores(emb, i, j)
    assert raw == {} and norm.kind == "mean_sub" and ScoreNorm().kind is None
    assert not np.allclose(norm.scores(emb, i, j)["mean_sub"], score_norm.cosine_scores(emb, i, j))
    # Already centred embeddings (an ONNX graph with the mean inside) score the same.
    np.testing.assert_allclose(norm.scores(emb - norm.mean, i, j, centred=True)["mean_sub"],
                               norm.scores(emb, i, j)["mean_sub"], rtol=1e-6)


def test_cohort_sample_is_seeded_and_capped_per_speaker():
    spk = np.array(["a"] * 7 + ["b"] * 2 + ["c"] * 5)
    pick = cohort_sample(spk, 3, seed=4)
    assert np.all(np.diff(pick) > 0)
    assert sorted(np.unique(spk[pick], return_counts=True)[1].tolist()) == [2, 3, 3]
    np.testing.assert_array_equal(pick, cohort_sample(spk, 3, seed=4))
    assert not np.array_equal(pick, cohort_sample(spk, 3, seed=5))
    np.testing.assert_array_equal(cohort_sample(spk, 0, seed=4), np.arange(len(spk)))


def test_score_trials_keeps_raw_metrics_and_adds_normalised_ones():
    train, spk, emb, i, j = _data(seed=3)
    labels = (np.arange(len(i)) % 3 == 0).astype(np.int64)
    raw, det = score_trials(emb, i, j, labels)
    both, det2 = score_trials(emb, i, j, labels, ScoreNorm.fit(train, spk, True, 3))
    assert {k: both[k] for k in raw} == raw and det2 == det
    assert set(both) - set(raw) == {"mean_sub", "asnorm"}
    assert set(both["asnorm"]) >= {"eer", "min_dcf_p01", "min_dcf_p05", "eer_threshold"}
    # One kind of trial only: null metrics, as for raw scores.
    assert score_trials(emb, i, j, np.ones_like(labels), ScoreNorm.fit(train, spk, True, 3)
                        )[0]["asnorm"]["eer"] is None


def test_save_load_round_trip_and_refusals(tmp_path):
    train, spk, *_ = _data()
    norm = ScoreNorm.fit(train, spk, True, 3)
    norm.save(tmp_path)
    back = ScoreNorm.load(tmp_path)
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.cohort, norm.cohort)
    assert back.top_n == 3 and back.kind == "asnorm"
    assert ScoreNorm.load(tmp_path / "nothing").kind is None
    (tmp_path / score_norm.FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match="score_norm.npz"):
        ScoreNorm.load(tmp_path)
    with pytest.raises(DataError, match="training utterances"):
        ScoreNorm.fit(np.zeros((0, 4), np.float32), [], True, 0)


def _brute_asnorm_leaving_out(emb, cohort, top_n, i, j, own):
    """As _brute_asnorm, each side's cohort without its own speaker's entry (own[k], -1: none)."""
    def stats(k):
        top = sorted((_cos(emb[k], c) for n, c in enumerate(cohort) if n != own[k]),
                     reverse=True)[:top_n]
        return statistics.fmean(top), statistics.pstdev(top)
    out = []
    for a, b in zip(i, j):
        s = _cos(emb[a], emb[b])
        (ma, sa), (mb, sb) = stats(a), stats(b)
        out.append(0.5 * ((s - ma) / sa + (s - mb) / sb))
    return np.array(out)


@pytest.mark.parametrize("top_n", [2, 4, 50])
def test_asnorm_leaves_each_training_speakers_own_entry_out_of_its_cohort(top_n):
    train, spk, emb, i, j = _data()
    # Embeddings 0..9 are of training speakers (ids 0..4), the rest of unseen ones.
    speakers = [k % 5 for k in range(10)] + [f"new{k}" for k in range(len(emb) - 10)]
    norm = ScoreNorm.fit(train, spk, False, top_n)
    cohort = [train[spk == s].astype(np.float64).mean(0) for s in range(5)]
    own = [s if isinstance(s, int) else -1 for s in speakers]
    got = norm.scores(emb, i, j, speakers=speakers)["asnorm"]
    np.testing.assert_allclose(got, _brute_asnorm_leaving_out(emb.astype(np.float64), cohort,
                                                              top_n, i, j, own),
                               rtol=1e-4, atol=1e-4)
    # Unseen-speaker trials score as before; seen-speaker ones do not.
    unseen = (i >= 10) & (j >= 10)
    before = norm.scores(emb, i, j)["asnorm"]
    np.testing.assert_array_equal(got[unseen], before[unseen])
    assert not np.allclose(got[~unseen], before[~unseen])


def test_cohort_speakers_survive_save_and_load(tmp_path):
    train, spk, *_ = _data()
    ScoreNorm.fit(train, spk, True, 3).save(tmp_path)
    loaded = ScoreNorm.load(tmp_path)
    assert loaded.cohort_speakers.tolist() == [0, 1, 2, 3, 4]
