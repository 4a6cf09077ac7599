"""features.vad: Silero VAD keeps the speech of a recording padded with silence."""

import json
import sys
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spkid.core.errors import ParamsError
from spkid.data.synthetic import speaker_voice, synthesize_utterance
from spkid.features.logmel import LogMelExtractor

SR = 16000
SPEECH_S, PAD_S = 2.0, 3.0


@pytest.fixture(scope="module")
def speech():
    pytest.importorskip("silero_vad", reason="silero-vad (the vad extra) is not installed")
    voice = speaker_voice(0, 0, 0.4)
    return synthesize_utterance(voice, np.random.default_rng(0), int(SPEECH_S * SR), SR, 30.0)


def padded(speech, kind: str) -> np.ndarray:
    """PAD_S of silence (digital zeros, or white noise 40 dB under the speech) each side."""
    n = int(PAD_S * SR)
    rng = np.random.default_rng(1)
    level = 0.01 * np.sqrt(np.mean(speech ** 2))
    pad = lambda: (np.zeros(n) if kind == "zeros" else level * rng.standard_normal(n))  # noqa: E731
    return np.concatenate([pad(), speech, pad()]).astype(np.float32)


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_the_silence_goes_and_the_speech_stays(speech, kind):
    from spkid.features.vad import SpeechDetector, speech_only
    wave = padded(speech, kind)
    spans = SpeechDetector().segments(wave, SR)
    start, end = int(PAD_S * SR), int((PAD_S + SPEECH_S) * SR)
    # Within the speech and Silero's 30 ms margins (the synthetic voice starts with a breath).
    margin = int(0.05 * SR)
    assert spans and spans[0][0] >= start - margin and spans[-1][1] <= end + margin
    kept = speech_only(wave, SR)
    assert abs(len(kept) / SR - SPEECH_S) < 0.35, len(kept) / SR
    inside = sum(min(b, end) - max(a, start) for a, b in spans if b > start and a < end)
    assert inside / (end - start) > 0.8  # the synthetic voice pauses, as speakers do
    # The kept samples are the wave's own, in order (segments concatenated, nothing made up).
    assert np.array_equal(kept, np.concatenate([wave[a:b] for a, b in spans]))
    # A rate Silero does not score is detected at 16 kHz and cut at its own rate.
    from spkid.data.audio import resample
    other = SpeechDetector().segments(resample(wave, SR, 22050), 22050)
    assert abs(other[0][0] / 22050 - spans[0][0] / SR) < 0.05


def test_a_recording_without_speech_is_kept_whole_with_a_warning(speech):
    from spkid.features.vad import SpeechDetector
    quiet = np.zeros(SR, np.float32)
    with pytest.warns(UserWarning, match=r"features\.vad: no speech found in u7 \(1\.0 s\): kept whole"):
        assert np.array_equal(SpeechDetector()(quiet, SR, "u7"), quiet)


def test_without_silero_the_error_names_the_param_and_the_extra(monkeypatch):
    from spkid.features.vad import speech_only, vad_settings
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # import fails as if not installed
    for call in (lambda: vad_settings(True), lambda: speech_only(np.zeros(SR), SR)):
        with pytest.raises(ParamsError, match=r"^features\.vad .*needs silero-vad: pip install "
                                              r"-e '\.\[vad\]'"):
            call()
    assert vad_settings(False) == {}


def test_vad_changes_the_block_keys_and_the_features(speech, tmp_path):
    from spkid.data.manifest import SCHEMA, ManifestRow
    from spkid.features.blocks import Block, plan_blocks, write_blocks
    from spkid.features.extract import BlockJob
    from spkid.features.vad import vad_settings
    from test_sources_stage import write_audio
    path = tmp_path / "u0.wav"
    write_audio(path, padded(speech, "noise"), SR)
    manifest = pa.Table.from_pylist([asdict(ManifestRow("u0", "s", str(path),
                                                        duration=SPEECH_S + 2 * PAD_S))],
                                    schema=SCHEMA)
    ext = LogMelExtractor()
    frames, keys = {}, {}
    for vad in (False, True):
        settings = {**ext.config(), **vad_settings(vad)}
        keys[vad] = plan_blocks(manifest, 4, {"features": settings})[0].key
        job = BlockJob(str(tmp_path / "manifest.parquet"), {"format": "audio"}, settings,
                       str(tmp_path / f"vad{vad}"), {"features": settings}, "float32", 1, 0.5,
                       "skip")
        frames[vad] = write_blocks(manifest, job, [Block(0, 0, 1, keys[vad])], workers=1,
                                   progress=False)["frames"]
        shard = next((tmp_path / f"vad{vad}").glob("shard-*.parquet"))
        meta = json.loads(pq.read_schema(shard).metadata[b"spkid"])
        assert ("vad" in meta["features"]) == vad
    assert keys[False] != keys[True]
    assert frames[False] == ext.num_frames(int((SPEECH_S + 2 * PAD_S) * SR))
    assert abs(frames[True] - SPEECH_S * SR / ext.hop_length) < 0.35 * SR / ext.hop_length
