"""Instance-level prediction files: the LIP/CIHP challenge folders and COCO-style JSON.

One :class:`~hparse.structures.PersonInstances` per image is written under a prediction root as
(``<id>`` may contain ``/``, e.g. VIP's ``<video>/<frame>``, which makes subfolders)::

    global_parsing/<id>.png          palette PNG, pixel = class id (PersonInstances.to_semantic)
    instance_parsing/<id>.png        part instances: pixel = instance k (1..K), 0 = background
    instance_parsing/<id>.txt        line k: "class_id score" of instance k (CIHP AP^r format)
    instance_segmentation/<id>.png   people: pixel = person k (1..N), highest score on top
    instance_segmentation/<id>.txt   line k: "score" of person k (PGN's MATLAB "class, score" is read too)
    person_parsing/<id>_<k>.png      person k's full-image part labels, 0 outside it (MHP style, AP^p)
    person_parsing/<id>.txt          line k: "score x1 y1 x2 y2" of person k (a bare "score" is read too)

Every line of a ``.txt`` has at least one pixel in its PNG (the official CIHP script misaligns
otherwise): part instances, people hidden behind higher-scoring ones and empty person parsings
are left out and the rest numbered consecutively. PNG ids are uint8, so at most 255 part
instances (the highest-scoring kept) and 255 people per image. Files are written atomically.
PNGs are indexed (palette) by default; ``png_mode="gray"`` writes the same ids as plain 8-bit grey
(mode L), which scripts reading with OpenCV need. Scores are written with ``repr`` and read back as
float64, so no two different scores become a tie on the way.

LV-MHP-v2 submission layout (:func:`write_mhp_submission`, or :func:`mhp_submission_from_folders` from
the challenge folders; the format ``eval_submission.py`` of the MHP toolkit reads)::

    global_seg/<id>.png   8-bit grey, pixel = class id (the people painted as global_parsing)
    global_tag/<id>.png   8-bit grey, pixel = person k (1..N), as instance_segmentation
    results.txt           one line per image: "<id> 1 score_1 2 score_2 ..."

COCO style (:func:`to_coco` / :func:`write_coco_json`, :func:`from_coco` / :func:`read_coco_json`):
``images`` (``file_name`` = the sample id), one ``categories`` entry ``person`` whose
``parsing`` lists the part names, and one annotation per person with ``bbox`` (x, y, w, h),
``score``, ``area``, ``segmentation`` (RLE of the person mask) and ``parsing``: a list of
``{"category_id": part class, "segmentation": RLE}``, one per part class present. Needs
pycocotools (``pip install hparse[coco]``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError, HParseError
from ..structures import PartInstances, PersonInstances
from .atomic import write_text_atomic
from .image import PNG_MODES, read_label, write_label_png

GLOBAL, PARTS, HUMANS, PERSONS = "global_parsing", "instance_parsing", "instance_segmentation", "person_parsing"
FOLDERS = (GLOBAL, PARTS, HUMANS, PERSONS)
MHP_SEG, MHP_TAG, MHP_RESULTS = "global_seg", "global_tag", "results.txt"
MAX_IDS = 255
_SPLIT = re.compile(r"[,\s]+")


def _palette(meta, png_mode: str = "palette") -> np.ndarray | None:
    """The PNG palette: the label set's (``meta``: a :class:`~hparse.labels.DatasetMeta`), VOC's without
    one; None (8-bit grey PNGs) for ``png_mode="gray"``."""
    from ..labels import PALETTES

    if png_mode not in PNG_MODES:
        raise HParseError(f"unknown PNG mode {png_mode!r}; choose from {', '.join(PNG_MODES)}")
    if png_mode == "gray":
        return None
    return np.array(PALETTES["voc"], np.uint8) if meta is None else meta.palette()


def _path(root, folder: str, image_id: str, suffix: str) -> Path:
    return Path(root) / folder / f"{Path(image_id).as_posix()}{suffix}"


def person_map_path(root, image_id: str, k: int) -> Path:
    """``person_parsing/<id>_<k>.png``: person k's map (k = 1, 2...)."""
    return _path(root, PERSONS, f"{Path(image_id).as_posix()}_{int(k)}", ".png")


def person_map_image_id(root, path) -> str | None:
    """The image id whose person map (:func:`person_map_path`) ``path`` is named as, else None."""
    folder = Path(root) / PERSONS
    path = Path(path)
    if folder not in path.parents:
        return None
    m = re.fullmatch(r"(.+)_[0-9]+\.png", path.relative_to(folder).as_posix())
    return m.group(1) if m else None


def instance_output_paths(root, image_id: str, person_maps: int) -> list[Path]:
    """Every file :func:`write_instance_outputs` writes (all four folders) for an image whose ``person_parsing``
    holds ``person_maps`` maps, in the order it returns them: the one place that names them."""
    return [_path(root, GLOBAL, image_id, ".png"),
            *(_path(root, folder, image_id, x) for folder in (PARTS, HUMANS) for x in (".png", ".txt")),
            *(person_map_path(root, image_id, k) for k in range(1, person_maps + 1)),
            _path(root, PERSONS, image_id, ".txt")]


def _fmt(x: float) -> str:
    return repr(float(x))


def _numbers(path: Path, widths: tuple[int, ...]) -> list[list[float]]:
    """Rows of numbers from a txt file (commas or spaces), each with one of the allowed ``widths``."""
    try:
        rows = [[float(v) for v in _SPLIT.split(ln.strip()) if v] for ln in path.read_text().splitlines()
                if ln.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a list of numbers ({e})") from e
    bad = [i for i, r in enumerate(rows, 1) if len(r) not in widths]
    if bad:
        raise DataError(f"{path}: line {bad[0]} has {len(rows[bad[0] - 1])} values, expected "
                        f"{' or '.join(map(str, widths))}")
    return rows


# -- derived instance sets ------------------------------------------------------------------

def numbered_people(ascending: np.ndarray, visible: np.ndarray, max_people: int = MAX_IDS) -> list[int]:
    """``instance_segmentation``'s numbering: the indices of the ``visible`` people of ``ascending`` (by score)
    from the highest score down (ties: the later first), at most ``max_people``; person k is the (k-1)-th."""
    return [int(k) for k in ascending[::-1] if visible[k]][:max_people]


def human_instances(persons: PersonInstances, score_thresh: float = 0.0,
                    max_people: int = MAX_IDS) -> PartInstances:
    """The people as a non-overlapping id map (``classes`` all 1): the masks (``human_masks``) of the persons
    with ``score >= score_thresh`` painted in ascending score order (the highest score wins, as in ``to_semantic``),
    ids 1..N by descending score; people without a visible pixel are left out, and beyond
    ``max_people`` the lowest-scoring ones."""
    scores = np.asarray(persons.scores, np.float64)
    keep = np.flatnonzero(scores >= score_thresh)
    asc = keep[np.argsort(scores[keep], kind="stable")]
    _, owner = persons.paint(persons.human_masks(), asc)
    area = np.bincount(owner[owner >= 0], minlength=len(persons))
    present = numbered_people(asc, area > 0, max_people)
    lut = np.zeros(len(persons) + 1, np.int64)
    lut[np.array(present, np.int64) + 1] = np.arange(1, len(present) + 1)
    ids = lut[owner + 1]
    return PartInstances(ids=ids.astype(np.uint8 if len(present) <= 255 else np.int32),
                         classes=np.ones(len(present), np.int64), scores=scores[present])


def person_map_order(persons: PersonInstances, score_thresh: float = 0.0, order=None) -> np.ndarray:
    """Indices of the people ``person_parsing/<id>_<k>.png`` holds, person k first: those of ``order`` (indices;
    default: as given) whose parsing is not empty and whose score is at least ``score_thresh``."""
    idx = np.arange(len(persons)) if order is None else np.asarray(order, np.int64).reshape(-1)
    if not len(idx):
        return idx.astype(np.int64)
    parsings = persons.full_parsings()
    scores = np.asarray(persons.scores, np.float64)
    return np.array([i for i in idx if scores[i] >= score_thresh and parsings[i].any()], np.int64)


def _nonempty(persons: PersonInstances, score_thresh: float = 0.0) -> PersonInstances:
    """The people :func:`write_person_parsing` writes, in turn (their parsings pasted, copied once)."""
    keep = person_map_order(persons, score_thresh)
    parsings = persons.full_parsings()
    sel = replace(persons, parsings=None, roi_parsings=None).select(keep)
    sel.parsings = parsings[keep]
    return sel


# -- challenge folders: write ---------------------------------------------------------------

def write_global_parsing(root, image_id: str, semantic: np.ndarray, meta=None, png_mode: str = "palette") -> Path:
    path = _path(root, GLOBAL, image_id, ".png")
    write_label_png(path, semantic, _palette(meta, png_mode))
    return path


def write_part_instances(root, image_id: str, parts: PartInstances, folder: str = PARTS,
                         png_mode: str = "palette") -> list[Path]:
    """``<folder>/<id>.png`` + ``.txt`` ("class_id score" per instance); empty instances are dropped."""
    parts = parts.relabel(drop_empty=True)
    if len(parts) > MAX_IDS:
        raise DataError(f"{image_id}: {len(parts)} part instances, more than the {MAX_IDS} a uint8 PNG holds")
    png, txt = _path(root, folder, image_id, ".png"), _path(root, folder, image_id, ".txt")
    write_label_png(png, parts.ids.astype(np.uint8), _palette(None, png_mode))
    write_text_atomic(txt, "".join(f"{int(c)} {_fmt(s)}\n" for c, s in zip(parts.classes, parts.scores)))
    return [png, txt]


def write_human_instances(root, image_id: str, humans: PartInstances, png_mode: str = "palette") -> list[Path]:
    """``instance_segmentation/<id>.png`` + ``.txt`` ("score" per person)."""
    humans = humans.relabel(drop_empty=True)
    if len(humans) > MAX_IDS:
        raise DataError(f"{image_id}: {len(humans)} people, more than the {MAX_IDS} a uint8 PNG holds")
    png, txt = _path(root, HUMANS, image_id, ".png"), _path(root, HUMANS, image_id, ".txt")
    write_label_png(png, humans.ids.astype(np.uint8), _palette(None, png_mode))
    write_text_atomic(txt, "".join(f"{_fmt(s)}\n" for s in humans.scores))
    return [png, txt]


def write_person_parsing(root, image_id: str, persons: PersonInstances, meta=None,
                         score_thresh: float = 0.0, png_mode: str = "palette", order=None) -> list[Path]:
    """``person_parsing/<id>_<k>.png`` per non-empty person + ``<id>.txt`` ("score x1 y1 x2 y2"), k numbering the
    people of ``order`` (indices; default: as given) as :func:`person_map_order` lists them."""
    keep = person_map_order(persons, score_thresh, order)
    if len(keep) > MAX_IDS:
        raise DataError(f"{image_id}: {len(keep)} people, more than {MAX_IDS}")
    pal, paths = _palette(meta, png_mode), []
    parsings = persons.full_parsings() if len(keep) else None
    for k, i in enumerate(keep, 1):
        paths.append(person_map_path(root, image_id, k))
        write_label_png(paths[-1], parsings[i], pal)
    boxes = np.asarray(persons.boxes, np.float64).reshape(-1, 4)[keep]
    scores = np.asarray(persons.scores)[keep]
    txt = _path(root, PERSONS, image_id, ".txt")
    write_text_atomic(txt, "".join(f"{_fmt(s)} {' '.join(_fmt(v) for v in b)}\n" for s, b in zip(scores, boxes)))
    return paths + [txt]


def write_instance_outputs(root, image_id: str, persons: PersonInstances, meta=None,
                           folders: Iterable[str] = FOLDERS, part_score: str = "person",
                           score_thresh: float = 0.0, semantic_thresh: float | None = None,
                           png_mode: str = "palette", order=None, semantic: np.ndarray | None = None) -> list[Path]:
    """Write the challenge folders for one image (see the module docstring); returns the paths.

    ``part_score`` is passed to :meth:`PersonInstances.to_part_instances` ("person" or "part");
    persons below ``score_thresh`` are left out of every folder, and out of the global parsing
    below ``semantic_thresh`` (default ``score_thresh``). ``meta`` (label set name or table)
    gives the palette of the label PNGs; ``png_mode="gray"`` writes plain 8-bit grey PNGs instead. ``order``
    (indices): the order in which ``person_parsing`` numbers the people (default: as given; the other folders
    number them by score). :func:`instance_output_paths` names the files. ``semantic``: the global parsing when
    the caller has painted it already (it must be ``persons.to_semantic(semantic_thresh)``).
    """
    folders = list(folders)
    _palette(None, png_mode)   # an unknown mode fails before anything is written
    unknown = set(folders) - set(FOLDERS)
    if unknown:
        raise HParseError(f"unknown output folder(s) {sorted(unknown)}; choose from {', '.join(FOLDERS)}")
    if persons.parsings is None:   # paste RoI maps once, not once per folder
        persons = replace(persons, parsings=persons.full_parsings(), roi_parsings=None)
    paths: list[Path] = []
    if GLOBAL in folders:
        thresh = score_thresh if semantic_thresh is None else semantic_thresh
        semantic = persons.to_semantic(thresh) if semantic is None else semantic
        paths.append(write_global_parsing(root, image_id, semantic, meta, png_mode))
    if PARTS in folders:
        parts = persons.to_part_instances(score=part_score, score_thresh=score_thresh)
        paths += write_part_instances(root, image_id, parts, png_mode=png_mode)
    if HUMANS in folders:
        paths += write_human_instances(root, image_id, human_instances(persons, score_thresh), png_mode)
    if PERSONS in folders:
        paths += write_person_parsing(root, image_id, persons, meta, score_thresh, png_mode, order)
    return paths


# -- LV-MHP-v2 submission layout ------------------------------------------------------------

def _mhp_line(image_id: str, scores) -> str:
    if any(c.isspace() for c in image_id):
        raise DataError(f"{image_id!r}: an MHP results.txt key cannot hold white space")
    return " ".join([image_id, *(f"{k} {_fmt(s)}" for k, s in enumerate(scores, 1))])


def write_mhp_image(root, image_id: str, semantic: np.ndarray, humans: PartInstances) -> tuple[list[Path], str]:
    """``global_seg/<id>.png`` (class ids) and ``global_tag/<id>.png`` (person k) as 8-bit grey PNGs;
    returns the paths and the image's ``results.txt`` line."""
    humans = humans.relabel(drop_empty=True)
    if len(humans) > MAX_IDS:
        raise DataError(f"{image_id}: {len(humans)} people, more than the {MAX_IDS} a uint8 PNG holds")
    seg, tag = _path(root, MHP_SEG, image_id, ".png"), _path(root, MHP_TAG, image_id, ".png")
    write_label_png(seg, semantic)
    write_label_png(tag, humans.ids.astype(np.uint8))
    return [seg, tag], _mhp_line(image_id, humans.scores)


def write_mhp_results(root, lines: Iterable[str]) -> Path:
    """``results.txt`` from the per-image lines of :func:`write_mhp_image`, atomically."""
    path = Path(root) / MHP_RESULTS
    write_text_atomic(path, "".join(f"{ln}\n" for ln in lines))
    return path


def write_mhp_submission(root, results: Mapping[str, PersonInstances], score_thresh: float = 0.0) -> list[Path]:
    """The LV-MHP-v2 submission layout (module docstring) for ``{image id: PersonInstances}``: people below
    ``score_thresh`` left out, the highest score on top where people overlap (as the challenge folders)."""
    paths, lines = [], []
    for image_id, persons in results.items():
        got, line = write_mhp_image(root, image_id, persons.to_semantic(score_thresh),
                                    human_instances(persons, score_thresh))
        paths += got
        lines.append(line)
    return paths + [write_mhp_results(root, lines)]


def mhp_submission_from_folders(root, image_ids: Iterable[str], out=None) -> list[Path]:
    """The LV-MHP-v2 submission layout under ``out`` (default ``root``) from the ``global_parsing`` and
    ``instance_segmentation`` folders under ``root``; an image without them is left out (as a missing
    prediction)."""
    out = Path(root if out is None else out)
    paths, lines = [], []
    for image_id in image_ids:
        semantic, humans = read_global_parsing(root, image_id), read_human_instances(root, image_id)
        if semantic is None or humans is None:
            continue
        got, line = write_mhp_image(out, image_id, semantic, humans)
        paths += got
        lines.append(line)
    return paths + [write_mhp_results(out, lines)]


# -- challenge folders: read ----------------------------------------------------------------

@dataclass
class InstancePrediction:
    """What a prediction root holds for one image (None: that folder or file is absent)."""

    semantic: np.ndarray | None = None
    parts: PartInstances | None = None
    humans: PartInstances | None = None
    persons: PersonInstances | None = None


def present_folders(root) -> list[str]:
    """The challenge folders that exist under ``root``."""
    return [f for f in FOLDERS if (Path(root) / f).is_dir()]


def _read_indexed(root, folder: str, image_id: str, widths: tuple[int, ...]):
    """An indexed ``<folder>/<id>.png`` + its ``.txt`` rows -> ``(ids, rows)``, None when both are absent."""
    png, txt = _path(root, folder, image_id, ".png"), _path(root, folder, image_id, ".txt")
    if not png.is_file() and not txt.is_file():
        return None
    if not png.is_file() or not txt.is_file():
        raise DataError(f"{png if not png.is_file() else txt}: missing (the .png and .txt come in pairs)")
    ids = read_label(png)
    rows = _numbers(txt, widths)
    _check_ids(png, ids, len(rows))
    return ids, rows


def read_part_instances(root, image_id: str, folder: str = PARTS) -> PartInstances | None:
    """``<folder>/<id>.png`` + ``.txt`` ("class_id score" on line k) -> PartInstances (None if absent)."""
    got = _read_indexed(root, folder, image_id, (2,))
    if got is None:
        return None
    ids, rows = got
    return PartInstances(ids=ids, classes=np.array([int(r[0]) for r in rows], np.int64),
                         scores=np.array([r[1] for r in rows], np.float64))


def read_human_instances(root, image_id: str) -> PartInstances | None:
    """``instance_segmentation/<id>.png`` + ``.txt`` (line k: "score", or "class score" / "class, score")."""
    got = _read_indexed(root, HUMANS, image_id, (1, 2))
    if got is None:
        return None
    ids, rows = got
    return PartInstances(ids=ids, classes=np.ones(len(rows), np.int64),
                         scores=np.array([r[-1] for r in rows], np.float64))


def _check_ids(png: Path, ids: np.ndarray, lines: int) -> None:
    top = int(ids.max(initial=0))
    if top > lines:
        raise DataError(f"{png}: holds id {top} but its .txt has only {lines} line(s)")


def read_person_parsing(root, image_id: str, image_size: tuple[int, int] | None = None) -> PersonInstances | None:
    """``person_parsing/<id>.txt`` + ``<id>_<k>.png`` -> PersonInstances (boxes from the txt, or
    the tight boxes of the maps for bare "score" lines)."""
    txt = _path(root, PERSONS, image_id, ".txt")
    if not txt.is_file():
        return None
    rows = _numbers(txt, (1, 5))
    maps = []
    for k in range(1, len(rows) + 1):
        maps.append(read_label(person_map_path(root, image_id, k)))
        if maps[-1].shape != maps[0].shape:
            raise DataError(f"{person_map_path(root, image_id, k)}: size differs from person 1")
    if not maps and image_size is None:
        image_size = (0, 0)
    persons = PersonInstances.from_person_labels(maps, scores=[r[0] for r in rows], image_size=image_size)
    if rows and all(len(r) == 5 for r in rows):
        persons.boxes = np.array([r[1:] for r in rows], np.float32)
    return persons


def read_global_parsing(root, image_id: str) -> np.ndarray | None:
    path = _path(root, GLOBAL, image_id, ".png")
    return read_label(path) if path.is_file() else None


def read_instance_outputs(root, image_id: str) -> InstancePrediction:
    """Everything the challenge folders under ``root`` hold for ``image_id``."""
    semantic, parts, humans = (read_global_parsing(root, image_id), read_part_instances(root, image_id),
                               read_human_instances(root, image_id))
    size = next((a.shape for a in (semantic, parts and parts.ids, humans and humans.ids) if a is not None), None)
    return InstancePrediction(semantic, parts, humans, read_person_parsing(root, image_id, size))


# -- COCO-style JSON ------------------------------------------------------------------------

def _mask_api():
    try:
        from pycocotools import mask as mask_util
    except ImportError:
        raise HParseError("COCO-style JSON needs pycocotools: pip install 'hparse[coco]' "
                          "(or pip install pycocotools)") from None
    return mask_util


def _encode(mask_util, m: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def to_coco(results: Mapping[str, PersonInstances], class_names: Iterable[str] | None = None) -> dict:
    """A COCO-style dict of ``{sample id: PersonInstances}`` (see the module docstring)."""
    mask_util = _mask_api()
    images, anns = [], []
    for n, (image_id, persons) in enumerate(results.items(), 1):
        h, w = (int(v) for v in persons.image_size)
        images.append({"id": n, "file_name": str(image_id), "height": h, "width": w})
        parsings = persons.full_parsings()
        boxes = np.asarray(persons.boxes, np.float64).reshape(-1, 4)
        for k in range(len(persons)):
            p = parsings[k]
            m = p > 0
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            anns.append({
                "id": len(anns) + 1, "image_id": n, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(persons.scores[k]), "area": int(m.sum()), "iscrowd": 0,
                "segmentation": _encode(mask_util, m),
                "parsing": [{"category_id": int(c), "segmentation": _encode(mask_util, p == c)}
                            for c in np.unique(p[m])]})
    cat = {"id": 1, "name": "person"}
    if class_names is not None:
        cat["parsing"] = list(class_names)
    return {"info": {"description": "hparse instance parsing results"}, "images": images,
            "annotations": anns, "categories": [cat]}


def from_coco(data: dict) -> dict[str, PersonInstances]:
    """``{sample id (file_name): PersonInstances}`` from a :func:`to_coco` dict; parsings are
    painted from the per-class RLEs (a person without ``parsing`` gets class 1 on its mask)."""
    mask_util = _mask_api()

    def decode(rle) -> np.ndarray:
        with warnings.catch_warnings():  # pycocotools vs numpy 2: a DeprecationWarning about copy=False
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_util.decode(rle).astype(bool)

    try:
        images = {im["id"]: im for im in data["images"]}
        per: dict = {i: [] for i in images}
        for a in data["annotations"]:
            per[a["image_id"]].append(a)
    except (KeyError, TypeError) as e:
        raise DataError(f"not a COCO-style results dict ({e!r})") from e
    out = {}
    for i, im in images.items():
        h, w = int(im["height"]), int(im["width"])
        anns = per[i]
        parsings = np.zeros((len(anns), h, w), np.uint8)
        boxes = np.zeros((len(anns), 4), np.float32)
        for k, a in enumerate(anns):
            if a.get("parsing"):
                for part in a["parsing"]:
                    parsings[k][decode(part["segmentation"])] = int(part["category_id"])
            elif a.get("segmentation"):
                parsings[k][decode(a["segmentation"])] = 1
            x, y, bw, bh = (float(v) for v in a["bbox"])
            boxes[k] = (x, y, x + bw, y + bh)
        scores = np.array([a.get("score", 1.0) for a in anns], np.float64)
        out[str(im["file_name"])] = PersonInstances(image_size=(h, w), boxes=boxes, scores=scores, parsings=parsings)
    return out


def write_coco_json(path: str | os.PathLike, results: Mapping[str, PersonInstances],
                    class_names: Iterable[str] | None = None) -> Path:
    path = Path(path)
    write_text_atomic(path, json.dumps(to_coco(results, class_names)))
    return path


def read_coco_json(path: str | os.PathLike) -> dict[str, PersonInstances]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from e
    try:
        return from_coco(data)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
