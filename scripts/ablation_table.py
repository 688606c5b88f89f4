"""Markdown table of light-ablation runs scored by ``hparse eval ... --json RUN/eval.json``.

    python scripts/ablation_table.py runs/mman_light_ccp_baseline runs/mman_light_ccp ...

One row per config, in the order first given; runs of the same config (the name saved in each run's
``config.yaml``: e.g. the same row trained with ``train.seed=0`` and ``train.seed=1``) are pooled into one row
showing ``mean ± half the range`` and their number (``runs``), and the table is followed by the rows whose
mIoU differs from the first row's (the control) by more than the two rows' spreads together. Columns come from
what the evaluation wrote beside ``eval.json``: mIoU, pixel acc, F1 always; low-resolution mIoU
(``--low-res``) and IPR in parts per million (``--ipr``); level 2 / 3 mIoU (``--levels``).

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
    """One run's figures (fractions); ``"_guarded"`` names the columns computed with HHP's 0/0 taken as 0."""
    scores = _read(run / f"{stem}.json")
    if scores is None:
        raise SystemExit(f"{run}: no {stem}.json (run hparse eval CONFIG {run}/last.pt --json {run}/{stem}.json)")
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    out = {"config": cfg.get("name", run.name), "mIoU": scores["miou"], "pixel acc": scores["pixel_acc"],
           "F1": scores["f1"], "_guarded": set()}
    if out["F1"] is None or math.isnan(out["F1"]):
        out["F1"] = guarded_f1(scores)
        if out["F1"] is not None:
            out["_guarded"].add("F1")
    if (low := _read(run / f"{stem}_lowres.json")) is not None:
        out["low-res mIoU (1/16)"] = low["miou"]
    if (ipr := _read(run / f"{stem}_ipr.json")) is not None:
        out["IPR (ppm)"] = ipr["pred"]["ipr"]
    for lvl in (2, 3):
        if (lv := _read(run / f"{stem}_level{lvl}.json")) is not None:
            out[f"level {lvl} mIoU"] = lv["miou"]
    return out


def guarded_f1(scores: dict) -> float | None:
    """HHP's F1 with 0/0 precision taken as 0, from the per-class scores."""
    per_class = list(scores.get("per_class", {}).values())
    if not per_class:
        return None
    mean = [sum(c[k] or 0.0 for c in per_class) / len(per_class) for k in ("precision", "recall")]
    return f1_from_means(*mean)


def pooled(runs: list[dict]) -> list[dict]:
    """Runs grouped by config (first-seen order): per column the list of values, ``runs`` their number."""
    groups: dict[str, dict] = {}
    for r in runs:
        g = groups.setdefault(r["config"], {"config": r["config"], "runs": 0, "_guarded": set()})
        g["runs"] += 1
        g["_guarded"] |= r["_guarded"]
        for k, v in r.items():
            if k not in ("config", "_guarded"):
                g.setdefault(k, []).extend([] if v is None else [v])
    return list(groups.values())


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def _cell(col: str, value, guarded: bool = False) -> str:
    if value is None or value == []:
        return "-"
    if col == "config":
        return f"`{value}`"
    if col == "runs":
        return str(value)
    unit = 1e6 if col.startswith("IPR") else 100
    digits = 1 if col.startswith("IPR") else 2
    mean, half = spread(value)
    text = f"{unit * mean:.{digits}f}" + (f" ± {unit * half:.{digits}f}" if len(value) > 1 else "")
    return text + ("*" if guarded else "")


def markdown(rows: list[dict]) -> str:
    show_runs = any(r["runs"] > 1 for r in rows)
    cols = [c for c in dict.fromkeys(k for r in rows for k in r) if not c.startswith("_") and c != "runs"]
    cols += ["runs"] if show_runs else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_cell(c, r.get(c), c in r["_guarded"]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def beyond_spread(rows: list[dict], col: str = "mIoU") -> list[str]:
    """The rows whose ``col`` differs from the first row's by more than both rows' half-ranges together."""
    (m0, h0), out = spread(rows[0][col]), []
    for r in rows[1:]:
        m, h = spread(r[col])
        if abs(m - m0) > h + h0:
            out.append(f"`{r['config']}` {100 * (m - m0):+.2f}")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding eval.json")
    ap.add_argument("--stem", default="eval", help="name of the evaluation JSON (default eval)")
    args = ap.parse_args(argv)
    rows = pooled([row(r, args.stem) for r in args.runs])
    print(markdown(rows))
    if any(r["runs"] > 1 for r in rows):
        beyond = beyond_spread(rows)
        print(f"\nmIoU beyond the spread of `{rows[0]['config']}` and the row: "
              + (", ".join(beyond) if beyond else "none"))


if __name__ == "__main__":
    main()
