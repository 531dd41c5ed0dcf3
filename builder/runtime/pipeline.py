"""The request pipeline, written once for sync and async clients.

:func:`plan` is a generator that decides everything — circuit breaker, rate limit, retries,
``Retry-After``, mapping failures to :mod:`builder.runtime.errors` — and yields the I/O it
needs: ``(SEND, request)``, ``(SLEEP, seconds)`` or ``(READ, response)``. The sync and async
clients each drive it with a few lines of their own I/O.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx

from builder.runtime import errors
from builder.runtime.config import scrub
from builder.runtime.operation import Operation, QuotaHeaders, error_decoder
from builder.runtime.resilience import (
    CircuitBreaker,
    RetryPolicy,
    TokenBucket,
    parse_retry_after,
    utc_from_epoch,
)

__all__ = ["Action", "BodyTooLarge", "Pipeline", "READ", "SEND", "SLEEP"]

SEND, SLEEP, READ = "send", "sleep", "read"
Action = tuple[str, Any]
Plan = Generator[Action, Any, httpx.Response]


class BodyTooLarge(httpx.RequestError):
    """Raised while reading a response body that outgrows ``Service.max_response_bytes``."""


class Pipeline:
    """Per-client resilience state and the logic that uses it."""

    __slots__ = ("connector", "retry", "limiter", "breaker", "quota", "secrets")

    def __init__(
        self,
        connector: str,
        retry: RetryPolicy,
        limiter: TokenBucket | None,
        breaker: CircuitBreaker | None,
        quota: QuotaHeaders | None,
        secrets: list[str],
    ) -> None:
        self.connector = connector
        self.retry = retry
        self.limiter = limiter
        self.breaker = breaker
        self.quota = quota
        self.secrets = secrets

    def plan(
        self,
        op: Operation[Any],
        request: httpx.Request,
        streamed: bool = False,
        tally: list[int] | None = None,
    ) -> Plan:
        """Send ``request`` until it succeeds or the retry policy gives up; ``tally[0]``,
        when given (a traced call), counts the requests sent."""
        policy = op.retry or self.retry
        breaker, limiter = self.breaker, self.limiter
        retries = 0
        trial = False  # this call is the half-open circuit's trial, and owes it a verdict
        try:
            while True:
                if breaker is not None:
                    wait, trial = breaker.admit()
                    if wait:
                        raise errors.CircuitOpenError(
                            f"circuit open after repeated failures; retry in {wait:.1f}s",
                            retry_in=wait,
                            connector=self.connector,
                            operation=op.name,
                        )
                if limiter is not None:
                    wait = limiter.reserve()
                    if wait > 0:
                        yield SLEEP, wait
                if tally is not None:
                    tally[0] += 1
                try:
                    response: httpx.Response = yield SEND, request
                except httpx.PoolTimeout as exc:
                    # No free connection in this client's own pool: the service is not at
                    # fault (no failure counted), and a retry would queue for the same pool.
                    raise self._transport_error(
                        errors.TimeoutError,
                        op,
                        request,
                        exc,
                        retries,
                        "no free connection in the client's pool within the pool timeout",
                    ) from None
                except httpx.TimeoutException as exc:
                    if breaker is not None:
                        breaker.record_failure()
                        trial = False
                    if policy.retry_on_timeout and retries + 1 < policy.attempts:
                        retries += 1
                        yield SLEEP, policy.backoff(retries)
                        continue
                    raise self._transport_error(
                        errors.TimeoutError, op, request, exc, retries
                    ) from None
                except BodyTooLarge as exc:
                    # The service answered (it is up); retrying would only fetch the same
                    # body again.
                    if breaker is not None:
                        breaker.record_success()
                        trial = False
                    raise self._transport_error(
                        errors.ResponseTooLargeError, op, request, exc, retries
                    ) from None
                except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                    if breaker is not None:
                        breaker.record_failure()
                        trial = False
                    if policy.retry_on_connection_error and retries + 1 < policy.attempts:
                        retries += 1
                        yield SLEEP, policy.backoff(retries)
                        continue
                    raise self._transport_error(
                        errors.ConnectionFailedError, op, request, exc, retries
                    ) from None
                except httpx.HTTPError as exc:
                    if breaker is not None:
                        breaker.record_failure()
                        trial = False
                    raise self._transport_error(
                        errors.TransportError, op, request, exc, retries
                    ) from None

                status = response.status_code
                if status < 400:
                    if breaker is not None:
                        breaker.record_success()
                        trial = False
                    return response

                if streamed:
                    yield READ, response
                server_side = status >= 500 or status == 429
                if breaker is not None:
                    if server_side:
                        breaker.record_failure()
                    else:
                        breaker.record_success()  # the service is up; the request was wrong
                    trial = False
                if status in policy.retry_on_status and retries + 1 < policy.attempts:
                    delay = policy.delay_for_status(retries + 1, self._retry_after(response))
                    if delay is not None:
                        retries += 1
                        yield SLEEP, delay
                        continue
                raise self.status_error(op, response, retries)
        finally:
            # Closed (cancelled, interrupted) or failed before the trial had its verdict:
            # let another call try, or the circuit would stay half-open with no trial.
            if trial:
                breaker.abandon_trial()  # type: ignore[union-attr]

    # -- errors ---------------------------------------------------------------------------

    def _retry_after(self, response: httpx.Response) -> float | None:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None and self.quota is not None:
            reset = self._quota_reset(response)
            if reset is not None:
                import time

                retry_after = max(0.0, reset - time.time())
        return retry_after

    def _quota_reset(self, response: httpx.Response) -> float | None:
        """Epoch seconds when the quota resets, if the quota headers say it is used up."""
        quota = self.quota
        if quota is None or response.headers.get(quota.remaining) != "0" or not quota.reset:
            return None
        raw = response.headers.get(quota.reset)
        try:
            value = float(raw) if raw is not None else None
        except ValueError:
            return None
        if value is None:
            return None
        if quota.reset_format == "seconds":
            import time

            return time.time() + value
        return value

    def _url(self, request: httpx.Request) -> str:
        return scrub(str(request.url), self.secrets)

    def _transport_error(
        self,
        cls: type[errors.TransportError],
        op: Operation[Any],
        request: httpx.Request,
        exc: Exception,
        retries: int,
        detail: str | None = None,
    ) -> errors.TransportError:
        tries = f" after {retries + 1} attempts" if retries else ""
        if detail is None:
            detail = scrub(str(exc) or type(exc).__name__, self.secrets)
        return cls(
            f"{request.method} {self._url(request)} failed{tries}: {detail}",
            connector=self.connector,
            operation=op.name,
        )

    def status_error(
        self, op: Operation[Any], response: httpx.Response, retries: int = 0
    ) -> errors.HTTPStatusError:
        """The typed exception for an error response (its body already read)."""
        status = response.status_code
        request = response.request
        body = scrub(_text(response), self.secrets)
        reason = _error_message(body) or response.reason_phrase
        tries = f" (after {retries + 1} attempts)" if retries else ""
        message = f"{request.method} {self._url(request)} -> {status}: {reason}{tries}"
        common: dict[str, Any] = {
            "status_code": status,
            "method": request.method,
            "url": self._url(request),
            "body": body,
            "headers": {k: scrub(v, self.secrets) for k, v in response.headers.items()},
            "connector": self.connector,
            "operation": op.name,
        }
        quota_reset = self._quota_reset(response)
        if status == 429 or quota_reset is not None:
            limited = errors.RateLimitedError(
                message,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                reset_at=utc_from_epoch(quota_reset) if quota_reset is not None else None,
                **common,
            )
            return limited
        error = errors.error_for_status(status)(message, **common)
        decoder = error_decoder(op, status)
        content = _content(response)
        if decoder is not None and content:
            try:
                error.error = decoder.from_json(content)
            except ValueError:
                pass  # the body is not the documented one; `body` still has the text
        return error

    def validation_error(
        self, op: Operation[Any], response: httpx.Response, exc: Exception, body: str | None = None
    ) -> errors.ResponseValidationError:
        """``body`` is the text that failed (a stream's chunk); default: the response body."""
        if body is None:
            try:
                body = response.text
            except httpx.ResponseNotRead:
                body = ""
        body = scrub(body, self.secrets)
        get_errors = getattr(exc, "errors", None)
        first = get_errors()[0] if get_errors is not None and get_errors() else {}
        if get_errors is None or first.get("type") == "json_invalid":
            detail = first.get("ctx", {}).get("error") or str(exc)
            what = f"response is not valid JSON ({detail})"
        else:
            what = f"response does not match the declared model: {_summarise(exc)}"
        return errors.ResponseValidationError(
            what, body=body, connector=self.connector, operation=op.name
        )


def _content(response: httpx.Response) -> bytes:
    """The body read so far: empty when it was not read (its read failed or was cut)."""
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _text(response: httpx.Response) -> str:
    try:
        return response.text
    except httpx.ResponseNotRead:
        return ""


def _error_message(body: str) -> str:
    """The human message inside a typical JSON error body, else a short excerpt."""
    text = body.strip()
    if not text:
        return ""
    if text[:1] == "{":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for candidate in (data.get("error"), data):
                if isinstance(candidate, dict):
                    for key in ("message", "detail", "error_description", "title"):
                        value = candidate.get(key)
                        if isinstance(value, str) and value:
                            return value
                elif isinstance(candidate, str) and candidate:
                    return candidate
    return text[:200]


def _summarise(exc: Exception) -> str:
    get_errors = getattr(exc, "errors", None)
    if get_errors is None:
        return str(exc)
    parts = []
    for error in get_errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)
