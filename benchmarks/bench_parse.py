"""CPU parsing throughput and peak memory of an hparse model, the way ``hparse parse`` runs it.

Each mode (``single``: one scale; ``tta``: the config's multi-scale + flip) runs in a fresh
subprocess, so its peak RSS is its own. In each: load the model on the CPU, set the torch
thread count, resize to ``--long-side``, warm up on one image, then time whole
``parse_files`` calls (read, infer, write label PNG + overlay, overwrite on) over all images.

    python benchmarks/bench_parse.py                       # shipped default model, examples/
    python benchmarks/bench_parse.py --model runs/lip/best.pt --repeats 5 --json bench.json

Prints a Markdown table (images/s is the median over the repeats) ready for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("single", "tta")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # as hparse.io.image
GENERATED_SIZE = (550, 830)  # width, height of the generated stand-in images


# -- worker (one mode, one fresh process) -------------------------------------------------------
def run_worker(spec: dict) -> dict:
    import resource

    import torch

    import hparse
    from hparse.engine.parse import collect_inputs, parse_files

    torch.set_num_threads(spec["threads"])
    parser = hparse.load(spec["model"], device="cpu", tta=spec["mode"] == "tta")
    parser.predictor.long_side = spec["long_side"]
    inputs = [spec["images"]]
    files = [str(p) for p, _ in collect_inputs(inputs)]
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        warm = parse_files(parser, files[:1], Path(tmp) / "warmup", batch_size=1, overwrite=True, progress=False)
        if warm.failed:
            raise RuntimeError(f"warm-up failed: {warm.failed}")
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            rep = parse_files(parser, inputs, Path(tmp) / "out", batch_size=spec["batch_size"], overwrite=True,
                              progress=False)
            times.append(time.perf_counter() - t0)
            if rep.failed or len(rep.written) != len(files):
                raise RuntimeError(f"parse_files wrote {len(rep.written)}/{len(files)} images: {rep.failed}")
    ips = statistics.median(len(files) / t for t in times)
    return {"mode": spec["mode"], "long_side": spec["long_side"], "threads": torch.get_num_threads(),
            "batch_size": spec["batch_size"], "images": len(files), "repeats": spec["repeats"],
            "seconds": times, "images_per_s": ips, "ms_per_image": 1000.0 / ips,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # KiB on Linux
            "params": sum(p.numel() for p in parser.model.parameters()),
            "scales": list(parser.predictor.scales), "flip": bool(parser.predictor.flip),
            "torch": torch.__version__}


# -- driver --------------------------------------------------------------------------------------
def resolve_model(model: str) -> str:
    if Path(model).is_file():
        return str(Path(model).resolve())
    if model == "default":
        import hparse  # light: the package root does not import torch

        weights = Path(hparse.__file__).resolve().parent / "weights" / "default.pt"
        if weights.is_file():
            return model
        sys.exit(f"error: the shipped 'default' model is not installed ({weights} is missing).\n"
                 "Benchmark a trained checkpoint instead: --model PATH (e.g. runs/NAME/best.pt or last.pt).")
    sys.exit(f"error: --model {model!r} is neither 'default' nor an existing checkpoint file")


def count_images(folder: Path) -> int:
    return sum(1 for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def generate_images(folder: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = GENERATED_SIZE
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_mode(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--json", str(result)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not result.is_file():
            sys.exit(f"error: the {spec['mode']!r} benchmark process failed (exit code {proc.returncode})")
        return json.loads(result.read_text())


def table(results: list[dict], cpu: str, model: str) -> str:
    rows = ["| mode | long side | threads | images | images/s | ms/image | peak RSS (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        mode = r["mode"] if r["mode"] == "single" else f"tta ({'/'.join(map(str, r['scales']))} + flip)"
        rows.append(f"| {mode} | {r['long_side']} | {r['threads']} | {r['images']} | {r['images_per_s']:.2f} | "
                    f"{r['ms_per_image']:.{0 if r['ms_per_image'] >= 100 else 1}f} | {r['peak_rss_mib']:.0f} |")
    r0 = results[0]
    rows += ["", f"CPU: {cpu}; torch {r0['torch']}; model {model} ({r0['params'] / 1e6:.2f} M parameters); "
                 f"batch size {r0['batch_size']}; median of {r0['repeats']} repeat(s)."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' (shipped weights) or a checkpoint path")
    ap.add_argument("--images", type=Path, default=None,
                    help="folder of images (default: examples/ in the repo, else generated random "
                         f"{GENERATED_SIZE[0]}x{GENERATED_SIZE[1]} images)")
    ap.add_argument("--num-images", type=int, default=None,
                    help="generate this many random images instead of using examples/ (default: 8, and only "
                         "when examples/ has no images)")
    ap.add_argument("--long-side", type=int, default=512, help="resize so the long side is this many pixels")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over all images (median is reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    ap.add_argument("--modes", default="single,tta", help="comma-separated: single, tta")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:  # internal: one mode in this (fresh) process
        res = run_worker(json.loads(args.worker))
        args.json.write_text(json.dumps(res))
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes must be a comma-separated subset of {','.join(MODES)}")
    if args.images is not None and args.num_images is not None:
        ap.error("give --images or --num-images, not both")
    for name in ("long_side", "repeats", "threads", "batch_size", "num_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    model = resolve_model(args.model)

    with tempfile.TemporaryDirectory(prefix="hparse-bench-images-") as gen:
        images = args.images
        if images is None:
            images = REPO / "examples"
            if args.num_images is not None or not images.is_dir() or count_images(images) == 0:
                n = args.num_images or 8
                images = Path(gen)
                generate_images(images, n)
                print(f"generated {n} random {GENERATED_SIZE[0]}x{GENERATED_SIZE[1]} images", file=sys.stderr)
        elif not images.is_dir() or count_images(images) == 0:
            sys.exit(f"error: --images {images} is not a folder with images")
        results = []
        for mode in modes:
            print(f"benchmarking {mode} ...", file=sys.stderr)
            results.append(run_mode({"mode": mode, "model": model, "images": str(images.resolve()),
                                     "long_side": args.long_side, "threads": args.threads,
                                     "batch_size": args.batch_size, "repeats": args.repeats}))

    cpu = cpu_model()
    print(table(results, cpu, args.model))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "model": args.model, "python": platform.python_version(),
                                         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
