"""Reading OpenAPI documents: fast parsing, `$ref` resolution, positions only when needed.

The happy path parses with ``json`` or libyaml and never tracks positions; a message that
needs a line number re-reads the text with position tracking, once, on demand.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from builder.cache import cache_root
from builder.diagnostics import Diagnostic, InputError

try:
    from yaml import CSafeLoader as _FastLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _FastLoader  # type: ignore[assignment]

LARGE_DOCUMENT = 512 * 1024
SPLIT_ABOVE = 512 * 1024  # YAML this large is read in two halves at once (two cores)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class _NoDatesLoader(_FastLoader):
    """YAML with dates kept as text: an OpenAPI example date is a string, not a datetime."""


_NoDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in _FastLoader.yaml_implicit_resolvers.items()
}

_STR, _MAP, _SEQ = ("tag:yaml.org,2002:" + t for t in ("str", "map", "seq"))
_MERGE = "tag:yaml.org,2002:merge"


class _Unusual(Exception):
    """A node the direct walk leaves to PyYAML's own constructor."""


class _DocumentLoader(_NoDatesLoader):
    """:class:`_NoDatesLoader` building plain mappings, lists and strings in one recursive
    walk instead of PyYAML's generic constructor (40 % of OpenAI's document): anything else
    — another scalar type is still built by PyYAML — and any unusual node (a merge key, a
    recursive alias, an unhashable key, a custom tag) makes the whole document go through
    PyYAML's constructor, so the result is always PyYAML's (tested on the corpus)."""

    _typed_starts: frozenset[str | None] = frozenset()

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # libyaml calls this for every scalar (a third of the parse of OpenAI's document):
        # with no path resolvers, a plain scalar's tag depends on its text alone, and text
        # whose first character starts no implicit type is a string.
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        if not implicit[0] or (value and value[0] not in self._typed_starts):
            return _STR
        tag = self._tags.get(value)
        if tag is None:
            tag = self._tags[value] = super().resolve(  # type: ignore[no-untyped-call]
                kind, value, implicit
            )
        return tag

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            return self._build(node, {}, set())
        except _Unusual:
            return super().construct_document(node)

    def _build(self, node: yaml.Node, built: dict[int, Any], open_: set[int]) -> Any:
        key = id(node)
        if key in built:  # an alias: the same object, as PyYAML gives it
            return built[key]
        kind = node.__class__
        if kind is yaml.ScalarNode:
            if node.tag == _STR:
                return node.value
            value = self.construct_object(node, deep=True)
        elif kind is yaml.MappingNode and node.tag == _MAP and key not in open_:
            open_.add(key)
            value = {}
            for k, v in node.value:
                if k.tag == _MERGE:
                    raise _Unusual
                name = k.value if k.__class__ is yaml.ScalarNode and k.tag == _STR else None
                if name is None:
                    name = self._build(k, built, open_)
                    if not isinstance(name, str | int | float | bool | type(None)):
                        raise _Unusual
                value[name] = self._build(v, built, open_)
            open_.discard(key)
        elif kind is yaml.SequenceNode and node.tag == _SEQ and key not in open_:
            open_.add(key)
            value = [self._build(v, built, open_) for v in node.value]
            open_.discard(key)
        else:
            raise _Unusual
        built[key] = value
        return value


# The first characters some implicit (non-string) YAML type starts with; None: any.
_DocumentLoader._typed_starts = frozenset(_DocumentLoader.yaml_implicit_resolvers)
assert None not in _DocumentLoader._typed_starts


class OpenAPIDocument:
    """One parsed document and the files its `$ref`s reach."""

    def __init__(self, path: Path, text: str, data: dict[str, Any]) -> None:
        self.path = path
        self.text = text
        self.data = data
        self._others: dict[Path, OpenAPIDocument] = {}

    @property
    def version(self) -> str:
        raw = self.data.get("openapi") or self.data.get("swagger") or ""
        return str(raw)

    @property
    def major(self) -> str:
        """``2.0``, ``3.0`` or ``3.1``."""
        v = self.version
        return (
            "2.0"
            if v.startswith("2")
            else "3.1"
            if v.startswith("3.1") or v.startswith("3.2")
            else "3.0"
        )

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    # -- positions ------------------------------------------------------------------------

    @cached_property
    def _positions(self) -> dict[tuple[str, ...], tuple[int, int]]:
        """(line, col) of every value, by JSON-pointer parts; built on first use only."""
        positions: dict[tuple[str, ...], tuple[int, int]] = {}
        try:
            root = yaml.compose(self.text, Loader=_FastLoader)
        except yaml.YAMLError:
            return positions
        stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())] if root is not None else []
        while stack:
            node, path = stack.pop()
            positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode):
                        stack.append((value, path + (key.value,)))
            elif isinstance(node, yaml.SequenceNode):
                for i, value in enumerate(node.value):
                    stack.append((value, path + (str(i),)))
        return positions

    def position(self, pointer: str) -> tuple[int, int]:
        parts = tuple(_unescape(p) for p in pointer.lstrip("#").split("/") if p) if pointer else ()
        positions = self._positions
        while parts and parts not in positions:
            parts = parts[:-1]
        return positions.get(parts, (1, 1))

    def diagnostic(self, pointer: str, message: str, severity: str = "error") -> Diagnostic:
        # Finding a line means re-reading the text with positions: worth it for an error,
        # not for a warning in a document of megabytes.
        exact = severity == "error" or len(self.text) < LARGE_DOCUMENT
        line, col = self.position(pointer) if exact else (1, 1)
        return Diagnostic(str(self.path), line, col, pointer or "#", message, severity)  # type: ignore[arg-type]

    # -- references -----------------------------------------------------------------------

    def resolve(self, ref: str) -> tuple[Any, OpenAPIDocument, str]:
        """The target of a `$ref`, the document it is in, and its pointer there."""
        location, _, fragment = ref.partition("#")
        document = self if not location else self._other(location)
        target: Any = document.data
        for part in fragment.split("/"):
            if not part:
                continue
            key = _unescape(part)
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise KeyError(ref)
        return target, document, "#" + fragment

    def referenced_files(self) -> list[Path]:
        """Every other file reached through `$ref`s so far (and those they reach)."""
        found: list[Path] = []
        for path, other in self._others.items():
            found.append(path)
            found.extend(p for p in other.referenced_files() if p not in found)
        return found

    def _other(self, location: str) -> OpenAPIDocument:
        if "://" in location:
            raise KeyError(f"{location}: remote references are not fetched")
        path = (self.path.parent / unquote(location)).resolve()
        if path not in self._others:
            self._others[path] = load_document(path, fragment=True)
        return self._others[path]


def _unescape(part: str) -> str:
    return unquote(part).replace("~1", "/").replace("~0", "~")


def load_document(path: str | Path, *, fragment: bool = False) -> OpenAPIDocument:
    """A document, or with ``fragment`` any YAML/JSON file a `$ref` points into."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise InputError([Diagnostic(str(path), 1, 1, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Diagnostic(str(path), 1, 1, "", f"cannot read: {exc}")]) from None
    data = _parse_cached(text, str(path))
    if fragment and isinstance(data, dict):
        return OpenAPIDocument(path, text, data)
    if not isinstance(data, dict) or not (data.get("openapi") or data.get("swagger")):
        raise InputError(
            [
                Diagnostic(
                    str(path), 1, 1, "", "not an OpenAPI document: no `openapi` or `swagger` key"
                )
            ]
        )
    return OpenAPIDocument(path, text, data)


def _parse_cached(text: str, file: str) -> Any:
    """Parse, keeping the result as JSON by content hash: building Python objects from a
    YAML document of megabytes takes seconds even with libyaml; reading JSON does not."""
    if text.lstrip()[:1] in ("{", "["):
        return parse(text, file)
    import os

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    cached = cache_root() / "parsed" / f"{digest}.json"
    try:
        return json.loads(cached.read_text("utf-8"))
    except (OSError, ValueError):
        pass
    data = parse(text, file)
    if len(text) > 64 * 1024:  # small documents parse faster than a cache lookup pays
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
            tmp.replace(cached)
        except (OSError, TypeError, ValueError):
            pass  # not cacheable (odd YAML types) or no writable cache
    return data


def parse(text: str, file: str) -> Any:
    """JSON when it looks like JSON (fast), else YAML with libyaml; errors located."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                [Diagnostic(file, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]
            ) from None
    if len(text) >= SPLIT_ABOVE:
        halves = _parse_in_halves(text)
        if halves is not None:
            return halves
    try:
        return yaml.load(text, Loader=_DocumentLoader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InputError(
            [Diagnostic(file, line, col, "", f"invalid YAML: {exc.problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError([Diagnostic(file, 1, 1, "", f"invalid YAML: {exc}")]) from None


# -- a large YAML document read in two halves at once ----------------------------------------
#
# A document is a mapping whose keys (openapi, info, paths, components, ...) start at the
# first column, each followed by its value's lines, indented; a key alone on its line
# ("components:", "  schemas:") holds a mapping indented further. Cut before a key of such
# a mapping (at most two levels down), the text is two documents: the first part, and the
# keys that lead to the cut ("components:\n  schemas:\n") followed by the rest. The whole
# is the first, with the second's keys added along that path, each as the whole text gives
# it (a key met again replaces its value, as with PyYAML). What could make a half mean
# something else makes it fail instead — an alias to an anchor in the other half, a scalar
# or bracket cut open — and then the whole text is read as one. Not cut: texts with a
# directive, another document, a top-level merge key or a complex key,
# and cuts under a key written twice at its level.

_KEY_LINE = re.compile(
    r"^(?P<indent> {0,4})(?P<key>[A-Za-z_/$][^\n:#]*|\"[^\"\n]*\"|'[^'\n]*'):"
    r"(?P<alone>[ \t]*(?:#[^\n]*)?$)?",
    re.MULTILINE,
)
# (A "- " at the first column is a sequence's item under the key before it, or the text is
# a sequence, which neither half reads as a mapping.)
_NOT_CUT = re.compile(r"^(?:%|\.\.\.|<<|\?|---.)", re.MULTILINE)


def _parse_in_halves(text: str, *, fork: bool | None = None) -> dict[Any, Any] | None:
    """The document read in two halves at once, one in a forked child (``fork``: whether
    to fork; by default when it is safe); None where that cannot be done (see above), or
    a half fails."""
    from builder.forked import Pending, can_fork

    if fork is None:
        fork = can_fork()
        if not fork:
            return None  # in one process, halves cost what the whole does
    if _NOT_CUT.search(text, 1):
        return None
    found = _cut(text)
    if found is None:
        return None
    cut, path, lead = found
    first, second = text[:cut], lead + text[cut:]
    pending = Pending(_parse_half, second, fork=fork)  # the child reads the rest
    own = _parse_half(first)
    if own is None:
        pending.cancel()
        return None
    other = pending.result()
    if other is None:
        return None
    return own if _merge_along(own, other, len(path)) else None


def _cut(text: str) -> tuple[int, list[str], str] | None:
    """Where to cut (about half the lines on each side), the keys leading there, and the
    lines that write those keys; None: no such place."""
    keys = list(_KEY_LINE.finditer(text))
    if len(keys) < 2:
        return None
    middle = text.count("\n") // 2
    target = 0
    for _ in range(middle):
        target = text.find("\n", target) + 1
        if not target:
            return None
    later = [i for i, m in enumerate(keys) if m.start() >= target]
    for index in later[:200]:
        found = _leading_keys(text, keys, index)
        if found is not None:
            return keys[index].start(), *found
    return None


def _leading_keys(text: str, keys: list[re.Match[str]], index: int) -> tuple[list[str], str] | None:
    """The keys (alone on their lines) that hold the key ``keys[index]``, outermost first,
    and their lines; None when anything else holds it, or one of them is written twice."""
    indent = len(keys[index].group("indent"))
    if index == 0 or not keys[index].group("key")[0].isalpha() and indent == 0:
        return None
    path: list[str] = []
    lines: list[str] = []
    at = keys[index].start()
    while indent > 0:
        # The line before, at a smaller indent (blank lines and comments aside).
        line_end = at - 1
        while True:
            line_start = text.rfind("\n", 0, line_end) + 1
            line = text[line_start:line_end]
            stripped = line.lstrip(" ")
            if stripped and not stripped.startswith("#") and len(line) - len(stripped) < indent:
                break
            if line_start == 0:
                return None
            line_end = line_start - 1
        holder = _KEY_LINE.match(text, line_start)
        if holder is None or holder.group("alone") is None:
            return None  # a sequence, a scalar, a flow collection: not a mapping's key
        key = holder.group("key")
        if not (key[0].isalpha() or key[0] == "_") or text.count(f"\n{line}\n") > 1:
            return None  # a quoted key, or written twice
        path.insert(0, key)
        lines.insert(0, line.rstrip(" \t") + "\n")
        indent = len(holder.group("indent"))
        at = line_start
    return path, "".join(lines)


def _merge_along(head: dict[Any, Any], tail: dict[Any, Any], depth: int) -> bool:
    """``tail``'s keys into ``head``, ``depth`` mappings down: at each level above, the
    first key of ``tail`` (a leading key) must be the last of ``head`` (the key the cut
    was made in, written once before it), with a mapping on both sides; the keys after it
    in ``tail`` are written anew. False when that is not so (``head`` is then spoilt)."""
    if depth == 0:
        head.update(tail)  # a key written again replaces the value, as with PyYAML
        return True
    if not head or not tail:
        return False
    key, last = next(iter(tail)), next(reversed(head))
    if key != last or type(key) is not type(last):  # (1 == True)
        return False
    inner, rest = head[key], tail[key]
    if not isinstance(inner, dict) or not isinstance(rest, dict):
        return False
    if not _merge_along(inner, rest, depth - 1):
        return False
    for later in list(tail)[1:]:
        head[later] = tail[later]
    return True


def _parse_half(text: str) -> dict[Any, Any] | None:
    """A half of a document as a mapping; None when it is not one, or does not parse."""
    try:
        data = yaml.load(text, Loader=_DocumentLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None
