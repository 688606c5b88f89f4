"""``hparse models [NAME]``: packaged model configs with their size and cost."""

from __future__ import annotations

import typer


def models(name: str = typer.Argument(None, help="only configs whose name contains this")):
    """List packaged model configs with parameters and multiply-adds at their input size."""
    from rich.console import Console
    from rich.table import Table

    from .. import config as C

    t = Table("config", "model", "backbone", "classes", "input (HxW)", "params", "MACs")
    for cname in C.list_configs():
        if not name or name in cname:
            t.add_row(*_row(cname, C.load_config(cname)))
    Console(width=max(Console().width, 140)).print(t)   # full config names, also when piped


def _row(cname: str, cfg: dict) -> list[str]:
    from ..labels import meta_of_data
    from ..models import build_model
    from ..models.complexity import count_macs, count_training_params, format_count

    meta = meta_of_data(cfg["data"])
    m = build_model(cfg["model"], meta).eval()
    h, w = cfg["data"]["input_size"]
    return [cname, cfg["model"]["type"], cfg["model"].get("backbone", {}).get("name", "-"),
            str(meta.num_classes), f"{h}x{w}", format_count(count_training_params(m)),
            format_count(count_macs(m, (1, 3, h, w)))]


def register(app: typer.Typer) -> None:
    app.command("models")(models)
