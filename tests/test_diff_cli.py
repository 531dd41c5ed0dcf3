"""``connector-builder diff``: output formats (golden files), exit status, bad input, git.

Golden outputs live in ``tests/fixtures/diff/golden/``; after an intended change of the
output, regenerate them with ``UPDATE_GOLDEN=1 python -m pytest tests/test_diff_cli.py``
and review the diff of the golden files like any other change.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from builder.cli import main

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures" / "diff"
GOLDEN = FIXTURES / "golden"
ROOT = Path(__file__).resolve().parents[1]
FORMATS = {
    "text": "text.txt",
    "markdown": "markdown.md",
    "json": "json.json",
    "github": "github.txt",
}

SPEC = """\
spec_version: 1
name: {name}
title: Demo
base_url: https://api.example.com
operations:
  get_thing:
    method: GET
    path: /things/{{thing_id}}
    params:
      thing_id: string
{extra}"""


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["diff", *(str(a) for a in args)], catch_exceptions=False)


def spec_text(name: str = "demo", extra: str = "") -> str:
    return SPEC.format(name=name, extra=extra)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- golden outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", sorted(FORMATS))
def test_golden_output(output_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden files were made with ruleset 1; pinned, it must keep giving them."""
    monkeypatch.chdir(FIXTURES)  # relative file names in the output, the same on every machine
    result = cli("old", "new", "--format", output_format, "--ruleset", "1")
    assert result.exit_code == 1, result.output  # the fixtures hold breaking changes
    golden = GOLDEN / FORMATS[output_format]
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(result.output, encoding="utf-8")
    assert result.output == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs; if the change is intended, rerun with UPDATE_GOLDEN=1"
    )


@pytest.mark.parametrize("output_format", sorted(FORMATS))
def test_ruleset_2_judges_ruleset_1_specs_the_same(
    output_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On specs ruleset 1 understood, the default ruleset (2) finds the same changes with
    the same verdicts: only the ruleset number in the output differs."""
    monkeypatch.chdir(FIXTURES)
    result = cli("old", "new", "--format", output_format)
    assert result.exit_code == 1, result.output
    golden = (GOLDEN / FORMATS[output_format]).read_text(encoding="utf-8")
    expected = golden.replace('"ruleset": 1,', '"ruleset": 2,').replace(
        "ruleset 1 ·", "ruleset 2 ·"
    )
    assert expected != golden or output_format in ("text", "github")
    assert result.output == expected


# Ruleset 2's own features: a data kind and an LLM connector, each base spec (the rule
# tests' fixtures) against a changed copy in v2/.
GOLDEN_2 = {
    "warehouse": ("kinds/warehouse.yaml", "v2/warehouse.yaml"),
    "chatbot": ("llm/chatbot.yaml", "v2/chatbot.yaml"),
}


@pytest.mark.parametrize("output_format", ["text", "json"])
@pytest.mark.parametrize("connector", sorted(GOLDEN_2))
def test_golden_output_of_ruleset_2(
    connector: str, output_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURES)
    old, new = GOLDEN_2[connector]
    result = cli(old, new, "--format", output_format, "--ruleset", "2")
    assert result.exit_code == 1, result.output  # both hold breaking changes
    suffix = {"text": "txt", "json": "json"}[output_format]
    golden = FIXTURES / "v2" / "golden" / f"{connector}.{suffix}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(result.output, encoding="utf-8")
    assert result.output == golden.read_text(encoding="utf-8"), (
        f"{golden.name} differs; if the change is intended, rerun with UPDATE_GOLDEN=1"
    )
    refused = cli(old, new, "--ruleset", "1")  # ruleset 1 predates both features
    assert refused.exit_code == 2 and "--ruleset 2" in refused.output


def test_json_output_follows_the_documented_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    data = json.loads(cli("old", "new", "--format", "json", "--ruleset", "1").output)
    assert set(data) == {"version", "ruleset", "fail_on", "failed", "connectors"}
    assert (data["version"], data["ruleset"], data["failed"]) == (1, 1, True)
    assert json.loads(cli("old", "new", "--format", "json").output)["ruleset"] == 2  # default
    connector_keys = {
        "name", "old_file", "new_file", "old_version", "new_version", "suggested_bump",
        "suggested_version", "version_ok", "changes",
    }  # fmt: skip
    change_keys = {
        "rule", "level", "severity", "direction", "path", "message", "old_line", "new_line",
    }  # fmt: skip
    by_name = {c["name"]: c for c in data["connectors"]}
    assert sorted(by_name) == ["legacy", "shop", "weather"]
    for connector in data["connectors"]:
        assert set(connector) == connector_keys
        for change in connector["changes"]:
            assert set(change) == change_keys
            assert change["level"] in ("wire", "python")
            assert change["severity"] in ("breaking", "non-breaking", "docs")
    shop = by_name["shop"]
    assert (shop["suggested_bump"], shop["suggested_version"], shop["version_ok"]) == (
        "major",
        "2.0.0",
        False,
    )
    renamed = [c for c in shop["changes"] if c["rule"] == "CB1303-operation-renamed"]
    assert {(c["level"], c["severity"]) for c in renamed} == {
        ("wire", "non-breaking"),
        ("python", "breaking"),
    }
    assert renamed[0]["new_line"] == 32 and renamed[0]["old_line"] == 38
    assert by_name["legacy"]["new_file"] is None and by_name["weather"]["old_file"] is None


def test_text_is_coloured_only_when_asked_or_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    plain = cli("old/shop.yaml", "new/shop.yaml")
    coloured = cli("old/shop.yaml", "new/shop.yaml", "--color")
    assert "\x1b[" not in plain.output
    assert "\x1b[31m" in coloured.output  # breaking in red
    assert "\x1b[" not in cli("old/shop.yaml", "new/shop.yaml", "--no-color").output


def test_github_annotations_point_at_new_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    lines = cli("old", "new", "--format", "github").output.splitlines()
    renamed = next(line for line in lines if "CB1303" in line)
    assert renamed.startswith("::error file=new/shop.yaml,line=32,")
    # Removed things point at their nearest surviving ancestor in the new file.
    removed_op = next(line for line in lines if "CB1301" in line)
    assert removed_op.startswith("::error file=new/shop.yaml,line=")
    # A removed connector has no file in the new tree: an annotation without a file.
    assert next(line for line in lines if "CB1001" in line).startswith("::error title=")
    docs = next(line for line in lines if "CB1801" in line)
    assert docs.startswith("::notice file=new/shop.yaml,line=24,")


# -- exit status ----------------------------------------------------------------------------


def test_identical_specs_pass_with_no_changes(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", spec_text())
    result = cli(spec, spec)
    assert result.exit_code == 0, result.output
    assert "no changes" in result.output


@pytest.mark.parametrize(("fail_on", "status"), [("breaking", 1), ("any", 1), ("none", 0)])
def test_fail_on_for_a_breaking_change(tmp_path: Path, fail_on: str, status: int) -> None:
    old = write(tmp_path / "old.yaml", spec_text(extra="      verbose: boolean\n"))
    new = write(tmp_path / "new.yaml", spec_text())  # the parameter `verbose` removed
    assert cli(old, new, "--fail-on", fail_on).exit_code == status


@pytest.mark.parametrize(("fail_on", "status"), [("breaking", 0), ("any", 1), ("none", 0)])
def test_fail_on_for_a_docs_change(tmp_path: Path, fail_on: str, status: int) -> None:
    old = write(tmp_path / "old.yaml", spec_text())
    new = write(tmp_path / "new.yaml", spec_text().replace("title: Demo", "title: Demo API"))
    result = cli(old, new, "--fail-on", fail_on)
    assert result.exit_code == status, result.output
    assert "CB1801-docs-changed" in result.output


def test_the_ruleset_can_be_pinned_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", spec_text())
    assert cli(spec, spec, "--ruleset", "1").exit_code == 0
    result = cli(spec, spec, "--ruleset", "99")
    assert result.exit_code == 2 and "99" in result.output


# -- bad input ------------------------------------------------------------------------------


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", spec_text())
    result = CliRunner().invoke(main, ["diff", str(spec), str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.yaml'}:1:1: no such file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("side", ["old", "new"])
def test_an_invalid_spec_on_either_side_is_located(tmp_path: Path, side: str) -> None:
    good = write(tmp_path / "good.yaml", spec_text())
    bad = write(tmp_path / "bad.yaml", spec_text().replace("method: GET", "mehtod: GET"))
    args = (bad, good) if side == "old" else (good, bad)
    result = CliRunner().invoke(main, ["diff", *map(str, args)])
    assert result.exit_code == 2
    assert f"{bad}:7:5: operations.get_thing.mehtod: unknown key 'mehtod'" in result.output
    assert "Traceback" not in result.output


def test_errors_on_both_sides_are_reported_together(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", "name: [unclosed\n")
    new = write(tmp_path / "new.yaml", spec_text().replace("base_url: https", "base_url: ftp"))
    result = CliRunner().invoke(main, ["diff", str(old), str(new)])
    assert result.exit_code == 2
    assert f"{old}:" in result.output and f"{new}:4:" in result.output


def test_a_file_and_a_directory_cannot_be_compared(tmp_path: Path) -> None:
    spec = write(tmp_path / "a.yaml", spec_text())
    result = CliRunner().invoke(main, ["diff", str(spec), str(tmp_path)])
    assert result.exit_code == 2
    assert "give two spec files or two directories" in result.output


@pytest.mark.parametrize("args", [[], ["one.yaml"], ["a", "b", "c"]])
def test_wrong_number_of_specs_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["diff", *args])
    assert result.exit_code == 2
    assert "give two specs" in result.output


def test_directories_with_a_duplicate_connector_are_bad_input(tmp_path: Path) -> None:
    write(tmp_path / "old" / "a.yaml", spec_text())
    write(tmp_path / "new" / "a.yaml", spec_text())
    write(tmp_path / "new" / "b.yaml", spec_text())
    result = CliRunner().invoke(main, ["diff", str(tmp_path / "old"), str(tmp_path / "new")])
    assert result.exit_code == 2
    assert "connector 'demo' is also defined in" in result.output


def test_the_command_runs_as_a_subprocess_without_traceback(tmp_path: Path) -> None:
    old = write(tmp_path / "old.yaml", spec_text(extra="      verbose: boolean\n"))
    new = write(tmp_path / "new.yaml", spec_text())
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_BUILDER_DEBUG"}
    run = subprocess.run(
        [sys.executable, "-m", "builder.cli", "diff", str(old), str(new), "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    changes = json.loads(run.stdout)["connectors"][0]["changes"]
    assert {c["rule"] for c in changes} == {"CB1401-parameter-removed"}


# -- --base GIT_REF -------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    run = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return run.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose first commit holds three specs: kept, changed and removed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root / "specs" / "kept.yaml", spec_text("kept"))
    write(root / "specs" / "changed.yaml", spec_text("changed", "      verbose: boolean\n"))
    write(root / "specs" / "gone.yaml", spec_text("gone"))
    write(root / "README.md", "not a spec\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "specs")
    monkeypatch.chdir(root)
    return root


def test_base_compares_the_working_tree_with_a_ref(repo: Path) -> None:
    write(repo / "specs" / "changed.yaml", spec_text("changed"))  # verbose removed
    (repo / "specs" / "gone.yaml").unlink()
    write(repo / "specs" / "nested" / "fresh.yaml", spec_text("fresh"))  # new, not committed
    result = cli("--base", "HEAD", "--format", "json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    by_name = {c["name"]: c for c in data["connectors"]}
    assert sorted(by_name) == ["changed", "fresh", "gone", "kept"]
    assert by_name["kept"]["changes"] == []
    assert (by_name["kept"]["old_file"], by_name["kept"]["new_file"]) == (
        "HEAD:specs/kept.yaml",
        "specs/kept.yaml",
    )
    assert {c["rule"] for c in by_name["changed"]["changes"]} == {"CB1401-parameter-removed"}
    removed = by_name["changed"]["changes"][0]
    assert removed["old_line"] == 11 and removed["new_line"] is None
    assert [c["rule"] for c in by_name["gone"]["changes"]] == ["CB1001-connector-removed"] * 2
    assert by_name["gone"]["new_file"] is None
    assert [c["rule"] for c in by_name["fresh"]["changes"]] == ["CB1002-connector-added"] * 2
    assert by_name["fresh"]["new_file"] == "specs/nested/fresh.yaml"


def test_base_with_nothing_changed_passes(repo: Path) -> None:
    result = cli("--base", "HEAD")
    assert result.exit_code == 0, result.output
    assert "3 connectors, 0 changes" in result.output


def test_base_pairs_a_moved_file_by_connector_name(repo: Path) -> None:
    git(repo, "mv", "specs/kept.yaml", "specs/renamed.yaml")
    result = cli("--base", "HEAD", "--format", "json")
    assert result.exit_code == 0, result.output
    kept = next(c for c in json.loads(result.output)["connectors"] if c["name"] == "kept")
    assert (kept["old_file"], kept["new_file"], kept["changes"]) == (
        "HEAD:specs/kept.yaml",
        "specs/renamed.yaml",
        [],
    )


def test_base_accepts_a_path_and_an_older_ref(repo: Path) -> None:
    write(repo / "specs" / "kept.yaml", spec_text("kept").replace("title: Demo", "title: Kept"))
    git(repo, "commit", "-qam", "retitle")
    result = cli("--base", "HEAD~1", "specs/kept.yaml", "--fail-on", "any")
    assert result.exit_code == 1, result.output
    assert "HEAD~1:specs/kept.yaml -> specs/kept.yaml" in result.output
    assert "CB1801-docs-changed" in result.output and "changed:" not in result.output


@pytest.mark.parametrize("ref", ["no-such-branch", "HEAD~5", "-rf", "HEAD:specs"])
def test_base_with_a_bad_ref_is_bad_input(repo: Path, ref: str) -> None:
    result = CliRunner().invoke(main, ["diff", "--base", ref])
    assert result.exit_code == 2
    assert f"{ref!r} is not a commit, branch or tag of this repository" in result.output
    assert "Traceback" not in result.output


def test_base_outside_a_repository_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    outside = tmp_path / "plain"
    write(outside / "specs" / "a.yaml", spec_text())
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    result = CliRunner().invoke(main, ["diff", "--base", "HEAD"])
    assert result.exit_code == 2
    assert "--base needs a git repository" in result.output


def test_base_reports_an_invalid_spec_at_the_ref_with_its_location(repo: Path) -> None:
    write(repo / "specs" / "kept.yaml", spec_text("kept").replace("path: /", "path: "))
    git(repo, "commit", "-qam", "break it")
    write(repo / "specs" / "kept.yaml", spec_text("kept"))  # fixed in the working tree
    result = CliRunner().invoke(main, ["diff", "--base", "HEAD"])
    assert result.exit_code == 2
    assert "HEAD:specs/kept.yaml:8:11: operations.get_thing.path:" in result.output
    assert "Traceback" not in result.output


def test_base_with_a_missing_path_is_bad_input(repo: Path) -> None:
    result = CliRunner().invoke(main, ["diff", "--base", "HEAD", "nowhere"])
    assert result.exit_code == 2
    assert "nowhere:1:1: no such file or directory, here or at HEAD" in result.output


PETS: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Pets", "version": "1"},
    "servers": [{"url": "https://pets.example"}],
    "paths": {
        "/pets/{id}": {
            "get": {
                "operationId": "getPet",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}
                        },
                    }
                },
            }
        }
    },
    "components": {
        "schemas": {
            "Pet": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
            }
        }
    },
}


def test_base_reads_an_openapi_sourced_spec_as_it_was_at_the_ref(repo: Path) -> None:
    """The old spec's document is read at the ref too, not from the working tree."""
    overlay = "spec_version: 1\nname: pets\ntitle: Pets\nsource: {openapi: pets.openapi.json}\n"
    write(repo / "specs" / "pets.yaml", overlay)
    write(repo / "specs" / "pets.openapi.json", json.dumps(PETS))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "pets")
    changed = copy.deepcopy(PETS)
    del changed["components"]["schemas"]["Pet"]["properties"]["name"]
    write(repo / "specs" / "pets.openapi.json", json.dumps(changed))
    result = cli("--base", "HEAD", "specs/pets.yaml", "--format", "json")
    assert result.exit_code == 1, result.output
    changes = json.loads(result.output)["connectors"][0]["changes"]
    assert {(c["rule"], c["path"]) for c in changes} == {
        ("CB1611-property-removed", "schemas.Pet.properties.name"),
        ("CB1706-model-field-removed", "schemas.Pet.properties.name"),
    }


def test_auth_templates_are_not_echoed(tmp_path: Path) -> None:
    """A template may hold a literal credential: the report names the field only."""
    auth = "auth: {type: api_key, name: X-Key, value: 'sk-live-123'}\n"
    old = write(tmp_path / "old.yaml", spec_text() + auth)
    new = write(tmp_path / "new.yaml", spec_text() + auth.replace("123", "456"))
    for output_format in ("text", "markdown", "json", "github"):
        result = cli(old, new, "--format", output_format)
        assert result.exit_code == 1
        assert "CB1009-auth-changed" in result.output and "value changed" in result.output
        assert "sk-live" not in result.output
