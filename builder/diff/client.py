"""Comparing what is common to every call: the connector and its client class, the base
URL, auth, constant headers and the behaviour defaults (timeouts, retries, rate limits)."""

from __future__ import annotations

from typing import Any

from builder.diff.collector import ChangeLog, SpecPath
from builder.ir import Connector
from builder.spec.models import Retry, Spec

# Auth fields that are credential templates: a template may hold a literal secret, so
# reports say that it changed, never what it says.
_CREDENTIALS = frozenset({"value", "token", "username", "password", "client_id", "client_secret"})


class ClientComparer:
    def __init__(
        self, log: ChangeLog, old: Spec, new: Spec, old_ir: Connector, new_ir: Connector
    ) -> None:
        self.log = log
        self.old, self.new = old, new
        self.old_ir, self.new_ir = old_ir, new_ir

    def compare(self) -> None:
        self.connector()
        self.auth()
        self.headers()
        self.behaviour()

    def connector(self) -> None:
        old, new, log = self.old, self.new, self.log
        if old.name != new.name:
            log.add(
                "connector-renamed",
                f"package `connectors.{old.name}` is now `connectors.{new.name}`",
                old=("name",),
                new=("name",),
            )
        if self.old_ir.class_name != self.new_ir.class_name:
            log.add(
                "client-class-renamed",
                f"client `{self.old_ir.class_name}` is now `{self.new_ir.class_name}` "
                f"(and `{self.old_ir.async_class_name}` is `{self.new_ir.async_class_name}`)",
                old=("class_name",) if old.class_name else ("name",),
                new=("class_name",) if new.class_name else ("name",),
            )
        if old.kind != new.kind:
            log.add(
                "transport-changed",
                f"kind {old.kind} is now {new.kind}",
                old=("kind",),
                new=("kind",),
            )
        # Only kind http has a base URL; a change of kind is reported as such, above.
        if (
            old.base_url is not None
            and new.base_url is not None
            and old.base_url.rstrip("/") != new.base_url.rstrip("/")
        ):
            log.add(
                "base-url-changed",
                f"base URL {old.base_url} is now {new.base_url}",
                old=("base_url",),
                new=("base_url",),
            )
        for key in ("title", "description", "docs_url"):
            if getattr(old, key) != getattr(new, key):
                log.add("docs-changed", f"{key} changed", old=(key,), new=(key,))

    def auth(self) -> None:
        old, new = self.old.auth, self.new.auth
        at: SpecPath = ("auth",)
        if old.type != new.type:
            self.log.add(
                "auth-scheme-changed",
                f"auth {old.type} is now {new.type}",
                old=at + ("type",),
                new=at + ("type",),
            )
            return
        a, b = _auth_view(old), _auth_view(new)
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if changed:
            details = ", ".join(
                f"{k} changed" if k in _CREDENTIALS else f"{k} {a.get(k)!r} is now {b.get(k)!r}"
                for k in changed
            )
            where = at + (changed[0],) if len(changed) == 1 else at
            self.log.add("auth-changed", f"{new.type} auth: {details}", old=where, new=where)
        if getattr(old, "description", None) != getattr(new, "description", None):
            self.log.add(
                "docs-changed",
                "auth description changed",
                old=at + ("description",),
                new=at + ("description",),
            )

    def headers(self) -> None:
        # Header names are case-insensitive on the wire.
        old = {k.lower(): (k, v) for k, v in self.old.headers.items()}
        new = {k.lower(): (k, v) for k, v in self.new.headers.items()}
        for key in sorted(old.keys() | new.keys()):
            before, after = old.get(key), new.get(key)
            if before is not None and after is not None and before[1] == after[1]:
                continue
            if after is None:
                assert before is not None
                message = f"header {before[0]} ({before[1]!r}) no longer sent"
            elif before is None:
                message = f"header {after[0]}: {after[1]!r} now sent"
            else:
                message = f"header {after[0]}: {before[1]!r} is now {after[1]!r}"
            self.log.add(
                "request-headers-changed",
                message,
                old=("headers", before[0]) if before else None,
                new=("headers", after[0]) if after else None,
            )

    def behaviour(self) -> None:
        old, new = self.old.defaults, self.new.defaults
        at: SpecPath = ("defaults",)
        if old.timeout != new.timeout:
            self.log.add(
                "timeout-changed",
                f"default timeout {old.timeout:g} s is now {new.timeout:g} s",
                old=at + ("timeout",),
                new=at + ("timeout",),
            )
        self._retry(old.retry, new.retry, "default retry", at + ("retry",), at + ("retry",))
        if old.rate_limit != new.rate_limit:
            self.log.add(
                "rate-limit-changed",
                f"rate limit {_rate(old.rate_limit)} is now {_rate(new.rate_limit)}",
                old=at + ("rate_limit",),
                new=at + ("rate_limit",),
            )
        if old.circuit_breaker != new.circuit_breaker:
            self.log.add(
                "circuit-breaker-changed",
                f"circuit breaker {_breaker(old.circuit_breaker)} is now "
                f"{_breaker(new.circuit_breaker)}",
                old=at + ("circuit_breaker",),
                new=at + ("circuit_breaker",),
            )
        self.quota()

    def quota(self) -> None:
        """Quota headers decide which error some responses raise (RateLimitedError), and
        where its reset time comes from. Header names are case-insensitive."""
        old, new = _quota_view(self.old_ir.quota_headers), _quota_view(self.new_ir.quota_headers)
        if old == new:
            return
        at: SpecPath = ("rate_limit_headers",)
        message = f"quota headers {_quota(old)} are now {_quota(new)}"
        if old is None or new is None or old.get("remaining") != new.get("remaining"):
            self.log.add(
                "quota-detection-changed",
                message,
                old=at if old is not None else None,
                new=at if new is not None else None,
            )
        else:
            self.log.add("quota-headers-changed", message, old=at, new=at)

    def _retry(self, old: Retry, new: Retry, what: str, op: SpecPath, np: SpecPath) -> None:
        compare_retry(self.log, old, new, what, op, np)


def compare_retry(
    log: ChangeLog, old: Retry, new: Retry, what: str, op: SpecPath, np: SpecPath
) -> None:
    """Record a retry policy change, listing the fields that differ."""
    a, b = _retry_view(old), _retry_view(new)
    changed = [k for k in a if a[k] != b[k]]
    if changed:
        details = ", ".join(f"{k} {a[k]} is now {b[k]}" for k in changed)
        log.add("retry-changed", f"{what}: {details}", old=op, new=np)


def _auth_view(auth: Any) -> dict[str, Any]:
    data: dict[str, Any] = auth.model_dump(by_alias=True, exclude={"type", "description"})
    if isinstance(data.get("scopes"), list):
        data["scopes"] = sorted(data["scopes"])  # a set of scopes: order means nothing
    if data.get("in") == "header" and isinstance(data.get("name"), str):
        data["name"] = data["name"].lower()
    return data


def _retry_view(retry: Retry) -> dict[str, Any]:
    view: dict[str, Any] = retry.model_dump(exclude={"retry_on"})
    view["retry_on"] = sorted(str(v) for v in retry.retry_on)
    return view


def _rate(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value.per_second:g}/s burst {value.burst if value.burst is not None else 'default'}"


def _breaker(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value.failure_threshold} failures / {value.reset_timeout:g} s"


def _quota_view(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    view = {"reset_format": "epoch"} | dict(value)  # the IR leaves the default out
    return {
        k: v.lower() if k in ("remaining", "reset") and isinstance(v, str) else v
        for k, v in view.items()
    }


def _quota(value: dict[str, Any] | None) -> str:
    if not value:
        return "none"
    return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
