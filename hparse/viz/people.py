"""People marked on a picture: each person's outline in a colour of its own and a caption (e.g. id and score)
in a filled box at the top of the person's box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .legend import text_font

# saturated colours far apart (after Kelly's colours of maximum contrast), the lightest first so the first people
# stand out on dark and mid-tone part colours; person i gets colour i modulo their number
PERSON_RGB = ((255, 179, 0), (166, 189, 215), (193, 0, 32), (147, 170, 0), (246, 118, 142), (255, 104, 0),
              (0, 83, 138), (206, 162, 98), (128, 62, 117), (0, 125, 52), (255, 122, 92), (83, 55, 122),
              (244, 200, 0), (179, 40, 81), (127, 24, 13), (89, 51, 21), (241, 58, 19), (35, 44, 22))


@dataclass(frozen=True)
class PeopleMarks:
    """People to mark, in order: the i-th, whose pixels are those where ``owner == ids[i]``, gets
    ``PERSON_RGB[i % len(PERSON_RGB)]``. One owner map for everybody, not a mask per person: what a big photo
    with many people can afford."""

    owner: np.ndarray                            # HxW ints: whose each pixel is (0: nobody), the picture's size
    ids: Sequence[int]                           # the owner values of the people to mark (not 0)
    boxes: Sequence[Sequence[float]]             # x1, y1, x2, y2 in pixels: the caption sits at the top left
    captions: Sequence[str]


def person_colour(i: int) -> tuple[int, int, int]:
    return PERSON_RGB[i % len(PERSON_RGB)]


def outline_width(height: int, width: int) -> int:
    """Outline thickness in pixels: 2-3 for photos of 500-1000 pixels, growing with the picture."""
    return max(1, round(max(height, width) / 320))


def boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels (8-connected) of its outside; the picture's edge counts as
    outside, so a person cut off by the frame is closed there too."""
    import cv2

    m = np.asarray(mask, np.uint8)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    inner = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m > 0) & (inner == 0)


def outlines(owner: np.ndarray, width: int) -> np.ndarray:
    """The pixels of each person of ``owner`` (HxW ints, 0: nobody) within ``width`` pixels (8-connected) of
    another value or of the picture's edge: :func:`boundary` of every ``owner == v`` (v > 0) at once."""
    import cv2

    m = np.asarray(owner)
    if m.dtype not in (np.uint8, np.uint16):          # the integer types cv2's morphology takes
        m = m.astype(np.uint16 if m.max(initial=0) < 1 << 16 else np.float64)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    low = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    ring = low != m
    ring |= cv2.dilate(m, kernel) != m
    ring &= m > 0
    return ring


def _caption_fill(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``rgb``."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def draw_people(picture: np.ndarray, people: PeopleMarks) -> np.ndarray:
    """A copy of ``picture`` (HxWx3 uint8, the owner map's size) with every person's outline and caption."""
    h, w = picture.shape[:2]
    out = np.array(picture, order="C")              # a copy
    width = outline_width(h, w)
    ids = np.asarray(people.ids, np.int64).reshape(-1)
    if ids.size:
        colour = np.zeros((int(ids.max()) + 1, 3), np.uint8)     # owner value -> its outline colour
        drawn = np.zeros(len(colour), bool)
        for i, v in enumerate(ids):
            colour[v], drawn[v] = person_colour(i), True
        at = np.flatnonzero(outlines(people.owner, width))       # the outlines only: a small share of the pixels
        who = np.asarray(people.owner).reshape(-1)[at].astype(np.int64)
        at, who = at[who < len(drawn)], who[who < len(drawn)]
        keep = drawn[who]
        out.reshape(-1, 3)[at[keep]] = colour[who[keep]]
    img = Image.fromarray(out)
    draw, font = ImageDraw.Draw(img), text_font(min(48, max(11, round(max(h, w) / 40))))
    for i, (box, text) in enumerate(zip(people.boxes, people.captions)):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad, tw, th = max(2, width), right - left, bottom - top
        x = int(np.clip(box[0], 0, max(0, w - tw - 2 * pad)))
        y = int(np.clip(box[1] - th - 2 * pad, 0, max(0, h - th - 2 * pad)))   # above the box, inside the picture
        draw.rectangle([x, y, x + tw + 2 * pad - 1, y + th + 2 * pad - 1], fill=person_colour(i))
        draw.text((x + pad - left, y + pad - top), text, fill=_caption_fill(person_colour(i)), font=font)
    return np.asarray(img)
