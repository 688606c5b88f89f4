"""Running the service with uvicorn: one process, models shared, graceful shutdown on SIGINT / SIGTERM (in-flight
requests finish, queued ones get 503, then the inference thread stops)."""

from __future__ import annotations

from .app import create_app
from .models import ModelPool
from .settings import ServiceSettings


def run(settings: ServiceSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the models (a bad name or checkpoint raises :class:`~hparse.errors.HParseError` here, before any
    port is opened), then serve until interrupted."""
    import uvicorn

    pool = ModelPool(settings.models, settings.device, settings.backend)
    config = uvicorn.Config(create_app(settings, pool), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=settings.graceful_shutdown_s, access_log=False)
    uvicorn.Server(config).run()
