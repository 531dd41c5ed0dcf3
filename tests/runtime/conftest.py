"""Fixtures for the runtime tests: no real sleeping, a controllable clock, a mocked API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import respx

from builder.runtime import resilience
from tests.runtime._clients import BASE_URL, FakeClock


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEMO_TOKEN", "DEMO_BASE_URL", "DEMO_PORT", "DEMO_RATIO", "DEMO_VERBOSE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep the sync and async clients ask for, in order; nothing really sleeps."""
    requested: list[float] = []
    real_async_sleep = asyncio.sleep

    def fake_sleep(seconds: float) -> None:
        requested.append(seconds)

    async def fake_async_sleep(seconds: float, result: object = None) -> object:
        requested.append(seconds)
        return await real_async_sleep(0, result)

    # Patched on the modules themselves: the runtime may import them lazily.
    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.setattr(asyncio, "sleep", fake_async_sleep)
    return requested


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(resilience, "time", fake)
    return fake


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router
