"""Semantic checks a schema cannot express: references, names, placeholders, roles."""

from __future__ import annotations

import builtins
import difflib
import keyword
import re
from collections.abc import Iterator
from typing import Any

from builder.diagnostics import Diagnostic
from builder.naming import field_name, is_safe_identifier, pascal_case
from builder.spec.kinds import KIND_OPTIONS, STANDARD_SETTINGS
from builder.spec.models import Operation, Param, Schema, Spec, TypeFields
from builder.spec.yamlio import Document, Path

# Names a generated client or models module already uses.
RESERVED_OPERATIONS = frozenset(
    {"close", "aclose", "config", "metrics", "read", "write", "read_batch", "circuit_breaker"}
)
RESERVED_ARGUMENTS = frozenset(
    {"self", "timeout", "retry", "auth", "http_client", "transport", "tracer"}
)
# Names models.py and client.py import or define, which a schema name would shadow.
RESERVED_SCHEMAS = frozenset(
    {
        "Annotated", "Any", "ApiKeyAuth", "AsyncClient", "AsyncIterator", "AsyncPager",
        "AsyncSinkMixin", "AsyncSourceMixin", "AsyncStream", "AwareDatetime", "BaseModel",
        "BasicAuth", "BearerAuth", "ConfigDict", "CustomAuth", "Decoder", "Field", "Iterable",
        "Iterator", "Literal", "NoAuth", "Operation", "Pager", "Pagination", "QuotaHeaders",
        "RetryPolicy", "Service", "Setting", "SinkMixin", "SourceMixin", "Stream",
        "StreamFormat", "SyncClient", "UUID", "Tracer", "UsageMap", "Pricing", "LLMRole",
        "ChatMap", "StreamMap", "EmbedMap", "LLMMixin", "AsyncLLMMixin", "NamedQuery",
        "ModuleType", "GenericAlias", "TYPE_CHECKING",
    }
)  # fmt: skip
# Methods the LLM role adds to a client.
LLM_ROLE_METHODS = frozenset(
    {"chat", "generate", "stream", "embed", "transform", "with_cache", "provider"}
)
# Names a data connector already has (its transport's methods).
RESERVED_QUERIES = RESERVED_OPERATIONS | frozenset(
    {"query", "iter_query", "execute", "table", "transaction", "connection", "payloads"}
)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PATH_PARAM = re.compile(r"\{([^{}]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SCALAR_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def check_spec(spec: Spec, doc: Document) -> list[Diagnostic]:
    return list(_Checker(spec, doc).run())


class _Checker:
    def __init__(self, spec: Spec, doc: Document) -> None:
        self.spec = spec
        self.doc = doc

    def error(self, path: Path, message: str, *, key: bool = False) -> Diagnostic:
        return self.doc.diagnostic(path, message, key=key)

    def warning(self, path: Path, message: str) -> Diagnostic:
        return self.doc.diagnostic(path, message, severity="warning")

    def run(self) -> Iterator[Diagnostic]:
        yield from self.check_kind()
        yield from self.check_config()
        yield from self.check_placeholders()
        yield from self.check_schemas()
        if self.spec.kind != "http":
            yield from self.check_queries()
            return
        if not self.spec.operations:
            yield self.warning((), "the spec has no operations: the package holds models only")
        for name, op in self.spec.operations.items():
            yield from self.check_operation(name, op, ("operations", name))
        for name, reason in self.spec.skip.items():
            if self.spec.source is None and name not in self.spec.operations:
                yield self.error(("skip", name), f"no operation is named {name!r}", key=True)
            else:
                yield self.warning(("skip", name), f"operation {name!r} is not generated: {reason}")
        yield from self.check_roles()

    # -- kinds ----------------------------------------------------------------------------

    def check_kind(self) -> Iterator[Diagnostic]:
        spec = self.spec
        kind = spec.kind
        for other in KIND_OPTIONS:
            if other != kind and getattr(spec, other) is not None:
                yield self.error(
                    (other,), f"a `{other}:` block belongs to kind {other}, not {kind}", key=True
                )
        if kind == "http":
            if spec.base_url is None:
                yield self.error((), "a spec of kind http needs a base_url")
            for field in ("record", "queries"):
                if getattr(spec, field):
                    yield self.error((field,), f"`{field}` is for data kinds, not http", key=True)
            yield from self.check_llm()
            return
        if spec.kind_options() is None:
            yield self.error((), f"a spec of kind {kind} needs a `{kind}:` block (its dialect)")
        for field in ("base_url", "source"):
            if getattr(spec, field) is not None:
                yield self.error((field,), f"`{field}` is for kind http, not {kind}", key=True)
        for field in ("operations", "headers", "skip"):
            if getattr(spec, field):
                yield self.error((field,), f"`{field}` is for kind http, not {kind}", key=True)
        if spec.auth.type != "none":
            yield self.error(("auth",), f"kind {kind} takes credentials as `config` settings")
        if spec.roles.source or spec.roles.sink or spec.roles.llm:
            yield self.error(
                ("roles",),
                f"kind {kind} plays its roles through its transport; `roles` is for kind http",
                key=True,
            )
        if spec.queries and kind != "sql":
            yield self.error(("queries",), "named queries are for kind sql", key=True)
        if spec.record is not None and spec.record not in spec.schemas:
            yield self.error(("record",), f"no schema is named {spec.record!r}")
        standard = STANDARD_SETTINGS[kind]
        for name in spec.config:
            if name not in standard:
                close = difflib.get_close_matches(name, list(standard), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                yield self.error(
                    ("config", name),
                    f"kind {kind} has no setting {name!r} (settings: {', '.join(standard)}){hint}",
                    key=True,
                )

    def check_queries(self) -> Iterator[Diagnostic]:
        if not self.spec.queries:
            return
        # Imported here: only specs with named queries need the SQL scanner.
        from builder.runtime.transports.sql import translate

        options = self.spec.sql
        dialect = options.dialect if options is not None else "postgresql"
        for name, query in self.spec.queries.items():
            path: Path = ("queries", name)
            if not is_safe_identifier(name) or name != name.lower() or name in RESERVED_QUERIES:
                yield self.error(
                    path,
                    f"{name!r} cannot be a query name: use lower_snake_case, not a keyword or "
                    "a name the connector already has",
                    key=True,
                )
            # The runtime's own scanner: what the check sees is what the driver will bind.
            used = set(translate(query.sql, dialect)[1])
            for param_name in query.params:
                param_path = path + ("params", param_name)
                if not is_safe_identifier(param_name) or param_name in RESERVED_ARGUMENTS:
                    yield self.error(
                        param_path, f"{param_name!r} cannot be a parameter name", key=True
                    )
                elif param_name not in used:
                    yield self.error(param_path, f"the SQL never uses :{param_name}", key=True)
            for missing in sorted(used - set(query.params)):
                yield self.error(
                    path + ("sql",), f":{missing} in the SQL is not declared under `params`"
                )
            for param_name, param in query.params.items():
                yield from self.check_schema(param, path + ("params", param_name))
            if query.result is not None:
                yield from self.check_schema(query.result.schema_, path + ("result", "schema"))

    def check_llm(self) -> Iterator[Diagnostic]:
        llm = self.spec.roles.llm
        ops = self.spec.operations
        if llm is None:
            if self.spec.pricing is not None:
                yield self.warning(("pricing",), "pricing is used by the llm role, which is unset")
            return
        for name in ops:
            if name in LLM_ROLE_METHODS:
                yield self.error(
                    ("operations", name),
                    f"{name!r} is a method of the LLM role; name the operation otherwise "
                    f"(e.g. create_{name})",
                    key=True,
                )
        for capability in ("chat", "stream", "embed"):
            mapping = getattr(llm, capability)
            if mapping is None:
                continue
            path: Path = ("roles", "llm", capability, "operation")
            target = ops.get(mapping.operation)
            if target is None or target.skip or mapping.operation in self.spec.skip:
                yield self.error(path, f"no generated operation is named {mapping.operation!r}")
            elif target.body is None:
                yield self.error(path, f"{mapping.operation!r} must send a JSON body")
            elif (capability == "stream") != (target.streaming is not None):
                need = "a streamed" if capability == "stream" else "a non-streamed"
                yield self.error(path, f"{mapping.operation!r} must be {need} operation")

    # -- config and placeholders ----------------------------------------------------------

    def check_config(self) -> Iterator[Diagnostic]:
        envs: dict[str, str] = {}
        effective = self.spec.settings()
        for name, setting in self.spec.config.items():
            path: Path = ("config", name)
            if self.spec.kind != "http" and name not in effective:
                continue  # not a setting of the kind: check_kind says so, once
            setting = effective.get(name, setting)  # a data kind's standard type, defaults
            if not is_safe_identifier(name) or name != name.lower() or name in RESERVED_ARGUMENTS:
                yield self.error(
                    path,
                    f"{name!r} cannot be a setting name: use lower_snake_case, "
                    f"not a keyword or one of {sorted(RESERVED_ARGUMENTS)}",
                    key=True,
                )
            if setting.secret and setting.default is not None:
                yield self.error(
                    path + ("default",), "a secret setting must not have a default in the spec"
                )
            if setting.default is not None and not value_fits(setting.type, setting.default):
                yield self.error(
                    path + ("default",), f"default {setting.default!r} is not a {setting.type}"
                )
            if setting.env:
                if setting.env in envs:
                    yield self.error(
                        path + ("env",),
                        f"env var {setting.env} is already used by setting {envs[setting.env]!r}",
                    )
                envs[setting.env] = name

    def check_placeholders(self) -> Iterator[Diagnostic]:
        auth = self.spec.auth
        for field in ("value", "token", "username", "password", "client_id", "client_secret"):
            text = getattr(auth, field, None)
            if isinstance(text, str):
                yield from self._placeholders(text, ("auth", field))
        for header, value in self.spec.headers.items():
            if not _HEADER_NAME.match(header):
                yield self.error(
                    ("headers", header), f"{header!r} is not a valid header name", key=True
                )
            if _PLACEHOLDER.search(value):
                yield self.error(
                    ("headers", header), "headers are sent as written: put credentials in `auth`"
                )
        if self.spec.base_url is not None and _PLACEHOLDER.search(self.spec.base_url):
            yield self.error(
                ("base_url",),
                "base_url is a plain URL; it can be overridden by the base_url setting",
            )

    def _placeholders(self, text: str, path: Path) -> Iterator[Diagnostic]:
        for match in _PLACEHOLDER.finditer(text):
            inner = match.group(1)
            if not inner.startswith("config."):
                yield self.error(
                    path, f"placeholder {{{inner}}} must be of the form {{config.NAME}}"
                )
                continue
            name = inner[len("config.") :]
            if name not in self.spec.config:
                known = ", ".join(sorted(self.spec.config)) or "none declared"
                yield self.error(
                    path,
                    f"placeholder {{{inner}}} names no setting under `config` (settings: {known})",
                )

    # -- schemas --------------------------------------------------------------------------

    def check_schemas(self) -> Iterator[Diagnostic]:
        client = self.spec.class_name or pascal_case(self.spec.name)
        for name, schema in self.spec.schemas.items():
            path: Path = ("schemas", name)
            if not re.match(r"^[A-Z][A-Za-z0-9]*$", name) or keyword.iskeyword(name):
                yield self.error(
                    path,
                    f"{name!r} cannot be a schema name: use PascalCase letters and digits",
                    key=True,
                )
            elif (
                name in RESERVED_SCHEMAS
                or name in (client, f"Async{client}")
                or name in dir(builtins)
            ):
                yield self.error(
                    path,
                    f"schema name {name!r} is taken by the generated code; choose another",
                    key=True,
                )
            yield from self.check_schema(schema, path)
        yield from self.check_alias_cycles()

    def check_alias_cycles(self) -> Iterator[Diagnostic]:
        """Schemas that are nothing but a reference (`A: B`) may not go round in a circle:
        such a type has no value at all. (A recursive alias with a container in it — a
        tree of lists or dicts — is fine: it becomes a RootModel.)"""
        aliases = {n: s for n, s in self.spec.schemas.items() if _is_bare_ref(s)}
        for name, schema in aliases.items():
            seen: set[str] = set()
            stack = sorted(_refs(schema) & set(aliases))
            while stack:
                other = stack.pop()
                if other == name:
                    yield self.error(
                        ("schemas", name),
                        f"type {name!r} is only a name for itself (through other names): "
                        "it has no value; give it a type or properties",
                    )
                    break
                if other not in seen:
                    seen.add(other)
                    stack.extend(sorted(_refs(aliases[other]) & set(aliases)))

    def check_schema(self, schema: TypeFields, path: Path) -> Iterator[Diagnostic]:
        if schema.ref is not None:
            if schema.ref not in self.spec.schemas:
                close = [s for s in self.spec.schemas if s.lower() == schema.ref.lower()]
                hint = f"; did you mean {close[0]!r}?" if close else ""
                yield self.error(
                    path,
                    f"{schema.ref!r} is neither a built-in type nor a schema under `schemas`{hint}",
                )
            if schema.type is not None:
                yield self.error(path, "give either `type` or `$ref`, not both")
        if schema.enum is not None and schema.type in _SCALAR_TYPES:
            for i, value in enumerate(schema.enum):
                if not value_fits(schema.type, value):
                    yield self.error(
                        path + ("enum", i), f"enum value {value!r} is not a {schema.type}"
                    )
        if schema.default is not None:
            if schema.enum is not None and schema.default not in schema.enum:
                yield self.error(
                    path + ("default",), f"default {schema.default!r} is not one of the enum values"
                )
            elif schema.type in _SCALAR_TYPES and not value_fits(schema.type, schema.default):
                yield self.error(
                    path + ("default",), f"default {schema.default!r} is not a {schema.type}"
                )
        if schema.items is not None:
            yield from self.check_schema(schema.items, path + ("items",))
        for key in ("one_of", "any_of"):
            variants = getattr(schema, key) or []
            alias = "oneOf" if key == "one_of" else "anyOf"
            for i, variant in enumerate(variants):
                yield from self.check_schema(variant, path + (alias, i))
        if isinstance(schema, Schema):
            yield from self.check_properties(schema, path)

    def check_properties(self, schema: Schema, path: Path) -> Iterator[Diagnostic]:
        properties = schema.properties or {}
        seen: dict[str, str] = {}
        for wire, prop in properties.items():
            python = field_name(wire)
            if python in seen and self.spec.source is None:  # imported names are made unique
                yield self.error(
                    path + ("properties", wire),
                    f"properties {seen[python]!r} and {wire!r} "
                    f"both become the Python field {python!r}",
                    key=True,
                )
            seen[python] = wire
            yield from self.check_schema(prop, path + ("properties", wire))
        for i, name in enumerate(schema.required):
            if name not in properties:
                yield self.error(
                    path + ("required", i), f"required property {name!r} is not under `properties`"
                )
        if isinstance(schema.additional_properties, Schema):
            yield from self.check_schema(
                schema.additional_properties, path + ("additionalProperties",)
            )

    # -- operations -----------------------------------------------------------------------

    def check_operation(self, name: str, op: Operation, path: Path) -> Iterator[Diagnostic]:
        if (
            not is_safe_identifier(name)
            or name != name.lower()
            or name.startswith("_")
            or name in RESERVED_OPERATIONS
        ):
            yield self.error(
                path,
                f"{name!r} cannot be a method name: use lower_snake_case, not a keyword, "
                f"not starting with _, not one of {sorted(RESERVED_OPERATIONS)}",
                key=True,
            )
        if op.skip is not None:
            yield self.warning(path + ("skip",), f"operation {name!r} is not generated: {op.skip}")
            return
        in_path = _PATH_PARAM.findall(op.path)
        wire_names: dict[str, str] = {}
        for pname, param in op.params.items():
            ppath = path + ("params", pname)
            wire = param.name or pname
            if (
                not is_safe_identifier(pname)
                or pname != pname.lower()
                or pname in RESERVED_ARGUMENTS
            ):
                yield self.error(
                    ppath,
                    f"{pname!r} cannot be an argument name: use lower_snake_case (put the "
                    f"wire name in `name:`), not a keyword or one of {sorted(RESERVED_ARGUMENTS)}",
                    key=True,
                )
            location = param.in_ or ("path" if wire in in_path else "query")
            if location == "path":
                if wire not in in_path:
                    yield self.error(
                        ppath, f"path parameter {wire!r} does not appear in the path {op.path!r}"
                    )
                if param.required is False:
                    yield self.error(ppath + ("required",), "path parameters are always required")
            if location == "header" and not _HEADER_NAME.match(wire):
                yield self.error(ppath, f"{wire!r} is not a valid header name")
            if (location, wire) in {(v, k) for k, v in wire_names.items()}:
                yield self.error(ppath, f"two parameters send {location} {wire!r}")
            wire_names[wire] = location
            yield from self.check_schema(param, ppath)
        for placeholder in in_path:
            if not any(
                (p.name or k) == placeholder and (p.in_ in (None, "path"))
                for k, p in op.params.items()
            ):
                yield self.error(
                    path + ("path",),
                    f"the path names {{{placeholder}}} but no path parameter declares it",
                )
        yield from self.check_body(op, path)
        if op.response is not None and op.response.schema_ is not None:
            yield from self.check_schema(op.response.schema_, path + ("response", "schema"))
        for status, schema in op.errors.items():
            yield from self.check_schema(schema, path + ("errors", status))
        if op.streaming is not None:
            yield from self.check_schema(op.streaming.item, path + ("streaming", "item"))
            if op.response is not None:
                yield self.error(
                    path + ("streaming",),
                    "an operation either streams or returns a `response`, not both",
                )
            if op.pagination is not None:
                yield self.error(path + ("streaming",), "a streaming operation cannot be paginated")
        if op.pagination is not None and (op.response is None or not op.response.many):
            yield self.error(
                path + ("pagination",),
                "pagination needs `response: {schema: ..., many: true}` (the type of each item)",
            )
        for key in op.example:
            if key not in _argument_names(self.spec, op):
                yield self.error(path + ("example", key), f"{key!r} is not an argument of {name}")
        if op.body is not None and op.method in ("GET", "HEAD"):
            yield self.warning(
                path + ("body",),
                f"a {op.method} request with a body is unusual; many servers ignore it",
            )

    def check_body(self, op: Operation, path: Path) -> Iterator[Diagnostic]:
        if op.body is None:
            return
        bpath = path + ("body", "schema")
        yield from self.check_schema(op.body.schema_, bpath)
        properties = _body_properties(self.spec, op)
        if properties is None:
            if "body" in op.params:
                yield self.error(
                    path + ("params", "body"),
                    "a parameter named 'body' collides with the `body` argument "
                    "of a non-object body",
                )
            if op.body.fixed:
                yield self.error(
                    path + ("body", "fixed"), "`fixed` needs an object body with properties"
                )
            return
        params = {k for k in op.params}
        for wire in properties:
            python = field_name(wire)
            if python in params:
                yield self.error(
                    bpath,
                    f"body property {wire!r} and parameter {python!r} would be the same argument",
                )
            if python in RESERVED_ARGUMENTS:
                yield self.error(
                    bpath, f"body property {wire!r} would shadow the client argument {python!r}"
                )
        for key in op.body.fixed:
            if key not in properties:
                yield self.error(
                    path + ("body", "fixed", key), f"{key!r} is not a property of the body"
                )

    # -- roles ----------------------------------------------------------------------------

    def check_roles(self) -> Iterator[Diagnostic]:
        roles = self.spec.roles
        ops = self.spec.operations
        if roles.source is not None:
            target = ops.get(roles.source.read)
            path: Path = ("roles", "source", "read")
            if target is None or target.skip or roles.source.read in self.spec.skip:
                yield self.error(path, f"no generated operation is named {roles.source.read!r}")
            elif not (target.pagination or (target.response and target.response.many)):
                yield self.error(
                    path, f"{roles.source.read!r} must return a list or pages of records"
                )
        if roles.sink is not None:
            target = ops.get(roles.sink.write)
            path = ("roles", "sink", "write")
            if target is None or target.skip or roles.sink.write in self.spec.skip:
                yield self.error(path, f"no generated operation is named {roles.sink.write!r}")
            elif target.body is None:
                yield self.error(path, f"{roles.sink.write!r} must send a body (the record)")


def value_fits(type_name: str, value: Any) -> bool:
    """Whether a default or enum value is of a scalar type (True for other types)."""
    expected = _SCALAR_TYPES.get(type_name)
    if expected is None:
        return True
    if isinstance(value, bool) and type_name != "boolean":
        return False
    return isinstance(value, expected)  # type: ignore[arg-type]


def _body_properties(spec: Spec, op: Operation) -> dict[str, Schema] | None:
    """The properties of an object body, following one `$ref`; None for other bodies."""
    if op.body is None:
        return None
    schema = op.body.schema_
    if schema.ref is not None:
        target = spec.schemas.get(schema.ref)
        if target is None:
            return None
        schema = target
    return schema.properties if schema.properties else None


def _argument_names(spec: Spec, op: Operation) -> set[str]:
    names = set(op.params)
    if op.body is not None:
        properties = _body_properties(spec, op)
        names |= {field_name(k) for k in properties} if properties is not None else {"body"}
    return names


body_properties = _body_properties
__all__ = ["Param", "body_properties", "check_spec"]


def _is_bare_ref(schema: Schema) -> bool:
    """A schema that only names another one."""
    return schema.ref is not None and not (
        schema.properties or schema.items or schema.one_of or schema.any_of
    )


def _refs(schema: TypeFields) -> set[str]:
    """Schema names a schema refers to, not looking inside object properties."""
    found = {schema.ref} if schema.ref else set()
    for child in [schema.items, *(schema.one_of or []), *(schema.any_of or [])]:
        if child is not None:
            found |= _refs(child)
    if isinstance(schema, Schema) and isinstance(schema.additional_properties, Schema):
        found |= _refs(schema.additional_properties)
    return found
