"""Black's formatting of generated modules, paying for black only where it changes something.

The templates write code in black's style already: double-quoted strings, black's blank
lines, one statement per line. What they cannot know is where a statement that is too long
must be split: that is black's work, and only there is it done. A module is cut into
statements (a compound statement into its header and its body's statements). A statement
that fits on one line is copied; one that does not, or spans several lines, is formatted by
black on its own, dedented, with the line length reduced by its indentation — black lays out
one logical line at a time, so the result is what formatting the whole module gives. Where
a statement cannot be formatted on its own (a long ``elif`` or decorator, a multi-line string
inside it), its whole top-level statement is. The parts for black are formatted on every
core and remembered by content hash, so a regeneration after a small change formats only
what changed.

Black stays the judge: ``tests/test_formatting.py`` checks, on every prebuilt spec and on
the OpenAPI corpus, that the result is byte-identical to black on the whole module, and
``connector-builder check`` compares the committed packages with a fresh generation.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.cache import cache_root

LINE_LENGTH = 100
PARALLEL_ABOVE = 400  # parts for black: fewer are formatted here (a worker costs ~0.3 s to start)
_BODY = "pass"  # a compound statement's body while its header is formatted on its own


class FormatError(Exception):
    """Generated code does not parse or black refused it: a bug in the builder."""


@dataclass(frozen=True)
class _Part:
    """Lines ``start``..``end`` (0-based, inclusive) that black formats, dedented by
    ``indent`` columns; a ``header`` gets a stand-in body, removed again afterwards. A part
    with ``fixed`` text needs no black."""

    start: int
    end: int
    indent: int
    header: bool = False
    fixed: str | None = None  # the lines' text, decided without black


def format_python(source: str, name: str) -> str:
    """``source`` as black formats it (checked to compile first)."""
    try:
        tree = ast.parse(source, name)
    except SyntaxError as exc:
        raise FormatError(f"generated {name} does not parse: {exc}\n{_numbered(source)}") from None
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    parts, strings = _parts(tree, lines)
    todo = [part for part in parts if part.fixed is None]
    formatted = dict(
        zip(todo, _format_cached([_part_source(p, lines) for p in todo], name), strict=True)
    )
    out: list[str] = []
    line = 0
    for part in parts:
        out.extend(_between(lines, line, part.start, strings))
        out.append(part.fixed if part.fixed is not None else _reindent(formatted[part], part))
        line = part.end + 1
    out.extend(_between(lines, line, len(lines), strings))
    while out and not out[-1].strip():
        out.pop()  # black ends a module with its last line
    return "".join(out)


def _between(lines: list[str], start: int, end: int, strings: set[int]) -> list[str]:
    """Lines copied as they are, but for runs of blank lines, cut to black's maximum: two
    before a line at the top level, one before an indented line. (Black decides the rest of
    its blank lines from the kinds of the lines around them; the templates write those.)"""
    out: list[str] = []
    blank = 0
    for i in range(start, min(end + 1, len(lines))):
        text = lines[i]
        if i < end and i not in strings and not text.strip():
            blank += 1
            continue
        if blank:
            out.extend(["\n"] * min(blank, 1 if text.startswith(" ") else 2))
            blank = 0
        if i < end:
            out.append(text)
    return out


def prepare() -> None:
    """Import black now: a child forked afterwards has it already instead of importing it
    again (0.15 s)."""
    import black.parsing  # noqa: F401


def black(source: str, line_length: int = LINE_LENGTH) -> str:
    """Black on ``source``, pinned mode: Python 3.11, ``line_length`` columns."""
    from black import format_str
    from black.mode import Mode, TargetVersion
    from black.parsing import InvalidInput

    mode = Mode(target_versions={TargetVersion.PY311}, line_length=line_length)
    try:
        return format_str(source, mode=mode)
    except InvalidInput as exc:
        raise FormatError(f"black could not format generated code: {exc}") from None


# -- which lines black must see -------------------------------------------------------------


class _Whole(Exception):
    """This top-level statement must be formatted whole."""


def _parts(tree: ast.Module, lines: list[str]) -> tuple[list[_Part], set[int]]:
    """What black must format, and the lines inside multi-line strings (kept as they are)."""
    parts: list[_Part] = []
    strings: set[int] = set()
    for i, node in enumerate(tree.body):
        start = _first_line(node)
        end = node.end_lineno - 1 if node.end_lineno else start
        try:
            found = _statement_parts(node, lines, strings, first=i == 0)
        except _Whole:
            found = [_Part(start, end, 0)]
        parts.extend(found)
    return sorted(parts, key=lambda part: part.start), strings


def _first_line(node: ast.stmt) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)]) - 1


def _statement_parts(
    node: ast.stmt, lines: list[str], strings: set[int], first: bool = True
) -> list[_Part]:
    """The parts of ``node`` black must format (``first``: it opens its block)."""
    if isinstance(node, ast.Match):
        raise _Whole
    found: list[_Part] = []
    end = (node.end_lineno or node.lineno) - 1
    for decorator in getattr(node, "decorator_list", ()):
        if _needs_black(lines, decorator.lineno - 1, (decorator.end_lineno or 0) - 1):
            raise _Whole
    body: list[ast.stmt] | None = getattr(node, "body", None)
    start = node.lineno - 1
    indent = _indent(lines[start])
    if not body or body[0].lineno - 1 == start:  # a simple statement, or all on one line
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if end > start:
                strings.update(range(start, end + 1))
                if first:
                    found.extend(_docstring_quotes(lines, start, end, indent))
            return found  # strings are written in black's form by the templates
        if _needs_black(lines, start, end) and not _exploded(lines, start, end, indent):
            if _has_multiline_string(lines, start, end):
                raise _Whole
            found.append(_Part(start, end, indent))
        return found
    header_end = _first_line(body[0]) - 1
    while header_end > start and _is_blank_or_comment(lines[header_end]):
        header_end -= 1
    if _needs_black(lines, start, header_end) and not _exploded(lines, start, header_end, indent):
        if lines[start].lstrip().startswith("elif") or _has_multiline_string(
            lines, start, header_end
        ):
            raise _Whole
        found.append(_Part(start, header_end, indent, header=True))
    blocks = [getattr(node, field, None) or [] for field in ("body", "orelse", "finalbody")]
    blocks += [handler.body for handler in getattr(node, "handlers", ())]
    for handler in getattr(node, "handlers", ()):
        if _needs_black(lines, handler.lineno - 1, _first_line(handler.body[0]) - 1):
            raise _Whole
    for block in blocks:
        for i, child in enumerate(block):
            found.extend(_statement_parts(child, lines, strings, first=i == 0))
    _check_clause_lines(node, lines)
    return found


def _docstring_quotes(lines: list[str], start: int, end: int, indent: int) -> list[_Part]:
    """Black's one change to a docstring the templates wrote: when its last line leaves no
    room for the closing quotes, they go on a line of their own."""
    last = lines[end].rstrip("\n")
    if not last.endswith('"""') or last.strip() == '"""':
        return []
    text = last[:-3]
    if len(text) + 3 <= LINE_LENGTH:
        return []
    if (len(text) - len(text.rstrip("\\"))) % 2:
        raise _Whole  # black pads an odd run of backslashes first
    fixed = text + "\n" + " " * indent + '"""\n'
    return [_Part(end, end, indent, fixed=fixed)]


_STRING_LITERAL = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
_OPENERS = {"(": ")", "[": "]", "{": "}"}


def _exploded(lines: list[str], start: int, end: int, indent: int) -> bool:
    """Lines ``start``..``end`` hold one bracketed list written as black keeps it: one
    element per line, each followed by a comma (black's "magic trailing comma"), an element
    that spans lines being such a list itself; every line within the length. Black leaves
    that as it is, so it is copied."""
    head, tail = lines[start].rstrip("\n"), lines[end].rstrip("\n")
    opened = _magic_opener(head)
    if opened is None or any(len(line) - 1 > LINE_LENGTH for line in lines[start : end + 1]):
        return False
    closer, is_tuple = opened
    pad = " " * indent
    if not tail.startswith(pad + closer) or not _balanced(tail[indent + 1 :]):
        return False
    return _elements(lines, start + 1, end, indent + 4) >= (2 if is_tuple else 1)


def _magic_opener(head: str) -> tuple[str, bool] | None:
    """The bracket that closes the one ``head`` ends with, and whether it is a tuple's
    (black's comma after a tuple's only element is not magic); None for a subscript."""
    opener = head[-1:]
    if opener not in _OPENERS or not _balanced(head + _OPENERS[opener]):
        return None
    before = head[-2:-1]
    if opener == "[" and before not in (" ", "(", "[", "="):
        return None
    is_tuple = opener == "(" and not (before.isidentifier() or before in ")]")
    return _OPENERS[opener], is_tuple


def _elements(lines: list[str], start: int, end: int, indent: int) -> int:
    """How many elements lines ``start``..``end - 1`` hold at ``indent``, each ended by a
    comma; -1 if they are not laid out so."""
    pad = " " * indent
    count = 0
    i = start
    while i < end:
        text = lines[i].rstrip("\n")
        element = text[indent:]
        if not text.startswith(pad) or element[:1] in (" ", ""):
            return -1
        count += 1
        if element.endswith(",") and _balanced(element):
            i += 1
            continue
        j = i + 1
        while j < end and lines[j].startswith(pad + " "):
            j += 1
        opened = _magic_opener(element)
        if j == end or opened is None:
            return -1
        closer, is_tuple = opened
        closing = lines[j].rstrip("\n")[indent:]
        if not (closing.startswith(closer) and closing.endswith(",")):
            return -1
        if not _balanced(closing[1:-1]):
            return -1
        if _elements(lines, i + 1, j, indent + 4) < (2 if is_tuple else 1):
            return -1
        i = j + 1
    return count


def _depth(text: str) -> int:
    """Brackets opened minus closed in ``text``, outside string literals."""
    bare = _STRING_LITERAL.sub("", text)
    return sum(bare.count(c) for c in "([{") - sum(bare.count(c) for c in ")]}")


def _balanced(text: str) -> bool:
    """``text`` closes every bracket it opens, and holds no comment or multi-line string."""
    if '"""' in text or "'''" in text or "#" in _STRING_LITERAL.sub("", text):
        return False
    return _depth(text) == 0


def _needs_black(lines: list[str], start: int, end: int) -> bool:
    return end > start or len(lines[start]) - 1 > LINE_LENGTH


def _has_multiline_string(lines: list[str], start: int, end: int) -> bool:
    return end > start and any('"""' in line or "'''" in line for line in lines[start : end + 1])


def _check_clause_lines(node: ast.stmt, lines: list[str]) -> None:
    """``else:``, ``finally:`` and ``except`` lines belong to no statement: they are
    copied, so they must fit."""
    if isinstance(node, ast.If | ast.For | ast.While | ast.Try | ast.AsyncFor | ast.With):
        for field in ("orelse", "finalbody"):
            inner = getattr(node, field, None)
            if inner:
                clause = _first_line(inner[0]) - 1
                if len(lines[clause]) - 1 > LINE_LENGTH:
                    raise _Whole


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _part_source(part: _Part, lines: list[str]) -> str:
    pad = " " * part.indent
    chunk = lines[part.start : part.end + 1]
    if any(line.strip() and not line.startswith(pad) for line in chunk):
        raise FormatError("a generated statement is indented less than its first line")
    text = "".join(line[part.indent :] if line.strip() else line for line in chunk)
    if part.header:
        text += "    " + _BODY + "\n"
    return f"{LINE_LENGTH - part.indent}\0{text}"


def _reindent(text: str, part: _Part) -> str:
    if part.header:
        stand_in = "    " + _BODY + "\n"
        if not text.endswith(stand_in):
            raise FormatError(f"black moved the body of a statement: {text!r}")
        text = text[: -len(stand_in)]
    if not part.indent:
        return text
    pad = " " * part.indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


# -- black, cached and on every core ---------------------------------------------------------


def _cache_file(name: str) -> Path:
    """One file per generated module: what black made of its parts, by their hash."""
    from importlib.metadata import version

    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    return cache_root() / f"black-{version('black')}-parts" / f"{key}.json"


def _format_cached(texts: list[str], name: str) -> list[str]:
    """Each ``"<line length>\\0<source>"`` formatted by black, from the cache where it can."""
    if not texts:
        return []
    cache = _cache_file(name)
    try:
        known = json.loads(cache.read_text("utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    keys = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
    missing = sorted({text for text, key in zip(texts, keys, strict=True) if key not in known})
    if missing:
        for text, result in zip(missing, _format_many(missing), strict=True):
            known[hashlib.sha256(text.encode()).hexdigest()] = result
        # Only this module's current parts are kept: the file does not grow without end.
        kept = {key: known[key] for key in keys}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(kept), "utf-8")
            tmp.replace(cache)
        except OSError:
            pass  # no writable cache: format again next time
    return [known[key] for key in keys]


def _format_many(texts: list[str]) -> list[str]:
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(texts) < PARALLEL_ABOVE:
        return _black_batch(texts)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = max(1, len(texts) // (workers * 4))
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return [text for batch in pool.map(_black_batch, batches) for text in batch]


def _black_batch(texts: list[str]) -> list[str]:
    formatted: dict[str, str] = {}
    for text in texts:
        if text not in formatted:
            length, _, source = text.partition("\0")
            formatted[text] = _as_async_twin(source, int(length), formatted) or black(
                source, int(length)
            )
    return [formatted[text] for text in texts]


def _as_async_twin(source: str, length: int, formatted: dict[str, str]) -> str | None:
    """An ``async def`` header as black writes its ``def`` twin, plus ``async ``: a client
    has each method twice, and black splits a long ``def`` at its first bracket whatever
    comes before it. Only when the twin is split there and its first line still fits with
    the six characters more; else None (black formats it)."""
    if not source.startswith("async def "):
        return None
    twin = f"{length}\0{source[6:]}"
    if twin not in formatted:
        formatted[twin] = black(source[6:], length)
    first = formatted[twin].partition("\n")[0]
    if not first.endswith("(") or len(first) + 6 > length:
        return None
    return "async " + formatted[twin]


def _numbered(source: str) -> str:
    return "\n".join(f"{i + 1:4} {line}" for i, line in enumerate(source.splitlines()))
