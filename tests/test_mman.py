"""MMAN: generator outputs, discriminator receptive fields, adversarial training (exact resume, quirks),
Table 4 metrics (IPR, low-resolution mIoU), configs and the convergence plot."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hparse import config as C
from hparse.engine.checkpoint import load_checkpoint
from hparse.engine.hooks import AdversarialHook
from hparse.engine.inference import Predictor
from hparse.engine.optim import build_optimizer, make_lr_lambda
from hparse.engine.trainer import Trainer
from hparse.errors import ConfigError
from hparse.labels import get_meta
from hparse.losses import CrossEntropy
from hparse.metrics.semantic import ConfusionMatrix, IPRMeter, isolated_pixel_rate, low_resolution, resize_label_nearest
from hparse.models import build_model
from hparse.models.adversarial import AdversarialCritic, d_pair
from hparse.models.complexity import count_params
from hparse.models.mman import DISCRIMINATOR_KINDS, VARIANTS, build_discriminator

from .test_engine import make_folder_dataset

TINY = {"type": "mman", "backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16},
        "decoder_channels": [16, 8, 8, 8], "skip_channels": [8, 8, 8, 8], "ndf": 4}
META7 = get_meta("pascal_person_part")  # 7 classes


def tiny(variant: str = "mman", meta=META7, **kw):
    torch.manual_seed(0)
    return build_model({**TINY, "variant": variant, **kw}, meta)


def adversarial_cfg(**options) -> dict:
    """A validated ``train.adversarial`` section (defaults filled)."""
    return C.validate_config({"train": {"adversarial": options}})["train"]["adversarial"]


def hook_for(m, seed: int = 0, accumulate: int = 1, **options):
    """The trainer's adversarial hook for ``m``'s critic, on a stand-in trainer with what the hook reads."""
    trainer = SimpleNamespace(model=m, accumulate=accumulate, device=torch.device("cpu"), seed=seed,
                              out=Path("unused"), step=0, epoch=0, amp=False, lr_lambda=lambda step: 1.0,
                              scaler=torch.amp.GradScaler("cuda", enabled=False))
    return AdversarialHook(m.training_companion(), adversarial_cfg(**options), trainer), trainer


def _input_grad(d, x: torch.Tensor, unit=None) -> torch.Tensor:
    """|d out[unit] / d x| summed over channels -> (H, W)."""
    x = x.clone().requires_grad_(True)
    out = d(x)
    (out.sum() if unit is None else out[(0, 0, *unit)]).backward()
    return x.grad[0].abs().sum(0)


# --------------------------------------------------------------------------- generator


def test_generator_outputs_at_one_sixteenth_and_full_resolution():
    m = tiny("multiple_an").eval()
    with torch.no_grad():
        out = m.network(torch.randn(1, 3, 256, 256))
        assert set(out) == {"parsing", "parsing_low", "parsing_mid"}  # generator outputs only
        assert out["parsing_low"].shape == (1, 7, 16, 16)
        assert out["parsing_mid"].shape == (1, 7, 64, 64)
        assert out["parsing"].shape == (1, 7, 256, 256)
        out = m.network(torch.randn(2, 3, 256, 176))  # the light configs' crops
        assert out["parsing_low"].shape == (2, 7, 16, 11) and out["parsing"].shape == (2, 7, 256, 176)
        assert m.network(torch.randn(1, 3, 250, 170))["parsing"].shape == (1, 7, 250, 170)  # any size
        res = m({"image": 255 * torch.rand(1, 3, 64, 48)})  # the contract: parsing logits + the 1/16 map
        assert res.logits.shape == (1, 7, 64, 48) and set(res.extras) == {"parsing_low"}
    assert set(tiny("baseline").network(torch.randn(1, 3, 64, 64))) == {"parsing", "parsing_low"}


def test_variants_and_predictor_use_the_generator_only():
    for variant, names in VARIANTS.items():
        critic = tiny(variant).training_companion()
        if not names:
            assert critic is None  # the baseline trains plainly
            continue
        assert isinstance(critic, AdversarialCritic)
        assert tuple(critic.discriminators) == names
        assert critic.inputs == {n: DISCRIMINATOR_KINDS[n][0] for n in names}
    m = tiny("mman")
    critic = m.training_companion()
    assert critic is m.training_companion()  # one critic per model, trained across steps
    critic_tensors = {id(p) for p in critic.parameters()} | {id(b) for b in critic.buffers()}
    assert critic_tensors and critic_tensors.isdisjoint({id(p) for p in m.parameters()})
    assert critic_tensors.isdisjoint({id(v) for v in m.state_dict(keep_vars=True).values()})
    assert not any("discriminators" in k for k in m.state_dict())
    assert not any(k.startswith("critic") for k in m.state_dict())
    img = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    label = Predictor(m, long_side=64).predict([img])[0]
    assert label.shape == (50, 40)


def test_every_variant_starts_from_the_same_generator_at_one_seed():
    """Rows of a table differ only in what they add: at one seed the generator (and the discriminators two
    variants share in the same order) start identical, the 1/4 head of Multiple AN included or not."""
    base = tiny("baseline").state_dict()
    mman = tiny("mman")
    for variant in VARIANTS:
        m = tiny(variant)
        state = m.state_dict()
        assert all(torch.equal(state[k], v) for k, v in base.items()), variant
        if variant == "multiple_an":
            assert all(torch.equal(m.critic.state_dict()[k], v) for k, v in mman.critic.state_dict().items())


def test_generator_only_state_loads_and_keeps_discriminators():
    gen_state = {k: v for k, v in tiny("baseline").state_dict().items()}
    m = tiny("mman")
    critic = m.training_companion()
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    m.load_state_dict(gen_state)  # e.g. a warm start from the baseline
    assert all(torch.equal(v, critic.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in gen_state.items())
    # a checkpoint of the versions that kept D inside the model: its discriminator weights are dropped
    other = tiny("mman").training_companion()
    for p in other.parameters():
        p.data.add_(1.0)
    legacy = {**gen_state, **{f"discriminators.{k}": v for k, v in other.discriminators.state_dict().items()}}
    m.load_state_dict(legacy)
    assert all(torch.equal(v, critic.state_dict()[k]) for k, v in before.items())
    bad = dict(gen_state)
    dropped = next(iter(bad))
    bad.pop(dropped)
    with pytest.raises(RuntimeError, match=rf"(?i)missing.*{re.escape(dropped)}"):  # the generator loads strictly
        m.load_state_dict(bad)


# --------------------------------------------------------------------------- discriminators


def test_macro_discriminator_sees_the_whole_low_resolution_map():
    for norm in (False, True):  # InstanceNorm couples all positions; norm=False shows the conv geometry
        d = build_discriminator("macro", 10, ndf=4, norm=norm).double()
        assert d.receptive_field == 46
        for size in ((16, 16), (16, 11)):  # paper 256x256 crop; the light configs' 256x176 crop
            x = torch.randn(1, 10, *size, dtype=torch.float64)
            out = d(x)
            assert out.shape == (1, 1, 1, 1)  # one global score
            g = _input_grad(d, x)
            assert (g > 0).all(), f"macro D output blind to some of the {size} map (norm={norm})"


def test_micro_discriminator_receptive_field_is_22x22():
    d = build_discriminator("micro", 10, ndf=4, norm=False).double()
    assert d.receptive_field == 22
    x = torch.randn(1, 10, 96, 96, dtype=torch.float64)
    out = d(x)
    assert out.shape == (1, 1, 12, 12)  # 3 stride-2 convs: one response per 8x8 step
    g = _input_grad(d, x, unit=(5, 6))
    rows, cols = torch.nonzero(g > 0, as_tuple=True)
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert (h, w) == (22, 22)
    assert int((g > 0).sum()) == 22 * 22  # a full square
    assert (rows.min(), cols.min()) == (5 * 8 - 7, 6 * 8 - 7)  # padding 1 at each of the 3 layers
    with_norm = build_discriminator("micro", 23, ndf=64)
    assert with_norm(torch.randn(1, 23, 256, 256)).shape == (1, 1, 32, 32)


def test_global_discriminator_sees_the_whole_full_resolution_map():
    d = build_discriminator("global", 5, ndf=2, global_max_mult=2, norm=False).double()
    x = torch.randn(1, 5, 256, 256, dtype=torch.float64)
    assert d(x).shape == (1, 1, 1, 1) and d.receptive_field >= 256
    assert (_input_grad(d, x) > 0).all()
    assert build_discriminator("global", 5, ndf=2)(torch.randn(1, 5, 256, 176)).shape == (1, 1, 1, 1)


def test_discriminator_parameters_vs_paper_table5(capsys):
    """Paper Table 5 (#par): Single AN 3.2M, Double AN 3.8M, Multiple AN 1.8M, MMAN 1.2M (LIP, C = 20)."""
    in_ch = 20 + 3
    n = {a: count_params(build_discriminator(a, in_ch, ndf=64)) for a in ("macro", "micro", "global")}
    assert n["macro"] == 683_073 and n["micro"] == 679_233  # 4x4 convs 23-64-128-256-1 (+1x1 for micro)
    ours = {"single_an": n["global"], "double_an": n["global"] + n["micro"],
            "multiple_an": n["macro"] + 2 * n["micro"], "mman": n["macro"] + n["micro"]}
    paper = {"single_an": 3.2e6, "double_an": 3.8e6, "multiple_an": 1.8e6, "mman": 1.2e6}
    with capsys.disabled():
        print("\nD parameters (ndf 64, C 20): " + ", ".join(f"{k} {v / 1e6:.2f}M (paper {paper[k] / 1e6:.1f}M)"
                                                             for k, v in ours.items()))
    assert abs(ours["mman"] - paper["mman"]) / paper["mman"] < 0.2
    assert abs(ours["multiple_an"] - paper["multiple_an"]) / paper["multiple_an"] < 0.2


def test_paper_size_ndf_60_gives_table5_counts():
    """``ndf: 60`` (the paper-size configs) reproduces Table 5's MMAN 1.2M and Multiple AN 1.8M to the digit shown;
    the global discriminator of Single / Double AN is hparse's own design and stays above (Single AN 4.29M vs 3.2M,
    Double AN = global + micro 4.89M vs 3.8M)."""
    cfg = C.load_config("mman_r101_lip")
    assert cfg["model"]["ndf"] == 60
    n = {a: count_params(build_discriminator(a, 20 + 3, ndf=60)) for a in ("macro", "micro", "global")}
    assert f"{(n['macro'] + n['micro']) / 1e6:.2f}" == "1.20"
    assert f"{(n['macro'] + 2 * n['micro']) / 1e6:.2f}" == "1.80"
    assert f"{n['global'] / 1e6:.2f}" == "4.29" and f"{(n['global'] + n['micro']) / 1e6:.2f}" == "4.89"


# --------------------------------------------------------------------------- adversarial step


def _batch(b=2, h=64, w=64, c=7, seed=0):
    """A training batch: images float 0..255 (the model normalises them), labels with an ignored band."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, c, (b, h, w), generator=g)
    label[:, :3] = 255
    return {"image": 255 * torch.rand(b, 3, h, w, generator=g), "label": label}


def _outputs(m, batch) -> dict:
    """The generator's raw outputs on a batch (what the trainer hands the hooks)."""
    return m.network(m.normalize(batch["image"]))


def test_d_inputs_one_hot_real_softmax_fake_ignore_zeroed():
    logits = torch.randn(2, 7, 16, 16, requires_grad=True)
    batch = _batch(h=256, w=256)
    real, fake = d_pair(logits, batch["label"], batch["image"])
    assert real.shape == fake.shape == (2, 10, 16, 16)
    low = low_resolution(batch["label"], 16)
    valid = low != 255
    assert torch.equal(real[:, :7].argmax(1)[valid], low[valid])
    assert torch.equal(real[:, :7].sum(1), valid.float())
    assert torch.allclose(fake[:, :7].sum(1), valid.float(), atol=1e-6)  # ignored pixels: zeros in both
    assert torch.allclose(real[:, 7:], fake[:, 7:]) and fake.requires_grad and not real.requires_grad
    _, sharp = d_pair(logits, batch["label"], batch["image"], temperature=0.2)  # quirk: softmax(5 t)
    assert torch.allclose(sharp[:, :7][valid.unsqueeze(1).expand(-1, 7, -1, -1)],
                          (5 * logits).softmax(1)[valid.unsqueeze(1).expand(-1, 7, -1, -1)], atol=1e-6)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))


def test_d_step_probability_quirk():
    m = tiny("mman")
    critic = m.training_companion()
    every, trainer = hook_for(m)
    rare, _ = hook_for(m, seed=3, d_step_prob=0.1)
    assert all(every.d_should_step(s) for s in range(50))
    draws = [rare.d_should_step(s) for s in range(2000)]
    assert 0.08 < np.mean(draws) < 0.12
    again, other_seed = hook_for(m, seed=3, d_step_prob=0.1)[0], hook_for(m, seed=4, d_step_prob=0.1)[0]
    assert draws == [again.d_should_step(s) for s in range(2000)]  # a fresh (e.g. resumed) run draws the same
    assert draws != [other_seed.d_should_step(s) for s in range(2000)]
    batch = _batch()
    never, _ = hook_for(m, d_step_prob=0.0)
    d0 = _snapshot(critic)
    extra = never.after_forward(trainer, batch, _outputs(m, batch))
    assert set(extra) == {"adversarial"}
    logs = never.logs
    assert logs["d_step"] == 0 and not _changed(d0, critic) and "macro/d_real" in logs
    every.after_forward(trainer, batch, _outputs(m, batch))
    assert every.logs["d_step"] == 1 and _changed(d0, critic)
    # the hook steps D exactly on the drawn iterations (the trainer's step number)
    stepped, skipped = draws.index(True), draws.index(False)
    for step in (skipped, stepped):
        trainer.step = step
        d0 = _snapshot(critic)
        rare.after_forward(trainer, batch, _outputs(m, batch))
        assert rare.logs["d_step"] == float(draws[step]) and _changed(d0, critic) == draws[step]


def test_hook_steps_d_then_g_against_the_updated_d():
    """One iteration: D's optimiser steps first (on the detached fake), then G's adversarial loss is computed
    against the updated, frozen D and reaches the generator only."""
    m, batch = tiny("mman"), _batch()
    critic = m.training_companion()
    hook, trainer = hook_for(m)
    outputs = _outputs(m, batch)
    pairs = critic.pairs(outputs, batch["label"], m.normalize(batch["image"]))
    old = copy.deepcopy(critic)
    ref = copy.deepcopy(critic)  # D's step by hand: its loss, the D optimiser of train.adversarial
    ref.requires_grad_(True)
    ref_opt = build_optimizer(ref, adversarial_cfg()["optimizer"])
    ref.d_loss(pairs)[0].backward()
    ref_opt.step()
    g = hook.after_forward(trainer, batch, outputs)["adversarial"]
    for a, b in zip(critic.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    assert _changed(_snapshot(old), critic)
    with torch.no_grad():
        g_new, logs = critic.g_loss(pairs)
        g_old, _ = old.g_loss(pairs)
    assert torch.allclose(g, g_new) and not torch.allclose(g, g_old)  # G is judged by the updated D
    assert {"macro/g", "micro/g"} <= set(logs) and {"macro/g", "micro/g", "macro/d_real"} <= set(hook.logs)
    critic.zero_grad(set_to_none=True)
    m.zero_grad(set_to_none=True)
    g.backward()
    assert all(p.grad is None for p in critic.parameters())  # D frozen during G's step
    assert sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None) > 0


def _g_grad_norm(m, batch, **options) -> float:
    """|grad| reaching the generator from the hook's adversarial loss (D not stepped)."""
    hook, trainer = hook_for(m, d_step_prob=0.0, **options)
    m.zero_grad(set_to_none=True)
    loss = hook.after_forward(trainer, batch, _outputs(m, batch))["adversarial"]
    if not loss.requires_grad:
        return 0.0
    loss.backward()
    return float(sum(p.grad.abs().sum() for p in m.parameters() if p.grad is not None))


def test_detach_macro_quirk_cuts_macro_gradient_to_g():
    m, batch = tiny("macro"), _batch()
    assert _g_grad_norm(m, batch) > 0
    assert _g_grad_norm(m, batch, detach_macro=True) == 0
    m = tiny("mman")  # the micro term still reaches G
    assert _g_grad_norm(m, batch, detach_macro=True) > 0
    assert all(p.grad is None for p in m.training_companion().parameters())  # D frozen during G's step


def test_gan_losses_and_config_errors():
    m, batch = tiny("micro"), _batch()
    out = _outputs(m, batch)
    vals = {}
    for kind in ("bce", "lsgan"):
        mc = copy.deepcopy(m)  # a copy owns a copy of the critic
        hook, trainer = hook_for(mc, gan_loss=kind, d_step_prob=0)
        hook.after_forward(trainer, batch, out)
        vals[kind] = hook.logs["micro/d_real"]
    assert vals["bce"] != vals["lsgan"]

    with pytest.raises(ConfigError, match="unknown key"):
        adversarial_cfg(**{"lambda": 1})
    with pytest.raises(ConfigError, match="gan_loss"):
        adversarial_cfg(gan_loss="wgan")
    with pytest.raises(ConfigError, match="unknown discriminator"):
        hook_for(m, weights={"macr": 1})
    hook_for(m, weights={"macro": 1})  # a kind this variant lacks: ignored (shared configs)
    with pytest.raises(ConfigError, match="accumulate"):
        hook_for(m, accumulate=2)
    assert tiny("baseline").training_companion() is None  # nothing to train adversarially


def test_keep_bn_training_quirk():
    m = tiny("baseline", keep_bn_training=True).eval()
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    drops = [x for x in m.modules() if isinstance(x, torch.nn.Dropout)]
    assert bns and all(b.training for b in bns) and drops and not any(d.training for d in drops)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # per-batch statistics: an image's output depends on its batch mates
        assert not torch.allclose(m.network(x[:1])["parsing"], m.network(x)["parsing"][:1], atol=1e-4)
    plain = tiny("baseline").eval()
    assert not any(b.training for b in plain.modules() if isinstance(b, torch.nn.BatchNorm2d))


@pytest.mark.slow
def test_paper_size_mman_one_adversarial_step():
    """ResNet-101, 256x256, batch 1, 20 classes: one D step and one G step change both."""
    torch.manual_seed(0)
    cfg = C.load_config("mman_r101_lip")
    m = build_model(cfg["model"], get_meta("lip"), loss=cfg["loss"])
    m.train()
    hook, trainer = hook_for(m, **cfg["train"]["adversarial"])
    critic = m.training_companion()
    g_opt = torch.optim.Adam(m.parameters(), lr=2e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"image": 255 * torch.rand(1, 3, 256, 256, generator=g),
             "label": torch.randint(0, 20, (1, 256, 256), generator=g)}
    d0, g0 = _snapshot(critic), _snapshot(m)
    losses, out = m.forward_train(batch)
    assert out["parsing_low"].shape == (1, 20, 16, 16) and out["parsing"].shape == (1, 20, 256, 256)
    ce = 100 * F.cross_entropy(out["parsing"], batch["label"]) + \
        25 * CrossEntropy(resize="target")(out["parsing_low"], batch["label"])
    assert torch.allclose(sum(losses.values()), ce)  # the config's loss list: Eq. 4's cross-entropies
    g_adv = hook.after_forward(trainer, batch, out)["adversarial"]
    logs = hook.logs
    assert _changed(d0, critic) and logs["d_step"] == 1
    (sum(losses.values()) + g_adv).backward()
    g_opt.step()
    assert _changed(g0, m)
    assert {"macro/d_real", "macro/d_fake", "macro/g", "micro/d_real", "micro/d_fake", "micro/g"} <= set(logs)


# --------------------------------------------------------------------------- trainer


def tiny_adv_config(root, **train) -> dict:
    return C.validate_config({
        "name": "tiny_mman",
        "model": {**TINY, "variant": "mman"},
        "loss": [{"type": "ce", "weight": 100},
                 {"type": "ce", "pred": "parsing_low", "resize": "target", "weight": 25}],
        "data": {"layout": "folder", "root": str(root), "label_set": "pascal_person_part",
                 "train_split": "train", "val_split": "val", "input_size": [64, 48],
                 "train_transforms": [{"type": "RandomAffine", "size": [64, 48], "scale": 0.2, "rotation": 10},
                                      {"type": "HFlip", "p": 0.5}, {"type": "ToTensor"}]},
        "eval": {"long_side": 48},
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 2, "epochs": 1, "workers": 0,
                  "checkpoint_every": 1, "val_every": 1, "seed": 5,
                  "adversarial": {"optimizer": {"optimizer": "adam", "lr": 1e-3}}, **train},
    })


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("tiny_mman"))


def _adversarial_hook(trainer) -> AdversarialHook:
    (hook,) = [h for h in trainer.hooks if isinstance(h, AdversarialHook)]
    return hook


def test_trainer_adversarial_steps_resume_exactly_and_plot(tiny_root, tmp_path):
    torch.set_num_threads(1)
    Trainer(tiny_adv_config(tiny_root, max_steps=2), tmp_path / "full", device="cpu", progress=False).train()
    part = Trainer(tiny_adv_config(tiny_root, max_steps=1), tmp_path / "part", device="cpu", progress=False)
    part.train()
    resumed = Trainer(tiny_adv_config(tiny_root, max_steps=2), tmp_path / "part", device="cpu", progress=False)
    resumed.resume(tmp_path / "part" / "last.pt")
    resumed.train()
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["step"] == b["step"] == 2
    # the discriminators are the critic's, stored beside the model's weights, never in them
    assert not any("discriminators" in k for k in a["model"])
    assert set(a["adversarial"]) == {"optimizer", "critic"}
    assert any(k.startswith("discriminators.macro") for k in a["adversarial"]["critic"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ca, cb = a["adversarial"]["critic"], b["adversarial"]["critic"]
    assert ca.keys() == cb.keys()
    for k in ca:
        assert torch.equal(ca[k], cb[k]), k
    sa, sb = a["adversarial"]["optimizer"]["state"], b["adversarial"]["optimizer"]["state"]
    assert sa.keys() == sb.keys() and sa
    for i in sa:
        assert all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i])
    # the G optimiser holds the model's parameters and no discriminator parameter; the D optimiser the critic's
    critic = _adversarial_hook(resumed).critic
    assert critic is resumed.model.training_companion()
    g_params = [p for g in resumed.optimizer.param_groups for p in g["params"]]
    d_params = [p for g in _adversarial_hook(resumed).optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in g_params} == {id(p) for p in resumed.model.parameters()}
    assert len(g_params) == len(list(resumed.model.parameters()))
    assert {id(p) for p in d_params} == {id(p) for p in critic.parameters()}
    assert {id(p) for p in g_params}.isdisjoint({id(p) for p in d_params})

    from hparse.viz.plots import plot_adversarial_curves, read_adversarial_log

    recs = read_adversarial_log(tmp_path / "part")
    assert [r["step"] for r in recs] == [1, 2]
    assert {"d_real", "d_fake", "g", "p_real", "p_fake"} <= set(recs[0]["micro"]) and "macro" in recs[0]
    full_recs = read_adversarial_log(tmp_path / "full")
    assert json.dumps(full_recs) == json.dumps(recs)  # same losses as the uninterrupted run
    with open(tmp_path / "part" / "adversarial.jsonl", "a") as f:  # a step repeated after a crash
        f.write(json.dumps({**recs[1], "micro": {**recs[1]["micro"], "g": 123.0}}) + "\n")
    assert read_adversarial_log(tmp_path / "part")[1]["micro"]["g"] == 123.0
    png = plot_adversarial_curves(tmp_path / "part", tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    tags = set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for ev in (tmp_path / "full" / "tb").glob("events.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/adv/macro/d_real", "train/adv/macro/d_fake", "train/adv/macro/g", "train/adv/micro/g"} <= tags
    assert "train/adversarial" in tags  # G's adversarial loss is one of the named losses the trainer sums


def test_trainer_steps_d_on_the_drawn_iterations_only(tiny_root, tmp_path):
    """``d_step_prob`` through the trainer: D steps on the iterations drawn from ``(seed, step)``, G on all."""
    torch.set_num_threads(1)
    adv = {"optimizer": {"optimizer": "adam", "lr": 1e-3}, "d_step_prob": 0.5}
    t = Trainer(tiny_adv_config(tiny_root, adversarial=adv, epochs=3), tmp_path, device="cpu", progress=False)
    hook = _adversarial_hook(t)
    draws = [hook.d_should_step(s) for s in range(6)]
    assert t.total_steps > len(draws)  # the learning rate (D's follows G's schedule) is not 0 yet
    assert any(draws) and not all(draws)
    batch = t._to_device(next(iter(t._loader())))
    for step, draw in enumerate(draws):
        assert t.step == step
        d0, g0 = _snapshot(hook.critic), _snapshot(t.model)
        losses = t.run_step(batch)
        assert set(losses) == {"ce_parsing", "ce_parsing_low", "adversarial"}
        assert hook.logs["d_step"] == float(draw) and _changed(d0, hook.critic) == draw
        assert _changed(g0, t.model)


def test_trainer_without_discriminators_is_plain(tiny_root, tmp_path):
    cfg = tiny_adv_config(tiny_root, max_steps=1)
    cfg["model"]["variant"] = "baseline"
    t = Trainer(cfg, tmp_path, device="cpu", progress=False)
    assert t.model.training_companion() is None
    assert not any(isinstance(h, AdversarialHook) for h in t.hooks)
    t.train()
    assert "adversarial" not in load_checkpoint(tmp_path / "last.pt")
    assert not (tmp_path / "adversarial.jsonl").exists()


def test_step_lr_policy():
    train = C.validate_config({"train": {"lr_policy": "step", "lr_step_epochs": [15]}})["train"]
    f = make_lr_lambda(train, total=300, iters_per_epoch=10)
    assert f(0) == 1.0 and f(149) == 1.0 and f(150) == pytest.approx(0.1) and f(299) == pytest.approx(0.1)


# --------------------------------------------------------------------------- configs


def test_light_configs_differ_only_in_discriminators():
    names = ["mman_light_ccp", "mman_light_ccp_baseline", "mman_light_ccp_macro", "mman_light_ccp_micro",
             "mman_light_ccp_single_an", "mman_light_ccp_double_an", "mman_light_ccp_multiple_an"]
    cfgs = {n: C.load_config(n) for n in names}
    ref = cfgs["mman_light_ccp"]
    assert ref["model"]["backbone"] == {"name": "resnet18", "width": 0.5, "output_stride": 16}
    assert ref["eval"]["tta_scales"] == [0.8, 1.0, 1.2]
    assert ref["train"]["adversarial"]["d_step_prob"] == 1.0 and not ref["train"]["adversarial"]["detach_macro"]
    for n, cfg in cfgs.items():
        a, b = copy.deepcopy(cfg), copy.deepcopy(ref)
        for c in (a, b):
            c.pop("name")
            c.pop("description")
            c["model"].pop("variant")
            if n.endswith("multiple_an"):  # + the CE of the 1/4 map
                c["loss"] = [t for t in c["loss"] if t["pred"] != "parsing_mid"]
        assert a == b, n
    variants = {cfgs[n]["model"]["variant"] for n in names}
    assert variants == set(VARIANTS)
    m = build_model(ref["model"], get_meta("ccp15"))  # light: the macro D sees the whole 16x11 map of a 256x176 crop
    macro = m.training_companion().discriminators["macro"]
    with torch.no_grad():
        low = m.network(torch.randn(1, 3, 256, 176))["parsing_low"]
        assert low.shape == (1, 15, 16, 11) and macro(torch.randn(1, 18, 16, 11)).shape == (1, 1, 1, 1)
    for v in ("baseline", "macro", "micro", "single_an", "double_an", "multiple_an"):
        p = C.load_config(f"mman_r101_lip_{v}")
        assert p["model"]["variant"] == v and p["train"]["batch_size"] == 1 and p["train"]["lr"] == 2e-4


# --------------------------------------------------------------------------- Table 4 metrics


def test_ce_on_the_low_resolution_map_uses_nearest_label():
    label = torch.randint(0, 5, (2, 64, 48))
    assert torch.equal(resize_label_nearest(label, (4, 3)), low_resolution(label, 16))
    logits = torch.randn(2, 5, 4, 3)
    assert torch.allclose(CrossEntropy(resize="target")(logits, label),
                          F.cross_entropy(logits, low_resolution(label, 16)))


def test_ipr_on_hand_made_maps():
    gt = np.zeros((32, 32), np.uint8)
    gt[4:28, 8:24] = 1  # a torso
    gt[8:20, 10:14] = 2  # an arm
    assert isolated_pixel_rate(gt) == (0, 1024)  # the ground truth: the floor
    pred = gt.copy()
    pred[12, 12] = 0  # a background hole in the arm: isolated, counted (default: every label)
    pred[20, 20] = 2  # a stray arm pixel on the torso
    pred[1, 1] = 1  # a stray torso pixel in the background
    assert isolated_pixel_rate(pred) == (3, 1024)
    assert isolated_pixel_rate(pred, foreground_only=True) == (2, 1024 - int((pred == 0).sum()))
    pred[25:27, 10:12] = 2  # a 2x2 speckle: not isolated at k=1, counted with k=4 (speckles)
    assert isolated_pixel_rate(pred)[0] == 3 and isolated_pixel_rate(pred, k=4)[0] == 7
    meter = IPRMeter()
    meter.update(pred)
    meter.update(gt)
    assert meter.value == pytest.approx(3 / 2048)  # ratio of sums over the dataset


def test_low_resolution_miou_on_hand_made_maps():
    """The 1/16 mIoU ignores pixel-level detail but sees a misplaced part."""
    gt = np.zeros((64, 64), np.uint8)
    gt[16:48, 16:48] = 1
    thin = gt.copy()
    thin[20, 16:48] = 0  # a one-pixel crack: not on a sampled centre (8 + 16 k)
    moved = np.zeros_like(gt)
    moved[0:32, 32:64] = 1  # the part in the wrong place

    def miou(p, g):
        return ConfusionMatrix(2).update(p, g).scores().miou

    assert miou(low_resolution(thin, 16), low_resolution(gt, 16)) == 1.0
    assert miou(thin, gt) < 1.0
    assert miou(low_resolution(moved, 16), low_resolution(gt, 16)) < 0.5


def test_resume_of_a_checkpoint_that_kept_the_discriminators_in_the_model(tiny_root, tmp_path):
    """Older checkpoints stored D under model/discriminators.* and only D's optimiser under "adversarial"."""
    Trainer(tiny_adv_config(tiny_root, max_steps=1), tmp_path / "run", device="cpu", progress=False).train()
    path = tmp_path / "run" / "last.pt"
    ck = torch.load(path, weights_only=True)
    critic = ck["adversarial"].pop("critic")
    ck["model"].update(critic)
    torch.save(ck, path)
    resumed = Trainer(tiny_adv_config(tiny_root, max_steps=2), tmp_path / "run", device="cpu", progress=False)
    resumed.start()
    state = _adversarial_hook(resumed).critic.state_dict()
    assert state.keys() == critic.keys()
    assert all(torch.equal(state[k], v) for k, v in critic.items())
    assert not any(k.startswith("discriminators.") for k in resumed.model.state_dict())


def test_generator_low_resolution_output_is_an_extra_for_table_4():
    """``low_res``: the generator's own 1/16 parsing (what the macro discriminator judges) as a label map at the
    image's size, for ``hparse eval --low-res-mode generator``; evaluator outputs can carry class probabilities."""
    m = tiny().eval()
    img = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    out = Predictor(m, long_side=64).outputs([img], with_extras=True, with_probs=True)[0]
    low = out["extras"]["low_res"]
    assert low.shape == (50, 40) and low.dtype == np.uint8 and low.max() < m.num_classes
    assert out["probs"].shape == (m.num_classes, 50, 40)
    np.testing.assert_array_equal(out["probs"].argmax(0), out["sem_seg"])
    assert set(tiny("baseline").postprocess({})) == set()        # no low-resolution map asked for: none given


def test_eval_at_the_original_size():
    """``eval.long_side: null`` runs the network on the image at its own size (times each TTA scale), as MMAN's
    paper tests (``mman_r101_lip``)."""
    assert C.load_config("mman_r101_lip")["eval"]["long_side"] is None
    model = build_model({"type": "ce2p", "backbone": {"name": "resnet18", "width": 0.125, "output_stride": 16},
                         "ppm_ch": 16, "ppm_stage_ch": 8, "edge_ch": 8, "decoder_ch": 16, "fusion_ch": 16,
                         "low_reduce": 8}, get_meta("ccp15"))
    pred = Predictor(model, long_side=None, scales=(0.8, 1.0))
    assert pred.resizer.resized_size((70, 50)) == (70, 50) and pred.resizer.resized_size((70, 50), 0.8) == (56, 40)
    img = np.zeros((70, 50, 3), np.uint8)
    assert pred.predict([img])[0].shape == (70, 50)
