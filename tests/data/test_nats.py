"""NATS JetStream transport against the NATS server on this machine (127.0.0.1:4222, -js).

Authentication is checked against throwaway nats-server instances of the test's own (one
with a user and password, one with a token), on free ports.
"""

from __future__ import annotations

import asyncio
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
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.base import Message
from builder.runtime.transports.nats import NatsConnector
from builder.spec.kinds import STANDARD_SETTINGS, NatsOptions
from tests.data.conftest import free_port, in_ci, require_server, server_reachable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

HOST, PORT = "127.0.0.1", 4222
PASSWORD = "nats-pw-Zq81xv"
TOKEN = "nats-token-Kd02mw"

# What the generator emits for a nats spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("servers", str, default="nats://127.0.0.1:4222"),
    Setting("user", str),
    Setting("password", str, secret=True),
    Setting("token", str, secret=True),
    Setting("stream", str),
    Setting("subject", str),
    Setting("durable", str),
    Setting("idle_timeout", float, default=1.0),
    Setting("timeout", float, default=10.0),
)


class Order(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: int
    total: float
    note: str | None = None


class Nats(NatsConnector):
    _name = "nats_test"
    _options: ClassVar[dict[str, Any]] = {"format": "json", "msg_id_field": None}

    def __init__(
        self,
        *,
        servers: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        stream: str | None = None,
        subject: str | None = None,
        durable: str | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
    ) -> None:
        given = {
            "servers": servers,
            "user": user,
            "password": password,
            "token": token,
            "stream": stream,
            "subject": subject,
            "durable": durable,
            "idle_timeout": idle_timeout,
            "timeout": timeout,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="nats_test"))


class Orders(Nats):
    _record = Decoder(lazy=lambda: Order)


class DedupedOrders(Orders):
    _options: ClassVar[dict[str, Any]] = {"format": "json", "msg_id_field": "id"}


class Texts(Nats):
    _options: ClassVar[dict[str, Any]] = {"format": "text", "msg_id_field": None}


@pytest.fixture(autouse=True)
def _nats() -> None:
    require_server(HOST, PORT, "NATS JetStream")


async def _jetstream(action: Any) -> Any:
    import nats

    client = await nats.connect(f"nats://{HOST}:{PORT}")
    try:
        return await action(client.jetstream())
    finally:
        await client.close()


@pytest.fixture
def names() -> Iterator[dict[str, Any]]:
    """A fresh stream, subject and durable name; the stream is deleted afterwards."""
    token = uuid.uuid4().hex[:12]
    stream = f"TEST_{token}"
    yield {"stream": stream, "subject": f"test.{token}", "durable": f"reader_{token}"}

    async def delete(js: Any) -> None:
        import nats.js.errors

        try:
            await js.delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass

    asyncio.run(_jetstream(delete))


def quick(cls: type[Nats], names: dict[str, Any], **kw: Any) -> Nats:
    """A connector whose read() ends after 300 ms without messages."""
    return cls(**{**names, "idle_timeout": 0.3, **kw})


def orders(n: int, start: int = 0) -> list[Order]:
    return [Order(id=i, total=i * 1.25, note="n" if i % 2 else None) for i in range(start, n)]


def stop(reader: Iterator[Any]) -> None:
    """What a consumer that stops early does (a `break` out of a for loop does the same)."""
    cast(Generator[Any, None, None], reader).close()


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


# -- settings ---------------------------------------------------------------------------


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["nats"])
    assert set(Nats._options) == set(NatsOptions.model_fields)


# -- round trips -------------------------------------------------------------------------


def test_typed_records_round_trip(names: dict[str, Any]) -> None:
    sent = orders(30)
    with quick(Orders, names) as connector:
        assert connector.write(sent) == 30
        messages = list(connector.read())
        metrics = connector.metrics
    assert [m.value for m in messages] == sent
    assert all(isinstance(m.value, Order) for m in messages)
    assert [m.id for m in messages] == list(range(1, 31))  # stream sequences
    assert {m.topic for m in messages} == {names["subject"]}
    assert all(m.timestamp is not None and abs(m.timestamp - time.time()) < 60 for m in messages)
    assert all(m.headers == {} and m.key is None for m in messages)
    assert (metrics.records_written, metrics.records_read, metrics.errors) == (30, 30, 0)
    assert (
        metrics.bytes_written
        == metrics.bytes_read
        == sum(len(o.model_dump_json(exclude_none=True)) for o in sent)
    )
    assert metrics.batches == 1


def test_a_durable_reader_resumes_after_what_it_acknowledged(names: dict[str, Any]) -> None:
    with quick(Orders, names) as connector:
        connector.write(orders(5))
        assert [m.value.id for m in connector.read()] == [0, 1, 2, 3, 4]
        assert list(connector.read()) == []  # all acknowledged
        connector.write(orders(8, start=5))
    with quick(Orders, names) as later:  # another process, same durable
        assert [m.value.id for m in later.read()] == [5, 6, 7]


def test_stopping_early_leaves_the_last_message_for_the_next_reader(
    names: dict[str, Any],
) -> None:
    with quick(Orders, names) as writer:
        writer.write(orders(6))
    with quick(Orders, names) as first:
        reader = first.read()
        taken = [next(reader), next(reader)]  # the consumer is busy with the second one
        stop(reader)
    started = time.monotonic()
    with quick(Orders, names) as second:
        rest = list(second.read())
    # Given back at once (NAK), not after the consumer's 30 s ack_wait.
    assert time.monotonic() - started < 5
    assert [m.value.id for m in taken] == [0, 1]
    assert [m.value.id for m in rest] == [1, 2, 3, 4, 5]  # 1 again: at-least-once
    assert rest[0].id == taken[1].id


def test_a_slow_consumer_acknowledges_as_it_goes(names: dict[str, Any]) -> None:
    async def acked_up_to(js: Any) -> int:
        info = await js.consumer_info(names["stream"], names["durable"])
        return int(info.ack_floor.stream_seq)

    with quick(Orders, names) as connector:
        connector.write(orders(5))
        reader = connector.read()
        next(reader)
        time.sleep(1.1)  # longer than the ack interval: the ack is not held back for the batch
        next(reader)
        assert asyncio.run(_jetstream(acked_up_to)) == 1  # the first, not the second
        stop(reader)
        assert asyncio.run(_jetstream(acked_up_to)) == 1


def test_without_a_durable_each_read_starts_over(names: dict[str, Any]) -> None:
    with quick(Orders, {**names, "durable": None}) as connector:
        connector.write(orders(3))
        assert [m.value.id for m in connector.read()] == [0, 1, 2]
        assert [m.value.id for m in connector.read()] == [0, 1, 2]


def test_read_batch_and_idle_timeout(names: dict[str, Any]) -> None:
    with quick(Orders, names, idle_timeout=0.5) as connector:
        started = time.monotonic()
        assert list(connector.read()) == []
        assert 0.4 < time.monotonic() - started < 3
        connector.write(orders(7))
        batches = list(connector.read_batch(3))
        assert [[m.value.id for m in batch] for batch in batches] == [[0, 1, 2], [3, 4, 5], [6]]
        assert connector.metrics.batches == 1 + 3  # one write, three read batches


def test_follow_keeps_reading_until_the_consumer_stops(names: dict[str, Any]) -> None:
    with quick(Orders, names, idle_timeout=0.2) as connector:
        connector.write(orders(1))
        got: list[int] = []

        def late_writes() -> None:
            time.sleep(0.6)  # several idle timeouts: read(follow=True) must wait on
            with quick(Orders, names) as writer:
                writer.write(orders(3, start=1))

        thread = threading.Thread(target=late_writes)
        thread.start()
        for message in connector.read(follow=True):
            got.append(message.value.id)
            if len(got) == 3:
                break
        thread.join()
        assert got == [0, 1, 2]
        assert [m.value.id for m in connector.read()] == [2]  # the last one was not acked


def test_message_records_carry_headers_key_and_subject(names: dict[str, Any]) -> None:
    other = names["subject"] + ".eu"
    # The stream is created for the wildcard subject; each message names its own.
    with quick(Nats, {**names, "subject": names["subject"] + ".*"}) as setup:
        written = setup.write(
            [
                Message({"a": 1}, other, key="m-1", headers={"source": "test"}),
                Message({"b": 2}, names["subject"] + ".us"),
            ]
        )
        messages = list(setup.read())
    assert written == 2
    assert [(m.value, m.topic, m.key, m.headers) for m in messages] == [
        ({"a": 1}, other, "m-1", {"Nats-Msg-Id": "m-1", "source": "test"}),
        ({"b": 2}, names["subject"] + ".us", None, {}),
    ]


# -- delivery guarantees on write --------------------------------------------------------


def test_records_refused_by_the_stream_are_exactly_the_failed_ones(
    names: dict[str, Any],
) -> None:
    async def limited(js: Any) -> None:
        # At most 3 messages, new ones refused: the 4th and 5th are not stored.
        await js.add_stream(
            name=names["stream"], subjects=[names["subject"]], max_msgs=3, discard="new"
        )

    asyncio.run(_jetstream(limited))
    sent = orders(5)
    with quick(Orders, names) as connector:
        with pytest.raises(WriteError) as caught:
            connector.write(sent)
        error = caught.value
        assert (error.written, error.failed) == (3, sent[3:])
        assert "3 of 5" in str(error)
        assert [m.value for m in connector.read()] == sent[:3]
        assert connector.metrics.records_written == 3
        assert connector.metrics.errors == 1


def test_a_subject_outside_the_stream_fails_every_record(names: dict[str, Any]) -> None:
    with quick(Orders, names) as connector:
        connector.write(orders(1))  # creates the stream for names["subject"] only
        sent = orders(3)
        with pytest.raises(WriteError) as caught:
            connector.write(sent, subject="elsewhere." + names["subject"])
        assert (caught.value.written, caught.value.failed) == (0, sent)


def test_a_retry_with_message_ids_stores_each_record_once(names: dict[str, Any]) -> None:
    sent = orders(4)
    with quick(DedupedOrders, names) as connector:
        assert connector.write(sent) == 4
        assert connector.write(sent[2:]) == 2  # acknowledged as duplicates, not stored
        messages = list(connector.read())
    assert [m.value for m in messages] == sent
    assert [m.key for m in messages] == ["0", "1", "2", "3"]


def test_a_record_that_cannot_be_encoded_writes_nothing(names: dict[str, Any]) -> None:
    with quick(Texts, names) as connector:
        with pytest.raises(WriteError) as caught:
            connector.write(["fine", b"not text"])
        assert (caught.value.written, caught.value.failed) == (0, ["fine", b"not text"])
        assert connector.write(["fine"]) == 1
        assert [m.value for m in connector.read()] == ["fine"]


def test_a_payload_that_does_not_match_the_model_is_not_dropped(names: dict[str, Any]) -> None:
    with quick(Texts, names) as raw:
        raw.write(['{"id": "not a number"}'])
    with quick(Orders, names) as typed:
        with pytest.raises(ResponseValidationError):
            list(typed.read())
        with pytest.raises(ResponseValidationError):  # still there: given back, not acked
            list(typed.read())
        assert typed.metrics.errors == 2


# -- errors, secrets, lifecycle ----------------------------------------------------------


class NatsServer:
    """A nats-server of the test's own on a free port, which can be stopped and started
    again on the same port (and, with JetStream, the same storage)."""

    def __init__(self, directory: Path, *args: str) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            if in_ci():
                pytest.fail("nats-server is not installed (CI=true: must not skip)")
            pytest.skip("nats-server is not installed")
        self.port = free_port()
        self.command = [binary, "-a", HOST, "-p", str(self.port), *args]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> None:
        self.process = process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        deadline = time.monotonic() + 10
        while not server_reachable(HOST, self.port, timeout=0.2):
            assert process.poll() is None and time.monotonic() < deadline, "nats-server failed"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, "--user", "alice", "--pass", PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, "--auth", TOKEN)
    yield server
    server.stop()


@pytest.fixture
def jetstream_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, "-js", "-sd", str(tmp_path / "jetstream"))
    yield server
    server.stop()


def _assert_no_secret(error: BaseException, *secrets: str) -> None:
    shown = f"{error} {error!r} {error.__cause__!r} {error.__context__!r}"
    for secret in secrets:
        assert secret not in shown


def test_user_and_password(password_server: NatsServer) -> None:
    servers = password_server.url
    wrong = "WRONG-" + PASSWORD
    connector = Nats(servers=servers, user="alice", password=wrong, stream="S", timeout=5)
    started = time.monotonic()
    with pytest.raises(WriteError) as caught:
        connector.write([{"a": 1}])
    assert time.monotonic() - started < 3  # refused: no retrying until the timeout
    assert caught.value.failed == [{"a": 1}]
    assert isinstance(caught.value.__cause__, ConnectionFailedError)
    assert "Authorization" in str(caught.value)
    _assert_no_secret(caught.value, wrong, PASSWORD)
    _assert_no_secret(caught.value.__cause__, wrong, PASSWORD)
    with pytest.raises(ConnectionFailedError) as read:
        list(connector.read())
    _assert_no_secret(read.value, wrong, PASSWORD)
    assert PASSWORD not in repr(connector)
    connector.close()
    # The right password gets in (core NATS is enough to see that: no JetStream here).
    with Nats(servers=servers, user="alice", password=PASSWORD, stream="S") as good:
        assert good.connection.client.is_connected


def test_token(token_server: NatsServer) -> None:
    servers = token_server.url
    with pytest.raises(ConnectionFailedError) as caught:
        list(Nats(servers=servers, token="bad-" + TOKEN, stream="S", timeout=5).read())
    _assert_no_secret(caught.value, "bad-" + TOKEN, TOKEN)
    with Nats(servers=servers, token=TOKEN, stream="S") as good:
        assert good.connection.client.is_connected


def test_a_server_restart_mid_stream_loses_nothing_and_a_retry_stores_once(
    jetstream_server: NatsServer,
) -> None:
    names = {"stream": "RESTART", "subject": "restart.orders", "durable": "reader"}
    sent = orders(60)
    with DedupedOrders(servers=jetstream_server.url, timeout=1, idle_timeout=0.3, **names) as c:
        assert c.write(sent[:20]) == 20
        jetstream_server.stop()
        with pytest.raises(WriteError) as caught:
            c.write(sent[20:40])  # nats-py buffers them while reconnecting: no acks
        error = caught.value
        assert (error.written, error.failed) == (0, sent[20:40])
        jetstream_server.start()  # same port, same storage: the client reconnects
        deadline = time.monotonic() + 15
        while True:  # what a caller does: retry exactly the failed records
            try:
                assert c.write(error.failed) == 20
                break
            except WriteError as again:
                assert again.failed and time.monotonic() < deadline
                error = again
        assert c.write(sent[40:]) == 20
        received = [m.value for m in c.read()]
    # The buffered publishes may have reached the server after the reconnect; the
    # retry's Nats-Msg-Id made JetStream store each record once all the same.
    assert received == sent


def test_an_unreachable_server_fails_within_the_timeout() -> None:
    connector = Nats(servers=f"nats://{HOST}:{free_port()}", stream="S", timeout=1)
    before = thread_names()
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError):
        list(connector.read())
    assert time.monotonic() - started < 4
    assert thread_names() <= before  # the loop thread of the failed attempt is gone
    connector.close()


def test_missing_stream_setting_is_a_config_error() -> None:
    with Nats() as connector, pytest.raises(ConnectorError, match="stream"):
        connector.write([{"a": 1}])


def test_close_stops_the_loop_thread(names: dict[str, Any]) -> None:
    before = thread_names()
    connector = quick(Orders, names)
    connector.write(orders(5))
    reader = connector.read()
    next(reader)  # a reader left open when the connector closes
    assert thread_names() - before  # the private event loop runs in its own thread
    connector.close()
    assert thread_names() <= before
    stop(reader)
    with pytest.raises(ConnectorError, match="closed"):
        connector.write(orders(1))


def test_importing_the_transport_does_not_import_nats() -> None:
    code = (
        "import sys, builder.runtime.transports.nats\n"
        "assert 'nats' not in sys.modules, 'nats imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
