"""Augmentation and test-time geometry on the sample dict (see ``readers/base.py``).

A transform is a callable ``t(sample, rng=None) -> sample``: it returns a new dict (the
input dict and its ``meta`` are not modified) with every spatial key moved together:
``image`` (bilinear), the label-like maps of :data:`SPATIAL_KEYS` (nearest), and
``joints`` (the same matrix). :class:`Compose` chains them with one
``numpy.random.Generator``, so a seeded generator gives identical outputs.

Label knowledge comes from the :class:`~hparse.labels.DatasetMeta`: :class:`HFlip`
always swaps the left/right classes (``label``, ``person_labels``, the class column of
``instances``) and the joints (``x' = W - 1 - x``, rows permuted by
``meta.joint_flip_permutation()``).

Geometry is tracked: every geometric step composes its 2x3 matrix into
``sample["meta"]["affine"]["matrix"]`` (original image pixel -> current pixel);
:class:`RandomAffine` also stores ``center``, ``scale``, ``rotation`` and ``out_size`` of its
step (CE2P's ``box2cs`` parameters). Transforms serve training only: test-time geometry is
``hparse.engine.inference`` (resize the long side, pad, map the scores straight back).

Model input convention: RGB in 0..255 as a float32 CxHxW tensor (:class:`ToTensor`, the last
step); the model normalises it itself (``model.pixel_mean`` / ``model.pixel_std``). Label maps
become int64 tensors.

Configs build pipelines by name: ``build_transforms([{"type": "RandomAffine", "size":
[384, 384]}, {"type": "HFlip", "p": 0.5}, {"type": "ToTensor"}], meta)``; a step whose
constructor takes ``meta`` receives the dataset meta. :func:`check_transforms` checks such a list
(step names, parameter names and types) without building it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from ..config_schema import check_kwargs, check_type
from ..errors import ConfigError
from ..labels import IGNORE_INDEX, DatasetMeta, get_meta
from . import detection, targets  # noqa: F401  (register the target and detection steps: one pipeline namespace)
from .transform_base import TRANSFORMS, Transform

#: HxW maps moved with the image -> fill value outside the image ("label" = the step's
#: ``pad_label``, 255 by default). Extend it for new per-pixel keys.
SPATIAL_KEYS: dict[str, int | str] = {
    "label": "label", "person_labels": "label", "edge": "label", "label_l2": "label",
    "label_l3": "label", "human_ids": 0, "instance_ids": 0,
}
#: maps holding class ids of the meta's label set (swapped by a flip).
CLASS_KEYS = ("label", "person_labels")


@TRANSFORMS.register("Compose")
class Compose(Transform):
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def apply(self, sample, rng):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


def check_transforms(specs: Sequence[dict], where: str = "data.train_transforms") -> None:
    """Check a pipeline config ``[{"type": name, **params}, ...]``: known step names, known parameters
    (``meta`` is given by :func:`build_transforms`) and their types; raises :class:`ConfigError`."""
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{where}: must be a list of steps (got {specs!r})")
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: a step must be a mapping with a 'type' (got {spec!r})")
        if spec.get("type") == "Normalize":
            raise ConfigError(f"{at}.type: Normalize was replaced by ToTensor (the model normalises its input: "
                              "model.pixel_mean / pixel_std); hparse.config.migrate_legacy upgrades old configs")
        cls = check_type(TRANSFORMS, spec.get("type"), f"{at}.type")
        params = {k: v for k, v in spec.items() if k != "type"}
        check_kwargs(params, cls, at, f"transform {spec['type']!r}", skip=("self", "meta"))


def build_transforms(cfg_list: Sequence[dict | Callable], meta: DatasetMeta | str | None = None) -> Compose:
    """Build a :class:`Compose` from ``[{"type": name, **kwargs}, ...]`` (callables pass through);
    the configs are checked first (:func:`check_transforms`)."""
    meta = None if meta is None else get_meta(meta)
    check_transforms([c for c in cfg_list if not callable(c)])
    steps = []
    for cfg in cfg_list:
        if callable(cfg):
            steps.append(cfg)
            continue
        kwargs = dict(cfg)
        cls = TRANSFORMS.get(kwargs.pop("type"))
        if "meta" in inspect.signature(cls).parameters and "meta" not in kwargs:
            kwargs["meta"] = meta
        steps.append(cls(**kwargs))
    return Compose(steps)


# ---------------------------------------------------------------------------------------
# geometry helpers

def _hw(sample) -> tuple[int, int]:
    img = sample["image"]
    if not isinstance(img, np.ndarray) or img.ndim != 3:
        raise TypeError("geometric transforms need an HxWx3 numpy image; put them before ToTensor")
    return img.shape[0], img.shape[1]


def _map_spatial(sample: dict, fn: Callable[[np.ndarray, int], np.ndarray], pad_label: int) -> None:
    for key, fill in SPATIAL_KEYS.items():
        v = sample.get(key)
        if v is None:
            continue
        f = pad_label if fill == "label" else fill
        sample[key] = [fn(a, f) for a in v] if isinstance(v, list) else fn(v, f)


def _move_joints(sample: dict, m: np.ndarray) -> None:
    if sample.get("joints") is not None:
        j = np.array(sample["joints"], dtype=np.float32, copy=True)
        j[:, :2] = j[:, :2] @ m[:, :2].T.astype(np.float32) + m[:, 2].astype(np.float32)
        sample["joints"] = j


def _track(sample: dict, m, size: tuple[int, int], **info) -> None:
    """Compose ``m`` (current -> new pixel coords) into meta['affine']['matrix'] (orig -> new)."""
    old = sample["meta"].get("affine") or {}
    prev = np.vstack([old.get("matrix", np.eye(3)[:2]), [0, 0, 1]])
    new = {**old, **info}
    new["matrix"] = (np.vstack([np.asarray(m, np.float64), [0, 0, 1]]) @ prev)[:2]
    new["size"] = (int(size[0]), int(size[1]))
    sample["meta"]["affine"] = new


def _fill3(v) -> tuple[float, float, float]:
    return tuple(float(x) for x in np.broadcast_to(np.asarray(v, np.float64), (3,)))


def warp_sample(sample: dict, m: np.ndarray, size: tuple[int, int], pad_image=0,
                pad_label: int = IGNORE_INDEX, replicate: bool = False, **info) -> dict:
    """Warp every spatial key by the 2x3 matrix ``m`` to ``size = (h, w)`` (in place)."""
    h, w = int(size[0]), int(size[1])
    m = np.asarray(m, np.float64)
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    sample["image"] = cv2.warpAffine(sample["image"], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border,
                                     borderValue=_fill3(pad_image))
    _map_spatial(sample, lambda a, f: cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_NEAREST,
                                                     borderMode=border, borderValue=f), pad_label)
    _move_joints(sample, m)
    _track(sample, m, (h, w), **info)
    return sample


def window_sample(sample: dict, y0: int, x0: int, size: tuple[int, int], pad_image=0,
                  pad_label: int = IGNORE_INDEX) -> dict:
    """Cut the window ``[y0, y0 + h) x [x0, x0 + w)`` (may extend past the image: padded), in place."""
    h, w = int(size[0]), int(size[1])
    H, W = _hw(sample)
    ys, xs = max(y0, 0), max(x0, 0)
    ny, nx = max(min(y0 + h, H) - ys, 0), max(min(x0 + w, W) - xs, 0)

    def cut(a, fill):
        out = np.empty((h, w) + a.shape[2:], a.dtype)
        out[...] = fill
        out[ys - y0: ys - y0 + ny, xs - x0: xs - x0 + nx] = a[ys: ys + ny, xs: xs + nx]
        return out

    sample["image"] = cut(sample["image"], _fill3(pad_image))
    _map_spatial(sample, cut, pad_label)
    m = np.array([[1.0, 0, -x0], [0, 1.0, -y0]])
    _move_joints(sample, m)
    _track(sample, m, (h, w))
    return sample


def _scale_matrix(src_hw, dst_hw) -> np.ndarray:
    """Pixel-centre aligned scaling (cv2.resize convention): x' = (x + .5) * s - .5."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])


# ---------------------------------------------------------------------------------------
# flip

def hflip(sample: dict, meta: DatasetMeta) -> dict:
    """Mirror every spatial key, swapping left/right classes and joints (in place)."""
    H, W = _hw(sample)
    lut = meta.flip_lut()
    sample["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    _map_spatial(sample, lambda a, f: np.ascontiguousarray(a[:, ::-1]), 0)
    for key in CLASS_KEYS:
        v = sample.get(key)
        if v is not None:
            sample[key] = [lut[a] for a in v] if isinstance(v, list) else lut[v]
    if sample.get("instances") is not None and len(sample["instances"]):
        inst = np.array(sample["instances"], copy=True)
        inst[:, 1] = lut[inst[:, 1]]
        sample["instances"] = inst
    if sample.get("joints") is not None:
        j = np.array(sample["joints"], dtype=np.float32, copy=True)
        if len(j) != meta.num_joints:
            raise ValueError(f"cannot flip {len(j)} joints: label set {meta.name!r} defines "
                             f"{meta.num_joints} joints and their flip pairs")
        j[:, 0] = W - 1 - j[:, 0]
        sample["joints"] = j[meta.joint_flip_permutation()]
    sample["meta"]["flipped"] = not sample["meta"].get("flipped", False)
    _track(sample, [[-1.0, 0, W - 1], [0, 1.0, 0]], (H, W))
    return sample


@TRANSFORMS.register("HFlip")
class HFlip(Transform):
    """Horizontal flip with probability ``p`` that swaps the meta's left/right labels and joints."""

    def __init__(self, meta: DatasetMeta | str, p: float = 0.5):
        if meta is None:
            raise ValueError("HFlip needs the dataset meta (left/right classes must be swapped)")
        self.meta, self.p = get_meta(meta), float(p)

    def apply(self, sample, rng):
        return hflip(sample, self.meta) if rng.random() < self.p else sample


# ---------------------------------------------------------------------------------------
# CE2P affine

def box2cs(box: Sequence[float], aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """CE2P ``_box2cs``: box ``(x, y, w, h)`` -> centre, (w, h) scale padded to ``aspect_ratio = w / h``."""
    x, y, w, h = (float(v) for v in box[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center, np.array([w, h], np.float32)


def _rotate(pt, rad: float) -> np.ndarray:
    sn, cs = np.sin(rad), np.cos(rad)
    return np.array([pt[0] * cs - pt[1] * sn, pt[0] * sn + pt[1] * cs], np.float32)


def _third_point(a, b) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], np.float32)


def get_affine_transform(center, scale, rot: float, out_size: Sequence[int], inv: bool = False,
                         shift=(0.0, 0.0)) -> np.ndarray:
    """CE2P/HRNet 3-point affine: ``scale[0]`` source pixels around ``center`` -> ``out_size = (h, w)``.

    ``rot`` is in degrees. ``inv=True`` returns the output -> source matrix.
    """
    scale = np.broadcast_to(np.asarray(scale, np.float32), (2,))
    center, shift = np.asarray(center, np.float32), np.asarray(shift, np.float32)
    dst_h, dst_w = float(out_size[0]), float(out_size[1])
    src_dir = _rotate([0, scale[0] * -0.5], np.pi * rot / 180)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center + scale * shift
    src[1] = center + src_dir + scale * shift
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


@TRANSFORMS.register("RandomAffine")
class RandomAffine(Transform):
    """CE2P training warp of the whole image (aspect kept, zero-padded) to ``size``: scale
    clip(N*sf + 1, 1 - sf, 1 + sf); rotation clip(N*rf, -2rf, 2rf) with probability ``rotation_p``.

    The box is ``(0, 0, W, H)``, consistent with :func:`get_affine_transform`'s output centre ``size / 2``;
    ``ce2p_box=True`` uses CE2P's ``(0, 0, W - 1, H - 1)``, which scales by ``out / (W - 1)``.
    """

    def __init__(self, size: Sequence[int], scale: float = 0.25, rotation: float = 30,
                 rotation_p: float = 0.6, pad_image=0, pad_label: int = IGNORE_INDEX, ce2p_box: bool = False):
        self.size = (int(size[0]), int(size[1]))
        self.pad_image, self.pad_label, self.ce2p_box = pad_image, pad_label, ce2p_box
        self.scale, self.rotation, self.rotation_p = float(scale), float(rotation), float(rotation_p)

    def apply(self, sample, rng):
        H, W = _hw(sample)
        box = (0, 0, W - 1, H - 1) if self.ce2p_box else (0, 0, W, H)
        center, scale = box2cs(box, self.size[1] / self.size[0])
        s, r = self.params(rng)
        scale = scale * np.float32(s)
        m = get_affine_transform(center, scale, r, self.size)
        return warp_sample(sample, m, self.size, self.pad_image, self.pad_label, center=center, scale=scale,
                           rotation=float(r), out_size=self.size)

    def params(self, rng):
        sf, rf = self.scale, self.rotation
        s = float(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
        r = 0.0
        if rng.random() <= self.rotation_p:
            r = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
        return s, r


# ---------------------------------------------------------------------------------------
# scale / crop / pad / resize / rotate

@TRANSFORMS.register("RandomScale")
class RandomScale(Transform):
    """Resize by a factor drawn uniformly from ``range`` (HHP: 0.5-2.0)."""

    def __init__(self, range: Sequence[float] = (0.5, 2.0)):  # noqa: A002 - config name
        self.range = (float(range[0]), float(range[1]))

    def apply(self, sample, rng):
        H, W = _hw(sample)
        s = rng.uniform(*self.range)
        size = (max(1, round(H * s)), max(1, round(W * s)))
        return warp_sample(sample, _scale_matrix((H, W), size), size, replicate=True)


@TRANSFORMS.register("Resize")
class Resize(Transform):
    """Resize to ``size = (h, w)``, or keep the aspect ratio with ``long_side`` / ``short_side``."""

    def __init__(self, size: Sequence[int] | None = None, long_side: int | None = None,
                 short_side: int | None = None):
        if sum(v is not None for v in (size, long_side, short_side)) != 1:
            raise ValueError("Resize: give exactly one of size, long_side, short_side")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.long_side, self.short_side = long_side, short_side

    def out_size(self, H: int, W: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        s = self.long_side / max(H, W) if self.long_side else self.short_side / min(H, W)
        return max(1, round(H * s)), max(1, round(W * s))

    def apply(self, sample, rng):
        H, W = _hw(sample)
        size = self.out_size(H, W)
        if size == (H, W):
            return sample
        return warp_sample(sample, _scale_matrix((H, W), size), size, replicate=True)


@TRANSFORMS.register("ResizeKeepRatio")
class ResizeKeepRatio(Resize):
    """Resize so that the long (or short) side has the given length (CNIF test: long side 513)."""

    def __init__(self, long_side: int | None = None, short_side: int | None = None):
        super().__init__(long_side=long_side, short_side=short_side)


@TRANSFORMS.register("Pad")
class Pad(Transform):
    """Pad to at least ``size = (h, w)``; ``position`` 'bottom_right' (LIP) or 'center' (PASCAL)."""

    def __init__(self, size: Sequence[int], pad_image=0, pad_label: int = IGNORE_INDEX,
                 position: str = "bottom_right"):
        if position not in ("bottom_right", "center"):
            raise ValueError(f"Pad: position must be 'bottom_right' or 'center', not {position!r}")
        self.size, self.position = (int(size[0]), int(size[1])), position
        self.pad_image, self.pad_label = pad_image, pad_label

    def apply(self, sample, rng):
        H, W = _hw(sample)
        h, w = max(H, self.size[0]), max(W, self.size[1])
        if (h, w) == (H, W):
            return sample
        top, left = ((h - H) // 2, (w - W) // 2) if self.position == "center" else (0, 0)
        return window_sample(sample, -top, -left, (h, w), self.pad_image, self.pad_label)


@TRANSFORMS.register("RandomCrop")
class RandomCrop(Transform):
    """Random ``size`` crop, padding bottom/right first where the image is smaller.

    ``cat_max_ratio`` (mmseg): retry up to 10 times until no class covers more than this
    fraction of the crop's labelled pixels.
    """

    def __init__(self, size: Sequence[int], pad_image=0, pad_label: int = IGNORE_INDEX,
                 cat_max_ratio: float | None = None):
        self.size = (int(size[0]), int(size[1]))
        self.pad_image, self.pad_label, self.cat_max_ratio = pad_image, pad_label, cat_max_ratio

    def apply(self, sample, rng):
        H, W = _hw(sample)
        h, w = self.size
        label = sample.get("label")
        for _ in range(10 if self.cat_max_ratio and label is not None else 1):
            y0, x0 = int(rng.integers(0, max(H - h, 0) + 1)), int(rng.integers(0, max(W - w, 0) + 1))
            if not self.cat_max_ratio or label is None:
                break
            crop = label[y0:y0 + h, x0:x0 + w]
            cnt = np.bincount(crop[crop != IGNORE_INDEX].ravel())
            cnt = cnt[cnt > 0]
            if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                break
        return window_sample(sample, y0, x0, self.size, self.pad_image, self.pad_label)


@TRANSFORMS.register("RandomRotate")
class RandomRotate(Transform):
    """With probability ``p`` rotate about the image centre by U(-degrees, degrees), same size (HHP)."""

    def __init__(self, degrees: float = 20, p: float = 0.5, pad_image=0, pad_label: int = IGNORE_INDEX):
        self.degrees, self.p, self.pad_image, self.pad_label = float(degrees), float(p), pad_image, pad_label

    def apply(self, sample, rng):
        if rng.random() >= self.p:
            return sample
        H, W = _hw(sample)
        angle = rng.uniform(-self.degrees, self.degrees)
        m = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), angle, 1.0)
        return warp_sample(sample, m, (H, W), self.pad_image, self.pad_label)


# ---------------------------------------------------------------------------------------
# photometric

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


@TRANSFORMS.register("ColorJitter")
class ColorJitter(Transform):
    """torchvision-style jitter on uint8 RGB (factors U(max(0, 1 - v), 1 + v), hue U(-h, h) turns),
    the four operations in random order, applied with probability ``p`` (HHP: 0.1/0.5/0.5/0.1, p=0.5)."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0, p: float = 1.0):
        if not 0 <= hue <= 0.5:
            raise ValueError("ColorJitter: hue must be in [0, 0.5]")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue, self.p = hue, p

    def apply(self, sample, rng):
        if rng.random() >= self.p:
            return sample
        img = sample["image"].astype(np.float32)
        for op in rng.permutation(4):
            v = (self.brightness, self.contrast, self.saturation, self.hue)[op]
            if v <= 0:
                continue
            if op == 3:  # hue: rotate H of the float HSV image (degrees)
                hsv = cv2.cvtColor(img / np.float32(255), cv2.COLOR_RGB2HSV)
                hsv[..., 0] = (hsv[..., 0] + rng.uniform(-v, v) * 360.0) % 360.0
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255)
            else:
                f = np.float32(rng.uniform(max(0.0, 1 - v), 1 + v))
                if op == 0:
                    img = img * f
                else:  # blend with the grey mean (contrast) or the grey image (saturation)
                    gray = img @ _GRAY
                    img = img * f + (gray.mean() if op == 1 else gray[..., None]) * (1 - f)
            img = np.clip(img, 0, 255)
        sample["image"] = (img + 0.5).astype(np.uint8)
        return sample


@TRANSFORMS.register("GaussianBlur")
class GaussianBlur(Transform):
    """With probability ``p`` blur the whole image with a Gaussian of sigma U(sigma[0], sigma[1]) pixels.

    Photos of one in-focus person before a bokeh background (CCP) teach that sharp means person; blurring
    the person too, now and then, takes that cue away (people in real photos are often soft, backgrounds sharp).
    """

    def __init__(self, sigma: Sequence[float] = (0.5, 2.0), p: float = 0.3):
        lo, hi = (float(s) for s in sigma)
        if not 0 < lo <= hi:
            raise ValueError(f"GaussianBlur: sigma must be [lo, hi] with 0 < lo <= hi, got {list(sigma)}")
        self.sigma, self.p = (lo, hi), float(p)

    def apply(self, sample, rng):
        if rng.random() >= self.p:
            return sample
        sample["image"] = cv2.GaussianBlur(sample["image"], (0, 0), rng.uniform(*self.sigma))
        return sample


@TRANSFORMS.register("RandomGrayscale")
class RandomGrayscale(Transform):
    """With probability ``p`` replace the image by its grey version (kept as three channels): a model that
    needs colour to tell a dark coat from a dark background has learnt a shortcut of its training photos."""

    def __init__(self, p: float = 0.1):
        self.p = float(p)

    def apply(self, sample, rng):
        if rng.random() < self.p:
            gray = sample["image"].astype(np.float32) @ _GRAY
            sample["image"] = np.repeat((gray + 0.5).astype(np.uint8)[..., None], 3, axis=2)
        return sample


@TRANSFORMS.register("LowQuality")
class LowQuality(Transform):
    """With probability ``p`` make the image look like a small web photo: shrink it by a factor U(scale) and
    enlarge it back, then JPEG-encode it at a quality U(quality). The size and the label are unchanged."""

    def __init__(self, scale: Sequence[float] = (0.4, 1.0), quality: Sequence[int] = (30, 90), p: float = 0.3):
        lo, hi = (float(s) for s in scale)
        q0, q1 = (int(q) for q in quality)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"LowQuality: scale must be [lo, hi] with 0 < lo <= hi <= 1, got {list(scale)}")
        if not 1 <= q0 <= q1 <= 100:
            raise ValueError(f"LowQuality: quality must be [lo, hi] within 1..100, got {list(quality)}")
        self.scale, self.quality, self.p = (lo, hi), (q0, q1), float(p)

    def apply(self, sample, rng):
        if rng.random() >= self.p:
            return sample
        img = sample["image"]
        h, w = img.shape[:2]
        f = rng.uniform(*self.scale)
        small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        quality = int(rng.integers(self.quality[0], self.quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:  # RGB in, RGB out
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        sample["image"] = np.ascontiguousarray(img)
        return sample


def _to_tensor(v):
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        return torch.from_numpy(a.astype(np.float32 if a.dtype.kind == "f" else np.int64))
    if isinstance(v, list) and v and all(isinstance(a, np.ndarray) for a in v):
        return [_to_tensor(a) for a in v]
    return v


@TRANSFORMS.register("ToTensor")
class ToTensor(Transform):
    """Image HxWx3 -> float32 CxHxW tensor, values unchanged (0..255 for uint8; the model normalises);
    other arrays -> int64 (integer maps, ids) or float32 (joints, heatmaps) tensors. Idempotent."""

    def apply(self, sample, rng):
        img = sample["image"]
        if isinstance(img, np.ndarray):
            sample["image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32))
        for k, v in sample.items():
            if k not in ("image", "meta", "id"):
                sample[k] = _to_tensor(v)
        return sample
