"""Reading images and label maps robustly, writing label PNGs atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError, ImageTooLargeError
from .atomic import atomic_path

# Refuse images above this many pixels (about 16k x 10k); decompression bombs and scans.
MAX_PIXELS = 160_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{path}: {w}x{h} image is larger than the {MAX_PIXELS:,}-pixel limit; "
                    "downscale it first")
            im.load()
            return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{path}: {e}") from e


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image (grayscale, RGBA, palette, 16-bit, CMYK) -> HxWx3 uint8 RGB."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.clip((a - a.min()) / max(a.ptp(), 1e-12) * 255 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied."""
    return to_rgb(_open(path))


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as HxW uint8 (pixel value = class id). Colour PNGs use channel 0."""
    im = _open(path)
    if im.mode in ("P", "L"):
        a = np.asarray(im)
    elif im.mode in ("RGB", "RGBA"):
        a = np.asarray(im)[..., 0]
    elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im)
        if a.max() > 255:
            raise DataError(f"{path}: 16-bit label map with values above 255")
    else:
        raise DataError(f"{path}: unsupported label image mode {im.mode}")
    return np.ascontiguousarray(a, dtype=np.uint8)


def write_label_png(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an HxW uint8 label map as an indexed PNG (pixel value = class id), atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("label values must lie in 0..255")
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an HxWx3 uint8 RGB image (format from the suffix), atomically."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(
            tmp, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
