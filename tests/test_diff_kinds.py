"""Ruleset 2 on data kinds: the kind block, the record model, named queries, standard settings.

Each case pairs a base spec from ``tests/fixtures/diff/kinds/`` with a copy changed in one
way (or, ``reverse=True``, the changed copy with the base) and asserts the exact findings,
``(rule, level, severity)``, at both levels; ``test_every_kind_rule_has_a_case`` keeps the
rule table and the cases in step.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.diagnostics import InputError
from builder.diff.api import diff_connectors, diff_pairs
from builder.diff.kinds import sql_tokens
from builder.diff.rules import RULESETS
from builder.spec.loader import load_spec
from builder.spec.yamlio import load_yaml
from tests.test_diff_rules import DOC, NB, B, Finding, Mutation, _all, _drop, _set, both, py, wire

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).parent / "fixtures" / "diff" / "kinds"
WAREHOUSE = FIXTURES / "warehouse.yaml"  # kind sql: kind block, record, queries
EVENTS = FIXTURES / "events.yaml"  # kind redis_stream: a message format and trimming
JOBS = FIXTURES / "jobs.yaml"  # kind amqp: an option the broker checks

# The rules this file covers (the LLM role and pricing are in test_diff_llm.py).
KIND_RULES = {
    "kind-dialect-changed", "upsert-keys-changed", "payload-format-changed",
    "kind-option-changed", "tuning-changed", "record-changed", "query-removed", "query-added",
    "query-renamed", "query-sql-changed", "query-returns-changed",
}  # fmt: skip


@dataclasses.dataclass
class Case:
    rule: str
    base: Path
    mutate: Mutation
    expected: list[Finding]
    reverse: bool = False  # compare the changed copy (old) with the base (new)


def case(
    rule: str,
    base: Path,
    mutate: Mutation,
    *expected: list[Finding],
    name: str = "",
    reverse: bool = False,
) -> Any:
    flat = [finding for group in expected for finding in group]
    return pytest.param(Case(rule, base, mutate, flat, reverse), id=name or rule)


def query(name: str) -> str:
    return f"queries.{name}"


def _rename_query(old: str, new: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["queries"][new] = spec["queries"].pop(old)

    return mutate


def _copy_record_schema_as(name: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["schemas"][name] = copy.deepcopy(spec["schemas"][spec["record"]])
        spec["record"] = name

    return mutate


STOCK_OF_SQL = (
    "SELECT sku, site, quantity, note FROM stock WHERE sku = :sku AND quantity >= :minimum"
)

CASES = [
    # -- the kind block ------------------------------------------------------------------
    case(
        "kind-dialect-changed",
        WAREHOUSE,
        _set("sql.dialect", "mysql"),
        both("kind-dialect-changed", B, B),
    ),
    case(
        "upsert-keys-changed",
        WAREHOUSE,
        _set("sql.upsert_keys", ["sku"]),
        wire("upsert-keys-changed", B),
    ),
    case(
        "upsert-keys-changed",
        WAREHOUSE,
        _drop("sql.upsert_keys"),
        wire("upsert-keys-changed", B),
        name="upsert-keys-unset",
    ),
    case("tuning-changed", WAREHOUSE, _set("sql.batch_size", 100), both("tuning-changed", NB, NB)),
    case(
        "tuning-changed",
        WAREHOUSE,
        _drop("sql.batch_size"),  # back to the default, 1000
        both("tuning-changed", NB, NB),
        name="batch-size-default",
    ),
    case(
        "tuning-changed",
        EVENTS,
        _set("redis_stream.maxlen", 500),
        both("tuning-changed", NB, NB),
        name="maxlen",
    ),
    case(
        "payload-format-changed",
        EVENTS,
        _set("redis_stream.format", "text"),
        both("payload-format-changed", B, B),
    ),
    case("kind-option-changed", JOBS, _set("amqp.durable", False), wire("kind-option-changed", B)),
    case(
        "kind-option-changed",
        JOBS,
        _drop("amqp"),  # durable: true is the default
        [],
        name="kind-block-left-to-its-defaults",
    ),
    # -- the record ----------------------------------------------------------------------
    case(
        "record-changed",
        WAREHOUSE,
        _copy_record_schema_as("Stock"),
        py("record-changed", B),
        py("model-added", NB),  # Stock; StockRow is still used by a query
        name="record-renamed-schema",
    ),
    case("record-changed", EVENTS, _drop("record"), py("record-changed", B), name="record-unset"),
    case(
        "record-changed",
        EVENTS,
        _drop("record"),
        py("record-changed", B),
        name="record-set",
        reverse=True,
    ),
    case(
        "record-changed",
        EVENTS,
        _all(
            _set("schemas.Other", {"properties": {"id": "integer"}, "required": ["id"]}),
            _set("record", "Other"),
        ),
        py("record-changed", B),
        py("model-added", NB),
        wire("type-changed", B),  # id: string is now integer
        wire("property-removed", B),  # kind
        name="record-another-schema",
    ),
    # Fields of the record: the model and value rules, both directions (read and written).
    case(
        "model-field-removed",
        EVENTS,
        _all(_drop("schemas.Event.properties.kind")),
        py("model-field-removed", B),
        wire("property-removed", B),
        name="record-field-removed",
    ),
    case(
        "model-field-added-required",
        EVENTS,
        _all(
            _set("schemas.Event.properties.at", "string"),
            _set("schemas.Event.required", ["id", "at"]),
        ),
        py("model-field-added-required", B),
        wire("property-added-required", B),
        name="record-field-added-required",
    ),
    case(
        "model-field-added",
        EVENTS,
        _set("schemas.Event.properties.at", "string"),
        py("model-field-added", NB),
        wire("property-added", NB),
        name="record-field-added",
    ),
    case(
        "type-narrowed",
        EVENTS,
        _all(
            _set("schemas.Event.properties.kind", {"type": "string", "enum": ["a", "b"]}),
        ),
        py("python-type-narrowed", B),  # fine as read, breaking as written: records are both
        wire("type-narrowed", B),
        name="record-field-narrowed",
    ),
    # -- named queries ---------------------------------------------------------------------
    case("query-removed", WAREHOUSE, _drop("queries.restock"), both("query-removed", B, B)),
    case(
        "query-added",
        WAREHOUSE,
        _set("queries.list_skus", {"sql": "SELECT DISTINCT sku FROM stock", "result": "StockRow"}),
        both("query-added", NB, NB),
    ),
    case(
        "query-renamed",
        WAREHOUSE,
        _rename_query("list_sites", "all_sites"),
        both("query-renamed", NB, B),
    ),
    case(
        "query-renamed",
        WAREHOUSE,
        _rename_query("count_items", "item_count"),
        both("query-renamed", NB, B),
        py("model-removed", B),  # CountItemsRow: an inline row's model is named after its query
        py("model-added", NB),  # ItemCountRow
        py("python-type-changed", B),  # what it returns: CountItemsRow is now ItemCountRow
        name="query-renamed-inline-row",
    ),
    case(
        "query-sql-changed",
        WAREHOUSE,
        _set("queries.list_sites.sql", "SELECT site, city FROM sites ORDER BY city"),
        wire("query-sql-changed", B),
    ),
    case(
        "query-sql-changed",
        WAREHOUSE,
        _set("queries.list_sites.sql", "select site, city from sites order by site"),
        wire("query-sql-changed", B),  # case is not judged: identifiers may be case-sensitive
        name="query-sql-case",
    ),
    case(
        "query-sql-changed",
        WAREHOUSE,
        _set(
            "queries.restock.sql",
            "UPDATE stock SET quantity = quantity + :amount WHERE sku = :sku AND note = 'a b'",
        ),
        wire("query-sql-changed", B),  # whitespace inside a string literal is data
        name="query-sql-literal-whitespace",
    ),
    case(
        "docs-changed",
        WAREHOUSE,
        _set("queries.stock_of.sql", STOCK_OF_SQL + " -- what is in stock"),
        both("docs-changed", DOC, DOC),
        name="query-sql-comment",
    ),
    case(
        "docs-changed",
        WAREHOUSE,
        _set("queries.stock_of.summary", "Stock."),
        both("docs-changed", DOC, DOC),
        name="query-summary",
    ),
    # Parameters: the method's keyword arguments (CB14xx), their values (CB16xx/CB17xx).
    case(
        "parameter-added",
        WAREHOUSE,
        _all(
            _set("queries.stock_of.sql", STOCK_OF_SQL + " AND site = :site"),
            _set("queries.stock_of.params.site", {"type": "string", "default": "main"}),
        ),
        both("parameter-added", NB, NB),
        wire("query-sql-changed", B),
        name="query-param-added",
    ),
    case(
        "parameter-added-required",
        WAREHOUSE,
        _all(
            _set("queries.stock_of.sql", STOCK_OF_SQL + " AND site = :site"),
            _set("queries.stock_of.params.site", "string"),
        ),
        both("parameter-added-required", B, B),
        wire("query-sql-changed", B),
        name="query-param-added-required",
    ),
    case(
        "parameter-removed",
        WAREHOUSE,
        _all(
            _set(
                "queries.stock_of.sql",
                "SELECT sku, site, quantity, note FROM stock WHERE sku = :sku",
            ),
            _drop("queries.stock_of.params.minimum"),
        ),
        both("parameter-removed", B, B),
        wire("query-sql-changed", B),
        name="query-param-removed",
    ),
    case(
        "python-type-widened",
        WAREHOUSE,
        _set("queries.stock_of.params.minimum.type", "number"),
        wire("type-widened", NB),
        py("python-type-widened", NB),
        name="query-param-widened",
    ),
    case(
        "python-type-changed",
        WAREHOUSE,
        _set("queries.stock_of.params.sku", "integer"),
        wire("type-changed", B),
        py("python-type-changed", B),
        name="query-param-retyped",
    ),
    case(
        "parameter-default-changed",
        WAREHOUSE,
        _set("queries.stock_of.params.minimum.default", 1),
        both("parameter-default-changed", NB, NB),
        name="query-param-default",
    ),
    case(
        "parameter-made-required",
        WAREHOUSE,
        _drop("queries.stock_of.params.minimum.default"),
        both("parameter-made-required", B, B),
        name="query-param-made-required",
    ),
    # What a query returns.
    case(
        "query-returns-changed",
        WAREHOUSE,
        _set("queries.list_sites.result.many", False),
        py("query-returns-changed", B),
    ),
    case(
        "query-returns-changed",
        WAREHOUSE,
        _set("queries.restock.result", "StockRow"),
        py("query-returns-changed", B),
        name="query-result-set",
    ),
    case(
        "query-returns-changed",
        WAREHOUSE,
        _drop("queries.count_items.result"),
        py("query-returns-changed", B),
        py("model-removed", B),  # CountItemsRow
        name="query-result-unset",
    ),
    case(
        "property-added-required",
        WAREHOUSE,
        _all(
            _set("queries.count_items.result.schema.properties.m", "integer"),
            _set("queries.count_items.result.schema.required", ["n", "m"]),
        ),
        wire("property-added-required", NB),  # a row has more: fine for what callers get
        py("model-field-added-required", NB),
        name="query-row-field-added",
    ),
    case(
        "property-removed",
        WAREHOUSE,
        _drop("schemas.Site.properties.city"),
        wire("property-removed", B),
        py("model-field-removed", B),
        name="query-row-field-removed",
    ),
    case(
        "python-type-changed",
        WAREHOUSE,
        _set("queries.list_sites.result.schema", "StockRow"),
        wire("property-removed", B),  # city
        wire("property-added-required", NB),  # sku
        wire("property-added-required", NB),  # quantity
        wire("property-added", NB),  # note
        py("python-type-changed", B),  # list[Site] is now list[StockRow]
        name="query-row-another-schema",
    ),
    # -- standard settings, adjusted by `config` (the setting rules) ----------------------
    case(
        "setting-env-changed",
        WAREHOUSE,
        _set("config.table.env", "STOCK_TABLE"),
        py("setting-env-changed", B),
        name="setting-env-renamed",
    ),
    case(
        "setting-env-changed",
        WAREHOUSE,
        _set("config.port", {"env": "PGPORT"}),
        py("setting-env-changed", B),
        name="standard-setting-given-an-env",
    ),
    case(
        "setting-default-changed",
        WAREHOUSE,
        _set("config.host", {"default": "db.internal"}),
        py("setting-default-changed", NB),
        name="standard-setting-default",
    ),
    case(
        "setting-made-required",
        WAREHOUSE,
        _set("config.database", {"required": True}),
        py("setting-made-required", B),
        name="standard-setting-required",
    ),
    case(
        "docs-changed",
        WAREHOUSE,
        _set("config.table.description", "Where the stock is."),
        both("docs-changed", DOC, DOC),
        name="standard-setting-description",
    ),
]

# Spellings that mean the same: no change at all.
EQUIVALENT = [
    pytest.param(WAREHOUSE, _set("sql.upsert_keys", ["site", "sku"]), id="upsert-key-order"),
    pytest.param(EVENTS, _set("redis_stream.batch_size", 1000), id="option-default-spelled-out"),
    pytest.param(JOBS, _set("amqp", {"durable": True, "format": "json"}), id="block-defaults"),
    pytest.param(
        WAREHOUSE,
        _set(
            "queries.stock_of.sql",
            "SELECT sku,site,quantity,note\n  FROM stock\n WHERE sku=:sku"
            "   AND quantity>=:minimum   -- only what is there",
        ),
        id="sql-whitespace",
    ),
    pytest.param(
        WAREHOUSE,
        _set("queries.list_sites.result", {"schema": "Site"}),  # many: true is the default
        id="result-many-default",
    ),
    pytest.param(
        WAREHOUSE, _set("config.port", {"type": "integer"}), id="standard-setting-restated"
    ),
]


def data_of(path: Path) -> dict[str, Any]:
    return load_yaml(path.read_text("utf-8"), str(path)).data  # type: ignore[no-any-return]


def write(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def changed(base: Path, mutate: Mutation, tmp_path: Path) -> Path:
    """A changed copy of ``base``, written as YAML (its own key order, no comments)."""
    spec = copy.deepcopy(data_of(base))
    mutate(spec)
    return write(tmp_path, "changed", spec)


def findings(old: Path, new: Path, ruleset: int = 2) -> list[Finding]:
    report = diff_connectors(load_spec(old), load_spec(new), ruleset=ruleset)
    return sorted(
        (change.rule.name, level.value, severity.value)
        for change in report.changes
        for level, severity in change.levels
    )


@pytest.mark.parametrize("base", [WAREHOUSE, EVENTS, JOBS], ids=lambda p: p.stem)
def test_the_bases_are_valid_and_equal_to_themselves(base: Path) -> None:
    assert findings(base, base) == []


@pytest.mark.parametrize("example", CASES)
def test_rule(example: Case, tmp_path: Path) -> None:
    other = changed(example.base, example.mutate, tmp_path)
    old, new = (other, example.base) if example.reverse else (example.base, other)
    assert findings(old, new) == sorted(example.expected)


@pytest.mark.parametrize(("base", "mutate"), EQUIVALENT)
def test_equivalent_spellings_change_nothing(base: Path, mutate: Mutation, tmp_path: Path) -> None:
    spec = copy.deepcopy(data_of(base))
    mutate(spec)
    assert spec != data_of(base)
    assert findings(base, write(tmp_path, "same", spec)) == []


def test_every_kind_rule_has_a_case() -> None:
    covered = {p.values[0].rule for p in CASES} | {
        f[0] for p in CASES for f in p.values[0].expected
    }
    assert sorted(KIND_RULES - covered) == []
    assert KIND_RULES <= set(RULESETS[2].rules)


def test_findings_are_placed_and_worded(tmp_path: Path) -> None:
    new = changed(
        WAREHOUSE,
        _all(
            _set("sql.dialect", "mysql"),
            _set("queries.list_sites.sql", "SELECT site, city FROM sites ORDER BY city"),
            _rename_query("restock", "add_stock"),
        ),
        tmp_path,
    )
    report = diff_connectors(load_spec(WAREHOUSE), load_spec(new))
    by_rule = {c.rule.name: c for c in report.changes}
    dialect = by_rule["kind-dialect-changed"]
    assert (dialect.path, dialect.message, dialect.old_line) == (
        "sql.dialect",
        "dialect 'postgresql' is now 'mysql'",
        9,
    )
    sql = by_rule["query-sql-changed"]
    assert sql.path == "queries.list_sites.sql" and sql.old_line == 33
    assert sql.message == "`list_sites` runs another statement: 'site' is now 'city'"
    renamed = by_rule["query-renamed"]
    assert renamed.message == "method `restock` is now `add_stock` (the same SQL)"
    assert report.connectors[0].suggested_version == "2.0.0"


def test_sql_tokens_ignore_whitespace_but_not_literals_or_comments() -> None:
    code, comments = sql_tokens("SELECT a ,b\n FROM t -- note\nWHERE x = 'p  q' /* c */")
    assert code == ["SELECT", "a", ",", "b", "FROM", "t", "WHERE", "x", "=", "'p  q'"]
    assert comments == ["-- note", "/* c */"]
    assert sql_tokens("a::int = :b")[0] == ["a", "::int", "=", ":b"]
    # MySQL escapes quotes with a backslash; PostgreSQL does not.
    assert sql_tokens(r"x = 'it\'s  a' and y", "mysql")[0] == ["x", "=", r"'it\'s  a'", "and", "y"]
    assert sql_tokens("$f$ a  b $f$")[0] == ["$f$ a  b $f$"]


# -- ruleset 1 predates data kinds ----------------------------------------------------------


def test_ruleset_1_refuses_to_judge_a_changed_data_kind_spec(tmp_path: Path) -> None:
    new = changed(WAREHOUSE, _set("sql.batch_size", 100), tmp_path)
    with pytest.raises(InputError) as raised:
        diff_connectors(load_spec(WAREHOUSE), load_spec(new), ruleset=1)
    (problem,) = raised.value.diagnostics
    assert (problem.file, problem.path) == (str(new), "kind")
    assert "ruleset 1 cannot judge changes to a connector of kind sql" in problem.message
    assert "--ruleset 2" in problem.message


def test_ruleset_1_accepts_an_unchanged_or_added_data_kind_spec() -> None:
    loaded = load_spec(WAREHOUSE)
    assert diff_connectors(loaded, load_spec(WAREHOUSE), ruleset=1).changes == []
    report = diff_pairs([(None, loaded)], ruleset=1)
    assert [c.rule.name for c in report.changes] == ["connector-added"]
