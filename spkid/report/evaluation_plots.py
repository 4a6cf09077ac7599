"""The pictures of `evaluate`: DET curves, score histograms, a t-SNE map of embeddings and
the most confused speaker pairs. Each function takes plain arrays and a file to write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn.manifold import TSNE

from spkid.report.pictures import FIGSIZE, pyplot, save


def det_curves(curves: dict[str, dict], path: Path) -> None:
    """DET curves (miss against false alarm on normal-deviate axes, as usual for DET) of
    several roles, each with its EER point marked. `curves[role]` holds "fpr", "fnr" lists
    and "eer" (a fraction)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ticks = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    clip = lambda p: norm.ppf(np.clip(np.asarray(p, float), 5e-4, 0.5))  # noqa: E731
    for role, c in curves.items():
        line, = ax.plot(clip(c["fpr"]), clip(c["fnr"]), label=f"{role} (EER {100 * c['eer']:.2f} %)")
        ax.plot(clip([c["eer"]]), clip([c["eer"]]), "o", color=line.get_color())
    ax.plot(clip(ticks), clip(ticks), ":", color="grey", linewidth=0.8)
    ax.set_xticks(clip(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(clip(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlim(clip(5e-4), clip(0.5))
    ax.set_ylim(clip(5e-4), clip(0.5))
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title("DET")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save(fig, path)


def score_histograms(roles: dict[str, dict], path: Path) -> None:
    """Target and non-target score histograms per role, side by side, with the EER
    threshold. `roles[role]` holds "bins", "target", "nontarget" (counts) and "threshold"."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(roles), figsize=(4.2 * len(roles), 3.6), squeeze=False)
    for ax, (role, h) in zip(axes[0], roles.items()):
        bins = np.asarray(h["bins"])
        for name, color in (("nontarget", "tab:red"), ("target", "tab:blue")):
            counts = np.asarray(h[name], float)
            density = counts / max(counts.sum(), 1) / np.diff(bins)
            ax.stairs(density, bins, fill=True, alpha=0.45, color=color,
                      label=f"{name.replace('nontarget', 'non-target')} ({int(counts.sum()):,})")
        if h.get("threshold") is not None:
            ax.axvline(h["threshold"], color="black", linestyle="--", linewidth=1,
                       label=f"EER threshold {h['threshold']:.2f}")
        ax.set_title(role)
        ax.set_xlabel("cosine score")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    save(fig, path)


def embedding_map(embeddings: np.ndarray, speakers: list[str], path: Path, *, seed: int,
                  max_speakers: int = 30) -> None:
    """A seeded t-SNE map of embeddings coloured by speaker (the first `max_speakers`
    speakers in sorted order, so the picture stays readable)."""
    plt = pyplot()
    chosen = sorted(set(speakers))[:max_speakers]
    shown = set(chosen)
    keep = np.array([s in shown for s in speakers], dtype=bool)
    emb = np.asarray(embeddings, np.float64)[keep]
    names = [s for s, k in zip(speakers, keep) if k]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    if len(emb) >= 3:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        xy = TSNE(n_components=2, perplexity=min(30.0, (len(emb) - 1) / 3), init="pca",
                  random_state=seed).fit_transform(emb)
        cmap = plt.get_cmap("tab20" if len(chosen) <= 20 else "hsv", len(chosen))
        for k, spk in enumerate(chosen):
            idx = [i for i, n in enumerate(names) if n == spk]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=14, color=cmap(k), label=spk)
        if len(chosen) <= 20:
            ax.legend(fontsize=6, ncol=2, loc="best", markerscale=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"val embeddings, t-SNE ({len(chosen)} speakers, {len(emb)} utterances)")
    fig.tight_layout()
    save(fig, path)


def confused_pairs(true: np.ndarray, predicted: np.ndarray, names: list[str],
                   top_n: int = 10) -> list[dict]:
    """The speaker pairs most often mistaken for each other (either way round), most first:
    [{"speakers": [a, b], "errors": n, "a_as_b": .., "b_as_a": ..}]."""
    counts: dict[tuple[int, int], list[int]] = {}
    for t, p in zip(np.asarray(true).tolist(), np.asarray(predicted).tolist()):
        if t != p:
            a, b = min(t, p), max(t, p)
            counts.setdefault((a, b), [0, 0])[0 if t == a else 1] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-sum(kv[1]), kv[0]))[:top_n]
    return [{"speakers": [names[a], names[b]], "errors": sum(c), "a_as_b": c[0], "b_as_a": c[1]}
            for (a, b), c in ranked]


def confusion_chart(pairs: list[dict], path: Path, role: str = "val") -> None:
    """A bar per confused pair (most confused on top)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    labels = [f"{p['speakers'][0]} / {p['speakers'][1]}" for p in pairs][::-1]
    ax.barh(range(len(pairs)), [p["errors"] for p in pairs][::-1], color="tab:orange")
    ax.set_yticks(range(len(pairs)), labels, fontsize=7)
    ax.set_xlabel(f"{role} utterances given the other speaker")
    ax.set_title("most confused speaker pairs" if pairs else "no confusions")
    fig.tight_layout()
    save(fig, path)


def evaluation_plots(folder: Path, curves: dict[str, dict | None], report: dict, *,
                     val_embeddings: np.ndarray, val_true: np.ndarray, val_predicted: np.ndarray,
                     speaker_names: list[str], seed: int, top_n: int = 10) -> list[dict]:
    """Every picture of `evaluate` into `folder` (det.png, scores.png, embeddings.png,
    confusions.png) from the DET curves with histograms that spkid.scoring.evaluation returns per
    role, the roles' metrics, and val's embeddings and predictions. Returns the most
    confused pairs."""
    folder = Path(folder)
    scored = {r: c for r, c in curves.items() if c is not None}
    det_curves({r: {**c, "eer": report[r]["eer"]} for r, c in scored.items()}, folder / "det.png")
    score_histograms({r: {**c["hist"], "threshold": report[r].get("eer_threshold")}
                      for r, c in scored.items()} or {"none": _EMPTY_HIST}, folder / "scores.png")
    names = [speaker_names[k] for k in np.asarray(val_true).tolist()]
    embedding_map(val_embeddings, names, folder / "embeddings.png", seed=seed)
    pairs = confused_pairs(val_true, val_predicted, speaker_names, top_n)
    confusion_chart(pairs, folder / "confusions.png")
    return pairs


_EMPTY_HIST = {"bins": [-1.0, 1.0], "target": [0], "nontarget": [0], "threshold": None}
