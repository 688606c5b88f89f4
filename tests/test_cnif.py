"""CNIF: hierarchies of every label set, model structure (gates, bottom-up max, leaf/root terms, per-level
softmax), the ablation modes, the Eq. 18 loss, the configs and a real trainer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hparse import config as C
from hparse.data.targets import HierarchyTarget
from hparse.errors import ConfigError
from hparse.labels import CCP_TO_CCP15, DatasetMeta, get_meta, list_metas
from hparse.losses import build_loss
from hparse.models import build_model
from hparse.models.cnif import MODES, SOURCES, Hierarchy, level_label_maps
from tests.test_engine import make_folder_dataset

# level-2 "upper-body" parts per label set: reference-notes A.4 (CIHP/VIP: torso-skin 10 is upper body, unlike
# HHP's code), shared/data/README.md for ccp15; every other foreground class is lower body.
UPPER = {
    "lip": {1, 2, 3, 4, 5, 6, 7, 11, 13, 14, 15},
    "cihp": {1, 2, 3, 4, 5, 6, 7, 10, 11, 13, 14, 15},
    "vip": {1, 2, 3, 4, 5, 6, 7, 10, 11, 13, 14, 15},
    "pascal_person_part": {1, 2, 3, 4},
    "atr": {1, 2, 3, 4, 11, 14, 15, 16, 17},
    "ppss": {1, 2, 3, 4},
    "ccp15": {1, 2, 3, 4, 5, 6, 11, 12, 13, 14},  # hat hair sunglasses upper-clothes coat dress bag scarf skin acc.
}
UPPER["ccp"] = {c for c, k in CCP_TO_CCP15.items() if k in UPPER["ccp15"]}
HIER_SETS = [n for n in list_metas() if get_meta(n).hierarchy]

TINY = {"backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16}, "aspp_dilations": [1, 2, 3],
        "feat_ch": 16, "level_ch": 16, "se_reduction": 4, "head_ch": 8, "td_ch": 8, "bu_ch": 8, "fusion_ch": 4}


def tiny(mode="full", label_set="pascal_person_part", loss=None, **kw):
    torch.manual_seed(0)
    return build_model({"type": "cnif", "mode": mode, **TINY, **kw}, get_meta(label_set), loss)


def hier_batch(meta, b=2, size=(48, 32), seed=0):
    """A training batch: images in 0..255 (the model normalises them) and the labels of the three levels."""
    meta = get_meta(meta)
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, meta.num_classes, (b, *size), generator=g)
    label[:, :2] = 255
    luts = level_label_maps(meta)
    return {"image": torch.rand(b, 3, *size, generator=g) * 255, "label": label,
            "label_l2": torch.from_numpy(luts[2][1][label.numpy()]).long(),
            "label_l3": torch.from_numpy(luts[3][1][label.numpy()]).long()}


# --- hierarchies --------------------------------------------------------------------------------------

def test_every_table_label_set_has_a_hierarchy():
    assert set(UPPER) <= set(HIER_SETS)


@pytest.mark.parametrize("name", sorted(UPPER))
def test_leaves_belong_to_the_parents_of_the_table(name):
    meta = get_meta(name)
    h = Hierarchy(meta)
    upper, lower = set(UPPER[name]), set(range(1, meta.num_classes)) - set(UPPER[name])
    assert h.names[2] == ("background", "upper-body", "lower-body") and h.names[3] == ("background", "person")
    assert set(h.children[2][1]) == upper and set(h.children[2][2]) == lower and h.children[2][0] == [0]
    assert meta.children(1) == sorted(upper) and meta.children(2) == sorted(lower)
    if name == "cihp":
        assert meta.classes[10] == "torso-skin" and 10 in upper
    if name == "lip":
        assert meta.classes[10] == "jumpsuits" and 10 in lower


@pytest.mark.parametrize("name", HIER_SETS)
def test_every_leaf_has_exactly_one_parent_on_each_level(name):
    meta = get_meta(name)
    h = Hierarchy(meta)
    n = meta.num_classes
    # level 2: the children lists partition the classes; background only under background
    kids = [c for ch in h.children[2] for c in ch]
    assert sorted(kids) == list(range(n))
    assert h.parent[1][0] == 0 and all(h.parent[1][c] in (1, 2) for c in range(1, n))
    # level 3: background -> background, upper and lower -> person; every part is a person pixel
    assert h.parent[2] == [0, 1, 1] and h.children[3] == [[0], [1, 2]]
    assert h.groups[3] == [[0], list(range(1, n))]
    lut2, lut3 = meta.hierarchy_lut(2), meta.hierarchy_lut(3)
    assert all(lut3[c] == h.parent[2][lut2[c]] for c in range(n))
    assert lut2[255] == lut3[255] == 255


def test_level_label_maps_match_hierarchy_target():
    meta = get_meta("lip")
    lab = np.random.default_rng(0).integers(0, 20, (6, 5)).astype(np.uint8)
    lab[0, 0] = 255
    s = HierarchyTarget("lip").apply({"image": np.zeros((6, 5, 3), np.uint8), "label": lab}, None)
    maps = level_label_maps(meta)
    assert maps[1][0] == meta.classes and maps[2][0] == meta.level_classes(2)
    np.testing.assert_array_equal(maps[1][1][lab], lab)
    np.testing.assert_array_equal(maps[2][1][lab], s["label_l2"])
    np.testing.assert_array_equal(maps[3][1][lab], s["label_l3"])


# --- model structure ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["full", "fixed"])
def test_gates_lie_in_unit_interval_and_vanish_where_no_source(mode):
    m = tiny(mode).eval()
    with torch.no_grad():
        g = m.network(torch.randn(2, 3, 64, 48) * 3)["gates"]
    n = sum(m.hierarchy.sizes.values())
    assert g.shape == (2, n, 3) and len(m.node_names) == n
    mask = m.gate_mask
    assert ((g >= 0) & (g <= 1)).all()
    assert (g[:, ~mask] == 0).all() and (g[:, mask] > 0).all()
    n1, n2 = m.hierarchy.sizes[1], m.hierarchy.sizes[2]
    assert not mask[:n1, SOURCES.index("bu")].any()  # leaves: no bottom-up gate
    assert not mask[n1 + n2:, SOURCES.index("td")].any()  # root level: no top-down gate
    assert mask[:, 0].all() and mask[n1:, 2].all() and mask[:n1 + n2, 1].all()
    if mode == "full":  # conditional: depends on the input; fixed: the same for every image
        assert not torch.allclose(g[0], g[1])
        gates = m.gate_td["l1"]([torch.zeros(1, 16)] * n2)  # one FC per parent, shared by its children
        assert gates.shape == (1, n2)
    else:
        assert torch.equal(g[0], g[1])


def _capture_inputs(modules):
    seen = {}
    hooks = [mod.register_forward_pre_hook(lambda mod, args, k=k: seen.__setitem__(k, args[0].detach()))
             for k, mod in modules.items()]
    return seen, hooks


@pytest.mark.parametrize("message", ["prob", "logit"])
def test_bottom_up_reads_the_max_over_children_and_top_down_the_parent(message):
    m = tiny("full", "lip", message=message).eval()
    bu_in, h1 = _capture_inputs(m.bu)
    td_in, h2 = _capture_inputs(m.td)
    with torch.no_grad():
        out = m.network(torch.randn(2, 3, 64, 48))
    for h in h1 + h2:
        h.remove()
    hier = m.hierarchy

    def est(lvl):
        d = out[f"direct_l{lvl}"]
        return d.softmax(1) if message == "prob" else d

    for lvl in (2, 3):
        x = bu_in[f"l{lvl}"]  # (B, N, 1 + C, H, W): [PMP of children, h_v]
        assert x.shape[1:3] == (hier.sizes[lvl], 1 + 16)
        for v, kids in enumerate(hier.children[lvl]):
            ref = est(lvl - 1)[:, kids].max(1).values
            torch.testing.assert_close(x[:, v, 0], ref)
    for lvl in (1, 2):
        x = td_in[f"l{lvl}"]
        for v, u in enumerate(hier.parent[lvl]):
            torch.testing.assert_close(x[:, v, 0], est(lvl + 1)[:, u])
    # upper body's bottom-up message = max over its parts: hair and face both under it
    assert {2, 13} <= set(hier.children[2][1])


@pytest.mark.parametrize("mode", [m for m in MODES if m != "backbone"])
def test_leaves_have_no_bottom_up_and_the_root_no_top_down(mode):
    m = tiny(mode)
    extra = MODES[mode][0]
    assert set(m.bu) == ({"l2", "l3"} if "bu" in extra else set())
    assert set(m.td) == ({"l1", "l2"} if "td" in extra else set())
    assert "bu" not in m.sources[1] and "td" not in m.sources[3]
    for head in list(m.bu.values()) + list(m.td.values()):
        assert head.in_ch == 16 + 1  # node feature + one message map
    if mode == "full":
        assert set(m.gate_bu) == {"l2", "l3"} and set(m.gate_td) == {"l1", "l2"}
        # bottom-up gate of a node reads all its children's features: C * |children|
        assert [fc.in_features for fc in m.gate_bu["l3"].fcs] == [16 * 1, 16 * 2]
        assert (m.fuse["l1"].in_ch, m.fuse["l2"].in_ch, m.fuse["l3"].in_ch) == (2, 3, 2)  # gated sources
    out = m.eval().network(torch.randn(1, 3, 64, 48))
    assert "bu_l1" not in out and "td_l3" not in out


@pytest.mark.parametrize("mode", list(MODES))
def test_per_level_softmax_sums_to_one(mode):
    m = tiny(mode, "lip").eval()
    with torch.no_grad():
        out = m.network(torch.randn(1, 3, 64, 48))
    for key, n in (("parsing", 20), ("level2", 3), ("level3", 2)):
        assert out[key].shape[1] == n
        torch.testing.assert_close(out[key].softmax(1).sum(1), torch.ones_like(out[key][:, 0]))
    if mode == "backbone":  # level 2/3 are the parts' marginals: p(upper) = sum of the upper parts' probs
        p = out["parsing"].softmax(1)
        torch.testing.assert_close(out["level2"].exp()[:, 1], p[:, m.hierarchy.children[2][1]].sum(1))
        torch.testing.assert_close(out["level3"].exp()[:, 0], p[:, 0])


EXPECTED_KEYS = {
    "backbone": {"direct_l1", "sources_l1"},
    "direct": {"direct_l1", "direct_l2", "direct_l3", "sources_l1", "sources_l2", "sources_l3"},
    "direct_bu": {"bu_l2", "bu_l3"},
    "direct_td": {"td_l1", "td_l2"},
    "direct_bu_td": {"td_l1", "td_l2", "bu_l2", "bu_l3"},
    "fixed": {"td_l1", "td_l2", "bu_l2", "bu_l3", "gates"},
    "full": {"td_l1", "td_l2", "bu_l2", "bu_l3", "gates"},
}


@pytest.mark.parametrize("sharing", ["level", "node"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_builds_with_the_right_outputs(mode, sharing):
    m = tiny(mode, "ccp15", head_sharing=sharing).eval()
    with torch.no_grad():
        out = m.network(torch.randn(2, 3, 64, 48))
    keys = {"parsing", "level2", "level3"} | EXPECTED_KEYS[mode]
    if mode not in ("backbone", "direct"):
        keys |= EXPECTED_KEYS["direct"]
    assert set(out) == keys
    h, w = 8, 6  # K/8
    sizes = {1: 15, 2: 3, 3: 2}
    for k, v in out.items():
        if k == "gates":
            assert v.shape == (2, 20, 3)
            continue
        lvl = 1 if k == "parsing" else int(k[-1])
        if k.startswith("sources"):
            assert v.shape == (2, len(m.loss_sources[lvl]), sizes[lvl], h, w)
        else:
            assert v.shape == (2, sizes[lvl], h, w), k
    for lvl in m.levels:  # the stack starts with the fused output, then the sources in order
        src = out[f"sources_l{lvl}"]
        torch.testing.assert_close(src[:, 0], out[{1: "parsing", 2: "level2", 3: "level3"}[lvl]])
        for i, name in enumerate(m.loss_sources[lvl]):
            if name != "fused":
                torch.testing.assert_close(src[:, i], out[f"{name}_l{lvl}"])
    if mode.startswith("direct_"):  # the fusion network F∪ on the ungated sources (Table 6 rows)
        with torch.no_grad():
            stack = torch.stack([out[f"{s}_l2"] for s in m.sources[2]], 2)
            torch.testing.assert_close(out["level2"], m.fuse["l2"](stack))
        assert "gates" not in out and not hasattr(m, "fixed_gates") and not hasattr(m, "gate_direct")
    if mode in ("direct", "backbone"):
        assert torch.equal(out["parsing"], out["direct_l1"])


def test_node_heads_have_own_weights_only_when_asked():
    shared, own = tiny("full", head_sharing="level"), tiny("full", head_sharing="node")
    n1 = shared.hierarchy.sizes[1]
    assert shared.direct["l1"].net[0][0].weight.shape[0] == 8
    assert own.direct["l1"].net[0][0].weight.shape[0] == 8 * n1 and own.direct["l1"].net[0][0].groups == n1
    assert len(shared.se["l1"]) == n1 and len(shared.gate_direct["l1"].fcs) == n1  # per node in both


def test_bad_arguments():
    # the hierarchy comes from the label set the model is built for: a config's own label_set is refused
    with pytest.raises(ConfigError, match="label_set"):
        build_model({"type": "cnif", "label_set": "lip", **TINY}, get_meta("lip"))
    with pytest.raises(ValueError, match="hierarchy"):
        build_model({"type": "cnif", **TINY}, DatasetMeta("flat", ("background", "part")))
    with pytest.raises(ValueError, match="mode"):
        tiny("gated")
    with pytest.raises(ValueError, match="head_sharing"):
        tiny(head_sharing="all")


# --- loss -------------------------------------------------------------------------------------------------

def test_hier_ce_sums_cross_entropy_over_sources():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 10, 12), generator=g)
    target[0, 0] = 255
    ref = [F.cross_entropy(F.interpolate(logits[:, i], size=(10, 12), mode="bilinear", align_corners=True),
                           target, ignore_index=255) for i in range(3)]
    loss = build_loss([{"type": "hier_ce", "pred": "s", "target": "t"}])
    losses = loss({"s": logits}, {"t": target})
    assert list(losses) == ["hier_ce_s"]
    total = sum(losses.values())
    assert total.item() == pytest.approx(sum(r.item() for r in ref), rel=1e-5)
    mean = build_loss([{"type": "hier_ce", "pred": "s", "target": "t", "reduction": "mean"}])
    assert sum(mean({"s": logits}, {"t": target}).values()).item() == pytest.approx(total.item() / 3, rel=1e-5)
    assert sum(loss({"s": logits[:, 1]}, {"t": target}).values()).item() == pytest.approx(ref[1].item(), rel=1e-5)
    weighted = build_loss([{"type": "hier_ce", "pred": "s", "target": "t", "weight": 0.5}])
    assert weighted({"s": logits}, {"t": target})["hier_ce_s"].item() == pytest.approx(total.item() / 2, rel=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_loss_of_eq18_trains_every_head(mode):
    levels = (1,) if mode == "backbone" else (1, 2, 3)
    terms = [{"type": "hier_ce", "pred": f"sources_l{lvl}", "target": t}
             for lvl, t in ((1, "label"), (2, "label_l2"), (3, "label_l3")) if lvl in levels]
    m = tiny(mode, "ccp15", loss=terms).train()
    assert m.levels == levels
    batch = hier_batch("ccp15")
    losses = m(batch)  # the model's training output: its config's named losses
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and len(losses) == len(m.levels)
    for name in ("direct", "td", "bu", "fuse", "gate_direct", "gate_td", "gate_bu", "se"):
        params = list(getattr(m, name).parameters()) if hasattr(m, name) else []
        assert all(p.grad is not None for p in params), name
        if params:
            assert sum(p.grad.abs().sum() for p in params) > 0, name
    if mode == "fixed":
        assert all(p.grad.abs().sum() > 0 for p in m.fixed_gates.parameters())


# --- configs ----------------------------------------------------------------------------------------------

LIGHT = ["cnif_light_ccp_backbone", "cnif_light_ccp_direct", "cnif_light_ccp_direct_bu", "cnif_light_ccp_direct_td",
         "cnif_light_ccp_direct_bu_td", "cnif_light_ccp_fixed", "cnif_light_ccp"]


def test_light_ablation_configs_differ_only_in_the_mode():
    cfgs = {n: C.load_config(n) for n in LIGHT}
    assert [c["model"]["mode"] for c in cfgs.values()] == ["backbone", "direct", "direct_bu", "direct_td",
                                                           "direct_bu_td", "fixed", "full"]
    ref = cfgs["cnif_light_ccp"]
    assert ref["model"]["backbone"] == {"name": "resnet18", "width": 0.5, "output_stride": 16}
    assert ref["data"]["label_set"] == "ccp15" and "label_set" not in ref["model"]  # hierarchy from the data
    types = [t["type"] for t in ref["data"]["train_transforms"]]
    assert types.index("HierarchyTarget") == types.index("ToTensor") - 1 == len(types) - 2
    for n, c in cfgs.items():
        for sec in ("data", "train", "eval"):
            assert c[sec] == ref[sec], (n, sec)
        assert {k: v for k, v in c["model"].items() if k != "mode"} == {
            k: v for k, v in ref["model"].items() if k != "mode"}
        assert c["loss"] == ref["loss"]   # the backbone row drops the upper levels' terms itself


@pytest.mark.parametrize("name", LIGHT)
def test_light_configs_build_and_their_loss_runs(name):
    cfg = C.load_config(name)
    meta = get_meta(cfg["data"]["label_set"])
    torch.manual_seed(0)
    m = build_model(cfg["model"], meta, cfg["loss"]).train()
    batch = hier_batch(meta, size=(64, 48))
    losses = m(batch)
    assert torch.isfinite(sum(losses.values())) and len(losses) == len(m.levels)


@pytest.mark.parametrize("name,label_set,n", [("cnif_r101_lip", "lip", 20), ("cnif_r101_ccp", "ccp15", 15),
                                              ("cnif_r101_ppp", "pascal_person_part", 7)])
def test_paper_size_configs(name, label_set, n):
    cfg = C.load_config(name)
    assert cfg["data"]["label_set"] == label_set and "label_set" not in cfg["model"]
    assert cfg["data"]["input_size"] == [473, 473] and cfg["model"]["mode"] == "full"
    t = cfg["train"]
    assert (t["optimizer"], t["lr"], t["momentum"], t["weight_decay"], t["poly_power"]) == ("sgd", 0.007, 0.9,
                                                                                              0.0005, 0.9)
    m = build_model(cfg["model"], get_meta(label_set))
    assert m.num_classes == n and m.hierarchy.sizes[1] == n
    assert m.backbone.deep_stem and m.backbone.strides["c5"] == 16
    assert isinstance(m.low_proj, torch.nn.Identity)  # ASPP (512) + Res-2 (512 channels): a plain sum


# --- training ---------------------------------------------------------------------------------------------



def test_light_trainer_step(tmp_path):
    from hparse.engine.trainer import Trainer

    root = make_folder_dataset(tmp_path / "data")
    cfg = C.validate_config({
        "name": "tiny_cnif",
        "model": {"type": "cnif", "mode": "full", **TINY},
        "loss": [{"type": "hier_ce", "pred": f"sources_l{lvl}", "target": t}
                 for lvl, t in ((1, "label"), (2, "label_l2"), (3, "label_l3"))],
        "data": {"layout": "folder", "root": str(root), "label_set": "pascal_person_part",
                 "train_split": "train", "val_split": "val", "input_size": [32, 32],
                 "train_transforms": [{"type": "RandomAffine", "size": [32, 32], "scale": 0.2, "rotation": 10},
                                      {"type": "HFlip", "p": 0.5}, {"type": "HierarchyTarget"},
                                      {"type": "ToTensor"}]},
        "eval": {"long_side": 48},
        "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 2, "epochs": 1, "max_steps": 2, "workers": 0,
                  "checkpoint_every": 1, "val_every": 1, "seed": 3},
    })
    torch.set_num_threads(1)
    tr = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.train()
    assert tr.step == 2 and (tmp_path / "run" / "last.pt").is_file()
    after = tr.model.state_dict()
    assert not torch.equal(before["fuse.l1.net.0.0.weight"], after["fuse.l1.net.0.0.weight"])
    assert not torch.equal(before["gate_bu.l3.fcs.1.weight"], after["gate_bu.l3.fcs.1.weight"])
    rec = tr.validate()
    assert 0 <= rec["miou"] <= 1


@pytest.mark.slow
def test_paper_size_training_step_473():
    """One SGD step of the paper-size model at 473x473.  Batch 2: the ASPP image-pooling branch has BatchNorm on
    a 1x1 map, which PyTorch refuses to train on a single image (the paper used 10 per GPU with synced BN)."""
    cfg = C.load_config("cnif_r101_lip")
    torch.manual_seed(0)
    m = build_model(cfg["model"], get_meta("lip"), cfg["loss"]).train()
    opt = torch.optim.SGD(m.parameters(), lr=cfg["train"]["lr"], momentum=0.9, weight_decay=5e-4)
    batch = hier_batch("lip", b=2, size=(473, 473))
    losses, out = m.forward_train(batch)
    assert out["parsing"].shape == (2, 20, 60, 60) and out["gates"].shape == (2, 25, 3)
    assert len(losses) == len(cfg["loss"])
    total = sum(losses.values())
    total.backward()
    w = m.fuse["l1"].net[0][0].weight.detach().clone()
    opt.step()
    assert torch.isfinite(total) and not torch.equal(w, m.fuse["l1"].net[0][0].weight)


def test_backbone_mode_keeps_the_level_1_terms_of_a_full_loss_list():
    """``model.mode=backbone`` on a paper-size config (whose loss list names all three levels) trains: Eq. 18 over
    the levels the model has."""
    cfg = C.load_config("cnif_r101_lip", ["model.mode=backbone"])
    assert len(cfg["loss"]) == 3
    m = tiny("backbone", "lip", loss=cfg["loss"]).train()
    losses = m(hier_batch("lip"))
    assert list(losses) == ["hier_ce_sources_l1"] and torch.isfinite(losses["hier_ce_sources_l1"])


def test_node_logits_in_r_nonneg_as_the_equations_say():
    """``node_logits: relu`` (paper size): every inference network's and the fusion's logits are >= 0 (Eq. 11-14,
    17); ``signed`` (the light rows) leaves them as the convolutions give them."""
    assert C.load_config("cnif_r101_lip")["model"]["node_logits"] == "relu"
    assert "node_logits" not in C.load_config("cnif_light_ccp")["model"]
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 48)
        nonneg, signed = tiny("full", "ccp15", node_logits="relu").eval(), tiny("full", "ccp15").eval()
        out, ref = nonneg.network(x), signed.network(x)
    for k in ("parsing", "level2", "level3", "direct_l1", "td_l1", "bu_l2"):
        assert out[k].min() >= 0, k
    assert ref["direct_l1"].min() < 0
    torch.testing.assert_close(out["direct_l1"], ref["direct_l1"].clamp_min(0))   # same weights (seeded)
    with pytest.raises(ValueError, match="node_logits"):
        tiny("full", node_logits="softplus")
