"""OAuth2 client credentials through the clients: only the token endpoint's response is read
by the auth flow (a stream stays a stream, ``max_response_bytes`` applies), concurrent calls
share one token fetch (at start-up and at each expiry, across event loops), and the cache,
the 401 renewal and the token endpoint's errors behave as before."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.auth import OAuth2ClientCredentials
from builder.runtime.operation import Decoder, Operation, Service, StreamFormat
from builder.runtime.resilience import RetryPolicy
from tests.runtime._clients import RAW, AsyncDemo, Demo, service

pytestmark = pytest.mark.timeout(20)

TOKEN_URL = "https://api.test/oauth/token"
SECRET = "client-s3cret-value"
LIMIT = 4096


class Delta(BaseModel):
    text: str


CHAT: Operation[Delta] = Operation(
    "chat", "POST", "/chat", stream=StreamFormat("sse", Decoder(Delta), done="[DONE]")
)
BLOB: Operation[bytes] = Operation("blob", "GET", "/blob", response_kind="bytes")
EVENTS = [f'data: {{"text": "{i}"}}\n\n'.encode() for i in range(5)] + [b"data: [DONE]\n\n"]


def oauth_service(**changes: Any) -> Service:
    auth = OAuth2ClientCredentials(TOKEN_URL, "client-id", SECRET)
    return service(auth=auth, retry=RetryPolicy(attempts=1), **changes)


class TokenEndpoint:
    """Hands out tok-1, tok-2, ... and counts them; ``expires_in`` 30 is the renewal margin,
    so such a token is renewed by the next call."""

    def __init__(self, expires_in: int = 3600, status: int = 200) -> None:
        self.expires_in, self.status = expires_in, status
        self.calls = 0
        self.forms: list[str] = []

    def respond(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.forms.append(request.content.decode())
        if self.status >= 400:
            return httpx.Response(self.status, json={"error": "invalid_client"})
        body = {"access_token": f"tok-{self.calls}", "expires_in": self.expires_in}
        return httpx.Response(200, json=body)


class Pulled:
    """A response body that records how many chunks were taken from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.pulled = chunks, 0

    def sync(self) -> httpx.SyncByteStream:
        outer = self

        class Body(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in outer.chunks:
                    outer.pulled += 1
                    yield chunk

        return Body()

    def asynchronous(self) -> httpx.AsyncByteStream:
        outer = self

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                for chunk in outer.chunks:
                    outer.pulled += 1
                    yield chunk

        return Body()


SSE = {"content-type": "text/event-stream"}


# -- the API response is not read by the flow ------------------------------------------------


def test_a_stream_is_not_read_by_the_flow() -> None:
    endpoint, body = TokenEndpoint(), Pulled(EVENTS)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        assert request.headers["Authorization"] == "Bearer tok-1"
        return httpx.Response(200, headers=SSE, stream=body.sync())

    with Demo(service=oauth_service(), transport=httpx.MockTransport(handler)) as client:
        stream = client._stream(CHAT, body={})
        assert body.pulled == 0  # nothing read before the caller asks for it
        first = next(iter(stream))
        assert first == Delta(text="0")
        assert body.pulled == 1
        stream.close()
    assert endpoint.calls == 1


def test_an_async_stream_is_not_read_by_the_flow() -> None:
    endpoint, body = TokenEndpoint(), Pulled(EVENTS)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        assert request.headers["Authorization"] == "Bearer tok-1"
        return httpx.Response(200, headers=SSE, stream=body.asynchronous())

    async def scenario() -> list[Delta]:
        transport = httpx.MockTransport(handler)
        async with AsyncDemo(service=oauth_service(), transport=transport) as client:
            stream = await client._stream(CHAT, body={})
            assert body.pulled == 0
            try:
                return [delta async for delta in stream]
            finally:
                await stream.aclose()

    assert asyncio.run(scenario()) == [Delta(text=str(i)) for i in range(5)]
    assert endpoint.calls == 1


def test_max_response_bytes_applies_with_client_credentials() -> None:
    endpoint, body = TokenEndpoint(), Pulled([b"x" * 1024] * 1000)  # 1 MB

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        return httpx.Response(200, stream=body.sync())

    svc = oauth_service(max_response_bytes=LIMIT)
    with Demo(service=svc, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(errors.ResponseTooLargeError, match="larger than 4,096 bytes"):
            client._call(BLOB)
    assert body.pulled <= LIMIT // 1024 + 1  # stopped at the limit, did not take 1 MB


def test_max_response_bytes_applies_with_client_credentials_async() -> None:
    endpoint, body = TokenEndpoint(), Pulled([b"x" * 1024] * 1000)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        return httpx.Response(200, stream=body.asynchronous())

    async def scenario() -> None:
        svc = oauth_service(max_response_bytes=LIMIT)
        async with AsyncDemo(service=svc, transport=httpx.MockTransport(handler)) as client:
            await client._call(BLOB)

    with pytest.raises(errors.ResponseTooLargeError):
        asyncio.run(scenario())
    assert body.pulled <= LIMIT // 1024 + 1


def test_a_streamed_token_response_is_still_read() -> None:
    token = json.dumps({"access_token": "tok-streamed", "expires_in": 3600}).encode()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return httpx.Response(200, stream=Pulled([token[:10], token[10:]]).asynchronous())
        return httpx.Response(200, json={"auth": request.headers["Authorization"]})

    async def scenario() -> Any:
        async with AsyncDemo(
            service=oauth_service(), transport=httpx.MockTransport(handler)
        ) as client:
            return await client._call(RAW)

    assert asyncio.run(scenario()) == {"auth": "Bearer tok-streamed"}


# -- one token fetch at a time -----------------------------------------------------------------


def run_threads(count: int, call: Callable[[], Any]) -> list[Any]:
    """``call`` on ``count`` threads started together; their results (or exceptions)."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def slow_sync_handler(endpoint: TokenEndpoint, seen: list[str]) -> Any:
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            threading.Event().wait(0.1)  # a slow token endpoint (time.sleep is faked)
            with lock:
                return endpoint.respond(request)
        with lock:
            seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=[1])

    return handler


def test_concurrent_threads_fetch_the_token_once() -> None:
    endpoint, seen = TokenEndpoint(), []
    transport = httpx.MockTransport(slow_sync_handler(endpoint, seen))
    with Demo(service=oauth_service(), transport=transport) as client:
        results = run_threads(8, lambda: client._call(RAW))
    assert results == [[1]] * 8
    assert endpoint.calls == 1
    assert seen == ["Bearer tok-1"] * 8


def test_concurrent_threads_renew_an_expired_token_once(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, seen = TokenEndpoint(expires_in=3600), []
    shift = [0.0]
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + shift[0])
    transport = httpx.MockTransport(slow_sync_handler(endpoint, seen))
    with Demo(service=oauth_service(), transport=transport) as client:
        assert client._call(RAW) == [1]
        assert client._call(RAW) == [1]
        assert endpoint.calls == 1  # cached
        shift[0] = 3600.0  # the hour is up
        results = run_threads(8, lambda: client._call(RAW))
    assert results == [[1]] * 8
    assert endpoint.calls == 2
    assert seen == ["Bearer tok-1"] * 2 + ["Bearer tok-2"] * 8


async def slow_async_handler(
    endpoint: TokenEndpoint, seen: list[str], request: httpx.Request
) -> httpx.Response:
    for _ in range(5):  # the network: other calls run meanwhile
        await asyncio.sleep(0)
    if request.url == TOKEN_URL:
        return endpoint.respond(request)
    seen.append(request.headers["Authorization"])
    return httpx.Response(200, json=[1])


def test_concurrent_tasks_fetch_the_token_once() -> None:
    endpoint, seen = TokenEndpoint(), []

    async def handler(request: httpx.Request) -> httpx.Response:
        return await slow_async_handler(endpoint, seen, request)

    async def scenario() -> list[Any]:
        transport = httpx.MockTransport(handler)
        async with AsyncDemo(service=oauth_service(), transport=transport) as client:
            first = await asyncio.gather(*(client._call(RAW) for _ in range(10)))
            again = await asyncio.gather(*(client._call(RAW) for _ in range(10)))
            return first + again

    assert asyncio.run(scenario()) == [[1]] * 20
    assert endpoint.calls == 1
    assert seen == ["Bearer tok-1"] * 20


def test_tasks_renew_once_per_expiry_across_event_loops() -> None:
    # Tokens good for no time at all (expires_in == the renewal margin): every burst of
    # calls renews once, and the calls waiting for it use it. The client outlives its
    # first event loop, so its lock must not be tied to one.
    endpoint, seen = TokenEndpoint(expires_in=30), []

    async def handler(request: httpx.Request) -> httpx.Response:
        return await slow_async_handler(endpoint, seen, request)

    client = AsyncDemo(service=oauth_service(), transport=httpx.MockTransport(handler))

    async def burst() -> list[Any]:
        return await asyncio.gather(*(client._call(RAW) for _ in range(6)))

    try:
        assert asyncio.run(burst()) == [[1]] * 6
        assert asyncio.run(burst()) == [[1]] * 6
    finally:
        asyncio.run(client.aclose())
    assert endpoint.calls == 2
    assert seen == ["Bearer tok-1"] * 6 + ["Bearer tok-2"] * 6


# -- as before: caching, expiry, 401 renewal, the token endpoint's errors -------------------------


def test_the_token_is_cached_and_fetched_again_after_expiry() -> None:
    endpoint, seen = TokenEndpoint(expires_in=30), []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json=[1])

    with Demo(service=oauth_service(), transport=httpx.MockTransport(handler)) as client:
        client._call(RAW)
        client._call(RAW)
    assert seen == ["Bearer tok-1", "Bearer tok-2"]
    assert endpoint.forms == ["grant_type=client_credentials"] * 2

    endpoint, seen = TokenEndpoint(expires_in=3600), []
    with Demo(service=oauth_service(), transport=httpx.MockTransport(handler)) as client:
        client._call(RAW)
        client._call(RAW)
    assert seen == ["Bearer tok-1", "Bearer tok-1"]


def test_a_401_renews_a_cached_token_once() -> None:
    endpoint, seen = TokenEndpoint(), []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        seen.append(request.headers["Authorization"])
        if len(seen) == 2:  # tok-1 revoked early
            return httpx.Response(401, json={"message": "token revoked"})
        return httpx.Response(200, json=[1])

    with Demo(service=oauth_service(), transport=httpx.MockTransport(handler)) as client:
        assert client._call(RAW) == [1]
        assert client._call(RAW) == [1]
    assert seen == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert endpoint.calls == 2


def check_refusal(error: errors.AuthenticationError) -> None:
    assert error.status_code == 401
    assert "token endpoint refused the client credentials (401)" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error)


def test_a_failing_token_endpoint_raises_authentication_error() -> None:
    endpoint, api_calls = TokenEndpoint(status=401), []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        api_calls.append(request)
        return httpx.Response(200, json=[1])

    with Demo(service=oauth_service(), transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(errors.AuthenticationError) as caught:
            client._call(RAW)
        check_refusal(caught.value)
        with pytest.raises(errors.AuthenticationError) as caught:
            client._stream(CHAT, body={})
        check_refusal(caught.value)
    assert api_calls == []


def test_a_failing_token_endpoint_raises_authentication_error_async() -> None:
    endpoint, api_calls = TokenEndpoint(status=401), []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url == TOKEN_URL:
            return endpoint.respond(request)
        api_calls.append(request)
        return httpx.Response(200, json=[1])

    async def scenario() -> list[Any]:
        transport = httpx.MockTransport(handler)
        async with AsyncDemo(service=oauth_service(), transport=transport) as client:
            calls = (client._call(RAW) for _ in range(3))
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(result, errors.AuthenticationError) for result in results)
    for result in results:
        check_refusal(result)
    assert api_calls == []
