"""How the distinct palettes of :mod:`hparse.labels` were made, and how to check or remake one.

A palette is chosen from an sRGB grid so that classes that touch on a body (``DatasetMeta.touching_pairs``,
background included: it touches every part) are far apart in CIEDE2000, and all other pairs at least
``apart`` times as far: a deterministic max-min search (farthest-point start, then per-class moves while
the smallest weighted distance grows). ``python -m hparse.viz.palette_design ccp15`` prints a table to paste
into ``hparse/labels.py``; ``palette_report`` is what the tests check.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..labels import DatasetMeta, get_meta
from .colour import delta_e_2000, rgb_to_lab

BACKGROUND_RGB = (0, 0, 0)
# colours kept by name so a picture reads at a glance: background black, bare skin a skin tone
ANCHORS = {"background": BACKGROUND_RGB, "skin": (255, 204, 153), "face": (255, 204, 153)}


@dataclass(frozen=True)
class PaletteReport:
    """Smallest CIEDE2000 distances of a palette over a label set's classes."""

    touching: float          # over pairs that touch on a body (background included)
    any_pair: float          # over all pairs of classes
    worst_touching: tuple[str, str]


def _candidates(step: int = 17, lightness=(35.0, 85.0)) -> tuple[np.ndarray, np.ndarray]:
    """sRGB grid colours with a lightness that reads on photos (not near-black, not near-white)."""
    levels = np.arange(0, 256, step)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = rgb_to_lab(rgb)
    keep = (lab[:, 0] >= lightness[0]) & (lab[:, 0] <= lightness[1])
    return rgb[keep], lab[keep]


def weight_matrix(meta: DatasetMeta, apart: float) -> np.ndarray:
    """w[i, j] = 1 for classes that touch, ``apart`` (< 1) otherwise: distance / w is maximised."""
    n = meta.num_classes
    w = np.full((n, n), apart)
    w[0, :] = w[:, 0] = 1.0
    for a, b in meta.touching_pairs():
        w[a, b] = w[b, a] = 1.0
    return w


def _score_of(c_lab: np.ndarray, i: int, lab: np.ndarray, placed: list[int], w: np.ndarray) -> np.ndarray:
    """For candidate colours ``c_lab`` as class ``i``: the smallest weighted distance to the placed classes."""
    if not placed:
        return np.full(len(c_lab), np.inf)
    d = delta_e_2000(c_lab[:, None, :], lab[placed][None, :, :])
    return (d / w[i, placed][None, :]).min(1)


def design_palette(meta: DatasetMeta, apart: float = 0.6, passes: int = 30) -> np.ndarray:
    """(num_classes, 3) uint8: :data:`ANCHORS` kept, every other colour chosen by the max-min search."""
    n, w = meta.num_classes, weight_matrix(meta, apart)
    c_rgb, c_lab = _candidates()
    rgb = np.zeros((n, 3), dtype=np.int64)
    placed = [i for i, name in enumerate(meta.classes) if name in ANCHORS]
    rgb[placed] = [ANCHORS[meta.classes[i]] for i in placed]
    lab = rgb_to_lab(rgb)
    order = sorted(set(range(n)) - set(placed), key=lambda i: (-(w[i] == 1).sum(), i))
    for i in order:                                   # farthest-point start, most-touching classes first
        best = int(np.argmax(_score_of(c_lab, i, lab, placed, w)))
        rgb[i], lab[i] = c_rgb[best], c_lab[best]
        placed.append(i)
    for _ in range(passes):                           # move one class at a time while its bottleneck grows
        moved = False
        for i in order:
            others = [j for j in range(n) if j != i]
            scores = _score_of(c_lab, i, lab, others, w)
            current = _score_of(lab[i][None], i, lab, others, w)[0]
            best = int(np.argmax(scores))
            if scores[best] > current + 1e-6:
                rgb[i], lab[i], moved = c_rgb[best], c_lab[best], True
        if not moved:
            break
    return rgb.astype(np.uint8)


def palette_report(meta: DatasetMeta, palette) -> PaletteReport:
    """The smallest distances of ``palette`` (first ``num_classes`` rows used) over ``meta``'s classes."""
    n = meta.num_classes
    lab = rgb_to_lab(np.asarray(palette)[:n])
    d = delta_e_2000(lab[:, None, :], lab[None, :, :])
    pairs = set(meta.touching_pairs()) | {(0, j) for j in range(1, n)}
    worst = min(pairs, key=lambda p: d[p])
    upper = d[np.triu_indices(n, 1)]
    return PaletteReport(touching=float(d[worst]), any_pair=float(upper.min()),
                         worst_touching=(meta.classes[worst[0]], meta.classes[worst[1]]))


def main(argv: list[str]) -> None:
    for name in argv or ["ccp15"]:
        meta = get_meta(name)
        pal = design_palette(meta)
        rep = palette_report(meta, pal)
        print(f"# {name}: touching pairs >= {rep.touching:.1f} ({' / '.join(rep.worst_touching)}), "
              f"any pair >= {rep.any_pair:.1f} (CIEDE2000)")
        print("(" + ", ".join(f"({r}, {g}, {b})" for r, g, b in pal.tolist()) + ")")


if __name__ == "__main__":
    main(sys.argv[1:])
