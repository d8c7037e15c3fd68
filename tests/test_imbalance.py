"""Class imbalance (mgpipe/learning/imbalance.py): class-aware sampling, the class-balanced loss and
test-time logit adjustment, each checked by hand; the settings in every model's fingerprint."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from mgpipe import config as mgconfig
from mgpipe.io import InputError
from mgpipe.learning import imbalance, specs
from mgpipe.learning.inference import predict
from mgpipe.learning.samples import make_loader
from mgpipe.models.single import build_single
from mgpipe.stages import train as train_mod
from mgpipe.stages.score import score_model

# a hand-made imbalanced training split: 64, 16 and 4 clips of classes 0, 1 and 2
COUNTS = (64, 16, 4)


class LabelledClips(torch.utils.data.Dataset):
    """The label and index of each row of a manifest (what the sampler sees of a split)."""

    def __init__(self, manifest: pd.DataFrame):
        self.clips = manifest.reset_index(drop=True)
        self.labels = self.clips.label.to_numpy()

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return {"label": int(self.labels[i]), "index": i}

    def to_device(self, batch, device, pose_dtype=None):
        return batch


def imbalanced_manifest() -> pd.DataFrame:
    labels = [k for k, n in enumerate(COUNTS) for _ in range(n)]
    return pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(len(labels))], "label": labels, "split": "train"})


def drawn(mode: str, seed: int, epochs: int) -> np.ndarray:
    data = LabelledClips(imbalanced_manifest())
    weights = imbalance.sample_weights(data.labels, len(COUNTS), mode)
    out = []
    for epoch in range(epochs):
        loader = make_loader(data, 16, device="cpu", shuffle_seed=seed * 1000 + epoch, sample_weights=weights)
        out += [int(i) for batch in loader for i in batch["index"]]
    return np.array(out)


@pytest.mark.parametrize("mode, expected", [("sqrt", (8, 4, 2)), ("inverse", (1, 1, 1)), ("none", COUNTS)])
def test_sampling_draws_classes_in_proportion_to_n_to_the_power(mode, expected):
    # sqrt: class c is drawn with probability n_c * n_c^-0.5 = sqrt(n_c) (8:4:2); inverse: equally
    idx = drawn(mode, seed=0, epochs=300)
    labels = imbalanced_manifest().label.to_numpy()[idx]
    assert len(idx) == 300 * sum(COUNTS)          # the same number of samples per epoch
    share = np.bincount(labels, minlength=3) / len(labels)
    assert share == pytest.approx(np.array(expected) / sum(expected), abs=0.01)
    if mode == "none":                            # a permutation: every clip once per epoch
        assert sorted(idx[:sum(COUNTS)]) == list(range(sum(COUNTS)))


def test_sampling_is_deterministic_for_a_seed():
    assert np.array_equal(drawn("sqrt", seed=3, epochs=2), drawn("sqrt", seed=3, epochs=2))
    assert not np.array_equal(drawn("sqrt", seed=3, epochs=2), drawn("sqrt", seed=4, epochs=2))
    epochs = drawn("inverse", seed=3, epochs=2)
    assert not np.array_equal(epochs[:84], epochs[84:])   # each epoch its own draw


def test_class_balanced_weights_by_hand():
    # beta 0.9, n = 1, 10, 100: (1 - 0.9) / (1 - 0.9^n) = 1, 0.15353, 0.10000; over their mean
    raw = [1.0, 0.1 / (1 - 0.9 ** 10), 0.1 / (1 - 0.9 ** 100)]
    w = imbalance.class_balanced_weights([1, 10, 100], 0.9)
    assert w.tolist() == pytest.approx([r / (sum(raw) / 3) for r in raw], rel=1e-6)
    assert float(w.mean()) == pytest.approx(1.0)
    assert raw[1] == pytest.approx(0.153534, abs=1e-6)
    assert imbalance.class_balanced_weights([5, 50], 0.0).tolist() == [1.0, 1.0]   # beta 0: plain
    # a class without training clips counts as one clip: finite, the largest weight
    w0 = imbalance.class_balanced_weights([0, 1, 4], 0.999)
    assert torch.isfinite(w0).all() and w0[0] == w0[1] > w0[2]


def test_the_loss_takes_the_class_weights():
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))["pose_model"]["network"]
    model = build_single("pose", 4, 3, cfg)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 0.1], [0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 1])
    weights = torch.tensor([0.5, 1.0, 2.0])
    per_clip = -torch.log_softmax(logits, 1)[torch.arange(4), labels]
    by_hand = (weights[labels] * per_clip).sum() / weights[labels].sum()
    got = model.loss({"logits": logits}, labels, class_weights=weights)["loss"]
    assert float(got) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(model.loss({"logits": logits}, labels)["loss"]) == pytest.approx(float(per_clip.mean()), rel=1e-6)


def test_the_fused_network_weights_every_cross_entropy_term():
    from mgpipe.models.rgbpose import build_fused

    tiny = yaml.safe_load(open("tests/data/tiny.yaml"))
    arch = specs.get("fused_full").network(mgconfig.validate(tiny), (17, 19))
    model = build_fused(3, 17, arch["cfg"]).eval()   # eval: the prototype bank is not updated
    torch.manual_seed(0)
    out = {"rgb": torch.randn(4, 3), "pose": torch.randn(4, 3), "rgb_features": torch.randn(4, model.rgb_head.in_channels),
           "pose_features": torch.randn(4, model.pose_head.in_channels)}
    labels, weights = torch.tensor([0, 1, 2, 2]), torch.tensor([3.0, 1.0, 0.2])
    plain, weighted = model.loss(out, labels), model.loss(out, labels, class_weights=weights)
    for s in ("rgb", "pose"):
        assert float(weighted[f"ce_{s}"]) == pytest.approx(float(F.cross_entropy(out[s], labels, weight=weights)))
        assert float(plain[f"ce_{s}"]) == pytest.approx(float(F.cross_entropy(out[s], labels)))
    assert any(k.startswith("proto_") for k in weighted)
    assert all(float(weighted[k].detach()) != pytest.approx(float(plain[k].detach())) for k in weighted
               if k.startswith("proto_"))


def test_logit_offset_by_hand():
    ckpt = {"num_classes": 3, "train_class_counts": [1, 3, 0]}
    # prior: counts with the empty class as one clip, 1/5, 3/5, 1/5
    offset = imbalance.logit_offset(ckpt, "m.pt", 0.5)
    assert offset.tolist() == pytest.approx([0.5 * math.log(0.2), 0.5 * math.log(0.6), 0.5 * math.log(0.2)], rel=1e-6)
    assert imbalance.logit_offset(ckpt, "m.pt", 0.0) is None
    for bad in ({"num_classes": 3}, {"num_classes": 3, "train_class_counts": [1, 2]},
                {"num_classes": 2, "train_class_counts": [1, "x"]}):
        with pytest.raises(InputError, match="m.pt: test.logit_adjust is 1.0 but the checkpoint records no"):
            imbalance.logit_offset(bad, "m.pt", 1.0)


class FixedLogits(torch.nn.Module):
    def forward(self, x):
        return {"logits": x}


def test_predict_subtracts_the_offset_before_the_softmax():
    # equal logits, prior 1/4 : 3/4, tau 1: p proportional to 1/prior = 4 : 4/3, i.e. 0.75 : 0.25
    class Clips(list):
        clips = [0, 1]
    loader = Clips([{"joint": torch.zeros(2, 2), "index": torch.tensor([0, 1])}])
    loader.dataset = loader
    offset = imbalance.logit_offset({"num_classes": 2, "train_class_counts": [1, 3]}, "m.pt", 1.0)
    probs = predict(FixedLogits(), specs.get("joint"), loader, torch.device("cpu"), logit_offset=offset)["joint"]
    assert probs.tolist() == [pytest.approx([0.75, 0.25])] * 2
    plain = predict(FixedLogits(), specs.get("joint"), loader, torch.device("cpu"))["joint"]
    assert plain.tolist() == [[0.5, 0.5]] * 2


def test_the_settings_are_in_every_models_fingerprint_sections():
    cfg = mgconfig.validate(yaml.safe_load(open("tests/data/tiny.yaml")))
    for name, spec in specs.REGISTRY.items():
        train = spec.settings(cfg)["train"]
        assert {"sampling", "loss", "cb_beta"} <= set(train), name
    assert cfg["train"]["sampling"] == "none" and cfg["train"]["loss"] == "ce"
    assert cfg["test"]["logit_adjust"] == 0.0
    with pytest.raises(InputError):
        mgconfig.validate({**yaml.safe_load(open("tests/data/tiny.yaml")), "train": {"sampling": "log"}})


def tiny(**train):
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    cfg["pose_model"]["optim"]["epochs"] = 1
    cfg.setdefault("train", {}).update(train)
    return mgconfig.validate(cfg)


def run(cfg, stores, out):
    return train_mod.run("joint", cfg, manifest_csv=stores / "clips.csv", classes_csv=stores / "classes.csv",
                         frames_h5=stores / "frames.h5", keypoints_h5=stores / "keypoints.h5",
                         out_dir=out, state_dir=out / "state", progress=False)


def test_balanced_training_is_deterministic_records_its_prior_and_retrains_on_a_change(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    cfg = tiny(sampling="inverse", loss="class_balanced", cb_beta=0.99, keep_state=True)
    run(cfg, demo_stores, tmp_path / "a")
    run(cfg, demo_stores, tmp_path / "b")
    a, b = (torch.load(tmp_path / x / "model.pt", weights_only=True) for x in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    manifest = pd.read_csv(demo_stores / "clips.csv")
    train_labels = manifest[manifest.split == "train"].label
    assert a["train_class_counts"] == np.bincount(train_labels, minlength=a["num_classes"]).tolist()
    assert "sampling inverse, class-balanced loss (beta 0.99)" in caplog.text
    # a setting of the section changed: the state is not resumed, the model retrains
    caplog.clear()
    run(tiny(sampling="sqrt", loss="class_balanced", cb_beta=0.99), demo_stores, tmp_path / "a")
    assert "set aside the state of" in caplog.text
    # logit adjustment at test time: the same model, other scores, from the recorded prior
    plain_cfg, adjusted_cfg = tiny(), tiny()
    adjusted_cfg["test"]["logit_adjust"] = 1.0
    for name, c in (("plain", plain_cfg), ("adjusted", adjusted_cfg)):
        score_model(tmp_path / "b" / "model.pt", c, manifest_csv=demo_stores / "clips.csv",
                    frames_h5=demo_stores / "frames.h5", keypoints_h5=demo_stores / "keypoints.h5",
                    out_csv=tmp_path / f"{name}.csv", splits=("test",), progress=False)
    plain, adjusted = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("plain", "adjusted"))
    prob_cols = [c for c in plain.columns if c.startswith("joint")]
    assert not np.allclose(plain[prob_cols].to_numpy(), adjusted[prob_cols].to_numpy())
