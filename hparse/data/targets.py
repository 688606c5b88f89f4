"""Training targets derived from the (augmented) sample: edges, skeleton heatmaps, hierarchy.

Each generator is a plain function and also a transform step (registered in
``hparse.data.transform_base.TRANSFORMS``) that adds keys to the sample; put the steps after
the geometric augmentation (CE2P computes edges on the warped crop):

=======================  ==============================================================
step                     adds
=======================  ==============================================================
``EdgeTarget``           ``edge`` HxW uint8 0/1 (CE2P ``generate_edge``)
``JointHeatmapTarget``   ``joint_heatmaps`` (J, h, w) float32, ``joint_weights`` (J,)
``PartCentreTarget``     ``part_heatmaps`` (C-1, h, w) float32, ``part_weights`` (C-1,)
``HierarchyTarget``      ``label_l2`` (0 bg / 1 upper / 2 lower), ``label_l3`` (0 / 1 person)
=======================  ==============================================================

Heatmaps live on the stride grid of the network output: ``h, w = ceil(H / stride),
ceil(W / stride)`` for an ``H x W`` input (a ResNet stem gives 119 for 473).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..labels import IGNORE_INDEX, DatasetMeta, get_meta
from ..ops.edges import CE2P_EDGE_PAIRS
from .transform_base import TRANSFORMS, Transform


def edge_map(label: np.ndarray, ignore: int | None = IGNORE_INDEX, width: int = 3,
             sides: str = "ce2p") -> np.ndarray:
    """CE2P ``generate_edge``: HxW uint8 map, 1 on part boundaries.

    Each pixel is compared with one neighbour in four directions (below, right, lower-right,
    lower-left); pairs with an ``ignore`` pixel are skipped. ``sides="ce2p"`` marks the pixel
    CE2P's code marks (the lower one of a vertical pair, the left one of a horizontal pair,
    the upper one of a diagonal pair), so the raw edge is one pixel thick on one side of the
    boundary; ``sides="both"`` marks both pixels of every differing pair (symmetric, two
    pixels thick). The result is dilated with a ``width x width`` rectangle (CE2P: 3).
    """
    if sides not in ("ce2p", "both"):
        raise ValueError(f"edge_map: sides must be 'ce2p' or 'both', not {sides!r}")
    lab = np.asarray(label)
    edge = np.zeros(lab.shape, np.uint8)
    for a, b in CE2P_EDGE_PAIRS:
        d = lab[a] != lab[b]
        if ignore is not None:
            d &= (lab[a] != ignore) & (lab[b] != ignore)
        edge[a] |= d
        if sides == "both":
            edge[b] |= d
    if width > 1:
        edge = cv2.dilate(edge, cv2.getStructuringElement(cv2.MORPH_RECT, (width, width)))
    return edge


def heatmap_size(out_size: Sequence[int], stride: int) -> tuple[int, int]:
    return -(-int(out_size[0]) // stride), -(-int(out_size[1]) // stride)


def gaussian_heatmaps(points: np.ndarray, valid: np.ndarray, out_size: Sequence[int], stride: int = 4,
                      sigma: float = 7.0, window: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian per point (x, y in input pixels) on the stride grid (HRNet/CorrPM rule).

    The centre cell is ``floor(p / stride + 0.5)``, the peak is 1, ``sigma`` is in cells and
    the map is cut to ``|dx|, |dy| <= int(window * sigma)`` cells. Invalid points, non-finite
    points and points whose window misses the map give a zero map and weight 0.
    """
    h, w = heatmap_size(out_size, stride)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    ok = np.asarray(valid, bool).reshape(-1) & np.isfinite(pts).all(1)
    mu = np.floor(np.where(ok[:, None], pts, 0.0) / stride + 0.5)
    r = int(window * sigma)
    ok &= (mu[:, 0] + r >= 0) & (mu[:, 0] - r < w) & (mu[:, 1] + r >= 0) & (mu[:, 1] - r < h)
    dx = np.arange(w)[None] - mu[:, :1]
    dy = np.arange(h)[None] - mu[:, 1:]
    gx = np.where(np.abs(dx) <= r, np.exp(-dx ** 2 / (2 * sigma ** 2)), 0.0)
    gy = np.where(np.abs(dy) <= r, np.exp(-dy ** 2 / (2 * sigma ** 2)), 0.0)
    maps = gy[:, :, None] * gx[:, None, :] * ok[:, None, None]
    return maps.astype(np.float32), ok.astype(np.float32)


def joint_heatmaps(joints: np.ndarray, out_size: Sequence[int], stride: int = 4, sigma: float = 7.0,
                   window: float = 3.0, use_visibility: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CorrPM joint targets: (J, h, w) heatmaps and (J,) weights for ``(J, 3)`` joints
    (x, y, visible) in an image of ``out_size = (H, W)``; missing (NaN) or invisible
    (visible <= 0) joints give a zero map and weight 0. ``use_visibility=False`` ignores the
    third column (JPPNet on LIP, whose CSV flag is not a plain "visible" bit): every joint with
    finite coordinates counts."""
    j = np.asarray(joints, np.float64).reshape(len(joints), -1)
    vis = j[:, 2] > 0 if j.shape[1] > 2 and use_visibility else np.ones(len(j), bool)
    return gaussian_heatmaps(j[:, :2], vis, out_size, stride, sigma, window)


def part_centres(label: np.ndarray, num_classes: int, method: str = "centroid") -> np.ndarray:
    """(C-1, 2) x, y centres of the foreground classes 1..C-1 (NaN where absent).

    ``centroid``: mean pixel position of the part mask (may fall outside a non-convex part);
    ``distance``: the pixel farthest from the mask boundary (image border counts as
    boundary), which always lies inside the mask.
    """
    lab = np.asarray(label)
    out = np.full((num_classes - 1, 2), np.nan)
    if method == "centroid":
        ys, xs = np.indices(lab.shape)
        keep = lab < num_classes
        cls = lab[keep].astype(np.int64)
        cnt = np.bincount(cls, minlength=num_classes)[1:]
        sx = np.bincount(cls, xs[keep], minlength=num_classes)[1:]
        sy = np.bincount(cls, ys[keep], minlength=num_classes)[1:]
        has = cnt > 0
        out[has] = np.stack([sx[has], sy[has]], 1) / cnt[has, None]
    elif method == "distance":
        for c in np.unique(lab):
            if 0 < c < num_classes:
                mask = np.pad((lab == c).astype(np.uint8), 1)
                dt = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
                y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
                out[c - 1] = (x, y)
    else:
        raise ValueError(f"part_centres: method must be 'centroid' or 'distance', not {method!r}")
    return out


def part_centre_heatmaps(label: np.ndarray, num_classes: int, out_size: Sequence[int] | None = None,
                         stride: int = 4, sigma: float = 7.0, method: str = "centroid",
                         window: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Structure-point targets from a parsing label (ACENet on datasets without joints):
    one heatmap per foreground class 1..C-1, absent parts -> zero map and weight 0.

    ``out_size`` is the input image size (default: the label's); if it differs from the
    label's size the centres are rescaled (pixel-centre aligned).
    """
    lab = np.asarray(label)
    c = part_centres(lab, num_classes, method)
    if out_size is not None and tuple(out_size) != lab.shape:
        s = np.array([out_size[1] / lab.shape[1], out_size[0] / lab.shape[0]])
        c = (c + 0.5) * s - 0.5
    return gaussian_heatmaps(c, np.isfinite(c).all(1), out_size or lab.shape, stride, sigma, window)


def hierarchy_labels(label: np.ndarray, meta: DatasetMeta | str) -> dict[int, np.ndarray]:
    """{1: parts, 2: background/upper/lower, 3: background/person} via ``meta.hierarchy_lut``
    (ignore pixels stay ``meta.ignore_index``)."""
    meta = get_meta(meta)
    return {lvl: meta.hierarchy_lut(lvl)[label] for lvl in (1, 2, 3)}


# ---------------------------------------------------------------------------------------
# transform steps

def _image_size(sample) -> tuple[int, int]:
    img = sample["image"]  # HxWx3 array, or CxHxW tensor after ToTensor
    return tuple(img.shape[:2]) if isinstance(img, np.ndarray) else tuple(img.shape[-2:])


@TRANSFORMS.register("EdgeTarget")
class EdgeTarget(Transform):
    """Adds ``edge`` from ``label`` (see :func:`edge_map`)."""

    def __init__(self, width: int = 3, sides: str = "ce2p", ignore: int = IGNORE_INDEX):
        self.width, self.sides, self.ignore = width, sides, ignore

    def apply(self, sample, rng):
        sample["edge"] = edge_map(np.asarray(sample["label"]), self.ignore, self.width, self.sides)
        return sample


@TRANSFORMS.register("JointHeatmapTarget")
class JointHeatmapTarget(Transform):
    """Adds ``joint_heatmaps`` and ``joint_weights`` from ``joints`` (see :func:`joint_heatmaps`)."""

    def __init__(self, stride: int = 4, sigma: float = 7.0, window: float = 3.0, use_visibility: bool = True):
        self.stride, self.sigma, self.window, self.use_visibility = stride, sigma, window, use_visibility

    def apply(self, sample, rng):
        sample["joint_heatmaps"], sample["joint_weights"] = joint_heatmaps(
            sample["joints"], _image_size(sample), self.stride, self.sigma, self.window, self.use_visibility)
        return sample


@TRANSFORMS.register("PartCentreTarget")
class PartCentreTarget(Transform):
    """Adds ``part_heatmaps`` and ``part_weights`` from ``label`` (see :func:`part_centre_heatmaps`)."""

    def __init__(self, meta: DatasetMeta | str, stride: int = 4, sigma: float = 7.0, method: str = "centroid",
                 window: float = 3.0):
        self.meta = get_meta(meta)
        self.stride, self.sigma, self.method, self.window = stride, sigma, method, window

    def apply(self, sample, rng):
        sample["part_heatmaps"], sample["part_weights"] = part_centre_heatmaps(
            np.asarray(sample["label"]), self.meta.num_classes, _image_size(sample), self.stride, self.sigma,
            self.method, self.window)
        return sample


@TRANSFORMS.register("HierarchyTarget")
class HierarchyTarget(Transform):
    """Adds ``label_l2`` (background/upper/lower) and ``label_l3`` (background/person)."""

    def __init__(self, meta: DatasetMeta | str):
        self.meta = get_meta(meta)

    def apply(self, sample, rng):
        levels = hierarchy_labels(np.asarray(sample["label"]), self.meta)
        sample["label_l2"], sample["label_l3"] = levels[2], levels[3]
        return sample
