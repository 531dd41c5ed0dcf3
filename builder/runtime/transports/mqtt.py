"""MQTT (v5, over paho-mqtt 2.x): publish with QoS acknowledgements, subscribe with manual acks.

Each paho client runs its network loop in a thread of its own; ``close()`` (or the end of
a ``read()``) disconnects it and joins that thread.

What MQTT can and cannot guarantee here:

- ``write`` with ``qos`` 1 or 2 waits for the broker's PUBACK / PUBCOMP of every message;
  a message without one in ``timeout`` seconds, or refused by the broker (an MQTT v5
  reason code such as "Not authorized"), is raised in a :class:`WriteError`'s ``failed``.
  A timed-out message may still have reached the broker, so a retry is at-least-once
  (MQTT has no idempotency key). With ``qos`` 0 "written" only means handed to the socket.
  paho does not report a refusal carried by a QoS 2 PUBREC: use QoS 1 where the broker
  may refuse a topic (an ACL).
- ``read`` subscribes at QoS 1 (when ``qos`` >= 1) with manual acks: a message is
  acknowledged (PUBACK) only once the consumer asks for the next one. QoS 2 is not used
  for reading because its handshake (PUBREC) hands the message over before the
  application has seen it; a reader that stopped early would lose the messages it had
  received but not yet handed out.
- The broker keeps unacknowledged and newly arriving messages only for a *persistent
  session*: set ``client_id`` and ``read()`` connects with ``clean_start=False`` and a
  session expiry of :data:`SESSION_EXPIRY`; a reader that stops early disconnects, and
  the next ``read()`` under the same ``client_id`` gets the unacknowledged message again,
  then what arrived meanwhile. Without ``client_id`` every ``read()`` is a fresh session.
- MQTT is not a log: a message published before the session existed (before the first
  ``read()`` or :meth:`MqttConnector.subscribe` under that ``client_id``) is not kept,
  except the topic's one retained message. Brokers cap what they queue per session
  (Mosquitto: ``max_queued_messages``, 1000 by default) and drop the excess.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    TimeoutError,
    TransportError,
    WriteError,
)
from builder.runtime.transports.base import DataConnector, Message, chunks, records_of

__all__ = ["SESSION_EXPIRY", "MqttConnector"]

SESSION_EXPIRY = 7 * 24 * 3600  # seconds the broker keeps a reader's session while it is away
PUBLISH_CHUNK = 10_000  # messages in flight at once (packet ids are 16-bit and get reused)
KEEPALIVE = 30


class _Client:
    """One paho client: connected, its network loop in a thread, acks tracked by mid."""

    def __init__(
        self,
        connector: MqttConnector,
        *,
        client_id: str,
        persistent: bool,
        manual_ack: bool = False,
        on_message: Callable[[Any], None] | None = None,
    ) -> None:
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt
        self.timeout = connector._timeout()
        self.persistent = persistent
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        self.paho.connect_timeout = self.timeout
        username = connector.config.get("username")
        if username:
            password = (
                connector.config.reveal("password") if "password" in connector.config else None
            )
            self.paho.username_pw_set(username, password)
        self._changed = threading.Condition()
        self._connack: Any = None
        self.acks: dict[int, Any] = {}  # mid -> reason code of its PUBACK/PUBCOMP
        self._subacks: dict[int, list[Any]] = {}
        self.paho.on_connect = self._on_connect
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        if on_message is not None:
            self.paho.on_message = lambda _client, _userdata, message: on_message(message)
        self._started = False

    # paho calls these from its network thread.
    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._changed:
            self._connack = reason
            self._changed.notify_all()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        with self._changed:
            self.acks[mid] = reason
            self._changed.notify_all()

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: list[Any], _props: Any
    ) -> None:
        with self._changed:
            self._subacks[mid] = reasons
            self._changed.notify_all()

    def connect(self, host: str, port: int) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY if self.persistent else 0
        self.paho.connect(
            host,
            port,
            keepalive=KEEPALIVE,
            clean_start=not self.persistent,
            properties=properties,
        )
        self.paho.loop_start()
        self._started = True
        with self._changed:
            if not self._changed.wait_for(lambda: self._connack is not None, self.timeout):
                raise TimeoutError(f"the broker did not answer CONNECT within {self.timeout:g} s")
            reason = self._connack
        if reason.is_failure:
            raise ConnectionFailedError(f"the broker refused the connection: {reason}")

    def subscribe(self, topic: str, qos: int) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        # retainHandling=1: the retained message only for a new subscription, so that
        # subscribing again on each read() does not deliver it again.
        try:
            result, mid = self.paho.subscribe(
                topic, options=SubscribeOptions(qos=qos, retainHandling=1)
            )
        except ValueError as exc:  # paho checks the filter itself
            raise ConfigError(f"not a valid topic filter: {topic!r} ({exc})") from None
        if result != self._mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise TransportError(f"subscribe failed: {self._mqtt.error_string(result)}")
        with self._changed:
            if not self._changed.wait_for(lambda: mid in self._subacks, self.timeout):
                raise TimeoutError(f"the broker did not answer SUBSCRIBE within {self.timeout:g} s")
            reasons = self._subacks.pop(mid)
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            raise TransportError(f"the broker refused the subscription to {topic!r}: {refused[0]}")

    def publish_all(self, outgoing: list[tuple[str, bytes, Any]], qos: int) -> list[str | None]:
        """Publish and wait for every acknowledgement; each message's outcome is None
        (acknowledged) or why not."""
        with self._changed:
            self.acks.clear()
        mids = [
            self.paho.publish(topic, payload, qos=qos, properties=properties).mid
            for topic, payload, properties in outgoing
        ]
        deadline = time.monotonic() + self.timeout
        with self._changed:
            # Only this chunk's messages are in flight on this client: count, not compare.
            self._changed.wait_for(lambda: len(self.acks) >= len(mids), deadline - time.monotonic())
            acks = dict(self.acks)
        outcomes: list[str | None] = []
        for mid in mids:
            reason = acks.get(mid)
            if reason is None:
                outcomes.append(f"no acknowledgement within {self.timeout:g} s")
            elif reason.is_failure:
                outcomes.append(f"the broker refused it: {reason}")
            else:
                outcomes.append(None)
        return outcomes

    def ack(self, mid: int, qos: int) -> None:
        self.paho.ack(mid, qos)

    def close(self) -> None:
        try:
            self.paho.disconnect()  # also stops paho retrying a refused connection
        finally:
            if self._started:
                self.paho.loop_stop()


class MqttConnector(DataConnector):
    """Source and sink over an MQTT broker's topic."""

    _name = "mqtt"

    def _timeout(self) -> float:
        return float(self.config.get("timeout") or 10.0)

    def _address(self) -> tuple[str, int]:
        return str(self.config.get("host") or "127.0.0.1"), int(self.config.get("port") or 1883)

    def _open(self, **kw: Any) -> _Client:
        if self._closed:
            raise ConnectorError("the connector is closed", connector=self._name)
        client = _Client(self, **kw)
        try:
            client.connect(*self._address())
        except BaseException as exc:
            client.close()
            if isinstance(exc, ConnectorError):
                exc.connector = self._name
                raise
            if isinstance(exc, Exception):
                raise self._error(exc, ConnectionFailedError) from None
            raise
        return client

    def _connect(self) -> _Client:
        # The publisher has a session of its own: a reader's persistent session under
        # `client_id` must not be taken over (MQTT allows one connection per client id).
        return self._open(client_id=f"{self._name}-pub-{uuid.uuid4().hex[:12]}", persistent=False)

    def _close(self, connection: Any) -> None:
        connection.close()

    def _qos(self) -> int:
        configured = self.config.get("qos")
        qos = 1 if configured is None else int(configured)
        if qos not in (0, 1, 2):
            raise ConfigError(f"qos must be 0, 1 or 2, not {qos}", connector=self._name)
        return qos

    # -- sink ----------------------------------------------------------------------------

    def write(self, records: Any, *, topic: str | None = None) -> int:
        """Publish each record to ``topic`` (default: the ``topic`` setting) with ``qos``;
        returns how many the broker acknowledged.

        A record may be a :class:`Message`: its ``value`` is the payload, its ``headers``
        are sent as MQTT v5 user properties and its ``topic``, if not empty, is the topic.
        """
        pending = records_of(records)
        return self._write_reported(pending, lambda batch: self._write(batch, topic))

    def _write(self, pending: list[Any], topic: str | None) -> int:
        qos = self._qos()
        default_topic = topic or self.config.get("topic")
        try:
            outgoing = [self._outgoing(record, default_topic) for record in pending]
        except (TypeError, ValueError) as exc:
            raise WriteError(
                f"a record could not be encoded, nothing was written: {exc}",
                written=0,
                failed=pending,
                connector=self._name,
                operation="write",
            ) from None
        client = self.connection
        outcomes: list[str | None] = []
        for chunk in chunks(outgoing, PUBLISH_CHUNK):
            try:
                results = client.publish_all(chunk, qos)
            except Exception as exc:
                results = [self._error(exc).message] * len(chunk)
            outcomes.extend(results)
            if any(results):  # do not send more to a broker that refuses or is gone
                rest = len(outgoing) - len(outcomes)
                outcomes.extend(["not sent after an earlier failure"] * rest)
                break
        metrics = self.metrics
        metrics.batches += 1
        written = 0
        failed: list[Any] = []
        for record, (_, payload, _), outcome in zip(pending, outgoing, outcomes, strict=True):
            if outcome is None:
                written += 1
                metrics.bytes_written += len(payload)
            else:
                failed.append(record)
        metrics.records_written += written
        if not failed:
            return written
        reason = next(outcome for outcome in outcomes if outcome is not None)
        if any(outcome and outcome.startswith("no acknowledgement") for outcome in outcomes):
            # paho would send the unacknowledged ones again by itself after a reconnect;
            # they are the caller's to retry now, so this client goes.
            self._connection = None
            client.close()
        raise WriteError(
            f"the broker acknowledged {written} of {len(pending)} messages; "
            f"{len(failed)} were not written ({reason})",
            written=written,
            failed=failed,
            connector=self._name,
            operation="write",
        )

    def _outgoing(self, record: Any, topic: str | None) -> tuple[str, bytes, Any]:
        """(topic, payload, MQTT v5 properties or None) of one record."""
        properties = None
        if isinstance(record, Message):
            topic = record.topic or topic
            if record.headers:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = [(str(k), str(v)) for k, v in record.headers.items()]
            record = record.value
        if not topic:
            raise ConfigError("this call needs the setting(s): topic", connector=self._name)
        if "+" in topic or "#" in topic:
            raise ConfigError(
                f"cannot publish to a wildcard topic: {topic!r}", connector=self._name
            )
        return topic, self.payloads.encode(record), properties

    # -- source --------------------------------------------------------------------------

    def subscribe(self) -> None:
        """Open the persistent session of ``client_id`` without reading: the broker keeps
        what is published to ``topic`` from now on for the next ``read()``."""
        (topic, client_id) = self._require("topic", "client_id")
        client = self._open(client_id=client_id, persistent=True)
        try:
            client.subscribe(topic, min(self._qos(), 1))
        except ConnectorError as exc:
            exc.connector = self._name
            raise
        finally:
            client.close()

    def read(self, *, follow: bool = False) -> Iterator[Message[Any]]:
        """Messages on ``topic`` (wildcards allowed), each acknowledged once the consumer
        asks for the next. Ends when none arrives within ``idle_timeout`` seconds, unless
        ``follow``."""
        return self._counted(self._messages(follow))

    def _messages(self, follow: bool) -> Iterator[Message[Any]]:
        (topic,) = self._require("topic")
        qos = min(self._qos(), 1)
        client_id = self.config.get("client_id")
        idle = float(self.config.get("idle_timeout") or 1.0)
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        client = self._open(
            client_id=client_id or f"{self._name}-sub-{uuid.uuid4().hex[:12]}",
            persistent=bool(client_id),
            manual_ack=qos > 0,
            on_message=inbox.put,
        )
        try:
            try:
                client.subscribe(topic, qos)
            except ConnectorError as exc:
                exc.connector = self._name
                raise
            while True:
                try:
                    received = inbox.get(timeout=idle)
                except queue.Empty:
                    if follow:
                        continue
                    return
                message = self._message(received)
                yield message
                # The consumer moved on: now the broker may forget it.
                if received.qos > 0:
                    client.ack(received.mid, received.qos)
        finally:
            # Unacknowledged messages stay with the session for the next reader.
            client.close()

    def _message(self, received: Any) -> Message[Any]:
        payload = received.payload
        self.metrics.bytes_read += len(payload)
        try:
            value = self.payloads.decode(payload)
        except Exception as exc:  # counted as an error by _counted
            raise self._error(exc, ResponseValidationError, operation="read") from None
        properties = getattr(received, "properties", None)
        user_properties = getattr(properties, "UserProperty", None) or []
        return Message(
            value=value,
            topic=received.topic,
            id=received.mid,
            headers={str(k): str(v) for k, v in user_properties},
        )
