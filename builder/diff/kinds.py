"""Comparing what data kinds add to a spec: the kind block (``sql:``, ``redis_stream:``, ...),
the record model, and kind sql's named queries with their parameters and rows.

Settings (a kind's standard settings merged with ``config``) are compared with every
other setting, in :mod:`builder.diff.python_api`; the record's and the rows' schemas with
every other schema, by the direction they travel (:mod:`builder.diff.usage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from builder.diff import python_api
from builder.diff.collector import ChangeLog, SpecPath
from builder.diff.operations import Input, compare_input
from builder.diff.rules import Direction
from builder.diff.values import ValueComparer
from builder.ir import Connector, QueryIR
from builder.spec.models import Query, Spec, TypeFields

# Kind-block options by what a change of them does; any other option is kind-option-changed.
_TUNING = frozenset(
    {"batch_size", "maxlen", "approximate", "multipart_threshold", "part_size", "max_batch"}
)
_OPTION_RULES = {
    "dialect": "kind-dialect-changed",
    "upsert_keys": "upsert-keys-changed",
    "format": "payload-format-changed",
}

# SQL split into what whitespace cannot change: string literals and quoted identifiers,
# comments, words, and single other characters. Whitespace only separates them.
_STRING = {
    # PostgreSQL (standard_conforming_strings): a backslash is an ordinary character.
    "postgresql": r"'(?:[^']|'')*'",
    # MySQL: a backslash escapes the next character.
    "mysql": r"'(?:[^'\\]|\\.|'')*'",
}
_OTHER_TOKENS = (
    r'|"(?:[^"]|"")*"|`[^`]*`|\$(\w*)\$.*?\$\1\$'  # quoted identifiers, dollar quoting
    r"|--[^\n]*|/\*.*?\*/"  # comments
    r"|::?\w+|\w+|\S"  # a bound parameter (:name) or a cast (::type) is one token
)
_SQL_TOKENS = {
    dialect: re.compile(string + _OTHER_TOKENS, re.S) for dialect, string in _STRING.items()
}


class KindComparer:
    def __init__(
        self,
        log: ChangeLog,
        values: ValueComparer,
        old: Spec,
        new: Spec,
        old_ir: Connector,
        new_ir: Connector,
    ) -> None:
        self.log = log
        self.values = values
        self.old, self.new = old, new
        self.old_ir, self.new_ir = old_ir, new_ir

    def compare(self) -> None:
        if self.old.kind == self.new.kind != "http":  # a change of kind is reported as such
            self.options()
        self.record()
        self.queries()

    # -- the kind block -------------------------------------------------------------------

    def options(self) -> None:
        """The kind block's values, defaults filled in: leaving out a block or an option
        that has a default is the same as writing it."""
        old_options, new_options = self.old.kind_options(), self.new.kind_options()
        if old_options is None or new_options is None:
            return  # an invalid spec (sql without its block) does not load
        a, b = old_options.model_dump(mode="json"), new_options.model_dump(mode="json")
        for key in sorted(a.keys() | b.keys()):
            before, after = a.get(key), b.get(key)
            if key == "upsert_keys":
                # A set of columns: ON CONFLICT (a, b) matches the constraint on (b, a).
                before, after = sorted(before or []), sorted(after or [])
            if before == after:
                continue
            rule = _OPTION_RULES.get(key, "tuning-changed" if key in _TUNING else None)
            self.log.add(
                rule or "kind-option-changed",
                f"{key} {_show(before)} is now {_show(after)}",
                old=self._option_path(self.old, key),
                new=self._option_path(self.new, key),
            )

    @staticmethod
    def _option_path(spec: Spec, key: str) -> SpecPath:
        """The option, or where its default comes from: the kind, when there is no block."""
        return (spec.kind, key) if getattr(spec, spec.kind) is not None else ("kind",)

    # -- the record -----------------------------------------------------------------------

    def record(self) -> None:
        """The model of each record. The same schema on both sides is compared with the
        other schemas (as travelling both ways); another schema is compared here,
        structurally, so a renamed record schema changes nothing on the wire."""
        a, b = self.old.record, self.new.record
        if a == b:
            return
        at: SpecPath = ("record",)
        if a is None:
            message = f"records are now `{b}` models, were plain values"
        elif b is None:
            message = f"records are now plain values, were `{a}` models"
        else:
            message = f"records are now `{b}` models, were `{a}`"
        self.log.add(
            "record-changed",
            message,
            old=at if a is not None else None,
            new=at if b is not None else None,
        )
        if a is not None and b is not None:
            self.values.compare(_ref(a), _ref(b), at, at, Direction.BOTH)

    # -- named queries --------------------------------------------------------------------

    def queries(self) -> None:
        old_queries, new_queries = self.old.queries, self.new.queries
        if not old_queries and not new_queries:
            return
        gone = [name for name in old_queries if name not in new_queries]
        fresh = [name for name in new_queries if name not in old_queries]
        renamed = self._renames(gone, fresh)
        for name in gone:
            if name not in renamed:
                self.log.add("query-removed", f"query `{name}` removed", old=_query(name))
        fresh_names = set(renamed.values())
        for name in fresh:
            if name not in fresh_names:
                self.log.add("query-added", f"query `{name}` added", new=_query(name))
        pairs = [(name, name) for name in old_queries if name in new_queries]
        for old_name, new_name in pairs + sorted(renamed.items()):
            self.query(old_name, new_name)

    def _renames(self, gone: list[str], fresh: list[str]) -> dict[str, str]:
        """Queries that changed only their name: the one left over on each side with the
        same SQL (and the same parameter names, which the SQL binds)."""

        def by_sql(names: list[str], spec: Spec) -> dict[tuple[str, ...], list[str]]:
            found: dict[tuple[str, ...], list[str]] = {}
            for name in names:
                code, _ = sql_tokens(spec.queries[name].sql, _dialect(spec))
                found.setdefault(tuple(code), []).append(name)
            return found

        old_at, new_at = by_sql(gone, self.old), by_sql(fresh, self.new)
        renamed = {}
        for sql, olds in old_at.items():
            news = new_at.get(sql, [])
            if len(olds) == 1 and len(news) == 1:
                renamed[olds[0]] = news[0]
        return renamed

    def query(self, old_name: str, new_name: str) -> None:
        old, new = self.old.queries[old_name], self.new.queries[new_name]
        op, np = _query(old_name), _query(new_name)
        if old_name != new_name:
            self.log.add(
                "query-renamed",
                f"method `{old_name}` is now `{new_name}` (the same SQL)",
                old=op,
                new=np,
            )
        for key, a, b in (
            ("summary", old.summary, new.summary),
            ("description", old.description, new.description),
            ("example", old.example, new.example),
        ):
            if a != b:
                self.log.add(
                    "docs-changed", f"`{new_name}`: {key} changed", old=op + (key,), new=np + (key,)
                )
        self.sql(old, new, op, np, new_name)
        old_ir = _query_ir(self.old_ir, old_name)
        new_ir = _query_ir(self.new_ir, new_name)
        self.arguments(old, new, old_ir, new_ir, op, np)
        self.result(old, new, old_ir, new_ir, op, np)

    def sql(self, old: Query, new: Query, op: SpecPath, np: SpecPath, name: str) -> None:
        if old.sql == new.sql:
            return
        old_code, old_comments = sql_tokens(old.sql, _dialect(self.old))
        new_code, new_comments = sql_tokens(new.sql, _dialect(self.new))
        at: SpecPath = ("sql",)
        if old_code != new_code:
            self.log.add(
                "query-sql-changed",
                f"`{name}` runs another statement: {_sql_change(old_code, new_code)}",
                old=op + at,
                new=np + at,
            )
        elif old_comments != new_comments:
            self.log.add(
                "docs-changed", f"`{name}`: SQL comments changed", old=op + at, new=np + at
            )
        # Otherwise only whitespace changed: the same statement.

    def arguments(
        self,
        old: Query,
        new: Query,
        old_ir: QueryIR,
        new_ir: QueryIR,
        op: SpecPath,
        np: SpecPath,
    ) -> None:
        """The method's keyword arguments: bound by name (``:name``), so a renamed one is a
        removed one and an added one (and the SQL changed with them)."""
        a = {i.argument.name: i for i in _inputs(old, old_ir, op)}
        b = {i.argument.name: i for i in _inputs(new, new_ir, np)}
        name = new_ir.name
        for arg_name, gone in a.items():
            if arg_name not in b:
                self.log.add(
                    "parameter-removed",
                    f"`{old_ir.name}({arg_name}=)` (bound as :{arg_name}) removed",
                    old=gone.path,
                )
        for arg_name, fresh in b.items():
            if arg_name in a:
                continue
            state = "required" if fresh.argument.required else "optional"
            self.log.add(
                "parameter-added-required" if fresh.argument.required else "parameter-added",
                f"`{name}` has a new {state} argument `{arg_name}` (bound as :{arg_name})",
                new=fresh.path,
            )
        for arg_name, before in a.items():
            after = b.get(arg_name)
            if after is not None:
                compare_input(self.log, self.values, name, before, after)

    def result(
        self,
        old: Query,
        new: Query,
        old_ir: QueryIR,
        new_ir: QueryIR,
        op: SpecPath,
        np: SpecPath,
    ) -> None:
        at: SpecPath = ("result",)
        shape_old, shape_new = _shape(old), _shape(new)
        if shape_old != shape_new:
            self.log.add(
                "query-returns-changed",
                f"`{new_ir.name}` returns {shape_new} (`{new_ir.returns}`), "
                f"was {shape_old} (`{old_ir.returns}`)",
                old=op + at if old.result is not None else op,
                new=np + at if new.result is not None else np,
            )
            return
        if old.result is None or new.result is None:
            return
        schema_at = at + ("schema",)
        self.values.compare(
            old.result.schema_,
            new.result.schema_,
            op + schema_at,
            np + schema_at,
            Direction.RESPONSE,
        )
        python_api.annotation_change(
            self.log,
            old_ir.returns,
            new_ir.returns,
            what=f"`{new_ir.name}` returns",
            old_path=op + at,
            new_path=np + at,
            direction=Direction.RESPONSE,
        )


def sql_tokens(sql: str, dialect: str = "postgresql") -> tuple[list[str], list[str]]:
    """The statement's tokens without whitespace, and its comments (each with its
    whitespace runs made one space): two texts with the same tokens are the same statement."""
    code: list[str] = []
    comments: list[str] = []
    for match in _SQL_TOKENS.get(dialect, _SQL_TOKENS["postgresql"]).finditer(sql):
        token = match.group(0)
        if token.startswith(("--", "/*")):
            comments.append(" ".join(token.split()))
        else:
            code.append(token)
    return code, comments


def _sql_change(old: list[str], new: list[str]) -> str:
    """The first place the statements differ, a few tokens either side, as a short text."""
    start = next(
        (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
        min(len(old), len(new)),
    )
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old, end_new = end_old - 1, end_new - 1
    before = _excerpt(old[start:end_old])
    after = _excerpt(new[start:end_new])
    return f"{before} is now {after}"


def _excerpt(tokens: list[str], limit: int = 12) -> str:
    if not tokens:
        return "(nothing)"
    text = " ".join(tokens[:limit]) + (" ..." if len(tokens) > limit else "")
    return repr(text)


def _inputs(query: Query, query_ir: QueryIR, at: SpecPath) -> list[Input]:
    return [
        Input(
            argument,
            ("sql", argument.wire_name),
            query.params.get(argument.name, _ANY),
            at + ("params", argument.name),
        )
        for argument in query_ir.arguments
    ]


def _shape(query: Query) -> str:
    if query.result is None:
        return "a row count"
    return "a list of rows" if query.result.many else "one row or None"


def _query_ir(connector: Connector, name: str) -> QueryIR:
    return next(q for q in connector.queries if q.name == name)


def _dialect(spec: Spec) -> str:
    return spec.sql.dialect if spec.sql is not None else "postgresql"


def _query(name: str) -> SpecPath:
    return ("queries", name)


def _ref(name: str) -> TypeFields:
    return TypeFields.model_validate({"$ref": name})


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return repr(dict(value))
    return repr(value) if isinstance(value, str) else str(value)


_ANY = TypeFields(type="any")
