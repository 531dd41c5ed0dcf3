"""Comparing two versions of one connector: the client, its settings and behaviour, every
operation with its parameters and response, a data kind's block, record and named queries,
the schemas, the models, the roles (the LLM role included) and the prices.

Everything is compared by identity (names, wire names, method and path), never by
position in the file, so reordering or reformatting a spec changes nothing.
"""

from __future__ import annotations

from builder.diff import python_api
from builder.diff.client import ClientComparer
from builder.diff.collector import ChangeLog, SpecPath
from builder.diff.kinds import KindComparer
from builder.diff.llm import LlmComparer, compare_pricing
from builder.diff.model import ConnectorDiff
from builder.diff.operations import OperationComparer
from builder.diff.rules import Ruleset
from builder.diff.side import Side
from builder.diff.values import ValueComparer
from builder.spec.loader import LoadedSpec


def compare_connectors(
    old: LoadedSpec | None, new: LoadedSpec | None, ruleset: Ruleset
) -> ConnectorDiff:
    """The changes from ``old`` to ``new``; either may be None (a connector added or removed).
    A :class:`~builder.diff.side.Side` brings what it has computed already (its IR...)."""
    if old is not None and new is not None:
        # `==` (field by field, stopping at the first difference) settles the usual case,
        # two different specs, at once; equal ones must also have the same key order,
        # which can shape generated names.
        if old.spec == new.spec and old.spec.model_dump_json() == new.spec.model_dump_json():
            # The same meaning: nothing to compare, and no IR to build (the costly part
            # for large specs).
            return ConnectorDiff(
                new.spec.name,
                old.document.file,
                new.document.file,
                old.spec.version,
                new.spec.version,
            )
        return _Comparison(Side.of(old), Side.of(new), ruleset).run()
    if new is not None:
        log = ChangeLog(ruleset, None, new.document)
        log.add("connector-added", f"connector `{new.spec.name}` added", new=("name",))
        return ConnectorDiff(
            new.spec.name, None, new.document.file, None, new.spec.version, log.sorted()
        )
    if old is not None:
        log = ChangeLog(ruleset, old.document, None)
        log.add("connector-removed", f"connector `{old.spec.name}` removed", old=("name",))
        return ConnectorDiff(
            old.spec.name, old.document.file, None, old.spec.version, None, log.sorted()
        )
    raise ValueError("nothing to compare: both sides are missing")


class _Comparison:
    def __init__(self, old: Side, new: Side, ruleset: Ruleset) -> None:
        self.old_loaded, self.new_loaded = old, new
        self.old, self.new = old.spec, new.spec
        self.old_ir, self.new_ir = old.ir, new.ir
        self.log = ChangeLog(ruleset, old.document, new.document)
        self.values = ValueComparer(self.log, old.spec.schemas, new.spec.schemas)

    def run(self) -> ConnectorDiff:
        log, old, new, old_ir, new_ir = self.log, self.old, self.new, self.old_ir, self.new_ir
        ClientComparer(log, old, new, old_ir, new_ir).compare()
        python_api.compare_settings(log, old_ir, new_ir, old, new)
        renamed = OperationComparer(
            log, self.values, old, new, old_ir, new_ir, self.old_loaded, self.new_loaded
        ).compare()
        KindComparer(log, self.values, old, new, old_ir, new_ir).compare()
        self.schemas()
        a, b = self.old_loaded, self.new_loaded
        python_api.compare_models(
            log,
            old_ir,
            new_ir,
            old,
            new,
            request_models=a.object_bodies | b.object_bodies,
            places=(a.model_places, b.model_places),
            uses=(a.model_directions, b.model_directions),
        )
        python_api.compare_roles(log, old_ir, new_ir, renamed)
        LlmComparer(log, old.roles.llm, new.roles.llm, renamed).compare()
        compare_pricing(log, old.pricing, new.pricing)
        return ConnectorDiff(
            name=new.name,
            old_file=self.old_loaded.document.file,
            new_file=self.new_loaded.document.file,
            old_version=old.version,
            new_version=new.version,
            changes=log.sorted(),
        )

    def schemas(self) -> None:
        """Each named schema once, judged by how operations use it (on either side)."""
        old_uses, new_uses = self.old_loaded.schema_directions, self.new_loaded.schema_directions
        for name, old in self.old.schemas.items():
            new = self.new.schemas.get(name)
            if new is None:
                continue
            a, b = old_uses.get(name), new_uses.get(name)
            direction = a | b if a is not None and b is not None else a or b
            at: SpecPath = ("schemas", name)
            self.values.compare(old, new, at, at, direction)
