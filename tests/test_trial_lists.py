"""Several trial lists in one evaluation, and calibration fitted on a named list: the lists
are read into one manifest whose recordings are embedded once, each list is scored as its
own role, and the calibration block is what fitting and measuring by hand gives."""

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from spkid.core.errors import ParamsError
from spkid.core.params import validate_params
from spkid.data.sources.unseen import scan_unseen_speakers
from spkid.scoring.calibration import Calibration, calibrated_metrics, cllr, duration_quality
from spkid.scoring.evaluation import score_unseen, write_det_curves
from spkid.scoring.metrics import eer
from spkid.scoring.norm import ScoreNorm, cosine_scores
from spkid.scoring.trials import unseen_trial_lists

SPEAKERS = ("ann", "bob", "cat", "dan", "eve", "fay")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """<speaker>/<n>.wav for six speakers, three short recordings each (0.5, 1 and 1.5 s)."""
    root = tmp_path_factory.mktemp("unseen")
    rng = np.random.default_rng(0)
    for spk in SPEAKERS:
        (root / spk).mkdir()
        for n in range(3):
            sf.write(root / spk / f"{n}.wav", 0.1 * rng.standard_normal(8000 * (n + 1)), 16000)
    return root


def write_list(path, pairs):
    path.write_text("".join(f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n"
                            for a, b in pairs))
    return path


def all_pairs(speakers):
    files = [f"{s}/{n}.wav" for s in speakers for n in range(3)]
    return [(a, b) for k, a in enumerate(files) for b in files[k + 1:]]


class EmbedsOnce:
    """A stand-in for spkid.scoring.embedding.Scoring: a fixed noisy embedding per
    speaker, and a record of what it was asked to embed."""
    model = SimpleNamespace(embedding_dim=8)

    def __init__(self):
        self.calls = []
        self.centre = {s: np.random.default_rng(k).standard_normal(8) for k, s in enumerate(SPEAKERS)}

    def embed_recordings(self, paths, batch_frames, spans=None, progress=False):
        self.calls.append(list(paths))
        rng = np.random.default_rng(len(self.calls))
        return np.stack([self.centre[p.split("/")[-2]] + 1.5 * rng.standard_normal(8)
                         for p in paths]).astype(np.float32)


def test_several_lists_and_a_calibration_list_score_each_and_embed_each_recording_once(
        folder, tmp_path):
    # -O-like: ann..dan; -E-like: all of ann..dan plus more pairs, sharing -O's files;
    # calibration on two other speakers.
    o = write_list(tmp_path / "vox1_O.txt", all_pairs(SPEAKERS[:2]))
    e = write_list(tmp_path / "vox1.E.txt", all_pairs(SPEAKERS[:4]))
    cal = write_list(tmp_path / "cal.txt", all_pairs(SPEAKERS[4:]))
    rows, meta = scan_unseen_speakers(folder, [o, e], calibration=cal)
    assert [(x["name"], x["purpose"], x["pairs"]) for x in meta["lists"]] == [
        ("vox1_O", "score", 15), ("vox1_E", "score", 66), ("cal", "calibration", 15)]
    assert len(rows) == 18 and len({r.path for r in rows}) == 18  # one row per recording

    lists = unseen_trial_lists(rows, meta, seed=0, nontarget_ratio=1.0, max_trials=100)
    assert list(lists) == ["vox1_O", "vox1_E", "cal"]
    files = {"vox1_O": o, "vox1_E": e, "cal": cal}
    for name, (i, j, labels) in lists.items():  # each pair is the list's own, label included
        listed = [line.split() for line in files[name].read_text().splitlines()]
        got = [(int(y), rows[a].path, rows[b].path) for a, b, y in zip(i, j, labels)]
        assert got == [(int(y), str(folder / a), str(folder / b)) for y, a, b in listed], name

    scoring = EmbedsOnce()
    p = validate_params({"evaluate": {"bootstrap_rounds": 20}}).evaluate
    report, curves = score_unseen(scoring, rows, meta, p, ScoreNorm())
    assert len(scoring.calls) == 1 and len(scoring.calls[0]) == 18  # every recording once
    assert set(report) == set(curves) == {"verify", "verify_vox1_E"}
    assert (report["verify"]["list"], report["verify_vox1_E"]["list"]) == ("vox1_O", "vox1_E")
    assert (report["verify"]["speakers"], report["verify_vox1_E"]["speakers"]) == (2, 4)

    # Independently: the embeddings the stand-in returned, scored and calibrated by hand.
    emb = np.zeros((18, 8), np.float32)
    order = [next(k for k, r in enumerate(rows) if r.path == path) for path in scoring.calls[0]]
    emb[order] = EmbedsOnce().embed_recordings(scoring.calls[0], 0)
    fit = Calibration.fit(cosine_scores(emb, *lists["cal"][:2]), lists["cal"][2])
    for role, name in (("verify", "vox1_O"), ("verify_vox1_E", "vox1_E")):
        i, j, labels = lists[name]
        scores = cosine_scores(emb, i, j)
        assert report[role]["eer"] == pytest.approx(eer(scores, labels)[0])
        c = report[role]["calibration"]
        assert (c["fit_list"], c["fit_trials"], c["trials"]) == ("cal", 15, len(labels))
        assert (c["slope"], c["offset"]) == pytest.approx((fit.slope, fit.offset))
        expected = calibrated_metrics(fit, scores, labels)
        assert {k: c[k] for k in expected} == pytest.approx(expected)

    # With the duration quality measure the calibration weighs log durations too.
    p = validate_params({"evaluate": {"bootstrap_rounds": 0,
                                      "calibration_quality": "duration"}}).evaluate
    report, _ = score_unseen(EmbedsOnce(), rows, meta, p, ScoreNorm())
    seconds = np.array([r.duration for r in rows])
    assert sorted(set(seconds.round(3))) == [0.5, 1.0, 1.5]
    i, j, labels = lists["cal"]
    fit = Calibration.fit(cosine_scores(emb, i, j), labels,
                          duration_quality(seconds[i], seconds[j]), kind="duration")
    c = report["verify_vox1_E"]["calibration"]
    assert c["quality"] == "duration"
    assert (c["slope"], *c["quality_weights"]) == pytest.approx((fit.slope, *fit.quality_weights))
    i, j, labels = lists["vox1_E"]
    assert c["cllr"] == pytest.approx(cllr(fit.llr(cosine_scores(emb, i, j),
                                                   duration_quality(seconds[i], seconds[j])), labels))

    # A curve of a list no longer scored does not outlive it.
    det = tmp_path / "det"
    det.mkdir()
    (det / "verify_old_list.json").write_text("{}")
    write_det_curves(det, curves)
    assert sorted(f.name for f in det.iterdir()) == ["verify.json", "verify_vox1_E.json"]


def test_lists_of_one_name_and_a_calibration_list_alone_are_refused(folder, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_list(tmp_path / "a" / "trials.txt", all_pairs(SPEAKERS[:2]))
    b = write_list(tmp_path / "b" / "trials.txt", all_pairs(SPEAKERS[2:4]))
    with pytest.raises(ParamsError, match=r"evaluate.trials: .*b/trials.txt has the name of "):
        scan_unseen_speakers(folder, [a, b])
    with pytest.raises(ParamsError, match=r"evaluate.trials: .*a/trials.txt is given twice"):
        scan_unseen_speakers(folder, [a, a])
    with pytest.raises(ParamsError, match="evaluate.calibration_trials .*without evaluate.trials"):
        scan_unseen_speakers(folder, None, calibration=a)
