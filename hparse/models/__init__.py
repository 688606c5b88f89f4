"""Models: built by name from the ``MODELS`` registry; every model follows the contract of
:mod:`hparse.models.meta_arch` (losses when training, typed results when not)."""

from __future__ import annotations

from ..registry import Registry

MODELS = Registry("model")


def build_model(cfg: dict, meta, loss: list[dict] | None = None):
    """Build ``cfg['type']`` for the label set ``meta``, the rest of ``cfg`` as keyword arguments;
    ``loss`` is the config's loss list (omit it for inference). Every model also takes ``pixel_mean`` /
    ``pixel_std`` (:meth:`~hparse.models.meta_arch.ParsingModel.set_input_normalization`) and ``norm``
    (:func:`~hparse.models.norms.convert_norms`): ``hparse.config_schema.PIXEL_STATS``."""
    from ..errors import ConfigError
    from .config_check import check_loss_config, check_model_config
    from .norms import convert_norms

    check_model_config(cfg)   # a registered 'type', and only keys its class takes
    if loss:
        check_loss_config(loss)
    cfg = dict(cfg)
    kind = cfg.pop("type")
    stats = {k: cfg.pop(k) for k in ("pixel_mean", "pixel_std") if k in cfg}
    norm = cfg.pop("norm", "bn")
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
        unified,  # noqa: F401
    )
