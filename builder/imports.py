"""Import blocks for generated modules, grouped and ordered as isort (and ruff) expect."""

from __future__ import annotations

import sys
from collections.abc import Iterable

_STDLIB = sys.stdlib_module_names
_THIRD_PARTY = {"httpx", "pydantic", "pytest", "respx", "typing_extensions"}


def _section(module: str) -> int:
    if module == "__future__":
        return 0
    if module.split(".")[0] in _STDLIB:
        return 1
    if module.split(".")[0] in _THIRD_PARTY:
        return 2
    if module.startswith("."):
        return 4
    return 3  # first party: builder, connectors


def _name_key(name: str) -> tuple[int, str, str]:
    # isort's "order by type": CONSTANTS, then Classes, then functions and variables,
    # each group sorted without regard to case.
    if name.isupper() and len(name) > 1:
        return (0, name.lower(), name)
    if name[:1].isupper():
        return (1, name.lower(), name)
    return (2, name.lower(), name)


def import_sections(imports: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """``[(module, name), ...]`` -> sections of ``(module, "A, B, c")`` lines.

    A name of ``""`` means ``import module``.
    """
    by_module: dict[str, set[str]] = {}
    for module, name in imports:
        by_module.setdefault(module, set()).add(name)
    sections: dict[int, list[tuple[str, str]]] = {}
    ordered = sorted(by_module, key=lambda m: m.lower())
    # Within a section, `import x` lines come before `from x import y` lines.
    for module in ordered:
        if "" in by_module[module]:
            sections.setdefault(_section(module), []).append((module, ""))
    for module in ordered:
        names = sorted((n for n in by_module[module] if n), key=_name_key)
        if names:
            sections.setdefault(_section(module), []).append((module, ", ".join(names)))
    return [sections[k] for k in sorted(sections)]


def sorted_names(names: Iterable[str]) -> str:
    """Names of one ``from`` import, joined in the order isort (and ruff) want."""
    return ", ".join(sorted(set(names), key=_name_key))
