"""The report in each output format: text (for people), markdown (a pull-request comment),
json (for tools; its schema is documented in the README) and github (workflow annotations).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from builder.diff.model import REPORT_VERSION, Change, ConnectorDiff, Report
from builder.diff.rules import Bump, Level, Severity

_COLOURS = {Severity.BREAKING: "red", Severity.NON_BREAKING: "yellow", Severity.DOCS: "cyan"}
_ANNOTATION = {
    Severity.BREAKING: "error",
    Severity.NON_BREAKING: "warning",
    Severity.DOCS: "notice",
}


def render(report: Report, output_format: str, *, fail_on: str = "breaking") -> str:
    renderers: dict[str, Callable[[Report, str], str]] = {
        "text": text,
        "markdown": markdown,
        "json": as_json,
        "github": github,
    }
    return renderers[output_format](report, fail_on)


# -- shared wording -------------------------------------------------------------------------


def _verdicts(change: Change) -> str:
    return ", ".join(f"{level.value}: {severity.value}" for level, severity in change.levels)


def _where(change: Change) -> str:
    if change.new_line is not None:
        if change.old_line is not None and change.old_line != change.new_line:
            return f"L{change.new_line} (was L{change.old_line})"
        return f"L{change.new_line}"
    if change.old_line is not None:
        return f"old L{change.old_line}"
    return ""


def _counts(connector: ConnectorDiff) -> str:
    parts = [
        f"{connector.count(severity)} {severity.value}"
        for severity in (Severity.BREAKING, Severity.NON_BREAKING, Severity.DOCS)
        if connector.count(severity)
    ]
    return ", ".join(parts) or "no changes"


def _bump(connector: ConnectorDiff) -> str:
    """``major (0.1.0 -> 0.2.0; declared 0.1.0 is lower)``."""
    if connector.old_file is None:
        return f"new connector (version {connector.new_version})"
    if connector.new_file is None:
        return "removed"
    bump = connector.suggested_bump
    if bump is Bump.NONE:
        return "none"
    text = f"{bump.value} ({connector.old_version} -> {connector.suggested_version}"
    if connector.version_ok is False:
        text += f"; declared {connector.new_version} is lower"
    return text + ")"


def _files(connector: ConnectorDiff) -> str:
    return f"{connector.old_file or '(none)'} -> {connector.new_file or '(none)'}"


def _verdict_line(report: Report, fail_on: str) -> str:
    breaking = sum(1 for c in report.changes if c.worst is Severity.BREAKING)
    total = len(report.changes)
    verdict = "fails" if report.fails(fail_on) else "passes"
    return (
        f"{len(report.connectors)} connector{_s(len(report.connectors))}, {total} change{_s(total)}"
        f" ({breaking} breaking); --fail-on {fail_on}: {verdict}"
    )


# -- text -----------------------------------------------------------------------------------


def text(report: Report, fail_on: str) -> str:
    """One block per connector; each change on two lines (verdict, then what changed).
    Styled with ANSI colours: ``click.echo`` drops them when the output is not a terminal."""
    lines: list[str] = []
    for connector in report.connectors:
        heading = click.style(connector.name, bold=True)
        lines.append(f"{heading}: {_counts(connector)}; suggested bump: {_bump(connector)}")
        lines.append(f"  {_files(connector)}")
        for change in connector.changes:
            severity = change.worst
            tag = click.style(
                f"{severity.value:<12}", fg=_COLOURS[severity], bold=severity is Severity.BREAKING
            )
            where = _where(change)
            lines.append(f"  {tag} {change.rule.id}  [{_verdicts(change)}]  {where}".rstrip())
            lines.append(f"      {change.path}: {change.message}")
        lines.append("")
    lines.append(_verdict_line(report, fail_on))
    return "\n".join(lines)


# -- markdown -------------------------------------------------------------------------------


def markdown(report: Report, fail_on: str) -> str:
    out = ["## Connector changes", ""]
    out.append("| connector | suggested bump | breaking | non-breaking | docs |")
    out.append("|---|---|---:|---:|---:|")
    for c in report.connectors:
        out.append(
            f"| `{_md(c.name)}` | {_md(_bump(c))} | {c.count(Severity.BREAKING)} "
            f"| {c.count(Severity.NON_BREAKING)} | {c.count(Severity.DOCS)} |"
        )
    for c in report.connectors:
        if not c.changes:
            continue  # the summary table says so
        out += ["", f"### `{_md(c.name)}`", "", f"{_md(_files(c))}", ""]
        out.append("| | wire | python | rule | where | change |")
        out.append("|---|---|---|---|---|---|")
        for change in c.changes:
            wire = change.severity(Level.WIRE)
            python = change.severity(Level.PYTHON)
            mark = "**breaking**" if change.worst is Severity.BREAKING else change.worst.value
            where = f"`{_md(change.path)}` {_where(change)}".rstrip()
            out.append(
                f"| {mark} | {wire.value if wire else '-'} | {python.value if python else '-'} "
                f"| `{change.rule.id}` | {where} | {_md(change.message)} |"
            )
    out += ["", f"<sub>ruleset {report.ruleset} · {_md(_verdict_line(report, fail_on))}</sub>"]
    return "\n".join(out)


def _md(value: str) -> str:
    """Text safe inside a Markdown table cell: no pipes, no HTML tags, one line."""
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace("|", "\\|")
        .replace("\r", " ")
        .replace("\n", " ")
    )


# -- json -----------------------------------------------------------------------------------


def as_json(report: Report, fail_on: str) -> str:
    return json.dumps(report_data(report, fail_on), indent=2)


def report_data(report: Report, fail_on: str) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "ruleset": report.ruleset,
        "fail_on": fail_on,
        "failed": report.fails(fail_on),
        "connectors": [
            {
                "name": c.name,
                "old_file": c.old_file,
                "new_file": c.new_file,
                "old_version": c.old_version,
                "new_version": c.new_version,
                "suggested_bump": c.suggested_bump.value,
                "suggested_version": c.suggested_version,
                "version_ok": c.version_ok,
                "changes": [
                    {
                        "rule": change.rule.id,
                        "level": level.value,
                        "severity": severity.value,
                        "direction": change.direction.value if change.direction else None,
                        "path": change.path,
                        "message": change.message,
                        "old_line": change.old_line,
                        "new_line": change.new_line,
                    }
                    for change in c.changes
                    for level, severity in change.levels
                ],
            }
            for c in report.connectors
        ],
    }


# -- github ---------------------------------------------------------------------------------


def github(report: Report, fail_on: str) -> str:
    """``::error file=F,line=N,title=T::message`` per change, on the new spec's lines; what
    was removed is pointed at through its nearest surviving ancestor (or line 1)."""
    lines = []
    for connector in report.connectors:
        for change in connector.changes:
            kind = _ANNOTATION[change.worst]
            title = f"{change.rule.id} ({_verdicts(change)})"
            props = [f"title={_property(title)}"]
            if connector.new_file is not None:
                line = change.new_line or change.anchor_line or 1
                props = [f"file={_property(connector.new_file)}", f"line={line}"] + props
            message = f"{connector.name}: {change.path}: {change.message}"
            lines.append(f"::{kind} {','.join(props)}::{_data(message)}")
    lines.append(f"::notice title=connector-builder diff::{_data(_verdict_line(report, fail_on))}")
    return "\n".join(lines)


def _data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(value: str) -> str:
    return _data(value).replace(":", "%3A").replace(",", "%2C")


def _s(count: int) -> str:
    return "" if count == 1 else "s"
