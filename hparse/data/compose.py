"""Multi-person training data from single-person data: paste people into one canvas.

:func:`compose_dataset` cuts people out of a source dataset with their label masks (person =
label not 0 and not 255; a source sample with ``human_ids`` gives one of its persons), pastes
``per_image`` = (min, max) of them into a ``size`` canvas with seeded scale, position, flip and
paste-order jitter (later people occlude earlier ones), drops a person whose visible area
falls below ``min_visible`` of its pasted area (re-sampling the layout when fewer than
``min`` people remain), and writes the result in the **CIHP layout**::

    OUT/meta.json                                   label set, source, seed, parameters
    OUT/{Training,Validation}/{train,val}_id.txt
    OUT/{Training,Validation}/Images/<id>.jpg       JPEG, quality 95
    OUT/{Training,Validation}/Category_ids/<id>.png part labels in the source label set
    OUT/{Training,Validation}/Human_ids/<id>.png    1..n in paste order (back to front), 0 = background
    OUT/{Training,Validation}/Instance_ids/<id>.png + <id>.txt   lines "inst_id class_id human_id"

Part-instance ids follow CIHP, ``inst_id = (human_id - 1) * C + class_id`` (C = classes of the
label set), whenever every id fits in uint8 (``max_people * C <= 256``, e.g. ccp15 with up to 17
people); otherwise (e.g. mhp_v2 with 5 people) they are numbered consecutively 1..K in
(human, class) order. ``meta.json`` records which (``"instance_numbering": "cihp" | "consecutive"``).

The background is never black: ``blur`` (default) is a random crop of another source image with
its people filled in from the surrounding background and blurred; ``source`` is the same crop
unblurred; ``mosaic`` a grid of 2x2 to 4x4 tiles, each a random crop of that image (away from its
people) shrunk to the tile, so the background is as sharp and busy as the people (a blurred or bokeh background teaches
a parser that sharp means person); ``colour`` a noisy colour gradient. With probability
``occluder`` a band of such tiles (one row) covers the canvas bottom (0.15-0.45 of
its height), as a table or desk hides people's lower bodies in real photos. Sample ``k`` of a split depends only on
``(seed, split, k)`` and the parameters, so a run is deterministic (same seed, identical files),
and an interrupted run resumes: samples whose files all exist are skipped. Every file is
written atomically; the image is written last, so its presence marks a complete sample.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..io.atomic import write_text_atomic
from ..io.image import write_image, write_label_png
from ..labels import DatasetMeta
from .readers import build_reader
from .readers.base import Reader, SplitNotFoundError

log = logging.getLogger("hparse.compose")

FOLDERS = {"train": "Training", "val": "Validation", "test": "Testing"}
BACKGROUNDS = ("blur", "colour", "source", "mosaic")
FORMAT = "hparse-compose"
VERSION = 1
_SUBDIRS = ("Images", "Category_ids", "Human_ids", "Instance_ids")


@dataclass(frozen=True)
class ComposeParams:
    """What a composed sample depends on (besides the source data, seed, split and index)."""

    per_image: tuple[int, int] = (2, 5)           # (min, max) people per image
    size: tuple[int, int] = (512, 512)            # canvas (H, W)
    background: str = "blur"                      # blur | colour | source | mosaic
    min_visible: float = 0.2                      # visible / pasted area below this: person dropped
    min_pixels: int = 64                          # ... and so is one with fewer visible pixels
    height: tuple[float, float] = (0.45, 0.95)    # person box height / canvas height
    flip: float = 0.5                             # horizontal flip probability (left/right labels swapped)
    quality: int = 95                             # JPEG quality
    attempts: int = 20                            # layouts tried before accepting fewer than min people
    occluder: float = 0.0                         # probability of a background band over the canvas bottom

    def validate(self) -> ComposeParams:
        lo, hi = self.per_image
        if not 1 <= lo <= hi <= 50:
            raise ConfigError(f"per_image must be MIN-MAX with 1 <= MIN <= MAX <= 50, got {lo}-{hi}")
        if min(self.size) < 32 or max(self.size) > 8192:
            raise ConfigError(f"canvas size {self.size[0]}x{self.size[1]} outside 32..8192")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"background must be one of {', '.join(BACKGROUNDS)}, not {self.background!r}")
        if not 0 <= self.min_visible < 1:
            raise ConfigError(f"min_visible must lie in [0, 1), got {self.min_visible}")
        if not 0 < self.height[0] <= self.height[1] <= 2:
            raise ConfigError(f"height range must satisfy 0 < lo <= hi <= 2, got {self.height}")
        if not 1 <= self.quality <= 100 or self.attempts < 1 or not 0 <= self.flip <= 1:
            raise ConfigError("quality must lie in 1..100, attempts >= 1 and flip in [0, 1]")
        if not 0 <= self.occluder <= 1:
            raise ConfigError(f"occluder is a probability in [0, 1], got {self.occluder}")
        return self

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Person:
    """A cut-out person: RGB crop, label crop (0 outside the person) and mask, at source scale."""

    rgb: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    source: str


@dataclass
class Composite:
    image: np.ndarray           # (H, W, 3) uint8
    label: np.ndarray           # (H, W) uint8 part labels, 0 = background
    human_ids: np.ndarray       # (H, W) uint8, 1..n
    instance_ids: np.ndarray    # (H, W) uint8
    instances: np.ndarray       # (K, 3) int64 rows inst_id, class_id, human_id
    sources: list[str]          # source id of person k at index k - 1
    dropped: int = 0            # people dropped for low visibility in the accepted layout


@dataclass
class ComposeReport:
    out_root: Path
    label_set: str
    counts: dict[str, int] = field(default_factory=dict)      # samples per split
    written: dict[str, int] = field(default_factory=dict)     # newly written per split
    skipped: dict[str, int] = field(default_factory=dict)     # complete already (resumed)
    people: Counter = field(default_factory=Counter)          # people per image -> images (written)
    dropped: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        per = ", ".join(f"{s}: {n} ({self.written.get(s, 0)} written, {self.skipped.get(s, 0)} existed)"
                        for s, n in self.counts.items())
        hist = " ".join(f"{k}:{v}" for k, v in sorted(self.people.items()))
        return (f"{self.out_root} ({self.label_set}): {per}; people per written image {hist or '-'}; "
                f"{self.dropped} occluded people dropped; {self.seconds:.1f} s")


# -- geometry / imaging helpers -------------------------------------------------------------

def _resize(a: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if w * h < a.shape[0] * a.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(a, (w, h), interpolation=interp)


def fill_people(rgb: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """``rgb`` with the ``fg`` pixels (people, slightly dilated) replaced by a smooth fill from the
    surrounding background (normalised convolution at 1/8 scale)."""
    h, w = fg.shape
    if not fg.any():
        return rgb
    fg = cv2.dilate(fg.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    bg = (~fg).astype(np.float32)
    sw, sh = max(1, w // 8), max(1, h // 8)
    m = cv2.resize(bg, (sw, sh), interpolation=cv2.INTER_AREA)
    x = cv2.resize(rgb.astype(np.float32) * bg[..., None], (sw, sh), interpolation=cv2.INTER_AREA)
    sigma = max(sw, sh) / 6
    num = cv2.GaussianBlur(x, (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)
    mean = x.reshape(-1, 3).sum(0) / max(float(m.sum()), 1e-6) if m.sum() > 0 else np.full(3, 128.0)
    fill = np.where(den[..., None] > 1e-3, num / np.maximum(den, 1e-3)[..., None], mean)
    fill = cv2.resize(fill.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.where(fg[..., None], np.clip(fill + 0.5, 0, 255), rgb)
    return out.astype(np.uint8)


def make_background(rgb: np.ndarray | None, fg: np.ndarray | None, size: tuple[int, int], mode: str,
                    rng: np.random.Generator) -> np.ndarray:
    """A canvas background: a random region of a source image (people filled in), or a colour gradient."""
    H, W = size
    if mode == "colour" or rgb is None:
        c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
        t = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
        img = c0 * (1 - t) + c1 * t + rng.normal(0, 4, (H, W, 3))
        return np.clip(img, 0, 255).astype(np.uint8)
    img = fill_people(rgb, fg)
    if mode == "mosaic":
        k = int(rng.integers(2, 5))
        return _tiles(img, fg, size, (k, k), rng)
    img = _random_crop(img, size, rng)
    if mode == "blur":
        img = cv2.GaussianBlur(img, (0, 0), max(H, W) / 96)
    return img


def _tiles(img: np.ndarray, fg: np.ndarray, size: tuple[int, int], grid: tuple[int, int],
           rng: np.random.Generator) -> np.ndarray:
    """A ``size`` image of rows x cols tiles, each a crop of ``img`` (0.2-0.6 of its largest) shrunk to the tile,
    the least covered by ``fg`` (the filled-in people) of 8 tries."""
    H, W = size
    ys, xs = np.linspace(0, H, grid[0] + 1).astype(int), np.linspace(0, W, grid[1] + 1).astype(int)
    out = np.empty((H, W, 3), np.uint8)
    for i in range(grid[0]):
        for j in range(grid[1]):
            tile = (ys[i + 1] - ys[i], xs[j + 1] - xs[j])
            out[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = _random_crop(img, tile, rng, (0.2, 0.6), fg)
    return out


def _random_crop(img: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
                 scale: tuple[float, float] = (0.5, 1.0), avoid: np.ndarray | None = None,
                 tries: int = 8) -> np.ndarray:
    """The largest crop of ``img`` with the aspect ratio of ``size``, scaled by U(*scale), at a random place
    (with ``avoid``: the place of ``tries`` covering the fewest ``avoid`` pixels), resized to ``size`` and
    flipped with probability 0.5."""
    H, W = size
    h, w = img.shape[:2]
    ch, cw = (h, h * W / H) if h * W / H <= w else (w * H / W, w)
    s = rng.uniform(*scale)
    ch, cw = max(1, int(ch * s)), max(1, int(cw * s))
    best = None
    for _ in range(1 if avoid is None or not avoid.any() else tries):
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        covered = 0 if avoid is None else int(avoid[y0:y0 + ch, x0:x0 + cw].sum())
        if best is None or covered < best[0]:
            best = (covered, y0, x0)
    _, y0, x0 = best
    img = _resize(img[y0:y0 + ch, x0:x0 + cw], W, H)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def cut_person(sample: dict, rng: np.random.Generator) -> Person | None:
    """The person of a single-person sample (or a random one of ``human_ids``), cropped to its box."""
    label = sample["label"]
    mask = (label != 0) & (label != 255)
    if "human_ids" in sample and sample["human_ids"].max() > 0:
        k = int(rng.integers(1, int(sample["human_ids"].max()) + 1))
        mask &= sample["human_ids"] == k
    if mask.sum() < 16:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = mask[y0:y1, x0:x1]
    return Person(sample["image"][y0:y1, x0:x1], np.where(m, label[y0:y1, x0:x1], 0).astype(np.uint8),
                  m, sample["id"])


def _paste_slices(y: int, x: int, h: int, w: int, H: int, W: int):
    """Canvas and patch slices of an (h, w) patch at (y, x), clipped to the (H, W) canvas."""
    cy0, cx0, cy1, cx1 = max(y, 0), max(x, 0), min(y + h, H), min(x + w, W)
    if cy0 >= cy1 or cx0 >= cx1:
        return None
    return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - y, cy1 - y), slice(cx0 - x, cx1 - x))


@dataclass
class _Placed:
    person: Person
    y: int
    x: int
    h: int
    w: int
    flip: bool
    rgb: np.ndarray = None
    label: np.ndarray = None
    mask: np.ndarray = None

    def render(self, flip_lut: np.ndarray) -> _Placed:
        p = self.person
        self.label = _resize(p.label, self.w, self.h, nearest=True)
        self.rgb = _resize(p.rgb, self.w, self.h)
        if self.flip:
            self.label, self.rgb = flip_lut[self.label[:, ::-1]], self.rgb[:, ::-1]
        self.mask = self.label != 0
        return self


def _layout(people: list[Person], params: ComposeParams, rng: np.random.Generator,
            flip_lut: np.ndarray) -> list[_Placed]:
    """Scale, flip and position each person: one horizontal slot each (in random order) with jitter."""
    H, W = params.size
    n = len(people)
    slots = rng.permutation(n)
    placed = []
    for p, slot in zip(people, slots):
        ph, pw = p.label.shape
        h = rng.uniform(*params.height) * H
        scale = min(h / ph, 0.9 * W / pw)
        h, w = max(1, round(ph * scale)), max(1, round(pw * scale))
        cx = (slot + 0.5 + rng.uniform(-0.4, 0.4)) * W / n
        x = int(round(np.clip(cx - w / 2, -0.15 * w, W - 0.85 * w)))
        top_lo, top_hi = -0.05 * h, max(H - 0.85 * h, -0.05 * h)
        y = int(round(rng.uniform(top_lo, top_hi)))
        placed.append(_Placed(p, y, x, h, w, bool(rng.random() < params.flip)).render(flip_lut))
    return placed


def _render_maps(placed: list[_Placed], size: tuple[int, int], cover: int | None = None):
    """Label and human-id maps of ``placed`` pasted in order (later occlude earlier); rows from ``cover`` down
    are hidden by an occluder."""
    H, W = size
    label, human = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
    for k, pl in enumerate(placed, 1):
        sl = _paste_slices(pl.y, pl.x, pl.h, pl.w, H, W)
        if sl is None:
            continue
        (cs, ps) = sl
        m = pl.mask[ps]
        label[cs][m] = pl.label[ps][m]
        human[cs][m] = k
    if cover is not None:
        label[cover:], human[cover:] = 0, 0
    return label, human


def _drop_hidden(placed: list[_Placed], params: ComposeParams, cover: int | None = None):
    """Drop the least visible person below the visibility limits, one at a time, until all pass."""
    dropped = 0
    while placed:
        _, human = _render_maps(placed, params.size, cover)
        vis = np.bincount(human.ravel(), minlength=len(placed) + 1)[1:]
        frac = np.array([v / max(int(pl.mask.sum()), 1) for v, pl in zip(vis, placed)])
        bad = (frac < params.min_visible) | (vis < params.min_pixels)
        if not bad.any():
            return placed, dropped
        worst = int(np.argmin(np.where(bad, frac, np.inf)))
        placed = placed[:worst] + placed[worst + 1:]
        dropped += 1
    return placed, dropped


def instance_numbering(meta: DatasetMeta, max_people: int) -> str:
    """"cihp" ((human - 1) * C + class fits uint8) or "consecutive"."""
    return "cihp" if max_people * meta.num_classes - 1 <= 255 else "consecutive"


def part_instances(label: np.ndarray, human: np.ndarray, num_classes: int, numbering: str = "cihp"):
    """CIHP ``Instance_ids`` map and (K, 3) rows ``inst_id class_id human_id`` from part labels and
    human ids (one instance per (person, class) present)."""
    inst = np.zeros(label.shape, np.uint8)
    rows = []
    fg = (human > 0) & (label != 0) & (label != 255)
    pairs = np.unique(human[fg].astype(np.int64) * 256 + label[fg]) if fg.any() else np.zeros(0, np.int64)
    for key in pairs:
        k, c = int(key // 256), int(key % 256)
        i = (k - 1) * num_classes + c if numbering == "cihp" else len(rows) + 1
        if not 0 < i <= 255:
            raise DataError(f"part instance id {i} (person {k}, class {c}) does not fit in uint8")
        inst[(human == k) & (label == c)] = i
        rows.append((i, c, k))
    return inst, np.array(rows, np.int64).reshape(-1, 3)


# -- the composer ---------------------------------------------------------------------------

class Composer:
    """Composes samples of one split from a source reader (see the module docstring)."""

    def __init__(self, reader: Reader, params: ComposeParams, seed: int = 0, numbering: str | None = None):
        self.reader, self.params, self.seed = reader, params.validate(), int(seed)
        self.meta = reader.meta
        self.flip_lut = self.meta.flip_lut()
        self.numbering = numbering or instance_numbering(self.meta, params.per_image[1])
        self._cache: dict[int, dict | None] = {}

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.reader.split.encode()), index])

    def _sample(self, i: int) -> dict | None:
        if i not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            try:
                self._cache[i] = self.reader[i]
            except DataError as e:
                log.warning("source sample skipped: %s", e)
                self._cache[i] = None
        return self._cache[i]

    def _draw_people(self, n: int, rng: np.random.Generator) -> list[Person]:
        N = len(self.reader)
        order = rng.choice(N, size=n, replace=N < n).tolist()
        people, tries = [], 0
        while order:
            s = self._sample(order.pop(0))
            p = cut_person(s, rng) if s is not None and "label" in s else None
            if p is not None:
                people.append(p)
                continue
            tries += 1
            if tries > 50 + 2 * n:
                raise DataError(f"{self.reader.root}: could not find {n} source samples with a labelled person "
                                f"(split {self.reader.split!r})")
            order.append(int(rng.integers(N)))
        return people

    def compose(self, index: int) -> Composite:
        p, rng = self.params, self.rng(index)
        lo, hi = p.per_image
        n = int(rng.integers(lo, hi + 1))
        people = self._draw_people(n, rng)
        bg_sample = self._sample(int(rng.integers(len(self.reader))))
        bg_rgb = bg_fg = None
        if bg_sample is not None:
            bg_rgb = bg_sample["image"]
            lab = bg_sample.get("label")
            bg_fg = np.zeros(bg_rgb.shape[:2], bool) if lab is None else (lab != 0)
        background = make_background(bg_rgb, bg_fg, p.size, p.background, rng)
        band = None
        if p.occluder and rng.random() < p.occluder:
            H, W = p.size
            height = max(1, int(rng.uniform(0.15, 0.45) * H))
            band = make_background(bg_rgb, bg_fg, (height, W), "colour", rng) if bg_rgb is None else \
                _tiles(fill_people(bg_rgb, bg_fg), bg_fg, (height, W), (1, int(rng.integers(2, 6))), rng)
        cover = None if band is None else p.size[0] - len(band)
        best = None
        for _ in range(p.attempts):
            placed, dropped = _drop_hidden(_layout(people, p, rng, self.flip_lut), p, cover)
            if best is None or len(placed) > len(best[0]):
                best = (placed, dropped)
            if len(placed) >= min(lo, n):
                break
        placed, dropped = best
        if not placed:
            raise DataError(f"sample {index} of split {self.reader.split!r}: no person stayed visible")
        return self._finish(background, placed, dropped, band)

    def _finish(self, background: np.ndarray, placed: list[_Placed], dropped: int,
                band: np.ndarray | None = None) -> Composite:
        H, W = self.params.size
        image = background.astype(np.float32)
        for pl in placed:
            sl = _paste_slices(pl.y, pl.x, pl.h, pl.w, H, W)
            if sl is None:
                continue
            cs, ps = sl
            m = pl.mask.astype(np.float32)
            alpha = (cv2.GaussianBlur(m, (3, 3), 0.8) * m)[ps][..., None]  # soften the inner edge only
            image[cs] = image[cs] * (1 - alpha) + pl.rgb[ps].astype(np.float32) * alpha
        cover = None
        if band is not None:
            cover = H - len(band)
            image[cover:] = band
        label, human = _render_maps(placed, (H, W), cover)
        inst, rows = part_instances(label, human, self.meta.num_classes, self.numbering)
        return Composite(np.clip(image + 0.5, 0, 255).astype(np.uint8), label, human, inst, rows,
                         [pl.person.source for pl in placed], dropped)


def sample_id(split: str, index: int) -> str:
    return f"{split}_{index + 1:06d}"


def sample_paths(out_root: Path, split: str, sid: str) -> dict[str, Path]:
    d = Path(out_root) / FOLDERS[split]
    return {"category": d / "Category_ids" / f"{sid}.png", "human": d / "Human_ids" / f"{sid}.png",
            "instance": d / "Instance_ids" / f"{sid}.png", "instance_txt": d / "Instance_ids" / f"{sid}.txt",
            "image": d / "Images" / f"{sid}.jpg"}


def write_composite(paths: dict[str, Path], c: Composite, quality: int = 95) -> None:
    """Write one sample atomically, file by file, the image last (it marks the sample complete)."""
    write_label_png(paths["category"], c.label)
    write_label_png(paths["human"], c.human_ids)
    write_label_png(paths["instance"], c.instance_ids)
    write_text_atomic(paths["instance_txt"], "".join(f"{a} {b} {h}\n" for a, b, h in c.instances))
    write_image(paths["image"], c.image, quality=quality)


def _meta_record(layout: str, root: Path, splits, label_set: str, seed: int, params: ComposeParams,
                 numbering: str, counts: dict[str, int]) -> dict:
    return {"format": FORMAT, "version": VERSION, "layout": "cihp", "label_set": label_set,
            "source": {"layout": layout, "root": str(root), "splits": list(splits)},
            "seed": seed, "params": params.to_dict(), "instance_numbering": numbering, "counts": counts,
            "ids": "<split>_<6-digit index from 1>", "human_ids": "1..n in paste order (back to front)"}


def _same_recipe(a: dict, b: dict) -> bool:
    keys = ("format", "version", "label_set", "seed", "instance_numbering")
    defaults = ComposeParams().to_dict()   # a parameter added later: older datasets used its default
    params = [{**defaults, **d["params"]} if isinstance(d.get("params"), dict) else None for d in (a, b)]
    return (all(a.get(k) == b.get(k) for k in keys) and params[0] == params[1]
            and a.get("source", {}).get("layout") == b["source"]["layout"])


def check_derived(root: Path, out_root: Path, splits) -> list[str]:
    """The splits of a dataset derived from ``root`` into ``out_root`` (CIHP layout), checked."""
    splits = list(dict.fromkeys(splits))
    if not splits or any(s not in FOLDERS for s in splits):
        raise ConfigError(f"splits must be some of {', '.join(FOLDERS)}, got {splits}")
    if out_root.resolve() == root.resolve():
        raise ConfigError(f"{out_root}: the output folder must differ from the source root")
    return splits


def read_meta(meta_path: Path, remedy: str) -> dict:
    """A derived dataset's ``meta.json``; unreadable -> :class:`DataError` ending with ``remedy``."""
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: unreadable ({e}); {remedy}") from e


def compose_dataset(layout: str, root: str | Path, out_root: str | Path, splits=("train", "val"),
                    label_set: str | None = None, params: ComposeParams | None = None,
                    count: int | None = None, seed: int = 0, overwrite: bool = False,
                    progress: bool = True) -> ComposeReport:
    """Compose a multi-person CIHP-layout dataset at ``out_root`` from ``layout`` at ``root``.

    ``count`` samples per split (default: as many as the source split has images). Without
    ``overwrite``, an existing output made with the same recipe is resumed (complete samples are
    kept; a different ``count`` extends it or lists fewer) and one made with a different recipe, or a
    non-empty folder that is not a composed dataset, is refused. With ``overwrite`` every sample is
    rewritten and composed samples beyond ``count`` are removed.
    """
    t0 = time.perf_counter()
    params = (params or ComposeParams()).validate()
    root, out_root = Path(root), Path(out_root)
    splits = check_derived(root, out_root, splits)
    if count is not None and count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    readers = {}
    for s in splits:
        try:
            readers[s] = build_reader(layout, root, s, **({"label_set": label_set} if label_set else {}))
        except SplitNotFoundError as e:
            raise DataError(f"source split {s!r} not found: {e}") from None
    meta = next(iter(readers.values())).meta
    numbering = instance_numbering(meta, params.per_image[1])
    counts = {s: (count or len(r)) for s, r in readers.items()}
    record = _meta_record(layout, root, splits, meta.name, seed, params, numbering, counts)

    meta_path = out_root / "meta.json"
    if meta_path.is_file():
        old = read_meta(meta_path, "pass --overwrite to recompose")
        if old.get("format") != FORMAT and not overwrite:
            raise DataError(f"{out_root}: meta.json is not from `hparse data compose`; choose another folder")
        if not _same_recipe(old, record) and not overwrite:
            raise DataError(f"{out_root}: holds a dataset composed with other settings (meta.json); "
                            "pass --overwrite to recompose it or choose another folder")
        old_counts = old.get("counts", {}) if isinstance(old.get("counts"), dict) else {}
        record["counts"] = {**{k: v for k, v in old_counts.items() if k not in counts}, **counts}
        record["source"]["splits"] = sorted(set(record["counts"]), key=list(FOLDERS).index)
    elif out_root.is_dir() and any(out_root.iterdir()) and not overwrite:
        raise DataError(f"{out_root}: folder exists and is not a composed dataset (no meta.json); "
                        "choose an empty or new folder, or pass --overwrite")
    out_root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(record, indent=1) + "\n")

    report = ComposeReport(out_root, meta.name, dict(counts))
    for s, reader in readers.items():
        composer = Composer(reader, params, seed, numbering)
        ids = [sample_id(s, k) for k in range(counts[s])]
        written = skipped = 0
        for k, sid in enumerate(tqdm(ids, desc=f"compose {s}", unit="img", disable=not progress)):
            paths = sample_paths(out_root, s, sid)
            if not overwrite and all(p.is_file() for p in paths.values()):
                skipped += 1
                continue
            c = composer.compose(k)
            write_composite(paths, c, params.quality)
            written += 1
            report.people[len(c.sources)] += 1
            report.dropped += c.dropped
        d = out_root / FOLDERS[s]
        write_text_atomic(d / f"{s}_id.txt", "".join(f"{i}\n" for i in ids))
        if overwrite:
            _remove_stale(d, s, set(ids))
        report.written[s], report.skipped[s] = written, skipped
    report.seconds = time.perf_counter() - t0
    return report


def _remove_stale(d: Path, split: str, keep: set[str]) -> None:
    """Remove composed samples of this split beyond the current count (from an earlier, larger run)."""
    for sub in _SUBDIRS:
        folder = d / sub
        if not folder.is_dir():
            continue
        for p in folder.glob(f"{split}_*.*"):
            if p.stem not in keep and p.stem[len(split) + 1:].isdigit():
                p.unlink()


def _int_pair(text: str, seps: str, option: str, form: str) -> tuple[int, int]:
    """"A<sep>B" -> (A, B); "A" -> (A, A); anything else is a ConfigError naming ``option``."""
    joined = text
    for sep in seps[1:]:
        joined = joined.replace(sep, seps[0])
    try:
        parts = [int(v) for v in joined.split(seps[0])]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise ConfigError(f"{option} must be {form}, got {text!r}")
    return parts[0], parts[1]


def parse_range(text: str) -> tuple[int, int]:
    """"2-5" -> (2, 5); "3" -> (3, 3)."""
    return _int_pair(text, "-,", "--per-image", "MIN-MAX (e.g. 2-5)")


def parse_size(text: str) -> tuple[int, int]:
    """"512x384" -> (512, 384) as (H, W); "512" -> (512, 512)."""
    return _int_pair(text.lower(), "x", "--size", "HxW (e.g. 512x512)")
