"""Comparing two values' schemas as the wire sees them: types, enums, nullability,
constraints, properties. Every finding carries the direction the value travels, which
decides its verdict (see :mod:`builder.diff.rules`).

Two places that refer to the same named schema are not walked into: the named schema is
compared once, under ``schemas.NAME``. Where a place's reference changes (``A`` to ``B``,
or a reference to an inline schema), both sides are resolved and compared structurally,
so renaming a schema changes nothing on the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from builder.diff.collector import ChangeLog, SpecPath
from builder.diff.rules import Direction
from builder.spec.models import Schema, TypeFields

# (spec key, attribute) of each bound; a larger lower bound or a smaller upper one is tighter.
_LOWER_BOUNDS = (("minimum", "minimum"), ("minLength", "min_length"), ("minItems", "min_items"))
_UPPER_BOUNDS = (("maximum", "maximum"), ("maxLength", "max_length"), ("maxItems", "max_items"))
_DOC_KEYS = (
    ("description", "description"),
    ("title", "title"),
    ("example", "example"),
    ("deprecated", "deprecated"),
    ("readOnly", "read_only"),
    ("writeOnly", "write_only"),
)
_DOC_ATTRIBUTES = tuple(attribute for _, attribute in _DOC_KEYS)
_BOUND_ATTRIBUTES = (*(attribute for _, attribute in _LOWER_BOUNDS + _UPPER_BOUNDS), "pattern")
# Kind changes that only add values (old -> new); the reverse only removes them.
_WIDENINGS = {("integer", "number")}
_MAX_REF_CHAIN = 64


class ValueComparer:
    def __init__(
        self, log: ChangeLog, old_schemas: Mapping[str, Schema], new_schemas: Mapping[str, Schema]
    ) -> None:
        self.log = log
        self.old_schemas = old_schemas
        self.new_schemas = new_schemas

    def compare(
        self,
        old: TypeFields,
        new: TypeFields,
        old_path: SpecPath,
        new_path: SpecPath,
        direction: Direction | None,
        *,
        compare_default: bool = True,
    ) -> None:
        """Record how ``new`` differs from ``old``. ``direction`` None: no operation uses the
        value, so only its documentation matters (nothing of it is on the wire)."""
        _Walk(self, direction).value(
            old, new, old_path, new_path, docs=True, compare_default=compare_default
        )


class _Walk:
    def __init__(self, owner: ValueComparer, direction: Direction | None) -> None:
        self.owner = owner
        self.direction = direction
        self.expanding: set[tuple[str | None, str | None]] = set()

    def add(self, rule: str, message: str, old: SpecPath, new: SpecPath | None) -> None:
        """``new`` None: the thing is gone from the new spec."""
        if self.direction is None and rule != "docs-changed":
            return
        self.owner.log.add(rule, message, old=old, new=new, direction=self.direction)

    # -- one value --------------------------------------------------------------------------

    def value(
        self,
        old: TypeFields,
        new: TypeFields,
        op: SpecPath,
        np: SpecPath,
        *,
        docs: bool,
        compare_default: bool = True,
    ) -> None:
        if same(old, new):
            return  # two versions of a document are mostly equal: nothing to find here
        if docs:
            self.docs(old, new, op, np)
        if old.ref is not None and old.ref == new.ref:
            self.nullable(old.nullable, new.nullable, op, np)
            return
        if old.ref is not None or new.ref is not None:
            pair = (old.ref, new.ref)
            if pair in self.expanding:
                return  # a recursive schema: this pair is being compared further up
            self.expanding.add(pair)
            try:
                # What a renamed or inlined schema's documentation says is not this place's
                # concern; the named schemas' own entries report it.
                self.value(
                    self.resolve(old, self.owner.old_schemas),
                    self.resolve(new, self.owner.new_schemas),
                    op,
                    np,
                    docs=False,
                    compare_default=compare_default,
                )
            finally:
                self.expanding.discard(pair)
            return
        if "any" not in (_kind(old), _kind(new)):  # `any` holds null already
            self.nullable(old.nullable, new.nullable, op, np)
        if not self.kind(old, new, op, np, docs=docs):
            return
        self.enum(old, new, op, np)
        self.format(old, new, op, np)
        self.bounds(old, new, op, np)
        if compare_default and old.default != new.default:
            self.add(
                "default-changed",
                f"default {_show(old.default)} is now {_show(new.default)}",
                op + ("default",),
                np + ("default",),
            )
        if _kind(old) == "array":
            self.value(
                old.items or _ANY, new.items or _ANY, op + ("items",), np + ("items",), docs=docs
            )
        if isinstance(old, Schema) and isinstance(new, Schema):
            self.properties(old, new, op, np, docs=docs)
            self.additional(old, new, op, np, docs=docs)

    def resolve(self, value: TypeFields, schemas: Mapping[str, Schema]) -> TypeFields:
        """Follow ``$ref`` to the named schema, keeping a ``nullable`` set at the reference."""
        target: TypeFields = value
        nullable = value.nullable
        for _ in range(_MAX_REF_CHAIN):
            if target.ref is None or target.ref not in schemas:
                break
            target = schemas[target.ref]
            nullable = nullable or target.nullable
        return target.model_copy(update={"nullable": nullable})

    def docs(self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath) -> None:
        # Fields are read from the models' __dict__: a field a model does not have (a
        # parameter's `title`) is None there, as getattr(..., None) would say, only faster.
        a, b = old.__dict__, new.__dict__
        if _values(a, _DOC_ATTRIBUTES) == _values(b, _DOC_ATTRIBUTES):
            return
        changed = [key for key, attribute in _DOC_KEYS if a.get(attribute) != b.get(attribute)]
        if not changed:
            return
        where: tuple[str, ...] = (changed[0],) if len(changed) == 1 else ()
        self.add("docs-changed", f"{_join(changed)} changed", op + where, np + where)

    def nullable(self, old: bool, new: bool, op: SpecPath, np: SpecPath) -> None:
        if old == new:
            return
        if new:
            self.add("nullable-added", "may now be null", op, np + ("nullable",))
        else:
            self.add("nullable-removed", "may no longer be null", op + ("nullable",), np)

    def kind(
        self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath, *, docs: bool
    ) -> bool:
        """Compare the kinds of value; True when they match and the details are worth
        comparing (a value that changed kind is reported once, as a whole)."""
        ok, nk = _kind(old), _kind(new)
        if ok == "union" or nk == "union":
            self.unions(old, new, op, np, docs=docs)
            return False
        if ok == nk:
            return True
        message = f"type {describe(old)} is now {describe(new)}"
        if (ok, nk) in _WIDENINGS or nk == "any":
            self.add("type-widened", message, op, np)
        elif (nk, ok) in _WIDENINGS or ok == "any":
            self.add("type-narrowed", message, op, np)
        else:
            self.add("type-changed", message, op, np)
        return False

    def unions(
        self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath, *, docs: bool
    ) -> None:
        old_variants = _variants(old)
        new_variants = _variants(new)
        old_list = [_signature(v) for v in old_variants]
        new_list = [_signature(v) for v in new_variants]
        old_sigs = dict(zip(old_list, old_variants, strict=True))
        new_sigs = dict(zip(new_list, new_variants, strict=True))
        added = [v for s, v in new_sigs.items() if s not in old_sigs]
        removed = [v for s, v in old_sigs.items() if s not in new_sigs]
        if not added and not removed:
            return
        if len(old_variants) > 1 and len(new_variants) > 1 and len(added) == len(removed):
            # The same number of members, some edited: compare them place by place.
            old_key, new_key = _variant_key(old), _variant_key(new)
            pairs = zip(old_variants, new_variants, old_list, new_list, strict=True)
            for i, (a, b, old_signature, new_signature) in enumerate(pairs):
                if old_signature != new_signature:
                    self.value(a, b, op + (old_key, i), np + (new_key, i), docs=docs)
            return
        shown = f"{describe(old)} is now {describe(new)}"
        if added and not removed:
            self.add("type-widened", f"{shown} (also {_join(map(describe, added))})", op, np)
        elif removed and not added:
            self.add(
                "type-narrowed", f"{shown} (no longer {_join(map(describe, removed))})", op, np
            )
        else:
            self.add("type-changed", f"type {shown}", op, np)

    def enum(self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath) -> None:
        if old.enum is None and new.enum is None:
            return
        if old.enum is None:
            values = _join(_show(v) for v in new.enum or [])
            self.add("type-narrowed", f"now limited to {values}", op, np + ("enum",))
            return
        if new.enum is None:
            self.add("type-widened", "no longer limited to its enum values", op + ("enum",), np)
            return
        if old.enum == new.enum and _key(old.enum) == _key(new.enum):
            return  # the same values (of the same JSON types: 1 is not true)
        old_values = {_key(v): v for v in old.enum}
        new_values = {_key(v): v for v in new.enum}
        added = [v for k, v in new_values.items() if k not in old_values]
        removed = [v for k, v in old_values.items() if k not in new_values]
        if added:
            shown = _join(_show(v) for v in added)
            self.add("enum-value-added", f"enum value{_s(added)} {shown} added", op, np + ("enum",))
        if removed:
            shown = _join(_show(v) for v in removed)
            self.add(
                "enum-value-removed", f"enum value{_s(removed)} {shown} removed", op, np + ("enum",)
            )

    def format(self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath) -> None:
        if old.format == new.format:
            return
        if old.format is None:
            self.add("type-narrowed", f"now has format {new.format}", op, np + ("format",))
        elif new.format is None:
            self.add("type-widened", f"format {old.format} dropped", op + ("format",), np)
        else:
            message = f"format {old.format} is now {new.format}"
            self.add("type-changed", message, op + ("format",), np + ("format",))

    def bounds(self, old: TypeFields, new: TypeFields, op: SpecPath, np: SpecPath) -> None:
        if _values(old.__dict__, _BOUND_ATTRIBUTES) == _values(new.__dict__, _BOUND_ATTRIBUTES):
            return
        for bounds, lower in ((_LOWER_BOUNDS, True), (_UPPER_BOUNDS, False)):
            for key, attribute in bounds:
                a, b = getattr(old, attribute), getattr(new, attribute)
                if a == b:
                    continue
                tighter = b is not None and (a is None or (b > a if lower else b < a))
                rule = "constraint-tightened" if tighter else "constraint-loosened"
                self.add(rule, f"{key} {_show(a)} is now {_show(b)}", op + (key,), np + (key,))
        if old.pattern != new.pattern:
            if old.pattern is None:
                rule = "constraint-tightened"
            elif new.pattern is None:
                rule = "constraint-loosened"
            else:
                rule = "constraint-changed"
            message = f"pattern {_show(old.pattern)} is now {_show(new.pattern)}"
            self.add(rule, message, op + ("pattern",), np + ("pattern",))

    # -- objects ----------------------------------------------------------------------------

    def properties(
        self, old: Schema, new: Schema, op: SpecPath, np: SpecPath, *, docs: bool
    ) -> None:
        old_props, new_props = old.properties or {}, new.properties or {}
        old_required, new_required = set(old.required), set(new.required)
        closed = old.additional_properties is False
        for name in old_props:
            if name not in new_props:
                at = ("properties", name)
                self.add("property-removed", f"property {name!r} removed", op + at, None)
        for name in new_props:
            if name in old_props:
                continue
            at = ("properties", name)
            required = name in new_required
            what = f"{'required' if required else 'optional'} property {name!r} added"
            if closed and self.direction in (Direction.RESPONSE, Direction.BOTH):
                self.add(
                    "property-added-to-closed-object",
                    f"{what} to an object without additionalProperties",
                    op,
                    np + at,
                )
            elif required:
                self.add("property-added-required", what, op, np + at)
            else:
                self.add("property-added", what, op, np + at)
        for name, old_prop in old_props.items():
            new_prop = new_props.get(name)
            if new_prop is None:
                continue
            at = ("properties", name)
            was, now = name in old_required, name in new_required
            if now and not was:
                self.add(
                    "property-made-required", f"property {name!r} is now required", op + at, np + at
                )
            elif was and not now:
                self.add(
                    "property-made-optional", f"property {name!r} is now optional", op + at, np + at
                )
            self.value(old_prop, new_prop, op + at, np + at, docs=docs)

    def additional(
        self, old: Schema, new: Schema, op: SpecPath, np: SpecPath, *, docs: bool
    ) -> None:
        a, b = old.additional_properties, new.additional_properties
        at = ("additionalProperties",)
        if isinstance(a, Schema) and isinstance(b, Schema):
            self.value(a, b, op + at, np + at, docs=docs)
            return
        was, now = _openness(a), _openness(b)
        if was == now:
            return
        message = f"other properties: {was} is now {now}"
        # closed < typed < open: moving right accepts more.
        order = {"none allowed": 0, "typed": 1, "any allowed": 2}
        rule = "type-widened" if order[now] > order[was] else "type-narrowed"
        self.add(rule, message, op + at, np + at)


_ANY = TypeFields(type="any")


def _values(fields: dict[str, Any], attributes: tuple[str, ...]) -> tuple[Any, ...]:
    """These fields of a model's __dict__ (None for one it does not have)."""
    return tuple(map(fields.get, attributes))


def same(old: TypeFields, new: TypeFields) -> bool:
    """Whether two values are the same in every respect the walk looks at, so that it
    would find nothing: the same kind of model with equal fields (``==``, as the walk
    compares them), down to the JSON types of what they hold, which ``==`` does not see
    (``1`` and ``true``, ``1`` and ``1.0``, the order of a mapping's keys) and the walk
    does (enum values and union members are told apart by their JSON). Values that differ
    mostly do so in their first fields (a description): found at once."""
    return type(old) is type(new) and old.__dict__ == new.__dict__ and _identical(old, new)


def _identical(a: Any, b: Any) -> bool:
    """For two equal values (``a == b``): whether they are also of the same types all the
    way down, so that they have the same JSON."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str or kind is bool or kind is int or a is None:
        return True
    if kind is float:
        return repr(a) == repr(b)  # 0.0 == -0.0
    if isinstance(a, TypeFields):  # the same model class: the same fields, in order
        return _all_identical(a.__dict__.values(), b.__dict__.values())
    if kind is list or kind is tuple:
        return _all_identical(a, b)
    if kind is dict:
        return (
            list(a) == list(b) and _all_identical(a, b) and _all_identical(a.values(), b.values())
        )
    return repr(a) == repr(b)  # anything else a YAML document may hold (a date)


def _all_identical(a: Iterable[Any], b: Iterable[Any]) -> bool:
    for x, y in zip(a, b, strict=True):
        # The same object (None, False, a name) is identical to itself: no call needed.
        if x is not y and not _identical(x, y):
            return False
    return True


def _kind(value: TypeFields) -> str:
    if value.one_of or value.any_of:
        return "union"
    if value.type is not None:
        return value.type
    if isinstance(value, Schema) and value.properties:
        return "object"
    return "any"


def _variants(value: TypeFields) -> list[TypeFields]:
    variants = value.one_of or value.any_of
    if variants:
        return list(variants)
    return [value.model_copy(update={"nullable": False})]


def _variant_key(value: TypeFields) -> str:
    return "anyOf" if value.any_of else "oneOf"


def _signature(value: TypeFields) -> str:
    """A canonical text of what a value accepts, for telling union members apart."""
    data = value.model_dump(
        mode="json", by_alias=True, exclude_defaults=True, exclude={"description", "example"}
    )
    return json.dumps(data, sort_keys=True)


def _openness(value: bool | Schema | None) -> str:
    if value is False:
        return "none allowed"
    if isinstance(value, Schema):
        return "typed"
    return "any allowed"


def describe(value: TypeFields) -> str:
    """A short human name for a value's type: ``array of Label``, ``string (uuid)``."""
    if value.ref is not None:
        text = value.ref
    elif value.one_of or value.any_of:
        text = " | ".join(describe(v) for v in _variants(value))
    else:
        kind = _kind(value)
        if kind == "array" and value.items is not None:
            text = f"array of {describe(value.items)}"
        elif kind == "object" and isinstance(value, Schema) and value.properties:
            text = "object"
        else:
            text = kind
        if value.format:
            text += f" ({value.format})"
    return f"{text} or null" if value.nullable else text


def _key(value: Any) -> str:
    return json.dumps(value)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def _join(items: Any) -> str:
    return ", ".join(items)


def _s(items: list[Any]) -> str:
    return "s" if len(items) != 1 else ""
