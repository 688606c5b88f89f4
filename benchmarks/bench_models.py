"""Model cost table: parameters, multiply-adds and CPU latency of packaged (or any) model configs.

For each config: build its model for the config's label set, count parameters and MACs at the config's
``data.input_size`` (``hparse.models.complexity.count_macs``, which includes the attention matmuls; the
"attention" column is that matmul share), then time ``--runs`` forward passes (batch 1, eval mode,
``torch.inference_mode``, ``--threads`` CPU threads) after ``--warmup`` untimed ones; latency is the median.

    python benchmarks/bench_models.py                                  # every acenet_* config
    python benchmarks/bench_models.py acenet_r101_lip --runs 3
    python benchmarks/bench_models.py ce2p_light_ccp acenet_light_ccp --size 512x352 --json costs.json

Prints a Markdown table. Run it on an idle machine: other load (a training job) inflates the latencies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench_parse import cpu_model  # the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def describe(model_cfg: dict) -> str:
    """Short summary of the switches of an ACENet config (other models: their type)."""
    if model_cfg.get("type") != "acenet":
        return model_cfg.get("type", "?")
    local, glob = model_cfg.get("local", "lcm"), model_cfg.get("global_module", "gem")
    parts = []
    if local == "lcm":
        parts.append(f"LCM({'GC' if model_cfg.get('lcm_gc', True) else '1x1'}, N={model_cfg.get('lcm_n', 64)})")
    elif local != "none":
        parts.append(local)
    if glob == "gem":
        parts.append(f"GEM(D={model_cfg.get('gem_d', 64)})")
    elif glob != "none":
        parts.append(glob)
    return " + ".join(parts) or "basic"


def bench(name: str, size: tuple[int, int] | None, threads: int, runs: int, warmup: int) -> dict:
    import torch

    from hparse import config as C
    from hparse.labels import meta_of_data
    from hparse.models import build_model
    from hparse.models.complexity import count_macs, count_training_params

    torch.set_num_threads(threads)
    cfg = C.load_config(name)
    meta = meta_of_data(cfg["data"])
    torch.manual_seed(0)
    model = build_model(cfg["model"], meta).eval()
    h, w = size or tuple(cfg["data"]["input_size"])
    macs = count_macs(model, (1, 3, h, w))
    conv_macs = count_macs(model, (1, 3, h, w), include_matmul=False)
    x = torch.randn(1, 3, h, w)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model({"image": x})
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    bb = cfg["model"].get("backbone", {})
    return {"config": name, "model": describe(cfg["model"]), "backbone": bb.get("name", "-"),
            "width": bb.get("width", 1.0), "classes": meta.num_classes, "input": [h, w],
            "params": count_training_params(model), "macs": macs, "attention_macs": macs - conv_macs,
            "latency_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "runs": runs,
            "threads": torch.get_num_threads()}


def table(rows: list[dict]) -> str:
    out = ["| config | model | backbone | input | params | GMACs | of which attention | CPU ms (median) | min |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        bb = r["backbone"] + (f" x{r['width']:g}" if r["width"] != 1.0 else "")
        out.append(f"| {r['config']} | {r['model']} | {bb} | {r['input'][0]}x{r['input'][1]} | "
                   f"{r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.2f} | {r['attention_macs'] / 1e9:.2f} | "
                   f"{r['latency_ms']:.0f} | {r['min_ms']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="config names or files (default: every packaged acenet_* config)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", default=None, help="HxW input instead of each config's data.input_size")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)

    from hparse import config as C

    names = args.configs or [n for n in C.list_configs() if n.startswith("acenet")]
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    rows = []
    for n in names:
        rows.append(bench(n, size, args.threads, args.runs, args.warmup))
        print(f"{n}: {rows[-1]['latency_ms']:.0f} ms", file=sys.stderr, flush=True)
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {args.threads} threads, batch 1, eval, "
          f"median of {args.runs} runs after {args.warmup} warm-up; load average at the end {load:.1f}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
