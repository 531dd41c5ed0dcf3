"""Redis Streams: append with XADD (trimmed to ``maxlen``), read through a consumer group.

Writes go in MULTI/EXEC transactions of ``batch_size`` entries, so a batch is written
whole or not at all: a failed ``write()`` names, in ``WriteError.failed``, the records of
the batch that failed and of every later one. One case stays unknowable without
idempotent XADD: when the connection breaks after EXEC was sent, the server may have
applied that batch, so a retry can write it twice (at-least-once, never lost).

Reads are at-least-once: an entry is acknowledged (XACK) only after the consumer asked for
the next one. The acknowledgements of a fetched batch ride in the same round trip as the
next XREADGROUP. A reader first re-reads the entries its consumer name left pending (read
but never acknowledged, e.g. by a process that crashed), then new ones.

Each entry holds the payload in the field ``data``, the message key (if any) in ``key``
and each header in a field of its own. Entries written by other producers, without a
``data`` field, are read as a dict of their fields (typed by the record model, if any).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from builder.runtime.config import Config
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    TimeoutError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, Message, Payloads, chunks, records_of

__all__ = ["RedisStreamConnector"]

DATA_FIELD = "data"
KEY_FIELD = "key"
_DATA = DATA_FIELD.encode()
_KEY = KEY_FIELD.encode()
_RESERVED = frozenset({DATA_FIELD, KEY_FIELD})
READ_COUNT = 500  # entries per XREADGROUP / XAUTOCLAIM
FOLLOW_BLOCK_MS = 1000
_CONNECT_TIMEOUT = 5.0
_REPLY_MARGIN = 5.0  # seconds a reply may take beyond a blocking read's own wait


class RedisStreamConnector(DataConnector):
    """A Redis stream: ``write()``/``publish()`` append entries, ``read()`` consumes them
    through a consumer group (created, with the stream, when missing)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._groups: set[tuple[str, str]] = set()  # consumer groups known to exist

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> Any:
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        block_seconds = max(self._block_ms(), FOLLOW_BLOCK_MS) / 1000
        common: dict[str, Any] = {
            "socket_connect_timeout": _CONNECT_TIMEOUT,
            "socket_timeout": block_seconds + _REPLY_MARGIN,
            # A connection dropped while idle is re-opened at once; a server that stays
            # down fails the call within a second instead of redis-py's default ten tries.
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
        }
        url = self._setting("connection_url")
        if url:
            client = redis.Redis.from_url(url, **common)
            if client.get_connection_kwargs().get("decode_responses"):
                raise ConfigError(
                    "decode_responses is not supported: payloads are bytes", connector=self._name
                )
            return client
        return redis.Redis(
            host=self._setting("host") or "127.0.0.1",
            port=int(self._setting("port") or 6379),
            password=self._setting("password"),
            db=int(self._setting("db") or 0),
            **common,
        )

    def _block_ms(self) -> int:
        return max(0, int(self._setting("block_ms") or 0))

    def _failure(self, exc: BaseException, operation: str) -> ConnectorError:
        """A driver exception as the matching ConnectorError, counted, secrets scrubbed."""
        self.metrics.errors += 1
        if isinstance(exc, ConnectorError):
            return exc
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        kind: type[ConnectorError] = ConnectorError
        if isinstance(exc, RedisTimeoutError):
            kind = TimeoutError
        elif isinstance(exc, RedisConnectionError):
            kind = ConnectionFailedError
        return self._error(exc, kind, operation=operation)

    # -- writing -------------------------------------------------------------------------

    def write(self, records: Iterable[Any]) -> int:
        """Append each record as a stream entry; returns how many were written.

        A record is a model, a dict or (by ``format``) a str or bytes payload; a
        :class:`Message` also carries its ``key`` and ``headers``. On failure, raises
        :class:`WriteError` whose ``failed`` holds the records not written, in order.
        """
        return len(self._append(records_of(records)))

    def publish(
        self, record: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> str:
        """Append one record; returns its entry id."""
        (entry_id,) = self._append([Message(record, "", key=key, headers=headers or {})])
        return entry_id

    def _append(self, items: list[Any]) -> list[str]:
        (stream,) = self._require("stream")
        maxlen = self._options.get("maxlen")
        approximate = bool(self._options.get("approximate", True))
        batch_size = int(self._options.get("batch_size") or 1000)
        metrics = self.metrics
        ids: list[str] = []
        for batch in chunks(items, batch_size):
            try:
                entries = [self._fields(record) for record in batch]
                pipe = self.connection.pipeline(transaction=True)
                for fields in entries:
                    pipe.xadd(stream, fields, maxlen=maxlen, approximate=approximate)
                replies = pipe.execute()
            except Exception as exc:
                error = self._failure(exc, "write")
                written = len(ids)
                raise WriteError(
                    f"wrote {written} of {len(items)} records; the rest were not written: "
                    f"{error.message}",
                    written=written,
                    failed=items[written:],
                    connector=self._name,
                    operation="write",
                ) from None
            ids.extend(entry_id.decode() for entry_id in replies)
            metrics.records_written += len(batch)
            metrics.batches += 1
            metrics.bytes_written += sum(len(fields[DATA_FIELD]) for fields in entries)
        return ids

    def _fields(self, record: Any) -> dict[str, Any]:
        if not isinstance(record, Message):
            return {DATA_FIELD: self.payloads.encode(record)}
        fields: dict[str, Any] = {DATA_FIELD: self.payloads.encode(record.value)}
        if record.key is not None:
            fields[KEY_FIELD] = record.key
        for name, value in record.headers.items():
            if name in _RESERVED:
                raise ValueError(f"a header may not be named {name!r}: the entry uses that field")
            fields[name] = value
        return fields

    # -- reading -------------------------------------------------------------------------

    def read(self, *, follow: bool = False) -> Generator[Message[Any], None, None]:
        """The stream's entries for this consumer of the group, as :class:`Message` objects.

        First the entries this consumer read before but never acknowledged, then (with
        ``claim_idle_ms`` set) those other consumers left unacknowledged that long, then new
        ones. Ends when no entry arrives within ``block_ms``, unless ``follow`` is true.
        """
        stream, group = self._require("stream", "group")
        consumer = str(self._setting("consumer") or "connector")
        claim_idle = self._setting("claim_idle_ms")
        return self._consume(
            str(stream),
            str(group),
            consumer,
            None if claim_idle is None else int(claim_idle),
            follow,
        )

    def _consume(
        self, stream: str, group: str, consumer: str, claim_idle_ms: int | None, follow: bool
    ) -> Generator[Message[Any], None, None]:
        # BLOCK 0 would wait forever: block_ms=0 means "do not wait" (and, when following,
        # wait in slices of FOLLOW_BLOCK_MS rather than poll the server in a tight loop).
        block_ms: int | None = self._block_ms() or (FOLLOW_BLOCK_MS if follow else None)
        done: list[bytes] = []  # entries the consumer moved past, not acknowledged yet
        decode = _decode_function(self.payloads)
        metrics = self.metrics
        try:
            client = self.connection
            self._ensure_group(client, stream, group)
            # This consumer's own pending entries first, oldest first (the at-least-once
            # redelivery after a crash), then new ones.
            cursor = b"0"
            while True:
                history = cursor != b">"
                entries = self._fetch(
                    client, stream, group, consumer, cursor, None if history else block_ms, done
                )
                done = []
                if not entries:
                    if history:
                        cursor = b">"
                        if claim_idle_ms is not None:
                            for claimed_id, claimed_fields in self._claimed(
                                client, stream, group, consumer, claim_idle_ms
                            ):
                                yield self._message(stream, claimed_id, claimed_fields)
                                done.append(claimed_id)
                        continue
                    if follow:
                        continue
                    return
                for entry_id, fields in entries:
                    payload = fields.get(_DATA) if fields else None
                    if payload is not None and len(fields) == 1:  # type: ignore[arg-type]
                        # The usual entry, payload only: the hot path, kept inline.
                        try:
                            value = decode(payload)
                        except Exception as exc:
                            raise self._undecodable(stream, entry_id, payload, exc) from None
                        metrics.records_read += 1
                        metrics.bytes_read += len(payload)
                        ms = int(entry_id[: entry_id.index(b"-")])
                        yield Message(value, stream, entry_id.decode(), None, {}, ms / 1000)
                    elif fields:  # empty: trimmed away while pending; acknowledged all the same
                        yield self._message(stream, entry_id, fields)
                    done.append(entry_id)
                if history:
                    cursor = entries[-1][0]
        finally:
            # Stopped early (or failed): acknowledge what the consumer finished; the entry
            # it stopped at stays pending and comes back on the next read.
            if done and self._connection is not None:
                try:
                    self._connection.xack(stream, group, *done)
                except Exception:  # left pending: delivered again, never lost
                    pass

    def _ensure_group(self, client: Any, stream: str, group: str) -> None:
        if (stream, group) in self._groups:
            return
        from redis.exceptions import ResponseError

        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._failure(exc, "read") from None
        except Exception as exc:
            raise self._failure(exc, "read") from None
        self._groups.add((stream, group))

    def _fetch(
        self,
        client: Any,
        stream: str,
        group: str,
        consumer: str,
        cursor: bytes,
        block_ms: int | None,
        done: list[bytes],
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Acknowledge ``done`` and read the next entries, in one round trip."""
        from redis.exceptions import ResponseError

        for attempt in (1, 2):
            try:
                pipe = client.pipeline(transaction=False)
                if done:
                    pipe.xack(stream, group, *done)
                pipe.xreadgroup(group, consumer, {stream: cursor}, count=READ_COUNT, block=block_ms)
                reply = pipe.execute()[-1]
            except ResponseError as exc:
                if attempt == 1 and "NOGROUP" in str(exc):
                    # The server lost the group (restarted without persistence): recreate it.
                    self._groups.discard((stream, group))
                    self._ensure_group(client, stream, group)
                    continue
                raise self._failure(exc, "read") from None
            except Exception as exc:
                raise self._failure(exc, "read") from None
            if not reply:
                return []
            entries: list[tuple[bytes, dict[bytes, bytes] | None]]
            if isinstance(reply, dict):  # RESP3 (protocol=3 in the URL): {stream: [[entries]]}
                (entries,) = reply.values()
                if entries and isinstance(entries[0], list):
                    entries = entries[0]
            else:
                entries = reply[0][1]
            return entries
        raise AssertionError("unreachable")  # pragma: no cover

    def _claimed(
        self, client: Any, stream: str, group: str, consumer: str, min_idle_ms: int
    ) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        """Entries other consumers left pending at least ``min_idle_ms``, now ours."""
        start: bytes = b"0-0"
        while True:
            try:
                reply = client.xautoclaim(
                    stream, group, consumer, min_idle_ms, start_id=start, count=READ_COUNT
                )
            except Exception as exc:
                raise self._failure(exc, "read") from None
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if fields:
                    yield entry_id, fields
            if start in (b"0-0", "0-0"):
                return

    def _message(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> Message[Any]:
        """An entry with a key or headers, or written by another producer."""
        payload = fields.get(_DATA)
        try:
            if payload is not None:
                value = self.payloads.decode(payload)
                size = len(payload)
            else:
                value = self._foreign_entry(fields)
                size = sum(len(v) for v in fields.values())
        except Exception as exc:
            raise self._undecodable(stream, entry_id, payload, exc) from None
        metrics = self.metrics
        metrics.records_read += 1
        metrics.bytes_read += size
        key = fields.get(_KEY)
        return Message(
            value,
            stream,
            entry_id.decode(),
            None if key is None else key.decode(errors="replace"),
            {
                name.decode(): data.decode(errors="replace")
                for name, data in fields.items()
                if name != _DATA and name != _KEY
            },
            int(entry_id[: entry_id.index(b"-")]) / 1000,
        )

    def _undecodable(
        self, stream: str, entry_id: bytes, payload: bytes | None, exc: Exception
    ) -> ResponseValidationError:
        self.metrics.errors += 1
        return ResponseValidationError(
            f"entry {entry_id.decode()} of stream {stream!r} does not decode as "
            f"{self.payloads.format} ({type(exc).__name__}); it stays pending",
            body=(payload or b"").decode(errors="replace"),
            connector=self._name,
            operation="read",
        )

    def _foreign_entry(self, fields: dict[bytes, bytes]) -> Any:
        """An entry another producer wrote as plain fields: a dict, or the record model."""
        if self.payloads.format != "json":
            raise ValueError(f"the entry has no {DATA_FIELD!r} field")
        return self.payloads.from_python({k.decode(): v.decode() for k, v in fields.items()})


def _decode_function(payloads: Payloads) -> Callable[[bytes], Any]:
    """``payloads.decode`` with its format checks done once per read, not per entry."""
    if payloads.format != "json":
        return payloads.decode
    return json.loads if payloads.decoder is None else payloads.decoder.from_json
