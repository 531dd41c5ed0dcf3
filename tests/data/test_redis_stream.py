"""Redis Streams transport against the Redis server on this machine (127.0.0.1:6379)."""

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
from builder.runtime.transports.base import Message
from builder.runtime.transports.redis_stream import RedisStreamConnector
from builder.spec.kinds import STANDARD_SETTINGS, RedisStreamOptions
from tests.data.conftest import free_port, require_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

HOST, PORT = "127.0.0.1", 6379
PASSWORD = "s3cr3t-redis-pw-7781"

# What the generator emits for a redis_stream spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("connection_url", str, env="TEST_REDIS_URL", secret=True),
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int, default=6379),
    Setting("password", str, secret=True),
    Setting("db", int, default=0),
    Setting("stream", str),
    Setting("group", str),
    Setting("consumer", str, default="connector"),
    Setting("block_ms", int, default=1000),
    Setting("claim_idle_ms", int),
)


class Order(BaseModel):
    id: int
    total: float
    note: str | None = None


class Stream(RedisStreamConnector):
    _name = "redis_test"
    _options: ClassVar[dict[str, Any]] = {
        "format": "json",
        "maxlen": None,
        "approximate": True,
        "batch_size": 1000,
    }

    def __init__(
        self,
        *,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        password: str | None = None,
        db: int | None = None,
        stream: str | None = None,
        group: str | None = None,
        consumer: str | None = None,
        block_ms: int | None = None,
        claim_idle_ms: int | None = None,
    ) -> None:
        given = {
            "connection_url": connection_url,
            "host": host,
            "port": port,
            "password": password,
            "db": db,
            "stream": stream,
            "group": group,
            "consumer": consumer,
            "block_ms": block_ms,
            "claim_idle_ms": claim_idle_ms,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="redis_test"))


class Orders(Stream):
    _record = Decoder(Order)


class TextStream(Stream):
    _options: ClassVar[dict[str, Any]] = {**Stream._options, "format": "text"}


class BytesStream(Stream):
    _options: ClassVar[dict[str, Any]] = {**Stream._options, "format": "bytes"}


def trimmed(maxlen: int, approximate: bool) -> type[Stream]:
    class Trimmed(Stream):
        _options: ClassVar[dict[str, Any]] = {
            **Stream._options,
            "maxlen": maxlen,
            "approximate": approximate,
        }

    return Trimmed


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_server(HOST, PORT, "Redis")


@pytest.fixture
def stream() -> Iterator[str]:
    """A fresh stream key, deleted afterwards."""
    import redis

    name = f"test-stream-{uuid.uuid4().hex}"
    yield name
    redis.Redis(host=HOST, port=PORT).delete(name)


def quick(cls: type[Stream], stream: str, **kw: Any) -> Stream:
    """A connector whose read() ends after 200 ms without entries."""
    kw.setdefault("group", "workers")
    kw.setdefault("block_ms", 200)
    return cls(stream=stream, **kw)


def pending(connector: Stream, stream: str, group: str = "workers") -> int:
    return int(connector.connection.xpending(stream, group)["pending"])


# -- settings ---------------------------------------------------------------------------


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["redis_stream"])
    assert set(Stream._options) == set(RedisStreamOptions.model_fields)


# -- round trips -------------------------------------------------------------------------


def test_typed_records_round_trip(stream: str) -> None:
    orders = [Order(id=i, total=i * 1.5, note="n" if i % 2 else None) for i in range(25)]
    with quick(Orders, stream) as connector:
        assert connector.write(orders) == 25
        messages = list(connector.read())
    assert [m.value for m in messages] == orders
    assert all(isinstance(m.value, Order) for m in messages)
    assert all(m.topic == stream for m in messages)
    ids = [m.id for m in messages]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, str(i).split("-"))))
    assert all(m.timestamp is not None and abs(m.timestamp - time.time()) < 60 for m in messages)


def test_dicts_keys_and_headers(stream: str) -> None:
    with quick(Stream, stream) as connector:
        first = connector.publish({"a": 1}, key="customer-7", headers={"source": "test"})
        written = connector.write(
            [Message({"b": 2}, "", key="k2", headers={"x": "y"}), {"c": [1, 2]}]
        )
        messages = list(connector.read())
    assert written == 2
    assert messages[0].id == first
    assert [(m.value, m.key, m.headers) for m in messages] == [
        ({"a": 1}, "customer-7", {"source": "test"}),
        ({"b": 2}, "k2", {"x": "y"}),
        ({"c": [1, 2]}, None, {}),
    ]


def test_text_and_bytes_formats(stream: str) -> None:
    with quick(TextStream, stream) as text:
        text.write(["héllo", "wörld"])
        assert [m.value for m in text.read()] == ["héllo", "wörld"]
        with pytest.raises(WriteError) as caught:
            text.write(["fine", b"not text"])
        assert caught.value.failed == ["fine", b"not text"]  # one batch: all or none
    with quick(BytesStream, f"{stream}-bytes") as raw:
        try:
            payloads = [b"\x00\xff", bytes(range(256))]
            raw.write(payloads)
            assert [m.value for m in raw.read()] == payloads
        finally:
            raw.connection.delete(f"{stream}-bytes")


def test_entries_of_other_producers_are_read_as_fields(stream: str) -> None:
    with quick(Orders, stream) as connector:
        connector.connection.xadd(stream, {"id": "7", "total": "2.5"})
        (message,) = connector.read()
    assert message.value == Order(id=7, total=2.5)
    assert message.headers == {"id": "7", "total": "2.5"}


def test_read_batch_and_metrics(stream: str) -> None:
    with quick(Stream, stream) as connector:
        connector.write([{"n": i} for i in range(10)])
        batches = list(connector.read_batch(4))
        metrics = connector.metrics
    assert [len(b) for b in batches] == [4, 4, 2]
    assert metrics.records_written == 10 and metrics.records_read == 10
    assert metrics.batches == 1 + 3  # one write batch, three read batches
    assert (
        metrics.bytes_written == metrics.bytes_read == sum(len(f'{{"n":{i}}}') for i in range(10))
    )
    assert metrics.errors == 0


# -- at-least-once -----------------------------------------------------------------------


def test_stopping_early_leaves_the_last_entry_pending(stream: str) -> None:
    with quick(Stream, stream) as first:
        first.write([{"n": i} for i in range(6)])
        reader = first.read()
        assert [next(reader).value["n"] for _ in range(3)] == [0, 1, 2]
        reader.close()
        # 0 and 1 were moved past (acknowledged); 2 was not, nor 3..5 fetched with it.
        assert pending(first, stream) == 4
    with quick(Stream, stream) as second:
        assert [m.value["n"] for m in second.read()] == [2, 3, 4, 5]
        assert pending(second, stream) == 0


def test_an_entry_is_acknowledged_only_after_the_consumer_moves_on(stream: str) -> None:
    with quick(Stream, stream, block_ms=100) as connector:
        connector.write([{"n": 1}])
        reader = connector.read()
        held = next(reader)
        assert pending(connector, stream) == 1  # handed out, not acknowledged
        with pytest.raises(StopIteration):
            next(reader)  # asks for the next one: the held entry is acknowledged
        assert held.value == {"n": 1}
        assert pending(connector, stream) == 0


def test_a_new_reader_gets_pending_entries_before_new_ones(stream: str) -> None:
    with quick(Stream, stream) as connector:
        connector.write([{"n": 1}, {"n": 2}])
        reader = connector.read()
        next(reader)
        del reader  # abandoned without close(): the same as a consumer that died
        connector.write([{"n": 3}])
        assert [m.value["n"] for m in connector.read()] == [1, 2, 3]


def test_claim_entries_another_consumer_left(stream: str) -> None:
    with quick(Stream, stream, consumer="alice") as alice:
        alice.write([{"n": i} for i in range(3)])
        reader = alice.read()
        next(reader)
        reader.close()
    with quick(Stream, stream, consumer="bob") as bob_without_claim:
        assert list(bob_without_claim.read()) == []  # alice's entries stay hers
    with quick(Stream, stream, consumer="bob", claim_idle_ms=0) as bob:
        assert [m.value["n"] for m in bob.read()] == [0, 1, 2]
        assert pending(bob, stream) == 0


def test_follow_waits_for_new_entries(stream: str) -> None:
    with quick(Stream, stream, block_ms=100) as connector, quick(Stream, stream) as producer:
        timer = threading.Timer(0.5, lambda: producer.write([{"late": True}]))
        timer.start()
        try:
            message = next(connector.read(follow=True))
        finally:
            timer.join(10)  # the write returns before its connector closes
    assert message.value == {"late": True}


def test_block_ms_zero_means_do_not_wait(stream: str) -> None:
    with quick(Stream, stream, block_ms=0) as connector:
        connector.write([{"n": 1}])
        started = time.monotonic()
        assert [m.value for m in connector.read()] == [{"n": 1}]
        assert time.monotonic() - started < 0.5


def test_a_payload_that_does_not_match_the_model_stays_pending(stream: str) -> None:
    with quick(Orders, stream) as connector:
        connector.connection.xadd(stream, {"data": b'{"id": "not a number"}'})
        with pytest.raises(ResponseValidationError) as caught:
            list(connector.read())
        assert "not a number" in caught.value.body
        assert connector.metrics.errors == 1
        assert pending(connector, stream) == 1


def test_a_lost_group_is_created_again(stream: str) -> None:
    with quick(Stream, stream) as connector:
        connector.write([{"n": 1}])
        assert len(list(connector.read())) == 1
        connector.connection.xgroup_destroy(stream, "workers")
        connector.write([{"n": 2}])
        assert [m.value["n"] for m in connector.read()] == [1, 2]  # the new group reads all


# -- trimming ----------------------------------------------------------------------------


def test_maxlen_trims_exactly(stream: str) -> None:
    with quick(trimmed(10, approximate=False), stream) as connector:
        connector.write([{"n": i} for i in range(50)])
        assert connector.connection.xlen(stream) == 10
        assert [m.value["n"] for m in connector.read()] == list(range(40, 50))


def test_maxlen_trims_approximately(stream: str) -> None:
    with quick(trimmed(100, approximate=True), stream) as connector:
        connector.write([{"n": i} for i in range(5000)])
        length = connector.connection.xlen(stream)
    assert 100 <= length < 5000


# -- errors ------------------------------------------------------------------------------


def test_write_error_names_the_unwritten_records(stream: str) -> None:
    class Small(TextStream):
        _options: ClassVar[dict[str, Any]] = {**TextStream._options, "batch_size": 2}

    records: list[Any] = ["a", "b", "c", 4, "e"]
    with quick(Small, stream) as connector:
        with pytest.raises(WriteError) as caught:
            connector.write(records)
        assert caught.value.written == 2
        assert caught.value.failed == ["c", 4, "e"]
        assert [m.value for m in connector.read()] == ["a", "b"]
        assert connector.write(["c", "4", "e"]) == 3


def test_reserved_header_names_are_refused(stream: str) -> None:
    with quick(Stream, stream) as connector, pytest.raises(WriteError) as caught:
        connector.publish({"a": 1}, headers={"data": "clash"})
    assert "data" in str(caught.value)


def test_write_takes_an_iterable_of_records(stream: str) -> None:
    with quick(Stream, stream) as connector, pytest.raises(TypeError):
        connector.write({"a": 1})


def test_no_secret_in_errors() -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    with Stream(connection_url=url, stream="s", group="g") as connector:
        with pytest.raises(WriteError) as written:
            connector.write([{"a": 1}])
        with pytest.raises(ConnectionFailedError) as read:
            list(connector.read())
    for error in (written.value, read.value):
        assert PASSWORD not in str(error) and PASSWORD not in repr(error.args)
        assert error.__cause__ is None and error.__suppress_context__
    assert written.value.failed == [{"a": 1}]
    assert PASSWORD not in repr(connector) and PASSWORD not in repr(connector.config)


def test_settings_from_the_environment(stream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", f"redis://{HOST}:{PORT}/0")
    with Stream(stream=stream, group="workers", block_ms=100) as connector:
        connector.write([{"n": 1}])
        assert [m.value for m in connector.read()] == [{"n": 1}]


def test_resp3_replies_are_read_too(stream: str) -> None:
    url = f"redis://{HOST}:{PORT}/0?protocol=3"
    with Stream(connection_url=url, stream=stream, group="workers", block_ms=100) as connector:
        connector.write([{"n": i} for i in range(3)])
        reader = connector.read()
        next(reader)
        reader.close()  # the rest comes back through the pending-entries read
        assert [m.value["n"] for m in connector.read()] == [0, 1, 2]


def test_decoded_responses_are_refused(stream: str) -> None:
    url = f"redis://{HOST}:{PORT}/0?decode_responses=true"
    with Stream(connection_url=url, stream=stream) as connector:
        with pytest.raises(WriteError, match="decode_responses"):
            connector.write([{"n": 1}])


def test_importing_the_transport_does_not_import_redis() -> None:
    code = (
        "import sys, builder.runtime.transports.redis_stream\n"
        "assert 'redis' not in sys.modules, 'redis imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
