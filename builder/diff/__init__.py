"""Classifying spec changes as breaking, non-breaking or docs-only, on the wire and in the
Python API. ``connector-builder diff`` is the command; :func:`diff_connectors` the function.

Modules: ``rules`` (the versioned rule tables), ``model`` (changes and reports),
``compare`` (connectors and operations), ``kinds`` (a data kind's block, record and
named queries), ``llm`` (the LLM role and pricing), ``values`` (schemas on the wire),
``python_api`` and ``annotations`` (what generated code exposes), ``collector`` (placing
changes on spec lines), ``sources`` (files, directories, git), ``render`` (output formats),
``cli`` (the command), ``api`` (entry points).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.diff.api import diff_connectors, diff_pairs
    from builder.diff.model import Change, ConnectorDiff, Report
    from builder.diff.rules import RULESET_VERSION

__all__ = ["RULESET_VERSION", "Change", "ConnectorDiff", "Report", "diff_connectors", "diff_pairs"]

_WHERE = {
    "diff_connectors": "builder.diff.api",
    "diff_pairs": "builder.diff.api",
    "Change": "builder.diff.model",
    "ConnectorDiff": "builder.diff.model",
    "Report": "builder.diff.model",
    "RULESET_VERSION": "builder.diff.rules",
}


def __getattr__(name: str) -> Any:
    # Loaded on first use: `connector-builder --help` should not import the spec models.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
