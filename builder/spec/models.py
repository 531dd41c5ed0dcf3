"""Spec language v1, as pydantic models: the single source of truth for what a spec may say.

``connector-builder schema`` prints the JSON Schema of :class:`Spec`, for editors.

A bare word where a type is expected is shorthand: one of the built-in type names
(``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``, ``any``) or the
name of a schema declared under ``schemas``. So ``owner: string`` declares a string
parameter, and ``items: Label`` an array of ``Label`` models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from builder.spec.base import StrictModel
from builder.spec.kinds import (
    KIND_OPTIONS,
    STANDARD_SETTINGS,
    AmqpOptions,
    FilesystemOptions,
    KafkaOptions,
    Kind,
    KindOptions,
    MongoOptions,
    MqttOptions,
    NatsOptions,
    RedisStreamOptions,
    S3Options,
    SentenceTransformersOptions,
    SqlOptions,
)
from builder.spec.llm import LlmRole, Pricing

BUILTIN_TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")
IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
SCHEMA_NAME = r"^[A-Z][A-Za-z0-9]*$"

Scalar = str | int | float | bool
Format = Literal[
    "date-time", "date", "time", "uuid", "uri", "email", "binary", "byte", "int32", "int64",
    "float", "double",
]  # fmt: skip
FORMATS = frozenset(get_args(Format))


def _expand_type_word(value: Any) -> Any:
    if isinstance(value, str):
        return {"type": value} if value in BUILTIN_TYPES else {"$ref": value}
    return value


class TypeFields(StrictModel):
    """What a value may be: shared by schemas, parameters and settings of a body."""

    type: Literal["string", "integer", "number", "boolean", "array", "object", "any"] | None = (
        Field(None, description="A built-in type; omit when `$ref`, `oneOf` or `anyOf` is used.")
    )
    ref: str | None = Field(None, alias="$ref", description="The name of a schema under `schemas`.")
    description: str | None = None
    format: Format | None = None
    enum: list[Scalar] | None = Field(None, min_length=1)
    default: Any = None
    nullable: bool = Field(False, description="null is allowed as well as the type.")
    items: Schema | None = Field(None, description="The item type of an array.")
    one_of: list[Schema] | None = Field(None, alias="oneOf", min_length=1)
    any_of: list[Schema] | None = Field(None, alias="anyOf", min_length=1)
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = Field(None, alias="minLength", ge=0)
    max_length: int | None = Field(None, alias="maxLength", ge=0)
    pattern: str | None = None
    min_items: int | None = Field(None, alias="minItems", ge=0)
    max_items: int | None = Field(None, alias="maxItems", ge=0)
    example: Any = None
    deprecated: bool = False

    @field_validator("items", mode="before")
    @classmethod
    def _items_word(cls, value: Any) -> Any:
        return _expand_type_word(value)

    @field_validator("one_of", "any_of", mode="before")
    @classmethod
    def _variant_words(cls, value: Any) -> Any:
        return [_expand_type_word(v) for v in value] if isinstance(value, list) else value


class Schema(TypeFields):
    """A JSON Schema subset: objects become pydantic models, the rest Python types."""

    title: str | None = None
    properties: dict[str, Schema] | None = None
    required: list[str] = Field(default_factory=list)
    additional_properties: bool | Schema | None = Field(None, alias="additionalProperties")
    read_only: bool = Field(False, alias="readOnly")
    write_only: bool = Field(False, alias="writeOnly")

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return _expand_type_word(value)

    @field_validator("properties", mode="before")
    @classmethod
    def _property_words(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _expand_type_word(v) for k, v in value.items()}
        return value


class Param(TypeFields):
    """A path, query, header or cookie parameter. The key is its Python name."""

    in_: Literal["path", "query", "header", "cookie"] | None = Field(
        None,
        alias="in",
        description="Where it goes; default: path if the path names it, else query.",
    )
    name: str | None = Field(
        None, description="The name on the wire, when it differs from the key."
    )
    required: bool | None = Field(
        None, description="Default: true for path params, and for others without a default: false."
    )
    style: (
        Literal["form", "spaceDelimited", "pipeDelimited", "tabDelimited", "deepObject"] | None
    ) = Field(None, description="How an array or object query value is written (OpenAPI styles).")
    explode: bool = Field(True, description="false: an array is one comma-joined value.")

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return _expand_type_word(value)


class Body(StrictModel):
    """A request body. An object body's properties become keyword arguments."""

    schema_: Schema = Field(alias="schema")
    fixed: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields this operation always sends (e.g. stream: true); not arguments.",
    )
    content_type: Literal["json", "form", "multipart", "binary", "text"] = Field(
        "json", description="json, form (urlencoded), multipart (files), binary (bytes), text."
    )
    media_type: str | None = Field(None, description="The Content-Type of a binary or text body.")

    @field_validator("schema_", mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return _expand_type_word(value)


class Response(StrictModel):
    """What a successful call returns."""

    schema_: Schema | None = Field(None, alias="schema")
    many: bool = Field(False, description="The body (or each page) is a list of `schema`.")
    content: Literal["json", "text", "bytes", "none"] = "json"

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"schema": value}
        return value

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema_word(cls, value: Any) -> Any:
        return _expand_type_word(value)


class Pagination(StrictModel):
    """How results come in pages. The operation's method returns a lazy iterator of items."""

    style: Literal["link_header", "next_url", "cursor", "offset", "page"]
    items: str | None = Field(
        None, description="Dotted path to the list in each page; default: the body."
    )
    next: str | None = Field(
        None, description="next_url / cursor: dotted path to the next URL or cursor."
    )
    cursor_param: str = "cursor"
    cursor_from_item: str | None = Field(
        None, description="cursor: take the cursor from this field of the last item."
    )
    has_more: str | None = Field(
        None, description="Dotted path to a flag that says more pages follow."
    )
    offset_param: str = "offset"
    page_param: str = "page"
    size_param: str | None = Field(None, description="The query parameter for the page size.")
    page_size: int | None = Field(None, ge=1)
    start_page: int = 1

    @model_validator(mode="after")
    def _needs(self) -> Pagination:
        if self.style == "next_url" and not self.next:
            raise ValueError("style next_url needs `next`: where the next URL is in the body")
        if self.style == "cursor" and not (self.next or self.cursor_from_item):
            raise ValueError("style cursor needs `next` or `cursor_from_item`")
        return self


class Streaming(StrictModel):
    """A streamed response: the method yields one typed chunk per event or line."""

    format: Literal["sse", "ndjson"]
    item: Schema
    done: str | None = Field(
        None, description='An SSE data payload that ends the stream, e.g. "[DONE]".'
    )
    events: list[str] = Field(
        default_factory=list, description="SSE event names to keep; default all."
    )
    error_events: list[str] = Field(
        default_factory=list,
        description="SSE event names that carry a failure (Anthropic's `error`): one raises "
        "StreamError with the event's data.",
    )

    @field_validator("item", mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return _expand_type_word(value)


RetryOn = int | Literal["timeout", "connection_error"]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = (
    408,
    429,
    500,
    502,
    503,
    504,
    "timeout",
    "connection_error",
)


class Retry(StrictModel):
    """Retries with exponential backoff and jitter; `attempts` counts the first try."""

    attempts: int = Field(3, ge=1, le=20)
    initial_delay: float = Field(0.5, ge=0)
    max_delay: float = Field(30.0, ge=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: bool = True
    retry_on: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    respect_retry_after: bool = True
    max_retry_after: float = Field(60.0, ge=0)

    @field_validator("retry_on")
    @classmethod
    def _statuses(cls, value: list[RetryOn]) -> list[RetryOn]:
        for item in value:
            if isinstance(item, int) and not 400 <= item <= 599:
                raise ValueError(f"{item} is not an error status (400-599)")
        return value


class RateLimit(StrictModel):
    """A client-side token bucket."""

    per_second: float = Field(gt=0)
    burst: int | None = Field(None, ge=1)


class CircuitBreaker(StrictModel):
    """Fail fast after `failure_threshold` failures in a row, for `reset_timeout` seconds."""

    failure_threshold: int = Field(5, ge=1)
    reset_timeout: float = Field(30.0, gt=0)


class Defaults(StrictModel):
    """Behaviour every operation has unless it says otherwise."""

    timeout: float = Field(30.0, gt=0)
    retry: Retry = Field(default_factory=Retry)
    rate_limit: RateLimit | None = None
    circuit_breaker: CircuitBreaker | None = None
    max_response_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1024,
        description="A (non-streamed) response body larger than this raises "
        "ResponseTooLargeError instead of filling memory.",
    )


class RateLimitHeaders(StrictModel):
    """Headers that tell a quota is used up; such a response raises RateLimitedError."""

    remaining: str
    reset: str | None = None
    reset_format: Literal["epoch", "seconds"] = "epoch"


class Setting(StrictModel):
    """A setting of the connector: a keyword argument, else an env var, else the default."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    description: str | None = None
    default: str | int | float | bool | None = None
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret: bool = Field(False, description="Masked in repr, logs, errors and docs.")
    required: bool | None = Field(None, description="Default: true when there is no default.")


class NoAuth(StrictModel):
    type: Literal["none"]


class ApiKeyAuth(StrictModel):
    type: Literal["api_key"]
    name: str = Field(description="Header, query parameter or cookie name.")
    in_: Literal["header", "query", "cookie"] = Field("header", alias="in")
    value: str = Field(description='Template such as "{config.api_key}".')


class BearerAuth(StrictModel):
    type: Literal["bearer"]
    token: str = Field(description='Template such as "{config.token}".')
    scheme: str = "Bearer"


class BasicAuth(StrictModel):
    type: Literal["basic"]
    username: str
    password: str


class CustomAuth(StrictModel):
    type: Literal["custom"]
    description: str | None = Field(None, description="What the caller must pass as auth=.")


class OAuth2ClientCredentialsAuth(StrictModel):
    """OAuth2 client credentials: a token fetched from `token_url`, cached, renewed."""

    type: Literal["oauth2_client_credentials"]
    token_url: str = Field(pattern=r"^https?://")
    client_id: str = Field(description='Template such as "{config.client_id}".')
    client_secret: str = Field(description='Template such as "{config.client_secret}".')
    scopes: list[str] = Field(default_factory=list)


Auth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | BasicAuth | CustomAuth | OAuth2ClientCredentialsAuth,
    Field(discriminator="type"),
]


class Operation(StrictModel):
    """One call to the service; its key is the Python method name."""

    summary: str | None = None
    description: str | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    path: str = Field(pattern=r"^/")
    params: dict[str, Param] = Field(default_factory=dict)
    body: Body | None = None
    response: Response | None = None
    pagination: Pagination | None = None
    streaming: Streaming | None = None
    retry: Retry | None = Field(None, description="Replaces defaults.retry for this operation.")
    timeout: float | None = Field(None, gt=0)
    tags: list[str] = Field(default_factory=list)
    deprecated: bool = False
    example: dict[str, Any] = Field(
        default_factory=dict, description="Argument values for the docs' example and the tests."
    )
    skip: str | None = Field(
        None, description="Do not generate this operation; the reason is listed as a warning."
    )
    errors: dict[str, Schema] = Field(
        default_factory=dict,
        description='Documented error bodies by status ("404", "4XX", "default"): decoded '
        "into the raised error's `.error`.",
    )

    @field_validator("errors", mode="before")
    @classmethod
    def _error_words(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): _expand_type_word(v) for k, v in value.items()}
        return value

    @field_validator("errors")
    @classmethod
    def _statuses(cls, value: dict[str, Schema]) -> dict[str, Schema]:
        for key in value:
            if key != "default" and not re.fullmatch(r"[45](\d\d|XX)", key):
                raise ValueError(f"{key!r} is not an error status (400-599, 4XX, 5XX or default)")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class SourceRole(StrictModel):
    read: str = Field(description="An operation that returns a list or pages of records.")


class SinkRole(StrictModel):
    write: str = Field(description="An operation that writes one record from its body.")


class Roles(StrictModel):
    source: SourceRole | None = Field(
        None, description="HTTP kinds only: data kinds play their roles through their transport."
    )
    sink: SinkRole | None = None
    llm: LlmRole | None = None


class QueryResult(StrictModel):
    schema_: Schema = Field(alias="schema", description="The model of each row.")
    many: bool = Field(True, description="false: the query returns one row (or None).")

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"schema": value}
        return value

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema_word(cls, value: Any) -> Any:
        return _expand_type_word(value)


class QueryParam(TypeFields):
    """A typed parameter of a named query, bound by the driver (never spliced into SQL)."""

    required: bool | None = Field(None, description="Default: true unless it has a default.")

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return _expand_type_word(value)


class Query(StrictModel):
    """A named SQL statement: a typed method of the generated connector.

    Parameters are written ``:name`` in the SQL and bound by the driver.
    """

    summary: str | None = None
    description: str | None = None
    sql: str = Field(min_length=1)
    params: dict[str, QueryParam] = Field(default_factory=dict)
    result: QueryResult | None = Field(
        None, description="Rows as this model; none: a statement, returning the row count."
    )
    example: dict[str, Any] = Field(default_factory=dict)


class OpenAPISource(StrictModel):
    """Operations and schemas come from an OpenAPI document; the spec is an overlay."""

    openapi: str = Field(description="Path of the document, relative to the spec file.")
    include_tags: list[str] = Field(default_factory=list)
    exclude_tags: list[str] = Field(default_factory=list)
    include_paths: list[str] = Field(default_factory=list, description="Glob patterns.")
    exclude_paths: list[str] = Field(default_factory=list, description="Glob patterns.")
    include_operations: list[str] = Field(
        default_factory=list, description="operationIds or names."
    )
    exclude_operations: list[str] = Field(
        default_factory=list, description="operationIds or names."
    )
    rename: dict[str, str] = Field(
        default_factory=dict, description='operationId (or "METHOD /path") -> method name.'
    )


class Spec(StrictModel):
    """A connector spec, version 1."""

    spec_version: Literal[1]
    source: OpenAPISource | None = Field(
        None, description="Start from an OpenAPI document; `operations` then adjust its ones."
    )
    skip: dict[str, str] = Field(
        default_factory=dict,
        description="Operations not to generate, each with the reason (listed as warnings).",
    )
    name: str = Field(pattern=IDENTIFIER, description="Package name: connectors.<name>.")
    title: str
    class_name: str | None = Field(
        None, pattern=SCHEMA_NAME, description="The client class; default: the name in PascalCase."
    )
    description: str | None = None
    version: str = Field("0.1.0", pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    kind: Kind = "http"
    base_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="HTTP kinds: where the service lives."
    )
    docs_url: str | None = None
    config: dict[str, Setting] = Field(default_factory=dict)
    auth: Auth = Field(default_factory=lambda: NoAuth(type="none"))
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request.")
    defaults: Defaults = Field(default_factory=Defaults)
    rate_limit_headers: RateLimitHeaders | None = None
    schemas: dict[str, Schema] = Field(default_factory=dict)
    operations: dict[str, Operation] = Field(default_factory=dict)
    roles: Roles = Field(default_factory=Roles)
    pricing: Pricing | None = Field(None, description="LLM connectors: USD per 1M tokens.")
    record: str | None = Field(
        None,
        pattern=SCHEMA_NAME,
        description="Data kinds: the schema of each record read and written (typed payloads).",
    )
    queries: dict[str, Query] = Field(
        default_factory=dict, description="Kind sql: named statements, each a typed method."
    )
    sql: SqlOptions | None = None
    mongo: MongoOptions | None = None
    redis_stream: RedisStreamOptions | None = None
    kafka: KafkaOptions | None = None
    amqp: AmqpOptions | None = None
    nats: NatsOptions | None = None
    mqtt: MqttOptions | None = None
    s3: S3Options | None = None
    filesystem: FilesystemOptions | None = None
    sentence_transformers: SentenceTransformersOptions | None = None

    def settings(self) -> dict[str, Setting]:
        """Every setting of the connector. For a data kind: its standard settings, each
        adjusted by the `config` entry of the same name (only the fields that entry sets);
        a standard setting is optional unless the spec says otherwise."""
        if self.kind == "http":
            return dict(self.config)
        out = {}
        for name, standard in STANDARD_SETTINGS[self.kind].items():
            merged = dict(standard)
            given = self.config.get(name)
            if given is not None:
                merged |= given.model_dump(include=given.model_fields_set)
            merged.setdefault("required", False)
            out[name] = Setting.model_validate(merged)
        return out

    def kind_options(self) -> KindOptions | None:
        """The kind block (``sql:`` for kind sql, ...), its defaults when the spec has none."""
        if self.kind == "http":
            return None
        given = getattr(self, self.kind)
        if given is not None:
            return given  # type: ignore[no-any-return]
        options = KIND_OPTIONS[self.kind]
        return options() if "dialect" not in options.model_fields else None


TypeFields.model_rebuild()
Schema.model_rebuild()
Param.model_rebuild()
