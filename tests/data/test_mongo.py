"""MongoDB transport against SecantusDB, a MongoDB-wire-compatible server started here.

No MongoDB server installs on this machine; SecantusDB (PyPI ``secantusdb``, its
``secantusd-py`` launcher) speaks the MongoDB wire protocol and stands in for MongoDB
(it reports itself as 8.2). The tests start their own instance on a free port with a
temporary storage directory and stop it at the end; one more instance, with
``--auth``, checks that a refused password is not shown.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from builder.runtime.config import Setting, resolve_settings
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.mongo import MongoConnector
from builder.spec.kinds import STANDARD_SETTINGS, MongoOptions
from tests.data.conftest import free_port, in_ci

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOST = "127.0.0.1"
PASSWORD = "mongo-pw-Tx39vb"

# What the generator emits for a mongo spec (settings as in STANDARD_SETTINGS).
SETTINGS = (
    Setting("connection_url", str, env="TEST_MONGO_URL", secret=True),
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int, default=27017),
    Setting("user", str),
    Setting("password", str, secret=True),
    Setting("database", str),
    Setting("collection", str),
    Setting("timeout", float, default=10.0),
)


class Order(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: int
    total: float
    note: str | None = None


class Stored(BaseModel):
    """A model that declares MongoDB's `_id`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    object_id: str = Field(alias="_id")
    id: int


class Mongo(MongoConnector):
    _name = "mongo_test"
    _options: ClassVar[dict[str, Any]] = {"upsert_keys": [], "batch_size": 1000}

    def __init__(
        self,
        *,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        collection: str | None = None,
        timeout: float | None = None,
    ) -> None:
        given = {
            "connection_url": connection_url,
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": database,
            "collection": collection,
            "timeout": timeout,
        }
        super().__init__(resolve_settings(SETTINGS, given, connector="mongo_test"))


class Orders(Mongo):
    _record = Decoder(lazy=lambda: Order)


class SmallBatches(Orders):
    _options: ClassVar[dict[str, Any]] = {"upsert_keys": [], "batch_size": 3}


class UpsertedOrders(Orders):
    _options: ClassVar[dict[str, Any]] = {"upsert_keys": ["id"], "batch_size": 2}


class StoredOrders(Mongo):
    _record = Decoder(lazy=lambda: Stored)


def _start_server(
    directory: Path, *args: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """secantusd-py on ``port`` (default: a free one), once it answers `ping`."""
    binary = shutil.which("secantusd-py")
    if binary is None:
        if in_ci():
            pytest.fail("secantusd-py (PyPI secantusdb) is not installed (CI=true: must not skip)")
        pytest.skip("secantusd-py (PyPI secantusdb) is not installed")
    import pymongo

    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            *("--host", HOST, "--port", str(port), "--storage-path", str(directory)),
            *("--cache-size", "64M"),  # the default takes 1 GB of RAM as it fills
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    client: Any = pymongo.MongoClient(HOST, port, serverSelectionTimeoutMS=500)
    try:
        while True:
            try:
                client.admin.command("ping")
                return process, port
            except pymongo.errors.PyMongoError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail("secantusd-py did not start")
                time.sleep(0.1)
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def mongo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    process, port = _start_server(tmp_path_factory.mktemp("secantus"))
    yield port
    _stop(process)


@pytest.fixture
def where(mongo_port: int) -> dict[str, Any]:
    """Settings for a fresh collection of the test's own."""
    return {
        "port": mongo_port,
        "database": "connector_tests",
        "collection": f"c_{uuid.uuid4().hex[:12]}",
    }


def orders(n: int, start: int = 0) -> list[Order]:
    return [Order(id=i, total=i * 1.5, note="n" if i % 2 else None) for i in range(start, n)]


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def threads_gone(before: set[str], within: float = 5.0) -> bool:
    """pymongo's monitor threads notice close() within about half a second."""
    deadline = time.monotonic() + within
    while not thread_names() <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- settings ---------------------------------------------------------------------------


def test_settings_are_the_standard_ones() -> None:
    assert [s.name for s in SETTINGS] == list(STANDARD_SETTINGS["mongo"])
    assert set(Mongo._options) == set(MongoOptions.model_fields)


# -- round trips -------------------------------------------------------------------------


def test_typed_records_round_trip(where: dict[str, Any]) -> None:
    sent = orders(10)
    with SmallBatches(**where) as connector:
        assert connector.write(sent) == 10
        records = list(connector.read())
        metrics = connector.metrics
    assert records == sent  # natural order; `_id` dropped: the model does not declare it
    assert all(isinstance(r, Order) for r in records)
    assert (metrics.records_written, metrics.records_read, metrics.errors) == (10, 10, 0)
    assert metrics.batches == 4  # 3 + 3 + 3 + 1 documents
    assert metrics.bytes_written > 0
    assert metrics.bytes_read > metrics.bytes_written  # read back with the `_id` of each


def test_untyped_documents_keep_their_id_and_the_callers_dicts_are_untouched(
    where: dict[str, Any],
) -> None:
    from bson import ObjectId

    sent = [{"id": 1, "tags": ["a", "b"], "nested": {"x": 1.5}}, {"id": 2}]
    with Mongo(**where) as connector:
        assert connector.write(sent) == 2
        documents = list(connector.read())
    assert sent == [{"id": 1, "tags": ["a", "b"], "nested": {"x": 1.5}}, {"id": 2}]
    assert all(isinstance(d["_id"], ObjectId) for d in documents)
    assert [{k: v for k, v in d.items() if k != "_id"} for d in documents] == sent


def test_a_model_that_declares_the_id_gets_it(where: dict[str, Any]) -> None:
    with Mongo(**where) as raw:
        raw.write([{"id": 1}])
        (document,) = raw.read()
    with StoredOrders(**where) as typed:
        (record,) = typed.read()
    assert record == Stored.model_validate({"_id": str(document["_id"]), "id": 1})


def test_filter_projection_and_read_batch(where: dict[str, Any]) -> None:
    with Orders(**where) as connector:
        connector.write(orders(10))
        view = connector.filter({"id": {"$gte": 5}})
        assert [r.id for r in view.read()] == [5, 6, 7, 8, 9]
        batches = list(view.read_batch(2))
        assert [[r.id for r in batch] for batch in batches] == [[5, 6], [7, 8], [9]]
        typed = connector.filter({"id": 3}, {"id": 1, "total": 1}).read()
        assert [r.model_dump() for r in typed] == [{"id": 3, "total": 4.5, "note": None}]
    with Mongo(**where) as untyped:
        projected = list(untyped.filter({"id": {"$lt": 2}}, {"_id": 0, "total": 1}).read())
    assert projected == [{"total": 0.0}, {"total": 1.5}]


def test_read_is_lazy(where: dict[str, Any]) -> None:
    from pymongo import monitoring

    class Commands(monitoring.CommandListener):
        """Counts reads while ``on`` (pymongo has no way to unregister a listener)."""

        def __init__(self) -> None:
            self.on = False
            self.seen: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if self.on and event.command_name in ("find", "getMore"):
                self.seen.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    commands = Commands()
    monitoring.register(commands)
    with SmallBatches(**where) as connector:
        connector.write(orders(10))
        commands.on = True
        records = connector.read()
        assert commands.seen == []  # nothing asked yet
        assert next(records).id == 0
        assert commands.seen == ["find"]  # one batch of 3, not the collection
        assert [r.id for r in records] == list(range(1, 10))
        assert commands.seen == ["find", "getMore", "getMore", "getMore"]
        commands.on = False
    dead = Mongo(port=free_port(), database="d", collection="c", timeout=1)
    reader = dead.read()  # nothing happens until the first record is asked for
    with pytest.raises(ConnectionFailedError):
        next(reader)
    dead.close()


def test_upsert_keys_make_a_retry_write_each_record_once(where: dict[str, Any]) -> None:
    with UpsertedOrders(**where) as connector:
        assert connector.write(orders(5)) == 5
        changed = [Order(id=3, total=99.0), Order(id=7, total=1.0)]
        assert connector.write(changed) == 2
        records = sorted(connector.read(), key=lambda r: r.id)
        with pytest.raises(WriteError) as caught:
            connector.write([{"id": 8}, {"total": 1.0}])  # no `id`: nothing is sent
        assert (caught.value.written, caught.value.failed) == (0, [{"id": 8}, {"total": 1.0}])
    assert [(r.id, r.total) for r in records] == [
        (0, 0.0),
        (1, 1.5),
        (2, 3.0),
        (3, 99.0),
        (4, 6.0),
        (7, 1.0),
    ]


def test_an_ordered_write_stops_at_the_first_refused_document(where: dict[str, Any]) -> None:
    with SmallBatches(**where) as connector:
        connector._collection().create_index("id", unique=True)
        connector.write(orders(5, start=4))  # id 4 exists
        sent = orders(7)  # batches [0 1 2] [3 4 5] [6]: 4 is a duplicate
        with pytest.raises(WriteError) as caught:
            connector.write(sent)
        error = caught.value
        assert (error.written, error.failed) == (4, sent[4:])
        assert "duplicate key" in str(error) and "4 of 7" in str(error)
        assert connector.metrics.errors == 1
        assert connector.metrics.records_written == 1 + 4
        # The caller fixes the offending record and retries exactly the failed ones.
        assert connector.write(error.failed[1:]) == 2
        assert sorted(r.id for r in connector.read()) == list(range(7))


def test_a_document_that_does_not_match_the_model_is_an_error(where: dict[str, Any]) -> None:
    with Mongo(**where) as raw:
        raw.write([{"id": 1, "total": 2.0}, {"id": "x"}])
    with Orders(**where) as typed:
        records = typed.read()
        assert next(records).id == 1
        with pytest.raises(ResponseValidationError):
            next(records)
        assert typed.metrics.errors == 1


def test_a_database_in_the_connection_url_is_used(where: dict[str, Any]) -> None:
    url = f"mongodb://{HOST}:{where['port']}/{where['database']}"
    with Orders(connection_url=url, collection=where["collection"]) as by_url:
        by_url.write(orders(2))
    with Orders(**where) as discrete:
        assert [r.id for r in discrete.read()] == [0, 1]


# -- errors, secrets, lifecycle ----------------------------------------------------------


def _assert_hidden(error: BaseException, *secrets: str) -> None:
    for shown in (error, error.__cause__, error.__context__):
        text = f"{shown} {shown!r}"
        for secret in secrets:
            assert secret not in text


def test_a_refused_password_is_not_shown(tmp_path: Path) -> None:
    process, port = _start_server(tmp_path, "--auth")
    try:
        wrong = "WRONG-" + PASSWORD
        # pymongo waits out the server selection timeout on the read after a refusal.
        discrete = Mongo(
            port=port, user="alice", password=wrong, database="d", collection="c", timeout=1
        )
        with pytest.raises(WriteError) as written:
            discrete.write([{"a": 1}])
        with pytest.raises(ConnectionFailedError) as read:
            list(discrete.read())
        url = f"mongodb://alice:{wrong}@{HOST}:{port}/d"
        by_url = Mongo(connection_url=url, collection="c", timeout=1)
        with pytest.raises(ConnectionFailedError) as by_url_read:
            list(by_url.read())
        for error in (written.value, read.value, by_url_read.value):
            assert "authentication failed" in str(error).lower()
            _assert_hidden(error, wrong, PASSWORD)
        assert wrong not in repr(by_url) and wrong not in repr(discrete)
        discrete.close()
        by_url.close()
    finally:
        _stop(process)


def test_a_server_restart_mid_stream_loses_nothing_and_a_retry_writes_once(
    tmp_path: Path,
) -> None:
    process, port = _start_server(tmp_path)
    try:
        sent = orders(60)
        with UpsertedOrders(port=port, database="d", collection="orders", timeout=1) as connector:
            assert connector.write(sent[:20]) == 20
            _stop(process)
            with pytest.raises(WriteError) as caught:
                connector.write(sent[20:40])
            error = caught.value
            assert (error.written, error.failed) == (0, sent[20:40])
            process, _ = _start_server(tmp_path, port=port)  # same port, same storage
            deadline = time.monotonic() + 15
            while True:  # what a caller does: retry exactly the failed records
                try:
                    assert connector.write(error.failed) == len(error.failed)
                    break
                except WriteError as again:
                    assert again.failed and time.monotonic() < deadline
                    error = again
            assert connector.write(sent[40:]) == 20
            stored = sorted(connector.read(), key=lambda order: order.id)
        assert stored == sent  # each once: the upsert keys make a retry harmless
    finally:
        _stop(process)


def test_an_unreachable_server_fails_within_the_timeout() -> None:
    url = f"mongodb://alice:{PASSWORD}@{HOST}:{free_port()}/d"
    with Mongo(connection_url=url, collection="c", timeout=1) as connector:
        started = time.monotonic()
        with pytest.raises(WriteError) as caught:
            connector.write([{"a": 1}])
        assert time.monotonic() - started < 4
        assert caught.value.failed == [{"a": 1}]
        assert isinstance(caught.value.__cause__, ConnectionFailedError)
        _assert_hidden(caught.value, PASSWORD)


def test_missing_settings_are_config_errors(mongo_port: int) -> None:
    with Mongo(port=mongo_port, collection="c") as connector:
        with pytest.raises(ConfigError, match="database"):
            list(connector.read())
    with Mongo(port=mongo_port, database="d") as connector:
        with pytest.raises(ConfigError, match="collection"):
            connector.write([{"a": 1}])


def test_close_stops_pymongo_threads(where: dict[str, Any]) -> None:
    before = thread_names()
    connector = SmallBatches(**where)
    connector.write(orders(10))
    records = connector.read()
    next(records)  # a cursor left open when the connector closes
    assert thread_names() - before  # pymongo monitors the server from threads
    connector.close()
    assert threads_gone(before)
    with pytest.raises(ConnectorError, match="closed"):
        connector.write(orders(1))


def test_importing_the_transport_does_not_import_pymongo() -> None:
    code = (
        "import sys, builder.runtime.transports.mongo\n"
        "loaded = {'pymongo', 'bson'} & set(sys.modules)\n"
        "assert not loaded, f'imported eagerly: {loaded}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
