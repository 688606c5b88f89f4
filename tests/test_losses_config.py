import pytest
import torch
import torch.nn.functional as F

from hparse import config as C
from hparse.config_schema import DataConfig, TrainConfig
from hparse.errors import ConfigError
from hparse.losses import BalancedEdgeCE, CrossEntropy, LovaszSoftmax, build_loss


def test_ohem_keeps_only_hard_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0] = torch.tensor([5.0, 4.0, -5.0, 0.0])  # confident right, right, wrong, unsure
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    pix = F.cross_entropy(logits, target, reduction="none")[0, 0]
    loss = CrossEntropy(ohem=True, thresh=0.7, min_kept=0)(logits, target)
    assert loss.item() == pytest.approx(pix[2:].mean().item())  # p(true)=0.007 and 0.5 are hard
    # min_kept raises the threshold so at least 3 pixels count
    loss3 = CrossEntropy(ohem=True, thresh=0.1, min_kept=3)(logits, target)
    assert loss3.item() == pytest.approx(pix.sort().values[1:].mean().item(), rel=1e-5)


def test_lovasz_perfect_and_worst():
    target = torch.tensor([[[0, 1], [1, 0]]])
    good = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert LovaszSoftmax()(good, target).item() == pytest.approx(0.0, abs=1e-6)
    assert LovaszSoftmax()(-good, target).item() == pytest.approx(1.0, abs=1e-6)


def test_lovasz_matches_jaccard_on_binary_hard_predictions():
    # with 0/1 probabilities the Lovasz extension equals 1 - IoU per class
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    logits = F.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 100
    iou0, iou1 = 1 / 2, 2 / 3
    assert LovaszSoftmax()(logits, target).item() == pytest.approx(1 - (iou0 + iou1) / 2, abs=1e-5)


def test_lovasz_at_logit_resolution_scores_the_nearest_label_map():
    # a 2x2 logit map vs a 4x4 label: resize="target" takes label pixels (1, 1), (1, 3), (3, 1), (3, 3)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 1::2, 1::2] = torch.tensor([[0, 1], [1, 1]])
    small = torch.tensor([[[0, 1], [1, 1]]])
    logits = F.one_hot(torch.tensor([[[0, 0], [1, 1]]]), 2).permute(0, 3, 1, 2).float() * 100
    ref = LovaszSoftmax()(logits, small)
    assert LovaszSoftmax(resize="target")(logits, label).item() == pytest.approx(ref.item(), abs=1e-6)
    assert ref.item() == pytest.approx(1 - (1 / 2 + 2 / 3) / 2, abs=1e-5)
    with pytest.raises(ConfigError):
        LovaszSoftmax(resize="bilinear")


def test_balanced_edge_weights():
    target = torch.tensor([[[1, 0, 0, 0]]])
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, 0] = 2.0  # edge pixel predicted edge-ish
    w = torch.tensor([1 / 4, 3 / 4])  # neg weight = #pos/#all, pos weight = #neg/#all
    ref = F.cross_entropy(logits, target, weight=w)
    assert BalancedEdgeCE()(logits, target).item() == pytest.approx(ref.item())


def test_composite_reports_missing_output():
    loss = build_loss([{"type": "ce", "pred": "parsing"}, {"type": "ce", "pred": "nope"}])
    out = {"parsing": torch.zeros(1, 3, 2, 2)}
    with pytest.raises(ConfigError, match="nope"):
        loss(out, {"label": torch.zeros(1, 2, 2, dtype=torch.long)})


def test_composite_returns_named_weighted_terms():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = {"label": torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))}
    ce = F.cross_entropy(logits, batch["label"])
    losses = build_loss([{"type": "ce"}, {"type": "ce", "name": "half", "weight": 0.5},
                         {"type": "ce", "pred": "absent", "weight": 0}])({"parsing": logits}, batch)
    assert list(losses) == ["ce_parsing", "half"]  # a term of weight 0 is skipped (its output not needed)
    assert losses["ce_parsing"].item() == pytest.approx(ce.item())
    assert losses["half"].item() == pytest.approx(0.5 * ce.item())
    assert sum(losses.values()).item() == pytest.approx(1.5 * ce.item())


def test_composite_never_drops_a_term_of_the_same_name():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = {"label": torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))}
    ce = F.cross_entropy(logits, batch["label"])
    terms = [{"type": "ce"}, {"type": "ce", "weight": 2.0}]  # e.g. a plain and a re-weighted CE on one output
    with pytest.raises(ConfigError, match="two terms are named 'ce_parsing'"):
        build_loss(terms)
    loss = build_loss([terms[0], {**terms[1], "name": "ce_twice"}])
    assert sum(loss({"parsing": logits}, batch).values()).item() == pytest.approx(3 * ce.item())


def test_config_base_merge_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {type: ce2p, backbone: {name: resnet18}}\ntrain: {lr: 0.1}\n")
    (tmp_path / "x.yaml").write_text("_base_: base.yaml\ntrain: {epochs: 3}\n")
    cfg = C.load_config(tmp_path / "x.yaml", ["train.lr=0.5", "model.backbone.name=mobilenetv2",
                                              "data.input_size=[64,32]"])
    # the base's lr overridden, the file's epochs, every other train key its default
    assert cfg["train"] == {**TrainConfig().model_dump(), "lr": 0.5, "epochs": 3}
    assert cfg["data"] == {**DataConfig().model_dump(), "input_size": [64, 32]}
    assert cfg["model"]["backbone"]["name"] == "mobilenetv2" and cfg["model"]["type"] == "ce2p"
    assert cfg["data"]["input_size"] == [64, 32] and cfg["name"] == "x"


@pytest.mark.parametrize("text, match", [("[1, 2]", "mapping"), ("bogus: 1", "unknown top-level"),
                                         ("a: [", "invalid YAML")])
def test_bad_configs(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        C.load_config(p)


def test_bad_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        C.apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="unknown section"):
        C.apply_overrides({}, ["trian.lr=1"])


def test_balanced_edge_ce_is_finite_when_one_class_is_absent():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    for target in (torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 4, 4, dtype=torch.long)):
        loss = BalancedEdgeCE()(logits, target)
        assert torch.isfinite(loss) and loss.item() == 0
        loss.backward()
