"""Markdown table of light-ablation runs scored by ``hparse eval ... --json RUN/eval.json``.

    python scripts/ablation_table.py runs/mman_light_ccp_baseline runs/mman_light_ccp ...

One row per run folder, in the order given. Columns come from what the evaluation wrote beside
``eval.json``: mIoU, pixel acc, F1 always (``-`` where HHP's F1 is undefined); low-resolution mIoU
(``--low-res``) and IPR in parts per million (``--ipr``); level 2 / 3 mIoU (``--levels``).
The row name is the config name saved in the run's ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def row(run: Path, stem: str = "eval") -> dict:
    scores = _read(run / f"{stem}.json")
    if scores is None:
        raise SystemExit(f"{run}: no {stem}.json (run hparse eval CONFIG {run}/last.pt --json {run}/{stem}.json)")
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    out = {"config": cfg.get("name", run.name), "mIoU": scores["miou"], "pixel acc": scores["pixel_acc"],
           "F1": scores["f1"]}
    if (low := _read(run / f"{stem}_lowres.json")) is not None:
        out["low-res mIoU (1/16)"] = low["miou"]
    if (ipr := _read(run / f"{stem}_ipr.json")) is not None:
        out["IPR (ppm)"] = ipr["pred"]["ipr"]
    for lvl in (2, 3):
        if (lv := _read(run / f"{stem}_level{lvl}.json")) is not None:
            out[f"level {lvl} mIoU"] = lv["miou"]
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"`{r[c]}`" if c == "config" else ("-" if r.get(c) is None else
                 f"{1e6 * r[c]:.1f}" if c.startswith("IPR") else f"{100 * r[c]:.2f}") for c in cols]
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
