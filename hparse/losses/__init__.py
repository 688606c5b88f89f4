"""Losses, composed from config.

A config's ``loss`` section is a list of terms, each naming a loss type, the model output
it reads (``pred``), the target key of the batch (``target``) and a ``weight``::

    loss:
      - {type: ce, pred: parsing, target: label}
      - {type: ce, pred: parsing_aux, target: label}
      - {type: balanced_edge_ce, pred: edge, target: edge}

A term whose ``pred`` the model did not output is an error (a typo would otherwise train
silently without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..metrics.semantic import resize_label_nearest
from ..registry import Registry

LOSSES = Registry("loss")
IGNORE = 255


def resize_to(logits: torch.Tensor, size) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def check_resize(loss: str, resize: str) -> str:
    if resize not in ("logits", "target"):
        raise ConfigError(f"{loss}: resize must be 'logits' or 'target', got {resize!r}")
    return resize


def align(logits: torch.Tensor, target: torch.Tensor, resize: str):
    """Logits and label at one size: the logits upsampled to the label (``"logits"``) or the label
    nearest-downsampled to the logits (``"target"``, ``resize_label_nearest``)."""
    if resize == "target":
        target = resize_label_nearest(target, logits.shape[-2:])
    return resize_to(logits, target.shape[-2:]), target


@LOSSES.register("ce")
class CrossEntropy(nn.Module):
    """Pixel cross-entropy; with ``ohem`` only hard pixels count (CE2P ``OhemCrossEntropy2d``):
    pixels whose true-class probability is below ``thresh``, at least ``min_kept`` of them.

    ``resize``: ``"logits"`` (default) upsamples the logits to the label; ``"target"`` resizes the label to
    the logits with ``resize_label_nearest`` (MMAN's low-resolution CE against the 1/16 label map)."""

    def __init__(self, ohem: bool = False, thresh: float = 0.7, min_kept: int = 100_000,
                 class_weight: list[float] | None = None, ignore_index: int = IGNORE, resize: str = "logits"):
        super().__init__()
        self.ohem, self.thresh, self.min_kept, self.ignore = ohem, thresh, min_kept, ignore_index
        self.resize = check_resize("ce", resize)
        self.register_buffer("class_weight", None if class_weight is None else torch.tensor(class_weight),
                             persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = align(logits, target, self.resize)
        w = self.class_weight
        if not self.ohem:
            return F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore)
        pixel = F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore, reduction="none")
        valid = target != self.ignore
        with torch.no_grad():
            prob = logits.softmax(1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
            prob = prob[valid]
            thresh = self.thresh
            if prob.numel() > self.min_kept > 0:
                kth = prob.kthvalue(min(self.min_kept, prob.numel())).values.item()
                thresh = max(thresh, kth)
            hard = torch.zeros_like(valid)
            hard[valid] = prob <= thresh
        n = hard.sum()
        return (pixel * hard).sum() / n.clamp(min=1)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    inter = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jac = 1.0 - inter / union
    if gt_sorted.numel() > 1:
        jac[1:] = jac[1:] - jac[:-1]
    return jac


@LOSSES.register("lovasz")
class LovaszSoftmax(nn.Module):
    """Lovasz-softmax (Berman et al.) on softmax probabilities, classes present in the batch,
    all pixels flattened together (``per_image=False``), as in SCHP/AIParsing.

    ``resize``: ``"logits"`` (default) upsamples the logits to the label; ``"target"`` scores at the
    logits' resolution against the ``resize_label_nearest`` label map (16x fewer pixels to sort for a
    stride-4 head: what makes the loss affordable on a CPU)."""

    def __init__(self, classes: str = "present", ignore_index: int = IGNORE, resize: str = "logits"):
        super().__init__()
        self.classes, self.ignore, self.resize = classes, ignore_index, check_resize("lovasz", resize)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = align(logits, target, self.resize)
        probs = logits.softmax(1)
        c = probs.shape[1]
        probs = probs.permute(0, 2, 3, 1).reshape(-1, c)
        target = target.reshape(-1)
        valid = target != self.ignore
        probs, target = probs[valid], target[valid]
        if target.numel() == 0:
            return logits.sum() * 0
        losses = []
        for k in range(c):
            fg = (target == k).float()
            if self.classes == "present" and fg.sum() == 0:
                continue
            errors = (fg - probs[:, k]).abs()
            errors_sorted, perm = errors.sort(descending=True)
            losses.append(errors_sorted @ lovasz_grad(fg[perm]))
        return torch.stack(losses).mean() if losses else logits.sum() * 0


@LOSSES.register("balanced_edge_ce")
class BalancedEdgeCE(nn.Module):
    """CE2P's class-balanced edge loss: per batch, w_pos = #neg/#all and w_neg = #pos/#all."""

    def __init__(self, ignore_index: int = IGNORE):
        super().__init__()
        self.ignore = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = resize_to(logits, target.shape[-2:])
        valid = target != self.ignore
        pos = (target == 1).sum().float()
        neg = (target == 0).sum().float()
        total = (pos + neg).clamp(min=1)
        if pos == 0 or neg == 0:  # one class only: its balanced weight is 0 (CE would be 0 / 0)
            return logits.sum() * 0
        weight = torch.stack([pos / total, neg / total]).to(logits.dtype)
        return F.cross_entropy(logits, target.masked_fill(~valid, self.ignore), weight=weight,
                               ignore_index=self.ignore)


@LOSSES.register("heatmap_mse")
class HeatmapMSE(nn.Module):
    """Mean squared error between predicted and target heatmaps, per-map weights (0 = absent)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None):
        pred = resize_to(pred, target.shape[-2:])
        err = (pred - target).pow(2).mean(dim=(2, 3))
        if weight is None:
            return err.mean()
        return (err * weight).sum() / weight.sum().clamp(min=1)


@LOSSES.register("hier_ce")
class HierarchyCE(nn.Module):
    """CNIF Eq. 18 for one hierarchy level: pixel cross-entropy summed over the ``S`` predictions of the level,
    given stacked as (B, S, C, h, w) (e.g. the fused, direct, top-down and bottom-up logits; ``cnif``'s
    ``sources_l1..3``), against that level's label map (``label``, ``label_l2``, ``label_l3``).  ``reduction``:
    ``sum`` (Eq. 18) or ``mean`` over the sources; a 4-D input counts as one source."""

    def __init__(self, reduction: str = "sum", ignore_index: int = IGNORE):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"hier_ce: reduction must be 'sum' or 'mean', not {reduction!r}")
        self.reduction, self.ignore = reduction, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 4:
            logits = logits.unsqueeze(1)
        b, s, c, h, w = logits.shape
        if s == 0:
            return logits.sum()
        up = resize_to(logits.reshape(b, s * c, h, w), target.shape[-2:]).reshape(b, s, c, *target.shape[-2:])
        losses = torch.stack([F.cross_entropy(up[:, i], target, ignore_index=self.ignore) for i in range(s)])
        return losses.sum() if self.reduction == "sum" else losses.mean()


class CompositeLoss(nn.Module):
    """Loss terms of a config's ``loss`` list; called on ``(outputs, batch)`` it returns the named, weighted
    losses ``{name: weight * value}`` (terms of weight 0 are skipped); the training loss is their sum."""

    def __init__(self, terms: list[dict]):
        super().__init__()
        if not terms:
            raise ConfigError("loss: at least one term is needed")
        self.specs, mods = [], []
        for t in terms:
            t = dict(t)
            kind = t.pop("type", None)
            if kind is None:
                raise ConfigError(f"loss term {t} has no 'type'")
            spec = {"pred": t.pop("pred", "parsing"), "target": t.pop("target", "label"),
                    "weight": float(t.pop("weight", 1.0)), "weight_key": t.pop("weight_key", None)}
            spec["name"] = t.pop("name", f"{kind}_{spec['pred']}")
            if any(other["name"] == spec["name"] for other in self.specs):
                raise ConfigError(f"loss: two terms are named {spec['name']!r}; give one a 'name'")
            self.specs.append(spec)
            try:
                mods.append(LOSSES.build(kind, **t))
            except TypeError as e:
                raise ConfigError(f"loss term {kind}: {e}") from e
        self.terms = nn.ModuleList(mods)

    def forward(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        losses = {}
        for spec, fn in zip(self.specs, self.terms):
            if spec["weight"] == 0:
                continue
            if spec["pred"] not in outputs:
                raise ConfigError(f"loss {spec['name']}: the model has no output {spec['pred']!r} "
                                  f"(outputs: {sorted(outputs)})")
            if spec["target"] not in batch:
                raise ConfigError(f"loss {spec['name']}: the batch has no target {spec['target']!r}")
            args = [outputs[spec["pred"]], batch[spec["target"]]]
            if spec["weight_key"]:
                if spec["weight_key"] not in batch:
                    raise ConfigError(f"loss {spec['name']}: the batch has no weights {spec['weight_key']!r}")
                args.append(batch[spec["weight_key"]])
            losses[spec["name"]] = spec["weight"] * fn(*args)
        return losses


def build_loss(terms: list[dict]) -> CompositeLoss:
    return CompositeLoss(terms)
