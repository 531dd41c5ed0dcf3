"""Small compiled paths into decoded responses: ``choices.0.message.content``, ``data.*.embedding``.

Specs say where a provider keeps the text, the token counts or the vectors as such a path;
the runtime compiles each once and reads it from a dict/list tree or from pydantic models
(attribute access), so one mapping serves raw JSON and typed responses alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Path", "EventPaths"]

_MISSING = object()


def _step(value: Any, key: str | int) -> Any:
    if isinstance(key, int):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return value[key] if -len(value) <= key < len(value) else _MISSING
        return _MISSING
    if isinstance(value, Mapping):
        return value.get(key, _MISSING)
    if value is None:
        return _MISSING
    got = getattr(value, key, _MISSING)
    if got is _MISSING:
        # A model field whose JSON name is not a Python name (`type` -> `type_`), or an
        # undeclared field a model keeps (extra="allow") in model_extra.
        attribute = _attribute_for(type(value), key)
        if attribute is not None:
            return getattr(value, attribute, _MISSING)
        extra = getattr(value, "model_extra", None)
        if extra:
            got = extra.get(key, _MISSING)
    return got


_MODEL_CLASSES: dict[type, bool] = {}


def _is_model(cls: type) -> bool:
    """Whether instances keep their fields as attributes (pydantic models), cached."""
    found = _MODEL_CLASSES.get(cls)
    if found is None:
        found = _MODEL_CLASSES[cls] = hasattr(cls, "model_fields")
    return found


_ATTRIBUTES: dict[tuple[type, str], str | None] = {}


def _attribute_for(cls: type, json_name: str) -> str | None:
    """The attribute of a pydantic model class whose alias is ``json_name`` (cached)."""
    key = (cls, json_name)
    if key not in _ATTRIBUTES:
        fields = getattr(cls, "model_fields", None) or {}
        _ATTRIBUTES[key] = next(
            (name for name, info in fields.items() if getattr(info, "alias", None) == json_name),
            None,
        )
    return _ATTRIBUTES[key]


class Path:
    """A dotted path; an integer part indexes a list, ``*`` maps over one (once at most),
    skipping the items that lack the rest of the path."""

    __slots__ = ("text", "_head", "_tail", "_star")

    def __init__(self, text: str) -> None:
        parts: list[str | int] = [int(p) if p.lstrip("-").isdigit() else p for p in text.split(".")]
        if not text or any(p == "" for p in parts):
            raise ValueError(f"not a path: {text!r}")
        if parts.count("*") > 1:
            raise ValueError(f"a path maps over one list at most: {text!r}")
        self.text = text
        self._star = "*" in parts
        if self._star:
            at = parts.index("*")
            self._head, self._tail = tuple(parts[:at]), tuple(parts[at + 1 :])
        else:
            self._head, self._tail = tuple(parts), ()

    def get(self, value: Any, default: Any = None) -> Any:
        """The value at the path (a list of values for a ``*`` path), else ``default``."""
        for key in self._head:
            # Dicts and lists (what JSON is made of) inline: this runs for every chunk of
            # a stream, several paths each.
            cls = type(value)
            if cls is dict:
                value = value.get(key, _MISSING) if key.__class__ is str else _MISSING
            elif cls is list and key.__class__ is int:
                value = value[key] if -len(value) <= key < len(value) else _MISSING
            elif key.__class__ is str and _is_model(cls):
                got = getattr(value, key, _MISSING)
                value = got if got is not _MISSING else _step(value, key)
            else:
                value = _step(value, key)
            if value is _MISSING:
                return default
        if not self._star:
            return value
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            return default
        out = []
        for item in value:
            for key in self._tail:
                item = _step(item, key)
                if item is _MISSING:
                    break
            else:
                out.append(item)
        # Items without the value are skipped (Anthropic's content holds text blocks and
        # tool_use blocks); when no item has it, the path has no value.
        return out if out or not value else default

    def __repr__(self) -> str:
        return f"Path({self.text!r})"


class EventPaths:
    """Where a value is in a stream's events: one path for every event, or a path per SSE
    event name (Anthropic puts the text in ``content_block_delta``, usage in
    ``message_start`` and ``message_delta``)."""

    __slots__ = ("_any", "_by_event")

    def __init__(self, paths: str | Mapping[str, str]) -> None:
        if isinstance(paths, str):
            self._any: Path | None = Path(paths)
            self._by_event: dict[str, Path] = {}
        else:
            self._any = None
            self._by_event = {event: Path(p) for event, p in paths.items()}

    def get(self, event: str | None, value: Any) -> Any:
        """The value in this event, or None when this event does not carry it."""
        if self._any is not None:
            return self._any.get(value)
        path = self._by_event.get(event or "")
        return None if path is None else path.get(value)
