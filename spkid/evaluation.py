"""Scoring a set of labelled utterances: closed-set accuracy from the classifier, and
open-set verification (EER, minDCF) from cosine scores of embedding pairs."""

from __future__ import annotations

import numpy as np

from spkid import metrics
from spkid.score_norm import cosine_scores


def verification(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """(metrics, DET curve) for trial scores; metrics hold eer, min_dcf_p01/p05, trials."""
    eer, threshold = metrics.eer(scores, labels)
    result = {"eer": eer, "eer_threshold": threshold,
              "min_dcf_p01": metrics.min_dcf(scores, labels, 0.01),
              "min_dcf_p05": metrics.min_dcf(scores, labels, 0.05),
              "trials": int(len(labels)), "target_trials": int(labels.sum())}
    return result, {**metrics.det_points(scores, labels), "hist": score_histogram(scores, labels)}


def score_histogram(scores: np.ndarray, labels: np.ndarray, bins: int = 80) -> dict:
    """Counts of target and non-target scores over [-1, 1] (cosine), for pictures."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    clipped = np.clip(scores, -1.0, 1.0)
    return {"bins": edges.tolist(),
            "target": np.histogram(clipped[labels == 1], edges)[0].tolist(),
            "nontarget": np.histogram(clipped[labels == 0], edges)[0].tolist()}


def score_role(emb: np.ndarray, true_rank: np.ndarray, speaker_ids: np.ndarray, *, seed: int,
               nontarget_ratio: float, max_trials: int, norm=None) -> tuple[dict, dict | None]:
    """Accuracy (from each view's rank of its true class) plus verification over all
    same-speaker pairs and sampled different ones. An empty role has null metrics.
    `norm` (a spkid.score_norm.ScoreNorm) adds the normalised scores' metrics beside."""
    n = len(speaker_ids)
    out = {"utterances": int(n),
           "accuracy_top1": float(np.mean(true_rank < 1)) if n else None,
           "accuracy_top5": float(np.mean(true_rank < 5)) if n else None}
    i, j, labels = metrics.sample_trials(list(speaker_ids), seed, nontarget_ratio, max_trials)
    result, det = score_trials(emb, i, j, labels, norm)
    out.update(result)
    return out, det


def score_trials(emb: np.ndarray, i: np.ndarray, j: np.ndarray, labels: np.ndarray, norm=None
                 ) -> tuple[dict, dict | None]:
    """Verification metrics of given trials; null metrics when one kind of trial is missing.
    With `norm` (spkid.score_norm.ScoreNorm), the metrics of each normalised score go
    beside the raw cosine ones, under its name ("mean_sub", "asnorm"); the DET curve is
    the raw one."""
    labels = np.asarray(labels, np.int64)
    result, det = _verify_scores(cosine_scores(emb, i, j), labels)
    if norm is not None:
        for name, scores in norm.scores(emb, i, j).items():
            result[name] = _verify_scores(scores, labels)[0]
    return result, det


def _verify_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict | None]:
    if labels.sum() == 0 or labels.sum() == len(labels):
        # Verification needs both kinds of trial; say so instead of inventing a number.
        return {"eer": None, "min_dcf_p01": None, "min_dcf_p05": None,
                "trials": int(len(labels)), "target_trials": int(labels.sum())}, None
    return verification(scores, labels)


# --- raw audio -> embeddings ---------------------------------------------------------------

def extractor_for_model(features: dict):
    """The LogMelExtractor a model's inputs were made with (model.json["features"])."""
    from spkid.features import LogMelExtractor
    return LogMelExtractor(features["sample_rate"], features["n_mels"], features["n_fft"],
                           features["hop_length"], features["f_min"], features.get("f_max"))


def embed_audio_files(model, extractor, paths, batch_frames: int, device, *,
                      extract_batch: int = 32, chunk_frames: int | None = None,
                      progress: bool = False) -> np.ndarray:
    """(len(paths), embedding_dim) float32 embeddings of whole recordings, in the order of
    `paths`: decode (spkid.audio.read_audio), log-mels with `extractor`, then the model's
    embedding on batches of similar length with padding masks, as for val/test views.

    Files are handled in duration order (read from the headers), a chunk of about
    `chunk_frames` frames at a time (default 16 * batch_frames), so memory stays bounded
    whatever the number of files. A file that cannot be decoded raises DataError naming it.
    """
    import torch
    from tqdm import tqdm

    from spkid.audio import audio_info, read_audio
    from spkid.batching import view_batches
    from spkid.shards import FeatureStore
    from spkid.device import autocast

    paths = [str(p) for p in paths]
    device = torch.device(device)
    dim = model.embedding_dim
    out = np.zeros((len(paths), dim), np.float32)
    if not paths:
        return out
    frames_per_s = extractor.sample_rate / extractor.hop_length
    est = np.array([audio_info(p)[0] * frames_per_s + 1 for p in paths])
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
                waves = [read_audio(paths[k], extractor.sample_rate)
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
