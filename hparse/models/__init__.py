"""Models: built by name from the ``MODELS`` registry; every model returns a dict of named outputs.

Every model takes a normalised RGB batch ``(B, 3, H, W)`` and returns at least
``"parsing"``: the final part logits ``(B, C, h, w)`` (any resolution; callers resize).
"""

from __future__ import annotations

from ..registry import Registry

MODELS = Registry("model")


def build_model(cfg: dict, num_classes: int):
    """Build ``cfg['type']`` with the rest of ``cfg`` as keyword arguments."""
    from ..errors import ConfigError

    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind is None:
        raise ConfigError("model config needs a 'type'")
    _import_all()
    try:
        return MODELS.build(kind, num_classes=num_classes, **cfg)
    except TypeError as e:
        raise ConfigError(f"model {kind}: {e}") from e


def _import_all() -> None:
    from . import (
        acenet,  # noqa: F401
        ce2p,  # noqa: F401
        cnif,  # noqa: F401
        mman,  # noqa: F401
    )
