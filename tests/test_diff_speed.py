"""The diff's fast paths give exactly what the plain ones give.

``connector-builder diff`` of large specs loads the two sides in two processes at once
(:mod:`builder.diff.parallel`), builds a lean IR (``build(..., rendering=False)``), skips
values that are the same on both sides (:func:`builder.diff.values.same`) and caches what
reports ask of each change. Each is checked here against the plain path: forced on for the
small fixtures, the parallel path must print byte for byte what the serial one prints.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from builder.cli import main
from builder.diagnostics import Diagnostic, dotted
from builder.diff import parallel, sources, values
from builder.diff.api import diff_connectors
from builder.diff.collector import ChangeLog, _dotted
from builder.diff.compare import compare_connectors
from builder.diff.rules import RULESET_VERSION, RULESETS, Direction
from builder.diff.side import Side, settled
from builder.diff.values import ValueComparer
from builder.ir import Connector, build
from builder.spec.loader import Warnings, load_spec, load_spec_text
from builder.spec.models import Schema, TypeFields

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures" / "diff"
ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("text", "markdown", "json", "github")
# (old, new) under FIXTURES: two directories (several files, split between the two
# processes), and pairs of files, one of each ruleset-2 feature.
CASES = [
    ("old", "new"),
    ("old/shop.yaml", "new/shop.yaml"),
    ("kinds/warehouse.yaml", "v2/warehouse.yaml"),
    ("llm/chatbot.yaml", "v2/chatbot.yaml"),
]
needs_fork = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "win32", reason="no fork on this platform"
)


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["diff", *(str(a) for a in args)])


class Forced:
    """Loads any two or more specs in two processes (however small, however many CPUs).
    ``used`` counts the uses of the parallel path; ``check()`` fails if the parent ever
    did the child's half itself (a silent fallback would hide a broken child)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.used = 0
        self.fallbacks: list[int] = []
        real = parallel.run_both

        def spy(here: Any, there: Any) -> Any:
            def there_spied() -> Any:
                self.fallbacks.append(os.getpid())  # in the child: only its own copy grows
                return there()

            result = real(here, there_spied)
            self.used += 1
            return result

        monkeypatch.setattr(sources, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(parallel, "available", lambda: True)
        monkeypatch.setattr(parallel, "run_both", spy)

    def check(self) -> None:
        assert self.used, "the parallel path was not taken"
        assert self.fallbacks == [], "the child's half was done again in the parent"


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> Forced:
    return Forced(monkeypatch)


# -- the parallel path ------------------------------------------------------------------------


@needs_fork
@pytest.mark.parametrize("output_format", FORMATS)
@pytest.mark.parametrize(("old", "new"), CASES)
def test_loading_in_two_processes_prints_what_one_process_prints(
    old: str, new: str, output_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURES)
    with monkeypatch.context() as m:
        m.setattr(parallel, "available", lambda: False)
        serial = cli(old, new, "--format", output_format)
    forced = Forced(monkeypatch)
    both = cli(old, new, "--format", output_format)
    forced.check()
    assert serial.exit_code == 1, serial.output  # the fixtures hold breaking changes
    assert (both.exit_code, both.output) == (serial.exit_code, serial.output)


def _git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, check=True)


@needs_fork
def test_base_loads_both_sides_in_two_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--base``: the old files (a copy at the ref, named REF:path, errors included) and
    the working tree's, split between the two processes."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    for spec in (FIXTURES / "old").glob("*.yaml"):
        shutil.copy(spec, root / "specs" / spec.name)
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "old")
    for spec in (root / "specs").glob("*.yaml"):
        spec.unlink()
    for spec in (FIXTURES / "new").glob("*.yaml"):
        shutil.copy(spec, root / "specs" / spec.name)
    monkeypatch.chdir(root)
    outputs = []
    for parallel_path in (False, True):
        with monkeypatch.context() as m:
            forced = Forced(m) if parallel_path else None
            if forced is None:
                m.setattr(parallel, "available", lambda: False)
            result = cli("--base", "HEAD", "--format", "json")
            if forced is not None:
                forced.check()
        outputs.append((result.exit_code, result.output))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == 1 and '"old_file": "HEAD:specs/shop.yaml"' in outputs[0][1]
    (root / "specs" / "legacy.yaml").write_text("spec_version: 1\nname: [\n", "utf-8")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "broken")
    with monkeypatch.context() as m:
        forced = Forced(m)
        result = cli("--base", "HEAD")
        forced.check()
    assert result.exit_code == 2, result.output
    assert result.output.startswith("HEAD:specs/legacy.yaml:")


@needs_fork
def test_an_openapi_sourced_spec_loads_in_two_processes(tmp_path: Path, forced: Forced) -> None:
    """The case the parallel path is for: specs whose operations come from a document
    (whose size counts in the estimate of the work)."""
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "T", "version": "1"},
        "servers": [{"url": "https://api.example.com"}],
        "paths": {
            "/things/{id}": {
                "get": {
                    "operationId": "getThing",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    overlay = "spec_version: 1\nname: things\ntitle: Things\nsource:\n  openapi: doc.json\n"
    for side, description in (("old", "Get a thing."), ("new", "Get one thing.")):
        document["paths"]["/things/{id}"]["get"]["description"] = description
        (tmp_path / side).mkdir()
        (tmp_path / side / "doc.json").write_text(json.dumps(document), "utf-8")
        (tmp_path / side / "things.yaml").write_text(overlay, "utf-8")
    old, new = tmp_path / "old" / "things.yaml", tmp_path / "new" / "things.yaml"
    assert (
        sources._Job(old).weight() == old.stat().st_size + (old.parent / "doc.json").stat().st_size
    )
    result = cli(old, new, "--fail-on", "any")
    forced.check()
    assert result.exit_code == 1, result.output
    assert "`get_thing`: description changed" in result.output


@needs_fork
def test_errors_on_both_sides_are_reported_together_from_two_processes(
    tmp_path: Path, forced: Forced
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("spec_version: 1\nname: demo\ntitle: [\n", "utf-8")
    new.write_text("spec_version: 1\nname: demo\ntitel: Demo\nbase_url: x\n", "utf-8")
    result = cli(old, new)
    forced.check()
    assert result.exit_code == 2, result.output
    assert f"{old}:" in result.output and f"{new}:" in result.output
    assert "did you mean 'title'" in result.output


@needs_fork
def test_the_child_failing_in_any_way_leaves_its_half_to_the_parent() -> None:
    parent = os.getpid()

    def dies() -> str:
        if os.getpid() != parent:
            os._exit(9)
        return "done here"

    def raises() -> str:
        if os.getpid() != parent:
            raise RuntimeError("only in the child")
        return "done here"

    def unpicklable() -> Any:
        return (lambda: 1) if os.getpid() != parent else "done here"

    for there in (dies, raises, unpicklable):
        assert parallel.run_both(lambda: "mine", there) == ("mine", "done here")
    assert parallel.run_both(lambda: [1], lambda: {"a": (2, 3)}) == ([1], {"a": (2, 3)})


@needs_fork
def test_a_bug_in_the_child_half_raises_in_the_parent() -> None:
    def bug() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        parallel.run_both(lambda: None, bug)


@needs_fork
def test_a_failure_in_the_parent_half_stops_the_child() -> None:
    def fails() -> None:
        raise KeyError("here")

    started = time.monotonic()
    with pytest.raises(KeyError):
        parallel.run_both(fails, lambda: time.sleep(60))
    assert time.monotonic() - started < 30  # the child was killed, not waited for


def test_a_second_process_only_while_a_cpu_is_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def idle(now: str, at_start: int | None, started: float = 0.0) -> int:
        fake = lambda *a, **k: io.StringIO(now)  # noqa: E731
        monkeypatch.setattr(parallel, "open", fake, raising=False)
        monkeypatch.setattr(parallel, "_STARTED", (time.monotonic() - started, at_start))
        return parallel.idle_cpus()

    assert idle("0.52 0.40 0.3 1/150 99", None) == 1  # only this process runs
    assert idle("1.9 1.5 1.2 2/150 99", None) == 0  # and another one
    assert idle("1.9 1.5 1.2 2/150 99", 1) == 1  # ... that was not running at the start
    assert idle("1.9 1.5 1.2 2/150 99", 1, started=60) == 0  # (a start long ago)
    assert idle("3 3 3 5/150 99", 3) == 0
    assert idle("", None) == 1  # no /proc: the other CPU is taken to be idle
    monkeypatch.setattr(parallel, "idle_cpus", lambda: 0)
    assert not parallel.available()
    monkeypatch.setattr(parallel, "idle_cpus", lambda: 1)
    # (other tests of the session may leave threads behind: this one is about the CPUs)
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 1)
    assert parallel.available() == (hasattr(os, "fork") and sys.platform != "win32")
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 2)
    assert not parallel.available()
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 1)
    monkeypatch.setenv("CONNECTOR_BUILDER_NO_FORK", "1")
    assert not parallel.available()


def test_halves_split_by_weight_and_keep_order() -> None:
    here, there = sources._halves([5, 100, 3, 90, 1])
    assert {tuple(here), tuple(there)} == {(1,), (0, 2, 3, 4)}  # 100 and 99
    assert sources._halves([7]) == ([0], [])


def test_small_inputs_are_loaded_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> Any:
        raise AssertionError("a second process for small specs")

    monkeypatch.setattr(parallel, "run_both", fail)
    monkeypatch.chdir(FIXTURES)
    assert cli("old", "new").exit_code == 1


# -- sides and the lean IR ------------------------------------------------------------------


def test_a_prepared_side_pickles_and_compares_the_same() -> None:
    old, new = load_spec(FIXTURES / "old" / "shop.yaml"), load_spec(FIXTURES / "new" / "shop.yaml")
    warning = Diagnostic("x.yaml", 1, 2, "a.b", "careful", "warning")
    a = Side(old.spec, old.document, [warning]).prepare()
    b = Side.of(new).prepare()
    a2, b2 = pickle.loads(pickle.dumps((a, b), protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(a2, Side) and a2.warnings == [warning]
    assert set(a2.__dict__) == set(a.__dict__) >= {"ir", "model_places", "schema_directions"}
    rules = RULESETS[RULESET_VERSION]
    plain = compare_connectors(old, new, rules)
    assert plain.changes
    assert compare_connectors(a2, b2, rules) == plain


class _NotYet(Sequence[Diagnostic]):
    """Warnings still being found: reading them would wait (here: fail)."""

    def __getitem__(self, index: Any) -> Any:
        raise AssertionError("waited for warnings the diff does not read")

    def __len__(self) -> int:
        raise AssertionError("waited for warnings the diff does not read")


def test_a_side_goes_to_another_process_without_waiting_for_warnings() -> None:
    """The loader's warnings may end with an OpenAPI validation still running in a child
    of the loading process: a side pickled there takes the warnings known so far."""
    loaded = load_spec(FIXTURES / "old" / "shop.yaml")
    known = Diagnostic("x.yaml", 3, 1, "a", "known", "warning")
    side = Side(loaded.spec, loaded.document, Warnings([known], _NotYet())).prepare()
    assert settled(side.warnings) == [known]
    assert settled([known]) == [known]
    copy = pickle.loads(pickle.dumps(side))
    assert copy.warnings == [known] and copy.ir == side.ir


def test_a_diff_never_runs_the_openapi_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its findings are warnings, which the diff does not report: loading for a diff starts
    no validation, in a child or here."""
    from builder.openapi import validate as validation

    def refuse(*_: object) -> None:
        raise AssertionError("the validator ran")

    monkeypatch.setattr(validation, "Pending", refuse)
    monkeypatch.setattr(validation, "_run", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    document = {
        "openapi": "3.0.3",
        "info": {"title": "T", "version": "1"},
        "paths": {
            "/a": {"get": {"operationId": "getA", "responses": {"200": {"description": "ok"}}}}
        },
    }
    overlay = "spec_version: 1\nname: things\ntitle: Things\nsource:\n  openapi: doc.json\n"
    for side in ("old", "new"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "doc.json").write_text(json.dumps(document), "utf-8")
        (tmp_path / side / "things.yaml").write_text(overlay, "utf-8")
    result = cli(tmp_path / "old" / "things.yaml", tmp_path / "new" / "things.yaml")
    assert result.exit_code == 0, result.output


def _diff_view(c: Connector) -> Any:
    """What the diff reads of an IR."""
    return (
        (c.class_name, c.async_class_name, c.quota_headers, c.settings, c.models),
        [(r.role, r.operation.name) for r in c.roles],
        [
            (o.name, o.returns, o.item_annotation, o.decoder, o.response_kind, o.error_types)
            for o in c.operations
        ],
        [
            (a.name, a.wire_name, a.location, a.annotation, a.required, a.default)
            for o in c.operations
            for a in o.arguments
        ],
        [
            (q.name, q.returns, [(a.name, a.annotation, a.required) for a in q.arguments])
            for q in c.queries
        ],
        c.data and (c.data.kind, c.data.record),
    )


def test_the_lean_ir_has_everything_the_diff_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rendering=False`` skips samples and fixtures only: every name, annotation,
    requiredness and default is the full IR's."""
    specs = sorted((ROOT / "specs").glob("*.yaml")) + sorted(FIXTURES.glob("*/*.yaml"))
    loaded = [(path, load_spec(path).spec) for path in specs]
    full = [build(spec, path.name) for path, spec in loaded]

    def no_samples(*args: Any) -> Any:
        raise AssertionError("a sample made for the diff")

    monkeypatch.setattr("builder.ir.sample_value", no_samples)
    monkeypatch.setattr("builder.ir.llm_cases", no_samples)
    for (path, spec), connector in zip(loaded, full, strict=True):
        lean = build(spec, path.name, rendering=False)
        assert _diff_view(lean) == _diff_view(connector), path


# -- values that are the same on both sides -------------------------------------------------


def _findings(
    old: TypeFields, new: TypeFields, monkeypatch: pytest.MonkeyPatch, *, skip_same: bool
) -> list[tuple[str, str, str]]:
    with monkeypatch.context() as m:
        if not skip_same:
            m.setattr(values, "same", lambda a, b: False)
        log = ChangeLog(RULESETS[RULESET_VERSION], None, None)
        ValueComparer(log, {}, {}).compare(old, new, ("x",), ("x",), Direction.RESPONSE)
        return [(c.rule.name, c.path, c.message) for c in log.changes]


def schema(data: dict[str, Any]) -> Schema:
    return Schema.model_validate(data)


# Equal by ``==`` in all but the first and last pair, and different to the walk in most.
PAIRS = [
    ({"type": "integer", "enum": [1, 2]}, {"type": "integer", "enum": [1, 2]}),
    ({"type": "integer", "enum": [1]}, {"type": "integer", "enum": [True]}),
    ({"type": "number", "enum": [1]}, {"type": "number", "enum": [1.0]}),
    ({"type": "number", "enum": [0.0]}, {"type": "number", "enum": [-0.0]}),
    ({"type": "integer", "default": 1}, {"type": "integer", "default": True}),
    (
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}},
        {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}},
    ),
    (
        {"oneOf": [{"type": "integer", "default": 1}, {"type": "string"}]},
        {"oneOf": [{"type": "integer", "default": True}, {"type": "string"}]},
    ),
    (
        {"type": "array", "items": {"oneOf": [{"type": "integer", "example": {"k": 1}}]}},
        {"type": "array", "items": {"oneOf": [{"type": "integer", "example": {"k": True}}]}},
    ),
    (
        {"type": "object", "properties": {"a": {"type": "string", "description": "x"}}},
        {"type": "object", "properties": {"a": {"type": "string", "description": "y"}}},
    ),
]


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_skipping_same_values_finds_what_the_full_walk_finds(
    old: dict[str, Any], new: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = schema(old), schema(new)
    walked = _findings(a, b, monkeypatch, skip_same=False)
    assert _findings(a, b, monkeypatch, skip_same=True) == walked
    if values.same(a, b):
        assert walked == []


def test_equal_values_of_other_json_types_are_not_the_same() -> None:
    assert values.same(schema({"enum": [1, 2]}), schema({"enum": [1, 2]}))
    assert schema({"enum": [1]}) == schema({"enum": [True]})
    assert not values.same(schema({"enum": [1]}), schema({"enum": [True]}))
    assert not values.same(schema({"default": 1}), schema({"default": 1.0}))
    assert not values.same(
        schema({"example": {"a": 1, "b": 2}}), schema({"example": {"b": 2, "a": 1}})
    )
    assert not values.same(TypeFields(type="string"), schema({"type": "string"}))


def test_a_mostly_equal_pair_finds_the_one_change() -> None:
    path = ROOT / "specs" / "github.yaml"
    old = load_spec(path)
    data = yaml.safe_load(path.read_text("utf-8"))
    first = next(iter(data["schemas"]))
    data["schemas"][first]["description"] = (data["schemas"][first].get("description") or "") + "!"
    new = load_spec_text(yaml.safe_dump(data, sort_keys=False), str(path))
    assert [c.path for c in diff_connectors(old, new).changes] == [f"schemas.{first}.description"]


# -- small helpers ------------------------------------------------------------------------------


def test_dotted_paths_are_spelled_as_the_diagnostics_spell_them() -> None:
    for path in [
        (),
        ("a",),
        (0,),
        ("operations", "list", "params", 0),
        ("a", 0, "b c", "x-y", True, 1, "", "é", "a.b", 3, "__x"),
        (True, "a"),
        (1.5, "a"),
    ]:
        assert _dotted(path) == dotted(path), path
