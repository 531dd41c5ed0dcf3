"""Benchmark: how long ``connector-builder diff`` takes on large inputs.

    python tests/benchmarks/diff_speed.py [--quick] [--json PATH] [--iterations N]

Two inputs, each compared with a changed version of itself (mappings reordered, every
description reworded, an operation removed, a parameter added):

* the largest spec in ``specs/``;
* the largest OpenAPI document in ``../shared/corpus/openapi``, imported with
  ``builder.openapi`` (both versions), when that importer exists.

Timed in-process, reported split into loading both specs one after the other (YAML,
validation, and for an OpenAPI spec the document's conversion: the loader's work) and
comparing them (``diff_connectors``: the IR builds and the diff itself, what ``diff``
adds; of it, the IR builds and lookups of both sides), and rendering the text report.

Then the real command, ``connector-builder diff OLD NEW`` in a fresh process each time
(which loads large inputs in two processes at once): ``--iterations`` runs with the caches
as they are (warm: parsed documents and validation results are cached by hash under
$CONNECTOR_BUILDER_CACHE / $XDG_CACHE_HOME), and a few with empty caches (cold: a YAML
document is parsed again; validation findings, which a diff does not report, are only
computed when a spec has errors). Target: under 2 s for the command, warm.
"""

from __future__ import annotations

import json
import os
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
    """Load both, then diff, then render; what the diff builds of each side (the lean IR
    and its lookups) is timed apart as well."""
    from builder.diff.api import diff_connectors
    from builder.diff.render import render
    from builder.diff.side import Side
    from builder.gc_pause import collection_paused
    from builder.spec.loader import load_spec

    loads, compares, builds, renders, changes = [], [], [], [], 0
    for _ in range(iterations):
        t0 = time.perf_counter()
        a, b = load_spec(old), load_spec(new)
        t1 = time.perf_counter()
        report = diff_connectors(a, b)
        t2 = time.perf_counter()
        with collection_paused():  # as the diff does
            Side.of(a).prepare(), Side.of(b).prepare()
        t3 = time.perf_counter()
        render(report, "text")
        t4 = time.perf_counter()
        loads.append(t1 - t0)
        compares.append(t2 - t1)
        builds.append(t3 - t2)
        renders.append(t4 - t3)
        changes = len(report.changes)
    totals = [x + y for x, y in zip(loads, compares, strict=True)]
    return {
        "load": summary(loads),
        "compare": summary(compares),
        "ir_builds": summary(builds),
        "render": summary(renders),
        "total": summary(totals),
        "changes": changes,
    }


def time_cli(old: Path, new: Path, cache: Path | None = None) -> float:
    """One ``connector-builder diff OLD NEW`` in a fresh process; with ``cache``, with
    empty caches under it (parsed documents and validation results)."""
    env = dict(os.environ)
    if cache is not None:
        env["CONNECTOR_BUILDER_CACHE"] = str(cache / "connector-builder")
        env["XDG_CACHE_HOME"] = str(cache)
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "builder.cli", "diff", str(old), str(new), "--fail-on", "none"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"diff failed:\n{run.stdout}\n{run.stderr}")
    return elapsed


def time_cli_runs(old: Path, new: Path, warm: int, cold: int) -> dict[str, Any]:
    time_cli(old, new)  # fills the caches, if they are not yet
    warm_runs = [time_cli(old, new) for _ in range(warm)]
    cold_runs = []
    for _ in range(cold):
        with tempfile.TemporaryDirectory(prefix="diff-speed-cache-") as cache:
            cold_runs.append(time_cli(old, new, Path(cache)))
    return {"warm": summary(warm_runs), "cold": summary(cold_runs)}


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
            timing["cli"] = time_cli_runs(old, new, iterations, 1 if args.quick else 3)
            results[label] = timing
            warm, cold = timing["cli"]["warm"]["median"], timing["cli"]["cold"]["median"]
            rows.append(
                [
                    label,
                    timing["changes"],
                    timing["load"]["median"],
                    timing["compare"]["median"],
                    timing["ir_builds"]["median"],
                    timing["render"]["median"],
                    timing["total"]["median"],
                    warm,
                    cold,
                    verdict(warm, TARGET_S),
                ]
            )
    headers = ["input", "changes", "load s", "compare s", "of it IR s", "render s", "total s"]
    headers += ["CLI warm s", "CLI cold s", f"warm <{TARGET_S:g} s"]
    title = (
        f"diff of two versions: in-process (median of {iterations}); the command "
        f"(median of {iterations} warm, {1 if args.quick else 3} cold)"
    )
    print(table(headers, rows, title=title))
    write_json(args.json, "diff_speed", {"iterations": iterations}, results)


if __name__ == "__main__":
    main()
