"""Fuzz the spec loader, the IR and the generator with random and mutated specs.

    python tests/benchmarks/fuzz_specs.py [--quick] [--json PATH] [-n N] [--seed S]
                                          [--keep DIR] [--no-generate]

Each case is YAML text made one of these ways:

* a real spec (``specs/*.yaml``, ``tests/fixtures/specs/*.yaml``) with its *data* mutated:
  keys deleted, renamed, duplicated elsewhere or given values of another type, strings
  replaced by random unicode, quotes, Jinja, Python syntax, edge-case numbers...
* a real spec with its *text* mutated: characters and YAML syntax inserted, spans deleted,
  lines duplicated (duplicate keys), swapped or re-indented, the file truncated;
* a random spec drawn from a grammar of the spec language (names, settings, auth, schemas,
  parameters, bodies, pagination, streaming, roles), optionally mutated as above;
* random YAML data or random text.

Every case goes through ``load_spec_text``. Outcomes:

* ``rejected``        an ``InputError`` whose every diagnostic reads ``FILE:LINE:COL: ...``
                      and points at a line of the text (as YAML counts lines);
* ``accepted``        loaded, generated with ``builder.generate.generate``, every generated
                      ``.py`` compiles, and ``ruff check`` (run in batches) is clean;
* ``bad-diagnostic``  rejected, but a diagnostic is not located or points outside the text;
* ``bad-code``        generated code that does not compile or that ruff flags;
* ``crashed``         anything else escaped: a traceback.

Target: ``crashed``, ``bad-diagnostic`` and ``bad-code`` all 0 (exit status 1 otherwise).
The generation side is shared with ``tests/test_fuzz_specs.py``, which drives the same
mutators from hypothesis.
"""

from __future__ import annotations

import copy
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml  # noqa: E402

from tests.benchmarks._common import REPO_ROOT, parser, table, write_json  # noqa: E402

T = TypeVar("T")

SEED_FILES = sorted(
    [*(REPO_ROOT / "specs").glob("*.yaml"), *(REPO_ROOT / "tests/fixtures/specs").glob("*.yaml")]
)
SPEC_FILE = "fuzz.yaml"  # the file name given to the loader (no colon: diagnostics parse)
LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")
# The line breaks YAML (1.1, PyYAML) knows; a diagnostic's line counts these.
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")

BAD_OUTCOMES = ("crashed", "bad-diagnostic", "bad-code")


# --------------------------------------------------------------------------------------- #
# Where randomness comes from: random.Random here, hypothesis draws in the test
# --------------------------------------------------------------------------------------- #


class Chooser(Protocol):
    def choice(self, options: Sequence[T]) -> T: ...
    def randint(self, lo: int, hi: int) -> int: ...
    def coin(self, p: float = 0.5) -> bool: ...
    def text(self, max_size: int = 12) -> str: ...


# Code points worth trying: ASCII, Latin-1, combining marks, CJK, emoji, bidi controls,
# zero-width characters, YAML's own line breaks, the BOM, private use.
_CODEPOINT_RANGES = [
    (0x20, 0x7E),
    (0x09, 0x0D),
    (0x80, 0xFF),
    (0x300, 0x36F),
    (0x4E00, 0x4E40),
    (0x1F600, 0x1F640),
    (0x202A, 0x202E),
    (0x2066, 0x2069),
    (0x200B, 0x200F),
    (0x2028, 0x2029),
    (0xFEFF, 0xFEFF),
    (0xE000, 0xE010),
    (0x00, 0x08),
]


class RandomChooser:
    """A :class:`Chooser` over :class:`random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def randint(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def coin(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def text(self, max_size: int = 12) -> str:
        out = []
        for _ in range(self.rng.randint(0, max_size)):
            lo, hi = self.choice(_CODEPOINT_RANGES)
            out.append(chr(self.rng.randint(lo, hi)))
        return "".join(out)


# --------------------------------------------------------------------------------------- #
# Vocabulary
# --------------------------------------------------------------------------------------- #

TRIPLE = '"' * 3
HOSTILE = [
    "",
    " ",
    TRIPLE,
    "'''",
    '"',
    "'",
    "\\",
    "\\n",
    "\n",
    "a\nb",
    "\t",
    "\r",
    "\u2028",
    "\ufeff",
    "\u202e",
    "\x00",
    "\x1b[31m",
    "{{ x }}",
    "{{",
    "}}",
    "{% for x in y %}",
    "{% raw %}",
    "{#",
    "{config.x}",
    "{config.token}",
    "{",
    "}",
    "{0}",
    "%s",
    "import os",
    "__import__('os').system('true')",
    TRIPLE + "; import os #",
    "'); os.system('x'); ('",
    "lambda: 0",
    "# comment",
    "*alias",
    "&anchor",
    "!tag",
    "- item",
    ": ",
    "? ",
    "|",
    ">",
    "@",
    "`",
    "%",
    "---",
    "...",
    "<<",
    "null",
    "~",
    "true",
    "no",
    "on",
    "0x1F",
    "1e400",
    ".nan",
    "-.inf",
    "123",
    "0123",
    "ünïcödé",
    "日本語",
    "😀",
    "e\u0301",
    "x" * 300,
    "$ref",
    "class",
    "None",
    "True",
    "self",
    "__init__",
    "__class__",
    "async",
    "def",
    "type",
    "model_config",
    "http://",
    "https://a b",
    "https://example.com/{x}",
    "/path/{p}",
    "/{",
    "/}",
    "//",
    "?q=1",
    "#frag",
]

RESERVED = [
    "self",
    "cls",
    "class",
    "def",
    "async",
    "await",
    "import",
    "none",
    "true",
    "timeout",
    "retry",
    "auth",
    "http_client",
    "transport",
    "close",
    "aclose",
    "read",
    "write",
    "read_batch",
    "config",
    "metrics",
    "__dunder__",
    "_",
    "__",
    "_private",
]

IDENTIFIERS = [
    "items",
    "owner",
    "repo",
    "user_id",
    "state",
    "page",
    "limit",
    "cursor",
    "q",
    "x",
    "name",
    "value",
    "data",
    "body",
    "id",
    "type",
    "format",
    "list",
    "dict",
    "str",
    "int",
    "json",
    "model",
    "models",
    "client",
    "service",
    "settings",
    "a_b_c",
    "x1",
    "snake_case_name_that_is_rather_long_for_an_argument",
]

SAFE_SCHEMA_NAMES = ["Thing", "Item", "User", "Page", "Label", "Note", "Event", "Error", "A", "Z9"]
SCHEMA_NAMES = SAFE_SCHEMA_NAMES + [
    "Model",
    "BaseModel",
    "Field",
    "ConfigDict",
    "Any",
    "Literal",
    "Optional",
    "Union",
    "List",
    "Dict",
    "Annotated",
    "RootModel",
    "Self",
    "T",
    "None",
    "True",
    "Exception",
    "UUID",
    "Decimal",
    "Secret",
    "Setting",
    "Service",
    "Operation",
    "Decoder",
    "Pager",
    "Stream",
    "AsyncStream",
    "SyncClient",
    "AsyncClient",
    "RetryPolicy",
    "ThingPage",
    "NoteAttachment",
]

PROPERTY_NAMES = [
    "id",
    "name",
    "createdAt",
    "created_at",
    "CreatedAt",
    "URL",
    "htmlUrl",
    "with space",
    "with-dash",
    "dotted.name",
    "class",
    "def",
    "from",
    "import",
    "None",
    "True",
    "self",
    "type",
    "model_config",
    "model_fields",
    "model_dump",
    "schema",
    "json",
    "dict",
    "copy",
    "validate",
    "fields",
    "__root__",
    "__class__",
    "_private",
    "_",
    "123",
    "1st",
    "",
    " ",
    "ünïcödé",
    "日本",
    "😀",
    "a" * 120,
    "x-y_z",
    "X",
    "x",
    "$ref",
    "@type",
]

BUILTIN_WORDS = ["string", "integer", "number", "boolean", "array", "object", "any"]
FORMATS = [
    "date-time",
    "date",
    "time",
    "uuid",
    "uri",
    "email",
    "binary",
    "byte",
    "int32",
    "int64",
    "float",
    "double",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "Post"]
PAGINATION_STYLES = ["link_header", "next_url", "cursor", "offset", "page"]
YAML_FRAGMENTS = [
    ":",
    ": ",
    " #",
    "-",
    "- ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ",",
    '"',
    "'",
    "|",
    ">-",
    "&a ",
    "*a",
    "*undefined",
    "<<: *a",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!custom ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\t",
    "\n",
    "\n  ",
    "\r\n",
    "\\",
    "\\u0000",
    "\x00",
    "\x7f",
    "\ufeff",
    "\u2028",
    "{{ config }}",
    "{% raw %}",
    TRIPLE,
    "import os",
    "  nested:\n    deeper: 1\n",
    "key: value\n",
    "key: value\n",
    "2001-12-14t21:59:43.10-05:00",
    "0o17",
    "1_000",
    "9" * 4400,  # longer than Python's int-from-text limit (4300 digits)
    ".inf",
    "~",
    "=",
]


# --------------------------------------------------------------------------------------- #
# Random values
# --------------------------------------------------------------------------------------- #


def hostile_string(ch: Chooser) -> str:
    kind = ch.randint(0, 3)
    if kind == 0:
        return ch.choice(HOSTILE)
    if kind == 1:
        return ch.text(16)
    if kind == 2:
        return ch.choice(HOSTILE) + ch.text(4) + ch.choice(HOSTILE)
    return ch.choice(IDENTIFIERS) + ch.choice(HOSTILE)


def scalar(ch: Chooser) -> Any:
    return ch.choice(
        [
            lambda: None,
            lambda: True,
            lambda: False,
            lambda: 0,
            lambda: -1,
            lambda: 1,
            lambda: 7,
            lambda: 2**63,
            lambda: -(10**30),
            lambda: 0.5,
            lambda: -0.0,
            lambda: 1e308,
            lambda: math.inf,
            lambda: -math.inf,
            lambda: math.nan,
            lambda: hostile_string(ch),
            lambda: ch.choice(IDENTIFIERS),
            lambda: ch.choice(SCHEMA_NAMES),
            lambda: ch.choice(BUILTIN_WORDS),
        ]
    )()


def random_value(ch: Chooser, depth: int = 0) -> Any:
    """Any YAML-representable value."""
    if depth >= 3 or ch.coin(0.6):
        return scalar(ch)
    if ch.coin():
        return [random_value(ch, depth + 1) for _ in range(ch.randint(0, 3))]
    return {
        ch.choice([hostile_string(ch), ch.choice(IDENTIFIERS)]): random_value(ch, depth + 1)
        for _ in range(ch.randint(0, 3))
    }


# --------------------------------------------------------------------------------------- #
# Random specs from a grammar of the spec language
# --------------------------------------------------------------------------------------- #


@dataclass
class _Ctx:
    wild: float  # the chance of each structural choice being hostile (most are rejected)
    schema_names: list[str] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)


def _wild(ch: Chooser, ctx: _Ctx) -> bool:
    return ctx.wild > 0 and ch.coin(ctx.wild)


def _ident(ch: Chooser, ctx: _Ctx) -> str:
    """A Python name (a method, argument or setting name)."""
    if _wild(ch, ctx):
        return ch.choice([hostile_string(ch), ch.choice(PROPERTY_NAMES), ch.choice(RESERVED)])
    return ch.choice(IDENTIFIERS)


def _free_text(ch: Chooser) -> str:
    """Text the spec may hold freely (descriptions, titles...): hostile half the time."""
    return (
        ch.choice(["A thing.", "List items, newest first.", "Ünïcödé — ok"])
        if ch.coin()
        else (hostile_string(ch))
    )


def random_schema(ch: Chooser, ctx: _Ctx, depth: int = 0) -> Any:
    kind = ch.randint(0, 9 if depth < 2 else 4)
    if kind == 0:
        return ch.choice(BUILTIN_WORDS)
    if kind == 1 and ctx.schema_names:
        return ch.choice(SCHEMA_NAMES) if _wild(ch, ctx) else ch.choice(ctx.schema_names)
    schema: dict[str, Any] = {}
    if kind in (1, 2, 3):  # a string with constraints
        schema["type"] = "string"
        if ch.coin(0.3):
            schema["format"] = ch.choice(FORMATS)
        if ch.coin(0.2):
            schema["minLength"] = ch.randint(0, 3)
        if ch.coin(0.2):
            schema["maxLength"] = ch.randint(3, 50)
        if ch.coin(0.2):
            schema["pattern"] = ch.choice(
                ["^[a-z]+$", "\\d+", "'\"", TRIPLE, "{{x}}", "\\", "[" if _wild(ch, ctx) else "a"]
            )
        if ch.coin(0.3):
            schema["enum"] = list(
                dict.fromkeys(
                    ch.choice(["a", "b", "open", "closed", hostile_string(ch)])
                    for _ in range(ch.randint(1, 4))
                )
            )
            if _wild(ch, ctx):
                schema["enum"].append(ch.choice([1, True, 2.5, None]))
    elif kind == 4:  # a number
        schema["type"] = ch.choice(["integer", "number"])
        if ch.coin(0.3):
            schema["minimum"] = ch.choice([0, 1, -5, 0.5])
        if ch.coin(0.3):
            schema["maximum"] = ch.choice([10, 100, 1e300])
        if ch.coin(0.2):
            schema["enum"] = list(
                dict.fromkeys(ch.choice([1, 2, 3, -1, 10**20]) for _ in range(ch.randint(1, 3)))
            )
    elif kind in (5, 6, 7):  # an object
        props = {}
        for _ in range(ch.randint(0, 4)):
            props[ch.choice(PROPERTY_NAMES) if ch.coin(0.8) else hostile_string(ch)] = (
                random_schema(ch, ctx, depth + 1)
            )
        if props or ch.coin(0.5):
            schema["properties"] = props
        else:
            schema["type"] = "object"
        if props and ch.coin(0.5):
            schema["required"] = list(
                dict.fromkeys(ch.choice(list(props)) for _ in range(ch.randint(1, 2)))
            )
        if ch.coin(0.2):
            schema["additionalProperties"] = ch.choice([False, True, "string", {"type": "integer"}])
    elif kind == 8:
        schema["type"] = "array"
        schema["items"] = random_schema(ch, ctx, depth + 1)
        if ch.coin(0.2):
            schema["minItems"] = ch.randint(0, 2)
        if ch.coin(0.2):
            schema["maxItems"] = ch.randint(2, 9)
    else:
        schema[ch.choice(["oneOf", "anyOf"])] = [
            random_schema(ch, ctx, depth + 1) for _ in range(ch.randint(1, 3))
        ]
    if ch.coin(0.15):
        schema["nullable"] = True
    if ch.coin(0.1):
        schema["default"] = _default_for(ch, ctx, schema)
    if ch.coin(0.3):
        schema["description"] = _free_text(ch)
    if ch.coin(0.05):
        schema["title"] = _free_text(ch)
    if ch.coin(0.05):
        schema["example"] = scalar(ch)
    for key in ("deprecated", "readOnly", "writeOnly"):
        if ch.coin(0.05):
            schema[key] = True
    return schema


def _default_for(ch: Chooser, ctx: _Ctx, schema: dict[str, Any]) -> Any:
    if _wild(ch, ctx):
        return scalar(ch)
    if schema.get("enum"):
        return ch.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "string" and "format" not in schema and "pattern" not in schema:
        return ch.choice(["", "x", hostile_string(ch)])[: schema.get("maxLength", 50)]
    if kind == "integer":
        return ch.choice([1, 3, 5])
    if kind == "number":
        return ch.choice([1.5, 3])
    if kind == "boolean":
        return ch.coin()
    return None


def _path_and_params(ch: Chooser, ctx: _Ctx) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    segments = []
    for _ in range(ch.randint(1, 3)):
        if ch.coin(0.4):
            name = _ident(ch, ctx)
            if name in params:
                continue
            segments.append("{" + name + "}")
            params[name] = ch.choice(["string", "integer", {"type": "string", "format": "uuid"}])
        else:
            segments.append(
                ch.choice(["things", "v1", "items", "a-b", "x.json", "ü", "%20", "a'b", '"'])
                if not _wild(ch, ctx)
                else hostile_string(ch)
            )
    path = "/" + "/".join(segments)
    for _ in range(ch.randint(0, 3)):
        name = _ident(ch, ctx)
        if name in params:
            continue
        param: dict[str, Any] = {}
        schema = random_schema(ch, ctx, 2)
        if isinstance(schema, dict):
            param.update(schema)
            for key in ("title", "readOnly", "writeOnly", "properties", "required"):
                if not _wild(ch, ctx):
                    param.pop(key, None)
            if "properties" in schema and "properties" not in param:
                param["type"] = "object"
        else:
            param["type" if schema in BUILTIN_WORDS else "$ref"] = schema
        if ch.coin(0.3):
            param["in"] = ch.choice(["query", "header", "cookie"])
        if _wild(ch, ctx):
            param["in"] = "path"
        if ch.coin(0.2):
            param["name"] = ch.choice(["X-Request-Id", "per_page", "q", "a b", "ü", "'", '"'])
        if ch.coin(0.2):
            param["required"] = ch.coin()
        params[name] = param
    if _wild(ch, ctx):  # a placeholder without a parameter
        path += "/{" + _ident(ch, ctx) + "}"
    return path, params


def random_operation(ch: Chooser, ctx: _Ctx) -> dict[str, Any]:
    path, params = _path_and_params(ch, ctx)
    op: dict[str, Any] = {"method": ch.choice(METHODS), "path": path}
    if params:
        op["params"] = params
    if ch.coin(0.4):
        op["summary"] = _free_text(ch)
    if ch.coin(0.2):
        op["description"] = _free_text(ch)
    if ch.coin(0.35):
        body: dict[str, Any] = {"schema": random_schema(ch, ctx, 1)}
        props = body["schema"].get("properties") if isinstance(body["schema"], dict) else None
        if props and ch.coin(0.3):
            body["fixed"] = {ch.choice(list(props)): scalar(ch)}
        elif _wild(ch, ctx):
            body["fixed"] = {ch.choice(PROPERTY_NAMES): scalar(ch)}
        op["body"] = body
    shape = ch.randint(0, 5)
    if shape == 0:
        word = random_schema(ch, ctx, 1)
        op["response"] = word if isinstance(word, str) else {"schema": word}
    elif shape == 1:
        op["response"] = {
            "schema": random_schema(ch, ctx, 1),
            "many": ch.coin(),
            "content": ch.choice(["json", "json", "text", "bytes", "none"]),
        }
    elif shape == 2:
        op["response"] = {"schema": random_schema(ch, ctx, 1), "many": True}
        style = ch.choice(PAGINATION_STYLES)
        pagination: dict[str, Any] = {"style": style}
        if ch.coin(0.5):
            pagination["items"] = ch.choice(["data", "items", "results.list", "0"])
        if style in ("next_url", "cursor") or ch.coin(0.2):
            pagination["next"] = ch.choice(["next", "links.next", "meta.cursor"])
        if style == "cursor" and ch.coin(0.3):
            pagination["cursor_from_item"] = ch.choice(["id", "name"])
        for key, values in (
            ("cursor_param", ["cursor", "after", "a b", "ü"]),
            ("offset_param", ["offset", "skip"]),
            ("page_param", ["page", "p"]),
            ("size_param", ["per_page", "limit"]),
            ("page_size", [1, 50]),
            ("start_page", [0, 1]),
            ("has_more", ["has_more", "meta.more"]),
        ):
            if ch.coin(0.15):
                pagination[key] = ch.choice(values)
        op["pagination"] = pagination
    elif shape == 3:
        streaming: dict[str, Any] = {
            "format": ch.choice(["sse", "ndjson"]),
            "item": random_schema(ch, ctx, 1),
        }
        if ch.coin(0.4):
            streaming["done"] = ch.choice(["[DONE]", "[END]", hostile_string(ch)])
        if ch.coin(0.3):
            streaming["events"] = [ch.choice(["message", "change", hostile_string(ch)])]
        op["streaming"] = streaming
    if ch.coin(0.15):
        op["retry"] = {"attempts": ch.choice([1, 2, 3]) if not _wild(ch, ctx) else 0}
    if ch.coin(0.1):
        op["timeout"] = ch.choice([5, 0.5]) if not _wild(ch, ctx) else 0
    if ch.coin(0.1):
        op["tags"] = [_free_text(ch)]
    if ch.coin(0.1):
        op["deprecated"] = True
    if ch.coin(0.25):
        op["example"] = {name: scalar(ch) for name in list(params)[: ch.randint(0, 3)]}
    if ch.coin(0.05):
        op["skip"] = _free_text(ch) or "reason"
    return op


def random_spec(ch: Chooser, wild: float = 0.05) -> dict[str, Any]:
    """A spec drawn from the grammar of the spec language. ``wild`` is the chance of each
    structural choice being hostile: with 0 most specs are valid (with hostile free text)."""
    ctx = _Ctx(wild)
    spec: dict[str, Any] = {
        "spec_version": 1 if not _wild(ch, ctx) else ch.choice([2, "1", 1.0, True]),
        "name": ch.choice(["svc", "demo_api", "x", "my_service_2", "items"])
        if not _wild(ch, ctx)
        else _ident(ch, _Ctx(1.0)),
        "title": _free_text(ch),
        "base_url": ch.choice(["https://api.example.com", "http://localhost:8080/v1/"])
        if not _wild(ch, ctx)
        else ch.choice(["https://x.test/{y}", "ftp://x", hostile_string(ch)]),
    }
    if ch.coin(0.2):
        spec["class_name"] = ch.choice(
            ["Client", "DemoAPI", "X"] if not _wild(ch, ctx) else SCHEMA_NAMES
        )
    if ch.coin(0.3):
        spec["description"] = _free_text(ch)
    if ch.coin(0.1):
        spec["version"] = ch.choice(["1.2.3", "0.1.0-rc.1"] + (["1.0", "v1"] if ctx.wild else []))
    if ch.coin(0.1):
        spec["docs_url"] = ch.choice(["https://docs.example.com", _free_text(ch)])
    config: dict[str, Any] = {}
    for _ in range(ch.randint(0, 3)):
        setting_name = _ident(ch, ctx)
        setting: dict[str, Any] = {"type": ch.choice(["string", "integer", "number", "boolean"])}
        secret = ch.coin(0.5)
        if secret:
            setting["secret"] = True
        if ch.coin(0.5):
            setting["env"] = ch.choice(["DEMO_TOKEN", "X", "A_B_1", "_E", "lower"])
            if _wild(ch, ctx):
                setting["env"] = ch.choice(["bad-env", "1X", "", hostile_string(ch)])
        if (not secret and ch.coin(0.3)) or _wild(ch, ctx):
            setting["default"] = (
                {
                    "string": "dflt",
                    "integer": 3,
                    "number": 2.5,
                    "boolean": True,
                }[setting["type"]]
                if not _wild(ch, ctx)
                else scalar(ch)
            )
        if ch.coin(0.2):
            setting["required"] = ch.coin()
        if ch.coin(0.3):
            setting["description"] = _free_text(ch)
        config[setting_name] = setting
    if config:
        spec["config"] = config
        ctx.settings = list(config)
    placeholder = (
        "{config."
        + (ch.choice(ctx.settings) if ctx.settings and not _wild(ch, ctx) else "missing")
        + "}"
    )
    auth_kind = ch.choice(["none", "api_key", "bearer", "basic", "custom", None])
    if auth_kind in ("api_key", "bearer", "basic") and not ctx.settings and not _wild(ch, ctx):
        auth_kind = "none"
    if auth_kind == "api_key":
        spec["auth"] = {
            "type": "api_key",
            "in": ch.choice(["header", "query", "cookie"]),
            "name": ch.choice(["X-Api-Key", "api_key", "key", "a b", "ü"]),
            "value": ch.choice([placeholder, "Key " + placeholder, "{{" + placeholder + "}}"]),
        }
    elif auth_kind == "bearer":
        spec["auth"] = {"type": "bearer", "token": placeholder}
        if ch.coin(0.2):
            spec["auth"]["scheme"] = ch.choice(["Token", _free_text(ch)])
    elif auth_kind == "basic":
        spec["auth"] = {"type": "basic", "username": placeholder, "password": placeholder}
    elif auth_kind is not None:
        spec["auth"] = {"type": auth_kind}
        if auth_kind == "custom" and ch.coin(0.5):
            spec["auth"]["description"] = _free_text(ch)
    if ch.coin(0.2):
        spec["headers"] = {ch.choice(["Accept", "X-Thing", "a'b"]): _free_text(ch)}
    if ch.coin(0.3):
        defaults: dict[str, Any] = {}
        if ch.coin(0.5):
            defaults["timeout"] = ch.choice([1, 30, 0.5]) if not _wild(ch, ctx) else 0
        if ch.coin(0.5):
            defaults["retry"] = {
                "attempts": ch.choice([1, 3, 5]),
                "retry_on": ch.choice([[429, 503], ["timeout"], [500, "connection_error"]])
                if not _wild(ch, ctx)
                else [200],
            }
        if ch.coin(0.3):
            defaults["rate_limit"] = {"per_second": ch.choice([1, 10, 0.5]), "burst": 2}
        if ch.coin(0.3):
            defaults["circuit_breaker"] = {"failure_threshold": 3, "reset_timeout": 10}
        spec["defaults"] = defaults
    if ch.coin(0.1):
        spec["rate_limit_headers"] = {"remaining": "X-Remaining", "reset": "X-Reset"}
    names = [
        ch.choice(SCHEMA_NAMES if _wild(ch, ctx) else SAFE_SCHEMA_NAMES)
        for _ in range(ch.randint(0, 4))
    ]
    ctx.schema_names = list(dict.fromkeys(names))
    schemas = {}
    for schema_name in ctx.schema_names:
        schemas[schema_name] = random_schema(ch, ctx, 0)
    if schemas:
        spec["schemas"] = schemas
    operations = {}
    for _ in range(ch.randint(1, 4)):
        operations[_ident(ch, ctx)] = random_operation(ch, ctx)
    spec["operations"] = operations
    readers = [
        name
        for name, op in operations.items()
        if "pagination" in op
        or (isinstance(op.get("response"), dict) and op["response"].get("many"))
    ]
    writers = [name for name, op in operations.items() if "body" in op]
    if _wild(ch, ctx):
        readers = writers = list(operations) + ["missing_op"]
    roles: dict[str, Any] = {}
    if readers and ch.coin(0.4):
        roles["source"] = {"read": ch.choice(readers)}
    if writers and ch.coin(0.3):
        roles["sink"] = {"write": ch.choice(writers)}
    if roles:
        spec["roles"] = roles
    return spec


# --------------------------------------------------------------------------------------- #
# Mutations of data
# --------------------------------------------------------------------------------------- #


def _slots(data: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value inside ``data``, depth first."""
    if isinstance(data, dict):
        for key in list(data):
            yield data, key
            yield from _slots(data[key])
    elif isinstance(data, list):
        for i in range(len(data)):
            yield data, i
            yield from _slots(data[i])


def _containers(data: Any) -> list[Any]:
    found = [data] if isinstance(data, dict | list) else []
    found.extend(c[k] for c, k in _slots(data) if isinstance(c[k], dict | list))
    return found


def _rename(container: dict[Any, Any], old: Any, new: Any) -> None:
    items = list(container.items())
    container.clear()
    for k, v in items:
        if k == old:
            container[new] = v
        elif k != new:
            container[k] = v


def mutate_data(ch: Chooser, data: Any) -> tuple[Any, str]:
    """One structural mutation; returns the data and a label."""
    slots = list(_slots(data))
    if not slots:
        return random_value(ch), "replace-root"
    container, key = ch.choice(slots)
    kind = ch.choice(
        [
            "delete",
            "retype",
            "hostile-string",
            "rename-key",
            "near-miss-key",
            "copy-elsewhere",
            "emptied",
            "edge-number",
            "swap",
            "add-key",
            "insert-in-string",
        ]
    )
    if kind == "delete":
        del container[key]
    elif kind == "retype":
        container[key] = random_value(ch)
    elif kind == "hostile-string":
        container[key] = hostile_string(ch)
    elif kind == "rename-key" and isinstance(container, dict):
        _rename(container, key, ch.choice([hostile_string(ch), ch.choice(IDENTIFIERS), 1, True]))
    elif kind == "near-miss-key" and isinstance(container, dict) and isinstance(key, str) and key:
        i = ch.randint(0, len(key) - 1)
        edit = ch.choice(["drop", "double", "upper", "swap"])
        if edit == "drop":
            new = key[:i] + key[i + 1 :]
        elif edit == "double":
            new = key[:i] + key[i] + key[i:]
        elif edit == "upper":
            new = key.upper()
        else:
            new = key[:i] + key[i + 1 : i + 2] + key[i : i + 1] + key[i + 2 :]
        _rename(container, key, new)
    elif kind == "copy-elsewhere":
        target = ch.choice(_containers(data))
        value = copy.deepcopy(container[key])
        if isinstance(target, dict):
            target[key if ch.coin(0.7) else ch.choice(IDENTIFIERS)] = value
        else:
            target.append(value)
    elif kind == "emptied":
        container[key] = ch.choice([{}, [], "", None, 0])
    elif kind == "edge-number":
        container[key] = ch.choice([0, -1, 2**64, -(2**63), 1e-320, 1e308, math.inf, math.nan])
    elif kind == "swap":
        other_container, other_key = ch.choice(slots)
        try:
            container[key], other_container[other_key] = (
                copy.deepcopy(other_container[other_key]),
                copy.deepcopy(container[key]),
            )
        except (KeyError, IndexError):  # an earlier assignment moved it
            pass
    elif kind == "add-key":
        target = ch.choice(_containers(data))
        if isinstance(target, dict):
            target[ch.choice([hostile_string(ch), ch.choice(IDENTIFIERS)])] = random_value(ch)
        else:
            target.insert(ch.randint(0, len(target)), random_value(ch))
    elif isinstance(container[key], str):  # insert-in-string (or a fallback of the above)
        value = container[key]
        i = ch.randint(0, len(value))
        container[key] = value[:i] + hostile_string(ch) + value[i:]
    else:
        container[key] = hostile_string(ch)
    return data, kind


def dump(ch: Chooser, data: Any) -> str:
    return yaml.safe_dump(
        data,
        allow_unicode=ch.coin(0.8),
        sort_keys=False,
        default_flow_style=ch.choice([False, False, None]),
        width=ch.choice([80, 1000, 20]),
    )


# --------------------------------------------------------------------------------------- #
# Mutations of text
# --------------------------------------------------------------------------------------- #


def mutate_text(ch: Chooser, text: str) -> tuple[str, str]:
    lines = text.split("\n")
    kind = ch.choice(
        [
            "insert-fragment",
            "insert-random",
            "delete-span",
            "duplicate-line",
            "swap-lines",
            "reindent",
            "truncate",
            "replace-value",
            "insert-fragment",
        ]
    )
    if kind in ("insert-fragment", "insert-random"):
        piece = ch.choice(YAML_FRAGMENTS) if kind == "insert-fragment" else ch.text(8)
        i = ch.randint(0, len(text))
        return text[:i] + piece + text[i:], kind
    if kind == "delete-span" and text:
        i = ch.randint(0, len(text) - 1)
        j = min(len(text), i + ch.randint(1, 40))
        return text[:i] + text[j:], kind
    if kind == "duplicate-line" and lines:
        i = ch.randint(0, len(lines) - 1)
        lines.insert(i, lines[i])
        return "\n".join(lines), kind
    if kind == "swap-lines" and len(lines) > 1:
        i, j = ch.randint(0, len(lines) - 1), ch.randint(0, len(lines) - 1)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines), kind
    if kind == "reindent" and lines:
        i = ch.randint(0, len(lines) - 1)
        if ch.coin():
            lines[i] = ch.choice([" ", "  ", "    ", "\t"]) + lines[i]
        else:
            lines[i] = lines[i][ch.randint(1, 4) :] if lines[i][:1] == " " else lines[i]
        return "\n".join(lines), kind
    if kind == "truncate":
        return text[: ch.randint(0, len(text))], kind
    # replace-value: the text after the colon of one "key: value" line
    candidates = [i for i, line in enumerate(lines) if ": " in line]
    if candidates:
        i = ch.choice(candidates)
        head = lines[i].split(": ", 1)[0]
        value = ch.choice(YAML_FRAGMENTS + HOSTILE[:20])
        lines[i] = f"{head}: {value}"
        return "\n".join(lines), "replace-value"
    return text + ch.choice(YAML_FRAGMENTS), "append-fragment"


# --------------------------------------------------------------------------------------- #
# Cases
# --------------------------------------------------------------------------------------- #

_SEED_TEXTS: dict[Path, str] = {}


def seed_text(path: Path) -> str:
    if path not in _SEED_TEXTS:
        _SEED_TEXTS[path] = path.read_text("utf-8")
    return _SEED_TEXTS[path]


@dataclass
class Case:
    source: str  # random-spec | seed-data | seed-text | random-yaml | random-text
    kind: str  # how it was made, e.g. "seed:openai.yaml delete,retype"
    text: str


SOURCES = ("random-spec", "random-spec", "seed-data", "seed-text", "random-yaml", "random-text")
LEAN_SOURCES = ("random-spec", "random-spec", "random-spec", "seed-data")


def make_case(
    ch: Chooser, *, lean_valid: bool = False, sources: Sequence[str] | None = None
) -> Case:
    """One random or mutated spec. ``lean_valid``: fewer mutations, more accepted specs;
    ``sources``: make it one of these ways (default: all, random specs twice as often)."""
    source = ch.choice(sources or (LEAN_SOURCES if lean_valid else SOURCES))
    steps: list[str] = []
    if source == "random-yaml":
        return Case(source, source, dump(ch, random_value(ch)))
    if source == "random-text":
        pieces = [ch.choice(YAML_FRAGMENTS + HOSTILE) for _ in range(ch.randint(1, 12))]
        return Case(source, source, "".join(pieces) + ch.text(10))
    if source == "random-spec":
        wild = ch.choice([0.0, 0.01] if lean_valid else [0.0, 0.0, 0.02, 0.1, 0.3])
        data: Any = random_spec(ch, wild)
        label = f"random-spec(wild={wild})"
    else:
        seed = ch.choice(SEED_FILES)
        label = f"seed:{seed.name}"
        if source == "seed-text":
            text = seed_text(seed)
            for _ in range(ch.randint(1, 3)):
                text, step = mutate_text(ch, text)
                steps.append(step)
            return Case(source, f"{label} text:{','.join(steps)}", text)
        data = yaml.safe_load(seed_text(seed))
    if source == "random-spec":
        rounds = ch.choice([0, 0, 0, 1] if lean_valid else [0, 0, 0, 1, 2, 3])
    else:
        rounds = ch.choice([1] if lean_valid else [1, 1, 2, 3])
    for _ in range(rounds):
        data, step = mutate_data(ch, data)
        steps.append(step)
    text = dump(ch, data)
    if not lean_valid and ch.coin(0.15):
        text, step = mutate_text(ch, text)
        steps.append("text:" + step)
    return Case(source, f"{label} {','.join(steps)}".strip(), text)


# --------------------------------------------------------------------------------------- #
# Examining a case
# --------------------------------------------------------------------------------------- #


@dataclass
class Result:
    outcome: str  # rejected | accepted | bad-diagnostic | bad-code | crashed
    detail: str = ""
    package: Path | None = None  # the generated package, when accepted


def yaml_lines(text: str) -> list[str]:
    """The text's lines as YAML counts them (\\r\\n, \\r, \\n, NEL, LS, PS end a line)."""
    return YAML_LINE_BREAK.split(text)


def diagnostic_problems(text: str, diagnostics: list[Any], file: str = SPEC_FILE) -> list[str]:
    """Why each diagnostic is not properly located (empty when all are fine)."""
    lines = yaml_lines(text)
    problems = []
    if not diagnostics:
        problems.append("an InputError without diagnostics")
    for d in diagnostics:
        shown = str(d)
        if not LOCATED.match(shown):
            problems.append(f"not FILE:LINE:COL: {shown!r}")
        elif d.file != file:
            problems.append(f"names file {d.file!r}, not {file!r}: {shown!r}")
        elif not 1 <= d.line <= len(lines):
            problems.append(f"line {d.line} of a {len(lines)}-line text: {shown!r}")
        elif not 1 <= d.col <= len(lines[d.line - 1]) + 1:
            problems.append(
                f"column {d.col} of line {d.line}, which has {len(lines[d.line - 1])} "
                f"characters: {shown!r}"
            )
        elif not d.message.strip():
            problems.append(f"an empty message: {shown!r}")
    return problems


def load_only(text: str) -> Result:
    """The loader's verdict alone."""
    from builder.diagnostics import InputError
    from builder.spec.loader import load_spec_text

    try:
        load_spec_text(text, SPEC_FILE)
    except InputError as exc:
        problems = diagnostic_problems(text, exc.diagnostics)
        if problems:
            return Result("bad-diagnostic", "\n".join(problems))
        return Result("rejected")
    except BaseException as exc:  # noqa: BLE001 - anything else is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Result("crashed", "load_spec_text raised:\n" + traceback.format_exc())
    return Result("accepted")


def examine(text: str, workdir: Path, index: int) -> Result:
    """Load; if accepted, generate into ``workdir/case-<index>`` and compile the code.

    ruff is run later over many packages at once (:func:`ruff_problems`)."""
    result = load_only(text)
    if result.outcome != "accepted":
        return result
    from builder.generate import generate

    case_dir = workdir / f"case-{index}"
    spec_dir = case_dir / "spec"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec_path = spec_dir / SPEC_FILE
    spec_path.write_bytes(text.encode("utf-8"))
    out = case_dir / "out"
    try:
        outcome = generate([spec_path], out)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return Result(
            "crashed", "generate() raised on an accepted spec:\n" + traceback.format_exc()
        )
    packages = [p for p in (out / "connectors").iterdir() if p.is_dir()]
    if len(outcome.written) != 1 or len(packages) != 1:
        return Result("crashed", f"generate() wrote {outcome.written}, found {packages}")
    package = packages[0]
    for source in sorted(package.rglob("*.py")):
        try:
            compile(source.read_text("utf-8"), str(source), "exec")
        except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
            return Result("bad-code", f"{source.relative_to(out)} does not compile: {exc}", package)
    return Result("accepted", package=package)


def ruff_problems(packages: Sequence[Path]) -> dict[Path, list[str]]:
    """``ruff check`` (the project's configuration) of every ``.py`` of ``packages``, in
    batches; the findings per package. Files are passed one by one so that ruff's default
    excludes (a package named ``build`` or ``dist``...) cannot hide any."""
    ruff = shutil.which("ruff")
    if ruff is None:
        raise RuntimeError("ruff is not installed (pip install -e .[dev])")
    by_file: dict[str, Path] = {}
    for package in packages:
        for source in package.rglob("*.py"):
            by_file[str(source)] = package
    found: dict[Path, list[str]] = {}
    files = sorted(by_file)
    for start in range(0, len(files), 400):
        batch = files[start : start + 400]
        proc = subprocess.run(
            [
                ruff,
                "check",
                "--no-cache",
                "--config",
                str(REPO_ROOT / "pyproject.toml"),
                "--output-format",
                "concise",
                *batch,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"ruff failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        for line in proc.stdout.splitlines():
            for path in batch:
                if line.startswith(path + ":"):
                    found.setdefault(by_file[path], []).append(line)
                    break
    return found


def signature(outcome: str, detail: str) -> str:
    """A short description shared by failures that are probably the same bug."""
    lines = detail.splitlines()
    if outcome == "crashed":
        raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
        text = raised[-1] if raised else (lines[-1] if lines else "")
    elif outcome == "bad-code":
        found = sorted(
            {
                f"{m.group(1)} {m.group(2)}"
                for m in (
                    re.search(r"/connectors/[^/]+/([^:]+):\d+:\d+: ([A-Z]+\d+)", line)
                    for line in lines
                )
                if m
            }
        )
        if found:
            return ("ruff: " + ", ".join(found))[:160]
        text = lines[0] if lines else ""
    else:
        text = lines[0] if lines else ""
    text = re.sub(r"connectors/[^/]+/", "connectors/<name>/", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return re.sub(r"\d+", "N", text)[:160]


# --------------------------------------------------------------------------------------- #
# The script
# --------------------------------------------------------------------------------------- #


def run(
    n: int, seed: int, workdir: Path, *, do_generate: bool = True, progress: bool = True
) -> dict[str, Any]:
    ch = RandomChooser(random.Random(seed))
    counts: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = {}
    failures: list[dict[str, Any]] = []
    accepted: dict[Path, tuple[int, Case]] = {}
    timings = {"load_and_generate_s": 0.0, "ruff_s": 0.0}
    started = time.perf_counter()
    for i in range(n):
        case = make_case(ch)
        source = case.source
        result = examine(case.text, workdir, i) if do_generate else load_only(case.text)
        if result.outcome == "accepted" and result.package is not None:
            accepted[result.package] = (i, case)
        counts[result.outcome] += 1
        by_source.setdefault(source, Counter())[result.outcome] += 1
        if result.outcome in BAD_OUTCOMES:
            failures.append(
                {
                    "case": i,
                    "kind": case.kind,
                    "outcome": result.outcome,
                    "detail": result.detail,
                    "text": case.text,
                }
            )
        if progress and (i + 1) % 250 == 0:
            print(
                f"  {i + 1}/{n} cases, {time.perf_counter() - started:.0f} s: "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                flush=True,
            )
    timings["load_and_generate_s"] = time.perf_counter() - started
    if do_generate and accepted:
        t0 = time.perf_counter()
        dirty = ruff_problems(list(accepted))
        timings["ruff_s"] = time.perf_counter() - t0
        for package, lines in dirty.items():
            i, case = accepted[package]
            counts["accepted"] -= 1
            counts["bad-code"] += 1
            source = case.source
            by_source[source]["accepted"] -= 1
            by_source[source]["bad-code"] += 1
            failures.append(
                {
                    "case": i,
                    "kind": case.kind,
                    "outcome": "bad-code",
                    "detail": "ruff:\n" + "\n".join(lines[:10]),
                    "text": case.text,
                }
            )
    return {
        "tried": n,
        "counts": dict(counts),
        "by_source": {k: dict(v) for k, v in sorted(by_source.items())},
        "failures": failures,
        "timings": timings,
    }


def _distinct(failures: list[dict[str, Any]], per_kind: int) -> list[dict[str, Any]]:
    """At most ``per_kind`` failures of each signature, smallest spec text first."""
    seen: Counter[str] = Counter()
    out = []
    for failure in sorted(failures, key=lambda f: len(f["text"])):
        sig = signature(failure["outcome"], failure["detail"])
        if seen[sig] < per_kind:
            seen[sig] += 1
            out.append({**failure, "signature": sig})
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("-n", type=int, help="how many specs (default 2000; --quick: 200)")
    p.add_argument("--seed", type=int, default=20240607, help="random seed (default fixed)")
    p.add_argument("--keep", metavar="DIR", help="keep the generated packages in DIR")
    p.add_argument("--no-generate", action="store_true", help="only load (much faster)")
    p.add_argument("--show", type=int, default=0, help="print N failing cases in full")
    args = p.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)

    print(
        f"spec fuzzing: {n} random/mutated specs, seed {args.seed}, "
        f"{len(SEED_FILES)} seed specs ({', '.join(s.name for s in SEED_FILES)})",
        flush=True,
    )
    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(n, args.seed, workdir, do_generate=not args.no_generate)
    else:
        with tempfile.TemporaryDirectory(prefix="fuzz-specs-") as tmp:
            report = run(n, args.seed, Path(tmp), do_generate=not args.no_generate)
    counts = report["counts"]
    print()
    sources = sorted(report["by_source"])
    rows = []
    for outcome, label in (
        ("rejected", "rejected, every error located (FILE:LINE:COL in the text)"),
        (
            "accepted",
            "accepted, generated, compiles, ruff-clean"
            if not args.no_generate
            else "accepted (not generated: --no-generate)",
        ),
        ("bad-diagnostic", "rejected with an unlocated / misplaced error"),
        ("bad-code", "accepted, but generated code does not compile or is not ruff-clean"),
        ("crashed", "crashed (a traceback)"),
    ):
        rows.append(
            [
                label,
                counts.get(outcome, 0),
                *(report["by_source"][s].get(outcome, 0) for s in sources),
                "must be 0" if outcome in BAD_OUTCOMES else "",
            ]
        )
    rows.append(
        ["tried", report["tried"], *(sum(report["by_source"][s].values()) for s in sources), ""]
    )
    print(
        table(
            ["outcome", "total", *sources, ""],
            rows,
            title=f"Spec fuzzing: {report['tried']} specs tried",
        )
    )
    t = report["timings"]
    print(f"\n(load + generate {t['load_and_generate_s']:.1f} s, ruff {t['ruff_s']:.1f} s)")
    bad = {k: counts.get(k, 0) for k in BAD_OUTCOMES}
    groups = Counter(signature(f["outcome"], f["detail"]) for f in report["failures"])
    if groups:
        print("\nfailures by kind (count, outcome: signature):")
        for sig, count in groups.most_common():
            outcome = next(
                f["outcome"]
                for f in report["failures"]
                if signature(f["outcome"], f["detail"]) == sig
            )
            print(f"  {count:5d}  {outcome}: {sig}")
    for failure in _distinct(report["failures"], 1)[: args.show]:
        print(f"\n--- case {failure['case']} ({failure['kind']}): {failure['outcome']}")
        print(failure["detail"].rstrip()[-1500:])
        print("--- spec text:")
        print(failure["text"][:1500])
    print(
        "\n"
        + ("ok: " if not any(bad.values()) else "FAIL: ")
        + ", ".join(f"{k} {v}" for k, v in bad.items())
    )
    write_json(
        args.json,
        "fuzz_specs",
        {"n": n, "seed": args.seed, "quick": args.quick, "generate": not args.no_generate},
        {
            "tried": report["tried"],
            "counts": counts,
            "by_source": report["by_source"],
            "timings": t,
            "failures": _distinct(report["failures"], 5),
            "targets": {k: 0 for k in BAD_OUTCOMES},
            "verdict": "ok" if not any(bad.values()) else "FAIL",
        },
    )
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Case",
    "Chooser",
    "RandomChooser",
    "Result",
    "diagnostic_problems",
    "examine",
    "load_only",
    "make_case",
    "ruff_problems",
]
