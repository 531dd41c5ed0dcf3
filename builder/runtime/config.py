"""Typed connector settings: keyword arguments first, then environment variables, then defaults.

Secret values are wrapped in :class:`Secret`, whose ``repr`` and ``str`` are masked, so a
settings object can be logged, printed or put in an exception message safely.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from builder.runtime.errors import ConfigError

__all__ = ["Config", "Secret", "Setting", "resolve_settings"]

MASK = "**********"


class Secret:
    """A secret string that never shows itself in repr, str or format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The real value."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a connector, as declared in its spec."""

    name: str
    type: type = str
    env: str | None = None
    default: Any = None
    required: bool = False
    secret: bool = False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(setting: Setting, raw: str) -> Any:
    """Convert an environment variable's text to the setting's type."""
    try:
        if setting.type is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
        return setting.type(raw)
    except ValueError:
        shown = MASK if setting.secret else repr(raw)
        raise ConfigError(
            f"environment variable {setting.env}={shown} is not a valid {setting.type.__name__}"
        ) from None


class Config(Mapping[str, Any]):
    """Resolved settings: read-only, attribute and item access, secrets masked in repr."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def reveal(self, name: str) -> Any:
        """The value of a setting, with a secret unwrapped."""
        value = self._values[name]
        return value.get() if isinstance(value, Secret) else value

    def secret_values(self) -> list[str]:
        """Every secret's real value (for scrubbing text before it leaves the client)."""
        return [v.get() for v in self._values.values() if isinstance(v, Secret) and v.get()]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Config({inner})"


def resolve_settings(
    settings: tuple[Setting, ...], given: Mapping[str, Any], *, connector: str
) -> Config:
    """Resolve each setting from ``given`` (not None), else its env var, else its default."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    environ = os.environ
    for setting in settings:
        value = given.get(setting.name)
        if value is None and setting.env is not None:
            raw = environ.get(setting.env)
            if raw is not None and raw != "":
                value = _from_env(setting, raw)
        if value is None:
            value = setting.default
        if value is None and setting.required:
            hint = f" (or set {setting.env})" if setting.env else ""
            missing.append(f"{setting.name}{hint}")
        if setting.secret and value is not None and not isinstance(value, Secret):
            value = Secret(str(value))
        values[setting.name] = value
    if missing:
        raise ConfigError("missing required setting: " + ", ".join(missing), connector=connector)
    return Config(values)


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every secret value in ``text`` — as written or percent-encoded, as it
    appears in a URL — by the mask; longer secrets first, so no fragment is left."""
    if not secrets:
        return text
    from urllib.parse import quote, quote_plus

    forms = {
        form
        for value in secrets
        if value
        for form in (value, quote(value, safe=""), quote_plus(value))
    }
    for form in sorted(forms, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    return text


_redacted: set[str] = set()
_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "connectors",
    "connectors.pagination",
)


def redact_logs(secrets: list[str]) -> None:
    """Scrub these values from every record of the loggers a connector's traffic goes
    through (httpx logs each request's URL, which may carry an API key in its query)."""
    import logging

    if not _redacted:
        # A logger's filters do not apply to its children: name each logger that may
        # carry a URL or a header.
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(_RedactingFilter())
    _redacted.update(s for s in secrets if s)


class _RedactingFilter:
    """A logging filter (duck-typed, so importing this module does not import logging)."""

    def filter(self, record: Any) -> bool:
        secrets = list(_redacted)
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it alone
            return True
        scrubbed = scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
