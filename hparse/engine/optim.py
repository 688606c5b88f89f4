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
    get no weight decay unless ``no_decay_norm_bias`` is false; ``lr_mult`` (``{name prefix: factor}``, a module's
    parameters only; the first matching prefix counts) scales the learning rate of the parameters it names."""
    kind = cfg["optimizer"].lower()
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    mults = {str(k): float(v) for k, v in (cfg.get("lr_mult") or {}).items()}
    named = params.named_parameters() if isinstance(params, torch.nn.Module) else (("", p) for p in params)
    groups: dict[tuple[float, bool], list] = {(1.0, False): [], (1.0, True): []}  # the plain groups come first
    used = set()
    for name, p in named:
        if not p.requires_grad:
            continue
        prefix = next((k for k in mults if name.startswith(k)), None) if name else None
        used.add(prefix)
        no_decay = p.ndim <= 1 and cfg["no_decay_norm_bias"]
        groups.setdefault((mults.get(prefix, 1.0), no_decay), []).append(p)
    unused = sorted(set(mults) - used)
    if unused:
        raise ConfigError(f"train.lr_mult: no parameter name starts with {unused}")
    groups = [{"params": ps, "lr": lr * m, "weight_decay": 0.0 if nd else wd} for (m, nd), ps in groups.items()]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]), nesterov=bool(cfg["nesterov"]))
    if kind in ("adam", "adamw"):
        return (torch.optim.AdamW if kind == "adamw" else torch.optim.Adam)(groups, lr=lr, betas=tuple(cfg["betas"]))
    raise ConfigError(f"train.optimizer: unknown {kind!r} (sgd, adam, adamw)")
