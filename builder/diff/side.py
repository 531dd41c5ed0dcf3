"""One version of a connector as the comparers see it: the loaded spec, plus what they look
up in it, each worked out once per side (and possibly in another process, see
:mod:`builder.diff.parallel`) instead of once per question asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import PurePath

from builder.diagnostics import Diagnostic
from builder.diff import python_api, usage
from builder.diff.collector import SpecPath
from builder.diff.rules import Direction
from builder.ir import Connector, OperationIR, build
from builder.spec.loader import LoadedSpec, Warnings


class Side(LoadedSpec):
    """A :class:`LoadedSpec` (it is one: ``spec``, ``document``, ``warnings``) with the IR
    and the indexes the comparison reads. Each is computed on first use; :meth:`prepare`
    computes them all, so that a worker can hand back a side ready to compare (a side
    pickles with whatever it has computed)."""

    @classmethod
    def of(cls, loaded: LoadedSpec) -> Side:
        return loaded if isinstance(loaded, Side) else cls(*loaded)

    def __getnewargs__(self) -> tuple[object, ...]:
        # Pickled, to go to another process: the warnings as a list of those known now.
        return self.spec, self.document, settled(self.warnings)

    @cached_property
    def ir(self) -> Connector:
        # Only what code using the package sees: no samples, examples or test fixtures.
        return build(self.spec, PurePath(self.document.file).name, rendering=False)

    @cached_property
    def operations_ir(self) -> dict[str, OperationIR]:
        return {op.name: op for op in self.ir.operations}

    @cached_property
    def schema_directions(self) -> dict[str, Direction]:
        return usage.schema_directions(self.spec)

    @cached_property
    def object_bodies(self) -> set[str]:
        return usage.object_bodies(self.spec)

    @cached_property
    def model_places(self) -> dict[str, SpecPath]:
        return python_api.model_places(self.spec, self.ir)

    @cached_property
    def model_directions(self) -> dict[str, Direction]:
        return python_api.model_directions(self.ir)

    def prepare(self) -> Side:
        """Compute everything the comparison reads (for an HTTP connector: the rest is
        cheap and computed when needed)."""
        for name in (
            "ir",
            "operations_ir",
            "schema_directions",
            "object_bodies",
            "model_places",
            "model_directions",
        ):
            getattr(self, name)
        return self


def settled(warnings: Sequence[Diagnostic]) -> list[Diagnostic]:
    """The warnings known now. The loader's may end with findings still to come (an
    OpenAPI document's validation, computed on demand, see builder.openapi.validate);
    those are left out, not computed: the diff reports no warnings (the loader itself
    reads them when there are errors, and reports them with the errors)."""
    return warnings.found if isinstance(warnings, Warnings) else list(warnings)


__all__ = ["Side", "settled"]
