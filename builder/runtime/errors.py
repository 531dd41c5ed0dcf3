"""One exception hierarchy for every connector: no raw httpx or driver error leaks out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "CircuitOpenError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "ConnectorError",
    "HTTPStatusError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "ServerError",
    "StreamError",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "WriteError",
    "error_for_status",
]

_BODY_EXCERPT = 500


class ConnectorError(Exception):
    """Base class of every error a connector raises."""

    def __init__(
        self,
        message: str,
        *,
        connector: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.connector = connector
        self.operation = operation

    def __str__(self) -> str:
        where = ".".join(p for p in (self.connector, self.operation) if p)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(ConnectorError):
    """A required setting is missing or has the wrong type."""


class CircuitOpenError(ConnectorError):
    """The circuit breaker is open: calls fail fast until it half-opens."""

    def __init__(self, message: str, *, retry_in: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_in = retry_in


class TransportError(ConnectorError):
    """The request did not complete: connection refused, reset, protocol error."""


class ConnectionFailedError(TransportError):
    """The connection could not be made or was dropped."""


class TimeoutError(TransportError):  # noqa: A001 - the natural name; builtins.TimeoutError stays reachable
    """Connecting, sending or reading took longer than the timeout."""


class ResponseTooLargeError(TransportError):
    """The response body is larger than the connector's ``max_response_bytes``."""


class StreamError(TransportError):
    """A stream ended early or carried an event that could not be read."""


class WriteError(ConnectorError):
    """A sink could not write every record: ``failed`` holds those that were not written."""

    def __init__(self, message: str, *, written: int, failed: list[Any], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.written = written
        self.failed = failed


class ResponseValidationError(ConnectorError):
    """The response body is not valid JSON or does not match the declared model."""

    def __init__(self, message: str, *, body: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.body = body[:_BODY_EXCERPT]


class HTTPStatusError(ConnectorError):
    """The service answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str = "",
        url: str = "",
        body: str = "",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        self.method = method
        self.url = url
        self.body = body[:_BODY_EXCERPT]
        self.headers = headers or {}
        # The error body decoded into the model the service documents for it, if any.
        self.error: Any = None


class BadRequestError(HTTPStatusError):
    """400: the service rejected the request."""


class AuthenticationError(HTTPStatusError):
    """401: credentials are missing or wrong."""


class PermissionDeniedError(HTTPStatusError):
    """403: the credentials may not do this."""


class NotFoundError(HTTPStatusError):
    """404: no such resource."""


class ConflictError(HTTPStatusError):
    """409: the request conflicts with the resource's state."""


class UnprocessableEntityError(HTTPStatusError):
    """422: the request was well-formed but semantically invalid."""


class RateLimitedError(HTTPStatusError):
    """429 (or a quota header at zero): slow down.

    ``retry_after`` is the wait the service asked for, in seconds, and ``reset_at`` the
    moment the quota resets, when the service says so.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reset_at: datetime | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.reset_at = reset_at


class ServerError(HTTPStatusError):
    """5xx: the service failed."""


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitedError,
}


def error_for_status(status_code: int) -> type[HTTPStatusError]:
    """The exception class for an error status."""
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, HTTPStatusError)
