"""Waveform augmentation in `features`: which utterances get copies, and what a copy is."""

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from spkid.core.errors import DataError
from spkid.core.params import validate_params
from spkid.data.manifest import ManifestRow
from spkid.data.segments import segment_index
from spkid.data.views import SplitConfig, label_views, speaker_table, split_views, view_of
from spkid.features.copies import Levels, plan_copies, render
from spkid.features.store import read_catalog
from spkid.features.waveform import add_noise, change_speed, reverberate, room_impulse_response
from test_index import catalog
from test_train_stage import spkid

SR = 16000


def augment_params(**kw):
    return validate_params({"features": {"augment": kw}}).features.augment


def manifest(cat):
    return {r["utterance_id"]: ManifestRow(r["utterance_id"], r["speaker"], f"{r['utterance_id']}.wav",
                                           role=r["role"]) for r in cat}


def test_copies_are_made_of_train_views_only_and_speed_copies_are_new_speakers():
    cat = catalog(speakers=4, per_speaker=10)
    views = split_views(cat, SplitConfig(0.2, 0.1, seed=1))
    copies = plan_copies(views, manifest(cat), augment_params(copies=3, speed=[0.9, 1.1]),
                         hop_length=160, sample_rate=SR, noise_files=[])
    roles = {v["utterance_id"]: v["role"] for v in views}
    train = [u for u, r in roles.items() if r == "train"]
    # (clean + two speeds) x (the speed copy itself + 3 copies), less the clean one itself
    assert len(copies) == len(train) * (3 + 2 * 4)
    assert {roles[view_of(c.utterance_id)] for c in copies} == {"train"}
    assert Counter(view_of(c.utterance_id) for c in copies) == Counter({u: 11 for u in train})
    assert len({c.utterance_id for c in copies}) == len(copies)
    for c in copies:
        source = view_of(c.utterance_id)
        assert c.source.row.utterance_id == source and c.source.last is None
        speaker = source.split("-")[0]
        assert c.speaker == (speaker if c.speed == 1.0 else f"{speaker}~sp{c.speed:g}")
    kinds = Counter(c.kind for c in copies)
    assert kinds == Counter({None: 2 * len(train), "reverb": 6 * len(train), "noise": 3 * len(train)})
    babble = [c for c in copies if c.kind == "noise"]
    for c in babble:  # other training speakers, training audio only
        # Three to seven are drawn; only three others exist.
        assert len(c.babble) == 3
        assert all(s.row.speaker != c.speaker.split("~")[0] for s in c.babble)
        assert all(roles[s.row.utterance_id] == "train" for s in c.babble)
    # A copy's randomness follows its id, not the plan's order.
    again = plan_copies(list(reversed(views)), manifest(cat), augment_params(copies=3, speed=[0.9, 1.1]),
                        hop_length=160, sample_rate=SR, noise_files=[])
    assert {c.utterance_id: c for c in again} == {c.utterance_id: c for c in copies}


def test_time_split_copies_only_the_training_part_of_a_recording():
    cat = catalog(speakers=2, per_speaker=2, frames=1000, submit=0)
    views = split_views(cat, SplitConfig(0.1, 0.2, 0, "time", 100))
    copies = plan_copies(views, manifest(cat), augment_params(copies=1, kinds=["reverb"]),
                         hop_length=160, sample_rate=SR, noise_files=[])
    train = {v["utterance_id"]: v for v in views if v["role"] == "train"}
    assert len(copies) == len(train)
    for c in copies:
        v = train[view_of(c.utterance_id)]
        held_out = min(w["start_frame"] for w in views
                       if w["source_id"] == v["source_id"] and w["role"] != "train")
        assert (c.source.first, c.source.last) == (0, v["num_frames"] * 160)
        assert c.source.last <= held_out * 160


def test_index_trains_on_copies_and_refuses_copies_of_held_out_views():
    cat = catalog(speakers=3, per_speaker=10, submit=0)
    cfg = SplitConfig(0.2, 0.1, seed=0)
    views = split_views(cat, cfg)
    copies = plan_copies(views, manifest(cat), augment_params(copies=1, speed=[1.1]),
                         hop_length=160, sample_rate=SR, noise_files=[])
    stored = cat + [{"utterance_id": c.utterance_id, "speaker": c.speaker, "role": "augment",
                     "num_frames": 290} for c in copies]
    split = split_views(stored, cfg)
    assert [v for v in split if v["role"] != "augment"] == views
    speakers = speaker_table(split)
    assert speakers == ["s0", "s0~sp1.1", "s1", "s1~sp1.1", "s2", "s2~sp1.1"]
    segments = segment_index(label_views(split, speakers), speakers, 64)
    assert len({s["utterance_id"] for s in segments}) == len(copies) + sum(
        v["role"] == "train" for v in views)
    # The same copies under another split seed: some were made of what now is val or test.
    with pytest.raises(DataError, match="re-run `spkid features`"):
        split_views(stored, SplitConfig(0.2, 0.1, seed=5))


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


def test_a_rendered_copy_depends_on_its_id_only():
    cat = catalog(speakers=4, per_speaker=5, submit=0)
    views = split_views(cat, SplitConfig(0.2, 0.2, 0))
    audio = {r["utterance_id"]: np.random.default_rng(k).standard_normal(SR // 2)
             for k, r in enumerate(cat)}
    copies = plan_copies(views, manifest(cat), augment_params(copies=2, speed=[0.9]),
                         hop_length=160, sample_rate=SR, noise_files=[])
    levels = Levels.from_params(augment_params())

    def read(row):
        return audio[row.utterance_id]
    first = {c.utterance_id: render(c, read, levels, SR) for c in copies}
    for c in reversed(copies):
        assert np.array_equal(render(c, read, levels, SR), first[c.utterance_id])
    for c in copies:
        clean = audio[c.source.row.utterance_id]
        if c.kind is not None and c.speed == 1.0:
            assert len(first[c.utterance_id]) == len(clean)
            assert not np.allclose(first[c.utterance_id], clean)


@pytest.mark.parametrize("bad, message", [
    ({"kinds": ["reverb", "echo"]}, "unknown value 'echo'"),
    ({"speed": [0.9, 1.0]}, "1.0"),
    ({"speed": [3.0]}, "must be finite, >= 0.5 and <= 2"),
    ({"rt60": [0.0, 0.5]}, "must be finite, > 0 and <= 3"),
    ({"copies": -1}, "must be >= 0"),
])
def test_bad_augment_params_name_the_key(bad, message):
    with pytest.raises(Exception, match=message) as err:
        augment_params(**bad)
    assert f"features.augment.{next(iter(bad))}" in str(err.value)


PARAMS = {
    "data": {"synthetic": {"speakers": 4, "utterances_per_speaker": 6, "submit_per_speaker": 1,
                           "min_seconds": 0.5, "max_seconds": 2.0}},
    "features": {"shard_size": 8, "workers": 1, "augment": {"copies": 2, "speed": [0.9]}},
}


def test_features_stores_copies_of_train_utterances_that_index_trains_on(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in ("download", "features", "index"):
        spkid(tmp_path, stage)
    shards = read_catalog(tmp_path / "data/features").to_pylist()
    views = pq.read_table(tmp_path / "data/index/utterances.parquet").to_pylist()
    roles = {v["utterance_id"]: v["role"] for v in views}
    copies = [s["utterance_id"] for s in shards if s["role"] == "augment"]
    train = [u for u, r in roles.items() if r == "train"]
    assert len(copies) == len(train) * 5 and {roles[view_of(c)] for c in copies} == {"train"}
    assert all(roles[c] == "augment" for c in copies)
    segments = pq.read_table(tmp_path / "data/index/segments.parquet").to_pylist()
    assert {s["utterance_id"] for s in segments} == set(train) | set(copies)
    # Changing the split without re-running features is refused, naming the fix.
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["index"] = {"seed": 7}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = spkid(tmp_path, "index", check=False)
    assert out.returncode != 0 and "re-run `spkid features`" in out.stderr + out.stdout


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


def test_precomputed_hw4_features_cannot_be_augmented(tmp_path):
    from test_sources_hw4 import make_hw4
    data = make_hw4(tmp_path / "hw4")
    params = {"data": {"source": "hw4", "path": str(data)},
              "features": {"augment": {"speed": [1.1]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    spkid(tmp_path, "download")
    out = spkid(tmp_path, "features", check=False)
    assert out.returncode != 0
    assert "features.augment" in out.stderr + out.stdout and "precomputed" in out.stderr + out.stdout
    assert not (tmp_path / "data/features").exists()


def test_noise_copies_take_noise_dir_recordings_when_given(tmp_path):
    import soundfile as sf

    from spkid.data.audio import find_noise
    with pytest.raises(DataError, match="features.augment.noise_dir: folder not found"):
        find_noise(str(tmp_path / "none"), "features.augment.noise_dir")
    (tmp_path / "noise").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        find_noise(str(tmp_path / "noise"), "features.augment.noise_dir")
    hum = 0.1 * sine(50.0, 0.3)
    sf.write(tmp_path / "noise" / "hum.wav", hum, SR)
    files = find_noise(str(tmp_path / "noise"), "features.augment.noise_dir")
    assert files == [str((tmp_path / "noise" / "hum.wav").resolve())]
    cat = catalog(speakers=1, per_speaker=5, submit=0)  # one speaker: no babble possible
    views = split_views(cat, SplitConfig(0.2, 0.2, 0))
    copies = plan_copies(views, manifest(cat), augment_params(copies=1, kinds=["noise"]),
                         hop_length=160, sample_rate=SR, noise_files=files)
    assert copies and all(c.noise_path == files[0] and c.babble == () for c in copies)
    speech = sine(1000.0)
    levels = Levels.from_params(augment_params(snr_db=[10.0, 10.0]))
    out = render(copies[0], lambda row: speech, levels, SR)
    added = out - speech
    assert np.isclose(10 * np.log10(np.mean(speech ** 2) / np.mean(added ** 2)), 10.0)
    assert peak_hz(added) == pytest.approx(50.0, abs=2.0)  # the hum, looped to length
    with pytest.raises(DataError, match="babble needs training audio of at least two"):
        plan_copies(views, manifest(cat), augment_params(copies=1, kinds=["noise"]),
                    hop_length=160, sample_rate=SR, noise_files=[])
