"""Checks of the config sections built from registries: ``model`` (and its ``backbone``) and ``loss``.

Their keys are the parameters of the registered classes (see :func:`hparse.config_schema.check_kwargs`),
so a typo fails when the config is checked, naming the dotted key, instead of at build time or never.
"""

from __future__ import annotations

from typing import Any

from ..config_schema import PIXEL_STATS, check_kwargs, check_type
from ..errors import ConfigError

#: what the model builder supplies itself (never config keys of the ``model`` section)
MODEL_SKIP = ("self", "meta", "num_classes", "loss")
#: keys of a loss term read by ``hparse.losses.CompositeLoss`` -> type
TERM_KEYS: dict[str, Any] = {"type": str, "pred": str, "target": str, "weight": float, "weight_key": str | None,
                             "name": str}


def _registered_models():
    from . import MODELS, _import_all

    _import_all()
    return MODELS


def check_model_config(model_cfg: dict, where: str = "model") -> None:
    """Check ``model_cfg`` against the ``__init__`` of the registered class ``model_cfg['type']`` (following
    ``config_forwards_to`` for ``**kwargs``), ``pixel_mean`` / ``pixel_std``, and a ``backbone`` mapping
    against the backbone builder it names; raises :class:`ConfigError`."""
    if not isinstance(model_cfg, dict):
        raise ConfigError(f"{where}: must be a mapping (got {model_cfg!r})")
    if "type" not in model_cfg:
        raise ConfigError(f"{where}.type: missing; the model section needs a 'type'")
    kind = model_cfg["type"]
    cls = check_type(_registered_models(), kind, f"{where}.type")
    params = {k: v for k, v in model_cfg.items() if k != "type"}
    check_kwargs(params, cls, where, f"model {kind!r}", extra=PIXEL_STATS, skip=MODEL_SKIP)
    if isinstance(params.get("backbone"), dict):
        check_backbone_config(params["backbone"], f"{where}.backbone")


def check_backbone_config(backbone: dict, where: str = "model.backbone") -> None:
    """Check ``{name: resnet18, **kwargs}`` against the backbone builder's (and its class's) parameters."""
    from .backbones import BACKBONES

    if "name" not in backbone:
        raise ConfigError(f"{where}.name: missing; a backbone mapping needs a 'name'")
    name = backbone["name"]
    builder = check_type(BACKBONES, name, f"{where}.name")
    check_kwargs({k: v for k, v in backbone.items() if k != "name"}, builder, where, f"backbone {name!r}")


def check_loss_config(loss: list[dict], where: str = "loss") -> None:
    """Check every term ``{type, pred, target, weight, weight_key, name, **params}``: a known loss type, the
    term keys, and ``params`` against the loss class's ``__init__``; raises :class:`ConfigError`."""
    from ..losses import LOSSES

    if not isinstance(loss, list) or not loss:
        raise ConfigError(f"{where}: must be a non-empty list of terms (got {loss!r})")
    for i, term in enumerate(loss):
        at = f"{where}[{i}]"
        if not isinstance(term, dict):
            raise ConfigError(f"{at}: a term must be a mapping with a 'type' (got {term!r})")
        if "type" not in term:
            raise ConfigError(f"{at}.type: missing; a loss term needs a 'type'")
        cls = check_type(LOSSES, term["type"], f"{at}.type")
        check_kwargs(term, cls, at, f"loss {term['type']!r}", extra=TERM_KEYS)
