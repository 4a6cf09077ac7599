"""An exported model applied to audio files: what `spkid embed`, `verify` and `predict`
run. The model folder's PyTorch weights, or its model.onnx on ONNX Runtime, with the
score normalisation export shipped beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spkid.core.device import pick_device
from spkid.core.errors import DataError
from spkid.data.views import real_speakers
from spkid.models.embedding import real_class_logits
from spkid.models.folder import CONFIG, load_model_dir, read_config
from spkid.scoring.embedding import ModelWithConfig
from spkid.scoring.calibration import Calibration
from spkid.scoring.norm import ScoreNorm
from spkid.serve.onnx import OnnxEmbedder


def load_embedder(path: str | Path, device):
    """(model, config, score normalisation, device) for `spkid embed` / `verify`: a model
    folder runs its PyTorch weights on `device`; a `.onnx` file in such a folder runs on
    ONNX Runtime (CPU), its graph having subtracted the training mean already, so the
    normalisation returned for it has no mean left to subtract."""
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise DataError(f"{path}: not found")
        config = read_config(path.parent / CONFIG)
        norm = ScoreNorm.load(path.parent)
        return OnnxEmbedder(path), config, ScoreNorm(None, norm.cohort, norm.top_n), torch.device("cpu")
    model, config = load_model_dir(path, device)
    return model, config, ScoreNorm.load(path), device


@dataclass
class AudioEmbedder(ModelWithConfig):
    """An exported model (PyTorch folder or model.onnx) with what scoring audio needs:
    its config, the score normalisation export shipped and the feature extractor."""
    model: object
    config: dict
    norm: ScoreNorm
    device: torch.device
    batch_frames: int = 20000

    @classmethod
    def load(cls, path, device: str, *, closed_set: bool = False) -> "AudioEmbedder":
        """The model at `path`; with `closed_set` (predicting training speakers) it must be
        the PyTorch folder, which keeps the classification head."""
        if closed_set and Path(path).suffix == ".onnx":
            raise DataError(f"{path}: predict needs the PyTorch model folder (an ONNX graph "
                            "outputs embeddings only)")
        return cls(*load_embedder(path, pick_device(device)))

    @property
    def threshold(self) -> float | None:
        """The same/different threshold export shipped (an EER threshold: the unseen-speaker
        role's when evaluate had one, see model.json's threshold_from); None without one."""
        return self.config.get("eer_threshold")

    @property
    def calibration(self) -> Calibration | None:
        """Scores to log-likelihood ratios, when evaluate fitted one on unseen speakers."""
        c = self.config.get("calibration")
        return None if c is None else Calibration(c["slope"], c["offset"])

    def warnings(self) -> list[str]:
        """What may make this model's scores of raw audio less trustworthy."""
        return ["was trained on precomputed features; features extracted here from raw audio "
                "may not match the data set's extraction"] if self.precomputed else []

    def embed(self, paths) -> np.ndarray:
        """Raw embeddings of whole recordings, in order."""
        return self.embed_recordings(paths, self.batch_frames)

    def scored_embeddings(self, paths) -> np.ndarray:
        """The embeddings as scoring sees them: minus the training mean when export shipped one."""
        return self.norm.center(self.embed(paths))

    def pair_score(self, a, b) -> float:
        """The normalised cosine score of two recordings, as evaluate scored its trials."""
        emb = self.scored_embeddings([a, b])
        return float(self.norm.decision_scores(emb, np.array([0]), np.array([1]))[0])

    @torch.no_grad()
    def closed_set(self, paths) -> list[tuple[str, float]]:
        """(training speaker, its softmax probability) most likely for each recording."""
        emb = self.embed(paths)
        logits = self.model.head(torch.from_numpy(emb).to(next(self.model.parameters()).device))
        real = real_class_logits(logits, real_speakers(self.config["speakers"]))
        prob = torch.softmax(real, dim=1).cpu().numpy()
        return [(self.config["speakers"][int(row.argmax())], float(row.max())) for row in prob]
