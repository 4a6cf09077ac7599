"""One self-contained HTML page per run: headline metrics, the params that differ from
the defaults, the data version, every picture (inline, as data: URIs) and the most confused
speakers. It loads nothing from anywhere, so it opens offline, from a mail attachment or a
cluster's file browser alike."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from spkid.core.roles import unseen_roles

SCORES = (("raw cosine", None), ("mean subtracted", "mean_sub"), ("AS-norm", "asnorm"))
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def changed_params(params: dict, defaults: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key, value, default) of every leaf that differs from the defaults, in file order."""
    out = []
    for key, value in params.items():
        name, default = f"{prefix}{key}", defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(value, dict):
            out += changed_params(value, default if isinstance(default, dict) else {}, f"{name}.")
        elif value != default:
            out.append((name, value, default))
    return out


def data_version(lock: dict | None) -> list[tuple[str, str]]:
    """(output, md5) of the data outputs dvc.lock records: what the metrics were computed on."""
    found = []
    for stage in ("download", "features", "index"):
        for out in ((lock or {}).get("stages", {}).get(stage, {}).get("outs") or []):
            found.append((out["path"], out.get("md5", "?")))
    return found


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _headline(metrics: dict) -> str:
    rows = []
    for role in [r for r in ("val", "test") if r in metrics] + unseen_roles(metrics):
        m = metrics[role]
        for label, key in SCORES:
            s = m if key is None else m.get(key)
            if s is None:
                continue
            first = key is None
            rows.append(
                f"<tr><td class=l>{role if first else ''}</td><td class=l>{label}</td>"
                f"<td>{_num(m.get('accuracy_top1')) if first else ''}</td>"
                f"<td>{_num(m.get('accuracy_top5')) if first else ''}</td>"
                f"<td>{_pct(s.get('eer'))}</td><td>{_interval(s.get('eer_ci95'))}</td>"
                f"<td>{_num(s.get('min_dcf_p01'))}</td>"
                f"<td>{_num(s.get('min_dcf_p05'))}</td><td>{s.get('trials', '–'):,}</td></tr>")
    return ("<table><tr><th class=l>role</th><th class=l>score</th><th>top-1</th><th>top-5</th>"
            "<th>EER</th><th>EER 95 % interval</th><th>minDCF p0.01</th><th>minDCF p0.05</th><th>trials</th></tr>"
            + "".join(rows) + "</table>")


def _interval(ci: dict | None) -> str:
    return "–" if not ci else f"{_pct(ci['low'])} – {_pct(ci['high'])}"


def _shipped(metrics: dict) -> str:
    """Which threshold the exported model decides with, and whether it transfers."""
    shipped = metrics.get("shipped") or {}
    if shipped.get("eer_threshold") is None:
        return "<p>No threshold is shipped: no role had both kinds of trial.</p>"
    text = (f"The exported model decides at {shipped['eer_threshold']:.4f}, the EER threshold "
            f"of the {shipped['score']} score on {shipped['role']}")
    if shipped["seen_speakers"]:
        text += (": trials between training speakers, whose EER point need not be that of "
                 "speakers the model never saw, so expect other error rates than the EER on "
                 "new speakers (give data.verify_dir or evaluate.trials for a threshold "
                 "from unseen speakers)")
    else:
        text += ", speakers the model never saw, as `spkid verify` will be used"
    text += "."
    c = (metrics.get("verify") or {}).get("calibration")
    if c:
        fitted = (f"the trial list {c['fit_list']} ({c['fit_trials']:,} trials) and measured "
                  f"on all of verify's" if "fit_list" in c else
                  f"{c['fit_speakers']} unseen speakers and measured on {c['speakers']} others")
        text += (f" Its {c['score']} scores are calibrated to log-likelihood ratios on "
                 f"{fitted} ({c['trials']:,} trials): Cllr {c['cllr']:.3f} bits (best monotone "
                 f"calibration {c['min_cllr']:.3f}); actual DCF p0.01 {c['act_dcf_p01']:.3f} "
                 f"against the minimum {c['min_dcf_p01']:.3f}.")
    return f"<p>{html.escape(text)}</p>"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th class=l>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=l>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_report(*, metrics: dict, train: dict, params: dict, defaults: dict,
                  lock: dict | None, images: list[tuple[Path, str]], confusions: list[dict]) -> str:
    """The page as a string."""
    changed, version = changed_params(params, defaults), data_version(lock)
    training = (f"{train.get('steps', '?')} steps; best val accuracy "
                f"{_num(train.get('best_val_accuracy'))} at step {train.get('best_step', '?')}; "
                f"{train.get('parameters', 0):,} parameters; "
                f"{train.get('world_size', 1)} rank(s) x batch {train.get('batch_per_rank', '?')}"
                f" = {train.get('effective_batch', '?')} crops a step at lr {train.get('lr', float('nan')):g}")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>spkid report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>spkid run report</h1>",
        "<h2>Headline metrics</h2>", _headline(metrics), _shipped(metrics),
        f"<p>Training: {html.escape(training)}.</p>",
        "<h2>Params that differ from the defaults</h2>",
        _table(["param", "value", "default"], [[k, v, d] for k, v, d in changed])
        if changed else "<p>None: this is the default pipeline.</p>",
        "<h2>Data version</h2>",
        _table(["output", "md5 (dvc.lock)"], version) if version
        else "<p>No dvc.lock yet (the stages ran outside <code>dvc repro</code>).</p>",
        "<h2>Pictures</h2>",
        *(_image(path, caption) for path, caption in images),
        "<h2>Most confused speakers (val)</h2>",
        _table(["speakers", "errors", "first taken for second", "second taken for first"],
               [[" / ".join(c["speakers"]), c["errors"], c["a_as_b"], c["b_as_a"]]
                for c in confusions]) if confusions else "<p>No val utterance was misclassified.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
