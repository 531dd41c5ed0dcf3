"""Small valid JSON values for a schema: what test scaffolds serve and docs show."""

from __future__ import annotations

from typing import Any

from builder.spec.models import Schema, TypeFields

_STRING_FORMATS = {
    "date-time": "2024-01-02T03:04:05Z",
    "date": "2024-01-02",
    "time": "03:04:05",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "uri": "https://example.com/",
    "email": "user@example.com",
    "byte": "aGVsbG8=",
    "binary": "binary",
}


def sample_value(
    schema: TypeFields, schemas: dict[str, Schema], _seen: frozenset[str] = frozenset()
) -> Any:
    """A value that validates against ``schema``; recursion through `$ref` is cut short."""
    if schema.example is not None:
        return schema.example
    if schema.default is not None:
        return schema.default
    if schema.ref is not None:
        if schema.ref in _seen or schema.ref not in schemas:
            return None
        return sample_value(schemas[schema.ref], schemas, _seen | {schema.ref})
    if schema.enum:
        return schema.enum[0]
    variants = schema.one_of or schema.any_of
    if variants:
        return sample_value(variants[0], schemas, _seen)
    kind = schema.type or ("object" if isinstance(schema, Schema) and schema.properties else "any")
    if kind == "string":
        return _STRING_FORMATS.get(schema.format or "", "string")
    if kind == "integer":
        return int(schema.minimum) if schema.minimum is not None else 1
    if kind == "number":
        return float(schema.minimum) if schema.minimum is not None else 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        if schema.items is None:
            return []
        item = sample_value(schema.items, schemas, _seen)
        return [] if item is None else [item]
    if kind == "object":
        out: dict[str, Any] = {}
        if isinstance(schema, Schema):
            for name, prop in (schema.properties or {}).items():
                value = sample_value(prop, schemas, _seen)
                if value is None and name not in schema.required:
                    continue
                out[name] = value
        return out
    return None
