"""openapi-spec-validator, with findings turned into located warnings and cached by hash.

A finding of the validator does not stop generation: where the converter can still map a
construct faithfully it is a warning with its JSON pointer and line; where it cannot, the
converter itself reports an error (or the operation must be skipped with a reason).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from builder.diagnostics import Diagnostic
from builder.openapi.document import OpenAPIDocument

MAX_FINDINGS = 50


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "connector-builder" / "openapi-validation"


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
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    validator_class: Any = {
        "2.0": OpenAPIV2SpecValidator,
        "3.0": OpenAPIV30SpecValidator,
        "3.1": OpenAPIV31SpecValidator,
    }[major]
    findings: list[tuple[str, str]] = []
    try:
        for error in validator_class(data).iter_errors():
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
