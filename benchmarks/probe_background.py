"""Probe: does a model miss people in real photos because of the background or because of the people?

Person IoU on the five CIHP sample photos as they are, with the whole photo blurred (Gaussian, sigma 1.5 px) or
grey, and
with the ground-truth background blurred (sigma 6 px) or greyed out -- the people untouched.

    python benchmarks/probe_background.py [--model default] [--backend torch] [--figure docs/img/cihp_person.png]

``--figure``: for one photo (``--photo``), the labels and the person errors with and without the person prior,
drawn without the photo's pixels (CIHP's photos are for non-commercial research only).

Measured 2026-12-03 (mean of 5): stage 1 of the default (ce2p_lite0_ccp; torch) 0.476 / 0.300 / 0.788 / 0.877; the
shipped default (ce2p_lite0_ccp_sharp; int8) 0.530 / 0.648 / 0.790 / 0.867: both find the people once the
background is quiet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def variants(image: np.ndarray, person: np.ndarray) -> dict[str, np.ndarray]:
    """The photo as it is and with the photo, or only its background, blurred or greyed out."""
    keep = person[..., None]
    return {"as is": image,
            "all blurred": cv2.GaussianBlur(image, (0, 0), 1.5),
            "all grey": np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2),
            "background blurred": np.where(keep, image, cv2.GaussianBlur(image, (0, 0), 6)),
            "background grey": np.where(keep, image, np.uint8(128))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="shipped model name or checkpoint")
    ap.add_argument("--backend", default=None, help="torch, onnxruntime, onnxruntime-int8 (default: fastest)")
    ap.add_argument("--figure", type=Path, default=None, help="write the labels / errors figure here")
    ap.add_argument("--photo", default="0005008", help="the photo --figure shows")
    ap.add_argument("--cihp", type=Path, default=SHARED / "cihp-samples", help="the CIHP sample photos")
    args = ap.parse_args(argv)
    if not (args.cihp / "Images").is_dir():
        raise SystemExit(f"{args.cihp}: the CIHP sample photos are not there")
    import hparse
    from hparse.io.image import read_image, read_label
    from hparse.metrics.semantic import person_iou

    parser = hparse.load(args.model, backend=args.backend)
    rows: dict[str, list[float]] = {}
    photos = sorted((args.cihp / "Images").glob("*.jpg"))
    for path in photos:
        truth = read_label(args.cihp / "Category_ids" / f"{path.stem}.png")
        person = (truth != 0) & (truth != 255)
        for name, image in variants(read_image(path), person).items():
            rows.setdefault(name, []).append(person_iou(parser.predict(image), truth))
    print(f"model {args.model} (backend {parser.backend}): CIHP person IoU\n")
    print("| photo | " + " | ".join(p.stem for p in photos) + " | mean |")
    print("|---|" + "---:|" * (len(photos) + 1))
    for name, ious in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in ious) + f" | {np.mean(ious):.3f} |")
    if args.figure:
        figure(args, args.cihp / "Images" / f"{args.photo}.jpg")


def figure(args, path: Path) -> None:
    """Labels and person errors (green: found, red: missed, blue: false) with the prior and without it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import hparse
    from hparse.io.image import read_image, read_label
    from hparse.metrics.semantic import person_iou
    from hparse.viz.overlay import colorize

    image, truth = read_image(path), read_label(args.cihp / "Category_ids" / f"{path.stem}.png")
    person = (truth != 0) & (truth != 255)
    panels = []
    for prior in ("selfie", "none"):
        parser = hparse.load(args.model, backend=args.backend, person_prior=prior)
        label = parser.predict(image)
        found = label != 0
        errors = np.full((*label.shape, 3), 255, np.uint8)
        errors[found & person], errors[~found & person], errors[found & ~person] = (40, 160, 60), (220, 40, 40), \
            (40, 80, 220)
        panels += [(colorize(label, parser.meta.palette()), f"labels, prior {prior}"),
                   (errors, f"person IoU {person_iou(label, truth):.3f}, prior {prior}")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"CIHP {path.stem}: green found, red missed, blue false person pixels", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.figure, dpi=80)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
