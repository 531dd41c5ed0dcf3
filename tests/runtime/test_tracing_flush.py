"""A flush (``write_queued``, ``Tracer.flush``, ``close``, a provider's ``force_flush``)
hands on the calls queued before it and returns, however many calls keep coming: it waits
for its own mark in the queue, not for the queue to be empty."""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path as FilePath
from typing import Any

import pytest

from builder.runtime import sinks as sinks_module
from builder.runtime.tracing import JsonlSink, OpenTelemetrySink, TracedCall, Tracer
from tests.runtime._forking import in_forked_child

pytestmark = pytest.mark.timeout(60)

_sleep = time.sleep  # the real one: the runtime tests' fixture makes time.sleep a no-op

LOAD_SECONDS = 15.0  # how long the steady callers go on at most (a flush waiting for an
# empty queue returns only when they stop)


def _call(name: str) -> TracedCall:
    return TracedCall(1_700_000_000.0, "demo", name)


class SlowJsonlSink(JsonlSink):
    """Takes ``delay`` per batch: fewer calls a second than SteadyCalls makes, so the queue
    is never empty while they go on."""

    delay = 0.005

    def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
        _sleep(self.delay)
        return super()._hand_on(entries)


class SteadyCalls:
    """Threads emitting calls named ``load`` without pause, until stopped (or for
    LOAD_SECONDS); errors from a closed sink are counted, not raised."""

    def __init__(self, emit: Callable[[TracedCall], None], threads: int = 2) -> None:
        self.stop = threading.Event()
        self.emitted = 0
        self.refused = 0
        self._emit = emit
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self._emit(_call("load"))
                self.emitted += 1
            except Exception:
                self.refused += 1
            _sleep(0.0002)  # some 4,000 calls a second each: more than the sink takes

    def __enter__(self) -> SteadyCalls:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 5
        while self.emitted < 200 and time.monotonic() < deadline:
            _sleep(0.001)  # under way
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    @property
    def running(self) -> bool:
        return not self.stop.is_set() and any(t.is_alive() for t in self._threads)


def _names(target: FilePath) -> list[str]:
    """The calls in the file's complete lines (a batch may be half-written as it is read)."""
    lines = target.read_text().split("\n")[:-1]
    return [json.loads(line)["operation"] for line in lines]


def _memory_provider() -> tuple[Any, Any]:
    """An SDK provider whose spans are exported to memory as each ends."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def target(tmp_path: FilePath) -> Iterator[FilePath]:
    yield tmp_path / "t.jsonl"


@pytest.mark.parametrize("interval", [1.0, None])
@pytest.mark.parametrize("how", ["write_queued", "Tracer.flush"])
def test_a_flush_under_steady_calls_returns_once_what_was_queued_before_it_is_written(
    target: FilePath, interval: float | None, how: str
) -> None:
    sink = SlowJsonlSink(target, interval=interval, batch_size=16)
    tracer = Tracer(sink)
    with SteadyCalls(sink.emit) as load:
        for n in range(50):
            sink.emit(_call(f"mine{n}"))
        started = time.monotonic()
        (sink.write_queued if how == "write_queued" else tracer.flush)()
        took = time.monotonic() - started
        still_running = load.running
        written = _names(target)
    assert still_running, "the calls stopped before the flush returned"
    assert took < LOAD_SECONDS / 2
    mine = [name for name in written if name.startswith("mine")]
    assert mine == [f"mine{n}" for n in range(50)]  # all of them, in order, at return
    sink.delay = 0  # the calls queued since: written at once
    sink.close()
    assert load.refused == 0


@pytest.mark.parametrize("interval", [1.0, None])
def test_a_call_whose_batch_fills_hands_on_one_batch_under_steady_calls(
    target: FilePath, interval: float | None
) -> None:
    # Threads queue without pause while the sink takes 20 ms a batch: the call that fills
    # a batch hands that batch on and returns; what is queued meanwhile goes to the writer
    # thread (before, that call's thread went on handing on as long as the calls came).
    sink = SlowJsonlSink(target, interval=interval, batch_size=16)
    sink.delay = 0.02
    longest = [0.0]

    def timed_emit(call: TracedCall) -> None:
        started = time.monotonic()
        sink.emit(call)
        longest[0] = max(longest[0], time.monotonic() - started)

    with SteadyCalls(timed_emit, threads=3) as load:
        _sleep(1.0)
        still_running = load.running
    assert still_running, "the calls stopped early"
    assert longest[0] < 0.3, f"a call was kept {longest[0]:.2f} s handing on others' calls"
    sink.delay = 0
    sink.close()
    assert len(_names(target)) == load.emitted and load.refused == 0


def test_close_under_steady_calls_returns_and_writes_what_came_before_it(
    target: FilePath,
) -> None:
    sink = SlowJsonlSink(target, interval=1.0, batch_size=16)
    with SteadyCalls(sink.emit) as load:
        for n in range(50):
            sink.emit(_call(f"mine{n}"))
        started = time.monotonic()
        sink.close()
        took = time.monotonic() - started
        still_running = load.running
        written = _names(target)
        _sleep(0.1)  # calls after close
    assert still_running and took < LOAD_SECONDS / 2
    assert [name for name in written if name.startswith("mine")] == [f"mine{n}" for n in range(50)]
    assert _names(target) == written  # nothing written once closed


def test_a_flush_whose_lock_holder_never_hands_on_does_it_itself(target: FilePath) -> None:
    # The thread handing on died (or hangs) holding the lock: the flush does not wait for
    # it forever; it hands on itself once the lock is free.
    sink = JsonlSink(target, interval=None)
    sink.emit(_call("a"))
    sink._lock.acquire()
    release = threading.Timer(0.3, sink._lock.release)
    release.start()
    started = time.monotonic()
    sink.write_queued()
    assert 0.25 < time.monotonic() - started < 5
    assert _names(target) == ["a"]
    sink.close()


def test_a_flush_mark_never_reaches_the_sink_and_the_count_returns_to_zero(
    target: FilePath,
) -> None:
    seen: list[Any] = []

    class Recording(JsonlSink):
        def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
            seen.extend(entries)
            return super()._hand_on(entries)

    sink = Recording(target, interval=None)
    for n in range(3):
        sink.emit(_call(f"c{n}"))
        sink.write_queued()
    sink.write_queued()  # an empty queue: only the mark
    assert all(type(entry) is TracedCall for entry in seen) and len(seen) == 3
    assert sink._flushes == 0
    sink.close()


def test_the_providers_force_flush_under_steady_calls_returns() -> None:
    provider, exporter = _memory_provider()

    class SlowSink(OpenTelemetrySink):
        delay = 0.005

        def _hand_on(self, entries: list[Any]) -> Exception | None:
            _sleep(self.delay)
            return super()._hand_on(entries)

    sink = SlowSink(provider, interval=1.0, batch_size=16)
    with SteadyCalls(sink.emit) as load:
        for n in range(20):
            sink.emit(_call(f"mine{n}"))
        started = time.monotonic()
        assert provider.force_flush(20_000) is True
        took = time.monotonic() - started
        still_running = load.running
        names = [span.name for span in exporter.get_finished_spans()]
    assert still_running and took < LOAD_SECONDS / 2
    assert [n for n in names if n.startswith("demo.mine")] == [f"demo.mine{n}" for n in range(20)]
    sink.delay = 0
    sink.close()
    provider.shutdown()


def test_a_flush_mark_dropped_from_a_full_exporter_queue_ends_its_flush() -> None:
    # The exporter hangs; the queue is bounded: the calls a flush waited for are dropped
    # (and reported), so the flush has nothing left to wait for.
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    release = threading.Event()
    exported: list[str] = []

    class Hanging(SpanExporter):  # type: ignore[misc]
        def export(self, spans: Any) -> SpanExportResult:
            release.wait(30)
            exported.extend(span.name for span in spans)
            return SpanExportResult.SUCCESS

    sink = OpenTelemetrySink(exporter=Hanging(), interval=0.05, batch_size=4, max_queued=8)
    for n in range(4):
        sink.emit(_call(f"first{n}"))  # a full batch: the writer thread hangs in export
    deadline = time.monotonic() + 5
    while sink._queue and time.monotonic() < deadline:
        _sleep(0.005)
    sink.emit(_call("waited"))
    done = threading.Event()
    flusher = threading.Thread(target=lambda: (sink.write_queued(), done.set()), daemon=True)
    flusher.start()
    _sleep(0.1)
    assert not done.is_set()  # its call is queued behind the hanging export
    for n in range(12):
        sink.emit(_call(f"later{n}"))  # more than max_queued: the oldest are dropped
    assert done.wait(5)
    release.set()
    flusher.join(5)
    sink.close()
    assert "demo.waited" not in exported and exported[:4] == [f"demo.first{n}" for n in range(4)]


def test_a_forked_child_has_no_flush_of_its_parents_to_look_for(target: FilePath) -> None:
    sink = JsonlSink(target, interval=None)
    with sink._state_lock:
        sink._flushes += 1  # a flush of the parent's under way when it forks
    sink._queue.append(sinks_module._FlushMark())

    def child() -> None:
        assert sink._flushes == 0 and not sink._queue

    in_forked_child(child)
    sink._met([sink._queue.pop()])
    assert sink._flushes == 0
    sink.close()


def test_a_call_left_to_a_flush_that_stopped_at_its_mark_goes_to_the_writer_thread(
    target: FilePath,
) -> None:
    # After a failed batch each call is handed on at once; one whose thread found the
    # flush handing on was left to it: the flush stops at its mark and hurries the writer.
    in_batch, go = threading.Semaphore(0), threading.Semaphore(0)

    class Gated(JsonlSink):
        gated = 0

        def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
            if self.gated:
                self.gated -= 1
                in_batch.release()
                go.acquire()
            return super()._hand_on(entries)

    sink = Gated(target, interval=None)
    sink._direct = True  # as after a failed batch
    sink.gated = 1
    sink._queue.append(_call("c0"))
    flusher = threading.Thread(target=sink.write_queued)
    flusher.start()
    in_batch.acquire()
    sink.emit(_call("c1"))  # the lock is busy: left to the flush
    go.release()
    flusher.join(5)
    deadline = time.monotonic() + 5
    while _names(target) != ["c0", "c1"] and time.monotonic() < deadline:
        _sleep(0.005)
    assert _names(target) == ["c0", "c1"]
    sink.close()


def test_the_providers_force_flush_waits_for_a_batch_under_way() -> None:
    # The queue is empty while the writer thread makes the spans of the batch it took:
    # force_flush still returns only once they are made.
    provider, exporter = _memory_provider()
    taken = threading.Event()

    class Slow(OpenTelemetrySink):
        def _hand_on(self, entries: list[Any]) -> Exception | None:
            taken.set()
            _sleep(0.3)
            return super()._hand_on(entries)

    sink = Slow(provider, interval=0.01)
    sink.emit(_call("c0"))
    assert taken.wait(5) and not sink._queue
    assert provider.force_flush(5_000) is True
    assert [span.name for span in exporter.get_finished_spans()] == ["demo.c0"]
    sink.close()
    provider.shutdown()


class Gated(JsonlSink):
    """Holds its next ``gated`` batches (handed on by another thread than the test's)
    until the test lets each go: ``in_batch`` says one is held, ``go`` lets it go."""

    gated = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_batch, self.go = threading.Semaphore(0), threading.Semaphore(0)

    def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
        if self.gated and threading.current_thread() is not threading.main_thread():
            self.gated -= 1
            self.in_batch.release()
            self.go.acquire()
        return super()._hand_on(entries)


def test_a_call_made_while_close_hands_on_is_written_by_its_own_thread(
    target: FilePath,
) -> None:
    sink = Gated(target, interval=None)
    sink.gated = 1
    sink.emit(_call("c0"))
    closer = threading.Thread(target=sink.close)
    closer.start()
    assert sink.in_batch.acquire(timeout=5)  # close hands c0 on
    sink.emit(_call("c1"))  # closed: not queued, not left to close
    assert not sink._queue
    sink.go.release()
    closer.join(5)
    assert sorted(_names(target)) == ["c0", "c1"]
    with pytest.raises(ValueError, match="closed"):
        sink.emit(_call("c2"))  # after close: raised on its call


def test_a_call_traced_while_the_exit_handler_hands_on_is_written(target: FilePath) -> None:
    sink = Gated(target, interval=None)
    sink.gated = 1
    sink.emit(_call("c0"))
    at_exit = threading.Thread(target=sinks_module._write_at_exit)
    at_exit.start()
    assert sink.in_batch.acquire(timeout=5)
    sink.emit(_call("c1"))  # "a call traced after the exit handler is handed on at once"
    sink.go.release()
    at_exit.join(5)
    assert sorted(_names(target)) == ["c0", "c1"] and not sink._queue
    sink.close()


def test_a_flush_returns_once_its_mark_is_met_not_after_the_calls_queued_behind_it(
    target: FilePath,
) -> None:
    # The writer thread takes [mark, 300 calls] in one batch: the flush, queued first with
    # nothing before it, is met before those calls are handed on.
    class PerCall(JsonlSink):
        def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
            _sleep(0.002 * len(entries))  # 2 ms a call: the 300 take 0.6 s
            return super()._hand_on(entries)

    sink = PerCall(target, interval=None, batch_size=10_000)
    with sink._lock:  # hold the hand-on until the batch holds both
        flusher = threading.Thread(target=sink.write_queued)
        flusher.start()
        _wait_for_queue(sink, 1)
        for n in range(300):
            sink.emit(_call(f"later{n}"))
    started = time.monotonic()
    flusher.join(10)
    took = time.monotonic() - started
    assert took < 0.4, took
    sink.close()
    assert len(_names(target)) == 300


def _wait_for_queue(sink: JsonlSink, length: int) -> None:
    deadline = time.monotonic() + 5
    while len(sink._queue) < length and time.monotonic() < deadline:
        _sleep(0.001)
    assert len(sink._queue) >= length


def test_a_child_forked_while_its_parent_hands_on_a_flush_looks_for_its_own_marks(
    target: FilePath,
) -> None:
    # A handler that forks while a flush's batch is handed on: the child finishes that
    # batch and meets its parent's mark too; its own next flush still keeps its mark out
    # of the batch it hands on.
    child_target = target.with_suffix(".child")

    class Forking(JsonlSink):
        child = False

        def _hand_on(self, entries: list[TracedCall]) -> Exception | None:
            if not self.child and os.fork() == 0:
                self.child = True
                self._file = open(child_target, "ab", buffering=0)  # noqa: SIM115
            return super()._hand_on(entries)

    sink = Forking(target, interval=None)
    sink.emit(_call("parent"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        sink.write_queued()  # returns in the child too
    if sink.child:
        code = 1
        try:
            sink.emit(_call("child"))
            sink.write_queued()  # a mark reaching the sink would fail to encode
            code = 0 if sink._flushes == 0 and not sink._queue else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(-1, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _names(target) == ["parent"]
    assert _names(child_target) == ["parent", "child"]  # its inherited batch, then its own
    sink.close()
