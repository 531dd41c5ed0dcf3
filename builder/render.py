"""Render a connector's IR into the files of its package.

Spec text reaches generated code only through the filters below: ``py`` (a Python literal
made by ``repr``), ``docstring`` (escaped for a triple-quoted string), ``md`` (escaped for
Markdown) and ``annotation`` (an expression checked against an allow-list of AST nodes).
Identifiers were validated when the spec was loaded and are checked again by ``ident``.
The Python files are then formatted by black, in-process and pinned, so output never
depends on what the machine has on PATH.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from builder.cache import cache_root
from builder.forked import Pending
from builder.formatting import LINE_LENGTH, format_python
from builder.formatting import prepare as prepare_formatting
from builder.imports import sorted_names
from builder.ir import Connector
from builder.naming import is_safe_identifier

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# template -> file in the package; Python files are formatted with black.
PACKAGE_FILES = {
    "__init__.py.j2": "__init__.py",
    "models.py.j2": "models.py",
    "client.py.j2": "client.py",
    "README.md.j2": "README.md",
    "test_client.py.j2": "tests/test_client.py",
}
# A connector of a data kind (sql, kafka, ...) subclasses its transport instead.
DATA_PACKAGE_FILES = {
    "__init__.py.j2": "__init__.py",
    "models.py.j2": "models.py",
    "data_client.py.j2": "client.py",
    "data_README.md.j2": "README.md",
    "data_test_client.py.j2": "tests/test_client.py",
}


class RenderError(Exception):
    """A template produced something unsafe or unparsable: a bug in the builder, not the spec."""


def literal(value: Any) -> str:
    """A Python literal for plain data; anything else is refused."""
    if isinstance(value, str | bytes):
        return _quoted(repr(value))
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f'float("{value}")'
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise RenderError(f"cannot render {type(value).__name__} as a literal")


def _quoted(text: str) -> str:
    """A string literal (a ``repr``) with black's choice of quotes: double unless that
    adds escapes."""
    prefix = "b" if text[:1] == "b" else ""
    body = text[len(prefix) :]
    if body[:1] == '"':
        return text  # repr chose double quotes: black keeps them
    if '"' not in body and "\\'" not in body:
        return f'{prefix}"{body[1:-1]}"'  # nothing to escape either way
    from black.strings import normalize_string_quotes

    return normalize_string_quotes(text)


@dataclass(frozen=True)
class Group:
    """``head``, items, ``tail``: a call, list or dict that :func:`bracketed` lays out."""

    head: str
    items: tuple[str | Group, ...]
    tail: str

    def one_line(self) -> str:
        inner = ", ".join(i if isinstance(i, str) else i.one_line() for i in self.items)
        return f"{self.head}{inner}{self.tail}"


def group(head: str, items: Sequence[str | Group], tail: str) -> Group:
    return Group(head, tuple(items), tail)


def bracketed(
    head: str, items: Sequence[str | Group], tail: str, indent: int = 0, after: int = 0
) -> str:
    """``head`` + items + ``tail`` on one line when that fits, else one item per line, each
    followed by a comma — an item that is itself a :class:`Group` laid out the same way
    when it does not fit on its line. Black keeps that layout as it is (its "magic trailing
    comma"), so it has nothing to do here. ``after``: characters the template writes after
    ``tail`` on the same line."""
    whole = Group(head, tuple(items), tail)
    if indent + len(whole.one_line()) + after <= LINE_LENGTH or not items:
        return whole.one_line()
    inner = indent + 4
    lines = []
    for item in items:
        if isinstance(item, Group):
            text = bracketed(item.head, list(item.items), item.tail, inner)
            if "\n" not in text and inner + len(text) + 1 > LINE_LENGTH:
                text = _exploded(item, inner)
        else:
            text = item
        lines.append(f"{' ' * inner}{text},\n")
    return f"{head}\n{''.join(lines)}{' ' * indent}{tail}"


def _exploded(item: Group, indent: int) -> str:
    """A group that fits on its line only without the comma that follows it: exploded."""
    pad = " " * (indent + 4)
    inner = "".join(f"{pad}{i if isinstance(i, str) else i.one_line()},\n" for i in item.items)
    return f"{item.head}\n{inner}{' ' * indent}{item.tail}"


def import_from(module: str, names: str, indent: int = 0) -> str:
    """``from module import names`` (names joined by ", "), in parentheses one per line
    when it does not fit."""
    line = f"from {module} import {names}"
    if indent + len(line) <= LINE_LENGTH:
        return line
    return bracketed(f"from {module} import (", names.split(", "), ")", indent)


def kwargs(values: dict[str, Any]) -> str:
    return ", ".join(kwarg_items(values))


def kwarg_items(values: dict[str, Any]) -> list[str]:
    return [f"{ident(k)}={literal(v)}" for k, v in values.items()]


def docstring(text: str) -> str:
    """Text safe inside a triple-quoted docstring: escapes, no stray quotes, printable."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.replace("\n", "").replace("\t", "").isprintable():  # the usual case, at C speed
        return _docstring_tail(text.replace("\\", "\\\\"))
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n" or ch == "\t" or ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return _docstring_tail("".join(out))


def _docstring_tail(escaped: str) -> str:
    result = escaped.replace('"""', '\\"\\"\\"')
    lines = [line.rstrip() for line in result.split("\n")]
    result = "\n".join(lines).strip()
    if result.endswith('"'):
        result = result[:-1] + '\\"'
    return result


def docwrap(text: str, indent: int, hanging: int | None = None) -> str:
    """:func:`docstring`, wrapped to the line length: the first line starts at column
    ``indent`` (the template puts it there), the others are indented by ``hanging``."""
    hanging = indent if hanging is None else hanging
    room = max(30, LINE_LENGTH - max(indent, hanging) - 3)  # 3: closing quotes may follow
    lines: list[str] = []
    for line in docstring(text).split("\n"):
        if len(line) <= room:
            lines.append(line)
            continue
        lead = line[: len(line) - len(line.lstrip())]
        lines.extend(
            textwrap.wrap(
                line,
                width=room,
                subsequent_indent=lead,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    pad = " " * hanging
    return "\n".join(lines[:1] + [(pad + line) if line else "" for line in lines[1:]])


def md(text: Any) -> str:
    """Text safe in Markdown: no HTML, links, emphasis or table breaks from the spec."""
    out = []
    for ch in str(text):
        if ch in "\\`*_{}[]<>()#+!|~":
            out.append(f"&#{ord(ch)};" if ch in "<>" else "\\" + ch)
        elif ch == "&":
            out.append("&amp;")
        elif ch == "\n" or ch.isprintable():
            out.append(ch)
    return "".join(out)


def md_code(value: Any) -> str:
    """Inline code for Markdown: a Python literal, backticks fenced safely."""
    text = value if isinstance(value, str) and value.isidentifier() else literal(value)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def md_fenced(text: Any, language: str = "") -> str:
    """A fenced code block holding ``text`` as written: the fence is longer than any run of
    backticks in it, and non-printable characters are dropped."""
    body = "".join(ch for ch in str(text) if ch == "\n" or ch.isprintable())
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"


def ident(name: str) -> str:
    if not is_safe_identifier(name):
        raise RenderError(f"{name!r} is not a safe identifier")
    return name


_ANNOTATION_NODES = (
    ast.Expression,
    ast.Name,
    ast.Load,
    ast.Subscript,
    ast.Tuple,
    ast.BinOp,
    ast.BitOr,
    ast.Constant,
    ast.Attribute,
    ast.keyword,
    ast.UnaryOp,  # only as a minus sign on a number, checked below
    ast.USub,
)


@functools.lru_cache(maxsize=4096)
def annotation(text: str) -> str:
    """An annotation expression, checked to be names, subscripts, ``|`` and constants only."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise RenderError(f"bad annotation {text!r}: {exc}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ANNOTATION_NODES) or _bad_unary(node):
            raise RenderError(f"annotation {text!r} contains {type(node).__name__}")
    return _requoted(text)


_STRING = re.compile(r"""[bB]?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")


def _requoted(code: str) -> str:
    """``code`` (names, subscripts and constants only) with black's quotes on its strings."""
    if "'" not in code:
        return code
    return _STRING.sub(lambda m: _quoted(m.group()), code)


def _bad_unary(node: ast.AST) -> bool:
    return isinstance(node, ast.UnaryOp) and not (
        isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
    )


def decoder(text: str) -> str:
    """A Decoder argument: an annotation, or ``lazy=lambda: <annotation>`` whose only calls
    are ``_models()`` (the lazily imported models module)."""
    prefix, suffix = "lazy=lambda: ", ", many=True"
    if not text.startswith(prefix):
        return annotation(text)
    expression = text[len(prefix) :].removesuffix(suffix)
    for node in ast.walk(ast.parse(expression, mode="eval")):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name == "_models" and not node.args and not node.keywords:
                continue
            if name == "GenericAlias" and len(node.args) == 2 and not node.keywords:
                continue
            raise RenderError(f"decoder {text!r} calls something other than _models()")
        elif not isinstance(node, _ANNOTATION_NODES):
            raise RenderError(f"decoder {text!r} contains {type(node).__name__}")
    return _requoted(text)


@cache
def environment() -> Any:
    """The Jinja environment (imported here: a run that renders nothing never loads jinja2)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=_template_bytecode(jinja2),
    )
    env.filters.update(
        py=literal,
        kwargs=kwargs,
        kwarg_items=kwarg_items,
        bracketed=bracketed,
        group=group,
        import_from=import_from,
        docstring=docstring,
        docwrap=docwrap,
        md=md,
        md_code=md_code,
        md_fenced=md_fenced,
        import_names=lambda names: sorted_names(ident(n) for n in names),
        ident=ident,
        annotation=annotation,
        decoder=decoder,
    )
    return env


def _template_bytecode(jinja2: Any) -> Any:
    """Compiled templates kept as Python keeps compiled modules: in ``__pycache__`` beside
    them when it is writable, else in the cache (compiling them anew costs a fresh run
    0.15 s). Jinja checks each against its template's source and its own version."""
    for directory in (TEMPLATES / "__pycache__", cache_root() / "templates"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return jinja2.FileSystemBytecodeCache(str(directory), "%s.jinja")
    return None


# The parts of the builder whose code decides what a package contains (not the CLI,
# diff or runtime): a change to one of them regenerates every package.
_SHAPES_OUTPUT = frozenset(
    {
        "__init__.py",
        "spec",
        "openapi",
        "ir.py",
        "render.py",
        "formatting.py",
        "naming.py",
        "imports.py",
        "samples.py",
    }
)


@cache
def generator_digest() -> str:
    """A hash of every template and of the generator's own code: part of each package's
    content hash, so a change to either regenerates what it affects."""
    digest = hashlib.sha256()
    builder = Path(__file__).resolve().parent
    sources = [(TEMPLATES, p) for p in TEMPLATES.rglob("*.j2")]
    sources += [
        (builder, p)
        for p in builder.rglob("*.py")
        if p.relative_to(builder).parts[0] in _SHAPES_OUTPUT
    ]
    for root, path in sorted(sources, key=lambda item: item[1].relative_to(item[0]).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# Models of a connector this large are rendered in a child process beside the rest.
MODELS_IN_PARALLEL_ABOVE = 200


def render_package(connector: Connector) -> dict[str, str]:
    """Every file of the package, keyed by its path inside the package."""
    templates = dict(PACKAGE_FILES if connector.data is None else DATA_PACKAGE_FILES)
    models: Pending[str] | None = None
    if len(connector.models) > MODELS_IN_PARALLEL_ABOVE:
        # What both processes need is loaded once, before the fork shares it.
        environment().get_template("models.py.j2")
        prepare_formatting()
        del templates["models.py.j2"]
        models = Pending(_render_file, connector, "models.py.j2", "models.py")
    files = {
        target: _render_file(connector, template, target) for template, target in templates.items()
    }
    if models is not None:
        files["models.py"] = models.result()
    if connector.data is None:
        files["tests/cases.json"] = connector.test_cases()
    if connector.llm_cases is not None:
        files["tests/test_llm.py"] = _render_file(connector, "test_llm.py.j2", "tests/test_llm.py")
        files["tests/llm_cases.json"] = json.dumps(connector.llm_cases, indent=1) + "\n"
    files["py.typed"] = ""
    return dict(sorted(files.items()))


def _render_file(connector: Connector, template: str, target: str) -> str:
    text: str = environment().get_template(template).render(c=connector)
    if target.endswith(".py"):
        text = format_python(text, f"connectors/{connector.name}/{target}")
    return text
