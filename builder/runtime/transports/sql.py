"""SQL transport: PostgreSQL through psycopg 3, MySQL and MariaDB through pymysql.

Parameters are written ``:name`` in every statement, whatever the dialect; :func:`translate`
turns them into the driver's placeholders (skipping string literals, quoted identifiers,
comments and PostgreSQL ``::`` casts) and the driver binds the values, so a value is never
spliced into SQL text. Table and column names are quoted as identifiers, never spliced raw.

The main connection runs in autocommit mode; :meth:`SqlConnector.transaction` groups
statements. A streaming read (``read()``, ``iter_query()``, ``table(...).read()``) runs on
a reader connection of its own, kept for the next read, so that rows can be fetched in
chunks through a server-side cursor while the main connection writes; inside
``transaction()`` it runs on the main connection instead, so it sees the transaction's own
changes.

Writes go in batches of ``batch_size``, each batch its own transaction (a savepoint inside
``transaction()``): PostgreSQL loads with ``COPY``, MySQL with multi-row ``INSERT``. When a
batch fails, :class:`~builder.runtime.errors.WriteError` names exactly the records of that
batch and every later one; with ``upsert_keys`` a retry of them writes each record once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, Generic, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from builder.runtime.config import Config, scrub
from builder.runtime.errors import (
    ConfigError,
    ConnectionFailedError,
    ConnectorError,
    ResponseValidationError,
    WriteError,
)
from builder.runtime.operation import Decoder
from builder.runtime.transports.base import DataConnector, records_of

__all__ = ["FETCH_ROWS", "NamedQuery", "QueryError", "SqlConnector", "Table", "translate"]

T = TypeVar("T")

FETCH_ROWS = 2000  # rows per round trip of a server-side cursor
CONNECT_TIMEOUT = 10  # seconds

Row = dict[str, Any]


class QueryError(ConnectorError):
    """The database rejected a statement (or a statement could not be bound).

    ``sqlstate`` is the SQLSTATE code when the driver gives one (psycopg does); ``code`` is
    the server's own error number (MySQL/MariaDB's, e.g. 1062 for a duplicate key).
    """

    def __init__(
        self, message: str, *, sqlstate: str | None = None, code: int | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.sqlstate = sqlstate
        self.code = code


@dataclass(frozen=True, slots=True)
class NamedQuery(Generic[T]):
    """A statement declared in the spec; the generated class exposes it as a typed method.

    ``T`` is what the method returns (``list[Row]``, ``Row | None`` or ``int``).

    ``result`` decodes each row (a dict of column -> value) into the declared model;
    ``None`` means the statement returns no rows and the method returns the row count.
    ``many``: a list of rows, else one row or ``None``.
    """

    name: str
    sql: str
    params: tuple[str, ...] = ()
    result: Decoder | None = None
    many: bool = False


# --------------------------------------------------------------------------------------- #
# :name parameters -> the driver's placeholders
# --------------------------------------------------------------------------------------- #

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_SPACE = frozenset(" \t\n\r\f\v")


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char in "_$"


def _skip_quoted(sql: str, start: int, quote: str, backslash: bool) -> int:
    """The index just past the literal or identifier opened by ``sql[start]``; a doubled
    quote stands for itself, and so does a backslash-escaped character where allowed."""
    i, end = start + 1, len(sql)
    while i < end:
        char = sql[i]
        if backslash and char == "\\":
            i += 2
        elif char == quote:
            if i + 1 < end and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return end  # unterminated: the server reports it


def _skip_block_comment(sql: str, start: int, nested: bool) -> int:
    depth, i, end = 1, start + 2, len(sql)
    while i < end:
        if sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        elif nested and sql.startswith("/*", i):
            depth += 1
            i += 2
        else:
            i += 1
    return end


def _dollar_tag(sql: str, start: int) -> str | None:
    """The ``$tag$`` opening a PostgreSQL dollar-quoted string at ``start``, if any."""
    i, end = start + 1, len(sql)
    while i < end and (sql[i].isalpha() or sql[i] == "_" or (i > start + 1 and sql[i].isdigit())):
        i += 1
    if i < end and sql[i] == "$":
        return sql[start : i + 1]
    return None


@lru_cache(maxsize=1024)
def translate(sql: str, dialect: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with each ``:name`` replaced by the driver's ``%s``, and the names in order.

    A ``:name`` counts only outside string literals, quoted identifiers, comments and
    dollar-quoted strings, not after a word character (``arr[lo:hi]``) and not as part of
    ``::`` (a PostgreSQL cast: ``:id::text`` is parameter ``id`` cast to text). When there
    is at least one parameter, every literal ``%`` is doubled, as the drivers' ``%s`` style
    needs; without parameters the text is returned unchanged (the driver then reads no
    placeholders, and PostgreSQL may run several statements at once).
    """
    mysql = dialect == "mysql"
    pieces: list[str] = []
    names: list[str] = []
    plain_from = 0  # start of the text not yet copied into ``pieces``
    i, end = 0, len(sql)
    while i < end:
        char = sql[i]
        if char == "'":
            # PostgreSQL reads backslash escapes only in E'...' strings; MySQL in all.
            escaped = mysql or (
                i > 0 and sql[i - 1] in "eE" and (i < 2 or not _is_word_char(sql[i - 2]))
            )
            i = _skip_quoted(sql, i, "'", escaped)
        elif char == '"':
            i = _skip_quoted(sql, i, '"', mysql)  # MySQL: a string; PostgreSQL: an identifier
        elif char == "`" and mysql:
            i = _skip_quoted(sql, i, "`", False)
        elif (
            char == "-"
            and sql.startswith("--", i)
            and (
                not mysql or i + 2 >= end or sql[i + 2] in _SPACE  # MySQL needs "-- "
            )
        ):
            newline = sql.find("\n", i)
            i = end if newline < 0 else newline + 1
        elif char == "#" and mysql:
            newline = sql.find("\n", i)
            i = end if newline < 0 else newline + 1
        elif char == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i, nested=not mysql)
        elif char == "$" and not mysql and (i == 0 or not _is_word_char(sql[i - 1])):
            tag = _dollar_tag(sql, i)
            if tag is None:
                i += 1
            else:
                close = sql.find(tag, i + len(tag))
                i = end if close < 0 else close + len(tag)
        elif char == ":":
            if i + 1 < end and sql[i + 1] == ":":
                i += 2  # a cast
            elif (
                i + 1 < end
                and sql[i + 1] in _NAME_START
                and (i == 0 or not _is_word_char(sql[i - 1]))
            ):
                name_end = i + 2
                while name_end < end and sql[name_end] in _NAME_CHARS:
                    name_end += 1
                pieces.append(sql[plain_from:i].replace("%", "%%"))
                pieces.append("%s")
                names.append(sql[i + 1 : name_end])
                plain_from = i = name_end
            else:
                i += 1
        else:
            i += 1
    if not names:
        return sql, ()
    pieces.append(sql[plain_from:].replace("%", "%%"))
    return "".join(pieces), tuple(names)


# --------------------------------------------------------------------------------------- #
# Dialects: everything that differs between the drivers
# --------------------------------------------------------------------------------------- #


def _check_identifier(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"an identifier must be a non-empty string, not {name!r}")
    if "\x00" in name:
        raise ConfigError("an identifier cannot contain a NUL character")
    return name


def _name_parts(name: str | Sequence[str]) -> tuple[str, ...]:
    """``"schema.table"`` -> ``("schema", "table")``; a tuple names parts that hold dots."""
    parts = tuple(name.split(".")) if isinstance(name, str) else tuple(name)
    if not parts:
        raise ConfigError("a table name is needed")
    return tuple(_check_identifier(part) for part in parts)


@dataclass(frozen=True, slots=True)
class _Target:
    """Where to connect: a URL's parts or the discrete settings, and the driver's options."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    database: str | None
    url: str | None = None  # PostgreSQL: handed to libpq as is
    options: tuple[tuple[str, str], ...] = ()


class _Dialect:
    name: str
    schemes: tuple[str, ...]

    def connect(self, target: _Target, *, autocommit: bool) -> Any:
        raise NotImplementedError

    def is_driver_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def classify(self, exc: BaseException) -> tuple[type[ConnectorError], str | None, int | None]:
        """The error kind for a driver exception, with its SQLSTATE and server code."""
        raise NotImplementedError

    def quote(self, parts: Sequence[str]) -> str:
        raise NotImplementedError

    def param(self, value: Any) -> Any:
        return value

    def fetch_all(self, connection: Any, text: str, args: list[Any] | None) -> list[Row]:
        raise NotImplementedError

    def execute(self, connection: Any, text: str, args: list[Any] | None) -> int:
        raise NotImplementedError

    def stream(
        self, connection: Any, text: str, args: list[Any] | None, cursor_name: str, owned: bool
    ) -> Iterator[list[Row]]:
        raise NotImplementedError

    def release_reader(self, connection: Any, finished: bool) -> bool:
        """Make a reader connection ready for the next read; False: close it instead."""
        raise NotImplementedError

    def transaction(self, connection: Any, nested: bool) -> Any:
        raise NotImplementedError

    def write_batch(
        self,
        connection: Any,
        table: tuple[str, ...],
        columns: list[str],
        rows: Iterable[tuple[Any, ...]],
        keys: tuple[str, ...],
    ) -> None:
        raise NotImplementedError


class _Postgres(_Dialect):
    name = "postgresql"
    schemes = ("postgresql", "postgres")

    def connect(self, target: _Target, *, autocommit: bool) -> Any:
        import psycopg
        from psycopg.types.json import JsonbDumper

        if target.url is not None:
            connection = psycopg.connect(
                target.url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT
            )
        else:
            connection = psycopg.connect(
                host=target.host,
                port=target.port,
                user=target.user,
                password=target.password,
                dbname=target.database,
                autocommit=autocommit,
                connect_timeout=CONNECT_TIMEOUT,
            )
        # A dict is a JSON document (psycopg refuses to guess otherwise).
        connection.adapters.register_dumper(dict, JsonbDumper)
        return connection

    def is_driver_error(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.Error | OSError)

    def classify(self, exc: BaseException) -> tuple[type[ConnectorError], str | None, int | None]:
        import psycopg

        sqlstate: str | None = getattr(exc, "sqlstate", None)
        if isinstance(exc, OSError):
            return ConnectionFailedError, None, None
        if sqlstate is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return ConnectionFailedError, None, None  # lost, refused or closed: no SQLSTATE
        # 08: connection exception; 57P01-03: the server is shutting down or starting.
        if sqlstate is not None and (sqlstate[:2] == "08" or sqlstate in _PG_SHUTDOWN):
            return ConnectionFailedError, sqlstate, None
        return QueryError, sqlstate, None

    def quote(self, parts: Sequence[str]) -> str:
        from psycopg import sql

        return sql.Identifier(*(_check_identifier(p) for p in parts)).as_string(None)

    def fetch_all(self, connection: Any, text: str, args: list[Any] | None) -> list[Row]:
        from psycopg.rows import dict_row

        with connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(text, args)
            if cursor.description is None:
                return []
            return cursor.fetchall()  # type: ignore[no-any-return]

    def execute(self, connection: Any, text: str, args: list[Any] | None) -> int:
        with connection.cursor() as cursor:
            cursor.execute(text, args)
            return max(int(cursor.rowcount), 0)

    def stream(
        self, connection: Any, text: str, args: list[Any] | None, cursor_name: str, owned: bool
    ) -> Iterator[list[Row]]:
        from psycopg.rows import dict_row

        # A named cursor is a server-side one (DECLARE ... FETCH n): the server computes
        # only the rows fetched so far. It lives in a transaction: the reader connection
        # is not in autocommit mode, or the caller is inside transaction().
        cursor = connection.cursor(name=cursor_name, row_factory=dict_row)
        try:
            cursor.execute(text, args)
            while rows := cursor.fetchmany(FETCH_ROWS):
                yield rows
        except BaseException:
            _quietly(cursor.close)
            raise
        cursor.close()

    def release_reader(self, connection: Any, finished: bool) -> bool:
        if connection.closed or connection.broken:
            return False
        if finished:
            connection.commit()
        else:
            connection.rollback()
        return True

    def transaction(self, connection: Any, nested: bool) -> Any:
        return connection.transaction()  # psycopg makes a nested one a savepoint

    def write_batch(
        self,
        connection: Any,
        table: tuple[str, ...],
        columns: list[str],
        rows: Iterable[tuple[Any, ...]],
        keys: tuple[str, ...],
    ) -> None:
        from psycopg import sql

        target = sql.Identifier(*table)
        column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
        with connection.cursor() as cursor:
            if not keys:
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(target, column_list)
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
                return
            # COPY cannot upsert: load a staging table, then INSERT ... ON CONFLICT from it.
            # The staging table has the target's column types and no constraints.
            staging = sql.Identifier("_connector_upsert")
            cursor.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                .format(staging, column_list, target)
            )  # fmt: skip
            with cursor.copy(sql.SQL("COPY {} FROM STDIN").format(staging)) as copy:
                for row in _last_per_key(rows, [columns.index(k) for k in keys]):
                    copy.write_row(row)
            updates = [c for c in columns if c not in keys]
            action = (
                sql.SQL("DO UPDATE SET ")
                + sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates
                )
                if updates
                else sql.SQL("DO NOTHING")
            )
            cursor.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                    target,
                    column_list,
                    column_list,
                    staging,
                    sql.SQL(", ").join(map(sql.Identifier, keys)),
                    action,
                )
            )
            cursor.execute(sql.SQL("DROP TABLE {}").format(staging))


_PG_SHUTDOWN = frozenset({"57P01", "57P02", "57P03"})

_MYSQL_URL_OPTIONS = frozenset({"charset", "unix_socket"})

# MySQL client and server error numbers that mean the connection is gone or unusable.
_MYSQL_CONNECTION_ERRORS = frozenset(
    {1040, 1053, 1129, 1130, 1927, 2002, 2003, 2005, 2006, 2013, 2014, 2055}
)


def _pymysql() -> Any:
    """The pymysql package (imported on first use; it ships no type hints)."""
    import pymysql.cursors  # type: ignore[import-untyped, unused-ignore]

    return pymysql


class _MySQL(_Dialect):
    name = "mysql"
    schemes = ("mysql", "mariadb")

    def connect(self, target: _Target, *, autocommit: bool) -> Any:
        pymysql = _pymysql()

        options = dict(target.options)
        unknown = sorted(set(options) - _MYSQL_URL_OPTIONS)
        if unknown:
            raise ConfigError(
                "connection_url options not supported: "
                + ", ".join(unknown)
                + f" (supported: {', '.join(sorted(_MYSQL_URL_OPTIONS))})"
            )
        return pymysql.connect(
            host=target.host or "127.0.0.1",
            port=target.port or 3306,
            user=target.user,
            password=target.password or "",
            database=target.database,
            charset=options.pop("charset", "utf8mb4"),
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT,
            **options,
        )

    def is_driver_error(self, exc: BaseException) -> bool:
        pymysql = _pymysql()

        return isinstance(exc, pymysql.err.Error | OSError)

    def classify(self, exc: BaseException) -> tuple[type[ConnectorError], str | None, int | None]:
        pymysql = _pymysql()

        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if isinstance(exc, OSError | pymysql.err.InterfaceError) or (
            code in _MYSQL_CONNECTION_ERRORS
        ):
            return ConnectionFailedError, None, code
        return QueryError, None, code

    def quote(self, parts: Sequence[str]) -> str:
        return ".".join("`" + _check_identifier(p).replace("`", "``") + "`" for p in parts)

    def param(self, value: Any) -> Any:
        # pymysql would write a dict as a list of its values: send JSON text instead.
        return json.dumps(value, default=str) if isinstance(value, dict) else value

    def fetch_all(self, connection: Any, text: str, args: list[Any] | None) -> list[Row]:
        pymysql = _pymysql()

        with connection.cursor(pymysql.cursors.DictCursor) as cursor:
            cursor.execute(text, args)
            return list(cursor.fetchall()) if cursor.description is not None else []

    def execute(self, connection: Any, text: str, args: list[Any] | None) -> int:
        with connection.cursor() as cursor:
            return max(int(cursor.execute(text, args)), 0)

    def stream(
        self, connection: Any, text: str, args: list[Any] | None, cursor_name: str, owned: bool
    ) -> Iterator[list[Row]]:
        pymysql = _pymysql()

        # An unbuffered cursor reads rows off the socket as they are asked for.
        cursor = connection.cursor(pymysql.cursors.SSDictCursor)
        try:
            cursor.execute(text, args)
            while rows := cursor.fetchmany(FETCH_ROWS):
                yield rows
        except BaseException:
            # Closing the cursor reads and drops the rest of the result: needed on a shared
            # connection, wasted on our own reader, which is closed instead.
            if owned:
                _abandon(cursor)
            else:
                _quietly(cursor.close)
            raise
        cursor.close()

    def release_reader(self, connection: Any, finished: bool) -> bool:
        return finished and bool(connection.open)

    @contextmanager
    def transaction(self, connection: Any, nested: bool) -> Iterator[None]:
        if nested:
            name = f"connector_{next(_savepoints)}"
            connection.query(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                _quietly(lambda: connection.query(f"ROLLBACK TO SAVEPOINT {name}"))
                raise
            connection.query(f"RELEASE SAVEPOINT {name}")
            return
        connection.begin()
        try:
            yield
        except BaseException:
            _quietly(connection.rollback)
            raise
        connection.commit()

    def write_batch(
        self,
        connection: Any,
        table: tuple[str, ...],
        columns: list[str],
        rows: Iterable[tuple[Any, ...]],
        keys: tuple[str, ...],
    ) -> None:
        # pymysql formats the whole statement with %, so a % in a name is doubled.
        def name(column: str) -> str:
            return self.quote((column,)).replace("%", "%%")

        names = [name(c) for c in columns]
        statement = (
            f"INSERT INTO {self.quote(table).replace('%', '%%')} ({', '.join(names)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})"
        )
        if keys:
            updates = [n for c, n in zip(columns, names, strict=True) if c not in keys]
            assignments = [f"{n} = VALUES({n})" for n in updates] or [
                f"{name(keys[0])} = {name(keys[0])}"
            ]
            statement += " ON DUPLICATE KEY UPDATE " + ", ".join(assignments)
        rows = list(rows)
        if _has_json(rows):  # a JSON column takes the document as text
            rows = [tuple(_json_text(v) for v in row) for row in rows]
        with connection.cursor() as cursor:
            cursor.executemany(statement, rows)  # one multi-row INSERT per ~1 MB


def _abandon(cursor: Any) -> None:
    """Let an unbuffered cursor go without reading the rest of its result.

    pymysql's cursor and result read every remaining row when freed; our reader connection
    is closed instead, which ends the query at once.
    """
    result = getattr(cursor, "_result", None)
    if result is not None:
        result.unbuffered_active = False
    cursor.connection = None


_savepoints = itertools.count()

_DIALECTS: dict[str, type[_Dialect]] = {"postgresql": _Postgres, "mysql": _MySQL}


def _has_json(rows: list[tuple[Any, ...]]) -> bool:
    return any(isinstance(v, dict | list) for row in rows for v in row)


def _json_text(value: Any) -> Any:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else value


def _quietly(action: Callable[[], Any]) -> None:
    """Run a clean-up step whose failure must not hide the error being raised."""
    try:
        action()
    except Exception:  # the connection is likely broken already; the caller reports why
        pass


def _last_per_key(
    rows: Iterable[tuple[Any, ...]], key_indexes: list[int]
) -> Iterable[tuple[Any, ...]]:
    """Rows with duplicate keys reduced to the last (ON CONFLICT cannot touch a row twice)."""
    key = itemgetter(*key_indexes)
    last: dict[Any, tuple[Any, ...]] = {}
    for row in rows:
        last[key(row)] = row
    return last.values()


def _as_dict(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    dump = getattr(record, "model_dump", None)
    if dump is None:
        raise TypeError(f"a record must be a dict or a model, not {type(record).__name__}")
    return dump(by_alias=True)  # type: ignore[no-any-return]


def _uniform_rows(batch: list[Any]) -> tuple[list[str], Iterator[tuple[Any, ...]]] | None:
    """The fast path: every record a mapping with as many fields as the first.

    The rows are produced while they are written (a list of tuples held for the whole
    batch would cost the garbage collector more than the COPY itself). A record whose
    field names differ from the first's, or that is not a mapping, raises KeyError or
    TypeError on the way; the batch is then written again by :func:`_general_rows`.
    None when the fast path plainly does not apply.
    """
    first = batch[0]
    if not isinstance(first, Mapping) or not first:
        return None
    try:
        if set(map(len, batch)) != {len(first)}:
            return None
    except TypeError:  # a model among the records
        return None
    columns = list(first)
    if len(columns) == 1:
        return columns, zip(map(itemgetter(columns[0]), batch), strict=True)
    return columns, map(itemgetter(*columns), batch)


def _general_rows(batch: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Columns: every field seen, in first-seen order; a record without one writes NULL."""
    records = [_as_dict(r) for r in batch]
    columns = list(dict.fromkeys(name for r in records for name in r))
    if not columns:
        raise ValueError("the records have no fields to write")
    return columns, [tuple(r.get(c) for c in columns) for r in records]


# --------------------------------------------------------------------------------------- #
# The connector
# --------------------------------------------------------------------------------------- #


class SqlConnector(DataConnector):
    """A PostgreSQL or MySQL/MariaDB database as a source, a sink and a query runner.

    The generated subclass sets ``_options`` (``dialect``, ``upsert_keys``, ``batch_size``)
    and, when the spec names a record model, ``_record``; its named queries call
    :meth:`_named_query`.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dialect = self._options.get("dialect")
        if dialect not in _DIALECTS:
            raise ConfigError(
                f"sql dialect must be one of {sorted(_DIALECTS)}, not {dialect!r}",
                connector=self._name,
            )
        self._dialect = _DIALECTS[str(dialect)]()
        self._upsert_keys = tuple(str(k) for k in self._options.get("upsert_keys") or ())
        self._batch_size = int(self._options.get("batch_size") or 1000)
        self._depth = 0  # open transaction() blocks
        self._idle_reader: Any = None
        self._cursor_ids = itertools.count()

    @property
    def dialect(self) -> str:
        return self._dialect.name

    # -- connections ------------------------------------------------------------------

    def _target(self) -> _Target:
        url = self._setting("connection_url")
        if not url:
            port = self._setting("port")
            return _Target(
                host=self._setting("host"),
                port=int(port) if port is not None else None,
                user=self._setting("user"),
                password=self._setting("password"),
                database=self._setting("database"),
            )
        scheme, _, rest = str(url).partition("://")
        scheme = scheme.split("+", 1)[0].lower()  # postgresql+psycopg://, mysql+pymysql://
        if not rest or scheme not in self._dialect.schemes:
            raise ConfigError(
                f"connection_url must start with {self._dialect.schemes[0]}:// "
                f"for dialect {self._dialect.name}",
                connector=self._name,
            )
        if self._dialect.name == "postgresql":  # libpq reads it all (several hosts, options)
            return _Target(None, None, None, None, None, url=f"postgresql://{rest}")
        try:
            parts = urlsplit(f"{self._dialect.schemes[0]}://{rest}")
            port = parts.port
        except ValueError:
            raise ConfigError("connection_url is not a valid URL", connector=self._name) from None
        return _Target(
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            database=unquote(parts.path.lstrip("/")) or None,
            options=tuple(parse_qsl(parts.query)),
        )

    def _connect(self) -> Any:
        return self._dialect.connect(self._target(), autocommit=True)

    def _take_reader(self) -> Any:
        if self._closed:
            raise ConnectorError("the connector is closed", connector=self._name)
        reader, self._idle_reader = self._idle_reader, None
        if reader is not None:
            return reader
        try:
            # PostgreSQL: not autocommit, so that a server-side cursor has its transaction.
            return self._dialect.connect(self._target(), autocommit=self.dialect == "mysql")
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._error(exc, ConnectionFailedError, operation="read") from None

    def _give_back(self, reader: Any, finished: bool) -> None:
        keep = False
        if not self._closed:
            try:
                keep = self._dialect.release_reader(reader, finished)
            except Exception:  # a broken reader is simply replaced next time
                keep = False
        if keep and self._idle_reader is None:
            self._idle_reader = reader
        else:
            _quietly(reader.close)

    def _drop(self, connection: Any) -> None:
        """Forget a connection found broken, so that the next call opens a new one."""
        if connection is not None and connection is self._connection:
            self._connection = None
            _quietly(connection.close)

    def close(self) -> None:
        reader, self._idle_reader = self._idle_reader, None
        if reader is not None:
            _quietly(reader.close)
        super().close()

    # -- errors -----------------------------------------------------------------------

    def _driver_error(self, exc: BaseException, operation: str | None) -> ConnectorError:
        kind, sqlstate, code = self._dialect.classify(exc)
        text = f"{type(exc).__name__}: {exc}".rstrip()
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        if detail:
            text += f" ({detail})"
        text = scrub(text, self._secrets)
        if kind is QueryError:
            return QueryError(
                text, sqlstate=sqlstate, code=code, connector=self._name, operation=operation
            )
        return kind(text, connector=self._name, operation=operation)

    @contextmanager
    def _guard(
        self, operation: str, connection: Any = None, *, count: bool = True
    ) -> Iterator[None]:
        """Turn a driver exception raised inside into a ConnectorError without secrets;
        a connection found broken is dropped, so the next call opens a new one."""
        try:
            yield
        except ConnectorError:
            raise
        except Exception as exc:
            if not self._dialect.is_driver_error(exc):
                raise
            error = self._driver_error(exc, operation)
            if isinstance(error, ConnectionFailedError):
                self._drop(connection)
            if count:
                self.metrics.errors += 1
            raise error from None

    # -- statements -------------------------------------------------------------------

    def _bind(
        self, sql: str, params: Mapping[str, Any] | None, operation: str
    ) -> tuple[str, list[Any] | None]:
        """The driver's text for ``sql`` and its values in placeholder order."""
        text, names = translate(sql, self._dialect.name)
        if not names:
            return text, None
        values = params or {}
        missing = [name for name in dict.fromkeys(names) if name not in values]
        if missing:
            raise QueryError(
                "no value for SQL parameter(s): " + ", ".join(":" + n for n in missing),
                connector=self._name,
                operation=operation,
            )
        param = self._dialect.param
        return text, [param(values[name]) for name in names]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a statement and return its rows as dicts (``[]`` when it returns none)."""
        text, args = self._bind(sql, params, "query")
        connection = self.connection
        with self._guard("query", connection):
            return self._dialect.fetch_all(connection, text, args)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        text, args = self._bind(sql, params, "execute")
        connection = self.connection
        with self._guard("execute", connection):
            return self._dialect.execute(connection, text, args)

    def iter_query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[Row]:
        """The rows of a SELECT, fetched lazily in chunks through a server-side cursor."""
        text, args = self._bind(sql, params, "iter_query")
        return self._stream(text, args, "iter_query")

    def _stream(
        self, text: str | Callable[[], str], args: list[Any] | None, operation: str
    ) -> Iterator[Row]:
        """Rows of a SELECT from a server-side cursor; ``text`` may be built on first use."""
        if callable(text):
            text = text()
        shared = self._depth > 0
        connection = self.connection if shared else self._take_reader()
        cursor_name = f"connector_cursor_{next(self._cursor_ids)}"
        finished = False
        try:
            with self._guard(operation, connection):
                for rows in self._dialect.stream(
                    connection, text, args, cursor_name, owned=not shared
                ):
                    yield from rows
            finished = True
        finally:
            if not shared:
                self._give_back(connection, finished)

    def _named_query(self, query: NamedQuery[T], values: Mapping[str, Any]) -> T:
        """Run a spec's named query: a list of models, one model or None, or a row count
        (which of them is fixed by the query's declaration, and so is ``T``)."""
        return cast(T, self._run_named(query, values))

    def _run_named(self, query: NamedQuery[Any], values: Mapping[str, Any]) -> Any:
        text, args = self._bind(query.sql, values, query.name)
        connection = self.connection
        with self._guard(query.name, connection):
            if query.result is None:
                return self._dialect.execute(connection, text, args)
            rows = self._dialect.fetch_all(connection, text, args)
        decode = self._decode_with(query.result, query.name)
        if query.many:
            return [decode(row) for row in rows]
        if len(rows) > 1:
            raise QueryError(
                f"returned {len(rows)} rows where one at most was expected",
                connector=self._name,
                operation=query.name,
            )
        return decode(rows[0]) if rows else None

    def _decode_with(self, decoder: Decoder, operation: str) -> Callable[[Row], Any]:
        def decode(row: Row) -> Any:
            try:
                return decoder.from_python(row)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise ResponseValidationError(
                    f"a row does not match the declared model: {exc}",
                    connector=self._name,
                    operation=operation,
                ) from None

        return decode

    @contextmanager
    def transaction(self) -> Iterator[SqlConnector]:
        """Run the statements of the block in one transaction (nested: a savepoint).

        Commits when the block ends, rolls back when it raises. Streaming reads inside
        the block use the transaction's connection.
        """
        connection = self.connection
        self._depth += 1
        try:
            with self._guard("transaction", connection):
                with self._dialect.transaction(connection, nested=self._depth > 1):
                    yield self
        finally:
            self._depth -= 1

    # -- tables -----------------------------------------------------------------------

    def table(self, name: str | Sequence[str], columns: Sequence[str] | None = None) -> Table:
        """A view of one table (``"schema.table"``, or a tuple of parts that hold dots)."""
        return Table(self, name, columns)

    def _select(self, table: tuple[str, ...], columns: Sequence[str] | None) -> Callable[[], str]:
        """The SELECT of a table view, built when the read starts (quoting may import the
        driver: a read() that is never iterated imports nothing)."""

        def build() -> str:
            quote = self._dialect.quote
            listed = ", ".join(quote((c,)) for c in columns) if columns else "*"
            return f"SELECT {listed} FROM {quote(table)}"

        return build

    # -- roles ------------------------------------------------------------------------

    def read(self, **params: Any) -> Iterator[Any]:
        """The rows of the ``query`` setting (bound to ``params``), else of ``table``.

        Lazy: nothing runs until the first row is asked for, and rows arrive in chunks of
        :data:`FETCH_ROWS` from a server-side cursor. Each row is a dict, or the record
        model when the spec declares one.
        """
        query = self._setting("query")
        if query:
            text: str | Callable[[], str]
            text, args = self._bind(str(query), params, "read")
        else:
            if params:
                raise ConfigError(
                    "read() takes parameters only with the `query` setting", connector=self._name
                )
            (table,) = self._require("table")
            text, args = self._select(_name_parts(table), None), None
        rows: Iterator[Any] = self._stream(text, args, "read")
        if self._record is not None:
            rows = map(self._decode_with(self._record, "read"), rows)
        return self._counted(rows)

    def write(self, records: Iterable[Any]) -> int:
        """Write records (dicts or models) into the ``table`` setting; see :meth:`_write`."""
        (table,) = self._require("table")
        return self._write(_name_parts(table), records_of(records))

    def _write_batch(
        self, table: tuple[str, ...], columns: list[str], rows: Iterable[tuple[Any, ...]]
    ) -> None:
        """Write one batch in one transaction (a savepoint inside ``transaction()``)."""
        keys = self._upsert_keys
        for column in columns:  # field names come from the data: check them as names
            _check_identifier(column)
        absent = [k for k in keys if k not in columns]
        if absent:
            raise ValueError("the records lack the upsert key(s): " + ", ".join(absent))
        connection = self.connection
        with self._guard("write", connection, count=False):
            with self._dialect.transaction(connection, nested=self._depth > 0):
                self._dialect.write_batch(connection, table, columns, rows, keys)

    def _write(self, table: tuple[str, ...], pending: list[Any]) -> int:
        """Write ``pending`` in batches, each batch one transaction.

        Raises WriteError when a batch fails: ``written`` counts the records of the batches
        committed before it, ``failed`` lists the records of that batch and every later one.
        """
        metrics = self.metrics
        size = self._batch_size
        written = 0
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            try:
                uniform = _uniform_rows(batch)
                try:
                    self._write_batch(table, *(uniform or _general_rows(batch)))
                except (KeyError, TypeError):
                    if uniform is None:
                        raise
                    # Other field names, or not a mapping: that batch was rolled back.
                    self._write_batch(table, *_general_rows(batch))
            except Exception as exc:
                metrics.errors += 1
                if isinstance(exc, ConnectorError):
                    reason = exc.message
                else:
                    reason = f"{type(exc).__name__}: {exc}"
                raise WriteError(
                    f"wrote {written} of {len(pending)} records; the other "
                    f"{len(pending) - start} were not written: {scrub(reason, self._secrets)}",
                    written=written,
                    failed=pending[start:],
                    connector=self._name,
                    operation="write",
                ) from exc
            written += len(batch)
            metrics.records_written += len(batch)
            metrics.batches += 1
        return written


class Table:
    """One table of a :class:`SqlConnector`: ``read()`` its rows, ``write()`` records.

    ``columns`` limits what ``read()`` selects; ``write()`` writes each record's fields.
    Rows are dicts (the connector's record model types its own ``table`` setting only).
    """

    __slots__ = ("_connector", "name", "columns")

    def __init__(
        self,
        connector: SqlConnector,
        name: str | Sequence[str],
        columns: Sequence[str] | None = None,
    ) -> None:
        self._connector = connector
        self.name = _name_parts(name)
        self.columns = tuple(_check_identifier(c) for c in columns) if columns else None

    def read(self) -> Iterator[Row]:
        """Every row, lazily, through a server-side cursor."""
        connector = self._connector
        text = connector._select(self.name, self.columns)
        return connector._counted(connector._stream(text, None, "table.read"))

    def read_batch(self, batch_size: int = 100) -> Iterator[list[Row]]:
        """The rows in lists of at most ``batch_size``."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        rows = self.read()
        while batch := list(itertools.islice(rows, batch_size)):
            self._connector.metrics.batches += 1
            yield batch

    def write(self, records: Iterable[Any]) -> int:
        """Write records into this table, in batches; see :meth:`SqlConnector._write`."""
        return self._connector._write(self.name, records_of(records))

    def __repr__(self) -> str:
        return f"Table({'.'.join(self.name)!r})"
