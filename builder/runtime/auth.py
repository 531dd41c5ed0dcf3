"""Authentication schemes, resolved once per client into static headers and query params.

Credentials come from settings through templates such as ``"Token {token}"``: only
``{name}`` placeholders naming a setting are substituted (no attribute access, no format
specs), so a template from an untrusted spec cannot reach anything but the settings.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import httpx

from builder.runtime.config import Config
from builder.runtime.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "CustomAuth",
    "NoAuth",
    "OAuth2ClientCredentials",
    "render",
]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: str, config: Config) -> str:
    """Substitute ``{setting}`` placeholders; ``{{`` and ``}}`` are literal braces."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        try:
            value = config.reveal(name)
        except KeyError:
            raise ConfigError(
                f"authentication refers to {name!r}, which is not a setting"
            ) from None
        if value is None:
            raise ConfigError(f"setting {name!r} is needed for authentication but not set")
        return str(value)

    return _PLACEHOLDER.sub(replace, template)


def unset(template: str, config: Config) -> bool:
    """Whether every setting the template names is unset. A required setting would have
    failed when the client was built, so these are optional: the spec lets the caller
    go without credentials (a local OpenAI-compatible server, say), and none are sent."""
    names = [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)]
    return bool(names) and all(
        name in config and config.reveal(name) in (None, "") for name in names
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an auth scheme adds to every request."""

    headers: dict[str, str]
    params: dict[str, str]
    cookies: dict[str, str]
    auth: httpx.Auth | None = None


def credential_values(credentials: Credentials) -> list[str]:
    """What must never be shown: every credential value, and a header's token alone
    (``Basic <base64>``, ``Bearer <token>``), as a service may echo either back."""
    values: list[str] = []
    for value in [
        *credentials.headers.values(),
        *credentials.params.values(),
        *credentials.cookies.values(),
    ]:
        values.append(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.isalpha():
            values.append(token)
    return [v for v in values if len(v) >= 4]  # a 1-3 character "secret" would mask at random


class Auth:
    """Base of the auth schemes: turns settings into :class:`Credentials`."""

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class NoAuth(Auth):
    """The service needs no credentials."""

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        return Credentials({}, {}, {})


@dataclass(frozen=True, slots=True)
class ApiKeyAuth(Auth):
    """An API key in a header, a query parameter or a cookie."""

    name: str
    value: str
    location: Literal["header", "query", "cookie"] = "header"

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        if unset(self.value, config):
            return Credentials({}, {}, {})
        value = render(self.value, config)
        if self.location == "query":
            return Credentials({}, {self.name: value}, {})
        if self.location == "cookie":
            return Credentials({}, {}, {self.name: value})
        return Credentials({self.name: value}, {}, {})


@dataclass(frozen=True, slots=True)
class BearerAuth(Auth):
    """``Authorization: Bearer <token>`` (the scheme word is configurable)."""

    token: str
    scheme: str = "Bearer"

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        if unset(self.token, config):
            return Credentials({}, {}, {})
        return Credentials({"Authorization": f"{self.scheme} {render(self.token, config)}"}, {}, {})


@dataclass(frozen=True, slots=True)
class BasicAuth(Auth):
    """HTTP basic authentication."""

    username: str
    password: str

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        if unset(self.username, config) and unset(self.password, config):
            return Credentials({}, {}, {})
        pair = f"{render(self.username, config)}:{render(self.password, config)}"
        token = base64.b64encode(pair.encode()).decode("ascii")
        return Credentials({"Authorization": f"Basic {token}"}, {}, {})


class _CallableAuth(httpx.Auth):
    """Adapts ``fn(request) -> request | None`` to httpx's auth flow."""

    def __init__(self, fn: Callable[[httpx.Request], httpx.Request | None]) -> None:
        self._fn = fn

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        yield self._fn(request) or request


@dataclass(frozen=True, slots=True)
class CustomAuth(Auth):
    """Credentials supplied by the caller: an ``httpx.Auth`` or a callable editing the request."""

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        if custom is None:
            raise ConfigError("this connector needs auth=...: an httpx.Auth or a callable(request)")
        if isinstance(custom, httpx.Auth):
            return Credentials({}, {}, {}, custom)
        if callable(custom):
            return Credentials({}, {}, {}, _CallableAuth(custom))
        raise ConfigError(f"auth= must be an httpx.Auth or a callable, not {type(custom).__name__}")


@dataclass(frozen=True, slots=True)
class OAuth2ClientCredentials(Auth):
    """OAuth2 client credentials: a token fetched from ``token_url``, kept until it expires."""

    token_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()

    def credentials(self, config: Config, custom: object = None) -> Credentials:
        flow = _ClientCredentialsFlow(
            self.token_url,
            render(self.client_id, config),
            render(self.client_secret, config),
            self.scopes,
        )
        return Credentials({}, {}, {}, flow)


class _Token(NamedTuple):
    """The cached token, replaced whole (threads read it without a lock)."""

    value: str | None = None
    expires_at: float = 0.0  # time.monotonic() after which it is renewed
    generation: int = 0  # how many tokens were fetched: tells a waiting call it got one

    def valid(self) -> bool:
        return self.value is not None and time.monotonic() < self.expires_at


class _ClientCredentialsFlow(httpx.Auth):
    """Adds ``Authorization: Bearer`` with a cached token; fetches a new one when it is
    about to expire, or once when the service answers 401 (a token revoked early).

    Only the token endpoint's response is read here: the API response is handed back
    unread, so a stream stays a stream and the client's size limit and deadline apply to
    its body. One token is fetched at a time: concurrent calls wait for it and use it."""

    _MARGIN = 30.0  # renew this many seconds before the token expires

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, scopes: tuple[str, ...]
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = scopes
        self._token = _Token()
        self._sync_lock = threading.Lock()
        # An asyncio.Lock belongs to the event loop it is first used in, and a client may
        # outlive one (asyncio.run after asyncio.run): one lock per loop, made on first use.
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()
        self._async_locks_guard = threading.Lock()  # never held across an await

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("driven through sync_auth_flow and async_auth_flow only")

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        seen = self._token
        if not seen.valid():
            # Held while httpx sends the token request, on this thread; httpx closes the
            # flow however the call ends (GeneratorExit at the yield), which releases it.
            with self._sync_lock:
                if self._token.generation == seen.generation:  # nobody fetched one meanwhile
                    response = yield self._token_request()
                    response.read()  # the token endpoint's response, and only it
                    self._accept(response)
        used = self._token
        request.headers["Authorization"] = f"Bearer {used.value}"
        response = yield request  # the API response: handed back unread
        if response.status_code == 401 and used.generation == seen.generation:
            with self._sync_lock:
                if self._token.generation == used.generation:  # not renewed meanwhile
                    token_response = yield self._token_request()
                    token_response.read()
                    self._accept(token_response)
            request.headers["Authorization"] = f"Bearer {self._token.value}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        seen = self._token
        if not seen.valid():
            async with self._async_lock():
                if self._token.generation == seen.generation:
                    response = yield self._token_request()
                    await response.aread()  # the token endpoint's response, and only it
                    self._accept(response)
        used = self._token
        request.headers["Authorization"] = f"Bearer {used.value}"
        response = yield request  # the API response: handed back unread
        if response.status_code == 401 and used.generation == seen.generation:
            async with self._async_lock():
                if self._token.generation == used.generation:
                    token_response = yield self._token_request()
                    await token_response.aread()
                    self._accept(token_response)
            request.headers["Authorization"] = f"Bearer {self._token.value}"
            yield request

    def _async_lock(self) -> AbstractAsyncContextManager[object]:
        """The running asyncio loop's lock (none outside asyncio: trio, say)."""
        import asyncio  # only for async clients: asyncio costs ~15 ms to import

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return contextlib.nullcontext()
        with self._async_locks_guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._scopes:
            data["scope"] = " ".join(self._scopes)
        pair = f"{self._client_id}:{self._client_secret}".encode()
        return httpx.Request(
            "POST",
            self._token_url,
            data=data,
            headers={"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")},
        )

    def _accept(self, response: httpx.Response) -> None:
        """Keep the token from the token endpoint's (read) response, or raise."""
        from builder.runtime.errors import AuthenticationError

        try:
            payload = response.json()
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            token = None
        if response.status_code >= 400 or not isinstance(token, str):
            raise AuthenticationError(
                f"the token endpoint refused the client credentials ({response.status_code})",
                status_code=response.status_code,
                method="POST",
                url=self._token_url,
            )
        expires_in = payload.get("expires_in")
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float | str)
            and str(expires_in).replace(".", "", 1).isdigit()
            else 3600.0
        )
        expires_at = time.monotonic() + max(0.0, lifetime - self._MARGIN)
        self._token = _Token(token, expires_at, self._token.generation + 1)
