"""Comparing Python annotations as sets of values: same, widened, narrowed or changed.

``Literal['a'] | None`` is read as the set {'a', None}; ``int`` counts as part of
``float`` and ``bool`` of ``int`` (PEP 484's numeric tower); ``Any`` holds everything.
Containers (``list[X]``, ``dict[str, X]``) compare their arguments covariantly: that is how
callers use them (passing a literal, reading items), even though ``list`` is invariant to a
type checker. Order never matters: ``A | B`` is ``B | A``.
"""

from __future__ import annotations

import ast
import enum

Atom = tuple[object, ...]
TypeSet = frozenset[Atom]

_ANY: Atom = ("any",)
_NONE: Atom = ("name", "None")
# What each built-in accepts besides itself (PEP 484: int is acceptable where float is).
_ACCEPTS = {"float": {"int", "bool"}, "int": {"bool"}, "complex": {"float", "int", "bool"}}


class Relation(enum.Enum):
    SAME = "same"
    WIDENED = "widened"
    NARROWED = "narrowed"
    CHANGED = "changed"


def parse(annotation: str) -> TypeSet:
    try:
        tree = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return frozenset({("name", annotation)})
    return _types(tree)


def _types(node: ast.expr) -> TypeSet:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _types(node.left) | _types(node.right)
    if isinstance(node, ast.Constant) and node.value is None:
        return frozenset({_NONE})
    if isinstance(node, ast.Name):
        return frozenset({_ANY if node.id == "Any" else ("name", node.id)})
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if node.value.id == "Literal":
            return frozenset(
                ("literal", type(item.value).__name__, repr(item.value))
                for item in items
                if isinstance(item, ast.Constant)
            )
        if node.value.id in ("Optional",):
            return _types(items[0]) | {_NONE}
        if node.value.id in ("Union",):
            return frozenset().union(*(_types(item) for item in items))
        return frozenset({("generic", node.value.id, tuple(_types(item) for item in items))})
    return frozenset({("name", ast.unparse(node))})


def _atom_within(atom: Atom, types: TypeSet) -> bool:
    return any(_atom_le(atom, other) for other in types)


def _atom_le(a: Atom, b: Atom) -> bool:
    """Every value of ``a`` is a value of ``b``."""
    if b == _ANY:
        return True
    if a == _ANY:
        return False
    if a == b:
        return True
    if b[0] == "name":
        name = str(b[1])
        if a[0] == "name":
            return a[1] in _ACCEPTS.get(name, set())
        if a[0] == "literal":
            return a[1] == name or a[1] in _ACCEPTS.get(name, set())
        return False
    if a[0] == "generic" and b[0] == "generic" and a[1] == b[1]:
        left, right = a[2], b[2]
        assert isinstance(left, tuple) and isinstance(right, tuple)
        return len(left) == len(right) and all(_le(x, y) for x, y in zip(left, right, strict=True))
    return False


def _le(a: TypeSet, b: TypeSet) -> bool:
    return all(_atom_within(atom, b) for atom in a)


def relation(old: str, new: str, *, ignore_none: bool = False) -> Relation:
    """How the annotation ``new`` relates to ``old``.

    With ``ignore_none``, ``None`` is left out of both: used when a value's optionality
    changed and a rule about that already says so.
    """
    a, b = parse(old), parse(new)
    if ignore_none:
        a, b = a - {_NONE}, b - {_NONE}
    forward, backward = _le(a, b), _le(b, a)
    if a == b or (forward and backward):
        return Relation.SAME
    if forward:
        return Relation.WIDENED
    if backward:
        return Relation.NARROWED
    return Relation.CHANGED
