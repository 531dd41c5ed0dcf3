"""A spec with `source: {openapi: ...}`: the document's operations, adjusted by the spec.

The spec file is an overlay. Its top-level keys replace the document's (mappings such as
`config`, `schemas`, `headers` and `defaults` merge key by key); each entry under
`operations` patches the operation of that name; `skip` lists operations not to generate,
each with a reason. An operation the converter cannot express is an error unless `skip`
names it, so nothing is ever dropped silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.diagnostics import Diagnostic, InputError
from builder.openapi.convert import Selection, convert
from builder.openapi.document import load_document
from builder.openapi.validate import validate
from builder.spec.models import OpenAPISource, Operation
from builder.spec.yamlio import Document

_MERGED = ("config", "schemas", "headers")


def apply_source(
    doc: Document, data: dict[str, Any], *, background: bool = False
) -> tuple[dict[str, Any], Sequence[Diagnostic]]:
    """The spec data with the document's operations and schemas merged in, and warnings
    (the validator's, read when they are needed: it runs beside what follows)."""
    try:
        source = OpenAPISource.model_validate(data["source"])
    except ValidationError as exc:
        raise InputError([doc.diagnostic(("source",), _first(exc))]) from None
    document = load_document(Path(doc.file).parent / source.openapi)
    warnings = validate(document, background=background)
    selection = Selection(
        include_tags=source.include_tags,
        exclude_tags=source.exclude_tags,
        include_paths=source.include_paths,
        exclude_paths=source.exclude_paths,
        include_operations=source.include_operations,
        exclude_operations=source.exclude_operations,
        rename=source.rename,
    )
    name = str(data["name"]) if isinstance(data.get("name"), str) else "connector"
    converted = convert(document, name, selection)
    merged = dict(converted.spec)
    problems: list[Diagnostic] = []
    for key, value in data.items():
        if key in ("operations", "skip"):
            continue
        if key in _MERGED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        elif key == "defaults" and isinstance(value, dict):
            merged[key] = _deep_merge(merged.get(key) or {}, value)
        else:
            merged[key] = value
    if "auth" in data and isinstance(merged.get("config"), dict):
        # The spec chose its own auth: the settings of the document's go with it.
        own: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else {}
        for setting in converted.auth_settings:
            if setting not in own:
                merged["config"].pop(setting, None)
    operations: dict[str, Any] = merged["operations"]
    known = set(operations) | set(converted.unconvertible)
    patches = data.get("operations") or {}
    patched: list[str] = []
    if isinstance(patches, dict):
        for op_name, patch in patches.items():
            if op_name not in known:
                problems.append(_unknown(doc, ("operations", op_name), op_name, known))
            elif op_name in operations and isinstance(patch, dict):
                operations[op_name] = _deep_merge(operations[op_name], patch)
                patched.append(op_name)
    skip = data.get("skip") or {}
    if isinstance(skip, dict):
        for op_name in skip:
            if op_name not in known:
                problems.append(_unknown(doc, ("skip", op_name), op_name, known))
        merged["skip"] = skip
    # A patched operation is checked again on its own (the converter checked the others),
    # so one odd operation is reported by name.
    for op_name in patched:
        try:
            Operation.model_validate(operations[op_name])
        except ValidationError as exc:
            converted.unconvertible[op_name] = (
                f"does not fit the spec language: {_first(exc)}",
                converted.pointers.get(op_name, "#"),
            )
            del operations[op_name]
    for op_name, (reason, pointer) in converted.unconvertible.items():
        operations.pop(op_name, None)
        if op_name in skip:
            continue
        problems.append(
            document.diagnostic(
                pointer,
                f"operation {op_name!r} cannot be generated: {reason}; "
                f"list it under `skip:` in {doc.file} with a reason to go on",
            )
        )
    for op_name in skip:
        operations.pop(op_name, None)
    if problems:
        raise InputError(problems + list(warnings))
    return merged, warnings


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and key not in ("pagination", "streaming", "retry")
        ):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _unknown(doc: Document, path: tuple[str, ...], name: str, known: set[str]) -> Diagnostic:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return doc.diagnostic(path, f"the document has no operation {name!r}{hint}", key=True)


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
