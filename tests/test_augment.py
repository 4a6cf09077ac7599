import numpy as np
import pytest
import soundfile as sf
import torch

from spkid.core.errors import DataError
from spkid.features.logmel import LogMelExtractor
from spkid.train.augment import NoiseAugment, SpecAugment, load_noise


def test_load_noise_reads_folder_and_names_bad_one(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "n" / "sub").mkdir(parents=True)
    sf.write(tmp_path / "n" / "sub" / "hum.wav", 0.1 * rng.standard_normal(8000), 16000)
    sf.write(tmp_path / "n" / ".hidden.wav", 0.1 * rng.standard_normal(8000), 16000)
    feats = load_noise(tmp_path / "n", LogMelExtractor())
    assert len(feats) == 1 and feats[0].shape == (51, 40)
    with pytest.raises(DataError, match="noise_dir.*missing"):
        load_noise(tmp_path / "missing", LogMelExtractor())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        load_noise(tmp_path / "empty", LogMelExtractor())


def test_noise_follows_snr_and_masks():
    torch.manual_seed(0)
    speech = torch.randn(4, 30, 8)
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[1, 20:] = False
    noise = [np.log(np.full((50, 8), 5.0, np.float32))]
    quiet = NoiseAugment(noise, (60.0, 60.0), prob=1.0)(speech * mask[..., None], mask)
    loud = NoiseAugment(noise, (-20.0, -20.0), prob=1.0)(speech * mask[..., None], mask)
    off = NoiseAugment(noise, (-20.0, -20.0), prob=0.0)(speech * mask[..., None], mask)
    real = mask[..., None].expand_as(speech)
    assert torch.allclose(quiet[real], speech[real], atol=1e-3)  # 60 dB SNR: barely changed
    assert torch.allclose(off[real], speech[real], atol=1e-5)    # prob 0: untouched
    # At -20 dB the noise dominates: frames move toward the noise level and vary less.
    assert (loud[real] - speech[real]).abs().mean() > 1.0 and loud[real].std() < speech[real].std()
    assert (loud[1, 20:] == 0).all()  # padded frames stay zero


def test_specaugment_masks_bands():
    torch.manual_seed(0)
    x = torch.randn(3, 50, 20) + 10
    out = SpecAugment(2, 10, 2, 5)(x)  # fills with 0 unless asked
    assert out.shape == x.shape and ((out == 0) | (out == x)).all() and (out == 0).any()


def test_specaugment_fills_with_each_bins_mean_and_leaves_padding_alone():
    x = torch.randn(3, 50, 20) + 10 + torch.arange(20.0)  # bins at different levels
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[1, 30:] = False
    x[1, 30:] = 0.0  # padding, as batches hold it
    torch.manual_seed(0)
    zero = SpecAugment(2, 10, 2, 5, fill="zero")(x, mask)
    torch.manual_seed(0)
    mean = SpecAugment(2, 10, 2, 5, fill="mean")(x, mask)
    masked = zero == 0
    masked[1, 30:] = False
    assert masked.any()
    # The same bands (the same draws), filled with each bin's mean over the real frames.
    w = mask[..., None].float()
    level = (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    expected = torch.where(masked, level.expand_as(x), x)
    torch.testing.assert_close(mean[mask], expected[mask], rtol=0, atol=1e-5)
    assert torch.equal(mean[1, 30:], x[1, 30:]) and torch.equal(zero[1, 30:], x[1, 30:])
