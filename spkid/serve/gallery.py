"""Enrolled speakers, to identify later (`spkid enroll` / `spkid identify`): a Parquet
gallery with one row per speaker: name, embedding (the unit-length mean of the unit-length
embeddings of the files enrolled), count (how many files), seconds (their total length,
for a calibration that weighs durations) and model (SpeakerModel.identity
of the model that enrolled it; a gallery is refused by any other model, whose embeddings
live in another space).

Enrolling a name again replaces its entry: the files given are the speaker's enrolment,
whole (give them all to enrol more). A recording is identified as the enrolled speaker
that scores highest against it, as verify scores two recordings (the shipped
normalisation), and is "unknown" unless verify's decision on that score says same speaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.scoring.calibration import duration_quality
from spkid.serve.embedder import Audio, SpeakerModel

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Identification:
    """Who spoke a recording: `speaker` (UNKNOWN when the best enrolled speaker's score is
    below the threshold) and the best `candidates`, (name, score) highest first."""
    speaker: str
    candidates: list[tuple[str, float]]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Gallery:
    """The enrolled speakers of `path`, scored with `model`."""
    path: Path
    model: SpeakerModel
    names: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # (speakers, dim), unit length
    counts: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, model: SpeakerModel, *, must_exist: bool = False) -> "Gallery":
        """The gallery at `path` (empty when there is no file, unless `must_exist`)."""
        path = Path(path)
        gallery = cls(path, model, embeddings=np.zeros((0, model.model.embedding_dim), np.float32))
        if not path.exists():
            if must_exist:
                raise DataError(f"{path}: no such gallery (enrol speakers with `spkid enroll`)")
            return gallery
        try:
            table = pq.read_table(path).to_pydict()
            names, counts, models = table["name"], table["count"], table["model"]
            seconds = table.get("seconds") or [float("nan")] * len(names)  # older galleries
            emb = np.array(table["embedding"], np.float32).reshape(len(names), -1)
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a spkid gallery ({str(exc).splitlines()[0]})") from None
        others = set(models) - {model.identity}
        if others:
            raise DataError(f"{path}: enrolled with another model (identity "
                            f"{sorted(others)[0][:12]}), not {model.source} "
                            f"({model.identity[:12]}); enrol again with this model")
        gallery.names, gallery.counts, gallery.embeddings = list(names), list(counts), emb
        gallery.seconds = [float("nan") if x is None else x for x in seconds]
        return gallery

    def enroll(self, name: str, audio: Sequence[Audio], sample_rate: int | None = None) -> None:
        """Enrol (or re-enrol, replacing) speaker `name` from recordings of them."""
        if not name or name == UNKNOWN:
            raise DataError(f"name: {name!r} cannot name an enrolled speaker")
        if isinstance(audio, (str, Path, np.ndarray)) or not len(audio):
            raise DataError(f"{name}: enrolment needs a list of one or more recordings")
        centre = _unit(_unit(self.model.embed(list(audio), sample_rate)).mean(0)).astype(np.float32)
        seconds = sum(self.model.seconds(x, sample_rate) for x in audio)
        if name in self.names:
            at = self.names.index(name)
            self.embeddings[at], self.counts[at], self.seconds[at] = centre, len(audio), seconds
        else:
            self.names.append(name)
            self.counts.append(len(audio))
            self.seconds.append(seconds)
            self.embeddings = np.concatenate([self.embeddings, centre[None]])

    def save(self) -> None:
        """Write the gallery to its path, whole or not at all."""
        table = pa.table({"name": pa.array(self.names, pa.string()),
                          "embedding": pa.array(list(self.embeddings), pa.list_(pa.float32())),
                          "count": pa.array(self.counts, pa.int64()),
                          "seconds": pa.array(self.seconds, pa.float64()),
                          "model": pa.array([self.model.identity] * len(self.names), pa.string())})
        try:
            with atomic_path(self.path) as tmp:
                pq.write_table(table, tmp)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def identify(self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, *,
                 top: int = 1, p_target: float = 0.5) -> Identification | list[Identification]:
        """Who spoke each recording: the `top` enrolled speakers by score and the decision
        (UNKNOWN unless verify's rule, at `p_target` where the model is calibrated, accepts
        the best). One Identification, or a list for a list."""
        self.model.check_decides()
        if not self.names:
            raise DataError(f"{self.path}: no speakers enrolled")
        if top < 1:
            raise DataError(f"top: {top} (must be at least 1)")
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        tests = self.model.embed(items, sample_rate)
        weighs_durations = getattr(self.model.calibration, "quality", None) == "duration"
        n = len(self.names)
        # Enrolled and test embeddings side by side, every (test, enrolled) pair a trial.
        emb = np.concatenate([self.embeddings, tests])
        i = np.repeat(np.arange(n, n + len(tests)), n)
        j = np.tile(np.arange(n), len(tests))
        scores = self.model.norm.decision_scores(emb, i, j).reshape(len(tests), n)
        out = []
        for row, item in zip(scores, items):
            order = np.argsort(-row, kind="stable")[:top]
            quality = None
            if weighs_durations:
                enrolled = self.seconds[order[0]]
                if np.isnan(enrolled):
                    raise DataError(f"{self.path}: {self.names[order[0]]} was enrolled by an "
                                    "older spkid, without the seconds this model's calibration "
                                    "weighs: enrol them again")
                quality = duration_quality([enrolled], [self.model.seconds(item, sample_rate)])
            best = self.model.decide(row[order[:1]], p_target, quality)[0]
            out.append(Identification(self.names[order[0]] if best.same else UNKNOWN,
                                      [(self.names[k], float(row[k])) for k in order]))
        return out[0] if single else out
