"""Tracing: one :class:`TracedCall` per operation call, handed to pluggable sinks.

Tracing is off until a tracer with at least one sink is in place, process-wide
(:func:`configure`, :func:`set_tracer`) or per client (``tracer=`` on the client's
constructor, which overrides the process-wide one; ``tracer=Tracer()``, with no sink, turns
tracing off for that client). While it is off a call costs one attribute check more.

What is traced:

* every ``_call`` of a generated client: one ``TracedCall``, whether it succeeds or raises;
* every *page request* of a pager: one ``TracedCall`` per page, because each page is a
  request of its own, with its own latency, status and possible failure (a walk of ten
  pages that fails on the sixth shows five good calls and one failed one);
* every stream, once, when it ends, fails or is abandoned (closed early, left by ``break``,
  or garbage-collected unread): latency runs until then, ``output`` is the full text of the
  stream (its :attr:`UsageMap.text` pieces joined) and tokens, model and finish reason are
  read from its events; an abandoned stream has ``abandoned=True`` and no error;
* anything a data transport wraps in :func:`traced` (or reports with :meth:`Tracer.record`).

``input`` is the request as sent: ``{"path": ..., "query": ..., "body": ...}`` with the parts
the call had (a page fetched by a next link adds ``"url"``); a JSON body is the JSON that went
on the wire. Per-call headers and cookies are left out: they are where credentials travel.
``output`` is the decoded response body as JSON values (not the typed model), a stream's
text, or ``None`` after an error. Every string of ``input``, ``output`` and the error message
is scrubbed of the client's secret values (settings marked secret and credentials), as
written or percent-encoded. ``Tracer(capture_content=False)`` leaves ``input`` and ``output``
out entirely (tokens, model and cost are still read).

Attribute names (:meth:`TracedCall.attributes`, and the spans of :class:`OpenTelemetrySink`)
follow the OpenTelemetry GenAI semantic conventions where they have a name:

======================================  =====================================================
``gen_ai.provider.name``                ``Service.provider`` (only when the spec sets one)
``gen_ai.operation.name``               the operation's name, e.g. ``create_chat_completion``
``gen_ai.request.model``                the model asked for (:attr:`UsageMap.request_model`)
``gen_ai.response.model``               the model that answered (:attr:`UsageMap.model`)
``gen_ai.usage.input_tokens``           :attr:`UsageMap.tokens_input`
``gen_ai.usage.output_tokens``          :attr:`UsageMap.tokens_output`
``gen_ai.response.finish_reasons``      ``[finish_reason]`` (:attr:`UsageMap.finish_reason`)
``error.type``                          the exception's class name, e.g. ``RateLimitedError``
``http.response.status_code``           the last response's status (HTTP conventions)
``gen_ai.usage.cost.amount``            the cost, see below
``gen_ai.usage.cost.currency``          ``"USD"`` whenever a cost is set
``gen_ai.usage.cost.source``            ``"local"`` whenever a cost is set
``connector_builder.connector``         the connector (``Service.name``)
``connector_builder.attempts``          how many times the request was sent (retries + 1)
``connector_builder.stream.abandoned``  ``True`` for a stream closed before its end
======================================  =====================================================

Cost has no standard attribute yet: the GenAI conventions name token counts only (checked
against opentelemetry-semantic-conventions 0.66b2). We use ``gen_ai.usage.cost.amount`` with
``gen_ai.usage.cost.currency`` and ``gen_ai.usage.cost.source``, the names of the concrete
proposal, open-telemetry/semantic-conventions-genai pull request #443 (open), which
writes down the consensus of that repository's issue #287. Why these: a backend that adopts
the proposal reads our spans unchanged; the amount says its currency, and ``local`` says it
was computed here from the spec's dated price table, not billed by the provider; a made-up
name such as ``gen_ai.usage.cost_usd`` would sit in the conventions' own namespace with
nothing behind it, and a vendor's (``ai.total_cost``, ``langfuse.*``) ties us to one
backend. Should the proposal land under other names, :meth:`TracedCall.attributes` is the
one place to change them.

A sink that raises never breaks the call, and neither does a bug while building a trace.
After :data:`SWITCH_OFF_AFTER` consecutive failures a sink is switched off, and one warning
(``logging`` and ``warnings``) says so, once.

What a trace costs the call. The tracing code runs once per call, after the HTTP stack,
the JSON decoding and the kernel have had the CPU for a few hundred microseconds and
evicted its code and data from the caches: in situ each function it calls and each object
it touches costs a cache miss or several, three to five times what the same instructions
cost replayed in a loop. So the call path does little and touches little: one trace object
with plain slots, the model, tokens and finish reason read by one compiled function per
usage map and model class (:func:`_compile_typed_reader`: one attribute read per step,
:func:`_compile_reader` for values of any other kind), references to the request and
response bytes; the
cost, and the input and output (parsed and scrubbed), are worked out when a sink or a
reader first asks for them. A :class:`MemorySink` is fed by its deque's ``append``; a
:class:`JsonlSink`, :class:`LoggingSink` or :class:`OpenTelemetrySink` queues the call and
writes its lines, logs its records or makes its spans in batches, warm. A
stream's chunk is read in the frame that decodes it (:class:`StreamTrace`): a call per
chunk would cost as much again.
"""

from __future__ import annotations

import dataclasses
import enum
import keyword
import threading
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from builder.runtime.config import MASK
from builder.runtime.operation import wire_value
from builder.runtime.paths import _MISSING, Path, _is_model, _step
from builder.runtime.sinks import (
    LOGGER_NAME,
    JsonlSink,
    LoggingSink,
    MemorySink,
    OpenTelemetrySink,
    Sink,
)

if TYPE_CHECKING:
    import httpx

    from builder.runtime.operation import Operation
    from builder.runtime.pricing import Pricing

__all__ = [
    "COST_ATTRIBUTE",
    "SWITCH_OFF_AFTER",
    "JsonlSink",
    "LoggingSink",
    "MemorySink",
    "OpenTelemetrySink",
    "Sink",
    "TracedCall",
    "TracedError",
    "Tracer",
    "UsageMap",
    "configure",
    "get_tracer",
    "set_tracer",
    "traced",
]

COST_ATTRIBUTE = "gen_ai.usage.cost.amount"
SWITCH_OFF_AFTER = 3

_json_codec: tuple[Callable[[Any], Any], Callable[..., bytes]] | None = None


def _loads(data: bytes | str) -> Any:
    """JSON text to values: pydantic-core's parser, ~3x faster than the json module's."""
    return _codec()[0](data)


def _dumps(value: Any) -> bytes:
    """JSON values to UTF-8 JSON text, anything else written as its ``str()``."""
    return (_json_codec or _codec())[1](value, fallback=str)


def _codec() -> tuple[Callable[[Any], Any], Callable[..., bytes]]:
    global _json_codec
    if _json_codec is None:
        from pydantic_core import from_json, to_json

        _json_codec = (from_json, to_json)
    return _json_codec


# --------------------------------------------------------------------------------------- #
# What one call was
# --------------------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class TracedError:
    """The error a call ended with: the exception's class name and its (scrubbed) message."""

    type: str
    message: str


@dataclass(slots=True)
class TracedCall:
    """One operation call: what was asked, what came back, what it cost."""

    timestamp: float  # epoch seconds when the call started
    connector: str
    operation: str
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input: Any = None
    output: Any = None
    tokens_input: int | None = None
    tokens_output: int | None = None
    cost: float | None = None  # USD
    latency: float = 0.0  # seconds
    error: TracedError | None = None
    status_code: int | None = None
    attempts: int | None = None
    finish_reason: str | None = None
    streamed: bool = False
    abandoned: bool = False  # a stream closed before it ended

    @property
    def model(self) -> str | None:
        """The model that answered, else the one asked for."""
        return self.response_model or self.request_model

    def attributes(self) -> dict[str, Any]:
        """OpenTelemetry attributes (GenAI semantic-convention names); unknowns left out."""
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "connector_builder.connector": self.connector,
        }
        if self.provider is not None:
            attrs["gen_ai.provider.name"] = self.provider
        if self.request_model is not None:
            attrs["gen_ai.request.model"] = self.request_model
        if self.response_model is not None:
            attrs["gen_ai.response.model"] = self.response_model
        if self.tokens_input is not None:
            attrs["gen_ai.usage.input_tokens"] = self.tokens_input
        if self.tokens_output is not None:
            attrs["gen_ai.usage.output_tokens"] = self.tokens_output
        if self.finish_reason is not None:
            attrs["gen_ai.response.finish_reasons"] = (self.finish_reason,)
        if self.cost is not None:
            attrs[COST_ATTRIBUTE] = self.cost
            attrs["gen_ai.usage.cost.currency"] = "USD"
            attrs["gen_ai.usage.cost.source"] = "local"
        if self.error is not None:
            attrs["error.type"] = self.error.type
        if self.status_code is not None:
            attrs["http.response.status_code"] = self.status_code
        if self.attempts is not None:
            attrs["connector_builder.attempts"] = self.attempts
        if self.abandoned:
            attrs["connector_builder.stream.abandoned"] = True
        return attrs

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON values, plus ``model``."""
        data = self._metadata()
        data["input"] = self.input
        data["output"] = self.output
        return data

    def to_json(self) -> bytes:
        """:meth:`to_dict` as one line of UTF-8 JSON (what :class:`JsonlSink` writes)."""
        return _dumps(self.to_dict())

    def _metadata(self) -> dict[str, Any]:
        error = self.error
        return {
            "timestamp": self.timestamp,
            "connector": self.connector,
            "operation": self.operation,
            "provider": self.provider,
            "model": self.response_model or self.request_model,  # self.model, inline
            "request_model": self.request_model,
            "response_model": self.response_model,
            "tokens_input": self.tokens_input,
            "tokens_output": self.tokens_output,
            "cost": self.cost,
            "latency": self.latency,
            "error": None if error is None else {"type": error.type, "message": error.message},
            "status_code": self.status_code,
            "attempts": self.attempts,
            "finish_reason": self.finish_reason,
            "streamed": self.streamed,
            "abandoned": self.abandoned,
        }


_FIELDS = tuple(field.name for field in dataclasses.fields(TracedCall))
_PENDING: Any = object()  # a cost not worked out yet


class _LazyCall(TracedCall):
    """A call traced by the HTTP runtime: what costs time to work out is worked out when
    first read, not on the call's path: the cost, and the input and output, kept as the
    request body and the response were on the wire (the JSON text, a stream's joined text)
    and parsed and scrubbed on first read. :meth:`to_json` writes that JSON as received
    when it holds no secret and no line break, without parsing it at all.

    The public type stays :class:`TracedCall` (``cost``, ``input`` and ``output`` read and
    write like fields); a copy or a pickle is a plain :class:`TracedCall`.
    """

    __slots__ = ("_context", "_raw_body", "_raw_output", "_cost", "_input", "_output")
    _context: ClientTracing | None
    _raw_body: bytes | None  # the JSON request body, until input is read
    _raw_output: bytes | str | None  # a JSON response, or a stream's text, until read
    _cost: float | None
    _input: Any
    _output: Any

    # A value is set before the raw text it comes from is dropped, so that a thread
    # reading at the same time finds one or the other.

    @property
    def cost(self) -> float | None:
        cost = self._cost
        if cost is _PENDING:
            context = self._context
            pricing = None if context is None else context.pricing
            if pricing is not None:
                model = self.response_model or self.request_model
                cost = pricing.cost(model, self.tokens_input, self.tokens_output)
            else:
                cost = None
            self._cost = cost
        return cost

    @cost.setter
    def cost(self, value: float | None) -> None:
        self._cost = value

    @property
    def input(self) -> Any:
        raw = self._raw_body
        if raw is not None:
            assert self._context is not None
            self._input = {"body": self._context.scrubber.decoded(raw, _parse(raw))}
            self._raw_body = None
        return self._input

    @input.setter
    def input(self, value: Any) -> None:
        self._raw_body = None
        self._input = value

    @property
    def output(self) -> Any:
        raw = self._raw_output
        if raw is not None:
            assert self._context is not None
            scrubber = self._context.scrubber
            if isinstance(raw, str):
                self._output = scrubber.text(raw)
            else:
                self._output = scrubber.decoded(raw, _parse(raw))
            self._raw_output = None
        return self._output

    @output.setter
    def output(self, value: Any) -> None:
        self._raw_output = None
        self._output = value

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy or a pickle is a plain TracedCall: every field worked out, nothing private.
        return (TracedCall, tuple(getattr(self, name) for name in _FIELDS))

    def to_json(self) -> bytes:
        body, output = self._raw_body, self._raw_output
        if body is None and output is None:
            return super().to_json()
        context = self._context
        assert context is not None  # set whenever there is raw text
        spliceable = context.scrubber.spliceable
        if body is not None:
            body = spliceable(body)
        if output is not None:
            output = spliceable(output) if type(output) is bytes else None
        head = _dumps(self._metadata())
        return b"".join(
            (
                head[:-1],
                b',"input":{"body":' if body is not None else b',"input":',
                body if body is not None else _dumps(self.input),
                b'},"output":' if body is not None else b',"output":',
                output if output is not None else _dumps(self.output),
                b"}",
            )
        )


def _parse(raw: bytes) -> Any:
    """A response's JSON: pydantic-core's parser, else (what it refuses, such as UTF-16)
    the json module's, which is what decoded it for the call."""
    try:
        return _loads(raw)
    except ValueError:
        import json

        return json.loads(raw)


# --------------------------------------------------------------------------------------- #
# Where an operation's response keeps model, tokens and text
# --------------------------------------------------------------------------------------- #

_TEXT, _MODEL, _TOKENS_IN, _TOKENS_OUT, _FINISH = range(5)

# A response's reader: fill(value, call). A chunk's reader: read(usage, event, value), where
# usage has a _Usage's fields (a _Usage, or a StreamTrace, which reads into itself).
FillCall = Callable[[Any, "TracedCall"], None]
ReadChunk = Callable[[Any, "str | None", Any], None]
# A stream chunk's JSON text decoded (by usage.decode) and read: decode_read(usage, event, data).
DecodeRead = Callable[[Any, "str | None", str], Any]


class UsageMap:
    """Where an operation's response (or each event of its stream) keeps the model that
    answered, the token counts, the finish reason and, for a stream, the pieces of text.

    Each is a path (``usage.prompt_tokens``) read from what the call returns (the typed
    model, or the JSON for an untyped operation or a page), or from each decoded chunk of a
    stream; on a typed model a path names its fields, which are the JSON names except where
    those are not Python identifiers. For a stream of named SSE events, a mapping of event
    name to path (``{"message_delta": "usage.output_tokens"}``) reads it from those events
    only, even events the stream does not yield.
    ``request_model`` is a path into the request body (``model``). For a stream the model is
    the first one seen; token counts and finish reason are the last ones seen.

    The paths are compiled once into one function per event (:func:`_compile_reader`): a
    response or a chunk is walked once, each step shared by several paths (``choices.0``)
    taken once, with no call per path or per step: a trace reads them on every call and
    every chunk.
    """

    __slots__ = (
        "model",
        "tokens_input",
        "tokens_output",
        "text",
        "finish_reason",
        "request_model",
        "_request_model",
        "_request_key",
        "_fill_call",
        "_read_plain",
        "_decode_read",
        "_read_event",
        "_plain",
        "_fills",
        "_readers",
        "_by_event",
        "_event_readers",
    )

    def __init__(
        self,
        model: str | Mapping[str, str] | None = None,
        tokens_input: str | Mapping[str, str] | None = None,
        tokens_output: str | Mapping[str, str] | None = None,
        text: str | Mapping[str, str] | None = None,
        finish_reason: str | Mapping[str, str] | None = None,
        request_model: str | None = None,
    ) -> None:
        self.model = model
        self.tokens_input = tokens_input
        self.tokens_output = tokens_output
        self.text = text
        self.finish_reason = finish_reason
        self.request_model = request_model
        request_path = Path(request_model) if request_model else None
        self._request_model = request_path.get if request_path is not None else None
        # The usual request path is one key of a dict body ("model"): read inline.
        self._request_key: str | None = None
        if request_path is not None and not request_path._star:
            head = request_path._head
            if len(head) == 1 and isinstance(head[0], str):
                self._request_key = head[0]
        plain: list[tuple[int, Path]] = []
        by_event: dict[str, list[tuple[int, Path]]] = {}
        for code, where in (
            (_TEXT, text),
            (_MODEL, model),
            (_TOKENS_IN, tokens_input),
            (_TOKENS_OUT, tokens_output),
            (_FINISH, finish_reason),
        ):
            if where is None:
                continue
            if isinstance(where, str):
                plain.append((code, Path(where)))
            else:
                for event, path in where.items():
                    by_event.setdefault(event, []).append((code, Path(path)))
        self._plain = plain
        self._fill_call: FillCall = _compile_reader(plain, stream=False)
        reader = _compile_reader(plain, stream=True)
        self._read_plain: ReadChunk = reader
        self._decode_read: DecodeRead = reader.decode_read
        # The readers of each model class met (see filler and chunk_reader).
        self._fills: dict[type, FillCall] = {}
        self._readers: dict[type, ReadChunk] = {}
        # Each event's own paths and the ones for every event, joined once here.
        self._read_event: dict[str, ReadChunk] = {
            event: _compile_reader(plain + paths, stream=True) for event, paths in by_event.items()
        }
        self._by_event = by_event
        self._event_readers: dict[type, tuple[ReadChunk, dict[str, ReadChunk]]] = {}

    def filler(self, cls: type) -> FillCall:
        """``fill(value, call)`` for a response of ``cls``: the typed reader of that model
        class where one can be written (:func:`_compile_typed_reader`), else the one for
        any value; remembered per class (``_fills``, read first by the call path)."""
        return _remembered(
            self._fills,
            cls,
            lambda: self._typed(cls, stream=False) or self._fill_call,
            self._fill_call,
        )

    def chunk_reader(self, cls: Any) -> ReadChunk:
        """``read(usage, event, chunk)`` for the chunks of a stream of ``cls`` (a usage map
        without named events), chosen as :meth:`filler` chooses."""
        if not isinstance(cls, type):
            return self._read_plain
        return _remembered(
            self._readers,
            cls,
            lambda: self._typed(cls, stream=True) or self._read_plain,
            self._read_plain,
        )

    def chunk_decoder(self, cls: Any) -> DecodeRead:
        """:meth:`chunk_reader`, decoding the chunk first: ``decode_read(usage, event,
        data)`` returns the chunk (``usage.decode``, its stream's decoder, decodes it)."""
        return self.chunk_reader(cls).decode_read  # type: ignore[attr-defined,no-any-return]

    def event_readers(self, cls: Any) -> tuple[ReadChunk, dict[str, ReadChunk]]:
        """The readers of a stream of named events whose chunks are of ``cls``: the one
        for an event no path names, and each named event's; typed as :meth:`filler`
        chooses. (A field's path is one string or one per event, never both: each field
        has one path in an event's reader, as the typed reader needs.)"""
        if not isinstance(cls, type) or not _is_model(cls):
            return self._read_plain, self._read_event

        def typed() -> tuple[ReadChunk, dict[str, ReadChunk]]:
            by_event = {}
            for event, paths in self._by_event.items():
                generic = self._read_event[event]
                joined = self._plain + paths
                reader = _compile_typed_reader(joined, cls, stream=True, generic=generic)
                by_event[event] = reader or generic
            return self.chunk_reader(cls), by_event

        return _remembered(self._event_readers, cls, typed, (self._read_plain, self._read_event))

    def _typed(self, cls: type, *, stream: bool) -> Any:
        if not _is_model(cls):
            return None
        generic = self._read_plain if stream else self._fill_call
        return _compile_typed_reader(self._plain, cls, stream=stream, generic=generic)

    def wants_event(self, event: str) -> bool:
        """True when a path is declared for this SSE event by name."""
        return event in self._read_event

    def reader(self, event: str | None = None) -> ReadChunk:
        """The function that reads a chunk of this event (None: a chunk of NDJSON, or a
        path for every event) into a :class:`_Usage`: ``read(usage, event, chunk)``. It
        never raises: an error is reported (once per process) and the chunk skipped."""
        if event:
            return self._read_event.get(event, self._read_plain)
        return self._read_plain

    def bind(self, usage: _Usage) -> Callable[[str | None, Any], None]:
        """``on_chunk(event, chunk)``: reads each chunk of a stream into ``usage``."""
        if self._read_event:
            return partial(_read_by_event, self._read_plain, self._read_event, usage)
        return partial(self._read_plain, usage)

    def read(self, value: Any, usage: _Usage, event: str | None = None) -> None:
        """Read what ``value`` (a response, or one event's chunk) carries into ``usage``
        (as :meth:`reader` does: an error is reported, not raised)."""
        self.reader(event)(usage, event, value)

    def requested_model(self, body: Any) -> str | None:
        if self._request_model is None or body is None:
            return None
        model = self._request_model(body)
        return model if isinstance(model, str) and model else None

    def __repr__(self) -> str:
        fields = ("model", "tokens_input", "tokens_output", "text", "finish_reason")
        shown = [f"{name}={getattr(self, name)!r}" for name in fields if getattr(self, name)]
        if self.request_model:
            shown.append(f"request_model={self.request_model!r}")
        return f"UsageMap({', '.join(shown)})"


_TYPED_CLASSES = 64  # typed readers kept per usage map: classes a process meets, bounded
_Made = typing.TypeVar("_Made")


def _remembered(
    cache: dict[type, _Made], cls: type, make: Callable[[], _Made], generic: _Made
) -> _Made:
    """``cache[cls]``, made on first use; once :data:`_TYPED_CLASSES` are kept, any other
    class gets ``generic`` (not a reader written again on every look-up)."""
    found = cache.get(cls)
    if found is None:
        if len(cache) >= _TYPED_CLASSES:
            return generic
        found = cache[cls] = make()
    return found


def _read_by_event(
    plain: ReadChunk,
    by_event: dict[str, ReadChunk],
    usage: _Usage,
    event: str | None,
    value: Any,
) -> None:
    (by_event.get(event, plain) if event else plain)(usage, event, value)


class _Usage:
    """What was read so far from a response or a stream's events."""

    __slots__ = ("model", "tokens_input", "tokens_output", "finish_reason", "pieces", "decode")

    # A reader's error is reported (once per process) and the chunk skipped: a trace never
    # breaks a call. A strict one (the LLM role's, whose result it is) raises it.
    strict: typing.ClassVar[bool] = False

    def __init__(self, text: bool = False) -> None:
        self.model: str | None = None
        self.tokens_input: int | None = None
        self.tokens_output: int | None = None
        self.finish_reason: str | None = None
        self.pieces: list[str] | None = [] if text else None
        # A stream's chunk decoder (bytes to chunk), for decode_read (see StreamTrace).
        self.decode: Callable[[bytes], Any] | None = None


class _StrictUsage(_Usage):
    """A :class:`_Usage` whose readers raise their errors."""

    __slots__ = ()
    strict = True


def _step_or_none(value: Any, key: str | int) -> Any:
    """:func:`paths._step`, None for nothing there."""
    found = _step(value, key)
    return None if found is _MISSING else found


_MODELS: set[type] = set()  # classes whose fields are attributes (pydantic models), once met


def _model_step(value: Any, key: str) -> Any:
    """:func:`_step_or_none` for a string key, noting a model's class for the compiled
    readers' faster step (a model's attribute, read directly)."""
    cls = type(value)
    if cls is not dict and _is_model(cls):
        _MODELS.add(cls)
    return _step_or_none(value, key)


def _joined(value: Any) -> Any:
    """A ``*`` text path's value: the text of its parts (Anthropic's content blocks)."""
    if isinstance(value, list):
        return "".join(part for part in value if isinstance(part, str))
    return value


def _first_reason(value: list[Any]) -> Any:
    """A ``*`` path's finish reasons: the first one set."""
    return next((r for r in value if r is not None), None)


class _Node:
    """A step of the paths' tree: the steps after it, and what a path ending here reads."""

    __slots__ = ("children", "codes")

    def __init__(self) -> None:
        self.children: dict[str | int, _Node] = {}
        self.codes: list[int] = []

    def all_codes(self) -> set[int]:
        found = set(self.codes)
        for child in self.children.values():
            found |= child.all_codes()
        return found


def _path_tree(paths: Sequence[tuple[int, Path]], *, stream: bool) -> tuple[_Node, list[Any]]:
    """The paths merged into a tree of steps, and those with ``*`` (read by Path.get)."""
    root = _Node()
    starred: list[tuple[int, Path]] = []
    for code, path in paths:
        if code == _TEXT and not stream:
            continue  # a response's text is its output, not read here
        if path._star:
            starred.append((code, path))
            continue
        node = root
        for key in path._head:
            node = node.children.setdefault(key, _Node())
        node.codes.append(code)
    return root, starred


class _Emitter:
    """Writes a compiled reader's source: the guards and what a path's value sets."""

    def __init__(self, stream: bool) -> None:
        self.model_attr = "model" if stream else "response_model"
        self.pieces_attr: str | None = "pieces" if stream else None  # a response: no text
        self.lines: list[str] = []
        self.counter = 0

    def name(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def guard(self, codes: set[int]) -> str | None:
        """A subtree that only finds the model is skipped once the model is known, one
        that only finds text when no text is kept."""
        if codes == {_MODEL}:
            return f"u.{self.model_attr} is None"
        if codes == {_TEXT}:
            return f"u.{self.pieces_attr} is not None"
        return None

    def open_child(
        self, child: _Node, guarded: set[int] | None, pad: str
    ) -> tuple[str, set[int], str]:
        """Start a child's step: a fresh name for its value, what its subtree finds, and
        the indent inside its guard (opened here unless an enclosing one checks the same)."""
        codes = child.all_codes()
        cond = self.guard(codes) if codes != guarded else None
        if cond is None:
            return self.name(), codes, pad
        self.lines.append(f"{pad}if {cond}:")
        return self.name(), codes, pad + "    "

    def leaf(self, code: int, x: str, pad: str) -> None:
        """``x`` is the value at the path, as Path.get gives it (None when there is none)."""
        lines = self.lines
        if code == _TEXT:
            pieces = self.pieces_attr
            lines.append(f"{pad}if u.{pieces} is not None and isinstance({x}, str) and {x}:")
            lines.append(f"{pad}    u.{pieces}.append({x})")
        elif code == _MODEL:  # a non-empty str, or an enum's value
            model = f"u.{self.model_attr}"
            lines.append(f"{pad}if {model} is None:")
            lines.append(f"{pad}    if type({x}) is str:")
            lines.append(f"{pad}        {model} = {x} or None")
            lines.append(f"{pad}    elif isinstance({x}, _Enum):")
            lines.append(f"{pad}        {model} = str({x}.value) or None")
        elif code == _FINISH:  # a non-empty str, else what an enum or a value says
            lines.append(f"{pad}if isinstance({x}, list):")
            lines.append(f"{pad}    {x} = _first_reason({x})")
            lines.append(f"{pad}if type({x}) is str:")
            lines.append(f"{pad}    if {x}:")
            lines.append(f"{pad}        u.finish_reason = {x}")
            lines.append(f"{pad}elif {x} is not None:")
            lines.append(
                f"{pad}    u.finish_reason = str(getattr({x}, 'value', {x})) or u.finish_reason"
            )
        else:  # a token count: an int, a finite float (truncated), up to 18 ASCII digits
            name = "tokens_input" if code == _TOKENS_IN else "tokens_output"
            lines.append(f"{pad}if type({x}) is int:")
            lines.append(f"{pad}    u.{name} = {x}")
            lines.append(f"{pad}elif type({x}) is float and {x} - {x} == 0:")
            lines.append(f"{pad}    u.{name} = int({x})")
            digits = f"len({x}) <= 18 and {x}.isascii() and {x}.isdigit()"
            lines.append(f"{pad}elif type({x}) is str and {digits}:")
            lines.append(f"{pad}    u.{name} = int({x})")


def _attribute(var: str, key: str) -> str:
    if key.isascii() and key.isidentifier() and not keyword.iskeyword(key):
        return f"{var}.{key}"
    return f"getattr({var}, {key!r})"


def _bound(var: str, key: int) -> str:
    """The condition under which ``var[key]`` is in a list's range."""
    if key == 0 or key == -1:
        return var
    if key > 0:
        return f"len({var}) > {key}"
    return f"len({var}) >= {-key}"


def _compile_reader(paths: Sequence[tuple[int, Path]], *, stream: bool) -> Any:
    """One function that does what reading each path with :meth:`Path.get` and keeping
    what :class:`UsageMap` keeps would do, in one walk, whatever the value's classes.

    The paths are merged into a tree of steps. Each step is the one :meth:`Path.get` takes
    (a dict's key, a list's index, a model's attribute, else :func:`paths._step`), written
    inline; a step that finds nothing or None ends its subtree (no path below it can find a
    value there). A path with ``*`` is read by :meth:`Path.get` itself. A subtree that only
    finds the model is skipped once the model is known, one that only finds text when no
    text is kept.

    ``stream=False``: ``fill(value, call)`` sets a :class:`TracedCall`'s
    ``response_model``, tokens and finish reason; text paths are left out.
    ``stream=True``: ``read(usage, event, value)`` updates a :class:`_Usage`, and never
    raises (an error is reported once per process and the chunk skipped).
    :func:`_compile_typed_reader` writes the faster reader of one model class.
    """
    root, starred = _path_tree(paths, stream=stream)
    namespace: dict[str, Any] = {
        "_step": _step_or_none,
        "_model_step": _model_step,
        "_MS": _MODELS,
        "_first_reason": _first_reason,
        "_joined": _joined,
        "_Enum": enum.Enum,
        "_internal_error": _internal_error,
    }
    out = _Emitter(stream)
    lines = out.lines

    def walk(node: _Node, var: str, depth: int, guarded: set[int] | None = None) -> None:
        # ``var`` holds a value that is not None (missing is None here: no path can read
        # a value below either). ``guarded``: the fields an enclosing guard checked (not
        # checked again below it: a leaf checks what it sets anyway).
        pad = "    " * depth
        n = var[1:]
        lines.append(f"{pad}c{n} = type({var})")
        for key, child in node.children.items():
            value, codes, inner = out.open_child(child, guarded, pad)
            if isinstance(key, str):
                # Path.get: a dict's key; a model's attribute, else what _step finds
                # (a field under its alias, an extra); anything else: _step.
                # A model class is known once _model_step has met it: until then (and for
                # anything else) _step, which reads a model's attribute just the same.
                lines.append(f"{inner}if c{n} is dict:")
                lines.append(f"{inner}    {value} = {var}.get({key!r})")
                lines.append(f"{inner}elif c{n} in _MS:")
                lines.append(f"{inner}    try:")
                lines.append(f"{inner}        {value} = {_attribute(var, key)}")
                lines.append(f"{inner}    except AttributeError:")
                lines.append(f"{inner}        {value} = _step({var}, {key!r})")
                lines.append(f"{inner}else:")
                lines.append(f"{inner}    {value} = _model_step({var}, {key!r})")
            else:
                lines.append(f"{inner}if c{n} is list:")
                lines.append(f"{inner}    {value} = {var}[{key}] if {_bound(var, key)} else None")
                lines.append(f"{inner}elif c{n} is dict:")
                lines.append(f"{inner}    {value} = None")
                lines.append(f"{inner}else:")
                lines.append(f"{inner}    {value} = _step({var}, {key})")
            lines.append(f"{inner}if {value} is not None:")
            for code in child.codes:
                out.leaf(code, value, inner + "    ")
            if child.children:
                walk(child, value, len(inner) // 4 + 1, codes if inner != pad else guarded)

    base = 2 if stream else 1  # a stream's reader runs inside a try
    if root.children:
        walk(root, "v0", base)
    for i, (code, path) in enumerate(starred):
        namespace[f"_star{i}"] = path.get
        pad = "    " * base
        cond = out.guard({code})
        if cond is not None:
            lines.append(f"{pad}if {cond}:")
            pad += "    "
        lines.append(f"{pad}s{i} = _star{i}(v0)")
        if code == _TEXT:  # the text of every part, as one piece
            lines.append(f"{pad}s{i} = _joined(s{i})")
        out.leaf(code, f"s{i}", pad)
    if not lines:
        lines.append("    " * base + "pass")
    if stream:
        tail = [
            "    except Exception as exc:",
            "        if u.strict:",
            "            raise",
            "        _internal_error(exc)",
        ]
        source = "\n".join(["def read(u, event, v0):", "    try:", *lines, *tail]) + "\n"
        # The same walk, after decoding the chunk (u.decode: its operation's decoder, whose
        # errors are raised): a stream reads each chunk in the frame that decodes it.
        decoding = ["def decode_read(u, event, data):", "    v0 = u.decode(data.encode())"]
        source += "\n" + "\n".join([*decoding, "    try:", *lines, *tail, "    return v0"])
        source += "\n"
    else:
        source = "\n".join(["def fill(v0, u):", *lines]) + "\n"
    return _exec_reader(source, namespace, stream)


def _exec_reader(source: str, namespace: dict[str, Any], stream: bool) -> Any:
    """The function(s) ``source`` defines: ``fill``, or ``read`` with ``decode_read`` as
    its attribute; each keeps its source as its docstring, for a reader of a traceback."""
    exec(compile(source, "<usage map reader>", "exec"), namespace)
    function = namespace["read" if stream else "fill"]
    function.__doc__ = source
    if stream:
        function.decode_read = namespace["decode_read"]
        function.decode_read.__doc__ = source
    return function


class _Untyped(Exception):
    """A value of another class than the one a typed reader was written for."""


def _declared(annotation: Any) -> tuple[str, type | None, bool]:
    """What a model field declares: ("model", its class), ("list", its items' model class,
    or None for items of another kind), or ("other", None); and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _declared(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) != 1:
            return "other", None, True
        kind, cls, _ = _declared(kinds[0])
        return kind, cls, len(kinds) < len(typing.get_args(annotation))
    if origin is list:
        items = typing.get_args(annotation)
        kind, cls, _ = _declared(items[0]) if items else ("other", None, True)
        return "list", cls if kind == "model" else None, False
    if isinstance(annotation, type) and _is_model(annotation):
        return "model", annotation, False
    return "other", None, annotation is None or annotation is type(None) or annotation is Any


def _exact(cls: type) -> bool:
    """True when what pydantic makes of JSON for ``cls`` is an instance of exactly
    ``cls`` whose fields hold what their annotations declare: no validator (of a field,
    of the model, or in an annotation), no post-init, no schema of its own."""
    decorators = getattr(cls, "__pydantic_decorators__", None)
    if decorators is None or getattr(cls, "__pydantic_post_init__", True) is not None:
        return False
    if (
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
    ):
        return False
    from pydantic import BaseModel
    from pydantic.functional_validators import (
        AfterValidator,
        BeforeValidator,
        PlainValidator,
        WrapValidator,
    )

    schema = getattr(getattr(cls, "__get_pydantic_core_schema__", None), "__func__", None)
    if schema is not getattr(BaseModel.__get_pydantic_core_schema__, "__func__", None):
        return False
    hooks = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
    return not any(
        isinstance(item, hooks)
        for field in getattr(cls, "model_fields", {}).values()
        for item in field.metadata
    )


def _default_declared(field: Any, kind: str, cls: type | None) -> bool:
    """True when a field left out of the JSON holds what it declares (a default is not
    validated): none, None, a list for a list, an instance of exactly its model class."""
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return kind == "list" and field.default_factory is list
    default = field.default
    if default is PydanticUndefined or default is None:
        return True
    return type(default) is (list if kind == "list" else cls)


def _compile_typed_reader(
    paths: Sequence[tuple[int, Path]], root_class: type, *, stream: bool, generic: Any
) -> Any:
    """The reader :func:`_compile_reader` writes, for a value of one pydantic model class:
    each step reads the field it names, its class known from the model's annotations, so a
    step is one attribute read with no test of what the value is; or None when a path
    steps where the annotations do not say what it finds (``*``, an alias or an extra, a
    union of models).

    A value is checked to be of its declared class (``type(v) is C``) before a step into
    it; a value of another class (a subclass too) makes ``generic`` read the whole value.
    So that nothing it kept is kept again then, the subtree that keeps the text is walked
    last: what comes before it sets only the model (once) and the last counts and finish
    reason seen, which ``generic`` sets to the same.
    """
    root, starred = _path_tree(paths, stream=stream)
    if starred:
        return None
    namespace: dict[str, Any] = {
        "_Untyped": _Untyped,
        "_generic": generic,
        "_first_reason": _first_reason,
        "_Enum": enum.Enum,
        "_internal_error": _internal_error,
        "_C0": root_class,
    }
    depth = 3 if stream else 2

    def write(trusted: bool) -> list[str] | None:
        """The steps; ``trusted``: for values the model's validator made from JSON, whose
        classes are then known to be the declared ones (see :func:`_exact`): no checks."""
        out = _Emitter(stream)
        lines = out.lines

        def walk(
            node: _Node, var: str, kind: str, cls: Any, depth: int, guarded: set[int] | None
        ) -> bool:
            # ``var`` holds a value of ``cls`` (kind "model": a model class), or a list
            # (kind "list": ``cls`` is its items' model class, or None).
            pad = "    " * depth
            fields = cls.model_fields if kind == "model" else None
            if trusted and kind == "model" and not _exact(cls):
                return False
            children = sorted(node.children.items(), key=lambda item: _TEXT in item[1].all_codes())
            shared = fields is not None and len(children) > 1
            if shared:
                lines.append(f"{pad}d{var[1:]} = {var}.__dict__")
            for key, child in children:
                value, codes, inner = out.open_child(child, guarded, pad)
                if fields is not None:
                    if not isinstance(key, str) or key not in fields:
                        return False  # not a declared field (an alias, an extra, a property)
                    child_kind, child_class, optional = _declared(fields[key].annotation)
                    if trusted and not _default_declared(fields[key], child_kind, child_class):
                        return False
                    # A model keeps its fields in its __dict__: one attribute read for several.
                    read = f"d{var[1:]}[{key!r}]" if shared else _attribute(var, key)
                    lines.append(f"{inner}{value} = {read}")
                else:
                    if not isinstance(key, int):
                        return False  # a key into a list
                    bound = _bound(var, key)
                    lines.append(f"{inner}{value} = {var}[{key}] if {bound} else None")
                    child_kind, child_class = ("model", cls) if cls is not None else ("other", None)
                    optional = True  # an empty list, or one too short
                checked = codes if inner != pad else guarded  # what a guard above tested
                for code in child.codes:
                    if code == _FINISH:  # most chunks have none: one test
                        lines.append(f"{inner}if {value} is not None:")
                        out.leaf(code, value, inner + "    ")
                    elif code == _TEXT and checked == {_TEXT}:  # kept pieces: tested above
                        lines.append(f"{inner}if isinstance({value}, str) and {value}:")
                        lines.append(f"{inner}    u.{out.pieces_attr}.append({value})")
                    else:
                        out.leaf(code, value, inner)  # tests what it keeps (None too)
                if not child.children:
                    continue
                if child_kind == "other":
                    return False
                if child_kind == "model":
                    namespace[f"_C{value[1:]}"] = child_class
                    declared = f"_C{value[1:]}"
                else:
                    declared = "list"
                below = inner
                if trusted:  # of its declared class: None, where it may be, is all to test
                    if optional:
                        lines.append(f"{inner}if {value} is not None:")
                        below += "    "
                elif optional:  # the usual case first: a value that most often is None
                    lines.append(f"{inner}if {value} is not None:")
                    lines.append(f"{inner}    if type({value}) is not {declared}:")
                    lines.append(f"{inner}        raise _Untyped")
                    below += "    "
                else:
                    lines.append(f"{inner}if type({value}) is {declared}:")
                    below += "    "
                if not walk(child, value, child_kind, child_class, len(below) // 4, checked):
                    return False
                if not trusted and not optional:
                    lines.append(f"{inner}elif {value} is not None:")
                    lines.append(f"{inner}    raise _Untyped")
            return True

        if not walk(root, "v0", "model", root_class, depth, None):
            return None
        return lines or ["    " * depth + "pass"]

    steps = write(trusted=False)
    if steps is None:
        return None
    # A stream's decode_read reads only chunks it decoded itself.
    decoded_steps = (write(trusted=True) if stream else None) or steps

    def reading(head: list[str], body: list[str], tail: list[str]) -> list[str]:
        # A stream's reader never raises: an error is reported and the chunk skipped.
        return [
            *head,
            "    try:",
            "        try:",
            "            if type(v0) is not _C0:",
            "                raise _Untyped",
            *body,
            "        except (_Untyped, AttributeError, KeyError):",
            "            _generic(u, event, v0)",
            "    except Exception as exc:",
            "        if u.strict:",
            "            raise",
            "        _internal_error(exc)",
            *tail,
        ]

    if stream:
        read = reading(["def read(u, event, v0):"], steps, [])
        decoding = ["def decode_read(u, event, data):", "    v0 = u.decode(data.encode())"]
        source = "\n".join([*read, "", *reading(decoding, decoded_steps, ["    return v0"])])
    else:
        source = "\n".join(
            [
                "def fill(v0, u):",
                "    try:",
                "        if type(v0) is not _C0:",
                "            raise _Untyped",
                *steps,
                "    except (_Untyped, AttributeError, KeyError):",
                "        _generic(v0, u)",
            ]
        )
    return _exec_reader(source + "\n", namespace, stream)


# --------------------------------------------------------------------------------------- #
# Keeping secrets out of traces
# --------------------------------------------------------------------------------------- #


def _plain_in_json(text: str) -> bool:
    """True when JSON writes ``text`` as it is (no escaping), in strings and keys alike."""
    return all(" " <= ch <= "~" and ch not in '"\\/' for ch in text)


class Scrubber:
    """Replaces secret values (as written, or percent-encoded) by the mask, in text and in
    JSON values; the forms to look for are worked out once per client."""

    __slots__ = ("_forms", "_raw_forms", "_plain", "_needles", "_raw_needles")

    def __init__(self, secrets: Iterable[str]) -> None:
        from urllib.parse import quote, quote_plus

        forms = {
            form
            for value in secrets
            if value
            for form in (value, quote(value, safe=""), quote_plus(value))
        }
        ordered = sorted(forms, key=len, reverse=True)  # longer first: no fragment is left
        self._forms = tuple(ordered)
        self._raw_forms = tuple(form.encode() for form in ordered)
        self._plain = all(_plain_in_json(form) for form in ordered)
        # To tell whether any form is there, the forms that hold no other one suffice
        # ("Bearer sk-1" holds "sk-1"): one search per secret, not three or four.
        needles = [f for f in ordered if not any(g != f and g in f for g in ordered)]
        self._needles = tuple(needles)
        self._raw_needles = tuple(form.encode() for form in needles)

    @property
    def active(self) -> bool:
        return bool(self._forms)

    def text(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                break
        else:
            return text  # no secret: the usual case, one search per secret
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string scrubbed (keys too)."""
        if not self._forms:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self._walk(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    def decoded(self, raw: bytes, value: Any) -> Any:
        """``value``, decoded from the JSON text ``raw``, scrubbed."""
        return value if self.clean(raw) else self._walk(value)

    def spliceable(self, raw: bytes) -> bytes | None:
        """The JSON text ``raw`` as it may go into a JSON line as it is: without a secret
        (:meth:`clean`) or a line break (around it, it is stripped), else None."""
        if b"\n" in raw or b"\r" in raw:
            raw = raw.strip()  # many servers end a JSON body with a newline
            if b"\n" in raw or b"\r" in raw:
                return None
        if not self._forms:
            return raw
        if not self._plain or (b"\\" in raw and (b"\\u" in raw or b"\\/" in raw)):
            return None
        for form in self._raw_needles:
            if form in raw:
                return None
        return raw

    def clean(self, raw: bytes) -> bool:
        """True when the JSON text ``raw`` cannot hold a secret: every secret is written as
        it is in JSON, and none is in ``raw``, nor a ``\\u`` or ``\\/`` escape that could
        hide one."""
        if not self._forms:
            return True
        if not self._plain:
            return False
        # A one-byte search first: it is memchr, many times faster than a two-byte one.
        if b"\\" in raw and (b"\\u" in raw or b"\\/" in raw):
            return False
        for form in self._raw_needles:
            if form in raw:
                return False
        return True


_NO_SCRUBBER = Scrubber(())
_scrubbers: dict[tuple[str, ...], Scrubber] = {}


def _scrubber_for(secrets: Sequence[str]) -> Scrubber:
    """A cached scrubber for these secrets (transports pass the same list on every call)."""
    if not secrets:
        return _NO_SCRUBBER
    key = tuple(secrets)
    found = _scrubbers.get(key)
    if found is None:
        if len(_scrubbers) > 64:
            _scrubbers.clear()
        found = _scrubbers[key] = Scrubber(key)
    return found


def _jsonable(value: Any) -> Any:
    """A value as JSON values: models dumped, dates in ISO 8601, bytes and files summarised."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", by_alias=True, exclude_none=True)
    if hasattr(value, "read"):
        return "<file>"
    isoformat = getattr(value, "isoformat", None)
    if isoformat is not None:
        return isoformat()
    enum_value = getattr(value, "value", None)
    if enum_value is not None:
        return _jsonable(enum_value)
    return str(value)


def _error_of(exc: BaseException, scrubber: Scrubber) -> TracedError:
    return TracedError(type(exc).__name__, scrubber.text(str(exc) or type(exc).__name__))


# --------------------------------------------------------------------------------------- #
# The tracer
# --------------------------------------------------------------------------------------- #


class _Slot:
    __slots__ = ("sink", "emit", "failures")

    def __init__(self, sink: Any) -> None:
        emit = getattr(sink, "emit", None)
        if emit is None:
            if not callable(sink):
                raise TypeError(f"a sink needs an emit(call) method: {sink!r}")
            emit = sink
        if getattr(emit, "__func__", None) is MemorySink.emit:
            # A MemorySink's own emit (not overridden): the deque's append, called directly.
            emit = sink._calls.append
        self.sink = sink
        self.emit: Callable[[TracedCall], None] = emit
        self.failures = 0


class Tracer:
    """Sends each :class:`TracedCall` to its sinks; active while it has a working sink.

    ``capture_content=False`` keeps request and response content out of the traces.
    """

    def __init__(self, *sinks: Any, capture_content: bool = True) -> None:
        self.capture_content = capture_content
        self._slots: tuple[_Slot, ...] = tuple(_Slot(sink) for sink in sinks)
        self._off: list[Any] = []
        self._lock = threading.Lock()
        self.active = bool(self._slots)  # read on every call: a plain attribute

    @property
    def sinks(self) -> list[Any]:
        """The sinks still switched on."""
        return [slot.sink for slot in self._slots]

    @property
    def switched_off(self) -> list[Any]:
        """The sinks switched off after failing repeatedly."""
        return list(self._off)

    def add(self, sink: Any) -> None:
        with self._lock:
            self._slots = (*self._slots, _Slot(sink))
            self.active = True

    def emit(self, call: TracedCall) -> None:
        """Hand ``call`` to every sink; a sink that raises is counted, never propagated."""
        for slot in self._slots:
            try:
                slot.emit(call)
            except Exception as exc:
                self._failed(slot, exc)
            else:
                if slot.failures:
                    slot.failures = 0

    def _failed(self, slot: _Slot, exc: Exception) -> None:
        slot.failures += 1
        if slot.failures < SWITCH_OFF_AFTER:
            return
        with self._lock:
            if slot not in self._slots:
                return  # another thread switched it off already
            self._slots = tuple(s for s in self._slots if s is not slot)
            self._off.append(slot.sink)
            self.active = bool(self._slots)
        detail = str(exc)[:200] or "(no message)"
        message = (
            f"tracing sink {slot.sink!r} failed {slot.failures} times in a row and is "
            f"switched off; last error: {type(exc).__name__}: {detail}"
        )
        _warn(message)

    def record(
        self,
        connector: str,
        operation: str,
        *,
        input: Any = None,
        output: Any = None,
        error: BaseException | None = None,
        latency: float = 0.0,
        timestamp: float | None = None,
        provider: str | None = None,
        request_model: str | None = None,
        response_model: str | None = None,
        tokens_input: int | None = None,
        tokens_output: int | None = None,
        finish_reason: str | None = None,
        pricing: Pricing | None = None,
        status_code: int | None = None,
        attempts: int | None = None,
        secrets: Sequence[str] = (),
    ) -> TracedCall | None:
        """Trace one call made outside the HTTP runtime (a data transport's query, a
        publish, ...): values are turned into JSON values and scrubbed of ``secrets``, the
        cost is read from ``pricing``. Returns the call, or None while tracing is off."""
        if not self.active:
            return None
        scrubber = _scrubber_for(secrets)
        call = TracedCall(
            time.time() - latency if timestamp is None else timestamp,
            connector,
            operation,
            provider=provider,
            request_model=request_model,
            response_model=response_model,
            tokens_input=tokens_input,
            tokens_output=tokens_output,
            latency=latency,
            status_code=status_code,
            attempts=attempts,
            finish_reason=finish_reason,
        )
        if self.capture_content:
            call.input = scrubber.value(_jsonable(input))
            call.output = scrubber.value(_jsonable(output))
        if error is not None:
            call.error = _error_of(error, scrubber)
        if pricing is not None:
            call.cost = pricing.cost(call.model, tokens_input, tokens_output)
        self.emit(call)
        return call

    def traced(
        self,
        connector: str,
        operation: str,
        input: Any = None,
        *,
        secrets: Sequence[str] = (),
        provider: str | None = None,
        request_model: str | None = None,
        pricing: Pricing | None = None,
    ) -> Traced:
        """A context manager that traces the block as one call (see :func:`traced`)."""
        return Traced(self, connector, operation, input, secrets, provider, request_model, pricing)

    def flush(self) -> None:
        """Have the sinks that queue calls (:class:`JsonlSink`, :class:`LoggingSink`,
        :class:`OpenTelemetrySink`) hand on what they hold now."""
        _each(self.sinks, "write_queued")

    def close(self) -> None:
        """Close the sinks that have a ``close()`` (what they queued is handed on)."""
        _each([*self.sinks, *self._off], "close")

    def __repr__(self) -> str:
        state = "on" if self.active else "off"
        return f"Tracer({', '.join(repr(s) for s in self.sinks)}; {state})"


def _each(sinks: list[Any], method: str) -> None:
    """Call ``method`` of each sink that has it, every one whatever the others do; the
    first error is raised once all are done."""
    first: Exception | None = None
    for sink in sinks:
        call = getattr(sink, method, None)
        if call is not None:
            try:
                call()
            except Exception as exc:
                first = first or exc
    if first is not None:
        raise first


_warned_internal = False


def _warn(message: str) -> None:
    """Say it on the ``connectors.tracing`` logger and as a RuntimeWarning; neither may
    break the call (``-W error`` turns the warning into an exception: it is swallowed)."""
    import logging
    import warnings

    try:
        logging.getLogger(LOGGER_NAME).warning("%s", message)
    except Exception:  # a broken handler: the call goes on
        pass
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    except Exception:  # -W error
        pass


def _internal_error(exc: Exception) -> None:
    """A bug while building a trace: the call goes on; said once per process."""
    global _warned_internal
    if not _warned_internal:
        _warned_internal = True
        _warn(f"a trace could not be built and was dropped: {type(exc).__name__}: {exc}")


_process_tracer = Tracer()  # off: no sinks


def get_tracer() -> Tracer:
    """The process-wide tracer (used by every client created without ``tracer=``)."""
    return _process_tracer


def set_tracer(tracer: Tracer | None) -> Tracer:
    """Make ``tracer`` the process-wide tracer (None: off); returns the previous one."""
    global _process_tracer
    previous, _process_tracer = _process_tracer, tracer if tracer is not None else Tracer()
    return previous


def configure(*sinks: Any, capture_content: bool = True) -> Tracer:
    """Trace every client in this process to ``sinks`` (none: tracing off); returns the
    new process-wide tracer."""
    tracer = Tracer(*sinks, capture_content=capture_content)
    set_tracer(tracer)
    return tracer


# --------------------------------------------------------------------------------------- #
# A helper for connectors outside the HTTP runtime
# --------------------------------------------------------------------------------------- #


class Traced:
    """Traces a block as one call: its latency, its error (an exception leaving the block,
    which is not swallowed) and what the block sets on this object: ``output``,
    ``tokens_input``, ``tokens_output``, ``response_model``, ``finish_reason``."""

    __slots__ = (
        "_tracer",
        "_connector",
        "_operation",
        "_input",
        "_secrets",
        "_provider",
        "_request_model",
        "_pricing",
        "_timestamp",
        "_started",
        "output",
        "tokens_input",
        "tokens_output",
        "response_model",
        "finish_reason",
    )

    def __init__(
        self,
        tracer: Tracer,
        connector: str,
        operation: str,
        input: Any,
        secrets: Sequence[str],
        provider: str | None,
        request_model: str | None,
        pricing: Pricing | None,
    ) -> None:
        self._tracer = tracer
        self._connector = connector
        self._operation = operation
        self._input = input
        self._secrets = secrets
        self._provider = provider
        self._request_model = request_model
        self._pricing = pricing
        self._timestamp = 0.0
        self._started = 0.0
        self.output: Any = None
        self.tokens_input: int | None = None
        self.tokens_output: int | None = None
        self.response_model: str | None = None
        self.finish_reason: str | None = None

    def __enter__(self) -> Traced:
        if self._tracer.active:
            self._timestamp = time.time()
            self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._started or not self._tracer.active:
            return
        try:
            self._tracer.record(
                self._connector,
                self._operation,
                input=self._input,
                output=self.output,
                error=exc,
                latency=time.perf_counter() - self._started,
                timestamp=self._timestamp,
                provider=self._provider,
                request_model=self._request_model,
                response_model=self.response_model,
                tokens_input=self.tokens_input,
                tokens_output=self.tokens_output,
                finish_reason=self.finish_reason,
                pricing=self._pricing,
                secrets=self._secrets,
            )
        except Exception as error:  # never let tracing replace the block's own outcome
            _internal_error(error)


def traced(
    tracer: Tracer | None,
    connector: str,
    operation: str,
    input: Any = None,
    *,
    secrets: Sequence[str] = (),
    provider: str | None = None,
    request_model: str | None = None,
    pricing: Pricing | None = None,
) -> Traced:
    """Trace a block of a non-HTTP connector as one call (``tracer`` None: the process-wide
    tracer)::

        with traced(self._tracer, self._name, "query", {"sql": sql}, secrets=self._secrets) as t:
            rows = cursor.fetchall()
            t.output = {"rows": len(rows)}

    While tracing is off it costs an object and two attribute checks.
    """
    return Traced(
        tracer if tracer is not None else _process_tracer,
        connector,
        operation,
        input,
        secrets,
        provider,
        request_model,
        pricing,
    )


# --------------------------------------------------------------------------------------- #
# The HTTP runtime's hooks (used by builder.runtime.client)
# --------------------------------------------------------------------------------------- #


_NOTHING: Any = object()


class ClientTracing:
    """What a client's traces share: names, prices and its secrets' scrubber (made on the
    first traced call of the client)."""

    __slots__ = ("connector", "provider", "pricing", "scrubber")

    def __init__(
        self, connector: str, provider: str | None, pricing: Pricing | None, secrets: list[str]
    ) -> None:
        self.connector = connector
        self.provider = provider
        self.pricing = pricing
        self.scrubber = Scrubber(secrets)


_new = object.__new__
_perf_counter = time.perf_counter
_time = time.time


class CallTrace:
    """One traced request, from before it is built until it is answered or fails.

    The call path does only what cannot wait: the clock, the status, the counts and model
    read from the response (one compiled walk, see :class:`UsageMap`), and references to
    the request and response bytes; cost, input and output are worked out when a sink or a
    reader first asks for them (:class:`_LazyCall`).
    """

    __slots__ = (
        "tracer",
        "context",
        "op",
        "path",
        "query",
        "body",
        "timestamp",
        "started",
        "tally",
        "request",
        "url",
    )

    def __init__(
        self,
        tracer: Tracer,
        context: ClientTracing,
        op: Operation[Any],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        body: Any,
        url: str | None = None,
    ) -> None:
        self.tracer = tracer
        self.context = context
        self.op = op
        self.path = path
        self.query = query
        self.body = body
        self.url = url
        self.tally = [0]  # requests sent, counted by the pipeline
        self.request: httpx.Request | None = None
        self.timestamp = _time()
        self.started = _perf_counter()

    def _call(self) -> _LazyCall:
        """The trace, with what every outcome has (the cost is worked out when read)."""
        context = self.context
        call: _LazyCall = _new(_LazyCall)
        call.latency = _perf_counter() - self.started
        call.timestamp = self.timestamp
        call.connector = context.connector
        call.operation = self.op.name
        call.provider = context.provider
        call.request_model = None
        call.response_model = None
        call.tokens_input = None
        call.tokens_output = None
        call.error = None
        call.status_code = None
        call.attempts = self.tally[0]
        call.finish_reason = None
        call.streamed = False
        call.abandoned = False
        call._context = context
        call._raw_body = None
        call._raw_output = None
        call._cost = _PENDING
        call._input = None
        call._output = None
        return call

    def succeeded(self, response: httpx.Response, result: Any, body: Any = _NOTHING) -> None:
        """The call answered: ``result`` is what it returns; ``body``, when given, is the
        response already parsed as JSON (a page)."""
        # Runs once per call with cold caches (the call's I/O ran in between): one frame,
        # straight-line, what _call() and _input() do written out.
        try:
            op = self.op
            context = self.context
            call: _LazyCall = _new(_LazyCall)
            call.latency = _perf_counter() - self.started
            call.timestamp = self.timestamp
            call.connector = context.connector
            call.operation = op.name
            call.provider = context.provider
            call.request_model = None
            call.response_model = None
            call.tokens_input = None
            call.tokens_output = None
            call.error = None
            call.status_code = response.status_code
            call.attempts = self.tally[0]
            call.finish_reason = None
            call.streamed = False
            call.abandoned = False
            call._context = context
            call._raw_body = None
            call._raw_output = None
            call._cost = _PENDING
            call._input = None
            call._output = None
            usage = op.usage
            if usage is not None:
                request = self.body
                key = usage._request_key
                if key is not None and type(request) is dict:
                    model = request.get(key)
                    if isinstance(model, str) and model:
                        call.request_model = model
                elif usage._request_model is not None:
                    call.request_model = usage.requested_model(request)
                value = result if body is _NOTHING else body
                fill = usage._fills.get(type(value))
                (fill or usage.filler(type(value)))(value, call)
            tracer = self.tracer
            if tracer.capture_content:
                if op.response_kind == "json":
                    content = response.content
                    if content:
                        call._raw_output = content  # parsed and scrubbed when read
                else:
                    call._output = self._output(response, result)
                request = self.request
                raw = (
                    request.content
                    if request is not None
                    and self.body is not None
                    and op.body_kind == "json"
                    and not self.path
                    and not self.query
                    and self.url is None
                    else None
                )
                if raw:
                    call._raw_body = raw  # body only (the LLM case): parsed when read
                else:
                    call._input = self._input_parts()
            for slot in tracer._slots:  # Tracer.emit, written out
                try:
                    slot.emit(call)
                except Exception as exc:
                    tracer._failed(slot, exc)
                else:
                    if slot.failures:
                        slot.failures = 0
        except Exception as exc:
            _internal_error(exc)

    def failed(self, exc: BaseException) -> None:
        """The call raised ``exc`` (already a ConnectorError, or a cancellation)."""
        try:
            call = self._call()
            call.error = _error_of(exc, self.context.scrubber)
            call.status_code = getattr(exc, "status_code", None)
            usage = self.op.usage
            if usage is not None:
                call.request_model = usage.requested_model(self.body)
            if self.tracer.capture_content:
                self._input(call)
            self.tracer.emit(call)
        except Exception as error:
            _internal_error(error)

    def _input(self, call: _LazyCall) -> None:
        """Set the call's input: the request's path, query, next link and body, as sent."""
        request = self.request
        if (
            request is not None
            and self.body is not None
            and self.op.body_kind == "json"
            and not self.path
            and not self.query
            and self.url is None
        ):
            raw = request.content
            if raw:
                call._raw_body = raw  # body only (the LLM case): parsed when read
                return
        call._input = self._input_parts()

    def _input_parts(self) -> dict[str, Any]:
        scrubber = self.context.scrubber
        parts: dict[str, Any] = {}
        if self.path:
            parts["path"] = scrubber.value({k: wire_value(v) for k, v in self.path.items()})
        if self.query:
            query = {k: wire_value(v) for k, v in self.query.items() if v is not None}
            if query:
                parts["query"] = scrubber.value(query)
        if self.url is not None:
            parts["url"] = scrubber.text(self.url)
        body = self.body
        if body is not None:
            request = self.request
            kind = self.op.body_kind
            if kind == "json" and request is not None:
                raw = request.content
                parts["body"] = scrubber.decoded(raw, _loads(raw)) if raw else None
            elif kind == "text" and isinstance(body, str):
                parts["body"] = scrubber.text(body)
            else:
                parts["body"] = scrubber.value(_jsonable(body))
        return parts

    def _output(self, response: httpx.Response, result: Any) -> Any:
        kind = self.op.response_kind
        if kind == "text":
            return self.context.scrubber.text(result) if isinstance(result, str) else None
        if kind == "bytes":
            return f"<{len(response.content)} bytes>"
        return None


_ABANDONED = GeneratorExit()  # what an abandoned stream is stopped with


class StreamTrace(CallTrace):
    """A traced stream: read each event as it passes, send the trace once when the stream
    ends, fails or is abandoned (closed early, or garbage-collected unfinished).

    Each chunk is read as it is decoded, into the trace itself (it has the fields of a
    :class:`_Usage`: one object less per stream): its text appended to a list (joined once
    at the end, scrubbed when the output is first read), its model, tokens and finish
    reason kept. ``decode_read(trace, name, data)`` (a usage map without named events)
    decodes a chunk's JSON text with the operation's decoder and reads it with the reader
    written for the chunks' model class (:meth:`UsageMap.chunk_decoder`), in one frame:
    the stream's code calls it instead of the decoder, so a traced chunk costs no call
    more than an untraced one (a call per chunk, run with cold caches, costs about as much
    as the reading). Otherwise ``read_event(trace, name, chunk)`` reads a decoded chunk
    with its event's reader. Both are None when the operation has no usage map. Neither
    holds the trace, so that a stream dropped unfinished is freed, and traced, at once.
    """

    __slots__ = (
        "status_code",
        "finished",
        "read_event",
        "decode_read",
        # a _Usage's fields, which the readers fill
        "model",
        "tokens_input",
        "tokens_output",
        "finish_reason",
        "pieces",
        "decode",
    )
    strict: typing.ClassVar[bool] = False  # a reader's error is reported, not raised

    def __init__(
        self,
        tracer: Tracer,
        context: ClientTracing,
        op: Operation[Any],
        path: Mapping[str, Any] | None,
        query: Mapping[str, Any] | None,
        body: Any,
    ) -> None:
        # CallTrace.__init__ and _Usage() written out: once per stream, caches cold.
        self.tracer = tracer
        self.context = context
        self.op = op
        self.path = path
        self.query = query
        self.body = body
        self.url = None
        self.tally = [0]
        self.request = None
        self.timestamp = _time()
        self.started = _perf_counter()
        usage = op.usage
        self.model = self.tokens_input = self.tokens_output = self.finish_reason = None
        self.pieces: list[str] | None = (
            [] if tracer.capture_content and usage is not None and usage.text is not None else None
        )
        self.decode: Callable[[bytes], Any] | None = None
        self.status_code: int | None = None
        self.finished = False
        self.read_event: ReadChunk | None = None
        self.decode_read: DecodeRead | None = None
        if usage is None:
            pass
        elif usage._read_event or op.stream is None:
            if op.stream is not None:
                op.stream.item.json_reader()  # the chunks' class, resolved when given lazily
                plain, by_event = usage.event_readers(op.stream.item.type)
            else:
                plain, by_event = usage._read_plain, usage._read_event
            self.read_event = partial(_read_by_event, plain, by_event)
        else:
            item = op.stream.item
            self.decode = item.json_reader()
            read = usage._readers.get(item.type) or usage.chunk_reader(item.type)
            self.decode_read = read.decode_read  # type: ignore[attr-defined]

    def opened(self, response: httpx.Response) -> None:
        self.status_code = response.status_code

    def skipped_event(self, event: str, data: str) -> None:
        """An SSE event the stream does not yield; read only if a path names it."""
        usage = self.op.usage
        if usage is not None:
            read = usage._read_event.get(event)
            if read is not None:
                try:
                    read(self, event, _loads(data))
                except Exception as exc:
                    _internal_error(exc)

    def failed(self, exc: BaseException) -> None:
        self.finished = True
        super().failed(exc)

    def _call(self) -> _LazyCall:
        call = super()._call()
        call.streamed = True
        return call

    def stop(self, exc: BaseException | None = None) -> None:
        """The stream is over: ended (``exc`` None), abandoned (GeneratorExit) or failed."""
        if self.finished:
            return
        self.finished = True
        try:
            # CallTrace._call() written out: once per stream, caches cold.
            context = self.context
            op = self.op
            call: _LazyCall = _new(_LazyCall)
            call.latency = _perf_counter() - self.started
            call.timestamp = self.timestamp
            call.connector = context.connector
            call.operation = op.name
            call.provider = context.provider
            call.request_model = None
            call.error = None
            call.status_code = self.status_code
            call.attempts = self.tally[0]
            call.streamed = True
            call.abandoned = False
            call._context = context
            call._raw_body = None
            call._raw_output = None
            call._cost = _PENDING
            call._input = None
            call._output = None
            usage = op.usage
            call.response_model = self.model
            call.tokens_input = self.tokens_input
            call.tokens_output = self.tokens_output
            call.finish_reason = self.finish_reason
            if usage is not None:
                body = self.body
                key = usage._request_key
                if key is not None and type(body) is dict:
                    model = body.get(key)
                    if isinstance(model, str) and model:
                        call.request_model = model
                elif usage._request_model is not None:
                    call.request_model = usage.requested_model(body)
            if exc is not None:
                if isinstance(exc, GeneratorExit):
                    call.abandoned = True
                else:
                    call.error = _error_of(exc, self.context.scrubber)
            tracer = self.tracer
            if tracer.capture_content:
                pieces = self.pieces
                if pieces is not None:
                    call._raw_output = "".join(pieces)  # scrubbed when read
                request = self.request
                raw = (
                    request.content
                    if request is not None
                    and self.body is not None
                    and op.body_kind == "json"
                    and not self.path
                    and not self.query
                    else None
                )
                if raw:
                    call._raw_body = raw  # parsed when read
                else:
                    call._input = self._input_parts()
            for slot in tracer._slots:  # Tracer.emit, written out
                try:
                    slot.emit(call)
                except Exception as error:
                    tracer._failed(slot, error)
                else:
                    if slot.failures:
                        slot.failures = 0
        except Exception as error:
            _internal_error(error)

    def abandon(self) -> None:
        self.stop(_ABANDONED)

    def __del__(self) -> None:
        # A stream dropped without being read to its end or closed.
        if not self.finished:
            self.stop(_ABANDONED)
