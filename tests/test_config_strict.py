"""Strict configs: unknown keys with suggestions, types and ranges, ``_base_`` lists and cycles, the
registry-built sections (model, backbone, loss, transforms) and the upgrade of old checkpoint configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hparse import config as C
from hparse.config_schema import CONVENTIONS, config_params
from hparse.data.transforms import ToTensor, build_transforms, check_transforms
from hparse.errors import ConfigError
from hparse.models.config_check import check_loss_config, check_model_config

MINIMAL = "model: {type: ce2p}\nloss: [{type: ce}]\ndata: {layout: ccp, label_set: ccp15}\n"


@pytest.fixture
def cfg_file(tmp_path):
    def write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def test_defaults_filled_and_model_loss_kept(cfg_file):
    cfg = C.load_config(cfg_file("x.yaml", MINIMAL + "train: {lr: 0.5}\n"))
    assert cfg["name"] == "x" and cfg["model"] == {"type": "ce2p"} and cfg["loss"] == [{"type": "ce"}]
    t, e, d = cfg["train"], cfg["eval"], cfg["data"]
    assert t["lr"] == 0.5 and t["batch_size"] == 8 and t["epochs"] == 10 and t["optimizer"] == "sgd"
    assert t["adversarial"]["optimizer"] == {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-4, "momentum": 0.9,
                                             "nesterov": False, "betas": [0.9, 0.999], "no_decay_norm_bias": False,
                                             "lr_mult": {}}
    assert e["evaluators"] == ["semantic"] and e["best_metric"] == "semantic/miou" and e["long_side"] == 512
    assert d["train_split"] == "train" and d["val_split"] is None and "mean" not in d
    assert C.validate_config(cfg) == cfg                                   # idempotent
    assert C.load_config(cfg_file("again.yaml", C.dump(cfg))) == {**cfg, "name": "x"}   # a run's config.yaml


@pytest.mark.parametrize("text, match", [
    ("train: {bacth_size: 4}", r"^train\.bacth_size: unknown key; did you mean 'batch_size'\? \(in .*x\.yaml\)"),
    ("data: {labelset: ccp15}", r"^data\.labelset: unknown key; did you mean 'label_set'\?"),
    ("train: {adversarial: {gan_los: bce}}", r"^train\.adversarial\.gan_los: unknown key; did you mean 'gan_loss'\?"),
    ("train: {adversarial: {optimizer: {lrr: 1}}}", r"^train\.adversarial\.optimizer\.lrr: .*did you mean 'lr'\?"),
    ("eval: {tta_scale: [1.0]}", r"^eval\.tta_scale: unknown key; did you mean 'tta_scales'\?"),
    ("trian: {lr: 1}", r"^trian: unknown top-level key; did you mean 'train'\?"),
    ("data: {mean: [0.5, 0.5, 0.5]}", r"^data\.mean: this key moved to model\.pixel_mean"),
])
def test_unknown_keys_in_a_file(cfg_file, text, match):
    with pytest.raises(ConfigError, match=match):
        C.load_config(cfg_file("x.yaml", f"{MINIMAL}{text}\n"))


@pytest.mark.parametrize("override, match", [
    ("train.bacth_size=4", r"^train\.bacth_size: unknown key; did you mean 'batch_size'\? "
                           r"\(override 'train\.bacth_size=4'\)$"),
    ("data.labelset=ccp15", r"^data\.labelset: unknown key; did you mean 'label_set'\?"),
    ("train.adversarial.gan_los=lsgan", r"^train\.adversarial\.gan_los: unknown key; did you mean 'gan_loss'\?"),
    ("train.lr=fast", r"^train\.lr: .*valid number.*\(got 'fast'\)"),
    ("train.batch_size=0", r"^train\.batch_size: .*greater than 0 \(got 0\)"),
    ("train.lr=-1", r"^train\.lr: .*greater than 0 \(got -1\)"),
    ("train.weight_decay=-0.1", r"^train\.weight_decay: .*greater than or equal to 0"),
    ("train.accumulate=0", r"^train\.accumulate: "),
    ("train.epochs=0", r"^train\.epochs: "),
    ("train.warmup_ratio=1.5", r"^train\.warmup_ratio: .*less than or equal to 1"),
    ("train.optimizer=rmsprop", r"^train\.optimizer: Input should be 'sgd', 'adam' or 'adamw'"),
    ("train.lr_policy=cosine", r"^train\.lr_policy: Input should be 'poly' or 'step'"),
    ("train.adversarial.d_step_prob=2", r"^train\.adversarial\.d_step_prob: "),
    ("eval.average=mean", r"^eval\.average: Input should be 'logits' or 'probs'"),
    ("eval.convention=voc", r"^eval\.convention: Input should be 'ce2p', 'nan' or 'd2'"),
    ("eval.long_side=0", r"^eval\.long_side: "),
    ("eval.scales=[]", r"^eval\.scales: List should have at least 1 item"),
    ("eval.tta_scales=[1.0,-0.5]", r"^eval\.tta_scales\[1\]: .*greater than 0"),
    ("eval.evaluators=[3]", r"^eval\.evaluators: item 0 must be a name or a mapping with a 'type'"),
    ("eval.best_metric=instance/ap", r"^eval\.best_metric: 'instance/ap' names evaluator 'instance'"),
    ("eval.best_metric=miou", r"^eval\.best_metric: must look like '<evaluator>/<key>'"),
    ("data.input_size=[256]", r"^data\.input_size: List should have at least 2 items"),
    ("data.train_transforms=[{p: 1}]", r"^data\.train_transforms: item 0 must be a mapping with a 'type'"),
    ("train=3", r"^train: must be a mapping \(got 3\) \(override 'train=3'\)$"),
    ("model=3", r"^model: must be a mapping"),
    ("train.lr.x=1", r"train\.lr is not a mapping"),
    ("trian.lr=1", r"unknown section 'trian'; did you mean 'train'\?"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        C.load_config("ce2p_light_ccp", [override])


def test_override_errors_come_first_and_others_are_listed(cfg_file):
    path = cfg_file("x.yaml", MINIMAL + "train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match=r"^train\.lr: .*\(override 'train\.lr=fast'\) \[1 more: train\.epochs\]$"):
        C.load_config(path, ["train.lr=fast"])


def test_good_overrides_and_new_eval_keys():
    cfg = C.load_config("mman_r101_lip", ["train.optimizer=AdamW", "train.adversarial.optimizer.lr=0.001",
                                          "eval.evaluators=[semantic, {type: instance, one_to_one: true}]",
                                          "eval.best_metric=instance/ap_p_vol"])
    assert cfg["train"]["optimizer"] == "adamw"
    d_opt = cfg["train"]["adversarial"]["optimizer"]
    assert d_opt["lr"] == 0.001 and d_opt["optimizer"] == "adam" and d_opt["weight_decay"] == 1e-4
    assert cfg["eval"]["evaluators"][1] == {"type": "instance", "one_to_one": True}


def test_base_list_merges_in_order_file_last(cfg_file):
    cfg_file("a.yaml", MINIMAL + "name: a\ntrain: {lr: 0.1, epochs: 3}\neval: {long_side: 100}\n")
    cfg_file("b.yaml", "train: {lr: 0.2, batch_size: 4}\n")
    cfg = C.load_config(cfg_file("x.yaml", "_base_: [a.yaml, b.yaml]\ntrain: {batch_size: 2}\n"))
    assert (cfg["train"]["lr"], cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (0.2, 3, 2)
    assert cfg["eval"]["long_side"] == 100 and cfg["name"] == "x"   # a base's name is not inherited
    assert C.load_config(cfg_file("y.yaml", "_base_: [b.yaml, a.yaml]\n"))["train"]["lr"] == 0.1


def test_base_packaged_name_and_errors(cfg_file):
    cfg = C.load_config(cfg_file("x.yaml", "_base_: ce2p_light_ccp.yaml\ntrain: {epochs: 1}\n"))
    assert cfg["model"]["type"] == "ce2p" and cfg["train"]["epochs"] == 1
    with pytest.raises(ConfigError, match=r"x\.yaml: _base_ file 'nope\.yaml' not found"):
        C.load_config(cfg_file("x.yaml", "_base_: [ce2p_light_ccp.yaml, nope.yaml]\n"))
    with pytest.raises(ConfigError, match=r"_base_ must be a file name or a list"):
        C.load_config(cfg_file("x.yaml", "_base_: 3\n"))


def test_base_cycle(cfg_file):
    cfg_file("a.yaml", "_base_: b.yaml\n")
    cfg_file("b.yaml", "_base_: [c.yaml]\n")
    cfg_file("c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ cycle: a\.yaml -> b\.yaml -> c\.yaml -> a\.yaml"):
        C.load_config(cfg_file("x.yaml", "_base_: a.yaml\n"))
    with pytest.raises(ConfigError, match=r"_base_ cycle: self\.yaml -> self\.yaml"):
        C.load_config(cfg_file("self.yaml", "_base_: self.yaml\n"))


def test_conventions_match_the_metrics():
    from hparse.metrics.semantic import CONVENTIONS as METRIC_CONVENTIONS

    assert tuple(CONVENTIONS) == tuple(METRIC_CONVENTIONS)


# ---------------------------------------------------------------------------------------------------------
# registry-built sections

@pytest.mark.parametrize("model, match", [
    ({"type": "ce2p", "ppm_chh": 3}, r"^model\.ppm_chh: unknown key for model 'ce2p'; did you mean 'ppm_ch'\?"),
    ({"type": "acenet", "lcm_nn": 3}, r"^model\.lcm_nn: unknown key for model 'acenet'; did you mean 'lcm_n'\?"),
    ({"type": "ce2p", "ppm_ch": "wide"}, r"^model\.ppm_ch: .*valid integer.*\(got 'wide'\)"),
    ({"type": "cnif", "mode": 3}, r"^model\.mode: Input should be a valid string"),
    ({"type": "ce2pp"}, r"^model\.type: unknown model 'ce2pp'; did you mean 'ce2p'\?"),
    ({"ppm_ch": 3}, r"^model\.type: missing"),
    ({"type": "ce2p", "pixel_mean": [0.5, 0.5]}, r"^model\.pixel_mean: List should have at least 3 items"),
    ({"type": "ce2p", "pixel_std": [0.5, 0.5, 0]}, r"^model\.pixel_std\[2\]: .*greater than 0"),
    ({"type": "ce2p", "backbone": {"name": "resnet18", "widht": 0.5}},
     r"^model\.backbone\.widht: unknown key for backbone 'resnet18'; did you mean 'width'\?"),
    ({"type": "ce2p", "backbone": {"name": "resnet19"}}, r"^model\.backbone\.name: unknown backbone 'resnet19'"),
    ({"type": "mman", "backbone": {"name": "resnet101", "output_stride": "x"}},
     r"^model\.backbone\.output_stride: .*valid integer"),
])
def test_model_config_errors(model, match):
    with pytest.raises(ConfigError, match=match):
        check_model_config(model)


def test_model_config_accepts_base_keys_and_nulls():
    check_model_config({"type": "ce2p", "pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.25, 0.25, 0.25]})
    check_model_config({"type": "acenet", "num_points": None, "backbone": {"name": "mobilenetv2", "width": 0.5}})


class _Trunk:
    def __init__(self, num_classes: int, depth: int = 3, *, wide: bool = False):
        pass


class _Model:
    config_forwards_to = _Trunk

    def __init__(self, meta, loss=None, head: int = 1, **trunk):
        pass


class _Open:
    def __init__(self, meta, head: int = 1, **anything):
        pass


def _build(**kw) -> _Trunk:
    return _Trunk(1, **kw)


def test_config_params_follow_forwards():
    params, hints, is_open = config_params(_Model, skip=("self", "meta", "num_classes", "loss"))
    assert list(params) == ["head", "depth", "wide"] and hints["depth"] is int and not is_open
    assert config_params(_Open)[2] is True
    assert list(config_params(_build)[0]) == ["depth", "wide"]       # a builder: its return annotation


@pytest.mark.parametrize("loss, match", [
    ([{"type": "ce"}, {"type": "ce"}, {"type": "ce", "ohm": True}],
     r"^loss\[2\]\.ohm: unknown key for loss 'ce'; did you mean 'ohem'\?"),
    ([{"type": "ce", "weight": "heavy"}], r"^loss\[0\]\.weight: .*valid number"),
    ([{"type": "ce", "class_weight": [1, "a"]}], r"^loss\[0\]\.class_weight\[1\]: "),
    ([{"type": "heatmap_mse", "sigma": 3}], r"^loss\[0\]\.sigma: unknown key for loss 'heatmap_mse'"),
    ([{"type": "lovas"}], r"^loss\[0\]\.type: unknown loss 'lovas'; did you mean 'lovasz'\?"),
    ([{"pred": "parsing"}], r"^loss\[0\]\.type: missing"),
    ([], r"^loss: must be a non-empty list"),
])
def test_loss_config_errors(loss, match):
    with pytest.raises(ConfigError, match=match):
        check_loss_config(loss)


@pytest.mark.parametrize("steps, match", [
    ([{"type": "HFlip"}, {"type": "EdgeTarget", "widht": 3}],
     r"^data\.train_transforms\[1\]\.widht: unknown key for transform 'EdgeTarget'; did you mean 'width'\?"),
    ([{"type": "RandomAfine", "size": [8, 8]}], r"^data\.train_transforms\[0\]\.type: .*did you mean 'RandomAffine'\?"),
    ([{"type": "RandomAffine", "size": [8, "a"]}], r"^data\.train_transforms\[0\]\.size\[1\]: .*valid integer"),
    ([{"type": "RandomAffine"}], r"^data\.train_transforms\[0\]\.size: missing"),
    ([{"type": "HFlip", "p": "often"}], r"^data\.train_transforms\[0\]\.p: .*valid number"),
    ([{"type": "Normalize"}], r"Normalize was replaced by ToTensor"),
])
def test_transform_config_errors(steps, match):
    with pytest.raises(ConfigError, match=match):
        check_transforms(steps)


def test_build_transforms_checks_and_to_tensor_keeps_0_255():
    with pytest.raises(ConfigError, match=r"^data\.train_transforms\[0\]\.pp: .*did you mean 'p'\?"):
        build_transforms([{"type": "HFlip", "pp": 0.5}], "lip")
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    s = {"image": img, "label": np.ones((4, 5), np.uint8), "joints": np.zeros((2, 3), np.float32), "meta": {}}
    out = build_transforms([{"type": "ToTensor"}])(s)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 4, 5)
    assert torch.equal(out["image"], torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32)))
    assert out["label"].dtype == torch.int64 and out["joints"].dtype == torch.float32
    assert torch.equal(ToTensor()(out)["image"], out["image"])           # idempotent


@pytest.mark.parametrize("name", C.list_configs())
def test_every_packaged_config_is_valid(name):
    cfg = C.load_config(name)
    check_model_config(cfg["model"])
    check_loss_config(cfg["loss"])
    check_transforms(cfg["data"]["train_transforms"])
    assert cfg["data"]["train_transforms"][-1] == {"type": "ToTensor"}


# ---------------------------------------------------------------------------------------------------------
# old configs

def _legacy(mean, std, normalize: dict | None = None) -> dict:
    return {"name": "old", "model": {"type": "cnif", "label_set": "ccp15", "mode": "full"},
            "loss": [{"type": "ce"}],
            "data": {"layout": "ccp", "label_set": "ccp15", "mean": mean, "std": std,
                     "train_transforms": [{"type": "HFlip", "p": 0.5}, {"type": "Normalize", **(normalize or {})}]},
            "train": {"lr": 0.1}, "eval": {"long_side": 384}}


def test_migrate_legacy_imagenet_stats_are_dropped():
    old = _legacy([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with pytest.raises(ConfigError, match=r"data\.mean: this key moved to model\.pixel_mean"):
        C.validate_config(old)
    cfg = C.migrate_legacy(old)
    assert cfg["model"] == {"type": "cnif", "mode": "full"}
    assert cfg["data"]["train_transforms"] == [{"type": "HFlip", "p": 0.5}, {"type": "ToTensor"}]
    assert cfg["train"]["lr"] == 0.1 and cfg["train"]["batch_size"] == 8
    assert old["data"]["mean"] and old["model"]["label_set"]          # the input is not modified
    check_model_config(cfg["model"])
    check_transforms(cfg["data"]["train_transforms"])


def test_migrate_legacy_keeps_other_stats():
    cfg = C.migrate_legacy(_legacy([0.5, 0.5, 0.5], [0.229, 0.224, 0.225]))
    assert cfg["model"]["pixel_mean"] == [0.5, 0.5, 0.5] and "pixel_std" not in cfg["model"]
    cfg = C.migrate_legacy(_legacy(None, None, {"std": [0.3, 0.3, 0.3]}))    # a Normalize step's own statistics
    assert cfg["model"]["pixel_std"] == [0.3, 0.3, 0.3] and "pixel_mean" not in cfg["model"]


def test_migrate_legacy_shipped_checkpoint_config():
    from pathlib import Path

    path = Path(C.__file__).parent / "weights" / "robust.pt"   # saved before the config migration
    assert path.is_file(), "the shipped weights are part of the package"
    cfg = C.migrate_legacy(torch.load(path, map_location="cpu", weights_only=False)["config"])
    assert "mean" not in cfg["data"] and "pixel_mean" not in cfg["model"]
    assert cfg["data"]["train_transforms"][-1] == {"type": "ToTensor"}
    check_model_config(cfg["model"])
    check_loss_config(cfg["loss"])


def test_paper_size_configs_decay_every_parameter_as_the_papers_state():
    """The papers give one weight decay for all parameters: the paper-size configs say so explicitly
    (``train.no_decay_norm_bias: false``); the CPU recipes spare norms and biases (the default)."""
    from hparse.engine.optim import build_optimizer

    names = C.list_configs()
    paper = [n for n in names if any(f"_{b}_" in f"_{n}_" for b in ("r50", "r101", "x101"))]
    assert len(paper) > 20 and "cnif_r101_ppp" in paper
    for n in paper:
        assert C.load_config(n)["train"]["no_decay_norm_bias"] is False, n
    assert C.load_config("ce2p_light_ccp")["train"]["no_decay_norm_bias"] is True
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    for spare, decayed in ((False, 4), (True, 1)):
        opt = build_optimizer(net, {**C.load_config("cnif_r101_lip")["train"], "no_decay_norm_bias": spare})
        assert sum(len(g["params"]) for g in opt.param_groups if g["weight_decay"] > 0) == decayed
