"""Proposal-to-ground-truth matching by IoU and the random positive / negative sampler (maskrcnn-benchmark
``Matcher`` and ``BalancedPositiveNegativeSampler``, Detectron2 ``Matcher`` and ``subsample_labels``).

- :class:`Matcher`: each proposal takes the ground truth of highest IoU; its label is 1 (foreground) when
  that IoU is ``>= high``, 0 (background) when ``< low`` and -1 (ignored) in between. With
  ``allow_low_quality_matches`` every ground truth's best proposals (all ties) are foreground too, whatever
  their IoU (the RPN's rule), but not at IoU 0 (the references would then make every proposal foreground
  for a ground truth that overlaps none). AIParsing's parsing RoIs: ``Matcher(0.5, 0.5)``; RPN: ``Matcher(0.7, 0.3,
  True)``; Fast R-CNN: ``Matcher(0.5, 0.5)``.
- :func:`subsample_labels`: at most ``num_samples`` labels, a ``positive_fraction`` of them foreground (fewer
  when there are not enough, the rest background), drawn at random (``positive_fraction=1``: positives only).
"""

from __future__ import annotations

import torch

FOREGROUND, BACKGROUND, IGNORED = 1, 0, -1


class Matcher:
    def __init__(self, high: float, low: float | None = None, allow_low_quality_matches: bool = False):
        low = high if low is None else low
        if not 0 <= low <= high <= 1:
            raise ValueError(f"Matcher needs 0 <= low <= high <= 1, got low={low}, high={high}")
        self.high, self.low, self.allow_low_quality_matches = high, low, allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``iou`` (G, P) between G ground truths and P proposals -> ``(matches, labels)``, both (P,): the
        index of each proposal's ground truth (0 when G = 0) and its label (1 / 0 / -1)."""
        g, p = iou.shape
        if g == 0:
            return (torch.zeros(p, dtype=torch.long, device=iou.device),
                    torch.full((p,), BACKGROUND, dtype=torch.int8, device=iou.device))
        best, matches = iou.max(dim=0)
        labels = torch.full((p,), IGNORED, dtype=torch.int8, device=iou.device)
        labels[best >= self.high] = FOREGROUND
        labels[best < self.low] = BACKGROUND
        if self.allow_low_quality_matches:
            best_of_gt = iou.max(dim=1, keepdim=True).values
            _, proposals = torch.nonzero((iou == best_of_gt) & (best_of_gt > 0), as_tuple=True)
            labels[proposals] = FOREGROUND
        return matches, labels


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(positive, negative)`` of a random sample of ``labels`` (1 / 0 / -1), see the module docstring."""
    positive = torch.nonzero(labels == FOREGROUND).flatten()
    negative = torch.nonzero(labels == BACKGROUND).flatten()
    num_pos = min(int(num_samples * positive_fraction), positive.numel())
    num_neg = min(num_samples - num_pos, negative.numel())
    return _pick(positive, num_pos, generator), _pick(negative, num_neg, generator)


def _pick(indices: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    if k >= indices.numel():
        return indices
    order = torch.randperm(indices.numel(), generator=generator, device="cpu")[:k]
    return indices[order.to(indices.device)]
