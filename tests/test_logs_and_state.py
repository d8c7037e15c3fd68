"""What a training leaves to read and on disk: log lines instead of progress bars off a terminal,
TensorBoard events (train.tensorboard), a curve for any length, and no state once final
(train.keep_state)."""

import sys

import pandas as pd
import pytest
import yaml
from conftest import kill_in_epoch_two

from mgpipe import config as mgconfig
from mgpipe import runtime
from mgpipe.io import InputError
from mgpipe.learning.epochs import plot_history
from mgpipe.stages import train as train_mod


def tiny_config(epochs=1, **train):
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    cfg["pose_model"]["optim"].update(epochs=epochs)
    cfg.setdefault("train", {}).update(train)
    return mgconfig.validate(cfg)


def train(cfg, stores, out, progress=False, name="joint"):
    return train_mod.run(name, cfg, manifest_csv=stores / "clips.csv", classes_csv=stores / "classes.csv",
                         frames_h5=stores / "frames.h5", keypoints_h5=stores / "keypoints.h5",
                         out_dir=out, state_dir=out.parent / "state" / name, progress=progress)


# ---- progress: lines in a log file, a bar on a terminal -----------------------------------------

def test_progress_off_a_terminal_is_one_line_per_tenth(caplog):
    caplog.set_level("INFO", logger="mgpipe.progress")
    assert not sys.stderr.isatty()  # (pytest captures stderr)
    items = list(runtime.progress(range(95), desc="decode", unit="video"))
    assert items == list(range(95))
    lines = [r.getMessage() for r in caplog.records if r.name == "mgpipe.progress"]
    assert len(lines) == 10, lines          # 9 tenths on the way and the end
    assert lines[0].startswith("decode: 10% (10/95 video) in ")
    assert lines[-1].startswith("decode: 100% (95/95 video) in ")
    assert not any("\r" in line for line in lines)
    caplog.clear()
    with runtime.progress(total=3, desc="pose", unit="clip") as bar:   # the update() form
        for _ in range(3):
            bar.update(1)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == \
        ["pose: 33% (1/3 clip)", "pose: 66% (2/3 clip)", "pose: 100% (3/3 clip)"]
    caplog.clear()
    list(runtime.progress(range(50), desc="quiet", enabled=False))
    list(runtime.progress(range(50), desc="epoch", lines=False))
    assert not caplog.records


def test_a_long_epoch_gets_lines_once_it_has_run_a_minute(caplog, monkeypatch):
    """quiet_seconds (a training epoch's): a loop shorter than that writes nothing, not even its
    end; a longer one writes a line at each tenth reached after it, and its end."""
    clock = {"now": 0.0}
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock["now"])
    caplog.set_level("INFO", logger="mgpipe.progress")

    def epoch(seconds_per_step):
        for _ in runtime.progress(range(20), desc="swin epoch 1/8", unit="batch", quiet_seconds=60):
            clock["now"] += seconds_per_step
        lines = [r.getMessage().split(" in ")[0] for r in caplog.records]
        caplog.clear()
        return lines

    assert epoch(2.0) == []          # 40 s: the epoch line says it all
    assert epoch(6.0) == [f"swin epoch 1/8: {p}% ({p // 5}/20 batch)" for p in range(50, 101, 10)]


def test_progress_on_a_terminal_is_a_bar(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(runtime, "stderr_is_terminal", lambda: True)
    bar = runtime.progress(range(3), desc="decode")
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]


def test_no_stage_draws_its_own_bar():
    """Every long stage goes through runtime.progress (one behaviour for all)."""
    from pathlib import Path

    users = [p.name for p in Path("mgpipe").rglob("*.py") if "tqdm" in p.read_text() and p.name != "runtime.py"]
    assert users == []


def test_a_training_log_file_holds_lines(demo_stores, tmp_path):
    """The command as the workflow runs it (stderr into the rule's log): no carriage returns,
    one line per epoch."""
    import json
    import subprocess

    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    cfg["pose_model"]["optim"]["epochs"] = 2
    log_file = tmp_path / "train_joint.log"
    with open(log_file, "w") as err:
        subprocess.run([sys.executable, "-m", "mgpipe", "train", "joint", "--config-json", json.dumps(cfg),
                        "--manifest", str(demo_stores / "clips.csv"), "--classes", str(demo_stores / "classes.csv"),
                        "--keypoints", str(demo_stores / "keypoints.h5"), "--out-dir", str(tmp_path / "m"),
                        "--state-dir", str(tmp_path / "state" / "joint"), "--threads", "1"],
                       stderr=err, check=True, timeout=600)
    text = log_file.read_text()
    assert "\r" not in text and max(map(len, text.splitlines())) < 400
    epochs = [line for line in text.splitlines() if " INFO mgpipe.stages.train: epoch=" in line]
    assert [line.split("epoch=")[1].split()[0] for line in epochs] == ["1", "2"]
    assert "removed the finished training's state" in text


# ---- TensorBoard, curves -----------------------------------------------------------------------

def test_tensorboard_events_hold_every_epoch(demo_stores, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(epochs=2, tensorboard=True)
    train(cfg, demo_stores, tmp_path / "m")
    events = EventAccumulator(str(tmp_path / "m" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    print("TensorBoard scalar tags:", sorted(tags))
    assert {"train/loss", "lr", "val/top1", "val/top1_joint", "train/top1_joint", "time/epoch_seconds"} <= tags
    history = pd.read_csv(tmp_path / "m" / "log.csv")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2]
    assert [round(e.value, 5) for e in loss] == [round(v, 5) for v in history.train_loss]


def test_tensorboard_without_the_package_is_one_line(demo_stores, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # import fails
    with pytest.raises(InputError, match=r"train.tensorboard is true but the tensorboard package is not "
                                         r"installed: pip install 'mgpipe\[tensorboard\]'"):
        train(tiny_config(tensorboard=True), demo_stores, tmp_path / "m")
    assert not (tmp_path / "m" / "model.pt").exists()


def test_output_options_stay_out_of_the_fingerprint_and_the_params():
    """Turning TensorBoard on or keeping the state reruns nothing: the rules' params drop them."""
    from mgpipe.learning import specs

    plain, other = tiny_config(), tiny_config(tensorboard=True, keep_state=True)
    for name in ("joint", "rgb"):
        a, b = (mgconfig.without_output_options(specs.get(name).settings(c, "test")) for c in (plain, other))
        assert a == b and "tensorboard" not in a["train"] and "keep_state" not in a["train"]


def test_a_one_epoch_curve_shows_its_points(tmp_path):
    import numpy as np
    from PIL import Image

    row = {"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_top1_joint": 0.4, "val_top1_joint": 0.3, "val_top1": 0.3}
    plot_history([row], tmp_path / "one.png", "joint")
    image = np.asarray(Image.open(tmp_path / "one.png").convert("RGB")).astype(int)
    # coloured (non-grey) pixels: the legend's handles alone give ~150 (a curve without markers),
    # the markers of the points add as many again (axes and text are black/grey)
    colour = (image.max(axis=2) - image.min(axis=2)) > 60
    assert colour.sum() > 300, colour.sum()


# ---- state/ once the training is final ---------------------------------------------------------

def test_state_is_removed_when_final_and_a_killed_run_still_resumes(demo_stores, tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    cfg = tiny_config(epochs=2)
    state = tmp_path / "state" / "joint"
    revive = kill_in_epoch_two(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, demo_stores, tmp_path / "m")
    assert (state / "last.pt").exists() and not (tmp_path / "m" / "model.pt").exists()  # kept for the resume
    revive()
    train(cfg, demo_stores, tmp_path / "m")
    assert "joint: resuming after epoch 1" in caplog.text
    assert list(pd.read_csv(tmp_path / "m" / "log.csv").epoch) == [1, 2]
    assert (tmp_path / "m" / "model.pt").exists()
    assert not state.exists() and not state.parent.exists()   # nothing else was in state/
    assert "removed the finished training's state" in caplog.text


def test_keep_state_keeps_it(demo_stores, tmp_path):
    train(tiny_config(keep_state=True), demo_stores, tmp_path / "m")
    assert (tmp_path / "state" / "joint" / "last.pt").exists()
    assert (tmp_path / "state" / "joint" / "best.pt").exists()
