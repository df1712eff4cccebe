"""Errors as ``application/problem+json`` (RFC 9457), named after filemem's exception tree (layer L7).

Invariant: every error response of the HTTP API is a problem document with
``status``, ``title``, ``detail`` and ``exception`` (the filemem exception's
class name, or ``HTTPError`` for protocol errors such as a missing token), and
it is produced before anything is written when the input is at fault.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import JSONResponse

from .. import (
    ConflictError,
    FileMemError,
    InvalidKeyError,
    InvalidQueryError,
    InvalidValueError,
    LockTimeout,
    QueueFullError,
    ReadOnlyError,
    SessionLimitError,
    SessionPermissionError,
    StoreClosedError,
)

__all__ = ["PROBLEM_JSON", "ApiError", "problem", "problem_of"]

PROBLEM_JSON: Final = "application/problem+json"

#: Most specific first: the first class an exception is an instance of decides.
_STATUS: Final[tuple[tuple[type[FileMemError], int], ...]] = (
    (ConflictError, 412),
    (InvalidKeyError, 400),
    (InvalidValueError, 400),
    (InvalidQueryError, 400),
    (ReadOnlyError, 403),
    (SessionPermissionError, 403),
    (LockTimeout, 503),
    (SessionLimitError, 503),
    (QueueFullError, 503),
    (StoreClosedError, 503),
)


class ApiError(Exception):
    """An HTTP-level refusal raised by a handler (no token, a scope missing, a malformed body, ...)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def problem(status: int, title: str, detail: str, exception: str = "HTTPError", **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "exception": exception, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="filemem"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_of(exc: FileMemError) -> JSONResponse:
    """The problem response for a filemem exception (500 for anything not listed)."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    extra: dict[str, Any] = {}
    if isinstance(exc, ConflictError):
        extra["current_version"] = exc.current_version
    response = problem(status, type(exc).__name__, " ".join(str(exc).split()), type(exc).__name__, **extra)
    if status == 503:
        response.headers["Retry-After"] = "1"
    if isinstance(exc, ConflictError) and exc.current_version:
        response.headers["ETag"] = f'"{exc.current_version}"'
    return response
