"""Tracing of streams: traced once when they end, fail or are abandoned, with the full text
and the usage read from their events (OpenAI SSE, Anthropic named SSE events, Ollama NDJSON).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

from builder.runtime import errors, tracing
from builder.runtime.operation import Decoder, Operation, StreamFormat
from builder.runtime.pricing import Pricing
from builder.runtime.tracing import MemorySink, TracedCall, Tracer, UsageMap, set_tracer
from tests.runtime._clients import AsyncDemo, Demo, service

pytestmark = pytest.mark.timeout(20)

PRICING = Pricing(
    "2026-01-01",
    "https://example.com/prices",
    {"gpt-4o-mini": (0.15, 0.6), "claude-sonnet-4-5": (3.0, 15.0), "llama3.2": (0.0, 0.0)},
)
SECRET = "sk-stream-5ecret-9d1e"


@pytest.fixture(autouse=True)
def _process_tracer_restored() -> Iterator[None]:
    previous = set_tracer(None)
    yield
    set_tracer(previous)


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed body, optionally failing after its chunks."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
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
    kind = "application/x-ndjson" if body.chunks[:1] and body.chunks[0][:1] == b"{" else ""
    headers = {"Content-Type": kind or "text/event-stream"}
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers, stream=body))


def sse(*events: tuple[str | None, Any]) -> list[bytes]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "").encode() + f"data: {text}\n\n".encode())
    return out


# -- OpenAI: unnamed SSE events, usage in a last chunk, [DONE] -------------------------------


class Delta(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str | None = None


class ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    delta: Delta
    finish_reason: str | None = None


class ChunkUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Chunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    choices: list[ChunkChoice]
    usage: ChunkUsage | None = None


OPENAI_STREAM: Operation[Chunk] = Operation(
    "stream_chat_completion",
    "POST",
    "/chat/completions",
    stream=StreamFormat("sse", Decoder(Chunk), done="[DONE]"),
    usage=UsageMap(
        model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
        finish_reason="choices.0.finish_reason",
        text="choices.0.delta.content",
        request_model="model",
    ),
)
OPENAI_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def openai_chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


def openai_events(*pieces: str, usage: bool = True, done: bool = True) -> list[bytes]:
    events: list[tuple[str | None, Any]] = [(None, openai_chunk(p)) for p in pieces]
    events.append((None, openai_chunk(finish="stop")))
    if usage:
        last = {
            **openai_chunk(),
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4},
        }
        events.append((None, last))
    if done:
        events.append((None, "[DONE]"))
    return sse(*events)


def openai_client(body: Body, sink: MemorySink, **kw: Any) -> Demo:
    return Demo(
        service=service(provider="openai", pricing=PRICING),
        transport=serve(body, kw.pop("status", 200)),
        tracer=Tracer(sink, **kw),
    )


def test_an_ended_stream_is_traced_once_with_its_full_text_and_usage() -> None:
    sink = MemorySink()
    with openai_client(Body(openai_events("Hel", "lo", " there")), sink) as client:
        with client._stream(OPENAI_STREAM, body=OPENAI_BODY) as stream:
            chunks = list(stream)
            assert len(sink) == 1  # at the end of the stream, not when it is closed
    assert len(chunks) == 5
    [call] = sink.calls
    assert call.output == "Hello there"
    assert (call.tokens_input, call.tokens_output) == (9, 4)
    assert call.finish_reason == "stop"  # from the chunk before the usage chunk
    assert (call.request_model, call.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert call.cost == pytest.approx((9 * 0.15 + 4 * 0.6) / 1_000_000)
    assert call.input == {"body": OPENAI_BODY}
    assert (call.streamed, call.abandoned, call.error) == (True, False, None)
    assert (call.status_code, call.attempts, call.provider) == (200, 1, "openai")
    assert call.latency > 0
    assert call.attributes()["gen_ai.usage.output_tokens"] == 4


def test_an_async_stream_is_traced_once_when_it_ends() -> None:
    sink = MemorySink()

    async def main() -> list[Chunk]:
        client = AsyncDemo(
            service=service(provider="openai", pricing=PRICING),
            transport=serve(Body(openai_events("a", "b"))),
            tracer=Tracer(sink),
        )
        async with client, await client._stream(OPENAI_STREAM, body=OPENAI_BODY) as stream:
            return [chunk async for chunk in stream]

    assert len(asyncio.run(main())) == 4
    [call] = sink.calls
    assert (call.output, call.tokens_input, call.tokens_output) == ("ab", 9, 4)
    assert (call.finish_reason, call.abandoned, call.error) == ("stop", False, None)


def test_a_stream_left_by_break_is_traced_as_abandoned_with_the_text_so_far() -> None:
    sink = MemorySink()
    with openai_client(Body(openai_events("one", "two", "three")), sink) as client:
        with client._stream(OPENAI_STREAM, body=OPENAI_BODY) as stream:
            for chunk in stream:
                if chunk.choices[0].delta.content == "two":
                    break
            assert len(sink) == 1  # the loop's generator is closed at once
    [call] = sink.calls
    assert (call.abandoned, call.error, call.output) == (True, None, "onetwo")
    assert (call.tokens_input, call.finish_reason) == (None, None)
    assert call.attributes()["connector_builder.stream.abandoned"] is True


def test_a_stream_closed_unread_or_dropped_unread_is_traced_as_abandoned() -> None:
    sink = MemorySink()
    with openai_client(Body(openai_events("x")), sink) as client:
        stream = client._stream(OPENAI_STREAM, body=OPENAI_BODY)
        stream.close()
        stream.close()  # once only
        assert [(c.abandoned, c.output) for c in sink.calls] == [(True, "")]
        dropped = client._stream(OPENAI_STREAM, body=OPENAI_BODY)
        del dropped
        gc.collect()
        assert [c.abandoned for c in sink.calls] == [True, True]
        # Half read, its iterator kept and then dropped.
        iterator = iter(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
        next(iterator)
        del iterator
        gc.collect()
    assert [c.abandoned for c in sink.calls] == [True, True, True]
    assert sink.calls[-1].output == "x"


def test_an_async_stream_left_by_break_is_traced_as_abandoned() -> None:
    sink = MemorySink()

    async def main() -> None:
        client = AsyncDemo(transport=serve(Body(openai_events("a", "b", "c"))), tracer=Tracer(sink))
        async with client:
            async with await client._stream(OPENAI_STREAM, body=OPENAI_BODY) as stream:
                async for chunk in stream:
                    if chunk.choices[0].delta.content == "b":
                        break
            unread = await client._stream(OPENAI_STREAM, body=OPENAI_BODY)
            await unread.aclose()

    asyncio.run(main())
    assert [(c.abandoned, c.output, c.error) for c in sink.calls] == [
        (True, "ab", None),
        (True, "", None),
    ]


def test_a_stream_cut_before_its_end_marker_is_traced_as_failed() -> None:
    sink = MemorySink()
    with openai_client(Body(openai_events("par", "tial", done=False)), sink) as client:
        with pytest.raises(errors.StreamError, match="end marker"):
            list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    [call] = sink.calls
    assert call.error is not None and call.error.type == "StreamError"
    assert "end marker" in call.error.message
    assert (call.output, call.tokens_output, call.abandoned) == ("partial", 4, False)
    assert call.attributes()["error.type"] == "StreamError"


def test_a_stream_that_breaks_or_sends_bad_json_is_traced_as_failed() -> None:
    sink = MemorySink()
    broken = Body(openai_events("a", usage=False, done=False), error=httpx.ReadError("reset"))
    with openai_client(broken, sink) as client:
        with pytest.raises(errors.StreamError, match="broke"):
            list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    bad = Body([*openai_events("a", usage=False, done=False), b"data: {not json\n\n"])
    with openai_client(bad, sink) as client:
        with pytest.raises(errors.ResponseValidationError):
            list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    assert [(c.error.type if c.error else None, c.output) for c in sink.calls] == [
        ("StreamError", "a"),
        ("ResponseValidationError", "a"),
    ]


def test_an_async_stream_that_fails_is_traced_as_failed() -> None:
    sink = MemorySink()

    async def main() -> None:
        body = Body(openai_events("a", done=False))
        async with AsyncDemo(transport=serve(body), tracer=Tracer(sink)) as client:
            async for _ in await client._stream(OPENAI_STREAM, body=OPENAI_BODY):
                pass

    with pytest.raises(errors.StreamError):
        asyncio.run(main())
    [call] = sink.calls
    assert call.error is not None and call.error.type == "StreamError"
    assert call.output == "a"


def test_a_stream_that_cannot_open_is_traced_as_a_failed_call() -> None:
    sink = MemorySink()
    with openai_client(Body([b'{"error": "down"}']), sink, status=500) as client:
        with pytest.raises(errors.ServerError):
            client._stream(OPENAI_STREAM, body=OPENAI_BODY)
    [call] = sink.calls
    assert call.error is not None and call.error.type == "ServerError"
    assert (call.status_code, call.attempts, call.streamed) == (500, 3, True)
    assert call.output is None and call.request_model == "gpt-4o-mini"


def test_stream_content_capture_off_and_secrets_scrubbed() -> None:
    sink = MemorySink()
    events = openai_events("my key: ", SECRET)
    client = Demo(
        service=service(provider="openai", pricing=PRICING),
        token=SECRET,
        transport=serve(Body(events)),
        tracer=Tracer(sink),
    )
    body = {**OPENAI_BODY, "messages": [{"role": "user", "content": f"echo {SECRET}"}]}
    list(client._stream(OPENAI_STREAM, body=body))
    call = sink.calls[0]
    assert call.output == "my key: **********"
    assert call.input["body"]["messages"][0]["content"] == "echo **********"
    assert SECRET not in call.to_json().decode() and SECRET not in repr(call)

    quiet = MemorySink()
    client = openai_client(Body(openai_events("a")), quiet, capture_content=False)
    list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    assert (quiet.calls[0].output, quiet.calls[0].input, quiet.calls[0].tokens_input) == (
        None,
        None,
        9,
    )


def test_an_untraced_stream_carries_no_trace() -> None:
    with Demo(transport=serve(Body(openai_events("a")))) as client:
        stream = client._stream(OPENAI_STREAM, body=OPENAI_BODY)
        assert stream._decoding.trace is None
        assert len(list(stream)) == 3


# -- Anthropic: named SSE events, usage in message_start and message_delta, no [DONE] ---------

ANTHROPIC_EVENTS = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5-20250929",
                "stop_reason": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)
ANTHROPIC_USAGE = UsageMap(
    model={"message_start": "message.model"},
    tokens_input={"message_start": "message.usage.input_tokens"},
    tokens_output={"message_delta": "usage.output_tokens"},
    finish_reason={"message_delta": "delta.stop_reason"},
    text={"content_block_delta": "delta.text"},
    request_model="model",
)


def anthropic_op(events: frozenset[str]) -> Operation[Any]:
    return Operation(
        "stream_message",
        "POST",
        "/v1/messages",
        stream=StreamFormat("sse", Decoder(), events=events),
        usage=ANTHROPIC_USAGE,
    )


def check_anthropic(call: TracedCall) -> None:
    assert call.output == "Hi!"
    assert (call.tokens_input, call.tokens_output) == (25, 15)
    assert call.finish_reason == "end_turn"
    assert (call.request_model, call.response_model) == (
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
    )
    assert call.cost == pytest.approx((25 * 3.0 + 15 * 15.0) / 1_000_000)
    assert (call.provider, call.error, call.abandoned) == ("anthropic", None, False)


@pytest.mark.parametrize(
    "events",
    [frozenset(), frozenset({"content_block_delta"})],
    ids=["every event yielded", "only text deltas yielded"],
)
def test_named_sse_events_give_text_and_usage_sync_and_async(events: frozenset[str]) -> None:
    op = anthropic_op(events)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": []}
    llm = service(provider="anthropic", pricing=PRICING)
    sink = MemorySink()
    with Demo(service=llm, transport=serve(Body(ANTHROPIC_EVENTS)), tracer=Tracer(sink)) as client:
        chunks = list(client._stream(op, body=body))
    assert len(chunks) == (2 if events else 8)

    async def main() -> None:
        client = AsyncDemo(
            service=llm, transport=serve(Body(ANTHROPIC_EVENTS)), tracer=Tracer(sink)
        )
        async with client:
            async for _ in await client._stream(op, body=body):
                pass

    asyncio.run(main())
    assert len(sink) == 2
    for call in sink.calls:
        check_anthropic(call)


# -- Ollama: NDJSON, usage on the last line ---------------------------------------------------

OLLAMA_LINES = [
    json.dumps(
        {
            "model": "llama3.2",
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": piece},
            "done": False,
        }
    ).encode()
    + b"\n"
    for piece in ("The", " sky", " is blue")
] + [
    json.dumps(
        {
            "model": "llama3.2",
            "created_at": "2026-01-01T00:00:01Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 4883583458,
            "prompt_eval_count": 26,
            "eval_count": 290,
        }
    ).encode()
    + b"\n"
]
OLLAMA_STREAM: Operation[Any] = Operation(
    "chat",
    "POST",
    "/api/chat",
    stream=StreamFormat("ndjson", Decoder()),
    usage=UsageMap(
        model="model",
        text="message.content",
        tokens_input="prompt_eval_count",
        tokens_output="eval_count",
        finish_reason="done_reason",
        request_model="model",
    ),
)


def test_ndjson_lines_give_text_and_usage_sync_and_async() -> None:
    sink = MemorySink()
    llm = service(provider="ollama", pricing=PRICING)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "why?"}]}
    with Demo(service=llm, transport=serve(Body(OLLAMA_LINES)), tracer=Tracer(sink)) as client:
        assert len(list(client._stream(OLLAMA_STREAM, body=body))) == 4

    async def main() -> None:
        client = AsyncDemo(service=llm, transport=serve(Body(OLLAMA_LINES)), tracer=Tracer(sink))
        async with client:
            stream = await client._stream(OLLAMA_STREAM, body=body)
            async for line in stream:
                if line["message"]["content"] == " sky":
                    break
            await stream.aclose()

    asyncio.run(main())
    ended, abandoned = sink.calls
    assert ended.output == "The sky is blue"
    assert (ended.tokens_input, ended.tokens_output, ended.finish_reason) == (26, 290, "stop")
    assert (ended.model, ended.cost, ended.abandoned) == ("llama3.2", 0.0, False)
    assert (abandoned.output, abandoned.tokens_input, abandoned.abandoned) == (
        "The sky",
        None,
        True,
    )


def test_a_stream_without_a_usage_map_is_traced_with_nothing_read() -> None:
    plain: Operation[Chunk] = Operation(
        "stream_chat_completion",
        "POST",
        "/chat/completions",
        stream=StreamFormat("sse", Decoder(Chunk), done="[DONE]"),
    )
    sink = MemorySink()
    with openai_client(Body(openai_events("a", "b")), sink) as client:
        stream = client._stream(plain, body=OPENAI_BODY)
        assert stream._decoding.trace is not None and stream._decoding.trace.read_event is None
        assert stream._decoding.trace.decode_read is None
        assert len(list(stream)) == 4
    [call] = sink.calls
    assert (call.output, call.tokens_input, call.model, call.error) == (None, None, None, None)
    assert call.input == {"body": OPENAI_BODY} and call.streamed


def test_a_stream_trace_keeps_its_text_raw_until_read() -> None:
    sink = MemorySink()
    events = openai_events("my key: ", SECRET)
    client = Demo(
        service=service(provider="openai", pricing=PRICING),
        token=SECRET,
        transport=serve(Body(events)),
        tracer=Tracer(sink),
    )
    list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    call = sink.calls[0]
    assert isinstance(call, tracing._LazyCall)
    assert call._raw_output == "my key: " + SECRET  # joined once, not scrubbed yet
    assert json.loads(call.to_json())["output"] == "my key: **********"
    assert call.output == "my key: **********" and call._raw_output is None


# -- how chunks are read: in the frame that decodes them ---------------------------------------


def test_a_plain_usage_map_reads_each_chunk_where_it_is_decoded() -> None:
    sink = MemorySink()
    with openai_client(Body(openai_events("Hel", "lo")), sink) as client:
        stream = client._stream(OPENAI_STREAM, body=OPENAI_BODY)
        decoding = stream._decoding
        assert decoding._decode is not None and decoding._on_chunk is None
        chunks = list(stream)
    # The chunks are what the operation's decoder makes of the same text.
    last = {**openai_chunk(), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    sent = [openai_chunk("Hel"), openai_chunk("lo"), openai_chunk(finish="stop"), last]
    assert OPENAI_STREAM.stream is not None
    assert chunks == [OPENAI_STREAM.stream.item.from_json(json.dumps(e).encode()) for e in sent]
    # ... and the trace holds what reading each one with the per-chunk reader gives.
    expected = tracing._Usage(text=True)
    assert OPENAI_STREAM.usage is not None
    for chunk in chunks:
        OPENAI_STREAM.usage.read(chunk, expected)
    [call] = sink.calls
    assert (call.response_model, call.tokens_input, call.tokens_output, call.finish_reason) == (
        expected.model,
        expected.tokens_input,
        expected.tokens_output,
        expected.finish_reason,
    )
    assert call.output == "".join(expected.pieces or []) == "Hello"


def test_named_events_are_read_after_decoding_each_with_its_reader() -> None:
    op = anthropic_op(frozenset())
    with Demo(transport=serve(Body(ANTHROPIC_EVENTS)), tracer=Tracer(MemorySink())) as client:
        stream = client._stream(op, body={"model": "claude-sonnet-4-5"})
        assert stream._decoding._decode is None and stream._decoding._on_chunk is not None
        stream.close()


class Exploding(BaseModel):
    text: str

    @property
    def usage(self) -> Any:
        raise RuntimeError("boom")


def test_a_chunk_whose_reading_fails_is_still_yielded_and_the_failure_said_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_warned_internal", False)
    op: Operation[Exploding] = Operation(
        "stream",
        "POST",
        "/s",
        stream=StreamFormat("sse", Decoder(Exploding)),
        usage=UsageMap(text="text", tokens_input="usage.n"),
    )
    sink = MemorySink()
    events = sse((None, {"text": "a"}), (None, {"text": "b"}))
    with Demo(transport=serve(Body(events)), tracer=Tracer(sink)) as client:
        with pytest.warns(RuntimeWarning, match="RuntimeError: boom") as caught:
            chunks = list(client._stream(op, body={}))
    assert [c.text for c in chunks] == ["a", "b"]
    assert len([w for w in caught if "boom" in str(w.message)]) == 1
    [call] = sink.calls
    assert (call.output, call.tokens_input, call.error) == ("ab", None, None)


def test_a_chunk_that_does_not_validate_fails_the_traced_stream_as_untraced() -> None:
    bad = [*openai_events("a", usage=False, done=False), b'data: {"model": 1}\n\n']
    sink = MemorySink()
    with openai_client(Body(bad), sink) as client:
        with pytest.raises(errors.ResponseValidationError):
            list(client._stream(OPENAI_STREAM, body=OPENAI_BODY))
    with Demo(transport=serve(Body(bad))) as untraced:
        with pytest.raises(errors.ResponseValidationError):
            list(untraced._stream(OPENAI_STREAM, body=OPENAI_BODY))
    [call] = sink.calls
    assert call.error is not None and call.error.type == "ResponseValidationError"
    assert call.output == "a"
