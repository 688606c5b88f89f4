"""Uploaded bytes -> an RGB image, with the pixel limit checked before anything is decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..api import Parser
from .errors import ApiError


def _check_size(im: Image.Image, max_pixels: int) -> None:
    w, h = im.size
    if w * h > max_pixels:
        raise ApiError(413, f"image too large: {w}x{h} = {w * h:,} pixels, the limit is {max_pixels:,}; "
                            "downscale it first")
    if w == 0 or h == 0:
        raise ApiError(400, f"not a usable image: {w}x{h} pixels")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB (EXIF rotation applied, alpha over white, 16-bit scaled) from an encoded image;
    :class:`ApiError` 400 / 413 / 415 naming the problem otherwise."""
    if not data:
        raise ApiError(400, "no image: the request body (or its 'file' field) is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                _check_size(im, max_pixels)
                im.load()
                return Parser.as_rgb(im)
        except UnidentifiedImageError:
            raise ApiError(415, f"not an image: {len(data):,} bytes in no format this service reads "
                                "(send JPEG, PNG, WebP, BMP or TIFF)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ApiError(413, f"image too large (a decompression bomb?): {e}; "
                                f"the limit is {max_pixels:,} pixels") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ApiError(400, f"corrupt or truncated image: {e.__class__.__name__}: {e}") from None
