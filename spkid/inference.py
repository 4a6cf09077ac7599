"""A trained model applied to inputs: embeddings and closed-set predictions of feature-store
views (val, test, submit) and of audio files (unseen speakers, `spkid embed`), whole
utterances batched by length with padding masks, so an embedding does not depend on its
batch. Used by training's validation, evaluate, export and the inference commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spkid.batching import view_batches
from spkid.device import autocast, pick_device
from spkid.index import real_speakers
from spkid.shards import FeatureStore


class ModelWithConfig:
    """What Scoring and AudioEmbedder share: a model (`model`, `device`) and its model.json
    (`config`), whose feature params turn raw audio into the log-mels it was trained on."""

    @property
    def precomputed(self) -> bool:
        """Trained on a data set's own features, which spkid's log-mels only approximate."""
        return bool(self.config["features"].get("precomputed"))

    def embed_recordings(self, paths, batch_frames: int, *, spans=None,
                         progress: bool = False) -> np.ndarray:
        """Raw embeddings of whole recordings (or their `spans`), in order."""
        return embed_audio_files(self.model, extractor_for_model(self.config["features"]),
                                 paths, batch_frames, self.device, spans=spans,
                                 progress=progress)


@dataclass
class Scoring(ModelWithConfig):
    """What scoring stored features with a trained model needs: the model, its config
    (model.json), the device it runs on and the feature store."""
    model: torch.nn.Module
    config: dict
    device: torch.device
    store: FeatureStore

    @classmethod
    def open(cls, model_dir, features_dir, device: str) -> "Scoring":
        from spkid.checkpoint import load_model_dir
        from spkid.shards import open_features
        where = pick_device(device)
        model, config = load_model_dir(model_dir, where)
        return cls(model, config, where, open_features(features_dir))

    def embed(self, views, batch_frames: int, *, labels=None) -> "ViewOutputs":
        return embed_views(self.model, self.store, views, batch_frames, self.device, labels=labels,
                           classes=real_speakers(self.config["speakers"]))


@dataclass
class ViewOutputs:
    """What scoring needs of each view, O(views) whatever the number of classes."""
    embeddings: np.ndarray  # (N, embedding_dim)
    predicted: np.ndarray  # (N,) class with the highest logit
    true_rank: np.ndarray | None  # (N,) classes scored strictly above the true one


@torch.no_grad()
def embed_views(model, store: FeatureStore, views, batch_frames: int, device: torch.device,
                *, labels=None, max_frames: int = 0, classes: np.ndarray | None = None
                ) -> ViewOutputs:
    """Embeddings and closed-set predictions of whole views (or their middle `max_frames`
    frames), batched by length with padding masks, in the order of `views`. Predictions
    and ranks are among the `classes` marked True (spkid.index.real_speakers; None = all)."""
    drop = None if classes is None or classes.all() else torch.from_numpy(~classes).to(device)
    was_training = model.training
    model.eval()
    pos = store.positions(views["source_id"])
    starts = np.asarray(views["start_frame"], np.int64)
    lengths = np.asarray(views["num_frames"], np.int64)
    if max_frames:
        starts = starts + np.maximum(0, lengths - max_frames) // 2
        lengths = np.minimum(lengths, max_frames)
    n = len(lengths)
    out = ViewOutputs(np.zeros((n, model.embedding_dim), np.float32), np.zeros(n, np.int64),
                      None if labels is None else np.zeros(n, np.int64))
    for batch in view_batches(lengths, batch_frames):
        batch = np.asarray(batch, np.int64)
        x, mask = store.crops(pos[batch], starts[batch], lengths[batch])
        with autocast(device):
            e, z = model(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device))
        z = z.float()
        if drop is not None:
            z = z.masked_fill(drop, float("-inf"))
        out.embeddings[batch] = e.float().cpu().numpy()
        out.predicted[batch] = z.argmax(1).cpu().numpy()
        if labels is not None:
            y = torch.as_tensor(np.asarray(labels, np.int64)[batch], device=z.device)
            true = z.gather(1, y[:, None])
            out.true_rank[batch] = (z > true).sum(1).cpu().numpy()
    model.train(was_training)
    return out



def extractor_for_model(features: dict):
    """The LogMelExtractor a model's inputs were made with (model.json["features"])."""
    from spkid.features import LogMelExtractor
    return LogMelExtractor(features["sample_rate"], features["n_mels"], features["n_fft"],
                           features["hop_length"], features["f_min"], features.get("f_max"))


def embed_audio_files(model, extractor, paths, batch_frames: int, device, *,
                      spans=None, extract_batch: int = 32, chunk_frames: int | None = None,
                      progress: bool = False) -> np.ndarray:
    """(len(paths), embedding_dim) float32 embeddings of whole recordings, in the order of
    `paths`: decode (spkid.audio.read_audio), log-mels with `extractor`, then the model's
    embedding on batches of similar length with padding masks, as for val/test views.
    `spans`, one (start, end) in seconds per path (None = from the beginning / to the end),
    embeds those parts of the recordings instead (a Kaldi folder's segments).

    Files are handled in duration order (read from the headers), a chunk of about
    `chunk_frames` frames at a time (default 16 * batch_frames), so memory stays bounded
    whatever the number of files. A file that cannot be decoded raises DataError naming it.
    """
    from tqdm import tqdm

    from spkid.audio import audio_info, read_audio

    paths = [str(p) for p in paths]
    device = torch.device(device)
    dim = model.embedding_dim
    out = np.zeros((len(paths), dim), np.float32)
    if not paths:
        return out
    spans = [(None, None)] * len(paths) if spans is None else list(spans)
    frames_per_s = extractor.sample_rate / extractor.hop_length
    est = np.array([((end if end is not None else audio_info(p)[0]) - (start or 0.0))
                    * frames_per_s + 1 for p, (start, end) in zip(paths, spans)])
    order = np.argsort(est, kind="stable")
    budget = chunk_frames or 16 * batch_frames
    chunks, chunk, size = [], [], 0.0
    for k in order:
        if chunk and size + est[k] > budget:
            chunks.append(chunk)
            chunk, size = [], 0.0
        chunk.append(int(k))
        size += est[k]
    chunks.append(chunk)

    was_training = model.training
    model.eval()
    bar = tqdm(total=len(paths), desc="embed", unit="file", disable=not progress)
    try:
        for chunk in chunks:
            feats = []
            for s in range(0, len(chunk), extract_batch):
                waves = [read_audio(paths[k], extractor.sample_rate, *spans[k])
                         for k in chunk[s:s + extract_batch]]
                feats += extractor(waves)
            store = FeatureStore.from_matrices([paths[k] for k in chunk], feats)
            length = store.length
            for batch in view_batches(length, batch_frames):
                batch = np.asarray(batch, np.int64)
                x, mask = store.crops(batch, np.zeros(len(batch), np.int64), length[batch])
                with torch.no_grad(), autocast(device):
                    emb = model.embed(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device))
                out[np.asarray(chunk)[batch]] = emb.float().cpu().numpy()
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return out


# --- exported models on audio files (spkid embed / verify / predict) ---------------------

@dataclass
class AudioEmbedder(ModelWithConfig):
    """An exported model (PyTorch folder or model.onnx) with what scoring audio needs:
    its config, the score normalisation export shipped and the feature extractor."""
    model: object
    config: dict
    norm: object  # spkid.score_norm.ScoreNorm
    device: torch.device
    batch_frames: int = 20000

    @classmethod
    def load(cls, path, device: str, *, closed_set: bool = False) -> "AudioEmbedder":
        """The model at `path`; with `closed_set` (predicting training speakers) it must be
        the PyTorch folder, which keeps the classification head."""
        from spkid.errors import DataError
        from spkid.onnx_export import load_embedder
        if closed_set and Path(path).suffix == ".onnx":
            raise DataError(f"{path}: predict needs the PyTorch model folder (an ONNX graph "
                            "outputs embeddings only)")
        return cls(*load_embedder(path, pick_device(device)))

    @property
    def threshold(self) -> float | None:
        """The same/different threshold export shipped (the val EER's); None without one."""
        return self.config.get("eer_threshold")

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
        classes = torch.from_numpy(~real_speakers(self.config["speakers"])).to(logits.device)
        prob = torch.softmax(logits.float().masked_fill(classes, float("-inf")), dim=1).cpu().numpy()
        return [(self.config["speakers"][int(row.argmax())], float(row.max())) for row in prob]


def write_embeddings(out: Path, files: list[tuple[Path, str | None]], emb: np.ndarray) -> None:
    """A Parquet table (path, speaker, embedding) at `out`, written whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spkid.atomic import atomic_path
    from spkid.errors import DataError
    table = pa.table({"path": [str(f) for f, _ in files], "speaker": [s for _, s in files],
                      "embedding": pa.array(list(emb), pa.list_(pa.float32()))})
    try:
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:  # what no check beforehand can rule out: a full disk, a race
        raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None


def recording(path: Path) -> Path:
    """`path` if it names one recording; a folder or a missing file is refused by name."""
    from spkid.errors import DataError
    if path.is_dir():
        raise DataError(f"{path}: is a folder (verify compares two recordings)")
    if not path.is_file():
        raise DataError(f"{path}: not found")
    return path


def audio_inputs(inputs) -> list[tuple[Path, str | None]]:
    """(file, speaker) pairs of files and folders given on a command line: folders are
    searched recursively and the first folder level below a given folder names the speaker."""
    from spkid.audio import AUDIO_SUFFIXES
    from spkid.errors import DataError
    from spkid.sources.audio_dir import find_audio
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = find_audio(item)
            if not files:
                raise DataError(f"{item}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
            found += [(item / f, f.split("/")[0] if "/" in f else None) for f in files]
        elif item.is_file():
            found.append((item, None))
        else:
            raise DataError(f"{item}: no such file or folder")
    return found
