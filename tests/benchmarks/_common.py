"""Small helpers shared by the benchmark scripts (tables, statistics, JSON output).

The scripts are run as ``python tests/benchmarks/<name>.py`` from the repository root;
each puts the repository root on ``sys.path`` before importing this module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="few iterations, for smoke checks")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    return p


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median / min / max / n of a list of samples (kept with the samples for JSON)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "samples": list(values),
    }


def verdict(value: float, limit: float) -> str:
    """ "ok" when ``value`` is within ``limit`` (a ratio or a time), else "MISS"."""
    return "ok" if value <= limit else "MISS"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A plain-text table; numbers right-aligned, text left-aligned."""
    body = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        all(_is_number(row[i]) for row in body if row[i] not in ("", "-")) and bool(body)
        for i in range(len(headers))
    ]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            (c.rjust(w) if num else c.ljust(w))
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(cells).rstrip()

    lines = []
    if title:
        lines.append(title)
    lines.append(fmt(list(headers)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(row) for row in body)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("xµms "))
    except ValueError:
        return False
    return True


def environment() -> dict[str, Any]:
    """Facts about the machine and software, recorded beside the numbers."""
    versions: dict[str, str | None] = {}
    for name in ("httpx", "pydantic", "pydantic_core", "openai", "httpx2"):
        try:
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
        except Exception:  # any failure just means "unknown"
            versions[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(
    path: str | None, benchmark: str, params: dict[str, Any], results: dict[str, Any]
) -> None:
    if not path:
        return
    document = {
        "benchmark": benchmark,
        "params": params,
        "environment": environment(),
        "results": results,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"\nwrote {target}")
