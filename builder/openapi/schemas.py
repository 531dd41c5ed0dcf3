"""OpenAPI / JSON Schema -> the spec language's schema subset.

What the subset can say is kept (types, `$ref`, objects, arrays, enums, nullability,
unions, additionalProperties, formats, defaults, descriptions); `allOf` is merged into one
object; what a generated model cannot enforce faithfully (patterns in another regex
dialect, exclusive bounds, conditional schemas) is left out — responses are checked for
shape and types, not re-validated against every constraint a service documents.
"""

from __future__ import annotations

import builtins
import datetime
import uuid
from typing import Any

from builder.naming import pascal_case, unique
from builder.openapi.document import OpenAPIDocument
from builder.spec.checks import RESERVED_SCHEMAS, value_fits
from builder.spec.models import FORMATS

_FORMATS = FORMATS
_SCALARS = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
_MAX_DEPTH = 40
_BUILTINS = frozenset(dir(builtins))


class SchemaConverter:
    """Converts schemas, naming each component schema once (cycles are `$ref`s)."""

    def __init__(self, document: OpenAPIDocument, taken: set[str]) -> None:
        self.document = document
        self.schemas: dict[str, dict[str, Any]] = {}
        self._names: dict[tuple[str, str], str] = {}  # (file, pointer) -> our name
        self._taken = set(taken) | set(RESERVED_SCHEMAS)
        # Component schemas reached but not converted yet: each is converted once, from
        # the top, so the result never depends on the order it was reached in.
        self._pending: dict[str, tuple[Any, OpenAPIDocument]] = {}
        # Names are given in the components' sorted order, not the order they are reached.
        data = document.data
        section, prefix = (
            (data.get("definitions"), "#/definitions/")
            if document.major == "2.0"
            else (((data.get("components") or {}).get("schemas")), "#/components/schemas/")
        )
        if isinstance(section, dict):
            for key in sorted(section, key=str):
                escaped = str(key).replace("~", "~0").replace("/", "~1")
                self._name_for(document, prefix + escaped)

    def get(self, name: str) -> dict[str, Any]:
        """A named schema, converted now if it is still pending."""
        self._convert_pending(name)
        return self.schemas.get(name, {})

    def finish(self) -> dict[str, dict[str, Any]]:
        """Every schema, converted, by name: those operations reach, and the document's
        other component schemas (webhook payloads, shared types) as models too."""
        for key, name in list(self._names.items()):
            if key[0] == str(self.document.path) and name not in self.schemas:
                target, owner, _ = self.document.resolve(key[1])
                self._pending.setdefault(name, (target, owner))
        while self._pending:
            self._convert_pending(next(iter(self._pending)))
        return dict(sorted(self.schemas.items()))

    def _convert_pending(self, name: str) -> None:
        item = self._pending.pop(name, None)
        if item is not None:
            self.schemas[name] = {}  # reserved: a cycle comes back as a $ref
            self.schemas[name] = self.convert(item[0], item[1], name, 0, top=True)

    # -- naming ---------------------------------------------------------------------------

    def _is_component(self, pointer: str) -> bool:
        parts = pointer.lstrip("#").strip("/").split("/")
        return (len(parts) == 3 and parts[:2] == ["components", "schemas"]) or (
            len(parts) == 2 and parts[0] == "definitions"
        )

    def _name_for(self, document: OpenAPIDocument, pointer: str) -> str:
        key = (str(document.path), pointer)
        if key not in self._names:
            raw = pointer.rsplit("/", 1)[-1]
            base = pascal_case(raw) or "Model"
            if not base[0].isalpha():
                base = "Model" + base
            base = base[0].upper() + base[1:]
            if base in RESERVED_SCHEMAS or base in _BUILTINS:
                base += "Model"  # a builtin's name would resolve to the builtin in annotations
            self._names[key] = unique(base, self._taken, sep="")
        return self._names[key]

    def ref(self, ref: str, document: OpenAPIDocument, depth: int = 0) -> dict[str, Any]:
        """A `$ref`: a component schema becomes a named schema; anything else is inlined."""
        target, owner, pointer = document.resolve(ref)
        if self._is_component(pointer):
            name = self._name_for(owner, pointer)
            if name not in self.schemas and name not in self._pending:
                self._pending[name] = (target, owner)
            return {"$ref": name}
        return self.convert(target, owner, pointer.rsplit("/", 1)[-1], depth + 1)

    # -- conversion -----------------------------------------------------------------------

    def convert(
        self,
        node: Any,
        document: OpenAPIDocument,
        hint: str,
        depth: int = 0,
        top: bool = False,
    ) -> dict[str, Any]:
        if depth > _MAX_DEPTH or not isinstance(node, dict):
            return {"type": "any"}
        if "$ref" in node and isinstance(node["$ref"], str):
            return self.ref(node["$ref"], document, depth)  # siblings of $ref: ignored, as in 3.0
        if "allOf" in node and isinstance(node["allOf"], list):
            return self._all_of(node, document, hint, depth)
        out: dict[str, Any] = _annotations(node)
        types, nullable = _types(node)
        if nullable:
            out["nullable"] = True
        variants = node.get("oneOf") or node.get("anyOf")
        if isinstance(variants, list) and variants:
            # A `{type: null}` member means "or null", not another type.
            real = [
                self.convert(v, document, f"{hint}Option{i + 1}", depth + 1)
                for i, v in enumerate(variants)
                if not (isinstance(v, dict) and _types(v) == (["null"], True))
            ]
            if len(real) < len(variants):
                out["nullable"] = True
            if len(real) == 1:
                return {**real[0], **{k: v for k, v in out.items() if k not in real[0]}}
            if not real:
                return {**out, "type": "any"}
            out["anyOf" if "anyOf" in node else "oneOf"] = real
            return out
        if len(types) > 1:
            out["anyOf"] = [self._typed(t, node, document, hint, depth) for t in types]
            return out
        kind = types[0] if types else _implied_type(node)
        out.update(self._typed(kind, node, document, hint, depth))
        self._enum_and_default(out, node)
        return out

    def _typed(
        self, kind: str, node: dict[str, Any], document: OpenAPIDocument, hint: str, depth: int
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if kind == "null":
            return {"type": "any"}
        if kind == "array":
            out["type"] = "array"
            items = node.get("items")
            if isinstance(items, dict):
                out["items"] = self.convert(items, document, f"{hint}Item", depth + 1)
            return out
        if kind == "object":
            properties = node.get("properties")
            if isinstance(properties, dict) and properties:
                out["properties"] = {
                    str(name): self.convert(
                        prop, document, f"{hint}{pascal_case(str(name))}", depth + 1
                    )
                    for name, prop in properties.items()
                }
                required = node.get("required")
                if isinstance(required, list):
                    out["required"] = list(
                        dict.fromkeys(r for r in required if isinstance(r, str) and r in properties)
                    )
            else:
                out["type"] = "object"
            extra = node.get("additionalProperties")
            if extra is False and properties:
                out["additionalProperties"] = False
            elif isinstance(extra, dict) and extra and not properties:
                # (With declared properties, the model keeps any extra fields as they come.)
                out["additionalProperties"] = self.convert(
                    extra, document, f"{hint}Value", depth + 1
                )
            return out
        if kind in _SCALARS:
            out["type"] = kind
            fmt = node.get("format")
            if (
                isinstance(fmt, str)
                and fmt in _FORMATS
                and (kind == "string" or fmt in ("int32", "int64", "float", "double"))
            ):
                out["format"] = fmt
            if kind == "string" and node.get("type") == "file":
                out["format"] = "binary"
            return out
        if kind == "file":
            return {"type": "string", "format": "binary"}
        return {"type": "any"}

    def _enum_and_default(self, out: dict[str, Any], node: dict[str, Any]) -> None:
        kind = out.get("type")
        values = node.get("enum")
        if "const" in node and values is None:
            values = [node["const"]]
        if isinstance(values, list) and kind in _SCALARS:
            if None in values:
                out["nullable"] = True
            kept = list(dict.fromkeys(v for v in values if value_fits(kind, v)))
            if kept:
                out["enum"] = kept
        default = node.get("default")
        # A documented value that the format does not admit ("all" for a uuid) says the
        # field holds more than the format: it is typed as the plain string it is.
        fmt = out.get("format")
        if kind == "string" and fmt in _PARSED_FORMATS:
            shown = [v for v in [*(out.get("enum") or ()), default] if isinstance(v, str)]
            if not all(_PARSED_FORMATS[fmt](v) for v in shown):
                del out["format"]
        if default is not None and kind in _SCALARS and value_fits(kind, default):
            if "enum" not in out or default in out["enum"]:
                out["default"] = default

    def _all_of(
        self, node: dict[str, Any], document: OpenAPIDocument, hint: str, depth: int
    ) -> dict[str, Any]:
        """allOf: the members' properties merged into one object (no inheritance)."""
        members = [m for m in node["allOf"] if isinstance(m, dict)]
        own = {k: v for k, v in node.items() if k != "allOf"}
        if len(members) == 1 and not own.get("properties"):
            merged = self.convert(members[0], document, hint, depth + 1)
            return {**merged, **_annotations(own)} if "$ref" not in merged else merged
        properties: dict[str, Any] = {}
        required: list[str] = []
        nullable = False
        for member in [*members, own]:
            resolved, owner = self._resolve_object(member, document, depth)
            if resolved is None:
                continue
            if resolved.get("nullable"):
                nullable = True
            if "allOf" in resolved:
                flat = self._all_of(resolved, owner, hint, depth + 1)
                properties.update(flat.get("properties", {}))
                required.extend(flat.get("required", []))
                continue
            for name, prop in (resolved.get("properties") or {}).items():
                properties[str(name)] = self.convert(
                    prop, owner, f"{hint}{pascal_case(str(name))}", depth + 1
                )
            required.extend(r for r in resolved.get("required") or [] if isinstance(r, str))
        out = _annotations(own)
        if not properties:
            out["type"] = "object"
            return out
        out["properties"] = properties
        out["required"] = list(dict.fromkeys(r for r in required if r in properties))
        if nullable:
            out["nullable"] = True
        return out

    def _resolve_object(
        self, node: dict[str, Any], document: OpenAPIDocument, depth: int
    ) -> tuple[dict[str, Any] | None, OpenAPIDocument]:
        seen = 0
        while "$ref" in node and isinstance(node["$ref"], str) and seen < _MAX_DEPTH:
            target, document, _ = document.resolve(node["$ref"])
            if not isinstance(target, dict):
                return None, document
            node, seen = target, seen + 1
        return node, document


def _parses(parse: Any) -> Any:
    def check(text: str) -> bool:
        try:
            parse(text)
        except ValueError:
            return False
        return True

    return check


# String formats the generated models parse into other types, and how to tell a value fits.
_PARSED_FORMATS = {
    "uuid": _parses(uuid.UUID),
    "date-time": _parses(lambda t: datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))),
    "date": _parses(datetime.date.fromisoformat),
}


def _annotations(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("description", "title"):
        value = node.get(key)
        if isinstance(value, str) and value.strip():
            out[key] = value.strip()
    if node.get("deprecated") is True:
        out["deprecated"] = True
    if node.get("readOnly") is True:
        out["readOnly"] = True
    if node.get("writeOnly") is True:
        out["writeOnly"] = True
    return out


def _types(node: dict[str, Any]) -> tuple[list[str], bool]:
    raw = node.get("type")
    nullable = node.get("nullable") is True or node.get("x-nullable") is True
    if isinstance(raw, list):
        kinds = [str(t) for t in raw]
        if "null" in kinds:
            nullable = True
        kinds = [k for k in kinds if k != "null"]
        return kinds, nullable
    if isinstance(raw, str):
        if raw == "null":
            return ["null"], True
        return [raw], nullable
    return [], nullable


def _implied_type(node: dict[str, Any]) -> str:
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node:
        return "array"
    if (
        isinstance(node.get("enum"), list)
        and node["enum"]
        and all(isinstance(v, str) for v in node["enum"])
    ):
        return "string"
    return "any"
