"""Comparing what code using a generated package sees: settings, models, roles, annotations.

These comparisons read the IR (:mod:`builder.ir`), which decides Python names,
annotations and requiredness, so the verdicts follow what is actually generated. Each
finding is placed on the spec lines that produced it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator, Mapping

from builder.diff.annotations import Relation, relation
from builder.diff.collector import ChangeLog, SpecPath
from builder.diff.rules import Direction
from builder.ir import Connector, Model, ModelField
from builder.spec.models import Schema, Spec, TypeFields

_TYPE_RULES = {
    Relation.WIDENED: "python-type-widened",
    Relation.NARROWED: "python-type-narrowed",
    Relation.CHANGED: "python-type-changed",
}


def annotation_change(
    log: ChangeLog,
    old: str,
    new: str,
    *,
    what: str,
    old_path: SpecPath,
    new_path: SpecPath,
    direction: Direction,
    ignore_none: bool = False,
) -> None:
    """Record how an annotation changed, judged by the way the value travels."""
    if old == new:
        return
    found = relation(old, new, ignore_none=ignore_none)
    if found is Relation.SAME:
        return
    log.add(
        _TYPE_RULES[found],
        f"{what}: `{old}` is now `{new}`",
        old=old_path,
        new=new_path,
        direction=direction,
    )


# -- settings -------------------------------------------------------------------------------


def compare_settings(
    log: ChangeLog, old: Connector, new: Connector, old_spec: Spec, new_spec: Spec
) -> None:
    old_settings = {s.name: s for s in old.settings}
    new_settings = {s.name: s for s in new.settings}

    def path(spec: Spec, name: str) -> SpecPath:
        # base_url is a setting every http client has, declared or not; undeclared, it is
        # the spec's base_url (whose changes base-url-changed reports). A data kind's
        # standard settings come from its kind, adjusted by `config`.
        if name in spec.config:
            return ("config", name)
        return ("base_url",) if spec.kind == "http" else ("kind",)

    def explicit(spec: Spec, name: str) -> bool:
        """Whether the setting's default and description are the spec's own to compare
        (not the base URL's, which base-url-changed reports)."""
        return name in spec.config or spec.kind != "http"

    for name in old_settings:
        if name not in new_settings:
            log.add("setting-removed", f"setting `{name}` removed", old=path(old_spec, name))
    for name, setting in new_settings.items():
        if name in old_settings:
            continue
        env = f" (env {setting.env})" if setting.env else ""
        if setting.required:
            log.add(
                "setting-added-required",
                f"required setting `{name}`{env} added",
                new=path(new_spec, name),
            )
        else:
            log.add(
                "setting-added", f"optional setting `{name}`{env} added", new=path(new_spec, name)
            )
    for name, a in old_settings.items():
        b = new_settings.get(name)
        if b is None:
            continue
        op, np = path(old_spec, name), path(new_spec, name)
        if a.env != b.env:
            log.add(
                "setting-env-changed",
                f"setting `{name}` reads env {b.env or '(none)'} instead of {a.env or '(none)'}",
                old=op + ("env",),
                new=np + ("env",),
            )
        if a.python_type != b.python_type:
            log.add(
                "setting-type-changed",
                f"setting `{name}`: `{a.python_type}` is now `{b.python_type}`",
                old=op + ("type",),
                new=np + ("type",),
            )
        if a.required != b.required:
            rule = "setting-made-required" if b.required else "setting-made-optional"
            state = "required" if b.required else "optional"
            log.add(rule, f"setting `{name}` is now {state}", old=op, new=np)
        declared = explicit(old_spec, name) and explicit(new_spec, name)
        if declared and a.default != b.default:
            log.add(
                "setting-default-changed",
                f"setting `{name}`: default {a.default!r} is now {b.default!r}",
                old=op + ("default",),
                new=np + ("default",),
            )
        if a.secret != b.secret:
            state = "secret (masked)" if b.secret else "no longer secret"
            log.add(
                "setting-secret-changed",
                f"setting `{name}` is now {state}",
                old=op + ("secret",),
                new=np + ("secret",),
            )
        if declared and a.description != b.description:
            log.add(
                "docs-changed",
                f"setting `{name}`: description changed",
                old=op + ("description",),
                new=np + ("description",),
            )


# -- models ---------------------------------------------------------------------------------


def compare_models(
    log: ChangeLog,
    old: Connector,
    new: Connector,
    old_spec: Spec,
    new_spec: Spec,
    request_models: set[str],
    *,
    places: tuple[dict[str, SpecPath], dict[str, SpecPath]] | None = None,
    uses: tuple[dict[str, Direction], dict[str, Direction]] | None = None,
) -> None:
    """``request_models``: schemas sent as object bodies, whose properties are arguments.
    Their models appear in no annotation, but they describe what callers send.
    ``places`` and ``uses``: :func:`model_places` and :func:`model_directions` of each
    side, when they are known already."""
    old_models = {m.name: m for m in old.models}
    new_models = {m.name: m for m in new.models}
    old_places, new_places = places or (model_places(old_spec, old), model_places(new_spec, new))
    old_uses, new_uses = uses or (model_directions(old), model_directions(new))
    old_uses = dict(old_uses)  # added to below
    for name in request_models:
        old_uses[name] = (
            old_uses[name] | Direction.REQUEST if name in old_uses else Direction.REQUEST
        )
    for name in old_models:
        if name not in new_models:
            log.add("model-removed", f"model `{name}` removed", old=old_places[name])
    for name, model in new_models.items():
        if name not in old_models:
            kind = "type alias" if model.alias_of is not None else "model"
            log.add("model-added", f"{kind} `{name}` added", new=new_places[name])
    for name, a in old_models.items():
        b = new_models.get(name)
        if b is None:
            continue
        if a == b and old_places[name] == new_places[name]:
            continue  # the same model, generated from the same place
        direction = _union(old_uses.get(name), new_uses.get(name))
        _compare_model(log, a, b, old_places[name], new_places[name], direction)


def _compare_model(
    log: ChangeLog, old: Model, new: Model, op: SpecPath, np: SpecPath, direction: Direction
) -> None:
    if (old.alias_of is None) != (new.alias_of is None):
        was = f"an alias of `{old.alias_of}`" if old.alias_of is not None else "a model class"
        now = f"an alias of `{new.alias_of}`" if new.alias_of is not None else "a model class"
        log.add(
            "python-type-changed",
            f"`{old.name}` was {was}, is now {now}",
            old=op,
            new=np,
            direction=direction,
        )
        return
    if old.alias_of is not None and new.alias_of is not None:
        annotation_change(
            log,
            old.alias_of,
            new.alias_of,
            what=f"type alias `{old.name}`",
            old_path=op,
            new_path=np,
            direction=direction,
        )
        return
    old_fields = {f.name: f for f in old.fields}
    new_fields = {f.name: f for f in new.fields}
    pairs = [(f, new_fields[name]) for name, f in old_fields.items() if name in new_fields]
    gone = [f for name, f in old_fields.items() if name not in new_fields]
    fresh = {f.wire_name: f for name, f in new_fields.items() if name not in old_fields}
    for field in gone:
        twin = fresh.pop(field.wire_name, None)
        at_old, at_new = op + ("properties", field.wire_name), np + ("properties", field.wire_name)
        if twin is not None:
            log.add(
                "model-field-renamed",
                f"`{old.name}.{field.name}` is now `{new.name}.{twin.name}` "
                f"(JSON {field.wire_name!r})",
                old=at_old,
                new=at_new,
            )
            pairs.append((field, twin))
        else:
            log.add("model-field-removed", f"field `{old.name}.{field.name}` removed", old=at_old)
    for field in fresh.values():
        at = np + ("properties", field.wire_name)
        if field.required:
            log.add(
                "model-field-added-required",
                f"required field `{new.name}.{field.name}` added",
                new=at,
                direction=direction,
            )
        else:
            log.add("model-field-added", f"optional field `{new.name}.{field.name}` added", new=at)
    for a, b in pairs:
        _compare_field(
            log,
            old.name,
            a,
            b,
            op + ("properties", a.wire_name),
            np + ("properties", b.wire_name),
            direction,
        )


def _compare_field(
    log: ChangeLog,
    model: str,
    old: ModelField,
    new: ModelField,
    op: SpecPath,
    np: SpecPath,
    direction: Direction,
) -> None:
    name = f"`{model}.{new.name}`"
    if old.required != new.required:
        rule = "model-field-made-required" if new.required else "model-field-made-optional"
        state = "required" if new.required else "optional"
        log.add(rule, f"field {name} is now {state}", old=op, new=np, direction=direction)
    annotation_change(
        log,
        old.annotation,
        new.annotation,
        what=f"field {name}",
        old_path=op,
        new_path=np,
        direction=direction,
        ignore_none=old.required != new.required,
    )
    if not old.required and not new.required and old.default != new.default:
        log.add(
            "model-field-default-changed",
            f"field {name}: default {old.default!r} is now {new.default!r}",
            old=op + ("default",),
            new=np + ("default",),
        )


def model_directions(connector: Connector) -> dict[str, Direction]:
    """Which way each model travels: in arguments (request), in what calls return
    (response), or both; followed through model fields and aliases."""
    models = {m.name: m for m in connector.models}
    roots: dict[Direction, set[str]] = {Direction.REQUEST: set(), Direction.RESPONSE: set()}
    for op in connector.operations:
        for argument in op.arguments:
            roots[Direction.REQUEST] |= _names(argument.annotation)
        roots[Direction.RESPONSE] |= _names(op.item_annotation) | _names(op.decoder or "")
        for error in op.error_types.values():  # the bodies of documented errors
            roots[Direction.RESPONSE] |= _names(error)
    for query in connector.queries:
        for argument in query.arguments:
            roots[Direction.REQUEST] |= _names(argument.annotation)
        roots[Direction.RESPONSE] |= _names(query.returns)
    if connector.data is not None and connector.data.record is not None:
        for direction in roots:  # records are read and written
            roots[direction] |= _names(connector.data.record)
    found: dict[str, Direction] = {}
    for direction, names in roots.items():
        todo = [n for n in names if n in models]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            found[name] = found[name] | direction if name in found else direction
            model = models[name]
            inner = set(_names(model.alias_of or ""))
            for field in model.fields:
                inner |= _names(field.annotation)
            todo.extend(n for n in inner if n in models)
    return found


@functools.lru_cache(maxsize=1 << 16)
def _names(annotation: str) -> frozenset[str]:
    """The names an annotation mentions, leaving out the contents of ``Literal[...]``."""
    if not any(c.isupper() for c in annotation):
        return frozenset()  # builtins only (str, int, list[...]): no model
    try:
        tree = ast.parse(annotation, mode="eval")
    except SyntaxError:
        return frozenset()
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Literal"
        ):
            return
        if isinstance(node, ast.Name):
            names.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return frozenset(names)


def _union(a: Direction | None, b: Direction | None) -> Direction:
    """Both directions for a model no operation uses: callers may build and read it."""
    if a is None and b is None:
        return Direction.BOTH
    if a is None or b is None:
        return a or b or Direction.BOTH
    return a | b


def model_places(spec: Spec, connector: Connector) -> dict[str, SpecPath]:
    """Where in the spec each model comes from: a named schema, or the inline object whose
    properties it has (the IR names inline models after their place, and does not keep it)."""
    places: dict[str, SpecPath] = {name: ("schemas", name) for name in spec.schemas}
    by_properties: dict[tuple[str, ...], list[SpecPath]] = {}
    for path, schema in _inline_objects(spec):
        by_properties.setdefault(tuple(schema.properties or {}), []).append(path)
    for model in connector.models:
        if model.name in places:
            continue
        candidates = by_properties.get(tuple(f.wire_name for f in model.fields), [])
        places[model.name] = candidates.pop(0) if candidates else ("models", model.name)
    return places


def _inline_objects(spec: Spec) -> Iterator[tuple[SpecPath, Schema]]:
    def walk(
        value: TypeFields, path: SpecPath, root: bool = False
    ) -> Iterator[tuple[SpecPath, Schema]]:
        if isinstance(value, Schema) and value.properties:
            if not root:
                yield path, value
            for name, prop in value.properties.items():
                yield from walk(prop, path + ("properties", name))
        if value.items is not None:
            yield from walk(value.items, path + ("items",))
        for key, variants in (("oneOf", value.one_of), ("anyOf", value.any_of)):
            for i, variant in enumerate(variants or []):
                yield from walk(variant, path + (key, i))
        if isinstance(value, Schema) and isinstance(value.additional_properties, Schema):
            yield from walk(value.additional_properties, path + ("additionalProperties",))

    for name, schema in spec.schemas.items():
        yield from walk(schema, ("schemas", name), root=True)
    for name, op in spec.operations.items():
        base: SpecPath = ("operations", name)
        for pname, param in op.params.items():
            yield from walk(param, base + ("params", pname))
        if op.body is not None:
            yield from walk(op.body.schema_, base + ("body", "schema"), root=True)
        if op.response is not None and op.response.schema_ is not None:
            yield from walk(op.response.schema_, base + ("response", "schema"))
        if op.streaming is not None:
            yield from walk(op.streaming.item, base + ("streaming", "item"))
        for status, error in op.errors.items():
            yield from walk(error, base + ("errors", status))
    for name, query in spec.queries.items():
        base = ("queries", name)
        for pname, query_param in query.params.items():
            yield from walk(query_param, base + ("params", pname))
        if query.result is not None:
            yield from walk(query.result.schema_, base + ("result", "schema"))


# -- roles ----------------------------------------------------------------------------------


def compare_roles(
    log: ChangeLog, old: Connector, new: Connector, renamed: Mapping[str, str]
) -> None:
    """``renamed``: old operation name -> new name, so a role that follows a renamed
    operation is not reported as moved (the rename is)."""
    old_roles = {r.role: r.operation.name for r in old.roles}
    new_roles = {r.role: r.operation.name for r in new.roles}
    method = {"source": "read()", "sink": "write()"}
    for role, target in old_roles.items():
        at: SpecPath = ("roles", role)
        if role not in new_roles:
            log.add("role-removed", f"role {role} ({method[role]} on {target}) removed", old=at)
        elif renamed.get(target, target) != new_roles[role]:
            log.add(
                "role-changed",
                f"role {role} ({method[role]}) now uses `{new_roles[role]}` instead of `{target}`",
                old=at,
                new=at,
            )
    for role, target in new_roles.items():
        if role not in old_roles:
            log.add(
                "role-added",
                f"role {role} ({method[role]} on `{target}`) added",
                new=("roles", role),
            )
