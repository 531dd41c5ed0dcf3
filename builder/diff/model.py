"""What a diff produces: changes, one report per connector, and the whole report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from builder.diff.rules import Bump, Direction, Level, Rule, Severity

REPORT_VERSION = 1  # the JSON output's schema version


@dataclass(frozen=True)
class Change:
    """One difference, judged by ``rule`` at each level it touches."""

    rule: Rule
    path: str  # dotted spec path: in the new spec, or in the old one for what was removed
    message: str
    direction: Direction | None = None
    old_line: int | None = None
    new_line: int | None = None
    # Where in the new file to point at what no longer exists there: its nearest ancestor.
    anchor_line: int | None = None

    def severity(self, level: Level) -> Severity | None:
        return self.rule.severity(level, self.direction)

    # A change is immutable: what follows is worked out once (reports ask for it per line
    # and per count, thousands of times for a large document).

    @cached_property
    def levels(self) -> list[tuple[Level, Severity]]:
        out = []
        for level in Level:
            severity = self.severity(level)
            if severity is not None:
                out.append((level, severity))
        return out

    @cached_property
    def worst(self) -> Severity:
        return max((s for _, s in self.levels), key=lambda s: s.rank)

    @cached_property
    def bump(self) -> Bump:
        if self.severity(Level.PYTHON) is Severity.BREAKING:
            return Bump.MAJOR
        return self.rule.bump

    @cached_property
    def sort_key(self) -> tuple[int, int, str, str, str]:
        line = self.new_line or self.anchor_line or self.old_line or 0
        return (-self.worst.rank, line, self.rule.code, self.path, self.message)


@dataclass
class ConnectorDiff:
    name: str
    old_file: str | None  # None: the connector was added
    new_file: str | None  # None: the connector was removed
    old_version: str | None = None
    new_version: str | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def suggested_bump(self) -> Bump:
        if self.old_file is None:
            return Bump.NONE  # a new package has no earlier version to bump
        return max((c.bump for c in self.changes), key=lambda b: b.rank, default=Bump.NONE)

    @property
    def suggested_version(self) -> str | None:
        if self.old_version is None or self.new_file is None:
            return None
        return bump_version(self.old_version, self.suggested_bump)

    @property
    def version_ok(self) -> bool | None:
        """Whether the new spec's declared version is at least the suggested one."""
        suggested = self.suggested_version
        if suggested is None or self.new_version is None:
            return None
        return _release(self.new_version) >= _release(suggested)

    def count(self, severity: Severity) -> int:
        """Changes whose worst verdict is ``severity``."""
        return sum(1 for c in self.changes if c.worst is severity)


@dataclass
class Report:
    ruleset: int
    connectors: list[ConnectorDiff] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return [c for connector in self.connectors for c in connector.changes]

    def fails(self, fail_on: str) -> bool:
        """Whether ``--fail-on`` (breaking | any | none) makes this report exit 1."""
        if fail_on == "none":
            return False
        if fail_on == "any":
            return bool(self.changes)
        return any(c.worst is Severity.BREAKING for c in self.changes)


def _release(version: str) -> tuple[int, int, int]:
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a semver version: {version!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def bump_version(version: str, bump: Bump) -> str:
    """Apply ``bump`` to ``version``; below 1.0.0 every level moves one place to the right
    (0.y.z: breaking bumps y, anything else z; 0.0.z: everything bumps z), as Cargo does."""
    major, minor, patch = _release(version)
    if bump is Bump.NONE:
        return f"{major}.{minor}.{patch}"
    if major == 0 and minor == 0:
        return f"0.0.{patch + 1}"
    if major == 0:
        return f"0.{minor + 1}.0" if bump is Bump.MAJOR else f"0.{minor}.{patch + 1}"
    if bump is Bump.MAJOR:
        return f"{major + 1}.0.0"
    if bump is Bump.MINOR:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"
