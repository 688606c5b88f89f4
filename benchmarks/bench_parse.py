"""CPU parsing throughput, time split and peak memory of an hparse model, backends side by side.

Backends: ``torch``, ``onnxruntime`` and ``onnxruntime-int8``; modes: ``single`` (one scale) and ``tta`` (the
config's multi-scale + flip). Per image, what ``hparse parse`` does by default -- decode, parse, write the label
PNG and the overlay JPEG -- timed as decode / network (the runner's calls) / resize + upsample + argmax (the rest
of ``predict``) / write.

- Each row (backend, mode) runs in a fresh process, as it would be deployed (its peak RSS is its own): load, warm up on
  one image, one timed pass over all images (cycled to at least 16). ``--repeats`` rounds run every row in turn, so load
  from other jobs falls on all rows alike; images/s and the phases are medians over the rounds, the peak RSS the
  largest. Backends are not mixed in one process: PyTorch's OpenMP threads spin after each operation and would slow an
  ONNX Runtime call that follows.
- The network's multiply-adds (counted per call at the input size it got, TTA passes included) per second of
  network time are compared with the float32 matmul rate measured in the same process after its pass.
- int8 is the calibrated network shipped for the model's weights (``scripts/ship_int8.py``; the default model
  has one) or, without one, calibrated on the first half of the images (a preparation step, with the float32
  export, before any timing); its label agreement with float32 on all images is printed, and a calibrated one is
  dropped (not selected) below 99 %. Its rows then run the int8 network alone.
- Large photo (``--large``, default 8000x6000; a fresh process per float32 backend): an example photo scaled
  up, decoded, parsed and its label PNG written (no overlay: ``hparse.viz.overlay`` blends in float32, 1.8 GB
  more at 48 MP); its time split, peak RSS, and its label checked against the old way (full-size upsample of the
  scores, then argmax) on a 1/5 grid of its pixel centres.

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
MIN_TIMED_IMAGES = 16  # a round parses at least this many (the images cycled): passes over 4 varied by up to 2x


# -- worker pieces ------------------------------------------------------------------------------------------------
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


class Row:
    """One backend in a worker: its parser (runner timed) and its phase times."""

    def __init__(self, parser):
        self.parser = parser
        self.timed = parser.predictor.runner = TimedRunner(parser.predictor.runner)
        self.times = dict.fromkeys(PHASES, 0.0)

    def reset(self) -> None:
        self.timed.seconds, self.timed.shapes, self.times = 0.0, [], dict.fromkeys(PHASES, 0.0)


def load_parser(spec: dict, backend: str, images) -> tuple[object, float | None]:
    """``(parser, int8 label agreement with float32 or None)``: int8 is the network shipped for the model's weights
    (``scripts/ship_int8.py``) or, without one, calibrated on the first half of the images."""
    import hparse
    from hparse.engine import backends

    def load(name: str):
        parser = hparse.load(spec["model"], device="cpu", tta=spec["mode"] == "tta", backend=name,
                             batch_size=spec["batch_size"])
        parser.predictor.long_side = spec["long_side"]
        return parser

    if backend != "onnxruntime-int8":
        return load(backend), None
    parser = load("onnxruntime")
    if backends.shipped_int8(parser.model) is None:
        return parser, parser.use_int8(images[:max(1, len(images) // 2)], check=images, min_agreement=0.0)
    if not images:                  # a timed row: the shipped int8 network alone
        return load(backend), None
    int8 = load(backend)
    return int8, backends.label_agreement(int8.predict(images), parser.predict(images))


def image_files(folder: str) -> list[Path]:
    from hparse.engine.parse import collect_inputs

    return [p for p, _ in collect_inputs([folder])]


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


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# -- the kinds of worker ---------------------------------------------------------------------------------------
def prepare_worker(spec: dict) -> dict:
    """Export (and quantise) into the cache; -> the int8 label agreement with float32 (None for float32)."""
    from hparse.io.image import read_image

    images = [read_image(f) for f in image_files(spec["images"])]
    return {"int8_agreement": load_parser(spec, spec["backend"], images)[1]}


def row_worker(spec: dict) -> dict:
    """One backend, one mode: a timed pass over all images after a warm-up."""
    import torch

    torch.set_num_threads(spec["threads"])
    files = image_files(spec["images"])
    if spec["backend"] == "onnxruntime-int8":
        parser = int8_only_parser(spec)
    else:
        parser, _ = load_parser(spec, spec["backend"], [])
    row = Row(parser)
    timed = [files[i % len(files)] for i in range(max(len(files), MIN_TIMED_IMAGES))]
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        parse_one(parser, files[0], Path(tmp), row.times)  # warm-up
        row.reset()
        t0 = time.perf_counter()
        for f in timed:
            parse_one(parser, f, Path(tmp), row.times)
        seconds = time.perf_counter() - t0
    macs = network_macs(parser.model, row.timed.shapes)
    return {"backend": spec["backend"], "mode": spec["mode"], "images": len(timed), "seconds": seconds,
            "phases_ms": {k: 1000 * v / len(timed) for k, v in row.times.items()}, "peak_rss_mib": peak_rss_mib(),
            "macs_per_s": macs / max(row.timed.seconds, 1e-9), "matmul_gflops": matmul_gflops(spec["threads"]),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "scales": list(parser.predictor.scales),
            "params": sum(p.numel() for p in parser.model.parameters())}


def int8_only_parser(spec: dict):
    """A parser running the int8 network alone: the shipped one, or the one the preparation calibrated and
    checked (cached)."""
    from hparse.engine.backends import int8_runner, shipped_int8
    from hparse.io.image import read_image

    parser, _ = load_parser(spec, "torch", [])
    if shipped_int8(parser.model) is not None:
        return load_parser(spec, "onnxruntime-int8", [])[0]
    images = [read_image(f) for f in image_files(spec["images"])]
    calibration = images[:max(1, len(images) // 2)]
    parser.predictor.runner = int8_runner(parser.model, parser.config.get("model"), parser.predictor.resizer,
                                          calibration)
    return parser


def large_worker(spec: dict) -> dict:
    """One backend on the large photo: time split, peak RSS, label against the old way."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    path = image_files(spec["images"])[0]
    parser, _ = load_parser(spec, spec["backend"], [])
    row = Row(parser)
    parser.predict(np.zeros((64, 64, 3), np.uint8))  # warm-up
    row.reset()
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        t0 = time.perf_counter()
        parse_one(parser, path, Path(tmp), row.times, with_overlay=False)
        seconds = time.perf_counter() - t0
        rss = peak_rss_mib()
        check = large_photo_check(parser, path, Path(tmp) / f"{path.stem}.png")
    return {"backend": spec["backend"], "seconds": seconds, "peak_rss_mib": rss, "check": check,
            "phases_ms": {k: 1000 * v for k, v in row.times.items()}}


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


def large_photo_check(parser, path: Path, label_png: Path) -> dict:
    from hparse.io.image import read_image, read_label

    label = read_label(label_png)   # what the timed pass wrote
    old, size = old_way_check(parser, read_image(path))
    c = CHECK_STRIDE // 2
    ours = label[c::CHECK_STRIDE, c::CHECK_STRIDE][:size[0], :size[1]]
    return {"size": list(label.shape), "check_size": list(size), "agreement": float((ours == old).mean())}


WORKERS = {"prepare": prepare_worker, "row": row_worker, "large": large_worker}


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

    folder.mkdir(parents=True, exist_ok=True)
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


def run_worker_process(kind: str, spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="hparse-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({"kind": kind, **spec}),
               "--json", str(result)]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not result.is_file():
            sys.exit(f"error: the {kind} benchmark process failed (exit {proc.returncode}): {spec}")
        return json.loads(result.read_text())


def measure(args, images: Path, large: Path | None, min_agreement: float) -> dict:
    base = {"model": args.model_path, "long_side": args.long_side, "threads": args.threads,
            "batch_size": args.batch_size, "images": str(images.resolve())}
    specs = [{**base, "backend": b, "mode": m} for m in args.modes for b in args.backends]
    refused = {}
    for spec in [sp for sp in specs if sp["backend"] != "torch"]:
        print(f"preparing {spec['backend']} {spec['mode']} ...", file=sys.stderr)
        agreement = run_worker_process("prepare", spec)["int8_agreement"]
        if agreement is not None and agreement < min_agreement:
            refused[(spec["backend"], spec["mode"])] = agreement
        spec["int8_agreement"] = agreement
    specs = [sp for sp in specs if (sp["backend"], sp["mode"]) not in refused]
    runs: list[list[dict]] = [[] for _ in specs]
    for round_ in range(args.repeats):
        for spec, done in zip(specs, runs):
            print(f"round {round_ + 1}/{args.repeats}: {spec['backend']} {spec['mode']} ...", file=sys.stderr)
            done.append(run_worker_process("row", spec))
    rows = [summarise(done, spec.get("int8_agreement")) for spec, done in zip(specs, runs)]
    larges = []
    for backend in [b for b in args.backends if b != "onnxruntime-int8"] if large else []:
        print(f"large photo, {backend} ...", file=sys.stderr)
        larges.append(run_worker_process("large", {**base, "mode": "single", "backend": backend,
                                                   "images": str(large)}))
    return {"rows": rows, "large": larges, "refused": refused}


def summarise(runs: list[dict], agreement: float | None) -> dict:
    """Medians over the rounds of one row; the peak RSS is the largest."""
    r = dict(runs[-1], int8_agreement=agreement, rounds=len(runs))
    r["images_per_s"] = statistics.median(x["images"] / x["seconds"] for x in runs)
    r["images_per_s_rounds"] = [x["images"] / x["seconds"] for x in runs]
    r["phases_ms"] = {k: statistics.median(x["phases_ms"][k] for x in runs) for k in PHASES}
    r["macs_per_s"] = statistics.median(x["macs_per_s"] for x in runs)
    r["matmul_share"] = statistics.median(2 * x["macs_per_s"] / (x["matmul_gflops"] * 1e9) for x in runs)
    r["matmul_gflops"] = statistics.median(x["matmul_gflops"] for x in runs)
    r["peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
    return r


def mode_name(r: dict) -> str:
    return f"tta ({'/'.join(map(str, r['scales']))} + flip)" if r["mode"] == "tta" else "single"


def table(results: dict, large_name: str) -> str:
    out = ["| backend | mode | images/s | ms/image | decode | network | resize + upsample + argmax | write | "
           "peak RSS (MiB) | network GMAC/s (% of the matmul rate) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        phases = " | ".join(f"{r['phases_ms'][k]:.0f}" for k in PHASES)
        out.append(f"| {r['backend']} | {mode_name(r)} | {r['images_per_s']:.2f} | {1000 / r['images_per_s']:.0f} | "
                   f"{phases} | {r['peak_rss_mib']:.0f} | {r['macs_per_s'] / 1e9:.1f} "
                   f"({100 * r['matmul_share']:.0f} %) |")
    for r in results["large"]:
        phases = " | ".join(f"{r['phases_ms'][k]:.0f}" for k in PHASES)
        out.append(f"| {r['backend']} | {large_name} photo (label PNG, no overlay) | {1 / r['seconds']:.2f} | "
                   f"{1000 * r['seconds']:.0f} | {phases} | {r['peak_rss_mib']:.0f} | |")
    return "\n".join(out)


def notes(results: dict, cpu: str, model: str) -> list[str]:
    rows = results["rows"]
    lines = []
    if rows:
        r0 = rows[0]
        lines.append(f"CPU: {cpu}; {r0['threads']} threads; torch {r0['torch']}; model {model} "
                     f"({r0['params'] / 1e6:.2f} M parameters); {r0['images']} images; median of {r0['rounds']} "
                     f"round(s); float32 matmul {statistics.median(r['matmul_gflops'] for r in rows):.0f} GFLOP/s "
                     "(1024^3, best of 10, in each row's process).")
    by = {(r["backend"], r["mode"]): r for r in rows}
    for (backend, mode), r in by.items():
        if backend != "torch" and (base := by.get(("torch", mode))):
            lines.append(f"{backend} / torch, {mode}: {r['images_per_s'] / base['images_per_s']:.2f}x images/s "
                         f"(rounds {_rounds(r)} vs {_rounds(base)}), "
                         f"{base['phases_ms']['network'] / r['phases_ms']['network']:.2f}x network time.")
        if r["int8_agreement"] is not None:
            lines.append(f"int8, {mode}: labels equal float32 on {100 * r['int8_agreement']:.2f} % of the pixels "
                         "(all images; the shipped calibrated network, or one calibrated on the first half).")
    for r in results["large"]:
        c = r["check"]
        verdict = "under" if r["peak_rss_mib"] < RSS_LIMIT_MIB else "OVER"
        lines.append(f"{r['backend']} {c['size'][0]}x{c['size'][1]} photo: peak RSS {r['peak_rss_mib']:.0f} MiB "
                     f"({verdict} {RSS_LIMIT_MIB}); label equal to the old way on {100 * c['agreement']:.3f} % of "
                     f"a {c['check_size'][0]}x{c['check_size'][1]} grid of its pixels.")
    for (backend, mode), agreement in results["refused"].items():
        lines.append(f"{backend}, {mode}: not selected, its labels equal float32 on only {100 * agreement:.2f} % of "
                     "the pixels (< 99 %).")
    return lines


def _rounds(r: dict) -> str:
    return "/".join(f"{v:.2f}" for v in r["images_per_s_rounds"])


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
    ap.add_argument("--repeats", type=int, default=3, help="passes over all images (medians are reported)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and onnxruntime)")
    ap.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    ap.add_argument("--modes", default="single,tta", help="comma-separated: single, tta")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: " + ", ".join(BACKENDS))
    ap.add_argument("--large", default="8000x6000", help="HxW of the large synthetic photo ('none': no such row)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        return args
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
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
    if args.worker is not None:  # internal: one measurement in this (fresh) process
        spec = json.loads(args.worker)
        args.json.write_text(json.dumps(WORKERS[spec["kind"]](spec)))
        return
    from hparse.engine.backends import MIN_INT8_AGREEMENT

    args.model_path = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="hparse-bench-images-") as gen:
        images = image_folder(args, Path(gen) / "images")
        large = make_large_photo(images, Path(gen) / "large", args.large) if args.large else None
        results = measure(args, images, large, MIN_INT8_AGREEMENT)
    cpu = cpu_model()
    print(table(results, "x".join(map(str, args.large)) if args.large else ""))
    print()
    print("\n".join(notes(results, cpu, args.model)))
    if args.json:
        results["refused"] = [{"backend": b, "mode": m, "agreement": a} for (b, m), a in results["refused"].items()]
        args.json.write_text(json.dumps({"cpu": cpu, "model": args.model, "python": platform.python_version(),
                                         **results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
