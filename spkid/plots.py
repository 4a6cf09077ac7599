"""Pictures of a run, as PNG files: training curves, DET curves, score histograms, a 2-D
map of embeddings and the most confused speaker pairs. Each function takes plain arrays and
a file to write; the stages decide what to draw and where.

PNGs carry no timestamp or software tag, so the same data gives the same bytes and DVC
sees no change where there is none."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from spkid.atomic import atomic_path

FIGSIZE = (6.4, 4.0)
DPI = 100


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no screen on a cluster node; and no GUI toolkit import
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)


def read_curve(tsv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one dvclive metric file (columns timestamp, step, <name>)."""
    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return np.empty(0), np.empty(0)
    name = [k for k in rows[0] if k not in ("timestamp", "step")][0]
    return (np.array([float(r["step"]) for r in rows]),
            np.array([float(r[name]) for r in rows]))


def dvclive_curves(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every metric dvclive logged under `folder` (its plots/metrics), by name."""
    folder = Path(folder)
    return {tsv.relative_to(folder).with_suffix("").as_posix(): read_curve(tsv)
            for tsv in sorted(folder.rglob("*.tsv"))}


def training_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
                    margin: float | None = None) -> None:
    """Loss, accuracy (train and val), learning rate and margin by step, in four panels;
    `curves` maps dvclive names ("train/loss", "val/accuracy", "lr", "margin", ...) to
    (steps, values). A margin that was not scheduled (no "margin" curve) is drawn flat at
    `margin`. Missing curves leave their panel empty."""
    plt = _pyplot()
    if "margin" not in curves and margin is not None and "lr" in curves:
        curves = {**curves, "margin": (curves["lr"][0], np.full(len(curves["lr"][0]), margin))}
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 6.0), sharex=True)
    panels = [("loss", ["train/loss"]), ("accuracy", ["train/accuracy", "val/accuracy"]),
              ("learning rate", ["lr"]), ("margin", ["margin"])]
    for ax, (title, names) in zip(axes.flat, panels):
        for name in names:
            if name in curves and len(curves[name][0]):
                steps, values = curves[name]
                ax.plot(steps, values, marker="o" if name.startswith("val") else None,
                        markersize=3, label=name)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)


def det_curves(curves: dict[str, dict], path: Path) -> None:
    """DET curves (miss against false alarm on normal-deviate axes, as usual for DET) of
    several roles, each with its EER point marked. `curves[role]` holds "fpr", "fnr" lists
    and "eer" (a fraction)."""
    from scipy.stats import norm
    plt = _pyplot()
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
    _save(fig, path)


def score_histograms(roles: dict[str, dict], path: Path) -> None:
    """Target and non-target score histograms per role, side by side, with the EER
    threshold. `roles[role]` holds "bins", "target", "nontarget" (counts) and "threshold"."""
    plt = _pyplot()
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
    _save(fig, path)


def embedding_map(embeddings: np.ndarray, speakers: list[str], path: Path, *, seed: int,
                  max_speakers: int = 30) -> None:
    """A seeded t-SNE map of embeddings coloured by speaker (the first `max_speakers`
    speakers in sorted order, so the picture stays readable)."""
    from sklearn.manifold import TSNE
    plt = _pyplot()
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
    _save(fig, path)


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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    labels = [f"{p['speakers'][0]} / {p['speakers'][1]}" for p in pairs][::-1]
    ax.barh(range(len(pairs)), [p["errors"] for p in pairs][::-1], color="tab:orange")
    ax.set_yticks(range(len(pairs)), labels, fontsize=7)
    ax.set_xlabel(f"{role} utterances given the other speaker")
    ax.set_title("most confused speaker pairs" if pairs else "no confusions")
    fig.tight_layout()
    _save(fig, path)


def evaluation_plots(folder: Path, curves: dict[str, dict | None], report: dict, *,
                     val_embeddings: np.ndarray, val_true: np.ndarray, val_predicted: np.ndarray,
                     speaker_names: list[str], seed: int, top_n: int = 10) -> list[dict]:
    """Every picture of `evaluate` into `folder` (det.png, scores.png, embeddings.png,
    confusions.png) from the DET curves with histograms that spkid.evaluation returns per
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
