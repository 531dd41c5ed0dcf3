"""openapi-spec-validator, with findings turned into located warnings and cached by hash.

A finding of the validator does not stop generation: where the converter can still map a
construct faithfully it is a warning with its JSON pointer and line; where it cannot, the
converter itself reports an error (or the operation must be skipped with a reason).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

from builder.diagnostics import Diagnostic
from builder.forked import Pending
from builder.openapi.document import OpenAPIDocument

MAX_FINDINGS = 50
CACHE_NAME = "openapi-validation-2"  # a new name when findings change shape


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "connector-builder" / CACHE_NAME


def validate(document: OpenAPIDocument, *, background: bool = False) -> Findings:
    """Warnings for what the validator finds (at most ``MAX_FINDINGS``): from the cache, or
    computed when first read — with ``background``, in a child process from now on."""
    return Findings(document, background=background)


class Findings(Sequence[Diagnostic]):
    """The validator's findings on one document, as located warnings.

    On a cache miss the validator runs when the findings are first read; with
    ``background``, in a child process forked at once (it has the parsed document already),
    so that converting, building and rendering go on beside it on another core. Either way
    the findings are cached by the document's hash once read.
    """

    def __init__(self, document: OpenAPIDocument, *, background: bool = False) -> None:
        self._document = document
        self._cache = _cache_dir() / f"{document.digest}.json"
        self._items: list[Diagnostic] | None = None
        self._pending: Pending[list[tuple[str, str]]] | _Later | None = None
        try:
            self._found(json.loads(self._cache.read_text("utf-8")))
        except (OSError, ValueError):
            args = (document.data, document.major, _uri(document))
            self._pending = Pending(_run, *args) if background else _Later(_run, *args)

    def _found(self, findings: list[tuple[str, str]]) -> list[Diagnostic]:
        self._items = [
            self._document.diagnostic(pointer, f"OpenAPI validation: {message}", "warning")
            for pointer, message in findings
        ]
        return self._items

    def _resolved(self) -> list[Diagnostic]:
        if self._items is not None:
            return self._items
        assert self._pending is not None
        findings, self._pending = self._pending.result(), None
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            self._cache.write_text(json.dumps(findings), "utf-8")
        except OSError:
            pass  # a read-only home: validate again next time
        return self._found(findings)

    @overload
    def __getitem__(self, index: int) -> Diagnostic: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Diagnostic]: ...

    def __getitem__(self, index: int | slice) -> Diagnostic | Sequence[Diagnostic]:
        return self._resolved()[index]

    def __len__(self) -> int:
        return len(self._resolved())


class _Later:
    """The validation, run in this process when its result is asked for."""

    def __init__(self, fn: Callable[..., list[tuple[str, str]]], *args: object) -> None:
        self._fn, self._args = fn, args

    def result(self) -> list[tuple[str, str]]:
        return self._fn(*self._args)


def _uri(document: OpenAPIDocument) -> str:
    return document.path.resolve().as_uri()


def _run(data: dict[str, Any], major: str, base_uri: str = "") -> list[tuple[str, str]]:
    """The findings (pointer, message); ``base_uri``: where the document is, so that
    references to other files resolve."""
    findings: list[tuple[str, str]] = []
    try:
        for error in _validator_class(major, data)(data, base_uri=base_uri).iter_errors():
            pointer = "#/" + "/".join(
                str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path
            )
            message = str(error.message)
            if len(message) > 300:
                message = message[:300] + "…"
            findings.append((pointer, message))
            if len(findings) >= MAX_FINDINGS:
                break
    except Exception as exc:  # the validator itself failed on an odd document
        findings.append(
            ("#", f"the validator could not check this document: {type(exc).__name__}: {exc}")
        )
    return findings


def _validator_class(major: str, data: dict[str, Any]) -> Any:
    from openapi_spec_validator import (
        OpenAPIV2SpecValidator,
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
    )

    _quicker_subscriptable_check()
    base = {"2.0": OpenAPIV2SpecValidator, "3.1": OpenAPIV31SpecValidator}.get(
        major, OpenAPIV30SpecValidator
    )
    schemas = _with_id_sets(base.keyword_validators["schema"])
    if major == "3.1":

        class Schemas31(schemas):  # type: ignore[misc,valid-type]
            """Each schema of the document checked against the OpenAPI 3.1 dialect by
            jsonschema-rs (the Python checker builds a validator per schema: 3 s of the
            OpenAI document), and its findings located in the document, not in the schema."""

            def _get_schema_checker(self, schema: Any, schema_value: Any) -> Any:
                checker = super()._get_schema_checker(schema, schema_value)
                dialect = self._get_schema_dialect_id(schema, schema_value)
                location = _followed(data, schema.parts)
                return functools.partial(_check_schema, checker, dialect, location)

        schemas = Schemas31

    class Validator(base):  # type: ignore[misc,valid-type]
        keyword_validators = {
            **base.keyword_validators,
            "schema": schemas,
            "default": _located_defaults(base.keyword_validators["default"], data),
        }

    return Validator


class _SubscriptableCheck(type):
    """``isinstance(x, Subscriptable)`` answered as Python 3.11's runtime protocol check
    answers it, from the type, worked out once per type: the protocol's own check lists its
    members anew each time (0.2 s of the OpenAI document: 38,000 checks of a few types).

    By type: each member is defined by the first class of the type's MRO that names it,
    and not as None. Where the type says no and the object has its own ``__dict__`` (which
    could hold the methods), the protocol itself is asked."""

    _members = ("__contains__", "__getitem__", "__len__")
    _known: dict[type, bool] = {}
    _protocol: Any = None

    def __instancecheck__(cls, instance: object) -> bool:
        kind = type(instance)
        found = cls._known.get(kind)
        if found is None:
            found = cls._known[kind] = all(_defined(kind, name) for name in cls._members)
        if not found and cls._protocol is not None and hasattr(instance, "__dict__"):
            return isinstance(instance, cls._protocol)
        return found


def _defined(kind: type, name: str) -> bool:
    for base in kind.__mro__:
        if name in base.__dict__:
            return base.__dict__[name] is not None
    return False


def _quicker_subscriptable_check() -> None:
    """Give pathable's node accessor (under openapi-spec-validator) the check above, when
    its ``Subscriptable`` is still the protocol with exactly those members."""
    try:
        from pathable import accessors
    except ImportError:
        return
    protocol = getattr(accessors, "Subscriptable", None)
    members = getattr(protocol, "__protocol_attrs__", None) or _protocol_members(protocol)
    if getattr(protocol, "_is_runtime_protocol", False) and set(members) == set(
        _SubscriptableCheck._members
    ):
        quick = _SubscriptableCheck("Subscriptable", (), {"_protocol": protocol})
        setattr(accessors, "Subscriptable", quick)  # noqa: B010 - not re-exported


def _protocol_members(protocol: Any) -> set[str]:
    from typing import _get_protocol_attrs  # type: ignore[attr-defined]

    try:
        return set(_get_protocol_attrs(protocol))
    except Exception:  # noqa: BLE001 - not a protocol: leave it alone
        return set()


class _IdList(list[int]):
    """The validator's record of the schemas it has seen (a list it appends to and asks
    ``in``), with a set beside it: a list's ``in`` made every schema cost as much as the
    schemas before it (0.6 s of the OpenAI document's 1.4 s)."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        super().__init__()
        self._ids: set[int] = set()

    def append(self, schema_id: int) -> None:
        super().append(schema_id)
        self._ids.add(schema_id)

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._ids


def _with_id_sets(schema_validator: type[Any]) -> type[Any]:
    """``schema_validator`` keeping its seen-schema records in :class:`_IdList`s."""

    class WithIdSets(schema_validator):  # type: ignore[misc]
        def __init__(self, registry: Any) -> None:
            super().__init__(registry)
            self.visited_schema_ids = _IdList()
            self.meta_checked_schema_ids = _IdList()

    return WithIdSets


def _located_defaults(value_validator: type[Any], data: Any) -> type[Any]:
    """``value_validator`` (which checks a schema's or a parameter's ``default`` against
    its schema) with its findings located at that ``default`` in the document: it reports
    them relative to the value (``#/``, line 1)."""

    class LocatedDefaults(value_validator):  # type: ignore[misc]
        def __call__(self, schema: Any, value: Any) -> Any:
            location = (*_followed(data, schema.parts), "default")
            for error in super().__call__(schema, value):
                error.path.extendleft(reversed(location))
                yield error

    return LocatedDefaults


def _check_schema(checker: Any, dialect: str, location: tuple[str, ...], value: Any) -> None:
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    fast = _dialect_validator(dialect)
    try:
        if fast is None:
            checker(value)
            return
        error = next(iter(fast.iter_errors(value)), None)
        if error is not None:
            raise SchemaError(error.message, path=list(error.instance_path))
    except SchemaError as exc:
        exc.path.extendleft(reversed(location))  # where the schema is in the document
        raise


def _followed(data: Any, parts: tuple[str, ...]) -> tuple[str, ...]:
    """Where the schema reached by ``parts`` is written: local ``$ref``s followed, so a
    finding points at the schema itself rather than at a place that refers to it."""
    location: list[str] = []
    node = data
    for part in [*parts, None]:
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 32:
            ref: str = node["$ref"]
            if not ref.startswith("#/"):
                break
            location = [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
            node = data
            for step in location:
                node = node.get(step) if isinstance(node, dict) else None
            seen += 1
        if part is None:
            break
        location.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and str(part).isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = None
    return tuple(location)


@functools.cache
def _dialect_validator(dialect: str) -> Any:
    """jsonschema-rs for the OpenAPI 3.1 base dialect, with the dialect's own schemas
    (shipped with openapi-schema-validator); None: no jsonschema-rs, or another dialect."""
    from openapi_schema_validator._dialects import OAS31_BASE_DIALECT_ID

    if dialect != OAS31_BASE_DIALECT_ID:
        return None
    try:
        import jsonschema_rs
    except ImportError:
        return None
    from importlib.resources import files

    resources: list[tuple[str, Any]] = []
    folders = [files("openapi_schema_validator").joinpath("schemas")]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
                continue
            try:
                schema = json.loads(entry.read_text("utf-8"))
            except ValueError:
                continue
            if isinstance(schema, dict) and isinstance(schema.get("$id"), str):
                resources.append((schema["$id"], schema))
    by_id = dict(resources)
    return jsonschema_rs.validator_for(
        by_id[OAS31_BASE_DIALECT_ID],
        registry=jsonschema_rs.Registry(resources),
        validate_formats=True,
    )
