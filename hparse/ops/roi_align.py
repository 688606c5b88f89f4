"""RoIAlign in plain PyTorch, numerically the torchvision / Detectron2 kernel (He et al. 2017).

For RoI ``(b, x1, y1, x2, y2)`` (image pixels), ``spatial_scale`` s and ``aligned``:

- start = ``x1 * s - 0.5`` when ``aligned`` (half-pixel offset, Detectron2 ``ROIAlignV2``) else ``x1 * s``;
  size = ``(x2 - x1) * s``, clamped to >= 1 only in the legacy ``aligned=False`` mode;
- each of the ``out_h x out_w`` bins averages a ``gh x gw`` grid of samples at
  ``start + (p + (i + 0.5) / g) * size / out``; ``g = sampling_ratio`` if > 0, else adaptive
  ``ceil(size / out)`` (so a zero-size aligned RoI has no samples and pools to 0);
- a sample with ``y < -1 or y > H or x < -1 or x > W`` contributes 0; otherwise coordinates
  ``<= 0`` become 0 and the bilinear neighbours are clamped to the last row/column.

Both the validity test and the bilinear weights factor into a y part and an x part, so RoI k's output
is ``A_y[k] @ F[window_k] @ A_x[k].T`` with small interpolation matrices over either the feature
rows/columns its samples touch (a window, for dense sampling) or the samples' neighbours (sparse
sampling).  RoIs are grouped into chunks of similar footprint (no per-RoI Python loop); one
``index_select`` gathers every window from the channels-last features and two batched matmuls
contract them.  Differentiable w.r.t. the features.  ``multilevel_roi_align`` gathers from all FPN
levels at once (levels concatenated in one buffer).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from .boxes import box_area

_CHUNK_ELEMENTS = 1 << 20  # gathered values (window x channels) per chunk of RoIs


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(h, w)`` unchanged."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _axis_table(start: torch.Tensor, size: torch.Tensor, out: int, grid: torch.Tensor, length: torch.Tensor,
                max_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights ``(K, out, 2 * max_grid)`` along one axis: the low/high bilinear neighbours of
    every sample of every bin, weights already divided by the per-RoI grid size (0 for padding samples)."""
    g = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    p = torch.arange(out, device=start.device, dtype=start.dtype)
    bin_size = (size / out)[:, None, None]
    gridf = grid.to(start.dtype)[:, None, None]
    coord = start[:, None, None] + p[None, :, None] * bin_size + (g + 0.5) * bin_size / gridf.clamp(min=1)
    lengthf = length.to(start.dtype)[:, None, None]
    valid = (coord >= -1) & (coord <= lengthf) & (g < gridf)
    coord = coord.clamp(min=0)
    last = (length - 1)[:, None, None]
    low = coord.floor().long()
    at_end = low >= last
    low = torch.where(at_end, last, low)
    high = torch.where(at_end, last, low + 1)
    frac = torch.where(at_end, torch.zeros_like(coord), coord - low.to(coord.dtype))
    scale = valid.to(coord.dtype) / gridf.clamp(min=1)
    return torch.cat((low, high), dim=2), torch.cat(((1 - frac) * scale, frac * scale), dim=2)


def _grid(size: torch.Tensor, out: int, sampling_ratio: int) -> torch.Tensor:
    if sampling_ratio > 0:
        return torch.full_like(size, sampling_ratio, dtype=torch.long)
    return torch.ceil(size / out).long().clamp(min=0)


def _span(idx: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First line and number of lines spanned by the nonzero weights of each RoI's axis table (>= 1)."""
    nz = w != 0
    hi = torch.where(nz, idx, -1).amax((1, 2))
    lo = torch.where(nz, idx, hi[:, None, None]).amin((1, 2)).clamp(min=0)
    return lo, (hi - lo + 1).clamp(min=1)


def _compact(idx: torch.Tensor, w: torch.Tensor, length: torch.Tensor, lo: torch.Tensor,
             span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn an axis table into ``(lines (K, n), A (K, out, n))`` with ``result = A @ values[lines]``: either
    the window of consecutive lines spanned by the nonzero weights (``lo``, ``span`` from ``_span``; dense
    sampling) or the samples' neighbours themselves (sparse sampling), whichever is shorter."""
    k, out, m = idx.shape
    n = int(span.max())
    if n < out * m:
        lines = torch.minimum(lo[:, None] + torch.arange(n, device=idx.device), (length - 1)[:, None])
        pos = (idx - lo[:, None, None]).clamp(0, n - 1)
        return lines, w.new_zeros((k, out, n)).scatter_add_(2, pos, w)
    a = w.new_zeros((k, out, out, m))
    ar = torch.arange(out, device=idx.device)
    a[:, ar, ar] = w
    return idx.reshape(k, out * m), a.view(k, out, out * m)


def sorted_chunks(cost: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Indices of the items grouped by similar ``cost`` (ascending, within 2x of each other inside a chunk)
    so that each chunk's padded size (count x its largest cost) fits ``budget``."""
    values, order = torch.sort(cost.clamp(min=1))
    values = values.tolist()
    chunks, s = [], 0
    while s < len(values):
        e = bisect.bisect_right(values, 2 * values[s], lo=s)
        e = min(e, s + max(1, budget // values[e - 1]))
        chunks.append(order[s:e])
        s = e
    return chunks


def in_order(parts: Sequence[torch.Tensor], chunks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reassemble per-chunk results (``parts[j]`` holds items ``chunks[j]``) in item order.  Differentiable
    parts are concatenated and reordered once: each ``index_copy_``'s backward would copy the whole output."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in parts):
        return torch.cat(list(parts)).index_select(0, torch.argsort(torch.cat(list(chunks))))
    out = parts[0].new_empty((sum(len(c) for c in chunks), *parts[0].shape[1:]))
    for sel, part in zip(chunks, parts):
        out.index_copy_(0, sel, part)
    return out


def _roi_align_flat(flat: torch.Tensor, base: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                    boxes: torch.Tensor, output_size: tuple[int, int], sampling_ratio: int,
                    aligned: bool) -> torch.Tensor:
    """Core: ``flat`` (P, C) channels-last pixels; RoI k reads the ``heights[k] x widths[k]`` map whose
    pixel (0, 0) is row ``base[k]``; ``boxes`` (K, 4) already in that map's coordinates (scaled).
    RoIs are processed in chunks of similar footprint (sorted by it), each chunk padded to its largest."""
    oh, ow = output_size
    k, c = boxes.shape[0], flat.shape[1]
    if k == 0:
        return flat.new_zeros((0, c, oh, ow))
    offset = 0.5 if aligned else 0.0
    x1, y1 = boxes[:, 0] - offset, boxes[:, 1] - offset
    rw, rh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not aligned:
        rw, rh = rw.clamp(min=1), rh.clamp(min=1)
    gy, gx = _grid(rh, oh, sampling_ratio), _grid(rw, ow, sampling_ratio)
    iy, wy = _axis_table(y1, rh, oh, gy, heights, max(int(gy.max()), 1))  # (K, oh, 2 * max gy)
    ix, wx = _axis_table(x1, rw, ow, gx, widths, max(int(gx.max()), 1))  # (K, ow, 2 * max gx)
    wy, wx = wy.to(flat.dtype), wx.to(flat.dtype)
    (ly, sy), (lx, sx) = _span(iy, wy), _span(ix, wx)
    cost = sy.clamp(max=iy.shape[1] * iy.shape[2]) * sx.clamp(max=ix.shape[1] * ix.shape[2]) * c
    chunks = sorted_chunks(cost, _CHUNK_ELEMENTS)
    plan = []
    for sel in chunks:
        rows, ay = _compact(iy[sel], wy[sel], heights[sel], ly[sel], sy[sel])  # (n, ny), (n, oh, ny)
        cols, ax = _compact(ix[sel], wx[sel], widths[sel], lx[sel], sx[sel])  # (n, nx), (n, ow, nx)
        idx = (base[sel, None] + rows * widths[sel, None])[:, :, None] + cols[:, None, :]  # (n, ny, nx)
        plan.append((idx, ay, ax))
    # one gather for all chunks, split (not sliced): the backward of each index_select / slice would be a
    # zero-filled copy of its whole input
    idx_all = torch.cat([p[0].reshape(-1) for p in plan])
    gathered = flat.index_select(0, idx_all).split([p[0].numel() for p in plan])
    outs = []
    for (idx, ay, ax), vals in zip(plan, gathered):
        n, ny, nx = idx.shape
        vals = torch.bmm(ay, vals.view(n, ny, nx * c)).view(n, oh, nx, c)  # contract rows
        vals = torch.matmul(ax[:, None], vals)  # contract columns -> (n, oh, ow, c)
        outs.append(vals.permute(0, 3, 1, 2))
    return in_order(outs, chunks)


def _channels_last_flat(features: torch.Tensor) -> torch.Tensor:
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | Sequence[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = True) -> torch.Tensor:
    """RoIAlign of ``features`` (B, C, H, W) over ``rois`` (K, 5) ``[batch_idx, x1, y1, x2, y2]`` -> (K, C, h, w).

    Same semantics as ``torchvision.ops.roi_align`` (see the module docstring); ``sampling_ratio <= 0``
    is the adaptive grid, ``aligned=False`` the legacy Mask R-CNN version.
    """
    _, _, h, w = features.shape
    rois = rois.to(features.dtype)
    batch = rois[:, 0].long()
    heights = torch.full_like(batch, h)
    widths = torch.full_like(batch, w)
    return _roi_align_flat(_channels_last_flat(features), batch * (h * w), heights, widths,
                           rois[:, 1:] * spatial_scale, pair(output_size), sampling_ratio, aligned)


def assign_fpn_levels(boxes: torch.Tensor, min_level: int, max_level: int, canonical_scale: float = 224,
                      canonical_level: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """FPN level of each box (Lin et al. 2017, eq. 1; maskrcnn-benchmark ``LevelMapper``):
    ``floor(canonical_level + log2(sqrt(area) / canonical_scale + eps))`` clamped to
    ``[min_level, max_level]``, with area = ``(x2 - x1) * (y2 - y1)`` (no +1).  Returns absolute levels."""
    size = box_area(boxes).clamp(min=0).sqrt()
    level = torch.floor(canonical_level + torch.log2(size / canonical_scale + eps))
    return level.clamp(min_level, max_level).long()


def multilevel_roi_align(feature_list: Sequence[torch.Tensor], rois: torch.Tensor, output_size: int | Sequence[int],
                         scales: Sequence[float], sampling_ratio: int = -1, aligned: bool = True,
                         canonical_scale: float = 224, canonical_level: int = 4, min_level: int | None = None,
                         max_level: int | None = None) -> torch.Tensor:
    """RoIAlign of each RoI on its FPN level (``assign_fpn_levels``) -> (K, C, h, w) in ``rois`` order.

    ``feature_list[i]`` has spatial scale ``scales[i]`` (e.g. P2..P5: ``1/4 .. 1/32``); the levels default
    to ``-log2(scales)``, so ``min_level``/``max_level`` are only needed to check them.  Equal to calling
    ``roi_align`` per level on the RoIs assigned there (the Mask R-CNN ``Pooler``), in one gather.
    """
    if len(feature_list) != len(scales) or not feature_list:
        raise ValueError(f"got {len(feature_list)} feature maps and {len(scales)} scales")
    levels = [round(-math.log2(s)) for s in scales]
    min_level = levels[0] if min_level is None else min_level
    max_level = levels[-1] if max_level is None else max_level
    if levels != list(range(min_level, max_level + 1)):
        raise ValueError(f"scales {list(scales)} are not the levels {min_level}..{max_level}, finest first")
    f0 = feature_list[0]
    rois = rois.to(f0.dtype)
    target = assign_fpn_levels(rois[:, 1:], min_level, max_level, canonical_scale, canonical_level) - min_level
    sizes = torch.tensor([f.shape[0] * f.shape[2] * f.shape[3] for f in feature_list], device=f0.device)
    starts = torch.cumsum(sizes, 0) - sizes
    hs = torch.tensor([f.shape[2] for f in feature_list], device=f0.device)
    ws = torch.tensor([f.shape[3] for f in feature_list], device=f0.device)
    scale = torch.tensor([float(s) for s in scales], device=f0.device, dtype=f0.dtype)
    heights, widths = hs[target], ws[target]
    base = starts[target] + rois[:, 0].long() * heights * widths
    flat = torch.cat([_channels_last_flat(f) for f in feature_list])
    return _roi_align_flat(flat, base, heights, widths, rois[:, 1:] * scale[target, None], pair(output_size),
                           sampling_ratio, aligned)


def max_roi_align(feature_list: Sequence[torch.Tensor], rois: torch.Tensor, output_size: int | Sequence[int],
                  scales: Sequence[float], sampling_ratio: int = -1, aligned: bool = True) -> torch.Tensor:
    """RoIAlign of every RoI on every level, fused by the elementwise maximum (PANet's adaptive feature
    pooling, the unified framework's parsing RoIs) -> (K, C, h, w)."""
    if len(feature_list) != len(scales) or not feature_list:
        raise ValueError(f"got {len(feature_list)} feature maps and {len(scales)} scales")
    pooled = None
    for features, scale in zip(feature_list, scales):
        level = roi_align(features, rois, output_size, scale, sampling_ratio, aligned)
        pooled = level if pooled is None else torch.maximum(pooled, level)
    return pooled
