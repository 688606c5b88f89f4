"""``hparse export CKPT_OR_NAME OUT [--format pt|onnx|torchscript]``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import fail


def _check_format(value: str) -> str:
    from ..engine.export import FORMATS

    if value not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)} (got {value!r})")
    return value


def export(checkpoint: str = typer.Argument(..., help="training checkpoint (last.pt / best.pt) or shipped model name"),
           out: Path = typer.Argument(..., help="file to write"),
           fmt: str = typer.Option("pt", "--format", callback=_check_format,
                                      help="pt: slim weights for hparse; onnx: the network for ONNX runtimes (opset "
                                           "17, dynamic batch/height/width, 0..255 RGB input normalised inside); "
                                           "torchscript: the same network for torch.jit.load"),
           half: bool = typer.Option(False, help="--format pt: store float weights as float16 (half the size)")):
    """Write a slim inference checkpoint, or the network as ONNX or TorchScript (inputs and outputs: README,
    "Fast inference and export")."""
    from ..engine.export import ONNX_OPSET, export_checkpoint

    try:
        path = export_checkpoint(checkpoint, out, fmt, half=half)
    except HParseError as e:
        fail(e)
    detail = f", opset {ONNX_OPSET}" if fmt == "onnx" else ""
    typer.echo(f"wrote {path} ({fmt}{detail}, {path.stat().st_size / 2**20:.1f} MiB)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
