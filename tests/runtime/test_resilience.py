"""Retry policy, Retry-After parsing, token bucket and circuit breaker (no real waiting)."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.runtime.resilience import (
    NO_RETRY,
    CircuitBreaker,
    RetryPolicy,
    TokenBucket,
    parse_retry_after,
    utc_from_epoch,
)
from tests.runtime._clients import FakeClock

pytestmark = pytest.mark.timeout(10)

DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_TS = datetime(2015, 10, 21, 7, 28, tzinfo=UTC).timestamp()


# -- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 3.5 ", 3.5),
        ("-5", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("Wed, 99 Foo 2015", None),
    ],
)
def test_parse_retry_after_seconds_and_garbage(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after(DATE, now=DATE_TS - 30) == pytest.approx(30.0)
    assert parse_retry_after(DATE, now=DATE_TS) == 0.0


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(DATE, now=DATE_TS + 3600) == 0.0


def test_parse_retry_after_uses_current_time(clock: FakeClock) -> None:
    when = datetime.fromtimestamp(clock.time() + 90, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True)) == pytest.approx(90.0)


def test_parse_retry_after_naive_date_is_utc() -> None:
    # "-0000" yields a naive datetime: it must be read as UTC.
    header = "Wed, 21 Oct 2015 07:28:00 -0000"
    assert parse_retry_after(header, now=DATE_TS - 10) == pytest.approx(10.0)


# -- RetryPolicy ---------------------------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.attempts == 3
    assert policy.retry_on_status == frozenset({408, 429, 500, 502, 503, 504})
    assert NO_RETRY.attempts == 1


def test_backoff_without_jitter_is_exponential() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=3.0, max_delay=5.0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 5)] == [1.0, 3.0, 5.0, 5.0]


def test_zero_initial_delay_never_waits() -> None:
    policy = RetryPolicy(initial_delay=0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 4)] == [0.0, 0.0, 0.0]


@settings(max_examples=200, deadline=None)
@given(
    retry=st.integers(min_value=1, max_value=30),
    initial=st.floats(min_value=0.001, max_value=10),
    multiplier=st.floats(min_value=1, max_value=4),
    cap=st.floats(min_value=0.01, max_value=60),
)
def test_backoff_with_jitter_stays_within_half_and_full_delay(
    retry: int, initial: float, multiplier: float, cap: float
) -> None:
    policy = RetryPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap, jitter=True)
    full = min(cap, initial * multiplier ** (retry - 1))
    delay = policy.backoff(retry)
    assert full / 2 - 1e-9 <= delay <= full + 1e-9
    assert delay <= cap + 1e-9


def test_jitter_actually_varies() -> None:
    random.seed(1234)
    policy = RetryPolicy(initial_delay=1.0, jitter=True)
    samples = [policy.backoff(3) for _ in range(50)]
    assert len(set(samples)) > 40
    assert all(2.0 <= s <= 4.0 for s in samples)


def test_delay_for_status_honours_retry_after() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=False)
    assert policy.delay_for_status(1, 7.0) == 7.0
    assert policy.delay_for_status(2, 0.0) == 0.0


def test_delay_for_status_without_retry_after_uses_backoff() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=False)
    assert policy.delay_for_status(1, None) == 1.0
    assert policy.delay_for_status(3, None) == 4.0


def test_delay_for_status_ignores_retry_after_when_told() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=False, respect_retry_after=False)
    assert policy.delay_for_status(2, 7.0) == 2.0
    assert policy.delay_for_status(1, 10_000.0) == 1.0


def test_delay_for_status_gives_up_above_max_retry_after() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay_for_status(1, 60.0) == 60.0
    assert policy.delay_for_status(1, 60.5) is None
    assert policy.delay_for_status(1, 3600.0) is None


# -- TokenBucket ---------------------------------------------------------------------------


def test_bucket_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(-1)


def test_bucket_default_burst() -> None:
    assert TokenBucket(10).burst == 10
    assert TokenBucket(0.5).burst == 1.0
    assert TokenBucket(5, burst=2).burst == 2


def test_bucket_burst_then_waits_one_interval_each(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=3)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_refills_with_time(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        assert bucket.reserve() == 0.0
    clock.advance(0.1)  # one token back
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)


def test_bucket_never_saves_more_than_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=2)
    clock.advance(3600)
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_bucket_debt_is_repaid_before_new_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=1)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    clock.advance(0.2)  # the two queued callers have used their tokens
    assert bucket.reserve() == pytest.approx(0.1)


def test_bucket_long_run_rate(clock: FakeClock) -> None:
    """A caller that waits exactly as told gets ``burst + rate * elapsed`` calls, no more."""
    rate, burst, calls = 20.0, 5.0, 205
    bucket = TokenBucket(rate=rate, burst=burst)
    start = clock.now
    uses = []
    for _ in range(calls):
        clock.advance(bucket.reserve())
        uses.append(clock.now - start)
    elapsed = uses[-1]
    assert elapsed == pytest.approx((calls - burst) / rate)
    # In every window of one second there are at most rate + burst uses.
    for i, t in enumerate(uses):
        in_window = sum(1 for u in uses[i:] if u < t + 1.0)
        assert in_window <= rate + burst


def test_bucket_concurrent_reservations_queue_in_order(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=100, burst=1)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            wait = bucket.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([k / 100 for k in range(400)])


# -- CircuitBreaker ------------------------------------------------------------------------


def test_breaker_stays_closed_below_threshold(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.before_call() == 0.0


def test_breaker_success_resets_the_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == CircuitBreaker.CLOSED


def test_breaker_full_cycle(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.before_call() == pytest.approx(10.0)
    clock.advance(4)
    assert breaker.before_call() == pytest.approx(6.0)
    clock.advance(6)
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert breaker.before_call() == 0.0  # the single trial call
    assert breaker.before_call() > 0  # others still wait while the trial runs
    assert breaker.before_call() > 0
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.before_call() == 0.0
    assert breaker.before_call() == 0.0


def test_breaker_failed_trial_reopens_with_a_fresh_timer(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(10)
    assert breaker.before_call() == 0.0
    breaker.record_failure()  # a single failure in half-open is enough
    assert breaker.state == CircuitBreaker.OPEN
    assert breaker.before_call() == pytest.approx(10.0)
    clock.advance(10)
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert breaker.before_call() == 0.0
    breaker.record_success()
    assert breaker.state == CircuitBreaker.CLOSED


def test_breaker_reset(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10)
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.OPEN
    breaker.reset()
    assert breaker.state == CircuitBreaker.CLOSED
    assert breaker.before_call() == 0.0


def test_breaker_with_real_clock_and_tiny_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.0)
    breaker.record_failure()
    assert breaker.state == CircuitBreaker.HALF_OPEN
    assert breaker.before_call() == 0.0
    assert breaker.before_call() > 0


def test_breaker_only_one_trial_among_threads(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1)
    breaker.record_failure()
    clock.advance(1)
    results: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        wait = breaker.before_call()
        with lock:
            results.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(0.0) == 1


def test_utc_from_epoch() -> None:
    assert utc_from_epoch(1_700_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
