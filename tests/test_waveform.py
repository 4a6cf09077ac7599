"""Waveform augmentation (spkid.features.waveform): what the log-mel augmentation of
training is tested against and the benchmarks' mismatched audio is made with; and the
classes speed augmentation adds, which a prediction never names."""

import numpy as np

from spkid.features.waveform import add_noise, change_speed, reverberate, room_impulse_response

SR = 16000


def sine(freq, seconds=1.0):
    return np.sin(2 * np.pi * freq * np.arange(int(SR * seconds)) / SR)


def peak_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / SR)[spectrum.argmax()]


def test_speed_changes_length_and_pitch_together():
    for factor in (0.9, 1.1, 0.95):
        out = change_speed(sine(440.0), factor, SR)
        assert abs(len(out) - SR / factor) <= 1
        assert abs(peak_hz(out) - 440.0 * factor) < 3.0


def test_generated_rooms_decay_by_their_rt60_and_keep_length_and_power():
    rng = np.random.default_rng(0)
    rir = room_impulse_response(rng, SR, (0.4, 0.4))
    assert rir[0] == 1.0 and len(rir) > 0.4 * SR
    tail = rir[1:] ** 2
    first, last = tail[: SR // 20].sum(), tail[int(0.3 * SR): int(0.35 * SR)].sum()
    # 60 dB over 0.4 s: 0.3 s later the tail is 45 dB down (noise gives a few dB either way).
    assert 38 < 10 * np.log10(first / last) < 52
    assert np.array_equal(rir, room_impulse_response(np.random.default_rng(0), SR, (0.4, 0.4)))
    speech = sine(300.0) * np.hanning(SR)
    wet = reverberate(speech, rir)
    assert len(wet) == len(speech)
    assert np.isclose(np.mean(wet ** 2), np.mean(speech ** 2))
    assert not np.allclose(wet, speech)
    # The FFT convolution is the linear one, not a circular one, whatever length it pads to.
    short = np.random.default_rng(3).standard_normal(997)
    np.testing.assert_allclose(reverberate(short, rir[:50]) / np.sqrt(np.mean(short ** 2)),
                               _rescaled(np.convolve(short, rir[:50])[:997]), atol=1e-9)


def _rescaled(x):
    return x / np.sqrt(np.mean(x ** 2))


def test_noise_is_added_at_the_asked_snr():
    speech = sine(200.0)
    noise = np.random.default_rng(1).standard_normal(SR) * 0.01
    for snr in (0.0, 13.0):
        mixed = add_noise(speech, noise, snr)
        added = mixed - speech
        assert np.isclose(10 * np.log10(np.mean(speech ** 2) / np.mean(added ** 2)), snr)
        assert np.allclose(added / noise, added[0] / noise[0])  # the noise, only scaled
    assert np.array_equal(add_noise(np.zeros(100), noise[:100], 5.0), np.zeros(100))


def test_closed_set_predictions_name_real_speakers_not_speed_copies():
    import torch

    from spkid.data.views import real_speakers
    from spkid.features.store import FeatureStore
    from spkid.models.embedding import embed_views
    from test_models import N_MELS, make_net

    names = ["a~sp0.9", "a", "b", "c~x", "b~sp1.1"]
    assert real_speakers(names).tolist() == [False, True, True, True, False]
    torch.manual_seed(0)
    net = make_net(n_spk=len(names), encoder="transformer", d_model=16, heads=2, ffn_dim=32,
                   layers=1).eval()
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(30, N_MELS)).astype(np.float32) for _ in range(40)]
    store = FeatureStore.from_matrices([f"u{k}" for k in range(40)], mats)
    views = {"source_id": [f"u{k}" for k in range(40)], "start_frame": [0] * 40,
             "num_frames": [30] * 40}
    labels = np.ones(40, np.int64)
    cpu = torch.device("cpu")
    free = embed_views(net, store, views, 10**6, cpu, labels=labels)
    kept = embed_views(net, store, views, 10**6, cpu, labels=labels, classes=real_speakers(names))
    assert set(free.predicted) & {0, 4}, "the test needs some predictions of a speed class"
    assert set(kept.predicted) <= {1, 2, 3}
    with torch.no_grad():
        _, logits = net(torch.from_numpy(np.stack(mats)), torch.ones(40, 30, dtype=torch.bool))
    real = logits[:, [1, 2, 3]]
    assert kept.predicted.tolist() == [[1, 2, 3][k] for k in real.argmax(1).tolist()]
    assert kept.true_rank.tolist() == (real > logits[:, 1:2]).sum(1).tolist()
    np.testing.assert_array_equal(kept.embeddings, free.embeddings)
