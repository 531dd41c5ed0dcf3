"""The same spec always gives the same bytes: across processes, hash seeds and YAML styles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.generate import generate

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "specs"
SPECS = ("rich", "minimal")

# Mappings whose keys are names the user chose: their order is meaningful (it is the order
# of methods, fields, arguments...). Every other mapping is a record of spec keys.
NAMED = {"config", "headers", "schemas", "operations", "properties", "params", "example", "fixed"}


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def assert_same_tree(a: Path, b: Path) -> None:
    left, right = tree(a), tree(b)
    assert sorted(left) == sorted(right)
    different = [name for name in left if left[name] != right[name]]
    assert not different, f"files differ: {different}"


def _generate_in_subprocess(specs: Path, out: Path, seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("CONNECTOR_BUILDER_DEBUG", None)
    run = subprocess.run(
        [sys.executable, "-m", "builder.cli", "generate", str(specs), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr


def test_generation_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for name in SPECS:
        shutil.copyfile(FIXTURES / f"{name}.yaml", specs / f"{name}.yaml")
    _generate_in_subprocess(specs, tmp_path / "seed0", "0")
    _generate_in_subprocess(specs, tmp_path / "seed12345", "12345")
    for name in SPECS:
        assert (tmp_path / "seed0" / "connectors" / name / "client.py").is_file()
    assert_same_tree(tmp_path / "seed0", tmp_path / "seed12345")


def _reorder(value: Any, named: bool = False) -> Any:
    """Reverse the keys of every record mapping, keep the order of named collections."""
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    if not isinstance(value, dict):
        return value
    if named:
        return {k: _reorder(v) for k, v in value.items()}
    items = [(k, _reorder(v, named=k in NAMED)) for k, v in value.items()]
    return dict(reversed(items))


def _variants(original: str) -> dict[str, str]:
    data = yaml.safe_load(original)
    return {
        "reordered-block": yaml.safe_dump(_reorder(data), sort_keys=False, indent=4, width=60),
        "flow": yaml.safe_dump(data, sort_keys=False, default_flow_style=True, width=100000),
        "reordered-flow": yaml.safe_dump(
            _reorder(data), sort_keys=False, default_flow_style=True, width=70
        ),
    }


def _generate_one(tmp_path: Path, label: str, text: str, name: str) -> Path:
    spec = tmp_path / label / "specs" / f"{name}.yaml"  # same file name: it is in the output
    spec.parent.mkdir(parents=True)
    spec.write_text(text, "utf-8")
    out = tmp_path / label / "gen"
    generate([spec], out)
    return out / "connectors" / name


@pytest.mark.parametrize("name", SPECS)
def test_reordered_and_reformatted_yaml_gives_the_same_code(tmp_path: Path, name: str) -> None:
    original = (FIXTURES / f"{name}.yaml").read_text("utf-8")
    variants = _variants(original)
    # the variants really are different texts of the same data
    assert len({original, *variants.values()}) == 1 + len(variants)
    for text in variants.values():
        assert yaml.safe_load(text) == yaml.safe_load(original)
    assert list(yaml.safe_load(variants["reordered-block"])) != list(yaml.safe_load(original))

    expected = tree(_generate_one(tmp_path, "original", original, name))
    for label, text in variants.items():
        got = tree(_generate_one(tmp_path, label, text, name))
        for file in ("client.py", "models.py"):
            assert got[file] == expected[file], f"{label}: {file} differs"
        assert got == expected, (
            f"{label}: {[f for f in expected if got.get(f) != expected[f]]} differ"
        )
