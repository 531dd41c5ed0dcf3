"""The request pipeline through the sync client: retries, error mapping, secrets, breaker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from builder.runtime import errors
from builder.runtime.auth import ApiKeyAuth, CustomAuth
from builder.runtime.config import MASK
from builder.runtime.operation import Operation, QuotaHeaders
from builder.runtime.resilience import RetryPolicy
from tests.runtime._clients import GET_ITEM, TOKEN, Demo, FakeClock, Item, service

pytestmark = pytest.mark.timeout(10)

ITEM_7 = {"id": 7, "name": "seven"}
QUOTA = QuotaHeaders(remaining="X-RateLimit-Remaining", reset="X-RateLimit-Reset")


@pytest.fixture
def client() -> Any:
    with Demo() as demo:
        yield demo


def get_item(client: Demo, item_id: Any = 7) -> Item:
    return client._call(GET_ITEM, path={"id": item_id})


# -- success and retries -------------------------------------------------------------------


def test_success_decodes_the_model(
    api: respx.MockRouter, client: Demo, sleeps: list[float]
) -> None:
    route = api.get("/items/7").respond(200, json=ITEM_7)
    assert get_item(client) == Item(id=7, name="seven")
    assert route.call_count == 1
    assert sleeps == []


def test_429_with_retry_after_then_success(
    api: respx.MockRouter, client: Demo, sleeps: list[float]
) -> None:
    route = api.get("/items/7")
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(200, json=ITEM_7),
    ]
    assert get_item(client) == Item(id=7, name="seven")
    assert route.call_count == 2
    assert sleeps == [2.0]


def test_retry_after_http_date(api: respx.MockRouter, client: Demo, sleeps: list[float]) -> None:
    from email.utils import formatdate

    route = api.get("/items/7")
    route.side_effect = [
        httpx.Response(503, headers={"Retry-After": formatdate(time.time() + 20, usegmt=True)}),
        httpx.Response(200, json=ITEM_7),
    ]
    get_item(client)
    assert route.call_count == 2
    assert len(sleeps) == 1
    assert 17 <= sleeps[0] <= 20.5


def test_server_errors_exhaust_retries(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.get("/items/7").respond(503, text="down for maintenance")
    retry = RetryPolicy(attempts=4, initial_delay=0.1, multiplier=2.0, jitter=False)
    with Demo(retry=retry) as client, pytest.raises(errors.ServerError) as info:
        get_item(client)
    exc = info.value
    assert exc.status_code == 503
    assert route.call_count == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert "(after 4 attempts)" in str(exc)
    assert str(exc) == (
        "demo.get_item: GET https://api.test/items/7 -> 503: down for maintenance "
        "(after 4 attempts)"
    )
    assert exc.body == "down for maintenance"


def test_operation_retry_policy_beats_client_policy(api: respx.MockRouter, client: Demo) -> None:
    route = api.get("/items/7").respond(500)
    op = Operation("get_item", "GET", "/items/{id}", retry=RetryPolicy(attempts=1))
    with pytest.raises(errors.ServerError) as info:
        client._call(op, path={"id": 7})
    assert route.call_count == 1
    assert "attempts" not in str(info.value)


def test_status_not_in_retry_set_is_not_retried(api: respx.MockRouter) -> None:
    route = api.get("/items/7").respond(503)
    retry = RetryPolicy(attempts=5, initial_delay=0, retry_on_status=frozenset({502}))
    with Demo(retry=retry) as client, pytest.raises(errors.ServerError):
        get_item(client)
    assert route.call_count == 1


def test_retry_after_above_maximum_gives_up_at_once(
    api: respx.MockRouter, client: Demo, sleeps: list[float]
) -> None:
    route = api.get("/items/7").respond(429, headers={"Retry-After": "3600"})
    with pytest.raises(errors.RateLimitedError) as info:
        get_item(client)
    assert route.call_count == 1
    assert sleeps == []
    assert info.value.retry_after == 3600.0
    assert info.value.status_code == 429


def test_429_exhausted_is_rate_limited_error(
    api: respx.MockRouter, client: Demo, sleeps: list[float]
) -> None:
    route = api.get("/items/7").respond(429, headers={"Retry-After": "1"})
    with pytest.raises(errors.RateLimitedError) as info:
        get_item(client)
    assert route.call_count == 3
    assert sleeps == [1.0, 1.0]
    assert info.value.retry_after == 1.0
    assert info.value.reset_at is None


# -- error mapping -------------------------------------------------------------------------


def test_404_maps_to_not_found_with_message_and_body(api: respx.MockRouter, client: Demo) -> None:
    body = '{"error": {"message": "no such item", "code": "missing"}}'
    route = api.get("/items/7").respond(404, text=body, headers={"X-Request-Id": "r1"})
    with pytest.raises(errors.NotFoundError) as info:
        get_item(client)
    exc = info.value
    assert route.call_count == 1
    assert exc.status_code == 404
    assert exc.method == "GET"
    assert exc.url == "https://api.test/items/7"
    assert exc.body == body
    assert exc.headers["x-request-id"] == "r1"
    assert exc.connector == "demo"
    assert exc.operation == "get_item"
    assert str(exc) == "demo.get_item: GET https://api.test/items/7 -> 404: no such item"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"message": "top-level message"}', "top-level message"),
        ('{"detail": "a detail"}', "a detail"),
        ('{"error": "plain error"}', "plain error"),
        ('{"error": {"detail": "nested detail"}}', "nested detail"),
        ('{"error_description": "oauth says no"}', "oauth says no"),
        ('{"title": "Problem title"}', "Problem title"),
        ("plain text failure", "plain text failure"),
        ('{"unexpected": 1}', '{"unexpected": 1}'),
        ("", "Not Found"),
    ],
)
def test_error_message_extraction(
    api: respx.MockRouter, client: Demo, body: str, reason: str
) -> None:
    api.get("/items/7").respond(404, text=body)
    with pytest.raises(errors.NotFoundError) as info:
        get_item(client)
    assert info.value.message == f"GET https://api.test/items/7 -> 404: {reason}"


def test_long_error_body_is_excerpted(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/7").respond(400, text="x" * 5000)
    with pytest.raises(errors.BadRequestError) as info:
        get_item(client)
    assert info.value.body == "x" * 500
    assert info.value.message.endswith(": " + "x" * 200)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.UnprocessableEntityError),
        (418, errors.HTTPStatusError),
    ],
)
def test_client_errors_are_mapped_and_not_retried(
    api: respx.MockRouter, client: Demo, status: int, cls: type[errors.HTTPStatusError]
) -> None:
    route = api.get("/items/7").respond(status, json={"message": "nope"})
    with pytest.raises(cls) as info:
        get_item(client)
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert route.call_count == 1


def test_quota_headers_at_zero_raise_rate_limited_with_reset(api: respx.MockRouter) -> None:
    route = api.get("/items/7").respond(
        403,
        json={"message": "API rate limit exceeded"},
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000000"},
    )
    with Demo(service=service(quota_headers=QUOTA)) as client:
        with pytest.raises(errors.RateLimitedError) as info:
            get_item(client)
    exc = info.value
    assert route.call_count == 1
    assert exc.status_code == 403
    assert exc.reset_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert exc.retry_after is None
    assert "API rate limit exceeded" in str(exc)


def test_quota_headers_not_at_zero_keep_the_status_mapping(api: respx.MockRouter) -> None:
    api.get("/items/7").respond(
        403, headers={"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1700000000"}
    )
    with Demo(service=service(quota_headers=QUOTA)) as client:
        with pytest.raises(errors.PermissionDeniedError) as info:
            get_item(client)
    assert type(info.value) is errors.PermissionDeniedError


def test_quota_reset_in_seconds_format(api: respx.MockRouter) -> None:
    quota = QuotaHeaders("X-Left", "X-Reset-In", reset_format="seconds")
    api.get("/items/7").respond(403, headers={"X-Left": "0", "X-Reset-In": "60"})
    before = time.time()
    with Demo(service=service(quota_headers=quota)) as client:
        with pytest.raises(errors.RateLimitedError) as info:
            get_item(client)
    assert info.value.reset_at is not None
    delta = info.value.reset_at.timestamp() - before
    assert 59 <= delta <= 62


def test_quota_reset_is_used_as_retry_delay(api: respx.MockRouter, sleeps: list[float]) -> None:
    reset = int(time.time()) + 10
    route = api.get("/items/7")
    route.side_effect = [
        httpx.Response(
            429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
        ),
        httpx.Response(200, json=ITEM_7),
    ]
    with Demo(service=service(quota_headers=QUOTA)) as client:
        assert get_item(client).id == 7
    assert route.call_count == 2
    assert len(sleeps) == 1
    assert 8 <= sleeps[0] <= 10.5


def test_quota_headers_on_success_do_not_raise(api: respx.MockRouter) -> None:
    api.get("/items/7").respond(
        200, json=ITEM_7, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    )
    with Demo(service=service(quota_headers=QUOTA)) as client:
        assert get_item(client).id == 7


# -- transport failures --------------------------------------------------------------------


def test_timeout_then_success(api: respx.MockRouter, client: Demo, sleeps: list[float]) -> None:
    route = api.get("/items/7")
    route.side_effect = [httpx.ReadTimeout("slow"), httpx.Response(200, json=ITEM_7)]
    assert get_item(client).id == 7
    assert route.call_count == 2
    assert sleeps == [0.0]


def test_timeouts_exhaust_retries(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ReadTimeout)
    retry = RetryPolicy(attempts=3, initial_delay=1.0, multiplier=3.0, jitter=False)
    with Demo(retry=retry) as client, pytest.raises(errors.TimeoutError) as info:
        get_item(client)
    assert route.call_count == 3
    assert sleeps == [1.0, 3.0]
    assert "after 3 attempts" in str(info.value)
    assert str(info.value).startswith("demo.get_item: GET https://api.test/items/7 failed")
    assert not isinstance(info.value, httpx.HTTPError)
    assert info.value.__cause__ is None


def test_timeout_not_retried_when_disabled(api: respx.MockRouter) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ConnectTimeout)
    retry = RetryPolicy(attempts=3, initial_delay=0, retry_on_timeout=False)
    with Demo(retry=retry) as client, pytest.raises(errors.TimeoutError) as info:
        get_item(client)
    assert route.call_count == 1
    assert "attempts" not in str(info.value)


def test_connection_errors_become_connection_failed(
    api: respx.MockRouter, client: Demo, sleeps: list[float]
) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(errors.ConnectionFailedError) as info:
        get_item(client)
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert "refused" in str(info.value)
    assert "after 3 attempts" in str(info.value)


def test_remote_protocol_error_is_a_connection_failure(api: respx.MockRouter, client: Demo) -> None:
    route = api.get("/items/7")
    route.side_effect = [httpx.RemoteProtocolError("peer closed"), httpx.Response(200, json=ITEM_7)]
    assert get_item(client).id == 7
    assert route.call_count == 2


def test_connection_error_not_retried_when_disabled(api: respx.MockRouter) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ReadError)
    retry = RetryPolicy(attempts=3, initial_delay=0, retry_on_connection_error=False)
    with Demo(retry=retry) as client, pytest.raises(errors.ConnectionFailedError):
        get_item(client)
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectTimeout, errors.TimeoutError),
        (httpx.ReadTimeout, errors.TimeoutError),
        (httpx.WriteTimeout, errors.TimeoutError),
        (httpx.PoolTimeout, errors.TimeoutError),
        (httpx.ConnectError, errors.ConnectionFailedError),
        (httpx.ReadError, errors.ConnectionFailedError),
        (httpx.WriteError, errors.ConnectionFailedError),
        (httpx.CloseError, errors.ConnectionFailedError),
        (httpx.RemoteProtocolError, errors.ConnectionFailedError),
        (httpx.LocalProtocolError, errors.TransportError),
        (httpx.ProxyError, errors.TransportError),
        (httpx.UnsupportedProtocol, errors.TransportError),
        (httpx.DecodingError, errors.TransportError),
        (httpx.TooManyRedirects, errors.TransportError),
    ],
)
def test_no_raw_httpx_exception_escapes(
    api: respx.MockRouter, client: Demo, exc: type[Exception], cls: type[Exception]
) -> None:
    api.get("/items/7").mock(side_effect=exc)
    with pytest.raises(errors.ConnectorError) as info:
        get_item(client)
    assert isinstance(info.value, cls)
    assert not isinstance(info.value, httpx.HTTPError)
    assert info.value.__cause__ is None


# -- secrets -------------------------------------------------------------------------------


def query_key_client(key: str) -> Demo:
    auth = ApiKeyAuth(name="api_key", value="{token}", location="query")
    return Demo(token=key, service=service(auth=auth))


def assert_hidden(exc: errors.ConnectorError, *values: str) -> None:
    text = " ".join(
        [str(exc), repr(exc), exc.message, getattr(exc, "url", ""), getattr(exc, "body", "")]
    )
    for value in values:
        assert value not in text


def test_api_key_in_query_is_scrubbed_from_status_errors(api: respx.MockRouter) -> None:
    key = "sekrit-key-123"
    route = api.get("/items/7").respond(404, text=f"no item for key {key}")
    with query_key_client(key) as client, pytest.raises(errors.NotFoundError) as info:
        get_item(client)
    assert route.calls.last.request.url.params["api_key"] == key  # it was sent...
    assert_hidden(info.value, key)  # ...but never shown
    assert info.value.url == f"https://api.test/items/7?api_key={MASK}"
    assert info.value.body == f"no item for key {MASK}"


def test_api_key_needing_percent_encoding_is_scrubbed(api: respx.MockRouter) -> None:
    # Keys often contain "/", "+" and "=" (base64): in the URL they appear percent-encoded.
    key = "s3cr3t/Key+Part=="
    route = api.get("/items/7").respond(404)
    with query_key_client(key) as client, pytest.raises(errors.NotFoundError) as info:
        get_item(client)
    assert route.calls.last.request.url.params["api_key"] == key
    encoded = str(route.calls.last.request.url).split("api_key=")[1]
    assert_hidden(info.value, key, encoded, "s3cr3t")


def test_api_key_scrubbed_from_transport_errors(api: respx.MockRouter) -> None:
    key = "sekrit-key-123"
    api.get("/items/7").mock(
        side_effect=httpx.ConnectError(f"cannot reach https://api.test/items/7?api_key={key}")
    )
    with query_key_client(key) as client, pytest.raises(errors.ConnectionFailedError) as info:
        get_item(client)
    assert_hidden(info.value, key)
    assert MASK in str(info.value)


def test_token_echoed_in_error_body_is_scrubbed(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/7").respond(401, json={"message": f"bad token {TOKEN}"})
    with pytest.raises(errors.AuthenticationError) as info:
        get_item(client)
    assert_hidden(info.value, TOKEN)
    assert info.value.message.endswith(f"401: bad token {MASK}")


def test_token_echoed_in_invalid_response_is_scrubbed(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/7").respond(200, text=f"<html>{TOKEN}</html>")
    with pytest.raises(errors.ResponseValidationError) as info:
        get_item(client)
    assert_hidden(info.value, TOKEN)


# -- circuit breaker -----------------------------------------------------------------------


def breaker_client(threshold: int = 2, reset: float = 30.0) -> Demo:
    return Demo(service=service(circuit_breaker=(threshold, reset), retry=RetryPolicy(attempts=1)))


def test_failures_open_the_circuit_and_no_request_is_sent(
    api: respx.MockRouter, clock: FakeClock
) -> None:
    route = api.get("/items/7").respond(500)
    with breaker_client() as client:
        for _ in range(2):
            with pytest.raises(errors.ServerError):
                get_item(client)
        assert client.circuit_breaker is not None
        assert client.circuit_breaker.state == "open"
        clock.advance(5)
        with pytest.raises(errors.CircuitOpenError) as info:
            get_item(client)
    assert route.call_count == 2
    assert info.value.retry_in == pytest.approx(25.0)
    assert str(info.value).startswith("demo.get_item: circuit open")


def test_circuit_half_opens_and_closes_on_success(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7")
    route.side_effect = [httpx.Response(500), httpx.Response(500)] + [
        httpx.Response(200, json=ITEM_7) for _ in range(3)
    ]
    with breaker_client() as client:
        for _ in range(2):
            with pytest.raises(errors.ServerError):
                get_item(client)
        clock.advance(30)
        assert get_item(client).id == 7  # the trial call
        assert client.circuit_breaker is not None
        assert client.circuit_breaker.state == "closed"
        assert get_item(client).id == 7
        assert get_item(client).id == 7
    assert route.call_count == 5


def test_failed_trial_reopens_the_circuit(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7").respond(503)
    with breaker_client() as client:
        for _ in range(2):
            with pytest.raises(errors.ServerError):
                get_item(client)
        clock.advance(30)
        with pytest.raises(errors.ServerError):
            get_item(client)  # trial goes out and fails
        with pytest.raises(errors.CircuitOpenError) as info:
            get_item(client)
    assert route.call_count == 3
    assert info.value.retry_in == pytest.approx(30.0)


def test_timeouts_count_as_failures(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ConnectTimeout)
    with breaker_client() as client:
        for _ in range(2):
            with pytest.raises(errors.TimeoutError):
                get_item(client)
        with pytest.raises(errors.CircuitOpenError):
            get_item(client)
    assert route.call_count == 2


def test_client_errors_do_not_open_the_circuit(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7").respond(404)
    with breaker_client(threshold=2) as client:
        for _ in range(5):
            with pytest.raises(errors.NotFoundError):
                get_item(client)
    assert route.call_count == 5


def test_circuit_opens_in_the_middle_of_retries(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7").respond(503)
    svc = service(circuit_breaker=(2, 30.0), retry=RetryPolicy(attempts=5, initial_delay=0))
    with Demo(service=svc) as client, pytest.raises(errors.CircuitOpenError):
        get_item(client)
    assert route.call_count == 2


def test_trial_ending_in_an_unclassified_transport_error_does_not_wedge_the_circuit(
    api: respx.MockRouter, clock: FakeClock
) -> None:
    route = api.get("/items/7")
    route.side_effect = [
        httpx.Response(500),
        httpx.Response(500),
        httpx.ProxyError("proxy went away"),  # the half-open trial
        httpx.Response(200, json=ITEM_7),
    ]
    with breaker_client(reset=30.0) as client:
        for _ in range(2):
            with pytest.raises(errors.ServerError):
                get_item(client)
        clock.advance(30)
        with pytest.raises(errors.TransportError):
            get_item(client)
        clock.advance(30)  # whatever the trial's outcome, a new trial is due by now
        assert get_item(client).id == 7
    assert route.call_count == 4


# -- rate limiter --------------------------------------------------------------------------


def test_rate_limit_requests_sleeps_between_calls(
    api: respx.MockRouter, clock: FakeClock, sleeps: list[float]
) -> None:
    route = api.get("/items/7").respond(200, json=ITEM_7)
    with Demo(service=service(rate_limit=(10.0, 1.0))) as client:
        for _ in range(3):
            get_item(client)
    assert route.call_count == 3
    assert sleeps == pytest.approx([0.1, 0.2])


# -- client construction -------------------------------------------------------------------


def test_timeouts_client_default_override_and_per_operation(api: respx.MockRouter) -> None:
    route = api.get("/items/7").respond(200, json=ITEM_7)
    with Demo() as client:
        get_item(client)
    assert route.calls.last.request.extensions["timeout"] == dict.fromkeys(
        ("connect", "read", "write", "pool"), 30.0
    )
    with Demo(timeout=5.0) as client:
        get_item(client)
        assert route.calls.last.request.extensions["timeout"]["read"] == 5.0
        op = Operation("get_item", "GET", "/items/{id}", timeout=1.5)
        client._call(op, path={"id": 7})
        assert route.calls.last.request.extensions["timeout"]["read"] == 1.5


def test_base_url_setting_overrides_service(monkeypatch: pytest.MonkeyPatch) -> None:
    with respx.mock(base_url="https://eu.api.test") as router:
        route = router.get("/items/7").respond(200, json=ITEM_7)
        with Demo(base_url="https://eu.api.test") as client:
            get_item(client)
        monkeypatch.setenv("DEMO_BASE_URL", "https://eu.api.test")
        with Demo() as client:
            get_item(client)
    assert route.call_count == 2


def test_transport_argument_is_used() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ITEM_7)

    with Demo(transport=httpx.MockTransport(handler)) as client:
        assert get_item(client).id == 7
    assert str(seen[0].url) == "https://api.test/items/7"
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_close_owns_only_its_own_http_client() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=ITEM_7))
    with Demo(transport=transport) as client:
        pass
    assert client._http.is_closed
    mine = httpx.Client(base_url="https://api.test", transport=transport)
    with Demo(http_client=mine):
        pass
    assert not mine.is_closed
    mine.close()


def test_given_http_client_gets_auth_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ITEM_7)

    mine = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(handler))
    with Demo(http_client=mine) as client:
        get_item(client)
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen[0].headers["User-Agent"] == "connector-builder (demo)"


def test_given_http_client_with_query_api_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ITEM_7)

    mine = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(handler))
    auth = ApiKeyAuth(name="api_key", value="{token}", location="query")
    with Demo(token="k1", service=service(auth=auth), http_client=mine) as client:
        get_item(client)
    assert seen[0].url.params["api_key"] == "k1"


def test_given_http_client_without_base_url_still_reaches_the_service() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ITEM_7)

    mine = httpx.Client(transport=httpx.MockTransport(handler))
    with Demo(http_client=mine) as client:
        assert get_item(client).id == 7
    assert str(seen[0].url) == "https://api.test/items/7"


def test_given_http_client_gets_custom_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ITEM_7)

    def sign(request: httpx.Request) -> None:
        request.headers["X-Signed"] = "yes"

    mine = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(handler))
    with Demo(service=service(auth=CustomAuth()), auth=sign, http_client=mine) as client:
        get_item(client)
    assert seen[0].headers.get("X-Signed") == "yes"
