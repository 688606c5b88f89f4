"""Whole-image inference at the original resolution, with optional multi-scale + flip TTA: the one
test-time geometry of hparse (used by ``hparse parse``, the Python API, evaluation and validation).

An image is resized so its long side is ``long_side * scale`` (aspect kept; ``long_side`` None: the image's own
size times ``scale``), padded to a multiple of ``size_divisor``
with the model's mean pixel (0 after the model's normalisation), run by a runner (the PyTorch model or an ONNX Runtime
session, :mod:`hparse.engine.backends`); its logits stay on the network's **output grid** (the cells the image covers:
:class:`GridScores`). A flipped pass has its output flipped back and its left/right channels swapped from the label set
(SCHP's procedure, B.2). Passes are averaged as logits (default) or probabilities on the output grid of the largest
scale (the others resampled bilinearly onto it). Only then are the scores brought to the original size (bilinear,
reference-notes B.3; one resize from the grid, which covers the image exactly, rather than through the padded input) --
cell by cell where labels differ (:func:`upsample_argmax`), so time and memory beyond the label map are bounded
by the network, not the photo. Spatial extras take the same way back from the unflipped scale-1 pass (at full size); the
model's ``postprocess`` decodes them.

Instance models (``model.task == "instance"``) run through :class:`InstancePredictor`: the model's
:class:`~hparse.structures.PersonInstances` at ``long_side``, scaled back to the image. Their TTA (instance-parsers
spec 2.1.4 item 8) goes through the top-down protocol (``detect`` / ``roi_outputs`` / ``people``): the people's
boxes come from the base pass (scale 1, unflipped); every (scale, flip) pass parses those boxes, mapped into its
input, and the per-RoI probabilities (flipped back, left/right swapped) and raw qualities are averaged before the
model scores and pastes them. One pass's outputs are alive at a time; what is kept is R x C x h x w per image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HParseError, UnsupportedOutput
from ..ops.crf import DenseCRF
from .backends import TorchRunner
from .person_prior import make_prior

TILE_ELEMENTS = 1 << 22  # scores (or label pixels) per band when bringing scores to the image (16 MiB of float32)
PROBS_AT = ("image", "network")
BASE_PASS = (1.0, False)    # instance TTA: the pass whose detections every pass parses


def make_predictor(model, eval_cfg: dict, device, tta: bool = False, channels_last: bool = False, runner=None):
    """The predictor of ``model`` with the settings of a config's ``eval`` section (``runner``: see
    :class:`Predictor`)."""
    scales, flip = eval_cfg["tta_scales"] if tta else eval_cfg["scales"], tta or eval_cfg["flip"]
    if getattr(model, "task", "semantic") == "instance":
        return InstancePredictor(model, eval_cfg["long_side"], scales=scales, flip=flip, device=device)
    crf = DenseCRF(**eval_cfg["crf"]) if eval_cfg.get("crf") is not None else None
    return Predictor(model, long_side=eval_cfg["long_side"], scales=scales, flip=flip, average=eval_cfg["average"],
                     device=device, channels_last=channels_last, runner=runner, crf=crf,
                     prior=make_prior(eval_cfg.get("person_prior"), getattr(runner, "name", "torch") != "torch"))


class _Resizer:
    """Resize to the long side, pad with the model's mean pixel to a common, divisible size."""

    def __init__(self, model, long_side: int | None, size_divisor: int, device):
        self.model, self.long_side, self.size_divisor = model, long_side, size_divisor
        self.device = torch.device(device)

    def ratio(self, image_size: Sequence[int], scale: float = 1.0) -> float:
        """How much an image of ``image_size`` is resized for the network at ``scale``."""
        return scale if self.long_side is None else self.long_side * scale / max(image_size[:2])

    def resized_size(self, image_size: Sequence[int], scale: float = 1.0) -> tuple[int, int]:
        """``(h, w)`` of an image of ``image_size`` inside the network input at ``scale``."""
        h, w = image_size[:2]
        r = self.ratio(image_size, scale)
        return max(1, round(h * r)), max(1, round(w * r))

    def _resize(self, im: np.ndarray, size: tuple[int, int], scale: float) -> torch.Tensor:
        antialias = self.ratio(im.shape, scale) < 1
        im = np.ascontiguousarray(im, dtype=np.uint8)
        im = im if im.flags.writeable else im.copy()   # torch.from_numpy wants a writeable array
        t = torch.from_numpy(im).to(self.device).permute(2, 0, 1)[None]
        # one channel at a time: a float copy of one plane only (the result is the same as all three at once)
        return torch.cat([F.interpolate(t[:, c:c + 1].float(), size=size, mode="bilinear", align_corners=False,
                                        antialias=antialias) for c in range(3)], 1)

    def batch(self, images: Sequence[np.ndarray], scale: float = 1.0) -> tuple[torch.Tensor, list]:
        """-> ``(B, 3, H, W)`` float 0..255 batch, per-image ``(h, w)`` inside it."""
        sizes = [self.resized_size(im.shape, scale) for im in images]
        d = self.size_divisor
        H = -(-max(s[0] for s in sizes) // d) * d
        W = -(-max(s[1] for s in sizes) // d) * d
        canvas = self.model.pixel_mean.to(self.device).expand(len(images), 3, H, W).clone()
        for i, (im, (h, w)) in enumerate(zip(images, sizes)):
            canvas[i, :, :h, :w] = self._resize(im, (h, w), scale)[0]
        return canvas, sizes


# -- bilinear resizing in bands of rows --------------------------------------------------------------------------
def _linear_taps(n_in: int, n_out: int, device=None, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resizing ``n_in -> n_out`` along one axis (align_corners=False), computed in float32 as
    ``F.interpolate`` does: ``(indices, weights)``, both (n_out, 2): output ``i`` is
    ``weights[i, 0] * in[indices[i, 0]] + weights[i, 1] * in[indices[i, 1]]``. ``scale``: source pixels per output
    pixel (default ``n_in / n_out``, the whole source; less when the output covers only the source's first
    ``scale * n_out`` pixels)."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out if scale is None else torch.tensor(scale)
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    w1 = (src - i0).clamp(0, 1)
    return torch.stack([i0, i1], 1).to(device), torch.stack([1 - w1, w1], 1).to(device)


def _along(x: torch.Tensor, dim: int, taps) -> torch.Tensor:
    """``x`` resampled along ``dim`` by the taps of that axis (float32)."""
    index, weight = taps
    shape = [-1 if d == dim else 1 for d in range(x.dim())]
    near = x.index_select(dim, index[:, 0]).float().mul_(weight[:, 0].view(shape))
    return near.add_(x.index_select(dim, index[:, 1]).float().mul_(weight[:, 1].view(shape)))


def _resample(scores: torch.Tensor, row_taps, col_taps) -> torch.Tensor:
    """(C, h, w) -> (C, rows, cols) by the taps of both axes (bilinear)."""
    return _along(_along(scores, 1, row_taps), 2, col_taps)


@dataclass
class GridScores:
    """One image's (C, h, w) scores on the network's output grid: the cells from the image's top-left corner,
    ``span`` (rows, cols) the (fractional) number of cells the image covers, ``h, w`` = ``span`` rounded up."""

    values: torch.Tensor
    span: tuple[float, float]

    def taps(self, size: Sequence[int], covers: Sequence[float] | None = None) -> tuple:
        """Row and column taps from the grid to ``size`` (rows, cols) cells of which ``covers`` (default: all)
        are the image: to the image itself, or to another grid (its ``span``)."""
        (h, w), dev = self.values.shape[1:], self.values.device
        covers = size if covers is None else covers
        return (_linear_taps(h, int(size[0]), dev, self.span[0] / covers[0]),
                _linear_taps(w, int(size[1]), dev, self.span[1] / covers[1]))

    def resized(self, size: Sequence[int]) -> torch.Tensor:
        """(C, H, W): the scores bilinearly resized to an image of ``size`` (memory grows with the image)."""
        return _resample(self.values.float(), *self.taps(size))


def as_grid(scores: torch.Tensor | GridScores) -> GridScores:
    """Plain (C, h, w) scores as a grid the image covers whole."""
    return scores if isinstance(scores, GridScores) else GridScores(scores, tuple(scores.shape[1:]))


def _row_bands(height: int, channels: int, width: int, max_elements: int) -> Iterator[slice]:
    """Consecutive slices of ``height`` rows holding at most ``max_elements`` values each (at least one row)."""
    step = max(1, max_elements // max(1, channels * width))
    for r0 in range(0, height, step):
        yield slice(r0, min(height, r0 + step))


def _resize_rows(scores: torch.Tensor, row_taps, col_taps, rows: slice) -> torch.Tensor:
    """Output rows ``rows`` of ``scores`` (C, h, w) resized by the taps: (C, T, width)."""
    return _resample(scores, (row_taps[0][rows], row_taps[1][rows]), col_taps)


def resized_row_bands(scores: torch.Tensor | GridScores, size: Sequence[int],
                      max_elements: int = TILE_ELEMENTS) -> Iterator[tuple[slice, torch.Tensor]]:
    """``scores`` (C, h, w) resized bilinearly (align_corners=False) to ``size`` (H, W), as ``(rows, band)``
    pieces of at most ``max_elements`` values each: ``band`` is ``F.interpolate(scores, size)[:, rows]``
    (the same numbers up to float rounding); a :class:`GridScores` by its span."""
    grid = as_grid(scores)
    row_taps, col_taps = grid.taps(size)
    for rows in _row_bands(int(size[0]), grid.values.shape[0], int(size[1]), max_elements):
        yield rows, _resize_rows(grid.values, row_taps, col_taps, rows)


def _cell_corners(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``t`` (..., h, w) at ``(i, j)``, ``(i, j+1)``, ``(i+1, j)``, ``(i+1, j+1)`` (clamped) for every cell ``(i, j)``:
    the source pixels that the output pixels whose first taps are ``(i, j)`` mix."""
    def down(u):
        return torch.cat([u[..., 1:, :], u[..., -1:, :]], -2)
    right = torch.cat([t[..., 1:], t[..., -1:]], -1)
    return t, right, down(t), down(right)


class _AxisCells:
    """One axis of a bilinear resize grouped by cell: the output positions whose first tap is cell ``i`` are
    ``first[i] .. first[i] + count[i]`` (taps are non-decreasing)."""

    def __init__(self, taps, n_in: int):
        self.index, self.weight = taps
        self.count = torch.bincount(self.index[:, 0], minlength=n_in)
        self.first = self.count.cumsum(0) - self.count
        self.n_in = n_in

    def pixels(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(positions, weights, valid)`` of the cells' output positions, (K, N), (K, N, 2), (K, N); N the most
        any of them holds (positions past a cell's own are clamped and not valid)."""
        n = int(self.count[cells].max())
        pos = self.first[cells, None] + torch.arange(n, device=cells.device)
        valid = pos < (self.first + self.count)[cells, None]
        pos = pos.clamp(max=len(self.index) - 1)
        return pos, self.weight[pos], valid

    def neighbour(self, cells: torch.Tensor) -> torch.Tensor:
        return (cells + 1).clamp(max=self.n_in - 1)


def _paint_cells(out: torch.Tensor, scores: torch.Tensor, rows: _AxisCells, cols: _AxisCells, cy: torch.Tensor,
                 cx: torch.Tensor) -> None:
    """Write into ``out`` the argmax labels of the output pixels inside the cells ``(cy, cx)``: per cell its four
    corners' scores, blended by the pixels' column weights and then row weights, (C, K, rows, cols)."""
    py, wy, vy = rows.pixels(cy)
    px, wx, vx = cols.pixels(cx)
    cy1, cx1 = rows.neighbour(cy), cols.neighbour(cx)

    def across(y):   # (C, K, cols): the corners of row ``y`` blended along the columns
        return scores[:, y, cx, None] * wx[None, :, :, 0] + scores[:, y, cx1, None] * wx[None, :, :, 1]

    block = across(cy)[:, :, None] * wy[None, :, :, 0, None] + across(cy1)[:, :, None] * wy[None, :, :, 1, None]
    label = block.max(0).indices.to(torch.uint8)
    valid = vy[:, :, None] & vx[:, None, :]
    out[py[:, :, None].expand_as(label)[valid], px[:, None, :].expand_as(label)[valid]] = label[valid]


def upsample_argmax(scores: torch.Tensor | GridScores, size: Sequence[int],
                    max_elements: int = TILE_ELEMENTS) -> np.ndarray:
    """``F.interpolate(scores[None], size, bilinear).argmax(1)`` as an (H, W) uint8 label map (a
    :class:`GridScores` resized by its span).

    Bilinear weights are a convex combination, so where the four source pixels of a cell share their argmax,
    every output pixel inside the cell takes that label (painted in bands of rows); only the cells across a label
    boundary are interpolated, a chunk of cells at a time. Memory: the label map, bands of ``max_elements``
    output pixels and at most ``max_elements`` interpolated scores at a time."""
    grid = as_grid(scores)
    grid = GridScores(grid.values.float().cpu(), grid.span)     # the label map is a NumPy array: work beside it
    values, (H, W) = grid.values, (int(size[0]), int(size[1]))
    c, h, w = values.shape
    row_taps, col_taps = grid.taps((H, W))
    source = values.max(0).indices.to(torch.uint8)
    label = np.empty((H, W), np.uint8)
    out = torch.from_numpy(label)
    for band in _row_bands(H, 1, W, max_elements):
        out[band] = source.index_select(0, row_taps[0][band, 0]).index_select(1, col_taps[0][:, 0])
    rows, cols = _AxisCells(row_taps, h), _AxisCells(col_taps, w)
    first, *others = _cell_corners(source)
    cy, cx = torch.stack([first != o for o in others]).any(0).nonzero(as_tuple=True)   # cells across a boundary
    cy, cx = (t[(rows.count[cy] > 0) & (cols.count[cx] > 0)] for t in (cy, cx))  # cells some pixel falls in
    if len(cy):
        chunk = max(1, max_elements // (c * int(rows.count.max()) * int(cols.count.max())))
        for k in range(0, len(cy), chunk):
            _paint_cells(out, values, rows, cols, cy[k:k + chunk], cx[k:k + chunk])
    return label


def _half_keeping_argmax(probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``probs`` (C, ...) as float16 where rounding ties are broken towards ``label`` (one step up), so
    ``argmax`` of the result is ``label``."""
    half = probs.half()
    tied = half.max(0).indices != label
    if tied.any():
        top = half.gather(0, label[None])
        bumped = torch.nextafter(top, torch.full_like(top, float("inf")))
        half.scatter_(0, label[None], torch.where(tied[None], bumped, top))
    return half


class Predictor:
    """Semantic models: label maps, class probabilities and the model's extras per image.

    ``runner(x) -> (logits, extras)`` executes the network on a padded 0..255 batch (default: the model itself,
    :class:`~hparse.engine.backends.TorchRunner`; an ONNX Runtime session for the ``onnxruntime`` backend).
    """

    def __init__(self, model: torch.nn.Module, long_side: int = 512, scales: Sequence[float] = (1.0,),
                 flip: bool = False, size_divisor: int = 32, average: str = "logits",
                 device: str | torch.device = "cpu", channels_last: bool = False, runner=None, crf=None,
                 prior=None):
        if average not in ("logits", "probs"):
            raise ValueError("average must be 'logits' or 'probs'")
        # channels_last: NHWC weights and inputs (about 1.4x faster convolutions on this CPU); converts
        # ``model`` in place, so it is left off for the trainer's own model
        self.model = model.eval().to(device, memory_format=torch.channels_last if channels_last else None)
        self.meta = model.meta
        self.device = torch.device(device)
        self.perm = list(self.meta.flip_permutation())
        self.scales, self.flip, self.average = tuple(scales), flip, average
        self.resizer = _Resizer(self.model, long_side, size_divisor, self.device)
        self.runner = runner or TorchRunner(self.model, channels_last)
        self.crf = crf   # a DenseCRF (hparse.ops.crf) refining the probabilities at the image's size, or None
        if prior is not None and self.meta.classes[0] != "background":
            raise HParseError(f"a person prior needs class 0 to be the background ({self.meta.name}: "
                              f"{self.meta.classes[0]!r})")
        self.prior = prior   # a person prior (hparse.engine.person_prior) fused with the probabilities, or None

    @property
    def long_side(self) -> int:
        return self.resizer.long_side

    @long_side.setter
    def long_side(self, value: int | None) -> None:
        self.resizer.long_side = None if value is None else int(value)

    @staticmethod
    def _to_size(out: torch.Tensor, x: torch.Tensor, i: int, size, target) -> torch.Tensor:
        """Output ``i`` of a batch -> (K, *target): up to the input, crop the padding, resize to ``target``."""
        h, w = size
        up = out[i:i + 1].float()
        if up.shape[-2:] != x.shape[-2:]:
            up = F.interpolate(up, size=x.shape[-2:], mode="bilinear", align_corners=False)
        up = up[:, :, :h, :w]
        if tuple(up.shape[-2:]) != tuple(target):
            up = F.interpolate(up, size=tuple(target), mode="bilinear", align_corners=False)
        return up[0]

    def _passes(self, x: torch.Tensor, logits: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """``(scores, number of passes summed in them)`` of a batch at the network's output resolution: the plain
        pass and, with ``flip``, the mirrored batch's logits mirrored back with left/right classes swapped
        (bilinear resizing commutes with mirroring and, for logit averaging, with the sum of the two)."""
        if not self.flip:
            return [(logits, 1)]
        flipped = self.runner(x.flip(-1))[0].float().flip(-1)[:, self.perm]
        return [(logits.float() + flipped, 2)] if self.average == "logits" else [(logits, 1), (flipped, 1)]

    @torch.no_grad()
    def network_scores(self, images: list[np.ndarray], with_extras: bool = False):
        """Averaged scores per image on the network's output grid at the largest scale (:class:`GridScores`):
        logits, or probabilities with ``average="probs"``; with ``with_extras`` also the model's postprocessed
        extras of the unflipped scale-1 pass (an extra pass when 1 is not a scale)."""
        grids: list[GridScores | None] = [None] * len(images)
        extras, n = None, 0
        for s in sorted(self.scales, reverse=True):   # the largest scale first: passes meet on its grid
            x, sizes = self.resizer.batch(images, s)
            logits, raw = self.runner(x)
            if with_extras and s == 1.0:
                extras = self._extras(raw, x, images, sizes)
            for out, count in self._passes(x, logits):
                n += count
                for i, size in enumerate(sizes):
                    grids[i] = self._accumulate(grids[i], out[i], x.shape[-2:], size)
        for g in grids:
            g.values /= n
        if with_extras:
            return grids, extras if extras is not None else self.extras(images)
        return grids

    def _accumulate(self, grid: GridScores | None, out: torch.Tensor, input_size, size) -> GridScores:
        """Add ``out`` (C, h', w'), one image's output for a padded input of ``input_size`` in which the image is
        ``size``, to ``grid`` (resampled onto it); the first output makes the grid: its cells the image covers."""
        span = (size[0] * out.shape[1] / input_size[0], size[1] * out.shape[2] / input_size[1])
        to_scores = (lambda t: t.softmax(0)) if self.average == "probs" else (lambda t: t)
        if grid is None:
            rows, cols = (min(n, math.ceil(extent - 1e-6)) for n, extent in zip(out.shape[1:], span))
            values = to_scores(out[:, :rows, :cols].float()).clone(memory_format=torch.contiguous_format)
            return GridScores(values, span)
        grid.values += to_scores(_resample(out, *GridScores(out, span).taps(grid.values.shape[1:], grid.span)))
        return grid

    @torch.no_grad()
    def scores(self, images: list[np.ndarray], with_extras: bool = False):
        """:meth:`network_scores` resized to each image's original size, (C, H, W) (memory grows with the image:
        prefer :meth:`predict`)."""
        res = self.network_scores(images, with_extras)
        grids, extras = res if with_extras else (res, None)
        full = [g.resized(im.shape[:2]) for g, im in zip(grids, images)]
        return (full, extras) if with_extras else full

    @torch.no_grad()
    def extras(self, images: list[np.ndarray]) -> list[dict]:
        """The model's extras per image (one pass at scale 1, no flip), decoded by its ``postprocess``."""
        x, sizes = self.resizer.batch(images, 1.0)
        return self._extras(self.runner(x)[1], x, images, sizes)

    def _extras(self, raw: dict, x: torch.Tensor, images, sizes) -> list[dict]:
        out = []
        for i, (im, size) in enumerate(zip(images, sizes)):
            one = {k: self._to_size(v, x, i, size, im.shape[:2]) if v.dim() == 4 else v[i] for k, v in raw.items()}
            out.append(self.model.postprocess(one))
        return out

    def _probabilities(self, grid: GridScores, label: np.ndarray, image_size, probs_at: str) -> np.ndarray:
        """float16 (C, h, w) on the network's output grid or (C, H, W) at the image's size, argmax equal to
        ``label``."""
        to_probs = (lambda t: t) if self.average == "probs" else (lambda t: t.softmax(0))
        if probs_at == "network":
            return _half_keeping_argmax(to_probs(grid.values), grid.values.argmax(0)).cpu().numpy()
        out = np.empty((grid.values.shape[0], *image_size[:2]), np.float16)
        for rows, band in resized_row_bands(grid, image_size[:2]):
            lab = torch.from_numpy(label[rows].astype(np.int64)).to(band.device)
            out[:, rows] = _half_keeping_argmax(to_probs(band), lab).cpu().numpy()
        return out

    def predict(self, images: list[np.ndarray], return_probs: bool = False, with_extras: bool = False,
                probs_at: str = "image"):
        """Label maps (uint8, original size), and probabilities on request (float16 (C, H, W) at the image's
        size, or with ``probs_at="network"`` (C, h, w) on the network's output grid, no padding: see
        :meth:`network_scores`);
        with ``with_extras`` returns ``(results, extras)`` from the same passes (see :meth:`extras`)."""
        if probs_at not in PROBS_AT:
            raise ValueError(f"probs_at must be one of {PROBS_AT}, got {probs_at!r}")
        res = self.network_scores(images, with_extras)
        scores, extras = res if with_extras else (res, None)
        out = []
        for s, im in zip(scores, images):
            decide = s
            if self.prior is not None:
                s, decide = self._with_prior(s, im)
            if self.crf is not None:
                out.append(self._crf_result(s, im, return_probs, probs_at))
                continue
            label = upsample_argmax(decide, im.shape[:2])
            out.append((label, self._probabilities(s, label, im.shape, probs_at)) if return_probs else label)
        return (out, extras) if with_extras else out

    def _with_prior(self, grid: GridScores, image: np.ndarray) -> tuple[GridScores, GridScores]:
        """``(scores, decision scores)`` on the grid after fusing the person prior's P(person) (resampled onto the
        grid) with the probabilities; the scores stay in this predictor's convention (log-probabilities as logits)."""
        logits = self.average == "logits"
        probs = grid.values.float().softmax(0) if logits else grid.values.float()
        person = self.prior.person(image)[None]
        on_grid = _resample(person, *GridScores(person, tuple(person.shape[1:])).taps(probs.shape[1:], grid.span))[0]
        fused, decision = self.prior.fuse(probs, on_grid.to(probs.device))
        return GridScores(fused.clamp_min(1e-12).log() if logits else fused, grid.span), GridScores(decision, grid.span)

    def _crf_result(self, grid: GridScores, image: np.ndarray, return_probs: bool, probs_at: str):
        """The label (and probabilities) after the dense CRF, which works on the image's pixels."""
        if return_probs and probs_at == "network":
            raise ValueError("with a CRF the probabilities are the image's: probs_at must be 'image'")
        probs = grid.resized(image.shape[:2])
        q = self.crf(probs if self.average == "probs" else probs.softmax(0), image)
        label = q.argmax(0).to(torch.uint8).cpu().numpy()
        return (label, _half_keeping_argmax(q, q.argmax(0)).cpu().numpy()) if return_probs else label

    def outputs(self, images: list[np.ndarray], with_extras: bool = False, with_probs: bool = False) -> list[dict]:
        """Evaluator inputs: ``{"sem_seg": label map[, "probs": (C, H, W) float16][, "extras": {name: array}]}``
        per image."""
        res = self.predict(images, return_probs=with_probs, with_extras=with_extras)
        results, extras = res if with_extras else (res, None)
        out = []
        for i, r in enumerate(results):
            label, probs = r if with_probs else (r, None)
            o = {"sem_seg": label}
            if with_probs:
                o["probs"] = probs
            if with_extras:
                o["extras"] = {k: np.asarray(v) for k, v in extras[i].items()}
            out.append(o)
        return out


def mirrored(x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """A padded batch with each image mirrored inside its own ``(h, w)`` (the padding stays right and below)."""
    out = x.clone()
    for i, (h, w) in enumerate(sizes):
        out[i, :, :h, :w] = x[i, :, :h, :w].flip(-1)
    return out


def pass_boxes(boxes: torch.Tensor, base_size: Sequence[int], size: Sequence[int], flip: bool,
               offset: float = 0.0) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) in the base pass's input, where the image is ``base_size`` (h, w), in another pass's
    input, where it is ``size``, so the RoI features sample the same places of the picture: the points sampled
    (``offset`` pixels right of / below the box: ``model.roi_offset``) scaled per axis, mirrored in the image's
    width for a flipped pass, then the offset taken off again."""
    (h0, w0), (h, w) = base_size, size
    if (h, w) == (h0, w0) and not flip:
        return boxes
    out = (boxes + offset) * boxes.new_tensor([w / w0, h / h0, w / w0, h / h0])
    out = torch.stack((w - out[:, 2], out[:, 1], w - out[:, 0], out[:, 3]), 1) if flip else out
    return out - offset


class InstancePredictor:
    """Instance models: :class:`~hparse.structures.PersonInstances` per image at its original size; with
    ``scales`` other than ``(1,)`` or ``flip``, the per-RoI test-time augmentation of the module docstring
    (models with the top-down protocol only)."""

    def __init__(self, model: torch.nn.Module, long_side: int = 512, scales: Sequence[float] = (1.0,),
                 flip: bool = False, size_divisor: int = 32, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.meta = model.meta
        self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
        self.perm = list(self.meta.flip_permutation())
        self.resizer = _Resizer(self.model, long_side, size_divisor, device)
        if self.passes() != [BASE_PASS] and not hasattr(model, "roi_outputs"):
            raise HParseError(f"{type(model).__name__} has no per-RoI outputs: no multi-scale or flip test")

    def passes(self) -> list[tuple[float, bool]]:
        """The (scale, flip) passes averaged, the base pass (1, unflipped) first when it is one."""
        passes = [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]
        return sorted(passes, key=lambda p: p != BASE_PASS)

    def _forward(self, images: list[np.ndarray], scale: float, flip: bool) -> tuple[dict, list]:
        """``(raw outputs, per-image sizes)`` of the network on the images at ``scale``, mirrored with ``flip``."""
        x, sizes = self.resizer.batch(images, scale)
        x, batch = self.model.prepare({"image": mirrored(x, sizes) if flip else x, "image_sizes": sizes})
        return self.model.network(x), batch["image_sizes"]

    def _augmented(self, image: np.ndarray) -> tuple:
        """``(people in the base input, base size)`` of one image: base-pass detections; per RoI the parsing
        (and foreground) probabilities averaged over the passes and the score averaged (the mean of
        sqrt(det x clamp(quality)), given to the model as the quality whose score that is). Memory: one pass's
        features and the image's (R, C, h, w) sums."""
        outputs, (size,) = self._forward([image], 1.0, False)
        det = self.model.detect(outputs, [size])[0]
        probs, root, foreground = None, None, None
        for scale, flip in self.passes():
            pass_size = size
            if (scale, flip) != BASE_PASS:
                del outputs                                         # one pass's outputs at a time
                outputs, (pass_size,) = self._forward([image], scale, flip)
            boxes = pass_boxes(det.boxes, size, pass_size, flip, self.model.roi_offset)
            p, q, f = self.model.roi_outputs(outputs, 0, boxes)
            p = p.flip(-1)[:, self.perm] if flip else p
            f = f.flip(-1) if flip and f is not None else f
            r = None if q is None else q.float().clamp(0, 1).sqrt()
            probs = p if probs is None else probs.add_(p)
            root = r if root is None or r is None else root.add_(r)
            foreground = f if foreground is None or f is None else foreground.add_(f)
        n = len(self.passes())
        probs, quality = probs.div_(n), None if root is None else (root / n) ** 2
        foreground = None if foreground is None else foreground.div_(n)
        people = self.model.people(size, det.boxes, det.scores,
                                   lambda rois: (probs[rois], None if quality is None else quality[rois],
                                                 None if foreground is None else foreground[rois]))
        return people, size

    def _network_people(self, images: list[np.ndarray]) -> tuple[list, list]:
        if self.passes() != [BASE_PASS]:
            people = [self._augmented(im) for im in images]
            return [p for p, _ in people], [size for _, size in people]
        x, sizes = self.resizer.batch(images)
        return self.model({"image": x, "image_sizes": sizes}), sizes

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], return_probs: bool = False, with_extras: bool = False,
                probs_at: str = "image"):
        """People per image; the semantic predictor's options where they apply (no class probabilities: the
        people are the result; no extras)."""
        if return_probs:
            raise UnsupportedOutput("an instance model gives people, not class probabilities: leave out --probs")
        results, sizes = self._network_people(images)
        people = [self.model.postprocess(r, size, im.shape[:2]) for r, size, im in zip(results, sizes, images)]
        return (people, [{} for _ in people]) if with_extras else people

    def outputs(self, images: list[np.ndarray], with_extras: bool = False, with_probs: bool = False) -> list[dict]:
        return [{"instances": p, "sem_seg": p.to_semantic()} for p in self.predict(images, return_probs=with_probs)]
