"""The async client: the same pipeline through asyncio, and many calls at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import respx

from builder.runtime import errors
from builder.runtime.auth import ApiKeyAuth
from builder.runtime.resilience import RetryPolicy
from tests.runtime._clients import (
    CREATE_ITEM,
    GET_ITEM,
    TOKEN,
    AsyncDemo,
    FakeClock,
    Item,
    NewItem,
    service,
)

pytestmark = pytest.mark.timeout(10)

ITEM_7 = {"id": 7, "name": "seven"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def get_item(item_id: Any = 7, **kw: Any) -> Item:
    async with AsyncDemo(**kw) as client:
        return await client._call(GET_ITEM, path={"id": item_id})


def test_success_with_auth_header(api: respx.MockRouter) -> None:
    route = api.get("/items/7").respond(200, json=ITEM_7)
    assert run(get_item()) == Item(id=7, name="seven")
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == "connector-builder (demo)"


def test_body_and_query(api: respx.MockRouter) -> None:
    route = api.post("/items").respond(201, json=ITEM_7)

    async def main() -> Item:
        async with AsyncDemo() as client:
            return await client._call(
                CREATE_ITEM, query={"dry": None, "tag": ["a", "b"]}, body=NewItem(name="n")
            )

    assert run(main()).id == 7
    request = route.calls.last.request
    assert request.content == b'{"name":"n"}'
    assert request.url.params.multi_items() == [("tag", "a"), ("tag", "b")]


def test_429_then_success_sleeps_retry_after(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.get("/items/7")
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "1.5"}),
        httpx.Response(200, json=ITEM_7),
    ]
    assert run(get_item()).id == 7
    assert route.call_count == 2
    assert sleeps == [1.5]


def test_server_errors_exhaust_retries(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.get("/items/7").respond(502)
    retry = RetryPolicy(attempts=3, initial_delay=0.25, multiplier=2, jitter=False)
    with pytest.raises(errors.ServerError) as info:
        run(get_item(retry=retry))
    assert info.value.status_code == 502
    assert route.call_count == 3
    assert sleeps == [0.25, 0.5]
    assert "(after 3 attempts)" in str(info.value)


def test_not_found(api: respx.MockRouter) -> None:
    api.get("/items/7").respond(404, json={"detail": "missing"})
    with pytest.raises(errors.NotFoundError) as info:
        run(get_item())
    assert str(info.value) == "demo.get_item: GET https://api.test/items/7 -> 404: missing"


def test_timeouts(api: respx.MockRouter) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(errors.TimeoutError) as info:
        run(get_item())
    assert route.call_count == 3
    assert not isinstance(info.value, httpx.HTTPError)


def test_connection_errors(api: respx.MockRouter) -> None:
    route = api.get("/items/7").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(errors.ConnectionFailedError, match="refused"):
        run(get_item())
    assert route.call_count == 3


def test_validation_error(api: respx.MockRouter) -> None:
    api.get("/items/7").respond(200, json={"id": "seven"})
    with pytest.raises(errors.ResponseValidationError, match="id"):
        run(get_item())


def test_query_api_key_scrubbed(api: respx.MockRouter) -> None:
    api.get("/items/7").respond(500, text="key sekrit-key was rejected")
    auth = ApiKeyAuth(name="api_key", value="{token}", location="query")
    with pytest.raises(errors.ServerError) as info:
        run(get_item(token="sekrit-key", service=service(auth=auth)))
    assert "sekrit-key" not in str(info.value)
    assert "sekrit-key" not in info.value.body
    assert "sekrit-key" not in info.value.url


def test_fifty_concurrent_calls(api: respx.MockRouter) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"id": n, "name": f"n{n}"})

    route = api.get(path__regex=r"^/items/\d+$").mock(side_effect=answer)

    async def main() -> list[Item]:
        async with AsyncDemo() as client:
            return await asyncio.gather(
                *(client._call(GET_ITEM, path={"id": n}) for n in range(50))
            )

    results = run(main())
    assert [item.id for item in results] == list(range(50))
    assert route.call_count == 50


def test_concurrent_calls_with_retries(api: respx.MockRouter, sleeps: list[float]) -> None:
    seen: dict[str, int] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen[path] = seen.get(path, 0) + 1
        if seen[path] == 1:
            return httpx.Response(503)
        n = int(path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"id": n, "name": "x"})

    api.get(path__regex=r"^/items/\d+$").mock(side_effect=answer)

    async def main() -> list[Item]:
        async with AsyncDemo() as client:
            return await asyncio.gather(
                *(client._call(GET_ITEM, path={"id": n}) for n in range(20))
            )

    assert [i.id for i in run(main())] == list(range(20))
    assert set(seen.values()) == {2}
    assert sleeps == [0.0] * 20


def test_circuit_breaker(api: respx.MockRouter, clock: FakeClock) -> None:
    route = api.get("/items/7")
    route.side_effect = [httpx.Response(500), httpx.Response(500), httpx.Response(200, json=ITEM_7)]
    svc = service(circuit_breaker=(2, 10.0), retry=RetryPolicy(attempts=1))

    async def main() -> Item:
        async with AsyncDemo(service=svc) as client:
            for _ in range(2):
                with pytest.raises(errors.ServerError):
                    await client._call(GET_ITEM, path={"id": 7})
            with pytest.raises(errors.CircuitOpenError):
                await client._call(GET_ITEM, path={"id": 7})
            clock.advance(10)
            return await client._call(GET_ITEM, path={"id": 7})

    assert run(main()).id == 7
    assert route.call_count == 3


def test_cancelled_trial_does_not_wedge_the_circuit(clock: FakeClock) -> None:
    """A half-open trial call that is cancelled must not keep the circuit blocked forever."""
    state: dict[str, Any] = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] == 1:
            return httpx.Response(500)
        if state["n"] == 2:
            await state["hang"].wait()  # the trial hangs until cancelled
        return httpx.Response(200, json=ITEM_7)

    svc = service(circuit_breaker=(1, 10.0), retry=RetryPolicy(attempts=1))

    async def main() -> Item:
        state["hang"] = asyncio.Event()
        async with AsyncDemo(service=svc, transport=httpx.MockTransport(handler)) as client:
            with pytest.raises(errors.ServerError):
                await client._call(GET_ITEM, path={"id": 7})
            clock.advance(10)
            trial = asyncio.ensure_future(client._call(GET_ITEM, path={"id": 7}))
            while state["n"] < 2:
                await asyncio.sleep(0)
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            clock.advance(10)
            return await client._call(GET_ITEM, path={"id": 7})

    assert run(main()).id == 7
    assert state["n"] == 3


def test_aclose_owns_only_its_own_http_client() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=ITEM_7))

    async def main() -> tuple[bool, bool]:
        async with AsyncDemo(transport=transport) as client:
            await client._call(GET_ITEM, path={"id": 7})
        mine = httpx.AsyncClient(base_url="https://api.test", transport=transport)
        async with AsyncDemo(http_client=mine) as other:
            assert (await other._call(GET_ITEM, path={"id": 7})).id == 7
        closed = mine.is_closed
        await mine.aclose()
        return client._http.is_closed, closed

    assert run(main()) == (True, False)
