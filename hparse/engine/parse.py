"""Parsing files and folders: outputs per image, skip-existing, per-file error isolation."""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import HParseError
from ..io.atomic import atomic_path, write_text_atomic
from ..io.image import is_image_file, read_image, write_image, write_label_png
from ..viz import overlay

log = logging.getLogger("hparse.parse")


@dataclass
class ParseReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Expand files, folders (recursively) and globs into ``(path, output stem)`` pairs.

    A folder's files keep their sub-folder structure in the output stem; stems that would
    collide get a numeric suffix.
    """
    found: list[tuple[Path, Path]] = []
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            found += [(f, f.relative_to(p).with_suffix("")) for f in sorted(p.rglob("*"))
                      if f.is_file() and is_image_file(f)]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        else:
            matches = sorted(glob.glob(inp, recursive=True))
            if not matches:
                raise HParseError(f"{inp}: no such file, folder or matching glob")
            found += [(Path(m), Path(Path(m).stem)) for m in matches if Path(m).is_file()]
    seen: dict[Path, int] = {}
    out = []
    for path, stem in found:
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append((path, stem if n == 0 else stem.with_name(f"{stem.name}_{n}")))
    return out


def write_outputs(out_dir: Path, stem: Path, image: np.ndarray, label: np.ndarray, meta, palette,
                  probs: np.ndarray | None = None, masks: bool = False, sidecar: bool = False,
                  overlay_image: bool = True, extra_overlays: dict | None = None) -> None:
    base = out_dir / stem
    write_label_png(base.with_suffix(".png"), label, palette)
    if overlay_image:
        write_image(base.with_name(base.name + "_overlay.jpg"), overlay(image, label, palette))
    for name, img in (extra_overlays or {}).items():   # 2-D: a label map (PNG), 3-D: a picture (JPEG)
        if img.ndim == 2:
            write_label_png(base.with_name(f"{base.name}_{name}.png"), img, palette)
        else:
            write_image(base.with_name(f"{base.name}_{name}.jpg"), img)
    if masks:
        for c in np.unique(label):
            if c == 0:
                continue
            name = meta.classes[c].replace("/", "-")
            write_label_png(base.with_name(base.name + "_masks") / f"{c:02d}_{name}.png",
                            (label == c).astype(np.uint8) * 255)
    if probs is not None:
        with atomic_path(base.with_name(base.name + "_probs.npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, probs.astype(np.float16))
    if sidecar:
        present = {int(c): meta.classes[c] for c in np.unique(label)}
        write_text_atomic(base.with_suffix(".json"), json.dumps({
            "label_set": meta.name, "classes": list(meta.classes), "present": present,
            "size": [int(label.shape[0]), int(label.shape[1])],
            "pixels": {meta.classes[c]: int((label == c).sum()) for c in present}}, indent=1))


def extra_overlays(parser, images: list[np.ndarray], extras: list[dict] | None = None) -> list[dict]:
    """Pictures of a model's extras (``extras``, by default ``Parser.predict_extras``), by their type: a
    heatmap over the photo, a label map as label PNG + overlay, a score table as a bar chart."""
    from ..structures import Heatmap, LabelMap, ScoreTable
    from ..viz import heatmap_overlay
    from ..viz.plots import score_table_image

    pal = parser.meta.palette()
    out = []
    for image, ex in zip(images, parser.predict_extras(images) if extras is None else extras):
        pics = {}
        for name, value in ex.items():
            if isinstance(value, Heatmap):
                pics[name] = heatmap_overlay(image, value.peak())
            elif isinstance(value, LabelMap):
                pics[name] = value.data
                pics[f"{name}_overlay"] = overlay(image, value.data, pal)
            elif isinstance(value, ScoreTable):
                pics[name] = score_table_image(value.data, value.rows, value.cols, title=name)
        out.append(pics)
    return out


def parse_files(parser, inputs: list[str], out_dir: str | Path, batch_size: int = 1, overwrite: bool = False,
                masks: bool = False, probs: bool = False, sidecar: bool = False, palette: str | None = None,
                progress: bool = True, extras=None) -> ParseReport:
    """Parse every image in ``inputs`` into ``out_dir``; bad files are reported, not fatal.

    ``extras(parser, images, extra_outputs) -> list[dict name -> picture]`` renders the model's extra
    outputs (boundaries, structure points, levels...; taken from the same forward passes) as pictures.
    """
    out_dir = Path(out_dir)
    report = ParseReport()
    todo = []
    for path, stem in collect_inputs(inputs):
        if not overwrite and (out_dir / stem).with_suffix(".png").exists():
            report.skipped.append(str(path))
        else:
            todo.append((path, stem))
    pal = parser.meta.palette(palette)
    bar = tqdm(total=len(todo), desc="parse", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk, images = [], []
        for path, stem in todo[start:start + batch_size]:
            try:
                images.append(read_image(path))
                chunk.append((path, stem))
            except HParseError as e:
                report.failed[str(path)] = str(e)
                log.error("%s", e)
                bar.update(1)
        if not chunk:
            continue
        try:
            if extras:
                results, raw = parser.predictor.predict(images, return_probs=probs, with_extras=True)
                more = extras(parser, images, raw)
            else:
                results, more = parser.predict(images, return_probs=probs), [{}] * len(images)
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the run
            for path, _ in chunk:
                report.failed[str(path)] = f"inference failed: {e}"
            log.error("inference failed on %s: %s", [str(p) for p, _ in chunk], e)
            bar.update(len(chunk))
            continue
        for (path, stem), image, res, extra in zip(chunk, images, results, more):
            label, prob = res if probs else (res, None)
            try:
                write_outputs(out_dir, stem, image, label, parser.meta, pal, prob, masks, sidecar,
                              extra_overlays=extra)
                report.written.append(str(path))
            except OSError as e:
                report.failed[str(path)] = f"cannot write outputs: {e}"
            bar.update(1)
    bar.close()
    return report
