"""Load a spec file: YAML -> unknown-key check -> pydantic -> semantic checks.

Every problem found on the way is collected with its position; the caller gets either a
valid :class:`Spec` or an :class:`InputError` listing all of them at once.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from builder.diagnostics import Diagnostic, InputError
from builder.gc_pause import collection_paused
from builder.spec.checks import check_spec
from builder.spec.models import Spec
from builder.spec.yamlio import Document, Path, load_yaml

__all__ = ["LoadedSpec", "load_spec", "load_spec_text"]

MAX_SPEC_BYTES = 20 * 1024 * 1024


class Warnings(Sequence[Diagnostic]):
    """A spec's warnings: those found while loading, then ``later`` ones — read only when
    the warnings are, so work that produces them can go on beside generation."""

    def __init__(self, found: list[Diagnostic], later: Sequence[Diagnostic] = ()) -> None:
        self._found = found
        self._later = later

    @typing.overload
    def __getitem__(self, index: int) -> Diagnostic: ...

    @typing.overload
    def __getitem__(self, index: slice) -> Sequence[Diagnostic]: ...

    def __getitem__(self, index: int | slice) -> Diagnostic | Sequence[Diagnostic]:
        return [*self._found, *self._later][index]

    def __len__(self) -> int:
        return len(self._found) + len(self._later)

    def __iter__(self) -> Iterator[Diagnostic]:
        yield from self._found
        yield from self._later

    @property
    def found(self) -> list[Diagnostic]:
        """The warnings found while loading, without waiting for the later ones."""
        return list(self._found)

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so not hashable either


class LoadedSpec(typing.NamedTuple):
    spec: Spec
    document: Document
    warnings: Sequence[Diagnostic]


def load_spec(path: str | FilePath, *, background: bool = False) -> LoadedSpec:
    """Read and validate the spec file at ``path``. An OpenAPI document's validation by
    openapi-spec-validator gives warnings only: it runs when they are read, or — with
    ``background`` — in a child process from now on (see :mod:`builder.forked`)."""
    file = str(path)
    try:
        raw = FilePath(path).read_bytes()
    except FileNotFoundError:
        raise InputError([Diagnostic(file, 1, 1, "", "no such file")]) from None
    except IsADirectoryError:
        raise InputError([Diagnostic(file, 1, 1, "", "is a directory, not a spec file")]) from None
    except OSError as exc:
        raise InputError([Diagnostic(file, 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise InputError([Diagnostic(file, 1, 1, "", f"larger than {MAX_SPEC_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError([Diagnostic(file, line, 1, "", "not valid UTF-8")]) from None
    return load_spec_text(text, file, background=background)


def load_spec_text(text: str, file: str, *, background: bool = False) -> LoadedSpec:
    # Loading builds many small objects and frees few: a full garbage collection in the
    # middle walks them all for nothing (a quarter of the time on large specs).
    with collection_paused():
        return _load_spec_text(text, file, background)


def _load_spec_text(text: str, file: str, background: bool) -> LoadedSpec:
    doc = load_yaml(text, file)
    if doc.data is None:
        raise InputError([Diagnostic(file, 1, 1, "", "the file is empty: expected a spec mapping")])
    if not isinstance(doc.data, dict):
        raise InputError(
            [doc.diagnostic((), f"a spec is a mapping of keys to values, not a {_kind(doc.data)}")]
        )
    problems: list[Diagnostic] = []
    later: Sequence[Diagnostic] = ()  # warnings still being found (an OpenAPI validation)
    # Unknown keys are looked for in what the user wrote (where positions are known); an
    # OpenAPI source's converted part is made of known keys only.
    data = _strip_unknown(Spec, doc.data, (), doc, problems)
    if isinstance(data.get("source"), dict) and "openapi" in data["source"]:
        from builder.openapi.overlay import apply_source

        data, later = apply_source(doc, data, background=background)
    spec: Spec | None = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_from_validation(exc, doc))
    if spec is not None:
        problems.extend(check_spec(spec, doc))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise InputError(problems + list(later))
    assert spec is not None
    return LoadedSpec(spec, doc, Warnings([p for p in problems if p.severity == "warning"], later))


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


# -- unknown keys -----------------------------------------------------------------------


def _field_names(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _models_in(annotation: Any) -> list[Any]:
    """The flattened members of a (possibly Annotated / Optional) annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_models_in(arg))
        return out
    return [annotation]


def _strip_unknown(
    model: type[BaseModel], data: Any, path: Path, doc: Document, problems: list[Diagnostic]
) -> Any:
    """Report unknown keys (with a suggestion) and return the data without them."""
    if not isinstance(data, dict):
        return data
    fields = _field_names(model)
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; expected one of: {', '.join(sorted(fields))}"
            )
            problems.append(doc.diagnostic(path + (key,), f"unknown key {key!r}{hint}", key=True))
            continue
        clean[key] = _strip_value(fields[key], value, path + (key,), doc, problems)
    return clean


def _strip_value(
    annotation: Any, value: Any, path: Path, doc: Document, problems: list[Diagnostic]
) -> Any:
    for member in _models_in(annotation):
        origin = typing.get_origin(member)
        if origin is dict and isinstance(value, dict):
            inner = typing.get_args(member)[1]
            return {k: _strip_value(inner, v, path + (k,), doc, problems) for k, v in value.items()}
        if origin is list and isinstance(value, list):
            inner = typing.get_args(member)[0]
            return [_strip_value(inner, v, path + (i,), doc, problems) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    candidates = [
        m for m in _models_in(annotation) if isinstance(m, type) and issubclass(m, BaseModel)
    ]
    if len(candidates) > 1:  # a tagged union: pick the member whose `type` literal matches
        tagged = [
            m
            for m in candidates
            if value.get("type") in typing.get_args(m.model_fields["type"].annotation)
        ]
        if len(tagged) != 1:
            return value  # pydantic reports the bad tag
        candidates = tagged
    if candidates:
        return _strip_unknown(candidates[0], value, path, doc, problems)
    return value


# -- pydantic errors -> located diagnostics ---------------------------------------------


def _from_validation(exc: ValidationError, doc: Document) -> list[Diagnostic]:
    by_place: dict[tuple[Path, bool], list[str]] = {}
    for error in exc.errors(include_url=False):
        path, rest = _real_path(doc.data, error["loc"])
        kind = error["type"]
        if kind == "missing":
            key = error["loc"][-1] if error["loc"] else "?"
            message, at_key = f"missing required key {key!r}", True
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            tags = error.get("ctx", {}).get("expected_tags", "")
            message, at_key = f"`type` must be one of {tags}", False
        else:
            message, at_key = _clean(error["msg"]), False
        by_place.setdefault((path, at_key and kind != "missing"), []).append(message)
    out = []
    for (path, at_key), messages in by_place.items():
        unique = list(dict.fromkeys(messages))
        out.append(
            doc.diagnostic(path, " or ".join(unique) if len(unique) <= 3 else unique[0], key=at_key)
        )
    return out


def _real_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path, list[Any]]:
    """Follow ``loc`` through the raw data, dropping union-member names pydantic adds."""
    path: list[str | int] = []
    rest: list[Any] = []
    current = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            path.append(part)
            current = current[part]
        else:
            rest.append(part)
    return tuple(path), [
        r for r in rest if isinstance(r, str) and not r[:1].isupper() and "[" not in r
    ]


def _clean(message: str) -> str:
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    message = message.replace(", unable to parse string as an integer", "")
    return message[:1].lower() + message[1:]
