"""The diff's entry points for code: two loaded specs in, a :class:`Report` out.

Any loader that produces a :class:`~builder.spec.loader.LoadedSpec` (a spec model plus a
document that can place spec paths on lines) plugs in here, an OpenAPI importer included.
"""

from __future__ import annotations

from collections.abc import Iterable

from builder.diff.compare import compare_connectors
from builder.diff.model import Report
from builder.diff.rules import RULESET_VERSION, RULESETS
from builder.spec.loader import LoadedSpec


def diff_connectors(old: LoadedSpec, new: LoadedSpec, *, ruleset: int = RULESET_VERSION) -> Report:
    """Every change from ``old`` to ``new`` (two versions of one connector)."""
    return diff_pairs([(old, new)], ruleset=ruleset)


def diff_pairs(
    pairs: Iterable[tuple[LoadedSpec | None, LoadedSpec | None]],
    *,
    ruleset: int = RULESET_VERSION,
) -> Report:
    """A report over many connectors; None on one side means added or removed."""
    rules = RULESETS[ruleset]
    return Report(ruleset, [compare_connectors(old, new, rules) for old, new in pairs])
