"""Fault injection beyond ``fake_services``: resets, truncation, HTML, trickles, huge bodies.

The server is ``tests/servers/faulty.py`` (uvicorn in a subprocess). Each fault must end
in the documented error type of ``builder.runtime.errors`` — never a raw httpx exception —
after a bounded number of attempts (counted by the server), in bounded time:

=====================================  ==============================================
fault                                  expected
=====================================  ==============================================
reset before any response              ``ConnectionFailedError`` after every attempt
reset / clean close mid-body           ``ConnectionFailedError`` after every attempt
reset in the middle of a stream        ``StreamError``, chunks before it delivered, 1 try
HTML where JSON is declared            ``ResponseValidationError``, not retried
a proxy's HTML 502 page                ``ServerError`` after every attempt
no byte for longer than the timeout    ``TimeoutError``
a body trickling past the timeout      ``TimeoutError`` (the timeout is per request)
a few MB of response                   decoded in full (no size limit: a finding)
a few MB of error body                 ``ServerError`` holding a 500-character excerpt
bursts of 500/502/503, then success    success on the last allowed attempt, or
                                       ``ServerError`` (503) once attempts run out
=====================================  ==============================================

Both the sync and the async client of a small client over the runtime are used, and the
generated ``OpenAI`` client (``base_url`` pointing at ``/{mode}/v1`` routes of the server).
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.client import AsyncClient, SyncClient
from builder.runtime.config import Config
from builder.runtime.operation import Decoder, Operation, Service, StreamFormat
from builder.runtime.resilience import RetryPolicy
from connectors.openai import AsyncOpenAI, OpenAI

pytestmark = pytest.mark.integration

ATTEMPTS = 3
FAST = RetryPolicy(attempts=ATTEMPTS, initial_delay=0.01, max_delay=0.02, jitter=False)
TIMEOUT = 0.5


class Ok(BaseModel):
    ok: bool
    calls: int


class Big(BaseModel):
    ok: bool
    calls: int
    pad: str


class Chunk(BaseModel):
    id: str
    choices: list[dict[str, Any]]


def op(path: str, **kw: Any) -> Operation[Any]:
    return Operation(path.strip("/").replace("/", "_"), "GET", path, **kw)


RESET_BEFORE = op("/reset/before", response=Decoder(Ok))
RESET_MID = op("/reset/mid", response=Decoder(Ok))
CLOSE_MID = op("/close/mid", response=Decoder(Ok))
RESET_STREAM = op("/reset/stream", stream=StreamFormat("sse", Decoder(Chunk), done="[DONE]"))
HTML_TYPED = op("/html", response=Decoder(Ok))
HTML_UNTYPED = op("/html")
HTML_502 = op("/html502", response=Decoder(Ok))
TRICKLE = op("/trickle", response=Decoder(Ok))
BIG = op("/big", response=Decoder(Big))
BIG_ERROR = op("/big", response=Decoder(Ok))
BURST = op("/burst", response=Decoder(Ok))

SERVICE = Service(name="faulty", base_url="http://127.0.0.1:9", timeout=TIMEOUT, retry=FAST)


class Faulty(SyncClient):
    _service = SERVICE

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(Config({"base_url": base_url}), **kw)


class AsyncFaulty(AsyncClient):
    _service = SERVICE

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(Config({"base_url": base_url}), **kw)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.servers.runner import run_server

    with run_server(app_path="tests.servers.faulty:app", ready_path="/health") as url:
        yield url


def calls(server: str, key: str) -> int:
    with httpx.Client(base_url=server, timeout=5.0, trust_env=False) as raw:
        return int(raw.get("/calls", params={"key": key}).json()["calls"])


def key() -> str:
    return uuid.uuid4().hex


def call(server: str, operation: Operation[Any], *, sync: bool, **query: Any) -> Any:
    """One call through the sync or the async client; returns the result or the error."""
    if sync:
        with Faulty(server) as client:
            try:
                return client._call(operation, query=query)
            except BaseException as exc:  # noqa: BLE001 - we look at whatever escapes
                return exc

    async def run() -> Any:
        async with AsyncFaulty(server) as client:
            try:
                return await client._call(operation, query=query)
            except BaseException as exc:  # noqa: BLE001
                return exc

    return asyncio.run(run())


def assert_error(result: Any, cls: type[errors.ConnectorError]) -> errors.ConnectorError:
    assert isinstance(result, BaseException), f"expected {cls.__name__}, got a result: {result!r}"
    assert not isinstance(result, httpx.HTTPError), f"raw httpx error escaped: {result!r}"
    assert type(result) is cls, f"expected {cls.__name__}, got {type(result).__name__}: {result}"
    return result


SYNC = pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])


# --------------------------------------------------------------------------------------- #
# Connection resets and truncation
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(30)
@SYNC
@pytest.mark.parametrize("operation", [RESET_BEFORE, RESET_MID, CLOSE_MID], ids=lambda o: o.name)
def test_connection_cut_maps_to_connection_failed_after_bounded_retries(
    server: str, operation: Operation[Any], sync: bool
) -> None:
    k = key()
    started = time.monotonic()
    exc = assert_error(call(server, operation, sync=sync, key=k), errors.ConnectionFailedError)
    assert time.monotonic() - started < 5
    assert calls(server, k) == ATTEMPTS, "every attempt and no more"
    assert f"after {ATTEMPTS} attempts" in str(exc) and operation.path in str(exc)


@pytest.mark.timeout(30)
@SYNC
def test_reset_mid_stream_is_a_stream_error_after_the_chunks_before_it(
    server: str, sync: bool
) -> None:
    k = key()
    got: list[Any] = []

    def consume_sync() -> BaseException | None:
        with Faulty(server) as client:
            try:
                with client._stream(RESET_STREAM, query={"key": k}) as stream:
                    for chunk in stream:
                        got.append(chunk)
            except BaseException as exc:  # noqa: BLE001
                return exc
        return None

    async def consume_async() -> BaseException | None:
        async with AsyncFaulty(server) as client:
            try:
                async with await client._stream(RESET_STREAM, query={"key": k}) as stream:
                    async for chunk in stream:
                        got.append(chunk)
            except BaseException as exc:  # noqa: BLE001
                return exc
        return None

    result = consume_sync() if sync else asyncio.run(consume_async())
    assert_error(result, errors.StreamError)
    assert [c.choices[0]["delta"]["content"] for c in got] == ["part0 ", "part1 "]
    assert calls(server, k) == 1, "a stream is not retried once bytes have arrived"


# --------------------------------------------------------------------------------------- #
# HTML where JSON is declared
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(30)
@SYNC
@pytest.mark.parametrize("operation", [HTML_TYPED, HTML_UNTYPED], ids=["model", "untyped"])
def test_html_instead_of_json_is_a_response_validation_error(
    server: str, operation: Operation[Any], sync: bool
) -> None:
    k = key()
    exc = assert_error(call(server, operation, sync=sync, key=k), errors.ResponseValidationError)
    assert "not valid JSON" in str(exc)
    assert isinstance(exc, errors.ResponseValidationError) and "<html>" in exc.body
    assert calls(server, k) == 1, "a validation error is not retried"


@pytest.mark.timeout(30)
@SYNC
def test_a_proxy_html_502_page_is_a_server_error(server: str, sync: bool) -> None:
    k = key()
    exc = assert_error(call(server, HTML_502, sync=sync, key=k), errors.ServerError)
    assert isinstance(exc, errors.ServerError) and exc.status_code == 502
    assert "502 Bad Gateway" in exc.body
    assert calls(server, k) == ATTEMPTS


# --------------------------------------------------------------------------------------- #
# Slow bodies
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(30)
@SYNC
@pytest.mark.parametrize(
    "how",
    [
        {"first": 3 * TIMEOUT, "interval": 0},  # no byte at all for longer than the timeout
        {"pause": 3 * TIMEOUT, "interval": 0, "chunk": 10},  # a stall mid-body
    ],
    ids=["late-first-byte", "stall-mid-body"],
)
def test_no_byte_for_longer_than_the_timeout_is_a_timeout_error(
    server: str, how: dict[str, float], sync: bool
) -> None:
    k = key()
    started = time.monotonic()
    assert_error(call(server, TRICKLE, sync=sync, key=k, **how), errors.TimeoutError)
    elapsed = time.monotonic() - started
    assert elapsed < ATTEMPTS * (TIMEOUT + 0.3) + 1, f"took {elapsed:.1f}s"
    assert calls(server, k) == ATTEMPTS


@pytest.mark.timeout(30)
@SYNC
def test_a_body_trickling_past_the_timeout_is_a_timeout_error(server: str, sync: bool) -> None:
    """One byte every 0.1 s for ~3 s: each read is quick, the response is not. The client's
    ``timeout`` is documented per request ("Timeout: 20.0 s per request"), so the call must
    end with ``TimeoutError`` within about ``attempts x timeout``, not after 3 s."""
    k = key()
    started = time.monotonic()
    result = call(server, TRICKLE, sync=sync, key=k, interval=0.1, chunk=1, size=30)
    elapsed = time.monotonic() - started
    assert isinstance(result, errors.TimeoutError), (
        f"a {TIMEOUT}s timeout, yet the call took {elapsed:.1f}s and returned {result!r}"
    )
    assert elapsed < ATTEMPTS * (TIMEOUT + 0.3) + 1, f"took {elapsed:.1f}s"


# --------------------------------------------------------------------------------------- #
# Oversized responses
# --------------------------------------------------------------------------------------- #


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.timeout(60)
@SYNC
def test_an_oversized_response_is_read_whole(server: str, sync: bool) -> None:
    """Documents what happens: the runtime has no response size limit, so an 8 MB body is
    read and decoded in full (peak memory grows by a few times the body). No error type
    applies; the finding is that nothing bounds it."""
    k = key()
    peak_before = _rss_mb()
    started = time.monotonic()
    result = call(server, BIG, sync=sync, key=k, mb=8)
    elapsed = time.monotonic() - started
    assert isinstance(result, Big), f"expected the decoded body, got {result!r}"[:500]
    assert len(result.pad) > 8_000_000
    assert elapsed < 20 and calls(server, k) == 1
    print(
        f"\n8 MB response ({'sync' if sync else 'async'}): decoded in {elapsed:.2f}s, "
        f"peak RSS {peak_before:.0f} -> {_rss_mb():.0f} MB (no size limit)"
    )


@pytest.mark.timeout(60)
@SYNC
def test_an_oversized_error_body_is_kept_as_a_short_excerpt(server: str, sync: bool) -> None:
    k = key()
    exc = assert_error(
        call(server, BIG_ERROR, sync=sync, key=k, mb=4, status=500), errors.ServerError
    )
    assert isinstance(exc, errors.ServerError)
    assert len(exc.body) <= 500 and len(str(exc)) < 1000
    assert calls(server, k) == ATTEMPTS


# --------------------------------------------------------------------------------------- #
# Bursts of server errors
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(30)
@SYNC
def test_a_burst_shorter_than_the_attempts_ends_in_success(server: str, sync: bool) -> None:
    k = key()
    result = call(server, BURST, sync=sync, key=k, fail=ATTEMPTS - 1, codes="500,502")
    assert isinstance(result, Ok) and result.calls == ATTEMPTS
    assert calls(server, k) == ATTEMPTS


@pytest.mark.timeout(30)
@SYNC
def test_a_burst_as_long_as_the_attempts_is_a_server_error(server: str, sync: bool) -> None:
    k = key()
    started = time.monotonic()
    exc = assert_error(
        call(server, BURST, sync=sync, key=k, fail=10, codes="500,502,503"), errors.ServerError
    )
    assert isinstance(exc, errors.ServerError) and exc.status_code == 503  # the last one
    assert calls(server, k) == ATTEMPTS
    assert time.monotonic() - started < 3


@pytest.mark.timeout(30)
@SYNC
def test_retry_after_on_a_503_burst_is_honoured_and_bounded(server: str, sync: bool) -> None:
    k = key()
    started = time.monotonic()
    result = call(server, BURST, sync=sync, key=k, fail=1, codes="503", retry_after="0.3")
    elapsed = time.monotonic() - started
    assert isinstance(result, Ok) and calls(server, k) == 2
    assert 0.3 <= elapsed < 3


# --------------------------------------------------------------------------------------- #
# The generated OpenAI client against the same faults
# --------------------------------------------------------------------------------------- #

OPENAI_CASES: list[tuple[str, type[errors.ConnectorError] | None, int]] = [
    ("ok.{k}", None, 1),
    ("html.{k}", errors.ResponseValidationError, 1),
    ("reset-before.{k}", errors.ConnectionFailedError, ATTEMPTS),
    ("reset-mid.{k}", errors.ConnectionFailedError, ATTEMPTS),
    ("close-mid.{k}", errors.ConnectionFailedError, ATTEMPTS),
    ("burst.{k}.2", None, ATTEMPTS),
    ("burst.{k}.9", errors.ServerError, ATTEMPTS),
]


def _openai_call(base: str, sync: bool, fn: Callable[[Any], Any]) -> Any:
    kw: dict[str, Any] = {"api_key": "k", "base_url": base, "retry": FAST, "timeout": 5.0}
    if sync:
        with OpenAI(**kw) as client:
            try:
                return fn(client)
            except BaseException as exc:  # noqa: BLE001
                return exc

    async def run() -> Any:
        async with AsyncOpenAI(**kw) as client:
            try:
                result = fn(client)
                return await result
            except BaseException as exc:  # noqa: BLE001
                return exc

    return asyncio.run(run())


@pytest.mark.timeout(30)
@SYNC
@pytest.mark.parametrize(
    ("mode", "expected", "tries"),
    OPENAI_CASES,
    ids=[c[0].replace(".{k}", "") for c in OPENAI_CASES],
)
def test_generated_openai_client_under_faults(
    server: str, mode: str, expected: type[errors.ConnectorError] | None, tries: int, sync: bool
) -> None:
    mode = mode.format(k=key())
    result = _openai_call(
        f"{server}/{mode}/v1",
        sync,
        lambda c: c.create_chat_completion(
            model="gpt-fake-mini", messages=[{"role": "user", "content": "hi"}]
        ),
    )
    if expected is None:
        assert type(result).__name__ == "ChatCompletion", repr(result)
        assert result.choices[0].message.content == "echo: hi"
    else:
        assert_error(result, expected)
    assert calls(server, mode) == tries


@pytest.mark.timeout(30)
@SYNC
def test_generated_openai_stream_reset_mid_way(server: str, sync: bool) -> None:
    got: list[str] = []
    kw: dict[str, Any] = {
        "api_key": "k",
        "base_url": f"{server}/reset-stream.{key()}/v1",
        "retry": FAST,
    }
    messages = [{"role": "user", "content": "hi"}]

    def run_sync() -> BaseException | None:
        with OpenAI(**kw) as client:
            try:
                with client.stream_chat_completion(model="m", messages=messages) as stream:
                    got.extend(c.choices[0].delta.content or "" for c in stream)
            except BaseException as exc:  # noqa: BLE001
                return exc
        return None

    async def run_async() -> BaseException | None:
        async with AsyncOpenAI(**kw) as client:
            try:
                stream = await client.stream_chat_completion(model="m", messages=messages)
                async with stream:
                    async for c in stream:
                        got.append(c.choices[0].delta.content or "")
            except BaseException as exc:  # noqa: BLE001
                return exc
        return None

    assert_error(run_sync() if sync else asyncio.run(run_async()), errors.StreamError)
    assert got == ["part0 ", "part1 "]
