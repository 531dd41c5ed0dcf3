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
