"""A tiny hand-written client over the shared runtime, standing in for generated code."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from builder.runtime.auth import BearerAuth
from builder.runtime.client import AsyncClient, SyncClient
from builder.runtime.config import Setting, resolve_settings
from builder.runtime.operation import Decoder, Operation, Service
from builder.runtime.resilience import RetryPolicy
from builder.runtime.roles import AsyncSinkMixin, AsyncSourceMixin, SinkMixin, SourceMixin

BASE_URL = "https://api.test"
TOKEN = "tok-5ecret-value"

SETTINGS = (
    Setting("token", str, env="DEMO_TOKEN", required=True, secret=True),
    Setting("base_url", str, env="DEMO_BASE_URL"),
)

# No waiting between retries: the tests assert the requested sleeps instead.
FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.0, jitter=False)

SERVICE = Service(
    name="demo",
    base_url=BASE_URL,
    auth=BearerAuth(token="{token}"),
    headers={"X-Service": "demo"},
    retry=FAST_RETRY,
)


def service(**changes: Any) -> Service:
    """SERVICE with some fields replaced."""
    return dataclasses.replace(SERVICE, **changes)


class Item(BaseModel):
    id: int
    name: str


class NewItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    display_name: str | None = Field(default=None, alias="displayName")
    note: str | None = None


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


GET_ITEM: Operation[Item] = Operation("get_item", "GET", "/items/{id}", response=Decoder(Item))
LIST_ITEMS: Operation[list[Item]] = Operation(
    "list_items", "GET", "/items", response=Decoder(list[Item])
)
CREATE_ITEM: Operation[Item] = Operation("create_item", "POST", "/items", response=Decoder(Item))
RAW: Operation[Any] = Operation("raw", "GET", "/raw")


def _settings(token: str | None, base_url: str | None) -> Any:
    return resolve_settings(SETTINGS, {"token": token, "base_url": base_url}, connector="demo")


class Demo(SyncClient, SourceMixin, SinkMixin):
    _service = SERVICE

    def __init__(
        self,
        *,
        token: str | None = TOKEN,
        base_url: str | None = None,
        service: Service | None = None,
        **kw: Any,
    ) -> None:
        if service is not None:
            self._service = service
        super().__init__(_settings(token, base_url), **kw)

    def list_items(self, **query: Any) -> Iterator[Item]:
        return iter(self._call(LIST_ITEMS, query=query))

    def read(self, **query: Any) -> Iterator[Item]:
        return self._counted(self.list_items(**query))

    def create_item(self, **fields: Any) -> Item:
        return self._call(CREATE_ITEM, body=fields)

    def write(self, records: Any) -> int:
        return self._write_all(self.create_item, records)


class AsyncDemo(AsyncClient, AsyncSourceMixin, AsyncSinkMixin):
    _service = SERVICE

    def __init__(
        self,
        *,
        token: str | None = TOKEN,
        base_url: str | None = None,
        service: Service | None = None,
        **kw: Any,
    ) -> None:
        if service is not None:
            self._service = service
        super().__init__(_settings(token, base_url), **kw)

    async def read(self, **query: Any) -> AsyncIterator[Item]:
        for record in await self._call(LIST_ITEMS, query=query):
            self.metrics.records_read += 1
            yield record

    async def create_item(self, **fields: Any) -> Item:
        return await self._call(CREATE_ITEM, body=fields)

    async def write(self, records: Any) -> int:
        return await self._write_all(self.create_item, records)


class FakeClock:
    """Stands in for the ``time`` module inside builder.runtime.resilience."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.epoch = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
