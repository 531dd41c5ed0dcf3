"""Hostile spec text: names, descriptions, enums, defaults and paths that carry code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from builder.generate import generate

TRIPLE = '"' * 3
EVIL = TRIPLE + "; import os; os.system('touch PWNED') #"
SPEC = {
    "spec_version": 1,
    "name": "hostile",
    "title": f"Evil {TRIPLE} title \\ with {{{{ jinja }}}} and {{% raw %}}",
    "description": f"line one\nimport os\n{TRIPLE}\nos.system('touch PWNED')\n\u202e reversed",
    "base_url": "https://example.com/\"';import(os)",
    "config": {
        "key": {
            "type": "string",
            "secret": True,
            "env": "HOSTILE_KEY",
            "description": "{{ config }} " + TRIPLE,
        },
        "mode": {
            "type": "string",
            "default": "'); os.system('touch PWNED'); ('",
            "description": EVIL,
        },
    },
    "auth": {"type": "api_key", "name": "X-Key", "value": "{config.key}\"'); os.system('x')"},
    "headers": {"X-Evil": TRIPLE + "'); import os #"},
    "schemas": {
        "Thing": {
            "description": "__import__('os').system('touch PWNED')",
            "properties": {
                "__class__": {"type": "string", "description": "dunder"},
                "def": {"type": "string", "enum": ['a"b', "c'd", TRIPLE, "{{x}}", "\\"]},
                "with space": {"type": "integer", "default": 3},
                "ünïcödé": {"type": "string", "pattern": '^[a-z]+\\"$'},
            },
        }
    },
    "operations": {
        "get_thing": {
            "summary": TRIPLE + " + __import__('os').system('touch PWNED') + " + TRIPLE,
            "description": "{% for x in range(10) %}{{ x }}{% endfor %}",
            "method": "GET",
            "path": "/things/{thing_id}/\"';os",
            "params": {
                "thing_id": {"type": "string", "description": "\\" + TRIPLE},
                "flag": {"type": "string", "enum": ["import os", "x\ny"], "default": "import os"},
                "trace": {
                    "in": "header",
                    "name": "X-Trace",
                    "type": "string",
                    "default": TRIPLE + "'",
                },
            },
            "response": "Thing",
            "example": {"thing_id": EVIL},
        }
    },
}


def test_hostile_strings_stay_data(tmp_path: Path) -> None:
    spec = tmp_path / "hostile.yaml"
    spec.write_text(yaml.safe_dump(SPEC, allow_unicode=True))
    generate([spec], tmp_path / "out")
    package = tmp_path / "out" / "connectors" / "hostile"
    for name in ("client.py", "models.py", "__init__.py", "tests/test_client.py"):
        source = (package / name).read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            # Nothing from the spec may become a call to an import or a system function.
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "system", name
            if isinstance(node, ast.Name):
                assert node.id not in ("__import__", "os", "eval", "exec"), (name, node.id)
            assert not isinstance(node, ast.Import) or all(
                a.name in ("httpx", "asyncio", "json", "pytest", "respx") for a in node.names
            ), name
    # A right-to-left override (a "Trojan source" trick) never reaches a generated file.
    for path in package.rglob("*"):
        if path.is_file():
            assert "\u202e" not in path.read_text(), path
    readme = (package / "README.md").read_text()
    # Markdown metacharacters from the spec arrive escaped.
    assert "\\{% for" in readme
    assert re.search(r"(?<!\\)\{%", readme) is None
    # Importing the package and its models runs nothing from the spec.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import connectors.hostile as h; "
        "import connectors.hostile.models as m; print(m.Thing.model_fields.keys())"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "PWNED").exists()
