"""Markdown table of light-ablation runs scored by ``hparse eval ... --json RUN/eval.json``.

    python scripts/ablation_table.py runs/mman_light_ccp_baseline runs/mman_light_ccp ...

One row per run folder, in the order given. Columns come from what the evaluation wrote beside
``eval.json``: mIoU, pixel acc, F1 always; low-resolution mIoU
(``--low-res``) and IPR in parts per million (``--ipr``); level 2 / 3 mIoU (``--levels``).
The row name is the config name saved in the run's ``config.yaml``.

F1 is HHP's (harmonic mean of the class-averaged precision and recall). Where a class is never
predicted HHP's precision is 0/0 and its F1 NaN; the table then takes that precision as 0 (the
``atr_quirk=False`` value, equal to HHP's whenever HHP's is defined) and marks the cell with ``*``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from hparse.metrics.semantic import f1_from_means


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def row(run: Path, stem: str = "eval") -> dict:
    scores = _read(run / f"{stem}.json")
    if scores is None:
        raise SystemExit(f"{run}: no {stem}.json (run hparse eval CONFIG {run}/last.pt --json {run}/{stem}.json)")
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    out = {"config": cfg.get("name", run.name), "mIoU": scores["miou"], "pixel acc": scores["pixel_acc"],
           "F1": scores["f1"] if scores["f1"] is not None and not math.isnan(scores["f1"]) else guarded_f1(scores)}
    if (low := _read(run / f"{stem}_lowres.json")) is not None:
        out["low-res mIoU (1/16)"] = low["miou"]
    if (ipr := _read(run / f"{stem}_ipr.json")) is not None:
        out["IPR (ppm)"] = ipr["pred"]["ipr"]
    for lvl in (2, 3):
        if (lv := _read(run / f"{stem}_level{lvl}.json")) is not None:
            out[f"level {lvl} mIoU"] = lv["miou"]
    return out


def guarded_f1(scores: dict) -> str | None:
    """HHP's F1 with 0/0 precision taken as 0, from the per-class scores; ``"x*"`` marks it as such."""
    per_class = list(scores.get("per_class", {}).values())
    if not per_class:
        return None
    mean = [sum(c[k] or 0.0 for c in per_class) / len(per_class) for k in ("precision", "recall")]
    return f"{100 * f1_from_means(*mean):.2f}*"


def _cell(col: str, value) -> str:
    if value is None:
        return "-"
    if col == "config":
        return f"`{value}`"
    if isinstance(value, str):          # preformatted (guarded F1)
        return value
    return f"{1e6 * value:.1f}" if col.startswith("IPR") else f"{100 * value:.2f}"


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_cell(c, r.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding eval.json")
    ap.add_argument("--stem", default="eval", help="name of the evaluation JSON (default eval)")
    args = ap.parse_args(argv)
    print(markdown([row(r, args.stem) for r in args.runs]))


if __name__ == "__main__":
    main()
