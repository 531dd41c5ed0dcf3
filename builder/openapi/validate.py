"""openapi-spec-validator, with findings turned into located warnings and cached by hash.

A finding of the validator does not stop generation: where the converter can still map a
construct faithfully it is a warning with its JSON pointer and line; where it cannot, the
converter itself reports an error (or the operation must be skipped with a reason).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from builder.diagnostics import Diagnostic
from builder.openapi.document import OpenAPIDocument

MAX_FINDINGS = 50
CACHE_NAME = "openapi-validation-2"  # a new name when findings change shape


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "connector-builder" / CACHE_NAME


def validate(document: OpenAPIDocument) -> list[Diagnostic]:
    """Warnings for what the validator finds (at most ``MAX_FINDINGS``)."""
    cache = _cache_dir() / f"{document.digest}.json"
    try:
        findings = json.loads(cache.read_text("utf-8"))
    except (OSError, ValueError):
        findings = _run(document.data, document.major)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(findings), "utf-8")
        except OSError:
            pass  # a read-only home: validate again next time
    return [
        document.diagnostic(pointer, f"OpenAPI validation: {message}", "warning")
        for pointer, message in findings
    ]


def _run(data: dict[str, Any], major: str) -> list[tuple[str, str]]:
    findings: list[tuple[str, str]] = []
    try:
        for error in _validator_class(major)(data).iter_errors():
            pointer = "#/" + "/".join(
                str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path
            )
            message = str(error.message)
            if len(message) > 300:
                message = message[:300] + "…"
            findings.append((pointer, message))
            if len(findings) >= MAX_FINDINGS:
                break
    except Exception as exc:  # the validator itself failed on an odd document
        findings.append(
            ("#", f"the validator could not check this document: {type(exc).__name__}: {exc}")
        )
    return findings


def _validator_class(major: str) -> Any:
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    if major != "3.1":
        return OpenAPIV2SpecValidator if major == "2.0" else OpenAPIV30SpecValidator
    from openapi_spec_validator.validation import keywords

    class SchemaValidator(keywords.OpenAPIV31SchemaValidator):
        """Each schema of the document checked against the OpenAPI 3.1 dialect by
        jsonschema-rs (the Python checker builds a validator per schema: 3 s of the OpenAI
        document), and its findings located in the document, not in the schema."""

        def _get_schema_checker(self, schema: Any, schema_value: Any) -> Any:
            checker = super()._get_schema_checker(schema, schema_value)
            dialect = self._get_schema_dialect_id(schema, schema_value)
            return functools.partial(_check_schema, checker, dialect, tuple(schema.parts))

    class Validator(OpenAPIV31SpecValidator):
        keyword_validators = {
            **OpenAPIV31SpecValidator.keyword_validators,
            "schema": SchemaValidator,
        }

    return Validator


def _check_schema(checker: Any, dialect: str, location: tuple[str, ...], value: Any) -> None:
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    fast = _dialect_validator(dialect)
    try:
        if fast is None:
            checker(value)
            return
        error = next(iter(fast.iter_errors(value)), None)
        if error is not None:
            raise SchemaError(error.message, path=list(error.instance_path))
    except SchemaError as exc:
        exc.path.extendleft(reversed(location))  # where the schema is in the document
        raise


@functools.cache
def _dialect_validator(dialect: str) -> Any:
    """jsonschema-rs for the OpenAPI 3.1 base dialect, with the dialect's own schemas
    (shipped with openapi-schema-validator); None: no jsonschema-rs, or another dialect."""
    from openapi_schema_validator._dialects import OAS31_BASE_DIALECT_ID

    if dialect != OAS31_BASE_DIALECT_ID:
        return None
    try:
        import jsonschema_rs
    except ImportError:
        return None
    from importlib.resources import files

    resources: list[tuple[str, Any]] = []
    folders = [files("openapi_schema_validator").joinpath("schemas")]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
                continue
            try:
                schema = json.loads(entry.read_text("utf-8"))
            except ValueError:
                continue
            if isinstance(schema, dict) and isinstance(schema.get("$id"), str):
                resources.append((schema["$id"], schema))
    by_id = dict(resources)
    return jsonschema_rs.validator_for(
        by_id[OAS31_BASE_DIALECT_ID],
        registry=jsonschema_rs.Registry(resources),
        validate_formats=True,
    )
