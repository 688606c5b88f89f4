"""Colourised label maps and overlays a person can look at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .legend import legend_panel
from .people import PeopleMarks, draw_people


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxW ids -> HxWx3 uint8 colours from a (256, 3) palette."""
    return np.take(np.asarray(palette, dtype=np.uint8), np.asarray(label, dtype=np.uint8), axis=0)


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.55,
            classes: Sequence[str] | None = None, people: PeopleMarks | None = None) -> np.ndarray:
    """Blend the colour map over the image; background (0) stays the plain image. ``people``: outlines and
    captions drawn on top (:func:`~hparse.viz.people.draw_people`). With ``classes`` (the label set's names) a
    legend of the classes present is added as a panel on the right."""
    import cv2

    img = np.ascontiguousarray(image, dtype=np.uint8)
    blended = cv2.addWeighted(img, 1 - alpha, colorize(label, palette), alpha, 0)  # rounded, in uint8
    np.copyto(blended, img, where=(np.asarray(label) == 0)[..., None])
    if people is not None:
        blended = draw_people(blended, people)
    if classes is None:
        return blended
    return np.concatenate([blended, legend_panel(label, palette, classes, blended.shape[0])], axis=1)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size; resized to the image) as a jet colour map."""
    import cv2

    h, w = image.shape[:2]
    heat = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    jet = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    a = (alpha * heat)[..., None]
    return np.clip(image * (1 - a) + jet * a + 0.5, 0, 255).astype(np.uint8)
