"""Reading images and label maps robustly, writing label PNGs and pictures atomically.

Reading refuses, by name and before decoding, an image above the pixel limit (:func:`max_pixels`: 100
million pixels, or ``HPARSE_MAX_PIXELS``; Pillow gives the size from the header), and turns anything a
decoder or a conversion raises into a :class:`~hparse.errors.DataError` naming the file. Writing encodes in
memory and hands the bytes to :func:`~hparse.io.atomic.write_bytes_atomic`, so a full disk raises instead
of leaving a truncated file under the final name.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import DataError, HParseError, ImageTooLargeError
from .atomic import write_bytes_atomic

# Refuse images above this many pixels (about 12k x 8k) unless HPARSE_MAX_PIXELS says otherwise: decoding
# allocates 3 bytes a pixel and inference several times that.
MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "HPARSE_MAX_PIXELS"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PNG_MODES = ("palette", "gray")   # label PNGs: indexed with the label set's colours, or plain 8-bit grey
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError,
                  EOFError, MemoryError, Image.DecompressionBombError)


def max_pixels() -> int:
    """The pixel limit: ``HPARSE_MAX_PIXELS`` when set (a positive integer), else :data:`MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise HParseError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a positive whole number of pixels")
    return int(raw)


def _missing(path: Path) -> DataError:
    if path.is_symlink():
        return DataError(f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)")
    return DataError(f"{path}: file not found")


def _check_size(path: Path, im: Image.Image) -> None:
    w, h = im.size
    limit = max_pixels()
    if w * h > limit:
        raise ImageTooLargeError(f"{path}: {w}x{h} image ({w * h / 1e6:.0f} megapixels) is larger than the "
                                 f"{limit:,}-pixel limit; downscale it first or raise {MAX_PIXELS_ENV}")


def _open(path: str | os.PathLike) -> Image.Image:
    """The decoded image; its size is checked from the header before decoding."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with warnings.catch_warnings():   # Pillow's bomb warning: the limit above is the one that holds
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_size(path, im)
                im.load()
                return im
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{path}: {e}") from e
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e


def _scaled_to_uint8(a: np.ndarray) -> np.ndarray:
    """Float or 32-bit pixels -> uint8 by min-max scaling of the finite values (NaN and infinity -> 0)."""
    a = np.asarray(a, np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    out = (np.where(finite, a, lo) - lo) / max(hi - lo, 1e-12) * 255 + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image (grayscale, RGBA, palette, 16-bit, 32-bit float, CMYK) -> HxWx3 uint8 RGB."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        return np.repeat(_scaled_to_uint8(np.asarray(im))[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, EXIF orientation applied."""
    im = _open(path)
    try:
        return to_rgb(im)
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot convert its {im.mode} pixels to RGB ({e.__class__.__name__}: {e})") from e


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


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG (``{}`` when it has none or cannot be read); reads the header only."""
    try:
        with Image.open(path) as im:
            return dict(getattr(im, "text", {}) or {})
    except _DECODE_ERRORS:
        return {}


def label_png_bytes(label: np.ndarray, palette: np.ndarray | None = None, text: dict[str, str] | None = None
                    ) -> bytes:
    """An HxW uint8 label map as PNG bytes: indexed with ``palette``, plain 8-bit grey (mode L) without one;
    the pixel value is the class id either way. ``text``: tEXt chunks to embed."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError("label values must lie in 0..255")
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_label_png(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None,
                    text: dict[str, str] | None = None) -> None:
    """Write an HxW uint8 label map as a PNG (pixel value = class id; indexed with ``palette``, 8-bit grey
    without), atomically."""
    write_bytes_atomic(path, label_png_bytes(label, palette, text))


def image_bytes(rgb: np.ndarray, fmt: str = "JPEG", quality: int = 92) -> bytes:
    """An HxWx3 uint8 RGB picture encoded as ``fmt`` (JPEG or PNG)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format=fmt, **({"quality": quality}
                                                                            if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an HxWx3 uint8 RGB image (format from the suffix), atomically."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    write_bytes_atomic(path, image_bytes(rgb, fmt, quality))


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
