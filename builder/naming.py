"""Turning names from specs and documents into safe, readable Python identifiers."""

from __future__ import annotations

import keyword
import re
import unicodedata

_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NOT_WORD = re.compile(r"[^0-9A-Za-z]+")

# Attributes of pydantic's BaseModel that a field must not shadow.
_MODEL_ATTRIBUTES = frozenset(
    {
        "construct", "copy", "dict", "fields", "from_orm", "json", "parse_file", "parse_obj",
        "parse_raw", "schema", "schema_json", "update_forward_refs", "validate",
    }
)  # fmt: skip

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ascii_words(text: str) -> str:
    """Look-alike letters folded to ASCII; everything else non-word becomes a space."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_WORD.sub(" ", folded)


def snake_case(text: str) -> str:
    """``fooBar-baz`` -> ``foo_bar_baz``; empty when nothing word-like is left."""
    text = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", ascii_words(text).strip()))
    return "_".join(part for part in re.split(r"[\s_]+", text.lower()) if part)


def pascal_case(text: str) -> str:
    words = re.split(r"[\s_]+", _CAMEL_2.sub(r"\1 \2", ascii_words(text)).strip())
    return "".join(w[:1].upper() + w[1:] for w in words if w)


def is_safe_identifier(name: str) -> bool:
    """A plain ASCII identifier that is not a keyword and not a dunder."""
    return (
        bool(IDENTIFIER.match(name))
        and not keyword.iskeyword(name)
        and not (name.startswith("__") and name.endswith("__"))
    )


def field_name(wire_name: str) -> str:
    """A model field name for a JSON property: snake_case, never private, keyword or shadowing."""
    name = snake_case(wire_name) or "field"
    if name[0].isdigit() or name.startswith("_"):
        name = f"field_{name.lstrip('_')}"
    if keyword.iskeyword(name) or name in _MODEL_ATTRIBUTES:
        name += "_"
    if name.startswith("model_"):
        name = "field_" + name
    return name


def unique(name: str, taken: set[str], sep: str = "_") -> str:
    """``name``, or ``name_2``, ``name_3``... whichever is not taken yet (then taken)."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{sep}{n}"
    taken.add(candidate)
    return candidate
