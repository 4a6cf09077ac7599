"""A trained model on the inputs evaluate and export score: stored views through the one
embedding loop (spkid.models.embedding), and recordings decoded and turned into log-mels
with the model's own feature params (unseen speakers; `spkid embed` through
spkid.serve.embedder)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from spkid.core import distributed
from spkid.core.device import pick_device
from spkid.data.audio import audio_info, read_audio
from spkid.data.views import real_speakers
from spkid.features.logmel import LogMelExtractor
from spkid.features.store import FeatureStore, open_features
from spkid.features.vad import SpeechDetector, detector_for
from spkid.models.embedding import ViewOutputs, embed_crops, embed_views
from spkid.models.folder import load_model_dir


class ModelWithConfig:
    """What Scoring and AudioEmbedder share: a model (`model`, `device`) and its model.json
    (`config`), whose feature params turn raw audio into the log-mels it was trained on.
    Under torchrun (`rank` of `world`) every rank embeds its share of the inputs and every
    rank gets all the embeddings; the calls must then come in the same order on every rank."""
    rank: int = 0
    world: int = 1

    @property
    def precomputed(self) -> bool:
        """Trained on a data set's own features, which spkid's log-mels only approximate."""
        return bool(self.config["features"].get("precomputed"))

    def embed_recordings(self, paths, batch_frames: int, *, spans=None,
                         progress: bool = False, vad: bool | None = None) -> np.ndarray:
        """Raw embeddings of whole recordings (or their `spans`), in order, trimmed to their
        speech as `speech_detector(vad)` says."""
        emb = embed_audio_files(self.model, LogMelExtractor.from_config(self.config["features"]),
                                paths, batch_frames, self.device, spans=spans,
                                progress=progress and self.rank == 0,
                                share=(self.rank, self.world), detector=self.speech_detector(vad))
        return distributed.add_up(emb, self.world)

    def speech_detector(self, vad: bool | None = None) -> SpeechDetector | None:
        """The VAD applied to recordings before their log-mels: by default (`vad` None) the
        one the model's training features were trimmed with (features.vad), so a model
        hears audio as it was trained on; True asks for one anyway, False for none."""
        trained = detector_for(self.config["features"])
        if vad is None:
            return trained
        return (trained or SpeechDetector()) if vad else None


@dataclass
class Scoring(ModelWithConfig):
    """What scoring stored features with a trained model needs: the model, its config
    (model.json), the device it runs on and the feature store."""
    model: torch.nn.Module
    config: dict
    device: torch.device
    store: FeatureStore
    rank: int = 0
    world: int = 1

    @classmethod
    def open(cls, model_dir, features_dir, device: str | torch.device, rank: int = 0,
             world: int = 1) -> "Scoring":
        where = device if isinstance(device, torch.device) else pick_device(device)
        model, config = load_model_dir(model_dir, where)
        return cls(model, config, where, open_features(features_dir), rank, world)

    def embed(self, views, batch_frames: int, *, labels=None) -> ViewOutputs:
        out = embed_views(self.model, self.store, views, batch_frames, self.device, labels=labels,
                          classes=real_speakers(self.config["speakers"]),
                          share=(self.rank, self.world))
        return ViewOutputs(*(distributed.add_up(a, self.world)
                             for a in (out.embeddings, out.predicted, out.true_rank)))


def embed_audio_files(model, extractor, paths, batch_frames: int, device, *,
                      spans=None, extract_batch: int = 32, chunk_frames: int | None = None,
                      progress: bool = False, share: tuple[int, int] = (0, 1),
                      detector: SpeechDetector | None = None) -> np.ndarray:
    """(len(paths), embedding_dim) float32 embeddings of whole recordings, in the order of
    `paths`: decode (spkid.data.audio.read_audio), log-mels with `extractor`, then the model's
    embedding on batches of similar length with padding masks, as for val/test views.
    `spans`, one (start, end) in seconds per path (None = from the beginning / to the end),
    embeds those parts of the recordings instead (a Kaldi folder's segments). An entry of
    `paths` may also be a 1-D numpy array: mono samples already at the extractor's rate
    (spkid.SpeakerModel's input), embedded exactly as a file holding them would be.

    Files are handled in duration order (read from the headers), a chunk of about
    `chunk_frames` frames at a time (default 16 * batch_frames), so memory stays bounded
    whatever the number of files. A file that cannot be decoded raises DataError naming it.
    `share` = (rank, world): only every world-th chunk is embedded, the other rows stay zero
    (as spkid.models.embedding.embed_crops). `detector` (spkid.features.vad) keeps only the
    speech of each recording, as features.vad does to training audio.
    """
    paths = [p if isinstance(p, np.ndarray) else str(p) for p in paths]
    device = torch.device(device)
    dim = model.embedding_dim
    out = np.zeros((len(paths), dim), np.float32)
    if not paths:
        return out
    spans = [(None, None)] * len(paths) if spans is None else list(spans)
    frames_per_s = extractor.sample_rate / extractor.hop_length
    est = np.array([((end if end is not None else recording_seconds(p, extractor.sample_rate))
                     - (start or 0.0)) * frames_per_s + 1 for p, (start, end) in zip(paths, spans)])
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
    rank, world = share
    chunks = chunks[rank::world]

    bar = tqdm(total=sum(map(len, chunks)), desc="embed", unit="file", disable=not progress)
    try:
        for chunk in chunks:
            feats = []
            for s in range(0, len(chunk), extract_batch):
                waves = [_wave(paths[k], extractor.sample_rate, spans[k])
                         for k in chunk[s:s + extract_batch]]
                if detector is not None:
                    waves = [detector(w, extractor.sample_rate, _name(paths[k]))
                             for w, k in zip(waves, chunk[s:s + extract_batch])]
                feats += extractor(waves)
            store = FeatureStore.from_matrices([str(k) for k in chunk], feats)
            at = np.arange(len(chunk))
            out[chunk] = embed_crops(model, store, at, np.zeros(len(chunk), np.int64),
                                     store.length, batch_frames, device,
                                     predict=False).embeddings
            bar.update(len(chunk))
    finally:
        bar.close()
    return out


def _name(source) -> str:
    return "an array of samples" if isinstance(source, np.ndarray) else str(source)


def recording_seconds(source, sample_rate: int) -> float:
    """Length of a recording: its header's for a file, its samples' for an array."""
    return len(source) / sample_rate if isinstance(source, np.ndarray) else audio_info(source)[0]


def _wave(source, sample_rate: int, span: tuple) -> np.ndarray:
    """Mono samples at `sample_rate` of a file (or its `span`), or the array itself."""
    if isinstance(source, np.ndarray):
        return source
    return read_audio(source, sample_rate, *span)
