"""What the generated code declares about a service and each of its operations."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import quote

from builder.runtime.auth import Auth, NoAuth
from builder.runtime.resilience import RetryPolicy

if TYPE_CHECKING:
    from builder.runtime.pricing import Pricing
    from builder.runtime.tracing import UsageMap

__all__ = ["Decoder", "Operation", "QuotaHeaders", "Service", "StreamFormat"]

T = TypeVar("T")

_PATH_PARAM = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class QuotaHeaders:
    """Response headers that say a quota is used up (GitHub's ``X-RateLimit-*``)."""

    remaining: str
    reset: str | None = None
    reset_format: Literal["epoch", "seconds"] = "epoch"


@dataclass(frozen=True, slots=True)
class Service:
    """Service-wide facts from the spec: where it lives and how to talk to it."""

    name: str
    base_url: str
    auth: Auth = field(default_factory=NoAuth)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit: tuple[float, float] | None = None  # (per second, burst)
    circuit_breaker: tuple[int, float] | None = None  # (failure threshold, reset seconds)
    quota_headers: QuotaHeaders | None = None
    provider: str | None = None  # gen_ai.provider.name of its traces (openai, anthropic, ...)
    pricing: Pricing | None = None  # prices per model, for the cost of traced calls
    # A body larger than this is refused (ResponseTooLargeError) instead of filling memory.
    max_response_bytes: int | None = 100 * 1024 * 1024


class Decoder:
    """Turns a JSON body into the declared return type, validating it.

    The type may be given ``lazy``: a function that returns it, called on first use, so
    that importing a connector does not import its models (or pydantic's model machinery).
    The pydantic validator is built on first use too.
    """

    __slots__ = ("type", "_lazy", "_many", "_json", "_python")

    def __init__(
        self, type_: Any = None, *, lazy: Callable[[], Any] | None = None, many: bool = False
    ) -> None:
        self.type = type_
        self._lazy = lazy
        self._many = many  # the body is a list of the type
        self._json: Callable[[bytes], Any] | None = None
        self._python: Callable[[Any], Any] | None = None

    def _build(self) -> None:
        if self._lazy is not None:
            self.type, self._lazy = self._lazy(), None
        if self._many:
            self.type, self._many = list[self.type], False  # type: ignore[name-defined]
        if self.type is None:
            self._json, self._python = json.loads, _identity
            return
        validate_json = getattr(self.type, "model_validate_json", None)
        if validate_json is not None:
            self._json, self._python = validate_json, self.type.model_validate
            # A complete model's validator itself, which pydantic's model_validate_json
            # calls (unless a model overrides it): the same, without a frame per item.
            # Reading it builds a deferred model (defer_build); one that cannot be built
            # yet keeps model_validate_json, which reports why where it is used.
            from pydantic import BaseModel

            stock = getattr(BaseModel.model_validate_json, "__func__", None)
            try:
                validate = self.type.__pydantic_validator__.validate_json
            except Exception:
                validate = None
            if (
                validate is not None
                and getattr(validate_json, "__func__", None) is stock
                and getattr(self.type, "__pydantic_complete__", False)
            ):
                self._json = validate
            return
        from pydantic import TypeAdapter

        adapter: TypeAdapter[Any] = TypeAdapter(self.type)
        self._json, self._python = adapter.validate_json, adapter.validate_python

    def from_json(self, content: bytes) -> Any:
        return (self._json or self.json_reader())(content)

    def json_reader(self) -> Callable[[bytes], Any]:
        """The function :meth:`from_json` calls: bind it once where it runs per item."""
        if self._json is None:
            self._build()
        assert self._json is not None
        return self._json

    def from_python(self, value: Any) -> Any:
        if self._python is None:
            self._build()
        assert self._python is not None
        return self._python(value)


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """How a streamed response is framed and what each chunk is."""

    framing: Literal["sse", "ndjson"]
    item: Decoder
    done: str | None = None  # an SSE data payload that ends the stream, e.g. "[DONE]"
    events: frozenset[str] = frozenset()  # SSE event names to keep (empty: all)
    error_events: frozenset[str] = frozenset()  # SSE event names that carry a failure


class Operation(Generic[T]):
    """One callable operation of a service; ``T`` is what a call (or each item) returns."""

    __slots__ = (
        "name",
        "method",
        "path",
        "response",
        "response_kind",
        "retry",
        "timeout",
        "pagination",
        "stream",
        "body_kind",
        "media_type",
        "styles",
        "errors",
        "usage",
        "_segments",
    )

    def __init__(
        self,
        name: str,
        method: str,
        path: str,
        *,
        response: Decoder | None = None,
        response_kind: Literal["json", "text", "bytes", "none"] = "json",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        pagination: Any = None,
        stream: StreamFormat | None = None,
        body_kind: Literal["json", "form", "multipart", "binary", "text"] = "json",
        media_type: str | None = None,
        styles: Mapping[str, tuple[str, bool]] | None = None,
        errors: Mapping[int | str, Decoder] | None = None,
        usage: UsageMap | None = None,
    ) -> None:
        self.name = name
        self.method = method
        self.path = path
        self.response = response
        self.response_kind = response_kind
        self.retry = retry
        self.timeout = timeout
        self.pagination = pagination
        self.stream = stream
        self.body_kind = body_kind
        self.media_type = media_type
        self.styles = styles or {}  # query wire name -> (OpenAPI style, explode)
        # Documented error bodies: status (or "4XX", "5XX", "default") -> their model.
        self.errors = errors or {}
        self.usage = usage  # where traces read model, tokens and text from its responses
        # Split the path template once: even items are literal text, odd items param names.
        self._segments: tuple[str, ...] = tuple(_PATH_PARAM.split(path))

    def url_path(self, values: Mapping[str, Any] | None) -> str:
        """The path with each parameter percent-encoded (a ``/`` in a value stays inside it)."""
        segments = self._segments
        if len(segments) == 1:
            return segments[0]
        assert values is not None
        parts = []
        for i, segment in enumerate(segments):
            if i % 2:
                parts.append(quote(wire_text(values[segment]), safe=""))
            else:
                parts.append(segment)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Operation({self.name!r}, {self.method} {self.path})"


def wire_text(value: Any) -> str:
    """A path or header value as text: booleans as ``true``/``false``, like query values."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(wire_value(value))


def wire_value(value: Any) -> Any:
    """A parameter value as it goes on the wire: enums by value, datetimes in ISO 8601,
    UUIDs as text; lists item by item; str, int, float, bool and None unchanged."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple):
        return [wire_value(v) for v in value]
    isoformat = getattr(value, "isoformat", None)
    if isoformat is not None:
        return isoformat()
    enum_value = getattr(value, "value", None)
    if enum_value is not None:
        return enum_value
    return str(value)


_DELIMITERS = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|", "tabDelimited": "\t"}


def styled_query(name: str, value: Any, style: tuple[str, bool] | None) -> list[tuple[str, Any]]:
    """Query pairs for one parameter, written in its OpenAPI style.

    Default (form, exploded): a list repeats the key. ``explode: false`` joins a list with
    the style's delimiter; ``deepObject`` writes a mapping as ``name[key]=value``.
    """
    if style is None:
        if isinstance(value, list | tuple):
            return [(name, wire_value(v)) for v in value]
        return [(name, wire_value(value))]
    kind, explode = style
    if kind == "deepObject" and isinstance(value, Mapping):
        return [(f"{name}[{k}]", wire_value(v)) for k, v in value.items() if v is not None]
    if isinstance(value, list | tuple):
        if not explode:
            return [(name, _DELIMITERS.get(kind, ",").join(wire_text(v) for v in value))]
        return [(name, wire_value(v)) for v in value]
    return [(name, wire_value(value))]


def error_decoder(op: Operation[Any], status: int) -> Decoder | None:
    """The decoder of the documented error body for ``status``, if the operation has one."""
    table = op.errors
    if not table:
        return None
    return table.get(status) or table.get(f"{status // 100}XX") or table.get("default")
