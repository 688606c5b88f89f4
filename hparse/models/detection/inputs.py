"""What a detector reads from a batch: the padded images with each image's size, and the ground truth.

A detection batch (``hparse.data.detection.detection_collate``, or ``InstancePredictor`` at test time) holds
``image`` (B, 3, H, W) in 0..255, zero-padded to a size divisible by 32 with the images top-left, and
``image_sizes`` [(h, w)] (absent: every image fills the batch). For training it also holds, per image,
``boxes`` (N, 4) and ``person_ids`` (N,) (the ``human_ids`` value of each box's person) and the padded
maps ``label`` (B, H, W; 255 outside the images) and ``human_ids`` (B, H, W; 0 outside). Per-image values
may be lists or stacked tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...errors import ConfigError

IGNORE = 255


def image_sizes(batch: dict) -> list[tuple[int, int]]:
    """``batch["image_sizes"]`` as ``[(h, w)]``, or the batch's own size for every image."""
    images = batch["image"]
    if not isinstance(images, torch.Tensor):
        raise ConfigError("a detector needs images padded into one (B, 3, H, W) tensor with their sizes: train "
                          "with the detection collate (hparse.data.detection.detection_collate)")
    sizes = batch.get("image_sizes")
    if sizes is None:
        return [tuple(images.shape[-2:])] * len(images)
    return [(int(h), int(w)) for h, w in sizes]


def zero_padding(x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Set the padding of normalised images to 0 (the mean pixel), whatever it was filled with."""
    if all((h, w) == tuple(x.shape[-2:]) for h, w in sizes):
        return x
    rows = torch.arange(x.shape[-2], device=x.device)
    cols = torch.arange(x.shape[-1], device=x.device)
    hs = torch.tensor([h for h, _ in sizes], device=x.device)
    ws = torch.tensor([w for _, w in sizes], device=x.device)
    inside = (rows[None, :, None] < hs[:, None, None]) & (cols[None, None, :] < ws[:, None, None])
    return x * inside[:, None].to(x.dtype)


@dataclass
class GroundTruth:
    """One image's people: ``boxes`` (N, 4) float, ``person_ids`` (N,) long, and the image's ``label`` and
    ``human_ids`` maps (H, W) from which each person's part map is cut."""

    boxes: torch.Tensor
    person_ids: torch.Tensor
    label: torch.Tensor
    human_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.boxes)


def ground_truth(batch: dict, device: torch.device) -> list[GroundTruth]:
    """The people of every image of a training batch (see the module docstring), on ``device``."""
    missing = [k for k in ("boxes", "person_ids", "label", "human_ids") if k not in batch]
    if missing:
        raise ConfigError(f"the batch has no {', '.join(missing)}: add the PersonBoxes step "
                          "(hparse.data.detection) before ToTensor in data.train_transforms")
    return [GroundTruth(torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4),
                        torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1),
                        torch.as_tensor(label, device=device), torch.as_tensor(human, device=device))
            for boxes, ids, label, human in zip(batch["boxes"], batch["person_ids"], batch["label"],
                                                batch["human_ids"])]
