"""Run every benchmark, print one table of the headline numbers, keep the merged JSON.

    python tests/benchmarks/run_all.py [--quick] [--out PATH] [--only a,b] [--skip a,b]
                                       [--timeout S] [--verbose]

Every script in ``tests/benchmarks/`` (generation, import_time, per_call, load, fuzz_specs,
and diff_speed, openapi_corpus or any other that is there) runs in its own process with
``--json`` into a temporary directory (and ``--quick`` when given here); its output goes to
a log beside the JSON (``--verbose``: to the terminal as well). Then one table: each
headline measure with its baseline from the same run, its target and verdict, and — when
``--out`` (default ``bench-results/latest.json``, git-ignored) already holds an earlier
run — the change since then. The merged JSON (every script's own document, its exit
status and run time, and the table's rows) is written to ``--out``; the earlier file is
kept as ``<out>.previous.json``.

Exit status: 1 when a script failed or a target was missed, else 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks._common import REPO_ROOT, environment, table  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = [
    "generation",
    "import_time",
    "per_call",
    "load",
    "fuzz_specs",
    "diff_speed",
    "tracing_cost",
    "llm_stream",
    "sql_throughput",
    "redis_throughput",
    "s3_throughput",
    "openapi_corpus",
]


@dataclass
class Row:
    benchmark: str
    measure: str
    value: float | None
    unit: str
    baseline: str = ""  # the same run's baseline, as text
    target: str = ""
    verdict: str = ""  # ok | MISS | ""
    lower_is_better: bool = True

    @property
    def key(self) -> str:
        return f"{self.benchmark}: {self.measure}"


def scripts() -> list[str]:
    found = sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all"
    )
    return [s for s in ORDER if s in found] + [s for s in found if s not in ORDER]


# --------------------------------------------------------------------------------------- #
# Headline measures of each benchmark's JSON
# --------------------------------------------------------------------------------------- #


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _ok(value: float | None, limit: float, *, at_least: bool = False) -> str:
    if value is None:
        return ""
    return "ok" if (value >= limit if at_least else value <= limit) else "MISS"


def generation_rows(r: dict[str, Any]) -> Iterator[Row]:
    cold, noop = _get(r, "targets", "cold_s"), _get(r, "targets", "noop_s")
    imported = _get(r, "seconds", "cold_inproc_import", "median")
    base = f"import builder.generate {imported:.2f} s" if imported is not None else ""
    for key, label, limit in (
        ("cold_cli", "generate specs/, cold (CLI)", cold),
        ("cold_inproc_total", "generate specs/, cold (in-process)", cold),
        ("noop_cli", "generate specs/, no-op (CLI)", noop),
        ("noop_inproc_total", "generate specs/, no-op (in-process)", noop),
    ):
        value = _get(r, "seconds", key, "median")
        yield Row(
            "generation",
            label,
            value,
            "s",
            base,
            f"<= {limit:g} s" if limit else "",
            _ok(value, limit) if limit else "",
        )


def import_time_rows(r: dict[str, Any]) -> Iterator[Row]:
    ms = r.get("milliseconds", {})
    base = _get(ms, "baseline", "median")
    target = r.get("target_ratio")
    base_text = f"import httpx, pydantic {base:.1f} ms" if base else ""
    for key, label in (
        ("connectors_openai", "import connectors.openai"),
        ("connectors_github", "import connectors.github"),
    ):
        value = _get(ms, key, "median")
        ratio = value / base if value and base else None
        yield Row(
            "import_time",
            label,
            value,
            "ms",
            base_text,
            f"<= {target:.2f}x baseline" if target else "",
            _ok(ratio, target) if target and key == "connectors_openai" else "",
        )
    construct = _get(ms, "connectors_openai_construct", "median")
    if construct is not None:
        httpx_client = _get(ms, "httpx_client_construct", "median")
        yield Row(
            "import_time",
            "import + construct OpenAI(api_key=...)",
            construct,
            "ms",
            f"import httpx; httpx.Client() {httpx_client:.1f} ms" if httpx_client else "",
        )


def per_call_rows(r: dict[str, Any]) -> Iterator[Row]:
    target = _get(r, "targets", "generated_vs_raw_httpx")
    for name, row in (r.get("rows") or {}).items():
        gen = _get(row, "generated", "cpu_us_per_call", "median")
        raw = _get(row, "raw httpx", "cpu_us_per_call", "median")
        sdk = _get(row, "official SDK", "cpu_us_per_call", "median")
        ratio = _get(row, "generated", "ratio_vs_raw_httpx")
        base = f"raw httpx {raw:.0f} µs" if raw else ""
        if sdk:
            base += f"; official SDK {sdk:.0f} µs"
        yield Row(
            "per_call",
            f"CPU per call, {name}",
            gen,
            "µs",
            base,
            f"<= {target:.2f}x raw ({ratio:.2f}x)" if target and ratio else "",
            _ok(ratio, target) if target and ratio else "",
        )
    for key, value in _find(r, "tracing"):
        yield Row("per_call", f"tracing cost ({key})", value, "", "", "")


def load_rows(r: dict[str, Any]) -> Iterator[Row]:
    gen, raw = _get(r, "rps", "generated"), _get(r, "rps", "raw httpx")
    ratio, target = r.get("ratio_generated_vs_raw"), _get(r, "targets", "ratio")
    yield Row(
        "load",
        "async throughput, generated AsyncOpenAI",
        gen,
        "req/s",
        f"raw httpx.AsyncClient {raw:.0f} req/s" if raw else "",
        f">= {target:.2f}x raw ({ratio:.2f}x)" if target and ratio else "",
        _ok(ratio, target, at_least=True) if target and ratio else "",
        lower_is_better=False,
    )
    rate = r.get("rate_limiter") or {}
    if rate:
        tol = _get(r, "targets", "rate_tolerance") or 0.05
        yield Row(
            "load",
            "rate limiter, achieved rate",
            rate.get("achieved_rate"),
            "req/s",
            f"set {rate.get('set_rate'):g} req/s",
            f"within ±{tol * 100:g} %",
            _ok(abs(rate.get("error", 1.0)), tol),
            lower_is_better=False,
        )
    growth = r.get("rss_growth_mb")
    if growth is not None:
        limit = _get(r, "targets", "rss_growth_mb") or 10
        yield Row(
            "load",
            "RSS growth over the batches",
            growth,
            "MB",
            "first batch",
            f"<= {limit:g} MB",
            _ok(growth, limit),
        )
    fds = r.get("fds") or {}
    if fds:
        leaked = fds["final"][0] - fds["baseline"][0]
        yield Row(
            "load",
            "file descriptors left after aclose",
            leaked,
            "",
            f"{fds['baseline'][0]} before",
            "0",
            _ok(leaked, 0),
        )


def fuzz_rows(r: dict[str, Any]) -> Iterator[Row]:
    counts = r.get("counts") or {}
    tried = r.get("tried")
    yield Row("fuzz_specs", "specs tried", tried, "", "", "", lower_is_better=False)
    yield Row(
        "fuzz_specs",
        "rejected with located errors",
        counts.get("rejected", 0),
        "",
        f"of {tried}",
        "",
        lower_is_better=False,
    )
    yield Row(
        "fuzz_specs",
        "accepted, generated, ruff-clean",
        counts.get("accepted", 0),
        "",
        f"of {tried}",
        "",
        lower_is_better=False,
    )
    for key, label in (
        ("crashed", "crashed (traceback)"),
        ("bad-diagnostic", "unlocated / misplaced errors"),
        ("bad-code", "generated code not compiling / not ruff-clean"),
    ):
        value = counts.get(key, 0)
        yield Row("fuzz_specs", label, value, "", f"of {tried}", "0", _ok(value, 0))


def diff_speed_rows(r: dict[str, Any]) -> Iterator[Row]:
    for label, timing in r.items():
        total = _get(timing, "total", "median")
        if total is None:
            continue
        load = _get(timing, "load", "median")
        yield Row(
            "diff_speed",
            f"diff {label} (load + compare)",
            total,
            "s",
            f"of it loading {load:.2f} s" if load is not None else "",
            "< 2 s",
            _ok(total, 2.0),
        )
        for run in ("warm", "cold"):  # the command itself, in a fresh process
            seconds = _get(timing, "cli", run, "median")
            if seconds is not None:
                yield Row(
                    "diff_speed",
                    f"connector-builder diff {label}, {run} caches",
                    seconds,
                    "s",
                    "fresh process, end to end",
                    "< 2 s",
                    _ok(seconds, 2.0),
                )


def openapi_corpus_rows(r: dict[str, Any]) -> Iterator[Row]:
    totals = r.get("totals") or {}
    docs = totals.get("documents")
    if docs is None:
        return
    peer = totals.get("openapi_python_client_generated_and_imported")
    yield Row(
        "openapi_corpus",
        "documents generated and imported",
        totals.get("ours_generated_and_imported"),
        "",
        f"of {docs}" + (f"; openapi-python-client {peer}" if peer is not None else ""),
        "",
        lower_is_better=False,
    )
    share = totals.get("operations_share")
    if share is not None:
        yield Row(
            "openapi_corpus",
            "share of operations generated",
            share * 100,
            "%",
            f"{totals.get('operations_generated')} of {totals.get('operations_total')}",
            "",
            lower_is_better=False,
        )
    for label, large in (totals.get("large") or {}).items():
        ratio = large.get("ratio")
        yield Row(
            "openapi_corpus",
            f"import {label}",
            large.get("ours_s"),
            "s",
            f"openapi-python-client {large.get('opc_s')} s" if large.get("opc_s") else "",
            ">= 3x faster" + (f" ({ratio:.1f}x)" if ratio else ""),
            _ok(ratio, 3.0, at_least=True) if ratio else "",
        )


def _find(data: Any, word: str, path: str = "") -> Iterator[tuple[str, float]]:
    """Numbers under keys containing ``word`` (for measures a script may add later)."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            if word in str(key).lower() and isinstance(value, int | float):
                yield here, float(value)
            elif word in str(key).lower() and isinstance(value, dict):
                median = value.get("median")
                if isinstance(median, int | float):
                    yield here, float(median)
            else:
                yield from _find(value, word, here)


def generic_rows(name: str, r: dict[str, Any]) -> Iterator[Row]:
    """A script this runner does not know: its verdicts, and any throughput it reports."""
    for key, value in sorted((r.get("verdicts") or {}).items()):
        yield Row(name, f"verdict: {key}", None, "", "", "", str(value))
    for word in ("throughput", "per_s", "sink"):
        for key, value in list(_find(r, word))[:4]:
            yield Row(name, key, value, "", "", "", lower_is_better=False)


def _ratio_rows(
    name: str, rows: dict[str, Any], ratio_key: Callable[[dict[str, Any]], Any], limit: float
) -> Iterator[Row]:
    """One row per measure of a throughput script: ours / raw driver, at least ``limit``."""
    for measure, entry in rows.items():
        ratio = ratio_key(entry)
        if ratio is None:
            continue
        yield Row(
            name,
            f"{measure}: ours / raw",
            ratio,
            "x",
            "raw driver, same run",
            f">= {limit:g}x",
            _ok(ratio, limit, at_least=True),
            lower_is_better=False,
        )


def sql_throughput_rows(r: dict[str, Any]) -> Iterator[Row]:
    limit = _get(r, "targets", "ratio_min") or 0.9
    rows = {k: v for k, v in (r.get("rows") or {}).items() if k in ("sink", "source")}
    yield from _ratio_rows("sql_throughput", rows, lambda e: e.get("ratio"), limit)


def redis_throughput_rows(r: dict[str, Any]) -> Iterator[Row]:
    limit = _get(r, "targets", "ratio_at_least") or 0.9
    yield from _ratio_rows("redis_throughput", r.get("rows") or {}, lambda e: e.get("ratio"), limit)


def s3_throughput_rows(r: dict[str, Any]) -> Iterator[Row]:
    limit = _get(r, "targets", "ratio") or 0.9
    yield from _ratio_rows(
        "s3_throughput",
        r.get("rows") or {},
        lambda e: _get(e, "per_round_ratio", "median"),
        limit,
    )


def tracing_cost_rows(r: dict[str, Any]) -> Iterator[Row]:
    limit = r.get("target_added_us_per_call") or 20.0
    for row_name, variants in (r.get("rows") or {}).items():
        base = _get(variants, "off", "cpu_us_per_call", "median")
        for variant, entry in variants.items():
            added = _get(entry, "added_us_per_call", "median")
            if variant == "off" or added is None:
                continue
            per_call = not row_name.startswith("stream")
            yield Row(
                "tracing_cost",
                f"{row_name}, {variant}: CPU added",
                added,
                "µs",
                f"off {base:.0f} µs/call" if base else "",
                f"< {limit:g} µs" if per_call else "",
                _ok(added, limit) if per_call else "",
            )


def llm_stream_rows(r: dict[str, Any]) -> Iterator[Row]:
    for name, entry in (r.get("clients") or {}).items():
        yield Row(
            "llm_stream",
            f"{name}: CPU per chunk vs raw httpx",
            entry.get("ratio"),
            "x",
            f"{_get(entry, 'chunks_per_s', 'median') or 0:,.0f} chunks/s",
        )


EXTRACTORS: dict[str, Callable[[dict[str, Any]], Iterator[Row]]] = {
    "tracing_cost": tracing_cost_rows,
    "sql_throughput": sql_throughput_rows,
    "redis_throughput": redis_throughput_rows,
    "s3_throughput": s3_throughput_rows,
    "llm_stream": llm_stream_rows,
    "generation": generation_rows,
    "import_time": import_time_rows,
    "per_call": per_call_rows,
    "load": load_rows,
    "fuzz_specs": fuzz_rows,
    "diff_speed": diff_speed_rows,
    "openapi_corpus": openapi_corpus_rows,
}


def rows_of(name: str, document: dict[str, Any] | None) -> list[Row]:
    if not document:
        return []
    results = document.get("results") or {}
    try:
        rows = list(EXTRACTORS[name](results)) if name in EXTRACTORS else []
        if name in EXTRACTORS:
            # Measures a script reports beyond the known ones (tracing, sinks...).
            known = {r.measure for r in rows}
            for word in ("tracing", "sink"):
                for key, value in _find(results, word):
                    if f"{word} ({key})" not in known and name != "per_call":
                        rows.append(Row(name, f"{word} ({key})", value, ""))
        else:
            rows = list(generic_rows(name, results))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        rows = [Row(name, f"(could not read its JSON: {type(exc).__name__}: {exc})", None, "")]
    return rows


# --------------------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------------------- #


def run_script(
    name: str, out_dir: Path, quick: bool, timeout: float, verbose: bool
) -> dict[str, Any]:
    json_path, log_path = out_dir / f"{name}.json", out_dir / f"{name}.log"
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(json_path)]
    if quick:
        cmd.append("--quick")
    print(f"running {name}{' --quick' if quick else ''} ...", flush=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        deadline = started + timeout
        timed_out = False
        for line in proc.stdout:
            log.write(line)
            if verbose:
                print(f"  | {line}", end="", flush=True)
            if time.perf_counter() > deadline:
                proc.kill()  # our own child, by its handle
                timed_out = True
                break
        code = proc.wait()
    seconds = time.perf_counter() - started
    document = None
    if json_path.exists():
        try:
            document = json.loads(json_path.read_text("utf-8"))
        except ValueError:
            document = None
    status = "timed out" if timed_out else f"exit {code}"
    print(f"  {name}: {status} in {seconds:.0f} s" + ("" if document else " (no JSON)"), flush=True)
    if code != 0 and not verbose:
        tail = log_path.read_text("utf-8", "replace").splitlines()[-15:]
        print("\n".join(f"  | {line}" for line in tail))
    return {
        "exit_code": None if timed_out else code,
        "seconds": seconds,
        "document": document,
        "log_tail": log_path.read_text("utf-8", "replace")[-4000:],
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = f"{int(value)}"
    return f"{text} {unit}".strip()


def _delta(row: Row, previous: dict[str, Any]) -> str:
    before = previous.get(row.key)
    if before is None or row.value is None:
        return "new" if previous and before is None and row.value is not None else ""
    if before == 0:
        return "=" if row.value == 0 else f"{row.value - before:+g}"
    change = (row.value - before) / abs(before) * 100
    if abs(change) < 0.5:
        return "="
    better = (change < 0) == row.lower_is_better
    return f"{change:+.1f}%" + (" better" if better else " worse")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    p.add_argument("--out", default=str(REPO_ROOT / "bench-results" / "latest.json"))
    p.add_argument("--only", help="comma-separated script names")
    p.add_argument("--skip", help="comma-separated script names")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    p.add_argument("--verbose", action="store_true", help="show every script's output")
    args = p.parse_args(argv)

    names = scripts()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        names = [n for n in names if n in wanted]
    if args.skip:
        names = [n for n in names if n not in {s.strip() for s in args.skip.split(",")}]

    out = Path(args.out)
    previous: dict[str, Any] = {}
    previous_time = None
    if out.exists():
        try:
            old = json.loads(out.read_text("utf-8"))
            previous = {r["key"]: r["value"] for r in old.get("rows", []) if "key" in r}
            previous_time = _get(old, "environment", "time")
        except (ValueError, KeyError, TypeError):
            previous = {}

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for name in names:
            runs[name] = run_script(name, Path(tmp), args.quick, args.timeout, args.verbose)

    rows: list[Row] = []
    for name in names:
        got = rows_of(name, runs[name]["document"])
        if not got:
            got = [
                Row(
                    name,
                    f"(no results: {'exit ' + str(runs[name]['exit_code'])})",
                    None,
                    "",
                    verdict="MISS" if runs[name]["exit_code"] != 0 else "",
                )
            ]
        rows.extend(got)

    headers = ["benchmark", "measure", "value", "baseline (same run)", "target", ""]
    if previous:
        headers.append(f"vs last ({previous_time or 'earlier'})")
    body = []
    for row in rows:
        cells = [
            row.benchmark,
            row.measure,
            _fmt(row.value, row.unit),
            row.baseline,
            row.target,
            row.verdict,
        ]
        if previous:
            cells.append(_delta(row, previous))
        body.append(cells)
    print()
    title = f"Benchmarks{' (--quick)' if args.quick else ''}: {len(names)} scripts"
    print(table(headers, body, title=title))
    failed = [n for n in names if runs[n]["exit_code"] != 0]
    missed = [r.key for r in rows if r.verdict == "MISS"]
    print()
    print(
        "scripts: "
        + ", ".join(
            f"{n} {'ok' if runs[n]['exit_code'] == 0 else 'FAILED'} ({runs[n]['seconds']:.0f} s)"
            for n in names
        )
    )
    if missed:
        print(f"targets missed: {len(missed)}: " + "; ".join(missed))

    merged = {
        "environment": environment(),
        "quick": args.quick,
        "scripts": names,
        "rows": [{**asdict(r), "key": r.key} for r in rows],
        "benchmarks": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.copyfile(out, out.with_name(out.stem + ".previous.json"))
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_out.write_text(json.dumps(merged, indent=2, default=str) + "\n", "utf-8")
    os.replace(tmp_out, out)
    print(f"\nwrote {out}")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
