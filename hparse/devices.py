"""Device names: check what the user asked for against what this machine and PyTorch build offer.

Bottom layer: imports only torch and :mod:`hparse.errors`, so the CLI, the Python API and the engine can share it.
"""

from __future__ import annotations

import re

import torch

from .errors import HParseError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def default_device() -> str:
    """``cuda`` when a CUDA device is usable, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None) -> str:
    """Check a device name and return it normalised (``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    ``None`` gives :func:`default_device`. Raises :class:`~hparse.errors.HParseError` with a one-line
    message when the name is unknown or the device is not available here.
    """
    if name is None:
        return default_device()
    key = name.strip().lower()
    if key == "cpu":
        return "cpu"
    if key == "mps":
        return _check_mps()
    match = _CUDA.fullmatch(key)
    if match:
        return _check_cuda(key, None if match.group(1) is None else int(match.group(1)))
    raise HParseError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps (available here: "
                      f"{', '.join(available_devices())})")


def available_devices() -> list[str]:
    """The device names this machine can run on, ``cpu`` first."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _check_cuda(key: str, index: int | None) -> str:
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise HParseError(f"CUDA is not available in this PyTorch build (torch {torch.__version__}, CPU-only); "
                          "use --device cpu")
    if not torch.cuda.is_available():
        raise HParseError(f"CUDA is not available: torch {torch.__version__} was built with CUDA but finds no "
                          "usable GPU (driver or CUDA_VISIBLE_DEVICES?); use --device cpu")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise HParseError(f"no CUDA device {index}: this machine has {count} (cuda:0 to cuda:{count - 1})")
    return key


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check_mps() -> str:
    if not _mps_available():
        raise HParseError("MPS (Apple GPU) is not available on this machine or PyTorch build; use --device cpu")
    return "mps"
