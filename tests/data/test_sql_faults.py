"""No lost or duplicated rows when PostgreSQL dies mid-stream (issue #7, item 4).

A throwaway PostgreSQL of the test's own (initdb + pg_ctl, free port, socket and data in a
temporary directory) is stopped with ``pg_ctl stop -m immediate`` — every backend killed,
as in a crash — while a write is in flight, then started again; the failed records are
retried and every record must then be in the table exactly once.

To stop the server at a known point, a trigger makes the insert of one chosen id sleep;
a watcher thread sees the sleeping backend in ``pg_stat_activity`` and stops the server
then. So the batch that fails is known, never half-committed, and the test is exact.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.runtime.errors import ConnectionFailedError, WriteError
from builder.runtime.transports.sql import SqlConnector
from tests.data.conftest import free_port, in_ci
from tests.data.test_sql import connector_class

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

STALL_SETUP = """
CREATE TABLE IF NOT EXISTS stall_at (id integer);
CREATE OR REPLACE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM stall_at WHERE id = NEW.id) THEN
        PERFORM pg_sleep(50);
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION slow_at(g integer, stall integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    IF g = stall THEN PERFORM pg_sleep(50); END IF;
    RETURN g;
END $$;
"""


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(reason + " (CI=true: integration tests must not skip)")
    pytest.skip(reason)


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory, run as the postgres user if we are
    root (the server refuses to run as root)."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            _unavailable("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.prefix: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="pg-faults-"))
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = None
            if runuser is None or owner is None:
                _unavailable("running as root, without runuser or a postgres user")
                raise AssertionError  # unreachable: for type checkers
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 30) -> None:
        subprocess.run(
            [*self.prefix, *args],
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop_immediately(self) -> None:
        """Kill every backend at once, as a crash would (no shutdown checkpoint)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def running(self) -> bool:
        result = subprocess.run(
            [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            cwd=self.root,
            capture_output=True,
            timeout=30,
        )
        return result.returncode == 0

    def remove(self) -> None:
        if self.data.exists() and self.running():
            self.stop_immediately()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.init()
        pg.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pg.remove()
        _unavailable(f"could not start a throwaway PostgreSQL: {exc}")
    try:
        admin = connector_class("postgresql")(connection_url=pg.url)
        admin.execute(STALL_SETUP)
        admin.close()
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def admin(server: ThrowawayPostgres) -> Iterator[SqlConnector]:
    if not server.running():
        server.start()
    db = connector_class("postgresql")(connection_url=server.url)
    db.execute("DELETE FROM stall_at")
    yield db
    db.close()


def stop_when_stalled(server: ThrowawayPostgres) -> threading.Thread:
    """A thread that stops the server as soon as a backend sleeps in the stall trigger."""

    def watch() -> None:
        import psycopg

        deadline = time.monotonic() + 20
        with psycopg.connect(server.url, autocommit=True) as connection:
            while time.monotonic() < deadline:
                sleeping = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                ).fetchone()
                if sleeping and sleeping[0]:
                    break
                time.sleep(0.02)
        server.stop_immediately()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def id_counts(admin: SqlConnector, table: str) -> dict[int, int]:
    rows = admin.query(f"SELECT id, count(*) AS n FROM {table} GROUP BY id")
    return {int(r["id"]): int(r["n"]) for r in rows}


@pytest.mark.parametrize("upsert_keys", [(), ("id",)], ids=["copy", "upsert"])
def test_server_killed_mid_stream_loses_and_duplicates_nothing(
    server: ThrowawayPostgres, admin: SqlConnector, upsert_keys: tuple[str, ...]
) -> None:
    table = "items_upsert" if upsert_keys else "items_copy"
    # Without upsert keys the table has no key at all: a duplicate would show.
    key = " PRIMARY KEY" if upsert_keys else ""
    admin.execute(f"DROP TABLE IF EXISTS {table}")
    admin.execute(f"CREATE TABLE {table} (id integer{key}, payload text)")
    admin.execute(
        f"CREATE TRIGGER stall BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION stall()"
    )
    admin.execute("INSERT INTO stall_at VALUES (537)")

    records = [{"id": i, "payload": f"p{i}"} for i in range(1000)]
    stream = [records[i : i + 200] for i in range(0, 1000, 200)]  # five writes...
    db = connector_class("postgresql", upsert_keys=upsert_keys, batch_size=50)(
        connection_url=server.url, table=table
    )  # ... of four batches each
    watcher = stop_when_stalled(server)
    error: WriteError | None = None
    unwritten: list[Any] = []
    for index, chunk in enumerate(stream):
        try:
            assert db.write(chunk) == len(chunk)
        except WriteError as exc:
            error = exc
            unwritten = exc.failed + [r for later in stream[index + 1 :] for r in later]
            break
    watcher.join(timeout=30)

    assert error is not None, "the write did not fail although the server was stopped"
    assert isinstance(error.__cause__, ConnectionFailedError)
    # The third write failed in its third batch (ids 500-549): two batches of it were in.
    assert error.written == 100
    assert [r["id"] for r in error.failed] == list(range(500, 600))
    assert all(a is b for a, b in zip(error.failed, records[500:600], strict=True))

    server.start()
    admin.close()  # its connection died with the server
    check = connector_class("postgresql")(connection_url=server.url)
    check.execute("DELETE FROM stall_at")
    # Exactly the records before the failed batch are in, each once.
    assert id_counts(check, table) == dict.fromkeys(range(500), 1)

    assert db.write(unwritten) == 500  # the same connector: it reconnects
    assert id_counts(check, table) == dict.fromkeys(range(1000), 1)
    payloads = {r["id"]: r["payload"] for r in check.query(f"SELECT id, payload FROM {table}")}
    assert payloads == {r["id"]: r["payload"] for r in records}
    assert db.metrics.records_written == 1000 and db.metrics.errors == 1
    db.close()
    check.close()


def test_server_down_before_a_write(server: ThrowawayPostgres, admin: SqlConnector) -> None:
    admin.execute("DROP TABLE IF EXISTS items_down")
    admin.execute("CREATE TABLE items_down (id integer PRIMARY KEY)")
    db = connector_class("postgresql", upsert_keys=("id",), batch_size=10)(
        connection_url=server.url, table="items_down"
    )
    assert db.write([{"id": i} for i in range(15)]) == 15
    server.stop_immediately()
    records = [{"id": i} for i in range(10, 40)]
    with pytest.raises(WriteError) as caught:
        db.write(records)
    assert caught.value.written == 0 and caught.value.failed == records
    assert isinstance(caught.value.__cause__, ConnectionFailedError)
    server.start()
    assert db.write(caught.value.failed) == 30  # 10-14 again: upserted, not duplicated
    assert id_counts(db, "items_down") == dict.fromkeys(range(40), 1)
    db.close()


def test_server_killed_mid_read_fails_loudly(
    server: ThrowawayPostgres, admin: SqlConnector
) -> None:
    """A read cut short raises; it never looks like a shorter result."""
    db = connector_class("postgresql")(connection_url=server.url)
    rows = db.iter_query(
        "SELECT slow_at(g, :stall) AS id FROM generate_series(1, 10000) AS g", {"stall": 5000}
    )
    watcher = stop_when_stalled(server)
    seen = 0
    with pytest.raises(ConnectionFailedError):
        for _ in rows:
            seen += 1
    watcher.join(timeout=30)
    assert seen == 4000  # two chunks of 2000 arrived; the third stalled at row 5000
    server.start()
    assert sum(1 for _ in db.iter_query("SELECT generate_series(1, 3000) AS id")) == 3000
    db.close()
