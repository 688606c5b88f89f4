"""Markdown table of light-ablation runs scored by ``hparse eval ... --json RUN/eval.json``.

    python scripts/ablation_table.py runs/mman_light_ccp_baseline runs/mman_light_ccp ...

One row per setup, in the order first given; runs of the same setup (the resolved ``config.yaml`` each run saved,
``train.seed`` aside: e.g. the same row trained with ``train.seed=0`` and ``train.seed=1``) are pooled into one row
showing ``mean ± half the range`` and their number (``runs``). Rows are named by their config; setups of one
config that differ by overrides (``model.mode=direct_bu``) are told apart by the settings they differ in. The table
is followed by every pair of rows whose mIoU differ by more than the two rows' spreads together. Columns come from
what the evaluation wrote beside ``eval.json``: mIoU, pixel acc, F1 always; low-resolution mIoU
(``--low-res``; the other readings from ``--low-res-mode MODE --json RUN/eval_MODE.json`` beside it) and IPR in
parts per million (``--ipr``); level 2 / 3 mIoU (``--levels``).

A run given as ``RUN:STEM`` is read from ``RUN/STEM.json`` instead and makes its own row, named ``config + STEM``:
the same checkpoint scored another way, e.g. Table 4's "+CRF" row,
``hparse eval mman_light_ccp_crf RUN/last.pt --json RUN/eval_crf.json`` listed as ``RUN:eval_crf``.

``--control CONFIG`` adds a column of paired differences: each run's mIoU minus that of the control row's run with
the same ``train.seed`` (rows that start from one initialisation per seed differ far less from each other than
seeds do), ``mean ± half the range`` over the seeds both rows have, and lists the rows whose paired differences all
lie on one side of zero by more than their half-range.

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

from hparse.evaluation.semantic import LOW_RES_MODES
from hparse.metrics.semantic import f1_from_means


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def row(run: Path, stem: str = "eval", default_stem: str | None = None) -> dict:
    """One run's figures (fractions); ``"_guarded"`` names the columns computed with HHP's 0/0 taken as 0.
    A ``stem`` other than ``default_stem`` is part of the row's name."""
    scores = _read(run / f"{stem}.json")
    if scores is None:
        raise SystemExit(f"{run}: no {stem}.json (run hparse eval CONFIG {run}/last.pt --json {run}/{stem}.json)")
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    name = cfg.get("name", run.name) + (f" + {stem}" if default_stem not in (None, stem) else "")
    out = {"config": name, "mIoU": scores["miou"], "pixel acc": scores["pixel_acc"],
           "F1": scores["f1"], "_guarded": set(), "_setup": setup(cfg), "_seed": cfg.get("train", {}).get("seed")}
    if out["F1"] is None or math.isnan(out["F1"]):
        out["F1"] = guarded_f1(scores)
        if out["F1"] is not None:
            out["_guarded"].add("F1")
    if (low := _read(run / f"{stem}_lowres.json")) is not None:
        out["low-res mIoU (1/16)"] = low["miou"]
    for mode in LOW_RES_MODES[1:]:   # the readings besides the default (nearest)
        if (low := _read(run / f"{stem}_{mode}_lowres.json")) is not None:
            out[f"low-res mIoU (1/16, {mode})"] = low["miou"]
    if (ipr := _read(run / f"{stem}_ipr.json")) is not None:
        out["IPR (ppm)"] = ipr["pred"]["ipr"]
    for lvl in (2, 3):
        if (lv := _read(run / f"{stem}_level{lvl}.json")) is not None:
            out[f"level {lvl} mIoU"] = lv["miou"]
    return out


def setup(cfg: dict) -> dict[str, str]:
    """A run's resolved config as ``{dotted key: value}``, without the seed (what makes runs one row); empty
    sections are left out, so a key that later versions added with an empty default does not split a row."""
    flat: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = json.dumps(node, sort_keys=True)
    walk(cfg, "")
    flat.pop("train.seed", None)
    return flat


def guarded_f1(scores: dict) -> float | None:
    """HHP's F1 with 0/0 precision taken as 0, from the per-class scores."""
    per_class = list(scores.get("per_class", {}).values())
    if not per_class:
        return None
    mean = [sum(c[k] or 0.0 for c in per_class) / len(per_class) for k in ("precision", "recall")]
    return f1_from_means(*mean)


def pooled(runs: list[dict]) -> list[dict]:
    """Runs grouped by setup (first-seen order): per column the list of values, ``runs`` their number."""
    groups: dict[tuple, dict] = {}
    for r in runs:
        key = (r["config"], tuple(sorted(r["_setup"].items())))
        g = groups.setdefault(key, {"config": r["config"], "runs": 0, "_guarded": set(), "_setup": r["_setup"]})
        g["runs"] += 1
        g["_guarded"] |= r["_guarded"]
        g.setdefault("_seed_miou", {})[r["_seed"]] = r["mIoU"]
        for k, v in r.items():
            if not k.startswith("_") and k != "config":
                g.setdefault(k, []).extend([] if v is None else [v])
    rows = list(groups.values())
    differing = [_differing(r, [o for o in rows if o["config"] == r["config"] and o is not r]) for r in rows]
    for r, keys in zip(rows, differing):
        r["config"] += f" ({', '.join(keys)})" if keys else ""
    return rows


def _differing(row: dict, others: list[dict]) -> list[str]:
    """``key=value`` for the settings in which ``row`` differs from any of ``others``."""
    keys = {k for o in others for k in row["_setup"].keys() | o["_setup"].keys()
            if row["_setup"].get(k) != o["_setup"].get(k)}
    return [f"{k}={json.loads(row['_setup'][k]) if k in row['_setup'] else '-'}" for k in sorted(keys)]


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
    sign = "+" if col == PAIRED else ""
    text = f"{unit * mean:{sign}.{digits}f}" + (f" ± {unit * half:.{digits}f}" if len(value) > 1 else "")
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
    """Every pair of rows whose ``col`` differ by more than both rows' half-ranges together."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            (ma, ha), (mb, hb) = spread(a[col]), spread(b[col])
            if abs(mb - ma) > ha + hb:
                out.append(f"`{b['config']}` vs `{a['config']}` {100 * (mb - ma):+.2f}")
    return out


PAIRED = "Δ mIoU vs control (paired by seed)"


def add_paired(rows: list[dict], control: str) -> list[str]:
    """The paired-difference column against the row named ``control``; returns the rows whose paired
    differences exceed their half-range (same sign throughout)."""
    ctrl = next((r for r in rows if r["config"] == control), None)
    if ctrl is None:
        raise SystemExit(f"--control {control!r} is not one of the rows ({', '.join(r['config'] for r in rows)})")
    beyond = []
    for r in rows:
        seeds = [s for s in r["_seed_miou"] if s in ctrl["_seed_miou"]]
        diffs = [r["_seed_miou"][s] - ctrl["_seed_miou"][s] for s in seeds]
        r[PAIRED] = diffs if r is not ctrl and diffs else None
        if r is not ctrl and len(diffs) > 1:
            mean, half = spread(diffs)
            if abs(mean) > half:
                beyond.append(f"`{r['config']}` {100 * mean:+.2f} (seeds {', '.join(map(str, seeds))})")
    return beyond


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders holding eval.json (RUN:STEM: RUN/STEM.json, a row of its own)")
    ap.add_argument("--stem", default="eval", help="name of the evaluation JSON (default eval)")
    ap.add_argument("--control", help="the row (config name) to pair the others with, seed by seed")
    args = ap.parse_args(argv)
    rows = pooled([row(Path(r), stem or args.stem, args.stem) for r, _, stem in (a.partition(":") for a in args.runs)])
    paired = add_paired(rows, args.control) if args.control else None
    print(markdown(rows))
    if any(r["runs"] > 1 for r in rows):
        beyond = beyond_spread(rows)
        print("\nmIoU differences beyond both rows' spreads: " + ("; ".join(beyond) if beyond else "none"))
    if paired is not None:
        print(f"\npaired differences to `{args.control}` beyond their spread: " + ("; ".join(paired) or "none"))


if __name__ == "__main__":
    main()
