"""The diff's entry points for code: two loaded specs in, a :class:`Report` out.

Any loader that produces a :class:`~builder.spec.loader.LoadedSpec` (a spec model plus a
document that can place spec paths on lines) plugs in here, an OpenAPI importer included.
"""

from __future__ import annotations

from collections.abc import Iterable

from builder.diagnostics import Diagnostic, InputError
from builder.diff.compare import compare_connectors
from builder.diff.model import Report
from builder.diff.rules import JUDGED_SINCE, RULESET_VERSION, RULESETS, Ruleset
from builder.gc_pause import collection_paused
from builder.spec.loader import LoadedSpec


def diff_connectors(old: LoadedSpec, new: LoadedSpec, *, ruleset: int = RULESET_VERSION) -> Report:
    """Every change from ``old`` to ``new`` (two versions of one connector)."""
    return diff_pairs([(old, new)], ruleset=ruleset)


def diff_pairs(
    pairs: Iterable[tuple[LoadedSpec | None, LoadedSpec | None]],
    *,
    ruleset: int = RULESET_VERSION,
) -> Report:
    """A report over many connectors; None on one side means added or removed.

    Raises :class:`~builder.diagnostics.InputError` when ``ruleset`` predates a spec
    language feature that changed (see :func:`unjudged`).
    """
    rules = RULESETS[ruleset]
    pairs = list(pairs)
    problems = [d for old, new in pairs for d in unjudged(old, new, rules)]
    if problems:
        raise InputError(problems)
    with collection_paused():
        return Report(ruleset, [compare_connectors(old, new, rules) for old, new in pairs])


def unjudged(old: LoadedSpec | None, new: LoadedSpec | None, ruleset: Ruleset) -> list[Diagnostic]:
    """Changes to spec language features that ``ruleset`` predates, each as an error at
    the feature's place in the new spec: such a ruleset has no rules for them, and a
    pinned CI check must not pass them unseen. Adding or removing a whole connector is
    judged by every ruleset."""
    if old is None or new is None:
        return []
    found: list[tuple[tuple[str, ...], str, str]] = []  # (path, feature, what)
    a, b = old.spec, new.spec
    if a.kind != "http" or b.kind != "http":
        kind = b.kind if b.kind != "http" else a.kind
        found.append((("kind",), "kind", f"a connector of kind {kind}"))
    else:
        if a.roles.llm != b.roles.llm:
            found.append((("roles", "llm"), "roles.llm", "the LLM role (`roles.llm`)"))
        if a.pricing != b.pricing:
            found.append((("pricing",), "pricing", "`pricing`"))
    if not found or a.model_dump_json() == b.model_dump_json():
        return []
    problems = []
    for path, feature, what in found:
        since = JUDGED_SINCE[feature]
        if since <= ruleset.version:
            continue
        line, col = new.document.position(path, key=True)
        message = (
            f"ruleset {ruleset.version} cannot judge changes to {what}: they are judged from "
            f"ruleset {since} on (--ruleset {since})"
        )
        problems.append(Diagnostic(new.document.file, line, col, ".".join(path), message))
    return problems
