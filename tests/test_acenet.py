"""ACENet: LCM / GEM maths, skeleton branch shuffle, every ablation switch, configs, MAC counting of matmuls,
structure-point targets, and training steps (light through the Trainer; paper size, slow)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hparse import config as C
from hparse.data.dataset import collate
from hparse.data.targets import heatmap_size, joint_heatmaps
from hparse.labels import DatasetMeta, get_meta
from hparse.models import build_model
from hparse.models.acenet import (
    GLOBAL_MODULES,
    LOCAL_MODULES,
    GlobalExpansion,
    LocalCompression,
    SkeletonBranch,
)
from hparse.models.blocks import ChannelAttention, channel_shuffle
from hparse.models.complexity import count_macs

torch.set_num_threads(2)

TINY = {"type": "acenet", "backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16}, "ppm_ch": 16,
        "ppm_stage_ch": 8, "decoder_ch": 16, "low_reduce": 8, "edge_ch": 8, "skeleton_ch": 8, "fusion_ch": 16,
        "lcm_n": 8, "gem_d": 8}
MAIN_LIGHT = ("acenet_light_ccp_basic", "acenet_light_ccp_lcm", "acenet_light_ccp_gem", "acenet_light_ccp")
SWITCHES = ("local", "global_module", "lcm_gc", "lcm_n", "gem_d")


def classes(n: int) -> DatasetMeta:
    """A label set of ``n`` classes (the model's class count is its label set's)."""
    return DatasetMeta(f"test_{n}", ("background", *(f"part{i}" for i in range(1, n))))


# --- LCM -------------------------------------------------------------------------------------

def test_lcm_shapes_softmax_over_channels_and_eq2():
    torch.manual_seed(0)
    m = LocalCompression(skeleton_ch=6, parsing_ch=5, n=4, gc=True, k=3)
    s, p = torch.randn(2, 6, 4, 3), torch.randn(2, 5, 4, 3)
    a = m.affinity(s, p)
    assert a.shape == (2, 4, 5)  # N x C
    assert torch.allclose(a.sum(dim=2), torch.ones(2, 4), atol=1e-6)  # each row over the C channels
    assert torch.all(a >= 0) and not torch.allclose(a.sum(dim=1), torch.ones(2, 5))
    out = m(s, p)
    assert out.shape == p.shape
    assert torch.allclose(out, p * a.mean(dim=1)[:, :, None, None] + p, atol=1e-6)  # (1/N) sum_i a_c^i p_c + p_c


def test_lcm_zero_encoders_give_uniform_attention():
    m = LocalCompression(skeleton_ch=3, parsing_ch=4, n=2, gc=True, k=3)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
    p = torch.randn(1, 4, 3, 3)
    a = m.affinity(torch.randn(1, 3, 3, 3), p)
    assert torch.allclose(a, torch.full((1, 2, 4), 0.25))
    assert torch.allclose(m(torch.randn(1, 3, 3, 3), p), p * (1 + 1 / 4))  # l_c = (1/N) sum_i (1/C) p_c + p_c


def test_lcm_matches_hand_computation():
    """Eq. 1-2 written out with loops on a 2-point, 2-channel example (1x1 encoders, no GC)."""
    m = LocalCompression(skeleton_ch=2, parsing_ch=2, n=2, gc=False).double()
    ws = [[0.5, -1.0], [1.0, 0.25]]
    wp = [[1.0, 0.0], [0.5, -0.5]]
    with torch.no_grad():
        m.encode_s.weight.copy_(torch.tensor(ws)[:, :, None, None])
        m.encode_s.bias.copy_(torch.tensor([0.1, -0.2]))
        m.encode_p.weight.copy_(torch.tensor(wp)[:, :, None, None])
        m.encode_p.bias.zero_()
    s_val = [[1.0, 2.0], [0.0, -1.0]]  # S[channel][position], H x W = 1 x 2
    p_val = [[0.5, 1.5], [-1.0, 2.0]]
    s = torch.tensor(s_val, dtype=torch.float64).view(1, 2, 1, 2)
    p = torch.tensor(p_val, dtype=torch.float64).view(1, 2, 1, 2)
    bs = [0.1, -0.2]
    M = [[sum(ws[i][c] * s_val[c][x] for c in range(2)) + bs[i] for x in range(2)] for i in range(2)]
    Ph = [[sum(wp[j][c] * p_val[c][x] for c in range(2)) for j in range(2)] for x in range(2)]  # HW x C
    logits = [[sum(M[i][x] * Ph[x][j] for x in range(2)) for j in range(2)] for i in range(2)]
    A = [[math.exp(logits[i][j]) / sum(math.exp(v) for v in logits[i]) for j in range(2)] for i in range(2)]
    L = [[sum(A[i][c] * p_val[c][x] for i in range(2)) / 2 + p_val[c][x] for x in range(2)] for c in range(2)]
    assert torch.allclose(m.affinity(s, p)[0], torch.tensor(A, dtype=torch.float64))
    assert torch.allclose(m(s, p).view(2, 2), torch.tensor(L, dtype=torch.float64))


# --- GEM -------------------------------------------------------------------------------------

def test_gem_shapes_and_softmax_over_positions():
    torch.manual_seed(0)
    m = GlobalExpansion(parsing_ch=6, boundary_ch=6, d=4)
    p, e = torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    g = m.affinity(p, e)
    assert g.shape == (2, 15, 15)  # HW x HW: rows = parsing positions j, columns = boundary positions i
    assert torch.allclose(g.sum(dim=1), torch.ones(2, 15), atol=1e-6)  # G_i sums to 1 over the positions j
    assert not torch.allclose(g.sum(dim=2), torch.ones(2, 15), atol=1e-3)
    # explicit Eq. 3 for one column
    pe, ee = m.encode_p(p).flatten(2)[0], m.encode_e(e).flatten(2)[0]
    i = 7
    col = torch.softmax(pe.T @ ee[:, i], dim=0)
    assert torch.allclose(g[0, :, i], col, atol=1e-6)
    r = m.expand(p, e)
    k = m.value(p).flatten(2)
    assert r.shape == (2, 4, 3, 5)
    assert torch.allclose(r.flatten(2)[0, :, i], (k[0] * g[0, :, i]).sum(1), atol=1e-5)  # R_i = sum_j K_j G_ji
    x = m(p, e)
    assert x.shape == p.shape and m.fuse[0].in_channels == 6 + 4  # X = delta([P, R])


def test_gem_zero_encoders_average_k():
    m = GlobalExpansion(parsing_ch=3, boundary_ch=3, d=2)
    for mod in (m.encode_p, m.encode_e):
        nn.init.zeros_(mod.weight)
        nn.init.zeros_(mod.bias)
    p = torch.randn(1, 3, 2, 4)
    r = m.expand(p, torch.randn(1, 3, 2, 4))
    k = m.value(p)
    assert torch.allclose(r, k.mean(dim=(2, 3), keepdim=True).expand_as(r), atol=1e-6)


def test_affinity_scale_option():
    torch.manual_seed(0)
    a = LocalCompression(4, 4, n=2, gc=False)
    b = LocalCompression(4, 4, n=2, gc=False, scale="sqrt")
    b.load_state_dict(a.state_dict())
    s, p = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    la = torch.log(a.affinity(s, p))
    lb = torch.log(b.affinity(s, p))
    # logits divided by sqrt(HW) = 4: log-softmax differences shrink by 4
    assert torch.allclose((lb[..., 0] - lb[..., 1]) * 4, la[..., 0] - la[..., 1], atol=1e-4)
    with pytest.raises(ValueError):
        GlobalExpansion(4, 4, scale="bogus")


# --- blocks used by the ablations --------------------------------------------------------------

def test_channel_attention_danet():
    torch.manual_seed(0)
    m = ChannelAttention()
    x = torch.randn(2, 5, 3, 4)
    att = m.attention(x)
    assert att.shape == (2, 5, 5) and torch.allclose(att.sum(-1), torch.ones(2, 5), atol=1e-6)
    q = x.flatten(2)
    assert torch.allclose(att, torch.softmax(-(q @ q.transpose(1, 2)), dim=-1), atol=1e-5)
    assert torch.equal(m(x), x)  # gamma = 0 at init
    with torch.no_grad():
        m.gamma.fill_(0.5)
    assert torch.allclose(m(x), 0.5 * (att @ q).view_as(x) + x, atol=1e-6)


def test_skeleton_shuffle_pinned():
    # channel_shuffle of the concatenated levels (L = 4 levels x 4 channels, groups = L): chunk k of the result
    # holds channel k of every level, so every split mixes all four levels.
    x = torch.arange(16.0).view(1, 16, 1, 1)  # level l channel c = 4 l + c
    y = channel_shuffle(x, 4).flatten().tolist()
    assert y == [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]
    chunks = [c.flatten().tolist() for c in channel_shuffle(x, 4).chunk(4, dim=1)]
    assert chunks[1] == [1, 5, 9, 13]
    br = SkeletonBranch([8, 16, 32, 64], ch=4, num_points=3)
    assert br.shuffle.groups == 4
    feats = [torch.randn(1, 8, 16, 12), torch.randn(1, 16, 8, 6), torch.randn(1, 32, 4, 3), torch.randn(1, 64, 4, 3)]
    heat, s = br(feats)
    assert heat.shape == (1, 3, 16, 12) and s.shape == (1, 4, 16, 12)


# --- the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("local", LOCAL_MODULES)
@pytest.mark.parametrize("global_module", GLOBAL_MODULES)
def test_every_switch_builds_and_runs(local, global_module):
    torch.manual_seed(0)
    m = build_model({**TINY, "local": local, "global_module": global_module}, classes(7))
    x = torch.randn(2, 3, 64, 48)
    out = m.network(x)
    assert set(out) == {"parsing", "parsing_aux", "edge", "structure"}
    assert out["parsing"].shape == out["parsing_aux"].shape == (2, 7, 16, 12)
    assert out["edge"].shape == (2, 2, 16, 12) and out["structure"].shape == (2, 6, 16, 12)
    n_in = (local != "none") + (global_module != "none") or 1
    assert m.fusion[0][0].in_channels == n_in * 16
    sum(v.float().mean() for v in out.values()).backward()
    m.eval()
    with torch.no_grad():
        assert m.network(x)["parsing"].shape == (2, 7, 16, 12)
        res = m({"image": torch.rand(2, 3, 64, 48) * 255})  # the contract: logits + the side outputs as extras
    assert res.logits.shape == (2, 7, 16, 12) and set(res.extras) == {"edge", "structure"}


def test_switch_details_and_errors():
    m = build_model({**TINY, "local": "lcm", "lcm_gc": False, "lcm_n": 4, "num_points": 16}, classes(20))
    assert isinstance(m.local_module.encode_s, nn.Conv2d) and m.local_module.encode_s.out_channels == 4
    assert m.skeleton.head.out_channels == 16
    m = build_model({**TINY, "local": "lcm", "lcm_n": 4, "global_module": "gem", "gem_d": 2}, classes(20))
    assert m.local_module.encode_s.a2.out_channels == 4 and m.global_block.d == 2
    plain = build_model({**TINY, "local": "se", "global_module": "spatial_attention", "edge_branch": False,
                         "skeleton_branch": False}, classes(5))
    assert set(plain.network(torch.randn(2, 3, 32, 32))) == {"parsing", "parsing_aux"}
    from hparse.errors import ConfigError
    for bad in ({"local": "bogus"}, {"global_module": "bogus"}, {"local": "lcm", "skeleton_branch": False},
                {"global_module": "gem", "edge_branch": False}, {"global_": "gem"}):
        with pytest.raises((ValueError, ConfigError)):
            build_model({**TINY, **bad}, classes(5))


def test_structure_output_matches_heatmap_grid():
    """Model outputs and stride-4 targets share the grid, e.g. 119 x 119 for 473 (and 64 x 44 for 256 x 176)."""
    m = build_model({**TINY, "num_points": 16, "local": "none", "global_module": "none"}, classes(20)).eval()
    for size in ((473, 473), (256, 176), (97, 61)):
        with torch.no_grad():
            out = m.network(torch.zeros(1, 3, *size))
        assert tuple(out["structure"].shape[-2:]) == heatmap_size(size, 4) == tuple(out["edge"].shape[-2:])


def test_joint_heatmaps_can_ignore_visibility():
    joints = np.array([[10.0, 12.0, 0.0], [20.0, 8.0, 1.0], [np.nan, np.nan, 1.0]])
    _, w = joint_heatmaps(joints, (32, 32), sigma=1)
    assert w.tolist() == [0.0, 1.0, 0.0]
    hm, w = joint_heatmaps(joints, (32, 32), sigma=1, use_visibility=False)
    assert w.tolist() == [1.0, 1.0, 0.0] and hm[0].max() == 1.0


# --- configs -------------------------------------------------------------------------------------

def test_acenet_configs_build():
    names = [n for n in C.list_configs() if n.startswith("acenet")]
    assert set(MAIN_LIGHT) <= set(names) and {"acenet_r101_lip", "acenet_r101_ccp"} <= set(names)
    for name in names:
        cfg = C.load_config(name)
        assert cfg["model"]["type"] == "acenet"
        loss_targets = {t["pred"]: t for t in cfg["loss"]}
        assert loss_targets["parsing"].get("ohem") is True
        if name.endswith("_basic"):   # no side branches (test_basic_network_is_backbone_and_ppm_...)
            continue
        assert set(loss_targets) == {"parsing", "parsing_aux", "edge", "structure"}
        steps = [t["type"] for t in cfg["data"]["train_transforms"]]
        hm = loss_targets["structure"]
        if cfg["data"]["label_set"] == "lip":
            assert cfg["model"]["num_points"] == 16 and "JointHeatmapTarget" in steps
            assert (hm["target"], hm["weight_key"]) == ("joint_heatmaps", "joint_weights")
        else:
            assert cfg["model"]["num_points"] is None and "PartCentreTarget" in steps
            assert (hm["target"], hm["weight_key"]) == ("part_heatmaps", "part_weights")
        assert steps.index("ToTensor") == len(steps) - 1 and steps.index("HFlip") < steps.index("EdgeTarget")
        for t in cfg["data"]["train_transforms"]:
            if t["type"].endswith("Target") and t["type"] != "EdgeTarget":
                assert t["stride"] == 4
        if "light" in name:
            assert cfg["model"]["backbone"] == {"name": "resnet18", "width": 0.5, "output_stride": 16}
            build_model(cfg["model"], get_meta(cfg["data"]["label_set"]), cfg["loss"])
    r101 = C.load_config("acenet_r101_lip")
    assert r101["train"]["lr"] == 0.007 and r101["train"]["batch_size"] == 40
    assert r101["data"]["input_size"] == [473, 473] and r101["model"]["backbone"]["deep_stem"] is True


def test_main_light_ablations_differ_only_in_model_switches():
    """The module rows differ in their switches only; the basic row is the paper's plain one (next test)."""
    cfgs = {n: C.load_config(n) for n in MAIN_LIGHT}
    stripped = []
    for name, cfg in cfgs.items():
        if name.endswith("_basic"):
            continue
        c = copy.deepcopy(cfg)
        for k in ("name", "description"):
            c.pop(k, None)
        for k in SWITCHES:
            c["model"].pop(k, None)
        stripped.append(c)
    assert all(s == stripped[0] for s in stripped[1:])
    assert len(stripped) == 3
    sw = {n: (c["model"]["local"], c["model"]["global_module"]) for n, c in cfgs.items()}
    assert sw == {"acenet_light_ccp_basic": ("none", "none"), "acenet_light_ccp_lcm": ("lcm", "none"),
                  "acenet_light_ccp_gem": ("none", "gem"), "acenet_light_ccp": ("lcm", "gem")}


@pytest.mark.parametrize("name,full", [("acenet_light_ccp_basic", "acenet_light_ccp"),
                                       ("acenet_r101_lip_basic", "acenet_r101_lip")])
def test_basic_network_is_backbone_and_ppm_without_side_branches(name, full):
    """Tables 1-3 'Basic Network': no boundary or skeleton branch, no L_bd / L_ske, no targets for them; the same
    data, schedule and trunk as the full model."""
    cfg, ref = C.load_config(name), C.load_config(full)
    assert [t["pred"] for t in cfg["loss"]] == ["parsing_aux", "parsing"]
    assert {t["type"] for t in cfg["data"]["train_transforms"]} & {"EdgeTarget", "PartCentreTarget",
                                                                     "JointHeatmapTarget"} == set()
    assert cfg["train"] == ref["train"] and cfg["eval"] == ref["eval"]
    with torch.device("meta"):   # paper size too: the modules without initialising a ResNet-101
        m = build_model(cfg["model"], get_meta(cfg["data"]["label_set"]), loss=cfg["loss"])
    assert m.boundary is None and m.skeleton is None and m.local_module is None and m.global_block is None
    if name.startswith("acenet_light"):   # a training step at light size only (ResNet-101 is slow here)
        m = build_model(cfg["model"], get_meta(cfg["data"]["label_set"]), loss=cfg["loss"]).train()
        x = torch.rand(2, 3, 64, 48) * 255
        batch = {"image": x, "label": torch.randint(0, m.num_classes, (2, 64, 48))}
        losses = m(batch)
        assert set(losses) == {"ce_parsing_aux", "ce_parsing"}
        assert set(m.network(x)) == {"parsing", "parsing_aux"}


def test_spatial_attention_competitor_is_danets_position_attention():
    """Table 2's 'Self-attention (spatial)' row builds DANet's position attention module on P."""
    from hparse.models.blocks import PositionAttention

    cfg = C.load_config("acenet_light_ccp_spatial_attention")
    m = build_model(cfg["model"], get_meta("ccp15"), loss=cfg["loss"])
    assert isinstance(m.global_block, PositionAttention)


# --- MACs of matmuls -------------------------------------------------------------------------------

def test_count_macs_counts_matmuls():
    class Products(nn.Module):
        def forward(self, x):
            a = x.flatten(2)  # B, C, HW
            y = torch.bmm(a, a.transpose(1, 2))  # B C C: B*C*C*HW
            y = y @ a  # B*C*HW*C
            torch.matmul(a[0], a[0].T)  # C*C*HW
            torch.einsum("bij,bjk->bik", a, a.transpose(1, 2))  # B*C*HW*C
            torch.einsum("...ij,...jk->...ik", a, a.transpose(1, 2))  # the same
            F.scaled_dot_product_attention(a[:, None], a[:, None], a[:, None])  # B*C*C*(HW+HW)
            return y

    b, c, hw = 2, 4, 15
    expected = 4 * b * c * c * hw + c * c * hw + b * c * c * 2 * hw
    assert count_macs(Products(), (b, c, 3, 5)) == expected
    assert count_macs(Products(), (b, c, 3, 5), include_matmul=False) == 0


def _fed_twice(name: str, module: nn.Module) -> nn.Module:
    """``module`` (two inputs) under attribute ``name``, fed one tensor as both inputs, for count_macs."""
    class Wrap(nn.Module):
        def forward(self, x):
            return getattr(self, name)(x, x)

    wrap = Wrap()
    wrap.add_module(name, module)
    return wrap


def test_count_macs_lcm_gem_attribution():
    gem = _fed_twice("gem", GlobalExpansion(parsing_ch=6, boundary_ch=6, d=4))
    hw = 5 * 3
    per: dict[str, int] = {}
    total = count_macs(gem, (1, 6, 5, 3), per_module=per)
    convs = hw * (3 * 6 * 4 + (6 + 4) * 6)
    matmul = 2 * hw * hw * 4  # P_e^T E_e and K G
    assert total == convs + matmul and per["gem"] == matmul
    assert count_macs(gem, (1, 6, 5, 3), include_matmul=False) == convs
    lcm = _fed_twice("lcm", LocalCompression(skeleton_ch=6, parsing_ch=6, n=2, gc=False))
    per = {}
    total = count_macs(lcm, (1, 6, 5, 3), per_module=per)
    assert per["lcm"] == 2 * hw * 6 and total == hw * (6 * 2 + 6 * 6) + 2 * hw * 6


# --- training steps ---------------------------------------------------------------------------

def _light_cfg_on(root, layout, label_set):
    return C.load_config("acenet_light_ccp", [
        f"data.layout={layout}", f"data.root={root}", f"data.label_set={label_set}", "data.val_split=null",
        "train.batch_size=2", "train.epochs=1", "train.max_steps=1", "train.workers=0", "train.warmup_iters=0"])


def _one_trainer_step(cfg, tmp_path):
    from hparse.engine.trainer import Trainer

    t = Trainer(cfg, tmp_path / "run", device="cpu", progress=False)
    batch = t._to_device(collate([t.dataset[0], t.dataset[1]]))
    parts, out = t.model.forward_train(batch)
    assert set(parts) == {"ce_parsing_aux", "ce_parsing", "balanced_edge_ce_edge", "heatmap_mse_structure"}
    assert all(torch.isfinite(v) for v in parts.values())
    assert out["structure"].shape == batch["part_heatmaps"].shape
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train()
    assert t.step == 1 and (tmp_path / "run" / "last.pt").is_file()
    after = t.model.state_dict()
    for prefix in ("trunk.backbone.", "skeleton.head.", "local_module.", "global_block.", "boundary.classifier."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


def test_light_training_step_through_trainer(tmp_path):
    from tests.test_engine import make_folder_dataset

    root = make_folder_dataset(tmp_path / "data", n=4)
    _one_trainer_step(_light_cfg_on(root, "folder", "pascal_person_part"), tmp_path)


def test_light_training_step_on_ccp(ccp_root, tmp_path):
    _one_trainer_step(_light_cfg_on(ccp_root, "ccp", "ccp15"), tmp_path)


@pytest.mark.slow
def test_paper_size_training_step_473():
    """ResNet-101 ACENet (acenet_r101_lip), one SGD step at 473 x 473, batch 1 (about 80 s, 4.5 GB on 2 CPU threads).

    Batch 1 cannot train the PPM's 1x1-bin stage (BatchNorm over a single value per channel), so that stage
    runs its BN in eval mode here; real runs use batch >= 2."""
    torch.manual_seed(0)
    cfg = C.load_config("acenet_r101_lip")
    m = build_model(cfg["model"], get_meta("lip"), cfg["loss"]).train()
    m.trunk.context.stages[0].eval()
    opt = torch.optim.SGD(m.parameters(), lr=cfg["train"]["lr"], momentum=0.9, weight_decay=5e-4)
    batch = {"image": torch.rand(1, 3, 473, 473) * 255, "label": torch.randint(0, 20, (1, 473, 473)),
             "edge": torch.randint(0, 2, (1, 473, 473)), "joint_heatmaps": torch.rand(1, 16, 119, 119) ** 8,
             "joint_weights": torch.ones(1, 16)}
    w0 = m.skeleton.head.weight.detach().clone()
    parts, out = m.forward_train(batch)
    assert out["parsing"].shape == (1, 20, 119, 119) and out["structure"].shape == (1, 16, 119, 119)
    total = sum(parts.values())
    total.backward()
    opt.step()
    assert torch.isfinite(total) and len(parts) == 4
    assert not torch.equal(w0, m.skeleton.head.weight)


def test_paper_size_configs_scale_randomly_then_crop_as_the_paper_says():
    """'random scaling between 0.5 and 2' taken literally (as the CNIF config): scale, then a crop of the input size."""
    for name in [n for n in C.list_configs() if n.startswith("acenet_r101")]:
        cfg = C.load_config(name)
        steps = cfg["data"]["train_transforms"]
        assert steps[0] == {"type": "RandomScale", "range": [0.5, 2.0]}, name
        assert steps[1]["type"] == "RandomCrop" and steps[1]["size"] == cfg["data"]["input_size"], name
        assert "RandomAffine" not in {s["type"] for s in steps}
