"""Checkpoint files: safe loading (``weights_only``), slim export for shipping."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import HParseError
from ..io.atomic import atomic_path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.is_file():
        raise HParseError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise HParseError(f"{path}: not a readable hparse checkpoint ({e.__class__.__name__}: {e})") from e
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise HParseError(f"{path}: not an hparse checkpoint (needs 'model' and 'config' entries)")
    return ck


def export_weights(src: str | Path, dst: str | Path, half: bool = False, extra: dict | None = None) -> Path:
    """Write a slim copy (model weights, config, label set, scores) for inference."""
    ck = load_checkpoint(src)
    model = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["model"].items()}
    slim = {"model": model, "config": ck["config"], "label_set": ck["label_set"],
            "history": ck.get("history", []), **(extra or {})}
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return Path(dst)
