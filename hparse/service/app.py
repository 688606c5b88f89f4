"""The FastAPI application: ``POST /v1/parse``, ``GET /v1/models``, ``GET /health``, the web page at ``/`` and
the OpenAPI docs at ``/docs``. Every refusal is ``{"error": "...", "status": N}`` JSON."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import Batcher, log
from .errors import ApiError
from .images import decode_image
from .limits import BodyLimit
from .memory import release_memory
from .models import ModelPool
from .outputs import OUTPUTS, render
from .settings import ServiceSettings

STATIC = Path(__file__).resolve().parent / "static"
IDLE_RELEASE_S = 0.2


class ParseOptions(BaseModel):
    """Query options of ``POST /v1/parse`` (those of ``hparse parse``); unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="served model name (GET /v1/models); default: the first one")
    long_side: int | None = Field(None, description="network input long side in pixels; default: the model's")
    tta: bool = Field(False, description="multi-scale + flip test-time augmentation")
    outputs: str = Field("json", description="comma-separated: label (indexed PNG, pixel = class id), overlay "
                                             "(JPEG with a legend), masks (a binary PNG per class), json (classes "
                                             "present with pixel counts; for instance models also the people "
                                             "with score >= min_score). One image output alone is sent as "
                                             "that image; anything else as JSON with base64 images")
    palette: Literal["lip", "voc"] | None = Field(None, description="viewing palette; default: the label set's")
    legend: bool = Field(True, description="draw a legend of the classes present on the overlay")


UPLOAD_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
REFUSALS = {code: {"description": why} for code, why in {
    400: "empty, corrupt or truncated image; bad option value", 404: "unknown model",
    413: "upload or image too large", 415: "not an image", 422: "wrong option type or unknown option",
    503: "queue full or shutting down"}.items()}


@dataclass
class ServiceState:
    settings: ServiceSettings
    pool: ModelPool
    batcher: Batcher
    workers: ThreadPoolExecutor

    in_flight: int = 0
    idle_timer: asyncio.TimerHandle | None = None

    async def in_worker(self, fn, *args):
        """``fn(*args)`` in a decode / encode thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, partial(fn, *args))

    @asynccontextmanager
    async def request(self):
        """Counts requests in flight; once none has been for ``IDLE_RELEASE_S``, freed memory goes back to the OS."""
        self.in_flight += 1
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle_timer = asyncio.get_running_loop().call_later(IDLE_RELEASE_S, self._release_if_idle)

    def _release_if_idle(self) -> None:
        if self.in_flight == 0:
            with suppress(RuntimeError):                         # the workers have stopped: shutting down
                asyncio.get_running_loop().run_in_executor(self.workers, release_memory)


def create_app(settings: ServiceSettings | None = None, pool: ModelPool | None = None) -> FastAPI:
    """The application; models load at start-up (``pool`` to share already loaded ones)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        served = pool or await run_in_threadpool(ModelPool, settings.models, settings.device, settings.backend)
        batcher = Batcher(served.run, settings.max_batch, settings.max_batch_pixels, settings.max_wait_ms / 1000,
                          settings.max_queue, settings.max_queued_pixels)
        batcher.start()
        workers = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="hparse-io")
        app.state.hparse = ServiceState(settings, served, batcher, workers)
        log.info("hparse service ready: models %s", ", ".join(served.parsers))
        try:
            yield
        finally:
            await batcher.close()
            workers.shutdown(wait=True)
            log.info("hparse service stopped after %d images in %d batches", batcher.images, batcher.batches)

    app = FastAPI(title="hparse", summary="Human parsing: segment people into parts (hair, face, clothes...)",
                  version=_version(), lifespan=lifespan)
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    return app


def _version() -> str:
    from .. import __version__

    return __version__


def _state(request: Request) -> ServiceState:
    return request.app.state.hparse


def _add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", summary="Liveness and queue state")
    async def health(request: Request) -> dict:
        s = _state(request)
        return {"status": "ok", "models": list(s.pool.parsers), "queued": s.batcher.queue.qsize(),
                "batches": s.batcher.batches, "images": s.batcher.images}

    @app.get("/v1/models", summary="Served models with their classes and colours")
    async def models(request: Request) -> list[dict]:
        return _state(request).pool.describe()

    @app.post("/v1/parse", summary="Parse one image", openapi_extra=UPLOAD_DOC, responses=REFUSALS)
    async def parse(request: Request, options: Annotated[ParseOptions, Query()]) -> Response:
        s = _state(request)
        outputs = _outputs(options.outputs)
        setting = s.pool.setting(options.model or s.settings.default_model, options.tta,
                                 _long_side(options.long_side, s.settings))
        async with s.request():
            image = await s.in_worker(decode_image, await _upload(request), s.settings.max_pixels)
            result = await s.batcher.submit(setting, image)
            body, media = await s.in_worker(render, s.pool.parser(setting.model), setting.model, image, result,
                                            outputs, options.palette, options.legend)
        return JSONResponse(body) if isinstance(body, dict) else Response(body, media_type=media)


def _outputs(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise ApiError(400, f"unknown outputs {', '.join(unknown) or '(none given)'}; choose from "
                            f"{', '.join(OUTPUTS)}")
    return names


def _long_side(value: int | None, settings: ServiceSettings) -> int | None:
    lo, hi = settings.long_side_range
    if value is not None and not lo <= value <= hi:
        raise ApiError(400, f"long_side must lie in {lo}..{hi}, got {value}")
    return value


async def _upload(request: Request) -> bytes:
    """The image bytes: the multipart field ``file``, else the raw body."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "multipart request without a 'file' field holding the image")
            return await upload.read()
    return await request.body()


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.to_dict(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def bad_options(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(422, _validation_message(e)).to_dict(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ApiError(e.status_code, str(e.detail)).to_dict(), status_code=e.status_code,
                            headers=getattr(e, "headers", None))


def _validation_message(e: RequestValidationError) -> str:
    """One line per problem: the option, what is wrong, what was sent."""
    known = ", ".join(ParseOptions.model_fields)
    parts = []
    for err in e.errors():
        name = str(err["loc"][-1]) if err.get("loc") else "request"
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown option {name!r} (options: {known})")
        else:
            parts.append(f"option {name!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts) or "invalid request"
