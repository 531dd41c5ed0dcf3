"""Comparing operations: matched by name (or, when only the name changed, by method and
path), then their parameters, bodies, responses, pagination, streaming and behaviour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from builder.diff import python_api
from builder.diff.client import compare_retry
from builder.diff.collector import ChangeLog, SpecPath
from builder.diff.rules import Direction
from builder.diff.side import Side
from builder.diff.usage import skip_reason
from builder.diff.values import ValueComparer
from builder.ir import Argument, Connector, OperationIR
from builder.spec.checks import body_properties
from builder.spec.models import Operation, Param, Spec, TypeFields

_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_ANY = TypeFields(type="any")


@dataclass
class Input:
    """A method argument and what it is on the wire."""

    argument: Argument
    wire_key: tuple[str, str | int]  # path parameters by position: their names are not sent
    schema: TypeFields
    path: SpecPath

    @property
    def where(self) -> str:
        if self.argument.location == "body" and self.wire_key == ("body", "*"):
            return "the whole body"
        return f"{self.argument.location} {self.argument.wire_name!r}"


class OperationComparer:
    def __init__(
        self,
        log: ChangeLog,
        values: ValueComparer,
        old: Spec,
        new: Spec,
        old_ir: Connector,
        new_ir: Connector,
        old_side: Side | None = None,
        new_side: Side | None = None,
    ) -> None:
        self.log = log
        self.values = values
        self.old, self.new = old, new
        self.old_ir, self.new_ir = old_ir, new_ir
        # The IR of each operation by name (a side may have it ready).
        self.old_ops = old_side.operations_ir if old_side else _by_name(old_ir)
        self.new_ops = new_side.operations_ir if new_side else _by_name(new_ir)

    def compare(self) -> dict[str, str]:
        """Compare every operation; return the renames found (old name -> new name)."""
        old_ops, new_ops = self.old.operations, self.new.operations
        pairs = [(name, name) for name in old_ops if name in new_ops]
        gone = [name for name in old_ops if name not in new_ops]
        fresh = [name for name in new_ops if name not in old_ops]
        renamed = self._renames(gone, fresh)
        for old_name, new_name in renamed.items():
            gone.remove(old_name)
            fresh.remove(new_name)
        for name in gone:
            op = old_ops[name]
            if skip_reason(self.old, name) is not None:
                self.log.add("docs-changed", f"skipped operation `{name}` removed", old=_op(name))
            else:
                self.log.add(
                    "operation-removed",
                    f"operation `{name}` ({_endpoint_text(op)}) removed",
                    old=_op(name),
                )
        for name in fresh:
            op = new_ops[name]
            if skip_reason(self.new, name) is not None:
                self.log.add("docs-changed", f"skipped operation `{name}` added", new=_op(name))
            else:
                self.log.add(
                    "operation-added",
                    f"operation `{name}` ({_endpoint_text(op)}) added",
                    new=_op(name),
                )
        for old_name, new_name in pairs + list(renamed.items()):
            self.operation(old_name, new_name)
        return renamed

    def _renames(self, gone: list[str], fresh: list[str]) -> dict[str, str]:
        """Operations that changed only their name: the one left over on each side with a
        given method and path."""

        def by_endpoint(names: list[str], spec: Spec) -> dict[Any, list[str]]:
            found: dict[Any, list[str]] = {}
            for name in names:
                if skip_reason(spec, name) is None:
                    found.setdefault(_endpoint(spec.operations[name]), []).append(name)
            return found

        old_at = by_endpoint(gone, self.old)
        new_at = by_endpoint(fresh, self.new)
        renamed = {}
        for endpoint, olds in old_at.items():
            news = new_at.get(endpoint, [])
            if len(olds) == 1 and len(news) == 1:
                renamed[olds[0]] = news[0]
        return renamed

    def operation(self, old_name: str, new_name: str) -> None:
        old, new = self.old.operations[old_name], self.new.operations[new_name]
        op, np = _op(old_name), _op(new_name)
        log = self.log
        if old_name != new_name:
            log.add(
                "operation-renamed",
                f"method `{old_name}` is now `{new_name}` (the same {_endpoint_text(new)})",
                old=op,
                new=np,
            )
        for key, a, b in (
            ("summary", old.summary, new.summary),
            ("description", old.description, new.description),
            ("tags", sorted(old.tags), sorted(new.tags)),
            ("example", old.example, new.example),
        ):
            if a != b:
                log.add(
                    "docs-changed", f"`{new_name}`: {key} changed", old=op + (key,), new=np + (key,)
                )
        old_skip, new_skip = skip_reason(self.old, old_name), skip_reason(self.new, new_name)
        if old_skip is not None or new_skip is not None:
            if old_skip is None:
                log.add(
                    "operation-skipped",
                    f"operation `{new_name}` is no longer generated: {new_skip}",
                    old=op,
                    new=_skip_path(self.new, new_name),
                )
            elif new_skip is None:
                log.add(
                    "operation-unskipped",
                    f"operation `{new_name}` is now generated",
                    old=_skip_path(self.old, old_name),
                    new=np,
                )
            elif old_skip != new_skip:
                log.add(
                    "docs-changed",
                    f"`{new_name}`: skip reason changed",
                    old=_skip_path(self.old, old_name),
                    new=_skip_path(self.new, new_name),
                )
            return
        if _endpoint(old) != _endpoint(new):
            log.add(
                "operation-endpoint-changed",
                f"`{new_name}`: {_endpoint_text(old)} is now {_endpoint_text(new)}",
                old=op + ("path",),
                new=np + ("path",),
            )
        if old.deprecated != new.deprecated:
            state = "deprecated" if new.deprecated else "no longer deprecated"
            log.add(
                "operation-deprecation-changed",
                f"`{new_name}` is now {state}",
                old=op + ("deprecated",),
                new=np + ("deprecated",),
            )
        old_ir, new_ir = self.old_ops[old_name], self.new_ops[new_name]
        self.inputs(old_name, new_name, old_ir, new_ir)
        self.body(old, new, op, np, new_name)
        self.response(old, new, old_ir, new_ir, op, np)
        self.errors(old, new, old_ir, new_ir, op, np)
        if old.timeout is not None or new.timeout is not None:
            before = old.timeout or self.old.defaults.timeout
            after = new.timeout or self.new.defaults.timeout
            if before != after:
                log.add(
                    "timeout-changed",
                    f"`{new_name}`: timeout {before:g} s is now {after:g} s",
                    old=op + ("timeout",),
                    new=np + ("timeout",),
                )
        if old.retry is not None or new.retry is not None:
            compare_retry(
                self.log,
                old.retry or self.old.defaults.retry,
                new.retry or self.new.defaults.retry,
                f"`{new_name}`: retry",
                op + ("retry",),
                np + ("retry",),
            )

    def inputs(
        self, old_name: str, new_name: str, old_ir: OperationIR, new_ir: OperationIR
    ) -> None:
        old = {i.argument.name: i for i in _inputs(self.old, old_name, old_ir)}
        new = {i.argument.name: i for i in _inputs(self.new, new_name, new_ir)}
        log = self.log
        pairs = [(old[name], new[name]) for name in old if name in new]
        for a, b in pairs:
            if a.wire_key != b.wire_key:
                log.add(
                    "parameter-moved",
                    f"`{new_name}({b.argument.name}=)` is sent as {b.where}, was {a.where}",
                    old=a.path,
                    new=b.path,
                )
        fresh = {i.wire_key: i for name, i in new.items() if name not in old}
        for name, a in old.items():
            if name in new:
                continue
            if a.wire_key in fresh:
                b = fresh.pop(a.wire_key)
                log.add(
                    "parameter-renamed",
                    f"`{old_name}({name}=)` is now `{new_name}({b.argument.name}=)` "
                    f"(still {b.where})",
                    old=a.path,
                    new=b.path,
                )
                pairs.append((a, b))
            else:
                log.add(
                    "parameter-removed", f"`{old_name}({name}=)` ({a.where}) removed", old=a.path
                )
        for b in fresh.values():
            arg = b.argument
            if arg.required:
                log.add(
                    "parameter-added-required",
                    f"`{new_name}` has a new required argument `{arg.name}` ({b.where})",
                    new=b.path,
                )
            else:
                log.add(
                    "parameter-added",
                    f"`{new_name}` has a new optional argument `{arg.name}` ({b.where})",
                    new=b.path,
                )
        for a, b in pairs:
            compare_input(self.log, self.values, new_name, a, b)

    def body(self, old: Operation, new: Operation, op: SpecPath, np: SpecPath, name: str) -> None:
        """How the body is encoded, and the fields always sent (its arguments are inputs)."""
        if old.body is not None and new.body is not None:
            before = (old.body.content_type, old.body.media_type)
            after = (new.body.content_type, new.body.media_type)
            if before != after:
                self.log.add(
                    "request-body-encoding-changed",
                    f"`{name}` sends its body as {_encoding(*after)}, was {_encoding(*before)}",
                    old=op + ("body",),
                    new=np + ("body",),
                )
        a = old.body.fixed if old.body else {}
        b = new.body.fixed if new.body else {}
        self._fixed_schemas(old, new, op, np, set(a) & set(b))
        for key in sorted(a.keys() | b.keys()):
            if key in a and key in b and a[key] == b[key]:
                continue
            at: SpecPath = ("body", "fixed", key)
            if key not in b:
                message = f"`{name}` no longer always sends {key}={a[key]!r}"
            elif key not in a:
                message = f"`{name}` now always sends {key}={b[key]!r}"
            else:
                message = f"`{name}` always sends {key}={b[key]!r}, was {a[key]!r}"
            self.log.add(
                "request-fixed-field-changed",
                message,
                old=op + at if key in a else None,
                new=np + at if key in b else None,
            )

    def _fixed_schemas(
        self, old: Operation, new: Operation, op: SpecPath, np: SpecPath, keys: set[str]
    ) -> None:
        """The schemas of fields always sent: not arguments, but still on the wire."""
        old_props = body_properties(self.old, old) or {}
        new_props = body_properties(self.new, new) or {}
        for key in sorted(keys):
            if key in old_props and key in new_props:
                self.values.compare(
                    old_props[key],
                    new_props[key],
                    _property_path(self.old, old, op, key),
                    _property_path(self.new, new, np, key),
                    Direction.REQUEST,
                )

    def response(
        self,
        old: Operation,
        new: Operation,
        old_ir: OperationIR,
        new_ir: OperationIR,
        op: SpecPath,
        np: SpecPath,
    ) -> None:
        """What a call returns. A change of kind (a body, a page iterator, a list, a
        stream) is reported as a whole; only responses of the same kind are compared in
        detail."""
        if old.streaming is not None or new.streaming is not None:
            self.streaming(old, new, old_ir, new_ir, op, np)
            return
        if self._content(new, old_ir, new_ir, op, np):
            return
        if self._pagination(old, new, old_ir, new_ir, op, np):
            return
        if self._many(old, new, old_ir, new_ir, op, np):
            return
        if new_ir.response_kind != "json":
            return
        schema_old = (old.response.schema_ if old.response else None) or _ANY
        schema_new = (new.response.schema_ if new.response else None) or _ANY
        at: SpecPath = ("response", "schema")
        self.values.compare(schema_old, schema_new, op + at, np + at, Direction.RESPONSE)
        python_api.annotation_change(
            self.log,
            old_ir.item_annotation,
            new_ir.item_annotation,
            what=f"`{new_ir.name}` returns",
            old_path=op + ("response",),
            new_path=np + ("response",),
            direction=Direction.RESPONSE,
        )

    def _content(
        self, new: Operation, old_ir: OperationIR, new_ir: OperationIR, op: SpecPath, np: SpecPath
    ) -> bool:
        before, after, name = old_ir.response_kind, new_ir.response_kind, new_ir.name
        if before == after:
            return False
        at: SpecPath = ("response",)
        if before == "none":
            message = f"`{name}` now returns a body ({after})"
            self.log.add("response-body-added", message, old=op, new=np + at)
        elif after == "none":
            message = f"`{name}` no longer returns a body"
            self.log.add(
                "response-body-removed", message, old=op + at, new=np + at if new.response else np
            )
        else:
            message = f"`{name}`: response content {before} is now {after}"
            self.log.add("response-content-changed", message, old=op + at, new=np + at)
        return True

    def _pagination(
        self,
        old: Operation,
        new: Operation,
        old_ir: OperationIR,
        new_ir: OperationIR,
        op: SpecPath,
        np: SpecPath,
    ) -> bool:
        name, at = new_ir.name, ("pagination",)
        returns = f"it returns `{new_ir.returns}`, was `{old_ir.returns}`"
        if old.pagination is None or new.pagination is None:
            if new.pagination is not None:
                message = f"`{name}` is now paginated ({new.pagination.style}): {returns}"
                self.log.add("pagination-added", message, old=op, new=np + at)
                return True
            if old.pagination is not None:
                message = f"`{name}` is no longer paginated: {returns}"
                self.log.add("pagination-removed", message, old=op + at, new=np)
                return True
            return False
        if old.pagination.style != new.pagination.style:
            self.log.add(
                "pagination-style-changed",
                f"`{name}`: pagination {old.pagination.style} is now {new.pagination.style}",
                old=op + at + ("style",),
                new=np + at + ("style",),
            )
            return False
        a = old.pagination.model_dump(exclude={"style"})
        b = new.pagination.model_dump(exclude={"style"})
        changed = [k for k in a if a[k] != b[k]]
        if changed:
            details = ", ".join(f"{k} {a[k]!r} is now {b[k]!r}" for k in changed)
            where = at + (changed[0],) if len(changed) == 1 else at
            self.log.add(
                "pagination-settings-changed",
                f"`{name}`: {details}",
                old=op + where,
                new=np + where,
            )
        return False

    def _many(
        self,
        old: Operation,
        new: Operation,
        old_ir: OperationIR,
        new_ir: OperationIR,
        op: SpecPath,
        np: SpecPath,
    ) -> bool:
        many_old = bool(old.response and old.response.many)
        many_new = bool(new.response and new.response.many)
        if many_old == many_new:
            return False
        state = "a list" if many_new else "a single value"
        self.log.add(
            "response-list-changed",
            f"`{new_ir.name}` now returns {state}: `{new_ir.returns}`, was `{old_ir.returns}`",
            old=op + ("response",),
            new=np + ("response",),
        )
        return True

    def errors(
        self,
        old: Operation,
        new: Operation,
        old_ir: OperationIR,
        new_ir: OperationIR,
        op: SpecPath,
        np: SpecPath,
    ) -> None:
        """Documented error bodies, by status. A status whose own entry comes or goes while
        a `4XX` or `default` entry covers it is compared with that entry: the runtime falls
        back the same way, so `.error` keeps a (possibly different) body."""
        a, b, name = old.errors, new.errors, new_ir.name
        pairs = [(key, key) for key in a if key in b]
        for key in a:
            if key in b:
                continue
            cover = _error_fallback(key, b)
            if cover is not None:
                pairs.append((key, cover))
                continue
            self.log.add(
                "error-response-removed",
                f"`{name}`: the {key} error body is no longer documented (`.error` is None)",
                old=op + ("errors", key),
            )
        for key in b:
            if key in a:
                continue
            cover = _error_fallback(key, a)
            if cover is not None:
                pairs.append((cover, key))
                continue
            self.log.add(
                "error-response-added",
                f"`{name}`: the {key} error body is documented (decoded into `.error`)",
                new=np + ("errors", key),
            )
        for before, after in pairs:
            at_old, at_new = op + ("errors", before), np + ("errors", after)
            self.values.compare(a[before], b[after], at_old, at_new, Direction.RESPONSE)
            python_api.annotation_change(
                self.log,
                old_ir.error_types[_status_key(before)],
                new_ir.error_types[_status_key(after)],
                what=f"`{name}`: the {after} error's `.error`",
                old_path=at_old,
                new_path=at_new,
                direction=Direction.RESPONSE,
            )

    def streaming(
        self,
        old: Operation,
        new: Operation,
        old_ir: OperationIR,
        new_ir: OperationIR,
        op: SpecPath,
        np: SpecPath,
    ) -> None:
        name, log = new_ir.name, self.log
        at: SpecPath = ("streaming",)
        if old.streaming is None or new.streaming is None:
            if new.streaming is not None:
                log.add(
                    "streaming-added",
                    f"`{name}` now streams ({new.streaming.format}): it returns "
                    f"`{new_ir.returns}`, was `{old_ir.returns}`",
                    old=op,
                    new=np + at,
                )
            else:
                log.add(
                    "streaming-removed",
                    f"`{name}` no longer streams: it returns `{new_ir.returns}`, "
                    f"was `{old_ir.returns}`",
                    old=op + at,
                    new=np,
                )
            return
        a, b = old.streaming, new.streaming
        if a.format != b.format:
            log.add(
                "streaming-format-changed",
                f"`{name}`: stream format {a.format} is now {b.format}",
                old=op + at + ("format",),
                new=np + at + ("format",),
            )
        for key, x, y in (("done", a.done, b.done), ("events", sorted(a.events), sorted(b.events))):
            if x != y:
                log.add(
                    "streaming-settings-changed",
                    f"`{name}`: stream {key} {x!r} is now {y!r}",
                    old=op + at + (key,),
                    new=np + at + (key,),
                )
        self.values.compare(
            a.item, b.item, op + at + ("item",), np + at + ("item",), Direction.RESPONSE
        )
        python_api.annotation_change(
            log,
            old_ir.item_annotation,
            new_ir.item_annotation,
            what=f"`{name}` streams",
            old_path=op + at + ("item",),
            new_path=np + at + ("item",),
            direction=Direction.RESPONSE,
        )


def compare_input(
    log: ChangeLog, values: ValueComparer, operation: str, old: Input, new: Input
) -> None:
    """One argument of a method (an operation's or a named query's) on both sides."""
    a, b = old.argument, new.argument
    what = f"`{operation}({b.name}=)`"
    if a.required != b.required:
        rule = "parameter-made-required" if b.required else "parameter-made-optional"
        state = "required" if b.required else "optional"
        log.add(rule, f"{what} is now {state}", old=old.path, new=new.path)
    elif not b.required and a.default != b.default:
        log.add(
            "parameter-default-changed",
            f"{what}: default {a.default!r} is now {b.default!r}",
            old=old.path + ("default",),
            new=new.path + ("default",),
        )
    python_api.annotation_change(
        log,
        a.annotation,
        b.annotation,
        what=what,
        old_path=old.path,
        new_path=new.path,
        direction=Direction.REQUEST,
        ignore_none=a.required != b.required,
    )
    before, after = _style(old.schema), _style(new.schema)
    if a.location == b.location == "query" and before != after:
        log.add(
            "parameter-style-changed",
            f"{what}: written {after}, was {before}",
            old=old.path,
            new=new.path,
        )
    values.compare(
        old.schema, new.schema, old.path, new.path, Direction.REQUEST, compare_default=False
    )


def _inputs(spec: Spec, name: str, op_ir: OperationIR) -> list[Input]:
    op = spec.operations[name]
    base: SpecPath = ("operations", name)
    placeholders = [m.group(0)[1:-1] for m in _PLACEHOLDER.finditer(op.path)]
    properties = body_properties(spec, op) or {}
    found = []
    for argument in op_ir.arguments:
        location, wire = argument.location, argument.wire_name
        schema: TypeFields
        path: SpecPath
        key: tuple[str, str | int]
        if location == "body":
            if op.body is not None and wire in properties:
                schema = properties[wire]
                path, key = _property_path(spec, op, base, wire), ("body", wire)
            else:
                schema = op.body.schema_ if op.body is not None else _ANY
                path, key = base + ("body", "schema"), ("body", "*")
        else:
            schema = op.params.get(argument.name, _ANY)
            path = base + ("params", argument.name)
            if location == "path" and wire in placeholders:
                key = ("path", placeholders.index(wire))
            else:
                key = (location, wire.lower() if location == "header" else wire)
        found.append(Input(argument, key, schema, path))
    return found


def _property_path(spec: Spec, op: Operation, at: SpecPath, name: str) -> SpecPath:
    """Where a property of an object body is declared: in a named schema or inline."""
    assert op.body is not None
    if op.body.schema_.ref is not None:
        return ("schemas", op.body.schema_.ref, "properties", name)
    return at + ("body", "schema", "properties", name)


def _error_fallback(status: str, table: dict[str, Any]) -> str | None:
    """The entry that covers ``status`` when it has none of its own: ``4XX``, then
    ``default`` (the order the runtime looks them up in)."""
    broader = [f"{status[0]}XX", "default"] if status.isdigit() else ["default"]
    if status == "default":
        broader = []
    return next((key for key in broader if key in table), None)


def _status_key(status: str) -> int | str:
    """How the IR keys a status: 404 as a number, 4XX and default as text."""
    return int(status) if status.isdigit() else status


def _encoding(content_type: str, media_type: str | None) -> str:
    return f"{content_type} ({media_type})" if media_type else content_type


def _style(value: TypeFields) -> str:
    """How a query parameter's array or object is written."""
    style, explode = (
        (value.style or "form", value.explode) if isinstance(value, Param) else ("form", True)
    )
    return f"style={style} explode={str(explode).lower()}"


def _skip_path(spec: Spec, name: str) -> SpecPath:
    return ("operations", name, "skip") if spec.operations[name].skip else ("skip", name)


def _by_name(connector: Connector) -> dict[str, OperationIR]:
    return {op.name: op for op in connector.operations}


def _op(name: str) -> SpecPath:
    return ("operations", name)


def _endpoint(op: Operation) -> tuple[str, str]:
    return op.method, _PLACEHOLDER.sub("{}", op.path)


def _endpoint_text(op: Operation) -> str:
    return f"{op.method} {op.path}"
