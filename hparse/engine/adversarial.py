"""Adversarial training for models that own discriminators (MMAN; ``hparse.models.mman``).

The Trainer uses it when ``model.discriminators`` is non-empty. Per iteration (pix2pix order, "we
alternately optimize the D and G", MMAN Sec. 4.2):

1. the generator runs once; the usual ``loss`` terms (the cross-entropies) are computed;
2. :meth:`AdversarialTraining.d_step`: every discriminator scores ``real`` = concat(one-hot ground truth,
   image) and ``fake`` = concat(softmax(output), image), both at the output's resolution (the image
   bilinearly resized, the label nearest-resized), the fake detached;
   ``L_D = 0.5 (loss(D(real), real) + loss(D(fake), fake))``; the D optimiser steps;
3. :meth:`AdversarialTraining.g_loss`: with the updated, frozen discriminators,
   ``L_G_adv = sum_d w_d loss(D_d(fake), real)`` is added to the cross-entropies and the Trainer steps G.

MMAN's Eq. 4 ``L = L_adv(G, D_Ma) + lambda_1 L_ce_low + lambda_2 L_adv(G, D_Mi) + lambda_3 L_ce_high``
(paper: lambda_1 = 25, lambda_2 = 1, lambda_3 = 100) is therefore: ``loss`` terms
``{type: ce, pred: parsing, weight: 100}`` (lambda_3) and ``{type: ce, pred: parsing_low, resize: target,
weight: 25}`` (lambda_1), and ``train.adversarial.weights: {macro: 1, micro: 1}`` (the implicit 1 and
lambda_2). (The authors' code weights CE_high / CE_low / adv_micro / adv_macro 250 / 50 / 1 / 1.)
A patch discriminator's loss is computed per response and averaged over the responses (pix2pix; the
paper's "averages all responses").

Pixels whose label is ``ignore`` (255, e.g. outside a warped crop) are zeroed in both the real one-hot
map and the fake probabilities, so padding cannot tell them apart [inference; the authors' LIP
pipeline had no ignore pixels].

``train.adversarial`` options (defaults = the paper):

- ``gan_loss``: ``bce`` (Eq. 3, the log loss; G uses the non-saturating ``-log D(G(x))``) or ``lsgan``
  (least squares to 1 / 0, what the authors' code uses);
- ``weights``: per-discriminator weight of its G term (default 1);
- ``optimizer``: the D optimiser (``build_optimizer`` keys); default Adam, lr 2e-4, betas (0.9, 0.999),
  weight decay 1e-4 (paper Sec. 4.2; the code: betas (0.5, 0.999)). Its learning rate follows the
  Trainer's schedule factor (warm-up, poly or step) at every step.

The authors' code quirks (reference-notes A.2), **off by default**:

- ``detach_macro: true`` -- the Macro term of G is computed on a detached map, so Macro D sends no
  gradient to G (the code's ``backward_G`` bug; the term is still logged);
- ``d_step_prob: 0.1`` -- the D optimiser steps on a random 10 % of iterations (the draw is seeded by
  ``(seed, step)``, so resumed runs make the same draws); D losses are still computed for the logs;
- ``d_temperature: 0.2`` -- the maps fed to D are ``softmax(logits / 0.2)`` = the code's ``Softmax2d(5 t)``.

(The fourth quirk, BatchNorm never in eval mode, is the model option ``keep_bn_training``.)

Logged per step (TensorBoard ``train/adv/<D>/<key>`` and ``<run>/adversarial.jsonl``, read by
``hparse.viz.plots.plot_adversarial_curves``): ``d_real`` / ``d_fake`` (the D loss terms on real and on
fake maps), ``g`` (G's adversarial loss, unweighted), ``p_real`` / ``p_fake`` (mean D output as a
probability for ``bce``, the raw mean for ``lsgan``), and ``d_step`` (1 if D stepped).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import IGNORE
from ..metrics.semantic import resize_label_nearest
from ..viz.plots import ADVERSARIAL_LOG

DEFAULT_D_OPTIMIZER = {"optimizer": "adam", "lr": 2e-4, "betas": [0.9, 0.999], "weight_decay": 1e-4,
                       "no_decay_norm_bias": False}
GAN_LOSSES = ("bce", "lsgan")
_OPTIONS = {"gan_loss", "weights", "optimizer", "detach_macro", "d_step_prob", "d_temperature"}


def has_discriminators(model: nn.Module) -> bool:
    d = getattr(model, "discriminators", None)
    return isinstance(d, nn.ModuleDict) and len(d) > 0


def generator_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All parameters outside ``model.discriminators`` (what the G optimiser updates)."""
    return [p for n, p in model.named_parameters() if not n.startswith("discriminators.")]


def _uniform(seed: int, step: int) -> float:
    """A uniform draw in [0, 1) that depends only on ``(seed, step)`` (splitmix64 hash)."""
    m = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x632BE59BD9B4E019) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def d_pair(logits: torch.Tensor, label: torch.Tensor, image: torch.Tensor, temperature: float = 1.0,
           ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, fake)`` discriminator inputs at ``logits``' resolution: concat(one-hot GT | softmax(logits / T),
    image resized), ignored pixels zeroed in both label parts. ``fake`` keeps the graph to the generator."""
    size = logits.shape[-2:]
    c = logits.shape[1]
    lab = resize_label_nearest(label, size)
    valid = (lab != ignore_index) & (lab >= 0) & (lab < c)
    onehot = F.one_hot(torch.where(valid, lab, 0), c).permute(0, 3, 1, 2).float()
    mask = valid.unsqueeze(1).float()
    img = image if tuple(image.shape[-2:]) == tuple(size) else F.interpolate(
        image, size=size, mode="bilinear", align_corners=False, antialias=True)
    prob = (logits.float() / temperature).softmax(1)
    return torch.cat([onehot * mask, img], 1), torch.cat([prob * mask, img], 1)


class AdversarialTraining:
    """D optimiser, D/G adversarial losses and logs for a model with ``discriminators`` (see the module doc).

    ``lr_lambda(step)`` gives the schedule factor for the D learning rate (default: constant 1);
    ``scaler`` is the Trainer's GradScaler (a disabled one by default; one scaler may step several
    optimisers as long as ``update()`` runs once per iteration -- the Trainer does it after G's step).
    """

    def __init__(self, model: nn.Module, cfg: dict | None = None, *, seed: int = 0, lr_lambda=None,
                 scaler: torch.amp.GradScaler | None = None, amp: bool = False, device_type: str = "cpu"):
        from .trainer import build_optimizer  # lazy: trainer imports this module

        cfg = dict(cfg or {})
        unknown = set(cfg) - _OPTIONS
        if unknown:
            raise ConfigError(f"train.adversarial: unknown keys {sorted(unknown)}; allowed: {sorted(_OPTIONS)}")
        if not has_discriminators(model):
            raise ConfigError("adversarial training needs a model with discriminators")
        self.discs: nn.ModuleDict = model.discriminators
        self.inputs: dict[str, str] = dict(model.adversarial_inputs)
        self.gan_loss = cfg.get("gan_loss", "bce")
        if self.gan_loss not in GAN_LOSSES:
            raise ConfigError(f"train.adversarial.gan_loss: {self.gan_loss!r} is not one of {GAN_LOSSES}")
        weights = dict(cfg.get("weights") or {})
        known = set(getattr(model, "known_discriminators", ())) | set(self.discs)
        if set(weights) - known:  # weights of known kinds this variant lacks are ignored (shared configs)
            raise ConfigError(f"train.adversarial.weights: unknown discriminator(s) {sorted(set(weights) - known)};"
                              f" known: {sorted(known)}")
        self.weights = {n: float(weights.get(n, 1.0)) for n in self.discs}
        self.detach_macro = bool(cfg.get("detach_macro", False))
        self.d_step_prob = float(cfg.get("d_step_prob", 1.0))
        self.temperature = float(cfg.get("d_temperature", 1.0))
        if self.temperature <= 0:
            raise ConfigError("train.adversarial.d_temperature must be > 0")
        _set_requires_grad(self.discs, True)  # build_optimizer skips frozen parameters
        self.optimizer = build_optimizer(self.discs, {**DEFAULT_D_OPTIMIZER, **(cfg.get("optimizer") or {})})
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.lr_lambda = lr_lambda or (lambda step: 1.0)
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
        self.seed, self.amp, self.device_type = int(seed), bool(amp), device_type
        self.pending: list[dict] = []

    # -- pieces --------------------------------------------------------------------------------
    def d_should_step(self, step: int) -> bool:
        """Whether D steps at this iteration (always unless ``d_step_prob`` < 1; seeded by (seed, step))."""
        if self.d_step_prob >= 1:
            return True
        if self.d_step_prob <= 0:
            return False
        return _uniform(self.seed, int(step)) < self.d_step_prob

    def pairs(self, outputs: dict, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out, by_key = {}, {}
        for name, key in self.inputs.items():
            if key not in outputs:
                raise ConfigError(f"discriminator {name} judges output {key!r}, which the model did not return")
            if key not in by_key:   # two Ds on one output (Double AN) share its (real, fake) pair
                by_key[key] = d_pair(outputs[key], batch["label"], batch["image"], self.temperature)
            out[name] = by_key[key]
        return out

    def _loss(self, score: torch.Tensor, real: bool) -> torch.Tensor:
        score = score.float()
        target = torch.full_like(score, 1.0 if real else 0.0)
        if self.gan_loss == "bce":
            return F.binary_cross_entropy_with_logits(score, target)
        return F.mse_loss(score, target)

    def _prob(self, score: torch.Tensor) -> float:
        score = score.detach().float()
        return float((score.sigmoid() if self.gan_loss == "bce" else score).mean())

    def d_step(self, pairs: dict, step: int) -> dict[str, float]:
        """Score real and (detached) fake maps, and step the D optimiser when scheduled. Returns the logs."""
        do_step = self.d_should_step(step)
        logs: dict[str, float] = {"d_step": float(do_step)}
        _set_requires_grad(self.discs, True)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        with torch.set_grad_enabled(do_step), torch.autocast(self.device_type, enabled=self.amp):
            for name, (real, fake) in pairs.items():
                d = self.discs[name]
                s_real, s_fake = d(real), d(fake.detach())
                l_real, l_fake = self._loss(s_real, True), self._loss(s_fake, False)
                total = total + 0.5 * (l_real + l_fake)
                logs[f"{name}/d_real"], logs[f"{name}/d_fake"] = float(l_real.detach()), float(l_fake.detach())
                logs[f"{name}/p_real"], logs[f"{name}/p_fake"] = self._prob(s_real), self._prob(s_fake)
        if do_step:
            factor = self.lr_lambda(step)
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
        return logs

    def g_loss(self, pairs: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted adversarial loss of G against the (frozen) discriminators, and its logs."""
        _set_requires_grad(self.discs, False)
        total, logs = 0.0, {}
        with torch.autocast(self.device_type, enabled=self.amp):
            for name, (_, fake) in pairs.items():
                if self.detach_macro and name == "macro":
                    fake = fake.detach()
                score = self.discs[name](fake)
                loss = self._loss(score, True)
                total = total + self.weights[name] * loss
                logs[f"{name}/g"] = float(loss.detach())
        return total, logs

    def step(self, outputs: dict, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """D update, then G's adversarial loss (to add to G's other losses before its backward)."""
        pairs = self.pairs(outputs, batch)
        logs = self.d_step(pairs, step)
        g, g_logs = self.g_loss(pairs)
        return g, {**logs, **g_logs}

    # -- state and logs --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def record(self, step: int, epoch: int, logs: dict[str, float]) -> None:
        rec: dict = {"step": int(step), "epoch": int(epoch), "d_step": logs.get("d_step", 1.0)}
        for key, v in logs.items():
            if "/" in key:
                name, k = key.split("/", 1)
                rec.setdefault(name, {})[k] = v
        self.pending.append(rec)

    def flush(self, run_dir: str | Path) -> None:
        """Append the pending per-step records to ``run_dir/adversarial.jsonl`` (called at each checkpoint, so
        a resumed run may repeat steps after a crash; readers keep the last record of a step)."""
        if not self.pending:
            return
        with open(Path(run_dir) / ADVERSARIAL_LOG, "a") as f:
            for rec in self.pending:
                f.write(json.dumps(rec) + "\n")
        self.pending = []

