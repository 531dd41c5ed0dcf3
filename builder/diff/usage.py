"""Which way each named schema travels in a spec's operations (or a data kind's queries
and records): sent, returned, or both.

A value's verdict depends on it (see :mod:`builder.diff.rules`); a schema no generated
operation uses is not on the wire at all.
"""

from __future__ import annotations

from builder.diff.rules import Direction
from builder.spec.checks import body_properties
from builder.spec.models import Schema, Spec, TypeFields


def skip_reason(spec: Spec, name: str) -> str | None:
    """Why an operation is declared but not generated (its own `skip`, or the top-level
    `skip` list an OpenAPI import writes); None when it is generated."""
    op = spec.operations.get(name)
    return (op.skip if op is not None else None) or spec.skip.get(name)


def schema_directions(spec: Spec) -> dict[str, Direction]:
    """Which way each named schema travels in generated operations. The top level of an
    object body is not counted: its properties are arguments, compared per operation."""
    found: dict[str, Direction] = {}

    def visit(value: TypeFields, direction: Direction) -> None:
        if value.ref is not None:
            before = found.get(value.ref)
            now = before | direction if before is not None else direction
            if before != now:
                found[value.ref] = now
                target = spec.schemas.get(value.ref)
                if target is not None:
                    visit(target, direction)
        for child in _children(value):
            visit(child, direction)

    for name, op in spec.operations.items():
        if skip_reason(spec, name) is not None:
            continue
        for param in op.params.values():
            visit(param, Direction.REQUEST)
        if op.body is not None:
            properties = body_properties(spec, op)
            if properties is None:
                visit(op.body.schema_, Direction.REQUEST)
            else:
                for prop in properties.values():
                    visit(prop, Direction.REQUEST)
        if op.response is not None and op.response.schema_ is not None:
            visit(op.response.schema_, Direction.RESPONSE)
        if op.streaming is not None:
            visit(op.streaming.item, Direction.RESPONSE)
        for error in op.errors.values():
            visit(error, Direction.RESPONSE)
    for query in spec.queries.values():  # kind sql: parameters are sent, rows returned
        for query_param in query.params.values():
            visit(query_param, Direction.REQUEST)
        if query.result is not None:
            visit(query.result.schema_, Direction.RESPONSE)
    if spec.record is not None:  # a data kind's records are read and written
        visit(TypeFields.model_validate({"$ref": spec.record}), Direction.BOTH)
    return found


def object_bodies(spec: Spec) -> set[str]:
    """Named schemas sent as object bodies (their properties are arguments)."""
    return {
        op.body.schema_.ref
        for name, op in spec.operations.items()
        if skip_reason(spec, name) is None
        and op.body is not None
        and op.body.schema_.ref is not None
        and body_properties(spec, op) is not None
    }


def _children(value: TypeFields) -> list[TypeFields]:
    children: list[TypeFields] = []
    if value.items is not None:
        children.append(value.items)
    children.extend(value.one_of or [])
    children.extend(value.any_of or [])
    if isinstance(value, Schema):
        children.extend((value.properties or {}).values())
        if isinstance(value.additional_properties, Schema):
            children.append(value.additional_properties)
    return children
