"""Every kind of bad spec is reported as ``FILE:LINE:COL: path: message``, all at once.

The specs below are written out line by line so that the expected positions can be read
off the text: ``BASE`` is ten lines long, so a line appended to it is line 11.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from builder.diagnostics import Diagnostic, InputError
from builder.spec.loader import load_spec_text

pytestmark = pytest.mark.timeout(60)

FILE = "spec.yaml"
FIXTURES = Path(__file__).parent / "fixtures" / "specs"

BASE = """\
spec_version: 1
name: demo
title: Demo API
base_url: https://api.example.com
operations:
  get_item:
    method: GET
    path: /items/{item_id}
    params:
      item_id: integer
"""
assert BASE.count("\n") == 10

LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")


def diagnostics_of(text: str) -> list[Diagnostic]:
    with pytest.raises(InputError) as info:
        load_spec_text(text, FILE)
    found = info.value.diagnostics
    assert found, "an InputError must carry at least one diagnostic"
    return found


def errors_of(text: str) -> list[Diagnostic]:
    return [d for d in diagnostics_of(text) if d.severity == "error"]


def only_error(text: str) -> Diagnostic:
    errors = errors_of(text)
    assert len(errors) == 1, "expected exactly one error, got:\n" + "\n".join(map(str, errors))
    return errors[0]


def assert_at(d: Diagnostic, line: int, col: int, path: str, *fragments: str) -> None:
    where = f"{FILE}:{line}:{col}: " + (f"{path}: " if path else "")
    assert str(d).startswith(where), f"expected {where!r}..., got {str(d)!r}"
    assert (d.file, d.line, d.col, d.path) == (FILE, line, col, path)
    for fragment in fragments:
        assert fragment in d.message, f"{fragment!r} not in {d.message!r}"


def test_base_spec_is_valid() -> None:
    loaded = load_spec_text(BASE, FILE)
    assert loaded.spec.name == "demo"
    assert list(loaded.spec.operations) == ["get_item"]
    assert loaded.warnings == []


# -- YAML level ---------------------------------------------------------------------------


def test_invalid_yaml_reports_the_parsers_line() -> None:
    text = "spec_version: 1\nname: demo\n  title: Demo API\nbase_url: https://x.io\n"
    d = only_error(text)
    assert_at(d, 3, 8, "", "invalid YAML", "mapping values are not allowed")
    with pytest.raises(yaml.MarkedYAMLError) as parser:
        yaml.safe_load(text)
    mark = parser.value.problem_mark
    assert mark is not None
    assert (d.line, d.col) == (mark.line + 1, mark.column + 1)


def test_unclosed_flow_sequence_is_invalid_yaml() -> None:
    d = only_error("spec_version: 1\nname: [demo\ntitle: Demo API\n")
    assert_at(d, 3, 6, "", "invalid YAML", "expected ',' or ']'")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    d = only_error(text)
    assert_at(d, 1, 1, "", "the file is empty")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- spec_version: 1\n- name: demo\n", "list"),
        ("just some words\n", "string"),
        ("42\n", "number"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    d = only_error(text)
    assert_at(d, 1, 1, "", "a spec is a mapping", f"not a {kind}")


def test_several_documents_are_rejected() -> None:
    d = only_error(BASE + "---\nname: other\n")  # the second document starts on line 12
    assert_at(d, 12, 1, "", "expected one YAML document, found several")


def test_duplicate_key_reports_second_occurrence_and_first_line() -> None:
    text = BASE.replace("title: Demo API\n", "title: Demo API\ntitle: Other API\n")
    d = only_error(text)
    assert_at(d, 4, 1, "title", "duplicate key 'title'", "first defined at line 3")


def test_duplicate_key_in_nested_mapping() -> None:
    text = BASE.replace("    method: GET\n", "    method: GET\n    method: POST\n")
    d = only_error(text)
    assert_at(d, 8, 5, "operations.get_item.method", "duplicate key 'method'", "line 7")


def test_duplicate_operation_names() -> None:
    text = BASE + "  get_item:\n    method: POST\n    path: /items\n"
    d = only_error(text)
    assert_at(
        d, 11, 3, "operations.get_item", "duplicate key 'get_item'", "first defined at line 6"
    )


def test_python_object_tag_is_rejected_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    text = BASE + f'description: !!python/object/apply:os.system ["touch {marker}"]\n'
    d = only_error(text)
    assert_at(d, 11, 14, "description", "python/object/apply:os.system", "is not allowed")
    assert not marker.exists(), "the YAML tag was executed"


@pytest.mark.parametrize(
    "value",
    [
        "!!python/name:os.system ''",
        '!!python/object/new:subprocess.Popen [["true"]]',
        "!!set {a, b}",
    ],
)
def test_other_object_tags_are_rejected(value: str) -> None:
    d = only_error(BASE + f"description: {value}\n")
    assert_at(d, 11, 14, "description", "YAML tag", "is not allowed")


def test_custom_tag_is_rejected() -> None:
    d = only_error(BASE + "description: !secret db_password\n")
    assert_at(d, 11, 14, "description", "YAML tag '!secret' is not allowed")


def test_custom_tag_on_a_mapping_is_rejected() -> None:
    d = only_error(BASE + "defaults: !Defaults\n  timeout: 5\n")  # reported where the tag is
    assert_at(d, 11, 11, "defaults", "YAML tag '!Defaults' is not allowed")


_BOMB_SCRIPT = """
import json, sys, time
from builder.diagnostics import InputError
from builder.spec.loader import load_spec_text
text = sys.stdin.read()
start = time.perf_counter()
try:
    load_spec_text(text, "spec.yaml")
    result = []
except InputError as exc:
    result = [str(d) for d in exc.diagnostics]
print(json.dumps({"elapsed": time.perf_counter() - start, "diagnostics": result}))
"""


def _billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_rejected_quickly() -> None:
    # In a subprocess, so a slow or memory-hungry expansion cannot hurt the test run.
    run = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT],
        input=_billion_laughs(),
        capture_output=True,
        text=True,
        timeout=50,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert len(result["diagnostics"]) == 1
    assert result["diagnostics"][0].startswith("spec.yaml:1:1: ")
    assert "alias bomb" in result["diagnostics"][0]
    assert result["elapsed"] < 2.0, f"an alias bomb took {result['elapsed']:.1f} s to reject"


def test_self_referencing_alias_is_rejected() -> None:
    d = only_error(BASE + "description: &loop\n  again: *loop\n")
    assert_at(d, 11, 14, "description.again", "an alias refers to a mapping that contains it")


def test_plain_anchors_and_merge_keys_still_work() -> None:
    text = BASE + (
        "defaults:\n"
        "  retry: &fast {attempts: 2, initial_delay: 0.1}\n"
        "  timeout: 5\n"
        "  circuit_breaker: {<<: {failure_threshold: 2}, reset_timeout: 3}\n"
    )
    spec = load_spec_text(text, FILE).spec
    assert spec.defaults.retry.attempts == 2
    assert spec.defaults.circuit_breaker is not None
    assert spec.defaults.circuit_breaker.failure_threshold == 2


# -- unknown keys, missing keys, types ----------------------------------------------------


def test_unknown_key_with_a_close_match() -> None:
    text = BASE.replace("    method: GET\n", "    mehtod: GET\n")
    errors = errors_of(text)
    unknown = [d for d in errors if "unknown key" in d.message]
    assert len(unknown) == 1
    assert_at(
        unknown[0],
        7,
        5,
        "operations.get_item.mehtod",
        "unknown key 'mehtod'",
        "did you mean 'method'?",
    )


def test_unknown_nested_key_with_a_close_match() -> None:
    d = only_error(BASE + "defaults:\n  retry:\n    attemps: 3\n")
    assert_at(d, 13, 5, "defaults.retry.attemps", "did you mean 'attempts'?")


def test_unknown_key_in_a_tagged_union() -> None:
    text = BASE + "auth: {type: bearer, token: x, shceme: Token}\n"
    d = only_error(text)
    assert_at(d, 11, 32, "auth.shceme", "unknown key 'shceme'", "did you mean 'scheme'?")


def test_unknown_key_without_a_close_match_lists_expected_keys() -> None:
    d = only_error(BASE + "zzzz: 1\n")
    assert_at(d, 11, 1, "zzzz", "unknown key 'zzzz'", "expected one of: ")
    for key in ("auth", "base_url", "config", "operations", "schemas", "title"):
        assert key in d.message


def test_missing_title() -> None:
    d = only_error(BASE.replace("title: Demo API\n", ""))
    assert_at(d, 1, 1, "", "missing required key 'title'")


def test_operation_without_method() -> None:
    d = only_error(BASE.replace("    method: GET\n", ""))
    assert_at(d, 7, 5, "operations.get_item", "missing required key 'method'")


def test_wrong_type_timeout() -> None:
    d = only_error(BASE + "defaults:\n  timeout: fast\n")
    assert_at(d, 12, 12, "defaults.timeout", "valid number")


def test_wrong_value_attempts_zero() -> None:
    d = only_error(BASE + "defaults:\n  retry:\n    attempts: 0\n")
    assert_at(d, 13, 15, "defaults.retry.attempts", "greater than or equal to 1")


def test_operations_must_be_a_mapping() -> None:
    d = only_error(BASE.split("operations:")[0] + "operations:\n  - get_item\n")
    assert_at(d, 6, 3, "operations", "valid dictionary")


def test_bad_enum_method() -> None:
    d = only_error(BASE.replace("method: GET", "method: FETCH"))
    assert_at(d, 7, 13, "operations.get_item.method", "'GET'", "'POST'", "'DELETE'")


def test_bad_auth_type() -> None:
    d = only_error(BASE + "auth: {type: oauth}\n")
    assert_at(d, 11, 7, "auth", "`type` must be one of", "'bearer'")


def test_bad_spec_version() -> None:
    d = only_error(BASE.replace("spec_version: 1", "spec_version: 2"))
    assert_at(d, 1, 15, "spec_version", "input should be 1")


# -- references and placeholders ----------------------------------------------------------


def test_type_word_naming_a_missing_schema() -> None:
    d = only_error(BASE + "    response: Widget\n")
    assert_at(
        d,
        11,
        15,
        "operations.get_item.response.schema",
        "'Widget' is neither a built-in type nor a schema under `schemas`",
    )


def test_ref_naming_a_missing_schema_in_a_property() -> None:
    text = BASE + "schemas:\n  Thing:\n    properties:\n      owner: {$ref: Usr}\n"
    d = only_error(text)
    assert_at(d, 14, 14, "schemas.Thing.properties.owner", "'Usr' is neither a built-in type")


def test_ref_with_wrong_case_suggests_the_schema() -> None:
    text = BASE + "    response: thing\nschemas:\n  Thing:\n    properties:\n      id: integer\n"
    d = only_error(text)
    assert_at(d, 11, 15, "operations.get_item.response.schema", "did you mean 'Thing'?")


def test_auth_placeholder_naming_no_setting() -> None:
    text = BASE + (
        "config:\n"
        "  token: {type: string, secret: true}\n"
        'auth: {type: bearer, token: "{config.api_key}"}\n'
    )
    d = only_error(text)
    assert_at(d, 13, 29, "auth.token", "{config.api_key} names no setting under `config`", "token")


def test_path_placeholder_without_a_path_param() -> None:
    d = only_error(BASE.replace("      item_id: integer\n", "      limit: integer\n"))
    assert_at(
        d,
        8,
        11,
        "operations.get_item.path",
        "the path names {item_id} but no path parameter declares it",
    )


def test_path_param_not_in_the_path() -> None:
    d = only_error(BASE + "      extra: {type: string, in: path}\n")
    assert_at(
        d,
        11,
        14,
        "operations.get_item.params.extra",
        "path parameter 'extra' does not appear in the path '/items/{item_id}'",
    )


# -- names that cannot be Python ----------------------------------------------------------


@pytest.mark.parametrize("name", ["class", "list-items", "_private", "ListItems", "close"])
def test_operation_name_must_be_a_method_name(name: str) -> None:
    d = only_error(BASE + f"  {name}:\n    method: GET\n    path: /other\n")
    assert_at(d, 11, 3, f"operations.{name}", f"{name!r} cannot be a method name")


@pytest.mark.parametrize("name", ["timeout", "retry", "self", "def", "ApiKey"])
def test_setting_name_must_be_an_argument_name(name: str) -> None:
    d = only_error(BASE + f"config:\n  {name}: {{type: string}}\n")
    assert_at(d, 12, 3, f"config.{name}", f"{name!r} cannot be a setting name")


@pytest.mark.parametrize("name", ["lowercase", "Snake_Case", "snake_case"])
def test_schema_name_must_be_pascal_case(name: str) -> None:
    d = only_error(BASE + f"schemas:\n  {name}:\n    type: object\n")
    assert_at(d, 12, 3, f"schemas.{name}", f"{name!r} cannot be a schema name")


@pytest.mark.parametrize("name", ["BaseModel", "Field"])
def test_schema_name_must_not_clash_with_generated_code(name: str) -> None:
    d = only_error(BASE + f"schemas:\n  {name}:\n    type: object\n")
    assert_at(d, 12, 3, f"schemas.{name}", f"{name!r}")


def test_param_name_must_be_an_argument_name() -> None:
    d = only_error(BASE + "      from: {type: string, in: query}\n")
    assert_at(d, 11, 7, "operations.get_item.params.from", "'from' cannot be an argument name")


def test_two_properties_become_the_same_python_field() -> None:
    text = (
        BASE + "schemas:\n  Thing:\n    properties:\n      fooBar: string\n      foo_bar: string\n"
    )
    d = only_error(text)
    assert_at(
        d,
        15,
        7,
        "schemas.Thing.properties.foo_bar",
        "properties 'fooBar' and 'foo_bar' both become the Python field 'foo_bar'",
    )


def test_default_not_in_enum() -> None:
    d = only_error(BASE + "      color: {type: string, enum: [red, green], default: blue}\n")
    assert_at(
        d,
        11,
        58,
        "operations.get_item.params.color.default",
        "default 'blue' is not one of the enum values",
    )


def test_enum_value_of_the_wrong_type() -> None:
    d = only_error(BASE + "      size: {type: integer, enum: [1, two]}\n")
    assert_at(
        d, 11, 39, "operations.get_item.params.size.enum[1]", "enum value 'two' is not a integer"
    )


# -- operation shape and roles ------------------------------------------------------------


def test_pagination_without_response_many() -> None:
    d = only_error(BASE + "    response: string\n    pagination: {style: offset}\n")
    assert_at(
        d,
        12,
        17,
        "operations.get_item.pagination",
        "pagination needs `response: {schema: ..., many: true}`",
    )


def test_pagination_style_needs_its_fields() -> None:
    text = BASE + "    response: {schema: string, many: true}\n    pagination: {style: next_url}\n"
    d = only_error(text)
    assert_at(d, 12, 17, "operations.get_item.pagination", "style next_url needs `next`")


def test_streaming_with_a_response() -> None:
    d = only_error(BASE + "    response: string\n    streaming: {format: sse, item: string}\n")
    assert_at(
        d,
        12,
        16,
        "operations.get_item.streaming",
        "either streams or returns a `response`, not both",
    )


def test_role_naming_a_missing_operation() -> None:
    d = only_error(BASE + "roles:\n  source: {read: list_items}\n")
    assert_at(d, 12, 18, "roles.source.read", "no generated operation is named 'list_items'")


def test_sink_role_operation_without_a_body() -> None:
    d = only_error(BASE + "roles:\n  sink: {write: get_item}\n")
    assert_at(d, 12, 17, "roles.sink.write", "'get_item' must send a body")


def test_secret_setting_with_a_default() -> None:
    d = only_error(BASE + "config:\n  token: {type: string, secret: true, default: abc123}\n")
    assert_at(d, 12, 48, "config.token.default", "a secret setting must not have a default")


def test_example_naming_no_argument() -> None:
    d = only_error(BASE + "    example: {nope: 1}\n")
    assert_at(
        d, 11, 21, "operations.get_item.example.nope", "'nope' is not an argument of get_item"
    )


def test_skipped_operation_is_a_warning_not_an_error() -> None:
    loaded = load_spec_text(
        BASE + "  later:\n    method: GET\n    path: /later\n    skip: not yet\n", FILE
    )
    assert [str(w) for w in loaded.warnings] == [
        "spec.yaml:14:11: operations.later.skip: "
        "warning: operation 'later' is not generated: not yet"
    ]


# -- all at once --------------------------------------------------------------------------


def test_several_problems_are_reported_at_once_sorted_by_line() -> None:
    text = textwrap.dedent(
        """\
        spec_version: 1
        name: demo
        base_url: https://api.example.com
        operations:
          get_item:
            method: FETCH
            path: /items/{item_id}
            params:
              item_id: integer
        defaults:
          timeout: fast
        zzz: 1
        """
    )
    errors = errors_of(text)
    assert len(errors) >= 4
    assert [(d.line, d.col) for d in errors] == sorted((d.line, d.col) for d in errors)
    by_path = {d.path: d for d in errors}
    assert_at(by_path[""], 1, 1, "", "missing required key 'title'")
    assert_at(by_path["operations.get_item.method"], 6, 13, "operations.get_item.method", "'GET'")
    assert_at(by_path["defaults.timeout"], 11, 12, "defaults.timeout", "valid number")
    assert_at(by_path["zzz"], 12, 1, "zzz", "unknown key 'zzz'")


def test_several_semantic_problems_are_reported_at_once() -> None:
    text = BASE.replace("      item_id: integer\n", "      limit: integer\n") + (
        "    response: Widget\n"
        "config:\n"
        "  timeout: {type: number}\n"
        "roles:\n"
        "  source: {read: nothing}\n"
    )
    errors = errors_of(text)
    assert [(d.line, d.col) for d in errors] == sorted((d.line, d.col) for d in errors)
    assert [(d.line, d.path) for d in errors] == [
        (8, "operations.get_item.path"),
        (11, "operations.get_item.response.schema"),
        (13, "config.timeout"),
        (15, "roles.source.read"),
    ]


def test_broken_fixture_reports_every_problem() -> None:
    text = (FIXTURES / "broken.yaml").read_text("utf-8")
    errors = errors_of(text)
    assert len(errors) >= 3
    assert [d.line for d in errors] == sorted(d.line for d in errors)
    assert {d.path for d in errors} >= {"", "operations.get_thing.mehtod", "defaults.timeout"}


# -- format -------------------------------------------------------------------------------

_BAD_SPECS = [
    "",
    "- a\n",
    "a: [b\n",
    BASE + "zzzz: 1\n",
    BASE.replace("title: Demo API\n", ""),
    BASE.replace("method: GET", "method: FETCH"),
    BASE + "description: !custom x\n",
    BASE + "    response: Widget\n",
    BASE + "roles:\n  source: {read: nope}\n",
    BASE + "config:\n  timeout: {type: string, secret: true, default: x}\n",
    BASE + "  class:\n    method: GET\n    path: /x\n",
    BASE + "---\na: 1\n",
]


@pytest.mark.parametrize("text", _BAD_SPECS)
def test_every_diagnostic_is_located(text: str) -> None:
    for d in diagnostics_of(text):
        assert LOCATED.match(str(d)), str(d)
        assert str(d).startswith(f"{FILE}:{d.line}:{d.col}: ")
        assert d.line >= 1 and d.col >= 1
        assert "\n" not in str(d)
        assert "Traceback" not in str(d)
