"""LoggingSink's and OpenTelemetrySink's batches: when queued calls become log records and
spans (write_queued, Tracer.flush, close, a full batch, the interval, exit), what a record
or span keeps of the moment the call ended (time, thread, current span), fork, and failed
batches (a handler or span processor that raises)."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path as FilePath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.runtime.sinks import _log_line
from builder.runtime.tracing import (
    SWITCH_OFF_AFTER,
    LoggingSink,
    MemorySink,
    OpenTelemetrySink,
    TracedCall,
    TracedError,
    Tracer,
)
from tests.runtime._forking import in_forked_child

pytestmark = pytest.mark.timeout(30)

REPO = FilePath(__file__).resolve().parents[2]
CI = os.environ.get("CI") == "true"


def _call(n: int = 0, **fields: Any) -> TracedCall:
    return TracedCall(1_700_000_000.0 + n, "demo", f"op{n}", **fields)


def _pause(seconds: float) -> None:
    """A real pause (the runtime tests' ``sleeps`` fixture makes ``time.sleep`` a no-op)."""
    threading.Event().wait(seconds)


def _op(record: Any) -> str:
    """The operation of the call a LoggingSink's record carries."""
    return str(record.traced_call.operation)


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    """Poll until ``condition()``; returns how long it took (fails after ``seconds``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not met within {seconds} s")
        _pause(0.005)
    return time.monotonic() - started


# -- LoggingSink ---------------------------------------------------------------------------


class Recorder(logging.Handler):
    """Keeps each record and the thread that handled it; raises on the records
    ``fail_on`` picks (a broken handler)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.handled_on: list[threading.Thread] = []
        self.attempts = 0
        self.fail_on: Callable[[logging.LogRecord], bool] = lambda record: False

    def emit(self, record: logging.LogRecord) -> None:
        self.attempts += 1
        if self.fail_on(record):
            raise RuntimeError(f"handler failed on {_op(record)}")
        self.records.append(record)
        self.handled_on.append(threading.current_thread())

    @property
    def operations(self) -> list[str]:
        return [_op(record) for record in self.records]


def _recorded_logger() -> tuple[logging.Logger, Recorder]:
    logger = logging.getLogger(f"tests.tracing_sinks.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    recorder = Recorder()
    logger.addHandler(recorder)
    return logger, recorder


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Recorder]]:
    logger, recorder = _recorded_logger()
    yield logger, recorder
    logger.removeHandler(recorder)


def test_the_default_logging_sink_logs_within_a_second_on_its_writer_thread(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger)
    assert (sink.flush, sink.interval, sink.batch_size) == (False, 1.0, 256)
    sink.emit(_call(0))
    assert recorder.records == []  # queued: the call logged nothing
    waited = _wait_for(lambda: len(recorder.records) == 1, seconds=3.0)
    assert waited < 2.5
    [handler_thread] = recorder.handled_on
    assert handler_thread.name == "LoggingSink writer"  # handed on off the call's path
    assert recorder.records[0].threadName == threading.current_thread().name  # the caller's
    sink.close()


@pytest.mark.parametrize("how", ["write_queued", "Tracer.flush", "close", "Tracer.close"])
def test_nothing_is_logged_until_the_queue_is_handed_on(
    logged: tuple[logging.Logger, Recorder], how: str
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=60)
    tracer = Tracer(sink)
    for n in range(3):
        tracer.emit(_call(n))
    _pause(0.05)
    assert recorder.records == []
    {
        "write_queued": sink.write_queued,
        "Tracer.flush": tracer.flush,
        "close": sink.close,
        "Tracer.close": tracer.close,
    }[how]()
    assert recorder.operations == ["op0", "op1", "op2"]
    assert all(thread is threading.current_thread() for thread in recorder.handled_on)
    tracer.emit(_call(3))
    if how.endswith("close"):
        assert recorder.operations[-1] == "op3"  # closed: each call is logged at once
    else:
        assert len(recorder.records) == 3  # queued again
        sink.close()
        assert recorder.operations[-1] == "op3"
    assert tracer.switched_off == []


def test_records_come_in_emit_order_each_dated_when_its_call_ended(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, level="WARNING", interval=None)
    # Emit order differs from both start and end order: the records keep emit order.
    calls = [
        _call(5, latency=0.375),
        _call(1, latency=9.5, request_model="m", tokens_input=3, tokens_output=4),
        _call(3, latency=0.0, error=TracedError("TimeoutError", "took too long")),
    ]
    for call in calls:
        sink.emit(call)
    assert recorder.records == []
    sink.write_queued()
    assert recorder.operations == ["op5", "op1", "op3"]
    reference = logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)
    offset = reference.relativeCreated - reference.created * 1000  # -start of logging, ms
    for record, call in zip(recorder.records, calls, strict=True):
        ended = call.timestamp + call.latency
        assert record.traced_call is call  # type: ignore[attr-defined]
        assert record.name == logger.name and record.levelno == logging.WARNING
        assert record.getMessage() == _log_line(call)
        assert record.created == pytest.approx(ended, abs=1e-6)
        assert record.msecs == pytest.approx(int(round(ended % 1 * 1000, 6)), abs=1e-9)
        assert record.relativeCreated - record.created * 1000 == pytest.approx(offset, abs=1.0)
        # A formatter writes the call's end, not the moment the batch was logged.
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ended))
        assert logging.Formatter("%(asctime)s").format(record) == (
            f"{stamp},{int(record.msecs):03d}"
        )
    assert recorder.records[0].msecs == 375.0
    assert recorder.records[1].getMessage() == "demo.op1 9500.0 ms model=m tokens=3/4"
    sink.close()


def test_a_record_names_the_thread_that_emitted_it_not_the_one_that_logged_it(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=None)
    emitter = threading.Thread(target=lambda: sink.emit(_call(0)), name="emitter-7")
    emitter.start()
    emitter.join()
    sink.emit(_call(1))
    sink.write_queued()  # from the main thread
    first, second = recorder.records
    assert (first.thread, first.threadName) == (emitter.ident, "emitter-7")
    main = threading.current_thread()
    assert (second.thread, second.threadName) == (main.ident, main.name)
    assert recorder.handled_on == [main, main]  # both logged here
    sink.close()


def test_a_logger_not_enabled_when_the_call_ends_queues_nothing(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, level="INFO", interval=0.01)
    logger.setLevel(logging.WARNING)  # raised after the sink was made
    sink.emit(_call(0))
    assert len(sink._queue) == 0 and sink._clock is None  # not even a writer thread
    sink.write_queued()
    assert recorder.records == []
    logger.setLevel(logging.INFO)
    sink.emit(_call(1))
    assert len(sink._queue) == 1
    sink.close()
    assert recorder.operations == ["op1"]


def test_a_full_batch_is_logged_on_the_call_that_fills_it(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=None, batch_size=2)
    sink.emit(_call(0))
    assert recorder.records == []
    sink.emit(_call(1))  # fills the batch: logged before emit returns, on this thread
    assert recorder.operations == ["op0", "op1"]
    assert recorder.handled_on == [threading.current_thread()] * 2
    sink.emit(_call(2))
    assert len(recorder.records) == 2
    sink.emit(_call(3))
    assert recorder.operations == ["op0", "op1", "op2", "op3"]
    sink.close()


def test_a_short_interval_logs_without_any_flush(logged: tuple[logging.Logger, Recorder]) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=0.05)
    sink.emit(_call(0))
    sink.emit(_call(1))
    _wait_for(lambda: len(recorder.records) == 2, seconds=2.0)
    assert recorder.operations == ["op0", "op1"]
    assert {thread.name for thread in recorder.handled_on} == {"LoggingSink writer"}
    # Idle again: the next call starts a new clock.
    sink.emit(_call(2))
    _wait_for(lambda: len(recorder.records) == 3, seconds=2.0)
    assert recorder.operations == ["op0", "op1", "op2"]
    assert all(r.threadName == threading.current_thread().name for r in recorder.records)
    sink.close()


def test_a_logging_sink_dropped_unclosed_logs_what_it_queued(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=60)
    sink.emit(_call(0))
    thread = sink._clock
    assert thread is not None and thread.is_alive()
    del sink
    gc.collect()
    assert recorder.operations == ["op0"]
    thread.join(5)
    assert not thread.is_alive()


def test_a_record_whose_handler_raises_is_lost_alone_and_the_error_is_raised(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    recorder.fail_on = lambda record: _op(record) == "op1"
    sink = LoggingSink(logger, interval=None)
    for n in range(4):
        sink.emit(_call(n))
    with pytest.raises(RuntimeError, match="failed on op1"):
        sink.write_queued()
    assert recorder.operations == ["op0", "op2", "op3"]  # the others went through
    assert recorder.attempts == 4
    sink.close()


def test_a_batch_that_failed_on_the_writer_thread_is_raised_by_the_next_emit(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    recorder.fail_on = lambda record: _op(record) == "op1"
    sink = LoggingSink(logger, interval=0.01)
    with sink._lock:  # the writer thread waits: the three calls are one batch
        for n in range(3):
            sink.emit(_call(n))
    _wait_for(lambda: sink._unreported is not None)
    assert recorder.operations == ["op0", "op2"]
    with pytest.raises(RuntimeError, match="failed on op1"):
        sink.emit(_call(3))  # logged at once, then the writer thread's error raised
    assert recorder.operations == ["op0", "op2", "op3"]
    assert recorder.handled_on[-1] is threading.current_thread()
    sink.emit(_call(4))  # reported once: this one is queued again, and raises nothing
    assert not sink._direct
    sink.close()
    assert recorder.operations == ["op0", "op2", "op3", "op4"]


def test_a_handler_that_always_raises_switches_the_sink_off_after_three_failures(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    recorder.fail_on = lambda record: True
    sink, memory = LoggingSink(logger, interval=None, batch_size=2), MemorySink()
    tracer = Tracer(sink, memory)
    slot = tracer._slots[0]
    tracer.emit(_call(0))  # queued
    assert (slot.failures, recorder.attempts) == (0, 0)
    tracer.emit(_call(1))  # fills the batch, which fails: counted on this call
    assert (slot.failures, recorder.attempts) == (1, 2)
    tracer.emit(_call(2))  # handed on at once after a failed batch: fails, counted
    assert (slot.failures, recorder.attempts) == (2, 3)
    with pytest.warns(RuntimeWarning, match="failed 3 times in a row") as caught:
        tracer.emit(_call(3))
    assert recorder.attempts == 4
    assert "LoggingSink(" in str(caught[0].message) and "RuntimeError" in str(caught[0].message)
    assert tracer.switched_off == [sink] and tracer.sinks == [memory]
    tracer.emit(_call(4))
    assert recorder.attempts == 4 and len(memory) == 5  # the sink is left alone now
    assert SWITCH_OFF_AFTER == 3


def test_a_logging_sink_that_recovers_goes_back_to_batches_and_stays_on(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    failing = [False]
    recorder.fail_on = lambda record: failing[0]
    sink = LoggingSink(logger, interval=None, batch_size=2)
    tracer = Tracer(sink)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a switch-off warning would fail the test
        for round_ in range(5):
            failing[0] = True
            tracer.emit(_call(3 * round_))
            tracer.emit(_call(3 * round_ + 1))  # the batch fails
            assert tracer._slots[0].failures == 1 and sink._direct
            failing[0] = False
            tracer.emit(_call(3 * round_ + 2))  # at once, works: count reset, batches again
            assert tracer._slots[0].failures == 0 and not sink._direct
            assert recorder.operations[-1] == f"op{3 * round_ + 2}"
    assert tracer.switched_off == [] and tracer.active
    assert recorder.operations == [f"op{3 * r + 2}" for r in range(5)]
    tracer.emit(_call(99))
    assert recorder.operations[-1] == "op14"  # queued: batching again
    tracer.close()
    assert recorder.operations[-1] == "op99"


# Each step: True emits a call, False hands on what is queued.
@given(
    batch_size=st.integers(1, 5),
    steps=st.lists(st.booleans(), max_size=30 if CI else 50),
)
def test_every_call_is_logged_once_in_order_when_its_batch_is_handed_on(
    batch_size: int, steps: list[bool]
) -> None:
    logger, recorder = _recorded_logger()
    try:
        sink = LoggingSink(logger, interval=None, batch_size=batch_size)
        emitted: list[str] = []
        expected_logged = 0
        for step in steps:
            if step:
                sink.emit(_call(len(emitted)))
                emitted.append(f"op{len(emitted)}")
                if len(emitted) - expected_logged >= batch_size:
                    expected_logged = len(emitted)
            else:
                sink.write_queued()
                expected_logged = len(emitted)
            assert recorder.operations == emitted[:expected_logged]
        sink.close()
        assert recorder.operations == emitted
    finally:
        logger.removeHandler(recorder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_log_its_parents_queue(tmp_path: FilePath) -> None:
    target = tmp_path / "fork.log"

    class Appender(logging.Handler):
        """One line per record, appended unbuffered: a fork copies no pending bytes."""

        def emit(self, record: logging.LogRecord) -> None:
            with open(target, "ab", buffering=0) as file:
                file.write(f"{os.getpid()} {_op(record)}\n".encode())

    logger = logging.getLogger(f"tests.tracing_sinks.fork.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Appender()
    logger.addHandler(handler)
    try:
        sink = LoggingSink(logger, interval=60)
        sink.emit(_call(0))  # queued in the parent when it forks
        sink.emit(_call(1))

        def child() -> None:  # queue a record of its own and log it
            sink.emit(_call(2))
            sink.close()

        pid = in_forked_child(child)
        assert target.read_text().splitlines() == [f"{pid} op2"]  # the child's only
        sink.close()
        parent = os.getpid()
        assert target.read_text().splitlines() == [f"{pid} op2", f"{parent} op0", f"{parent} op1"]
    finally:
        logger.removeHandler(handler)


def test_records_queued_when_the_interpreter_exits_are_logged() -> None:
    script = textwrap.dedent(
        """
        import logging, sys, threading
        from builder.runtime.tracing import LoggingSink, TracedCall, configure
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="%(threadName)s %(message)s")
        tracer = configure(LoggingSink(interval=3600))
        for n in range(3):
            tracer.emit(TracedCall(0.0, "demo", f"op{n}"))
        worker = threading.Thread(
            target=tracer.emit, args=(TracedCall(0.0, "demo", "op3"),), name="worker"
        )
        worker.start()
        worker.join()
        print("exiting", flush=True)
        # neither closed nor flushed: the interpreter exits with the records queued
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "exiting",
        "MainThread demo.op0 0.0 ms",
        "MainThread demo.op1 0.0 ms",
        "MainThread demo.op2 0.0 ms",
        "worker demo.op3 0.0 ms",
    ]


# -- OpenTelemetrySink ---------------------------------------------------------------------


@pytest.fixture
def otel() -> tuple[Any, Any, Any]:
    """A provider exporting to memory, its exporter, and a tracer of it for parent spans."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, provider.get_tracer("tests")


def _spans(exporter: Any, prefix: str = "demo.") -> list[Any]:
    """The spans the sink made (not the test's own parent spans), in the order ended."""
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


@pytest.mark.parametrize("how", ["write_queued", "Tracer.flush"])
def test_spans_are_made_only_when_the_queue_is_handed_on(
    otel: tuple[Any, Any, Any], how: str
) -> None:
    provider, exporter, _ = otel
    sink = OpenTelemetrySink(provider, interval=60)
    assert (sink.flush, sink.interval, sink.batch_size) == (False, 60, 256)
    tracer = Tracer(sink)
    calls = [_call(2, latency=0.5), _call(0, latency=0.25, status_code=200)]
    for call in calls:
        tracer.emit(call)
    _pause(0.05)
    assert exporter.get_finished_spans() == ()
    (sink.write_queued if how == "write_queued" else tracer.flush)()
    spans = _spans(exporter)
    assert [span.name for span in spans] == ["demo.op2", "demo.op0"]  # emit order
    for span, call in zip(spans, calls, strict=True):
        assert dict(span.attributes) == call.attributes()
        assert span.start_time == int(call.timestamp * 1e9)
        assert span.end_time - span.start_time == int(call.latency * 1e9)
    sink.close()
    assert len(exporter.get_finished_spans()) == 2  # nothing handed on twice


def test_a_span_s_parent_is_the_span_current_when_its_call_was_emitted(
    otel: tuple[Any, Any, Any],
) -> None:
    provider, exporter, otel_tracer = otel
    sink = OpenTelemetrySink(provider, interval=None)
    with otel_tracer.start_as_current_span("parent") as parent:
        sink.emit(_call(0))
    sink.emit(_call(1))  # no span current

    def in_a_thread() -> None:
        with otel_tracer.start_as_current_span("thread parent"):
            sink.emit(_call(2))

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    # Handed on while another span is current: it is not the parent of any of them.
    with otel_tracer.start_as_current_span("elsewhere") as elsewhere:
        sink.write_queued()
    under_parent, orphan, under_thread = _spans(exporter)
    [thread_parent] = _spans(exporter, "thread parent")
    expected = parent.get_span_context()
    assert under_parent.parent is not None
    assert under_parent.parent.span_id == expected.span_id
    assert under_parent.context.trace_id == expected.trace_id
    assert orphan.parent is None
    assert orphan.context.trace_id not in {expected.trace_id, elsewhere.get_span_context().trace_id}
    assert under_thread.parent is not None
    assert under_thread.parent.span_id == thread_parent.context.span_id
    assert under_thread.context.trace_id == thread_parent.context.trace_id
    sink.close()


def test_flush_true_makes_the_span_on_the_call(otel: tuple[Any, Any, Any]) -> None:
    provider, exporter, otel_tracer = otel
    sink = OpenTelemetrySink(provider, flush=True)
    with otel_tracer.start_as_current_span("parent") as parent:
        sink.emit(_call(0))
        [span] = exporter.get_finished_spans()  # before the call's parent ended
        assert span.name == "demo.op0"
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
    sink.emit(_call(1))
    assert [s.name for s in _spans(exporter)] == ["demo.op0", "demo.op1"]


def test_an_error_sets_the_span_status_and_content_is_opt_in(otel: tuple[Any, Any, Any]) -> None:
    import json

    from opentelemetry.trace import SpanKind, StatusCode

    provider, exporter, _ = otel
    with_content = OpenTelemetrySink(provider, capture_content=True)
    without = OpenTelemetrySink(provider)
    tracer = Tracer(with_content, without)
    failed = _call(
        0,
        input={"body": {"q": "ünï"}},
        error=TracedError("RateLimitedError", "slow down"),
        status_code=429,
    )
    ok = _call(1, request_model="gpt", input={"body": {"q": 1}}, output={"a": [1, None]})
    tracer.emit(failed)
    tracer.emit(ok)
    tracer.flush()
    spans = exporter.get_finished_spans()
    # One sink's batch, then the other's; a model call is named "{operation} {model}".
    assert [span.name for span in spans] == ["demo.op0", "op1 gpt", "demo.op0", "op1 gpt"]
    failed_with, ok_with, failed_without, ok_without = spans
    for span in (failed_with, failed_without):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "slow down"
        assert span.attributes["error.type"] == "RateLimitedError"
        assert span.attributes["http.response.status_code"] == 429
    for span in (ok_with, ok_without):
        assert span.status.status_code is StatusCode.UNSET
        assert span.kind is SpanKind.CLIENT
    assert json.loads(failed_with.attributes["connector_builder.input"]) == {"body": {"q": "ünï"}}
    assert json.loads(failed_with.attributes["connector_builder.output"]) is None
    assert json.loads(ok_with.attributes["connector_builder.output"]) == {"a": [1, None]}
    for span in (failed_without, ok_without):
        assert "connector_builder.input" not in span.attributes
        assert "connector_builder.output" not in span.attributes
    tracer.close()


def _raising_processor(fails: Callable[[Any], bool]) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class Raising(SpanProcessor):
        def __init__(self) -> None:
            self.ended: list[str] = []

        def on_end(self, span: Any) -> None:
            self.ended.append(span.name)
            if fails(span):
                raise RuntimeError(f"processor failed on {span.name}")

    return Raising()


def _otel_with(processor: Any) -> tuple[Any, Any]:
    """A provider whose first processor is ``processor``, then one exporting to memory."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_span_processor_that_raises_loses_that_span_only_and_the_error_is_counted() -> None:
    processor = _raising_processor(lambda span: span.name == "demo.op1")
    provider, exporter = _otel_with(processor)
    sink = OpenTelemetrySink(provider, interval=None, batch_size=3)
    tracer = Tracer(sink)
    tracer.emit(_call(0))
    tracer.emit(_call(1))
    assert processor.ended == []
    tracer.emit(_call(2))  # fills the batch: op1's span fails, counted on this call
    assert processor.ended == ["demo.op0", "demo.op1", "demo.op2"]
    assert [span.name for span in exporter.get_finished_spans()] == ["demo.op0", "demo.op2"]
    assert tracer._slots[0].failures == 1
    tracer.emit(_call(3))  # made at once after a failed batch: works, count reset
    assert [span.name for span in exporter.get_finished_spans()][-1] == "demo.op3"
    assert tracer._slots[0].failures == 0 and not sink._direct
    tracer.close()


def test_a_span_batch_that_failed_on_the_writer_thread_is_raised_by_the_next_emit() -> None:
    processor = _raising_processor(lambda span: span.name == "demo.op1")
    provider, exporter = _otel_with(processor)
    sink = OpenTelemetrySink(provider, interval=0.01)
    with sink._lock:  # the writer thread waits: the three calls are one batch
        for n in range(3):
            sink.emit(_call(n))
    _wait_for(lambda: sink._unreported is not None)
    assert [span.name for span in exporter.get_finished_spans()] == ["demo.op0", "demo.op2"]
    with pytest.raises(RuntimeError, match="processor failed on demo.op1"):
        sink.emit(_call(3))
    assert [span.name for span in exporter.get_finished_spans()][-1] == "demo.op3"
    sink.emit(_call(4))  # reported once: nothing raised
    sink.close()
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["demo.op0", "demo.op2", "demo.op3", "demo.op4"]


def test_a_span_processor_that_always_raises_switches_the_sink_off() -> None:
    processor = _raising_processor(lambda span: True)
    provider, _ = _otel_with(processor)
    sink = OpenTelemetrySink(provider, interval=None, batch_size=2)
    tracer = Tracer(sink)
    tracer.emit(_call(0))
    assert processor.ended == []
    with pytest.warns(RuntimeWarning, match="OpenTelemetrySink.*failed 3 times in a row"):
        for n in range(1, 4):
            assert tracer.active
            tracer.emit(_call(n))
    assert tracer.switched_off == [sink] and not tracer.active
    assert processor.ended == ["demo.op0", "demo.op1", "demo.op2", "demo.op3"]


# -- the tracer's flush and close; exit order ----------------------------------------------


@pytest.mark.parametrize("method", ["flush", "close"])
def test_flush_and_close_reach_every_sink_when_one_raises(method: str) -> None:
    broken_logger, broken = _recorded_logger()
    broken.fail_on = lambda record: True
    fine_logger, fine = _recorded_logger()
    first, second = LoggingSink(broken_logger, interval=None), LoggingSink(fine_logger)
    tracer = Tracer(first, second)
    tracer.emit(_call(0))
    with pytest.raises(RuntimeError, match="handler failed on op0"):
        getattr(tracer, method)()
    assert fine.operations == ["op0"]  # the sink after the broken one was handed on too
    assert second._closed is (method == "close")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_raise_its_parents_lost_batch(
    logged: tuple[logging.Logger, Recorder],
) -> None:
    logger, recorder = logged
    recorder.fail_on = lambda record: True
    sink = LoggingSink(logger, interval=0.01)
    sink.emit(_call(0))
    _wait_for(lambda: sink._unreported is not None)  # the writer thread's batch failed
    recorder.fail_on = lambda record: False
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with a thread running
        pid = os.fork()
    if pid == 0:  # the child: its first call is queued, and raises nothing
        outcome = b"raised"
        try:
            sink.emit(_call(1))
            outcome = b"queued" if len(sink._queue) == 1 else b"not queued"
        finally:
            os.write(write, outcome)
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read, 100) == b"queued"
    os.close(read)
    with pytest.raises(RuntimeError, match="handler failed on op0"):  # the parent's to report
        sink.emit(_call(2))
    assert recorder.operations == ["op2"]
    sink.close()


def test_spans_queued_at_exit_are_made_before_a_later_provider_shuts_down() -> None:
    # The exit handler is registered anew with each sink, so it runs before the exit
    # handler of a tracer provider made after an earlier sink (exit handlers run last
    # registered first).
    script = textwrap.dedent(
        """
        import os, sys, tempfile
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
        from builder.runtime.tracing import JsonlSink, OpenTelemetrySink, TracedCall, Tracer
        earlier = JsonlSink(os.path.join(tempfile.mkdtemp(), "t.jsonl"))
        provider = TracerProvider()
        exporter = ConsoleSpanExporter(out=sys.stdout, formatter=lambda s: f"span {s.name}\\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = Tracer(OpenTelemetrySink(provider, interval=3600))
        tracer.emit(TracedCall(0.0, "demo", "op0"))
        print("exiting", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "span demo.op0"]


# -- review fixes: no lock on a call's path, context, force_flush, exit, close, adapters ----


@pytest.mark.parametrize("mode", ["flush", "full batch"])
def test_a_handler_that_traces_a_call_under_its_lock_cannot_deadlock_the_sink(mode: str) -> None:
    """Thread B hands on (holding the sink's turn) and waits for a handler's lock that
    thread A holds while A's handler makes a traced call: A must not wait for B."""
    logger, recorder = _recorded_logger()
    b_handing_on, a_in_handler = threading.Event(), threading.Event()
    handler_lock = threading.Lock()
    if mode == "flush":
        sink = LoggingSink(logger, flush=True)
    else:
        sink = LoggingSink(logger, interval=None, batch_size=1)
    tracer = Tracer(sink)

    class Gate(logging.Filter):  # B's record: wait until A holds the handler's lock
        def filter(self, record: logging.LogRecord) -> bool:
            if threading.current_thread().name == "B":
                b_handing_on.set()
                a_in_handler.wait(5)
                with handler_lock:  # waits for A to finish its handler
                    pass
            return True

    logger.addFilter(Gate())

    def thread_a() -> None:
        with handler_lock:  # a handler that ships records with a traced call
            b_handing_on.wait(5)
            a_in_handler.set()
            tracer.emit(_call(1))

    b = threading.Thread(target=tracer.emit, args=(_call(0),), name="B")
    a = threading.Thread(target=thread_a, name="A")
    b.start()
    a.start()
    a.join(10)
    b.join(10)
    assert not a.is_alive() and not b.is_alive(), "deadlocked"
    tracer.flush()
    assert sorted(recorder.operations) == ["op0", "op1"]


def test_a_record_is_made_in_the_context_of_its_call() -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    logger, recorder = _recorded_logger()

    class RequestId(logging.Filter):  # the correlation-id pattern: a filter reads context
        def filter(self, record: logging.LogRecord) -> bool:
            record.request_id = request_id.get()
            return True

    recorder.addFilter(RequestId())
    sink = LoggingSink(logger, interval=None)
    token = request_id.set("req-42")
    sink.emit(_call(0))
    request_id.reset(token)
    sink.emit(_call(1))
    request_id.set("req-flusher")  # the context of the thread handing on is not used
    sink.write_queued()
    assert [r.request_id for r in recorder.records] == ["req-42", "-"]  # type: ignore[attr-defined]


def test_a_record_names_the_asyncio_task_of_its_call_and_no_source() -> None:
    import asyncio

    logger, recorder = _recorded_logger()
    sink = LoggingSink(logger, interval=None)

    async def traced(n: int) -> None:
        sink.emit(_call(n))

    async def main() -> None:
        await asyncio.gather(
            asyncio.create_task(traced(0), name="task-A"),
            asyncio.create_task(traced(1), name="task-B"),
        )

    asyncio.run(main())
    sink.emit(_call(2))  # no task
    sink.write_queued()
    assert [r.taskName for r in recorder.records] == ["task-A", "task-B", None]  # type: ignore[attr-defined]
    record = recorder.records[0]
    assert (record.pathname, record.lineno, record.funcName) == (
        "(unknown file)",
        0,
        "(unknown function)",
    )


def test_a_logger_adapter_is_taken_with_its_extra_and_anything_else_is_refused() -> None:
    from builder.runtime import errors

    logger, recorder = _recorded_logger()
    sink = LoggingSink(logging.LoggerAdapter(logger, {"service": "billing"}), flush=True)
    sink.emit(_call(0))
    [record] = recorder.records
    assert record.service == "billing" and _op(record) == "op0"  # type: ignore[attr-defined]
    with pytest.raises(errors.ConfigError, match="needs a logging.Logger"):
        LoggingSink(object())


def test_the_provider_s_force_flush_makes_the_queued_spans_first(
    otel: tuple[Any, Any, Any],
) -> None:
    provider, exporter, _ = otel
    tracer = Tracer(OpenTelemetrySink(provider, interval=3600))
    tracer.emit(_call(0))
    tracer.emit(_call(1))
    assert _spans(exporter) == []
    assert provider.force_flush() is True  # what a serverless handler calls at its end
    assert [s.name for s in _spans(exporter)] == ["demo.op0", "demo.op1"]
    assert provider.force_flush() is True  # nothing queued: nothing more
    assert len(_spans(exporter)) == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_force_flush_with_a_concurrent_span_processor_sends_the_queued_spans(
    threads: int,
) -> None:
    # Its processors are flushed on its own threads: a sink that flushed the provider
    # again from inside that flush waited for a thread of its own (timed out, sent none).
    from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(
        active_span_processor=ConcurrentMultiSpanProcessor(threads), shutdown_on_exit=False
    )
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    tracer = Tracer(OpenTelemetrySink(provider, interval=3600))
    tracer.emit(_call(0))
    tracer.emit(_call(1))
    started = time.monotonic()
    assert provider.force_flush(5_000) is True
    assert time.monotonic() - started < 2
    assert [s.name for s in _spans(exporter)] == ["demo.op0", "demo.op1"]
    tracer.close()
    provider.shutdown()


def test_one_force_flush_wrapper_per_provider_whatever_the_sinks(
    otel: tuple[Any, Any, Any],
) -> None:
    provider, exporter, _ = otel
    original = provider.force_flush
    for _ in range(50):  # sinks made and closed: none leaves a wrapper behind
        OpenTelemetrySink(provider, interval=3600).close()
    wrapper = provider.force_flush
    assert wrapper.__wrapped__ == original
    live = [Tracer(OpenTelemetrySink(provider, interval=3600)) for _ in range(3)]
    assert provider.force_flush is wrapper
    for n, tracer in enumerate(live):
        tracer.emit(_call(n))
    assert provider.force_flush() is True
    assert sorted(s.name for s in _spans(exporter)) == ["demo.op0", "demo.op1", "demo.op2"]
    for tracer in live:
        tracer.close()


def test_a_sink_failing_in_force_flush_does_not_stop_the_provider_s_flush() -> None:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Refusing(SpanProcessor):  # a processor with a bug for the sink's spans
        def on_end(self, span: Any) -> None:
            if span.name.startswith("demo."):
                raise ValueError("processor bug")

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    provider.add_span_processor(Refusing())
    sink = OpenTelemetrySink(provider, interval=3600)
    provider.get_tracer("app").start_span("handler").end()  # the application's own span
    sink.emit(_call(0))
    assert provider.force_flush() is True  # the sink's error is not the provider's
    assert [s.name for s in exporter.get_finished_spans()] == ["handler", "demo.op0"]
    with pytest.raises(ValueError, match="processor bug"):
        sink.emit(_call(1))  # raised by the sink's next call, counted by a tracer
    sink.close()
    provider.shutdown()


def test_a_provider_sink_takes_any_batch_size() -> None:
    sink = OpenTelemetrySink(batch_size=10_000)  # max_queued is the exporter mode's
    sink.close()


def test_a_global_provider_set_after_the_sink_is_flushed_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    proxy = trace.ProxyTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: proxy)
    sink = OpenTelemetrySink(interval=3600)  # the global provider: not set yet
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    sink._tracer = provider.get_tracer("connector-builder")  # what the proxy tracer would do
    sink.emit(_call(0))  # the first call queued looks the provider up again
    provider.force_flush()
    assert [s.name for s in _spans(exporter)] == ["demo.op0"]
    sink.close()


def test_a_call_queued_while_the_sink_closes_is_handed_on() -> None:
    from collections import deque

    logger, recorder = _recorded_logger()
    sink = LoggingSink(logger, interval=None)

    class ClosedMeanwhile(deque):  # type: ignore[type-arg]
        """close() runs to its end between emit's look at the sink and its append."""

        def append(self, item: Any) -> None:
            if not sink._closed:
                sink.close()
            super().append(item)

    sink.emit(_call(0))  # queued before
    sink._queue = ClosedMeanwhile(sink._queue)
    sink.emit(_call(1))  # began before close, queued after close's last hand-on
    assert recorder.operations == ["op0", "op1"] and not sink._queue


def test_the_writer_thread_survives_a_bug_of_the_sink_and_reports_it(
    logged: tuple[logging.Logger, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, recorder = logged
    sink = LoggingSink(logger, interval=0.01)
    monkeypatch.setattr(sink, "_hand_on", lambda entries: 1 / 0)
    sink.emit(_call(0))
    _wait_for(lambda: sink._unreported is not None)
    assert sink._clock is not None and sink._clock.is_alive()
    monkeypatch.undo()
    with pytest.raises(ZeroDivisionError):
        sink.emit(_call(1))  # the lost batch reported; this call logged at once
    assert recorder.operations == ["op1"]
    sink.emit(_call(2))
    sink.close()
    assert recorder.operations == ["op1", "op2"]


def test_bad_batching_arguments_make_no_file(tmp_path: FilePath) -> None:
    from builder.runtime.tracing import JsonlSink

    with pytest.raises(ValueError, match="batch_size"):
        JsonlSink(tmp_path / "t.jsonl", batch_size=0)
    with pytest.raises(ValueError, match="interval"):
        JsonlSink(tmp_path / "t.jsonl", interval=0)
    assert list(tmp_path.iterdir()) == []


def test_a_call_traced_by_an_exit_handler_after_ours_is_logged() -> None:
    script = textwrap.dedent(
        """
        import atexit, logging, sys
        from builder.runtime.tracing import LoggingSink, TracedCall, configure
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
        tracer = None
        atexit.register(lambda: tracer.emit(TracedCall(0.0, "demo", "at_exit")))
        tracer = configure(LoggingSink(interval=3600))
        tracer.emit(TracedCall(0.0, "demo", "op0"))
        print("exiting", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "demo.op0 0.0 ms", "demo.at_exit 0.0 ms"]
