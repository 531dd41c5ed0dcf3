"""Benchmark: how long generating every spec in ``specs/`` takes.

    python tests/benchmarks/generation.py [--quick] [--json PATH] [--iterations N]

Four cases, each run in fresh subprocesses and interleaved (the order alternates every
iteration) so that drift affects them alike:

* cold, CLI        ``connector-builder generate specs --out TMP`` into a new empty TMP
                   (wall time of the whole command: interpreter start, imports, generation);
* cold, in-process ``builder.generate.generate(["specs"], Path(TMP))`` as the first call of
                   a fresh interpreter, timed inside the child, so the imports of the
                   generator are counted (reported split: import / generate() / total);
* no-op, CLI       the same command again into the same TMP (every package skipped by hash);
* no-op, in-process likewise, in-process.

Targets: cold generation of all of specs/ "in seconds" (taken as <= 10 s), a no-op run
"well under a second" (taken as <= 0.5 s).
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

COLD_TARGET_S = 10.0  # "in seconds"
NOOP_TARGET_S = 0.5  # "well under a second"

HEAVY = ("black", "jinja2", "yaml", "click", "datamodel_code_generator", "openapi_spec_validator")

# Runs in a fresh interpreter: the timer starts before the generator is imported.
IN_PROCESS_CHILD = f"""
import time
_t0 = time.perf_counter()
import json, sys
from pathlib import Path
from builder.generate import generate
_t1 = time.perf_counter()
outcome = generate(["specs"], Path(sys.argv[1]))
_t2 = time.perf_counter()
print(json.dumps({{
    "import": _t1 - _t0,
    "generate": _t2 - _t1,
    "total": _t2 - _t0,
    "written": outcome.written,
    "skipped": outcome.skipped,
    "loaded": [m for m in {HEAVY!r} if m in sys.modules],
}}))
"""


def _cli_command(out: Path) -> list[str]:
    exe = shutil.which("connector-builder")
    if exe is None:  # not on PATH: the same entry point through this interpreter
        return [
            sys.executable,
            "-c",
            "from builder.cli import main; main()",
            "generate",
            "specs",
            "--out",
            str(out),
        ]
    return [exe, "generate", "specs", "--out", str(out)]


def _run(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return wall, proc.stdout


def run_cli(out: Path, spec_names: set[str], expect: str) -> float:
    wall, stdout = _run(_cli_command(out))
    generated = {
        line.rsplit("/", 1)[-1] for line in stdout.splitlines() if line.startswith("generated ")
    }
    unchanged: set[str] = set()
    for line in stdout.splitlines():
        if line.startswith("unchanged: "):
            unchanged = {n.strip() for n in line[len("unchanged: ") :].split(",")}
    if expect == "cold" and (generated != spec_names or unchanged):
        raise SystemExit(f"cold CLI run did not generate every spec:\n{stdout}")
    if expect == "noop" and (generated or unchanged != spec_names):
        raise SystemExit(f"no-op CLI run did not skip every package:\n{stdout}")
    return wall


def run_in_process(out: Path, spec_names: set[str], expect: str) -> dict[str, Any]:
    wall, stdout = _run([sys.executable, "-c", IN_PROCESS_CHILD, str(out)])
    data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    data["wall"] = wall
    if expect == "cold" and (set(data["written"]) != spec_names or data["skipped"]):
        raise SystemExit(f"cold in-process run did not generate every spec: {data}")
    if expect == "noop" and (data["written"] or set(data["skipped"]) != spec_names):
        raise SystemExit(f"no-op in-process run did not skip every package: {data}")
    return data


def spec_names() -> set[str]:
    """Connector names of the specs (each spec's ``name:``; falls back to the file stem)."""
    names = set()
    for path in sorted((REPO_ROOT / "specs").rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        name = path.stem
        for line in path.read_text("utf-8").splitlines():
            if line.startswith("name:"):
                name = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
                break
        names.add(name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, help="fresh-subprocess runs per case (default 7)")
    args = p.parse_args(argv)
    iterations = args.iterations or (2 if args.quick else 7)
    names = spec_names()

    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "cold_cli",
            "cold_inproc_total",
            "cold_inproc_import",
            "cold_inproc_generate",
            "cold_inproc_wall",
            "noop_cli",
            "noop_inproc_total",
            "noop_inproc_import",
            "noop_inproc_generate",
            "noop_inproc_wall",
        )
    }
    loaded: dict[str, list[str]] = {}

    print(
        f"generation benchmark: {len(names)} specs ({', '.join(sorted(names))}), "
        f"{iterations} iterations, fresh subprocess per run",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        for i in range(iterations):
            cli_out = Path(tmp) / f"cli-{i}"
            inproc_out = Path(tmp) / f"inproc-{i}"

            def cli_pair(out: Path = cli_out) -> None:
                samples["cold_cli"].append(run_cli(out, names, "cold"))
                samples["noop_cli"].append(run_cli(out, names, "noop"))

            def inproc_pair(out: Path = inproc_out) -> None:
                for kind in ("cold", "noop"):
                    data = run_in_process(out, names, kind)
                    for part in ("total", "import", "generate", "wall"):
                        samples[f"{kind}_inproc_{part}"].append(data[part])
                    loaded[kind] = data["loaded"]

            for step in (cli_pair, inproc_pair) if i % 2 == 0 else (inproc_pair, cli_pair):
                step()
            print(
                f"  iteration {i + 1}/{iterations}: cold CLI {samples['cold_cli'][-1]:.2f} s, "
                f"no-op CLI {samples['noop_cli'][-1]:.3f} s",
                flush=True,
            )

    stats = {k: summary(v) for k, v in samples.items()}

    def row(label: str, key: str, target: float | None) -> list[Any]:
        s = stats[key]
        if target is None:
            return [label, s["median"], s["min"], s["max"], s["n"], "", ""]
        return [
            label,
            s["median"],
            s["min"],
            s["max"],
            s["n"],
            f"<= {target:g} s",
            verdict(s["median"], target),
        ]

    rows = [
        row("cold   CLI subprocess, wall", "cold_cli", COLD_TARGET_S),
        row("cold   in-process: import + generate()", "cold_inproc_total", COLD_TARGET_S),
        row("         of which import builder.generate", "cold_inproc_import", None),
        row("         of which generate()", "cold_inproc_generate", None),
        row("cold   in-process child, wall", "cold_inproc_wall", None),
        row("no-op  CLI subprocess, wall", "noop_cli", NOOP_TARGET_S),
        row("no-op  in-process: import + generate()", "noop_inproc_total", NOOP_TARGET_S),
        row("         of which import builder.generate", "noop_inproc_import", None),
        row("         of which generate()", "noop_inproc_generate", None),
        row("no-op  in-process child, wall", "noop_inproc_wall", None),
    ]
    print()
    print(
        table(
            ["case", "median s", "min s", "max s", "n", "target", ""],
            rows,
            title=f"Generation of all of specs/ ({len(names)} specs)",
        )
    )
    print()
    print(
        "heavy generator modules imported by the in-process run: "
        f"cold: {', '.join(loaded.get('cold', [])) or 'none'}; "
        f"no-op: {', '.join(loaded.get('noop', [])) or 'none'}"
    )

    write_json(
        args.json,
        "generation",
        {"iterations": iterations, "specs": sorted(names), "quick": args.quick},
        {
            "seconds": stats,
            "targets": {"cold_s": COLD_TARGET_S, "noop_s": NOOP_TARGET_S},
            "verdicts": {
                "cold_cli": verdict(stats["cold_cli"]["median"], COLD_TARGET_S),
                "cold_inproc_total": verdict(stats["cold_inproc_total"]["median"], COLD_TARGET_S),
                "noop_cli": verdict(stats["noop_cli"]["median"], NOOP_TARGET_S),
                "noop_inproc_total": verdict(stats["noop_inproc_total"]["median"], NOOP_TARGET_S),
            },
            "heavy_modules_loaded": loaded,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
