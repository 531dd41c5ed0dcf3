"""AMQP 0-9-1 (RabbitMQ) over pika's BlockingConnection.

Publishing uses publisher confirms and the ``mandatory`` flag: ``write()`` returns only once
the broker has taken each message, and a message the broker refuses or cannot route to any
queue fails the write (``WriteError`` names it and every record after it) instead of
vanishing. Messages are persistent when the queue is ``durable``.

Consuming is at-least-once: a message is acknowledged only after the consumer asked for
the next one. A consumer that stops early hands the message it stopped at back to the
queue (``basic_nack`` with requeue), so the next reader gets it; messages the broker had
already pushed ahead (up to ``prefetch``) go back too.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable
from typing import Any

from builder.runtime.config import Config
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, Message, records_of

__all__ = ["AmqpConnector"]

_CONTENT_TYPES = {
    "json": "application/json",
    "text": "text/plain",
    "bytes": "application/octet-stream",
}
_SOCKET_TIMEOUT = 10.0
_BLOCKED_TIMEOUT = 30.0  # a broker that blocks publishers (memory alarm) fails the write after this


class AmqpConnector(DataConnector):
    """One queue (and optionally an exchange): ``write()``/``publish()`` publish with
    confirms, ``read()`` consumes with acknowledgements."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._channel: Any = None
        self._declared = False  # the queue (and its binding) exist on this channel

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> Any:
        import pika  # type: ignore[import-untyped, unused-ignore]

        url = self._setting("connection_url")
        parameters: Any
        if url:
            parameters = pika.URLParameters(url)
        else:
            parameters = pika.ConnectionParameters(
                host=self._setting("host") or "127.0.0.1",
                port=int(self._setting("port") or 5672),
                virtual_host=self._setting("virtual_host") or "/",
                credentials=pika.PlainCredentials(
                    self._setting("user") or "guest", self._setting("password") or ""
                ),
            )
        parameters.connection_attempts = 1
        parameters.socket_timeout = _SOCKET_TIMEOUT
        parameters.blocked_connection_timeout = _BLOCKED_TIMEOUT
        return pika.BlockingConnection(parameters)

    def _close(self, connection: Any) -> None:
        self._channel = None
        if connection.is_open:
            connection.close()

    def _open_channel(self) -> Any:
        """The channel (confirm mode, prefetch set, queue declared), reopened if lost."""
        if self._connection is not None and not self._connection.is_open:
            self._connection = None  # dropped by the broker or the network: connect again
        if self._channel is None or not self._channel.is_open:
            self._channel, self._declared = None, False
            channel = self.connection.channel()
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=int(self._setting("prefetch") or 0))
            self._channel = channel
        if not self._declared:
            queue = self._setting("queue")
            if queue:
                self._channel.queue_declare(queue, durable=self._durable())
                exchange = self._setting("exchange")
                if exchange:
                    routing_key = self._setting("routing_key") or queue
                    self._channel.queue_bind(queue, exchange, routing_key=routing_key)
            self._declared = True
        return self._channel

    def _durable(self) -> bool:
        return bool(self._options.get("durable", True))

    def _failure(self, exc: BaseException, operation: str) -> ConnectorError:
        """A driver exception as the matching ConnectorError, counted, secrets scrubbed."""
        self.metrics.errors += 1
        if isinstance(exc, ConnectorError):
            return exc
        from pika.exceptions import (  # type: ignore[import-untyped, unused-ignore]
            AMQPConnectionError,
            ConnectionClosed,
            StreamLostError,
        )

        lost = isinstance(exc, AMQPConnectionError | ConnectionClosed | StreamLostError)
        return self._error(
            exc, ConnectionFailedError if lost else ConnectorError, operation=operation
        )

    # -- publishing ----------------------------------------------------------------------

    def write(self, records: Iterable[Any]) -> int:
        """Publish each record and wait for the broker's confirm; returns how many were.

        A record is a model, a dict or (by ``format``) a str or bytes payload; a
        :class:`Message` also carries headers, and its ``key`` is the routing key. On
        failure, raises :class:`WriteError` whose ``failed`` holds the records not
        confirmed, in order.
        """
        items = records_of(records)
        self._publish_all(items)
        return len(items)

    def publish(
        self, record: Any, key: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Publish one record (``key``: its routing key instead of the configured one)."""
        self._publish_all([Message(record, "", key=key, headers=headers or {})])

    def _publish_all(self, items: list[Any]) -> None:
        if not items:
            return
        exchange = str(self._setting("exchange") or "")
        default_key = self._setting("routing_key") or self._setting("queue")
        if not exchange and not default_key:
            raise ConfigError(
                "publishing needs the setting queue, routing_key or exchange", connector=self._name
            )
        import pika

        durable = self._durable()
        content_type = _CONTENT_TYPES.get(self.payloads.format)
        metrics = self.metrics
        written = 0
        try:
            channel = self._open_channel()
            for record in items:
                value, key, headers = (
                    (record.value, record.key, record.headers)
                    if isinstance(record, Message)
                    else (record, None, None)
                )
                body = self.payloads.encode(value)
                properties = pika.BasicProperties(
                    content_type=content_type,
                    delivery_mode=2 if durable else 1,
                    headers=dict(headers) if headers else None,
                    timestamp=int(time.time()),
                )
                channel.basic_publish(
                    exchange, key or default_key or "", body, properties, mandatory=True
                )
                written += 1
                metrics.records_written += 1
                metrics.bytes_written += len(body)
        except Exception as exc:
            error = self._failure(exc, "write")
            raise WriteError(
                f"wrote {written} of {len(items)} records; the rest were not written: "
                f"{error.message}",
                written=written,
                failed=items[written:],
                connector=self._name,
                operation="write",
            ) from None
        metrics.batches += 1

    # -- consuming -----------------------------------------------------------------------

    def read(self, *, follow: bool = False) -> Generator[Message[Any], None, None]:
        """The queue's messages, as :class:`Message` objects (``id``: the delivery tag,
        ``key``: the routing key). Ends when none arrives within ``idle_timeout``,
        unless ``follow`` is true."""
        (queue,) = self._require("queue")
        idle = float(self._setting("idle_timeout") or 1.0)
        return self._consume(str(queue), idle, follow)

    def _consume(
        self, queue: str, idle: float, follow: bool
    ) -> Generator[Message[Any], None, None]:
        channel: Any = None
        holding: int | None = None  # the delivery tag the consumer has not moved past yet
        try:
            try:
                channel = self._open_channel()
                deliveries = channel.consume(queue, inactivity_timeout=idle)
            except Exception as exc:
                raise self._failure(exc, "read") from None
            while True:
                try:
                    method, properties, body = next(deliveries)
                except Exception as exc:
                    raise self._failure(exc, "read") from None
                if method is None:  # idle for `idle` seconds
                    if follow:
                        continue
                    return
                holding = method.delivery_tag
                yield self._message(queue, method, properties, body)
                holding = None
                try:
                    channel.basic_ack(method.delivery_tag)
                except Exception as exc:
                    raise self._failure(exc, "read") from None
        finally:
            if channel is not None and channel.is_open:
                try:
                    if holding is not None:
                        channel.basic_nack(holding, requeue=True)
                    channel.cancel()  # requeues what was prefetched but not handed on
                except Exception:  # the channel is gone: the broker requeues all unacked
                    pass

    def _message(self, queue: str, method: Any, properties: Any, body: bytes) -> Message[Any]:
        try:
            value = self.payloads.decode(body)
        except Exception as exc:
            self.metrics.errors += 1
            raise ResponseValidationError(
                f"a message of queue {queue!r} does not decode as {self.payloads.format}"
                f" ({type(exc).__name__}); it goes back to the queue",
                body=body.decode(errors="replace"),
                connector=self._name,
                operation="read",
            ) from None
        metrics = self.metrics
        metrics.records_read += 1
        metrics.bytes_read += len(body)
        headers = properties.headers or {}
        return Message(
            value,
            queue,
            id=method.delivery_tag,
            key=method.routing_key,
            headers={
                str(k): v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for k, v in headers.items()
            },
            timestamp=None if properties.timestamp is None else float(properties.timestamp),
        )
