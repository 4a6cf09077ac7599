"""The Python API (spkid.SpeakerModel, spkid.serve.gallery) against the CLI, evaluate's
embedding path and direct computations; window embeddings; enrolment and identification
with a small model trained here on synthetic voices."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from spkid import SpeakerModel
from spkid.core.errors import DataError
from spkid.data.synthetic import speaker_voice, synthesize_utterance
from spkid.features.logmel import LogMelExtractor
from spkid.models.folder import build_model, save_model_dir, save_torch
from spkid.scoring.calibration import duration_quality
from spkid.scoring.embedding import embed_audio_files
from spkid.scoring.norm import ScoreNorm
from spkid.serve.embedder import segment_windows
from spkid.serve.gallery import UNKNOWN, Gallery
from test_inference import direct_embedding, setup  # noqa: F401 (setup: a fixture)

SR = 16000


def invoke(*args):
    """A `spkid` command in this process (a subprocess would import torch again)."""
    from typer.testing import CliRunner

    from stages.cli import build_app
    return CliRunner().invoke(build_app(args[0]), list(args))


def test_api_embeddings_are_the_cli_s_and_evaluate_s(setup, tmp_path):
    root, model, extractor = setup
    paths = [root / "audio/alice/sess/0.wav", root / "audio/bob/sess/1.wav", root / "loose.flac"]
    api = SpeakerModel.load(root / "model", "cpu")
    got = api.embed(paths)
    out = invoke("embed", *map(str, paths), "--out", str(tmp_path / "e.parquet"),
                 "--model", str(root / "model"), "--device", "cpu")
    assert out.exit_code == 0, out.output
    cli = np.array(pq.read_table(tmp_path / "e.parquet")["embedding"].to_pylist())
    evaluate = embed_audio_files(model, extractor, paths, 20000, "cpu")  # Scoring.embed_recordings
    np.testing.assert_array_equal(got, cli.astype(np.float32))
    np.testing.assert_array_equal(got, evaluate)
    for row, path in zip(got, paths):
        np.testing.assert_allclose(row, direct_embedding(model, extractor, path), atol=1e-4)
        # Alone rather than batched with padding: the same but for float32 rounding.
        np.testing.assert_allclose(api.embed(path), row, atol=1e-6, rtol=0)
    a, b = paths[:2]
    ea, eb = direct_embedding(model, extractor, a), direct_embedding(model, extractor, b)
    cosine = float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))
    assert api.score(a, b) == pytest.approx(cosine, abs=1e-4)
    assert api.verify(a, b).same == (cosine >= 0.5)
    speaker, prob = api.predict(a)
    with torch.no_grad():
        probs = torch.softmax(model.head(torch.from_numpy(ea)[None]), 1)[0]
    assert speaker == ["alice", "bob", "carol"][int(probs.argmax())]
    assert prob == pytest.approx(float(probs.max()), abs=1e-4)


def test_arrays_and_tensors_embed_as_their_files(setup):
    root, _, _ = setup
    api = SpeakerModel.load(root / "model", "cpu")
    wav, loose = root / "audio/alice/sess/1.wav", root / "loose.flac"
    samples, rate = sf.read(wav, dtype="float32")
    stereo, rate8k = sf.read(loose, dtype="float32")  # 8 kHz stereo: mixed, then resampled
    mono8k = stereo.mean(axis=1)
    expected = np.stack([api.embed(wav), api.embed(loose)])
    np.testing.assert_array_equal(api.embed(samples, rate), expected[0])
    np.testing.assert_array_equal(api.embed(torch.from_numpy(samples)[None], rate), expected[0])
    batch = api.embed([samples, torch.from_numpy(samples)], rate)
    np.testing.assert_allclose(batch, expected[[0, 0]], atol=1e-6, rtol=0)
    np.testing.assert_allclose(api.embed(mono8k, rate8k), expected[1], atol=1e-6, rtol=0)


def test_wrong_input_is_one_clear_error(setup, tmp_path):
    root, _, _ = setup
    api = SpeakerModel.load(root / "model", "cpu")
    wave = np.zeros(SR, np.float32)
    cases = [((np.stack([wave, wave]), SR), r"^audio: samples of shape \(2, 16000\); give mono"),
             ((wave,), r"^sample_rate: required with an array of samples"),
             ((tmp_path / "gone.wav",), rf"^{re.escape(str(tmp_path / 'gone.wav'))}: not found$"),
             ((np.zeros(SR, np.int16), SR), r"^audio: int16 samples; give floats"),
             ((3.5,), r"^audio: a float is neither a file path nor an array of samples$")]
    for args, message in cases:
        with pytest.raises(DataError, match=message) as exc:
            api.embed(*args)
        assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match=r"model\.json has no eer_threshold"):
        api_without = SpeakerModel.load(root / "model", "cpu")
        api_without.config.pop("eer_threshold")
        api_without.verify(tmp_path / "gone.wav", tmp_path / "gone.wav")  # before any decoding


def test_a_checkpoint_loads_as_the_model_folder(setup, tmp_path):
    root, model, _ = setup
    paths = [root / "audio/alice/sess/0.wav", root / "audio/bob/sess/0.wav"]
    expected = SpeakerModel.load(root / "model", "cpu").embed(paths)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    snapshot = {"model": model.state_dict(), "progress": {"step": 3}, "optimizer": {}}
    save_torch(folder / "last.pt", snapshot)
    save_torch(folder / "best.pt", model.state_dict())
    with pytest.raises(DataError, match=r"last\.pt: no model\.json beside the checkpoint; pass config="):
        SpeakerModel.load(folder / "last.pt", "cpu")
    np.testing.assert_array_equal(
        SpeakerModel.load(folder / "last.pt", "cpu", config=root / "model").embed(paths), expected)
    (folder / "model.json").write_text((root / "model" / "model.json").read_text())
    for name in ("last.pt", "best.pt"):
        np.testing.assert_array_equal(SpeakerModel.load(folder / name, "cpu").embed(paths), expected)


def test_importing_the_api_pulls_in_nothing_heavy():
    code = ("import sys, spkid; heavy = ('torch', 'matplotlib', 'dvclive', 'sklearn', 'pyarrow');"
            "print(sorted(m for m in heavy if m in sys.modules));"
            "from spkid import SpeakerModel;"
            "print(sorted(m for m in ('matplotlib', 'dvclive', 'sklearn', 'scipy', 'onnx', "
            "'onnxruntime', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


# --- a small model trained here, on synthetic voices ------------------------------------

def voice(speaker: int, take: int, seconds: float = 2.0) -> np.ndarray:
    # spread 2: voices twice as far apart as the default corpus's, which a model trained for
    # seconds on 12 speakers tells apart on speakers it never saw.
    return synthesize_utterance(speaker_voice(3, speaker, 2.0), np.random.default_rng([3, speaker, take]),
                                int(SR * seconds), SR, 20.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny transformer trained with softmax on crops of 12 synthetic speakers, shipped
    with their mean embedding and the EER threshold of trials among 6 other speakers (as
    export ships evaluate's)."""
    from spkid.core.params import validate_params
    from spkid.scoring.metrics import eer
    extractor = LogMelExtractor()
    p = validate_params({"model": {"encoder": "transformer", "d_model": 16, "layers": 1, "heads": 2,
                                   "ffn_dim": 64, "embedding_dim": 16}})
    speakers = 12
    config = {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": 40,
              "speakers": [f"spk{s}" for s in range(speakers)],
              "features": {**extractor.config(), "precomputed": False}}
    feats = [[extractor([voice(s, u)])[0] for u in range(4)] for s in range(speakers)]
    torch.manual_seed(0)
    net = build_model(config)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        labels = rng.integers(0, speakers, 32)
        crops = [feats[y][rng.integers(0, 4)] for y in labels]
        x = np.stack([c[(o := rng.integers(0, len(c) - 100)):o + 100] for c in crops])
        _, logits = net(torch.from_numpy(x), torch.ones(32, 100, dtype=torch.bool))
        opt.zero_grad()
        F.cross_entropy(logits, torch.from_numpy(labels)).backward()
        opt.step()
    folder = tmp_path_factory.mktemp("trained") / "model"
    save_model_dir(folder, net.eval().state_dict(), config)
    # Shipped as evaluate ships it: the training mean subtracted (evaluate.subtract_mean).
    train_emb = SpeakerModel.load(folder, "cpu").embed(
        [voice(s, u) for s in range(speakers) for u in range(4)], SR)
    ScoreNorm.fit(train_emb, np.repeat(np.arange(speakers), 4), True, 0).save(folder)
    model = SpeakerModel.load(folder, "cpu")
    # The threshold: EER on all pairs of 3 recordings of 6 speakers no other test uses.
    keys = [(s, u) for s in range(200, 206) for u in range(3)]
    emb = model.embed([voice(s, u) for s, u in keys], SR)
    i, j = np.triu_indices(len(keys), 1)
    scores = model.norm.decision_scores(emb, i, j)
    threshold = float(eer(scores, np.array([keys[a][0] == keys[b][0] for a, b in zip(i, j)]))[1])
    save_model_dir(folder, None, {**config, "eer_threshold": threshold})
    return SpeakerModel.load(folder, "cpu")


def test_segment_windows_add_up():
    fps = 100.0
    for frames, window, hop, minimum in [(1000, 1.5, 0.75, 0.75), (1020, 1.5, 0.75, 0.75),
                                         (1080, 1.5, 1.5, 0.75), (1030, 1.5, 1.5, 0.75),
                                         (90, 1.5, 0.5, 0.75), (300, 1.0, 0.25, 0.0)]:
        starts, lengths = segment_windows(frames, fps, window, hop, minimum)
        w, h = round(window * fps), round(hop * fps)
        np.testing.assert_array_equal(starts, h * np.arange(len(starts)))
        full = lengths == w
        assert full[:-1].all()  # only the last may be shorter
        ends = starts + lengths
        if not full[-1]:
            assert ends[-1] == frames + 1 and (lengths[-1] >= minimum * fps or len(starts) == 1)
        if h <= w:  # windows overlap or touch: together they cover the recording
            uncovered = frames - ends.max()
            assert uncovered <= 0 or uncovered < minimum * fps
            assert uncovered <= 0 or frames - len(full) * h < minimum * fps
    with pytest.raises(DataError, match=r"^hop: 0.001 s is shorter than one feature frame"):
        segment_windows(100, fps, 1.0, 0.001, 0.5)


def test_window_embeddings_change_speaker_at_the_join(trained, tmp_path):
    first, second = voice(300, 0, 4.0), voice(301, 0, 4.0)
    path = tmp_path / "two.wav"
    sf.write(path, np.concatenate([first, second]), SR, subtype="FLOAT")
    seg = trained.embed_segments(path, 1.0, 0.5)
    assert seg.start[0] == 0 and seg.end[-1] == pytest.approx(8.0)
    np.testing.assert_allclose(seg.end[:-1] - seg.start[:-1], 1.0)
    np.testing.assert_allclose(np.diff(seg.start), 0.5)
    # Each speaker's own recordings (other takes) say who each window sounds like.
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    refs = unit(np.stack([unit(trained.embed([voice(s, u) for u in (1, 2)], SR)).mean(0)
                          for s in (300, 301)]))
    closer_to_second = (unit(seg.embeddings) @ refs.T).argmax(1) == 1
    clear = (seg.end <= 4.0) | (seg.start >= 4.0)  # windows on one side of the join
    assert (closer_to_second[clear] == (seg.start[clear] >= 4.0)).mean() >= 0.85
    # The CLI writes the same rows.
    out = invoke("embed", str(path), "--out", str(tmp_path / "w.parquet"), "--window", "1",
                 "--hop", "0.5", "--model", str(trained.source), "--device", "cpu")
    assert out.exit_code == 0, out.output
    rows = pq.read_table(tmp_path / "w.parquet").to_pydict()
    np.testing.assert_allclose(rows["start"], seg.start)
    np.testing.assert_allclose(rows["end"], seg.end)
    np.testing.assert_array_equal(np.array(rows["embedding"], np.float32), seg.embeddings)


def test_enrolled_speakers_are_found_and_others_are_unknown(trained, tmp_path):
    """Recordings the model never heard, of speakers it was trained on: two male-like voices
    enrolled (the synthesizer alternates male- and female-like speakers), two female-like
    ones not; then two speakers it never trained on, enrolled, found. (Unseen or same-sex
    strangers would be the harder open-set test; this model, trained for seconds in 16
    dimensions, puts some same-sex voices within the EER threshold of each other, so
    rejection is checked on the other sex only.)"""
    enrolled, strangers = (0, 2), (1, 3)
    for s in enrolled + strangers:
        for u in range(3):
            sf.write(tmp_path / f"{s}-{u}.wav", voice(s, 10 + u, 3.0), SR, subtype="FLOAT")
    gallery = tmp_path / "gallery.parquet"
    for s in enrolled:
        out = invoke("enroll", f"spk{s}", str(tmp_path / f"{s}-0.wav"), str(tmp_path / f"{s}-1.wav"),
                     "--gallery", str(gallery), "--model", str(trained.source), "--device", "cpu")
        assert out.exit_code == 0, out.output
    table = pq.read_table(gallery).to_pydict()
    assert table["name"] == [f"spk{s}" for s in enrolled] and table["count"] == [2] * 2
    assert set(table["model"]) == {trained.identity}
    tests = [tmp_path / f"{s}-2.wav" for s in enrolled + strangers]
    out = invoke("identify", *map(str, tests), "--gallery", str(gallery), "--top", "2",
                 "--model", str(trained.source), "--device", "cpu")
    assert out.exit_code == 0, out.output
    lines = [line.split("\t") for line in out.stdout.strip().splitlines()]
    assert [line[0] for line in lines] == list(map(str, tests))
    assert [line[1] for line in lines] == [f"spk{s}" for s in enrolled] + [UNKNOWN] * 2
    # The scores are verify's: the cosine of the test recording and the unit mean of the
    # enrolment's unit embeddings, against the shipped threshold.
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for (path, decision, *top), s in zip(lines, enrolled + strangers):
        scores = {f"spk{e}": float(unit(trained.embed(path)) @ unit(unit(trained.embed(
            [tmp_path / f"{e}-0.wav", tmp_path / f"{e}-1.wav"])).mean(0))) for e in enrolled}
        best = sorted(scores, key=scores.get, reverse=True)[:2]
        assert [t.split(":")[0] for t in top] == best
        assert float(top[0].split(":")[1]) == pytest.approx(scores[best[0]], abs=1e-4)
        assert (decision != UNKNOWN) == (scores[best[0]] >= trained.threshold)
    # Speakers the model never trained on, enrolled, are found among the enrolled ones.
    unseen = Gallery.open(tmp_path / "unseen.parquet", trained)
    for s in (100, 101):
        unseen.enroll(f"new{s}", [voice(s, 10), voice(s, 11)], SR)
    found = unseen.identify([voice(100, 12), voice(101, 12)], SR)
    assert [f.speaker for f in found] == ["new100", "new101"]
    # Re-enrolling replaces; another model's gallery is refused.
    g = Gallery.open(gallery, trained)
    g.enroll("spk0", [tmp_path / "0-2.wav"])
    assert g.counts[0] == 1 and len(g.names) == 2
    other = tmp_path / "other"
    save_model_dir(other, {k: v + 0.01 for k, v in trained.model.state_dict().items()},
                   json.loads((trained.source / "model.json").read_text()))
    out = invoke("identify", str(tests[0]), "--gallery", str(gallery), "--model", str(other))
    assert out.exit_code == 2 and "enrolled with another model" in out.stderr


def test_vad_trims_as_asked_or_as_the_model_was_trained(trained):
    """vad=True embeds a padded recording as its speech_only trimming; by default a model
    trims exactly when its features were trimmed (model.json's features.vad)."""
    pytest.importorskip("silero_vad", reason="silero-vad (the vad extra) is not installed")
    from dataclasses import replace

    from spkid.features.vad import SpeechDetector, speech_only
    speech = voice(0, 20, 2.0)
    pad = np.zeros(3 * SR, np.float32)
    padded = np.concatenate([pad, speech, pad])
    trimmed = speech_only(padded, SR)
    assert len(speech) // 2 < len(trimmed) < len(speech) + SR  # the 6 s of pads went
    plain = trained.embed(padded, SR)
    asked = replace(trained, vad=True).embed(padded, SR)
    np.testing.assert_allclose(asked, trained.embed(trimmed, SR), atol=1e-6)
    assert not np.allclose(asked, plain, atol=1e-3)
    vad_config = {**trained.config,
                  "features": {**trained.config["features"], "vad": SpeechDetector().config()}}
    vad_trained = replace(trained, config=vad_config)
    np.testing.assert_allclose(vad_trained.embed(padded, SR), asked, atol=1e-6)
    np.testing.assert_allclose(replace(vad_trained, vad=False).embed(padded, SR), plain, atol=1e-6)


def test_a_calibration_that_weighs_durations_gets_them_in_verify_and_identify(trained, tmp_path):
    """The LLR of verify and identify is slope * score + offset + the weights times the log
    of the shorter and of the longer recording's seconds (an enrolment's: all its files)."""
    from dataclasses import replace
    weights = (0.7, -0.3)
    calibrated = replace(trained, config={**trained.config, "calibration": {
        "slope": 8.0, "offset": -2.0, "quality": "duration", "quality_weights": list(weights)}})
    a, b, c = (tmp_path / f"{k}.wav" for k in "abc")
    for path, (s, take, seconds) in zip((a, b, c), ((0, 30, 1.5), (0, 31, 4.0), (2, 32, 2.5))):
        sf.write(path, voice(s, take, seconds), SR, subtype="FLOAT")
    llr = lambda score, x, y: 8.0 * score - 2.0 + weights[0] * np.log(min(x, y)) \
        + weights[1] * np.log(max(x, y))  # noqa: E731
    v = calibrated.verify(a, b)
    assert v.llr == pytest.approx(llr(trained.score(a, b), 1.5, 4.0), abs=1e-6)
    g = Gallery.open(tmp_path / "g.parquet", calibrated)
    g.enroll("spk0", [a, c])
    g.save()
    assert pq.read_table(tmp_path / "g.parquet").to_pydict()["seconds"] == [pytest.approx(4.0)]
    found = Gallery.open(tmp_path / "g.parquet", calibrated).identify(b, p_target=0.5)
    score = found.candidates[0][1]
    assert (found.speaker == "spk0") == (llr(score, 4.0, 4.0) >= 0.0)
    assert calibrated.decide(np.array([score]), 0.5, duration_quality([4.0], [4.0]))[0].llr == \
        pytest.approx(llr(score, 4.0, 4.0))
