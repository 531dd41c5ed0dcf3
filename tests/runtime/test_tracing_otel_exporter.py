"""OpenTelemetrySink's exporter mode (``exporter=``): the spans it makes itself (what the
provider mode makes, parented on the span current at emit time), the threads that export
them, slices of ``batch_size``, force_flush and shutdown, export failures that are the
exporter's business, ``max_queued``, configuration errors, the attribute length limit, a
real OTLP/HTTP export and fork."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path as FilePath
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from builder.runtime.errors import ConfigError
from builder.runtime.sinks import LOGGER_NAME
from builder.runtime.tracing import OpenTelemetrySink, TracedCall, TracedError, Tracer
from tests.runtime._forking import in_forked_child

pytestmark = pytest.mark.timeout(30)
REPO = FilePath(__file__).resolve().parents[2]


def _call(n: int = 0, **fields: Any) -> TracedCall:
    return TracedCall(1_700_000_000.0 + n, "demo", f"op{n}", **fields)


def _pause(seconds: float) -> None:
    """A real pause (the runtime tests' ``sleeps`` fixture makes ``time.sleep`` a no-op)."""
    threading.Event().wait(seconds)


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll until ``condition()`` (fails after ``seconds``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not met within {seconds} s")
        _pause(0.005)


class Recording(SpanExporter):
    """An SDK exporter that keeps each export: the thread it ran on and its spans, and
    what was called in order (``events``). ``result`` is what ``export`` returns,
    ``error`` what it raises; with ``gate`` set, ``export`` first waits for it."""

    def __init__(self) -> None:
        self.exports: list[tuple[threading.Thread, list[ReadableSpan]]] = []
        self.events: list[str] = []
        self.result = SpanExportResult.SUCCESS
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()  # export was called (it may wait on the gate)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        spans = list(spans)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        with self._lock:
            self.exports.append((threading.current_thread(), spans))
            self.events.append(" ".join(["export", *(span.name for span in spans)]))
        if self.error is not None:
            raise self.error
        return self.result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            self.events.append("force_flush")
        return True

    def shutdown(self) -> None:
        with self._lock:
            self.events.append("shutdown")

    @property
    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return [span for _, spans in self.exports for span in spans]

    @property
    def names(self) -> list[str]:
        return [span.name for span in self.spans]

    @property
    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [thread for thread, _ in self.exports]


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider exporting to memory (the provider mode, for reference and parents)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == LOGGER_NAME and record.levelno == logging.WARNING
    ]


# -- what a span holds ---------------------------------------------------------------------


def _calls() -> list[TracedCall]:
    return [
        _call(
            0,
            provider="openai",
            request_model="gpt-x",
            response_model="gpt-x-2024",
            tokens_input=12,
            tokens_output=34,
            cost=0.0125,
            latency=0.4321,
            status_code=200,
            attempts=2,
            finish_reason="stop",
            input={"body": {"q": "ünï"}},
            output={"a": [1, None]},
        ),
        _call(
            1,
            latency=1.5,
            error=TracedError("RateLimitedError", "slow down"),
            status_code=429,
            input={"path": "/things"},
        ),
        _call(2, response_model="answerer", streamed=True, abandoned=True, latency=0.0),
    ]


@pytest.mark.parametrize("capture_content", [False, True])
def test_a_span_is_the_call_as_the_provider_mode_makes_it(capture_content: bool) -> None:
    exporter = Recording()
    resource = Resource.create({"service.name": "exporter-test", "deployment.environment": "ci"})
    sink = OpenTelemetrySink(
        exporter=exporter, resource=resource, capture_content=capture_content, interval=None
    )
    provider, memory = _provider()
    reference = OpenTelemetrySink(provider, capture_content=capture_content, interval=None)
    tracer = Tracer(sink, reference)
    calls = _calls()
    for call in calls:
        tracer.emit(call)
    assert exporter.exports == []  # queued
    tracer.flush()
    spans, expected = exporter.spans, memory.get_finished_spans()
    names = ["op0 gpt-x", "demo.op1", "op2 answerer"]  # "{operation} {request model}"
    assert [span.name for span in spans] == names
    assert [span.name for span in expected] == names
    for span, ref, call in zip(spans, expected, calls, strict=True):
        assert isinstance(span, ReadableSpan)
        assert span.kind is SpanKind.CLIENT is ref.kind
        attributes = dict(span.attributes or {})
        assert attributes == dict(ref.attributes or {})  # the two modes agree
        content = {
            key: attributes.pop(key)
            for key in ("connector_builder.input", "connector_builder.output")
            if key in attributes
        }
        assert attributes == call.attributes()
        if capture_content:
            assert set(content) == {"connector_builder.input", "connector_builder.output"}
            assert json.loads(content["connector_builder.input"]) == call.input
            assert json.loads(content["connector_builder.output"]) == call.output
        else:
            assert content == {}
        start = int(call.timestamp * 1e9)
        assert span.start_time == start == ref.start_time
        assert span.end_time == start + int(call.latency * 1e9) == ref.end_time
        assert span.status.status_code is ref.status.status_code
        assert span.status.description == ref.status.description
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "connector-builder"
        assert span.resource == resource
        assert span.parent is None  # no span was current
        assert span.context is not None and span.context.is_valid
        assert span.context.trace_flags.sampled
        assert span.context.trace_flags == ref.context.trace_flags  # type: ignore[union-attr]
    assert [span.status.status_code for span in spans] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert spans[1].status.description == "slow down"
    assert spans[0].attributes["gen_ai.usage.input_tokens"] == 12  # type: ignore[index]
    assert spans[0].attributes["gen_ai.usage.cost.amount"] == 0.0125  # type: ignore[index]
    # Random ids: a trace of its own for each span with no parent.
    assert len({span.context.span_id for span in spans}) == 3  # type: ignore[union-attr]
    assert len({span.context.trace_id for span in spans}) == 3  # type: ignore[union-attr]
    tracer.close()


def test_the_default_resource_is_made_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=tracing")
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, flush=True)
    sink.emit(_call(0))
    [span] = exporter.spans
    assert span.resource.attributes["service.name"] == "from-the-environment"
    assert span.resource.attributes["team"] == "tracing"
    assert span.resource == Resource.create()
    sink.close()


# -- parents -------------------------------------------------------------------------------


def test_a_span_s_parent_is_the_span_current_on_the_emitting_thread_at_emit_time() -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=None)
    provider, _ = _provider()
    otel_tracer = provider.get_tracer("t")
    with otel_tracer.start_as_current_span("outer") as outer:
        sink.emit(_call(0))
        # Another thread has no current span (threads do not share the context).
        worker = threading.Thread(target=sink.emit, args=(_call(1),))
        worker.start()
        worker.join()
    # Exported while another span is current: the parent is the one current at emit time.
    with otel_tracer.start_as_current_span("elsewhere") as elsewhere:
        sink.write_queued()
    under_outer, orphan = exporter.spans
    assert [under_outer.name, orphan.name] == ["demo.op0", "demo.op1"]
    parent = outer.get_span_context()
    assert under_outer.parent == parent
    assert under_outer.context.trace_id == parent.trace_id  # type: ignore[union-attr]
    assert under_outer.context.span_id not in {0, parent.span_id}  # type: ignore[union-attr]
    assert orphan.parent is None
    other_trace = elsewhere.get_span_context().trace_id
    assert orphan.context.trace_id not in {0, parent.trace_id, other_trace}  # type: ignore[union-attr]
    for span in (under_outer, orphan):
        assert span.context.trace_flags.sampled  # type: ignore[union-attr]
    sink.close()


@pytest.mark.parametrize("how", ["ALWAYS_OFF provider", "NonRecordingSpan"])
def test_no_span_is_exported_under_a_parent_that_is_not_sampled(how: str) -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=None)
    if how == "ALWAYS_OFF provider":
        unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
        scope: Any = unsampled.start_as_current_span("not sampled")
    else:
        context = SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0x00F067AA0BA902B7,
            is_remote=True,
            trace_flags=TraceFlags(0),
        )
        scope = trace.use_span(NonRecordingSpan(context))
    with scope as parent:
        assert parent.get_span_context().is_valid
        assert not parent.get_span_context().trace_flags.sampled
        sink.emit(_call(0))
    sink.emit(_call(1))  # no parent: exported, so the batch was exported
    sink.write_queued()
    assert exporter.names == ["demo.op1"]
    sink.close()


def test_a_remote_parent_gives_its_trace_id_and_trace_state_as_in_the_provider_mode() -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=None)
    provider, memory = _provider()
    reference = OpenTelemetrySink(provider, interval=None)
    tracer = Tracer(sink, reference)
    state = TraceState([("vendor", "abc"), ("other", "1")])
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=state,
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        tracer.emit(_call(0))
    finally:
        otel_context.detach(token)
    tracer.emit(_call(1))
    tracer.flush()
    child, orphan = exporter.spans
    ref_child, ref_orphan = memory.get_finished_spans()
    assert child.parent == parent == ref_child.parent
    assert child.context.trace_id == parent.trace_id  # type: ignore[union-attr]
    assert child.context.span_id not in {0, parent.span_id}  # type: ignore[union-attr]
    assert dict(child.context.trace_state) == {"vendor": "abc", "other": "1"}  # type: ignore[union-attr]
    assert child.context.trace_state == ref_child.context.trace_state  # type: ignore[union-attr]
    assert child.context.trace_flags.sampled  # type: ignore[union-attr]
    assert child.context.trace_flags == ref_child.context.trace_flags  # type: ignore[union-attr]
    assert orphan.parent is None
    assert dict(orphan.context.trace_state) == {}  # type: ignore[union-attr]
    assert orphan.context.trace_id != parent.trace_id  # type: ignore[union-attr]
    assert orphan.context.trace_flags == ref_orphan.context.trace_flags  # type: ignore[union-attr]
    tracer.close()


# -- which thread exports ------------------------------------------------------------------


def test_a_full_batch_wakes_the_writer_thread_and_the_caller_never_exports() -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=8, interval=60)
    tracer = Tracer(sink)
    for n in range(7):
        tracer.record("demo", f"op{n}")
    assert exporter.exports == []
    tracer.record("demo", "op7")  # fills the batch: the writer is woken, long before 60 s
    _wait_for(lambda: len(exporter.spans) == 8, seconds=5.0)
    main = threading.current_thread()
    assert exporter.threads and all(thread is not main for thread in exporter.threads)
    assert exporter.names == [f"demo.op{n}" for n in range(8)]
    assert tracer.switched_off == []
    sink.close()


def test_flush_true_exports_each_span_on_its_call_s_thread_before_it_returns() -> None:
    exporter = Recording()
    tracer = Tracer(OpenTelemetrySink(exporter=exporter, flush=True))
    tracer.record("demo", "op0")
    assert exporter.names == ["demo.op0"]
    assert exporter.threads == [threading.current_thread()]
    worker = threading.Thread(target=tracer.record, args=("demo", "op1"), name="worker")
    worker.start()
    worker.join()
    assert exporter.names == ["demo.op0", "demo.op1"]
    assert exporter.threads[1] is worker
    tracer.close()


def test_without_an_interval_a_full_batch_is_exported_by_the_writer_thread() -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=4, interval=None)

    def emit(*numbers: int) -> None:
        for n in numbers:
            sink.emit(_call(n))

    first = threading.Thread(target=emit, args=(0, 1, 2), name="first")
    first.start()
    first.join()
    _pause(0.05)
    assert exporter.exports == []  # no clock: no batch yet
    filler = threading.Thread(target=emit, args=(3,), name="filler")
    filler.start()
    filler.join()
    _wait_for(lambda: len(exporter.exports) == 1)
    assert exporter.threads[0] not in (filler, first, threading.current_thread())
    assert exporter.names == [f"demo.op{n}" for n in range(4)]
    sink.close()


@pytest.mark.parametrize("how", ["Tracer.flush", "write_queued", "Tracer.close"])
def test_flush_and_close_export_on_the_thread_that_calls_them(how: str) -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=60)
    tracer = Tracer(sink)
    for n in range(3):
        tracer.emit(_call(n))
    method = {"Tracer.flush": tracer.flush, "write_queued": sink.write_queued}.get(
        how, tracer.close
    )
    flusher = threading.Thread(target=method, name="flusher")
    flusher.start()
    flusher.join()
    assert exporter.names == ["demo.op0", "demo.op1", "demo.op2"]
    assert exporter.threads and all(thread is flusher for thread in exporter.threads)
    sink.close()


def test_a_queue_longer_than_a_batch_is_exported_in_slices_in_emit_order() -> None:
    exporter = Recording()
    exporter.gate = threading.Event()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=4, interval=60)
    tracer = Tracer(sink)
    for n in range(4):
        tracer.emit(_call(n))
    assert exporter.entered.wait(5)  # the writer thread exports the first batch, held
    for n in range(4, 14):
        tracer.emit(_call(n))  # ten more queued meanwhile
    exporter.gate.set()
    tracer.flush()
    _wait_for(lambda: len(exporter.spans) == 14)
    assert exporter.names == [f"demo.op{n}" for n in range(14)]
    sizes = [len(spans) for _, spans in exporter.exports]
    assert all(1 <= size <= 4 for size in sizes), sizes
    sink.close()
    assert len(exporter.spans) == 14  # nothing exported twice


# -- force_flush and shutdown --------------------------------------------------------------


def test_flush_calls_force_flush_after_exporting_and_close_shuts_down_once() -> None:
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=60)
    tracer = Tracer(sink)
    tracer.emit(_call(0))
    tracer.emit(_call(1))
    tracer.flush()
    assert exporter.events == ["export demo.op0 demo.op1", "force_flush"]
    tracer.emit(_call(2))
    assert exporter.events[2:] == []  # queued again
    tracer.close()
    after_flush = exporter.events[2:]
    assert after_flush.count("shutdown") == 1
    assert after_flush.index("export demo.op2") < after_flush.index("shutdown")
    tracer.close()
    sink.close()
    assert exporter.events.count("shutdown") == 1  # closing again shuts nothing down
    exported = len(exporter.exports)
    with pytest.raises(ValueError, match="closed"):  # counted by a tracer, as a JSONL file's
        sink.emit(_call(3))
    assert len(exporter.exports) == exported


def test_an_exporter_without_force_flush_is_flushed_and_closed() -> None:
    class Bare:
        """``export`` and ``shutdown`` only, not an SDK SpanExporter."""

        def __init__(self) -> None:
            self.batches: list[list[str]] = []
            self.shutdowns = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.batches.append([span.name for span in spans])
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.shutdowns += 1

    bare = Bare()
    tracer = Tracer(OpenTelemetrySink(exporter=bare, interval=60))
    tracer.emit(_call(0))
    tracer.flush()  # raises if force_flush is called regardless
    assert bare.batches == [["demo.op0"]]
    tracer.emit(_call(1))
    tracer.close()
    assert bare.batches == [["demo.op0"], ["demo.op1"]]
    assert bare.shutdowns == 1


# -- export failures -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["interval", "no interval"])
@pytest.mark.parametrize("failure", ["FAILURE", "raises"])
def test_a_failed_export_is_logged_and_never_counts_against_the_sink(
    where: str, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    exporter = Recording()
    problem = ConnectionError("collector down")
    if failure == "FAILURE":
        exporter.result = SpanExportResult.FAILURE
    else:
        exporter.error = problem
    interval = 60 if where == "interval" else None
    sink = OpenTelemetrySink(exporter=exporter, batch_size=2, interval=interval)
    tracer = Tracer(sink)
    for batch in range(6):  # six failed batches, twice the tracer's switch-off count
        first, second = _call(2 * batch), _call(2 * batch + 1)
        tracer.emit(first)
        if batch == 5:
            sink.emit(second)  # raises nothing, on the call itself
        else:
            tracer.emit(second)
        _wait_for(lambda batch=batch: len(_warnings(caplog)) == batch + 1)  # type: ignore[misc]
    assert [len(spans) for _, spans in exporter.exports] == [2] * 6
    main = threading.current_thread()
    assert all(thread is not main for thread in exporter.threads)  # the writer thread
    assert tracer.switched_off == [] and tracer.sinks == [sink] and tracer.active
    assert tracer._slots[0].failures == 0
    records = _warnings(caplog)
    assert len(records) == 6  # one per failed export, and no switch-off warning
    for record in records:
        if failure == "raises":
            assert record.exc_info is not None and record.exc_info[1] is problem
    # The exporter recovers: later calls are still exported in batches.
    exporter.result, exporter.error = SpanExportResult.SUCCESS, None
    sink.emit(_call(12))  # raises nothing (a writer thread's failure is not reported)
    assert len(exporter.exports) == 6  # queued, not exported at once
    tracer.emit(_call(13))
    _wait_for(lambda: len(exporter.exports) == 7)
    assert exporter.exports[-1][1][0].name == "demo.op12"
    assert [span.name for span in exporter.exports[-1][1]] == ["demo.op12", "demo.op13"]
    assert len(_warnings(caplog)) == 6
    sink.close()


# -- max_queued ----------------------------------------------------------------------------


def test_the_oldest_calls_beyond_max_queued_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    exporter = Recording()
    exporter.gate = threading.Event()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=4, max_queued=8, interval=60)
    tracer = Tracer(sink)
    for n in range(4):
        tracer.emit(_call(n))
    assert exporter.entered.wait(5)  # the writer thread is stuck in a slow export
    for n in range(4, 24):
        tracer.emit(_call(n))  # 20 queued meanwhile: only the newest 8 are kept
    assert _warnings(caplog) == []
    exporter.gate.set()
    tracer.flush()
    _wait_for(lambda: len(exporter.spans) >= 12 and len(_warnings(caplog)) >= 1)
    assert exporter.names == [f"demo.op{n}" for n in (0, 1, 2, 3, *range(16, 24))]
    [warning] = _warnings(caplog)
    assert re.search(r"\b12\b", warning.getMessage()), warning.getMessage()
    assert tracer.switched_off == []
    sink.close()
    assert len(exporter.spans) == 12
    assert len(_warnings(caplog)) == 1


def test_without_an_interval_the_queue_is_bounded_too(caplog: pytest.LogCaptureFixture) -> None:
    # While the writer thread waits on the exporter, calls must not pile up without limit
    # (nor wait for it: a call's thread never exports).
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    exporter = Recording()
    exporter.gate = threading.Event()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=4, max_queued=8, interval=None)
    filler = threading.Thread(target=lambda: [sink.emit(_call(n)) for n in range(4)])
    filler.start()
    assert exporter.entered.wait(5)  # the writer thread is stuck in a slow export
    assert exporter.exports == [] and filler.join(5) is None and not filler.is_alive()
    for n in range(4, 104):
        sink.emit(_call(n))
        assert len(sink._queue) <= 8
    exporter.gate.set()
    filler.join(5)
    sink.close()
    assert exporter.names[:4] == [f"demo.op{n}" for n in range(4)]
    assert exporter.names[-8:] == [f"demo.op{n}" for n in range(96, 104)]
    assert any(re.search(r"\b92\b", w.getMessage()) for w in _warnings(caplog))


def test_max_queued_must_hold_a_batch() -> None:
    with pytest.raises(ValueError):
        OpenTelemetrySink(exporter=Recording(), batch_size=8, max_queued=7)
    sink = OpenTelemetrySink(exporter=Recording(), batch_size=8, max_queued=8)
    sink.close()


# -- configuration -------------------------------------------------------------------------


def test_bad_exporter_configurations_are_config_errors() -> None:
    provider, _ = _provider()

    class NotCallable:
        export = "not a method"

        def shutdown(self) -> None:
            pass

    with pytest.raises(ConfigError):
        OpenTelemetrySink(provider, exporter=Recording())
    with pytest.raises(ConfigError):
        OpenTelemetrySink(exporter=object())
    with pytest.raises(ConfigError):
        OpenTelemetrySink(exporter=NotCallable())
    with pytest.raises(ConfigError):
        OpenTelemetrySink(resource=Resource.create({"service.name": "x"}))
    with pytest.raises(ConfigError):
        OpenTelemetrySink(provider, resource=Resource.create({"service.name": "x"}))


# -- attribute length limit ----------------------------------------------------------------


def test_string_attributes_are_cut_to_the_length_limit_as_the_sdk_cuts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, capture_content=True, interval=None)
    provider, memory = _provider()  # SpanLimits read from the environment too
    reference = OpenTelemetrySink(provider, capture_content=True, interval=None)
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")  # read when the sink was made
    tracer = Tracer(sink, reference)
    call = _call(
        0,
        request_model="m" * 30,
        finish_reason="a-very-long-finish-reason",
        tokens_input=123456789012,
        input={"body": {"q": "x" * 50}},
        output={"a": "y" * 50},
    )
    tracer.emit(call)
    tracer.flush()
    [span] = exporter.spans
    [expected] = memory.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes == dict(expected.attributes or {})
    assert attributes["connector_builder.input"] == '{"body":{"'  # compact JSON, cut
    assert attributes["connector_builder.output"] == '{"a":"yyyy'
    assert len(attributes["connector_builder.input"]) == 10  # type: ignore[arg-type]
    assert attributes["gen_ai.request.model"] == "m" * 10
    assert attributes["gen_ai.response.finish_reasons"] == ("a-very-lon",)
    assert attributes["gen_ai.usage.input_tokens"] == 123456789012  # not a string
    assert attributes["connector_builder.connector"] == "demo"  # short: unchanged
    assert span.name == expected.name == "op0 " + "m" * 30  # the name is not an attribute
    tracer.close()


def test_without_a_length_limit_nothing_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    monkeypatch.delenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, capture_content=True, flush=True)
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")  # too late for this sink
    sink.emit(_call(0, input={"q": "x" * 50}, request_model="m" * 30))
    [span] = exporter.spans
    assert json.loads(span.attributes["connector_builder.input"]) == {"q": "x" * 50}  # type: ignore[index, arg-type]
    assert span.attributes["gen_ai.request.model"] == "m" * 30  # type: ignore[index]
    sink.close()


# -- a real OTLP/HTTP export ---------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    """Takes OTLP/HTTP protobuf trace requests and keeps them on the server."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.received.append(  # type: ignore[attr-defined]
            (self.path, self.headers.get("Content-Type"), request)
        )
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[Any]]]:
    """A local OTLP/HTTP collector: its traces endpoint and what it received."""
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _any_value(value: Any) -> Any:
    """An OTLP AnyValue as (its kind, its value); an array as (kind, tuple of those)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return kind, tuple(_any_value(item) for item in value.array_value.values)
    return kind, getattr(value, kind)


def _key_values(attributes: Any) -> dict[str, Any]:
    return {item.key: _any_value(item.value) for item in attributes}


def test_spans_reach_an_otlp_http_collector(collector: tuple[str, list[Any]]) -> None:
    otlp = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        reason="opentelemetry-exporter-otlp-proto-http is not installed",
    )
    import requests
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    endpoint, received = collector
    session = requests.Session()
    session.trust_env = False  # straight to 127.0.0.1, whatever proxy the environment sets
    exporter = otlp.OTLPSpanExporter(endpoint=endpoint, session=session, timeout=5)
    resource = Resource.create({"service.name": "otlp-end-to-end"})
    sink = OpenTelemetrySink(exporter=exporter, resource=resource, interval=60)
    tracer = Tracer(sink)
    provider, _ = _provider()
    with provider.get_tracer("t").start_as_current_span("outer") as outer:
        model_call = _call(
            0,
            provider="openai",
            request_model="gpt-x",
            tokens_input=12,
            tokens_output=34,
            cost=0.0125,
            latency=0.25,
            finish_reason="stop",
            status_code=200,
        )
        tracer.emit(model_call)
    failed = _call(1, error=TracedError("ServerError", "upstream broke"), status_code=502)
    tracer.emit(failed)
    tracer.emit(_call(2, attempts=3))
    assert received == []
    tracer.flush()
    assert [(path, content_type) for path, content_type, _ in received] == [
        ("/v1/traces", "application/x-protobuf")
    ]
    [(_, _, request)] = received
    [resource_spans] = request.resource_spans
    assert _key_values(resource_spans.resource.attributes)["service.name"] == (
        "string_value",
        "otlp-end-to-end",
    )
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "connector-builder"
    first, second, third = scope_spans.spans
    assert [span.name for span in (first, second, third)] == [
        "op0 gpt-x",
        "demo.op1",
        "demo.op2",
    ]
    assert all(span.kind == Span.SpanKind.SPAN_KIND_CLIENT for span in (first, second, third))
    attributes = _key_values(first.attributes)
    assert attributes["gen_ai.usage.input_tokens"] == ("int_value", 12)
    assert attributes["gen_ai.usage.output_tokens"] == ("int_value", 34)
    assert attributes["gen_ai.usage.cost.amount"] == ("double_value", 0.0125)
    assert attributes["gen_ai.request.model"] == ("string_value", "gpt-x")
    assert attributes["gen_ai.response.finish_reasons"] == (
        "array_value",
        (("string_value", "stop"),),
    )
    assert attributes["http.response.status_code"] == ("int_value", 200)
    assert _key_values(first.attributes) == {
        key: _key_values_of(value) for key, value in model_call.attributes().items()
    }
    assert first.start_time_unix_nano == int(model_call.timestamp * 1e9)
    assert first.end_time_unix_nano == int(model_call.timestamp * 1e9) + int(0.25 * 1e9)
    assert first.status.code == Status.STATUS_CODE_UNSET
    assert second.status.code == Status.STATUS_CODE_ERROR
    assert second.status.message == "upstream broke"
    assert _key_values(second.attributes)["error.type"] == ("string_value", "ServerError")
    assert _key_values(third.attributes)["connector_builder.attempts"] == ("int_value", 3)
    parent = outer.get_span_context()
    assert first.trace_id == parent.trace_id.to_bytes(16, "big")
    assert first.parent_span_id == parent.span_id.to_bytes(8, "big")
    for span in (second, third):
        assert span.parent_span_id == b""
        assert len(span.trace_id) == 16 and span.trace_id not in {first.trace_id, bytes(16)}
    assert len({span.span_id for span in (first, second, third)}) == 3
    tracer.close()


def _key_values_of(value: Any) -> Any:
    """What an OTLP exporter makes of a Python attribute value, as :func:`_any_value`."""
    if isinstance(value, bool):
        return "bool_value", value
    if isinstance(value, int):
        return "int_value", value
    if isinstance(value, float):
        return "double_value", value
    if isinstance(value, str):
        return "string_value", value
    return "array_value", tuple(_key_values_of(item) for item in value)


# -- fork ----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_export_its_parents_queue(tmp_path: FilePath) -> None:
    target = tmp_path / "fork.log"

    class Appender(SpanExporter):
        """One line per span, appended unbuffered: a fork copies no pending bytes."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with open(target, "ab", buffering=0) as file:
                for span in spans:
                    file.write(f"{os.getpid()} {span.name}\n".encode())
            return SpanExportResult.SUCCESS

    sink = OpenTelemetrySink(exporter=Appender(), interval=60)
    sink.emit(_call(0))  # queued in the parent when it forks
    sink.emit(_call(1))

    def child() -> None:  # queue a call of its own and export it
        sink.emit(_call(2))
        sink.close()

    pid = in_forked_child(child)
    assert target.read_text().splitlines() == [f"{pid} demo.op2"]  # the child's only
    sink.close()
    parent = os.getpid()
    assert target.read_text().splitlines() == [
        f"{pid} demo.op2",
        f"{parent} demo.op0",
        f"{parent} demo.op1",
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_report_the_calls_its_parent_dropped(tmp_path: FilePath) -> None:
    target = tmp_path / "warnings.log"
    exporter = Recording()
    exporter.gate = threading.Event()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=4, max_queued=8, interval=60)
    for n in range(4):
        sink.emit(_call(n))
    assert exporter.entered.wait(5)
    for n in range(4, 24):
        sink.emit(_call(n))  # 12 dropped in the parent, not reported yet

    def child() -> None:  # its own call exported: no warning of the parent's drops
        handler = logging.FileHandler(target)
        logging.getLogger(LOGGER_NAME).addHandler(handler)
        exporter.gate = None
        sink.emit(_call(99))
        sink.write_queued()
        handler.close()

    in_forked_child(child)
    assert not target.exists() or target.read_text() == ""
    exporter.gate.set()
    sink.close()


def test_spans_queued_at_exit_are_exported_and_the_exporter_flushed() -> None:
    script = """
import sys
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from builder.runtime.tracing import OpenTelemetrySink, TracedCall, Tracer

class Printing(SpanExporter):
    def export(self, spans):
        print("export", *[span.name for span in spans], flush=True)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis=30000):
        print("force_flush", flush=True)
        return True

tracer = Tracer(OpenTelemetrySink(exporter=Printing(), interval=3600))
tracer.emit(TracedCall(0.0, "demo", "op0"))
print("exiting", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "export demo.op0", "force_flush"]


# -- what the review found ------------------------------------------------------------------


def test_an_export_runs_with_instrumentation_suppressed() -> None:
    # As the SDK's processors: an instrumented HTTP client makes no span of the export.
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    seen: list[Any] = []

    class Checking(Recording):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            seen.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            return super().export(spans)

    for flush in (False, True):
        sink = OpenTelemetrySink(exporter=Checking(), flush=flush, interval=60)
        sink.emit(_call(0))
        sink.close()
    assert seen == [True, True]
    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None  # not left on the caller


def test_the_span_attribute_length_limit_is_the_one_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, interval=60)
    sink.emit(_call(0, error=TracedError("RateLimitedError", "slow down")))
    sink.close()
    [span] = exporter.spans
    assert span.attributes["error.type"] == "RateLimi"


def _broken_spans(monkeypatch: pytest.MonkeyPatch) -> tuple[Recording, OpenTelemetrySink]:
    """A sink in exporter mode whose spans of calls named ``bad...`` fail to build (a bug
    of ours, not a failed export), after one such failure was raised by a flush."""
    exporter = Recording()
    sink = OpenTelemetrySink(exporter=exporter, batch_size=8, interval=60)
    describe = sink._name_and_attributes

    def broken(call: TracedCall) -> tuple[str, dict[str, Any]]:
        if call.operation.startswith("bad"):
            raise RuntimeError("span bug")
        return describe(call)

    monkeypatch.setattr(sink, "_name_and_attributes", broken)
    sink.emit(TracedCall(1_700_000_000.0, "demo", "bad0"))
    with pytest.raises(RuntimeError, match="span bug"):
        sink.write_queued()  # handed on here: its failure raised here
    assert sink._direct  # each call at once, until a batch succeeds
    return exporter, sink


def test_after_a_span_fails_to_build_calls_are_still_exported_by_the_writer_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, sink = _broken_spans(monkeypatch)
    tracer = Tracer(sink)
    tracer.record("demo", "op1")  # long before the 60 s interval: at once, but not here
    _wait_for(lambda: "demo.op1" in exporter.names)
    main = threading.current_thread()
    assert exporter.threads and all(thread is not main for thread in exporter.threads)
    _wait_for(lambda: not sink._direct)  # that batch succeeded: batches again
    tracer.record("demo", "op2")
    _pause(0.1)
    assert "demo.op2" not in exporter.names  # queued for the interval
    sink.close()
    assert "demo.op2" in exporter.names


def test_spans_that_keep_failing_to_build_are_counted_and_switch_the_sink_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, sink = _broken_spans(monkeypatch)
    tracer = Tracer(sink)
    with pytest.warns(RuntimeWarning, match="switched off"):
        for n in range(1, 5):  # each fails on the writer thread, raised by the next call
            tracer.record("demo", f"bad{n}")
            _wait_for(lambda: sink._unreported is not None or sink not in tracer.sinks)
    assert tracer.switched_off == [sink]
    assert exporter.exports == []  # no span was ever made
    with contextlib.suppress(RuntimeError):  # the last one, if the writer has not met it
        sink.close()
