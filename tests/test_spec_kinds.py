"""Specs of data kinds, named queries, the LLM role and pricing: what is accepted, and every
mistake reported at its place (``FILE:LINE:COL: path: message``)."""

from __future__ import annotations

import pytest

from builder.diagnostics import Diagnostic, InputError
from builder.ir import build
from builder.spec.loader import load_spec_text

pytestmark = pytest.mark.timeout(60)

FILE = "spec.yaml"

SQL = """\
spec_version: 1
name: shop
title: Shop database
kind: sql
sql: {dialect: postgresql, upsert_keys: [id]}
config:
  connection_url: {env: SHOP_URL}
  port: {default: 6543}
schemas:
  Order: {type: object, properties: {id: integer, total: number}, required: [id]}
record: Order
queries:
  orders_since:
    sql: "SELECT id, total FROM orders WHERE id > :min_id AND note <> ':not_a_param' ORDER BY id"
    params: {min_id: integer}
    result: {schema: Order, many: true}
"""

LLM = """\
spec_version: 1
name: bot
title: Bot
base_url: https://api.example.com/v1
schemas:
  Answer: {type: object, properties: {text: string, model: string}}
  Chunk: {type: object, properties: {delta: string}}
operations:
  create_answer:
    method: POST
    path: /answer
    body: {schema: {type: object, properties: {model: string, messages: {type: array}}}}
    response: Answer
  stream_answer:
    method: POST
    path: /answer
    body: {schema: {type: object, properties: {model: string, messages: {type: array}}}}
    streaming: {format: sse, item: Chunk}
roles:
  llm:
    provider: example
    default_model: small
    chat: {operation: create_answer, content: text}
    stream: {operation: stream_answer, text: delta}
pricing:
  as_of: 2026-01-01
  source: https://example.com/pricing
  models: {small: {input: 1.0, output: 2.0}}
"""


def errors_of(text: str) -> list[Diagnostic]:
    with pytest.raises(InputError) as info:
        load_spec_text(text, FILE)
    return [d for d in info.value.diagnostics if d.severity == "error"]


def only_error(text: str) -> Diagnostic:
    errors = errors_of(text)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def test_a_sql_spec_loads_and_merges_its_standard_settings() -> None:
    spec = load_spec_text(SQL, FILE).spec
    settings = spec.settings()
    assert list(settings)[:3] == ["connection_url", "host", "port"]
    assert settings["connection_url"].secret and settings["connection_url"].env == "SHOP_URL"
    assert settings["port"].type == "integer" and settings["port"].default == 6543
    assert not any(s.required for s in settings.values())
    connector = build(spec, FILE)
    assert connector.data is not None and connector.data.base_class == "SqlConnector"
    assert connector.data.options == {
        "dialect": "postgresql",
        "upsert_keys": ["id"],
        "batch_size": 1000,
    }
    (query,) = connector.queries
    assert (query.returns, query.param_names) == ("list[Order]", ("min_id",))


def test_a_data_kind_needs_its_block_when_it_has_required_options() -> None:
    error = only_error(SQL.replace("sql: {dialect: postgresql, upsert_keys: [id]}\n", ""))
    assert "needs a `sql:` block" in error.message


def test_a_kind_block_of_another_kind_is_an_error() -> None:
    error = only_error(SQL.replace("sql: {", "kafka: {format: json}\nsql: {"))
    assert (error.line, error.path) == (5, "kafka")
    assert "belongs to kind kafka" in error.message


def test_an_unknown_setting_of_a_kind_gets_a_suggestion() -> None:
    error = only_error(SQL.replace("  port: {default: 6543}", "  prot: {default: 6543}"))
    assert (error.line, error.path) == (8, "config.prot")
    assert "did you mean 'port'" in error.message


def test_a_setting_default_of_the_wrong_type_is_an_error() -> None:
    error = only_error(SQL.replace("{default: 6543}", "{default: many}"))
    assert error.path == "config.port.default" and "not a integer" in error.message


def test_http_parts_on_a_data_kind_are_errors() -> None:
    text = SQL + "base_url: https://db.example.com\nroles: {source: {read: x}}\n"
    errors = errors_of(text)
    assert {e.path for e in errors} == {"base_url", "roles"}


def test_an_http_spec_needs_a_base_url_and_no_queries() -> None:
    text = LLM.replace("base_url: https://api.example.com/v1\n", "")
    assert "needs a base_url" in only_error(text).message
    text = LLM + "queries: {x: {sql: SELECT 1}}\n"
    assert only_error(text).path == "queries"


def test_query_parameters_must_match_the_sql() -> None:
    unused = SQL.replace("params: {min_id: integer}", "params: {min_id: integer, spare: string}")
    error = only_error(unused)
    assert error.path == "queries.orders_since.params.spare"
    assert "never uses :spare" in error.message
    undeclared = SQL.replace("params: {min_id: integer}", "params: {}")
    error = only_error(undeclared)
    assert error.path == "queries.orders_since.sql"
    assert ":min_id" in error.message and "not declared" in error.message


def test_a_record_must_name_a_schema() -> None:
    error = only_error(SQL.replace("record: Order", "record: Missing"))
    assert error.path == "record" and "Missing" in error.message


def test_an_llm_spec_loads_with_usage_maps_on_its_operations() -> None:
    connector = build(load_spec_text(LLM, FILE).spec, FILE)
    assert [m.capability for m in connector.llm_maps] == ["chat", "stream"]
    ops = {op.name: op for op in connector.operations}
    assert ops["create_answer"].usage == {"request_model": "model", "model": "model"}
    assert ops["stream_answer"].usage == {"request_model": "model", "text": "delta"}
    assert connector.pricing is not None
    assert connector.pricing["models"] == {"small": (1.0, 2.0)}
    assert connector.llm_cases is not None
    assert connector.llm_cases["chat"]["expect"]["content"] == "Hello there"


def test_llm_maps_must_name_fitting_operations() -> None:
    missing = only_error(LLM.replace("chat: {operation: create_answer", "chat: {operation: nope"))
    assert missing.path == "roles.llm.chat.operation" and "'nope'" in missing.message
    swapped = errors_of(
        LLM.replace("chat: {operation: create_answer", "chat: {operation: stream_answer")
    )
    assert any("non-streamed" in e.message for e in swapped)


def test_llm_paths_are_checked() -> None:
    error = only_error(LLM.replace("content: text}", "content: 'text..oops'}"))
    assert error.path.startswith("roles.llm.chat.content")
    assert "is not a path" in error.message


def test_an_operation_may_not_shadow_an_llm_role_method() -> None:
    text = LLM.replace("  create_answer:\n", "  chat:\n").replace(
        "operation: create_answer", "operation: chat"
    )
    error = only_error(text)
    assert error.path == "operations.chat" and "method of the LLM role" in error.message


def test_pricing_needs_models_or_a_default() -> None:
    text = LLM.replace("  models: {small: {input: 1.0, output: 2.0}}\n", "")
    assert "pricing needs `models`, a `default`, or both" in only_error(text).message
    with_default = text + "  default: {input: 0, output: 0}\n"
    assert load_spec_text(with_default, FILE).spec.pricing is not None


def test_a_negative_price_is_an_error() -> None:
    error = only_error(LLM.replace("{input: 1.0, output: 2.0}", "{input: -1.0, output: 2.0}"))
    assert error.path == "pricing.models.small.input"
