"""Two-stage top-down instance parsing: person boxes (ground truth or any detector) + a single-person
parser run on each crop, assembled into :class:`~hparse.structures.PersonInstances`.

Each box is enlarged by ``context`` (a fraction of its size on every side) so the parser sees the
person whole, cropped, parsed at the parser's own resolution and scale protocol, and its labels are
pasted back inside the *original* box only (pixels of the enlarged margin may belong to someone else).
A person's part scores are the mean probability of each class over the pixels assigned to it.
This is the yardstick the one-stage instance models are compared with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError, HParseError
from ..evaluation import ground_truth_instances
from ..io import instance_outputs as io
from ..io.atomic import write_text_atomic
from ..structures import PersonInstances


def _crop_window(box, context: float, h: int, w: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    mx, my = (x2 - x1) * context, (y2 - y1) * context
    return (max(0, int(np.floor(x1 - mx))), max(0, int(np.floor(y1 - my))),
            min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my))))


def parse_people(predictor, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None,
                 context: float = 0.1) -> PersonInstances:
    """Parse every person box of one image with a single-person ``Predictor``."""
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float64) if scores is None else np.asarray(scores, np.float64)
    parsings = np.zeros((len(boxes), h, w), np.uint8)
    part_scores = None
    for k, box in enumerate(boxes):
        cx1, cy1, cx2, cy2 = _crop_window(box, context, h, w)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        probs = predictor.scores([image[cy1:cy2, cx1:cx2]])[0].softmax(0).float().cpu().numpy()
        label = probs.argmax(0).astype(np.uint8)
        if part_scores is None:
            part_scores = np.zeros((len(boxes), probs.shape[0]), np.float32)
        sums = np.bincount(label.ravel(), weights=probs.max(0).ravel(), minlength=probs.shape[0])
        counts = np.bincount(label.ravel(), minlength=probs.shape[0])
        part_scores[k] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        # keep labels inside the original box only
        bx1, by1 = max(int(np.floor(box[0])), cx1), max(int(np.floor(box[1])), cy1)
        bx2, by2 = min(int(np.ceil(box[2])), cx2), min(int(np.ceil(box[3])), cy2)
        parsings[k, by1:by2, bx1:bx2] = label[by1 - cy1:by2 - cy1, bx1 - cx1:bx2 - cx1]
    return PersonInstances((h, w), boxes=boxes, scores=scores, parsings=parsings, part_scores=part_scores)


class SmallPeopleRefiner:
    """The automatic choice for photos whose people are small: a person detector (an instance parser) finds the
    people; each scoring at least ``min_score`` whose box, at the network's input scale, is shorter than
    ``max_height`` of the network's long side is parsed again on its own crop (:func:`parse_people`: box +
    ``context``, at the parser's long side) and, inside its box, the parts that crop finds replace the whole
    photo's labels (higher-scoring people last, so on top). Larger people keep the whole-photo labels."""

    def __init__(self, detector, min_score: float = 0.5, max_height: float = 0.6, context: float = 0.1):
        if getattr(detector.model, "task", "semantic") != "instance":
            raise HParseError("people: a semantic model finds no people; give an instance model")
        self.detector, self.min_score, self.max_height, self.context = detector, min_score, max_height, context

    def small_people(self, image: np.ndarray, long_side: int | None) -> np.ndarray:
        """(N, 5) boxes with scores of the people to parse again (``long_side``: the network input's, None for
        the image's own), lowest score first."""
        rows = detected_boxes(self.detector, self.min_score)(image)
        side = long_side or max(image.shape[:2])
        heights = (rows[:, 3] - rows[:, 1]) * side / max(image.shape[:2])
        rows = rows[heights < self.max_height * side]
        return rows[np.argsort(rows[:, 4], kind="stable")]

    def __call__(self, predictor, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        rows = self.small_people(image, predictor.resizer.long_side)
        if not len(rows):
            return label
        people = parse_people(predictor, image, rows[:, :4], rows[:, 4], self.context)
        out = label.copy()
        for parsing in people.parsings:
            out[parsing > 0] = parsing[parsing > 0]
        return out


def read_box_file(path: str | Path) -> dict[str, np.ndarray]:
    """Person boxes from JSON ``{"<image id>": [[x1, y1, x2, y2, score], ...], ...}`` (score optional)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the box file ({e})") from e
    if not isinstance(raw, Mapping):
        raise DataError(f"{path}: expected an object mapping image ids to box lists")
    out = {}
    for k, rows in raw.items():
        a = np.asarray(rows, np.float64).reshape(len(rows), -1) if len(rows) else np.zeros((0, 5), np.float64)
        if a.shape[1] not in (4, 5):
            raise DataError(f"{path}: boxes of {k!r} need 4 or 5 numbers each (x1 y1 x2 y2 [score])")
        out[str(k)] = a if a.shape[1] == 5 else np.concatenate([a, np.ones((len(a), 1), np.float64)], 1)
    return out


def detected_boxes(detector, min_score: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """A person detector for :func:`run_topdown` from an instance parser (``hparse.load`` of an instance model):
    image -> (N, 5) boxes with scores, those scoring at least ``min_score``."""
    def boxes(image: np.ndarray) -> np.ndarray:
        people = detector.predict(image)
        keep = np.asarray(people.scores) >= min_score
        return np.concatenate([np.asarray(people.boxes, np.float64)[keep],
                               np.asarray(people.scores, np.float64)[keep, None]], 1)
    return boxes


def write_box_file(path: str | Path, boxes: Mapping[str, np.ndarray]) -> Path:
    """The boxes as :func:`read_box_file` reads them (written atomically)."""
    rows = {k: [[round(float(v), 2) for v in r[:4]] + [float(r[4])] for r in b] for k, b in boxes.items()}
    write_text_atomic(path, json.dumps(rows))
    return Path(path)


def run_topdown(predictor, reader, out_root: str | Path,
                boxes: str | Mapping[str, np.ndarray] | Callable[[np.ndarray], np.ndarray] = "gt",
                context: float = 0.1, folders: Sequence[str] = io.FOLDERS, progress: bool = True,
                png_mode: str = "palette") -> Path:
    """Parse every image of ``reader`` top-down and write the instance challenge folders.

    ``boxes`` is ``"gt"`` (each sample's ground-truth people), a mapping id -> (N, 5) boxes with
    scores (e.g. :func:`read_box_file`) or a detector image -> (N, 5) boxes (:func:`detected_boxes`; the boxes
    it found are written to ``boxes.json`` in ``out_root``, a file ``--boxes`` reads back); an image without
    boxes gets empty outputs. ``png_mode``: ``palette`` or ``gray`` label PNGs (same ids; gray for OpenCV readers
    such as the official scripts).
    """
    out_root = Path(out_root)
    found = {}
    for i in tqdm(range(len(reader)), desc="top-down parse", disable=not progress):
        s = reader[i]
        if isinstance(boxes, str):
            gt = ground_truth_instances(s, reader.meta.num_classes)
            b, sc = gt.boxes, gt.scores
        else:
            rows = found[s["id"]] = boxes(s["image"]) if callable(boxes) else boxes.get(s["id"], np.zeros((0, 5)))
            b, sc = rows[:, :4], rows[:, 4]
        persons = parse_people(predictor, s["image"], b, sc, context)
        io.write_instance_outputs(out_root, s["id"], persons, reader.meta, folders=folders, part_score="part",
                                  png_mode=png_mode)
    if callable(boxes):
        write_box_file(out_root / "boxes.json", found)
    return out_root
