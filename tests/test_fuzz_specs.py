"""Spec fuzzing with hypothesis: the loader, the IR and the generator on hostile input.

Cases come from the mutators in ``tests/benchmarks/fuzz_specs.py`` (the benchmark script
runs the same ones from ``random.Random``; here every choice is a hypothesis draw, so
failures shrink): the real specs (``specs/``, ``tests/fixtures/specs/``) with keys deleted,
renamed, duplicated or retyped and random unicode, quotes, Jinja and Python syntax put into
strings; their YAML text cut, re-indented and salted with YAML syntax; random specs drawn
from a grammar of the spec language; random YAML and random text.

Properties:

* ``load_spec_text`` returns or raises ``InputError``: nothing else escapes;
* every diagnostic of a rejection reads ``FILE:LINE:COL: ...`` and points at a line (and a
  column) that exists in the text;
* every accepted spec generates (``builder.generate.generate``) a package whose every
  ``.py`` compiles, and ``ruff check`` (the project's configuration, run once over all the
  packages of a test) is clean.

Known inputs that broke one of these are pinned in ``KNOWN`` as plain regression tests.
"""

from __future__ import annotations

import itertools
import random
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from builder.diagnostics import InputError
from builder.spec.loader import load_spec_text
from tests.benchmarks.fuzz_specs import (
    SEED_FILES,
    SPEC_FILE,
    Case,
    RandomChooser,
    diagnostic_problems,
    examine,
    load_only,
    make_case,
    ruff_problems,
    signature,
)

T = TypeVar("T")

# The profile (conftest.py: 100 examples, 200 under CI=true) is the ceiling; the generating
# test uses fewer, since each accepted spec costs a generation (~0.3-0.5 s).
PROFILE_EXAMPLES = settings().max_examples
GENERATE_EXAMPLES = min(40, PROFILE_EXAMPLES)
RELAXED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]
LOADER_SETTINGS = settings(database=None, suppress_health_check=RELAXED, deadline=None)


class DrawChooser:
    """The mutators' source of choices, as hypothesis draws (so failing cases shrink)."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def choice(self, options: Sequence[T]) -> T:
        index: int = self.draw(st.integers(0, len(options) - 1))
        return options[index]

    def randint(self, lo: int, hi: int) -> int:
        value: int = self.draw(st.integers(lo, hi))
        return value

    def coin(self, p: float = 0.5) -> bool:
        # Shrinks towards False: optional parts of a failing spec fall away.
        return bool(self.draw(st.integers(0, 999)) >= round((1 - p) * 1000))

    def text(self, max_size: int = 12) -> str:
        value: str = self.draw(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)
        )
        return value


@st.composite
def cases(draw: Any, sources: tuple[str, ...] = (), lean_valid: bool = False) -> Case:
    """A fuzz case; ``sources`` keeps only cases made one of those ways."""
    return make_case(DrawChooser(draw), lean_valid=lean_valid, sources=sources or None)


def _explain(case: Case, outcome: str, detail: str) -> str:
    return f"{outcome} on a {case.kind} case:\n{detail}\n--- spec text ---\n{case.text}"


def _assert_loader_property(case: Case) -> None:
    result = load_only(case.text)
    assert result.outcome in ("rejected", "accepted"), _explain(case, result.outcome, result.detail)


# --------------------------------------------------------------------------------------- #
# The loader: no traceback, every error located
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(120)
@LOADER_SETTINGS
@given(case=cases(sources=("seed-data", "seed-text")))
def test_loader_on_mutated_real_specs(case: Case) -> None:
    _assert_loader_property(case)


@pytest.mark.timeout(120)
@LOADER_SETTINGS
@given(case=cases(sources=("random-spec",)))
def test_loader_on_random_specs(case: Case) -> None:
    _assert_loader_property(case)


@pytest.mark.timeout(120)
@LOADER_SETTINGS
@given(case=cases(sources=("random-yaml", "random-text")))
def test_loader_on_random_yaml_and_text(case: Case) -> None:
    _assert_loader_property(case)


@pytest.mark.timeout(120)
@LOADER_SETTINGS
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
def test_loader_on_arbitrary_unicode_text(text: str) -> None:
    _assert_loader_property(Case("text", "arbitrary text", text))


# --------------------------------------------------------------------------------------- #
# The generator: every accepted spec gives code that compiles and is ruff-clean
# --------------------------------------------------------------------------------------- #


def _ruff_available() -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")


def _report(failures: list[tuple[Case, str, str]]) -> str:
    groups = Counter(signature(outcome, detail) for _, outcome, detail in failures)
    lines = [f"{len(failures)} bad case(s):"]
    lines += [f"  {n:4d}  {sig}" for sig, n in groups.most_common()]
    shown: set[str] = set()
    for case, outcome, detail in sorted(failures, key=lambda f: len(f[0].text)):
        sig = signature(outcome, detail)
        if sig not in shown:
            shown.add(sig)
            lines.append("\n" + _explain(case, outcome, detail[-2500:]))
    return "\n".join(lines)


@pytest.mark.timeout(170)
def test_accepted_specs_generate_code_that_compiles_and_is_ruff_clean(tmp_path: Path) -> None:
    _ruff_available()
    counter = itertools.count()
    outcomes: Counter[str] = Counter()
    accepted: dict[Path, Case] = {}
    failures: list[tuple[Case, str, str]] = []

    # No shrinking: a failure is recorded, not raised, so that one run reports every kind
    # of failure (and ruff runs once over all the packages).
    @settings(
        max_examples=GENERATE_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=RELAXED,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=cases(lean_valid=True))
    def run(case: Case) -> None:
        result = examine(case.text, tmp_path, next(counter))
        outcomes[result.outcome] += 1
        if result.outcome == "accepted" and result.package is not None:
            accepted[result.package] = case
        elif result.outcome not in ("rejected",):
            failures.append((case, result.outcome, result.detail))

    run()
    for package, lines in ruff_problems(list(accepted)).items():
        failures.append((accepted[package], "bad-code", "ruff:\n" + "\n".join(lines[:15])))
    assert not failures, _report(failures)
    tried = sum(outcomes.values())
    # Not vacuous: the lean cases must mostly be valid specs that reach the generator.
    assert outcomes["accepted"] >= tried // 4, f"too few specs accepted: {dict(outcomes)}"


@pytest.mark.timeout(60)
def test_real_specs_unmutated_are_accepted_and_generate_cleanly(tmp_path: Path) -> None:
    """The harness itself: the valid seeds pass every property (broken.yaml is rejected)."""
    _ruff_available()
    packages = []
    for i, seed in enumerate(SEED_FILES):
        text = seed.read_text("utf-8")
        result = examine(text, tmp_path, i)
        if seed.name == "broken.yaml":
            assert result.outcome == "rejected", result.detail
            continue
        assert result.outcome == "accepted", f"{seed}: {result.outcome}\n{result.detail}"
        assert result.package is not None
        packages.append(result.package)
    assert ruff_problems(packages) == {}


@pytest.mark.timeout(60)
def test_benchmark_mutators_are_deterministic_and_varied() -> None:
    """The benchmark's random.Random driver: same seed, same cases; every source used."""

    def batch(seed: int) -> list[Case]:
        ch = RandomChooser(random.Random(seed))
        return [make_case(ch) for _ in range(300)]

    first, again = batch(7), batch(7)
    assert [c.text for c in first] == [c.text for c in again]
    sources = Counter(c.source for c in first)
    assert set(sources) == {"random-spec", "seed-data", "seed-text", "random-yaml", "random-text"}
    outcomes = Counter(load_only(c.text).outcome for c in first)
    assert outcomes["rejected"] > 0 and outcomes["accepted"] > 0, outcomes


# --------------------------------------------------------------------------------------- #
# Pinned inputs: each once broke a property (see the module docstring of the benchmark)
# --------------------------------------------------------------------------------------- #

HEAD = "spec_version: 1\nname: pinned\ntitle: T\nbase_url: https://api.example.com\n"
GET_A = "operations:\n  get_a:\n    method: GET\n    path: /a\n"

KNOWN: dict[str, str] = {
    # A negative number in an enum: the annotation allow-list refuses `Literal[-1]`.
    "negative-enum": HEAD + GET_A + "    params:\n      level: {type: integer, enum: [-1, 1]}\n",
    # A parameter named `body` beside a non-object body: two arguments named body.
    "param-named-body": HEAD
    + "operations:\n  put_a:\n    method: PUT\n    path: /a\n"
    + "    params:\n      body: string\n"
    + "    body:\n      schema: {type: array, items: string}\n",
    # A schema named None: `from .models import None`.
    "schema-named-None": HEAD
    + "schemas:\n  None: {properties: {id: integer}}\n"
    + GET_A
    + "    response: None\n",
    # A type alias that names a later one: `Event = Z9` before `Z9 = float`.
    "alias-before-its-target": HEAD
    + "schemas:\n  Event: Z9\n  Z9: {type: number}\n"
    + GET_A
    + "    response: Event\n",
    # Aliases that name each other, and one that names itself.
    "alias-cycle": HEAD + "schemas:\n  A: B\n  B: A\n" + GET_A + "    response: A\n",
    "alias-of-itself": HEAD + "schemas:\n  User: User\n" + GET_A + "    response: User\n",
    # No object schema at all: models.py imports BaseModel and ConfigDict for nothing.
    "no-object-schemas": HEAD + GET_A,
    # Every operation skipped: unused imports in client.py and the test scaffold.
    "all-operations-skipped": HEAD + GET_A + "    skip: not yet\n",
    # A source role over a text response: `Iterator[Any]` without importing Any.
    "source-role-over-text": HEAD
    + "operations:\n  list_lines:\n    method: GET\n    path: /lines\n"
    + "    response: {content: text, many: true}\n"
    + "roles:\n  source: {read: list_lines}\n",
    # A long (valid) argument name: black cannot fold the line, ruff E501.
    "long-argument-name": HEAD
    + "operations:\n  get_a:\n    method: GET\n"
    + "    path: /a/{a_rather_long_path_parameter_name_of_45_chars}\n"
    + "    params:\n      a_rather_long_path_parameter_name_of_45_chars: integer\n",
    # An integer literal longer than Python's int-from-text limit: ValueError escapes.
    "huge-integer": HEAD + "defaults: {timeout: " + "9" * 4400 + "}\n" + GET_A,
    # A YAML error at the very end of a text without a final newline.
    "yaml-error-at-eof": "spec_version: 1\nn",
    "unclosed-flow-mapping-at-eof": "spec_version: 1\nname: {a: 1",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_pinned_input(name: str, tmp_path: Path) -> None:
    text = KNOWN[name]
    result = examine(text, tmp_path, 0)
    if result.outcome == "accepted":
        _ruff_available()
        assert result.package is not None
        dirty = ruff_problems([result.package])
        assert not dirty, "ruff:\n" + "\n".join(dirty[result.package]) + "\n--- spec ---\n" + text
    else:
        assert result.outcome == "rejected", (
            f"{result.outcome}:\n{result.detail}\n--- spec ---\n{text}"
        )


@pytest.mark.timeout(30)
def test_diagnostic_checker_rejects_misplaced_diagnostics() -> None:
    """The property's own checker can fail: a line past the end and a bad column are caught."""
    from builder.diagnostics import Diagnostic

    text = "a: 1\nbb: 2\n"
    assert diagnostic_problems(text, [Diagnostic(SPEC_FILE, 2, 1, "bb", "x")]) == []
    assert diagnostic_problems(text, [Diagnostic(SPEC_FILE, 3, 1, "", "x")]) == []  # after "\n"
    assert diagnostic_problems(text, [Diagnostic(SPEC_FILE, 4, 1, "", "x")])
    assert diagnostic_problems(text, [Diagnostic(SPEC_FILE, 1, 9, "", "x")])
    assert diagnostic_problems(text, [Diagnostic("a:b", 1, 1, "", "x")])
    assert diagnostic_problems(text, [])
    with pytest.raises(InputError):
        load_spec_text("spec_version: [", SPEC_FILE)
