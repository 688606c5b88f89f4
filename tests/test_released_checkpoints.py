"""Released SCHP and CE2P checkpoints load as hparse models: state dicts written here in those projects' naming and
shapes (the ResNet-101 AugmentCE2P / CE2P of their networks code; the weights themselves cannot be downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import hparse
from hparse.cli import app
from hparse.errors import HParseError
from hparse.models.released import INPUT_STATS

HEADS = {"schp": ("context_encoding", "edge", "decoder", "fushion"),
         "ce2p": ("layer5", "edge_layer", "layer6", "layer7")}


def _conv(out, inp, k=1, bias=False):
    d = {"weight": torch.randn(out, inp, k, k) * (2 / (inp * k * k)) ** 0.5}
    return {**d, "bias": torch.randn(out) * 0.1} if bias else d


def _bn(n, tracked=True):
    d = {"weight": 1 + 0.1 * torch.randn(n), "bias": 0.1 * torch.randn(n), "running_mean": 0.1 * torch.randn(n),
         "running_var": 0.5 + torch.rand(n)}
    return {**d, "num_batches_tracked": torch.tensor(7)} if tracked else d


def _put(state, prefix, params):
    state.update({f"{prefix}.{k}": v for k, v in params.items()})


def released_state(release: str, classes: int) -> dict:
    """A ResNet-101 parser in the release's naming: deep stem, bottlenecks [3, 4, 23, 3] (BatchNorm2d), then heads
    whose BN is InPlaceABNSync (no num_batches_tracked)."""
    torch.manual_seed(0)
    s: dict = {}
    for i, (o, c) in enumerate([(64, 3), (64, 64), (128, 64)], 1):
        _put(s, f"conv{i}", _conv(o, c, 3))
        _put(s, f"bn{i}", _bn(o))
    inplanes = 128
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3)), 1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            for j, (o, c, k) in enumerate([(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)], 1):
                _put(s, f"{p}.conv{j}", _conv(o, c, k))
                _put(s, f"{p}.bn{j}", _bn(o))
            if b == 0:
                _put(s, f"{p}.downsample.0", _conv(planes * 4, inplanes))
                _put(s, f"{p}.downsample.1", _bn(planes * 4))
            inplanes = planes * 4
    ctx, edge, dec, fus = HEADS[release]
    for i in range(4):
        _put(s, f"{ctx}.stages.{i}.1", _conv(512, 2048))
        _put(s, f"{ctx}.stages.{i}.2", _bn(512, False))
    _put(s, f"{ctx}.bottleneck.0", _conv(512, 4096, 3))
    _put(s, f"{ctx}.bottleneck.1", _bn(512, False))
    for i, c in enumerate((256, 512, 1024), 1):
        _put(s, f"{edge}.conv{i}.0", _conv(256, c))
        _put(s, f"{edge}.conv{i}.1", _bn(256, False))
    _put(s, f"{edge}.conv4", _conv(2, 256, 3, bias=True))
    _put(s, f"{edge}.conv5", _conv(2, 6, 1, bias=True))
    for name, o, c in (("conv1", 256, 512), ("conv2", 48, 256)):
        _put(s, f"{dec}.{name}.0", _conv(o, c))
        _put(s, f"{dec}.{name}.1", _bn(o, False))
    _put(s, f"{dec}.conv3.0", _conv(256, 304))
    _put(s, f"{dec}.conv3.1", _bn(256, False))
    _put(s, f"{dec}.conv3.2", _conv(256, 256))
    _put(s, f"{dec}.conv3.3", _bn(256, False))
    _put(s, f"{dec}.conv4", _conv(classes, 256, bias=True))
    _put(s, f"{fus}.0", _conv(256, 1024))
    _put(s, f"{fus}.1", _bn(256, False))
    _put(s, f"{fus}.3", _conv(classes, 256, bias=True))
    return {f"module.{k}": v for k, v in s.items()}


@pytest.fixture(scope="module")
def schp_lip(tmp_path_factory):
    state = released_state("schp", 20)
    path = tmp_path_factory.mktemp("schp") / "exp-schp-lip.pth"
    torch.save({"epoch": 150, "state_dict": state}, path)      # SCHP's training checkpoints wrap the state dict
    return path, state


def test_schp_checkpoint_loads_with_its_input_contract(schp_lip):
    path, state = schp_lip
    p = hparse.load(path, label_set="lip", backend="torch")
    m = p.model
    assert p.meta.name == "lip" and p.predictor.long_side == 473
    assert torch.equal(m.fusion[2].weight, state["module.fushion.3.weight"])
    assert torch.equal(m.trunk.decoder.conv3[1][0].weight, state["module.decoder.conv3.2.weight"])
    assert torch.equal(m.trunk.edge.shared.weight, state["module.edge.conv4.weight"])
    assert torch.equal(m.trunk.context.stages[2][1][1].running_var,
                       state["module.context_encoding.stages.2.2.running_var"])
    acts = [mod for mod in m.fusion[0].modules() if isinstance(mod, torch.nn.LeakyReLU)]
    assert len(acts) == 1 and acts[0].negative_slope == 0.01         # InPlaceABNSync = BN + LeakyReLU(0.01)
    # the first conv on hparse's RGB input = SCHP's conv1 on its BGR input normalised with its BGR statistics
    rgb = torch.randint(0, 256, (1, 3, 20, 24)).float()
    bgr01 = rgb.flip(1) / 255
    mean = torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1)        # SCHP's BGR-ordered statistics
    std = torch.tensor([0.225, 0.224, 0.229]).view(1, 3, 1, 1)
    theirs = F.conv2d((bgr01 - mean) / std, state["module.conv1.weight"], stride=2, padding=1)
    ours = m.trunk.backbone.conv1(m.normalize(rgb))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_schp_checkpoint_parses_from_the_cli(schp_lip, tmp_path):
    path, _ = schp_lip
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(img)
    res = CliRunner().invoke(app, ["parse", str(img), "--out", str(tmp_path / "out"), "--model", str(path),
                                   "--label-set", "lip", "--backend", "torch", "--long-side", "96"])
    assert res.exit_code == 0, res.output
    label = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert label.shape == (60, 40) and label.max() < 20


def test_ce2p_naming_and_its_normalisation_quirk(tmp_path):
    path = tmp_path / "LIP_epoch_149.pth"
    torch.save(released_state("ce2p", 20), path)
    p = hparse.load(path, backend="torch")                              # 20 classes: LIP
    assert p.meta.name == "lip"
    mean, std = INPUT_STATS["ce2p"]
    torch.testing.assert_close(p.model.pixel_mean.flatten(), torch.tensor(mean) * 255)
    torch.testing.assert_close(p.model.pixel_std.flatten(), torch.tensor(std) * 255)


def test_foreign_state_dicts_are_refused_clearly(schp_lip, tmp_path):
    path, _ = schp_lip
    with pytest.raises(HParseError, match="20 classes, label set 'atr' 18"):
        hparse.load(path, label_set="atr", backend="torch")
    with pytest.raises(HParseError, match="unknown label set|label set"):
        hparse.load(path, label_set="nope", backend="torch")
    other = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(HParseError, match="nor a released SCHP or CE2P"):
        hparse.load(other)
    with pytest.raises(HParseError, match="trained for label set 'ccp15', not 'lip'"):
        hparse.load("default", label_set="lip")
