"""AMQP transport against the RabbitMQ server on this machine (127.0.0.1:5672, guest/guest)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import ConnectionFailedError, ResponseValidationError, WriteError
from builder.runtime.operation import Decoder
from builder.runtime.transports.amqp import AmqpConnector
from builder.runtime.transports.base import Message
from builder.spec.kinds import STANDARD_SETTINGS, AmqpOptions
from tests.data.conftest import free_port, require_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

HOST, PORT = "127.0.0.1", 5672
WRONG_PASSWORD = "s3cr3t-amqp-pw-5512"

# What the generator emits for an amqp spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("connection_url", str, env="TEST_AMQP_URL", secret=True),
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int, default=5672),
    Setting("user", str, default="guest"),
    Setting("password", str, secret=True),
    Setting("virtual_host", str, default="/"),
    Setting("queue", str),
    Setting("exchange", str, default=""),
    Setting("routing_key", str),
    Setting("prefetch", int, default=100),
    Setting("idle_timeout", float, default=1.0),
)


class Order(BaseModel):
    id: int
    total: float


class Queue(AmqpConnector):
    _name = "amqp_test"
    _options: ClassVar[dict[str, Any]] = {"format": "json", "durable": True}

    def __init__(
        self,
        *,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        virtual_host: str | None = None,
        queue: str | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        prefetch: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        given = {
            "connection_url": connection_url,
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "virtual_host": virtual_host,
            "queue": queue,
            "exchange": exchange,
            "routing_key": routing_key,
            "prefetch": prefetch,
            "idle_timeout": idle_timeout,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="amqp_test"))


class Orders(Queue):
    _record = Decoder(Order)


class TextQueue(Queue):
    _options: ClassVar[dict[str, Any]] = {"format": "text", "durable": False}


class BytesQueue(Queue):
    _options: ClassVar[dict[str, Any]] = {"format": "bytes", "durable": True}


@pytest.fixture(autouse=True)
def _rabbitmq() -> None:
    require_server(HOST, PORT, "RabbitMQ")


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh queue name; the queue is deleted afterwards."""
    import pika  # type: ignore[import-untyped, unused-ignore]

    name = f"test-queue-{uuid.uuid4().hex}"
    yield name
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(HOST, PORT, credentials=pika.PlainCredentials("guest", "guest"))
    )
    try:
        connection.channel().queue_delete(name)
    finally:
        connection.close()


def quick(cls: type[Queue], queue: str, **kw: Any) -> Queue:
    """A connector whose read() ends after 300 ms without messages."""
    kw.setdefault("password", "guest")
    kw.setdefault("idle_timeout", 0.3)
    return cls(queue=queue, **kw)


def waiting(connector: Queue, queue: str, expected: int) -> int:
    """Messages ready in the queue (not those delivered and unacknowledged), once it holds
    ``expected`` or after 3 s: the broker requeues rejected messages asynchronously."""
    deadline = time.monotonic() + 3
    while True:
        declared = connector._open_channel().queue_declare(queue, passive=True)
        count = int(declared.method.message_count)
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


# -- settings ---------------------------------------------------------------------------


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["amqp"])
    assert set(Queue._options) == set(AmqpOptions.model_fields)


# -- round trips -------------------------------------------------------------------------


def test_typed_records_round_trip(queue: str) -> None:
    orders = [Order(id=i, total=i / 4) for i in range(20)]
    with quick(Orders, queue) as connector:
        assert connector.write(orders) == 20
        messages = list(connector.read())
        assert waiting(connector, queue, 0) == 0
    assert [m.value for m in messages] == orders
    assert all(m.topic == queue and m.key == queue for m in messages)
    assert all(isinstance(m.id, int) and m.timestamp for m in messages)


def test_headers_and_routing_key(queue: str) -> None:
    with quick(Queue, queue, exchange="amq.direct", routing_key=queue) as connector:
        connector.publish({"a": 1}, headers={"trace": "t-1"})
        connector.write([Message({"b": 2}, "", headers={"x": "y"})])
        messages = list(connector.read())
    assert [(m.value, m.key, m.headers) for m in messages] == [
        ({"a": 1}, queue, {"trace": "t-1"}),
        ({"b": 2}, queue, {"x": "y"}),
    ]


def test_text_and_bytes_formats(queue: str) -> None:
    with quick(TextQueue, queue) as text:
        text.write(["héllo", "wörld"])
        assert [m.value for m in text.read()] == ["héllo", "wörld"]
    with quick(BytesQueue, f"{queue}-bytes") as raw:
        try:
            payloads = [b"\x00\xff", bytes(range(256))]
            raw.write(payloads)
            assert [m.value for m in raw.read()] == payloads
        finally:
            raw._open_channel().queue_delete(f"{queue}-bytes")


def test_read_batch_and_metrics(queue: str) -> None:
    with quick(Queue, queue) as connector:
        connector.write([{"n": i} for i in range(7)])
        batches = list(connector.read_batch(3))
        metrics = connector.metrics
    assert [[m.value["n"] for m in b] for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert (metrics.records_written, metrics.records_read, metrics.batches) == (7, 7, 4)
    assert metrics.bytes_written == metrics.bytes_read == sum(len(f'{{"n":{i}}}') for i in range(7))


# -- at-least-once -----------------------------------------------------------------------


def test_stopping_early_returns_the_last_message_to_the_queue(queue: str) -> None:
    with quick(Queue, queue) as first:
        first.write([{"n": i} for i in range(5)])
        reader = first.read()
        assert [next(reader).value["n"] for _ in range(2)] == [0, 1]
        reader.close()
        # 0 was acknowledged; 1 (held) and the prefetched 2..4 are back in the queue.
        assert waiting(first, queue, 4) == 4
    with quick(Queue, queue) as second:
        assert [m.value["n"] for m in second.read()] == [1, 2, 3, 4]


def test_a_message_is_acknowledged_only_after_the_consumer_moves_on(queue: str) -> None:
    with quick(Queue, queue) as reader_side, quick(Queue, queue) as observer:
        reader_side.write([{"n": 1}])
        reader = reader_side.read()
        assert next(reader).value == {"n": 1}
        # Delivered, not acknowledged: another reader gets nothing meanwhile.
        assert list(observer.read()) == []
        with pytest.raises(StopIteration):
            next(reader)
    with quick(Queue, queue) as after:
        assert list(after.read()) == []


def test_a_reader_that_vanishes_has_its_messages_redelivered(queue: str) -> None:
    with quick(Queue, queue) as producer:
        producer.write([{"n": i} for i in range(3)])
    dying = quick(Queue, queue)
    reader = dying.read()
    assert next(reader).value == {"n": 0}
    dying.connection.close()  # the connection drops without an acknowledgement
    with quick(Queue, queue) as survivor:
        assert [m.value["n"] for m in survivor.read()] == [0, 1, 2]
    reader.close()
    dying.close()


def test_follow_waits_for_new_messages(queue: str) -> None:
    with quick(Queue, queue) as consumer, quick(Queue, queue) as producer:
        reader = consumer.read(follow=True)
        timer = threading.Timer(0.8, lambda: producer.publish({"late": True}))
        timer.start()
        try:
            message = next(reader)
        finally:
            timer.join(10)  # the write returns before its connector closes
            reader.close()
    assert message.value == {"late": True}


def test_a_payload_that_does_not_match_the_model_goes_back(queue: str) -> None:
    with quick(BytesQueue, queue) as raw:
        raw.write([b'{"id": "nope"}'])
    with quick(Orders, queue) as typed:
        with pytest.raises(ResponseValidationError) as caught:
            list(typed.read())
        assert "nope" in caught.value.body
        assert typed.metrics.errors == 1
        assert waiting(typed, queue, 1) == 1


# -- publishing failures -----------------------------------------------------------------


def test_an_unroutable_message_fails_the_write() -> None:
    nowhere = f"nowhere-{uuid.uuid4().hex}"
    with Queue(password="guest", exchange="amq.direct", routing_key=nowhere) as connector:
        with pytest.raises(WriteError) as caught:
            connector.write([{"n": 1}, {"n": 2}])
    assert caught.value.written == 0
    assert caught.value.failed == [{"n": 1}, {"n": 2}]
    assert "unroutable" in str(caught.value).lower()


def test_a_record_that_does_not_encode_fails_from_there(queue: str) -> None:
    with quick(TextQueue, queue) as connector:
        with pytest.raises(WriteError) as caught:
            connector.write(["a", "b", 3, "d"])
        assert (caught.value.written, caught.value.failed) == (2, [3, "d"])
        assert connector.write(["3", "d"]) == 2
        assert [m.value for m in connector.read()] == ["a", "b", "3", "d"]


def test_no_secret_in_errors(queue: str) -> None:
    with Queue(password=WRONG_PASSWORD, queue=queue) as connector:
        with pytest.raises(WriteError) as written:
            connector.write([{"a": 1}])
        with pytest.raises(ConnectionFailedError) as read:
            list(connector.read())
        assert WRONG_PASSWORD not in repr(connector)
    url = f"amqp://guest:{WRONG_PASSWORD}@127.0.0.1:{free_port()}/%2F"
    with Queue(connection_url=url, queue=queue) as unreachable:
        with pytest.raises(ConnectionFailedError) as refused:
            list(unreachable.read())
    for error in (written.value, read.value, refused.value):
        assert WRONG_PASSWORD not in str(error) and WRONG_PASSWORD not in repr(error.args)
        assert error.__cause__ is None and error.__suppress_context__
    assert written.value.failed == [{"a": 1}]


def test_importing_the_transport_does_not_import_pika() -> None:
    code = (
        "import sys, builder.runtime.transports.amqp\n"
        "assert 'pika' not in sys.modules, 'pika imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
