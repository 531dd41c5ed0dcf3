"""The rule table: every kind of change the diff can report, with its verdict at each level.

A verdict never depends on anything but the rule and, for values, the direction the value
travels, so a rule set is a plain table. Released rule sets are frozen: a later builder that
judges something differently adds a ruleset and keeps the earlier ones as they are, so
``--ruleset 1`` gives the same verdicts after an upgrade. Ruleset 2 is ruleset 1 (the same
rule objects) plus the rules for data kinds, named queries, the LLM role and pricing.

Levels: ``wire`` is what the service receives and returns; ``python`` is what code using
the generated package sees. A rule with no verdict at a level does not touch that level.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

RULESET_VERSION = 2


class Severity(StrEnum):
    DOCS = "docs"
    NON_BREAKING = "non-breaking"
    BREAKING = "breaking"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.DOCS: 0, Severity.NON_BREAKING: 1, Severity.BREAKING: 2}


class Level(StrEnum):
    WIRE = "wire"
    PYTHON = "python"


class Direction(StrEnum):
    """Which way a value travels: what a caller sends, what a caller gets, or both."""

    REQUEST = "request"
    RESPONSE = "response"
    BOTH = "both"

    def __or__(self, other: object) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        return self if self is other else Direction.BOTH


class Bump(StrEnum):
    """A change's share of the package's suggested semver bump (major: any python-breaking)."""

    NONE = "none"
    PATCH = "patch"
    MINOR = "minor"
    MAJOR = "major"

    @property
    def rank(self) -> int:
        return _BUMP_RANK[self]


_BUMP_RANK = {bump: i for i, bump in enumerate(Bump)}


@dataclass(frozen=True)
class ByDirection:
    """A verdict that depends on the direction: widening what a caller may send is safe,
    widening what the service may return is not (and the reverse for narrowing)."""

    request: Severity
    response: Severity

    def resolve(self, direction: Direction | None) -> Severity:
        if direction is Direction.REQUEST:
            return self.request
        if direction is Direction.RESPONSE:
            return self.response
        return max(self.request, self.response, key=lambda s: s.rank)


Verdict = Severity | ByDirection


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    wire: Verdict | None
    python: Verdict | None
    bump: Bump  # used unless the python verdict is breaking, which always means major
    summary: str

    @property
    def id(self) -> str:
        return f"{self.code}-{self.name}"

    def severity(self, level: Level, direction: Direction | None) -> Severity | None:
        verdict = self.wire if level is Level.WIRE else self.python
        if verdict is None:
            return None
        return verdict.resolve(direction) if isinstance(verdict, ByDirection) else verdict


@dataclass(frozen=True)
class Ruleset:
    version: int
    rules: Mapping[str, Rule]  # by name

    def __getitem__(self, name: str) -> Rule:
        return self.rules[name]


B, NB, DOC = Severity.BREAKING, Severity.NON_BREAKING, Severity.DOCS
MINOR, PATCH, MAJOR = Bump.MINOR, Bump.PATCH, Bump.MAJOR


def _dir(request: Severity, response: Severity) -> ByDirection:
    return ByDirection(request, response)


_RULESET_1 = (
    # -- the connector and its client ------------------------------------------------------
    Rule("CB1001", "connector-removed", B, B, MAJOR, "A connector (spec file) was removed."),
    Rule("CB1002", "connector-added", NB, NB, MINOR, "A connector (spec file) was added."),
    Rule("CB1003", "connector-renamed", None, B, MAJOR,
         "The package name changed: `import connectors.<name>` and the base-URL env var move."),
    Rule("CB1004", "client-class-renamed", None, B, MAJOR, "The client class name changed."),
    Rule("CB1005", "transport-changed", B, B, MAJOR, "The connector's `kind` changed."),
    Rule("CB1006", "base-url-changed", B, None, MINOR, "The service's base URL changed."),
    Rule("CB1007", "request-headers-changed", B, None, MINOR,
         "Headers sent with every request were added, removed or changed."),
    Rule("CB1008", "auth-scheme-changed", B, B, MAJOR,
         "The auth type changed: the credentials a caller supplies mean something else."),
    Rule("CB1009", "auth-changed", B, None, MINOR,
         "Same auth type, but its header/parameter name, location, prefix or template changed."),
    # -- settings (client keyword arguments and env vars) ----------------------------------
    Rule("CB1101", "setting-removed", None, B, MAJOR, "A setting was removed."),
    Rule("CB1102", "setting-added-required", None, B, MAJOR,
         "A required setting was added: every client must now supply it."),
    Rule("CB1103", "setting-added", None, NB, MINOR, "An optional setting was added."),
    Rule("CB1104", "setting-env-changed", None, B, MAJOR,
         "A setting reads a different environment variable (or none)."),
    Rule("CB1105", "setting-type-changed", None, B, MAJOR, "A setting's type changed."),
    Rule("CB1106", "setting-made-required", None, B, MAJOR, "A setting became required."),
    Rule("CB1107", "setting-made-optional", None, NB, MINOR, "A setting became optional."),
    Rule("CB1108", "setting-default-changed", None, NB, PATCH, "A setting's default changed."),
    Rule("CB1109", "setting-secret-changed", None, NB, PATCH,
         "A setting became secret (masked) or stopped being one."),
    # -- behaviour defaults: shown, never breaking -----------------------------------------
    Rule("CB1201", "timeout-changed", NB, NB, PATCH, "A timeout changed."),
    Rule("CB1202", "retry-changed", NB, NB, PATCH, "A retry policy changed."),
    Rule("CB1203", "rate-limit-changed", NB, NB, PATCH, "The client-side rate limit changed."),
    Rule("CB1204", "circuit-breaker-changed", NB, NB, PATCH, "The circuit breaker changed."),
    Rule("CB1205", "quota-headers-changed", NB, NB, PATCH,
         "Where the quota's reset time is read (`reset`, `reset_format`) changed."),
    Rule("CB1206", "quota-detection-changed", NB, B, MAJOR,
         "Quota headers were added or removed, or the `remaining` header renamed: error "
         "responses they mark as exhausted raise `RateLimitedError` instead of the status's "
         "own error (or the reverse), which changes what `except` clauses catch."),
    # -- operations ------------------------------------------------------------------------
    Rule("CB1301", "operation-removed", B, B, MAJOR, "An operation (client method) was removed."),
    Rule("CB1302", "operation-added", NB, NB, MINOR, "An operation (client method) was added."),
    Rule("CB1303", "operation-renamed", NB, B, MAJOR,
         "Same method and path, different method name: the same request, a different API."),
    Rule("CB1304", "operation-endpoint-changed", B, None, MINOR,
         "Same method name, different HTTP method or path."),
    Rule("CB1305", "operation-skipped", None, B, MAJOR,
         "An operation is still declared but no longer generated (`skip`)."),
    Rule("CB1306", "operation-unskipped", None, NB, MINOR,
         "A declared operation that was skipped is now generated."),
    Rule("CB1307", "operation-deprecation-changed", DOC, DOC, MINOR,
         "An operation was marked deprecated, or no longer is."),
    Rule("CB1308", "request-fixed-field-changed", B, None, MINOR,
         "A body field the operation always sends (`fixed`) was added, removed or changed."),
    Rule("CB1309", "request-body-encoding-changed", B, None, MINOR,
         "The request body is sent in another encoding (json, form, multipart, binary, text) "
         "or with another media type."),
    # -- parameters: path/query/header/cookie parameters and body fields that are arguments --
    Rule("CB1401", "parameter-removed", B, B, MAJOR, "A parameter was removed."),
    Rule("CB1402", "parameter-added-required", B, B, MAJOR, "A required parameter was added."),
    Rule("CB1403", "parameter-added", NB, NB, MINOR, "An optional parameter was added."),
    Rule("CB1404", "parameter-renamed", NB, B, MAJOR,
         "A parameter's Python name changed; it is sent as before."),
    Rule("CB1405", "parameter-moved", B, None, MINOR,
         "A parameter keeps its Python name but is sent under another name or in another place."),
    Rule("CB1406", "parameter-made-required", B, B, MAJOR, "A parameter became required."),
    Rule("CB1407", "parameter-made-optional", NB, NB, MINOR, "A parameter became optional."),
    Rule("CB1408", "parameter-default-changed", NB, NB, MINOR,
         "A parameter's default changed: calls that omit it now send another value."),
    Rule("CB1409", "parameter-style-changed", B, None, MINOR,
         "A query parameter's array/object serialisation (`style`, `explode`) changed."),
    # -- responses, pagination, streaming ---------------------------------------------------
    Rule("CB1501", "response-content-changed", B, B, MAJOR,
         "The response content kind changed (json, text, bytes, none)."),
    Rule("CB1502", "response-body-removed", B, B, MAJOR, "The operation no longer returns a body."),
    Rule("CB1503", "response-body-added", NB, NB, MINOR,
         "An operation that returned nothing now returns a body."),
    Rule("CB1504", "response-list-changed", B, B, MAJOR,
         "The response became a list, or stopped being one (`many`)."),
    Rule("CB1505", "pagination-added", B, B, MAJOR, "An operation became paginated."),
    Rule("CB1506", "pagination-removed", B, B, MAJOR, "An operation is no longer paginated."),
    Rule("CB1507", "pagination-style-changed", B, None, MINOR, "The pagination style changed."),
    Rule("CB1508", "pagination-settings-changed", B, None, MINOR,
         "Where pages, cursors or sizes are read or sent changed."),
    Rule("CB1509", "streaming-added", B, B, MAJOR, "An operation became a stream."),
    Rule("CB1510", "streaming-removed", B, B, MAJOR, "An operation is no longer a stream."),
    Rule("CB1511", "streaming-format-changed", B, None, MINOR,
         "The stream format changed (sse, ndjson)."),
    Rule("CB1512", "streaming-settings-changed", B, None, MINOR,
         "The stream's end marker or kept event names changed."),
    Rule("CB1513", "error-response-added", NB, NB, MINOR,
         "A documented error body (`errors`) was added: the raised error's `.error` now holds "
         "it decoded."),
    Rule("CB1514", "error-response-removed", NB, B, MAJOR,
         "A documented error body was removed (and no `4XX`/`default` entry covers its "
         "status): the raised error's `.error` is now None."),
    # -- values on the wire (parameters, bodies, responses, schemas), by direction ----------
    Rule("CB1601", "type-changed", B, None, MINOR, "A value's type changed incompatibly."),
    Rule("CB1602", "type-widened", _dir(NB, B), None, MINOR,
         "A value accepts more (integer to number, a type to any, a new union member, "
         "a format or enum dropped, an object opened)."),
    Rule("CB1603", "type-narrowed", _dir(B, NB), None, MINOR,
         "A value accepts less (the reverse of type-widened)."),
    Rule("CB1604", "enum-value-added", _dir(NB, B), None, MINOR,
         "An enum value was added. In responses this is breaking: generated models validate "
         "enums as `Literal`, so an older package rejects the new value."),
    Rule("CB1605", "enum-value-removed", _dir(B, NB), None, MINOR, "An enum value was removed."),
    Rule("CB1606", "nullable-added", _dir(NB, B), None, MINOR, "A value may now be null."),
    Rule("CB1607", "nullable-removed", _dir(B, NB), None, MINOR, "A value may no longer be null."),
    Rule("CB1608", "constraint-tightened", _dir(B, NB), None, MINOR,
         "A minimum, maximum, length, item count or pattern became stricter."),
    Rule("CB1609", "constraint-loosened", _dir(NB, B), None, MINOR,
         "A constraint became looser. In responses this is breaking: generated models "
         "enforce response constraints."),
    Rule("CB1610", "constraint-changed", B, None, MINOR, "A pattern was replaced by another."),
    Rule("CB1611", "property-removed", B, None, MINOR, "An object property was removed."),
    Rule("CB1612", "property-added", NB, None, MINOR, "An optional object property was added."),
    Rule("CB1613", "property-added-required", _dir(B, NB), None, MINOR,
         "A required object property was added."),
    Rule("CB1614", "property-added-to-closed-object", _dir(NB, B), None, MINOR,
         "A property was added to an object with `additionalProperties: false`, which an "
         "older package rejects in responses."),
    Rule("CB1615", "property-made-required", _dir(B, NB), None, MINOR,
         "An object property became required."),
    Rule("CB1616", "property-made-optional", _dir(NB, B), None, MINOR,
         "An object property became optional."),
    Rule("CB1617", "default-changed", NB, None, PATCH, "A value's default changed."),
    # -- the Python API: annotations, models, roles ----------------------------------------
    Rule("CB1701", "python-type-changed", None, B, MAJOR,
         "An annotation (argument, return value, model field, alias) changed incompatibly."),
    Rule("CB1702", "python-type-widened", None, _dir(NB, B), MINOR,
         "An annotation accepts more: fine for arguments, breaking for what callers read."),
    Rule("CB1703", "python-type-narrowed", None, _dir(B, NB), MINOR,
         "An annotation accepts less: breaking for arguments, fine for what callers read."),
    Rule("CB1704", "model-removed", None, B, MAJOR, "A model class (or type alias) was removed."),
    Rule("CB1705", "model-added", None, NB, MINOR, "A model class (or type alias) was added."),
    Rule("CB1706", "model-field-removed", None, B, MAJOR, "A model field was removed."),
    Rule("CB1707", "model-field-added", None, NB, MINOR, "An optional model field was added."),
    Rule("CB1708", "model-field-added-required", None, _dir(B, NB), MINOR,
         "A required model field was added: breaking where callers build the model."),
    Rule("CB1709", "model-field-renamed", None, B, MAJOR,
         "A model field's Python name changed; its JSON name did not."),
    Rule("CB1710", "model-field-made-required", None, _dir(B, NB), MINOR,
         "A model field became required."),
    Rule("CB1711", "model-field-made-optional", None, _dir(NB, B), MINOR,
         "A model field became optional: breaking where callers read it (it may be None)."),
    Rule("CB1712", "model-field-default-changed", None, NB, PATCH,
         "A model field's default changed."),
    Rule("CB1713", "role-removed", None, B, MAJOR, "A role (`read()` / `write()`) was removed."),
    Rule("CB1714", "role-added", None, NB, MINOR, "A role (`read()` / `write()`) was added."),
    Rule("CB1715", "role-changed", None, B, MAJOR, "A role now uses another operation."),
    # -- documentation ---------------------------------------------------------------------
    Rule("CB1801", "docs-changed", DOC, DOC, PATCH,
         "Descriptions, summaries, titles, tags, examples or links changed."),
)  # fmt: skip

# Ruleset 2: spec language features that ruleset 1 never saw. Each is its own rule, so a
# ruleset-1 verdict never moves; the reasons for the verdicts are in the README.
_ADDED_IN_2 = (
    # -- a data kind's block and its record -------------------------------------------------
    Rule("CB1901", "kind-dialect-changed", B, B, MAJOR,
         "The SQL dialect (`sql.dialect`) changed: another database, with its own connection "
         "URL, default port and SQL grammar."),
    Rule("CB1902", "upsert-keys-changed", B, None, MINOR,
         "The keys write() upserts on (`upsert_keys`) were set, changed or unset: the database "
         "needs a unique constraint on the new keys (PostgreSQL refuses `ON CONFLICT` without "
         "one), and rows that were inserted now replace others, or the reverse. Their order "
         "does not count."),
    Rule("CB1903", "payload-format-changed", B, B, MAJOR,
         "Records are encoded another way (`format`: json, text, bytes, jsonl): readers of the "
         "old encoding cannot decode them, and read()/write() yield and take another type."),
    Rule("CB1904", "kind-option-changed", B, None, MINOR,
         "Another option of the kind block changed (amqp `durable`: RabbitMQ refuses to "
         "redeclare a queue with another durability; `dimensions`: vectors of another size)."),
    Rule("CB1905", "tuning-changed", NB, NB, PATCH,
         "How work is split changed, not what it does: batch sizes, stream trimming "
         "(`maxlen`, `approximate`), multipart sizes, the embedding batch limit (`max_batch`)."),
    Rule("CB1906", "record-changed", None, B, MAJOR,
         "The record model (`record`) was set, unset or pointed at another schema: read() "
         "yields and write() takes another type. Edits of the same record schema are judged "
         "by the model and value rules (both directions: records are read and written)."),
    # -- named queries (kind sql): their parameters reuse CB14xx, their rows CB16xx/CB17xx --
    Rule("CB2001", "query-removed", B, B, MAJOR, "A named query (connector method) was removed."),
    Rule("CB2002", "query-added", NB, NB, MINOR, "A named query (connector method) was added."),
    Rule("CB2003", "query-renamed", NB, B, MAJOR,
         "Same SQL, different method name: the same statement, a different API."),
    Rule("CB2004", "query-sql-changed", B, None, MINOR,
         "A named query's SQL changed beyond whitespace: the database runs another statement. "
         "Whitespace outside string literals is no change; comments alone are docs."),
    Rule("CB2005", "query-returns-changed", None, B, MAJOR,
         "A named query returns another shape: rows where it returned a row count (`result` "
         "set or unset), or one row where it returned a list (`result.many`), or the reverse."),
    # -- the LLM role ---------------------------------------------------------------------
    Rule("CB2101", "llm-role-removed", None, B, MAJOR,
         "The LLM role was removed: chat(), generate(), stream() and embed() are gone."),
    Rule("CB2102", "llm-role-added", None, NB, MINOR,
         "An LLM role was added: the client gains chat(), generate(), stream() and embed()."),
    Rule("CB2103", "llm-capability-removed", None, B, MAJOR,
         "An LLM capability (chat, stream, embed) was removed: its methods now raise "
         "`NotSupportedError`."),
    Rule("CB2104", "llm-capability-added", None, NB, MINOR,
         "An LLM capability was added: its methods work where they raised `NotSupportedError`."),
    Rule("CB2105", "llm-operation-changed", B, None, MINOR,
         "A capability calls another operation (one that was only renamed does not count)."),
    Rule("CB2106", "llm-request-mapping-changed", B, None, MINOR,
         "Where a capability puts its arguments in the request body changed: the model, "
         "messages, system, input or input-type field, an option's name, the input-type "
         "values, or the fields always sent (`fixed`)."),
    Rule("CB2107", "llm-response-path-changed", B, None, MINOR,
         "Where a capability reads its answer changed (`content`, `text`, `vectors`): a "
         "response of the old shape no longer yields it."),
    Rule("CB2108", "llm-usage-path-changed", NB, NB, PATCH,
         "Where token counts, the finish reason or the answering model are read changed: "
         "those result fields (and the cost) may be None where they were set, or the reverse."),
    Rule("CB2109", "llm-provider-renamed", None, B, MAJOR,
         "The provider name changed: `client.provider`, each result's `provider`, fallback "
         "errors and traces' `gen_ai.provider.name` carry the new one."),
    Rule("CB2110", "llm-default-model-changed", NB, NB, MINOR,
         "A default model was set or changed: calls that name no model now use another one."),
    Rule("CB2111", "llm-default-model-removed", None, B, MAJOR,
         "A default model was unset: calls that name no model now raise `ConfigError`."),
    # -- pricing: what calls are reported to cost; `as_of`/`source` are docs (CB1801) ------
    Rule("CB2201", "price-changed", None, NB, PATCH,
         "A model's price per 1M tokens changed (or it now falls back to another listed "
         "name's price): reported costs differ from now on."),
    Rule("CB2202", "price-added", None, NB, PATCH,
         "A model was priced (or a pricing table added): its calls now report a cost."),
    Rule("CB2203", "price-removed", None, NB, PATCH,
         "A model is no longer priced (or the table was removed): its calls report cost None."),
)  # fmt: skip


# Spec language features by the first ruleset that judges them. An older ruleset refuses
# to judge a change to one (bad input, exit 2) rather than let it pass unseen.
JUDGED_SINCE: Mapping[str, int] = MappingProxyType({"kind": 2, "roles.llm": 2, "pricing": 2})


def _table(*rules: Rule) -> Mapping[str, Rule]:
    return MappingProxyType({rule.name: rule for rule in rules})


RULESETS: Mapping[int, Ruleset] = MappingProxyType(
    {
        1: Ruleset(1, _table(*_RULESET_1)),
        2: Ruleset(2, _table(*_RULESET_1, *_ADDED_IN_2)),
    }
)


def ruleset(version: int = RULESET_VERSION) -> Ruleset:
    return RULESETS[version]


__all__ = [
    "JUDGED_SINCE",
    "RULESETS",
    "RULESET_VERSION",
    "Bump",
    "ByDirection",
    "Direction",
    "Level",
    "Rule",
    "Ruleset",
    "Severity",
    "ruleset",
]
