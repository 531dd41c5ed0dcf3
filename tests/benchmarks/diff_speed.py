"""Benchmark: how long ``connector-builder diff`` takes on large inputs.

    python tests/benchmarks/diff_speed.py [--quick] [--json PATH] [--iterations N]

Two inputs, each compared with a changed version of itself (mappings reordered, every
description reworded, an operation removed, a parameter added):

* the largest spec in ``specs/``;
* the largest OpenAPI document in ``../shared/corpus/openapi``, imported with
  ``builder.openapi`` (both versions), when that importer exists.

Timed in-process, reported split into loading both specs (YAML, validation, and for an
OpenAPI spec the document's conversion: the loader's work) and comparing them (IR builds
and the diff itself: what ``diff`` adds); plus the whole CLI command once, in a fresh
process. Target: under 2 s for a diff (load + compare) of the largest spec.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import (  # noqa: E402
    REPO_ROOT,
    parser,
    summary,
    table,
    verdict,
    write_json,
)

TARGET_S = 2.0
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "openapi"


def reworded(value: Any, named: bool = False, *, reverse: bool = True) -> Any:
    """``value`` with every description/summary reworded (and mappings reversed)."""
    if isinstance(value, list):
        return [reworded(v, reverse=reverse) for v in value]
    if not isinstance(value, dict):
        return value
    names = {"config", "schemas", "operations", "properties", "params", "paths", "components"}
    out = {}
    for key in reversed(list(value)) if reverse else list(value):
        child = value[key]
        if not named and key in ("description", "summary") and isinstance(child, str):
            out[key] = child + " (reworded)"
        elif key in ("example", "examples", "fixed", "default", "enum"):
            out[key] = child
        else:
            out[key] = reworded(child, named=not named and key in names, reverse=reverse)
    return out


def changed_spec(data: dict[str, Any]) -> dict[str, Any]:
    """A second version of a spec: reworded, one operation fewer, one parameter more."""
    new = reworded(data)
    operations = new["operations"]
    generated = [n for n, op in operations.items() if "skip" not in op]
    del operations[generated[0]]
    target = operations[generated[-1]]
    target.setdefault("params", {})["benchmark_flag"] = {"type": "boolean"}
    for role in new.get("roles", {}).values():  # a role must not name the removed operation
        role.update({k: generated[-1] for k, v in role.items() if v == generated[0]})
    return new


def changed_document(data: dict[str, Any]) -> dict[str, Any]:
    """A second version of an OpenAPI document: reworded, one path fewer. Its key order is
    kept: the importer's output depends on it (a reordered document imports differently)."""
    new = reworded(data, reverse=False)
    paths = new.get("paths", {})
    if paths:
        del paths[next(iter(paths))]
    return new


def time_diff(old: Path, new: Path, iterations: int) -> dict[str, Any]:
    """Load both, then diff; the IR builds inside the diff are timed apart as well."""
    from builder.diff.api import diff_connectors
    from builder.ir import build
    from builder.spec.loader import load_spec

    loads, compares, builds, changes = [], [], [], 0
    for _ in range(iterations):
        t0 = time.perf_counter()
        a, b = load_spec(old), load_spec(new)
        t1 = time.perf_counter()
        report = diff_connectors(a, b)
        t2 = time.perf_counter()
        build(a.spec, old.name), build(b.spec, new.name)
        t3 = time.perf_counter()
        loads.append(t1 - t0)
        compares.append(t2 - t1)
        builds.append(t3 - t2)
        changes = len(report.changes)
    totals = [x + y for x, y in zip(loads, compares, strict=True)]
    return {
        "load": summary(loads),
        "compare": summary(compares),
        "ir_builds": summary(builds),
        "total": summary(totals),
        "changes": changes,
    }


def time_cli(old: Path, new: Path) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "builder.cli", "diff", str(old), str(new), "--fail-on", "none"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"diff failed:\n{run.stdout}\n{run.stderr}")
    return elapsed


def spec_case(tmp: Path) -> tuple[str, Path, Path]:
    import yaml

    from builder.spec.yamlio import load_yaml

    largest = max((REPO_ROOT / "specs").glob("*.yaml"), key=lambda p: p.stat().st_size)
    data = load_yaml(largest.read_text("utf-8"), str(largest)).data
    old, new = tmp / "spec-old" / largest.name, tmp / "spec-new" / largest.name
    for path in (old, new):
        path.parent.mkdir(parents=True)
    shutil.copyfile(largest, old)
    new.write_text(yaml.safe_dump(changed_spec(data), sort_keys=False), "utf-8")
    return f"specs/{largest.name}", old, new


def openapi_case(tmp: Path) -> tuple[str, Path, Path] | str:
    """The two imported specs, or why this case cannot run yet."""
    try:
        from builder.openapi.importer import import_openapi
    except ImportError:
        return "pending: builder.openapi has no importer yet"
    documents = [p for p in CORPUS.glob("*") if p.suffix in (".json", ".yaml", ".yml")]
    if not documents:
        return f"pending: no OpenAPI documents under {CORPUS}"
    largest = max(documents, key=lambda p: p.stat().st_size)
    import yaml

    try:
        loader = yaml.CSafeLoader
    except AttributeError:  # pragma: no cover - PyYAML without libyaml
        loader = yaml.SafeLoader  # type: ignore[assignment]
    data = yaml.load(largest.read_text("utf-8"), Loader=loader)
    changed = tmp / "changed.json"
    changed.write_text(json.dumps(changed_document(data)), "utf-8")
    name = "corpus_largest"
    try:
        old, _, _ = import_openapi(largest, name, tmp / "openapi-old")
        new, _, _ = import_openapi(changed, name, tmp / "openapi-new")
    except Exception as exc:  # the importer's failure is a finding, not this script's
        return f"import failed for {largest.name}: {type(exc).__name__}: {exc}"
    return f"{largest.name} ({largest.stat().st_size // 1024} KiB, imported)", old, new


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=5)
    args = p.parse_args()
    iterations = 1 if args.quick else args.iterations
    results: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="diff-speed-") as tmp:
        cases = [spec_case(Path(tmp)), openapi_case(Path(tmp))]
        for case in cases:
            if isinstance(case, str):
                print(f"OpenAPI document: {case}")
                results["openapi"] = {"status": case}
                continue
            label, old, new = case
            timing = time_diff(old, new, iterations)
            timing["cli"] = time_cli(old, new)
            results[label] = timing
            total = timing["total"]["median"]
            rows.append(
                [
                    label,
                    timing["changes"],
                    timing["load"]["median"],
                    timing["compare"]["median"],
                    timing["ir_builds"]["median"],
                    total,
                    timing["cli"],
                    verdict(total, TARGET_S),
                ]
            )
    headers = ["input", "changes", "load s", "compare s", "of it IR s", "total s", "CLI s"]
    headers.append(f"<{TARGET_S:g} s")
    print(table(headers, rows, title=f"diff of two versions (median of {iterations})"))
    write_json(args.json, "diff_speed", {"iterations": iterations}, results)


if __name__ == "__main__":
    main()
