"""Probe: is a model's drop at large network inputs the people's scale or the whole-image context?

Scores CCP val at one long side twice: the whole image at once (what hparse does), and in overlapping windows of
the training crop (384x256, a third overlap, logits averaged), so the pyramid pooling sees what it saw in training.

    python benchmarks/probe_sliding_window.py --model robust --long-side 640

Measured 2026-12-03 (the robust model, then the default; torch): whole 38.93, windows 40.27 -- mostly the scale.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def starts(length: int, window: int, overlap: float = 1 / 3) -> list[int]:
    """Window offsets covering ``length`` with at least ``overlap`` of a window shared by neighbours."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / (window * (1 - overlap)))
    return [round(i * (length - window) / n) for i in range(n + 1)]


def windowed(runner, window: tuple[int, int]):
    """A runner that runs ``runner`` on windows of the padded input and averages their logits at input size."""
    def run(x: torch.Tensor):
        H, W = x.shape[-2:]
        wh, ww = min(window[0], H), min(window[1], W)
        total = count = None
        for y in starts(H, wh):
            for x0 in starts(W, ww):
                logits = runner(x[:, :, y:y + wh, x0:x0 + ww])[0].float()
                logits = F.interpolate(logits, size=(wh, ww), mode="bilinear", align_corners=False)
                if total is None:
                    total, count = logits.new_zeros(*logits.shape[:2], H, W), logits.new_zeros(1, 1, H, W)
                total[:, :, y:y + wh, x0:x0 + ww] += logits
                count[:, :, y:y + wh, x0:x0 + ww] += 1
        return total / count, {}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--config", default="ce2p_light_ccp")
    ap.add_argument("--ccp", type=Path, default=SHARED / "ccp")
    ap.add_argument("--long-side", type=int, default=640)
    args = ap.parse_args()

    from hparse import config as C
    from hparse.api import load
    from hparse.data.readers import build_reader
    from hparse.engine.evaluate import evaluate_model, evaluators_for

    cfg = C.load_config(args.config, [f"eval.long_side={args.long_side}"])
    parser = load(args.model, backend="torch")
    reader = build_reader("ccp", str(args.ccp), "val", label_set=parser.meta.name)
    evaluators = evaluators_for(cfg["eval"], reader.meta)
    for name in ("whole image", "windows"):
        pred = parser.predictor_for(cfg["eval"])
        if name == "windows":
            pred.runner = windowed(pred.runner, tuple(cfg["data"]["input_size"]))
        results = evaluate_model(pred.outputs, reader, evaluators, progress=False)
        print(f"long side {args.long_side}, {name}: mIoU {100 * float(results['semantic'].summary()['miou']):.2f}")


if __name__ == "__main__":
    main()
