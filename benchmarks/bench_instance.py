"""Cost of the instance-level (top-down) parsers on the CPU: parameters, multiply-adds, latency.

Per config (or shipped model name), batch 1, eval mode, ``--threads`` CPU threads, medians of ``--runs`` after a
warm-up:

- **params**: every parameter of the model (the papers count them all);
- **detector**: the dense part (backbone, FPN, detection head: ``model.network``) at the input size -- its
  multiply-adds (``count_macs``) and its time on a zero image;
- **head per RoI**: the parsing and refinement heads on ``--rois`` boxes (spread over the image), multiply-adds
  per RoI (``model.roi_head_macs()``) and time / RoIs. The spec's point: an image's cost is
  detector + RoIs x head, and the RoIs per image (up to ``fcos.detections_test``) decide the total;
- **end to end** (a shipped model, with ``--images``): what ``hparse.load(name).predict`` takes per photo
  (resize, network, detections, heads, paste at the photo's size) and the people (RoIs) it returned.

    python benchmarks/bench_instance.py aiparsing_cpu_ccpmulti --images examples/
    python benchmarks/bench_instance.py aiparsing_r50_cihp --size 800x1216 --rois 50 --runs 2

Prints a Markdown table. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from bench_parse import cpu_model  # the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def median_ms(fn, runs: int, warmup: int = 1) -> float:
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def spread_boxes(n: int, h: int, w: int):
    """``n`` person-shaped boxes (1 : 2.5) tiled over an ``h`` x ``w`` image."""
    import torch

    g = torch.Generator().manual_seed(0)
    bw, bh = w / 5, min(h * 0.8, w / 5 * 2.5)
    x0 = torch.rand(n, generator=g) * (w - bw)
    y0 = torch.rand(n, generator=g) * (h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], 1)


def model_and_size(name: str, size: tuple[int, int] | None):
    """``(model, (h, w), shipped?)`` for a shipped model name or a config name."""
    import torch

    from hparse import config as C
    from hparse.engine.checkpoint import SHIPPED, model_from_checkpoint
    from hparse.labels import meta_of_data
    from hparse.models import build_model

    if name in SHIPPED:
        model, cfg, _ = model_from_checkpoint(name)
        shipped = True
    else:
        cfg = C.load_config(name)
        torch.manual_seed(0)
        model, shipped = build_model(cfg["model"], meta_of_data(cfg["data"])).eval(), False
    return model, size or tuple(cfg["data"]["input_size"]), shipped


def bench(name: str, size, rois: int, runs: int, images: list[Path]) -> dict:
    import torch

    from hparse.models.complexity import count_macs, count_params

    model, (h, w), shipped = model_and_size(name, size)
    x = torch.zeros(1, 3, h, w)
    boxes = spread_boxes(rois, h, w)
    with torch.inference_mode():
        features = model.network(x)["features"]
        row = {"name": name, "input": (h, w), "params": count_params(model),
               "detector_macs": count_macs(model, (1, 3, h, w)), "head_macs": model.roi_head_macs(), "rois": rois,
               "detector_ms": median_ms(lambda: model.network(x), runs),
               "head_ms": median_ms(lambda: model.parse_rois(features, [boxes]), runs) / rois}
    if shipped and images:
        import hparse
        from hparse.io.image import read_image

        parser = hparse.load(name, device="cpu")
        photos = [read_image(p) for p in images]
        people = [len(parser.predict(im)) for im in photos]
        row["e2e_ms"] = median_ms(lambda: [parser.predict(im) for im in photos], runs) / len(photos)
        row["people"] = statistics.mean(people)
        row["photo"] = "x".join(map(str, photos[0].shape[:2]))
    return row


def table(rows: list[dict]) -> str:
    out = ["| model | input | params | detector GMACs | head GMACs / RoI | detector ms | head ms / RoI "
           "| end to end ms / photo (photo size, people found) |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        e2e = f"{r['e2e_ms']:.0f} ({r['photo']}, {r['people']:.1f})" if "e2e_ms" in r else "-"
        out.append(f"| {r['name']} | {r['input'][0]}x{r['input'][1]} | {r['params'] / 1e6:.2f}M | "
                   f"{r['detector_macs'] / 1e9:.2f} | {r['head_macs'] / 1e9:.3f} | {r['detector_ms']:.0f} | "
                   f"{r['head_ms']:.1f} | {e2e} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="shipped model names or config names")
    ap.add_argument("--size", default=None, help="HxW input instead of each config's data.input_size")
    ap.add_argument("--rois", type=int, default=20, help="boxes the head is timed on")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=Path, default=None, help="photos for the end-to-end time (shipped models)")
    args = ap.parse_args(argv)

    import torch

    from hparse.io.image import is_image_file

    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    images = sorted(p for p in args.images.iterdir() if is_image_file(p.name)) if args.images else []
    rows = []
    for name in args.models:
        rows.append(bench(name, size, args.rois, args.runs, images))
        print(f"{name}: detector {rows[-1]['detector_ms']:.0f} ms", file=sys.stderr, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {args.threads} threads, batch 1, eval, median of "
          f"{args.runs} runs after a warm-up; load average at the end {load:.1f}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
