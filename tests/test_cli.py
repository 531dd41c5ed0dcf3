"""The ``connector-builder`` command line: exit codes, messages, and what it writes."""

from __future__ import annotations

import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from builder.cli import main

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "specs"
PACKAGE_FILES = {
    "__init__.py",
    "client.py",
    "models.py",
    "README.md",
    "py.typed",
    "tests/test_client.py",
    "tests/cases.json",
    "connector.json",
}
LOCATED = re.compile(r"^[^:\n]+:\d+:\d+: ", re.MULTILINE)


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def stats(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def new_spec(directory: Path, name: str) -> Path:
    result = cli("new", name, "--dir", directory)
    assert result.exit_code == 0, result.output
    return directory / f"{name}.yaml"


def fixture(tmp_path: Path, name: str, into: str = "specs") -> Path:
    target = tmp_path / into / f"{name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / f"{name}.yaml", target)
    return target


@pytest.fixture
def skeleton(tmp_path: Path) -> Path:
    return new_spec(tmp_path / "specs", "demo")


# -- new ----------------------------------------------------------------------------------


def test_new_writes_a_skeleton_that_validates_and_generates(tmp_path: Path) -> None:
    result = cli("new", "demo", "--dir", tmp_path / "specs")
    assert result.exit_code == 0, result.output
    spec = tmp_path / "specs" / "demo.yaml"
    assert f"wrote {spec}" in result.output
    text = spec.read_text("utf-8")
    assert "name: demo\n" in text and "spec_version: 1\n" in text

    result = cli("validate", spec)
    assert result.exit_code == 0, result.output
    assert "1 spec valid." in result.stdout

    out = tmp_path / "gen"
    result = cli("generate", spec, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"generated {out / 'connectors' / 'demo'}" in result.stdout
    assert set(tree(out / "connectors" / "demo")) == PACKAGE_FILES


def test_new_refuses_an_existing_file(skeleton: Path) -> None:
    before = skeleton.read_bytes()
    result = cli("new", "demo", "--dir", skeleton.parent)
    assert result.exit_code == 2
    assert f"{skeleton}:1:1: already exists; not overwritten" in result.stderr
    assert "nothing was written" in result.stderr
    assert skeleton.read_bytes() == before


@pytest.mark.parametrize("name", ["Demo", "bad-name", "class", "2fast", "", "a b"])
def test_new_refuses_bad_names(tmp_path: Path, name: str) -> None:
    result = cli("new", name, "--dir", tmp_path / "specs")
    assert result.exit_code == 2, result.output
    assert "<argument>:1:1: name: " in result.stderr
    assert "lower_snake_case" in result.stderr
    assert not (tmp_path / "specs").exists() or not any((tmp_path / "specs").iterdir())


# -- validate -----------------------------------------------------------------------------


def test_validate_a_file(tmp_path: Path) -> None:
    spec = fixture(tmp_path, "rich")
    result = cli("validate", spec)
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 spec valid.\n"
    # warnings (a skipped operation) go to stderr, located
    assert f"{spec}:103:11: operations.old_thing.skip: warning: " in result.stderr


def test_validate_a_directory(tmp_path: Path) -> None:
    fixture(tmp_path, "rich")
    fixture(tmp_path, "minimal", into="specs/nested")
    (tmp_path / "specs" / "notes.txt").write_text("not a spec")
    result = cli("validate", tmp_path / "specs")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 specs valid.\n"


def test_validate_without_a_path_uses_specs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture(tmp_path, "minimal")
    monkeypatch.chdir(tmp_path)
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 spec valid.\n"

    fixture(tmp_path, "broken")
    result = cli("validate")
    assert result.exit_code == 2
    assert (
        "specs/broken.yaml:6:5: operations.get_thing.mehtod: unknown key 'mehtod'" in result.stderr
    )


def test_validate_reports_located_errors_for_a_bad_spec(tmp_path: Path) -> None:
    spec = fixture(tmp_path, "broken")
    result = cli("validate", spec)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1] == "4 errors; nothing was written."
    assert lines[:-1] == [
        f"{spec}:1:1: missing required key 'title'",
        f"{spec}:6:5: operations.get_thing: missing required key 'method'",
        f"{spec}:6:5: operations.get_thing.mehtod: unknown key 'mehtod'; did you mean 'method'?",
        f"{spec}:11:12: defaults.timeout: " + lines[3].split("defaults.timeout: ", 1)[1],
    ]
    assert "valid number" in lines[3]


def test_validate_reports_problems_in_every_file(tmp_path: Path) -> None:
    broken = fixture(tmp_path, "broken")
    other = tmp_path / "specs" / "other.yaml"
    other.write_text(
        "spec_version: 1\nname: other\ntitle: Other\nbase_url: ftp://x\noperations: {}\n"
    )
    result = cli("validate", tmp_path / "specs")
    assert result.exit_code == 2
    assert str(broken) in result.stderr and str(other) in result.stderr
    assert f"{other}:4:11: base_url: " in result.stderr
    # An empty `operations` is allowed (a models-only package), so it is not among the errors.
    assert f"{other}:5:13: operations: " not in result.stderr


def test_two_specs_with_the_same_name(tmp_path: Path) -> None:
    first = fixture(tmp_path, "minimal")
    second = tmp_path / "specs" / "zz_copy.yaml"
    shutil.copyfile(first, second)
    result = cli("validate", tmp_path / "specs")
    assert result.exit_code == 2
    assert f"{second}:3:7: name: connector 'minimal' is also defined in {first}" in result.stderr


def test_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for command in ("validate", "generate", "check", "list"):
        result = cli(command, missing)
        assert result.exit_code == 2, (command, result.output)
        assert f"{missing}:1:1: no such file or directory" in result.stderr


# -- generate -----------------------------------------------------------------------------


def test_generate_writes_the_package(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    result = cli("generate", skeleton, "--out", out)
    assert result.exit_code == 0, result.output
    package = out / "connectors" / "demo"
    assert set(tree(package)) == PACKAGE_FILES
    assert (package / "py.typed").read_bytes() == b""
    manifest = json.loads((package / "connector.json").read_text("utf-8"))
    assert manifest["name"] == "demo"
    assert set(manifest["files"]) == PACKAGE_FILES - {"connector.json"}
    assert "class Demo(" in (package / "client.py").read_text("utf-8")
    assert "class Item(" in (package / "models.py").read_text("utf-8")
    # nothing else next to the package: no staging directories left behind
    assert sorted(p.name for p in (out / "connectors").iterdir()) == ["demo"]


def test_generate_nothing_when_one_spec_is_invalid(tmp_path: Path) -> None:
    fixture(tmp_path, "minimal")
    fixture(tmp_path, "broken")
    out = tmp_path / "gen"
    result = cli("generate", tmp_path / "specs", "--out", out)
    assert result.exit_code == 2
    assert "nothing was written" in result.stderr
    assert "broken.yaml:6:5: " in result.stderr
    assert not out.exists()


def test_generate_leaves_existing_output_alone_when_a_spec_is_invalid(tmp_path: Path) -> None:
    minimal = fixture(tmp_path, "minimal")
    out = tmp_path / "gen"
    assert cli("generate", minimal, "--out", out).exit_code == 0
    before_tree, before_stats = tree(out), stats(out)

    minimal.write_text(minimal.read_text("utf-8").replace("Minimal API", "Changed API"))
    fixture(tmp_path, "broken")
    result = cli("generate", tmp_path / "specs", "--out", out)
    assert result.exit_code == 2
    assert tree(out) == before_tree
    assert stats(out) == before_stats


def test_second_generate_is_unchanged_and_rewrites_nothing(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    package = out / "connectors" / "demo"
    before, package_inode = stats(package), package.stat().st_ino

    result = cli("generate", skeleton, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == "unchanged: demo\n"
    assert stats(package) == before
    assert package.stat().st_ino == package_inode

    result = cli("generate", skeleton, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"generated {package}\n"
    after = stats(package)
    assert set(after) == set(before)
    assert all(after[f][1] != before[f][1] for f in before), "--force did not rewrite the files"


def test_generate_repairs_a_hand_edited_package(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    package = out / "connectors" / "demo"
    pristine = tree(package)
    with open(package / "client.py", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    (package / "extra.py").write_text("x = 1\n")
    result = cli("generate", skeleton, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"generated {package}\n"
    assert tree(package) == pristine


def test_generated_skeleton_passes_ruff_and_compiles(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    package = out / "connectors" / "demo"
    ruff = shutil.which("ruff") or pytest.fail("ruff is not installed")
    run = subprocess.run(
        [ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(package)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for source in sorted(package.rglob("*.py")):
        py_compile.compile(
            str(source), cfile=str(tmp_path / "pyc" / f"{source.stem}.pyc"), doraise=True
        )


# -- check --------------------------------------------------------------------------------


def test_check_in_step(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    result = cli("check", skeleton, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == "all generated packages are up to date.\n"


def test_check_finds_a_hand_edit(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    client = out / "connectors" / "demo" / "client.py"
    client.write_text(client.read_text("utf-8") + "# a hand edit\n", "utf-8")
    result = cli("check", skeleton, "--out", out)
    assert result.exit_code == 1
    assert "demo: client.py was edited by hand" in result.stdout
    assert f"--- {client} (on disk)" in result.stdout
    assert f"+++ {client} (generated)" in result.stdout
    assert "\n-# a hand edit\n" in result.stdout
    assert "1 difference;" in result.stderr


def test_check_finds_a_stale_package(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    skeleton.write_text(
        skeleton.read_text("utf-8").replace("title: Demo API", "title: Renamed API")
    )
    result = cli("check", skeleton, "--out", out)
    assert result.exit_code == 1
    assert "demo: client.py is stale" in result.stdout
    assert "demo: README.md is stale" in result.stdout
    assert "-# Demo API\n+# Renamed API" in result.stdout
    assert "edited by hand" not in result.stdout


def test_check_finds_missing_and_extra_files(tmp_path: Path, skeleton: Path) -> None:
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    package = out / "connectors" / "demo"
    (package / "models.py").unlink()
    (package / "notes.txt").write_text("mine")
    result = cli("check", skeleton, "--out", out)
    assert result.exit_code == 1
    assert "demo: models.py is missing" in result.stdout
    assert "demo: notes.txt is not generated by the spec" in result.stdout


def test_check_before_generating(tmp_path: Path, skeleton: Path) -> None:
    result = cli("check", skeleton, "--out", tmp_path / "gen")
    assert result.exit_code == 1
    assert "demo: not generated yet" in result.stdout


def test_check_finds_a_package_without_a_spec(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    first = new_spec(specs, "first")
    second = new_spec(specs, "second")
    out = tmp_path / "gen"
    assert cli("generate", specs, "--out", out).exit_code == 0
    assert cli("check", specs, "--out", out).exit_code == 0
    second.unlink()
    result = cli("check", specs, "--out", out)
    assert result.exit_code == 1
    assert "second: generated package has no spec" in result.stdout
    assert "first:" not in result.stdout
    assert first.exists()


def test_check_exits_2_for_a_bad_spec(tmp_path: Path) -> None:
    spec = fixture(tmp_path, "broken")
    result = cli("check", spec, "--out", tmp_path / "gen")
    assert result.exit_code == 2
    assert f"{spec}:6:5: operations.get_thing.mehtod: " in result.stderr


def test_reordering_operations_then_generate_leaves_check_in_step(tmp_path: Path) -> None:
    """After `generate`, `check` must pass, whatever was edited in the spec.

    Reordering operations (or properties) changes the generated code (methods and fields
    follow the spec's order), so `generate` must not call the package "unchanged".
    """
    spec = fixture(tmp_path, "minimal")
    out = tmp_path / "gen"
    assert cli("generate", spec, "--out", out).exit_code == 0
    text = spec.read_text("utf-8")
    start, middle, end = (
        text.index("  list_things:"),
        text.index("  get_thing:"),
        text.index("roles:"),
    )
    spec.write_text(text[:start] + text[middle:end] + text[start:middle] + text[end:])
    assert cli("validate", spec).exit_code == 0

    result = cli("generate", spec, "--out", out)
    assert result.exit_code == 0, result.output
    check = cli("check", spec, "--out", out)
    assert check.exit_code == 0, (
        f"generate said {result.stdout!r}, then check said:\n{check.stdout}"
    )
    assert result.stdout == f"generated {out / 'connectors' / 'minimal'}\n"


def test_generate_repairs_a_hand_edited_manifest(tmp_path: Path, skeleton: Path) -> None:
    """`generate` must not call a package "unchanged" that `check` then reports as drifted."""
    out = tmp_path / "gen"
    assert cli("generate", skeleton, "--out", out).exit_code == 0
    package = out / "connectors" / "demo"
    pristine = tree(package)
    manifest_path = package / "connector.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    manifest["version"] = "9.9.9"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")

    result = cli("generate", skeleton, "--out", out)
    assert result.exit_code == 0, result.output
    check = cli("check", skeleton, "--out", out)
    assert check.exit_code == 0, (
        f"generate said {result.stdout!r}, then check said:\n{check.stdout}"
    )
    assert tree(package) == pristine


# -- list and schema ----------------------------------------------------------------------


def test_list_table(tmp_path: Path) -> None:
    fixture(tmp_path, "minimal")
    fixture(tmp_path, "rich")
    result = cli("list", tmp_path / "specs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "kind", "ops", "roles"]
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    assert rows["minimal"].split() == ["minimal", "http", "2", "source"]
    assert rows["rich"].split() == ["rich", "http", "5", "source,", "sink"]
    assert "list_items, get_item, create_item, delete_item, stream_items" in result.stdout
    assert "old_thing" not in result.stdout


def test_list_json(tmp_path: Path) -> None:
    minimal = fixture(tmp_path, "minimal")
    rich = fixture(tmp_path, "rich")
    result = cli("list", "--json", tmp_path / "specs")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["minimal"] == {
        "name": "minimal",
        "kind": "http",
        "title": "Minimal API",
        "operations": ["list_things", "get_thing"],
        "roles": ["source"],
        "priced_models": {},
        "prices_as_of": None,
        "prices_source": None,
        "default_price": None,
        "spec": str(minimal),
    }
    assert rows["rich"]["operations"] == [
        "list_items",
        "get_item",
        "create_item",
        "delete_item",
        "stream_items",
    ]
    assert rows["rich"]["roles"] == ["source", "sink"]
    assert rows["rich"]["spec"] == str(rich)


def test_list_shows_priced_models() -> None:
    result = cli("list", "--json", str(ROOT / "specs" / "openai.yaml"))
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["roles"] == ["llm"]
    assert row["priced_models"]["gpt-4o-mini"] == {"input": 0.15, "output": 0.6}
    assert row["prices_as_of"] == "2025-08-07" and row["prices_source"].startswith("https://")
    assert row["default_price"] is None  # a model not listed costs None
    text = cli("list", str(ROOT / "specs" / "openai.yaml")).stdout
    assert "gpt-4o-mini $0.15/$0.6" in text and "as of 2025-08-07" in text
    assert f"from {row['prices_source']}" in text
    assert "other model" not in text and "every model" not in text


def test_list_shows_the_default_price(tmp_path: Path) -> None:
    """A spec priced by `default` alone prices every model: list says so, with its date
    and source; with a table as well, the default is the price of every other model."""
    spec = yaml.safe_load((ROOT / "specs" / "ollama.yaml").read_text("utf-8"))
    assert spec["pricing"]["default"] == {"input": 0.0, "output": 0.0}
    (tmp_path / "ollama.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    del spec["pricing"]["models"]
    only = tmp_path / "default_only"
    only.mkdir()
    (only / "ollama.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")

    result = cli("list", "--json", only)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["priced_models"] == {}
    assert row["default_price"] == {"input": 0.0, "output": 0.0}
    assert row["prices_as_of"] == "2026-11-23"
    assert row["prices_source"] == "https://github.com/ollama/ollama"
    text = cli("list", only).stdout
    assert (
        "priced (USD per 1M tokens in/out, as of 2026-11-23, "
        "from https://github.com/ollama/ollama): every model $0/$0"
    ) in text

    (row,) = json.loads(cli("list", "--json", tmp_path / "ollama.yaml").stdout)
    assert row["priced_models"]["llama3.2"] == {"input": 0.0, "output": 0.0}
    assert row["default_price"] == {"input": 0.0, "output": 0.0}
    text = cli("list", tmp_path / "ollama.yaml").stdout
    assert "llama3.2 $0/$0" in text and text.rstrip().endswith(", any other model $0/$0")


def test_list_data_kinds_and_named_queries() -> None:
    result = cli("list", "--json", str(ROOT / "specs" / "postgres.yaml"))
    (row,) = json.loads(result.stdout)
    assert row["kind"] == "sql" and row["roles"] == ["source", "sink"]
    assert row["operations"] == ["list_tables", "describe_table"]


def test_schema_prints_json_schema() -> None:
    result = cli("schema")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["$schema"].startswith("https://json-schema.org/")
    assert "operations" in document["properties"]
    assert {"spec_version", "name", "title"} <= set(document["required"])
    # base_url is required of kind http only (a semantic check), so it is optional here.
    assert "base_url" in document["properties"]
    assert "sql" in json.dumps(document["properties"]["kind"])
    assert "operations" in document["properties"]
    assert "$defs" in document and "Operation" in document["$defs"]
    assert "method" in document["$defs"]["Operation"]["properties"]


@pytest.mark.parametrize(
    "command", [[], ["new"], ["validate"], ["generate"], ["check"], ["list"], ["schema"]]
)
def test_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout
    assert "Traceback" not in result.output


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("connector-builder, version ")


# -- as a real process: no traceback ------------------------------------------------------


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("connector-builder")
    command = [exe] if exe else [sys.executable, "-m", "builder.cli"]
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_BUILDER_DEBUG"}
    return subprocess.run(
        [*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_subprocess_bad_spec_has_no_traceback(tmp_path: Path) -> None:
    spec = fixture(tmp_path, "broken")
    run = run_cli("generate", spec, "--out", tmp_path / "gen", cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    errors = run.stderr.splitlines()[:-1]
    assert len(errors) == 4
    assert all(LOCATED.match(line) for line in errors), run.stderr
    assert (
        errors[2]
        == f"{spec}:6:5: operations.get_thing.mehtod: unknown key 'mehtod'; did you mean 'method'?"
    )
    assert not (tmp_path / "gen").exists()


def test_subprocess_hostile_yaml_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(
        "spec_version: 1\nname: evil\n"
        f'title: !!python/object/apply:os.system ["touch {marker}"]\n'
        "base_url: https://x.io\noperations: {x: {method: GET, path: /}}\n"
    )
    run = run_cli("validate", spec, cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"{spec}:3:8: title: YAML tag" in run.stderr
    assert not marker.exists()


def test_subprocess_nonexistent_path_and_usage_errors(tmp_path: Path) -> None:
    run = run_cli("validate", tmp_path / "missing", cwd=tmp_path)
    assert run.returncode == 2
    assert f"{tmp_path / 'missing'}:1:1: no such file or directory" in run.stderr
    assert "Traceback" not in run.stderr

    run = run_cli("validate", cwd=tmp_path)  # no ./specs here
    assert run.returncode == 2
    assert "specs:1:1: no such file or directory" in run.stderr
    assert "Traceback" not in run.stderr
