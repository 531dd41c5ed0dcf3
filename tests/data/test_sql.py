"""The sql transport against the real PostgreSQL (5432) and MariaDB (3306) of this machine.

Each test creates its own uniquely named tables and drops them. Without a server the
integration tests skip (fail under CI=true); the paramstyle scanner tests need no server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import traceback
import uuid
from collections.abc import Generator, Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from builder.runtime.config import MASK, Setting, resolve_settings
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.sql import (
    FETCH_ROWS,
    NamedQuery,
    QueryError,
    SqlConnector,
    translate,
)
from tests.data.conftest import free_port, require_server

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
DIALECTS = ("postgresql", "mysql")
integration = pytest.mark.integration

# What a generated package declares: the sql kind's standard settings.
SETTINGS = (
    Setting("connection_url", str, env="SQL_TEST_URL", secret=True),
    Setting("host", str, default="127.0.0.1"),
    Setting("port", int),
    Setting("user", str),
    Setting("password", str, secret=True),
    Setting("database", str),
    Setting("table", str),
    Setting("query", str),
)


class Database(SqlConnector):
    """A connector shaped like a generated one (settings as keyword arguments)."""

    _name = "testdb"

    def __init__(self, **given: Any) -> None:
        super().__init__(resolve_settings(SETTINGS, given, connector="testdb"))


def connector_class(
    dialect: str,
    *,
    upsert_keys: tuple[str, ...] = (),
    batch_size: int = 1000,
    record: Decoder | None = None,
) -> type[Database]:
    """A connector class with this kind block, as the generator would emit it."""

    class Configured(Database):
        _options = {"dialect": dialect, "upsert_keys": list(upsert_keys), "batch_size": batch_size}
        _record = record

    return Configured


def connect(dialect: str, **kw: Any) -> SqlConnector:
    """A connector for the shared server of ``dialect`` (skips when it is down)."""
    url = PG_URL if dialect == "postgresql" else MYSQL_URL
    require_server("127.0.0.1", 5432 if dialect == "postgresql" else 3306, dialect)
    settings = {k: kw.pop(k) for k in ("table", "query", "connection_url") if k in kw}
    settings.setdefault("connection_url", url)
    return connector_class(dialect, **kw)(**settings)


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


TEXT = {"postgresql": "text", "mysql": "varchar(200)"}
JSON = {"postgresql": "jsonb", "mysql": "json"}


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def admin(dialect: str) -> Iterator[SqlConnector]:
    """A plain connector to create and drop the test's tables with."""
    db = connect(dialect)
    yield db
    db.close()


@pytest.fixture
def orders(admin: SqlConnector, dialect: str) -> Iterator[str]:
    """A fresh ``orders``-like table: id (primary key), name, total, doc (JSON)."""
    name = unique("orders")
    admin.execute(
        f"CREATE TABLE {name} (id integer PRIMARY KEY, name {TEXT[dialect]} NOT NULL,"
        f" total numeric(12, 2), doc {JSON[dialect]})"
    )
    yield name
    admin.execute(f"DROP TABLE IF EXISTS {name}")


def order_rows(ids: range, tag: str = "n") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"{tag}{i}", "total": i * 1.5, "doc": {"i": i}} for i in ids]


def table_ids(admin: SqlConnector, table: str) -> list[int]:
    return [int(r["id"]) for r in admin.query(f"SELECT id FROM {table} ORDER BY id")]


# --------------------------------------------------------------------------------------- #
# The :name scanner (no server)
# --------------------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("sql", "dialect", "text", "names"),
    [
        ("SELECT * FROM t WHERE a = :a AND b = :b", "postgresql",
         "SELECT * FROM t WHERE a = %s AND b = %s", ("a", "b")),
        ("SELECT :x, :x", "mysql", "SELECT %s, %s", ("x", "x")),
        ("SELECT ':no' || :yes", "postgresql", "SELECT ':no' || %s", ("yes",)),
        ("SELECT 'it''s :no', :yes", "postgresql", "SELECT 'it''s :no', %s", ("yes",)),
        ("SELECT E'\\' :no', :yes", "postgresql", "SELECT E'\\' :no', %s", ("yes",)),
        # In a standard PostgreSQL string a backslash is just a character.
        ("SELECT '\\', :yes", "postgresql", "SELECT '\\', %s", ("yes",)),
        ("SELECT 'a\\' :no', :yes", "mysql", "SELECT 'a\\' :no', %s", ("yes",)),
        ('SELECT ":no" FROM t WHERE c = :yes', "postgresql",
         'SELECT ":no" FROM t WHERE c = %s', ("yes",)),
        ('SELECT "a\\" :no" , :yes', "mysql", 'SELECT "a\\" :no" , %s', ("yes",)),
        ("SELECT `:no`` :no` FROM t WHERE c = :yes", "mysql",
         "SELECT `:no`` :no` FROM t WHERE c = %s", ("yes",)),
        ("SELECT 1 -- :no\n, :yes", "postgresql", "SELECT 1 -- :no\n, %s", ("yes",)),
        ("SELECT 1 # :no\n, :yes", "mysql", "SELECT 1 # :no\n, %s", ("yes",)),
        # MySQL needs a space after --: "5--:x" is 5 minus minus :x.
        ("SELECT 5--:yes", "mysql", "SELECT 5--%s", ("yes",)),
        ("SELECT /* :no /* :no */ :no */ :yes", "postgresql",
         "SELECT /* :no /* :no */ :no */ %s", ("yes",)),
        ("SELECT /* :no /* :no */ :yes", "mysql", "SELECT /* :no /* :no */ %s", ("yes",)),
        ("SELECT $$ :no $$, $q$ :no $$ :no $q$, :yes", "postgresql",
         "SELECT $$ :no $$, $q$ :no $$ :no $q$, %s", ("yes",)),
        ("SELECT $1, a$b, :yes", "postgresql", "SELECT $1, a$b, %s", ("yes",)),
        ("SELECT :id::text, a::int, :b::numeric(3)", "postgresql",
         "SELECT %s::text, a::int, %s::numeric(3)", ("id", "b")),
        ("SELECT arr[lo:hi], arr[1:2], :yes", "postgresql",
         "SELECT arr[lo:hi], arr[1:2], %s", ("yes",)),
        ("SET @a := 1, @b = :yes", "mysql", "SET @a := 1, @b = %s", ("yes",)),
        ("SELECT '100%' LIKE :p", "postgresql", "SELECT '100%%' LIKE %s", ("p",)),
        ("SELECT '100%' FROM t", "postgresql", "SELECT '100%' FROM t", ()),
        ("SELECT 1; SELECT 2", "postgresql", "SELECT 1; SELECT 2", ()),
        ("SELECT 'unterminated :no", "postgresql", "SELECT 'unterminated :no", ()),
        ("SELECT :_a1,:b_2", "mysql", "SELECT %s,%s", ("_a1", "b_2")),
    ],
)  # fmt: skip
def test_translate_cases(sql: str, dialect: str, text: str, names: tuple[str, ...]) -> None:
    assert translate(sql, dialect) == (text, names)


_IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
# Plain SQL; two of them side by side must not make "--" (a comment).
_PLAIN = st.text(alphabet=" ,=()+-*<>1x;\n%", max_size=6).filter(
    lambda s: "--" not in s and not s.endswith("-")
)


@st.composite
def _token(draw: st.DrawFn, dialect: str) -> tuple[str, str, str | None]:
    """(source, expected driver text, parameter name or None) of one piece of SQL."""
    kind = draw(st.sampled_from(["param", "plain", "string", "ident", "line", "block", "dollar"]))
    if kind == "param":
        name = draw(_IDENT)
        cast = draw(st.sampled_from(["", "::int", "::text"])) if dialect == "postgresql" else ""
        return f" :{name}{cast} ", f" %s{cast} ", name
    if kind == "plain":
        source = draw(_PLAIN)
        return source, source.replace("%", "%%"), None
    body = draw(_ANY_TEXT)
    if kind == "string":
        body = body.replace("'", "''")
        if dialect == "mysql":
            body = body.replace("\\", "\\\\")
        source = f"'{body}'"
    elif kind == "ident":
        quote = '"' if dialect == "postgresql" else "`"
        source = quote + body.replace(quote, quote * 2) + quote
    elif kind == "line":
        source = "-- " + body.replace("\n", " ") + "\n"
    elif kind == "block":
        source = "/*" + body.replace("*/", "* /").replace("/*", "/ *") + "*/"
    elif dialect == "postgresql":
        source = "$t$" + body.replace("$t$", "") + "$t$"
    else:
        source = "# " + body.replace("\n", " ") + "\n"
    return f" {source} ", f" {source.replace('%', '%%')} ", None


@st.composite
def _statement(draw: st.DrawFn) -> tuple[str, str, str, tuple[str, ...]]:
    dialect = draw(st.sampled_from(DIALECTS))
    tokens = draw(st.lists(_token(dialect), max_size=12))
    source = "SELECT" + "".join(t[0] for t in tokens)
    expected = "SELECT" + "".join(t[1] for t in tokens)
    names = tuple(t[2] for t in tokens if t[2] is not None)
    return dialect, source, expected, names


@settings(max_examples=200, deadline=None)
@given(_statement())
def test_translate_finds_exactly_the_parameters(
    case: tuple[str, str, str, tuple[str, ...]],
) -> None:
    dialect, source, expected, names = case
    text, found = translate(source, dialect)
    assert found == names
    # Without parameters the text goes to the driver untouched (no % doubling).
    assert text == (expected if names else source)


# --------------------------------------------------------------------------------------- #
# Statements
# --------------------------------------------------------------------------------------- #


@integration
@pytest.mark.timeout(60)
def test_query_execute_and_iter_query(admin: SqlConnector, orders: str) -> None:
    assert admin.execute(
        f"INSERT INTO {orders} (id, name, total) VALUES (:a, :n, 1), (:b, :n, 2)",
        {"a": 1, "b": 2, "n": "it's 100% :not_a_param"},
    ) == 2  # fmt: skip
    rows = admin.query(f"SELECT id, name FROM {orders} WHERE id >= :lo ORDER BY id", {"lo": 1})
    assert rows == [
        {"id": 1, "name": "it's 100% :not_a_param"},
        {"id": 2, "name": "it's 100% :not_a_param"},
    ]
    assert admin.query(f"SELECT id FROM {orders} WHERE name LIKE '%100\\%%' AND id = :i",
                       {"i": 2}) == [{"id": 2}]  # fmt: skip
    assert admin.query(f"DELETE FROM {orders} WHERE id = :i", {"i": 99}) == []
    streamed = admin.iter_query(f"SELECT id FROM {orders} WHERE id > :lo ORDER BY id", {"lo": 0})
    assert [r["id"] for r in streamed] == [1, 2]
    assert admin.execute(f"UPDATE {orders} SET total = total + :d", {"d": 1}) == 2


@pytest.mark.timeout(60)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")))
@integration
def test_values_are_bound_by_the_driver(admin: SqlConnector, value: str) -> None:
    """Quotes, backslashes, %, :names and comment markers come back as they went in."""
    sql = "SELECT :v AS v, ':v' AS w, '%' AS p"
    assert admin.query(sql, {"v": value}) == [{"v": value, "w": ":v", "p": "%"}]


@integration
def test_a_parameter_without_value_is_a_clear_error(admin: SqlConnector) -> None:
    with pytest.raises(QueryError, match=r"parameter\(s\): :b$") as caught:
        admin.query("SELECT :a AS a, :b AS b, ':c'", {"a": 1})
    assert ":a" not in caught.value.message and ":c" not in caught.value.message
    with pytest.raises(QueryError, match=":a"):
        admin.execute("SELECT :a")
    with pytest.raises(QueryError, match=":x"):
        admin.iter_query("SELECT :x")  # raised at the call, before any row is asked for


@integration
def test_sql_errors_carry_sqlstate_or_code(admin: SqlConnector, dialect: str, orders: str) -> None:
    with pytest.raises(QueryError) as syntax:
        admin.query("SELEC 1")
    admin.execute(f"INSERT INTO {orders} (id, name) VALUES (1, 'a')")
    with pytest.raises(QueryError) as duplicate:
        admin.execute(f"INSERT INTO {orders} (id, name) VALUES (:id, 'b')", {"id": 1})
    if dialect == "postgresql":
        assert (syntax.value.sqlstate, duplicate.value.sqlstate) == ("42601", "23505")
        assert "Key (id)=(1)" in duplicate.value.message  # the server's detail is kept
    else:
        assert (syntax.value.code, duplicate.value.code) == (1064, 1062)
    assert duplicate.value.connector == "testdb" and duplicate.value.operation == "execute"
    assert admin.query("SELECT 1 AS one") == [{"one": 1}]  # the connection is still good


@integration
@pytest.mark.timeout(60)
def test_transaction_commits_rolls_back_and_sees_its_own_writes(
    admin: SqlConnector, dialect: str, orders: str
) -> None:
    db = connect(dialect, table=orders)
    with db:
        with db.transaction():
            db.write(order_rows(range(3)))
            # A streaming read inside the block runs in the block's transaction.
            assert [r["id"] for r in db.iter_query(f"SELECT id FROM {orders} ORDER BY id")] == [
                0, 1, 2,
            ]  # fmt: skip
            assert table_ids(admin, orders) == []  # not committed yet
        assert table_ids(admin, orders) == [0, 1, 2]
        with pytest.raises(RuntimeError), db.transaction():
            db.execute(f"DELETE FROM {orders}")
            with db.transaction():  # nested: a savepoint
                db.write(order_rows(range(10, 12)))
            raise RuntimeError("roll back")
        assert table_ids(admin, orders) == [0, 1, 2]


@integration
@pytest.mark.timeout(60)
def test_a_dropped_connection_fails_clearly_then_reconnects(
    admin: SqlConnector, dialect: str
) -> None:
    db = connect(dialect)
    with db:
        if dialect == "postgresql":
            pid = db.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
            admin.query("SELECT pg_terminate_backend(:pid) AS done", {"pid": pid})
        else:
            pid = db.query("SELECT CONNECTION_ID() AS pid")[0]["pid"]
            admin.execute(f"KILL {int(pid)}")
        with pytest.raises(ConnectionFailedError):
            db.query("SELECT 1 AS one")
        assert db.query("SELECT 1 AS one") == [{"one": 1}]


# --------------------------------------------------------------------------------------- #
# Reading: lazy, through server-side cursors
# --------------------------------------------------------------------------------------- #


@integration
@pytest.mark.timeout(60)
def test_postgresql_read_fetches_only_what_is_asked_for() -> None:
    """Each row of the view draws a sequence number when the server computes it: a
    server-side cursor computes one chunk at a time, a client-side one all of them."""
    admin = connect("postgresql")
    seq, view = unique("seq"), unique("v")
    admin.execute(f"CREATE SEQUENCE {seq}")
    admin.execute(
        f"CREATE VIEW {view} AS SELECT g AS id, nextval('{seq}') AS n"
        " FROM generate_series(1, 100000) AS g"
    )

    def computed() -> int:
        return int(admin.query(f"SELECT last_value FROM {seq}")[0]["last_value"])

    try:
        db = connect("postgresql", table=view)
        rows = db.read()
        assert computed() == 1  # nothing ran yet (last_value starts at 1, is_called false)
        first = next(rows)
        assert first["id"] == 1
        assert computed() <= FETCH_ROWS + 1
        rest = sum(1 for _ in rows)
        assert rest == 99999 and computed() == 100000

        admin.execute(f"ALTER SEQUENCE {seq} RESTART WITH 1")
        batches = cast(Generator[Any, None, None], db.table(view, ["id"]).read_batch(10))
        assert next(batches) == [{"id": i} for i in range(1, 11)]
        assert computed() <= FETCH_ROWS + 1
        batches.close()  # stop early: the cursor is closed, the reader kept for reuse

        query = connect(
            "postgresql", query=f"SELECT id, n FROM {view} WHERE id <= :last ORDER BY id"
        )
        assert [r["id"] for r in query.read(last=5)] == [1, 2, 3, 4, 5]
        assert query.metrics.records_read == 5
        db.close()
        query.close()
    finally:
        admin.execute(f"DROP VIEW IF EXISTS {view}")
        admin.execute(f"DROP SEQUENCE IF EXISTS {seq}")
        admin.close()


@integration
@pytest.mark.timeout(60)
def test_mysql_read_reads_only_what_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the packets pymysql reads: one per row of the result."""
    db = connect("mysql", table="seq_1_to_50000")  # MariaDB's sequence engine
    import pymysql.connections  # type: ignore[import-untyped, unused-ignore]

    packets = [0]
    original = pymysql.connections.Connection._read_packet

    def counting(self: Any, *args: Any, **kw: Any) -> Any:
        packets[0] += 1
        return original(self, *args, **kw)

    monkeypatch.setattr(pymysql.connections.Connection, "_read_packet", counting)
    rows = cast(Generator[Any, None, None], db.read())
    assert packets[0] == 0  # lazy: nothing sent yet
    assert next(rows) == {"seq": 1}
    assert packets[0] < FETCH_ROWS + 50
    rows.close()  # stopping early closes the reader instead of draining 50,000 rows
    assert packets[0] < FETCH_ROWS + 50
    assert sum(1 for _ in db.read()) == 50000
    assert packets[0] > 50000
    db.close()


@integration
@pytest.mark.timeout(60)
def test_read_batch_and_table_views(dialect: str, orders: str) -> None:
    db = connect(dialect, table=orders)
    db.write(order_rows(range(25)))
    batches = list(db.read_batch(10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert sorted(r["id"] for b in batches for r in b) == list(range(25))
    view = db.table(orders, columns=["id", "name"])
    assert sorted(view.read(), key=lambda r: r["id"])[:2] == [
        {"id": 0, "name": "n0"},
        {"id": 1, "name": "n1"},
    ]
    assert [len(b) for b in view.read_batch(20)] == [20, 5]
    assert db.metrics.records_read == 25 + 25 + 25
    db.close()
    with pytest.raises(ConnectorError, match="closed"):
        next(db.read())
    with pytest.raises(ConnectorError, match="closed"):
        db.query("SELECT 1")


@integration
@pytest.mark.timeout(60)
def test_reads_and_writes_interleave_on_one_connector(dialect: str, admin: SqlConnector) -> None:
    """Copy a table into another while reading it: the read has its own connection."""
    source, target = unique("src"), unique("dst")
    for name in (source, target):
        admin.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY, name {TEXT[dialect]})")
    try:
        db = connect(dialect, table=source, batch_size=100)
        db.write({"id": i, "name": f"n{i}"} for i in range(3000))
        copied = sum(db.table(target).write(batch) for batch in db.read_batch(500))
        assert copied == 3000
        assert table_ids(admin, target) == list(range(3000))
        db.close()
    finally:
        for name in (source, target):
            admin.execute(f"DROP TABLE IF EXISTS {name}")


@integration
def test_read_settings_errors(dialect: str) -> None:
    db = connect(dialect)
    with pytest.raises(ConfigError, match="table"):
        db.read()
    with pytest.raises(ConfigError, match="query"):
        connect(dialect, table="x").read(unexpected=1)
    with pytest.raises(ConfigError, match="table"):
        db.write([{"id": 1}])


# --------------------------------------------------------------------------------------- #
# Writing: COPY / INSERT, upserts, failures
# --------------------------------------------------------------------------------------- #


@integration
@pytest.mark.timeout(60)
def test_write_in_batches(admin: SqlConnector, dialect: str, orders: str) -> None:
    db = connect(dialect, table=orders, batch_size=40)
    records = order_rows(range(100))
    records[7] = {"id": 7, "name": "no total"}  # fewer fields: NULL for the others
    assert db.write(records) == 100
    assert db.metrics.records_written == 100 and db.metrics.batches == 3
    rows = admin.query(f"SELECT id, name, total, doc FROM {orders} ORDER BY id")
    assert [r["id"] for r in rows] == list(range(100))
    assert rows[7]["total"] is None and rows[7]["doc"] is None
    assert float(rows[3]["total"]) == 4.5
    doc = rows[3]["doc"]
    assert (doc if dialect == "postgresql" else json.loads(doc)) == {"i": 3}
    # As many fields as the first record, but other names: still each in its column.
    mixed = [{"id": 200, "name": "a", "total": 1}, {"id": 201, "name": "b", "doc": {"k": 2}}]
    assert db.write(mixed) == 2
    assert admin.query(f"SELECT id, total, doc FROM {orders} WHERE id >= 200 ORDER BY id") == [
        {"id": 200, "total": 1, "doc": None},
        {"id": 201, "total": None, "doc": {"k": 2} if dialect == "postgresql" else '{"k": 2}'},
    ]
    with pytest.raises(WriteError) as not_a_record:
        db.write([{"id": 300, "name": "x"}, (301, "y")])  # a tuple of two "fields"
    assert "dict or a model" in str(not_a_record.value)
    assert db.write([]) == 0
    with pytest.raises(TypeError, match="single record"):
        db.write({"id": 1})
    db.close()


@integration
@pytest.mark.timeout(60)
def test_upsert_writes_each_key_once(admin: SqlConnector, dialect: str, orders: str) -> None:
    db = connect(dialect, table=orders, upsert_keys=("id",), batch_size=30)
    assert db.write(order_rows(range(50))) == 50
    again = order_rows(range(40, 80), tag="u")
    again.append({"id": 79, "name": "last wins", "total": 0, "doc": None})  # same key twice
    assert db.write(again) == 41
    rows = admin.query(f"SELECT id, name FROM {orders} ORDER BY id")
    assert [r["id"] for r in rows] == list(range(80))
    names = {r["id"]: r["name"] for r in rows}
    assert names[39] == "n39" and names[40] == "u40" and names[79] == "last wins"
    with pytest.raises(WriteError, match="upsert key"):
        db.write([{"name": "no id"}])
    db.close()

    pairs = unique("pairs")  # every column a key: a conflict changes nothing
    admin.execute(f"CREATE TABLE {pairs} (a integer, b integer, PRIMARY KEY (a, b))")
    try:
        keys_only = connect(dialect, table=pairs, upsert_keys=("a", "b"))
        assert keys_only.write([{"a": 1, "b": 2}, {"a": 1, "b": 3}]) == 2
        assert keys_only.write([{"a": 1, "b": 2}, {"a": 2, "b": 2}]) == 2
        assert admin.query(f"SELECT a, b FROM {pairs} ORDER BY a, b") == [
            {"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 2, "b": 2},
        ]  # fmt: skip
        keys_only.close()
    finally:
        admin.execute(f"DROP TABLE IF EXISTS {pairs}")


@integration
@pytest.mark.timeout(60)
def test_failed_batch_names_exactly_the_unwritten_records(
    admin: SqlConnector, dialect: str, orders: str
) -> None:
    db = connect(dialect, table=orders, batch_size=10)
    records: list[Any] = order_rows(range(35))
    records[23] = {"id": 23, "name": None}  # NOT NULL: the third batch fails
    with pytest.raises(WriteError) as caught:
        db.write(records)
    error = caught.value
    assert error.written == 20
    assert len(error.failed) == 15 and all(
        a is b for a, b in zip(error.failed, records[20:], strict=True)
    )
    assert isinstance(error.__cause__, QueryError)
    assert table_ids(admin, orders) == list(range(20))  # the failed batch left nothing
    assert db.metrics.errors == 1 and db.metrics.records_written == 20
    error.failed[3] = {"id": 23, "name": "fixed"}
    assert db.write(error.failed) == 15
    assert table_ids(admin, orders) == list(range(35))

    with pytest.raises(WriteError) as bad_record:
        db.write([{"id": 100, "name": "ok"}, object()])
    assert bad_record.value.written == 0 and len(bad_record.value.failed) == 2
    db.close()


@integration
@pytest.mark.timeout(60)
def test_typed_record_model(admin: SqlConnector, dialect: str, orders: str) -> None:
    class AliasedOrder(BaseModel):  # a column whose field has another name
        id: int
        label: str = Field(alias="name")
        total: float | None = None

    Database = connector_class(
        dialect, record=Decoder(lazy=lambda: AliasedOrder), upsert_keys=("id",)
    )
    db = Database(
        connection_url=PG_URL if dialect == "postgresql" else MYSQL_URL,
        table=orders,
        query=f"SELECT id, name, total FROM {orders} WHERE id < :below ORDER BY id",
    )
    written = [AliasedOrder(id=1, name="a", total=2.5), AliasedOrder(id=2, name="b")]
    assert db.write(written) == 2
    read = list(db.read(below=10))
    assert read == written
    assert all(type(r) is AliasedOrder for r in read)
    bad = Database(
        connection_url=PG_URL if dialect == "postgresql" else MYSQL_URL,
        query="SELECT 'not a number' AS id, 'x' AS name",
    )
    with pytest.raises(ResponseValidationError):
        list(bad.read())
    db.close()
    bad.close()


# --------------------------------------------------------------------------------------- #
# Named queries, as the generated class calls them
# --------------------------------------------------------------------------------------- #


class Order(BaseModel):
    id: int
    name: str
    total: float | None = None


def generated_style_connector(dialect: str, table: str) -> SqlConnector:
    """What the template emits for a spec with three named queries (table made unique)."""
    orders_since = NamedQuery(
        "orders_since",
        f"SELECT id, name, total FROM {table} WHERE id > :min_id ORDER BY id",
        params=("min_id",),
        result=Decoder(lazy=lambda: Order),
        many=True,
    )
    order_by_id = NamedQuery(
        "order_by_id",
        f"SELECT id, name, total FROM {table} WHERE id = :id OR :id = -1",
        params=("id",),
        result=Decoder(lazy=lambda: Order),
    )
    rename = NamedQuery(
        "rename", f"UPDATE {table} SET name = :name WHERE id <= :max_id", params=("name", "max_id")
    )
    url = PG_URL if dialect == "postgresql" else MYSQL_URL

    class Orders(SqlConnector):
        _name = "orders"
        _options = {"dialect": dialect, "upsert_keys": ["id"], "batch_size": 1000}
        _record = Decoder(lazy=lambda: Order)

        def __init__(self, *, connection_url: str | None = None, table: str | None = None) -> None:
            super().__init__(
                resolve_settings(
                    SETTINGS, {"connection_url": connection_url, "table": table}, connector="orders"
                )
            )

        def orders_since(self, *, min_id: int) -> list[Order]:
            return self._named_query(orders_since, {"min_id": min_id})  # type: ignore[no-any-return]

        def order_by_id(self, *, id: int) -> Order | None:
            return self._named_query(order_by_id, {"id": id})  # type: ignore[no-any-return]

        def rename(self, *, name: str, max_id: int) -> int:
            return self._named_query(rename, {"name": name, "max_id": max_id})  # type: ignore[no-any-return]

    return Orders(connection_url=url, table=table)


@integration
@pytest.mark.timeout(60)
def test_named_queries(dialect: str, orders: str) -> None:
    db: Any = generated_style_connector(dialect, orders)
    db.write([Order(id=i, name=f"o{i}", total=i) for i in range(1, 6)])
    since = db.orders_since(min_id=3)
    assert since == [Order(id=4, name="o4", total=4.0), Order(id=5, name="o5", total=5.0)]
    assert db.order_by_id(id=2) == Order(id=2, name="o2", total=2.0)
    assert db.order_by_id(id=42) is None
    assert db.rename(name="renamed", max_id=2) == 2
    assert [o.name for o in db.orders_since(min_id=0)][:3] == ["renamed", "renamed", "o3"]
    with pytest.raises(QueryError, match="one at most") as many:
        db.order_by_id(id=-1)
    assert many.value.operation == "order_by_id"
    db.close()


# --------------------------------------------------------------------------------------- #
# Identifiers and secrets
# --------------------------------------------------------------------------------------- #

HOSTILE = [
    'we"ird',
    "back`tick",
    "semi; DROP TABLE sentinel; --",
    "per%cent %s %(x)s",
    "col:on :name",
    "dash -- comment /* x",
    "it's",
    "ünï cødé",
    "$1 $$",
    "x) VALUES (%s, %(y)s); --",
]


@integration
@pytest.mark.timeout(60)
def test_hostile_identifiers_are_quoted(admin: SqlConnector, dialect: str) -> None:
    sentinel = unique("sentinel")
    table = (unique("h") + ' "`.;%:x',)  # a dot inside a name: give the parts as a tuple
    quote = admin._dialect.quote
    admin.execute(f"CREATE TABLE {sentinel} (id integer)")
    columns = ", ".join(f"{quote((c,))} {TEXT[dialect]}" for c in HOSTILE)
    admin.execute(f"CREATE TABLE {quote(table)} (id integer PRIMARY KEY, {columns})")
    try:
        for keys in ((), ("id",)):
            db = connector_class(dialect, upsert_keys=keys)(
                connection_url=PG_URL if dialect == "postgresql" else MYSQL_URL
            )
            records = [{"id": i, **{c: f"{c}={i}" for c in HOSTILE}} for i in range(3)]
            assert db.table(table).write(records) == 3
            rows = sorted(db.table(table, ["id", *HOSTILE]).read(), key=lambda r: r["id"])
            assert rows == records
            db.execute(f"DELETE FROM {quote(table)}")
            db.close()
        assert admin.query(f"SELECT COUNT(*) AS n FROM {sentinel}") == [{"n": 0}]
        with pytest.raises(ConfigError, match="NUL"):
            admin.table("bad\x00name")
        with pytest.raises(WriteError, match="NUL"):
            admin.table(table).write([{"id": 9, "bad\x00column": 1}])
        with pytest.raises(WriteError, match="non-empty string"):
            admin.table(table).write([{"id": 9, 5: 1}])
        with pytest.raises(ConfigError):
            admin.table(["schema", ""])
    finally:
        admin.execute(f"DROP TABLE IF EXISTS {quote(table)}")
        admin.execute(f"DROP TABLE IF EXISTS {sentinel}")


SECRET = "s3cret_zq9"  # lower case: PostgreSQL folds the unquoted name it echoes


def _assert_hidden(error: BaseException) -> None:
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET not in shown
    assert error.__cause__ is None or SECRET not in str(error.__cause__)


@integration
@pytest.mark.timeout(60)
def test_secrets_never_appear_in_errors(dialect: str) -> None:
    require_server("127.0.0.1", 5432 if dialect == "postgresql" else 3306, dialect)
    if dialect == "postgresql":
        # The server names the missing database: the secret would be in its message.
        url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{SECRET}"
        discrete = {"user": "postgres", "password": SECRET, "database": SECRET, "port": 5432}
    else:
        # The server names the user it refused.
        url = f"mysql://{SECRET}:{SECRET}@127.0.0.1:3306/test"
        discrete = {"user": SECRET, "password": SECRET, "database": "test", "port": 3306}
    Database = connector_class(dialect)
    for settings_ in ({"connection_url": url}, discrete):
        db = Database(table="t", **settings_)
        if "connection_url" in settings_:  # (discrete: the same text is also a plain setting)
            assert SECRET not in repr(db)
        with pytest.raises(ConnectionFailedError) as caught:
            db.query("SELECT 1")
        assert MASK in str(caught.value)
        _assert_hidden(caught.value)
        with pytest.raises(WriteError) as write_error:
            db.write([{"id": 1}])
        assert write_error.value.failed == [{"id": 1}]
        _assert_hidden(write_error.value)
        with pytest.raises(ConnectionFailedError) as read_error:
            next(db.read())
        _assert_hidden(read_error.value)
    # A query error that echoes a secret value is scrubbed as well.
    db = Database(connection_url=PG_URL if dialect == "postgresql" else MYSQL_URL, password=SECRET)
    with pytest.raises(QueryError) as query_error:
        db.query(f"SELECT * FROM {SECRET}")
    _assert_hidden(query_error.value)
    db.close()


@integration
def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="dialect"):
        connector_class("oracle")()
    db = connector_class("postgresql")(connection_url="mysql://root@127.0.0.1/test")
    with pytest.raises(ConfigError, match="postgresql://"):
        db.query("SELECT 1")
    my = connector_class("mysql")(connection_url="mysql://root@127.0.0.1/test?ssl_ca=x")
    with pytest.raises(ConfigError, match="ssl_ca"):
        my.query("SELECT 1")


@integration
def test_importing_the_transport_does_not_import_a_driver() -> None:
    code = textwrap.dedent(
        """
        import sys
        from builder.runtime.config import Config
        from builder.runtime.transports.sql import SqlConnector
        class Db(SqlConnector):
            _options = {"dialect": "postgresql"}
        Db(Config({"connection_url": None, "table": "t"})).read()  # lazy: nothing runs yet
        loaded = sorted(m for m in ("psycopg", "pymysql") if m in sys.modules)
        print(",".join(loaded) or "none")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "none"


@integration
def test_errors_are_connector_errors() -> None:
    assert issubclass(QueryError, ConnectorError)
    error = QueryError("x", sqlstate="23505", connector="db", operation="write")
    assert (error.sqlstate, error.code, str(error)) == ("23505", None, "db.write: x")


def test_require_server_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_server("127.0.0.1", port, "nothing")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="nothing is not reachable"):
        require_server("127.0.0.1", port, "nothing")
