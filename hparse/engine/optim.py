"""Optimisers and learning-rate schedules from a config's ``train`` section."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def lr_factor(step: int, total: int, warmup: int = 0, warmup_ratio: float = 0.1, power: float = 0.9) -> float:
    """Linear warm-up from ``warmup_ratio`` to 1, then poly decay ``(1 - step/total)^power``."""
    if step < warmup:
        return warmup_ratio + (1 - warmup_ratio) * step / warmup
    return max(0.0, 1 - step / max(1, total)) ** power


def make_lr_lambda(cfg: dict, total: int, iters_per_epoch: int):
    """The schedule factor of ``train``: ``lr_policy: poly`` (:func:`lr_factor`) or ``step`` (the same warm-up,
    then ``lr_gamma ** (number of lr_step_epochs passed)``; "divided by 10 after 15 epochs" is
    ``lr_step_epochs: [15]``)."""
    warm, ratio = int(cfg["warmup_iters"]), float(cfg["warmup_ratio"])
    if cfg["lr_policy"] == "poly":
        power = float(cfg["poly_power"])
        return lambda s: lr_factor(s, total, warm, ratio, power)
    if cfg["lr_policy"] == "step":
        milestones = [int(e) * iters_per_epoch for e in cfg["lr_step_epochs"]]
        gamma = float(cfg["lr_gamma"])

        def step_factor(s: int) -> float:
            if s < warm:
                return lr_factor(s, total, warm, ratio)
            return gamma ** sum(s >= m for m in milestones)
        return step_factor
    raise ConfigError(f"train.lr_policy: unknown {cfg['lr_policy']!r} (poly, step)")


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW over ``params`` (a module or an iterable of parameters) with the keys ``optimizer``,
    ``lr``, ``weight_decay``, ``momentum``, ``nesterov``, ``betas``; norm weights and biases (1-d parameters)
    get no weight decay unless ``no_decay_norm_bias`` is false."""
    kind = cfg["optimizer"].lower()
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    decay, no_decay = [], []
    for p in (params.parameters() if isinstance(params, torch.nn.Module) else params):
        if p.requires_grad:
            (no_decay if p.ndim <= 1 and cfg["no_decay_norm_bias"] else decay).append(p)
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]))
    if kind in ("adam", "adamw"):
        return (torch.optim.AdamW if kind == "adamw" else torch.optim.Adam)(groups, lr=lr, betas=tuple(cfg["betas"]))
    raise ConfigError(f"train.optimizer: unknown {kind!r} (sgd, adam, adamw)")
