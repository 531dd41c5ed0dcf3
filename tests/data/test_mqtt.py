"""MQTT transport against the Mosquitto broker on this machine (127.0.0.1:1883).

Authentication, refusals and a broker going away are checked against throwaway Mosquitto
instances of the test's own (password file + ACL), on free ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from pydantic import BaseModel, ConfigDict

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.base import Message
from builder.runtime.transports.mqtt import MqttConnector
from builder.spec.kinds import STANDARD_SETTINGS, MqttOptions
from tests.data.conftest import free_port, in_ci, require_server, server_reachable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

HOST, PORT = "127.0.0.1", 1883
PASSWORD = "mqtt-pw-Hy52kq"

# What the generator emits for an mqtt spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int, default=1883),
    Setting("username", str),
    Setting("password", str, secret=True),
    Setting("topic", str),
    Setting("qos", int, default=1),
    Setting("client_id", str),
    Setting("idle_timeout", float, default=1.0),
    Setting("timeout", float, default=10.0),
)


class Reading(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sensor: str
    value: float
    seq: int


class Mqtt(MqttConnector):
    _name = "mqtt_test"
    _options: ClassVar[dict[str, Any]] = {"format": "json"}

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        topic: str | None = None,
        qos: int | None = None,
        client_id: str | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
    ) -> None:
        given = {
            "host": host,
            "port": port,
            "username": username,
            "password": password,
            "topic": topic,
            "qos": qos,
            "client_id": client_id,
            "idle_timeout": idle_timeout,
            "timeout": timeout,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="mqtt_test"))


class Readings(Mqtt):
    _record = Decoder(lazy=lambda: Reading)


class Texts(Mqtt):
    _options: ClassVar[dict[str, Any]] = {"format": "text"}


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_server(HOST, PORT, "Mosquitto")


@pytest.fixture
def names() -> Iterator[dict[str, Any]]:
    """A fresh topic and reader client id; the broker forgets the session afterwards."""
    token = uuid.uuid4().hex[:12]
    client_id = f"reader-{token}"
    yield {"topic": f"test/{token}/readings", "client_id": client_id}
    _forget_session(client_id)


def _forget_session(client_id: str) -> None:
    """Connect once with a clean start and no session expiry: the broker drops the
    session it kept for ``client_id`` (they would otherwise pile up for days)."""
    from paho.mqtt import client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda *_: connected.set()
    client.connect(HOST, PORT, clean_start=True)
    client.loop_start()
    try:
        assert connected.wait(5), "could not reach Mosquitto to drop a test session"
    finally:
        client.disconnect()
        client.loop_stop()


def quick(cls: type[Mqtt], names: dict[str, Any], **kw: Any) -> Mqtt:
    """A connector whose read() ends after 300 ms without messages."""
    return cls(**{**names, "idle_timeout": 0.3, **kw})


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading(sensor=f"s{i % 3}", value=i / 4, seq=i) for i in range(start, n)]


def stop(reader: Iterator[Any]) -> None:
    """What a consumer that stops early does (a `break` out of a for loop does the same)."""
    cast(Generator[Any, None, None], reader).close()


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


# -- settings ---------------------------------------------------------------------------


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["mqtt"])
    assert set(Mqtt._options) == set(MqttOptions.model_fields)


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_typed_records_round_trip(names: dict[str, Any], qos: int) -> None:
    sent = readings(20)
    with quick(Readings, names, qos=qos) as connector:
        connector.subscribe()  # the session exists from now on: the broker keeps messages
        assert connector.write(sent) == 20
        messages = list(connector.read())
        metrics = connector.metrics
    assert [m.value for m in messages] == sent
    assert all(isinstance(m.value, Reading) for m in messages)
    assert {m.topic for m in messages} == {names["topic"]}
    assert (metrics.records_written, metrics.records_read, metrics.errors) == (20, 20, 0)
    assert (
        metrics.bytes_written
        == metrics.bytes_read
        == sum(len(r.model_dump_json(exclude_none=True)) for r in sent)
    )


def test_qos_0_reaches_a_connected_reader(names: dict[str, Any]) -> None:
    # QoS 0 is fire and forget: the broker keeps nothing for a reader that is away.
    got: list[Message[Any]] = []
    with quick(Readings, names, qos=0, idle_timeout=1.0) as connector:
        reader = threading.Thread(target=lambda: got.extend(connector.read()))
        reader.start()
        time.sleep(0.3)  # subscribed by now
        assert connector.write(readings(5)) == 5
        reader.join()
    assert [m.value.seq for m in got] == [0, 1, 2, 3, 4]


def test_wildcard_subscription_and_message_records(names: dict[str, Any]) -> None:
    base = names["topic"]
    with quick(Mqtt, {**names, "topic": base + "/+"}) as connector:
        connector.subscribe()
        written = connector.write(
            [
                Message({"n": 1}, base + "/kitchen", headers={"unit": "C"}),
                Message({"n": 2}, base + "/garage"),
            ]
        )
        assert connector.write([{"n": 3}], topic=base + "/attic") == 1
        messages = list(connector.read())
    assert written == 2
    assert [(m.value, m.topic, m.headers) for m in messages] == [
        ({"n": 1}, base + "/kitchen", {"unit": "C"}),
        ({"n": 2}, base + "/garage", {}),
        ({"n": 3}, base + "/attic", {}),
    ]


def test_a_persistent_session_keeps_what_arrived_while_no_reader_was_connected(
    names: dict[str, Any],
) -> None:
    with quick(Readings, names) as reader:
        reader.subscribe()
    with quick(Readings, names) as writer:
        writer.write(readings(5))
    with quick(Readings, names) as reader:  # another process, same client id
        assert [m.value.seq for m in reader.read()] == [0, 1, 2, 3, 4]
        assert list(reader.read()) == []  # all acknowledged


@pytest.mark.parametrize("qos", [1, 2])
def test_stopping_early_leaves_the_last_message_for_the_next_reader(
    names: dict[str, Any], qos: int
) -> None:
    with quick(Readings, names, qos=qos) as connector:
        connector.subscribe()
        connector.write(readings(6))
        reader = connector.read()
        taken = [next(reader), next(reader)]  # the consumer is busy with the second one
        stop(reader)
    with quick(Readings, names, qos=qos) as next_reader:
        rest = list(next_reader.read())
    assert [m.value.seq for m in taken] == [0, 1]
    assert [m.value.seq for m in rest] == [1, 2, 3, 4, 5]  # 1 again: at-least-once


def test_read_batch_and_idle_timeout(names: dict[str, Any]) -> None:
    with quick(Readings, names, idle_timeout=0.5) as connector:
        started = time.monotonic()
        assert list(connector.read()) == []  # also opens the persistent session
        assert 0.4 < time.monotonic() - started < 3
        connector.write(readings(7))
        batches = list(connector.read_batch(3))
        assert [[m.value.seq for m in batch] for batch in batches] == [[0, 1, 2], [3, 4, 5], [6]]
        assert connector.metrics.batches == 1 + 3  # one write, three read batches


def test_follow_keeps_reading_until_the_consumer_stops(names: dict[str, Any]) -> None:
    with quick(Readings, names, idle_timeout=0.2) as connector:
        got: list[int] = []

        def late_writes() -> None:
            time.sleep(0.8)  # several idle timeouts: read(follow=True) must wait on
            with quick(Readings, names) as writer:
                writer.write(readings(3))

        thread = threading.Thread(target=late_writes)
        thread.start()
        for message in connector.read(follow=True):
            got.append(message.value.seq)
            if len(got) == 3:
                break
        thread.join()
        assert got == [0, 1, 2]
        assert [m.value.seq for m in connector.read()] == [2]  # the last one was not acked


def test_without_a_client_id_each_read_is_a_fresh_session(names: dict[str, Any]) -> None:
    with quick(Readings, {**names, "client_id": None}) as connector:
        assert list(connector.read()) == []
        connector.write(readings(2))  # nobody subscribed: MQTT keeps nothing
        assert list(connector.read()) == []
        with pytest.raises(ConfigError, match="client_id"):
            connector.subscribe()


def test_a_payload_that_does_not_match_the_model_is_not_dropped(names: dict[str, Any]) -> None:
    with quick(Readings, names) as typed:
        typed.subscribe()
        with quick(Texts, names) as raw:
            raw.write(['{"sensor": "s1"}'])
        with pytest.raises(ResponseValidationError):
            list(typed.read())
        with pytest.raises(ResponseValidationError):  # still there: not acknowledged
            list(typed.read())
        assert typed.metrics.errors == 2


def test_wildcards_and_bad_records_are_refused_before_sending(names: dict[str, Any]) -> None:
    with quick(Texts, {**names, "topic": names["topic"] + "/#"}) as connector:
        with pytest.raises(ConfigError, match="wildcard"):
            connector.write(["a"])  # the configured topic is a filter: nowhere to publish
        with pytest.raises(WriteError) as caught:
            connector.write(["fine", b"not text"], topic=names["topic"])
        assert (caught.value.written, caught.value.failed) == (0, ["fine", b"not text"])
        assert connector.metrics.errors == 2
    with quick(Texts, {**names, "topic": "a/#/b"}) as bad_filter:
        with pytest.raises(ConfigError, match="topic filter"):
            list(bad_filter.read())


# -- a broker of the test's own: auth, ACL, outage ---------------------------------------


class Broker:
    """Mosquitto of the test's own on a free port: user alice may write `allowed/#` and
    only read `denied/#`; sessions persist across a stop and start on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        passwd = shutil.which("mosquitto_passwd")
        if not os.path.exists(binary) or passwd is None:
            if in_ci():
                pytest.fail("mosquitto is not installed (CI=true: must not skip)")
            pytest.skip("mosquitto is not installed")
        self.port = free_port()
        subprocess.run(
            [passwd, "-b", "-c", str(directory / "passwd"), "alice", PASSWORD], check=True
        )
        (directory / "acl").write_text(
            "user alice\ntopic readwrite allowed/#\ntopic read denied/#\n"
        )
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous false",
            f"password_file {directory / 'passwd'}",
            f"acl_file {directory / 'acl'}",
            "persistence true",  # written when the broker stops
            f"persistence_location {directory}/",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root: the files live in a private tmp dir
        (directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.command = [binary, "-c", str(directory / "mosquitto.conf")]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not server_reachable(HOST, self.port, timeout=0.2):
            assert process.poll() is None and time.monotonic() < deadline, "mosquitto failed"
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    yield broker
    broker.stop()


def test_a_wrong_password_is_refused_without_showing_it(private_broker: Broker) -> None:
    wrong = "WRONG-" + PASSWORD
    connector = Mqtt(port=private_broker.port, username="alice", password=wrong, topic="allowed/x")
    with pytest.raises(WriteError) as caught:  # nothing written: the connection failed
        connector.write([{"a": 1}])
    for error in (caught.value, caught.value.__cause__, caught.value.__context__):
        shown = f"{error} {error!r}"
        assert wrong not in shown and PASSWORD not in shown
    assert "Not authorized" in str(caught.value) or "Bad user name" in str(caught.value)
    with pytest.raises(ConnectionFailedError) as refused:
        list(connector.read())
    assert wrong not in str(refused.value)
    assert PASSWORD not in repr(connector)
    connector.close()


def test_messages_the_broker_refuses_are_the_failed_ones(private_broker: Broker) -> None:
    port = private_broker.port
    with Mqtt(topic="allowed/x", port=port, username="alice", password=PASSWORD) as connector:
        assert connector.write([{"a": 1}]) == 1
        sent = [{"b": 1}, {"b": 2}]
        with pytest.raises(WriteError) as caught:
            connector.write(sent, topic="denied/x")  # the ACL: read only
        assert (caught.value.written, caught.value.failed) == (0, sent)
        assert "Not authorized" in str(caught.value)


def test_messages_without_an_acknowledgement_are_the_failed_ones(private_broker: Broker) -> None:
    port = private_broker.port
    with Mqtt(
        topic="allowed/x", timeout=1, port=port, username="alice", password=PASSWORD
    ) as connector:
        assert connector.write([{"a": 1}]) == 1
        private_broker.stop(kill=True)  # gone without a word: no acknowledgement comes
        sent = [{"b": i} for i in range(3)]
        started = time.monotonic()
        with pytest.raises(WriteError) as caught:
            connector.write(sent)
        assert time.monotonic() - started < 4
        assert (caught.value.written, caught.value.failed) == (0, sent)


def test_a_broker_restart_mid_stream_loses_nothing(private_broker: Broker) -> None:
    auth: dict[str, Any] = {"port": private_broker.port, "username": "alice"}
    topic, client_id = "allowed/restart", "restart-reader"
    sent = readings(30)
    with Readings(topic=topic, password=PASSWORD, timeout=1, **auth) as writer:
        reader = Readings(
            topic=topic, client_id=client_id, password=PASSWORD, idle_timeout=0.3, **auth
        )
        reader.subscribe()
        assert writer.write(sent[:10]) == 10
        private_broker.stop()  # the broker saves its sessions and goes
        with pytest.raises(WriteError) as caught:
            writer.write(sent[10:20])
        error = caught.value
        assert (error.written, error.failed) == (0, sent[10:20])
        private_broker.start()
        deadline = time.monotonic() + 15
        while True:  # what a caller does: retry exactly the failed records
            try:
                assert writer.write(error.failed) == len(error.failed)
                break
            except WriteError as again:
                assert again.failed and time.monotonic() < deadline
                error = again
        assert writer.write(sent[20:]) == 10
        received = [m.value for m in reader.read()]
        reader.close()
    # Nothing lost; MQTT may deliver a message twice (QoS 1), never zero times.
    assert sorted(set(r.seq for r in received)) == list(range(30))
    assert [r for r in received if r.seq < 10] == sent[:10]


# -- lifecycle ---------------------------------------------------------------------------


def test_close_stops_every_network_thread(names: dict[str, Any]) -> None:
    before = thread_names()
    connector = quick(Readings, names)
    connector.subscribe()
    connector.write(readings(5))
    reader = connector.read()
    next(reader)
    assert thread_names() - before  # paho's loops run in threads of their own
    stop(reader)  # the reader's client disconnects when the read ends
    connector.close()
    assert thread_names() <= before
    with pytest.raises(ConnectorError, match="closed"):
        connector.write(readings(1))


def test_an_unreachable_broker_fails_fast() -> None:
    connector = Mqtt(port=free_port(), topic="t", timeout=1)
    before = thread_names()
    with pytest.raises(ConnectionFailedError):
        list(connector.read())
    with pytest.raises(WriteError):
        connector.write([{"a": 1}])
    assert thread_names() <= before
    connector.close()


def test_importing_the_transport_does_not_import_paho() -> None:
    code = (
        "import sys, builder.runtime.transports.mqtt\n"
        "assert 'paho' not in sys.modules, 'paho imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
