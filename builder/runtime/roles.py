"""Uniform roles that connectors of every kind play: Source and Sink.

A generated client that plays a role implements ``read`` (Source) or writes one record
(Sink) by calling the operation its spec maps onto the role; batching, metrics and the
error that names unwritten records live here, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from builder.runtime.errors import ConnectorError, WriteError

__all__ = ["AsyncSinkMixin", "AsyncSourceMixin", "Metrics", "SinkMixin", "SourceMixin"]

T = TypeVar("T")


@dataclass(slots=True)
class Metrics:
    """Counters a role keeps for its client."""

    records_read: int = 0
    records_written: int = 0
    batches: int = 0
    errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


class _Metered:
    _metrics: Metrics | None = None

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:
            self._metrics = Metrics()
        return self._metrics


class SourceMixin(_Metered):
    """``read()`` comes from the generated client; this adds counting and batching."""

    def _counted(self, items: Iterable[T]) -> Iterator[T]:
        metrics = self.metrics
        iterator = iter(items)
        try:
            for item in iterator:
                metrics.records_read += 1
                yield item
        except ConnectorError:
            metrics.errors += 1
            raise
        finally:
            # Stopping early closes the source now (a transport acknowledges or hands back
            # its messages there), not whenever the iterator happens to be freed.
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def read_batch(self, batch_size: int = 100, **params: Any) -> Iterator[list[Any]]:
        """The records of ``read(**params)`` in lists of at most ``batch_size``."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        records = iter(self.read(**params))  # type: ignore[attr-defined]
        while batch := list(islice(records, batch_size)):
            self.metrics.batches += 1
            yield batch


class AsyncSourceMixin(_Metered):
    async def _counted(self, items: AsyncIterable[T]) -> AsyncIterator[T]:
        metrics = self.metrics
        iterator = aiter(items)
        try:
            async for item in iterator:
                metrics.records_read += 1
                yield item
        except ConnectorError:
            metrics.errors += 1
            raise
        finally:
            # As SourceMixin._counted: stopping early closes the source now.
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    async def read_batch(self, batch_size: int = 100, **params: Any) -> AsyncIterator[list[Any]]:
        """The records of ``read(**params)`` in lists of at most ``batch_size``."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        batch: list[Any] = []
        async for record in self.read(**params):  # type: ignore[attr-defined]
            batch.append(record)
            if len(batch) == batch_size:
                self.metrics.batches += 1
                yield batch
                batch = []
        if batch:
            self.metrics.batches += 1
            yield batch


def _as_kwargs(record: Any) -> dict[str, Any]:
    if isinstance(record, dict):
        return record
    dump = getattr(record, "model_dump", None)
    if dump is None:
        raise TypeError(f"a record must be a dict or a model, not {type(record).__name__}")
    return dump(exclude_none=True)  # type: ignore[no-any-return]


class SinkMixin(_Metered):
    """``write(records)`` over the generated client's one-record write operation."""

    def _write_all(self, write_one: Callable[..., Any], records: Iterable[Any]) -> int:
        metrics = self.metrics
        pending = list(records)
        written = 0
        for index, record in enumerate(pending):
            try:
                write_one(**_as_kwargs(record))
            except ConnectorError as exc:
                metrics.errors += 1
                raise WriteError(
                    f"wrote {written} of {len(pending)} records; the rest were not written: {exc}",
                    written=written,
                    failed=pending[index:],
                ) from exc
            written += 1
            metrics.records_written += 1
        metrics.batches += 1
        return written


class AsyncSinkMixin(_Metered):
    async def _write_all(
        self, write_one: Callable[..., Awaitable[Any]], records: Iterable[Any]
    ) -> int:
        metrics = self.metrics
        pending = list(records)
        written = 0
        for index, record in enumerate(pending):
            try:
                await write_one(**_as_kwargs(record))
            except ConnectorError as exc:
                metrics.errors += 1
                raise WriteError(
                    f"wrote {written} of {len(pending)} records; the rest were not written: {exc}",
                    written=written,
                    failed=pending[index:],
                ) from exc
            written += 1
            metrics.records_written += 1
        metrics.batches += 1
        return written
