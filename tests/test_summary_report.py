"""summary.html is one self-contained report (issue 29, item 3): pictures embedded as data URIs
(the ensemble's confusion matrix, every model's training curve), the versions, the config, the
data (clips per split and class), the per-class table, the ablation and the ensemble weights;
summary.md holds the same sections. The page is opened in a real headless browser (Debian's
chromium): it skips where chromium is missing, unless MGPIPE_REQUIRE_CHROMIUM=1 (CI), where it
fails."""

import base64
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from test_ensemble_weights import _classes_csv, known_run, weak_right

import mgpipe
from mgpipe import config as mgconfig
from mgpipe.learning.epochs import plot_history
from mgpipe.stages.ensemble import build_report

HISTORY = [{"epoch": e, "lr": 0.01, "train_loss": 2.0 / e, "train_top1_joint": 0.2 * e, "val_top1_joint": 0.15 * e,
            "val_top1": 0.15 * e} for e in (1, 2, 3)]


def report_run(tmp_path):
    """A fused member in two variants (an ablation), a joint member, their curves, a manifest
    and a config: every section of the summary."""
    files = known_run(tmp_path, {"rgb": weak_right, "pose": weak_right, "joint": weak_right})
    files["fused_plain"] = tmp_path / "fused_plain.csv"
    shutil.copy(files["fused_full"], files["fused_plain"])
    curves = {}
    for name in files:
        curves[name] = tmp_path / "models" / name / "curve.png"
        curves[name].parent.mkdir(parents=True)
        plot_history(HISTORY[: 1 if name == "joint" else 3], curves[name], name)
    scored = pd.read_csv(files["joint"])
    extra = pd.DataFrame({"clip_id": [f"r{i}" for i in range(6)], "split": "train", "label": [0, 0, 1, 1, 2, 2]})
    manifest = pd.concat([extra, scored[["clip_id", "split", "label"]]])
    manifest["video_id"] = manifest.clip_id
    manifest.to_csv(tmp_path / "clips.csv", index=False)
    run_config = mgconfig.without_output_options(mgconfig.defaults())   # as the ensemble rule passes it
    out = tmp_path / "ensemble"
    report = build_report(files, _classes_csv(tmp_path), out, members={"fused": 1.0, "joint": 1.0},
                          weights="search", variants_order=["full", "plain"], curves=curves,
                          manifest_csv=tmp_path / "clips.csv", run_config=run_config)
    return out, curves, report


def test_summary_html_embeds_its_pictures_and_names_what_ran(tmp_path):
    out, curves, report = report_run(tmp_path)
    page = (out / "summary.html").read_text()
    # no reference to another file or the network: every src/href is a data: URI
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]*)""", page, re.I)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs), [r[:40] for r in refs]
    assert "url(" not in page and "@import" not in page
    embedded = [base64.b64decode(r.split(",", 1)[1]) for r in refs]
    expected = [*(p.read_bytes() for p in curves.values()), (out / "confusion.png").read_bytes()]
    assert embedded == expected   # each model's curve, then the confusion matrix
    assert f"mgpipe {mgpipe.__version__}, torch {torch.__version__}" in page
    for heading in ("Data (clips per class and split)", "Models and ensemble (test split)", "Ensemble weights",
                    "Ablation of the fused network", "Per class (ensemble, test split)",
                    "Confusion matrix of the ensemble", "Training curves", "Config"):
        assert f"<h2>{heading}" in page, heading
    # the data: clips per class and split (g0: 2 train, 4 val, 3 test)
    assert "<th>class</th><th>train</th><th>val</th><th>test</th><th>total</th>" in page
    assert "<tr><td>g0</td><td>2</td><td>4</td><td>3</td><td>9</td></tr>" in page
    assert "<tr><td>all classes</td><td>6</td><td>12</td><td>9</td><td>27</td></tr>" in page
    assert "backend: openpose" in page and "keep_state" not in page   # the config, less output options
    assert "<td>full</td>" in page and "<td>plain</td>" in page      # the ablation's variants
    md = (out / "summary.md").read_text()
    for heading in ("Data (clips per class and split)", "Ensemble weights", "Ablation of the fused network",
                    "Per class", "Confusion matrix", "Training curves", "Config"):
        assert f"## {heading}" in md, heading
    assert "| g0 | 2 | 4 | 3 | 9 |" in md and "![joint](../models/joint/curve.png)" in md
    assert f"mgpipe {mgpipe.__version__}, torch {torch.__version__}" in md


def test_a_missing_curve_is_one_line(tmp_path):
    from mgpipe.io import InputError

    files = known_run(tmp_path, {"rgb": weak_right, "pose": weak_right, "joint": weak_right})
    with pytest.raises(InputError, match=r"nowhere/curve.png: training curve of model joint not found"):
        build_report(files, _classes_csv(tmp_path), tmp_path / "out", members={"joint": 1.0},
                     curves={"joint": tmp_path / "nowhere" / "curve.png"})


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    msg = "chromium not installed (apt-get install chromium): summary.html not opened in a browser"
    if os.environ.get("MGPIPE_REQUIRE_CHROMIUM") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def browser(*args, profile):
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=5000", *args]


def test_summary_html_renders_in_a_headless_browser(tmp_path):
    from PIL import Image

    out, curves, _ = report_run(tmp_path)
    page = out / "summary.html"
    # a copy that reports each image's decoded size into the DOM once loaded
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>document.body.setAttribute('data-sizes',"
                   "[...document.images].map(i=>i.naturalWidth+'x'+i.naturalHeight).join(' ')))</script></body>"))
    dom = subprocess.run(browser("--dump-dom", probe.as_uri(), profile=tmp_path / "p1"),
                         capture_output=True, text=True, timeout=180)
    sizes = re.search(r'data-sizes="([^"]*)"', dom.stdout)
    assert sizes, (dom.stdout[-500:], dom.stderr[-2000:])
    decoded = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split()]
    expected = [*(Image.open(p).size for p in curves.values()), Image.open(out / "confusion.png").size]
    assert decoded == expected   # every picture decoded by the browser, at its own size

    # moved away from its folder it keeps its pictures: the screenshot of a lone copy
    lone = tmp_path / "mailed" / "summary.html"
    lone.parent.mkdir()
    shutil.copy(page, lone)
    shot = tmp_path / "summary.png"
    subprocess.run(browser(f"--screenshot={shot}", "--window-size=1200,2400", lone.as_uri(), profile=tmp_path / "p2"),
                   capture_output=True, text=True, timeout=180, check=True)
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (2400, 1200)
    # the pictures' colours (the confusion matrix's blues, the curves' lines) are on the page:
    # text and table rules alone are black, grey and white
    colour = (image.max(axis=2) - image.min(axis=2)) > 60
    assert colour.sum() > 5000, colour.sum()
