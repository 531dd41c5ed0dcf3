"""The diff's building blocks: the frozen rule set, semver suggestions, the annotation
algebra, the change log, and the README's rule table kept in step with the code."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from types import MappingProxyType

import pytest

from builder.diff.annotations import Relation, relation
from builder.diff.collector import ChangeLog
from builder.diff.model import Change, ConnectorDiff, Report, bump_version
from builder.diff.rules import (
    RULESET_VERSION,
    RULESETS,
    Bump,
    ByDirection,
    Direction,
    Level,
    Rule,
    Ruleset,
    Severity,
    Verdict,
)
from builder.gc_pause import collection_paused

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).parent / "fixtures" / "diff"  # ruleset-N.json


# -- the rule set ---------------------------------------------------------------------------


def _verdict(verdict: Verdict | None) -> object:
    if isinstance(verdict, ByDirection):
        return {"request": verdict.request.value, "response": verdict.response.value}
    return verdict.value if verdict is not None else None


@pytest.mark.parametrize("version", sorted(RULESETS))
def test_released_rulesets_are_frozen(version: int) -> None:
    """A ruleset never changes once released: a new verdict needs a new ruleset."""
    rules = [
        {"id": r.id, "wire": _verdict(r.wire), "python": _verdict(r.python), "bump": r.bump.value}
        for r in RULESETS[version].rules.values()
    ]
    snapshot = SNAPSHOTS / f"ruleset-{version}.json"
    assert {"version": version, "rules": rules} == json.loads(snapshot.read_text("utf-8"))


def test_each_ruleset_keeps_every_rule_of_the_one_before() -> None:
    """Rulesets only grow: a rule keeps its id and verdicts in every later ruleset (a
    changed verdict would be a new rule), so pinning an older one loses only new checks."""
    assert sorted(RULESETS) == list(range(1, RULESET_VERSION + 1))
    for version in range(2, RULESET_VERSION + 1):
        before, after = RULESETS[version - 1].rules, RULESETS[version].rules
        assert {name: after.get(name) for name in before} == dict(before)
        assert len(after) > len(before)


def test_rulesets_cannot_be_edited_at_run_time() -> None:
    assert isinstance(RULESETS, MappingProxyType)
    assert isinstance(RULESETS[1].rules, MappingProxyType)
    with pytest.raises(TypeError):
        RULESETS[1].rules["docs-changed"] = RULESETS[1]["docs-changed"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        RULESETS[1]["docs-changed"].wire = Severity.BREAKING
    assert RULESET_VERSION in RULESETS


@pytest.mark.parametrize("version", sorted(RULESETS))
def test_rule_ids_are_unique_and_well_formed(version: int) -> None:
    rules = list(RULESETS[version].rules.values())
    assert len({r.code for r in rules}) == len(rules)
    for rule in rules:
        assert rule.code.startswith("CB") and rule.code[2:].isdigit() and len(rule.code) == 6
        assert rule.name == rule.name.lower() and " " not in rule.name
        assert rule.wire is not None or rule.python is not None, rule.id
        assert rule.summary.endswith("."), rule.id


def test_a_directional_verdict_takes_the_stricter_side_for_both() -> None:
    rule = RULESETS[1]["enum-value-added"]
    assert rule.severity(Level.WIRE, Direction.REQUEST) is Severity.NON_BREAKING
    assert rule.severity(Level.WIRE, Direction.RESPONSE) is Severity.BREAKING
    assert rule.severity(Level.WIRE, Direction.BOTH) is Severity.BREAKING
    assert rule.severity(Level.PYTHON, Direction.BOTH) is None
    assert Direction.REQUEST | Direction.RESPONSE is Direction.BOTH
    assert Direction.REQUEST | Direction.REQUEST is Direction.REQUEST


# -- the README's rule table ----------------------------------------------------------------


def readme_row(rule: Rule) -> str:
    """How the README lists a rule (the README table is checked against the code)."""

    def cell(verdict: Verdict | None) -> str:
        if verdict is None:
            return "-"
        if isinstance(verdict, ByDirection):
            return f"request: {verdict.request.value}, response: {verdict.response.value}"
        return verdict.value

    return (
        f"| `{rule.id}` | {cell(rule.wire)} | {cell(rule.python)} | {rule.bump.value} "
        f"| {rule.summary} |"
    )


def test_the_readme_lists_every_rule_as_the_code_has_it() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    rows = {line for line in readme.splitlines() if line.startswith("| `CB")}
    # Every ruleset's rules (later rulesets hold the earlier ones' rules unchanged).
    expected = {readme_row(rule) for rules in RULESETS.values() for rule in rules.rules.values()}
    assert sorted(expected - rows) == [], "README rule rows missing or out of date"
    assert sorted(rows - expected) == [], "README lists rules the code does not have"


# -- semver ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "bump", "expected"),
    [
        ("1.2.3", Bump.MAJOR, "2.0.0"),
        ("1.2.3", Bump.MINOR, "1.3.0"),
        ("1.2.3", Bump.PATCH, "1.2.4"),
        ("1.2.3", Bump.NONE, "1.2.3"),
        ("0.4.1", Bump.MAJOR, "0.5.0"),  # 0.x: breaking bumps the minor
        ("0.4.1", Bump.MINOR, "0.4.2"),  # ... and everything else the patch
        ("0.4.1", Bump.PATCH, "0.4.2"),
        ("0.0.3", Bump.MAJOR, "0.0.4"),  # 0.0.x: every release may break
        ("2.0.0-rc.1", Bump.PATCH, "2.0.1"),
    ],
)
def test_bump_version(version: str, bump: Bump, expected: str) -> None:
    assert bump_version(version, bump) == expected


def _change(name: str, direction: Direction | None = None) -> Change:
    return Change(RULESETS[1][name], "p", "m", direction)


@pytest.mark.parametrize(
    ("changes", "bump"),
    [
        ([], Bump.NONE),
        ([_change("docs-changed")], Bump.PATCH),
        ([_change("retry-changed"), _change("docs-changed")], Bump.PATCH),
        ([_change("operation-added"), _change("docs-changed")], Bump.MINOR),
        ([_change("base-url-changed")], Bump.MINOR),  # wire-breaking, python unchanged
        ([_change("operation-added"), _change("parameter-removed")], Bump.MAJOR),
        ([_change("model-field-made-optional", Direction.RESPONSE)], Bump.MAJOR),
        ([_change("model-field-made-optional", Direction.REQUEST)], Bump.MINOR),
    ],
)
def test_suggested_bump(changes: list[Change], bump: Bump) -> None:
    diff = ConnectorDiff("c", "old.yaml", "new.yaml", "1.0.0", "1.0.0", changes)
    assert diff.suggested_bump is bump


def test_declared_version_is_checked_against_the_suggestion() -> None:
    breaking = [_change("operation-removed")]
    assert ConnectorDiff("c", "a", "b", "0.3.0", "0.4.0", breaking).version_ok is True
    assert ConnectorDiff("c", "a", "b", "0.3.0", "0.3.1", breaking).version_ok is False
    assert ConnectorDiff("c", "a", "b", "1.3.0", "2.0.0", breaking).version_ok is True
    assert ConnectorDiff("c", None, "b", None, "0.1.0", []).version_ok is None
    assert ConnectorDiff("c", None, "b", None, "0.1.0", []).suggested_bump is Bump.NONE


def test_fail_on() -> None:
    docs = Report(1, [ConnectorDiff("c", "a", "b", changes=[_change("docs-changed")])])
    breaking = Report(1, [ConnectorDiff("c", "a", "b", changes=[_change("operation-removed")])])
    assert [docs.fails(f) for f in ("breaking", "any", "none")] == [False, True, False]
    assert [breaking.fails(f) for f in ("breaking", "any", "none")] == [True, True, False]
    assert not Report(1, [ConnectorDiff("c", "a", "b")]).fails("any")


# -- annotations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("str | None", "None | str", Relation.SAME),
        ("Literal['a', 'b']", "Literal['b', 'a']", Relation.SAME),
        ("Literal['a']", "Literal['a', 'b']", Relation.WIDENED),
        ("Literal['a', 'b']", "Literal['a']", Relation.NARROWED),
        ("str", "str | None", Relation.WIDENED),
        ("int", "float", Relation.WIDENED),  # PEP 484: an int is a float
        ("float", "int", Relation.NARROWED),
        ("Literal['x']", "str", Relation.WIDENED),
        ("Literal[1, 2]", "float", Relation.WIDENED),
        ("str", "Any", Relation.WIDENED),
        ("Any", "int", Relation.NARROWED),
        ("str", "int", Relation.CHANGED),
        ("Tag", "Label", Relation.CHANGED),
        ("list[int]", "list[float]", Relation.WIDENED),
        ("list[Tag | dict[str, Any]]", "list[Tag | dict[str, Any]] | None", Relation.WIDENED),
        ("dict[str, str]", "dict[str, int]", Relation.CHANGED),
        ("list[int]", "dict[str, int]", Relation.CHANGED),
        ("datetime", "datetime | str", Relation.WIDENED),
        ("Optional[int]", "int | None", Relation.SAME),
    ],
)
def test_annotation_relation(old: str, new: str, expected: Relation) -> None:
    assert relation(old, new) is expected


def test_annotation_relation_can_leave_none_out() -> None:
    assert relation("int | None", "int") is Relation.NARROWED
    assert relation("int | None", "int", ignore_none=True) is Relation.SAME
    assert relation("int | None", "float", ignore_none=True) is Relation.WIDENED


# -- the change log -------------------------------------------------------------------------


class _Lines:
    """A locator that puts every path on line len(path) (stands in for another loader)."""

    def position(self, path: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
        return len(path), 1


def test_the_change_log_places_changes_and_drops_repeats() -> None:
    log = ChangeLog(RULESETS[1], _Lines(), _Lines())
    log.add("docs-changed", "summary changed", old=("a", "b"), new=("a", "b", "c"))
    log.add("docs-changed", "summary changed", old=("a", "b"), new=("a", "b", "c"))
    log.add("operation-removed", "gone", old=("x",))
    removed, docs = log.sorted()  # breaking first
    assert (docs.old_line, docs.new_line, docs.path) == (2, 3, "a.b.c")
    assert (removed.old_line, removed.new_line, removed.anchor_line) == (1, None, 1)
    assert removed.path == "x"


def test_a_ruleset_reports_only_its_own_rules() -> None:
    """Checks added after a ruleset was released are not reported under it."""
    without_docs = Ruleset(
        99, MappingProxyType({k: v for k, v in RULESETS[1].rules.items() if k != "docs-changed"})
    )
    log = ChangeLog(without_docs, _Lines(), _Lines())
    log.add("docs-changed", "summary changed", old=("a",), new=("a",))
    log.add("operation-added", "new", new=("b",))
    assert [c.rule.name for c in log.changes] == ["operation-added"]


# -- the collector pause ----------------------------------------------------------------------


def test_loading_and_comparing_pause_the_garbage_collector_and_restore_it() -> None:
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("a failed comparison")
    assert gc.isenabled()
    gc.disable()  # a caller that runs without the collector keeps it off
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
