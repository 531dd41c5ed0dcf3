"""No lost messages when a server or a consumer dies mid-stream (issue 7, item 4).

Redis: a throwaway redis-server of the test's own (AOF on, fsync on every write, so what it
acknowledged survives a restart) is stopped and restarted while a writer writes and while
a reader reads; a consumer process is killed mid-stream. RabbitMQ: a consumer process is
killed mid-stream (the shared server keeps running). Every record must arrive at least
once, none may be lost, and a failed write must name exactly the records it did not write.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from builder.runtime.errors import ConnectionFailedError, ConnectorError, WriteError
from tests.data.conftest import free_port, in_ci, require_server, server_reachable
from tests.data.test_amqp import Queue
from tests.data.test_redis_stream import Stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BATCH = 100  # entries per write transaction in these tests


class SmallBatches(Stream):
    _options: ClassVar[dict[str, Any]] = {**Stream._options, "batch_size": BATCH}


class RedisServer:
    """A redis-server of our own: AOF with fsync always, so a restart keeps every
    acknowledged write, the consumer groups and their pending entries."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "redis-server is not installed"
            if in_ci():
                pytest.fail(reason + " (CI=true: integration tests must not skip)")
            pytest.skip(reason)
        self.port = free_port()
        self.command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory),
            *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not server_reachable("127.0.0.1", self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.02)
        require_server("127.0.0.1", self.port, "the throwaway redis-server")

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (AOF flushed), as a restart by an operator."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def raw(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    instance = RedisServer(tmp_path)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def numbers_in(server: RedisServer, stream: str) -> Counter[int]:
    """How often each record number is in the stream (read straight from the server)."""
    import json

    entries = server.raw().xrange(stream)
    return Counter(json.loads(fields[b"data"])["n"] for _, fields in entries)


def test_a_writer_loses_nothing_when_the_server_restarts(server: RedisServer) -> None:
    stream = f"faults-{uuid.uuid4().hex}"
    records: list[dict[str, Any]] = [{"n": i, "pad": "x" * 100} for i in range(20_000)]
    errors: list[WriteError] = []
    failed_once = threading.Event()
    restarted = threading.Event()
    outcome: list[BaseException] = []

    def write_all() -> None:
        try:
            with SmallBatches(port=server.port, stream=stream) as writer:
                pending = records
                while pending:
                    try:
                        writer.write(pending)
                        pending = []
                    except WriteError as exc:
                        errors.append(exc)
                        failed_once.set()
                        assert restarted.wait(20), "the server did not come back"
                        pending = exc.failed  # retry exactly what was not written
        except BaseException as exc:  # reported by the main thread
            outcome.append(exc)

    writer = threading.Thread(target=write_all)
    writer.start()
    raw = server.raw()
    deadline = time.monotonic() + 20
    while raw.exists(stream) == 0 or raw.xlen(stream) < 3_000:
        assert time.monotonic() < deadline and writer.is_alive(), "the writer made no progress"
        time.sleep(0.001)
    server.stop()  # mid-write
    assert failed_once.wait(20), "the write did not fail while the server was down"
    server.start()
    try:
        (error,) = errors
        on_disk = numbers_in(server, stream)
        written = [r["n"] for r in records[: error.written]]
        failed = [r["n"] for r in error.failed]
        assert 0 < error.written < len(records)
        assert error.written + len(failed) == len(records)
        assert failed == list(range(error.written, len(records)))  # in order, none skipped
        assert all(on_disk[n] == 1 for n in written), "a record reported written is missing"
        # Only the transaction in flight when the server stopped may have landed anyway.
        landed = [n for n in failed if on_disk[n]]
        assert landed in ([], failed[:BATCH]), landed
    finally:
        restarted.set()
        writer.join(30)
    assert not outcome, outcome
    final = numbers_in(server, stream)
    assert set(final) == set(range(len(records))), "a record was lost"
    assert sum(final.values()) - len(records) <= BATCH
    # A reader sees every record at least once.
    with Stream(port=server.port, stream=stream, group="g", block_ms=100) as reader:
        seen = Counter(m.value["n"] for m in reader.read())
    assert set(seen) == set(range(len(records)))


def test_a_reader_loses_nothing_when_the_server_restarts(server: RedisServer) -> None:
    stream = f"faults-{uuid.uuid4().hex}"
    total = 3_000
    with Stream(port=server.port, stream=stream) as writer:
        writer.write([{"n": i} for i in range(total)])
    seen: list[int] = []
    with Stream(port=server.port, stream=stream, group="g", block_ms=100) as reader:
        with pytest.raises(ConnectionFailedError):
            for message in reader.read():
                seen.append(message.value["n"])
                if len(seen) == 700:  # mid-batch: the rest of it is already fetched
                    server.stop()
        handed_on_before = len(seen)
        server.start()
        for message in reader.read():
            seen.append(message.value["n"])
        assert int(reader.connection.xpending(stream, "g")["pending"]) == 0
    counts = Counter(seen)
    assert set(counts) == set(range(total)), "a message was lost"
    again = sorted(n for n, c in counts.items() if c > 1)
    # Redelivered: the fetched batch whose acknowledgements the stop cut off.
    assert again and len(again) <= 500 and max(again) < handed_on_before


CONSUMER = """
import os, signal, sys
from tests.data.test_redis_stream import Stream
port, stream, log, stop_after = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(log, "a") as out, Stream(port=port, stream=stream, group="g", block_ms=100) as reader:
    for handled, message in enumerate(reader.read(), 1):
        out.write(f"{message.value['n']}\\n")
        out.flush()
        if handled == stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_consumer_killed_mid_stream_gets_its_pending_entries_again(
    server: RedisServer, tmp_path: Path
) -> None:
    stream = f"faults-{uuid.uuid4().hex}"
    total = 2_000
    with Stream(port=server.port, stream=stream) as writer:
        writer.write([{"n": i} for i in range(total)])
    log = tmp_path / "handled.txt"
    killed = subprocess.run(
        [sys.executable, "-c", CONSUMER, str(server.port), stream, str(log), "1234"],
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
    )
    assert killed.returncode == -9
    before = [int(line) for line in log.read_text().split()]
    assert before == list(range(1234))
    with Stream(port=server.port, stream=stream, group="g", block_ms=100) as survivor:
        after = [m.value["n"] for m in survivor.read()]
        assert int(survivor.connection.xpending(stream, "g")["pending"]) == 0
    assert set(before) | set(after) == set(range(total)), "a message was lost"
    # The entry the dead consumer was holding comes first again, with the rest of its batch.
    assert after[0] <= 1233 and after == list(range(after[0], total))


AMQP_CONSUMER = """
import os, signal, sys
from tests.data.test_amqp import Queue
queue, log, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(log, "a") as out, Queue(password="guest", queue=queue, idle_timeout=0.5) as reader:
    for handled, message in enumerate(reader.read(), 1):
        out.write(f"{message.value['n']}\\n")
        out.flush()
        if handled == stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_amqp_consumer_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    require_server("127.0.0.1", 5672, "RabbitMQ")
    queue = f"faults-{uuid.uuid4().hex}"
    total = 300
    # idle_timeout 2 s: the broker requeues the dead consumer's messages asynchronously.
    with Queue(password="guest", queue=queue, idle_timeout=2.0) as producer:
        try:
            producer.write([{"n": i} for i in range(total)])
            log = tmp_path / "handled.txt"
            killed = subprocess.run(
                [sys.executable, "-c", AMQP_CONSUMER, queue, str(log), "120"],
                cwd=REPO_ROOT,
                timeout=30,
                check=False,
            )
            assert killed.returncode == -9
            before = [int(line) for line in log.read_text().split()]
            assert before == list(range(120))
            after = [m.value["n"] for m in producer.read()]
        finally:
            producer._open_channel().queue_delete(queue)
    assert set(before) | set(after) == set(range(total)), "a message was lost"
    assert 119 in after  # the message it held was never acknowledged
    # At least once: acks the client had not yet written to its socket when it was killed
    # bring their messages back too (seen under load: from 100 on, not 119), so how many
    # come back is not bounded here; each comes once.
    assert len(after) == len(set(after))


def test_a_refused_password_is_not_shown(tmp_path: Path) -> None:
    secret = "s3cr3t-redis-pw-0042"
    guarded = RedisServer(tmp_path, "--requirepass", "the-right-one")
    guarded.start()
    try:
        with Stream(port=guarded.port, password=secret, stream="s", group="g") as connector:
            with pytest.raises(WriteError) as written:
                connector.write([{"a": 1}])
            with pytest.raises(ConnectorError) as read:
                list(connector.read())
    finally:
        guarded.stop()
    for error in (written.value, read.value):
        assert "WRONGPASS" in str(error) or "invalid" in str(error).lower()
        assert secret not in str(error) and secret not in repr(error.args)
