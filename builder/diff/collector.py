"""Recording changes as comparisons find them, each placed on its lines in both files."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from builder.diff.model import Change
from builder.diff.rules import Direction, Ruleset

SpecPath = tuple[str | int, ...]


class Locator(Protocol):
    """Where a spec path sits in its file; :class:`builder.spec.yamlio.Document` is one.

    Another loader (an OpenAPI importer) plugs in by providing the same method.
    """

    def position(self, path: SpecPath, *, key: bool = False) -> tuple[int, int]: ...


class ChangeLog:
    def __init__(self, ruleset: Ruleset, old: Locator | None, new: Locator | None) -> None:
        self.ruleset = ruleset
        self.old = old
        self.new = new
        self.changes: list[Change] = []
        self.seen: set[tuple[str, str, str]] = set()

    def add(
        self,
        rule_name: str,
        message: str,
        *,
        old: SpecPath | None = None,
        new: SpecPath | None = None,
        direction: Direction | None = None,
    ) -> None:
        """Record a change at ``old`` (its path in the old spec) and/or ``new``.

        Rules the selected ruleset does not have are not reported: a ruleset is the set of
        checks as well as their verdicts.
        """
        rule = self.ruleset.rules.get(rule_name)
        if rule is None:
            return
        path = new if new is not None else old
        assert path is not None, "a change is somewhere"
        new_line = self._line(self.new, new)
        change = Change(
            rule=rule,
            path=_dotted(path) or "(top level)",
            message=message,
            direction=direction,
            old_line=self._line(self.old, old),
            new_line=new_line,
            anchor_line=new_line if new is not None else self._line(self.new, old),
        )
        key = (rule.name, change.path, message)
        if key in self.seen:
            return  # one finding reached twice (a body field is an argument and a property)
        self.seen.add(key)
        self.changes.append(change)

    @staticmethod
    def _line(locator: Locator | None, path: SpecPath | None) -> int | None:
        if locator is None or path is None:
            return None
        return locator.position(path, key=True)[0]

    def sorted(self) -> list[Change]:
        return sorted(self.changes, key=lambda c: c.sort_key)


def _dotted(path: SpecPath) -> str:
    """:func:`builder.diagnostics.dotted`, each part's spelling worked out once (the same
    names come back in thousands of paths)."""
    if not path:
        return ""
    first, *rest = path
    return _part(first, True) + "".join([_part(part, False) for part in rest])


@lru_cache(maxsize=1 << 16, typed=True)
def _part(part: str | int, first: bool) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    text = str(part)
    if not text.replace("_", "a").replace("-", "a").isalnum():
        text = repr(text)
    return text if first else f".{text}"


__all__ = ["ChangeLog", "Locator", "SpecPath"]
