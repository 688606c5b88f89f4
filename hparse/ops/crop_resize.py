"""RoI targets from label maps and RoI predictions back onto the image (Mask R-CNN / Parsing R-CNN style).

- ``crop_and_resize_labels``: nearest-neighbour crop-and-resize of integer label maps to RoI targets.
  Output pixel (i, j) of an ``h x w`` target reads the label at its centre,
  ``x = x1 + (j + 0.5) * (x2 - x1) / w``, ``y = y1 + (i + 0.5) * (y2 - y1) / h``, i.e. pixel
  ``(floor(y), floor(x))`` (computed in float64); centres outside the image get ``fill`` (255 = ignore).
  For an integer box inside the image this is ``F.interpolate(crop, size, mode="nearest-exact")`` (up to
  float32 rounding at exact ties there).  (Parsing R-CNN crops an integer-rounded box and uses
  ``cv2.resize(..., INTER_NEAREST)``, which samples ``floor(j * scale)``: a half-pixel shift.)
- ``paste_roi_maps``: the inverse for predictions: each box is rounded to integers
  (``floor(v + 0.5)``, at least 1 px wide/high, x2/y2 exclusive), its RoI map is resized to the box
  bilinearly with ``align_corners=False`` (``F.interpolate``'s weights) and pasted into a zero canvas,
  clipped to the image -- the Mask R-CNN paste (maskrcnn-benchmark ``Masker``) without its 1-px padding.
Both are vectorised over RoIs; ``paste_roi_maps`` works in chunks of RoIs of similar visible box size,
each resizing (two batched matmuls with interpolation matrices) only a window the size of its largest box.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .roi_align import in_order, pair, sorted_chunks

_CHUNK_ELEMENTS = 1 << 24  # resized values per chunk of RoIs in paste_roi_maps


def crop_and_resize_labels(label_maps: torch.Tensor, boxes: torch.Tensor, size: int | Sequence[int],
                           fill: int = 255) -> torch.Tensor:
    """Nearest crop-and-resize of ``label_maps`` (N, H, W) over ``boxes`` (N, 4; one box per map) to
    (N, h, w) of the same dtype; samples falling outside the map are ``fill``."""
    n, hh, ww = label_maps.shape
    h, w = pair(size)
    if n == 0:
        return label_maps.new_full((0, h, w), fill)
    boxes = boxes.to(torch.float64)  # exact floor() for pixel coordinates
    dev = label_maps.device

    def centres(lo: torch.Tensor, hi: torch.Tensor, m: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(m, device=dev, dtype=torch.float64) + 0.5
        idx = torch.floor(lo[:, None] + t * (hi - lo)[:, None] / m).long()
        return idx.clamp(0, limit - 1), (idx >= 0) & (idx < limit)

    ys, vy = centres(boxes[:, 1], boxes[:, 3], h, hh)
    xs, vx = centres(boxes[:, 0], boxes[:, 2], w, ww)
    out = label_maps[torch.arange(n, device=dev)[:, None, None], ys[:, :, None], xs[:, None, :]]
    return out.masked_fill(~(vy[:, :, None] & vx[:, None, :]), fill)


def _resize_matrix(lo: torch.Tensor, length: torch.Tensor, src: int, win_lo: torch.Tensor, win: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """(k, win, src) linear-interpolation matrices for canvas positions ``win_lo + t`` (t < win) of boxes
    starting at ``lo`` with ``length`` px: ``F.interpolate``'s (align_corners=False) weights on a
    ``src``-long RoI map, zero rows outside the box."""
    t = torch.arange(win, device=lo.device)
    u = win_lo[:, None] + t - lo[:, None]  # position inside the box
    inside = ((u >= 0) & (u < length[:, None])).to(dtype)
    s = ((u.to(dtype) + 0.5) * (src / length.to(dtype))[:, None] - 0.5).clamp(min=0)
    i0 = s.long().clamp(max=src - 1)
    frac = s - i0.to(dtype)
    m = torch.zeros((*u.shape, src), dtype=dtype, device=lo.device)
    m.scatter_add_(2, i0[..., None], ((1 - frac) * inside)[..., None])
    return m.scatter_add_(2, (i0 + 1).clamp(max=src - 1)[..., None], (frac * inside)[..., None])


def _argmax_channels(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(1)`` as uint8 (first maximum wins), a running max over channels: much faster on the CPU
    than the strided reduction."""
    best, idx = x[:, 0], torch.zeros_like(x[:, 0], dtype=torch.uint8)
    for ch in range(1, x.shape[1]):
        idx.masked_fill_(x[:, ch] > best, ch)
        best = torch.maximum(best, x[:, ch])
    return idx


def _visible(lo: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and length of the part of ``[lo, lo + length)`` inside ``[0, size)`` (length may be 0)."""
    start = lo.clamp(0, size)
    return start, (lo + length).clamp(0, size) - start


def paste_roi_maps(roi_maps: torch.Tensor, boxes: torch.Tensor, image_size: Sequence[int],
                   argmax: bool = False) -> torch.Tensor:
    """Paste RoI maps (N, C, h, w) -- logits or probabilities -- into (N, C, H, W) image canvases (zeros
    outside each box), or with ``argmax=True`` into (N, H, W) uint8 labels (argmax over C inside each box,
    0 outside).  ``image_size = (H, W)``; see the module docstring for the rounding/resizing rule.
    RoIs go in chunks of similar visible box size; each chunk computes a window of its largest box."""
    n, c, h, w = roi_maps.shape
    hh, ww = int(image_size[0]), int(image_size[1])
    if argmax and c > 256:
        raise ValueError(f"argmax=True returns uint8 labels: at most 256 channels, got {c}")
    dtype = roi_maps.dtype if roi_maps.is_floating_point() else torch.float32
    ib = torch.floor(boxes.to(torch.float64) + 0.5).long()
    x0, y0 = ib[:, 0], ib[:, 1]
    bw, bh = (ib[:, 2] - x0).clamp(min=1), (ib[:, 3] - y0).clamp(min=1)
    vx0, vis_w = _visible(x0, bw, ww)
    vy0, vis_h = _visible(y0, bh, hh)
    chunks = sorted_chunks(c * vis_h.clamp(min=1) * vis_w.clamp(min=w), _CHUNK_ELEMENTS)  # larger matmul
    parts = []
    for sel in chunks:
        k = len(sel)
        win_h, win_w = max(int(vis_h[sel].max()), 1), max(int(vis_w[sel].max()), 1)
        wx0, wy0 = vx0[sel].clamp(max=ww - win_w), vy0[sel].clamp(max=hh - win_h)  # window inside the image
        ay = _resize_matrix(y0[sel], bh[sel], h, wy0, win_h, dtype)  # (k, win_h, h)
        ax = _resize_matrix(x0[sel], bw[sel], w, wx0, win_w, dtype)  # (k, win_w, w)
        val = ay[:, None] @ roi_maps[sel].to(dtype) @ ax[:, None].transpose(2, 3)  # (k, c, win_h, win_w)
        pos = ((wy0[:, None, None] + torch.arange(win_h, device=ib.device)[:, None]) * ww
               + wx0[:, None, None] + torch.arange(win_w, device=ib.device)).reshape(k, 1, -1)
        if argmax:  # label 0 outside the box, where the matrices' rows are zero (inside they sum to 1)
            inside = (ay.sum(2)[:, :, None] > 0) & (ax.sum(2)[:, None, :] > 0)
            lab = (_argmax_channels(val) * inside).reshape(k, 1, -1)
            parts.append(torch.zeros((k, 1, hh * ww), dtype=torch.uint8, device=ib.device).scatter(2, pos, lab))
        else:
            val = val.reshape(k, c, -1)
            parts.append(val.new_zeros((k, c, hh * ww)).scatter(2, pos.expand(k, c, -1), val).to(roi_maps.dtype))
    if not parts:
        shape = (0, hh, ww) if argmax else (0, c, hh, ww)
        return torch.zeros(shape, dtype=torch.uint8 if argmax else roi_maps.dtype, device=roi_maps.device)
    out = in_order(parts, chunks)
    return out.view(n, hh, ww) if argmax else out.view(n, c, hh, ww)
