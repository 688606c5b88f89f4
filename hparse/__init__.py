"""hparse: human parsing in plain PyTorch."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("hparse")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def load(name_or_checkpoint="default", device=None, tta=False, **options):
    """Load a parser: ``hparse.load("default").predict("photo.jpg")``; ``options``: see :func:`hparse.api.load`
    (``backend``, ``batch_size``)."""
    from .api import load as _load

    return _load(name_or_checkpoint, device=device, tta=tta, **options)


__all__ = ["load", "__version__"]
