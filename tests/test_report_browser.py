"""The report in a real browser: headless Chromium (Debian's package) opens
metrics/report.html from disk, every picture loads, and no request leaves the machine.
Skipped, saying why, where Chromium or Playwright is missing; CI installs both."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from spkid.report import evaluation_plots, training_curves
from spkid.report.page import render_report
from spkid.scoring.evaluation import verification

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render_in_chromium(page_file: Path, screenshot: Path) -> tuple[list, list[str]]:
    """([complete, naturalWidth, naturalHeight] per <img>, every URL the page requested)."""
    from playwright.sync_api import sync_playwright
    requests: list[str] = []
    with sync_playwright() as pw:
        # --no-sandbox: CI and these machines run as root, where Chromium's sandbox refuses.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return images, requests


def make_report(folder: Path) -> Path:
    """A report with every picture the pipeline draws, from seeded arrays."""
    rng = np.random.default_rng(0)
    curves, metrics = {}, {}
    for role in ("val", "test", "verify"):
        labels = (np.arange(600) % 5 == 0).astype(np.int64)
        scores = np.where(labels == 1, rng.normal(0.6, 0.12, 600), rng.normal(0.1, 0.15, 600))
        metrics[role], curves[role] = verification(scores, labels)
        metrics[role].update(accuracy_top1=0.9, accuracy_top5=1.0)
    true = np.repeat(np.arange(8), 6)
    predicted = np.where(np.arange(48) % 7 == 0, (true + 1) % 8, true)
    emb = rng.normal(size=(48, 16)) + 3 * np.eye(8, 16)[true]
    pairs = evaluation_plots.evaluation_plots(folder, curves, metrics, val_embeddings=emb, val_true=true,
                                   val_predicted=predicted,
                                   speaker_names=[f"spk{k}" for k in range(8)], seed=0)
    steps = np.arange(1, 11) * 100.0
    training_curves.training_curves({"train/loss": (steps, 3 / np.sqrt(steps)), "lr": (steps, 1e-3 / steps),
                           "val/accuracy": (steps, 1 - 1 / np.sqrt(steps))},
                          folder / "training.png", margin=0.2)
    images = [(folder / f"{n}.png", n) for n in ("training", "det", "scores", "embeddings",
                                                 "confusions")]
    page = folder / "report.html"
    page.write_text(render_report(metrics=metrics, train={"steps": 1000}, params={}, defaults={},
                                  lock=None, images=images, confusions=pairs))
    return page


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                    "chromium); CI installs it to run this test")
def test_report_renders_offline_in_chromium(tmp_path):
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[dev]')")
    page = make_report(tmp_path)
    images, requests = render_in_chromium(page, tmp_path / "screenshot.png")
    assert len(images) == 5
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
    left = [u for u in requests if not u.startswith(("file://", "data:"))]
    assert not left, f"the report asked the network for {left}"
    shot = tmp_path / "screenshot.png"
    assert shot.stat().st_size > 20_000  # a page with pictures, not a blank one
    if os.environ.get("SPKID_SCREENSHOT"):  # how docs/report.png is made
        shutil.copyfile(shot, os.environ["SPKID_SCREENSHOT"])
