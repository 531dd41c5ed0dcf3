"""openapi-spec-validator's findings: located in the document, computed beside generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.openapi import validate as validation
from builder.openapi.document import load_document

DOCUMENT = """\
openapi: 3.1.0
info: {title: Findings, version: "1"}
paths:
  /things:
    get:
      operationId: list_things
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Thing"}
components:
  schemas:
    Thing:
      type: object
      required: [id, id]
      properties:
        id: {type: string}
        size: {$ref: "#/components/schemas/Size"}
    Size: {type: integer, exclusiveMinimum: true}
"""


@pytest.fixture
def document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "findings.yaml"
    path.write_text(DOCUMENT)
    return path


def _found(path: Path) -> list[tuple[int, str, str]]:
    return [(d.line, d.path, d.message) for d in validation.validate(load_document(path))]


def test_schema_findings_are_located_in_the_document_not_in_the_schema(document: Path) -> None:
    found = _found(document)
    assert [(line, pointer) for line, pointer, _ in found] == [
        (17, "#/components/schemas/Thing/required"),
        (21, "#/components/schemas/Size/exclusiveMinimum"),
    ]
    assert "non-unique" in found[0][2] and "number" in found[1][2]


def test_the_child_process_finds_what_the_validator_finds_in_process(
    document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked = _found(document)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
    monkeypatch.setenv("CONNECTOR_BUILDER_NO_FORK", "1")
    assert _found(document) == forked


def test_a_second_validation_reads_the_cache(
    document: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _found(document)

    def refuse(*_: object) -> None:
        raise AssertionError("validated again")

    monkeypatch.setattr(validation, "Pending", refuse)
    assert _found(document) == first


def test_generation_reports_the_findings_after_writing_the_package(
    document: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from builder.cli import main

    runner = CliRunner()
    specs, out = tmp_path / "specs", tmp_path / "out"
    imported = runner.invoke(
        main, ["import-openapi", str(document), "--name", "findings", "--out", str(specs)]
    )
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(main, ["generate", str(specs / "findings.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "connectors" / "findings" / "client.py").is_file()
    assert "#/components/schemas/Thing/required: warning: OpenAPI validation" in result.output


def test_references_to_other_files_are_followed_by_the_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    main = Path(__file__).parent / "fixtures" / "openapi" / "refs" / "main.yaml"
    assert [d.message for d in validation.validate(load_document(main))] == []


def test_the_quicker_subscriptable_check_answers_as_the_protocol_does() -> None:
    import typing

    class Items:
        def __contains__(self, key: object) -> bool:
            return False

        def __getitem__(self, key: object) -> object:
            return None

        def __len__(self) -> int:
            return 0

    class NoLength(Items):
        __len__ = None  # type: ignore[assignment]

    class Partial:
        def __getitem__(self, key: object) -> object:
            return None

    @typing.runtime_checkable
    class Subscriptable(typing.Protocol):
        def __contains__(self, key: object) -> bool: ...
        def __getitem__(self, key: object) -> object: ...
        def __len__(self) -> int: ...

    quick = validation._SubscriptableCheck("Subscriptable", (), {"_protocol": Subscriptable})
    own = Partial()
    own.__contains__ = own.__len__ = lambda *args: 0  # type: ignore[method-assign,attr-defined]
    values = (
        {},
        [],
        "text",
        b"x",
        (),
        1,
        1.5,
        None,
        True,
        Items(),
        NoLength(),
        Partial(),
        own,
    )
    for value in values:
        assert isinstance(value, quick) == isinstance(value, Subscriptable), value


def test_the_validator_uses_the_quicker_check() -> None:
    from pathable import accessors

    validation._validator_class("3.1", {})
    assert isinstance(accessors.Subscriptable, validation._SubscriptableCheck)


def test_the_seen_schema_records_answer_in_as_a_list_does() -> None:
    seen = validation._IdList()
    for schema_id in (5, 3, 5):
        seen.append(schema_id)
    assert list(seen) == [5, 3, 5]
    assert 3 in seen and 5 in seen and 4 not in seen


@pytest.mark.parametrize("major", ["2.0", "3.0", "3.1"])
def test_our_validators_find_what_openapi_spec_validators_own_find(major: str) -> None:
    """Each of our validator classes (seen-schema sets; for 3.1, jsonschema-rs) reports
    what the stock class reports, on a document whose schemas are reached many ways."""
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    stock = {
        "2.0": OpenAPIV2SpecValidator,
        "3.0": OpenAPIV30SpecValidator,
        "3.1": OpenAPIV31SpecValidator,
    }[major]
    data = _shared_schemas_document(major)
    ours = validation._validator_class(major, data)
    messages = sorted(_plain(e.message) for e in ours(data).iter_errors())
    theirs = sorted(_plain(e.message) for e in stock(data).iter_errors())
    assert messages == theirs
    assert len(messages) >= 2  # the duplicate "required" entries, found once each


def _plain(message: object) -> str:
    # jsonschema-rs writes values as JSON, the Python checker as Python: ["a","a"], ['a', 'a']
    return str(message).replace("'", '"').replace(", ", ",")


def _shared_schemas_document(major: str) -> dict[str, object]:
    ref_root = "#/definitions/" if major == "2.0" else "#/components/schemas/"
    schemas: dict[str, object] = {
        "Leaf": {
            "type": "object",
            "required": ["a", "a"],
            "properties": {"a": {"type": "string"}},
        },
        "Other": {
            "type": "object",
            "required": ["b", "b"],
            "properties": {"b": {"type": "integer"}},
        },
    }
    for i in range(30):
        schemas[f"Node{i}"] = {
            "type": "object",
            "properties": {
                "leaf": {"$ref": ref_root + "Leaf"},
                "other": {"allOf": [{"$ref": ref_root + "Other"}]},
                "next": {"$ref": ref_root + f"Node{(i + 1) % 30}"},
            },
        }
    ok = {"description": "ok"}
    paths: dict[str, object] = {}
    for i in range(30):
        schema = {"$ref": ref_root + f"Node{i}"}
        if major == "2.0":
            response: dict[str, object] = {**ok, "schema": schema}
        else:
            response = {**ok, "content": {"application/json": {"schema": schema}}}
        paths[f"/n{i}"] = {"get": {"operationId": f"n{i}", "responses": {"200": response}}}
    info = {"title": "t", "version": "1"}
    if major == "2.0":
        return {"swagger": "2.0", "info": info, "paths": paths, "definitions": schemas}
    version = "3.0.3" if major == "3.0" else "3.1.0"
    return {
        "openapi": version,
        "info": info,
        "paths": paths,
        "components": {"schemas": schemas},
    }


DEFAULTS = """\
openapi: 3.0.3
info: {title: Defaults, version: "1"}
paths:
  /things:
    get:
      operationId: list_things
      parameters:
        - name: size
          in: query
          schema: {$ref: "#/components/schemas/Size"}
      responses:
        "200": {description: ok}
components:
  schemas:
    Size:
      type: integer
      default: large
    Thing:
      type: object
      properties:
        tags:
          type: array
          items: {type: string, default: [a, b]}
"""


def test_a_default_that_its_schema_refuses_is_located_at_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "defaults.yaml"
    path.write_text(DEFAULTS)
    found = sorted(set(_found(path)))
    assert [(line, pointer) for line, pointer, _ in found] == [
        (17, "#/components/schemas/Size/default"),
        (23, "#/components/schemas/Thing/properties/tags/items/default"),
    ]
    assert "'large' is not of type 'integer'" in found[0][2]
