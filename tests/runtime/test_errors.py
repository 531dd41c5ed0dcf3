"""The exception hierarchy and the status-code mapping."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

import pytest

from builder.runtime import errors

pytestmark = pytest.mark.timeout(10)


def test_str_names_connector_and_operation() -> None:
    assert str(errors.ConnectorError("boom", connector="demo", operation="get")) == "demo.get: boom"
    assert str(errors.ConnectorError("boom", connector="demo")) == "demo: boom"
    assert str(errors.ConnectorError("boom", operation="get")) == "get: boom"
    assert str(errors.ConnectorError("boom")) == "boom"


def test_attributes_are_kept() -> None:
    exc = errors.ConnectorError("boom", connector="demo", operation="get")
    assert (exc.message, exc.connector, exc.operation) == ("boom", "demo", "get")
    assert exc.args == ("boom",)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitedError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
        (599, errors.ServerError),
        (405, errors.HTTPStatusError),
        (418, errors.HTTPStatusError),
    ],
)
def test_error_for_status(status: int, cls: type[errors.HTTPStatusError]) -> None:
    assert errors.error_for_status(status) is cls


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (errors.ConfigError, errors.ConnectorError),
        (errors.CircuitOpenError, errors.ConnectorError),
        (errors.TransportError, errors.ConnectorError),
        (errors.ConnectionFailedError, errors.TransportError),
        (errors.TimeoutError, errors.TransportError),
        (errors.StreamError, errors.TransportError),
        (errors.WriteError, errors.ConnectorError),
        (errors.ResponseValidationError, errors.ConnectorError),
        (errors.HTTPStatusError, errors.ConnectorError),
        (errors.BadRequestError, errors.HTTPStatusError),
        (errors.AuthenticationError, errors.HTTPStatusError),
        (errors.PermissionDeniedError, errors.HTTPStatusError),
        (errors.NotFoundError, errors.HTTPStatusError),
        (errors.ConflictError, errors.HTTPStatusError),
        (errors.UnprocessableEntityError, errors.HTTPStatusError),
        (errors.RateLimitedError, errors.HTTPStatusError),
        (errors.ServerError, errors.HTTPStatusError),
    ],
)
def test_hierarchy(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)
    assert issubclass(cls, errors.ConnectorError)


def test_timeout_error_does_not_shadow_builtin() -> None:
    assert errors.TimeoutError is not builtins.TimeoutError
    assert not issubclass(errors.TimeoutError, builtins.TimeoutError)


def test_http_status_error_fields_and_body_excerpt() -> None:
    exc = errors.NotFoundError(
        "GET /x -> 404",
        status_code=404,
        method="GET",
        url="https://api.test/x",
        body="x" * 2000,
        headers={"a": "b"},
        connector="demo",
        operation="get",
    )
    assert exc.status_code == 404
    assert exc.method == "GET"
    assert exc.url == "https://api.test/x"
    assert exc.body == "x" * 500
    assert exc.headers == {"a": "b"}
    assert str(exc) == "demo.get: GET /x -> 404"


def test_http_status_error_defaults() -> None:
    exc = errors.HTTPStatusError("m", status_code=418)
    assert (exc.method, exc.url, exc.body, exc.headers) == ("", "", "", {})


def test_rate_limited_fields() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    exc = errors.RateLimitedError("slow", status_code=429, retry_after=3.0, reset_at=when)
    assert exc.retry_after == 3.0
    assert exc.reset_at == when
    assert errors.RateLimitedError("slow", status_code=429).retry_after is None


def test_validation_error_body_excerpt() -> None:
    exc = errors.ResponseValidationError("bad", body="y" * 600)
    assert exc.body == "y" * 500


def test_write_error_and_circuit_open_fields() -> None:
    failed = [{"a": 1}]
    exc = errors.WriteError("w", written=4, failed=failed, connector="demo")
    assert exc.written == 4
    assert exc.failed is failed
    assert errors.CircuitOpenError("open", retry_in=1.5).retry_in == 1.5
