"""Source and Sink roles: batching, metrics, and the error naming unwritten records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from builder.runtime import errors
from builder.runtime.roles import (
    AsyncSinkMixin,
    AsyncSourceMixin,
    Metrics,
    SinkMixin,
    SourceMixin,
)
from tests.runtime._clients import AsyncDemo, Demo, Item, NewItem

pytestmark = pytest.mark.timeout(10)


class Source(SourceMixin):
    def __init__(self, records: list[Any], fail_after: int | None = None) -> None:
        self.records = records
        self.fail_after = fail_after
        self.params: list[dict[str, Any]] = []
        self.pulled = 0

    def _produce(self) -> Iterator[Any]:
        for index, record in enumerate(self.records):
            if self.fail_after is not None and index == self.fail_after:
                raise errors.ServerError("boom", status_code=500)
            self.pulled += 1
            yield record

    def read(self, **params: Any) -> Iterator[Any]:
        self.params.append(params)
        return self._counted(self._produce())


class Sink(SinkMixin):
    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.calls: list[dict[str, Any]] = []

    def write_one(self, **fields: Any) -> None:
        self.calls.append(fields)
        if len(self.calls) == self.fail_on:
            raise errors.UnprocessableEntityError("invalid record", status_code=422)

    def write(self, records: Any) -> int:
        return self._write_all(self.write_one, records)


# -- Source --------------------------------------------------------------------------------


def test_read_batch_splits_into_batches() -> None:
    source = Source(list(range(7)))
    assert list(source.read_batch(3, kind="x")) == [[0, 1, 2], [3, 4, 5], [6]]
    assert source.params == [{"kind": "x"}]
    assert source.metrics == Metrics(records_read=7, batches=3)


def test_read_batch_exact_multiple_and_empty() -> None:
    source = Source(list(range(4)))
    assert list(source.read_batch(2)) == [[0, 1], [2, 3]]
    assert source.metrics.batches == 2
    empty = Source([])
    assert list(empty.read_batch(5)) == []
    assert empty.metrics.batches == 0


def test_read_batch_is_lazy() -> None:
    source = Source(list(range(100)))
    batches = source.read_batch(10)
    assert source.pulled == 0
    assert next(batches) == list(range(10))
    assert source.pulled == 10
    assert source.metrics.records_read == 10


def test_read_batch_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        list(Source([1]).read_batch(0))


def test_read_errors_are_counted_and_raised() -> None:
    source = Source(list(range(5)), fail_after=3)
    with pytest.raises(errors.ServerError):
        list(source.read_batch(2))
    assert source.metrics.records_read == 3
    assert source.metrics.batches == 1
    assert source.metrics.errors == 1


def test_metrics_belong_to_each_instance() -> None:
    a, b = Source([1, 2]), Source([1])
    list(a.read_batch(10))
    assert a.metrics.records_read == 2
    assert b.metrics == Metrics()


# -- Sink ----------------------------------------------------------------------------------


def test_write_all_records() -> None:
    sink = Sink()
    records = [{"n": i} for i in range(5)]
    assert sink.write(records) == 5
    assert sink.calls == records
    assert sink.metrics == Metrics(records_written=5, batches=1)


def test_write_accepts_models_and_generators() -> None:
    sink = Sink()
    assert sink.write(NewItem(name=f"n{i}", note="x" if i else None) for i in range(2)) == 2
    assert sink.calls == [{"name": "n0"}, {"name": "n1", "note": "x"}]


def test_third_of_five_writes_fails() -> None:
    sink = Sink(fail_on=3)
    records = [{"n": i} for i in range(5)]
    with pytest.raises(errors.WriteError) as info:
        sink.write(records)
    exc = info.value
    assert exc.written == 2
    assert exc.failed == records[2:]
    assert all(a is b for a, b in zip(exc.failed, records[2:], strict=True))
    assert len(sink.calls) == 3  # nothing written after the failure
    assert isinstance(exc.__cause__, errors.UnprocessableEntityError)
    assert exc.message.startswith("wrote 2 of 5 records; the rest were not written: ")
    assert "invalid record" in exc.message
    assert sink.metrics == Metrics(records_written=2, batches=0, errors=1)


def test_first_write_fails() -> None:
    sink = Sink(fail_on=1)
    records = [{"n": 1}, {"n": 2}]
    with pytest.raises(errors.WriteError) as info:
        sink.write(records)
    assert info.value.written == 0
    assert info.value.failed == records


def test_write_rejects_unsupported_records() -> None:
    with pytest.raises(TypeError, match="not int"):
        Sink().write([1])


# -- roles over HTTP -----------------------------------------------------------------------


def test_client_write_over_http(api: respx.MockRouter) -> None:
    route = api.post("/items")
    route.side_effect = [
        httpx.Response(201, json={"id": 1, "name": "a"}),
        httpx.Response(201, json={"id": 2, "name": "b"}),
        httpx.Response(422, json={"message": "name taken"}),
        httpx.Response(201, json={"id": 4, "name": "d"}),
        httpx.Response(201, json={"id": 5, "name": "e"}),
    ]
    records = [{"name": n} for n in "abcde"]
    with Demo() as client, pytest.raises(errors.WriteError) as info:
        client.write(records)
    assert route.call_count == 3
    assert info.value.written == 2
    assert info.value.failed == [{"name": "c"}, {"name": "d"}, {"name": "e"}]
    assert "name taken" in str(info.value)


def test_client_read_batch_over_http(api: respx.MockRouter) -> None:
    route = api.get("/items").respond(200, json=[{"id": i, "name": str(i)} for i in range(5)])
    with Demo() as client:
        batches = list(client.read_batch(2, color="red"))
        assert client.metrics.records_read == 5
        assert client.metrics.batches == 3
    assert [[i.id for i in b] for b in batches] == [[0, 1], [2, 3], [4]]
    assert all(isinstance(i, Item) for b in batches for i in b)
    assert route.calls.last.request.url.params["color"] == "red"


# -- async roles ---------------------------------------------------------------------------


class AsyncSource(AsyncSourceMixin):
    def __init__(self, records: list[Any]) -> None:
        self.records = records

    async def _produce(self) -> AsyncIterator[Any]:
        for record in self.records:
            await asyncio.sleep(0)
            yield record

    def read(self, **params: Any) -> AsyncIterator[Any]:
        return self._counted(self._produce())


class AsyncSink(AsyncSinkMixin):
    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.calls: list[dict[str, Any]] = []

    async def write_one(self, **fields: Any) -> None:
        self.calls.append(fields)
        if len(self.calls) == self.fail_on:
            raise errors.ConflictError("exists", status_code=409)


def test_async_read_batch() -> None:
    async def main() -> tuple[list[list[int]], Metrics]:
        source = AsyncSource(list(range(5)))
        batches = [b async for b in source.read_batch(2)]
        return batches, source.metrics

    batches, metrics = asyncio.run(main())
    assert batches == [[0, 1], [2, 3], [4]]
    assert metrics == Metrics(records_read=5, batches=3)


def test_async_read_batch_rejects_bad_size() -> None:
    async def main() -> None:
        async for _ in AsyncSource([1]).read_batch(0):
            pass

    with pytest.raises(ValueError):
        asyncio.run(main())


def test_async_sink_failure() -> None:
    sink = AsyncSink(fail_on=3)
    records = [{"n": i} for i in range(5)]
    with pytest.raises(errors.WriteError) as info:
        asyncio.run(sink._write_all(sink.write_one, records))
    assert info.value.written == 2
    assert info.value.failed == records[2:]
    assert sink.metrics == Metrics(records_written=2, errors=1)

    ok = AsyncSink()
    assert asyncio.run(ok._write_all(ok.write_one, records)) == 5
    assert ok.metrics == Metrics(records_written=5, batches=1)


def test_async_client_roles_over_http(api: respx.MockRouter) -> None:
    api.get("/items").respond(200, json=[{"id": i, "name": str(i)} for i in range(3)])
    posts = api.post("/items")
    posts.side_effect = [
        httpx.Response(201, json={"id": 1, "name": "a"}),
        httpx.Response(409, json={"message": "exists"}),
    ]

    async def main() -> tuple[list[list[int]], errors.WriteError]:
        async with AsyncDemo() as client:
            batches = [[i.id for i in b] async for b in client.read_batch(2)]
            try:
                await client.write([{"name": "a"}, {"name": "b"}, {"name": "c"}])
            except errors.WriteError as exc:
                return batches, exc
        raise AssertionError("no WriteError")

    batches, exc = asyncio.run(main())
    assert batches == [[0, 1], [2]]
    assert exc.written == 1
    assert exc.failed == [{"name": "b"}, {"name": "c"}]
    assert posts.call_count == 2
