"""The one error type chat logic raises; the HTTP and WebSocket layers turn it into a
status code or an error frame. Every refusal happens before anything is stored."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refused request: *status* is the HTTP status, *code* a stable machine-readable
    word, *message* one line for humans, *extra* more fields for the error body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # A message may quote the client's input; keep it encodable as UTF-8 whatever that was.
        self.message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """``{"error": code, "message": ..., **extra}``: the JSON body of the refusal."""
        return {"error": self.code, "message": self.message, **self.extra}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def unauthorized(message: str = "missing or invalid token") -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
