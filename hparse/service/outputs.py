"""What a parse request can ask for (``outputs=label,overlay,masks,json``) and how each is encoded."""

from __future__ import annotations

import base64

import numpy as np

from ..api import Parser
from ..engine.prediction import SEMANTIC_SCORE_THRESH, Prediction, as_prediction
from ..io.image import image_bytes, label_png_bytes
from ..viz import overlay, present_classes

OUTPUTS = ("label", "overlay", "masks", "json")
MEDIA_TYPES = {"label": "image/png", "overlay": "image/jpeg"}


def label_png(label: np.ndarray, palette: np.ndarray) -> bytes:
    """Indexed PNG whose pixel values are the class ids (the palette is only for viewing)."""
    return label_png_bytes(label, palette)


def overlay_jpeg(image: np.ndarray, pred: Prediction, palette: np.ndarray, classes, legend: bool) -> bytes:
    """The colours blended over the photo, with a legend of the classes present when ``legend``; an instance
    model's people outlined and numbered as in ``hparse parse``."""
    return image_bytes(overlay(image, pred.label, palette, classes=classes if legend else None, people=pred.marks()),
                       "JPEG", quality=90)


def mask_pngs(label: np.ndarray, classes) -> dict[str, bytes]:
    """One binary PNG (255 = the class) per class present, keyed by class id."""
    return {str(c): label_png_bytes(((label == c) * 255).astype(np.uint8))
            for c in present_classes(label, len(classes))}


def summary(parser: Parser, model: str, pred: Prediction, palette: np.ndarray) -> dict:
    """The JSON output: label set, size, and per class present its id, name, colour and pixel count; for an
    instance model also ``min_score`` and ``persons`` (the entries of ``hparse parse``'s sidecar, without
    ``person_map``: the service writes no person maps)."""
    label = pred.label
    counts = np.bincount(label.ravel(), minlength=len(parser.classes))
    return {"model": model, "label_set": parser.meta.name, "width": int(label.shape[1]),
            "height": int(label.shape[0]),
            "classes": [{"id": int(c), "name": parser.classes[c], "color": palette[c].tolist(),
                         "pixels": int(counts[c])} for c in np.flatnonzero(counts[:len(parser.classes)])],
            **_people(pred.summary(parser.classes))}


def _people(extra: dict) -> dict:
    """``Prediction.summary`` without the person map paths."""
    if "persons" in extra:
        extra = {**extra, "persons": [{k: v for k, v in p.items() if k != "person_map"} for p in extra["persons"]]}
    return extra


def render(parser: Parser, model: str, image: np.ndarray, result, outputs: tuple[str, ...],
           palette_name: str | None, legend: bool) -> tuple[bytes | dict, str]:
    """``(body, media type)`` of a predictor's result (label map or people, made a :class:`Prediction` as
    ``hparse parse`` does: people at :data:`SEMANTIC_SCORE_THRESH`): a single image output as itself, anything
    else as JSON (images in base64)."""
    pred = as_prediction(result, None, SEMANTIC_SCORE_THRESH)
    palette, label = parser.meta.palette(palette_name), pred.label
    if outputs == ("label",):
        return label_png(label, palette), MEDIA_TYPES["label"]
    if outputs == ("overlay",):
        return overlay_jpeg(image, pred, palette, parser.classes, legend), MEDIA_TYPES["overlay"]
    body = summary(parser, model, pred, palette)
    if "label" in outputs:
        body["label_png"] = _b64(label_png(label, palette))
    if "overlay" in outputs:
        body["overlay_jpeg"] = _b64(overlay_jpeg(image, pred, palette, parser.classes, legend))
    if "masks" in outputs:
        body["masks_png"] = {c: _b64(png) for c, png in mask_pngs(label, parser.classes).items()}
    return body, "application/json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
