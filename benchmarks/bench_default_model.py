"""How a parser holds up on real photos (the default model's targets): CCP val mIoU at several network long sides
(scale robustness: every one within 2 points of the best), and person-vs-background IoU on the five CIHP sample
photos with the settings ``hparse parse`` uses (group photos unlike anything in CCP; the target is >= 0.7).

    python benchmarks/bench_default_model.py                         # the shipped default model
    python benchmarks/bench_default_model.py --model runs/robust/last.pt --json robust.json

Speed is measured by ``benchmarks/bench_parse.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def ccp_miou(parser, config: str, root: Path, long_sides: list[int]) -> dict[int, float]:
    """CCP val mIoU (single scale) with the network input's long side at each of ``long_sides``."""
    from hparse import config as C
    from hparse.data.readers import build_reader
    from hparse.engine.evaluate import evaluate_model, evaluators_for

    cfg = C.load_config(config)
    reader = build_reader("ccp", str(root), "val", label_set=parser.meta.name)
    evaluators = evaluators_for(cfg["eval"], reader.meta)
    out = {}
    for side in long_sides:
        test_time = {k: parser.config["eval"].get(k) for k in ("person_prior",)}   # the parser's own, as parse uses
        pred = parser.predictor_for({**cfg["eval"], **test_time, "long_side": side})
        results = evaluate_model(pred.outputs, reader, evaluators, progress=False)
        out[side] = 100 * float(results["semantic"].summary()["miou"])
        print(f"CCP val, long side {side}: mIoU {out[side]:.2f}", file=sys.stderr)
    return out


def person_iou(parser, root: Path) -> dict[str, float]:
    """Per CIHP sample photo: IoU of the pixels labelled as any part (person) with CIHP's own person pixels."""
    from hparse.io.image import read_image, read_label
    from hparse.metrics.semantic import person_iou as iou

    out = {}
    for path in sorted((root / "Images").glob("*.jpg")):
        out[path.stem] = iou(parser.predict(read_image(path)), read_label(root / "Category_ids" / f"{path.stem}.png"))
        print(f"CIHP {path.stem}: person IoU {out[path.stem]:.3f}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="default", help="shipped model name or checkpoint")
    ap.add_argument("--config", default="ce2p_light_ccp", help="config whose eval settings score CCP val")
    ap.add_argument("--ccp", type=Path, default=SHARED / "ccp", help="CCP root")
    ap.add_argument("--cihp", type=Path, default=SHARED / "cihp-samples", help="the CIHP sample photos")
    ap.add_argument("--long-sides", default="384,512,640", help="comma-separated network long sides")
    ap.add_argument("--backend", default=None, help="torch, onnxruntime, onnxruntime-int8 (default: fastest)")
    ap.add_argument("--people", default=None, help="also the CIHP person IoU with this instance model parsing small "
                                                   "people again (hparse parse --people)")
    ap.add_argument("--person-prior", default=None, choices=("selfie", "none"),
                    help="the person prior (default: the model's own setting; the default model's is selfie)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    import hparse

    for name, root in (("CCP", args.ccp), ("CIHP samples", args.cihp)):
        if not root.is_dir():
            sys.exit(f"error: {name} not found at {root}")
    parser = hparse.load(args.model, backend=args.backend, person_prior=args.person_prior)
    sides = [int(s) for s in args.long_sides.split(",")]
    miou = ccp_miou(parser, args.config, args.ccp, sides)
    people = person_iou(parser, args.cihp)
    assisted = person_iou(hparse.load(args.model, backend=args.backend, people=args.people,
                                      person_prior=args.person_prior), args.cihp) \
        if args.people else None
    best = max(miou.values())
    prior = parser.config["eval"].get("person_prior") or "none"
    print(f"\nmodel {args.model} (backend {parser.backend}, its long side {parser.predictor.long_side}, person prior "
          f"{prior})\n")
    print("| CCP val mIoU at long side | " + " | ".join(str(s) for s in sides) + " | worst gap to the best |")
    print("|---|" + "---:|" * (len(sides) + 1))
    print("| | " + " | ".join(f"{v:.2f}" for v in miou.values()) + f" | {best - min(miou.values()):.2f} |\n")
    print("| CIHP sample | " + " | ".join(people) + " | mean |")
    print("|---|" + "---:|" * (len(people) + 1))
    for name, iou in (("person IoU", people), (f"with --people {args.people}", assisted)):
        if iou is not None:
            cells = [f"{v:.3f}" for v in iou.values()] + [f"{np.mean(list(iou.values())):.3f}"]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "backend": parser.backend, "person_prior": prior,
                                         "ccp_val_miou": miou, "cihp_person_iou": people,
                                         "cihp_person_iou_people": assisted}, indent=1))


if __name__ == "__main__":
    main()
