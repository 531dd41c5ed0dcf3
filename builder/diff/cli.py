"""``connector-builder diff``: review what a spec change does to the wire and the Python API."""

from __future__ import annotations

import sys

import click

from builder.diff import parallel  # noqa: F401  (notes how busy the machine is at the start)
from builder.diff.rules import RULESET_VERSION, RULESETS

FORMATS = ("text", "markdown", "json", "github")
FAIL_ON = ("breaking", "any", "none")
FOUND = 1  # exit status when changes at or above --fail-on were found


@click.command("diff")
@click.argument("specs", nargs=-1, type=click.Path(), metavar="[OLD NEW | PATH...]")
@click.option(
    "--base",
    metavar="GIT_REF",
    help="Compare the specs under PATHs (default: specs) with the same files at GIT_REF.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text (colour on a terminal), markdown (a PR comment), json, github (annotations).",
)
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON),
    default="breaking",
    show_default=True,
    help="Exit 1 when there are changes at or above this severity.",
)
@click.option(
    "--ruleset",
    type=click.Choice([str(v) for v in RULESETS]),
    default=str(RULESET_VERSION),
    show_default=True,
    help="The rule set (verdicts) to judge by; pin it in CI.",
)
@click.option(
    "--color/--no-color", default=None, help="Colour text output (default: on a terminal)."
)
def diff_command(
    specs: tuple[str, ...],
    base: str | None,
    output_format: str,
    fail_on: str,
    ruleset: str,
    color: bool | None,
) -> None:
    """Classify the changes between two versions of connector specs.

    \b
    connector-builder diff OLD NEW          two spec files (or two directories of specs)
    connector-builder diff --base REF [PATH...]
                                            the working tree's specs against git REF

    Every change is judged at two levels, the wire and the Python API, as breaking,
    non-breaking or docs. Exit status: 0 nothing at or above --fail-on, 1 something is,
    2 bad input.
    """
    # Imported here, not at module level: builder.cli imports this module to register it.
    from builder.cli import guarded

    if base is None and len(specs) != 2:
        raise click.UsageError("give two specs, OLD and NEW, or --base GIT_REF [PATH...]")
    guarded(_run)(specs, base, output_format, fail_on, int(ruleset), color)


def _run(
    specs: tuple[str, ...],
    base: str | None,
    output_format: str,
    fail_on: str,
    ruleset: int,
    color: bool | None,
) -> None:
    from builder.diff.api import diff_pairs
    from builder.diff.render import render
    from builder.diff.sources import file_pairs, git_pairs
    from builder.gc_pause import collection_paused

    # The command makes hundreds of thousands of objects that live until it ends, and
    # frees next to nothing on the way: a collection would walk them all to find nothing.
    # What is left at the end of a large diff is frozen, not walked again at exit.
    with collection_paused(freeze_above=50_000):
        if base is not None:
            pairs = git_pairs(base, specs or ("specs",))
        else:
            pairs = file_pairs(specs[0], specs[1])
        report = diff_pairs([(p.old, p.new) for p in pairs], ruleset=ruleset)
        output = render(report, output_format, fail_on=fail_on)
        failed = report.fails(fail_on)
        del pairs, report  # freed here, by reference counting, before anything is frozen
    click.echo(output, color=color)
    if failed:
        sys.exit(FOUND)
