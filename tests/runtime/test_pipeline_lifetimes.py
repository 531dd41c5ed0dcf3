"""What a call holds is released however the call ends: a half-open circuit's trial (cut short
by a too-large body, a cancellation or an interrupt) lets the next call try; a failed body
read closes its response; a stream's error body is read within the limits, and a broken one
still gives the typed error; a full connection pool is not the service's failure."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import client as client_module
from builder.runtime import errors
from builder.runtime.operation import Decoder, Operation, StreamFormat
from builder.runtime.resilience import CircuitBreaker, RetryPolicy
from tests.runtime._clients import RAW, AsyncDemo, Demo, FakeClock, service

pytestmark = pytest.mark.timeout(10)

ONCE = RetryPolicy(attempts=1)
RESET = 30.0  # the breakers' reset timeout (on the fake clock)


class Delta(BaseModel):
    text: str


CHAT: Operation[Delta] = Operation(
    "chat", "POST", "/chat", stream=StreamFormat("sse", Decoder(Delta), done="[DONE]")
)
SSE_OK = b'data: {"text": "ok"}\n\ndata: [DONE]\n\n'


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed body that records how many chunks were pulled and whether it was closed;
    ``tick`` advances a clock before each chunk, ``error`` is raised after the last one."""

    def __init__(
        self,
        chunks: list[bytes],
        error: BaseException | None = None,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.chunks = chunks
        self.error = error
        self.tick = tick
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.tick is not None:
                self.tick()
            self.pulled += 1
            yield chunk
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.__iter__():
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Hanging(httpx.AsyncByteStream):
    """An async body that sends its first chunk, then waits for ever (until cancelled)."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.reached = asyncio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        self.reached.set()
        await asyncio.get_running_loop().create_future()
        yield b""  # pragma: no cover - never reached

    async def aclose(self) -> None:
        self.closed = True


class Api:
    """A mocked service whose answer can be switched; counts the requests it gets."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.answer(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def down(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": "down"})


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[1])


def sse_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=SSE_OK)


def too_big(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=Body([b"[" + b"1," * 2000 + b"1]"]))


def breaker_of(client: Demo | AsyncDemo) -> CircuitBreaker:
    breaker = client.circuit_breaker
    assert breaker is not None
    return breaker


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock for the client's whole-response deadline (its body reads), advanced by
    the bodies themselves: no test really waits."""
    fake = FakeClock()
    stand_in = types.SimpleNamespace(monotonic=fake.monotonic, sleep=lambda seconds: None)
    monkeypatch.setattr(client_module, "time", stand_in)
    return fake


# -- F1: a trial call answered with a too-large body ---------------------------------------


def test_a_trial_ending_too_large_closes_the_circuit(clock: FakeClock) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), max_response_bytes=1000, retry=ONCE)
    with Demo(service=svc, transport=api.transport()) as client:
        breaker = breaker_of(client)
        with pytest.raises(errors.ServerError):
            client._call(RAW)
        assert breaker.state == CircuitBreaker.OPEN
        clock.advance(RESET)
        api.answer = too_big
        with pytest.raises(errors.ResponseTooLargeError):
            client._call(RAW)  # the trial: the service answered, so it is up
        assert breaker.state == CircuitBreaker.CLOSED
        api.answer = ok
        assert client._call(RAW) == [1]
    assert api.requests == 3


def test_an_async_trial_ending_too_large_closes_the_circuit(clock: FakeClock) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), max_response_bytes=1000, retry=ONCE)

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=api.transport()) as client:
            breaker = breaker_of(client)
            with pytest.raises(errors.ServerError):
                await client._call(RAW)
            clock.advance(RESET)
            api.answer = too_big
            with pytest.raises(errors.ResponseTooLargeError):
                await client._call(RAW)
            assert breaker.state == CircuitBreaker.CLOSED
            api.answer = ok
            assert await client._call(RAW) == [1]

    asyncio.run(main())
    assert api.requests == 3


# -- F2: a trial call cancelled or interrupted before its verdict --------------------------

# One call a hundred seconds: after the reset timeout, the trial must wait for a token.
SLOW_LIMIT = (0.01, 1.0)


def test_a_trial_interrupted_waiting_for_the_limiter_lets_the_next_call_try(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), rate_limit=SLOW_LIMIT, retry=ONCE)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    with Demo(service=svc, transport=api.transport()) as client:
        breaker = breaker_of(client)
        with pytest.raises(errors.ServerError):
            client._call(RAW)
        clock.advance(RESET)
        api.answer = ok
        monkeypatch.setattr(client_module.time, "sleep", interrupt)
        with pytest.raises(KeyboardInterrupt):
            client._call(RAW)  # the trial, interrupted (Ctrl-C) while waiting for a token
        assert api.requests == 1
        monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)
        assert client._call(RAW) == [1]  # a new trial, not "circuit open; retry in 0.0s"
        assert breaker.state == CircuitBreaker.CLOSED
    assert api.requests == 2


def test_a_trial_interrupted_reading_a_stream_error_body_lets_the_next_call_try(
    clock: FakeClock,
) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), retry=ONCE)
    with Demo(service=svc, transport=api.transport()) as client:
        breaker = breaker_of(client)
        with pytest.raises(errors.ServerError):
            client._stream(CHAT, body={})
        clock.advance(RESET)
        interrupted = Body([b'{"error": '], error=KeyboardInterrupt())
        api.answer = lambda request: httpx.Response(500, stream=interrupted)
        with pytest.raises(KeyboardInterrupt):
            client._stream(CHAT, body={})
        assert interrupted.closed
        api.answer = sse_ok
        assert list(client._stream(CHAT, body={})) == [Delta(text="ok")]
        assert breaker.state == CircuitBreaker.CLOSED
    assert api.requests == 3


def test_an_async_trial_cancelled_waiting_for_the_limiter_lets_the_next_call_try(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), rate_limit=SLOW_LIMIT, retry=ONCE)
    fast_sleep = asyncio.sleep  # the conftest's: records the wait, does not wait
    hang = {"next": False}
    waiting = asyncio.Event()  # (bound to the loop that first waits on it)

    async def sleep(seconds: float, result: object = None) -> object:
        if hang["next"]:
            hang["next"] = False
            waiting.set()
            await asyncio.get_running_loop().create_future()  # until cancelled
        return await fast_sleep(seconds, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=api.transport()) as client:
            breaker = breaker_of(client)
            with pytest.raises(errors.ServerError):
                await client._call(RAW)
            clock.advance(RESET)
            api.answer = ok
            hang["next"] = True
            trial = asyncio.create_task(client._call(RAW))
            await waiting.wait()  # the trial waits for a token...
            trial.cancel()  # ...and is cancelled (a wait_for, a TaskGroup)
            with pytest.raises(asyncio.CancelledError):
                await trial
            assert api.requests == 1
            assert await client._call(RAW) == [1]
            assert breaker.state == CircuitBreaker.CLOSED

    asyncio.run(main())
    assert api.requests == 2


def test_an_async_trial_cancelled_reading_a_stream_error_body_lets_the_next_call_try(
    clock: FakeClock,
) -> None:
    api = Api(down)
    svc = service(circuit_breaker=(1, RESET), retry=ONCE)

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=api.transport()) as client:
            breaker = breaker_of(client)
            with pytest.raises(errors.ServerError):
                await client._stream(CHAT, body={})
            clock.advance(RESET)
            body = Hanging(b'{"error": ')
            api.answer = lambda request: httpx.Response(500, stream=body)
            trial = asyncio.create_task(client._stream(CHAT, body={}))
            await body.reached.wait()  # the trial's 500 body is being read...
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            assert body.closed  # the cancelled read's response is closed, not left open
            api.answer = sse_ok
            stream = await client._stream(CHAT, body={})
            assert [chunk async for chunk in stream] == [Delta(text="ok")]
            assert breaker.state == CircuitBreaker.CLOSED

    asyncio.run(main())
    assert api.requests == 3


# -- F4: a stream's error body that breaks while it is read --------------------------------


def broken_503() -> tuple[list[Body], Callable[[httpx.Request], httpx.Response]]:
    bodies: list[Body] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(
            Body(
                [b'{"error": {"message": "overlo'],
                error=httpx.RemoteProtocolError("peer closed connection mid-body"),
            )
        )
        return httpx.Response(503, stream=bodies[-1])

    return bodies, answer


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_broken_stream_error_body_gives_the_typed_error(attempts: int) -> None:
    bodies, answer = broken_503()
    svc = service(retry=RetryPolicy(attempts=attempts, initial_delay=0, jitter=False))
    with Demo(service=svc, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(errors.ConnectorError) as info:
            client._stream(CHAT, body={})
    assert isinstance(info.value, errors.ServerError), repr(info.value)
    assert info.value.status_code == 503
    assert len(bodies) == attempts
    assert all(body.closed for body in bodies)


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_broken_async_stream_error_body_gives_the_typed_error(attempts: int) -> None:
    bodies, answer = broken_503()
    svc = service(retry=RetryPolicy(attempts=attempts, initial_delay=0, jitter=False))

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=httpx.MockTransport(answer)) as client:
            await client._stream(CHAT, body={})

    with pytest.raises(errors.ConnectorError) as info:
        asyncio.run(main())
    assert isinstance(info.value, errors.ServerError), repr(info.value)
    assert info.value.status_code == 503
    assert len(bodies) == attempts
    assert all(body.closed for body in bodies)


# -- F7: no free connection in the client's own pool ---------------------------------------


def pool_full(request: httpx.Request) -> httpx.Response:
    raise httpx.PoolTimeout("no connection available", request=request)


@pytest.mark.parametrize("threshold", [1, 5])
def test_a_pool_timeout_is_a_timeout_sent_once_and_not_the_services_failure(
    threshold: int, sleeps: list[float]
) -> None:
    api = Api(pool_full)
    svc = service(circuit_breaker=(threshold, RESET))  # retries timeouts, three attempts
    with Demo(service=svc, transport=api.transport()) as client:
        with pytest.raises(errors.ConnectorError) as info:
            client._call(RAW)
        assert type(info.value) is errors.TimeoutError, repr(info.value)
        assert api.requests == 1  # a retry would only queue for the same pool
        assert sleeps == []
        assert breaker_of(client).state == CircuitBreaker.CLOSED
        api.answer = ok
        assert client._call(RAW) == [1]


@pytest.mark.parametrize("threshold", [1, 5])
def test_an_async_pool_timeout_is_a_timeout_sent_once_and_not_the_services_failure(
    threshold: int, sleeps: list[float]
) -> None:
    api = Api(pool_full)
    svc = service(circuit_breaker=(threshold, RESET))

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=api.transport()) as client:
            with pytest.raises(errors.ConnectorError) as info:
                await client._stream(CHAT, body={})
            assert type(info.value) is errors.TimeoutError, repr(info.value)
            assert api.requests == 1
            assert sleeps == []
            assert breaker_of(client).state == CircuitBreaker.CLOSED
            api.answer = sse_ok
            stream = await client._stream(CHAT, body={})
            assert [chunk async for chunk in stream] == [Delta(text="ok")]

    asyncio.run(main())


def test_five_pool_timeouts_leave_the_circuit_closed() -> None:
    api = Api(pool_full)
    svc = service(circuit_breaker=(5, RESET))
    with Demo(service=svc, transport=api.transport()) as client:
        for _ in range(5):
            with pytest.raises(errors.TimeoutError):
                client._call(RAW)
        assert breaker_of(client).state == CircuitBreaker.CLOSED
        api.answer = ok
        assert client._call(RAW) == [1]
    assert api.requests == 6


# -- F8: a stream's error body is read within max_response_bytes and the deadline ----------

LIMIT = 4096
KIB = b"x" * 1024


def test_a_huge_stream_error_body_is_not_read_whole() -> None:
    body = Body([KIB] * 1000)
    svc = service(max_response_bytes=LIMIT, retry=ONCE)
    transport = httpx.MockTransport(lambda request: httpx.Response(500, stream=body))
    with Demo(service=svc, transport=transport) as client:
        with pytest.raises(errors.ServerError) as info:
            client._stream(CHAT, body={})
    assert info.value.status_code == 500
    assert body.pulled <= LIMIT // len(KIB) + 1  # not the whole MiB
    assert body.closed


def test_a_huge_async_stream_error_body_is_not_read_whole() -> None:
    body = Body([KIB] * 1000)
    svc = service(max_response_bytes=LIMIT, retry=ONCE)
    transport = httpx.MockTransport(lambda request: httpx.Response(500, stream=body))

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=transport) as client:
            await client._stream(CHAT, body={})

    with pytest.raises(errors.ServerError) as info:
        asyncio.run(main())
    assert info.value.status_code == 500
    assert body.pulled <= LIMIT // len(KIB) + 1
    assert body.closed


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_trickling_stream_error_body_is_read_within_the_deadline(
    asynchronous: bool, wall: FakeClock
) -> None:
    body = Body([b"x"] * 1000, tick=lambda: wall.advance(1.0))  # a byte a second
    svc = service(timeout=5.0, retry=ONCE)
    transport = httpx.MockTransport(lambda request: httpx.Response(500, stream=body))

    async def main() -> None:
        async with AsyncDemo(service=svc, transport=transport) as client:
            await client._stream(CHAT, body={})

    with pytest.raises(errors.ServerError):
        if asynchronous:
            asyncio.run(main())
        else:
            with Demo(service=svc, transport=transport) as client:
                client._stream(CHAT, body={})
    assert body.pulled <= 6  # given up after the 5 s timeout, not 1000 s later
    assert body.closed


# -- F10: a failed non-streamed body read closes its response ------------------------------


def failing_bodies(wall: FakeClock) -> dict[str, tuple[Body, type[errors.ConnectorError]]]:
    return {
        "too large": (Body([b"x" * 600] * 3), errors.ResponseTooLargeError),
        "read error": (
            Body([b"x"], error=httpx.ReadError("connection reset")),
            errors.ConnectionFailedError,
        ),
        "deadline": (Body([b"x"] * 5, tick=lambda: wall.advance(1.0)), errors.TimeoutError),
    }


CASES = ["too large", "read error", "deadline"]
READ_SVC = service(max_response_bytes=1000, timeout=2.5, retry=ONCE)


@pytest.mark.parametrize("case", CASES)
def test_a_failed_body_read_closes_the_response(case: str, wall: FakeClock) -> None:
    body, expected = failing_bodies(wall)[case]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=body))
    with Demo(service=READ_SVC, transport=transport) as client:
        with pytest.raises(expected):
            client._call(RAW)
        assert body.closed  # at once, not left to the collector


@pytest.mark.parametrize("case", CASES)
def test_a_failed_async_body_read_closes_the_response(case: str, wall: FakeClock) -> None:
    body, expected = failing_bodies(wall)[case]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=body))

    async def main() -> None:
        async with AsyncDemo(service=READ_SVC, transport=transport) as client:
            with pytest.raises(expected):
                await client._call(RAW)
            assert body.closed

    asyncio.run(main())
