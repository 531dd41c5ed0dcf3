"""No false verdicts: reformatting, reordering and rewording a spec.

The real specs in ``specs/`` are rewritten programmatically (mappings reversed or shuffled,
block or flow style, sorted keys, JSON) and must diff to nothing at all; with every
description, summary and title edited they must diff to docs changes only, one per edit.
Spellings that mean the same thing (shorthand types, explicit defaults, header case,
list order in sets) must diff to nothing either.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.diagnostics import dotted
from builder.diff.api import diff_connectors
from builder.diff.rules import Severity
from builder.spec.loader import load_spec
from builder.spec.models import DEFAULT_RETRY_ON
from builder.spec.yamlio import load_yaml
from tests.test_diff_rules import BASE, ops

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
# Mappings whose keys are names chosen by the spec's author; every other mapping's keys
# are words of the spec language.
NAMED = {
    "config", "headers", "schemas", "operations", "properties", "params", "skip", "rename",
    "queries", "models", "options", "input_types",
}  # fmt: skip
DATA = {"example", "fixed", "default", "enum"}  # values, not spec structure
DOC_KEYS = ("description", "summary", "title")


def spec_data(path: Path) -> Any:
    """The spec as plain data, the way the builder reads it (dates stay text)."""
    return load_yaml(path.read_text(encoding="utf-8"), str(path)).data


def remap(value: Any, order: Callable[[list[str]], list[str]]) -> Any:
    """``value`` with every mapping's keys put in ``order`` (lists keep theirs)."""
    if isinstance(value, dict):
        return {k: remap(value[k], order) for k in order(list(value))}
    if isinstance(value, list):
        return [remap(v, order) for v in value]
    return value


def shuffler(seed: int) -> Callable[[list[str]], list[str]]:
    rng = random.Random(seed)

    def order(keys: list[str]) -> list[str]:
        keys = list(keys)
        rng.shuffle(keys)
        return keys

    return order


def _reversed(keys: list[str]) -> list[str]:
    return keys[::-1]


def _block(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=200)


def _shuffled(seed: int) -> Callable[[Any], str]:
    return lambda d: _block(remap(d, shuffler(seed)))


REWRITES: dict[str, Callable[[Any], str]] = {
    "reversed-block": lambda d: _block(remap(d, _reversed)),
    "reversed-flow": lambda d: yaml.safe_dump(
        remap(d, _reversed), sort_keys=False, default_flow_style=True, width=40
    ),
    "sorted-keys": lambda d: yaml.safe_dump(d, sort_keys=True, indent=4),
    "json": lambda d: json.dumps(d, indent=1),
    **{f"shuffled-{seed}": _shuffled(seed) for seed in range(3)},
}


@pytest.fixture
def specs_copy(tmp_path: Path) -> Path:
    """A copy of specs/, so a rewritten spec sits beside any file it refers to."""
    target = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", target)
    return target


def test_there_are_real_specs_to_check() -> None:
    assert len(SPECS) >= 3


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_reordering_and_reformatting_changes_nothing(
    spec: Path, rewrite: str, specs_copy: Path
) -> None:
    text = REWRITES[rewrite](spec_data(spec))
    assert text != spec.read_text(encoding="utf-8")
    rewritten = specs_copy / f"rewritten-{spec.name}"
    rewritten.write_text(text, encoding="utf-8")
    report = diff_connectors(load_spec(specs_copy / spec.name), load_spec(rewritten))
    assert [(c.rule.id, c.path, c.message) for c in report.changes] == []


def edit_docs(
    value: Any, path: tuple[str | int, ...], edited: set[str], named: bool = False
) -> None:
    """Append to every description, summary and title; record where."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            edit_docs(item, path + (i,), edited)
        return
    if not isinstance(value, dict):
        return
    if path[:1] == ("operations",) and len(path) == 2 and "skip" in value:
        # Nothing of a skipped operation is generated: only its own summary is documentation.
        keys = [k for k in ("summary", "description") if isinstance(value.get(k), str)]
        for key in keys:
            value[key] += " (edited)"
            edited.add(dotted(path + (key,)))
        return
    for key, child in value.items():
        if not named and key in DOC_KEYS and isinstance(child, str):
            value[key] = child + " (edited)"
            edited.add(dotted(path + (key,)))
        elif named or key not in DATA:
            edit_docs(child, path + (key,), edited, named=not named and key in NAMED)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_description_edits_are_docs_changes_only(spec: Path, specs_copy: Path) -> None:
    data = spec_data(spec)
    edited: set[str] = set()
    edit_docs(data, (), edited)
    assert "title" in edited
    if data.get("operations") or data.get("queries"):  # the walk reaches into them
        assert any(path.startswith(("operations.", "queries.")) for path in edited)
    rewritten = specs_copy / f"reworded-{spec.name}"
    rewritten.write_text(_block(remap(data, _reversed)), encoding="utf-8")
    report = diff_connectors(load_spec(specs_copy / spec.name), load_spec(rewritten))
    changes = report.changes
    assert not [c for c in changes if c.worst is Severity.BREAKING]
    assert {c.rule.name for c in changes} == {"docs-changed"}
    assert {c.path for c in changes} == edited  # each edit found, where it was made
    assert not report.fails("breaking") and report.fails("any")


# -- equivalent spellings -------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _same(_: dict[str, Any]) -> None:
    return None


EQUIVALENT: dict[str, tuple[Mutation, Mutation]] = {
    "header-name-case": (_same, lambda s: s.__setitem__("headers", {"accept": "application/json"})),
    "base-url-trailing-slash": (_same, lambda s: s.__setitem__("base_url", s["base_url"] + "/")),
    "explicit-query-location": (
        _same,
        lambda s: ops(s)["list_items"]["params"].__setitem__(
            "category", {"type": "string", "in": "query", "required": False}
        ),
    ),
    "explicit-kind-and-class-name": (
        lambda s: s.pop("class_name"),
        lambda s: s.update(kind="http", class_name="Shop"),
    ),
    "enum-order": (_same, lambda s: s["schemas"]["Color"].__setitem__("enum", ["green", "red"])),
    "required-order": (
        _same,
        lambda s: s["schemas"]["Item"].__setitem__("required", ["name", "id"]),
    ),
    "retry-on-order": (
        lambda s: s["defaults"]["retry"].__setitem__("retry_on", list(DEFAULT_RETRY_ON)),
        lambda s: s["defaults"]["retry"].__setitem__("retry_on", list(DEFAULT_RETRY_ON)[::-1]),
    ),
    "default-retry-spelled-out": (
        _same,
        lambda s: s["defaults"]["retry"].update(
            initial_delay=0.5, multiplier=2, max_delay=30, jitter=True
        ),
    ),
    "path-placeholder-renamed-with-wire-name": (
        _same,
        lambda s: ops(s)["get_item"].update(
            path="/items/{id}", params={"item_id": {"type": "string", "name": "id"}}
        ),
    ),
    "type-shorthand": (
        _same,
        lambda s: s["schemas"]["Item"]["properties"].update(
            id={"type": "string"}, color={"$ref": "Color"}
        ),
    ),
    "union-order": (
        lambda s: s["schemas"]["Item"]["properties"].__setitem__(
            "stock", {"oneOf": ["integer", "string"]}
        ),
        lambda s: s["schemas"]["Item"]["properties"].__setitem__(
            "stock", {"oneOf": ["string", "integer"]}
        ),
    ),
    "tags-order": (
        lambda s: ops(s)["get_item"].__setitem__("tags", ["a", "b"]),
        lambda s: ops(s)["get_item"].__setitem__("tags", ["b", "a"]),
    ),
    "oauth2-scope-order": (
        lambda s: s.__setitem__("auth", _oauth(["read", "write"])),
        lambda s: s.__setitem__("auth", _oauth(["write", "read"])),
    ),
    "error-status-spelled-as-text": (
        _same,
        lambda s: ops(s)["get_item"].__setitem__("errors", {404: "NotFound"}),
    ),
    "quota-header-case": (
        _same,
        lambda s: s["rate_limit_headers"].__setitem__("remaining", "x-quota-remaining"),
    ),
    "operation-timeout-equal-to-the-default": (
        _same,
        lambda s: ops(s)["get_item"].__setitem__("timeout", 30),
    ),
}


def _oauth(scopes: list[str]) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": "https://auth.shop.example/token",
        "client_id": "{config.region}",
        "client_secret": "{config.token}",
        "scopes": scopes,
    }


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_equivalent_spellings_change_nothing(name: str, tmp_path: Path) -> None:
    before, after = copy.deepcopy(BASE), copy.deepcopy(BASE)
    EQUIVALENT[name][0](before)
    EQUIVALENT[name][0](after)
    EQUIVALENT[name][1](after)
    assert before != after
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(before, sort_keys=False), encoding="utf-8")
    new.write_text(yaml.safe_dump(after, sort_keys=False), encoding="utf-8")
    report = diff_connectors(load_spec(old), load_spec(new))
    assert [(c.rule.id, c.path, c.message) for c in report.changes] == []
