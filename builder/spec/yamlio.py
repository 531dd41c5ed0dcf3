"""Safe YAML loading that keeps every value's position for error messages.

Only plain data is allowed: mappings, sequences, strings, numbers, booleans and null. Any
tag that asks for an object (``!!python/object``, custom ``!tags``) is an error, as are
duplicate keys. Aliases are expanded with a budget, so an "alias bomb" fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from builder.diagnostics import Diagnostic, InputError, dotted

try:  # libyaml's parser is several times faster where it is installed
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_SCALARS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MAX_NODES = 5_000_000
# Values reached again through aliases: a real spec reuses a few anchors; a "billion laughs"
# document reuses them exponentially. Past this budget the document is refused.
_MAX_ALIAS_VALUES = 100_000


@dataclass
class Document:
    """Parsed YAML data plus where each value (and each mapping key) sits in the file."""

    file: str
    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """(line, col), 1-based, of the value at ``path`` or its nearest known ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if key and probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
            table = self.values
        return self.values.get((), (1, 1))

    def diagnostic(
        self, path: Path, message: str, *, key: bool = False, severity: str = "error"
    ) -> Diagnostic:
        line, col = self.position(path, key=key)
        return Diagnostic(self.file, line, col, dotted(path), message, severity)  # type: ignore[arg-type]


class _Builder:
    def __init__(self, file: str) -> None:
        self.doc = Document(file, None)
        self.problems: list[Diagnostic] = []
        self.budget = _MAX_NODES
        self.alias_budget = _MAX_ALIAS_VALUES
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, path: Path, message: str) -> None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.problems.append(Diagnostic(self.doc.file, line, col, dotted(path), message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.budget -= 1
        key = id(node)
        if key in self.seen:
            self.alias_budget -= 1
            if self.alias_budget < 0:
                raise _TooBig(f"aliases expand to over {_MAX_ALIAS_VALUES} values (an alias bomb?)")
        else:
            self.seen.add(key)
        if self.budget < 0:
            raise _TooBig(f"the document has over {_MAX_NODES} values")
        self.doc.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            if id(node) in self.active:
                self.error(node, path, "an alias refers to a mapping that contains it")
                return None
            self.active.add(id(node))
            try:
                return self.mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            if node.tag != f"{_TAG}seq":
                self.error(
                    node, path, f"YAML tag {node.tag!r} is not allowed: specs hold plain data"
                )
                return None
            if id(node) in self.active:
                self.error(node, path, "an alias refers to a list that contains it")
                return None
            self.active.add(id(node))
            try:
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        assert isinstance(node, yaml.ScalarNode)
        if node.tag not in _SCALARS:
            self.error(node, path, f"YAML tag {node.tag!r} is not allowed: specs hold plain data")
            return None
        if node.tag == f"{_TAG}str" or node.tag == f"{_TAG}timestamp":
            return node.value  # dates stay text: a spec has no use for datetime objects
        kind = node.tag[len(_TAG) :]
        try:
            return getattr(self.constructor, f"construct_yaml_{kind}")(node)
        except ValueError as exc:  # e.g. an integer past Python's digit limit
            self.error(node, path, f"cannot read this {kind}: {exc}")
            return None

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        if node.tag != f"{_TAG}map":
            self.error(node, path, f"YAML tag {node.tag!r} is not allowed: specs hold plain data")
            return {}
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == f"{_TAG}merge":
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for source in sources:
                    built = self.build(source, path)
                    if isinstance(built, dict):
                        for k, v in built.items():
                            merged.setdefault(k, v)
                    else:
                        self.error(
                            source, path, "a merge key (<<) takes a mapping or a list of them"
                        )
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALARS:
                self.error(key_node, path, "mapping keys must be plain strings")
                continue
            key = key_node.value if key_node.tag == f"{_TAG}str" else self.build(key_node, path)
            key = str(key) if not isinstance(key, str) else key
            if key_node.tag in (f"{_TAG}bool", f"{_TAG}null"):
                # `on:`/`no:`/`null:` keys are YAML 1.1 booleans/null: keep the text the user wrote
                key = key_node.value
            child = path + (key,)
            if key in result:
                first = self.doc.keys[child]
                self.error(
                    key_node, child, f"duplicate key {key!r} (first defined at line {first[0]})"
                )
                continue
            self.doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


class _TooBig(Exception):
    """The document is too large once aliases are expanded."""


def load_yaml(text: str, file: str) -> Document:
    """Parse ``text``; raise :class:`InputError` with located diagnostics on any problem."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        rows = text.splitlines() or [""]
        if line > len(rows):  # the parser points just past the end of the text
            line, col = len(rows), len(rows[-1]) + 1
        col = min(col, len(rows[line - 1]) + 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError([Diagnostic(file, line, col, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise InputError([Diagnostic(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        raise InputError([Diagnostic(file, 1, 1, "", "the file is empty: expected a spec mapping")])
    if len(nodes) > 1:
        second = nodes[1].start_mark
        raise InputError(
            [Diagnostic(file, second.line + 1, 1, "", "expected one YAML document, found several")]
        )
    builder = _Builder(file)
    try:
        builder.doc.data = builder.build(nodes[0], ())
    except _TooBig as exc:
        raise InputError([Diagnostic(file, 1, 1, "", str(exc))]) from None
    except RecursionError:
        raise InputError(
            [Diagnostic(file, 1, 1, "", "the document is nested too deeply")]
        ) from None
    if builder.problems:
        raise InputError(builder.problems)
    return builder.doc
