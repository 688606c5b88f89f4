"""CPU parsing throughput, time split and peak memory of an hparse model, backends side by side.

Rows: every backend (``torch``, ``onnxruntime``, ``onnxruntime-int8``) in every mode (``single``: one scale;
``tta``: the config's multi-scale + flip), and a large synthetic photo (``--large``, default 8000x6000) per
float32 backend. Each measurement runs in a fresh subprocess (its peak RSS is its own): load the model, set the
thread count and the long side, warm up on one image, then one timed pass over all images doing what
``hparse parse`` does per image by default -- decode, parse, write the label PNG and the overlay JPEG -- with
the time split into decode / network (the runner's calls) / resize + upsample + argmax (the rest of
``predict``) / write. Rounds alternate the rows (``--repeats`` rounds; medians reported), so load from other
jobs falls on every backend alike.

The network's multiply-adds (counted per call at the input size it got, TTA passes included) per second of
network time are compared with this machine's float32 matmul rate, measured in the same run. The int8 row is
calibrated on the first half of the images; its label agreement with float32 on all images is printed, and
it is dropped (not selected) below 99 %. The large photo's label is checked against the old way (full-size
upsample of the scores, then argmax) on a 1/5 grid of the photo's pixel centres.

    python benchmarks/bench_parse.py --repeats 3            # shipped default model, examples/
    python benchmarks/bench_parse.py --model runs/lip/best.pt --backends torch,onnxruntime --json bench.json
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
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
PHASES = ("decode", "network", "upsample", "write")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # as hparse.io.image
GENERATED_SIZE = (550, 830)  # width, height of the generated stand-in images
CHECK_STRIDE = 5  # the large photo's label is checked at every 5th pixel centre (odd: centres coincide)
RSS_LIMIT_MIB = 1536


# -- worker (one row, one fresh process) --------------------------------------------------------------------------
class TimedRunner:
    """Wraps a runner: network seconds and the input shape of every call."""

    def __init__(self, runner):
        self.runner, self.name, self.seconds, self.shapes = runner, runner.name, 0.0, []

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.runner(x)
        self.seconds += time.perf_counter() - t0
        self.shapes.append(tuple(x.shape))
        return out


def load_parser(spec: dict):
    import hparse
    from hparse.engine.parse import collect_inputs
    from hparse.io.image import read_image

    backend = "onnxruntime" if spec["backend"] == "onnxruntime-int8" else spec["backend"]
    parser = hparse.load(spec["model"], device="cpu", tta=spec["mode"] == "tta", backend=backend,
                         batch_size=spec["batch_size"])
    parser.predictor.long_side = spec["long_side"]
    files = [p for p, _ in collect_inputs([spec["images"]])]
    agreement = None
    if spec["backend"] == "onnxruntime-int8":
        images = [read_image(f) for f in files]
        agreement = parser.use_int8(images[:max(1, len(images) // 2)], check=images, min_agreement=0.0)
    return parser, files, agreement


def parse_one(parser, path: Path, out_dir: Path, times: dict, with_overlay: bool = True) -> None:
    """Decode, parse and write one image as ``hparse parse`` does (label PNG, overlay JPEG unless not
    ``with_overlay``), adding each phase's seconds to ``times``."""
    from hparse.io.image import read_image, write_image, write_label_png
    from hparse.viz import overlay

    runner = parser.predictor.runner
    t0 = time.perf_counter()
    image = read_image(path)
    t1 = time.perf_counter()
    net0 = runner.seconds
    label = parser.predict(image)
    t2 = time.perf_counter()
    pal = parser.meta.palette()
    write_label_png(out_dir / f"{path.stem}.png", label, pal)
    if with_overlay:
        write_image(out_dir / f"{path.stem}_overlay.jpg", overlay(image, label, pal))
    t3 = time.perf_counter()
    network = runner.seconds - net0
    for phase, s in zip(PHASES, (t1 - t0, network, t2 - t1 - network, t3 - t2)):
        times[phase] += s


def network_macs(model, shapes: list[tuple]) -> int:
    from hparse.models.complexity import count_macs

    per_shape = {s: count_macs(model, s) for s in set(shapes)}
    return sum(per_shape[s] for s in shapes)


def old_way_check(parser, image, stride: int = CHECK_STRIDE):
    """Label of the old way (every score upsampled to the image, argmax) at the centres of ``stride`` x
    ``stride`` pixel blocks, by upsampling to the photo's size / ``stride`` (same sample positions)."""
    import torch
    import torch.nn.functional as F

    pred = parser.predictor
    size = (image.shape[0] // stride, image.shape[1] // stride)
    with torch.no_grad():
        x, ((h, w),) = pred.resizer.batch([image], 1.0)
        logits = F.interpolate(pred.runner(x)[0].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        small = F.interpolate(logits[:, :, :h, :w], size=size, mode="bilinear", align_corners=False)
    return small[0].argmax(0).numpy(), size


def run_worker(spec: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(spec["threads"])
    parser, files, agreement = load_parser(spec)
    if spec.get("prepare"):   # exports and quantisation land in the cache before anything is timed
        return {"int8_agreement": agreement}
    timed = parser.predictor.runner = TimedRunner(parser.predictor.runner)
    times = dict.fromkeys(PHASES, 0.0)
    with_overlay = spec["mode"] != "large"   # hparse.viz.overlay blends in float32: 1.8 GB more at 48 MP
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        parse_one(parser, files[0], Path(tmp), dict.fromkeys(PHASES, 0.0), with_overlay)  # warm-up
        timed.seconds, timed.shapes = 0.0, []
        t0 = time.perf_counter()
        for f in files:
            parse_one(parser, f, Path(tmp), times, with_overlay)
        total = time.perf_counter() - t0
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        check = large_photo_check(parser, files[0], tmp) if spec["mode"] == "large" else None
    macs = network_macs(parser.model, timed.shapes)
    gflops = matmul_gflops(spec["threads"])   # this process, right after the timed pass: the same conditions
    return {"backend": spec["backend"], "mode": spec["mode"], "images": len(files), "seconds": total,
            "matmul_gflops": gflops,
            "phases_ms": {k: 1000 * v / len(files) for k, v in times.items()},
            "network_macs": macs, "macs_per_s": macs / max(timed.seconds, 1e-9),
            "peak_rss_mib": peak_rss,
            "int8_agreement": agreement, "large_check": check, "threads": torch.get_num_threads(),
            "scales": list(parser.predictor.scales), "flip": bool(parser.predictor.flip), "torch": torch.__version__,
            "params": sum(p.numel() for p in parser.model.parameters())}


def large_photo_check(parser, path: Path, tmp: str) -> dict:
    from hparse.io.image import read_image, read_label

    label = read_label(Path(tmp) / f"{path.stem}.png")   # what the timed pass wrote
    old, size = old_way_check(parser, read_image(path))
    c = CHECK_STRIDE // 2
    ours = label[c::CHECK_STRIDE, c::CHECK_STRIDE][:size[0], :size[1]]
    return {"size": list(label.shape), "check_size": list(size), "agreement": float((ours == old).mean())}


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """float32 ``n x n`` matmul rate (GFLOP/s, 2 n^3 per product), best of ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- driver -------------------------------------------------------------------------------------------------------
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


def make_large_photo(images: Path, folder: Path, size: tuple[int, int]) -> Path:
    """A ``size`` (H, W) JPEG: the first image scaled up (a photo's content at a camera's pixel count)."""
    from PIL import Image

    first = sorted(f for f in images.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)[0]
    folder.mkdir(parents=True, exist_ok=True)
    Image.open(first).convert("RGB").resize((size[1], size[0]), Image.BICUBIC).save(folder / "large.jpg", quality=90)
    return folder


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_row(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--json", str(result)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not result.is_file():
            sys.exit(f"error: the {spec['backend']} {spec['mode']} benchmark process failed (exit {proc.returncode})")
        return json.loads(result.read_text())


def prepare(specs: list[dict], min_agreement: float) -> dict[tuple[str, str], float]:
    """Fill the network cache (export, int8 quantisation) once per row kind; -> the int8 rows refused, with
    their label agreement with float32."""
    refused = {}
    for spec in specs:
        if spec["mode"] == "large" or spec["backend"] == "torch":
            continue
        print(f"preparing {spec['backend']} {spec['mode']} ...", file=sys.stderr)
        agreement = run_row({**spec, "prepare": True})["int8_agreement"]
        if agreement is not None and agreement < min_agreement:
            refused[(spec["backend"], spec["mode"])] = agreement
    return refused


def summarise(runs: list[dict]) -> dict:
    """Medians over the rounds of one row; the peak RSS is the largest."""
    r = dict(runs[-1])
    r["images_per_s"] = statistics.median(x["images"] / x["seconds"] for x in runs)
    r["phases_ms"] = {k: statistics.median(x["phases_ms"][k] for x in runs) for k in PHASES}
    r["macs_per_s"] = statistics.median(x["macs_per_s"] for x in runs)
    r["matmul_share"] = statistics.median(2 * x["macs_per_s"] / (x["matmul_gflops"] * 1e9) for x in runs)
    r["matmul_gflops"] = statistics.median(x["matmul_gflops"] for x in runs)
    r["images_per_s_rounds"] = [x["images"] / x["seconds"] for x in runs]
    r["peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
    r["rounds"] = len(runs)
    return r


def mode_name(r: dict, large: str) -> str:
    if r["mode"] == "tta":
        return f"tta ({'/'.join(map(str, r['scales']))} + flip)"
    return f"{large} photo (label PNG, no overlay)" if r["mode"] == "large" else "single"


def table(rows: list[dict], large: str) -> str:
    out = ["| backend | mode | images/s | ms/image | decode | network | resize + upsample + argmax | write | "
           "peak RSS (MiB) | network GMAC/s (% of the matmul rate) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ph = r["phases_ms"]
        phases = " | ".join(f"{ph[k]:.0f}" for k in PHASES)
        out.append(f"| {r['backend']} | {mode_name(r, large)} | {r['images_per_s']:.2f} "
                   f"| {1000 / r['images_per_s']:.0f} | {phases} "
                   f"| {r['peak_rss_mib']:.0f} | {r['macs_per_s'] / 1e9:.1f} ({100 * r['matmul_share']:.0f} %) |")
    return "\n".join(out)


def notes(rows: list[dict], gflops: float, cpu: str, model: str, refused: dict) -> list[str]:
    r0 = rows[0]
    lines = [f"CPU: {cpu}; {r0['threads']} threads; torch {r0['torch']}; model {model} "
             f"({r0['params'] / 1e6:.2f} M parameters); float32 matmul {gflops:.0f} GFLOP/s at the start "
             f"(1024^3, best of 10; each row's share uses the rate measured in its own process right after its timed "
             f"pass, median {statistics.median(r['matmul_gflops'] for r in rows):.0f}); median of {r0['rounds']} "
             "round(s)."]
    by = {(r["backend"], r["mode"]): r for r in rows}
    for mode in MODES:
        if (a := by.get(("onnxruntime", mode))) and (b := by.get(("torch", mode))):
            lines.append(f"onnxruntime / torch, {mode}: {a['images_per_s'] / b['images_per_s']:.2f}x images/s, "
                         f"{b['phases_ms']['network'] / a['phases_ms']['network']:.2f}x network time.")
    for r in rows:
        if r["int8_agreement"] is not None:
            lines.append(f"int8, {r['mode']}: labels equal float32 on {100 * r['int8_agreement']:.2f} % of the pixels "
                         "(all images; calibrated on the first half).")
        if r["large_check"]:
            c = r["large_check"]
            verdict = "under" if r["peak_rss_mib"] < RSS_LIMIT_MIB else "OVER"
            lines.append(f"{r['backend']} {c['size'][0]}x{c['size'][1]} photo: peak RSS {r['peak_rss_mib']:.0f} MiB "
                         f"({verdict} {RSS_LIMIT_MIB}); label equal to the old way on {100 * c['agreement']:.3f} % of "
                         f"a {c['check_size'][0]}x{c['check_size'][1]} grid of its pixels.")
    for (backend, mode), agreement in refused.items():
        lines.append(f"{backend}, {mode}: not selected, its labels equal float32 on only {100 * agreement:.2f} % of "
                     "the pixels (< 99 %).")
    return lines


def parse_args(argv):
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
    ap.add_argument("--repeats", type=int, default=3, help="rounds over all rows (medians are reported)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and onnxruntime)")
    ap.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    ap.add_argument("--modes", default="single,tta", help="comma-separated: single, tta")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: " + ", ".join(BACKENDS))
    ap.add_argument("--large", default="8000x6000", help="HxW of the large synthetic photo ('none': no such row)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.worker is not None:
        return args
    if not args.modes or any(m not in MODES for m in args.modes):
        ap.error(f"--modes must be a comma-separated subset of {','.join(MODES)}")
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        ap.error(f"--backends must be a comma-separated subset of {','.join(BACKENDS)}")
    if args.images is not None and args.num_images is not None:
        ap.error("give --images or --num-images, not both")
    for name in ("long_side", "repeats", "threads", "batch_size", "num_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.large = None if args.large == "none" else tuple(int(v) for v in args.large.lower().split("x"))
        assert args.large is None or len(args.large) == 2
    except (ValueError, AssertionError):
        ap.error("--large must be HxW, e.g. 8000x6000, or none")
    return args


def image_folder(args, gen: Path) -> Path:
    if args.images is not None:
        if not args.images.is_dir() or count_images(args.images) == 0:
            sys.exit(f"error: --images {args.images} is not a folder with images")
        return args.images
    if args.num_images is None and count_images(REPO / "examples"):
        return REPO / "examples"
    n = args.num_images or 8
    generate_images(gen, n)
    print(f"generated {n} random {GENERATED_SIZE[0]}x{GENERATED_SIZE[1]} images", file=sys.stderr)
    return gen


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:  # internal: one row in this (fresh) process
        args.json.write_text(json.dumps(run_worker(json.loads(args.worker))))
        return
    from hparse.engine.backends import MIN_INT8_AGREEMENT

    model = resolve_model(args.model)
    gflops = matmul_gflops(args.threads)
    with tempfile.TemporaryDirectory(prefix="hparse-bench-images-") as gen:
        images = image_folder(args, Path(gen) / "images")
        base = {"model": model, "long_side": args.long_side, "threads": args.threads, "batch_size": args.batch_size}
        specs = [{**base, "backend": b, "mode": m, "images": str(images.resolve())}
                 for m in args.modes for b in args.backends]
        if args.large:
            large = make_large_photo(images, Path(gen) / "large", args.large)
            specs += [{**base, "backend": b, "mode": "large", "images": str(large)}
                      for b in args.backends if b != "onnxruntime-int8"]
        refused = prepare(specs, MIN_INT8_AGREEMENT)
        specs = [sp for sp in specs if (sp["backend"], sp["mode"]) not in refused]
        runs: dict[int, list[dict]] = {i: [] for i in range(len(specs))}
        for round_ in range(args.repeats):
            for i, spec in enumerate(specs):
                print(f"round {round_ + 1}/{args.repeats}: {spec['backend']} {spec['mode']} ...", file=sys.stderr)
                runs[i].append(run_row(spec))
    rows = [summarise(r) for r in runs.values() if r]
    cpu = cpu_model()
    large_name = "x".join(map(str, args.large)) if args.large else ""
    print(table(rows, large_name))
    print()
    print("\n".join(notes(rows, gflops, cpu, args.model, refused)))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "model": args.model, "python": platform.python_version(),
                                         "matmul_gflops": gflops, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
