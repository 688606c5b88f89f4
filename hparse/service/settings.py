"""What a running service allows: models, batching and the limits that keep one request from hurting others."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceSettings:
    """``models``: served name -> shipped model name or checkpoint path (all loaded at start-up, once, with
    ``hparse.load(device=, backend=)``; backend None = the fastest installed).

    Limits: ``max_upload_bytes`` per request body, ``max_pixels`` per decoded image (checked from the header,
    before decoding), ``max_queue`` images and ``max_queued_pixels`` waiting for inference (more gets 503),
    ``max_batch`` images and ``max_batch_pixels`` per forward pass, ``max_wait_ms`` a first request waits
    for others to batch with. ``long_side`` options must lie in ``long_side_range``. Decoding and encoding run in
    ``worker_threads`` threads (a fixed few: more would not be faster on a small CPU and each holds memory).
    """

    models: dict[str, str] = field(default_factory=lambda: {"default": "default"})
    device: str | None = "cpu"
    backend: str | None = None
    threads: int | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 12_000_000
    max_queue: int = 256
    max_queued_pixels: int = 400_000_000
    max_batch: int = 8
    max_batch_pixels: int = 16_000_000
    max_wait_ms: float = 10.0
    worker_threads: int = 4
    long_side_range: tuple[int, int] = (64, 2048)
    graceful_shutdown_s: float = 15.0

    @property
    def default_model(self) -> str:
        return next(iter(self.models))
