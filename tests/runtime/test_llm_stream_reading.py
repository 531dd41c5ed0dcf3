"""The LLM role reads a stream's chunks with the compiled readers tracing uses: the same
text, model, token counts and finish reason as reading each path with ``Path.get`` (what
it did before), one walk per chunk, written for the chunks' model class."""

from __future__ import annotations

import enum
import warnings
from typing import Any

import pytest
from pydantic import BaseModel

from builder.runtime.llm import StreamMap, _count, _reason, _StreamAccumulator, _text
from builder.runtime.operation import Decoder, Operation
from builder.runtime.paths import EventPaths
from builder.runtime.tracing import UsageMap, _Usage

pytestmark = pytest.mark.timeout(20)

PATHS = {
    "text": "choices.0.delta.content",
    "finish_reason": "choices.0.finish_reason",
    "response_model": "model",
    "tokens_input": "usage.prompt_tokens",
    "tokens_output": "usage.completion_tokens",
}


class Reason(enum.Enum):
    STOP = "stop"


class Delta(BaseModel):
    content: str | None = None


class Choice(BaseModel):
    delta: Delta
    finish_reason: str | Reason | None = None


class Usage(BaseModel):
    prompt_tokens: int | float | str | None = None
    completion_tokens: int | float | str | None = None


class Chunk(BaseModel):
    model: str | None = None
    choices: list[Choice] = []
    usage: Usage | None = None


class SubChunk(Chunk):
    pass


def _operation(usage: UsageMap | None = None) -> Operation[Any]:
    return Operation("stream_chat", "POST", "/chat", response=Decoder(Chunk), usage=usage)


def _map(operation: Operation[Any] | None = None, **paths: Any) -> StreamMap:
    return StreamMap(operation=operation or _operation(), **(paths or PATHS))


def _by_path_get(m: StreamMap, chunks: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """What the role read before: each path with Path.get, and its own conversions."""
    pieces: list[str] = []
    model = tokens_in = tokens_out = finish = None

    def get(paths: Any, event: str | None, chunk: Any) -> Any:
        return None if paths is None else EventPaths(paths).get(event, chunk)

    for event, chunk in chunks:
        piece = _text(get(m.text, event, chunk))
        if piece:
            pieces.append(piece)
        if model is None:
            model = _text(get(m.response_model, event, chunk))
        found = _count(get(m.tokens_input, event, chunk))
        tokens_in = found if found is not None else tokens_in
        found = _count(get(m.tokens_output, event, chunk))
        tokens_out = found if found is not None else tokens_out
        finish = _reason(get(m.finish_reason, event, chunk)) or finish
    return {
        "text": "".join(pieces),
        "model": model or "asked",
        "tokens": (tokens_in, tokens_out),
        "finish": finish,
    }


def _accumulated(m: StreamMap, chunks: list[tuple[str | None, Any]]) -> dict[str, Any]:
    acc = _StreamAccumulator(m, "asked", "test", None)
    yielded = [acc.feed(chunk, event) for event, chunk in chunks]
    result = acc.result(0.0)
    assert "".join(p for p in yielded if p) == result.content  # each piece yielded once
    return {
        "text": result.content,
        "model": result.model,
        "tokens": (result.tokens_input, result.tokens_output),
        "finish": result.finish_reason,
    }


def _chunk(
    text: str | None = None,
    model: str | None = None,
    reason: Any = None,
    usage: tuple[Any, Any] | None = None,
    cls: type[Chunk] = Chunk,
) -> Chunk:
    return cls(
        model=model,
        choices=[Choice(delta=Delta(content=text), finish_reason=reason)],
        usage=None if usage is None else Usage(prompt_tokens=usage[0], completion_tokens=usage[1]),
    )


STREAMS = {
    "openai-like": [
        _chunk("", model="m-1"),
        _chunk("Hel", model="m-1"),
        _chunk("lo"),
        _chunk(reason="stop"),
        Chunk(model="m-2", usage=Usage(prompt_tokens=8, completion_tokens=2)),
    ],
    "enum reason, float and digit-string counts": [
        _chunk("a"),
        _chunk(reason=Reason.STOP, usage=(7.9, "12")),
    ],
    "counts that are not counts keep the last ones": [
        _chunk("x", usage=(3, 4)),
        _chunk("y", usage=(True, "four")),
    ],
    "a subclass mid-stream (the generic reader)": [
        _chunk("one ", model="m"),
        _chunk("two ", cls=SubChunk, usage=(1, 1)),
        _chunk("three"),
    ],
    "dicts": [
        {"model": "d", "choices": [{"delta": {"content": "di"}}]},
        {"choices": [{"delta": {"content": "ct"}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}},
    ],
    "nothing": [],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_the_role_reads_what_reading_each_path_read(name: str) -> None:
    m = _map()
    chunks = [(None, chunk) for chunk in STREAMS[name]]
    assert _accumulated(m, chunks) == _by_path_get(m, chunks)


def test_typed_chunks_are_read_by_the_reader_written_for_their_class() -> None:
    m = _map()
    generic = m.reading.chunk_reader(object)
    typed = m.reading.chunk_reader(Chunk)
    assert typed is not generic and "type(v0) is not _C0" in (typed.__doc__ or "")


def test_the_role_shares_the_operations_usage_map_when_it_names_the_same_paths() -> None:
    same = UsageMap(
        model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
        text="choices.0.delta.content",
        finish_reason="choices.0.finish_reason",
        request_model="model",
    )
    assert _map(_operation(same)).reading is same
    other = UsageMap(model="model", text="choices.0.delta.content")
    own = _map(_operation(other))
    assert own.reading is not other
    assert own.reading is own.reading  # made once
    assert own.reading.tokens_input == "usage.prompt_tokens"
    assert _map(_operation(None)).reading.text == PATHS["text"]


def test_a_generated_connectors_role_reads_with_its_operations_usage_map() -> None:
    openai = pytest.importorskip("connectors.openai")
    stream = openai.OpenAI._llm.stream
    assert stream is not None
    assert stream.reading is stream.operation.usage


def test_named_events_are_read_by_each_events_reader() -> None:
    paths = {
        "text": {"content_block_delta": "delta.text"},
        "finish_reason": {"message_delta": "delta.stop_reason"},
        "response_model": {"message_start": "message.model"},
        "tokens_input": {"message_start": "message.usage.input_tokens"},
        "tokens_output": {"message_delta": "usage.output_tokens"},
    }
    m = _map(**paths)
    chunks: list[tuple[str | None, Any]] = [
        ("message_start", {"message": {"model": "claude", "usage": {"input_tokens": 25}}}),
        ("content_block_delta", {"delta": {"text": "Hello"}}),
        ("ping", {"delta": {"text": "not text: not this event's path"}}),
        ("content_block_delta", {"delta": {"text": "!"}}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
    ]
    got = _accumulated(m, chunks)
    assert got == _by_path_get(m, chunks)
    assert got == {"text": "Hello!", "model": "claude", "tokens": (25, 15), "finish": "end_turn"}


def test_a_star_text_path_yields_the_text_of_every_part_as_one_piece() -> None:
    m = _map(text="delta.content.*.text")
    chunk = {"delta": {"content": [{"text": "a"}, {"type": "tool_use"}, {"text": "b"}]}}
    acc = _StreamAccumulator(m, "asked", "test", None)
    assert acc.feed(chunk, None) == "ab"
    assert acc.feed({"delta": {"content": []}}, None) is None
    assert acc.result(0.0).content == "ab"


@pytest.mark.parametrize(
    ("value", "kept"),
    [(12, 12), (12.9, 12), ("12", 12), (" 12", None), ("1x", None), ("", None), (True, None)],
)
def test_a_traced_token_count_is_an_int_a_float_or_ascii_digits(value: Any, kept: Any) -> None:
    usage_map = UsageMap(tokens_input="usage.n")
    for cls in (object, Chunk):  # the generic reader, and a typed one (dict chunks: generic)
        usage = _Usage()
        usage_map.chunk_reader(cls)(usage, None, {"usage": {"n": value}})
        assert usage.tokens_input == kept


def test_counts_that_cannot_be_counts_lose_nothing_else_of_their_chunk() -> None:
    m = _map()
    chunks: list[tuple[str | None, Any]] = [
        (None, _chunk("Hel", usage=(float("nan"), 7.0))),
        (None, _chunk("lo", reason="stop", usage=(float("inf"), "9" * 5000))),
    ]
    got = _accumulated(m, chunks)
    assert got == {"text": "Hello", "model": "asked", "tokens": (None, 7), "finish": "stop"}


class StrReason(str, enum.Enum):  # noqa: UP042  (str() is not the value: 3.11)
    STOP = "stop"


def test_an_empty_finish_reason_keeps_the_last_one_and_a_str_enum_gives_its_value() -> None:
    m = _map()
    acc = _StreamAccumulator(m, "asked", "test", None)
    for reason in ["stop", "", None]:
        acc.feed({"choices": [{"delta": {}, "finish_reason": reason}]}, None)
    assert acc.result(0.0).finish_reason == "stop"
    acc = _StreamAccumulator(m, "asked", "test", None)
    acc.feed(_chunk(reason=StrReason.STOP), None)
    reason = acc.result(0.0).finish_reason
    assert type(reason) is str and reason == "stop"


class Raising(BaseModel):
    @property
    def text(self) -> str:
        raise RuntimeError("boom")


def test_a_readers_error_is_raised_by_the_role_and_only_reported_by_a_trace() -> None:
    m = _map(text="parts.*.text")
    chunk = {"parts": [{"text": "a"}, Raising()]}
    acc = _StreamAccumulator(m, "asked", "test", None)
    with pytest.raises(RuntimeError, match="boom"):
        acc.feed(chunk, None)
    traced = _Usage(text=True)
    with warnings.catch_warnings():  # reported once per process: maybe here, maybe before
        warnings.simplefilter("ignore", RuntimeWarning)
        m.reading.chunk_reader(dict)(traced, None, chunk)  # a trace never breaks a call
    assert traced.pieces == []


def test_once_64_classes_are_kept_another_class_gets_the_generic_reader() -> None:
    usage_map = UsageMap(model="model", text="choices.0.delta.content")
    classes = [type(f"Chunk{n}", (Chunk,), {}) for n in range(70)]
    readers = [usage_map.chunk_reader(cls) for cls in classes]
    assert len(usage_map._readers) == 64
    assert all(reader is not usage_map._read_plain for reader in readers[:64])
    assert all(reader is usage_map._read_plain for reader in readers[64:])
    assert usage_map.chunk_reader(classes[3]) is readers[3]  # still remembered
