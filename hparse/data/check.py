"""``hparse data check``: load every sample of a dataset and summarise it.

:func:`check_dataset` reads each split that exists, loads every sample once, collects
problems (a :class:`~hparse.errors.DataError` per bad sample or split; it never stops at the
first) and reports sample counts, per-class pixel frequencies in the reader's label set,
ignore pixels and the image size distribution.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..labels import get_meta
from .readers import READERS, Reader, SplitNotFoundError


@dataclass
class Problem:
    split: str
    id: str | None
    message: str


@dataclass
class SplitStats:
    name: str
    num_classes: int
    samples: int = 0
    loaded: int = 0
    labelled: int = 0
    pixels: np.ndarray = None  # 256 bins of label values over the split
    class_images: np.ndarray = None  # number of labelled images containing each class
    sizes: Counter = field(default_factory=Counter)  # (h, w) -> count

    def __post_init__(self):
        self.pixels = np.zeros(256, np.int64)
        self.class_images = np.zeros(self.num_classes, np.int64)

    def add(self, sample: dict) -> None:
        self.loaded += 1
        self.sizes[sample["image"].shape[:2]] += 1
        if "label" in sample:
            self.labelled += 1
            counts = np.bincount(sample["label"].ravel(), minlength=256)
            self.pixels += counts
            self.class_images += counts[: self.num_classes] > 0

    def size_summary(self) -> dict:
        if not self.sizes:
            return {}
        hw = np.array([k for k, n in self.sizes.items() for _ in range(n)])
        stat = {d: {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
                for d, v in (("height", hw[:, 0]), ("width", hw[:, 1]))}
        stat["most_common"] = [{"height": h, "width": w, "count": n}
                               for (h, w), n in self.sizes.most_common(5)]
        return stat


@dataclass
class CheckReport:
    layout: str
    root: str
    label_set: str
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def class_table(self, splits: list[SplitStats] | None = None) -> list[dict]:
        splits = list(self.splits.values()) if splits is None else splits
        if not splits:
            return []
        meta = get_meta(self.label_set)
        pix = sum((s.pixels for s in splits), np.zeros(256, np.int64))
        imgs = sum((s.class_images for s in splits), np.zeros(meta.num_classes, np.int64))
        total = max(int(pix[: meta.num_classes].sum()), 1)
        return [{"id": c, "name": name, "pixels": int(pix[c]), "percent": 100.0 * pix[c] / total,
                 "images": int(imgs[c])} for c, name in enumerate(meta.classes)]

    def _other_pixels(self, s: SplitStats) -> dict:
        n = s.class_images.size
        return {"ignore_pixels": int(s.pixels[255]), "other_pixels": int(s.pixels[n:255].sum())}

    def to_dict(self) -> dict:
        return {
            "layout": self.layout, "root": self.root, "label_set": self.label_set, "ok": self.ok,
            "samples": sum(s.samples for s in self.splits.values()),
            "splits": {k: {"samples": s.samples, "loaded": s.loaded, "labelled": s.labelled,
                           **self._other_pixels(s), "image_size": s.size_summary(),
                           "classes": self.class_table([s])} for k, s in self.splits.items()},
            "classes": self.class_table(),
            "ignore_pixels": sum(int(s.pixels[255]) for s in self.splits.values()),
            "problems": [vars(p) for p in self.problems], "notes": self.notes,
        }

    def print(self, console=None, max_problems: int = 20) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = console or Console()
        t = Table(title=escape(f"{self.layout} dataset at {self.root} (labels: {self.label_set})"))
        for col in ("split", "samples", "problems", "height min/med/max", "width min/med/max",
                    "top h x w"):
            t.add_column(col, justify="left" if col == "split" else "right")
        for k, s in self.splits.items():
            z = s.size_summary()
            rng = {d: "{min}/{median:g}/{max}".format(**z[d]) if z else "-" for d in ("height", "width")}
            top = z["most_common"][0] if z else None
            t.add_row(k, str(s.samples), str(sum(p.split == k for p in self.problems)), rng["height"],
                      rng["width"], f"{top['height']}x{top['width']} ({top['count']})" if top else "-")
        console.print(t)

        c = Table(title="class pixel frequencies (all splits)")
        for col in ("id", "class", "pixels", "%", "images"):
            c.add_column(col, justify="left" if col == "class" else "right")
        for row in self.class_table():
            c.add_row(str(row["id"]), row["name"], f"{row['pixels']:,}", f"{row['percent']:.2f}",
                      str(row["images"]))
        console.print(c)
        d = self.to_dict()
        console.print(f"ignore (255) pixels: {d['ignore_pixels']:,}")
        for note in self.notes:
            console.print(f"[dim]note: {escape(note)}[/dim]")
        for p in self.problems[:max_problems]:
            where = escape(f"[{p.split}{'/' + p.id if p.id else ''}]")
            console.print(f"[red]problem[/red] {where} {escape(p.message)}", highlight=False)
        if len(self.problems) > max_problems:
            console.print(f"... and {len(self.problems) - max_problems} more problems")
        console.print(f"{d['samples']} samples in {len(self.splits)} split(s), "
                      + ("no problems" if self.ok else f"[red]{len(self.problems)} problem(s)[/red]"))


def _open_splits(layout: str, root, splits, kwargs, report: CheckReport) -> list[tuple[str, Reader]]:
    """Readers for the requested splits, or for every split present (aggregate "all" only as a
    fallback, and splits that repeat another split's files are skipped)."""
    cls = READERS.get(layout)
    auto = not splits
    names = list(splits or [s for s in cls.splits if s != "all"])
    readers: list[tuple[str, Reader]] = []

    def try_open(name):
        try:
            readers.append((name, cls(root, name, **kwargs)))
        except SplitNotFoundError as e:
            (report.notes.append(f"split {name!r} skipped: {e}") if auto
             else report.problems.append(Problem(name, None, str(e))))
        except DataError as e:
            report.problems.append(Problem(name, None, str(e)))

    for name in names:
        try_open(name)
    if auto and not readers and not report.problems and "all" in cls.splits:
        report.notes[:] = ["no split lists found: checked split 'all'"]
        try_open("all")
    seen: dict[tuple, str] = {}
    out = []
    for name, r in readers:
        key = tuple(str(it.image) for it in r.items)
        if key in seen:
            report.notes.append(f"split {name!r} holds the same files as {seen[key]!r}; counted once")
            continue
        seen[key] = name
        out.append((name, r))
    return out


def check_dataset(layout: str, root: str | Path, splits: list[str] | None = None,
                  label_set: str | None = None, progress: bool = True) -> CheckReport:
    """Load every sample of ``layout`` at ``root`` and summarise it (see module docstring).

    Unknown layouts or label sets raise (ConfigError / KeyError); everything wrong with the
    data itself ends up in ``report.problems``.
    """
    cls = READERS.get(layout)
    kwargs = {"label_set": label_set} if label_set else {}
    report = CheckReport(layout, str(root), label_set or cls.default_label_set)
    if label_set:
        get_meta(label_set)
    if not Path(root).is_dir():
        report.problems.append(Problem("-", None, f"{root}: dataset root not found"))
        return report
    for name, reader in _open_splits(layout, root, splits, kwargs, report):
        report.label_set = reader.label_set
        st = report.splits[name] = SplitStats(name, reader.meta.num_classes, samples=len(reader))
        for i in tqdm(range(len(reader)), desc=f"{layout}/{name}", unit="img", disable=not progress,
                      leave=False):
            try:
                st.add(reader[i])
            except DataError as e:
                report.problems.append(Problem(name, reader.items[i].id, str(e)))
    return report
