"""Compressed audio through PyAV (m4a/AAC, as VoxCeleb2 ships) and Kaldi-style data folders
(wav.scp, utt2spk, spk2utt, segments). Every file here is made by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spkid.core.errors import DataError
from spkid.data.audio import audio_info, read_audio
from spkid.data.sources.audio_dir import scan_audio_dir
from spkid.data.sources.checks import check_audio
from spkid.data.sources.kaldi import is_kaldi_dir, scan_kaldi
from spkid.data.sources.trials import read_trials_list
from test_sources_stage import SR, make_audio_dir, voice, write_audio

pytest.importorskip("av")


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_m4a_decodes_to_the_tone_it_was_made_from(tmp_path):
    path = tmp_path / "a.m4a"
    write_audio(path, tone(2.0), SR)
    duration, sr = audio_info(path)
    assert sr == SR and abs(duration - 2.0) < 0.2
    assert abs(check_audio(path) - duration) < 1e-9
    wave = read_audio(path, SR)
    assert abs(len(wave) / SR - 2.0) < 0.2 and 0.25 < np.abs(wave).max() < 0.35
    # Decoding ends where the container says the track ends (the rest is codec padding),
    # so download's duration and the samples features gets agree.
    assert len(wave) == round(duration * SR)
    spectrum = np.abs(np.fft.rfft(wave[2048:2048 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    # Resampled and cut like any other file.
    part = read_audio(path, 8000, start=0.5, end=1.5)
    assert len(part) == 8000
    # A span decodes only up to its end, to the very samples of the whole decode.
    for start, end in [(0.5, 1.5), (0.0, 0.01), (1.9, duration)]:
        span = read_audio(path, SR, start=start, end=end)
        assert np.array_equal(span, wave[round(start * SR):round(end * SR)])


def test_raw_aac_length_is_measured_not_guessed_from_the_bitrate(tmp_path):
    """A raw ADTS stream records no length; FFmpeg's bitrate guess for 2 s of noise then
    3 s of silence is about 3.3 s. The decoded length is what download and features use."""
    path = tmp_path / "a.aac"
    rng = np.random.default_rng(0)
    write_audio(path, np.concatenate([0.3 * rng.standard_normal(2 * SR),
                                      np.zeros(3 * SR)]).astype(np.float32), SR)
    duration = check_audio(path)
    assert abs(duration - 5.0) < 0.2 and audio_info(path) == (duration, SR)
    assert len(read_audio(path, SR)) == round(duration * SR)


def _first_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("damage", ["garbage", "cut", "cut_faststart"])
def test_corrupt_or_truncated_m4a_fails_in_download_in_one_line(tmp_path, damage):
    import av
    good = tmp_path / "good" / "good.m4a"
    good.parent.mkdir()
    if damage == "cut_faststart":  # index first: the header survives, the samples do not
        with av.open(str(good), "w", format="mp4", options={"movflags": "faststart"}) as out:
            stream = out.add_stream("aac", rate=SR)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(tone(4.0)[None], format="fltp", layout="mono")
            frame.sample_rate = SR
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
    else:
        write_audio(good, tone(4.0), SR)
    data = good.read_bytes()
    bad = tmp_path / "data" / "spk" / "bad.m4a"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not audio at all" * 64 if damage == "garbage" else data[:len(data) * 6 // 10])
    with pytest.raises(DataError) as exc:
        scan_audio_dir(tmp_path / "data", min_seconds=0.0, short="skip")
    text = _first_line(exc)
    assert text.startswith(str(bad)) and ("truncated" in text or "cannot read" in text)
    with pytest.raises(DataError) as exc:
        read_audio(bad, SR)
    assert _first_line(exc).startswith(str(bad))


def test_m4a_damaged_mid_file_fails_in_features_in_one_line(tmp_path):
    """Bytes overwritten inside the samples: download's check (header and last second)
    cannot see them, as for FLAC; features' decode refuses the file, naming it."""
    good = tmp_path / "good.m4a"
    write_audio(good, tone(6.0), SR)
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(bytes(data))
    assert abs(check_audio(bad) - check_audio(good)) < 1e-9
    with pytest.raises(DataError) as exc:
        read_audio(bad, SR)
    assert _first_line(exc).startswith(f"{bad}: truncated or corrupt audio")


def test_m4a_audio_dir_is_found_and_scanned(tmp_path):
    folder = make_audio_dir(tmp_path / "d", speakers=2, per_speaker=2, fmt="m4a")
    rows, meta = scan_audio_dir(folder, min_seconds=0.5, short="skip")
    assert len(rows) == 4 and meta["speakers"] == ["spk0", "spk1"]
    assert all(r.utterance_id.endswith(".m4a") and r.duration > 0.9 for r in rows)


def make_kaldi(folder: Path, *, segments: bool = True, speakers=("alice", "bob"),
               seed: int = 0) -> Path:
    """Two speakers, two recordings each (one flac, one m4a), relative paths; with
    segments each recording gives two utterances."""
    rng = np.random.default_rng(seed)
    wav_scp, utt2spk, spk2utt, segs = [], [], {}, []
    for s, spk in enumerate(speakers):
        for r, suffix in enumerate((".flac", ".m4a")):
            rec = f"{spk}-rec{r}"
            path = folder / "audio" / f"{rec}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, voice(120.0 + 60 * s, 3.0, rng), SR)
            wav_scp.append(f"{rec} audio/{rec}{suffix}")
            utts = [f"{rec}-a", f"{rec}-b"] if segments else [rec]
            if segments:
                segs += [f"{utts[0]} {rec} 0.0 1.5", f"{utts[1]} {rec} 1.5 -1"]
            for utt in utts:
                utt2spk.append(f"{utt} {spk}")
                spk2utt.setdefault(spk, []).append(utt)
    (folder / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (folder / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    (folder / "spk2utt").write_text("".join(f"{k} {' '.join(v)}\n" for k, v in spk2utt.items()))
    if segments:
        (folder / "segments").write_text("\n".join(segs) + "\n")
    return folder


def test_kaldi_folder_with_segments(tmp_path):
    folder = make_kaldi(tmp_path / "k")
    assert is_kaldi_dir(folder) and not is_kaldi_dir(tmp_path)
    rows, meta = scan_kaldi(folder, min_seconds=0.5, short="skip")
    assert meta["speakers"] == ["alice", "bob"] and len(rows) == 8
    by_id = {r.utterance_id: r for r in rows}
    first, rest = by_id["alice-rec0-a"], by_id["alice-rec0-b"]
    assert (first.start, first.end, rest.start, rest.end) == (0.0, 1.5, 1.5, None)
    assert first.speaker == "alice" and first.path == str(folder / "audio/alice-rec0.flac")
    assert first.duration == pytest.approx(1.5) and rest.duration == pytest.approx(1.5, abs=0.01)
    # The two segments are exactly the two halves of the recording.
    whole = read_audio(first.path, SR)
    parts = [read_audio(r.path, SR, r.start, r.end) for r in (first, rest)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # min_seconds applies to segments, not recordings.
    with pytest.raises(DataError, match="all 8 utterances are shorter than min_seconds = 2"):
        scan_kaldi(folder, min_seconds=2.0, short="skip")
    assert len(scan_kaldi(folder, min_seconds=2.0, short="pad")[0]) == 8


def test_kaldi_folder_without_segments(tmp_path):
    rows, _ = scan_kaldi(make_kaldi(tmp_path / "k", segments=False), min_seconds=0.5,
                         short="skip")
    assert [r.utterance_id for r in rows] == ["alice-rec0", "alice-rec1", "bob-rec0", "bob-rec1"]
    assert all(r.start is None and r.end is None for r in rows)


BAD = {
    "pipe": ("wav.scp", "alice-rec0 sox audio/alice-rec0.flac -t wav - |",
             "wav.scp:1: 'alice-rec0' is a command"),
    "archive": ("wav.scp", "alice-rec0 feats.ark:1234", "wav.scp:1: 'alice-rec0' points into a Kaldi archive"),
    "malformed": ("utt2spk", "lonely-utterance", "utt2spk:1: expected '<utterance-id> <speaker>'"),
    # A third word would otherwise become part of the speaker's name ('alice extra').
    "speaker_with_space": ("utt2spk", "alice-rec0-a alice extra",
                           "utt2spk:1: expected '<utterance-id> <speaker>'"),
    "nan_segment": ("segments", "alice-rec0-a alice-rec0 nan 1.5",
                    "segments:1: segment 'alice-rec0-a' has start nan s"),
    "speaker_without_audio": ("utt2spk", "+ghost-utt carol",
                              "utt2spk:9: utterance 'ghost-utt' (speaker 'carol') has no audio"),
    "no_speaker": ("utt2spk", "-bob-rec1-b", "segments:8: utterance 'bob-rec1-b' has no speaker"),
    "missing_file": ("wav.scp", "+dave-rec0 audio/nothing.flac", "wav.scp:5: "),
    "outside": ("segments", "alice-rec0-a alice-rec0 0.0 9.5",
                "segments:1: segment 'alice-rec0-a' ends at 9.5 s"),
    "unknown_recording": ("segments", "alice-rec0-a nobody 0.0 1.0",
                          "segments:1: recording 'nobody' is not in wav.scp"),
    "spk2utt_disagrees": ("spk2utt", "bob alice-rec0-a", "spk2utt:1: utterance 'alice-rec0-a' of speaker 'bob'"),
    "duplicate": ("utt2spk", "+alice-rec0-a alice", "utt2spk:9: 'alice-rec0-a' is listed again"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_kaldi_problems_are_one_line_naming_file_and_line(tmp_path, case):
    folder = make_kaldi(tmp_path / "k")
    name, edit, expected = BAD[case]
    target = folder / name
    lines = target.read_text().splitlines()
    if edit.startswith("+"):
        lines.append(edit[1:])
        if case == "missing_file":  # a recording nobody's utterance uses is still checked
            (folder / "utt2spk").write_text((folder / "utt2spk").read_text() + "dave-rec0 dave\n")
            (folder / "segments").write_text((folder / "segments").read_text()
                                             + "dave-rec0 dave-rec0 0 -1\n")
            (folder / "spk2utt").write_text((folder / "spk2utt").read_text() + "dave dave-rec0\n")
    elif case == "speaker_with_space":  # without spk2utt nothing else would catch it
        (folder / "spk2utt").unlink()
        lines[0] = edit
    elif edit.startswith("-"):
        lines = [line for line in lines if not line.startswith(edit[1:])]
    else:
        lines[0] = edit
    target.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        scan_kaldi(folder, min_seconds=0.5, short="skip")
    text = _first_line(exc)
    assert expected in text, text
    assert str(folder) in text
    if case == "missing_file":
        assert text.endswith("audio/nothing.flac: not found")
    if case == "pipe":  # the file the command decodes is named: spkid reads it directly
        assert text.endswith("list audio/alice-rec0.flac itself, spkid decodes it")


def test_kaldi_recording_without_speaker_names_its_wav_scp_line(tmp_path):
    """Without segments the utterances are wav.scp's recordings: one missing from utt2spk
    is named by its wav.scp line."""
    folder = make_kaldi(tmp_path / "k", segments=False)
    (folder / "spk2utt").unlink()
    utt2spk = folder / "utt2spk"
    utt2spk.write_text("".join(line + "\n" for line in utt2spk.read_text().splitlines()
                               if not line.startswith("bob-rec0 ")))
    with pytest.raises(DataError) as exc:
        scan_kaldi(folder, min_seconds=0.5, short="skip")
    assert _first_line(exc) == (f"{folder / 'wav.scp'}:3: utterance 'bob-rec0' has no "
                                f"speaker in {utt2spk}")


def test_kaldi_lists_with_bom_read_and_empty_lists_named(tmp_path):
    """A byte-order mark (Windows editors write one) is not part of the first id; an
    empty list is named as such, not reported as 'all 0 utterances are too short'."""
    folder = make_kaldi(tmp_path / "k")
    for name in ("wav.scp", "utt2spk"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    rows, _ = scan_kaldi(folder, min_seconds=0.5, short="skip")
    assert rows[0].utterance_id == "alice-rec0-a"
    (folder / "utt2spk").write_text("\n")
    with pytest.raises(DataError) as exc:
        scan_kaldi(folder, min_seconds=0.5, short="skip")
    assert _first_line(exc).startswith(f"{folder / 'utt2spk'}: lists nothing")


def test_kaldi_trial_list_format(tmp_path):
    folder = make_audio_dir(tmp_path / "v", speakers=2, per_speaker=2)
    trials = tmp_path / "trials"
    trials.write_text("spk0/00.wav spk0/01.wav target\nspk0/00.wav spk1/00.wav nontarget\n"
                      "1 spk1/00.wav spk1/01.wav\n")
    got = read_trials_list(trials, folder)
    assert [(label, a.name, b.parent.name) for label, a, b in got] == [
        (1, "00.wav", "spk0"), (0, "00.wav", "spk1"), (1, "00.wav", "spk1")]
    trials.write_text("spk0/00.wav spk0/01.wav maybe\n")
    with pytest.raises(DataError, match=r"trials:1: label must be 0 or 1"):
        read_trials_list(trials, folder)


def test_kaldi_verification_folder_and_its_utterance_id_trials(tmp_path):
    """data.verify_dir may be a Kaldi folder; evaluate.trials then names its utterances by
    id (Kaldi's own lists), segments included, and each trial maps to those rows."""
    from spkid.data.sources.unseen import scan_unseen_speakers
    from spkid.scoring.trials import unseen_trial_lists
    folder = make_kaldi(tmp_path / "k")
    rows, meta = scan_unseen_speakers(folder, None)
    assert meta["kind"] == "dir" and meta["speakers"] == ["alice", "bob"] and len(rows) == 8
    (i, j, labels), = unseen_trial_lists(rows, meta, seed=0, nontarget_ratio=1.0,
                                         max_trials=100).values()
    assert labels.sum() == 2 * 6  # all same-speaker pairs: 4 segments per speaker

    trials = tmp_path / "trials"
    trials.write_text("alice-rec0-a alice-rec1-b target\nalice-rec0-a bob-rec0-b nontarget\n"
                      "# a comment\n"
                      "1 bob-rec0-a bob-rec1-a\n")
    rows, meta = scan_unseen_speakers(folder, trials)
    assert meta["kind"] == "trials" and [e["pairs"] for e in meta["lists"]] == [3]
    by_id = {r.utterance_id: r for r in rows}
    assert sorted(by_id) == ["alice-rec0-a", "alice-rec1-b", "bob-rec0-a", "bob-rec0-b",
                             "bob-rec1-a"]
    assert (by_id["alice-rec1-b"].start, by_id["alice-rec1-b"].end) == (1.5, None)
    (i, j, labels), = unseen_trial_lists(rows, meta, seed=0, nontarget_ratio=1.0,
                                         max_trials=100).values()
    got = [(rows[a].utterance_id, rows[b].utterance_id, int(y)) for a, b, y in zip(i, j, labels)]
    assert got == [("alice-rec0-a", "alice-rec1-b", 1), ("alice-rec0-a", "bob-rec0-b", 0),
                   ("bob-rec0-a", "bob-rec1-a", 1)]

    for text, line in [("alice-rec0-a alice-rec1-b target\nalice-rec0-a carol-rec0-a nontarget\n", 2),
                       ("carol-rec0-a carol-rec0-b target\n", 1)]:
        trials.write_text(text)
        with pytest.raises(DataError) as exc:
            scan_unseen_speakers(folder, trials)
        assert _first_line(exc).startswith(f"{trials}:{line}: utterance 'carol-rec0-a' is not in")

    # Only the audio the list names is opened (a trial list of VoxCeleb1-O's 4,708 files
    # out of WeSpeaker's whole VoxCeleb1 folder); without a list, every file is.
    (folder / "audio" / "bob-rec1.m4a").unlink()
    trials.write_text("alice-rec0-a bob-rec0-b nontarget\n")
    rows, _ = scan_unseen_speakers(folder, trials)
    assert sorted(r.utterance_id for r in rows) == ["alice-rec0-a", "bob-rec0-b"]
    with pytest.raises(DataError, match="bob-rec1.m4a: not found"):
        scan_unseen_speakers(folder, None)
