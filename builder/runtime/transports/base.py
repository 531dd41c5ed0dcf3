"""What every non-HTTP connector shares: settings, lifecycle, payloads, errors, metrics.

A generated data connector is a subclass of one transport class (``SqlConnector``,
``KafkaConnector``, ...), which is a subclass of :class:`DataConnector`. The generated class
only declares: its name, its resolved settings, the static options of its spec's kind block
and, optionally, the model of each record. Everything else lives in the transport, once.

Each transport imports its driver inside :meth:`DataConnector._connect`, never at module
import, so ``import connectors.postgres`` does not import psycopg until the first call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from builder.runtime.config import Config, scrub
from builder.runtime.errors import ConfigError, ConnectionFailedError, ConnectorError, WriteError
from builder.runtime.operation import Decoder
from builder.runtime.roles import SinkMixin, SourceMixin
from builder.runtime.tracing import Tracer, get_tracer, traced

__all__ = ["DataConnector", "Message", "Payloads", "chunks", "records_of"]

T = TypeVar("T")


@dataclass(slots=True)
class Message(Generic[T]):
    """One message read from a queue, stream or topic.

    ``id`` is what the broker acknowledges by: a Kafka offset, a Redis stream entry id, an
    AMQP delivery tag, a NATS stream sequence, an MQTT message id.
    """

    value: T
    topic: str
    id: str | int | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timestamp: float | None = None
    partition: int | None = None  # Kafka: with `id` (the offset), where the record is


class Payloads:
    """Turns records into bytes on the wire and back, typed by the spec's record model.

    ``format`` is ``json`` (a model or dict is encoded as JSON), ``text`` (UTF-8 str) or
    ``bytes`` (as is).
    """

    __slots__ = ("format", "decoder")

    def __init__(self, format: str = "json", decoder: Decoder | None = None) -> None:
        self.format = format
        self.decoder = decoder

    def encode(self, record: Any) -> bytes:
        if self.format == "bytes":
            if not isinstance(record, bytes | bytearray | memoryview):
                raise TypeError(f"a bytes payload is needed, not {type(record).__name__}")
            return bytes(record)
        if self.format == "text":
            if not isinstance(record, str):
                raise TypeError(f"a str payload is needed, not {type(record).__name__}")
            return record.encode()
        dump = getattr(record, "model_dump_json", None)
        if dump is not None:
            return dump(exclude_none=True, by_alias=True).encode()  # type: ignore[no-any-return]
        return json.dumps(record, separators=(",", ":"), default=str).encode()

    def decode(self, payload: bytes) -> Any:
        if self.format == "bytes":
            return payload
        if self.format == "text":
            return payload.decode()
        if self.decoder is not None:
            return self.decoder.from_json(payload)
        return json.loads(payload)

    def from_python(self, value: Any) -> Any:
        """A row or document (already Python values) as the record model, if one is declared."""
        return value if self.decoder is None else self.decoder.from_python(value)


class DataConnector(SourceMixin, SinkMixin):
    """Base of every non-HTTP connector.

    Subclasses (the transports) implement ``_connect`` (import the driver, open the
    connection), ``_close`` and the role methods (``read``, ``write``, ...). They call
    :meth:`_error` to turn a driver exception into a :class:`ConnectorError` whose message
    carries no secret.
    """

    # Public methods traced as one call each (when tracing is on): wrapped once, when a
    # transport class is defined, so no transport repeats the tracing code.
    _TRACED: ClassVar[tuple[str, ...]] = (
        "write",
        "publish",
        "query",
        "execute",
        "get",
        "delete",
        "embed",
        "_named_query",
    )
    _tracer: Tracer | None = None  # None: the process-wide tracer

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._TRACED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_traced", False):
                setattr(cls, name, _traced_method(name.lstrip("_"), method))

    # Set by the generated class.
    _name: ClassVar[str] = "connector"
    _options: ClassVar[Mapping[str, Any]] = {}  # the spec's kind block, e.g. {"dialect": ...}
    _record: ClassVar[Decoder | None] = None  # the spec's `record` model, if any

    def __init__(self, config: Config) -> None:
        self.config = config
        self._secrets = config.secret_values()
        # The password inside a connection URL is a secret of its own: a driver may quote
        # it without the rest of the URL.
        password = _url_password(self._setting("connection_url"))
        if password:
            self._secrets.append(password)
        self._connection: Any = None
        self._closed = False
        self.payloads = Payloads(str(self._options.get("format", "json")), self._record)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The driver's connection, opened on first use."""
        if self._closed:
            raise ConnectorError("the connector is closed", connector=self._name)
        if self._connection is None:
            try:
                self._connection = self._connect()
            except ConnectorError:
                raise
            except Exception as exc:
                raise self._error(exc, ConnectionFailedError) from None
        return self._connection

    def _connect(self) -> Any:
        raise NotImplementedError

    def _close(self, connection: Any) -> None:
        close = getattr(connection, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Close the connection; the connector cannot be used afterwards."""
        connection, self._connection, self._closed = self._connection, None, True
        if connection is not None:
            try:
                self._close(connection)
            except Exception:  # closing a broken connection: nothing left to save
                pass

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers for transports -------------------------------------------------------

    def _setting(self, name: str) -> Any:
        """A setting's value (a secret unwrapped); None when the kind does not have it."""
        return self.config.reveal(name) if name in self.config else None

    def _write_reported(self, pending: list[Any], write: Callable[[list[Any]], int]) -> int:
        """``write(pending)``, its errors counted once. A ConnectorError raised before
        anything was sent (connecting, setting up) becomes a WriteError naming every record
        as not written; ``write`` raises WriteError itself once it has sent some."""
        if not pending:
            return 0
        try:
            return write(pending)
        except ConnectorError as exc:
            self.metrics.errors += 1
            if isinstance(exc, WriteError | ConfigError):
                raise
            raise WriteError(
                f"nothing was written: {exc.message}",
                written=0,
                failed=pending,
                connector=self._name,
                operation="write",
            ) from exc

    def _require(self, *names: str) -> list[Any]:
        """The values of settings this call needs; a clear error names the missing ones."""
        values = [self.config.reveal(name) if name in self.config else None for name in names]
        missing = [n for n, v in zip(names, values, strict=True) if v is None or v == ""]
        if missing:
            raise ConfigError(
                "this call needs the setting(s): " + ", ".join(missing), connector=self._name
            )
        return values

    def _error(
        self,
        exc: BaseException,
        kind: type[ConnectorError] = ConnectorError,
        *,
        operation: str | None = None,
    ) -> ConnectorError:
        """``exc`` as a ConnectorError of ``kind``, its message scrubbed of secrets.

        Raise it ``from None``: a driver's traceback may hold a connection URL with a
        password in it.
        """
        text = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        return kind(text, connector=self._name, operation=operation)

    def _count_bytes(self, read: int = 0, written: int = 0) -> None:
        metrics = self.metrics
        metrics.bytes_read += read
        metrics.bytes_written += written

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _url_password(url: Any) -> str | None:
    """The password of a connection URL, unquoted; None when it has none (or is no URL)."""
    if not url:
        return None
    try:
        password = urlsplit(str(url)).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _traced_method(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` traced as one call: its arguments (a count for a list of records) as the
    input, its result (a count for a list) as the output. Costs one check when off."""

    @functools.wraps(method)
    def traced_call(self: DataConnector, *args: Any, **kwargs: Any) -> Any:
        tracer = self._tracer if self._tracer is not None else get_tracer()
        if not tracer.active:
            return method(self, *args, **kwargs)
        if operation == "named_query" and args:
            name = getattr(args[0], "name", operation)
            shown: Any = {"params": args[1] if len(args) > 1 else kwargs.get("values")}
        else:
            name = operation
            shown = {
                "args": [_summary(a) for a in args],
                **{k: _summary(v) for k, v in kwargs.items()},
            }
        with traced(tracer, self._name, name, shown, secrets=self._secrets) as span:
            result = method(self, *args, **kwargs)
            span.output = _summary(result)
            return result

    traced_call._traced = True  # type: ignore[attr-defined]
    return traced_call


def _summary(value: Any) -> Any:
    """A value as a trace shows it: lists of records as their count, bytes as their size."""
    if isinstance(value, list | tuple) and len(value) > 5:
        return {"count": len(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": len(value)}
    return value


def records_of(records: Iterable[Any]) -> list[Any]:
    """The records to write, as a list; a lone dict or model is refused (a common slip)."""
    if isinstance(records, Mapping) or hasattr(records, "model_dump"):
        raise TypeError("write() takes an iterable of records, not a single record")
    return list(records)


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
