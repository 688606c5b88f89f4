"""Models: built by name from the ``MODELS`` registry; every model follows the contract of
:mod:`hparse.models.meta_arch` (losses when training, typed results when not)."""

from __future__ import annotations

from ..registry import Registry

MODELS = Registry("model")
INPUT_KEYS = ("pixel_mean", "pixel_std")  # config keys of every model (ParsingModel.set_input_normalization)
NORM_KEY = "norm"  # config key of every model: bn (as built), gn or frozen_bn (hparse.models.norms)


def build_model(cfg: dict, meta, loss: list[dict] | None = None):
    """Build ``cfg['type']`` for the label set ``meta``, the rest of ``cfg`` as keyword arguments;
    ``loss`` is the config's loss list (omit it for inference)."""
    from ..errors import ConfigError
    from .config_check import check_loss_config, check_model_config
    from .norms import convert_norms

    cfg = dict(cfg)
    kind = cfg.get("type")
    if kind is None:
        raise ConfigError("model config needs a 'type'")
    _import_all()
    check_model_config(cfg)
    if loss:
        check_loss_config(loss)
    cfg.pop("type")
    stats = {k: cfg.pop(k) for k in INPUT_KEYS if k in cfg}
    norm = cfg.pop(NORM_KEY, "bn")
    try:
        model = MODELS.build(kind, meta, loss=loss, **cfg)
    except TypeError as e:
        raise ConfigError(f"model {kind}: {e}") from e
    model.set_input_normalization(**stats)
    convert_norms(model, norm)
    return model


def _import_all() -> None:
    from . import (
        acenet,  # noqa: F401
        aiparsing,  # noqa: F401
        ce2p,  # noqa: F401
        cnif,  # noqa: F401
        mman,  # noqa: F401
    )
