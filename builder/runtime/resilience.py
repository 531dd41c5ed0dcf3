"""Retry policy, token-bucket rate limiter and circuit breaker.

These are plain state machines with no I/O: the request pipeline asks them what to do and
does the sleeping itself, so one implementation serves the sync and the async client.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["CircuitBreaker", "RetryPolicy", "TokenBucket", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying a failed request again.

    ``attempts`` counts the first try: 1 means no retry. The n-th retry waits
    ``initial_delay * multiplier ** (n - 1)`` capped at ``max_delay``, with full jitter when
    ``jitter`` is on; a ``Retry-After`` header, when honoured, replaces that wait unless it
    exceeds ``max_retry_after`` (then the error is raised at once: waiting that long is the
    caller's decision, not ours).
    """

    attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_on_status: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
    retry_on_timeout: bool = True
    retry_on_connection_error: bool = True
    respect_retry_after: bool = True
    max_retry_after: float = 60.0

    def backoff(self, retry_number: int) -> float:
        """The wait before retry number ``retry_number`` (1-based), jitter applied."""
        delay = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        if self.jitter:
            # "Equal jitter": never less than half the backoff, so retries stay spread out.
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay

    def delay_for_status(self, retry_number: int, retry_after: float | None) -> float | None:
        """The wait before retrying after an error status, or None to give up now."""
        if retry_after is not None and self.respect_retry_after:
            if retry_after > self.max_retry_after:
                return None
            return retry_after
        return self.backoff(retry_number)


NO_RETRY = RetryPolicy(attempts=1)


class TokenBucket:
    """A token-bucket rate limiter: ``rate`` tokens a second, at most ``burst`` saved up.

    :meth:`reserve` takes a token and returns how long the caller must wait before using it,
    so waiting callers queue in order and the long-run rate never exceeds ``rate``.
    """

    __slots__ = ("rate", "burst", "_tokens", "_updated", "_lock")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before it may be used (0 if none)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.rate


class CircuitBreaker:
    """Fails fast after ``failure_threshold`` consecutive failures.

    closed -> (threshold failures) -> open -> (``reset_timeout`` passes) -> half-open: one
    trial call is let through; success closes the circuit, failure opens it again.
    """

    __slots__ = ("failure_threshold", "reset_timeout", "_failures", "_opened_at", "_trial", "_lock")

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return self.CLOSED
        if time.monotonic() - self._opened_at >= self.reset_timeout:
            return self.HALF_OPEN
        return self.OPEN

    @property
    def retry_in(self) -> float:
        """Seconds until an open circuit half-opens (0 when it is closed or half-open)."""
        opened_at = self._opened_at
        if opened_at is None:
            return 0.0
        return max(0.0, self.reset_timeout - (time.monotonic() - opened_at))

    def before_call(self) -> float:
        """0 if the call may go ahead, else the seconds until the circuit half-opens."""
        return self.admit()[0]

    def admit(self) -> tuple[float, bool]:
        """``(wait, trial)``: ``wait`` as :meth:`before_call`; ``trial`` True when this call
        is the half-open circuit's one trial, which owes a verdict (:meth:`record_success`,
        :meth:`record_failure`) or, if it ends without one, :meth:`abandon_trial`."""
        if self._opened_at is None:
            return 0.0, False
        with self._lock:
            if self._opened_at is None:
                return 0.0, False
            waited = time.monotonic() - self._opened_at
            if waited < self.reset_timeout:
                return self.reset_timeout - waited, False
            if self._trial:  # a trial call is already under way
                return 0.001, False
            self._trial = True
            return 0.0, True

    def record_success(self) -> None:
        if self._failures or self._opened_at is not None:
            with self._lock:
                self._failures = 0
                self._opened_at = None
                self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.failure_threshold:
                self._opened_at = time.monotonic()
                self._trial = False

    def abandon_trial(self) -> None:
        """A trial call ended without a verdict (cancelled): let another one try."""
        if self._trial:
            with self._lock:
                self._trial = False

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
