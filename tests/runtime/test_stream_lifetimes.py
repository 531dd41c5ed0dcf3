"""What a stream does with its connection around its end: reads the body's end after the
end marker (bounded in size and time), closes what it drops, and leaves no generator to the
garbage collector.

The time bound is checked against a real socket server of our own (a thread here) that can
end its body at once, linger silently after ``[DONE]``, or keep sending comments.
"""

from __future__ import annotations

import asyncio
import gc
import socketserver
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import client as runtime_client
from builder.runtime.operation import Decoder, Operation, StreamFormat
from builder.runtime.pagination import Pagination
from tests.runtime._clients import AsyncDemo, Demo, Item

pytestmark = pytest.mark.timeout(20)


class Delta(BaseModel):
    text: str


SSE: Operation[Delta] = Operation(
    "chat", "POST", "/chat", stream=StreamFormat("sse", Decoder(Delta), done="[DONE]")
)
LINGER = 3.0  # how long the server keeps a body open after [DONE] ("linger", "pings")


# -- a server that ends its body at once, lingers, or pings after [DONE] --------------------


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 keep-alive: each POST answered with a chunked SSE body of one chunk and
    [DONE]; what follows is the path's: /prompt ends the body, /linger waits, /pings sends
    a comment every 0.1 s, before ending it."""

    def handle(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        server.connections += 1
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = self.rfile.read(1)
                if not byte:
                    return
                head += byte
            lines = head.decode().split("\r\n")
            path = lines[0].split()[1]
            length = next(
                (
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            self.rfile.read(length)
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for event in (b'data: {"text": "a"}\n\n', b"data: [DONE]\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if path.endswith("/linger"):
                _pause(LINGER)
            elif path.endswith("/pings"):
                until = time.monotonic() + LINGER
                while time.monotonic() < until:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(b": ping\n\n"), b": ping\n\n"))
                    self.wfile.flush()
                    _pause(0.1)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


def _pause(seconds: float) -> None:
    threading.Event().wait(seconds)  # (time.sleep is made instant for the tests)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    connections = 0


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(("127.0.0.1", 0), _Handler) as found:
        thread = threading.Thread(target=found.serve_forever, daemon=True)
        thread.start()
        yield found
        found.shutdown()


def _op(path: str) -> Operation[Delta]:
    return Operation("chat", "POST", path, stream=SSE.stream)


def _url(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("path", ["/prompt", "/linger", "/pings"])
def test_the_loop_ends_soon_after_the_end_marker(server: Server, path: str) -> None:
    with Demo(base_url=_url(server), timeout=30.0) as client:
        started = time.monotonic()
        chunks = list(client._stream(_op(path), body={}))
        elapsed = time.monotonic() - started
        assert chunks == [Delta(text="a")]
        assert elapsed < runtime_client._DRAIN_SECONDS + 0.5  # not LINGER
        list(client._stream(_op("/prompt"), body={}))
    # The prompt body's end was read: one connection for both; a lingering one was closed.
    assert server.connections == (1 if path == "/prompt" else 2)


@pytest.mark.parametrize("path", ["/prompt", "/linger", "/pings"])
def test_an_async_loop_ends_soon_after_the_end_marker(server: Server, path: str) -> None:
    async def run() -> float:
        async with AsyncDemo(base_url=_url(server), timeout=30.0) as client:
            started = time.monotonic()
            chunks = [chunk async for chunk in await client._stream(_op(path), body={})]
            elapsed = time.monotonic() - started
            assert chunks == [Delta(text="a")]
            [_ async for _ in await client._stream(_op("/prompt"), body={})]
            return elapsed

    assert asyncio.run(run()) < runtime_client._DRAIN_SECONDS + 0.5
    assert server.connections == (1 if path == "/prompt" else 2)


def test_the_read_bound_is_undone_after_the_drain(server: Server) -> None:
    # The connection's network stream is read through a bounded read only while draining.
    with Demo(base_url=_url(server), timeout=30.0) as client:
        stream = client._stream(_op("/prompt"), body={})
        network = stream.response.extensions["network_stream"]
        list(stream)
        assert "read" not in vars(network)


# -- dropped, closed, never read -------------------------------------------------------------


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def _serve(body: Body, version: bytes = b"HTTP/1.1") -> httpx.MockTransport:
    headers = {"Content-Type": "text/event-stream"}
    extensions = {"http_version": version}
    return httpx.MockTransport(
        lambda request: httpx.Response(200, headers=headers, stream=body, extensions=extensions)
    )


EVENTS = [b'data: {"text": "a"}\n\n', b"data: [DONE]\n\n"]


def test_an_http2_stream_is_not_drained() -> None:
    # HTTP/2 ends the stream, not the connection (which other streams may be reading).
    after = [*EVENTS, b": more\n\n"]
    http11, http2 = Body(after), Body(after)
    with Demo(transport=_serve(http11)) as client:
        assert list(client._stream(SSE, body={})) == [Delta(text="a")]
    with Demo(transport=_serve(http2, b"HTTP/2")) as client:
        assert list(client._stream(SSE, body={})) == [Delta(text="a")]
    assert (http11.pulled, http2.pulled) == (3, 2)

    async def run() -> None:
        body = Body(after)
        async with AsyncDemo(transport=_serve(body, b"HTTP/2")) as client:
            assert [c async for c in await client._stream(SSE, body={})] == [Delta(text="a")]
        assert body.pulled == 2

    asyncio.run(run())


def test_a_stream_dropped_unread_closes_its_response() -> None:
    body = Body(EVENTS)
    with Demo(transport=_serve(body)) as client:
        stream = client._stream(SSE, body={})
        del stream
        assert body.closed  # at once: its connection is back in the pool


def test_an_async_stream_dropped_unread_is_closed_on_its_loop() -> None:
    body = Body(EVENTS)

    async def run() -> None:
        async with AsyncDemo(transport=_serve(body)) as client:
            stream = await client._stream(SSE, body={})
            del stream
            gc.collect()
            for _ in range(5):
                await asyncio.sleep(0)
            assert body.closed

    asyncio.run(run())


def test_a_real_pool_survives_streams_dropped_unread(server: Server) -> None:
    limits = httpx.Limits(max_connections=1)
    with httpx.Client(limits=limits, timeout=5.0) as http:
        with Demo(base_url=_url(server), http_client=http) as client:
            for _ in range(3):  # with the pool's one connection held, the second would wait
                client._stream(_op("/prompt"), body={})
            assert list(client._stream(_op("/prompt"), body={})) == [Delta(text="a")]


# -- async generators closed by the code, not by the collector -------------------------------


def _finalized_by_the_loop(scenario: Any) -> list[str]:
    """The async generators the event loop had to finalize during ``scenario``."""
    found: list[str] = []

    async def run() -> None:
        hooks = sys.get_asyncgen_hooks()

        def finalizer(agen: Any) -> None:
            found.append(agen.__qualname__)
            hooks.finalizer(agen)  # type: ignore[misc]

        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        try:
            await scenario()
            gc.collect()
            await asyncio.sleep(0.01)
        finally:
            sys.set_asyncgen_hooks(*hooks)

    asyncio.run(run())
    return found


def test_an_async_stream_left_early_closes_its_generators() -> None:
    # Its own generator and httpx's line reader are closed by the code; what httpx's line
    # reader itself iterates (its text and bytes decoders) is httpx's to leave.
    async def scenario() -> None:
        async with AsyncDemo(transport=_serve(Body(EVENTS))) as client:
            async with await client._stream(SSE, body={}) as stream:
                iterator = aiter(stream)
                await anext(iterator)
                await iterator.aclose()

    left = _finalized_by_the_loop(scenario)
    assert not {"AsyncStream.__aiter__", "Response.aiter_lines"} & set(left), left


def test_an_async_pager_left_early_closes_its_pages() -> None:
    listed: Operation[list[Item]] = Operation(
        "list_items",
        "GET",
        "/items",
        response=Decoder(list[Item]),
        pagination=Pagination("link_header"),
    )

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])

    async def scenario() -> None:
        async with AsyncDemo(transport=httpx.MockTransport(answer)) as client:
            iterator = aiter(client._paginate(listed))
            assert await anext(iterator) == Item(id=1, name="a")
            await iterator.aclose()

    assert _finalized_by_the_loop(scenario) == []
