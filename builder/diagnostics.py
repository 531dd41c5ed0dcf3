"""Located problems in input files: ``FILE:LINE:COL: path.to.field: message``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        kind = "warning: " if self.severity == "warning" else ""
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{kind}{self.message}"


class InputError(Exception):
    """Bad input: one or more located errors (and any warnings found on the way)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def dotted(path: tuple[object, ...]) -> str:
    """``('operations', 'list', 'params', 0)`` -> ``operations.list.params[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not text.replace("_", "a").replace("-", "a").isalnum():
                text = repr(text)
            out += f".{text}" if out else text
    return out
