"""The uniform LLM role: ``chat`` / ``generate`` / ``stream`` / ``embed`` / ``transform``.

A provider's spec says, as data, where the role's arguments go in its request bodies and
where its responses keep the text, the token counts and the vectors (:class:`ChatMap`,
:class:`StreamMap`, :class:`EmbedMap`). The generated client mixes in :class:`LLMMixin`
(or :class:`AsyncLLMMixin`); every call then goes through the client's own ``_call`` /
``_stream``, so retries, rate limits, the circuit breaker and tracing apply as to any other
operation. No provider has code of its own here.

Also here: :func:`get_llm` (a provider by name, or the first configured one),
:class:`Fallback` (providers tried in order) and :class:`ResponseCache` (opt-in).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from builder.runtime.errors import (
    CircuitOpenError,
    ConfigError,
    ConnectorError,
    HTTPStatusError,
    ResponseValidationError,
    TransportError,
)
from builder.runtime.paths import Path
from builder.runtime.tracing import ReadChunk, UsageMap, _StrictUsage

if TYPE_CHECKING:
    from builder.runtime.operation import Operation, Service
    from builder.runtime.pricing import Pricing
    from builder.runtime.resilience import CircuitBreaker, RetryPolicy

__all__ = [
    "DEFAULT_ORDER",
    "AllProvidersFailedError",
    "EmbedTransform",
    "AsyncChatStream",
    "AsyncFallback",
    "AsyncLLMMixin",
    "ChatMap",
    "ChatResult",
    "ChatStream",
    "EmbedMap",
    "Embeddings",
    "Fallback",
    "LLMMixin",
    "LLMRole",
    "NotSupportedError",
    "ResponseCache",
    "StreamMap",
    "falls_over",
    "get_llm",
]

R = TypeVar("R")

Messages = str | Sequence[Any]
"""A prompt (one user message) or a list of messages: dicts or the provider's models."""


class NotSupportedError(ConnectorError):
    """The provider has no such capability (``anthropic has no embeddings``)."""


class AllProvidersFailedError(ConnectorError):
    """Every provider of a :class:`Fallback` failed or was skipped.

    ``errors`` holds ``(provider, error)`` for each attempt, in order.
    """

    def __init__(self, errors: list[tuple[str, ConnectorError]]) -> None:
        listed = "; ".join(f"{name}: {error}" for name, error in errors)
        super().__init__(f"every provider failed: {listed}")
        self.errors = errors


# -- the maps (runtime side of builder/spec/llm.py) ------------------------------------------


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


class _RequestMap:
    """Where the role's arguments go in the operation's body."""

    __slots__ = ("operation", "model", "fixed", "options", "defaults")

    def __init__(
        self,
        operation: Operation[Any],
        model: str,
        fixed: Mapping[str, Any] | None,
        options: Mapping[str, str] | None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.operation = operation
        self.model = model
        self.fixed = dict(fixed or {})
        self.options = dict(options or {})
        self.defaults = dict(defaults or {})  # role option -> value when the call gives none


class _ChatRequestMap(_RequestMap):
    __slots__ = ("messages", "system")

    def __init__(
        self,
        operation: Operation[Any],
        model: str,
        fixed: Mapping[str, Any] | None,
        options: Mapping[str, str] | None,
        messages: str,
        system: str | None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(operation, model, fixed, options, defaults)
        self.messages = messages
        self.system = system


class ChatMap(_ChatRequestMap):
    """``chat()`` / ``generate()``: one request, one response; paths into the response."""

    __slots__ = ("content", "finish_reason", "response_model", "tokens_input", "tokens_output")

    def __init__(
        self,
        *,
        operation: Operation[Any],
        content: str,
        model: str = "model",
        messages: str = "messages",
        system: str | None = None,
        fixed: Mapping[str, Any] | None = None,
        options: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        finish_reason: str | None = None,
        response_model: str | None = "model",
        tokens_input: str | None = None,
        tokens_output: str | None = None,
    ) -> None:
        super().__init__(operation, model, fixed, options, messages, system, defaults)
        self.content = Path(content)
        self.finish_reason = _path(finish_reason)
        self.response_model = _path(response_model)
        self.tokens_input = _path(tokens_input)
        self.tokens_output = _path(tokens_output)


class StreamMap(_ChatRequestMap):
    """``stream()``: each path is one for every event, or SSE event name -> path; kept as
    given, compiled into :attr:`reading` on the first stream."""

    __slots__ = (
        "text",
        "finish_reason",
        "response_model",
        "tokens_input",
        "tokens_output",
        "by_event",
        "_reading",
    )

    def __init__(
        self,
        *,
        operation: Operation[Any],
        text: str | Mapping[str, str],
        model: str = "model",
        messages: str = "messages",
        system: str | None = None,
        fixed: Mapping[str, Any] | None = None,
        options: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        finish_reason: str | Mapping[str, str] | None = None,
        response_model: str | Mapping[str, str] | None = None,
        tokens_input: str | Mapping[str, str] | None = None,
        tokens_output: str | Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(operation, model, fixed, options, messages, system, defaults)
        self.text = text
        self.finish_reason = finish_reason
        self.response_model = response_model
        self.tokens_input = tokens_input
        self.tokens_output = tokens_output
        # Only a map with per-event paths needs each chunk's event name.
        self.by_event = any(
            isinstance(v, Mapping)
            for v in (text, finish_reason, response_model, tokens_input, tokens_output)
        )
        self._reading: UsageMap | None = None

    @property
    def reading(self) -> UsageMap:
        """The paths compiled into the readers tracing uses (one walk per chunk): the
        operation's own usage map when it names the same paths (the generator's), else
        one made on first use."""
        reading = self._reading
        if reading is None:
            # As UsageMap takes them: model, tokens_input, tokens_output, text, finish_reason.
            paths = (
                self.response_model,
                self.tokens_input,
                self.tokens_output,
                self.text,
                self.finish_reason,
            )
            usage = self.operation.usage
            if usage is not None and paths == (
                usage.model,
                usage.tokens_input,
                usage.tokens_output,
                usage.text,
                usage.finish_reason,
            ):
                reading = usage
            else:
                model, tokens_input, tokens_output, text, finish_reason = paths
                reading = UsageMap(model, tokens_input, tokens_output, text, finish_reason)
            self._reading = reading
        return reading


class EmbedMap(_RequestMap):
    """``embed()``: texts in, one vector per text out."""

    __slots__ = ("input", "input_type", "input_types", "vectors", "tokens_input", "max_batch")

    def __init__(
        self,
        *,
        operation: Operation[Any],
        vectors: str,
        model: str = "model",
        input: str = "input",  # noqa: A002 - the spec's field name
        input_type: str | None = None,
        input_types: Mapping[str, str] | None = None,
        fixed: Mapping[str, Any] | None = None,
        options: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        tokens_input: str | None = None,
        max_batch: int = 96,
    ) -> None:
        super().__init__(operation, model, fixed, options, defaults)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.input = input
        self.input_type = input_type
        self.input_types = dict(input_types or {})
        self.vectors = Path(vectors)
        self.tokens_input = _path(tokens_input)
        self.max_batch = max_batch


@dataclass(frozen=True, slots=True)
class LLMRole:
    """A provider's mapping onto the role; a capability it lacks is None."""

    provider: str
    default_model: str | None = None
    default_embedding_model: str | None = None
    chat: ChatMap | None = None
    stream: StreamMap | None = None
    embed: EmbedMap | None = None


# -- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ChatResult:
    """One answer. ``latency`` is in seconds; ``cost`` in USD, None when the model is not
    priced; ``raw`` is the decoded response (for a stream: None). ``cached`` is True when
    the answer came from a :class:`ResponseCache` (it then costs 0)."""

    content: str
    model: str | None
    tokens_input: int | None
    tokens_output: int | None
    cost: float | None
    latency: float
    finish_reason: str | None
    raw: Any
    provider: str
    cached: bool = False


class Embeddings(list[list[float]]):
    """One vector per text, in the order of the texts; ``raw`` holds the decoded response
    of each request made (several when the texts were split into batches)."""

    __slots__ = (
        "model",
        "tokens_input",
        "cost",
        "latency",
        "_raw",
        "_raw_shared",
        "provider",
        "cached",
    )

    def __init__(
        self,
        vectors: Iterable[list[float]] = (),
        *,
        model: str | None = None,
        tokens_input: int | None = None,
        cost: float | None = None,
        latency: float = 0.0,
        raw: list[Any] | None = None,
        provider: str = "",
        cached: bool = False,
    ) -> None:
        super().__init__(vectors)
        self.model = model
        self.tokens_input = tokens_input
        self.cost = cost
        self.latency = latency
        self._raw: list[Any] = raw if raw is not None else []
        # The responses are a cache's too: copied when first read (a hit of many vectors
        # costs no copy of them all again unless its raw is read).
        self._raw_shared = False
        self.provider = provider
        self.cached = cached

    @property
    def raw(self) -> list[Any]:
        if self._raw_shared:
            self._raw = copy.deepcopy(self._raw)
            self._raw_shared = False
        return self._raw

    @raw.setter
    def raw(self, value: list[Any]) -> None:
        self._raw, self._raw_shared = value, False

    @property
    def dimensions(self) -> int | None:
        """The length of each vector (None when there are none)."""
        return len(self[0]) if self else None

    def __repr__(self) -> str:
        return (
            f"Embeddings({len(self)} vectors of {self.dimensions} dimensions, "
            f"provider={self.provider!r}, model={self.model!r})"
        )


# -- building requests -----------------------------------------------------------------------


def _put(body: dict[str, Any], field: str, value: Any) -> None:
    """Set a body field; a dotted name nests (Ollama's ``options.temperature``)."""
    *parents, leaf = field.split(".")
    node = body
    for part in parents:
        child = node.get(part)
        # Copy on the way down: the dict may be the map's own `fixed` or a caller's.
        node[part] = child = dict(child) if isinstance(child, Mapping) else {}
        node = child
    node[leaf] = value


def _merge(body: dict[str, Any], fixed: Mapping[str, Any]) -> None:
    """Merge ``fixed`` into ``body``: nested dicts are merged, fixed values win."""
    for key, value in fixed.items():
        current = body.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged = dict(current)
            _merge(merged, value)
            body[key] = merged
        else:
            body[key] = value


def _field_of(message: Any, name: str) -> Any:
    value = message.get(name) if isinstance(message, Mapping) else getattr(message, name, None)
    return getattr(value, "value", value)  # an enum member (a generated model's Role)


def _as_messages(messages: Messages) -> list[Any]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages)


def _body(
    m: _RequestMap, model: str, options: Mapping[str, Any], role_fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Options (the map's defaults, then the call's; renamed per the map), then ``fixed``
    (which they cannot override), then the
    role's own fields (model, messages, ...), always written from the call's arguments."""
    body: dict[str, Any] = {}
    if m.defaults:
        options = {**m.defaults, **{k: v for k, v in options.items() if v is not None}}
    for name, value in options.items():
        if value is not None:
            _put(body, m.options.get(name, name), value)
    _merge(body, m.fixed)
    _put(body, m.model, model)
    for field, value in role_fields.items():
        _put(body, field, value)
    return body


def _chat_body(
    m: _ChatRequestMap,
    model: str,
    messages: Messages,
    system_prompt: str | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    listed = _as_messages(messages)
    fields: dict[str, Any] = {}
    if m.system is None:
        if system_prompt is not None:
            listed.insert(0, {"role": "system", "content": system_prompt})
    else:
        # The provider takes the system prompt as a body field (Anthropic): lift system
        # messages out of the list, so one message list serves every provider.
        texts = [system_prompt] if system_prompt else []
        kept = []
        for message in listed:
            text = _system_text(message) if _field_of(message, "role") == "system" else None
            if text is not None:
                texts.append(text)
            else:
                kept.append(message)
        listed = kept
        if texts:
            fields[m.system] = "\n\n".join(texts)
    fields[m.messages] = listed
    return _body(m, model, options, fields)


def _system_text(message: Any) -> str | None:
    """A system message's text: its content, a string or a list of text parts (joined as
    written); None when a part is not text (left in the list for the provider to judge)."""
    content = _field_of(message, "content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        text = _field_of(part, "text")
        if _field_of(part, "type") != "text" or not isinstance(text, str):
            return None
        texts.append(text)
    return "".join(texts)


def _embed_body(
    m: EmbedMap, model: str, texts: list[str], input_type: str | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    fields: dict[str, Any] = {m.input: texts}
    if input_type is not None and m.input_type is not None:
        # A provider without input types ignores them, so one call serves every provider.
        fields[m.input_type] = m.input_types.get(input_type, input_type)
    return _body(m, model, options, fields)


# -- reading responses -----------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # a `*` path: the text of every part
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else str(getattr(value, "value", value))


def _reason(value: Any) -> str | None:
    if isinstance(value, list):  # a `*` path: the first choice's reason
        value = next((v for v in value if v is not None), None)
    return None if value is None else str(getattr(value, "value", value))


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cost(
    pricing: Pricing | None, model: str | None, tokens_in: int | None, tokens_out: int | None
) -> float | None:
    return None if pricing is None else pricing.cost(model, tokens_in, tokens_out)


def _chat_result(
    m: ChatMap,
    raw: Any,
    requested: str,
    provider: str,
    pricing: Pricing | None,
    latency: float,
) -> ChatResult:
    # Once per call: the usual values (a str, an int) are taken as they are, inline.
    content = m.content.get(raw)
    if content.__class__ is not str:
        content = _text(content) or ""
    model: Any = requested
    if m.response_model is not None:
        found = m.response_model.get(raw)
        model = (found if found.__class__ is str else _text(found)) or requested
    tokens_in = tokens_out = None
    if m.tokens_input is not None:
        tokens_in = m.tokens_input.get(raw)
        if tokens_in.__class__ is not int:
            tokens_in = _count(tokens_in)
    if m.tokens_output is not None:
        tokens_out = m.tokens_output.get(raw)
        if tokens_out.__class__ is not int:
            tokens_out = _count(tokens_out)
    reason = None if m.finish_reason is None else m.finish_reason.get(raw)
    if reason is not None and reason.__class__ is not str:
        reason = _reason(reason)
    return ChatResult(
        content,
        model,
        tokens_in,
        tokens_out,
        None if pricing is None else pricing.cost(model, tokens_in, tokens_out),
        latency,
        reason,
        raw,
        provider,
    )


class _StreamAccumulator:
    """Reads each event of a stream: the text piece it carries, the model (the first one
    seen), and the token counts and finish reason (the last ones seen), with the readers
    tracing uses (one compiled walk per chunk, written for the chunks' model class)."""

    __slots__ = (
        "_reading",
        "_named_events",
        "_usage",
        "_cls",
        "_read",
        "_by_event",
        "_requested",
        "_pricing",
        "provider",
    )

    def __init__(self, m: StreamMap, requested: str, provider: str, pricing: Pricing | None):
        self._reading = m.reading
        self._named_events = m.by_event
        self._requested = requested
        self._pricing = pricing
        self.provider = provider
        self._usage = _StrictUsage(text=True)  # a reader's error is the stream's
        self._cls: type | None = None  # the class the readers below were chosen for
        self._read: ReadChunk | None = None
        self._by_event: dict[str, ReadChunk] = {}

    def feed(self, chunk: Any, event: str | None) -> str | None:
        cls = type(chunk)
        if cls is not self._cls:
            if self._named_events:
                self._read, self._by_event = self._reading.event_readers(cls)
            else:
                self._read = self._reading.chunk_reader(cls)
            self._cls = cls
        read = self._by_event.get(event, self._read) if event else self._read
        assert read is not None
        u = self._usage
        pieces = u.pieces
        assert pieces is not None
        before = len(pieces)
        read(u, event, chunk)
        added = len(pieces) - before
        if not added:
            return None
        return pieces[-1] if added == 1 else "".join(pieces[before:])

    @property
    def text(self) -> str:
        return "".join(self._usage.pieces or ())

    def result(self, latency: float) -> ChatResult:
        u = self._usage
        model = u.model or self._requested
        return ChatResult(
            content=self.text,
            model=model,
            tokens_input=u.tokens_input,
            tokens_output=u.tokens_output,
            cost=_cost(self._pricing, model, u.tokens_input, u.tokens_output),
            latency=latency,
            finish_reason=u.finish_reason,
            raw=None,
            provider=self.provider,
        )


def _event_name(stream: Any, chunk: Any) -> str | None:
    """The SSE event a chunk came in: as the runtime's stream reports it, else the chunk's
    ``type`` (Anthropic and Cohere repeat the event name there)."""
    name = getattr(stream, "event", None)
    if isinstance(name, str) and name != "message":
        return name
    found = _field_of(chunk, "type")
    return found if isinstance(found, str) else name


# -- the response cache -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", by_alias=True, exclude_none=True)
    return str(value)


class ResponseCache:
    """An opt-in, in-memory cache of chat and embedding results.

    Keyed on the canonical request: provider, operation, model and the JSON body with sorted
    keys, so the same question with its options in another order is a hit. At most
    ``max_entries`` are kept (least recently used go first); with ``ttl`` (seconds) an entry
    expires. A hit is returned as a copy marked ``cached=True`` with cost 0. Streams are not
    cached. Thread-safe.
    """

    def __init__(self, max_entries: int = 1024, ttl: float | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl = ttl
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(provider: str, operation: str, model: str | None, body: Any) -> str:
        """The canonical form of a request (keys sorted; ``1.0`` and ``1`` one number)."""
        return json.dumps(
            [provider, operation, model, _canonical(body)],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=_jsonable,
        )

    def get(self, key: str) -> Any:
        """The stored result, or None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.ttl is not None and time.monotonic() > entry[0]:
                del self._entries[key]
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, value: Any) -> None:
        expires = time.monotonic() + self.ttl if self.ttl is not None else 0.0
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _canonical(value: Any) -> Any:
    """``value`` with each whole float as an int: the same JSON number, the same key."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def cached_copy(found: Any, started: float) -> Any:
    """A result as the cache keeps it and as each hit returns it: a copy, marked cached,
    costing 0, so that no caller's changes reach another's (see :func:`kept_in_cache`). The raw
    responses of embeddings (every vector again) are copied when first read."""
    latency = time.perf_counter() - started
    if isinstance(found, Embeddings):
        copied = Embeddings(
            [list(v) for v in found],
            model=found.model,
            tokens_input=found.tokens_input,
            cost=0.0,
            latency=latency,
            raw=found._raw,
            provider=found.provider,
            cached=True,
        )
        copied._raw_shared = True
        return copied
    return replace(found, cost=0.0, latency=latency, cached=True, raw=copy.deepcopy(found.raw))


def kept_in_cache(cache: ResponseCache, key: str, result: R, started: float) -> R:
    """Put a copy of ``result`` in the cache and return ``result``, whose embeddings'
    raw responses, now the cache's too, the caller gets a copy of when it reads them."""
    cache.put(key, cached_copy(result, started))
    if isinstance(result, Embeddings):
        result._raw_shared = True
    return result


# -- plans: the role's logic, written once for the sync and async mixins ------------------------

Request = tuple["Operation[Any]", dict[str, Any]]
Plan = Generator[Request, Any, R]


def _unsupported(provider: str, what: str) -> NotSupportedError:
    return NotSupportedError(f"{provider} has no {what}", connector=provider)


def _model_or_default(role: LLMRole, model: str | None, embedding: bool) -> str:
    chosen = model or (role.default_embedding_model if embedding else role.default_model)
    if not chosen:
        what = "embedding model" if embedding else "model"
        raise ConfigError(
            f"no model given, and the connector has no default {what}: pass model=",
            connector=role.provider,
        )
    return chosen


def _chat_plan(
    role: LLMRole,
    pricing: Pricing | None,
    cache: ResponseCache | None,
    messages: Messages,
    model: str | None,
    system_prompt: str | None,
    options: Mapping[str, Any],
) -> Plan[ChatResult]:
    m = role.chat
    if m is None:
        raise _unsupported(role.provider, "chat")
    requested = _model_or_default(role, model, embedding=False)
    body = _chat_body(m, requested, messages, system_prompt, options)
    started = time.perf_counter()
    key = ""
    if cache is not None:
        key = cache.key(role.provider, m.operation.name, requested, body)
        found = cache.get(key)
        if found is not None:
            return cast(ChatResult, cached_copy(found, started))
    raw = yield m.operation, body
    result = _chat_result(m, raw, requested, role.provider, pricing, time.perf_counter() - started)
    if cache is not None:
        return kept_in_cache(cache, key, result, started)
    return result


def as_texts(texts: str | Iterable[str]) -> list[str]:
    """The texts to embed as a list (one str is one text); anything but str is refused."""
    listed = [texts] if isinstance(texts, str) else list(texts)
    for index, text in enumerate(listed):
        if not isinstance(text, str):
            raise TypeError(f"text {index} is a {type(text).__name__}, not a str")
    return listed


def _embed_plan(
    role: LLMRole,
    pricing: Pricing | None,
    cache: ResponseCache | None,
    texts: str | Iterable[str],
    model: str | None,
    input_type: str | None,
    options: Mapping[str, Any],
) -> Plan[Embeddings]:
    m = role.embed
    if m is None:
        raise _unsupported(role.provider, "embeddings")
    listed = as_texts(texts)
    requested = _model_or_default(role, model, embedding=True)
    started = time.perf_counter()
    key = ""
    if cache is not None:
        whole = _embed_body(m, requested, listed, input_type, options)
        key = cache.key(role.provider, m.operation.name, requested, whole)
        found = cache.get(key)
        if found is not None:
            return cast(Embeddings, cached_copy(found, started))
    vectors: list[list[float]] = []
    raws: list[Any] = []
    tokens: int | None = None
    for start in range(0, len(listed), m.max_batch):
        batch = listed[start : start + m.max_batch]
        raw = yield m.operation, _embed_body(m, requested, batch, input_type, options)
        found_vectors = m.vectors.get(raw)
        if not isinstance(found_vectors, list) or len(found_vectors) != len(batch):
            got = len(found_vectors) if isinstance(found_vectors, list) else "no"
            raise ResponseValidationError(
                f"asked for {len(batch)} embeddings, got {got} at {m.vectors.text!r}",
                connector=role.provider,
                operation=m.operation.name,
            )
        vectors.extend(v if isinstance(v, list) else list(v) for v in found_vectors)
        raws.append(raw)
        if m.tokens_input is not None:
            used = _count(m.tokens_input.get(raw))
            if used is not None:
                tokens = (tokens or 0) + used
    result = Embeddings(
        vectors,
        model=requested,
        tokens_input=tokens,
        cost=_cost(pricing, requested, tokens, None),
        latency=time.perf_counter() - started,
        raw=raws,
        provider=role.provider,
    )
    if cache is not None:
        return kept_in_cache(cache, key, result, started)
    return result


def _stream_request(
    role: LLMRole,
    pricing: Pricing | None,
    messages: Messages,
    model: str | None,
    system_prompt: str | None,
    options: Mapping[str, Any],
) -> tuple[StreamMap, dict[str, Any], _StreamAccumulator]:
    m = role.stream
    if m is None:
        raise _unsupported(role.provider, "streaming")
    requested = _model_or_default(role, model, embedding=False)
    body = _chat_body(m, requested, messages, system_prompt, options)
    return m, body, _StreamAccumulator(m, requested, role.provider, pricing)


def texts_of(records: list[Any], text_field: str) -> list[str]:
    """The text at ``text_field`` (a path) of each record, for ``transform``."""
    path = Path(text_field)
    texts = []
    for index, record in enumerate(records):
        text = path.get(record)
        if not isinstance(text, str):
            what = "has no" if text is None else f"has a {type(text).__name__} at"
            raise ValueError(f"record {index} {what} text field {text_field!r}")
        texts.append(text)
    return texts


def _with_vector(record: Any, output_field: str, vector: list[float]) -> Any:
    """A copy of the record with the vector added: a dict, or a pydantic model that
    declares the field (or allows extra fields)."""
    if isinstance(record, Mapping):
        return {**record, output_field: vector}
    copy = getattr(record, "model_copy", None)
    if copy is None:
        raise TypeError(f"a record must be a dict or a model, not {type(record).__name__}")
    fields = getattr(type(record), "model_fields", {})
    extra = getattr(record, "model_config", {}).get("extra")
    if output_field not in fields and extra != "allow":
        raise TypeError(
            f"{type(record).__name__} has no field {output_field!r}: declare it, or allow "
            "extra fields, to receive the embedding"
        )
    return copy(update={output_field: vector})


def add_vectors(records: list[Any], output_field: str, vectors: Sequence[list[float]]) -> list[Any]:
    """Each record with its vector under ``output_field`` (used by every ``transform``)."""
    return [_with_vector(r, output_field, v) for r, v in zip(records, vectors, strict=True)]


# -- the mixins ----------------------------------------------------------------------------------


class _SyncHost(Protocol):
    """What the sync mixin uses of the generated client (SyncClient)."""

    _service: Service

    def _call(self, op: Operation[Any], *, body: Any = None) -> Any: ...

    def _stream(self, op: Operation[Any], *, body: Any = None) -> Any: ...


class _AsyncHost(Protocol):
    _service: Service

    async def _call(self, op: Operation[Any], *, body: Any = None) -> Any: ...

    async def _stream(self, op: Operation[Any], *, body: Any = None) -> Any: ...


def _pricing(service: Service) -> Pricing | None:
    return cast("Pricing | None", getattr(service, "pricing", None))


class _LLMBase:
    _llm: ClassVar[LLMRole]
    _llm_cache: ResponseCache | None = None

    @property
    def provider(self) -> str:
        """The provider's name (``gen_ai.provider.name``), as results report it."""
        return self._llm.provider

    def with_cache(self: _Self, cache: ResponseCache | None) -> _Self:
        """Cache this client's chat and embedding results in ``cache`` (None: stop);
        returns the client itself."""
        self._llm_cache = cache
        return self


_Self = TypeVar("_Self", bound=_LLMBase)


class EmbedTransform:
    """``transform()`` over the class's own synchronous ``embed()``: shared by the LLM
    role and local embedding models."""

    def transform(
        self,
        records: Iterable[Any],
        text_field: str,
        output_field: str,
        *,
        model: str | None = None,
        input_type: str | None = None,
        cache: ResponseCache | None = None,
    ) -> list[Any]:
        """Copies of the records (dicts or models) with the embedding of ``text_field``
        (a path, e.g. ``body`` or ``meta.title``) under ``output_field``."""
        listed = list(records)
        vectors = self.embed(  # type: ignore[attr-defined]
            texts_of(listed, text_field), model=model, input_type=input_type, cache=cache
        )
        return add_vectors(listed, output_field, vectors)


class LLMMixin(_LLMBase, EmbedTransform):
    """The LLM role for a generated synchronous client (``_llm`` set by the generator).

    Options other than the named arguments go into the request body, renamed as the spec
    says (``max_tokens`` -> ``max_completion_tokens``) or under their own names. ``cache``
    overrides the client's :meth:`with_cache` cache for one call.
    """

    def _drive(self, plan: Plan[R]) -> R:
        host = cast(_SyncHost, self)
        try:
            op, body = next(plan)
            while True:
                op, body = plan.send(host._call(op, body=body))
        except StopIteration as stop:
            return cast(R, stop.value)

    def chat(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> ChatResult:
        """Send the conversation; the answer with its model, tokens, cost and latency."""
        plan = _chat_plan(
            self._llm,
            _pricing(cast(_SyncHost, self)._service),
            cache if cache is not None else self._llm_cache,
            messages,
            model,
            system_prompt,
            options,
        )
        return self._drive(plan)

    def generate(
        self,
        prompt: str,
        system_prompt: str | None = None,
        *,
        model: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> ChatResult:
        """Answer one prompt, optionally with a system prompt."""
        return self.chat(prompt, model=model, system_prompt=system_prompt, cache=cache, **options)

    def stream(
        self,
        messages_or_prompt: Messages,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> ChatStream:
        """The answer as it is written: iterate for text chunks (``str``); ``.result``
        holds the whole answer, with usage and cost, once the stream has ended. The
        request is sent when iteration starts (not on entering ``with``: an error such as
        a refused key is raised by the first ``next``)."""
        m, body, acc = _stream_request(
            self._llm,
            _pricing(cast(_SyncHost, self)._service),
            messages_or_prompt,
            model,
            system_prompt,
            options,
        )
        host = cast(_SyncHost, self)
        return ChatStream(lambda: host._stream(m.operation, body=body), acc, m.by_event)

    def embed(
        self,
        texts: str | Iterable[str],
        *,
        model: str | None = None,
        input_type: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> Embeddings:
        """One vector per text, in order; the texts go in batches of the provider's limit
        (several requests when there are more). ``input_type`` (``query``, ``document``,
        ...) is sent where the provider takes one."""
        plan = _embed_plan(
            self._llm,
            _pricing(cast(_SyncHost, self)._service),
            cache if cache is not None else self._llm_cache,
            texts,
            model,
            input_type,
            options,
        )
        return self._drive(plan)


class AsyncLLMMixin(_LLMBase):
    """The LLM role for a generated asynchronous client; see :class:`LLMMixin`."""

    async def _drive(self, plan: Plan[R]) -> R:
        host = cast(_AsyncHost, self)
        try:
            op, body = next(plan)
            while True:
                op, body = plan.send(await host._call(op, body=body))
        except StopIteration as stop:
            return cast(R, stop.value)

    async def chat(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> ChatResult:
        """Send the conversation; the answer with its model, tokens, cost and latency."""
        plan = _chat_plan(
            self._llm,
            _pricing(cast(_AsyncHost, self)._service),
            cache if cache is not None else self._llm_cache,
            messages,
            model,
            system_prompt,
            options,
        )
        return await self._drive(plan)

    async def generate(
        self,
        prompt: str,
        system_prompt: str | None = None,
        *,
        model: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> ChatResult:
        """Answer one prompt, optionally with a system prompt."""
        return await self.chat(
            prompt, model=model, system_prompt=system_prompt, cache=cache, **options
        )

    def stream(
        self,
        messages_or_prompt: Messages,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> AsyncChatStream:
        """``async for chunk in client.stream(...)``: text chunks as they come; see
        :meth:`LLMMixin.stream`."""
        m, body, acc = _stream_request(
            self._llm,
            _pricing(cast(_AsyncHost, self)._service),
            messages_or_prompt,
            model,
            system_prompt,
            options,
        )
        host = cast(_AsyncHost, self)
        return AsyncChatStream(lambda: host._stream(m.operation, body=body), acc, m.by_event)

    async def embed(
        self,
        texts: str | Iterable[str],
        *,
        model: str | None = None,
        input_type: str | None = None,
        cache: ResponseCache | None = None,
        **options: Any,
    ) -> Embeddings:
        """One vector per text, in order, in batches of the provider's limit."""
        plan = _embed_plan(
            self._llm,
            _pricing(cast(_AsyncHost, self)._service),
            cache if cache is not None else self._llm_cache,
            texts,
            model,
            input_type,
            options,
        )
        return await self._drive(plan)

    async def transform(
        self,
        records: Iterable[Any],
        text_field: str,
        output_field: str,
        *,
        model: str | None = None,
        input_type: str | None = None,
        cache: ResponseCache | None = None,
    ) -> list[Any]:
        """Copies of the records with the embedding of ``text_field`` in ``output_field``."""
        listed = list(records)
        vectors = await self.embed(
            texts_of(listed, text_field), model=model, input_type=input_type, cache=cache
        )
        return add_vectors(listed, output_field, vectors)


# -- streams -------------------------------------------------------------------------------------


class ChatStream(Iterator[str]):
    """Text chunks of a streamed answer; ``result`` is the whole answer once it ended.

    Closing it (or leaving its ``with`` block, or dropping it half-read) closes the HTTP
    stream.
    """

    def __init__(
        self, open_stream: Callable[[], Any], accumulator: _StreamAccumulator, by_event: bool
    ) -> None:
        self._open = open_stream
        self._acc = accumulator
        self._by_event = by_event
        self._chunks: Generator[str, None, None] | None = None
        self._ended: list[ChatResult] = []  # the result, once the stream has ended

    @property
    def result(self) -> ChatResult | None:
        """The whole answer, with usage and cost; None until the stream has ended."""
        return self._ended[0] if self._ended else None

    @property
    def provider(self) -> str:
        return self._acc.provider

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._acc.text

    def __next__(self) -> str:
        if self._chunks is None:
            # The generator is given what it needs, not this object: holding it would make
            # a cycle, and a stream dropped half-read would keep its connection until the
            # cycle collector ran.
            self._chunks = _chat_chunks(self._open, self._acc, self._by_event, self._ended)
        return next(self._chunks)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _chat_chunks(
    open_stream: Callable[[], Any],
    acc: _StreamAccumulator,
    by_event: bool,
    ended: list[ChatResult],
) -> Generator[str, None, None]:
    started = time.perf_counter()
    stream = open_stream()
    events = iter(stream)
    try:
        for chunk in events:
            piece = acc.feed(chunk, _event_name(stream, chunk) if by_event else None)
            if piece:
                yield piece
        ended.append(acc.result(time.perf_counter() - started))
    finally:
        # Closing the runtime's iterator first lets it finish its own work (tracing).
        close = getattr(events, "close", None)
        if close is not None:
            close()
        stream.close()


class AsyncChatStream(AsyncIterator[str]):
    """The async counterpart of :class:`ChatStream`."""

    def __init__(
        self,
        open_stream: Callable[[], Any],
        accumulator: _StreamAccumulator,
        by_event: bool,
    ) -> None:
        self._open = open_stream
        self._acc = accumulator
        self._by_event = by_event
        self._chunks: AsyncGenerator[str, None] | None = None
        self._ended: list[ChatResult] = []

    @property
    def result(self) -> ChatResult | None:
        """The whole answer, with usage and cost; None until the stream has ended."""
        return self._ended[0] if self._ended else None

    @property
    def provider(self) -> str:
        return self._acc.provider

    @property
    def text(self) -> str:
        return self._acc.text

    async def __anext__(self) -> str:
        if self._chunks is None:  # (as ChatStream: the generator does not hold this object)
            self._chunks = _async_chat_chunks(self._open, self._acc, self._by_event, self._ended)
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _async_chat_chunks(
    open_stream: Callable[[], Any],
    acc: _StreamAccumulator,
    by_event: bool,
    ended: list[ChatResult],
) -> AsyncGenerator[str, None]:
    started = time.perf_counter()
    stream = await open_stream()
    events = stream.__aiter__()
    try:
        async for chunk in events:
            piece = acc.feed(chunk, _event_name(stream, chunk) if by_event else None)
            if piece:
                yield piece
        ended.append(acc.result(time.perf_counter() - started))
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        await stream.aclose()


# -- fallback ------------------------------------------------------------------------------------

_FALL_OVER_STATUS = frozenset({401, 402, 403, 408, 429})


def falls_over(error: ConnectorError) -> bool:
    """Whether :class:`Fallback` tries the next provider after ``error``.

    Yes when the fault is this provider's: the request did not complete (connection,
    timeout, broken stream), an open circuit, a 5xx, 429 (rate limited), 408, the account's
    401/402/403, an unreadable response, a capability or setting the provider lacks.
    No for the caller's own errors (400, 404, 409, 413, 422, ...): the same request would
    fail at the next provider too, so it is raised at once.
    """
    if isinstance(
        error,
        TransportError
        | CircuitOpenError
        | NotSupportedError
        | ResponseValidationError
        | ConfigError,
    ):
        return True
    if isinstance(error, HTTPStatusError):
        return error.status_code >= 500 or error.status_code in _FALL_OVER_STATUS
    return False


def _provider_name(client: Any) -> str:
    role = getattr(client, "_llm", None)
    if role is not None:
        return str(role.provider)
    return str(getattr(client, "provider", None) or getattr(client, "_name", None) or client)


def _circuit_open(client: Any) -> float | None:
    """Seconds until the client's circuit half-opens, or None when it may be called."""
    breaker: CircuitBreaker | None = getattr(client, "circuit_breaker", None)
    if breaker is None or breaker.state != breaker.OPEN:
        return None
    return breaker.retry_in


class _Attempts:
    """The providers to try, round after round, and the errors met on the way."""

    def __init__(self, providers: Sequence[Any], retry: RetryPolicy | None) -> None:
        self._providers = providers
        self._rounds = retry.attempts if retry is not None else 1
        self._retry = retry
        self.errors: list[tuple[str, ConnectorError]] = []

    def __iter__(self) -> Iterator[tuple[float, Any]]:
        """(seconds to wait first, provider) for each provider that may be called."""
        for round_number in range(self._rounds):
            wait = self._retry.backoff(round_number) if round_number and self._retry else 0.0
            for client in self._providers:
                name = _provider_name(client)
                retry_in = _circuit_open(client)
                if retry_in is not None:
                    self.errors.append(
                        (
                            name,
                            CircuitOpenError(
                                f"skipped: circuit open; retry in {retry_in:.1f}s",
                                retry_in=retry_in,
                                connector=name,
                            ),
                        )
                    )
                    continue
                yield wait, client
                wait = 0.0

    def failed(self, client: Any, error: ConnectorError) -> None:
        """Note the error, or raise it when it is the caller's (no provider would do)."""
        if not falls_over(error):
            raise error
        self.errors.append((_provider_name(client), error))

    def error(self) -> AllProvidersFailedError:
        error = AllProvidersFailedError(self.errors)
        if self.errors:  # the last provider's error, shown as the cause in a traceback
            error.__cause__ = self.errors[-1][1]
        return error


def _names(client: Any) -> tuple[str, ...]:
    """What a ``{name: model}`` map may call a provider: its provider name (``mistral_ai``)
    or its connector's name (``mistral``, as ``get_llm`` and the package call it)."""
    names = [_provider_name(client)]
    service = getattr(client, "_service", None)
    module = type(client).__module__.split(".")
    for name in (getattr(service, "name", None), module[1] if module[0] == "connectors" else None):
        if isinstance(name, str) and name not in names:
            names.append(name)
    return tuple(names)


def _model_for(model: str | Mapping[str, str] | None, client: Any) -> str | None:
    if model is None or isinstance(model, str):
        return model
    return next((model[name] for name in _names(client) if name in model), None)


def _check_model_map(model: str | Mapping[str, str] | None, providers: Sequence[Any]) -> None:
    """A ``{name: model}`` map naming no provider of the list is a mistake (a misspelt
    name would silently send that provider's default model): refused, with the names."""
    if model is None or isinstance(model, str):
        return
    known = {name for client in providers for name in _names(client)}
    unknown = sorted(str(name) for name in model if name not in known)
    if unknown:
        listed = ", ".join(" or ".join(_names(client)) for client in providers)
        raise ValueError(
            f"the model map names {', '.join(map(repr, unknown))}, which is not one of the "
            f"providers: {listed}"
        )


def _method(client: Any, name: str) -> Any:
    """The provider's ``name`` method; a provider without it (local embeddings have no
    ``chat``) is passed over as one that lacks the capability."""
    method = getattr(client, name, None)
    if method is None:
        provider = _provider_name(client)
        raise NotSupportedError(f"{provider} has no {name}", connector=provider)
    return method


async def _awaited(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method`` called from async code: awaited, or, when it is synchronous (the local
    embeddings connector), run in a worker thread so that the event loop goes on."""
    if inspect.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    import asyncio

    result = await asyncio.to_thread(method, *args, **kwargs)
    if inspect.isawaitable(result):  # a plain function that returns a coroutine (a wrapper)
        return await result
    return result


def _cached(cache: ResponseCache | None) -> dict[str, Any]:
    # Only when given: a provider of another kind (local embeddings) may not take `cache`.
    return {} if cache is None else {"cache": cache}


class _FallbackBase:
    def __init__(
        self,
        providers: Sequence[Any],
        *,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        if not providers:
            raise ValueError(f"{type(self).__name__} needs at least one provider")
        self.providers = list(providers)
        self.retry = retry
        self.cache = cache


class Fallback(_FallbackBase):
    """Providers tried in order, behind the same ``chat`` / ``generate`` / ``stream`` /
    ``embed`` / ``transform`` interface.

    A provider whose circuit breaker is open is skipped; an error for which
    :func:`falls_over` is true moves on to the next provider, any other is raised at once.
    ``result.provider`` says who answered. When every provider failed,
    :class:`AllProvidersFailedError` lists each one's error. With ``retry`` (a
    :class:`~builder.runtime.resilience.RetryPolicy`), the whole list is tried up to
    ``retry.attempts`` times, waiting ``retry.backoff(n)`` between rounds; each client's
    own retry policy applies to its requests in any case.

    ``model`` may be one name for all providers or ``{provider: model}`` (a provider not
    listed uses its default). With ``cache``, each provider's canonical request is looked
    up before it is sent. A stream falls over only until its first chunk has been given out.
    """

    def _first(self, call: Callable[[Any], R]) -> R:
        attempts = _Attempts(self.providers, self.retry)
        for wait, client in attempts:
            if wait:
                time.sleep(wait)
            try:
                return call(client)
            except ConnectorError as exc:
                attempts.failed(client, exc)
        raise attempts.error()

    def chat(
        self,
        messages: Messages,
        *,
        model: str | Mapping[str, str] | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> ChatResult:
        _check_model_map(model, self.providers)
        return cast(
            ChatResult,
            self._first(
                lambda c: _method(c, "chat")(
                    messages,
                    model=_model_for(model, c),
                    system_prompt=system_prompt,
                    **_cached(self.cache),
                    **options,
                )
            ),
        )

    def generate(
        self,
        prompt: str,
        system_prompt: str | None = None,
        *,
        model: str | Mapping[str, str] | None = None,
        **options: Any,
    ) -> ChatResult:
        return self.chat(prompt, model=model, system_prompt=system_prompt, **options)

    def embed(
        self,
        texts: str | Iterable[str],
        *,
        model: str | Mapping[str, str] | None = None,
        input_type: str | None = None,
        **options: Any,
    ) -> Embeddings:
        _check_model_map(model, self.providers)
        listed = as_texts(texts)
        return cast(
            Embeddings,
            self._first(
                lambda c: _method(c, "embed")(
                    listed,
                    model=_model_for(model, c),
                    input_type=input_type,
                    **_cached(self.cache),
                    **options,
                )
            ),
        )

    def transform(
        self,
        records: Iterable[Any],
        text_field: str,
        output_field: str,
        *,
        model: str | Mapping[str, str] | None = None,
        input_type: str | None = None,
    ) -> list[Any]:
        listed = list(records)
        vectors = self.embed(texts_of(listed, text_field), model=model, input_type=input_type)
        return add_vectors(listed, output_field, vectors)

    def stream(
        self,
        messages_or_prompt: Messages,
        *,
        model: str | Mapping[str, str] | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> FallbackStream:
        _check_model_map(model, self.providers)

        def open_stream(client: Any) -> ChatStream:
            return _method(client, "stream")(  # type: ignore[no-any-return]
                messages_or_prompt,
                model=_model_for(model, client),
                system_prompt=system_prompt,
                **options,
            )

        return FallbackStream(_Attempts(self.providers, self.retry), open_stream)


class FallbackStream(Iterator[str]):
    """A stream from the first provider that gives its first chunk (or ends cleanly)."""

    def __init__(self, attempts: _Attempts, open_stream: Callable[[Any], ChatStream]) -> None:
        self._attempts = attempts
        self._open = open_stream
        self._chunks: Generator[str, None, None] | None = None
        self._answered: list[ChatStream] = []

    @property
    def stream(self) -> ChatStream | None:
        """The provider's stream that answered (None until one has)."""
        return self._answered[0] if self._answered else None

    @property
    def result(self) -> ChatResult | None:
        return None if self.stream is None else self.stream.result

    @property
    def provider(self) -> str | None:
        return None if self.stream is None else self.stream.provider

    def __next__(self) -> str:
        if self._chunks is None:  # (as ChatStream: the generator does not hold this object)
            self._chunks = _fallback_chunks(self._attempts, self._open, self._answered)
        return next(self._chunks)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()

    def __enter__(self) -> FallbackStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fallback_chunks(
    attempts: _Attempts, open_stream: Callable[[Any], ChatStream], answered: list[ChatStream]
) -> Generator[str, None, None]:
    for wait, client in attempts:
        if wait:
            time.sleep(wait)
        stream = None
        try:
            stream = open_stream(client)
            first = next(stream, None)
        except ConnectorError as exc:
            if stream is not None:
                stream.close()
            attempts.failed(client, exc)
            continue
        answered.append(stream)
        try:
            if first is not None:
                yield first
                yield from stream
        finally:
            stream.close()
        return
    raise attempts.error()


class AsyncFallback(_FallbackBase):
    """:class:`Fallback` for async clients: ``await fallback.chat(...)``,
    ``async for chunk in fallback.stream(...)``."""

    async def _first(self, call: Callable[[Any], Any]) -> Any:
        attempts = _Attempts(self.providers, self.retry)
        for wait, client in attempts:
            if wait:
                import asyncio

                await asyncio.sleep(wait)
            try:
                return await call(client)
            except ConnectorError as exc:
                attempts.failed(client, exc)
        raise attempts.error()

    async def chat(
        self,
        messages: Messages,
        *,
        model: str | Mapping[str, str] | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> ChatResult:
        _check_model_map(model, self.providers)
        return cast(
            ChatResult,
            await self._first(
                lambda c: _awaited(
                    _method(c, "chat"),
                    messages,
                    model=_model_for(model, c),
                    system_prompt=system_prompt,
                    **_cached(self.cache),
                    **options,
                )
            ),
        )

    async def generate(
        self,
        prompt: str,
        system_prompt: str | None = None,
        *,
        model: str | Mapping[str, str] | None = None,
        **options: Any,
    ) -> ChatResult:
        return await self.chat(prompt, model=model, system_prompt=system_prompt, **options)

    async def embed(
        self,
        texts: str | Iterable[str],
        *,
        model: str | Mapping[str, str] | None = None,
        input_type: str | None = None,
        **options: Any,
    ) -> Embeddings:
        _check_model_map(model, self.providers)
        listed = as_texts(texts)
        return cast(
            Embeddings,
            await self._first(
                lambda c: _awaited(
                    _method(c, "embed"),
                    listed,
                    model=_model_for(model, c),
                    input_type=input_type,
                    **_cached(self.cache),
                    **options,
                )
            ),
        )

    async def transform(
        self,
        records: Iterable[Any],
        text_field: str,
        output_field: str,
        *,
        model: str | Mapping[str, str] | None = None,
        input_type: str | None = None,
    ) -> list[Any]:
        listed = list(records)
        vectors = await self.embed(texts_of(listed, text_field), model=model, input_type=input_type)
        return add_vectors(listed, output_field, vectors)

    def stream(
        self,
        messages_or_prompt: Messages,
        *,
        model: str | Mapping[str, str] | None = None,
        system_prompt: str | None = None,
        **options: Any,
    ) -> AsyncFallbackStream:
        _check_model_map(model, self.providers)

        def open_stream(client: Any) -> AsyncChatStream:
            return _method(client, "stream")(  # type: ignore[no-any-return]
                messages_or_prompt,
                model=_model_for(model, client),
                system_prompt=system_prompt,
                **options,
            )

        return AsyncFallbackStream(_Attempts(self.providers, self.retry), open_stream)


class AsyncFallbackStream(AsyncIterator[str]):
    """The async counterpart of :class:`FallbackStream`."""

    def __init__(self, attempts: _Attempts, open_stream: Callable[[Any], AsyncChatStream]) -> None:
        self._attempts = attempts
        self._open = open_stream
        self._chunks: AsyncGenerator[str, None] | None = None
        self._answered: list[AsyncChatStream] = []

    @property
    def stream(self) -> AsyncChatStream | None:
        """The provider's stream that answered (None until one has)."""
        return self._answered[0] if self._answered else None

    @property
    def result(self) -> ChatResult | None:
        return None if self.stream is None else self.stream.result

    @property
    def provider(self) -> str | None:
        return None if self.stream is None else self.stream.provider

    async def __anext__(self) -> str:
        if self._chunks is None:  # (as ChatStream: the generator does not hold this object)
            self._chunks = _async_fallback_chunks(self._attempts, self._open, self._answered)
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()

    async def __aenter__(self) -> AsyncFallbackStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _async_fallback_chunks(
    attempts: _Attempts,
    open_stream: Callable[[Any], AsyncChatStream],
    answered: list[AsyncChatStream],
) -> AsyncGenerator[str, None]:
    for wait, client in attempts:
        if wait:
            import asyncio

            await asyncio.sleep(wait)
        stream = None
        try:
            stream = open_stream(client)
            first = await anext(stream, None)
        except ConnectorError as exc:
            if stream is not None:
                await stream.aclose()
            attempts.failed(client, exc)
            continue
        answered.append(stream)
        try:
            if first is not None:
                yield first
                async for piece in stream:
                    yield piece
        finally:
            await stream.aclose()
        return
    raise attempts.error()


# -- choosing a provider ---------------------------------------------------------------------------

DEFAULT_ORDER: tuple[str, ...] = (
    "openai",
    "anthropic",
    "cohere",
    "mistral",
    "openai_compatible",
    "ollama",
)
"""The order in which ``get_llm("auto")`` looks for a configured provider: hosted APIs
first, local servers last. ``order=`` or ``CONNECTOR_LLM_ORDER`` (comma-separated) replace it."""

ORDER_ENV = "CONNECTOR_LLM_ORDER"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _connector_module(name: str) -> Any:
    """``connectors.<name>``, or None when no such connector is installed."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{name!r} is not a connector name (like openai or anthropic)")
    module_name = f"connectors.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in ("connectors", module_name):
            return None
        raise  # the connector is there but broken: that is worth seeing


def _client_class(module: Any, name: str, asynchronous: bool) -> Any:
    """The module's LLM client class: the one the generator gave an ``_llm`` role, else
    (an embeddings-only connector such as local sentence-transformers) one with ``embed``."""
    from builder.runtime.client import AsyncClient, SyncClient

    base = AsyncClient if asynchronous else SyncClient
    classes = [v for v in vars(module).values() if isinstance(v, type)]
    for cls in classes:
        if getattr(cls, "_llm", None) is not None and issubclass(cls, base):
            return cls
    if not asynchronous:
        for cls in classes:
            if callable(getattr(cls, "embed", None)) and cls.__module__.startswith(module.__name__):
                return cls
    kind = "async " if asynchronous else ""
    raise ConfigError(f"connectors.{name} has no {kind}LLM client", connector=name)


def _configured(module: Any, settings: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the connector's settings are present (given or in the environment), and
    what was looked for (for the error when no provider is)."""
    declared = getattr(module, "SETTINGS", ())

    def present(setting: Any) -> bool:
        if settings.get(setting.name) is not None:
            return True
        return bool(setting.env and os.environ.get(setting.env))

    required = [s for s in declared if s.required and s.default is None]
    if required:
        wanted = ", ".join(s.env or s.name for s in required)
        return all(present(s) for s in required), wanted
    # Nothing is required (a local server): chosen only when one of its settings is set,
    # so "auto" never picks a provider nobody configured.
    envs = [s.env for s in declared if s.env]
    return any(present(s) for s in declared), "one of " + (", ".join(envs) or "its settings")


def get_llm(
    name_or_auto: str = "auto",
    *,
    order: Sequence[str] | None = None,
    asynchronous: bool = False,
    **settings: Any,
) -> Any:
    """An LLM client: ``get_llm("anthropic")``, or ``get_llm("auto")`` for the first
    provider in ``order`` (else ``$CONNECTOR_LLM_ORDER``, else :data:`DEFAULT_ORDER`) whose
    required settings are all present, given here or in the environment.

    A provider that requires nothing (a local Ollama) is chosen only when one of its
    settings is set (e.g. its base URL's env var). ``settings`` go to the client's
    constructor (with "auto", pass only what every candidate takes: ``timeout``,
    ``retry``, ...). ``asynchronous=True`` gives the async client.
    """
    if name_or_auto != "auto":
        module = _connector_module(name_or_auto)
        if module is None:
            raise ConfigError(
                f"no connector named {name_or_auto!r} is installed "
                f"(no module connectors.{name_or_auto})"
            )
        return _client_class(module, name_or_auto, asynchronous)(**settings)
    if order is None:
        from_env = os.environ.get(ORDER_ENV, "")
        order = [n.strip() for n in from_env.split(",") if n.strip()] or DEFAULT_ORDER
    looked: list[str] = []
    for name in order:
        module = _connector_module(name)
        if module is None:
            looked.append(f"{name} (not installed)")
            continue
        ready, wanted = _configured(module, settings)
        if ready:
            try:
                cls = _client_class(module, name, asynchronous)
            except ConfigError:
                if not asynchronous:
                    raise  # not an LLM connector: the order names it by mistake
                looked.append(f"{name} (no async client)")  # local embeddings
                continue
            return cls(**settings)
        looked.append(f"{name} ({wanted})")
    raise ConfigError(
        "no LLM provider is configured; looked for, in order: "
        + "; ".join(looked or ["(an empty order)"])
        + f". Set one provider's settings, or choose the order with order= or {ORDER_ENV}."
    )
