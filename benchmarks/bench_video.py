"""Flicker of video parsing with and without temporal smoothing, on a generated clip.

The clip: the example photos side by side, seen through a window two photos wide panning slowly from left to
right (``--seconds`` at ``--fps``, ``--width`` px wide; ``hparse.engine.video.write_pan_clip``). Each ``--smooth``
value parses every frame with ``parse_video`` (no overlay video, so the time is parsing and label PNGs) and
reports the flicker (share of pixels whose class changes between consecutive frames; on a pan some change is
real motion, so the floor is not 0), how many pixels differ from the unsmoothed labels (the lag smoothing
costs), and frames/s.

    python benchmarks/bench_video.py                       # 5 s, 25 fps, 640 px, smooth 0 / 0.3 / 0.5 / 0.7
    python benchmarks/bench_video.py --smooth 0,0.6 --json video.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import hparse
from hparse.engine.video import parse_video, write_pan_clip
from hparse.io.image import read_label

REPO = Path(__file__).resolve().parents[1]


def label_difference(dir_a: Path, dir_b: Path) -> float:
    """Mean share of pixels whose label differs between the same frames of two runs."""
    shares = [np.mean(read_label(a) != read_label(dir_b / a.name)) for a in sorted(dir_a.glob("*.png"))]
    return float(np.mean(shares))


def run(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    parser = hparse.load(args.model, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = write_pan_clip(sorted((REPO / "examples").glob("*.jpg")), tmp / "pan.mp4", seconds=args.seconds,
                              fps=args.fps, width=args.width)
        parse_video(parser, clip, tmp / "warmup", max_frames=2, overlay_video=False, progress=False)
        for smooth in args.smooth:
            out = tmp / f"smooth_{smooth}"
            rep = parse_video(parser, clip, out, smooth=smooth, overlay_video=False, progress=False)
            rows.append({"smooth": smooth, "frames": rep.frames, "size": rep.size, "flicker": rep.flicker,
                         "flicker_median": statistics.median(rep.flicker_per_frame),
                         "differs_from_unsmoothed": label_difference(out / "pan", tmp / f"smooth_{args.smooth[0]}"
                                                                     / "pan"),
                         "frames_per_s": rep.frames / rep.seconds})
    return rows


def table(rows: list[dict], args) -> str:
    h, w = rows[0]["size"]
    lines = [f"Clip: {args.seconds:g} s at {args.fps} fps, {w}x{h}, the examples panned; model {args.model}, "
             f"{args.threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}",
             "", "| smooth (EMA) | flicker, mean % | flicker, median % | differs from smooth "
             f"{args.smooth[0]:g} % | frames/s |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['smooth']:g} | {100 * r['flicker']:.2f} | {100 * r['flicker_median']:.2f} | "
                     f"{100 * r['differs_from_unsmoothed']:.2f} | {r['frames_per_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smooth", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.3, 0.5, 0.7],
                    help="comma-separated EMA factors; the first is the reference (0 = no smoothing)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    rows = run(args)
    print(table(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
