"""A trained model applied to audio: `spkid.SpeakerModel`, the Python API, which `spkid
embed`, `verify` and `predict` are thin wrappers over. The model folder's PyTorch weights,
its model.onnx on ONNX Runtime, or a training checkpoint, with the score normalisation
export shipped beside it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from spkid.core.device import pick_device
from spkid.core.errors import DataError
from spkid.data.audio import check_samples, read_audio, resample
from spkid.data.views import real_speakers
from spkid.features.logmel import LogMelExtractor
from spkid.features.store import FeatureStore
from spkid.models.embedding import embed_crops, real_class_logits
from spkid.models.folder import CONFIG, WEIGHTS, load_model_dir, load_weights, read_config
from spkid.scoring.calibration import Calibration, bayes_threshold, duration_quality
from spkid.scoring.embedding import ModelWithConfig, recording_seconds
from spkid.scoring.norm import ScoreNorm

# One recording: a file, or mono samples (numpy array or torch tensor) with their rate.
Audio = Union[str, Path, np.ndarray, torch.Tensor]


def load_embedder(path: str | Path, device, config: str | Path | None = None):
    """(model, config, score normalisation, device) of what `path` names:
    * a model folder (model.pt + model.json, e.g. data/export/model or data/model): its
      PyTorch weights on `device`, with the score_norm.npz export shipped, if any;
    * a `.onnx` file in such a folder: ONNX Runtime (CPU); its graph subtracts the training
      mean already, so the normalisation returned for it has no mean left to subtract;
    * a `.pt` training checkpoint (data/checkpoints/last.pt, best.pt): its weights, built
      as the model.json beside it (training writes one there) or `config` (a model.json or
      a folder holding one) says; no normalisation, no threshold."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise DataError(f"{path}: not found")
        from spkid.serve.onnx import OnnxEmbedder  # onnxruntime loads for .onnx files only
        config = read_config(path.parent / CONFIG)
        norm = ScoreNorm.load(path.parent)
        return OnnxEmbedder(path), config, ScoreNorm(None, norm.cohort, norm.top_n), torch.device("cpu")
    if path.suffix == ".pt":
        if not path.is_file():
            raise DataError(f"{path}: not found")
        described = Path(config) if config is not None else path.parent / CONFIG
        if described.is_dir():
            described = described / CONFIG
        if config is None and not described.is_file():
            raise DataError(f"{path}: no {CONFIG} beside the checkpoint; pass config= (the "
                            "run's model folder, e.g. data/model)")
        model, cfg = load_weights(path, described, device)
        return model, cfg, ScoreNorm(), device
    if path.is_file():
        raise DataError(f"{path}: not a model (a model folder, its model.onnx or a .pt "
                        "checkpoint)")
    model, cfg = load_model_dir(path, device)
    return model, cfg, ScoreNorm.load(path), device


@dataclass(frozen=True)
class Verification:
    """A same/different decision on two recordings. `score` is the normalised cosine score;
    with a calibration `llr` is its log-likelihood ratio and `threshold` the Bayes threshold
    of `p_target` on it, else `threshold` is the shipped score threshold and `llr` None."""
    score: float
    same: bool
    threshold: float
    llr: float | None = None
    p_target: float | None = None


@dataclass(frozen=True)
class Segments:
    """Embeddings of the windows of one recording (SpeakerModel.embed_segments): window k
    spans start[k] .. end[k] seconds."""
    start: np.ndarray  # (N,) seconds
    end: np.ndarray  # (N,) seconds
    embeddings: np.ndarray  # (N, embedding_dim), as SpeakerModel.embed gives them


@dataclass
class SpeakerModel(ModelWithConfig):
    """A trained speaker model, ready to embed, score, verify and identify audio.

        from spkid import SpeakerModel
        model = SpeakerModel.load("data/export/model")
        print(model.verify("a.wav", "b.wav").same)

    Audio is a file path, or mono samples (1-D numpy array or torch tensor, float, full
    scale 1) with their `sample_rate`, resampled to the model's; files are decoded as
    training decoded them (channels averaged). Embeddings are the ones the model scores
    with: minus the training mean export shipped (as `spkid embed` and model.onnx)."""
    model: object
    config: dict
    norm: ScoreNorm
    device: torch.device
    source: Path = Path(".")
    batch_frames: int = 20000
    vad: bool | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", *,
             config: str | Path | None = None, vad: bool | None = None) -> "SpeakerModel":
        """The model at `path`: an exported model folder (data/export/model), its model.onnx,
        a training model folder (data/model) or checkpoint (data/checkpoints/last.pt; see
        load_embedder for `config`). `device`: auto | cpu | cuda (ONNX runs on CPU).
        `vad`: keep only the speech of each recording (Silero VAD, the vad extra) before
        embedding; by default (None) exactly when the model was trained on trimmed audio
        (features.vad). Windows (embed_segments) keep the recording's timeline: no VAD."""
        model = cls(*load_embedder(path, pick_device(device), config), source=Path(path), vad=vad)
        detector = model.speech_detector(vad)
        if detector is not None:
            detector.config()  # a missing silero-vad is said now, not at the first call
        return model

    @property
    def sample_rate(self) -> int:
        """The rate the model hears; other rates are resampled to it."""
        return int(self.config["features"]["sample_rate"])

    @property
    def speakers(self) -> list[str]:
        """The training speakers predict() chooses from."""
        return [s for s, real in zip(self.config["speakers"], real_speakers(self.config["speakers"]))
                if real]

    @property
    def threshold(self) -> float | None:
        """The same/different threshold export shipped (an EER threshold: the unseen-speaker
        role's when evaluate had one, see model.json's threshold_from); None without one."""
        return self.config.get("eer_threshold")

    @property
    def calibration(self) -> Calibration | None:
        """Scores to log-likelihood ratios, when evaluate fitted one on unseen speakers."""
        c = self.config.get("calibration")
        return None if c is None else Calibration.from_dict(c)

    def warnings(self) -> list[str]:
        """What may make this model's scores of raw audio less trustworthy."""
        return ["was trained on precomputed features; features extracted here from raw audio "
                "may not match the data set's extraction"] if self.precomputed else []

    def embed(self, audio: Audio | Sequence[Audio], sample_rate: int | None = None) -> np.ndarray:
        """The embedding of one recording, (embedding_dim,), or of a list of them,
        (N, embedding_dim), in order; `sample_rate` is that of the arrays among them."""
        single = not isinstance(audio, (list, tuple))
        emb = self.norm.center(self._raw([audio] if single else list(audio), sample_rate))
        return emb[0] if single else emb

    def score(self, a: Audio, b: Audio, sample_rate: int | None = None) -> float:
        """The score of two recordings, normalised as evaluate scored its trials (AS-norm
        when export shipped a cohort, else the cosine)."""
        emb = self.embed([a, b], sample_rate)
        return float(self.norm.decision_scores(emb, np.array([0]), np.array([1]))[0])

    def verify(self, a: Audio, b: Audio, sample_rate: int | None = None, *,
               p_target: float = 0.5) -> Verification:
        """Same speaker or not: the calibrated LLR against the Bayes threshold of `p_target`
        (the prior of a same-speaker pair) when the model carries a calibration, else the
        score against the shipped threshold. A model with neither is refused before any
        audio is read."""
        self.check_decides()
        if not 0 < p_target < 1:
            raise DataError(f"p_target: {p_target} is not a probability strictly between 0 and 1")
        a, b = (self._source(x, sample_rate) for x in (a, b))
        quality = None
        if self.calibration is not None and self.calibration.quality == "duration":
            quality = duration_quality([self.seconds(a, self.sample_rate)],
                                       [self.seconds(b, self.sample_rate)])
        return self.decide(np.array([self.score(a, b, self.sample_rate)]), p_target, quality)[0]

    def seconds(self, audio: Audio, sample_rate: int | None = None) -> float:
        """The length of a recording in seconds (its header's for a file): the duration a
        calibration weighing durations takes, as evaluate took the manifest's."""
        return recording_seconds(self._source(audio, sample_rate), self.sample_rate)

    def decide(self, scores: np.ndarray, p_target: float = 0.5,
               quality: np.ndarray | None = None) -> list[Verification]:
        """The same/different decision on each of `scores` (normalised scores), as verify;
        `quality` holds the trials' quality measures where the calibration weighs them
        (model.json's calibration.quality; "duration": spkid.scoring.calibration's
        duration_quality of the recordings' seconds)."""
        self.check_decides()
        calibration = self.calibration
        if calibration is None:
            return [Verification(float(s), bool(s >= self.threshold), self.threshold)
                    for s in scores]
        threshold = bayes_threshold(p_target)
        return [Verification(float(s), bool(llr >= threshold), threshold, float(llr), p_target)
                for s, llr in zip(scores, calibration.llr(np.asarray(scores), quality))]

    @cached_property
    def identity(self) -> str:
        """What makes this model's embeddings what they are, hashed: the weights file (for
        an .onnx file the model.pt it was exported from, whose embeddings it reproduces),
        the training mean subtracted and the feature params. A gallery is only scored by
        the model that enrolled it (spkid.serve.gallery)."""
        if self.source.suffix == ".pt":
            weights, mean = self.source, None
        else:
            folder = self.source.parent if self.source.suffix == ".onnx" else self.source
            weights, mean = folder / WEIGHTS, ScoreNorm.load(folder).mean
            weights = weights if weights.is_file() else self.source
        h = hashlib.sha256(weights.read_bytes())
        if mean is not None:
            h.update(np.asarray(mean, np.float32).tobytes())
        h.update(json.dumps(self.config["features"], sort_keys=True).encode())
        return h.hexdigest()

    def check_decides(self) -> None:
        """Raise unless the model ships something to decide same/different with."""
        if self.threshold is None and self.calibration is None:
            raise DataError(f"{self.source}: model.json has no eer_threshold (export a model "
                            "that was evaluated)")

    def check_closed_set(self) -> None:
        """Raise unless the model keeps its classification head (predict needs it)."""
        if not isinstance(self.model, torch.nn.Module):
            raise DataError(f"{self.source}: predict needs the PyTorch model folder (an ONNX "
                            "graph outputs embeddings only)")

    @torch.no_grad()
    def predict(self, audio: Audio | Sequence[Audio], sample_rate: int | None = None
                ) -> tuple[str, float] | list[tuple[str, float]]:
        """The training speaker most likely to have spoken each recording and its softmax
        probability among them: one (speaker, probability), or a list for a list."""
        self.check_closed_set()
        single = not isinstance(audio, (list, tuple))
        emb = self._raw([audio] if single else list(audio), sample_rate)
        logits = self.model.head(torch.from_numpy(emb).to(next(self.model.parameters()).device))
        real = real_class_logits(logits, real_speakers(self.config["speakers"]))
        prob = torch.softmax(real, dim=1).cpu().numpy()
        out = [(self.config["speakers"][int(row.argmax())], float(row.max())) for row in prob]
        return out[0] if single else out

    def embed_segments(self, audio: Audio, window: float, hop: float,
                       sample_rate: int | None = None, *,
                       min_window: float | None = None) -> Segments:
        """Embeddings of `window`-second windows of one recording, one every `hop` seconds
        (what diarization clusters). Window k starts at k * hop. Where the full windows end
        before the recording does, one last shorter window runs from the next start to the
        end, kept when at least `min_window` seconds long (default: half a window), so
        at most a tail shorter than that goes unembedded; a recording shorter than one
        window is one window. Times are whole feature frames (the model's hop, 10 ms by
        default). The windows are cut from the whole recording's log-mels, as training cut
        its crops, so each is extracted once."""
        wave = self._source(audio, sample_rate)
        if isinstance(wave, str):
            wave = read_audio(wave, self.sample_rate)
        extractor = LogMelExtractor.from_config(self.config["features"])
        frames_per_s = self.sample_rate / extractor.hop_length
        starts, lengths = segment_windows(
            len(wave) // extractor.hop_length, frames_per_s, window, hop,
            window / 2 if min_window is None else min_window)
        store = FeatureStore.from_matrices(["0"], extractor([wave]))
        emb = embed_crops(self.model, store, np.zeros(len(starts), np.int64), starts,
                          lengths, self.batch_frames, self.device, predict=False).embeddings
        duration = len(wave) / self.sample_rate
        return Segments(starts / frames_per_s,
                        np.minimum((starts + lengths) / frames_per_s, duration),
                        self.norm.center(emb))

    def _raw(self, items: list, sample_rate: int | None) -> np.ndarray:
        """Raw embeddings (as the network outputs them) of recordings, in order."""
        return self.embed_recordings([self._source(x, sample_rate) for x in items],
                                     self.batch_frames, vad=self.vad)

    def _source(self, audio: Audio, sample_rate: int | None) -> str | np.ndarray:
        """What the embedding loop takes for one input: a file's path (decoded there, a
        chunk of files at a time) or mono samples at the model's rate. The one place
        inputs are checked and turned into samples."""
        if isinstance(audio, (str, Path)):
            path = Path(audio)
            if path.is_dir():
                raise DataError(f"{path}: is a folder, not an audio file")
            if not path.is_file():
                raise DataError(f"{path}: not found")
            return str(path)
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        if not isinstance(audio, np.ndarray):
            raise DataError(f"audio: a {type(audio).__name__} is neither a file path nor an "
                            "array of samples")
        if sample_rate is None:
            raise DataError("sample_rate: required with an array of samples (the rate they "
                            "were recorded at)")
        if audio.ndim == 2 and 1 in audio.shape:
            audio = audio.reshape(-1)
        if audio.ndim != 1:
            raise DataError(f"audio: samples of shape {audio.shape}; give mono samples, 1-D "
                            "(mix channels down first, e.g. x.mean(axis=0))")
        if audio.dtype.kind != "f":
            raise DataError(f"audio: {audio.dtype} samples; give floats at full scale 1 "
                            "(e.g. int16 / 32768)")
        if len(audio) == 0:
            raise DataError("audio: no samples")
        check_samples("audio", audio)
        return resample(audio, int(sample_rate), self.sample_rate)


def segment_windows(frames: int, frames_per_s: float, window: float, hop: float,
                    min_window: float) -> tuple[np.ndarray, np.ndarray]:
    """(first frame, number of frames) of each window of a recording `frames` frames long
    (SpeakerModel.embed_segments says which). The last, shorter window may take the one
    frame past `frames` that a recording's last samples give (its end is reported as the
    recording's)."""
    window_f, hop_f, min_f = (round(x * frames_per_s) for x in (window, hop, min_window))
    for name, value, count in (("window", window, window_f), ("hop", hop, hop_f)):
        if count < 1:
            raise DataError(f"{name}: {value} s is shorter than one feature frame "
                            f"({1 / frames_per_s:g} s)")
    full = max(0, (frames - window_f) // hop_f + 1)
    starts = list(range(0, full * hop_f, hop_f))
    lengths = [window_f] * full
    covered = starts[-1] + window_f if full else 0
    tail_start = full * hop_f
    if not full or (covered < frames and frames - tail_start >= max(min_f, 1)):
        starts.append(tail_start)
        lengths.append(frames + 1 - tail_start)
    return np.array(starts, np.int64), np.array(lengths, np.int64)
