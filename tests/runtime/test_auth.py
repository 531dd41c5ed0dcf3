"""Auth schemes: templates, credentials, and what actually arrives on the wire."""

from __future__ import annotations

import base64

import httpx
import pytest
import respx

from builder.runtime.auth import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    CustomAuth,
    NoAuth,
    render,
)
from builder.runtime.config import Secret, Setting, resolve_settings
from builder.runtime.errors import ConfigError
from builder.runtime.operation import Operation
from tests.runtime._clients import TOKEN, Demo, service

pytestmark = pytest.mark.timeout(10)

PING: Operation[object] = Operation("ping", "GET", "/ping")


def config(**values: object):  # type: ignore[no-untyped-def]
    settings = tuple(Setting(name, secret=name in {"token", "password"}) for name in values)
    return resolve_settings(settings, values, connector="demo")


# -- render --------------------------------------------------------------------------------


def test_render_substitutes_settings_and_reveals_secrets() -> None:
    cfg = config(token="abc", user="u")
    assert isinstance(cfg.token, Secret)
    assert render("Token {token} for {user}", cfg) == "Token abc for u"
    assert render("no placeholders", cfg) == "no placeholders"


def test_render_double_braces_are_literal() -> None:
    cfg = config(token="abc")
    assert render("{{literal}} {token}", cfg) == "{literal} abc"
    assert render("{{token}}", cfg) == "{token}"
    assert render("}}{{", cfg) == "}{"
    assert render("{{{token}}}", cfg) == "{abc}"


def test_render_does_not_allow_attribute_access_or_format_specs() -> None:
    cfg = config(token="abc")
    assert render("{token.__class__}", cfg) == "{token.__class__}"
    assert render("{token!r}", cfg) == "{token!r}"
    assert render("{0}", cfg) == "{0}"


def test_render_unset_setting_is_a_config_error() -> None:
    cfg = config(token=None)
    with pytest.raises(ConfigError, match="'token'"):
        render("Bearer {token}", cfg)


def test_render_undeclared_setting_is_a_config_error() -> None:
    # A template naming a setting the connector does not declare must fail as a
    # ConfigError (a ConnectorError), not leak a raw KeyError.
    cfg = config(token="abc")
    with pytest.raises(ConfigError, match="tokn"):
        render("Bearer {tokn}", cfg)


# -- credentials ---------------------------------------------------------------------------


def test_no_auth() -> None:
    creds = NoAuth().credentials(config())
    assert (creds.headers, creds.params, creds.cookies, creds.auth) == ({}, {}, {}, None)


@pytest.mark.parametrize(
    ("location", "headers", "params", "cookies"),
    [
        ("header", {"X-Api-Key": "k1"}, {}, {}),
        ("query", {}, {"X-Api-Key": "k1"}, {}),
        ("cookie", {}, {}, {"X-Api-Key": "k1"}),
    ],
)
def test_api_key_locations(
    location: str, headers: dict[str, str], params: dict[str, str], cookies: dict[str, str]
) -> None:
    creds = ApiKeyAuth(name="X-Api-Key", value="{token}", location=location).credentials(  # type: ignore[arg-type]
        config(token="k1")
    )
    assert (creds.headers, creds.params, creds.cookies) == (headers, params, cookies)


def test_bearer_default_and_custom_scheme() -> None:
    cfg = config(token="abc")
    assert BearerAuth(token="{token}").credentials(cfg).headers == {"Authorization": "Bearer abc"}
    assert BearerAuth(token="{token}", scheme="Token").credentials(cfg).headers == {
        "Authorization": "Token abc"
    }


def test_basic_auth_exact_encoding() -> None:
    creds = BasicAuth(username="{user}", password="{password}").credentials(
        config(user="Aladdin", password="open sesame")
    )
    assert creds.headers == {"Authorization": "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="}


def test_basic_auth_non_ascii() -> None:
    creds = BasicAuth(username="{user}", password="{password}").credentials(
        config(user="jöé", password="p:w")
    )
    expected = base64.b64encode("jöé:p:w".encode()).decode()
    assert creds.headers == {"Authorization": f"Basic {expected}"}


def test_custom_auth_requires_something() -> None:
    with pytest.raises(ConfigError, match="auth="):
        CustomAuth().credentials(config())
    with pytest.raises(ConfigError, match="not int"):
        CustomAuth().credentials(config(), 42)


# -- on the wire ---------------------------------------------------------------------------


def sent(route: respx.Route) -> httpx.Request:
    assert route.call_count == 1
    return route.calls.last.request


def test_bearer_and_default_headers_on_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    with Demo() as client:
        client._call(PING)
    request = sent(route)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == "connector-builder (demo)"
    assert request.headers["X-Service"] == "demo"


def test_api_key_header_on_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    auth = ApiKeyAuth(name="X-Api-Key", value="{token}")
    with Demo(token="k-123", service=service(auth=auth)) as client:
        client._call(PING)
    request = sent(route)
    assert request.headers["X-Api-Key"] == "k-123"
    assert "Authorization" not in request.headers


def test_api_key_query_on_the_wire_with_other_params(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    auth = ApiKeyAuth(name="api_key", value="{token}", location="query")
    with Demo(token="k-123", service=service(auth=auth)) as client:
        client._call(PING, query={"q": "x"})
    request = sent(route)
    assert dict(request.url.params) == {"api_key": "k-123", "q": "x"}
    assert "Authorization" not in request.headers


def test_api_key_cookie_on_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    auth = ApiKeyAuth(name="session", value="{token}", location="cookie")
    with Demo(token="k-123", service=service(auth=auth)) as client:
        client._call(PING)
    assert sent(route).headers["Cookie"] == "session=k-123"


def test_basic_on_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    auth = BasicAuth(username="me", password="{token}")
    with Demo(token="pw", service=service(auth=auth)) as client:
        client._call(PING)
    expected = base64.b64encode(b"me:pw").decode()
    assert sent(route).headers["Authorization"] == f"Basic {expected}"


def test_no_auth_on_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/ping").respond(200, json={})
    with Demo(service=service(auth=NoAuth())) as client:
        client._call(PING)
    assert "Authorization" not in sent(route).headers


def test_custom_httpx_auth_on_the_wire(api: respx.MockRouter) -> None:
    class Signer(httpx.Auth):
        def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
            request.headers["X-Signature"] = f"sig:{request.method}:{request.url.path}"
            yield request

    route = api.get("/ping").respond(200, json={})
    with Demo(service=service(auth=CustomAuth()), auth=Signer()) as client:
        client._call(PING)
    request = sent(route)
    assert request.headers["X-Signature"] == "sig:GET:/ping"
    assert "Authorization" not in request.headers


def test_custom_callable_editing_in_place(api: respx.MockRouter) -> None:
    seen: list[str] = []

    def sign(request: httpx.Request) -> None:
        seen.append(str(request.url))
        request.headers["X-Signed"] = "yes"

    route = api.get("/ping").respond(200, json={})
    with Demo(service=service(auth=CustomAuth()), auth=sign) as client:
        client._call(PING)
        client._call(PING)
    assert route.call_count == 2
    assert route.calls.last.request.headers["X-Signed"] == "yes"
    assert seen == ["https://api.test/ping", "https://api.test/ping"]


def test_custom_callable_returning_a_new_request(api: respx.MockRouter) -> None:
    def replace(request: httpx.Request) -> httpx.Request:
        headers = dict(request.headers)
        headers["X-Replaced"] = "1"
        return httpx.Request(request.method, request.url, headers=headers)

    route = api.get("/ping").respond(200, json={})
    with Demo(service=service(auth=CustomAuth()), auth=replace) as client:
        client._call(PING)
    assert sent(route).headers["X-Replaced"] == "1"


def test_auth_kwarg_replaces_declared_scheme(api: respx.MockRouter) -> None:
    def sign(request: httpx.Request) -> None:
        request.headers["X-Signed"] = "yes"

    route = api.get("/ping").respond(200, json={})
    with Demo(auth=sign) as client:
        client._call(PING)
    request = sent(route)
    assert request.headers["X-Signed"] == "yes"
    assert "Authorization" not in request.headers


def test_custom_auth_service_without_auth_kwarg_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="auth="):
        Demo(service=service(auth=CustomAuth()))


def test_custom_auth_service_with_bad_auth_kwarg() -> None:
    with pytest.raises(ConfigError, match="not str"):
        Demo(service=service(auth=CustomAuth()), auth="nope")


def test_auth_whose_optional_settings_are_all_unset_sends_nothing(
    api: respx.MockRouter,
) -> None:
    # base_url is optional and unset: the spec lets the caller go without credentials
    # (a local OpenAI-compatible server); nothing is sent, nothing fails.
    route = api.get("/ping").respond(200, json={})
    for auth in (
        ApiKeyAuth(name="X-Key", value="{base_url}"),
        BearerAuth(token="{base_url}"),
        BasicAuth(username="{base_url}", password="{base_url}"),
    ):
        with Demo(service=service(auth=auth)) as client:
            client._call(PING)
        request = route.calls.last.request
        assert "X-Key" not in request.headers and "Authorization" not in request.headers
    assert route.call_count == 3


def test_auth_with_some_settings_unset_fails_at_construction() -> None:
    auth = BasicAuth(username="{token}", password="{base_url}")  # token set, base_url unset
    with pytest.raises(ConfigError, match="base_url"):
        Demo(service=service(auth=auth))
