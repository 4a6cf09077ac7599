"""Augmentation of log-mel training crops as they are drawn (spkid.train.mel_augment): each
transform against what the same transform of the waveform gives, and batches that stay a
pure function of seed and step."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from spkid.core.params import validate_params
from spkid.data.synthetic import speaker_voice, synthesize_utterance
from spkid.features.logmel import LogMelExtractor
from spkid.features.waveform import change_speed, reverberate, room_impulse_response
from spkid.train.batches import SegmentBatches
from spkid.train.mel_augment import CropAugment, SpeedWarp
from test_training import N_MELS, SPEAKERS, segments_for, toy_store

SR = 16000
EXTRACTOR = LogMelExtractor()
FEATURES = EXTRACTOR.config()


def augment(features=FEATURES, **kw) -> CropAugment:
    return CropAugment.from_params(validate_params({"train": {"augment": kw}}).train.augment,
                                   features)


def voices():
    for spk in range(3):
        yield synthesize_utterance(speaker_voice(0, spk), np.random.default_rng(spk), 3 * SR, SR,
                                   30.0).astype(np.float64)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_warp_is_close_to_a_real_speed_change(factor):
    """The warped log-mels of a recording are within half the distance that time
    resampling alone leaves to the log-mels of the recording really played at `factor`."""
    warp = SpeedWarp.of(factor, FEATURES)
    for wave in voices():
        x = EXTRACTOR([wave])[0].astype(np.float64)
        true = EXTRACTOR([change_speed(wave, factor, SR)])[0]
        frames = min(len(true), warp.output_frames(len(x)))
        assert abs(frames - len(true)) <= 1
        warped = warp(x, frames)
        time_only = replace(warp, at=np.arange(40.0), gain=np.zeros(40))(x, frames)
        assert np.abs(warped - true[:frames]).mean() < 0.5 * np.abs(time_only - true[:frames]).mean()


def test_room_is_close_to_a_real_room_and_keeps_power():
    aug = augment(reverb=1.0)
    for wave in voices():
        x = EXTRACTOR([wave])[0].astype(np.float64)
        for seed in range(2):
            # The same draws as spkid.features.waveform's room: the same room.
            true = EXTRACTOR([reverberate(wave, room_impulse_response(
                np.random.default_rng(seed), SR, (0.2, 0.8)))])[0]
            wet = aug._room(np.exp(x), len(x), np.random.default_rng(seed))
            assert wet.sum() == pytest.approx(np.exp(x).sum(), rel=1e-9)
            assert np.abs(np.log(wet) - true).mean() < 0.55 * np.abs(x - true).mean()


def test_babble_is_other_speakers_at_the_asked_snr():
    aug = augment(babble=1.0, babble_snr_db=[10.0, 10.0])
    rng = np.random.default_rng(0)
    x = np.log(rng.random((6, 20, 40)) + 0.1).astype(np.float32)
    labels = np.array([0, 0, 1, 2, 3, 4])
    lengths = np.array([20, 20, 15, 20, 20, 12])
    x[2, 15:] = x[5, 12:] = 0.0
    y, mask, out_labels = aug(x, lengths, np.zeros(6, int), np.full(6, 20), labels, 5, rng)
    assert (out_labels == labels).all() and (mask.sum(1) == lengths).all()
    for i in range(6):
        clean, noisy = np.exp(x[i, :lengths[i]].astype(np.float64)), np.exp(y[i, :lengths[i]])
        assert (noisy.sum() - clean.sum()) / clean.sum() == pytest.approx(0.1, rel=1e-4)
        assert (y[i, lengths[i]:] == 0).all()


def test_speed_crops_train_their_own_classes():
    aug = augment(speed=[0.9, 1.1])
    assert aug.classes(["a", "b"]) == ["a", "b", "a~sp0.9", "b~sp0.9", "a~sp1.1", "b~sp1.1"]
    rng = np.random.default_rng(1)
    speeds = aug.draw_speeds(rng, 400)
    assert set(speeds.tolist()) == {0, 1, 2}
    frames = np.full(400, 64)
    read = aug.source_frames(speeds, frames)
    assert (read[speeds == 2] == 71).all() and (read[speeds == 1] == 58).all()
    x = np.zeros((400, int(read.max()), 40), np.float32)
    y, mask, labels = aug(x, read, speeds, frames, np.ones(400, int), 2, rng)
    assert y.shape[1] == 64 and (mask.sum(1) == 64).all()
    assert (labels == 1 + 2 * speeds).all()


def test_augmented_batches_are_a_pure_function_of_seed_and_step():
    """Batch k is the same whenever and however often it is asked for; without speed the
    crops are where the unaugmented run has them, only their values change."""
    store, labels = toy_store()
    segments = segments_for(store, labels)
    toy = LogMelExtractor(n_mels=N_MELS).config()
    plain = SegmentBatches(store, segments, 8, seed=3, steps=10)
    rooms = SegmentBatches(store, segments, 8, seed=3, steps=10,
                           augment=augment(toy, reverb=0.5, babble=0.5), speakers=SPEAKERS)
    fast = SegmentBatches(store, segments, 8, seed=3, steps=10,
                          augment=augment(toy, speed=[0.9, 1.1]), speakers=SPEAKERS)
    for step in (7, 2, 7):
        (x0, m0, y0), (x1, m1, y1) = plain[step], rooms[step]
        assert torch.equal(m0, m1) and torch.equal(y0, y1) and not torch.equal(x0, x1)
        assert torch.equal(rooms[step][0], x1)
        xs, ms, ys = fast[step]
        assert torch.equal(fast[step][0], xs) and ys.max() < 3 * SPEAKERS
        assert xs.shape[2] == N_MELS and (ms.sum(1) <= 32).all()


@pytest.mark.parametrize("bad, message", [
    ({"speed": [0.9, 1.0]}, "1.0"),
    ({"speed": [3.0]}, "must be finite, >= 0.5 and <= 2"),
    ({"rt60": [0.0, 0.5]}, "must be finite, > 0 and <= 3"),
    ({"reverb": 0.7, "babble": 0.5}, "must not exceed 1"),
    ({"babble": 1.5}, "must be <= 1"),
])
def test_bad_augment_params_name_the_key(bad, message):
    with pytest.raises(Exception, match=message) as err:
        validate_params({"train": {"augment": bad}})
    assert f"train.augment.{list(bad)[-1]}" in str(err.value)


def test_old_stored_copies_params_say_where_augmentation_went():
    with pytest.raises(Exception, match="features.augment.*train.augment"):
        validate_params({"features": {"augment": {"copies": 2}}})
