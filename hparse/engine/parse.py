"""Parsing files and folders into an output folder: nothing lost, nothing silent.

* **Inputs**: files, folders (recursive) and globs; the same file given twice (also through a link) is parsed
  once, under its first name. A folder's files and glob matches inside the output folder are never read back
  as inputs. An input that names nothing, a broken symbolic link, a folder without images and an unreadable
  image are reported by name (:attr:`ParseReport.failed`) and the others are still parsed.
* **Output names**: ``<stem>.png`` (+ ``<stem>_overlay.jpg`` ...), the stem being the file's path inside its
  input folder without the extension. Inputs whose stems would be the same (``a.jpg`` and ``a.png``, or the
  same name in two input folders; compared case-insensitively) keep their extension in the stem
  (``a.jpg.png``, ``a.png.png``), and if that is not enough get ``_2``, ``_3``... in input order; the names
  depend only on the set of inputs. No output may replace an input file (:class:`UsageError`).
* **Complete or absent**: every file is written atomically (temporary file, size checked, rename), so a file
  under its final name is whole; a full disk fails that image, named. The label PNG is written last and
  carries a record (PNG text chunk ``hparse``: model fingerprint, test-time settings, palette, PNG mode, the
  input's size and time, and the files written per output kind). A rerun skips an image only when that record
  matches the model and options now asked for and every file of the requested kinds exists; anything else is
  redone, its old label PNG removed first (so a label's record always describes the files beside it).
  Temporary files of runs that are over (killed) are removed at the start; a concurrent run's are left alone.
* **Instance models** (a :class:`~hparse.structures.PersonInstances` per image): the label PNG is the global
  parsing of the people scoring at least ``min_score`` (default :data:`SEMANTIC_SCORE_THRESH`; recorded, so
  changing it redoes the image), the overlay outlines and numbers them, the JSON sidecar lists them, and the
  challenge folders of :mod:`hparse.io.instance_outputs` are written as ``hparse evaluate --instance`` reads them
  (output kind ``instances`` of the record): ``global_parsing/<stem>.png`` is that same global parsing at
  ``min_score``, while ``instance_parsing``, ``instance_segmentation`` and ``person_parsing`` keep every person
  whatever its score. A person's number on the overlay and its ``id`` in the sidecar are its number k in
  ``instance_segmentation`` (people hidden behind higher-scoring ones have none); ``person_parsing`` numbers
  every person with a non-empty parsing, so the sidecar names each person's map (``person_map``).
  A rerun that finds no record removes person maps beyond the new count (left by a killed run).
  :func:`as_prediction` is the one place where the two kinds of result part.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import HParseError, UnsupportedOutput
from ..io.atomic import remove_stale_temps, write_bytes_atomic, write_text_atomic
from ..io.image import (
    IMAGE_EXTENSIONS,
    PNG_MODES,
    is_image_file,
    read_image,
    read_png_text,
    write_image,
    write_label_png,
)
from ..io.instance_outputs import (
    FOLDERS,
    instance_output_paths,
    person_map_image_id,
    person_map_path,
    write_instance_outputs,
)
from ..viz import overlay
from . import backends, distributed
from .prediction import SEMANTIC_SCORE_THRESH, PeoplePrediction, Prediction, as_prediction  # noqa: F401

log = logging.getLogger("hparse.parse")

RECORD_KEY = "hparse"            # the label PNG's text chunk holding the record
PROBS_FORMATS = ("f16", "u8")    # --probs: float16, or uint8 = round(p * 255)
PROBS_SIZES = ("image", "network")  # --probs at the image's size, or at the network's (resized, unpadded)


class UsageError(HParseError):
    """The request itself is wrong (an output would replace an input, nothing to parse, an output the model
    cannot give)."""


@dataclass
class ParseReport:
    """Input paths parsed, skipped (done before with this model and these options) and failed (with why)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    path: Path      # the input file
    name: Path      # its path inside its input folder (the file name for a file or glob match)
    stem: Path      # the output stem, relative to the output folder


# ---------------------------------------------------------------------------------------------- inputs

def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _folder_images(folder: Path, exclude: Path | None) -> list[Path]:
    """Image files under ``folder`` (sorted, links to files and broken links included, the ``exclude``
    folder and linked folders not entered)."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _inside((Path(parent) / d).resolve(), exclude))
        found += [Path(parent) / n for n in sorted(names) if is_image_file(n)]
    return found


def gather_inputs(inputs: list[str], exclude: str | Path | None = None) -> tuple[list[Job], dict[str, str]]:
    """Expand files, folders and globs into jobs with distinct output stems (module docstring); also
    ``{input: problem}`` for inputs that name nothing or hold no image. ``exclude``: the output folder."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, Path]] = []
    problems: dict[str, str] = {}
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            files = _folder_images(p, skip)
            found += [(f, f.relative_to(p)) for f in files]
            if not files:
                problems[inp] = f"{inp}: no image files in this folder ({', '.join(IMAGE_EXTENSIONS)})"
        elif p.is_file() or p.is_symlink():
            found.append((p, Path(p.name)))
        else:
            matches = [Path(m) for m in sorted(glob.glob(inp, recursive=True))]
            matches = [m for m in matches if (m.is_file() or m.is_symlink()) and not _inside(m.resolve(), skip)]
            found += [(m, Path(m.name)) for m in matches]
            if not matches:
                problems[inp] = f"{inp}: no such file, folder or matching glob"
    first: dict[Path, tuple[Path, Path]] = {}
    for f, name in found:
        first.setdefault(f.resolve(), (f, name))          # the same file again (or through a link): once
    unique = list(first.values())
    stems = output_stems([name for _, name in unique])
    return [Job(f, name, stem) for (f, name), stem in zip(unique, stems)], problems


def collect_inputs(inputs: list[str], exclude: str | Path | None = None) -> list[tuple[Path, Path]]:
    """``(path, output stem)`` pairs of :func:`gather_inputs`; an input that names nothing raises."""
    jobs, problems = gather_inputs(inputs, exclude)
    if problems:
        raise HParseError(next(iter(problems.values())))
    return [(j.path, j.stem) for j in jobs]


def _key(stem: Path) -> str:
    return stem.as_posix().casefold()


def output_stems(names: list[Path]) -> list[Path]:
    """Distinct output stems for input names (paths inside their input folder): the name without its
    extension; where those clash, the full name; where full names clash, ``<name>_2``, ``_3``..."""
    stems = [n.with_suffix("") for n in names]
    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(stems):
            groups[_key(s)].append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return stems
        for group in clashes:
            short = [i for i in group if stems[i] != names[i]]
            for i in short:
                stems[i] = names[i]
            if not short:
                _number(stems, names, group[1:])


def _number(stems: list[Path], names: list[Path], clashing: list[int]) -> None:
    taken = {_key(s) for s in stems}
    for i in clashing:
        k = 2
        while _key(names[i].with_name(f"{names[i].name}_{k}")) in taken:
            k += 1
        stems[i] = names[i].with_name(f"{names[i].name}_{k}")
        taken.add(_key(stems[i]))


# --------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class OutputOptions:
    """What to write per image, and the settings a record must match for an image to be skipped."""

    masks: bool = False
    probs: bool = False
    probs_format: str = "f16"
    probs_size: str = "image"
    sidecar: bool = False
    extras: bool = False
    overlay: bool = True
    png_mode: str = "palette"
    palette: str | None = None
    min_score: float = SEMANTIC_SCORE_THRESH

    def kinds(self, people: bool = False) -> list[str]:
        """The output kinds besides the label PNG: the challenge folders for ``people`` (an instance model's
        result), then those asked for (probs with its format and size)."""
        probs = f"probs:{self.probs_format}:{self.probs_size}"
        wanted = {"instances": people, "overlay": self.overlay, "masks": self.masks, probs: self.probs,
                  "json": self.sidecar, "extras": self.extras}
        return [k for k, on in wanted.items() if on]

    def settings(self, fingerprint: str, people: bool = False) -> dict:
        """What a record must match for its image to be skipped; for ``people`` also the semantic threshold."""
        base = {"model": fingerprint, "palette": self.palette, "png_mode": self.png_mode}
        return {**base, "min_score": self.min_score} if people else base


def model_fingerprint(parser) -> str:
    """A digest of the parser's weights, label set and test-time settings: what decides its outputs."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parser.meta.name.encode())
    backends.hash_weights(h, parser.model)
    people = getattr(parser, "people", None)
    if people is not None:   # small people parsed again: the detector and its settings decide labels too
        backends.hash_weights(h, people.detector.model)
        h.update(f"people {people.min_score} {people.max_height} {people.context}".encode())
    pred = parser.predictor
    test_time = {k: getattr(pred, k, None) for k in ("scales", "flip", "average", "crf")}
    test_time.update(long_side=pred.resizer.long_side, size_divisor=pred.resizer.size_divisor,
                     backend=getattr(parser, "backend", None))
    if getattr(pred, "prior", None) is not None:
        test_time["person_prior"] = pred.prior.name
    h.update(json.dumps(test_time, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _source(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_record(label_png: Path) -> dict | None:
    """The record a label PNG carries (None without one: an earlier version's output, or not hparse's)."""
    text = read_png_text(label_png).get(RECORD_KEY)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def label_path(out_dir: Path, stem: Path) -> Path:
    return out_dir / stem.with_name(stem.name + ".png")


def is_done(out_dir: Path, job: Job, fingerprint: str, opts: OutputOptions) -> bool:
    """True when the label PNG's record matches this model, these options and this input, and every file of
    the requested output kinds (and of the challenge folders, for an instance model) exists."""
    label = label_path(out_dir, job.stem)
    record = read_record(label) if label.is_file() else None
    if record is None:
        return False
    people = record.get("settings") == opts.settings(fingerprint, people=True)
    if not people and record.get("settings") != opts.settings(fingerprint):
        return False
    try:
        if record.get("source") != _source(job.path):
            return False
    except OSError:
        return False
    files = record.get("outputs", {})
    return all(k in files and all((out_dir / f).is_file() for f in files[k]) for k in opts.kinds(people))


# ---------------------------------------------------------------------------------------------- writing

class OutputWriter:
    """Writes one image's outputs (label PNG last, with its record); refuses a path another input of this
    run already wrote."""

    def __init__(self, out_dir: Path, meta, opts: OutputOptions, fingerprint: str):
        self.out, self.meta, self.opts, self.fingerprint = out_dir, meta, opts, fingerprint
        self.colours = meta.palette(opts.palette)
        self.label_palette = self.colours if opts.png_mode == "palette" else None
        self.claimed: dict[Path, Path] = {}

    def _claim(self, path: Path, job: Job) -> Path:
        owner = self.claimed.setdefault(path, job.path)
        if owner != job.path:
            raise OSError(f"output {path} was already written for {owner} in this run; rename one of the inputs")
        return path

    def write(self, job: Job, image: np.ndarray, pred: Prediction, extras: dict) -> None:
        base, label_png = self.out / job.stem, self._claim(label_path(self.out, job.stem), job)
        previous = read_record(label_png) if label_png.is_file() else None
        label_png.unlink(missing_ok=True)      # until the new one is written, the image counts as not done
        files: dict[str, list[str]] = {}
        put = {"instances": self._instances, "overlay": self._overlay, "masks": self._masks, "json": self._sidecar,
               "extras": self._extras}
        for kind in self.opts.kinds(pred.people):
            if kind.startswith("probs:"):
                files[kind] = self._probs(job, base, pred.probs)
            else:
                files[kind] = put[kind](job, base, image, pred, extras)
        self._remove_stale(previous, "masks" in files)
        if "instances" in files and "instances" not in (previous or {}).get("outputs", {}):
            self._remove_beyond(job, pred.person_maps())
        record = {"version": 1, "settings": self.opts.settings(self.fingerprint, pred.people),
                  "source": _source(job.path), "input": str(job.path), "outputs": files}
        write_label_png(label_png, pred.label, self.label_palette, text={RECORD_KEY: json.dumps(record)})

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def _instances(self, job, base, image, pred, extras) -> list[str]:
        for path in instance_output_paths(self.out, job.stem.as_posix(), pred.person_maps()):
            self._claim(path, job)
        return [self._rel(p) for p in write_instance_outputs(self.out, job.stem.as_posix(), pred.persons, self.meta,
                                                             semantic_thresh=pred.min_score, semantic=pred.label,
                                                             png_mode=self.opts.png_mode, order=pred.order)]

    def _overlay(self, job, base, image, pred, extras) -> list[str]:
        path = self._claim(base.with_name(base.name + "_overlay.jpg"), job)
        write_image(path, overlay(image, pred.label, self.colours, classes=self.meta.classes, people=pred.marks()))
        return [self._rel(path)]

    def _masks(self, job, base, image, pred, extras) -> list[str]:
        label, folder, written = pred.label, base.with_name(base.name + "_masks"), []
        for c in np.unique(label):
            if c == 0:
                continue
            path = self._claim(folder / f"{c:02d}_{self.meta.classes[c].replace('/', '-')}.png", job)
            write_label_png(path, (label == c).astype(np.uint8) * 255)
            written.append(self._rel(path))
        return written

    def _probs(self, job, base, probs) -> list[str]:
        path = self._claim(base.with_name(base.name + "_probs.npy"), job)
        buf = io.BytesIO()
        np.save(buf, encode_probs(probs, self.opts.probs_format))
        write_bytes_atomic(path, buf.getvalue())
        return [self._rel(path)]

    def _sidecar(self, job, base, image, pred, extras) -> list[str]:
        label = pred.label
        counts = np.bincount(label.reshape(-1)) if label.size else np.zeros(0, np.intp)
        present = {int(c): self.meta.classes[c] for c in np.flatnonzero(counts)}
        path = self._claim(base.with_name(base.name + ".json"), job)
        stem = job.stem.as_posix()
        write_text_atomic(path, json.dumps({
            "label_set": self.meta.name, "classes": list(self.meta.classes), "present": present,
            "size": [int(label.shape[0]), int(label.shape[1])], "input": str(job.path),
            "pixels": {self.meta.classes[c]: int(counts[c]) for c in present},
            **pred.summary(self.meta.classes, lambda k: self._rel(person_map_path(self.out, stem, k)))}, indent=1))
        return [self._rel(path)]

    def _extras(self, job, base, image, pred, extras) -> list[str]:
        written = []
        for name, img in extras.items():   # 2-D: a label map (PNG), 3-D: a picture (JPEG)
            suffix = ".png" if img.ndim == 2 else ".jpg"
            path = self._claim(base.with_name(f"{base.name}_{name}{suffix}"), job)
            if img.ndim == 2:
                write_label_png(path, img, self.label_palette)
            else:
                write_image(path, img)
            written.append(self._rel(path))
        return written

    def _remove_stale(self, previous: dict | None, masks: bool) -> None:
        """Challenge-folder files an earlier record of this image listed, and its masks when masks are written
        now, that this run did not write: removed, so what lies beside the label PNG matches its record (a person
        map or mask of another model or input)."""
        if previous is None:
            return
        old = previous.get("outputs", {})
        for rel in set(old.get("instances", [])) | set(old.get("masks", []) if masks else []):
            path = self.out / rel
            if path not in self.claimed and _varying_output(rel):
                path.unlink(missing_ok=True)

    def _remove_beyond(self, job: Job, written: int) -> None:
        """Person maps ``<stem>_<k>.png`` for k above the ``written`` ones, up to the first missing k, when no
        record lists this image's maps (a killed run left them): removed, so ``person_parsing`` matches the record."""
        k = written + 1
        while (path := person_map_path(self.out, job.stem.as_posix(), k)).is_file() and path not in self.claimed:
            path.unlink(missing_ok=True)
            k += 1


def _varying_output(rel: str) -> bool:
    """A file of an output kind whose files vary in number: a mask PNG or a challenge-folder file."""
    p = Path(rel)
    return ((p.suffix == ".png" and p.parent.name.endswith("_masks"))
            or (p.suffix in (".png", ".txt") and len(p.parts) > 1 and p.parts[0] in FOLDERS))


def encode_probs(probs: np.ndarray, fmt: str = "f16") -> np.ndarray:
    """Class probabilities as stored by ``--probs``: float16 (``f16``) or uint8 ``round(p * 255)`` (``u8``)."""
    if fmt == "u8":
        return np.round(np.clip(np.asarray(probs, np.float32), 0, 1) * 255).astype(np.uint8)
    return np.asarray(probs).astype(np.float16)


# ---------------------------------------------------------------------------------------------- extras

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
                pics[f"{name}_overlay"] = overlay(image, value.data, pal, classes=value.classes)
            elif isinstance(value, ScoreTable):
                pics[name] = score_table_image(value.data, value.rows, value.cols, title=name)
        out.append(pics)
    return out


# ---------------------------------------------------------------------------------------------- the run

def check_outputs_spare_inputs(jobs: list[Job], out_dir: Path, inputs: list[str]) -> None:
    """:class:`UsageError` when ``out_dir`` is an input folder or an output name is an input file (the challenge
    folders' names included: whether the model gives people is known only from its results)."""
    out = out_dir.resolve()
    for inp in inputs:
        if Path(inp).is_dir() and Path(inp).resolve() == out:
            raise UsageError(f"--out {out_dir} is the input folder {inp}: the outputs would replace or mix with "
                             "the photos; choose another folder (one inside it is fine)")
    sources = {j.path.resolve(): j.path for j in jobs}
    stems = {j.stem.as_posix() for j in jobs}
    for path, source in sources.items():
        if person_map_image_id(out, path) in stems:
            raise UsageError(f"the output {path} would replace the input {source}; choose another --out")
    for j in jobs:
        base = out / j.stem
        for path in (label_path(out, j.stem), base.with_name(base.name + "_overlay.jpg"),
                     base.with_name(base.name + ".json"), base.with_name(base.name + "_probs.npy"),
                     *instance_output_paths(out, j.stem.as_posix(), 0)):
            if path in sources:
                raise UsageError(f"the output {path} would replace the input {sources[path]}; choose another --out")


def _read(job: Job, report: ParseReport) -> np.ndarray | None:
    try:
        return read_image(job.path)
    except HParseError as e:
        report.failed[str(job.path)] = str(e)
    except (OSError, MemoryError) as e:
        report.failed[str(job.path)] = f"{job.path}: cannot read ({e.__class__.__name__}: {e})"
    log.error("%s", report.failed[str(job.path)])
    return None


def _predict(parser, images: list[np.ndarray], opts: OutputOptions, extras) -> tuple[list, list]:
    """(:class:`Prediction` per image, extra pictures) of a batch."""
    if extras:
        results, raw = parser.predictor.predict(images, return_probs=opts.probs, with_extras=True,
                                                probs_at=opts.probs_size)
        more = extras(parser, images, raw)
    else:
        results = parser.predict(images, return_probs=opts.probs, probs_at=opts.probs_size)
        more = [{}] * len(images)
    pairs = results if opts.probs else [(r, None) for r in results]
    return [as_prediction(r, p, opts.min_score) for r, p in pairs], more


def _predict_each(parser, chunk: list[Job], images, writer: OutputWriter, extras, report: ParseReport):
    """:func:`_predict` on the batch; when the batch fails, image by image, so one bad image fails alone (any
    error, :class:`HParseError` included). :class:`UnsupportedOutput` refuses the request itself (e.g.
    probabilities from an instance model): a :class:`UsageError` that ends the run."""
    try:
        return list(zip(chunk, images, *_predict(parser, images, writer.opts, extras)))
    except UnsupportedOutput as e:
        raise UsageError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - one bad batch must not end the run
        if len(chunk) > 1:
            return [r for j, im in zip(chunk, images) for r in _predict_each(parser, [j], [im], writer, extras, report)]
        report.failed[str(chunk[0].path)] = f"{chunk[0].path}: inference failed ({e.__class__.__name__}: {e})"
        log.error("%s", report.failed[str(chunk[0].path)])
        return []


def parse_files(parser, inputs: list[str], out_dir: str | Path, batch_size: int = 1, overwrite: bool = False,
                masks: bool = False, probs: bool = False, sidecar: bool = False, palette: str | None = None,
                progress: bool = True, extras=None, png_mode: str = "palette", probs_format: str = "f16",
                probs_size: str = "image", min_score: float | None = None) -> ParseReport:
    """Parse every image in ``inputs`` into ``out_dir`` (module docstring); bad inputs and failed writes are
    reported per file in the :class:`ParseReport`, never fatal. :class:`UsageError` when the request cannot be
    carried out at all (an output would replace an input; no input found; an output the model cannot give:
    :class:`~hparse.errors.UnsupportedOutput`).
    ``min_score``: instance models' semantic threshold (None: :data:`SEMANTIC_SCORE_THRESH`).

    ``extras(parser, images, extra_outputs) -> list[dict name -> picture]`` renders the model's extra
    outputs (boundaries, structure points, levels...; taken from the same forward passes) as pictures.
    """
    if png_mode not in PNG_MODES or probs_format not in PROBS_FORMATS or probs_size not in PROBS_SIZES:
        raise UsageError(f"png_mode must be one of {PNG_MODES}, probs_format one of {PROBS_FORMATS} and "
                         f"probs_size one of {PROBS_SIZES}")
    started, out_dir, report = time.time(), Path(out_dir), ParseReport()
    jobs, problems = gather_inputs(inputs, exclude=out_dir)
    report.failed.update(problems)
    if not jobs:
        raise UsageError("nothing to parse: " + "; ".join(problems.values()) if problems else "no inputs given")
    check_outputs_spare_inputs(jobs, out_dir, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tmp in remove_stale_temps(out_dir, started):
        log.info("removed %s, left by an interrupted run", tmp)
    opts = OutputOptions(masks=masks, probs=probs, probs_format=probs_format, probs_size=probs_size, sidecar=sidecar,
                         extras=bool(extras), png_mode=png_mode, palette=palette,
                         min_score=SEMANTIC_SCORE_THRESH if min_score is None else float(min_score))
    fingerprint = model_fingerprint(parser)
    jobs = distributed.shard(jobs)  # under torchrun: every N-th image, from this process's rank
    done = {j for j in jobs if not overwrite and is_done(out_dir, j, fingerprint, opts)}
    report.skipped = [str(j.path) for j in jobs if j in done]
    todo = [j for j in jobs if j not in done]
    writer = OutputWriter(out_dir, parser.meta, opts, fingerprint)
    with tqdm(total=len(todo), desc="parse", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            _parse_batch(parser, todo[start:start + batch_size], writer, extras, report)
            bar.update(len(todo[start:start + batch_size]))
    return report


def _parse_batch(parser, batch: list[Job], writer: OutputWriter, extras, report: ParseReport) -> None:
    read = [(j, _read(j, report)) for j in batch]
    chunk = [(j, im) for j, im in read if im is not None]
    if not chunk:
        return
    for job, image, pred, extra in _predict_each(parser, [j for j, _ in chunk], [im for _, im in chunk],
                                                 writer, extras, report):
        try:
            writer.write(job, image, pred, extra)
            report.written.append(str(job.path))
        except (OSError, HParseError, ValueError) as e:
            report.failed[str(job.path)] = f"{job.path}: cannot write its outputs ({e})"
            log.error("%s", report.failed[str(job.path)])
