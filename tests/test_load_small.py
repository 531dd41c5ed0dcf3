"""The leak-free part of ``tests/benchmarks/load.py``, on a small run.

500 requests at concurrency 50 through the generated ``AsyncOpenAI`` against the local
fake services: every answer right, at most 50 sockets open at once, and after
``aclose()`` the process holds exactly the file descriptors and sockets it held before;
no ``ResourceWarning`` (an unclosed socket or transport) at any point, garbage collection
included. The same for streams abandoned part-way (``break`` out of ``async for``), and for
the sync client driven from threads. Plus the rate limiter on a short run.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from connectors.openai import AsyncOpenAI, OpenAI
from tests.benchmarks.load import MESSAGES, MODEL, RATE, RateLimitedOpenAI, fds

pytestmark = pytest.mark.integration

REQUESTS = 500
CONCURRENCY = 50


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.servers.runner import run_server

    with run_server() as url:
        yield url


@pytest.fixture
def no_resource_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    found = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not found, f"{len(found)} ResourceWarning(s), e.g. {found[:3]}"


async def _workers(n: int, concurrency: int, job: Any) -> dict[str, int]:
    """Run ``job()`` ``n`` times on ``concurrency`` workers; the peak fds and sockets."""
    remaining = [n]
    peak = {"fds": 0, "sockets": 0}

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await job()
            total, sockets = fds()
            peak["fds"], peak["sockets"] = max(peak["fds"], total), max(peak["sockets"], sockets)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return peak


@pytest.mark.timeout(90)
def test_async_load_leaves_no_fd_socket_or_warning_behind(
    server: str, no_resource_warnings: None
) -> None:
    gc.collect()
    before = fds()
    answers: list[str] = []

    async def run() -> dict[str, int]:
        client = AsyncOpenAI(api_key="k", base_url=server + "/v1")
        try:

            async def job() -> None:
                result = await client.create_chat_completion(model=MODEL, messages=MESSAGES)
                answers.append(result.choices[0].message.content or "")

            return await _workers(REQUESTS, CONCURRENCY, job)
        finally:
            await client.aclose()

    peak = asyncio.run(run())
    gc.collect()
    after = fds()
    assert answers == ["echo: hi"] * REQUESTS
    # At most one socket per worker (plus a couple being closed by the pool meanwhile).
    assert peak["sockets"] - before[1] <= CONCURRENCY + 2, f"peak {peak}, baseline {before}"
    assert after == before, f"fds, sockets: {before} before, {after} after aclose"


@pytest.mark.timeout(90)
def test_streams_abandoned_part_way_are_released(server: str, no_resource_warnings: None) -> None:
    gc.collect()
    before = fds()
    seen = [0]

    async def run() -> dict[str, int]:
        client = AsyncOpenAI(api_key="k", base_url=server + "/v1")
        try:

            async def job() -> None:
                stream = await client.stream_chat_completion(
                    model=MODEL, messages=[{"role": "user", "content": "one two three four"}]
                )
                async with stream:
                    async for _chunk in stream:
                        seen[0] += 1
                        break  # abandon the rest of the stream

            return await _workers(100, 20, job)
        finally:
            await client.aclose()

    peak = asyncio.run(run())
    gc.collect()
    assert seen[0] == 100
    assert peak["sockets"] - before[1] <= 20 + 2
    assert fds() == before


@pytest.mark.timeout(90)
def test_sync_client_from_threads_leaves_nothing_behind(
    server: str, no_resource_warnings: None
) -> None:
    gc.collect()
    before = fds()
    with OpenAI(api_key="k", base_url=server + "/v1") as client:

        def job(_: int) -> str:
            result = client.create_chat_completion(model=MODEL, messages=MESSAGES)
            return result.choices[0].message.content or ""

        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(job, range(200)))
    gc.collect()
    assert answers == ["echo: hi"] * 200
    assert fds() == before


@pytest.mark.timeout(60)
def test_rate_limiter_holds_its_rate_on_a_short_run(server: str) -> None:
    """200/s, burst 1: 120 requests at concurrency 50 are sent at 200/s, within 10 %
    (measured between the first and the last send, as the benchmark does)."""
    n = 120
    sends: list[float] = []

    async def run() -> None:
        client = RateLimitedOpenAI(api_key="k", base_url=server + "/v1")
        original = client._http.send

        async def send(request: Any, **kw: Any) -> Any:
            sends.append(time.perf_counter())
            return await original(request, **kw)

        client._http.send = send  # type: ignore[method-assign]
        try:
            await _workers(
                n, 50, lambda: client.create_chat_completion(model=MODEL, messages=MESSAGES)
            )
        finally:
            await client.aclose()

    asyncio.run(run())
    assert len(sends) == n
    achieved = (n - 1) / (max(sends) - min(sends))
    assert abs(achieved / RATE - 1) <= 0.10, f"achieved {achieved:.1f}/s for a rate of {RATE}/s"
