"""The intermediate representation: a spec normalised into what templates lay out.

Everything a template needs is decided here — identifiers made safe, Python annotations
resolved, defaults merged, imports computed — so templates hold layout and no logic.
Values that end up in generated code stay Python values; the renderer turns them into
literals with ``repr`` (never by pasting text), so no spec string can become code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from builder import __version__
from builder.imports import import_sections
from builder.llm_fixtures import llm_cases
from builder.naming import field_name, pascal_case, snake_case, unique
from builder.samples import sample_value
from builder.spec.checks import body_properties
from builder.spec.kinds import DRIVER_MODULES, TRANSPORTS
from builder.spec.models import Operation, Param, Query, Retry, Schema, Spec, TypeFields

_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "any": "Any"}
_FORMATS = {
    "date-time": "datetime",
    "date": "date",
    "time": "time",
    "uuid": "UUID",
    "binary": "bytes",
}
_TYPE_NAMES = frozenset(
    {
        "date",
        "datetime",
        "time",
        "UUID",
        "list",
        "dict",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "type",
    }
)
# Pure functions of a name, called for every property and parameter of every schema: the
# same wire names (`id`, `object`, `created`...) come back thousands of times in a large
# document, so each is worked out once.
_pascal_case = functools.lru_cache(maxsize=1 << 16)(pascal_case)
_field_name = functools.lru_cache(maxsize=1 << 16)(field_name)
_PARSED = frozenset({"date-time", "date", "time", "uuid"})  # formats typed other than str
_FORMAT_IMPORTS = {
    "datetime": ("datetime", "datetime"),
    "date": ("datetime", "date"),
    "time": ("datetime", "time"),
    "UUID": ("uuid", "UUID"),
}


@dataclass(frozen=True)
class ModelField:
    name: str  # Python attribute
    wire_name: str  # JSON key
    annotation: str
    required: bool
    default: Any  # a Python value for the literal; ignored when required
    has_default: bool
    description: str
    constraints: dict[str, Any]
    # A default written as text for a type parsed from text (a date-time, a uuid): pydantic
    # parses it like a value that came in, so the attribute holds the type it is annotated.
    parse_default: bool = False

    @property
    def field_args(self) -> dict[str, Any]:
        """Keyword arguments of ``Field(...)``, in a fixed order."""
        args: dict[str, Any] = {}
        if not self.required:
            args["default"] = self.default
        if self.name != self.wire_name:
            args["alias"] = self.wire_name
        if self.parse_default:
            args["validate_default"] = True
        return args | self.constraints

    @property
    def needs_field(self) -> bool:
        return bool(self.constraints or self.name != self.wire_name or self.parse_default)


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    fields: list[ModelField] = field(default_factory=list)
    alias_of: str | None = None  # a non-object schema: `Name = <annotation>`
    extra: str = "allow"
    # An alias that refers to itself (a tree of dicts, say): a TypeAliasType whose value
    # is evaluated lazily, so it may name itself.
    recursive: bool = False


@dataclass(frozen=True)
class Argument:
    name: str
    wire_name: str
    location: str  # path | query | header | cookie | body
    annotation: str
    required: bool
    default: Any
    description: str
    example: Any


@dataclass(frozen=True)
class OperationIR:
    name: str
    constant: str  # module-level name of its Operation object
    method: str
    path: str
    summary: str
    description: str
    style: str  # call | paginate | stream
    arguments: list[Argument]
    item_annotation: str  # what a call returns, or the type of each item / chunk
    decoder: str | None  # the annotation the Decoder validates against (None: raw)
    response_kind: str
    body_mode: str  # none | fields | whole
    fixed_body: dict[str, Any]
    retry: dict[str, Any] | None
    timeout: float | None
    pagination: dict[str, Any] | None
    stream: dict[str, Any] | None
    deprecated: bool
    example: dict[str, Any]
    sample_response: Any  # a body the test scaffold serves
    tags: list[str]
    record_annotation: str  # one record, for the Source role: the item of a list or page
    retries_503: bool  # whether a 503 is retried under the scaffold's two-attempt policy
    example_path: str  # the path with the example's path arguments filled in
    empty_page: Any  # a page with no items (pagination tests)
    body_kind: str = "json"  # json | form | multipart | binary | text
    media_type: str | None = None
    styles: dict[str, tuple[str, bool]] = field(default_factory=dict)  # query wire name -> style
    usage: dict[str, Any] | None = None  # UsageMap keywords: where tracing finds model/tokens

    def where(self, location: str) -> list[Argument]:
        return [a for a in self.arguments if a.location == location]

    decoder_runtime: str | None = None  # the Decoder's argument: a type, or `lazy=` a function
    # Documented error bodies: status key (404 or "4XX"/"default") -> annotation, then the
    # Decoder argument for it (filled in with decoder_runtime).
    error_types: dict[int | str, str] = field(default_factory=dict)
    error_runtime: dict[int | str, str] = field(default_factory=dict)

    @property
    def returns(self) -> str:
        return {"call": "{}", "paginate": "Pager[{}]", "stream": "Stream[{}]"}[self.style].format(
            self.item_annotation
        )

    @property
    def async_returns(self) -> str:
        pattern = {"call": "{}", "paginate": "AsyncPager[{}]", "stream": "AsyncStream[{}]"}
        return pattern[self.style].format(self.item_annotation)


@dataclass(frozen=True)
class SettingIR:
    name: str
    annotation: str
    python_type: str
    env: str | None
    default: Any
    required: bool
    secret: bool
    description: str


@dataclass(frozen=True)
class RoleIR:
    role: str  # source | sink
    operation: OperationIR


@dataclass(frozen=True)
class QueryIR:
    """A named SQL statement of a sql connector: one typed method."""

    name: str
    constant: str
    sql: str
    summary: str
    description: str
    arguments: list[Argument]
    returns: str  # what the method returns
    decoder_runtime: str | None  # the Decoder argument for one row (None: a statement)
    many: bool

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arguments)


@dataclass(frozen=True)
class DataKindIR:
    """What a data connector's class declares: its transport and the spec's kind block."""

    kind: str
    module: str  # the runtime transport module
    base_class: str
    options: dict[str, Any]
    record: str | None  # the model of each record
    record_runtime: str | None  # its Decoder argument


@dataclass(frozen=True)
class LlmMapIR:
    """One capability of the LLM role (chat, stream or embed), as runtime keyword arguments."""

    capability: str  # chat | stream | embed
    runtime_class: str  # ChatMap | StreamMap | EmbedMap
    operation: str  # the constant of the operation it calls
    fields: dict[str, Any]


@dataclass(frozen=True)
class Connector:
    name: str
    title: str
    description: str
    version: str
    builder_version: str
    spec: Spec = field(repr=False, compare=False)  # for the hash, computed when asked
    spec_file: str
    docs_url: str | None
    base_url: str | None
    class_name: str
    async_class_name: str
    settings: list[SettingIR]
    auth_class: str
    auth_kwargs: dict[str, Any]
    auth_kind: str
    headers: dict[str, str]
    timeout: float
    retry: dict[str, Any]
    rate_limit: tuple[float, float] | None
    circuit_breaker: tuple[int, float] | None
    quota_headers: dict[str, Any] | None
    models: list[Model]
    operations: list[OperationIR]
    skipped: list[tuple[str, str]]
    roles: list[RoleIR]
    model_imports: list[tuple[str, str]]  # (module, name) for models.py
    client_imports: dict[str, list[str]]  # module -> names for client.py
    used_models: list[str]  # model names client.py imports
    test_settings: dict[str, Any]  # values the test scaffold passes for required settings
    kind: str = "http"
    data: DataKindIR | None = None
    queries: list[QueryIR] = field(default_factory=list)
    llm_provider: str | None = None
    llm_defaults: dict[str, str] = field(default_factory=dict)  # default_model, ...
    llm_maps: list[LlmMapIR] = field(default_factory=list)
    pricing: dict[str, Any] | None = None  # as_of, source, models: name -> (input, output)
    llm_cases: dict[str, Any] | None = None  # fixtures of the generated LLM test suite
    max_response_bytes: int | None = None  # set when the spec differs from the runtime's

    @property
    def client_import_sections(self) -> list[list[tuple[str, str]]]:
        return import_sections(self._client_imports())

    @functools.cached_property
    def spec_hash(self) -> str:
        # Only generate and check need it: the diff of two large specs does not pay for it.
        return spec_hash(self.spec)

    @property
    def secret_setting_names(self) -> list[str]:
        return [s.name for s in self.settings if s.secret]

    @property
    def env_sample_setting(self) -> SettingIR | None:
        """A plain string setting with an env var: the scaffold shows it is read from there."""
        return next(
            (s for s in self.settings if s.env and not s.secret and s.python_type == "str"),
            None,
        )

    @property
    def decodes_records(self) -> bool:
        """Records are JSON typed by the spec's `record` model."""
        return (
            self.data is not None
            and self.data.record is not None
            and self.data.options.get("format", "json") == "json"
        )

    @property
    def is_messaging(self) -> bool:
        """A queue, stream or topic: messages are acknowledged."""
        return self.kind in ("redis_stream", "kafka", "amqp", "nats", "mqtt")

    @property
    def is_embeddings(self) -> bool:
        """A local embedding model: no Source or Sink, the embed() of the LLM role."""
        return self.kind == "sentence_transformers"

    @property
    def llm_capabilities(self) -> frozenset[str]:
        return frozenset(m.capability for m in self.llm_maps)

    @property
    def driver_modules(self) -> tuple[str, ...]:
        return DRIVER_MODULES.get(self.kind, ())

    @property
    def client_exports(self) -> tuple[str, ...]:
        """What __init__ re-exports from client.py."""
        if self.data is not None:
            return (self.class_name, "SETTINGS")
        return (self.class_name, self.async_class_name, "SERVICE", "SETTINGS")

    @property
    def init_import_sections(self) -> list[list[tuple[str, str]]]:
        imports = {(".client", n) for n in self.client_exports}
        if self.models:
            imports |= {("typing", "TYPE_CHECKING"), ("typing", "Any")}
        return import_sections(imports)

    @property
    def model_names_sorted(self) -> str:
        return import_sections((".models", m.name) for m in self.models)[0][0][1]

    @property
    def model_import_sections(self) -> list[list[tuple[str, str]]]:
        imports = set(self.model_imports) | {("__future__", "annotations")}
        if any(m.alias_of is None for m in self.models):
            imports |= {("pydantic", "BaseModel"), ("pydantic", "ConfigDict")}
        if any(m.recursive for m in self.models):
            imports.add(("typing_extensions", "TypeAliasType"))
        if any(f.needs_field for m in self.models for f in m.fields):
            imports.add(("pydantic", "Field"))
        return import_sections(imports)

    @property
    def test_import_sections(self) -> list[list[tuple[str, str]]]:
        imports = {("__future__", "annotations"), ("asyncio", ""), ("json", ""), ("httpx", "")}
        imports |= {("pytest", ""), ("respx", ""), ("pathlib", "Path"), ("typing", "Any")}
        imports |= {
            ("builder.runtime.errors", "NotFoundError"),
            ("builder.runtime.errors", "ServerError"),
        }
        imports |= {("builder.runtime.resilience", "RetryPolicy")}
        imports |= {
            (f"connectors.{self.name}", self.class_name),
            (f"connectors.{self.name}", self.async_class_name),
        }
        return import_sections(imports)

    def test_cases(self) -> str:
        """``tests/cases.json``: per operation, the example call and what the mock serves."""
        cases = []
        for op in self.operations:
            response: dict[str, Any] = {"kind": op.response_kind}
            if op.style == "stream" and op.stream is not None:
                response["kind"] = "stream"
                data = json.dumps(op.sample_response)
                if op.stream["framing"] == "sse":
                    event = f"event: {op.stream['events'][0]}\n" if op.stream["events"] else ""
                    done = f"data: {op.stream['done']}\n\n" if op.stream["done"] is not None else ""
                    response["body"] = f"{event}data: {data}\n\n{done}"
                    response["content_type"] = "text/event-stream"
                else:
                    response["body"] = data + "\n"
                    response["content_type"] = "application/x-ndjson"
            elif op.response_kind == "json":
                response["body"] = op.sample_response
                if (
                    op.style == "paginate"
                    and op.pagination
                    and op.pagination["style"] in ("offset", "page")
                ):
                    response["empty_page"] = op.empty_page
            arguments = {
                k: v.decode() if isinstance(v, bytes) else v for k, v in op.example.items()
            }
            cases.append(
                {
                    "name": op.name,
                    "method": op.method,
                    "path": op.example_path,
                    "style": op.style,
                    "arguments": arguments,
                    "bytes_arguments": [k for k, v in op.example.items() if isinstance(v, bytes)],
                    "response": response,
                    "retries_503": op.retries_503,
                }
            )
        return json.dumps({"base_url": self.base_url, "operations": cases}, indent=1) + "\n"

    def _client_imports(self) -> set[tuple[str, str]]:
        # httpx is only needed for annotations; importing it at run time happens through
        # builder.runtime, whose first import keeps httpx from loading its CLI.
        imports = {("__future__", "annotations"), ("typing", "TYPE_CHECKING")}
        imports |= {(m, n) for m, names in self.client_imports.items() for n in names}
        runtime = "builder.runtime"
        imports |= {
            (f"{runtime}.client", "SyncClient"),
            (f"{runtime}.client", "AsyncClient"),
            (f"{runtime}.config", "Setting"),
            (f"{runtime}.config", "resolve_settings"),
            (f"{runtime}.operation", "Service"),
            (f"{runtime}.resilience", "RetryPolicy"),
            (f"{runtime}.auth", self.auth_class),
        }
        if self.operations:
            imports.add((f"{runtime}.operation", "Operation"))
        source = self.role("source")
        if source is not None and "Any" in source.operation.record_annotation:
            imports.add(("typing", "Any"))
        styles = {op.style for op in self.operations}
        if any(op.decoder or op.error_types for op in self.operations):
            imports.add((f"{runtime}.operation", "Decoder"))
        if self.lazy_models:
            imports.add(("types", "ModuleType"))
        if any("GenericAlias(" in r for r in self._runtimes()):
            imports.add(("types", "GenericAlias"))
        if "paginate" in styles:
            imports |= {
                (f"{runtime}.client", "Pager"),
                (f"{runtime}.client", "AsyncPager"),
                (f"{runtime}.pagination", "Pagination"),
            }
        if "stream" in styles:
            imports |= {
                (f"{runtime}.client", "Stream"),
                (f"{runtime}.client", "AsyncStream"),
                (f"{runtime}.operation", "StreamFormat"),
            }
        if self.quota_headers:
            imports.add((f"{runtime}.operation", "QuotaHeaders"))
        if self.llm_provider:
            imports |= {(f"{runtime}.llm", n) for n in ("LLMRole", "LLMMixin", "AsyncLLMMixin")}
            imports |= {(f"{runtime}.llm", m.runtime_class) for m in self.llm_maps}
        if self.pricing:
            imports.add((f"{runtime}.pricing", "Pricing"))
        if any(op.usage for op in self.operations):
            imports.add((f"{runtime}.tracing", "UsageMap"))
        if self.role("source"):
            imports |= {
                (f"{runtime}.roles", "SourceMixin"),
                (f"{runtime}.roles", "AsyncSourceMixin"),
            }
            imports |= {("collections.abc", "Iterator"), ("collections.abc", "AsyncIterator")}
        if self.role("sink"):
            imports |= {(f"{runtime}.roles", "SinkMixin"), (f"{runtime}.roles", "AsyncSinkMixin")}
            imports |= {("collections.abc", "Iterable"), ("typing", "Any")}
        return imports

    @property
    def type_checking_sections(self) -> list[list[tuple[str, str]]]:
        """Imported for type checkers only: at run time models load on first use."""
        imports = {("httpx", ""), ("builder.runtime.tracing", "Tracer")}
        imports |= {(".models", name) for name in self.used_models}
        return import_sections(imports)

    @property
    def lazy_models(self) -> bool:
        return any("_models()" in r for r in self._runtimes())

    def _runtimes(self) -> list[str]:
        """Every Decoder argument of the client module."""
        runtimes = [op.decoder_runtime or "" for op in self.operations]
        runtimes += [q.decoder_runtime or "" for q in self.queries]
        if self.data is not None and self.data.record_runtime is not None:
            runtimes.append(self.data.record_runtime)
        return runtimes + [r for op in self.operations for r in op.error_runtime.values()]

    @property
    def data_import_sections(self) -> list[list[tuple[str, str]]]:
        """client.py of a data connector."""
        assert self.data is not None
        imports = {
            ("__future__", "annotations"),
            ("builder.runtime.config", "Setting"),
            ("builder.runtime.config", "resolve_settings"),
            (self.data.module, self.data.base_class),
        }
        imports |= {(m, n) for m, names in self.client_imports.items() for n in names}
        if self.queries:
            imports.add((self.data.module, "NamedQuery"))
        runtimes = [r for r in self._runtimes() if r]
        if runtimes:
            imports.add(("builder.runtime.operation", "Decoder"))
        if self.lazy_models:
            imports.add(("types", "ModuleType"))
        if any("GenericAlias(" in r for r in runtimes):
            imports.add(("types", "GenericAlias"))
        if self.used_models:
            imports.add(("typing", "TYPE_CHECKING"))
        return import_sections(imports)

    def role(self, name: str) -> RoleIR | None:
        return next((r for r in self.roles if r.role == name), None)


def spec_hash(spec: Spec) -> str:
    """A hash of the spec's meaning (not its formatting) and the builder version."""
    # Key order is kept: the order of operations, params and properties shapes the output.
    canonical = spec.model_dump_json(by_alias=True)  # pydantic-core: 1.7x model_dump + json.dumps
    return hashlib.sha256(f"{__version__}\n{canonical}".encode()).hexdigest()


def build(spec: Spec, spec_file: str, *, rendering: bool = True) -> Connector:
    """The IR of ``spec``. With ``rendering`` False, what only templates and test scaffolds
    use is not worked out (samples and examples, example paths, the lazy Decoder
    arguments, the LLM test fixtures: their fields are left empty or hold placeholders);
    everything else (names, annotations, requiredness, defaults, models) is the same as in
    the full IR. ``connector-builder diff`` reads only that, and does not pay for the rest."""
    return _Builder(spec, spec_file, rendering).connector()


class _Builder:
    def __init__(self, spec: Spec, spec_file: str, rendering: bool = True) -> None:
        self.spec = spec
        self.spec_file = spec_file
        self.rendering = rendering
        self.models: dict[str, Model] = {}
        self.model_names: set[str] = set(spec.schemas)
        self.imports: set[tuple[str, str]] = set()
        self.client_types: set[str] = set()

    # -- types ----------------------------------------------------------------------------

    def annotation(
        self, schema: TypeFields, owner: str, imports: set[tuple[str, str]], request: bool = False
    ) -> str:
        """The Python annotation for ``schema``; inline objects become named models.

        With ``request``, for what the caller sends, a model may also be given as a dict.
        """
        base = self._base_annotation(schema, owner, imports, request)
        if schema.nullable and base != "Any":
            return f"{base} | None"
        return base

    def _base_annotation(
        self, schema: TypeFields, owner: str, imports: set[tuple[str, str]], request: bool
    ) -> str:
        if schema.ref is not None:
            if request and self._is_object_model(schema.ref):
                imports.add(("typing", "Any"))
                return f"{schema.ref} | dict[str, Any]"
            return schema.ref
        if schema.enum is not None:
            imports.add(("typing", "Literal"))
            return f"Literal[{', '.join(repr(v) for v in schema.enum)}]"
        variants = schema.one_of or schema.any_of
        if variants:
            parts = [
                self.annotation(v, f"{owner}Variant{i + 1}", imports, request)
                for i, v in enumerate(variants)
            ]
            return _union(parts)
        kind = schema.type or (
            "object" if isinstance(schema, Schema) and schema.properties else "any"
        )
        if kind == "array":
            item = (
                self.annotation(schema.items, f"{owner}Item", imports, request)
                if schema.items
                else "Any"
            )
            if item == "Any":
                imports.add(("typing", "Any"))
            return f"list[{item}]"
        if kind == "object":
            if isinstance(schema, Schema) and schema.properties:
                name = unique(_pascal_case(owner) or "Model", self.model_names, sep="")
                self.add_model(name, schema)
                if request:
                    imports.add(("typing", "Any"))
                    return f"{name} | dict[str, Any]"
                return name
            extra = schema.additional_properties if isinstance(schema, Schema) else None
            if isinstance(extra, Schema):
                return f"dict[str, {self.annotation(extra, owner + 'Value', imports, request)}]"
            imports.add(("typing", "Any"))
            return "dict[str, Any]"
        if kind == "string" and schema.format in _FORMATS:
            python = _FORMATS[schema.format]
            if python in _FORMAT_IMPORTS:
                imports.add(_FORMAT_IMPORTS[python])
            if request and python != "bytes":
                return f"{python} | str"  # the wire form is accepted as it is
            return python
        if kind == "any":
            imports.add(("typing", "Any"))
        return _SCALARS[kind]

    def _is_object_model(self, name: str) -> bool:
        schema = self.spec.schemas.get(name)
        return schema is not None and bool(schema.properties)

    # -- models ---------------------------------------------------------------------------

    def add_model(self, name: str, schema: Schema) -> None:
        description = schema.description or schema.title or ""
        if not schema.properties:  # no fields: an alias (an empty object is a dict)
            self.models[name] = Model(
                name, description, alias_of=self.annotation(schema, name, self.imports)
            )
            return
        self.models[name] = Model(name, description)  # placeholder: keeps recursion finite
        fields = []
        taken: set[str] = set()
        for wire, prop in (schema.properties or {}).items():
            python = _field_name(wire)
            if python in _TYPE_NAMES:  # in the class body it would shadow the type it names
                python += "_"
            python = unique(python, taken)
            annotation = self.annotation(prop, f"{name}{_pascal_case(wire)}", self.imports)
            # A write-only field (a password) is sent, never returned: it is not required.
            required = wire in schema.required and not prop.write_only
            has_default = prop.default is not None
            if (
                not required
                and not has_default
                and not annotation.endswith("| None")
                and annotation != "Any"
            ):
                annotation = f"{annotation} | None"
            fields.append(
                ModelField(
                    name=python,
                    wire_name=wire,
                    annotation=annotation,
                    required=required and not has_default,
                    default=prop.default,
                    has_default=has_default,
                    description=prop.description or "",
                    constraints=_constraints(prop),
                    parse_default=isinstance(prop.default, str) and prop.format in _PARSED,
                )
            )
        extra = "allow"
        if schema.additional_properties is False:
            extra = "forbid"
        self.models[name] = Model(name, description, fields, extra=extra)

    # -- operations -----------------------------------------------------------------------

    def argument(
        self, name: str, param: Param, op: Operation, in_path: set[str], owner: str
    ) -> Argument:
        wire = param.name or name
        location = param.in_ or ("path" if wire in in_path else "query")
        annotation = self.annotation(param, owner, self.client_imports_set, request=True)
        required = location == "path" or param.required is True
        if not required and param.default is None and not annotation.endswith("| None"):
            annotation += " | None"
        example = op.example.get(name, param.example)
        if example is None and required and self.rendering:
            example = sample_value(param, self.spec.schemas)
        return Argument(
            name=name,
            wire_name=wire,
            location=location,
            annotation=annotation,
            required=required,
            default=param.default,
            description=param.description or "",
            example=example,
        )

    def operation(self, name: str, op: Operation) -> OperationIR:
        import re

        in_path = set(re.findall(r"\{([^{}]*)\}", op.path))
        owner = _pascal_case(name)
        arguments = [
            self.argument(k, p, op, in_path, f"{owner}{_pascal_case(k)}")
            for k, p in op.params.items()
        ]
        body_mode = "none"
        if op.body is not None:
            props = body_properties(self.spec, op)
            if props is not None:
                body_mode = "fields"
                schema = (
                    op.body.schema_
                    if op.body.schema_.properties
                    else self.spec.schemas[op.body.schema_.ref or ""]
                )
                for wire, prop in props.items():
                    if wire in op.body.fixed or prop.read_only:
                        continue  # fixed by the spec, or set by the service only
                    python = _field_name(wire)
                    required = wire in schema.required and prop.default is None
                    annotation = self.annotation(
                        prop, f"{owner}{_pascal_case(wire)}", self.client_imports_set, request=True
                    )
                    if not required and not annotation.endswith("| None") and annotation != "Any":
                        annotation += " | None"
                    example = op.example.get(python, prop.example)
                    if example is None and required and self.rendering:
                        example = sample_value(prop, self.spec.schemas)
                    arguments.append(
                        Argument(
                            python,
                            wire,
                            "body",
                            annotation,
                            required,
                            prop.default if not required else None,
                            prop.description or "",
                            example,
                        )
                    )
            else:
                body_mode = "whole"
                annotation = self.annotation(
                    op.body.schema_, f"{owner}Body", self.client_imports_set, request=True
                )
                example = op.example.get("body")
                if example is None and self.rendering:
                    example = sample_value(op.body.schema_, self.spec.schemas)
                if annotation == "bytes" and isinstance(example, str):
                    example = example.encode()
                arguments.append(
                    Argument(
                        "body",
                        "body",
                        "body",
                        annotation,
                        True,
                        None,
                        op.body.schema_.description or "The request body.",
                        example,
                    )
                )
        # Required arguments first, each group in declaration order.
        arguments.sort(key=lambda a: not a.required)

        style, decoder, item, kind = "call", None, "None", "none"
        record = "Any"
        pagination = stream = None
        sample: Any = None
        empty_page: Any = []
        if op.streaming is not None:
            style, kind = "stream", "json"
            item = self.annotation(op.streaming.item, f"{owner}Chunk", self.client_imports_set)
            decoder = item
            stream = {
                "framing": op.streaming.format,
                "done": op.streaming.done,
                "events": tuple(op.streaming.events),
                "error_events": tuple(op.streaming.error_events),
            }
            sample = sample_value(op.streaming.item, self.spec.schemas) if self.rendering else None
        elif op.response is not None:
            kind = op.response.content
            if kind == "json":
                response_schema = op.response.schema_
                single = (
                    self.annotation(response_schema, f"{owner}Response", self.client_imports_set)
                    if response_schema
                    else "Any"
                )
                if single == "Any":
                    self.client_imports_set.add(("typing", "Any"))
                item = record = single
                decoder = f"list[{single}]" if op.response.many else single
                if response_schema is None:
                    decoder = None
                sample = (
                    sample_value(response_schema, self.spec.schemas)
                    if response_schema and self.rendering
                    else {"ok": True}
                )
                if op.response.many:
                    sample = [sample]
                    if not op.pagination:
                        item = f"list[{single}]"
            elif kind == "text":
                item, sample = "str", "text"
            elif kind == "bytes":
                item, sample = "bytes", "bytes"
        if op.pagination is not None:
            style = "paginate"
            p = op.pagination
            pagination = {
                "style": p.style,
                "items_path": _path(p.items),
                "next_path": _path(p.next),
                "cursor_param": p.cursor_param,
                "cursor_from_item": p.cursor_from_item,
                "has_more_path": _path(p.has_more),
                "offset_param": p.offset_param,
                "page_param": p.page_param,
                "size_param": p.size_param,
                "page_size": p.page_size,
                "start_page": p.start_page,
            }
            defaults = {
                "cursor_param": "cursor",
                "offset_param": "offset",
                "page_param": "page",
                "start_page": 1,
            }
            pagination = {
                k: v for k, v in pagination.items() if v not in (None, ()) and defaults.get(k) != v
            }
            if p.items:
                for key in reversed(p.items.split(".")):
                    sample, empty_page = {key: sample}, {key: empty_page}
        return OperationIR(
            name=name,
            constant=f"_{name.upper()}",
            method=op.method,
            path=op.path,
            summary=(op.summary or "").strip(),
            description=(op.description or "").strip(),
            style=style,
            arguments=arguments,
            item_annotation=item,
            decoder=decoder,
            response_kind=kind,
            body_mode=body_mode,
            fixed_body=dict(op.body.fixed) if op.body else {},
            retry=_retry(op.retry) if op.retry else None,
            timeout=op.timeout,
            pagination=pagination,
            stream=stream,
            deprecated=op.deprecated,
            example={a.name: a.example for a in arguments if a.example is not None},
            sample_response=sample,
            tags=list(op.tags),
            record_annotation=record,
            retries_503=op.retry is None or (op.retry.attempts > 1 and 503 in op.retry.retry_on),
            error_types={
                (int(key) if key.isdigit() else key): self.annotation(
                    schema, f"{owner}Error{key}", self.client_imports_set
                )
                for key, schema in op.errors.items()
            },
            body_kind=op.body.content_type if op.body else "json",
            media_type=op.body.media_type if op.body else None,
            styles={
                (p.name or k): (p.style or "form", p.explode)
                for k, p in op.params.items()
                if (p.in_ or "query") == "query" and (p.style is not None or not p.explode)
            },
            example_path=_fill_path(
                op.path, {a.wire_name: a.example for a in arguments if a.location == "path"}
            )
            if self.rendering
            else op.path,
            empty_page=empty_page,
        )

    # -- the whole connector --------------------------------------------------------------

    def connector(self) -> Connector:
        spec = self.spec
        self.client_imports_set: set[tuple[str, str]] = set()
        for name, schema in spec.schemas.items():
            if name not in self.models:
                self.add_model(name, schema)
        if spec.kind != "http":
            return self.data_connector()
        operations = [
            self.operation(n, op)
            for n, op in spec.operations.items()
            if op.skip is None and n not in spec.skip
        ]
        skipped = [(n, op.skip) for n, op in spec.operations.items() if op.skip is not None]
        skipped += [(n, reason) for n, reason in spec.skip.items()]

        settings = [self.setting(n, s) for n, s in spec.config.items()]
        if "base_url" not in spec.config:
            settings.append(
                SettingIR(
                    "base_url",
                    "str | None",
                    "str",
                    f"{spec.name.upper()}_BASE_URL",
                    spec.base_url,
                    False,
                    False,
                    "Override the service's base URL (e.g. for a proxy or a test server).",
                )
            )
        auth_class, auth_kwargs = _auth(spec)
        by_name = {o.name: o for o in operations}
        roles = []
        if spec.roles.source is not None:
            roles.append(RoleIR("source", by_name[spec.roles.source.read]))
        if spec.roles.sink is not None:
            roles.append(RoleIR("sink", by_name[spec.roles.sink.write]))

        d = spec.defaults
        model_names = set(self.models)
        used = sorted(
            {
                name
                for op in operations
                for name in _names_in(_op_annotations(op))
                if name in model_names
            }
        )
        for op in operations if self.rendering else ():
            if op.decoder is not None:
                object.__setattr__(op, "decoder_runtime", _decoder_runtime(op.decoder, model_names))
            for key, annotation in op.error_types.items():
                op.error_runtime[key] = _decoder_runtime(annotation, model_names)
        llm_maps = self.llm_maps(by_name)
        llm = spec.roles.llm
        pricing = spec.pricing
        return Connector(
            **self.shared(settings, self.client_imports_set, used),
            base_url=spec.base_url,
            auth_class=auth_class,
            auth_kwargs=auth_kwargs,
            auth_kind=spec.auth.type,
            headers=dict(spec.headers),
            timeout=d.timeout,
            retry=_retry(d.retry),
            rate_limit=(
                d.rate_limit.per_second,
                float(d.rate_limit.burst or max(1.0, d.rate_limit.per_second)),
            )
            if d.rate_limit
            else None,
            circuit_breaker=(d.circuit_breaker.failure_threshold, d.circuit_breaker.reset_timeout)
            if d.circuit_breaker
            else None,
            quota_headers=spec.rate_limit_headers.model_dump(exclude_defaults=True)
            | {"remaining": spec.rate_limit_headers.remaining}
            if spec.rate_limit_headers
            else None,
            operations=operations,
            skipped=skipped,
            roles=roles,
            test_settings={
                # A required base_url (an OpenAI-compatible server) is the spec's own.
                s.name: spec.base_url if s.name == "base_url" and spec.base_url else _test_value(s)
                for s in settings
                if s.required
            },
            llm_provider=llm.provider if llm else None,
            llm_defaults={
                k: v
                for k, v in (
                    ("default_model", llm.default_model if llm else None),
                    ("default_embedding_model", llm.default_embedding_model if llm else None),
                )
                if v is not None
            },
            llm_maps=llm_maps,
            llm_cases=llm_cases(spec, spec.base_url or "") if self.rendering else None,
            max_response_bytes=d.max_response_bytes
            if "max_response_bytes" in d.model_fields_set
            else None,
            pricing={
                "as_of": pricing.as_of.isoformat(),
                "source": pricing.source,
                "models": {m: (p.input, p.output) for m, p in pricing.models.items()},
                "default": (pricing.default.input, pricing.default.output)
                if pricing.default
                else None,
            }
            if pricing
            else None,
        )

    def llm_maps(self, operations: dict[str, OperationIR]) -> list[LlmMapIR]:
        """The LLM role's maps, and on each operation they call, where tracing finds the
        model and the token counts (so a direct call is traced with usage and cost too)."""
        llm = self.spec.roles.llm
        if llm is None:
            return []
        maps = []
        for capability, runtime_class in (
            ("chat", "ChatMap"),
            ("stream", "StreamMap"),
            ("embed", "EmbedMap"),
        ):
            mapping = getattr(llm, capability)
            if mapping is None:
                continue
            op = operations[mapping.operation]
            fields = mapping.model_dump(exclude={"operation"})
            # The operation's own fixed fields (stream: true) are sent by the role too;
            # the map's `fixed` wins where both say something.
            fields["fixed"] = {**op.fixed_body, **fields["fixed"]}
            maps.append(LlmMapIR(capability, runtime_class, op.constant, fields))
            usage = {"request_model": mapping.model}
            for key in ("response_model", "tokens_input", "tokens_output", "finish_reason"):
                if fields.get(key) is not None:
                    usage["model" if key == "response_model" else key] = fields[key]
            if capability == "stream":
                usage["text"] = fields["text"]
            object.__setattr__(op, "usage", usage)
        return maps

    # -- data kinds -----------------------------------------------------------------------

    def data_connector(self) -> Connector:
        """A connector of a non-HTTP kind: a subclass of its kind's runtime transport."""
        spec = self.spec
        module, base_class = TRANSPORTS[spec.kind]
        options = spec.kind_options()
        assert options is not None  # the checks require a block where there is no default
        model_names = set(self.models)
        self.data_imports: set[tuple[str, str]] = set()
        queries = [self.query(name, query, model_names) for name, query in spec.queries.items()]
        record_runtime = (
            _decoder_runtime(spec.record, model_names) if spec.record is not None else None
        )
        settings = [self.setting(n, setting) for n, setting in spec.settings().items()]
        model_names = set(self.models)  # with the row models the queries added
        used = sorted(
            {
                name
                for q in queries
                for text in (q.returns, *(a.annotation for a in q.arguments))
                for name in _names_in(text)
                if name in model_names
            }
        )
        return Connector(
            **self.shared(settings, self.data_imports, used),
            base_url=None,
            auth_class="NoAuth",
            auth_kwargs={},
            auth_kind="none",
            headers={},
            timeout=spec.defaults.timeout,
            retry=_retry(spec.defaults.retry),
            rate_limit=None,
            circuit_breaker=None,
            quota_headers=None,
            operations=[],
            skipped=[],
            roles=[],
            test_settings={s.name: _test_value(s) for s in settings if s.required},
            kind=spec.kind,
            data=DataKindIR(
                kind=spec.kind,
                module=module,
                base_class=base_class,
                options=options.model_dump(mode="json"),
                record=spec.record,
                record_runtime=record_runtime,
            ),
            queries=queries,
        )

    def shared(
        self, settings: list[SettingIR], imports: set[tuple[str, str]], used: list[str]
    ) -> dict[str, Any]:
        """The fields of a Connector that every kind fills the same way."""
        spec = self.spec
        class_name = spec.class_name or _pascal_case(spec.name)
        grouped: dict[str, set[str]] = {}
        for module, imported in imports:
            grouped.setdefault(module, set()).add(imported)
        return {
            "name": spec.name,
            "title": spec.title,
            "description": (spec.description or "").strip(),
            "version": spec.version,
            "builder_version": __version__,
            "spec": spec,
            "spec_file": self.spec_file,
            "docs_url": spec.docs_url,
            "class_name": class_name,
            "async_class_name": f"Async{class_name}",
            "settings": settings,
            "models": _ordered(self.models),
            "model_imports": sorted(self.imports),
            "client_imports": {k: sorted(v) for k, v in sorted(grouped.items())},
            "used_models": used,
        }

    def query(self, name: str, query: Query, model_names: set[str]) -> QueryIR:
        owner = _pascal_case(name)
        arguments = []
        for param_name, param in query.params.items():
            annotation = self.annotation(
                param, f"{owner}{_pascal_case(param_name)}", self.data_imports, request=True
            )
            required = param.required if param.required is not None else param.default is None
            if not required and param.default is None and not annotation.endswith("| None"):
                annotation += " | None"
            arguments.append(
                Argument(
                    name=param_name,
                    wire_name=param_name,
                    location="sql",
                    annotation=annotation,
                    required=required,
                    default=param.default,
                    description=param.description or "",
                    example=query.example.get(param_name),
                )
            )
        arguments.sort(key=lambda a: not a.required)  # required ones first, for readability
        decoder_runtime = None
        if query.result is None:
            returns = "int"
        else:
            row = self.annotation(query.result.schema_, f"{owner}Row", self.data_imports)
            decoder_runtime = _decoder_runtime(row, model_names | set(self.models))
            returns = f"list[{row}]" if query.result.many else f"{row} | None"
        return QueryIR(
            name=name,
            constant=snake_case(name).upper(),
            sql=query.sql,
            summary=(query.summary or "").strip(),
            description=(query.description or "").strip(),
            arguments=arguments,
            returns=returns,
            decoder_runtime=decoder_runtime,
            many=query.result.many if query.result is not None else False,
        )

    def setting(self, name: str, setting: Any) -> SettingIR:
        python = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}[
            setting.type
        ]
        required = setting.required if setting.required is not None else setting.default is None
        return SettingIR(
            name=name,
            annotation=f"{python} | None",
            python_type=python,
            env=setting.env,
            default=setting.default,
            required=required,
            secret=setting.secret,
            description=(setting.description or "").strip(),
        )


def _fill_path(path: str, values: dict[str, Any]) -> str:
    from urllib.parse import quote

    for wire, value in values.items():
        text = "true" if value is True else "false" if value is False else str(value)
        path = path.replace("{" + wire + "}", quote(text, safe=""))
    return path


def _test_value(setting: SettingIR) -> Any:
    if setting.default is not None:
        return setting.default
    samples = {"str": f"test-{setting.name}", "int": 1, "float": 1.0, "bool": True}
    return samples[setting.python_type]


def _constraints(schema: TypeFields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in (
        ("minimum", "ge"),
        ("maximum", "le"),
        ("min_length", "min_length"),
        ("max_length", "max_length"),
        ("pattern", "pattern"),
        ("min_items", "min_length"),
        ("max_items", "max_length"),
    ):
        value = getattr(schema, key)
        if value is not None:
            out[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return out


def _path(dotted: str | None) -> tuple[str, ...]:
    return tuple(dotted.split(".")) if dotted else ()


def _retry(retry: Retry) -> dict[str, Any]:
    statuses = sorted(v for v in retry.retry_on if isinstance(v, int))
    return {
        "attempts": retry.attempts,
        "initial_delay": retry.initial_delay,
        "max_delay": retry.max_delay,
        "multiplier": retry.multiplier,
        "jitter": retry.jitter,
        "retry_on_status": statuses,
        "retry_on_timeout": "timeout" in retry.retry_on,
        "retry_on_connection_error": "connection_error" in retry.retry_on,
        "respect_retry_after": retry.respect_retry_after,
        "max_retry_after": retry.max_retry_after,
    }


def _auth(spec: Spec) -> tuple[str, dict[str, Any]]:
    auth = spec.auth

    def template(text: str) -> str:
        # "{config.token}" in the spec is "{token}" for the runtime; other braces are literal.
        out, i = [], 0
        import re

        for match in re.finditer(r"\{config\.([a-z_][a-z0-9_]*)\}|[{}]", text):
            out.append(text[i : match.start()])
            out.append("{" + match.group(1) + "}" if match.group(1) else match.group(0) * 2)
            i = match.end()
        out.append(text[i:])
        return "".join(out)

    if auth.type == "api_key":
        return "ApiKeyAuth", {
            "name": auth.name,
            "value": template(auth.value),
            "location": auth.in_,
        }
    if auth.type == "bearer":
        kwargs = {"token": template(auth.token)}
        if auth.scheme != "Bearer":
            kwargs["scheme"] = auth.scheme
        return "BearerAuth", kwargs
    if auth.type == "basic":
        return "BasicAuth", {
            "username": template(auth.username),
            "password": template(auth.password),
        }
    if auth.type == "custom":
        return "CustomAuth", {}
    if auth.type == "oauth2_client_credentials":
        return "OAuth2ClientCredentials", {
            "token_url": auth.token_url,
            "client_id": template(auth.client_id),
            "client_secret": template(auth.client_secret),
            "scopes": tuple(auth.scopes),
        }
    return "NoAuth", {}


def _op_annotations(op: OperationIR) -> str:
    return " ".join([op.item_annotation, op.decoder or ""] + [a.annotation for a in op.arguments])


def _union(parts: list[str]) -> str:
    """``A | B`` from annotations that may be unions already, each member once."""
    return _union_of(tuple(parts))


@functools.lru_cache(maxsize=1 << 14)
def _union_of(parts: tuple[str, ...]) -> str:
    members: list[str] = []

    def flatten(node: ast.expr) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            flatten(node.left)
            flatten(node.right)
        else:
            members.append(ast.get_source_segment(source, node) or ast.unparse(node))

    for source in parts:
        flatten(ast.parse(source, mode="eval").body)
    return " | ".join(dict.fromkeys(members))


def _decoder_runtime(annotation: str, models: set[str]) -> str:
    """``list[Issue]`` -> ``lazy=lambda: list[_models().Issue]``: models load on first use."""
    tree = ast.parse(annotation, mode="eval")

    class Lazify(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in models:
                call = ast.Call(ast.Name("_models", ast.Load()), [], [])
                return ast.Attribute(call, node.id, ast.Load())
            return node

    many = ""
    body = tree.body
    if (
        isinstance(body, ast.Subscript)
        and isinstance(body.value, ast.Name)
        and body.value.id == "list"
    ):
        body, many = body.slice, ", many=True"
    lazy = Lazify().visit(body)
    if not any(isinstance(n, ast.Call) for n in ast.walk(lazy)):
        return annotation
    # `list[_models().X]` is not a type expression for a type checker: spell it GenericAlias.
    lazy = _Generic().visit(lazy)
    return f"lazy=lambda: {ast.unparse(lazy)}{many}"


class _Generic(ast.NodeTransformer):
    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        if not any(isinstance(n, ast.Call) for n in ast.walk(node.slice)):
            return node
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        args = ast.Tuple(list(items), ast.Load())
        return ast.Call(ast.Name("GenericAlias", ast.Load()), [node.value, args], [])


def _names_in(annotation: str) -> set[str]:
    import re

    return set(re.findall(r"\b[A-Z][A-Za-z0-9]*\b", re.sub(r"Literal\[[^\]]*\]", "", annotation)))


def _ordered(models: dict[str, Model]) -> list[Model]:
    """Classes first, in declaration order (their annotations are evaluated lazily); then
    type aliases, each after the aliases it names (an alias is evaluated at import)."""
    aliases = {m.name: m for m in models.values() if m.alias_of is not None}
    recursive = _self_referring(aliases)
    models = {n: (replace(m, recursive=True) if n in recursive else m) for n, m in models.items()}
    classes = [m for m in models.values() if m.alias_of is None]
    classes += [m for m in models.values() if m.recursive]  # lazy: they may come early
    aliases = {m.name: m for m in models.values() if m.alias_of is not None and not m.recursive}
    ordered: list[Model] = []
    placed: set[str] = set()

    def place(name: str, trail: frozenset[str]) -> None:
        if name in placed or name in trail:
            return  # a cycle is reported by the spec checks
        alias = aliases[name]
        for other in sorted(_names_in(alias.alias_of or "") & set(aliases)):
            place(other, trail | {name})
        placed.add(name)
        ordered.append(alias)

    for name in aliases:
        place(name, frozenset())
    return classes + ordered


def _self_referring(aliases: dict[str, Model]) -> set[str]:
    """The aliases that lead back to themselves through other aliases."""
    edges = {n: _names_in(m.alias_of or "") & set(aliases) for n, m in aliases.items()}
    found: set[str] = set()
    for start in aliases:
        stack, seen = list(edges[start]), set()
        while stack:
            name = stack.pop()
            if name == start:
                found.add(start)
                break
            if name not in seen:
                seen.add(name)
                stack.extend(edges[name])
    return found


__all__ = ["Connector", "Model", "OperationIR", "build", "snake_case", "spec_hash"]
