"""``hparse train CONFIG [key.sub=value ...]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import HParseError
from .common import EXTRA_ARGS, device_option, fail, setup_logging


def train(ctx: typer.Context, config: str = typer.Argument(..., help="config file or packaged config name"),
          out: Path = typer.Option(None, help="run folder (default runs/<config name>)"),
          resume: Path = typer.Option(None, help="checkpoint to resume from (e.g. runs/x/last.pt)"),
          auto_resume: bool = typer.Option(True, help="resume from OUT/last.pt when it exists (without: refuse a "
                                                      "run folder that holds checkpoints)"),
          resume_anyway: bool = typer.Option(False, help="resume although the run was trained with another "
                                                         "config"),
          device: str = device_option("cpu, cuda, cuda:1, mps (default: the config's train.device, else cuda "
                                      "if available)")):
    """Train a model: hparse train CONFIG key.sub=value ... (optional config overrides)."""
    from .. import config as C

    setup_logging()
    try:
        cfg = C.load_config(config, ctx.args)  # before importing the training stack: a typo fails at once
        from ..engine import distributed
        from ..engine.trainer import Trainer

        try:
            trainer = Trainer(cfg, out_dir=out, device=device)
            trainer.start(resume, auto_resume, resume_anyway)
            result = trainer.train()
        finally:
            distributed.teardown()
    except HParseError as e:
        fail(e)
    if trainer.rank == 0:
        typer.echo(f"done: {trainer.out} (best {cfg['eval']['best_metric']} {100 * max(trainer.best, 0):.2f})")
        typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    app.command("train", context_settings=EXTRA_ARGS)(train)
