"""Benchmark: client CPU that tracing adds per call of the generated OpenAI connector.

    python tests/benchmarks/tracing_cost.py [--quick] [--json PATH] [--calls N] [--warmup N]
                                            [--rounds N] [--chunks N] [--no-async]
                                            [--separate [--repeat N]]

``--separate`` runs each traced variant in a process of its own beside the untraced
client (see :func:`separate`), instead of all of them taking turns in one process.

The fake OpenAI service runs in another process (``tests.servers.runner.run_server``), so
``time.process_time()`` of this process measures the client alone. One client per variant,
created once (pooled connections), all alike but for their tracer:

  off             no tracer (the process-wide tracer, off by default)
  memory          ``Tracer(MemorySink())`` (default size: keeps the last 10,000 calls)
  memory, no content  ``Tracer(MemorySink(), capture_content=False)``
  jsonl           ``Tracer(JsonlSink(<temp file>))``, the default: calls queued, encoded and
                  written in batches (within 1 s, or 256 at a time)
  jsonl, buffered ``Tracer(JsonlSink(<temp file>, interval=None))``: batches of 256, no clock
  jsonl, each line  ``Tracer(JsonlSink(<temp file>, flush=True))``: each line encoded and
                  written on its call (every line on disk when its call returns; the
                  opt-in whose cost the sink's docstring states: expect it over the target)
  logging         ``Tracer(LoggingSink(logger))``, the logger writing to a file through a
                  ``logging.FileHandler``: calls queued, a record made, formatted and
                  written per call, in batches (as the JSONL sink)
  logging, each call  ``LoggingSink(logger, flush=True)``: each record logged on its call
  otel            ``Tracer(OpenTelemetrySink(provider))``: the OpenTelemetry SDK's
                  ``TracerProvider`` with a ``BatchSpanProcessor`` whose exporter keeps
                  the last batch (what an exporter sends is not timed); calls queued and
                  their spans made in batches; when the SDK is installed
  otel, each call ``OpenTelemetrySink(provider, flush=True)``: each span made on its call
  otel exporter   ``Tracer(OpenTelemetrySink(exporter=...))``, the same kind of exporter
                  with no provider: the sink makes each finished span itself (an SDK
                  ``ReadableSpan``) and exports them from its writer thread, in batches
  otel exporter, each call  the same with ``flush=True``: each span made and exported on
                  its call

Rows:
  POST chat       ``create_chat_completion`` (sync): one TracedCall with tokens, cost, model
  async POST chat the same through ``AsyncOpenAI``
  stream chat     ``stream_chat_completion`` read to its end (``--chunks`` text chunks, plus
                  role, finish and usage chunks): one TracedCall with the full text

Each variant makes ``--warmup`` calls first, then ``--rounds`` short rounds of ``--calls``
calls (streams: three times the rounds, of a quarter as many calls); the variants take
turns within a round and the order reverses every round, so that whatever else the
machine does falls on all of them alike. A queueing sink hands on what a round queued
before the round's clock stops (``Tracer.flush``), so each round pays for its own calls
in full.
Reported: the median over rounds of CPU µs per call, and the CPU tracing adds: the median
over rounds of (variant - off) in the same round, with the interquartile range of those
differences. Target: under 20 µs added per call. For the stream the added CPU is also given
per chunk. Before measuring, every traced variant is checked to have recorded what it should
(tokens, cost, model, the stream's full text, one JSON line per call; a queueing sink is
made to hand on what it queued first).

A second table times the tracing code alone: the recorded request and response of one call
(and the decoded chunks of one stream) replayed through the same trace objects the client
uses, with no I/O, many times: what tracing costs when nothing else competes for the caches.
A trace works out its cost, input and output when they are first read, not on the call's
path, so for the memory sinks the table also times the call traced and then read back whole
(``to_dict()``: cost, input and output parsed and scrubbed), what a reader of every kept trace
pays in all (the JSONL sinks encode every trace they write, so theirs is in the time, spread
over the batch). Two more rows time the libraries the logging and OpenTelemetry sinks
hand on to, alone: the same log line through the same kind of logger and handler, and the
same span made by the same kind of provider, without any tracing.
The replayed stream reads each decoded chunk with the reader of the chunks'
model class (the client runs the same walk, without its class checks, in the frame that
decodes the chunk).
The two tables differ by far more than I/O: in situ the tracing code runs once every few
hundred µs, after the HTTP stack, the JSON decoding and the kernel have evicted its code and
data from the CPU caches; replayed, it stays in them. It executes about as many instructions
either way (``valgrind --tool=callgrind`` counts them within some 15% of each other), but
in situ they miss the caches, so what makes tracing cheap in situ is touching little: few
functions, few objects, short code, and work done in warm batches (the default JSONL sink
encodes and writes its lines a batch at a time, in one loop and one system call; its
process CPU, writer thread included, is what the table shows). A stream pays for each
chunk: reading it costs about as much again as one more Python call per chunk would, so
each chunk is read in the frame that decodes it. Keeping the chunks to read them all at
the end, in one warm loop, was measured and is no cheaper in situ: keeping ~20 decoded
chunks alive costs about what the cold per-chunk reading did (their memory is no longer
reused hot by the next chunk, and the collector walks them).

The generated OpenAI connector's spec maps each operation's usage (model, tokens, finish
reason, streamed text) and prices its models, so the measured tracer reads tokens and
computes cost as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``tests.benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import connectors.openai.client as openai_client  # noqa: E402
from builder.runtime import tracing  # noqa: E402
from builder.runtime.operation import Operation  # noqa: E402
from builder.runtime.sinks import _log_line  # noqa: E402
from builder.runtime.tracing import (  # noqa: E402
    JsonlSink,
    LoggingSink,
    MemorySink,
    OpenTelemetrySink,
    Tracer,
)
from connectors.openai import AsyncOpenAI, OpenAI  # noqa: E402
from tests.benchmarks._common import parser, summary, table, verdict, write_json  # noqa: E402
from tests.servers.runner import run_server  # noqa: E402

TARGET_ADDED_US = 20.0

MODEL = "gpt-4o-mini"  # priced in the spec, so every trace carries a cost
MESSAGES = [{"role": "user", "content": "hi"}]
EXPECTED_CONTENT = "echo: hi"
API_KEY = "sk-bench-4f1c9a7e0b3d"  # a secret the traces are scrubbed of, as in production
try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
except ImportError:  # the [otel] extra is not installed: no otel row
    TracerProvider = None  # type: ignore[assignment,misc]

VARIANTS = (
    "off",
    "memory",
    "memory, no content",
    "jsonl",
    "jsonl, buffered",
    "jsonl, each line",
    "logging",
    "logging, each call",
) + (
    ("otel", "otel, each call", "otel exporter", "otel exporter, each call")
    if TracerProvider is not None
    else ()
)
REWARM = 1  # an untimed call before each timed round (uvicorn drops idle connections)


# --------------------------------------------------------------------------------------- #
# The connector
# --------------------------------------------------------------------------------------- #


def _operations() -> dict[str, Operation[Any]]:
    return {
        value.name: value for value in vars(openai_client).values() if isinstance(value, Operation)
    }


def _check_connector() -> None:
    """The generated connector reads usage and prices its models (else there is nothing
    for tracing to read, and the figures would flatter it)."""
    ops = _operations()
    for name in ("create_chat_completion", "stream_chat_completion"):
        if ops[name].usage is None:
            raise SystemExit(f"connectors.openai: {name} maps no usage; regenerate it")
    service = openai_client.SERVICE
    if service.pricing is None or service.pricing.price(MODEL) is None:
        raise SystemExit(f"connectors.openai: {MODEL} is not priced; regenerate it")


def make_client(cls: type[Any], v1: str, tracer: Tracer | None) -> Any:
    """A client of ``cls`` with ``tracer``."""
    return cls(api_key=API_KEY, base_url=v1, tracer=tracer)


def tracers(directory: Path) -> dict[str, Tracer | None]:
    """The tracer of each variant measured (``VARIANTS``), made in that order."""
    made: dict[str, Callable[[], Tracer | None]] = {
        "off": lambda: None,
        "memory": lambda: Tracer(MemorySink()),
        "memory, no content": lambda: Tracer(MemorySink(), capture_content=False),
        "jsonl": lambda: Tracer(JsonlSink(directory / "traces.jsonl")),
        "jsonl, buffered": lambda: Tracer(JsonlSink(directory / "buffered.jsonl", interval=None)),
        "jsonl, each line": lambda: Tracer(JsonlSink(directory / "each.jsonl", flush=True)),
        "logging": lambda: Tracer(LoggingSink(_file_logger(directory / "traces.log"))),
        "logging, each call": lambda: Tracer(
            LoggingSink(_file_logger(directory / "each.log"), flush=True)
        ),
        "otel": lambda: Tracer(_otel_sink()),
        "otel, each call": lambda: Tracer(_otel_sink(flush=True)),
        "otel exporter": lambda: Tracer(OpenTelemetrySink(exporter=_KeepLastBatch())),
        "otel exporter, each call": lambda: Tracer(
            OpenTelemetrySink(exporter=_KeepLastBatch(), flush=True)
        ),
    }
    return {variant: made[variant]() for variant in VARIANTS}


def _file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger(f"tracing-cost.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for old in list(logger.handlers):  # a logger of an earlier row: one handler, not two
        logger.removeHandler(old)
        old.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger.addHandler(handler)
    return logger


class _KeepLastBatch(SpanExporter if TracerProvider is not None else object):  # type: ignore[misc]
    """An exporter that keeps the last batch it was given, for the checks."""

    def __init__(self) -> None:
        self.last: list[Any] = []

    def export(self, spans: Any) -> Any:
        self.last = list(spans)
        return SpanExportResult.SUCCESS


def _otel_sink(*, flush: bool = False) -> OpenTelemetrySink:
    provider = TracerProvider()
    provider.exporter = _KeepLastBatch()  # type: ignore[attr-defined]
    provider.add_span_processor(BatchSpanProcessor(provider.exporter))  # type: ignore[attr-defined]
    sink = OpenTelemetrySink(provider, flush=flush)
    sink.provider = provider  # type: ignore[attr-defined]
    return sink


# --------------------------------------------------------------------------------------- #
# Checks (outside the timed loops)
# --------------------------------------------------------------------------------------- #


def _last_trace(tracer: Tracer | None) -> Any:
    assert tracer is not None
    sink = tracer.sinks[0]
    if isinstance(sink, MemorySink):
        return sink.calls[-1]
    tracer.flush()  # what a queueing sink holds, handed on to be checked
    if isinstance(sink, LoggingSink):
        handler = sink.logger.handlers[0]
        with open(handler.baseFilename, encoding="utf-8") as lines:  # type: ignore[attr-defined]
            return lines.readlines()[-1]
    if isinstance(sink, OpenTelemetrySink):
        if sink._exporter is not None:  # exporter mode: tracer.flush() exported them
            return sink._exporter.last[-1]
        sink.provider.force_flush()  # type: ignore[attr-defined]
        return sink.provider.exporter.last[-1]  # type: ignore[attr-defined]
    assert isinstance(sink, JsonlSink)
    with open(sink.path, "rb") as lines:
        return json.loads(lines.readlines()[-1])


def check_traces(tracer: Tracer | None, operation: str, expected_text: str | None) -> None:
    if tracer is None:
        return
    if tracer.switched_off:
        raise AssertionError(f"a sink was switched off: {tracer.switched_off}")
    trace = _last_trace(tracer)
    if isinstance(trace, str):  # a log line
        wanted = (f".{operation} ", "tokens=", "cost=$", f"model={MODEL}")
        if not all(part in trace for part in wanted):
            raise AssertionError(f"unexpected log line: {trace!r}")
        return
    if not isinstance(trace, dict | tracing.TracedCall):  # an OpenTelemetry span
        attributes = dict(trace.attributes)
        if not (
            trace.name.startswith(operation)
            and attributes.get("gen_ai.usage.input_tokens")
            and attributes.get("gen_ai.usage.output_tokens")
            and attributes.get(tracing.COST_ATTRIBUTE) is not None
        ):
            raise AssertionError(f"unexpected span: {trace.name} {attributes}")
        return
    get = trace.get if isinstance(trace, dict) else lambda key: getattr(trace, key)
    if get("operation") != operation or get("error") is not None:
        raise AssertionError(f"unexpected trace: {trace}")
    if not get("tokens_input") or not get("tokens_output") or get("cost") is None:
        raise AssertionError(f"trace without tokens or cost: {trace}")
    if get("model") != MODEL:
        raise AssertionError(f"trace with model {get('model')!r}")
    if expected_text is not None and tracer.capture_content:
        if get("output") != expected_text:
            raise AssertionError(f"stream trace output {get('output')!r} != {expected_text!r}")


def _check_chat(result: Any) -> None:
    if result.choices[0].message.content != EXPECTED_CONTENT:
        raise AssertionError(f"unexpected content {result.choices[0].message.content!r}")


# --------------------------------------------------------------------------------------- #
# Measurement
# --------------------------------------------------------------------------------------- #


def _nothing() -> None:
    pass


def _time_sync(
    fn: Callable[[], Any], n: int, hand_on: Callable[[], None] = _nothing
) -> tuple[float, Any]:
    result = None
    cpu0 = time.process_time()
    for _ in range(n):
        result = fn()
    hand_on()
    return (time.process_time() - cpu0) / n * 1e6, result


async def _time_async(
    fn: Callable[[], Awaitable[Any]], n: int, hand_on: Callable[[], None] = _nothing
) -> tuple[float, Any]:
    result = None
    cpu0 = time.process_time()
    for _ in range(n):
        result = await fn()
    hand_on()
    return (time.process_time() - cpu0) / n * 1e6, result


def hand_ons(traced: dict[str, Tracer | None]) -> dict[str, Callable[[], None]]:
    """What ends each timed round of a variant: a queueing sink hands on what the round
    queued (lines written, records logged, spans made), so that every round pays for its
    own calls in full. Without it a round's median would miss the batches: with 100 calls a
    round and 256 to a batch, most rounds hand on none. (This costs the queueing sinks one
    extra, smaller batch a round: a little more than they pay in use.)"""
    return {v: _hand_on(t) for v, t in traced.items()}


def _hand_on(tracer: Tracer | None) -> Callable[[], None]:
    if tracer is None:
        return _nothing
    sink = tracer.sinks[0]
    if not isinstance(sink, OpenTelemetrySink) or sink._exporter is not None:
        return tracer.flush  # exporter mode: the sink exports, in the round's clock
    provider = sink.provider  # type: ignore[attr-defined]

    def spans_out() -> None:
        # The provider's flush (which has the sink make its queued spans first): the batch
        # span processor's export thread, which runs every 512 spans, counted in the round
        # of its own variant rather than in whichever round it happens to run.
        tracer.flush()
        provider.force_flush()

    return spans_out


class Row:
    """Per-round CPU samples of one row for every variant."""

    def __init__(self, name: str, chunks: int | None = None) -> None:
        self.name = name
        self.chunks = chunks  # stream rows: text chunks per call
        self.cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def added(self, variant: str) -> list[float]:
        """Per round: the variant's CPU per call minus the untraced client's."""
        return [v - o for v, o in zip(self.cpu[variant], self.cpu["off"], strict=True)]

    def results(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for variant in VARIANTS:
            entry: dict[str, Any] = {"cpu_us_per_call": summary(self.cpu[variant])}
            if variant != "off":
                added = self.added(variant)
                entry["added_us_per_call"] = summary(added)
                entry["added_us_per_call"]["iqr"] = _iqr(added)
                if self.chunks:
                    entry["added_us_per_chunk"] = statistics.median(added) / self.chunks
            out[variant] = entry
        if self.chunks:
            out["chunks_per_call"] = self.chunks
        return out


def _iqr(values: list[float]) -> tuple[float, float]:
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[0], quartiles[2]


def _order(round_index: int) -> tuple[str, ...]:
    return VARIANTS if round_index % 2 == 0 else tuple(reversed(VARIANTS))


def run_sync_row(
    row: Row,
    fns: dict[str, Callable[[], Any]],
    hand_on: dict[str, Callable[[], None]],
    calls: int,
    warmup: int,
    rounds: int,
) -> None:
    for variant in VARIANTS:
        _time_sync(fns[variant], warmup, hand_on[variant])
    for r in range(rounds):
        for variant in _order(r):
            _time_sync(fns[variant], REWARM, hand_on[variant])
            cpu, _ = _time_sync(fns[variant], calls, hand_on[variant])
            row.cpu[variant].append(cpu)
        _progress(row, r, rounds)


async def run_async_row(
    row: Row,
    fns: dict[str, Callable[[], Awaitable[Any]]],
    hand_on: dict[str, Callable[[], None]],
    calls: int,
    warmup: int,
    rounds: int,
) -> None:
    for variant in VARIANTS:
        await _time_async(fns[variant], warmup, hand_on[variant])
    for r in range(rounds):
        for variant in _order(r):
            await _time_async(fns[variant], REWARM, hand_on[variant])
            cpu, _ = await _time_async(fns[variant], calls, hand_on[variant])
            row.cpu[variant].append(cpu)
        _progress(row, r, rounds)


def _progress(row: Row, r: int, rounds: int) -> None:
    if (r + 1) % 10 and r + 1 != rounds:
        return
    last = {v: statistics.median(row.cpu[v]) for v in VARIANTS}
    print(
        f"  {row.name}: round {r + 1}/{rounds}: "
        + ", ".join(f"{v} {c:.0f} µs" for v, c in last.items())
        + " (medians so far)",
        flush=True,
    )


def sync_rows(
    v1: str, directory: Path, calls: int, warmup: int, rounds: int, chunks: int
) -> list[Row]:
    traced = tracers(directory)
    clients = {v: make_client(OpenAI, v1, traced[v]) for v in VARIANTS}
    prompt = " ".join(f"w{i}" for i in range(chunks - 1))  # "echo: " + prompt = chunks words
    expected_text = "echo: " + prompt

    def chat(client: Any) -> Callable[[], Any]:
        return lambda: client.create_chat_completion(model=MODEL, messages=MESSAGES)

    def stream(client: Any) -> Callable[[], Any]:
        def read() -> int:
            count = 0
            for _ in client.stream_chat_completion(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                stream_options={"include_usage": True},
            ):
                count += 1
            return count

        return read

    try:
        for variant, client in clients.items():
            _check_chat(chat(client)())
            check_traces(traced[variant], "create_chat_completion", None)
            events = stream(client)()
            if events != chunks + 3:  # role, text chunks, finish, usage
                raise AssertionError(f"{variant}: {events} chunks, expected {chunks + 3}")
            check_traces(traced[variant], "stream_chat_completion", expected_text)

        post = Row("POST chat")
        ends = hand_ons(traced)
        run_sync_row(post, {v: chat(c) for v, c in clients.items()}, ends, calls, warmup, rounds)
        streamed = Row(f"stream chat ({chunks} chunks)", chunks=chunks + 3)
        stream_calls = max(calls // 4, 1)
        # A stream's samples vary more (a quarter as many calls, each far longer): three
        # times the rounds, for a median as steady as the other rows'.
        run_sync_row(
            streamed,
            {v: stream(c) for v, c in clients.items()},
            ends,
            stream_calls,
            warmup,
            3 * rounds,
        )
        for variant in VARIANTS:
            check_traces(traced[variant], "stream_chat_completion", expected_text)
    finally:
        for client in clients.values():
            client.close()
        for tracer in traced.values():
            if tracer is not None:
                tracer.close()
    return [post, streamed]


def async_row(v1: str, directory: Path, calls: int, warmup: int, rounds: int) -> Row:
    async def run() -> Row:
        traced = tracers(directory)
        clients = {v: make_client(AsyncOpenAI, v1, traced[v]) for v in VARIANTS}

        def chat(client: Any) -> Callable[[], Awaitable[Any]]:
            return lambda: client.create_chat_completion(model=MODEL, messages=MESSAGES)

        row = Row("async POST chat")
        try:
            for variant, client in clients.items():
                _check_chat(await chat(client)())
                check_traces(traced[variant], "create_chat_completion", None)
            await run_async_row(
                row,
                {v: chat(c) for v, c in clients.items()},
                hand_ons(traced),
                calls,
                warmup,
                rounds,
            )
        finally:
            for client in clients.values():
                await client.aclose()
            for tracer in traced.values():
                if tracer is not None:
                    tracer.close()
        return row

    return asyncio.run(run())


# --------------------------------------------------------------------------------------- #
# The tracing code alone
# --------------------------------------------------------------------------------------- #


def isolated(v1: str, directory: Path, chunks: int, number: int) -> dict[str, dict[str, float]]:
    """CPU µs of tracing one call (and one stream), replayed without I/O: the recorded
    request, response and decoded chunks go through the objects the client uses."""
    from builder.runtime.tracing import CallTrace, StreamTrace

    ops = _operations()
    chat_op, stream_op = ops["create_chat_completion"], ops["stream_chat_completion"]
    prompt = " ".join(f"w{i}" for i in range(chunks - 1))
    stream_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream_options": {"include_usage": True},
        "stream": True,
    }
    chat_body = {"model": MODEL, "messages": MESSAGES, "stream": False}
    out: dict[str, dict[str, float]] = {}
    recorded: tracing.TracedCall | None = None  # a chat call, traced by the memory sink
    with make_client(OpenAI, v1, None) as client:
        request = client._build(client._http, chat_op, None, None, None, chat_body)
        response = client._http.send(request)
        result = client._decode(chat_op, response)
        stream_request = client._build(client._http, stream_op, None, None, None, stream_body)
        decoded = list(client._stream(stream_op, body=stream_body))
        context = client._trace_context()
        for variant, tracer in tracers(directory).items():
            if tracer is None:
                continue

            def call(tracer: Tracer = tracer) -> None:
                trace = CallTrace(tracer, context, chat_op, None, None, chat_body)
                trace.request = request
                trace.succeeded(response, result)

            def stream(tracer: Tracer = tracer) -> None:
                trace = StreamTrace(tracer, context, stream_op, None, None, stream_body)
                trace.request = stream_request
                trace.opened(response)
                # Each chunk read as the stream reads it (in situ, in the frame that
                # decodes it: trace.decode_read, the reader of the chunks' model class),
                # without the decoding.
                read = stream_op.usage.chunk_reader(type(decoded[0]))
                found = trace
                for chunk in decoded:
                    read(found, None, chunk)
                trace.stop(None)

            out[variant] = {
                "call_us": _best_of(call, number, _hand_on(tracer)),
                "stream_us": _best_of(stream, max(number // 10, 1), _hand_on(tracer)),
            }
            sink = tracer.sinks[0]
            if isinstance(sink, MemorySink):
                kept = sink._calls

                def call_read(tracer: Tracer = tracer, kept: Any = kept) -> None:
                    call(tracer)
                    kept[-1].to_dict()

                def stream_read(tracer: Tracer = tracer, kept: Any = kept) -> None:
                    stream(tracer)
                    kept[-1].to_dict()

                out[variant]["call_read_us"] = _best_of(call_read, number)
                out[variant]["stream_read_us"] = _best_of(stream_read, max(number // 10, 1))
                call(tracer)
                recorded = kept[-1]
            tracer.close()
    assert recorded is not None, "the memory variant records the call the libraries log"
    for library, us in libraries_alone(directory, recorded, number).items():
        out[f"{library} library alone"] = {"call_us": us}
    return out


def _best_of(fn: Callable[[], Any], number: int, hand_on: Callable[[], None] = _nothing) -> float:
    """Median of 7 repeats of ``number`` runs (and a hand-on of what they queued), in CPU
    µs per run."""
    samples = []
    for _ in range(7):
        cpu0 = time.process_time()
        for _ in range(number):
            fn()
        hand_on()
        samples.append((time.process_time() - cpu0) / number * 1e6)
    return statistics.median(samples)


def libraries_alone(directory: Path, call: tracing.TracedCall, number: int) -> dict[str, float]:
    """CPU µs of what the logging and OpenTelemetry sinks ask of their library for one call,
    without tracing: the same log line logged through the same kind of logger and handler,
    and the same span (name, kind, times, attributes) made by the same kind of provider."""
    logger = _file_logger(directory / "alone.log")
    line = _log_line(call)

    def log() -> None:  # what the sink asks of logging: a record made and handled
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, "%s", (line,), None)
        )

    out = {"logging": _best_of(log, number)}
    if TracerProvider is not None:
        sink = _otel_sink()
        otel = sink._tracer
        from opentelemetry.trace import SpanKind

        name = f"{call.operation} {call.request_model}"
        attributes = call.attributes()
        start = int(call.timestamp * 1e9)
        end = start + int(call.latency * 1e9)

        def span() -> None:
            otel.start_span(
                name, kind=SpanKind.CLIENT, start_time=start, attributes=attributes
            ).end(end_time=end)

        out["otel"] = _best_of(span, number)
        sink.provider.force_flush()  # type: ignore[attr-defined]
        sink.close()
    return out


def off_path_ns() -> float:
    """What a call pays while tracing is off: the check ``_call`` makes, alone."""

    class Probe:
        _tracer: Tracer | None = None

    probe = Probe()
    number = 1_000_000

    def check() -> bool:
        return (probe._tracer or tracing._process_tracer).active

    baseline = min(timeit.repeat(lambda: None, number=number, repeat=5))
    checked = min(timeit.repeat(check, number=number, repeat=5))
    return max(checked - baseline, 0.0) / number * 1e9


# --------------------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------------------- #


def report(rows: list[Row], calls: int, rounds: int) -> str:
    body = []
    for row in rows:
        for variant in VARIANTS:
            cpu = statistics.median(row.cpu[variant])
            if variant == "off":
                added_text, spread, per_chunk, ok = "", "", "", ""
            else:
                added = statistics.median(row.added(variant))
                low, high = _iqr(row.added(variant))
                added_text, spread = f"{added:+.1f}", f"{low:+.0f}..{high:+.0f}"
                per_chunk = f"{added / row.chunks:.2f}" if row.chunks else ""
                ok = verdict(added, TARGET_ADDED_US)
            body.append(
                [
                    row.name if variant == VARIANTS[0] else "",
                    variant,
                    f"{cpu:.1f}",
                    f"{min(row.cpu[variant]):.1f}",
                    added_text,
                    spread,
                    per_chunk,
                    f"< {TARGET_ADDED_US:.0f}" if variant != "off" else "",
                    ok,
                ]
            )
    return table(
        [
            "row",
            "tracing",
            "CPU µs/call",
            "min µs",
            "added µs",
            "IQR",
            "µs/chunk",
            "target",
            "",
        ],
        body,
        title=(
            f"Client CPU per call with tracing off and on (process_time; median of {rounds} "
            f"rounds x {calls} calls; streams: {3 * rounds} rounds x {max(calls // 4, 1)})"
        ),
    )


def separate(args: argparse.Namespace) -> int:
    """``--separate``: each traced variant measured in a process of its own (this script
    with ``--variants off|<variant>``), ``--repeat`` times, the processes taking turns.

    In one process the variants share the CPU caches and the heap, and what each adds
    moves with what else the process holds: on one machine, one code, the memory sink's
    20-chunk stream measured +21.5 µs among all twelve variants and +28 to +33 µs among
    six or seven of them. Beside an untraced client alone, as an application has one
    tracer, each variant pays only for its own; the median over processes evens out
    where each process's objects happen to lie."""
    passed = [f"--chunks={args.chunks}"]
    for option in ("calls", "warmup", "rounds"):
        if getattr(args, option) is not None:
            passed.append(f"--{option}={getattr(args, option)}")
    passed += ["--quick"] * args.quick + ["--no-async"] * args.no_async
    added: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tracing-cost-separate-") as tmp:
        for repeat in range(max(args.repeat, 1)):
            for variant in VARIANTS[1:]:
                out = Path(tmp) / "child.json"
                command = [sys.executable, str(Path(__file__).resolve()), *passed]
                command += ["--variants", f"off|{variant}", "--json", str(out)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
                    raise SystemExit(f"{variant}: the child process failed")
                rows = json.loads(out.read_text(encoding="utf-8"))["results"]["rows"]
                for row, entries in rows.items():
                    median = entries[variant]["added_us_per_call"]["median"]
                    added.setdefault(row, {}).setdefault(variant, []).append(median)
                print(
                    f"  process {repeat + 1}/{args.repeat} {variant}: "
                    + ", ".join(f"{row} {v[variant][-1]:+.1f}" for row, v in added.items()),
                    flush=True,
                )
    print()
    print(
        table(
            ["row", "variant", "added µs (median of processes)", "processes", "target"],
            [
                [
                    row,
                    variant,
                    f"{statistics.median(values):+.1f}",
                    " ".join(f"{v:+.1f}" for v in values),
                    f"< {TARGET_ADDED_US:.0f}  "
                    + verdict(statistics.median(values), TARGET_ADDED_US),
                ]
                for row, by_variant in added.items()
                for variant, values in by_variant.items()
            ],
            title="Each variant in its own process beside an untraced client "
            f"({time.perf_counter() - started:.0f} s)",
        )
    )
    write_json(
        args.json,
        "tracing_cost_separate",
        {"repeat": args.repeat, "argv": passed},
        {"added_us_per_call": added, "target_added_us_per_call": TARGET_ADDED_US},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, help="calls per variant per round (default 100)")
    p.add_argument("--warmup", type=int, help="warm-up calls per variant (default 200)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 60)")
    p.add_argument("--chunks", type=int, default=20, help="text chunks per stream (default 20)")
    p.add_argument("--no-async", action="store_true", help="skip the async row")
    p.add_argument(
        "--separate",
        action="store_true",
        help="each traced variant in a process of its own, beside an untraced client",
    )
    p.add_argument("--repeat", type=int, default=1, help="--separate: processes per variant")
    p.add_argument("--variants", help=argparse.SUPPRESS)  # "off|memory": the ones measured
    args = p.parse_args(argv)
    global VARIANTS
    if args.variants:
        unknown = set(args.variants.split("|")) - set(VARIANTS)
        if unknown or not args.variants.startswith("off|"):
            p.error(f"--variants: 'off|...' of {VARIANTS}, not {sorted(unknown)}")
        VARIANTS = tuple(args.variants.split("|"))
    if args.separate:
        return separate(args)
    calls = args.calls or (40 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (20 if args.quick else 200)
    rounds = args.rounds or (5 if args.quick else 60)
    chunks = max(args.chunks, 2)

    _check_connector()
    started = time.perf_counter()
    print(
        f"tracing cost: {rounds} rounds x {calls} calls per variant after {warmup} warm-up "
        f"calls; streams of {chunks} text chunks",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="tracing-cost-") as tmp, run_server() as base_url:
        v1 = base_url + "/v1"
        rows = sync_rows(v1, Path(tmp), calls, warmup, rounds, chunks)
        if not args.no_async:
            rows.append(async_row(v1, Path(tmp), calls, warmup, rounds))
        alone = (
            {} if args.variants else isolated(v1, Path(tmp), chunks, 200 if args.quick else 2000)
        )
        jsonl_bytes = sum(f.stat().st_size for f in Path(tmp).glob("*.jsonl"))
    off_ns = off_path_ns()
    elapsed = time.perf_counter() - started

    print()
    print(report(rows, calls, rounds))
    print()
    print(
        table(
            [
                "tracing",
                "one call µs",
                f"one stream µs ({chunks + 3} chunks)",
                "µs/chunk",
                "call + read back µs",
                "stream + read back µs",
            ],
            [
                [
                    variant,
                    f"{v['call_us']:.1f}",
                    f"{v['stream_us']:.1f}" if "stream_us" in v else "",
                    f"{v['stream_us'] / (chunks + 3):.2f}" if "stream_us" in v else "",
                    f"{v['call_read_us']:.1f}" if "call_read_us" in v else "",
                    f"{v['stream_read_us']:.1f}" if "stream_read_us" in v else "",
                ]
                for variant, v in alone.items()
            ],
            title="The tracing code alone (CPU per trace, replayed without I/O)",
        )
    )
    print(
        f"\nwith tracing off, a call pays one check: {off_ns:.0f} ns "
        f"(`(client._tracer or process tracer).active`, timed alone)"
    )
    print(f"(total run time {elapsed:.0f} s; JSONL written: {jsonl_bytes / 1e6:.1f} MB)")

    results: dict[str, Any] = {row.name: row.results() for row in rows}
    verdicts = {
        f"{row.name} / {variant}": verdict(statistics.median(row.added(variant)), TARGET_ADDED_US)
        for row in rows
        for variant in VARIANTS[1:]
    }
    write_json(
        args.json,
        "tracing_cost",
        {
            "calls": calls,
            "warmup": warmup,
            "rounds": rounds,
            "chunks": chunks,
            "quick": args.quick,
            "clock": "time.process_time (client process only)",
        },
        {
            "rows": results,
            "tracing_code_alone_us": alone,
            "off_path_check_ns": off_ns,
            "target_added_us_per_call": TARGET_ADDED_US,
            "verdicts": verdicts,
            "elapsed_s": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
