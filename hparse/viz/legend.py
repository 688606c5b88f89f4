"""A legend of the classes present in a label map (colour swatch + name), drawn as a panel beside a picture.

The panel's width depends only on the picture's height and the label set (its longest name and class count),
so every frame of a video gets the same size whatever classes it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT_RGB, PANEL_RGB, OUTLINE_RGB = (30, 30, 30), (255, 255, 255), (90, 90, 90)


def present_classes(label: np.ndarray, num_classes: int | None = None) -> list[int]:
    """Foreground class ids in ``label`` (background 0 and ids >= ``num_classes`` left out), ascending."""
    ids = np.flatnonzero(np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256))
    return [int(c) for c in ids if c != 0 and (num_classes is None or c < num_classes)]


@lru_cache(maxsize=16)
def text_font(size: int) -> ImageFont.ImageFont:
    """PIL's default font at ``size`` pixels (the fixed bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class _Layout:
    font_size: int
    row: int
    pad: int
    rows_per_column: int
    column_width: int
    columns: int

    @property
    def width(self) -> int:
        return self.pad + self.columns * self.column_width


@lru_cache(maxsize=64)   # one per picture height and label set: video frames share it
def _layout(height: int, classes: tuple[str, ...]) -> _Layout:
    size = min(24, max(11, round(height / 32)))
    row, pad = round(size * 1.6), max(4, size // 2)
    per_column = max(1, (height - 2 * pad) // row)
    font = text_font(size)
    text = max(int(math.ceil(font.getlength(name))) for name in classes)
    columns = max(1, math.ceil((len(classes) - 1) / per_column))
    return _Layout(size, row, pad, per_column, size + pad + text + pad, columns)


def legend_width(height: int, classes: tuple[str, ...]) -> int:
    """Width in pixels of the legend panel for a picture ``height`` pixels high."""
    return _layout(height, tuple(classes)).width


def legend_panel(label: np.ndarray, palette, classes, height: int) -> np.ndarray:
    """(height, legend_width, 3) uint8: one row per class present in ``label`` -- swatch and name."""
    classes = tuple(classes)
    lay = _layout(height, classes)
    panel = Image.new("RGB", (lay.width, height), PANEL_RGB)
    draw, font = ImageDraw.Draw(panel), text_font(lay.font_size)
    pal = np.asarray(palette, dtype=np.uint8)
    for k, c in enumerate(present_classes(label, len(classes))):
        col, row = divmod(k, lay.rows_per_column)
        if col >= lay.columns:
            break
        x, y = lay.pad + col * lay.column_width, lay.pad + row * lay.row
        draw.rectangle([x, y, x + lay.font_size - 1, y + lay.font_size - 1], fill=tuple(int(v) for v in pal[c]),
                       outline=OUTLINE_RGB)
        draw.text((x + lay.font_size + lay.pad, y + lay.font_size / 2), classes[c], fill=TEXT_RGB, font=font,
                  anchor="lm")
    return np.asarray(panel)
