"""hparse: human parsing in plain PyTorch."""

__version__ = "0.1.0"


def load(name_or_checkpoint="default", device=None, tta=False):
    """Load a parser: ``hparse.load("default").predict("photo.jpg")``."""
    from .api import load as _load

    return _load(name_or_checkpoint, device=device, tta=tta)


__all__ = ["load", "__version__"]
