"""An ASGI wrapper that refuses request bodies above a byte limit (413) before they are read into memory."""

from __future__ import annotations

import json

from .errors import ApiError

MULTIPART_OVERHEAD = 64 * 1024   # boundaries and part headers around an upload of the full allowed size


class BodyLimit:
    """Checks ``Content-Length`` up front and counts the bytes of chunked bodies as they arrive."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.limit = max_bytes + MULTIPART_OVERHEAD

    def _too_large(self, size: str) -> ApiError:
        return ApiError(413, f"upload too large: {size} bytes, the limit is {self.max_bytes:,} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            problem = None
            if not declared.isdigit():
                problem = ApiError(400, f"bad Content-Length header: {declared[:40].decode('latin-1')!r}")
            elif int(declared) > self.limit:
                problem = self._too_large(f"{int(declared):,}")
            if problem is not None:
                return await _send_error(send, problem)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large(f"more than {self.limit:,}")
            return message

        await self.app(scope, limited_receive, send)


async def _send_error(send, error: ApiError) -> None:
    body = json.dumps(error.to_dict()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
