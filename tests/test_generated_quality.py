"""The committed generated/ tree: in step with specs/, lint- and type-clean, light to import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.generate import check, generate

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
CONNECTORS = sorted(
    p.name for p in (GENERATED / "connectors").iterdir() if (p / "connector.json").exists()
)
HEAVY = ("jinja2", "black", "click", "yaml", "datamodel_code_generator", "openapi_spec_validator")


def test_generated_tree_matches_a_fresh_generation() -> None:
    drift = check([ROOT / "specs"], GENERATED)
    assert drift == [], "\n".join(f"{d.name}: {d.reason}\n{d.diff}" for d in drift)


def test_regenerating_specs_reproduces_generated_byte_for_byte(tmp_path: Path) -> None:
    outcome = generate([ROOT / "specs"], tmp_path)
    assert sorted(outcome.written) == CONNECTORS
    for name in CONNECTORS:
        fresh = tmp_path / "connectors" / name
        committed = GENERATED / "connectors" / name
        fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
        committed_files = sorted(
            p.relative_to(committed)
            for p in committed.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        assert fresh_files == committed_files
        for relative in fresh_files:
            assert (fresh / relative).read_bytes() == (committed / relative).read_bytes(), relative


@pytest.mark.timeout(120)
def test_generated_code_passes_ruff() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(GENERATED)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_generated_code_passes_mypy_strict() -> None:
    packages = [arg for name in CONNECTORS for arg in ("-p", f"connectors.{name}")]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *packages],
        capture_output=True,
        text=True,
        cwd=GENERATED,
        env={**_env(), "MYPYPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.parametrize("name", CONNECTORS)
def test_importing_a_connector_loads_no_generator_dependency(name: str) -> None:
    probe = (
        f"import sys, json; import connectors.{name}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    # Models load on first use, not on import.
    assert "connectors" in loaded


def test_models_load_on_first_use() -> None:
    probe = (
        "import sys; import connectors.openai as c; "
        "before = 'connectors.openai.models' in sys.modules; "
        "c.ChatCompletion; after = 'connectors.openai.models' in sys.modules; print(before, after)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]


def test_every_package_is_marked_typed_and_has_a_manifest() -> None:
    for name in CONNECTORS:
        package = GENERATED / "connectors" / name
        assert (package / "py.typed").exists()
        manifest = json.loads((package / "connector.json").read_text())
        assert manifest["name"] == name
        assert set(manifest["files"]) >= {"client.py", "models.py", "__init__.py", "README.md"}


def test_connectors_is_a_namespace_package() -> None:
    assert not (GENERATED / "connectors" / "__init__.py").exists()


@pytest.mark.timeout(300)
def test_project_code_passes_ruff_and_mypy_strict() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    lint = subprocess.run(
        [ruff, "check", "--no-cache", "builder", "tests", "conftest.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    types = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "builder"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert types.returncode == 0, types.stdout + types.stderr
