"""The synthetic corpus: files, manifest rows, determinism, and that it sounds like voices."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spkid.core.errors import DataError
from spkid.data.manifest import read_manifest, write_manifest
from spkid.data.synthetic import generate_corpus, speaker_voice

SR = 16000
SMALL = dict(speakers=4, utterances_per_speaker=3, submit_per_speaker=1, min_seconds=1.0,
             max_seconds=2.0, snr_db=20.0, spread=1.0, sample_rate=SR, seed=7, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, generate_corpus(out, **SMALL)


def _labelled(rows):
    return [r for r in rows if r.role is None]


def _load(out: Path, row) -> np.ndarray:
    wave, sr = sf.read(out / row.path)
    assert sr == SR
    return wave


# --- files and manifest ------------------------------------------------------------------

def test_files_are_16k_mono_pcm16_within_duration_bounds(corpus):
    out, rows = corpus
    assert len(rows) == 4 * 3 + 4 * 1
    for row in rows:
        info = sf.info(str(out / row.path))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.frames / SR == pytest.approx(row.duration)
        assert SMALL["min_seconds"] <= row.duration <= SMALL["max_seconds"]
    assert len({r.duration for r in rows}) > 1, "lengths should vary"


def test_manifest_rows(corpus, tmp_path):
    out, rows = corpus
    labelled = _labelled(rows)
    submit = [r for r in rows if r.role == "submit"]
    assert len(labelled) == 12 and len(submit) == 4
    assert {r.speaker for r in labelled} == {"spk000", "spk001", "spk002", "spk003"}
    for r in labelled:
        assert r.utterance_id.startswith(f"{r.speaker}-u")
        assert r.path == f"audio/{r.speaker}/{r.utterance_id}.wav"
    for r in submit:
        assert r.speaker is None
        assert "spk" not in r.utterance_id and "spk" not in r.path
        assert r.path == f"audio/submit/{r.utterance_id}.wav"
    for r in rows:
        assert not Path(r.path).is_absolute() and "\\" not in r.path
        assert (out / r.path).is_file()
    # The rows are a valid manifest as they stand.
    write_manifest(tmp_path / "manifest.parquet", rows, {"format": "audio"})
    assert read_manifest(tmp_path / "manifest.parquet")[0] == rows


def test_submit_truth_matches_rows(corpus):
    out, rows = corpus
    truth = json.loads((out / "submit_truth.json").read_text())
    assert set(truth) == {r.utterance_id for r in rows if r.role == "submit"}
    # submit_per_speaker=1: every speaker exactly once.
    assert sorted(truth.values()) == ["spk000", "spk001", "spk002", "spk003"]
    # The numbering is shuffled, not in speaker order.
    assert [truth[k] for k in sorted(truth)] != sorted(truth.values())


def test_same_arguments_give_identical_bytes(corpus, tmp_path):
    out, rows = corpus
    again = generate_corpus(tmp_path, **SMALL)
    assert again == rows
    for row in rows:
        assert (tmp_path / row.path).read_bytes() == (out / row.path).read_bytes()
    assert (tmp_path / "submit_truth.json").read_bytes() == \
        (out / "submit_truth.json").read_bytes()


def test_voices_do_not_depend_on_corpus_size(corpus, tmp_path):
    out, rows = corpus
    smaller = generate_corpus(tmp_path, **{**SMALL, "speakers": 3, "utterances_per_speaker": 2})
    for row in _labelled(smaller):
        assert (tmp_path / row.path).read_bytes() == (out / row.path).read_bytes()


def test_other_seed_gives_other_audio(corpus, tmp_path):
    out, rows = corpus
    row = rows[0]
    generate_corpus(tmp_path, **{**SMALL, "seed": 8, "speakers": 2, "utterances_per_speaker": 1,
                                 "submit_per_speaker": 0})
    assert (tmp_path / row.path).read_bytes() != (out / row.path).read_bytes()


@pytest.mark.parametrize("change, words", [
    ({"speakers": 1}, "speakers"),
    ({"utterances_per_speaker": 0}, "utterances_per_speaker"),
    ({"submit_per_speaker": -1}, "submit_per_speaker"),
    ({"min_seconds": 3.0, "max_seconds": 2.0}, "max_seconds"),
    ({"min_seconds": 0.0}, "min_seconds"),
    ({"spread": 0.0}, "spread"),
    ({"snr_db": float("nan")}, "snr_db"),
    ({"sample_rate": 4000}, "sample_rate"),
    ({"sample_rate": 96000}, "sample_rate"),
    ({"seed": -1}, "seed"),
    ({"speakers": 2.5}, "speakers"),
])
def test_nonsense_arguments_are_refused(tmp_path, change, words):
    with pytest.raises(DataError, match=words) as info:
        generate_corpus(tmp_path, **{**SMALL, **change})
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "audio").exists()


# --- it sounds like voices ---------------------------------------------------------------

def _frames(wave: np.ndarray, seconds: float = 0.04, hop: float = 0.01) -> np.ndarray:
    n, step = int(seconds * SR), int(hop * SR)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[::step]
    loud = (frames ** 2).mean(axis=1)
    return frames[loud > 0.1 * np.percentile(loud, 95)]   # speech, not pauses


def _pitch_track(wave: np.ndarray) -> np.ndarray:
    """Autocorrelation pitch (Hz) of the clearly periodic loud frames."""
    frames = _frames(wave)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(frames.shape[1])
    n = frames.shape[1]
    power = np.abs(np.fft.rfft(frames, 2 * n)) ** 2
    ac = np.fft.irfft(power)[:, :n]
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(n), 2 * n)) ** 2)[:n]
    ac = ac / window_ac / (ac[:, :1] / window_ac[0] + 1e-12)   # unbiased, normalised
    lo, hi = SR // 400, SR // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    periodic = ac[np.arange(len(lag)), lag] > 0.5
    return SR / lag[periodic]


def _median_pitch_by_speaker(out, rows) -> dict[str, list[float]]:
    by_speaker: dict[str, list[float]] = {}
    for row in _labelled(rows):
        track = _pitch_track(_load(out, row))
        assert len(track) >= 10, f"{row.utterance_id}: hardly any voiced frames"
        by_speaker.setdefault(row.speaker, []).append(float(np.median(track)))
    return by_speaker


def test_pitch_is_human_and_consistent_per_speaker(corpus):
    out, rows = corpus
    medians = _median_pitch_by_speaker(out, rows)
    for speaker, values in medians.items():
        assert all(70 <= v <= 300 for v in values), (speaker, values)
        # The estimate tracks the voice the speaker was given.
        index = int(speaker[3:])
        true_f0 = speaker_voice(SMALL["seed"], index, SMALL["spread"]).f0
        assert np.median(values) == pytest.approx(true_f0, rel=0.15), (speaker, values)
    logs = {s: np.log(v) for s, v in medians.items()}
    within = np.mean([v.std() for v in logs.values()])
    between = np.std([v.mean() for v in logs.values()])
    assert within < 0.3 * between, (within, between)


def _flatness(wave: np.ndarray) -> float:
    """Median spectral flatness (geometric / arithmetic mean power) of loud frames."""
    frames = _frames(wave) * np.hanning(int(0.04 * SR))
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return float(np.median(flatness))


def test_not_white_noise(corpus):
    out, rows = corpus
    noise = np.random.default_rng(0).standard_normal(SR)
    assert _flatness(noise) > 0.4
    for row in rows:
        assert _flatness(_load(out, row)) < 0.1, row.utterance_id


def _long_term_spectrum(wave: np.ndarray) -> np.ndarray:
    """Mean log power in ~1/6-octave bands (125 Hz - 7 kHz) over the loud frames, level
    removed: what stays the same when one person says different things."""
    frames = _frames(wave, 0.032, 0.016) * np.hanning(int(0.032 * SR))
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(frames.shape[1], 1 / SR)
    edges = 125.0 * 2.0 ** (np.arange(0, 34) / 6)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
                      for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    db = (10 * np.log10(bands + 1e-12)).mean(axis=0)
    return db - db.mean()


def test_speakers_differ_more_than_recordings_of_one_speaker(tmp_path):
    # Seconds-long recordings: in 1-2 s the words said still outweigh the voice, as in life.
    rows = generate_corpus(tmp_path, **{**SMALL, "min_seconds": 3.0, "max_seconds": 4.0,
                                        "submit_per_speaker": 0})
    spectra = [(r.speaker, _long_term_spectrum(_load(tmp_path, r))) for r in rows]
    same, other = [], []
    for (s1, a), (s2, b) in itertools.combinations(spectra, 2):
        (same if s1 == s2 else other).append(np.sqrt(np.mean((a - b) ** 2)))
    assert np.mean(same) < 0.85 * np.mean(other), (np.mean(same), np.mean(other))


def test_lower_spread_makes_voices_more_alike():
    pitches = {spread: np.log([speaker_voice(0, i, spread).f0 for i in range(20)]).std()
               for spread in (0.25, 1.0)}
    assert pitches[0.25] < 0.5 * pitches[1.0]


def test_held_out_speakers_are_new_voices_and_change_no_training_sample(corpus, tmp_path):
    out, rows = corpus
    both = generate_corpus(tmp_path, **SMALL, unseen_speakers=2, unseen_utterances_per_speaker=3)
    held = [r for r in both if r.role == "unseen"]
    assert [r for r in both if r.role != "unseen"] == rows
    for row in rows:
        assert (tmp_path / row.path).read_bytes() == (out / row.path).read_bytes()
    assert sorted({r.speaker for r in held}) == ["unseen000", "unseen001"] and len(held) == 6
    assert all(r.path.startswith(f"verify/{r.speaker}/") for r in held)
    assert json.loads((tmp_path / "submit_truth.json").read_text()) == \
        json.loads((out / "submit_truth.json").read_text())
    # Their voices are voices no training speaker has (the generator's next indices).
    assert speaker_voice(7, 4, 1.0) != speaker_voice(7, 0, 1.0)
