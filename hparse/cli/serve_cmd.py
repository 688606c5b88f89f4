"""``hparse serve``: the REST service and web page (``pip install "hparse[serve]"``)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import HParseError
from .common import BACKENDS, choice, device_option, fail, setup_logging


def _models(values: list[str]) -> dict[str, str]:
    """``--model NAME=CHECKPOINT`` or ``--model NAME_OR_CHECKPOINT`` (served under its file stem)."""
    out: dict[str, str] = {}
    for v in values:
        name, _, src = v.partition("=") if "=" in v else (Path(v).stem if v.endswith(".pt") else v, "", v)
        if not name or not src:
            fail(f"--model {v!r}: give NAME=CHECKPOINT or a shipped model name / checkpoint path")
        out[name] = src
    return out


def serve(host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(8000, min=0, max=65535, help="TCP port"),
          model: list[str] = typer.Option(["default"], help="model to serve, repeatable: NAME=CHECKPOINT, a "
                                                              "shipped name or a checkpoint; the first is the default"),
          device: str = device_option(),
          backend: str = typer.Option(None, help="what runs the network: torch, onnxruntime or "
                                                 "onnxruntime-int8 (default: the fastest installed)",
                                     callback=choice("--backend", BACKENDS)),
          threads: int = typer.Option(None, min=1, help="PyTorch threads (default: PyTorch's)"),
          max_batch: int = typer.Option(8, min=1, help="images per forward pass"),
          max_wait_ms: float = typer.Option(10.0, min=0, help="how long a request waits for others to batch with"),
          max_queue: int = typer.Option(256, min=1, help="images waiting for inference before 503"),
          max_upload_mb: float = typer.Option(20.0, min=0.001, help="request body limit (MiB)"),
          max_pixels: int = typer.Option(12_000_000, min=1, help="decoded image limit (pixels)"),
          log_level: str = typer.Option("info", help="uvicorn log level")):
    """Serve POST /v1/parse, GET /v1/models, GET /health, the web page at / and the API docs at /docs."""
    try:
        from ..service import ServiceSettings, run
    except ImportError as e:
        fail(f'hparse serve needs the serve extra ({e.name} is missing): pip install "hparse[serve]"')
    setup_logging()
    settings = ServiceSettings(models=_models(model), device=device, backend=backend, threads=threads,
                               max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                               max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels)
    try:
        run(settings, host=host, port=port, log_level=log_level)
    except HParseError as e:
        fail(e)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
