"""Kafka over kafka-python (a synchronous client, so no event loop thread is needed).

Producing: ``acks=all``, idempotent; ``write()`` sends ``batch_size`` records, flushes and
checks each record's acknowledgement, so a failed write names exactly the records the
broker did not take.

Consuming: a consumer group (``group_id``) with auto-commit off. The offset of a record is
committed only after the consumer asked for the next one; the commits of a polled batch go
in one request before the next poll. A consumer that stops early commits what it finished
and rewinds to the record it stopped at, so that record is read again (by this connector or
the next member of the group). Without ``group_id`` a connector reads every partition from
``auto_offset_reset`` on, each ``read()`` going on where the last one stopped, and
commits nothing.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from typing import Any

from builder.runtime.errors import (
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    TimeoutError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, Message, chunks, records_of

__all__ = ["KafkaConnector"]

_MAX_BLOCK_MS = 10_000  # send() waiting for metadata or buffer space
_REQUEST_TIMEOUT_MS = 10_000
_DELIVERY_TIMEOUT_MS = 30_000  # a record not acknowledged by then fails
_POLL_RECORDS = 500


class _Clients:
    """The driver module and the producer and consumer, each made on first use."""

    __slots__ = ("kafka", "producer", "consumer")

    def __init__(self, kafka: Any) -> None:
        self.kafka = kafka
        self.producer: Any = None
        self.consumer: Any = None

    def close(self) -> None:
        producer, consumer, self.producer, self.consumer = self.producer, self.consumer, None, None
        try:
            if consumer is not None:
                consumer.close(autocommit=False)
        finally:
            if producer is not None:
                producer.close(timeout=5)


class KafkaConnector(DataConnector):
    """One topic: ``write()``/``publish()`` produce to it, ``read()`` consumes it in the
    consumer group ``group_id``."""

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> Any:
        import kafka  # type: ignore[import-untyped, unused-ignore]

        return _Clients(kafka)

    def _common(self) -> dict[str, Any]:
        servers = str(self._setting("bootstrap_servers") or "127.0.0.1:9092")
        return {
            "bootstrap_servers": [s.strip() for s in servers.split(",") if s.strip()],
            "client_id": self._setting("client_id") or "connector-builder",
            "request_timeout_ms": _REQUEST_TIMEOUT_MS,
            "bootstrap_timeout_ms": _REQUEST_TIMEOUT_MS,
        }

    def _producer(self) -> Any:
        clients: _Clients = self.connection
        if clients.producer is None:
            clients.producer = clients.kafka.KafkaProducer(
                acks="all",
                max_block_ms=_MAX_BLOCK_MS,
                delivery_timeout_ms=_DELIVERY_TIMEOUT_MS,
                **self._common(),
            )
        return clients.producer

    def _consumer(self, topic: str) -> Any:
        clients: _Clients = self.connection
        if clients.consumer is not None:
            return clients.consumer  # kept: re-joining the group takes seconds
        group_id = self._setting("group_id") or None
        session_ms = int(float(self._setting("session_timeout") or 10.0) * 1000)
        consumer = clients.kafka.KafkaConsumer(
            group_id=group_id,
            auto_offset_reset=self._setting("auto_offset_reset") or "earliest",
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            max_poll_records=_POLL_RECORDS,
            **self._common(),
        )
        try:
            if group_id:
                consumer.subscribe([topic])
            else:
                partitions = consumer.partitions_for_topic(topic) or set()
                consumer.assign([clients.kafka.TopicPartition(topic, p) for p in partitions])
        except BaseException:
            consumer.close(autocommit=False)
            raise
        clients.consumer = consumer
        return consumer

    def _failure(self, exc: BaseException, operation: str) -> ConnectorError:
        """A driver exception as the matching ConnectorError, counted, secrets scrubbed."""
        self.metrics.errors += 1
        if isinstance(exc, ConnectorError):
            return exc
        from kafka.errors import (  # type: ignore[import-untyped, unused-ignore]
            KafkaConnectionError,
            KafkaTimeoutError,
        )

        kind: type[ConnectorError] = ConnectorError
        if isinstance(exc, KafkaTimeoutError):
            kind = TimeoutError
        elif isinstance(exc, KafkaConnectionError):
            kind = ConnectionFailedError
        return self._error(exc, kind, operation=operation)

    # -- producing -----------------------------------------------------------------------

    def write(self, records: Iterable[Any]) -> int:
        """Produce each record to the topic; returns how many the broker acknowledged.

        A record is a model, a dict or (by ``format``) a str or bytes payload; a
        :class:`Message` also carries its ``key`` and ``headers``. On failure, raises
        :class:`WriteError` whose ``failed`` holds the records not acknowledged, in order.
        """
        items = records_of(records)
        self._produce(items)
        return len(items)

    def publish(
        self, record: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> int:
        """Produce one record; returns its offset in its partition."""
        (offset,) = self._produce([Message(record, "", key=key, headers=headers or {})])
        return offset

    def _produce(self, items: list[Any]) -> list[int]:
        (topic,) = self._require("topic")
        batch_size = int(self._options.get("batch_size") or 1000)
        metrics = self.metrics
        offsets: list[int] = []
        for start, batch in zip(
            range(0, len(items), batch_size), chunks(items, batch_size), strict=True
        ):
            sent: list[Any] = []
            failure: BaseException | None = None
            size = 0
            producer: Any = None
            try:
                producer = self._producer()
                for record in batch:
                    value, key, headers = (
                        (record.value, record.key, record.headers)
                        if isinstance(record, Message)
                        else (record, None, None)
                    )
                    payload = self.payloads.encode(value)
                    sent.append(
                        producer.send(
                            topic,
                            value=payload,
                            key=None if key is None else key.encode(),
                            headers=[(k, v.encode()) for k, v in headers.items()]
                            if headers
                            else None,
                        )
                    )
                    size += len(payload)
            except Exception as exc:
                failure = exc
            if sent:
                # Settle every record sent, even after a failure, so `failed` is exact.
                try:
                    producer.flush(timeout=(_DELIVERY_TIMEOUT_MS + _REQUEST_TIMEOUT_MS) / 1000)
                except Exception as exc:
                    failure = failure or exc
            acked = [f.value.offset if f.is_done and f.succeeded() else None for f in sent]
            if failure is None and all(offset is not None for offset in acked):
                offsets.extend(offset for offset in acked if offset is not None)
                metrics.records_written += len(batch)
                metrics.batches += 1
                metrics.bytes_written += size
                continue
            if failure is None:
                failure = next((f.exception for f in sent if f.is_done and f.failed()), None)
                failure = failure or Exception("records not acknowledged in time")
            acked += [None] * (len(batch) - len(acked))  # never sent
            failed = [r for r, offset in zip(batch, acked, strict=True) if offset is None]
            written = start + len(batch) - len(failed)
            metrics.records_written += len(batch) - len(failed)
            error = self._failure(failure, "write")
            raise WriteError(
                f"wrote {written} of {len(items)} records; the rest were not written: "
                f"{error.message}",
                written=written,
                failed=failed + items[start + len(batch) :],
                connector=self._name,
                operation="write",
            ) from None
        return offsets

    # -- consuming -----------------------------------------------------------------------

    def read(self, *, follow: bool = False) -> Generator[Message[Any], None, None]:
        """The topic's records for this group, as :class:`Message` objects (``id``: the
        offset in its partition). Ends when none arrives within ``poll_timeout``, unless
        ``follow`` is true. The first read waits for the group to assign partitions."""
        (topic,) = self._require("topic")
        poll_timeout = float(self._setting("poll_timeout") or 1.0)
        session_timeout = float(self._setting("session_timeout") or 10.0)
        # A group join takes about a session timeout on some brokers; do not mistake it
        # for an empty topic.
        join_timeout = poll_timeout + 3 * session_timeout
        return self._consume(str(topic), poll_timeout, join_timeout, follow)

    def _consume(
        self, topic: str, poll_timeout: float, join_timeout: float, follow: bool
    ) -> Generator[Message[Any], None, None]:
        from kafka.structs import OffsetAndMetadata  # type: ignore[import-untyped, unused-ignore]

        try:
            consumer = self._consumer(topic)
        except Exception as exc:
            raise self._failure(exc, "read") from None
        grouped = bool(self._setting("group_id"))
        joining_until = time.monotonic() + join_timeout
        polled: dict[Any, list[Any]] = {}
        done: dict[Any, int] = {}  # partition -> offset after the last record moved past
        try:
            while True:
                if done and grouped:
                    self._commit(
                        consumer, {tp: OffsetAndMetadata(o, "", -1) for tp, o in done.items()}
                    )
                done = {}
                # A poll that began before the group assigned partitions was spent joining.
                joined = bool(consumer.assignment())
                try:
                    polled = consumer.poll(
                        timeout_ms=int(poll_timeout * 1000), max_records=_POLL_RECORDS
                    )
                except Exception as exc:
                    raise self._failure(exc, "read") from None
                if not polled:
                    if follow or (not joined and time.monotonic() < joining_until):
                        continue
                    return
                for partition, records in polled.items():
                    for record in records:
                        yield self._message(record)
                        done[partition] = record.offset + 1
                polled = {}
        finally:
            self._rewind(consumer, polled, done, grouped)

    def _commit(self, consumer: Any, offsets: dict[Any, Any]) -> None:
        try:
            consumer.commit(offsets)
        except Exception as exc:  # e.g. a rebalance took the partition: delivered again
            raise self._failure(exc, "read") from None

    def _rewind(
        self, consumer: Any, polled: dict[Any, list[Any]], done: dict[Any, int], grouped: bool
    ) -> None:
        """After an early stop: commit what was finished, and seek each partition of the
        unfinished batch back to its first record not moved past."""
        if not polled:
            return
        from kafka.structs import OffsetAndMetadata

        try:
            for partition, records in polled.items():
                if records:
                    next_offset = done.get(partition, records[0].offset)
                    if next_offset <= records[-1].offset:
                        consumer.seek(partition, next_offset)
        except Exception:  # the partition went to another member, which reads it instead
            pass
        if done and grouped:
            try:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in done.items()})
            except Exception:  # not committed: those records are delivered again
                pass

    def _message(self, record: Any) -> Message[Any]:
        payload: bytes = record.value if record.value is not None else b""
        try:
            value = self.payloads.decode(payload)
        except Exception as exc:
            self.metrics.errors += 1
            raise ResponseValidationError(
                f"offset {record.offset} of {record.topic!r} partition {record.partition} does"
                f" not decode as {self.payloads.format} ({type(exc).__name__}); not committed",
                body=payload.decode(errors="replace"),
                connector=self._name,
                operation="read",
            ) from None
        metrics = self.metrics
        metrics.records_read += 1
        metrics.bytes_read += len(payload)
        return Message(
            value,
            record.topic,
            id=record.offset,
            key=None if record.key is None else record.key.decode(errors="replace"),
            headers={k: v.decode(errors="replace") for k, v in record.headers or ()},
            timestamp=record.timestamp / 1000 if record.timestamp is not None else None,
            partition=record.partition,
        )
