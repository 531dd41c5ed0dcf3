"""A response body larger than ``max_response_bytes`` is refused while it is read: it never
fills memory, and the request is not retried (the service would send the same body)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from builder.runtime.errors import ResponseTooLargeError, TransportError
from tests.runtime._clients import RAW, AsyncDemo, Demo, service

LIMIT = 4096


def test_a_body_over_the_limit_raises_and_is_not_retried(api: respx.MockRouter) -> None:
    route = api.get("/raw").respond(200, json={"blob": "x" * (LIMIT * 2)})
    with Demo(service=service(max_response_bytes=LIMIT)) as client:
        with pytest.raises(ResponseTooLargeError, match="larger than 4,096 bytes") as caught:
            client._call(RAW)
    assert isinstance(caught.value, TransportError)
    assert route.call_count == 1
    assert caught.value.operation == "raw"


def test_a_body_within_the_limit_is_read(api: respx.MockRouter) -> None:
    api.get("/raw").respond(200, json={"blob": "x" * (LIMIT // 2)})
    with Demo(service=service(max_response_bytes=LIMIT)) as client:
        assert len(client._call(RAW)["blob"]) == LIMIT // 2


def test_a_body_arriving_in_pieces_is_cut_off_at_the_limit(api: respx.MockRouter) -> None:
    pulled: list[int] = []

    def endless() -> httpx.SyncByteStream:
        class Endless(httpx.SyncByteStream):
            def __iter__(self):  # type: ignore[no-untyped-def]
                for _ in range(10_000):
                    pulled.append(1)
                    yield b"x" * 1024

        return Endless()

    api.get("/raw").mock(return_value=httpx.Response(200, stream=endless()))
    with Demo(service=service(max_response_bytes=LIMIT)) as client:
        with pytest.raises(ResponseTooLargeError):
            client._call(RAW)
    assert len(pulled) <= LIMIT // 1024 + 1  # stopped reading, did not drain 10 MB


def test_async_client_refuses_it_too(api: respx.MockRouter) -> None:
    api.get("/raw").respond(200, content=b"y" * (LIMIT + 1))

    async def scenario() -> None:
        async with AsyncDemo(service=service(max_response_bytes=LIMIT)) as client:
            await client._call(RAW)

    with pytest.raises(ResponseTooLargeError):
        asyncio.run(scenario())
