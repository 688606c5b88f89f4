"""CPU timings of the detection ops in ``hparse.ops`` on detector-sized inputs.

- ``multilevel_roi_align`` over P2-P5 (256 channels) of an 800x800 image, 512 RoIs of 16-600 px
  (sampling ratio 2, aligned): 7x7 (box head; forward, and forward + backward) and 32x32 (parsing head);
- ``nms`` on 1k / 5k boxes and ``batched_nms`` on 5k boxes in 20 classes (IoU 0.5);
- ``crop_and_resize_labels``: 64 RoIs from 64 800x800 uint8 label maps to 32x32 and 128x128;
- ``paste_roi_maps``: 64 RoI maps of 20 classes at 32x32 back to 800x800 labels (argmax).

    python benchmarks/bench_ops.py                 # median of 5 repeats, 1 thread
    python benchmarks/bench_ops.py --quick         # 1 repeat (after the warm-up)
    python benchmarks/bench_ops.py --threads 2 --json ops.json

Each case runs once to warm up, then ``--repeats`` timed runs; the Markdown table shows the median.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_parse import cpu_model  # the script's folder is on sys.path

IMAGE = 800
SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def random_boxes(n: int, lo: float, hi: float, seed: int):
    """``n`` boxes in an IMAGE x IMAGE image: centres uniform, sides log-uniform in [lo, hi], aspect 0.7-1.3."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * IMAGE
    side = torch.exp(torch.rand(n, 1, generator=g) * math.log(hi / lo)) * lo
    side = side * (0.7 + 0.6 * torch.rand(n, 2, generator=g))
    return torch.cat([centre - side / 2, centre + side / 2], 1)


def cases() -> list[tuple[str, str, int, Callable[[], object]]]:
    """``(op, workload, items, fn)``; inputs are built here, outside the timed calls."""
    import torch

    from hparse.ops import batched_nms, crop_and_resize_labels, multilevel_roi_align, nms, paste_roi_maps

    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 256, int(IMAGE * s), int(IMAGE * s), generator=g) for s in SCALES]
    rois = torch.cat([torch.zeros(512, 1), random_boxes(512, 16, 600, 1)], 1)
    feats_grad = [f.clone().requires_grad_() for f in feats]

    def align(size: int, features=feats):
        return lambda: multilevel_roi_align(features, rois, size, SCALES, sampling_ratio=2, aligned=True)

    def align_backward():
        multilevel_roi_align(feats_grad, rois, 7, SCALES, sampling_ratio=2, aligned=True).sum().backward()

    dets = {n: random_boxes(n, 20, 300, 2 + n) for n in (1000, 5000)}
    scores = {n: torch.rand(n, generator=g) for n in dets}
    classes = torch.randint(0, 20, (5000,), generator=g)
    labels = torch.randint(0, 20, (64, IMAGE, IMAGE), generator=g, dtype=torch.uint8)
    person_boxes = random_boxes(64, 32, 600, 3)
    roi_maps = torch.randn(64, 20, 32, 32, generator=g)
    return [
        ("multilevel_roi_align", "512 RoIs, P2-P5 x 256 ch, 7x7", 512, align(7)),
        ("multilevel_roi_align fwd+bwd", "512 RoIs, P2-P5 x 256 ch, 7x7", 512, align_backward),
        ("multilevel_roi_align", "512 RoIs, P2-P5 x 256 ch, 32x32", 512, align(32)),
        ("nms", "1000 boxes, IoU 0.5", 1000, lambda: nms(dets[1000], scores[1000], 0.5)),
        ("nms", "5000 boxes, IoU 0.5", 5000, lambda: nms(dets[5000], scores[5000], 0.5)),
        ("batched_nms", "5000 boxes, 20 classes, IoU 0.5", 5000,
         lambda: batched_nms(dets[5000], scores[5000], classes, 0.5)),
        ("crop_and_resize_labels", "64 RoIs from 800x800 maps -> 32x32", 64,
         lambda: crop_and_resize_labels(labels, person_boxes, 32)),
        ("crop_and_resize_labels", "64 RoIs from 800x800 maps -> 128x128", 64,
         lambda: crop_and_resize_labels(labels, person_boxes, 128)),
        ("paste_roi_maps argmax", "64 RoIs, 20 x 32x32 -> 800x800", 64,
         lambda: paste_roi_maps(roi_maps, person_boxes, (IMAGE, IMAGE), argmax=True)),
    ]


def run(repeats: int) -> list[dict]:
    results = []
    for op, workload, items, fn in cases():
        print(f"timing {op}: {workload} ...", file=sys.stderr)
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        ms = 1000.0 * statistics.median(times)
        results.append({"op": op, "workload": workload, "items": items, "seconds": times, "ms": ms,
                        "us_per_item": 1000.0 * ms / items})
    return results


def table(results: list[dict], cpu: str, threads: int, repeats: int, torch_version: str) -> str:
    rows = ["| op | workload | ms | µs / item |", "|---|---|---:|---:|"]
    for r in results:
        rows.append(f"| `{r['op']}` | {r['workload']} | {r['ms']:.{0 if r['ms'] >= 100 else 1}f} | "
                    f"{r['us_per_item']:.{0 if r['us_per_item'] >= 100 else 1}f} |")
    rows += ["", f"CPU: {cpu}; torch {torch_version}; {threads} thread(s); median of {repeats} repeat(s) "
                 "after a warm-up."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (median is reported)")
    ap.add_argument("--quick", action="store_true", help="one timed run per case (same as --repeats 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be at least 1")
    repeats = 1 if args.quick else args.repeats

    import torch

    torch.set_num_threads(args.threads)
    results = run(repeats)
    cpu = cpu_model()
    print(table(results, cpu, torch.get_num_threads(), repeats, torch.__version__))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "repeats": repeats,
                                         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
