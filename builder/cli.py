"""The ``connector-builder`` command line.

Exit status, the same for every command: 0 ok (warnings go to stderr), 1 ``check`` found
drift, 2 bad input (every problem listed as FILE:LINE:COL: path: message), 3 a bug in
connector-builder itself (reported without a traceback unless CONNECTOR_BUILDER_DEBUG=1).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from builder import __version__
from builder.diagnostics import Diagnostic, InputError

OK, DRIFT, BAD_INPUT, INTERNAL = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


def _warn(diagnostics: Iterable[Diagnostic]) -> None:
    for d in diagnostics:
        click.echo(str(d), err=True)


def guarded(fn: F) -> F:
    """Turn bad input into located messages and exit 2; never show a traceback for it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            _warn(exc.diagnostics)
            errors = len(exc.errors)
            click.echo(
                f"{errors} error{'s' if errors != 1 else ''}; nothing was written.", err=True
            )
            sys.exit(BAD_INPUT)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("CONNECTOR_BUILDER_DEBUG"):
                raise
            click.echo(f"connector-builder: internal error: {type(exc).__name__}: {exc}", err=True)
            click.echo(
                "This is a bug in connector-builder; "
                "rerun with CONNECTOR_BUILDER_DEBUG=1 for details.",
                err=True,
            )
            sys.exit(INTERNAL)

    return wrapper  # type: ignore[return-value]


def _paths(paths: tuple[str, ...]) -> list[str]:
    return list(paths) if paths else ["specs"]


PATHS = click.argument("paths", nargs=-1, type=click.Path())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="connector-builder")
def main() -> None:
    """Turn declarative service specs into typed, tested, documented Python connectors.

    PATH arguments may be spec files or directories of specs; with none, ./specs is used.
    Exit status: 0 ok, 1 check found drift, 2 bad input, 3 internal error.
    """


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default="specs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write NAME.yaml.",
)
@guarded
def new(name: str, directory: str) -> None:
    """Write a commented skeleton spec for a new connector NAME."""
    from builder.naming import is_safe_identifier
    from builder.render import environment

    if not is_safe_identifier(name) or name != name.lower():
        raise InputError(
            [
                Diagnostic(
                    "<argument>",
                    1,
                    1,
                    "name",
                    f"{name!r} must be lower_snake_case (it becomes connectors.{name})",
                )
            ]
        )
    target = Path(directory) / f"{name}.yaml"
    if target.exists():
        raise InputError([Diagnostic(str(target), 1, 1, "", "already exists; not overwritten")])
    text = (
        environment()
        .get_template("new_spec.yaml.j2")
        .render(name=name, title=name.replace("_", " ").title())
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as handle:
        handle.write(text)
    click.echo(f"wrote {target}; edit it, then run: connector-builder generate {target}")


@main.command()
@PATHS
@guarded
def validate(paths: tuple[str, ...]) -> None:
    """Check specs and report every problem; writes nothing."""
    from builder.generate import load_all

    selected = load_all(_paths(paths))
    for item in selected:
        _warn(item.loaded.warnings)
    click.echo(f"{len(selected)} spec{'s' if len(selected) != 1 else ''} valid.")


@main.command()
@PATHS
@click.option(
    "--out",
    default="generated",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes OUT/connectors/<name>/.",
)
@click.option(
    "--force", is_flag=True, help="Regenerate even packages whose content hash is unchanged."
)
@guarded
def generate(paths: tuple[str, ...], out: str, force: bool) -> None:
    """Validate every spec, then generate each connector package (atomically)."""
    from builder.generate import discover
    from builder.generate import generate as run

    targets = _paths(paths)
    count = len(discover(targets))
    if count > 5 and sys.stderr.isatty():
        with click.progressbar(length=count, label="generating", file=sys.stderr) as bar:
            outcome = run(targets, Path(out), force=force, progress=lambda _: bar.update(1))
    else:
        outcome = run(targets, Path(out), force=force)
    _warn(outcome.warnings)
    for name in outcome.written:
        click.echo(f"generated {Path(out) / 'connectors' / name}")
    if outcome.skipped:
        click.echo(f"unchanged: {', '.join(outcome.skipped)}")


@main.command()
@PATHS
@click.option(
    "--out",
    default="generated",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the generated packages are.",
)
@guarded
def check(paths: tuple[str, ...], out: str) -> None:
    """Exit 1 unless every spec is valid and OUT matches a fresh generation byte for byte."""
    from builder.generate import check as run

    drift = run(_paths(paths), Path(out))
    if not drift:
        click.echo("all generated packages are up to date.")
        return
    for item in drift:
        click.echo(f"{item.name}: {item.reason}")
        if item.diff:
            click.echo(item.diff)
    click.echo(
        f"{len(drift)} difference{'s' if len(drift) != 1 else ''}; "
        "run `connector-builder generate` to update.",
        err=True,
    )
    sys.exit(DRIFT)


@main.command("list")
@PATHS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@guarded
def list_(paths: tuple[str, ...], as_json: bool) -> None:
    """List connectors: kind, operations, roles and priced models."""
    from builder.generate import load_all

    rows: list[dict[str, Any]] = []
    for item in load_all(_paths(paths)):
        spec = item.loaded.spec
        roles = [r for r in ("source", "sink", "llm") if getattr(spec.roles, r) is not None]
        if spec.kind != "http":
            roles = ["source", "sink"] if spec.kind != "sentence_transformers" else ["embeddings"]
        ops = [n for n, op in spec.operations.items() if op.skip is None] + list(spec.queries)
        pricing = spec.pricing
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "title": spec.title,
                "operations": ops,
                "roles": roles,
                "priced_models": {
                    model: {"input": price.input, "output": price.output}
                    for model, price in pricing.models.items()
                }
                if pricing
                else {},
                "prices_as_of": pricing.as_of.isoformat() if pricing else None,
                "prices_source": pricing.source if pricing else None,
                # The price of every model not in priced_models (None: such a model costs None).
                "default_price": {"input": pricing.default.input, "output": pricing.default.output}
                if pricing and pricing.default
                else None,
                "spec": str(item.path),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    kind_width = max((len(r["kind"]) for r in rows), default=4)
    click.echo(f"{'name':<{width}}  {'kind':<{kind_width}}  ops  roles")
    for r in rows:
        click.echo(
            f"{r['name']:<{width}}  {r['kind']:<{kind_width}}  {len(r['operations']):>3}  "
            f"{', '.join(r['roles']) or '-'}"
        )
        pad = " " * (width + 2)
        if r["operations"]:
            click.echo(f"{pad}{', '.join(r['operations'])}")
        if r["prices_as_of"] is not None:
            prices = [
                f"{m} ${p['input']:g}/${p['output']:g}" for m, p in r["priced_models"].items()
            ]
            if r["default_price"] is not None:
                other = "any other model" if prices else "every model"
                d = r["default_price"]
                prices.append(f"{other} ${d['input']:g}/${d['output']:g}")
            click.echo(
                f"{pad}priced (USD per 1M tokens in/out, as of {r['prices_as_of']}, "
                f"from {r['prices_source']}): {', '.join(prices)}"
            )


@main.command("import-openapi")
@click.argument("document", type=click.Path())
@click.option("--name", required=True, help="The connector's name (lower_snake_case).")
@click.option(
    "--out",
    default="specs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the spec and the document's copy go.",
)
@guarded
def import_openapi(document: str, name: str, out: str) -> None:
    """Write a spec for an OpenAPI document (2.0, 3.0, 3.1), next to a copy of it."""
    from builder.openapi.importer import import_openapi as run

    spec, taken, skipped = run(Path(document), name, Path(out))
    click.echo(
        f"wrote {spec}: {taken} operations"
        + (f", {len(skipped)} skipped (listed under skip:)" if skipped else "")
    )
    click.echo(f"next: connector-builder generate {spec}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (for editors)."""
    from builder.spec.models import Spec

    document = Spec.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "connector-builder spec, version 1"
    click.echo(json.dumps(document, indent=2, sort_keys=True))


from builder.diff.cli import diff_command  # noqa: E402  (needs `main` defined above)

main.add_command(diff_command)

if __name__ == "__main__":  # pragma: no cover
    main()
