"""SSE decoding, typed streams (SSE and NDJSON), end markers, closing, async streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.operation import Decoder, Operation, StreamFormat
from builder.runtime.streaming import ServerSentEvent, SSEDecoder
from tests.runtime._clients import AsyncDemo, Demo

pytestmark = pytest.mark.timeout(10)


class Delta(BaseModel):
    text: str


def sse_op(done: str | None = "[DONE]", events: frozenset[str] = frozenset()) -> Operation[Delta]:
    return Operation(
        "chat",
        "POST",
        "/chat",
        stream=StreamFormat("sse", Decoder(Delta), done=done, events=events),
    )


NDJSON_OP: Operation[Delta] = Operation(
    "export", "GET", "/export", stream=StreamFormat("ndjson", Decoder(Delta))
)


# -- SSEDecoder ----------------------------------------------------------------------------


def feed(lines: list[str]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for line in lines if (event := decoder.feed(line)) is not None]


def test_sse_single_event() -> None:
    assert feed(["data: hello", ""]) == [ServerSentEvent("message", "hello")]


def test_sse_multi_line_data_is_joined_with_newlines() -> None:
    assert feed(["data: a", "data: b", "data:", "data: c", ""]) == [
        ServerSentEvent("message", "a\nb\n\nc")
    ]


def test_sse_comments_are_ignored() -> None:
    assert feed([": keep-alive", "", ":another", "data: x", ": inside", ""]) == [
        ServerSentEvent("message", "x")
    ]


def test_sse_event_id_retry_fields() -> None:
    events = feed(["event: delta", "id: 7", "retry: 1500", "data: {}", ""])
    assert events == [ServerSentEvent("delta", "{}", "7", 1500)]


def test_sse_event_name_and_retry_reset_but_id_persists() -> None:
    events = feed(["event: a", "id: 1", "retry: 10", "data: x", "", "data: y", ""])
    assert events == [
        ServerSentEvent("a", "x", "1", 10),
        ServerSentEvent("message", "y", "1", None),
    ]


def test_sse_value_spacing() -> None:
    # Only one space after the colon is removed.
    assert feed(["data:no-space", ""])[0].data == "no-space"
    assert feed(["data:  two", ""])[0].data == " two"
    assert feed(["data: a: b", ""])[0].data == "a: b"


def test_sse_invalid_retry_and_nul_id_are_ignored() -> None:
    events = feed(["id: ok", "data: 1", "", "id: bad\0id", "retry: soon", "data: 2", ""])
    assert events[1] == ServerSentEvent("message", "2", "ok", None)


def test_sse_field_without_colon() -> None:
    assert feed(["data", ""]) == [ServerSentEvent("message", "")]


def test_sse_blank_lines_without_an_event_produce_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("") is None
    assert decoder.feed("") is None
    assert not decoder.mid_event


def test_sse_mid_event_flag() -> None:
    decoder = SSEDecoder()
    assert not decoder.mid_event
    decoder.feed(": comment")
    assert not decoder.mid_event
    decoder.feed("data: x")
    assert decoder.mid_event
    assert decoder.feed("") == ServerSentEvent("message", "x")
    assert not decoder.mid_event


# -- helpers -------------------------------------------------------------------------------


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed body that records how far it was read and whether it was closed."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
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


def serve(body: Body, status: int = 200) -> httpx.MockTransport:
    headers = {"Content-Type": "text/event-stream"}
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, stream=body))


def sse(*payloads: str) -> list[bytes]:
    return [f"data: {p}\n\n".encode() for p in payloads]


# -- sync Stream ---------------------------------------------------------------------------


def test_sse_stream_yields_typed_chunks_and_stops_at_done() -> None:
    body = Body([*sse('{"text": "Hel"}', '{"text": "lo"}', "[DONE]"), b"data: never\n\n"])
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op(), body={"prompt": "hi"})
        chunks = list(stream)
    assert chunks == [Delta(text="Hel"), Delta(text="lo")]
    # What follows the end marker is read (so the connection can be reused), not decoded.
    assert body.sent == 4
    assert stream.response.is_closed
    assert body.closed


def test_what_follows_the_end_marker_is_read_up_to_a_limit() -> None:
    flood = [b": " + b"x" * 1022 + b"\n"] * 200  # 200 KiB of comments after [DONE]
    body = Body([*sse('{"text": "a"}', "[DONE]"), *flood])
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op(), body={})
        assert list(stream) == [Delta(text="a")]
    assert 2 + 64 <= body.sent <= 2 + 66  # 64 KiB read, then the connection is closed
    assert body.closed


def test_a_break_after_the_end_marker_does_not_fail_the_stream() -> None:
    body = Body(sse('{"text": "a"}', "[DONE]"), error=httpx.ReadError("reset"))
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op(), body={})
        assert list(stream) == [Delta(text="a")]
    assert body.closed


def test_stream_chunks_arrive_before_the_body_ends() -> None:
    body = Body(sse('{"text": "a"}', '{"text": "b"}', "[DONE]"))
    with Demo(transport=serve(body)) as client:
        iterator = iter(client._stream(sse_op()))
        assert next(iterator) == Delta(text="a")
        assert body.sent == 1
        assert next(iterator) == Delta(text="b")
        assert body.sent == 2
        assert list(iterator) == []


def test_crlf_and_split_chunks_are_handled() -> None:
    body = Body([b'event: delta\r\ndata: {"te', b'xt": "x"}\r\n\r', b"\ndata: [DONE]\r\n\r\n"])
    with Demo(transport=serve(body)) as client:
        assert list(client._stream(sse_op())) == [Delta(text="x")]


def test_stream_cut_mid_event_is_a_stream_error() -> None:
    body = Body([*sse('{"text": "a"}'), b'data: {"text": "b"}\n'])
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op(done=None))
        got: list[Delta] = []
        with pytest.raises(errors.StreamError, match="middle of an event") as info:
            for chunk in stream:
                got.append(chunk)
    assert got == [Delta(text="a")]
    assert info.value.operation == "chat"
    assert stream.response.is_closed


def test_stream_without_its_end_marker_is_a_stream_error() -> None:
    body = Body(sse('{"text": "a"}'))
    with Demo(transport=serve(body)) as client:
        with pytest.raises(errors.StreamError, match=r"end marker '\[DONE\]'"):
            list(client._stream(sse_op()))


def test_stream_without_declared_marker_may_end_cleanly() -> None:
    body = Body([*sse('{"text": "a"}'), b": trailing comment\n"])
    with Demo(transport=serve(body)) as client:
        assert list(client._stream(sse_op(done=None))) == [Delta(text="a")]


def test_stream_broken_by_the_network_is_a_stream_error() -> None:
    body = Body(sse('{"text": "a"}'), error=httpx.ReadError("connection reset"))
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op())
        with pytest.raises(errors.StreamError, match="the stream broke: connection reset") as info:
            list(stream)
    assert not isinstance(info.value, httpx.HTTPError)
    assert stream.response.is_closed


def test_events_filter_keeps_only_named_events() -> None:
    body = Body(
        [
            b'event: ping\ndata: {"text": "ignored"}\n\n',
            b'event: delta\ndata: {"text": "kept"}\n\n',
            b'data: {"text": "unnamed"}\n\n',
            b"event: delta\ndata: [DONE]\n\n",
        ]
    )
    with Demo(transport=serve(body)) as client:
        assert list(client._stream(sse_op(events=frozenset({"delta"})))) == [Delta(text="kept")]


def test_events_without_data_are_skipped() -> None:
    body = Body([b"event: ping\n\n", *sse('{"text": "a"}', "[DONE]")])
    with Demo(transport=serve(body)) as client:
        assert list(client._stream(sse_op())) == [Delta(text="a")]


def test_ndjson_stream() -> None:
    body = Body([b'{"text": "a"}\n\n', b'{"text"', b': "b"}\n  \n{"text": "c"}'])
    with Demo(transport=serve(body)) as client:
        stream = client._stream(NDJSON_OP)
        assert list(stream) == [Delta(text="a"), Delta(text="b"), Delta(text="c")]
    assert body.closed


def test_bad_chunk_is_a_validation_error() -> None:
    body = Body([b'{"text": "a"}\n', b'{"nope": 1}\n', b'{"text": "c"}\n'])
    with Demo(transport=serve(body)) as client:
        with pytest.raises(errors.ResponseValidationError, match="text") as info:
            list(client._stream(NDJSON_OP))
    assert info.value.operation == "export"


def test_early_close_closes_the_response() -> None:
    body = Body(sse('{"text": "a"}', '{"text": "b"}', "[DONE]"))
    with Demo(transport=serve(body)) as client:
        stream = client._stream(sse_op())
        iterator = iter(stream)
        assert next(iterator) == Delta(text="a")
        stream.close()
    assert stream.response.is_closed
    assert body.closed
    assert body.sent == 1


def test_stream_context_manager_closes() -> None:
    body = Body(sse('{"text": "a"}', "[DONE]"))
    with Demo(transport=serve(body)) as client:
        with client._stream(sse_op()) as stream:
            pass
    assert stream.response.is_closed
    assert body.closed
    assert body.sent == 0


def test_error_status_on_a_stream_reads_the_body() -> None:
    body = Body([b'{"error": {"message": "model not found"}}'])
    with Demo(transport=serve(body, status=404)) as client:
        with pytest.raises(errors.NotFoundError) as info:
            client._stream(sse_op())
    assert info.value.body == '{"error": {"message": "model not found"}}'
    assert "model not found" in str(info.value)
    assert body.closed


def test_stream_request_is_retried(sleeps: list[float]) -> None:
    answers = iter(
        [
            httpx.Response(503, stream=Body([b"busy"])),
            httpx.Response(200, stream=Body(sse('{"text": "a"}', "[DONE]"))),
        ]
    )
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return next(answers)

    with Demo(transport=httpx.MockTransport(handler)) as client:
        assert list(client._stream(sse_op(), body={"prompt": "p"})) == [Delta(text="a")]
    assert len(calls) == 2
    assert calls[1].content == b'{"prompt":"p"}'
    assert sleeps == [0.0]


# -- async stream --------------------------------------------------------------------------


def test_async_sse_stream() -> None:
    body = Body([*sse('{"text": "a"}', '{"text": "b"}', "[DONE]"), b"data: never\n\n"])

    async def main() -> list[Delta]:
        async with AsyncDemo(transport=serve(body)) as client:
            stream = await client._stream(sse_op())
            chunks = [chunk async for chunk in stream]
            assert stream.response.is_closed
            return chunks

    assert asyncio.run(main()) == [Delta(text="a"), Delta(text="b")]
    assert body.sent == 4  # read to its end after the marker, as the sync stream is
    assert body.closed


def test_async_drain_after_the_end_marker_is_bounded_and_never_fails() -> None:
    flood = [b": " + b"x" * 1022 + b"\n"] * 200

    async def collect(body: Body) -> list[Delta]:
        async with AsyncDemo(transport=serve(body)) as client:
            return [chunk async for chunk in await client._stream(sse_op())]

    flooded = Body([*sse('{"text": "a"}', "[DONE]"), *flood])
    assert asyncio.run(collect(flooded)) == [Delta(text="a")]
    assert 2 + 64 <= flooded.sent <= 2 + 66
    broken = Body(sse('{"text": "a"}', "[DONE]"), error=httpx.ReadError("reset"))
    assert asyncio.run(collect(broken)) == [Delta(text="a")]
    assert broken.closed


def test_async_stream_errors() -> None:
    async def collect(body: Body, op: Operation[Delta]) -> list[Delta]:
        async with AsyncDemo(transport=serve(body)) as client:
            return [chunk async for chunk in await client._stream(op)]

    with pytest.raises(errors.StreamError, match="middle of an event"):
        asyncio.run(collect(Body([b"data: {}\n"]), sse_op(done=None)))
    with pytest.raises(errors.StreamError, match="end marker"):
        asyncio.run(collect(Body(sse('{"text": "a"}')), sse_op()))
    with pytest.raises(errors.StreamError, match="broke"):
        asyncio.run(collect(Body([], error=httpx.ReadError("reset")), sse_op()))


def test_async_stream_aclose_and_context_manager() -> None:
    body = Body(sse('{"text": "a"}', '{"text": "b"}', "[DONE]"))

    async def main() -> Any:
        async with AsyncDemo(transport=serve(body)) as client:
            async with await client._stream(sse_op()) as stream:
                async for chunk in stream:
                    assert chunk == Delta(text="a")
                    break
            return stream

    stream = asyncio.run(main())
    assert stream.response.is_closed
    assert body.closed


def test_async_ndjson_and_error_status() -> None:
    async def main() -> list[Delta]:
        async with AsyncDemo(transport=serve(Body([b'{"text": "a"}\n{"text": "b"}\n']))) as client:
            return [chunk async for chunk in await client._stream(NDJSON_OP)]

    assert asyncio.run(main()) == [Delta(text="a"), Delta(text="b")]

    async def failing() -> None:
        async with AsyncDemo(transport=serve(Body([b"nope"]), status=401)) as client:
            await client._stream(NDJSON_OP)

    with pytest.raises(errors.AuthenticationError) as info:
        asyncio.run(failing())
    assert info.value.body == "nope"
