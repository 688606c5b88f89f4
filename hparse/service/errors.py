"""Errors a client can act on: an HTTP status and a one-line message, sent as ``{"error", "status"}`` JSON."""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses (4xx) or cannot serve now (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def to_dict(self) -> dict:
        return {"error": self.message, "status": self.status}
