"""Tracing of calls and pages: every TracedCall field, sinks, switch-off, OTel, secrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path as FilePath
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from builder.runtime import errors, tracing
from builder.runtime.auth import ApiKeyAuth
from builder.runtime.operation import Decoder, Operation
from builder.runtime.pagination import Pagination
from builder.runtime.paths import Path
from builder.runtime.pricing import Pricing
from builder.runtime.tracing import (
    COST_ATTRIBUTE,
    JsonlSink,
    LoggingSink,
    MemorySink,
    OpenTelemetrySink,
    TracedCall,
    Tracer,
    UsageMap,
    configure,
    get_tracer,
    set_tracer,
    traced,
)
from tests.runtime._clients import BASE_URL, TOKEN, AsyncDemo, Color, Demo, service

pytestmark = pytest.mark.timeout(20)

PRICING = Pricing("2026-01-01", "https://example.com/prices", {"gpt-4o-mini": (0.15, 0.6)})
LLM_SERVICE = service(provider="openai", pricing=PRICING)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: Message
    finish_reason: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Completion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    model: str
    choices: list[Choice]
    usage: Usage | None = None


CHAT_USAGE = UsageMap(
    model="model",
    tokens_input="usage.prompt_tokens",
    tokens_output="usage.completion_tokens",
    finish_reason="choices.0.finish_reason",
    request_model="model",
)
CHAT: Operation[Completion] = Operation(
    "create_chat_completion",
    "POST",
    "/chat/completions",
    response=Decoder(Completion),
    usage=CHAT_USAGE,
)
CHAT_UNTYPED: Operation[Any] = Operation(
    "create_chat_completion", "POST", "/chat/completions", usage=CHAT_USAGE
)
GET_THING: Operation[Any] = Operation("get_thing", "GET", "/things/{thing_id}")

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
}
MESSAGES = [{"role": "user", "content": "hi"}]
EXPECTED_COST = (12 * 0.15 + 30 * 0.6) / 1_000_000


@pytest.fixture(autouse=True)
def _process_tracer_restored() -> Iterator[None]:
    previous = set_tracer(None)
    yield
    set_tracer(previous)


@pytest.fixture(autouse=True)
def _internal_warning_rearmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_warned_internal", False)


def chat(client: Demo, **body: Any) -> Completion:
    return client._call(CHAT, body={"model": "gpt-4o-mini", "messages": MESSAGES, **body})


# -- one call, every field -----------------------------------------------------------------


def test_a_call_is_traced_with_every_field(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = MemorySink()
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    before = time.time()
    result = chat(client, temperature=None, seed=7)
    after = time.time()

    assert result.choices[0].message.content == "hello"
    [call] = sink.calls
    assert isinstance(call, TracedCall)
    assert before <= call.timestamp <= after
    assert 0 < call.latency <= after - before
    assert call.connector == "demo"
    assert call.operation == "create_chat_completion"
    assert call.provider == "openai"
    assert call.request_model == "gpt-4o-mini"
    assert call.response_model == "gpt-4o-mini-2024-07-18"
    assert call.model == "gpt-4o-mini-2024-07-18"
    # The body as sent: None dropped, JSON values.
    assert call.input == {"body": {"model": "gpt-4o-mini", "messages": MESSAGES, "seed": 7}}
    assert call.output == COMPLETION
    assert (call.tokens_input, call.tokens_output) == (12, 30)
    assert call.cost == pytest.approx(EXPECTED_COST)  # the dated name falls back to gpt-4o-mini
    assert call.error is None
    assert call.status_code == 200
    assert call.attempts == 1
    assert call.finish_reason == "stop"
    assert (call.streamed, call.abandoned) == (False, False)


def test_attributes_use_the_genai_semantic_convention_names(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = MemorySink()
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(sink)))
    attrs = sink.calls[0].attributes()
    assert attrs == {
        "gen_ai.operation.name": "create_chat_completion",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.response.finish_reasons": ("stop",),
        COST_ATTRIBUTE: pytest.approx(EXPECTED_COST),
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "http.response.status_code": 200,
        "connector_builder.connector": "demo",
        "connector_builder.attempts": 1,
    }
    assert COST_ATTRIBUTE == "gen_ai.usage.cost.amount"


def test_an_async_call_is_traced_the_same(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = MemorySink()

    async def main() -> Completion:
        async with AsyncDemo(service=LLM_SERVICE, tracer=Tracer(sink)) as client:
            return await client._call(CHAT, body={"model": "gpt-4o-mini", "messages": MESSAGES})

    result = asyncio.run(main())
    assert result.usage is not None and result.usage.prompt_tokens == 12
    [call] = sink.calls
    assert call.output == COMPLETION
    assert call.input == {"body": {"model": "gpt-4o-mini", "messages": MESSAGES}}
    assert (call.tokens_input, call.tokens_output, call.finish_reason) == (12, 30, "stop")
    assert call.cost == pytest.approx(EXPECTED_COST)
    assert (call.status_code, call.attempts, call.error) == (200, 1, None)


def test_an_untyped_response_is_read_the_same(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = MemorySink()
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    client._call(CHAT_UNTYPED, body={"model": "gpt-4o-mini", "messages": MESSAGES})
    call = sink.calls[0]
    assert (call.response_model, call.tokens_input, call.tokens_output) == (
        "gpt-4o-mini-2024-07-18",
        12,
        30,
    )


def test_an_unpriced_model_costs_none_and_no_usage_map_reads_nothing(
    api: respx.MockRouter,
) -> None:
    api.post("/chat/completions").respond(200, json={**COMPLETION, "model": "mystery-1"})
    sink = MemorySink()
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    client._call(CHAT, body={"model": "mystery-1", "messages": MESSAGES})
    assert sink.calls[0].cost is None
    assert sink.calls[0].tokens_input == 12
    # A plain connector: no provider, no usage map, no model or tokens; still traced.
    api.get("/things/7").respond(200, json={"id": 7})
    plain = Demo(tracer=Tracer(sink))
    plain._call(GET_THING, path={"thing_id": 7})
    call = sink.calls[-1]
    assert (call.provider, call.model, call.tokens_input, call.cost) == (None, None, None, None)
    assert call.attributes() == {
        "gen_ai.operation.name": "get_thing",
        "connector_builder.connector": "demo",
        "http.response.status_code": 200,
        "connector_builder.attempts": 1,
    }


def test_path_and_query_are_traced_as_sent(api: respx.MockRouter) -> None:
    api.get("/things/a%2Fb").respond(200, text="plain text")
    op: Operation[str] = Operation("get_thing", "GET", "/things/{thing_id}", response_kind="text")
    sink = MemorySink()
    client = Demo(tracer=Tracer(sink))
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    client._call(
        op, path={"thing_id": "a/b"}, query={"color": Color.RED, "since": when, "skip": None}
    )
    call = sink.calls[0]
    assert call.input == {
        "path": {"thing_id": "a/b"},
        "query": {"color": "red", "since": "2026-01-02T03:04:05+00:00"},
    }
    assert call.output == "plain text"


def test_retries_are_counted_in_attempts(api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=COMPLETION)]
    )
    sink = MemorySink()
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(sink)))
    assert len(sink) == 1
    assert (sink.calls[0].attempts, sink.calls[0].status_code) == (2, 200)


def test_capture_content_false_keeps_usage_but_not_content(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = MemorySink()
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(sink, capture_content=False)))
    call = sink.calls[0]
    assert (call.input, call.output) == (None, None)
    assert call.tokens_input == 12
    assert call.cost == pytest.approx(EXPECTED_COST)


# -- errors ----------------------------------------------------------------------------------


def test_an_error_response_is_traced_and_still_raised(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(404, json={"error": {"message": "no such model"}})
    sink = MemorySink()
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    with pytest.raises(errors.NotFoundError) as raised:
        chat(client)
    assert raised.value.status_code == 404
    call = sink.calls[0]
    assert call.error is not None
    assert call.error.type == "NotFoundError"
    assert "no such model" in call.error.message
    assert (call.status_code, call.attempts, call.output) == (404, 1, None)
    assert call.request_model == "gpt-4o-mini"
    assert call.input == {"body": {"model": "gpt-4o-mini", "messages": MESSAGES}}
    assert call.attributes()["error.type"] == "NotFoundError"


def test_an_async_transport_failure_is_traced(api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    sink = MemorySink()

    async def main() -> None:
        async with AsyncDemo(service=LLM_SERVICE, tracer=Tracer(sink)) as client:
            await client._call(CHAT, body={"model": "gpt-4o-mini", "messages": MESSAGES})

    with pytest.raises(errors.ConnectionFailedError):
        asyncio.run(main())
    call = sink.calls[0]
    assert call.error is not None and call.error.type == "ConnectionFailedError"
    assert (call.status_code, call.attempts) == (None, 3)


def test_a_response_that_does_not_validate_is_traced_as_its_error(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json={"id": 1})
    sink = MemorySink()
    with pytest.raises(errors.ResponseValidationError):
        chat(Demo(service=LLM_SERVICE, tracer=Tracer(sink)))
    call = sink.calls[0]
    assert call.error is not None and call.error.type == "ResponseValidationError"
    assert call.status_code is None  # the exchange failed after the status


# -- pages -------------------------------------------------------------------------------------


def test_each_page_request_is_one_traced_call(api: respx.MockRouter) -> None:
    op: Operation[Any] = Operation(
        "list_items",
        "GET",
        "/items",
        pagination=Pagination("next_url", items_path=("data",), next_path=("next",)),
    )
    api.get("/items", params={"limit": "2"}).respond(
        200, json={"data": [1, 2], "next": f"{BASE_URL}/items?after=2"}
    )
    api.get("/items", params={"after": "2"}).respond(500)
    sink = MemorySink()
    client = Demo(tracer=Tracer(sink), retry=None)
    pager = client._paginate(op, query={"limit": 2})
    seen: list[Any] = []
    with pytest.raises(errors.ServerError):
        for item in pager:
            seen.append(item)
    assert seen == [1, 2]
    first, second = sink.calls
    assert first.input == {"query": {"limit": 2}}
    assert first.output == {"data": [1, 2], "next": f"{BASE_URL}/items?after=2"}
    assert (first.error, first.status_code) == (None, 200)
    assert second.input == {"url": f"{BASE_URL}/items?after=2"}
    assert second.error is not None and second.error.type == "ServerError"
    assert second.status_code == 500


def test_each_async_page_request_is_one_traced_call(api: respx.MockRouter) -> None:
    op: Operation[Any] = Operation(
        "list_items",
        "GET",
        "/items",
        pagination=Pagination("page", size_param="per_page", page_size=2),
    )
    api.get("/items", params={"page": "1"}).respond(200, json=[1, 2])
    api.get("/items", params={"page": "2"}).respond(200, json=[3])
    sink = MemorySink()

    async def main() -> list[Any]:
        async with AsyncDemo(tracer=Tracer(sink)) as client:
            return [item async for item in client._paginate(op)]

    assert asyncio.run(main()) == [1, 2, 3]
    assert [c.input for c in sink.calls] == [
        {"query": {"page": 1, "per_page": 2}},
        {"query": {"page": 2, "per_page": 2}},
    ]
    assert [c.output for c in sink.calls] == [[1, 2], [3]]


# -- which tracer ------------------------------------------------------------------------------


def test_tracing_is_off_by_default_and_costs_no_trace(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    assert not get_tracer().active

    def no_trace(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a trace was started while tracing is off")

    monkeypatch.setattr("builder.runtime.client.CallTrace", no_trace)
    assert chat(Demo(service=LLM_SERVICE)).id == "chatcmpl-1"


def test_the_process_tracer_reaches_clients_made_before_it(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    client = Demo(service=LLM_SERVICE)
    sink = MemorySink()
    tracer = configure(sink)
    assert get_tracer() is tracer and tracer.active
    chat(client)
    assert len(sink) == 1
    set_tracer(None)
    chat(client)
    assert len(sink) == 1
    assert not get_tracer().active


def test_a_client_tracer_overrides_the_process_tracer(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    process, own = MemorySink(), MemorySink()
    configure(process)
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(own)))
    chat(Demo(service=LLM_SERVICE, tracer=Tracer()))  # a tracer without sinks: off
    chat(Demo(service=LLM_SERVICE))
    assert (len(own), len(process)) == (1, 1)
    with pytest.raises(TypeError, match="takes a Tracer"):
        Demo(tracer=own)  # a sink, not a tracer


# -- sinks -------------------------------------------------------------------------------------


def _call(n: int = 0, **fields: Any) -> TracedCall:
    return TracedCall(1_700_000_000.0 + n, "demo", f"op{n}", **fields)


def test_memory_sink_keeps_the_last_max_size_calls() -> None:
    sink = MemorySink(max_size=3)
    tracer = Tracer(sink)
    for n in range(5):
        tracer.emit(_call(n))
    assert [c.operation for c in sink.calls] == ["op2", "op3", "op4"]
    assert [c.operation for c in sink] == ["op2", "op3", "op4"]
    sink.clear()
    assert len(sink) == 0
    with pytest.raises(ValueError):
        MemorySink(max_size=0)


def test_jsonl_sink_writes_one_flushed_line_per_call(
    api: respx.MockRouter, tmp_path: FilePath
) -> None:
    api.post("/chat/completions", json__model="bad").respond(400, json={"error": "bad model"})
    api.post("/chat/completions").respond(200, json=COMPLETION)
    target = tmp_path / "traces.jsonl"
    sink = JsonlSink(target, flush=True)
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    chat(client)
    with pytest.raises(errors.BadRequestError):
        client._call(CHAT, body={"model": "bad", "messages": MESSAGES})
    # Readable before the sink is closed: with flush=True each line is written on its call.
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    ok, failed = (json.loads(line) for line in lines)
    assert ok["operation"] == "create_chat_completion"
    assert ok["input"] == {"body": {"model": "gpt-4o-mini", "messages": MESSAGES}}
    assert ok["output"] == COMPLETION
    assert (ok["tokens_input"], ok["tokens_output"], ok["model"]) == (
        12,
        30,
        "gpt-4o-mini-2024-07-18",
    )
    assert ok["cost"] == pytest.approx(EXPECTED_COST)
    assert (ok["status_code"], ok["attempts"], ok["error"]) == (200, 1, None)
    assert failed["error"]["type"] == "BadRequestError"
    assert "bad model" in failed["error"]["message"]
    assert failed["output"] is None and failed["status_code"] == 400
    assert set(ok) == set(failed) == set(TracedCall(0, "c", "o").to_dict())
    sink.close()


def test_jsonl_lines_stay_single_lines_and_equal_the_parsed_call(
    api: respx.MockRouter, tmp_path: FilePath
) -> None:
    # A pretty-printed response (line breaks between tokens) and unicode content.
    body = json.dumps({**COMPLETION, "id": "ünï\ncode"}, indent=2).encode()
    api.post("/chat/completions").respond(200, content=body + b"\n")
    target = tmp_path / "t.jsonl"
    memory = MemorySink()
    sink = JsonlSink(target)
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(sink, memory)))
    sink.close()
    [line] = target.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["output"]["id"] == "ünï\ncode"
    assert json.loads(line) == json.loads(memory.calls[0].to_json())
    assert json.loads(memory.calls[0].to_json()) == json.loads(
        json.dumps(memory.calls[0].to_dict())
    )


def test_jsonl_sink_is_safe_across_threads(tmp_path: FilePath) -> None:
    target = tmp_path / "threads.jsonl"
    tracer = Tracer(JsonlSink(target))
    payload = {"text": "x" * 5000}  # long lines: interleaved writes would corrupt them

    def work(worker: int) -> None:
        for n in range(50):
            tracer.emit(_call(n, input=payload, output={"worker": worker}))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracer.close()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400
    assert all(json.loads(line)["input"] == payload for line in lines)


def test_jsonl_sink_without_an_interval_keeps_its_lines_until_closed(tmp_path: FilePath) -> None:
    target = tmp_path / "buffered.jsonl"
    sink = JsonlSink(target, interval=None)
    for n in range(3):
        sink.emit(_call(n))
    time.sleep(0.05)
    assert target.read_bytes() == b""  # still queued: no clock, and the batch is not full
    sink.close()
    assert [json.loads(line)["operation"] for line in target.read_text().splitlines()] == [
        "op0",
        "op1",
        "op2",
    ]


def test_jsonl_sink_refuses_a_path_it_cannot_open(tmp_path: FilePath) -> None:
    with pytest.raises(errors.ConfigError, match="cannot open the trace file"):
        JsonlSink(tmp_path / "missing-dir" / "t.jsonl")


def test_logging_sink_logs_one_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    sink = LoggingSink(level="DEBUG", interval=None)  # queued until written
    with caplog.at_level(logging.DEBUG, logger="connectors.tracing"):
        sink.emit(
            _call(1, request_model="m", tokens_input=3, tokens_output=4, cost=0.5, latency=0.25)
        )
        sink.emit(_call(2, error=tracing.TracedError("TimeoutError", "took too long"), latency=1.0))
        assert caplog.records == []  # queued, not logged on the call
        sink.write_queued()
    first, second = caplog.records
    assert first.levelno == logging.DEBUG
    assert first.getMessage() == "demo.op1 250.0 ms model=m tokens=3/4 cost=$0.500000"
    assert first.traced_call.operation == "op1"  # type: ignore[attr-defined]
    assert second.getMessage().endswith("error=TimeoutError: took too long")
    quiet = LoggingSink(logging.getLogger("some.quiet.logger"), level=logging.DEBUG, flush=True)
    logging.getLogger("some.quiet.logger").setLevel(logging.WARNING)
    quiet.emit(_call())  # below the logger's level: nothing
    assert len(caplog.records) == 2
    loud = LoggingSink(level="DEBUG", flush=True)  # flush=True: logged on the call
    with caplog.at_level(logging.DEBUG, logger="connectors.tracing"):
        loud.emit(_call(3))
        [third] = caplog.records[2:]
        assert third.traced_call.operation == "op3"  # type: ignore[attr-defined]
    sink.close()
    with pytest.raises(errors.ConfigError):
        LoggingSink(level="LOUD")


def _otel() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_opentelemetry_sink_makes_one_span_per_call(api: respx.MockRouter) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    provider, exporter = _otel()
    api.post("/chat/completions").respond(200, json=COMPLETION)
    api.get("/things/1").respond(502, json={"error": "upstream"})
    memory = MemorySink()
    tracer = Tracer(OpenTelemetrySink(provider), memory)
    client = Demo(service=LLM_SERVICE, tracer=tracer)
    chat(client)
    with pytest.raises(errors.ServerError):
        client._call(GET_THING, path={"thing_id": 1})
    tracer.flush()  # the spans are made in batches: hand them on now
    ok, failed = exporter.get_finished_spans()
    assert ok.name == "create_chat_completion gpt-4o-mini"
    assert ok.kind is SpanKind.CLIENT
    assert dict(ok.attributes) == {
        **memory.calls[0].attributes(),
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert "connector_builder.input" not in ok.attributes  # content is opt-in
    assert ok.start_time == int(memory.calls[0].timestamp * 1e9)
    assert ok.end_time - ok.start_time == int(memory.calls[0].latency * 1e9)
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.name == "demo.get_thing"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ServerError"
    assert failed.attributes["http.response.status_code"] == 502


def test_opentelemetry_sink_content_is_opt_in(api: respx.MockRouter) -> None:
    provider, exporter = _otel()
    api.post("/chat/completions").respond(200, json=COMPLETION)
    sink = OpenTelemetrySink(provider, capture_content=True, flush=True)
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    chat(client)
    [span] = exporter.get_finished_spans()  # flush=True: made on the call
    assert json.loads(span.attributes["connector_builder.input"]) == {
        "body": {"model": "gpt-4o-mini", "messages": MESSAGES}
    }
    assert json.loads(span.attributes["connector_builder.output"]) == COMPLETION


def test_opentelemetry_sink_without_the_api_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(errors.ConfigError, match="pip install opentelemetry"):
        OpenTelemetrySink()


# -- a failing sink never breaks the call ------------------------------------------------------


class Flaky:
    def __init__(self, fail: list[bool]) -> None:
        self.fail = fail
        self.seen = 0

    def emit(self, call: TracedCall) -> None:
        self.seen += 1
        if self.fail[min(self.seen, len(self.fail)) - 1]:
            raise RuntimeError("disk full")

    def __repr__(self) -> str:
        return "Flaky()"


def test_a_failing_sink_is_switched_off_after_three_failures_with_one_warning(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    broken, healthy = Flaky([True]), MemorySink()
    tracer = Tracer(broken, healthy)
    client = Demo(service=LLM_SERVICE, tracer=tracer)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        for _ in range(5):
            assert chat(client).id == "chatcmpl-1"
    assert broken.seen == 3  # switched off after the third failure
    assert len(healthy) == 5
    assert tracer.sinks == [healthy] and tracer.switched_off == [broken]
    [warning] = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert "Flaky() failed 3 times in a row and is switched off" in str(warning.message)
    assert "RuntimeError: disk full" in str(warning.message)
    [record] = [r for r in caplog.records if r.name == "connectors.tracing"]
    assert "switched off" in record.getMessage()


def test_failures_must_be_consecutive_and_a_tracer_with_no_sink_left_is_off(
    api: respx.MockRouter,
) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    flaky = Flaky([True, True, False, True, True, False])
    tracer = Tracer(flaky)
    client = Demo(service=LLM_SERVICE, tracer=tracer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning here would fail the test
        for _ in range(6):
            chat(client)
    assert tracer.active and flaky.seen == 6
    always = Tracer(Flaky([True]))
    with pytest.warns(RuntimeWarning):
        for _ in range(3):
            always.emit(_call())
    assert not always.active


def test_warnings_as_errors_do_not_break_the_call(api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)
    tracer = Tracer(Flaky([True]))
    client = Demo(service=LLM_SERVICE, tracer=tracer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            assert chat(client).id == "chatcmpl-1"
    assert not tracer.active


def test_a_bug_while_building_a_trace_never_breaks_the_call(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.post("/chat/completions").respond(200, json=COMPLETION)

    def broken(*args: Any) -> None:
        raise KeyError("oops")

    class Broken(dict[type, Any]):
        def get(self, key: type, default: Any = None) -> Any:
            return broken

    # The compiled reader of the response (generated code) raises.
    monkeypatch.setattr(CHAT_USAGE, "_fills", Broken())
    sink = MemorySink()
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    with pytest.warns(RuntimeWarning, match="a trace could not be built"):
        assert chat(client).id == "chatcmpl-1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        assert chat(client).id == "chatcmpl-1"
    assert len(sink) == 0


# -- secrets -----------------------------------------------------------------------------------

SECRET = "sk-pl4nted/secret+key"  # "/" and "+" change under percent-encoding


def _all_text(call: TracedCall) -> str:
    return "\n".join(
        [repr(call), json.dumps(call.to_dict(), default=str), call.to_json().decode()]
        + [str(v) for v in call.attributes().values()]
    )


def test_secrets_never_appear_in_traces(
    api: respx.MockRouter, tmp_path: FilePath, caplog: pytest.LogCaptureFixture
) -> None:
    from urllib.parse import quote

    echo = {**COMPLETION, "id": f"echo {SECRET} {quote(SECRET, safe='')}"}
    api.post("/chat/completions", json__model="gpt-4o-mini").respond(200, json=echo)
    api.post("/chat/completions", json__model="bad").respond(
        401, json={"error": {"message": f"invalid key {SECRET}"}}
    )
    api.get("/things/1").mock(side_effect=httpx.ConnectError(f"failed for {SECRET}"))
    provider, exporter = _otel()
    memory = MemorySink()
    target = tmp_path / "t.jsonl"
    tracer = Tracer(
        memory,
        JsonlSink(target, flush=True),
        LoggingSink(),
        OpenTelemetrySink(provider, capture_content=True),
    )
    # The secret as a bearer token (header) and as a query API key, both from settings.
    client = Demo(service=LLM_SERVICE, token=SECRET, tracer=tracer)
    keyed = Demo(
        service=service(auth=ApiKeyAuth("api_key", "{token}", "query")),
        token=SECRET,
        tracer=tracer,
        retry=None,
    )
    with caplog.at_level(logging.INFO, logger="connectors.tracing"):
        chat(client, messages=[{"role": "user", "content": f"my key is {SECRET}"}])
        with pytest.raises(errors.AuthenticationError):
            client._call(CHAT, body={"model": "bad", "messages": MESSAGES})
        with pytest.raises(errors.ConnectionFailedError):
            keyed._call(GET_THING, path={"thing_id": 1}, query={"q": SECRET})
        tracer.flush()  # the log records and spans are made in batches: now
    assert len(memory) == 3
    assert len([r for r in caplog.records if r.name == "connectors.tracing"]) == 3
    assert len(exporter.get_finished_spans()) == 3
    texts = [_all_text(call) for call in memory.calls]
    texts.append(target.read_text(encoding="utf-8"))
    texts.extend(r.getMessage() for r in caplog.records)
    texts.extend(json.dumps(dict(span.attributes)) for span in exporter.get_finished_spans())
    texts.extend(str(span.status.description) for span in exporter.get_finished_spans())
    for text in texts:
        assert SECRET not in text
        assert quote(SECRET, safe="") not in text
    ok, unauthorized, unreachable = memory.calls
    assert ok.input["body"]["messages"][0]["content"] == "my key is **********"
    assert ok.output["id"] == "echo ********** **********"
    assert unauthorized.error is not None and "**********" in unauthorized.error.message
    assert unreachable.input == {"path": {"thing_id": 1}, "query": {"q": "**********"}}
    assert unreachable.error is not None and "**********" in unreachable.error.message
    assert TOKEN != SECRET


@pytest.mark.parametrize("secret", [SECRET, "sk-plain-4f1c9a"])  # JSON escapes it, or not
def test_a_secret_hidden_by_a_json_escape_is_still_scrubbed(
    api: respx.MockRouter, secret: str
) -> None:
    escaped = secret.replace("s", "\\u0073").replace("/", "\\/")
    raw = ('{"id": "' + escaped + '", "model": "m", "choices": []}').encode()
    api.post("/chat/completions").respond(200, content=raw)
    memory = MemorySink()
    client = Demo(service=LLM_SERVICE, token=secret, tracer=Tracer(memory))
    client._call(CHAT_UNTYPED, body={"model": "gpt-4o-mini", "messages": MESSAGES})
    call = memory.calls[0]
    assert secret not in call.to_json().decode() and secret not in repr(call)
    assert call.output["id"] == "**********"


# -- the helper for connectors outside HTTP ----------------------------------------------------


def test_traced_block_records_output_latency_and_error() -> None:
    memory = MemorySink()
    tracer = Tracer(memory)
    with traced(
        tracer, "postgres", "query", {"sql": "select 1", "password": SECRET}, secrets=[SECRET]
    ) as span:
        time.sleep(0.0)  # the conftest makes sleeping free; the block is still timed
        span.output = [{"n": 1}]
        span.tokens_input = 3
    with pytest.raises(ZeroDivisionError):
        with tracer.traced("postgres", "query", {"sql": "select 1/0"}):
            _ = 1 / 0
    ok, failed = memory.calls
    assert (ok.connector, ok.operation) == ("postgres", "query")
    assert ok.input == {"sql": "select 1", "password": "**********"}
    assert ok.output == [{"n": 1}] and ok.tokens_input == 3
    assert ok.latency >= 0 and ok.error is None
    assert failed.error == tracing.TracedError("ZeroDivisionError", "division by zero")


def test_traced_block_uses_the_process_tracer_and_does_nothing_when_off() -> None:
    with traced(None, "redis", "get", {"key": "k"}) as span:
        span.output = "v"
    memory = MemorySink()
    configure(memory)
    with traced(None, "redis", "get", {"key": "k"}) as span:
        span.output = "v"
    assert [c.output for c in memory.calls] == ["v"]


def test_record_scrubs_prices_and_returns_the_call() -> None:
    assert Tracer().record("s3", "put", input={"k": 1}) is None  # off
    memory = MemorySink()
    tracer = Tracer(memory)
    when = dt.date(2026, 1, 1)
    call = tracer.record(
        "local_llm",
        "embed",
        input={"texts": ["a", SECRET], "when": when, "blob": b"abc", "color": Color.GREEN},
        output=Message(role="assistant", content="ok"),
        error=ValueError(f"bad {SECRET}"),
        latency=0.5,
        request_model="gpt-4o-mini",
        tokens_input=1000,
        tokens_output=0,
        pricing=PRICING,
        secrets=[SECRET],
    )
    assert call is memory.calls[0]
    assert call.input == {
        "texts": ["a", "**********"],
        "when": "2026-01-01",
        "blob": "<3 bytes>",
        "color": "green",
    }
    assert call.output == {"role": "assistant", "content": "ok"}
    assert call.error == tracing.TracedError("ValueError", "bad **********")
    assert call.cost == pytest.approx(1000 * 0.15 / 1_000_000)
    assert abs(call.timestamp + 0.5 - time.time()) < 5


# -- the fast path reader agrees with Path -----------------------------------------------------


class Inner(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None


class Outer(BaseModel):
    model_config = ConfigDict(extra="allow")
    items: list[Inner] = []
    inner: Inner | None = None


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "a.b",
        "a.0",
        "a.-1",
        "a.5",
        "0",
        "items.0.name",
        "items.-1.name",
        "items.3.name",
        "inner.name",
        "inner.extra_field",
        "inner.name.upper",
        "extra_top",
        "a.0.b",
        "s.0",
    ],
)
def test_usage_paths_read_what_path_reads(text: str) -> None:
    values: list[Any] = [
        {"a": {"b": 1}, "s": "str"},
        {"a": [10, 20], "0": "zero"},
        {"a": [{"b": None}]},
        [1, 2],
        None,
        "text",
        {"a": (1, 2)},
        Outer(items=[Inner(name="x"), Inner(name="y")], inner=Inner(name="n", extra_field=3)),
        Outer.model_validate({"extra_top": {"k": 1}}),
        {"items": [{"name": "d"}], "inner": {"name": None}},
    ]
    for value in values:
        # Path.get's inline fast path (dicts, lists, models) reads what the plain step-by-
        # step walk reads.
        assert Path(text).get(value) == _walk(text, value), value


def _walk(text: str, value: Any) -> Any:
    from builder.runtime import paths

    for key in (int(p) if p.lstrip("-").isdigit() else p for p in text.split(".")):
        value = paths._step(value, key)
        if value is paths._MISSING:
            return None
    return value


# -- the compiled usage reader reads what reading each path with Path.get reads -----------------


class Tagged(BaseModel):
    """A model with a field under an alias (``type``) and extras kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type_: Any = Field(default=None, alias="type")
    a: Any = None
    b: Any = None


class Reason(enum.Enum):
    STOP = "stop"


class StrReason(enum.StrEnum):
    STOP = "stop"


class Plain:
    """An object that is neither a dict nor a model: read with paths._step."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


_KEYS = ["a", "b", "type", "items", "model"]


def _containers(inner: Any) -> Any:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from([*_KEYS, "0", 0, -1]), inner, max_size=3),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=2).map(MappingProxyType),
        st.dictionaries(st.sampled_from([*_KEYS, "extra"]), inner, max_size=3).map(
            Tagged.model_validate
        ),
        st.dictionaries(st.sampled_from(_KEYS), inner, max_size=2).map(lambda f: Plain(**f)),
    )


_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(allow_nan=False, allow_infinity=False, width=16),
        st.sampled_from(["", "x", "stop", "gpt"]),
        st.sampled_from([Reason.STOP, StrReason.STOP]),
    ),
    _containers,
    max_leaves=12,
)


_PATHS = st.lists(
    st.one_of(st.sampled_from([*_KEYS, "extra", "*"]), st.integers(-2, 2).map(str)),
    min_size=1,
    max_size=3,
).map(".".join)


def _valid(text: str) -> bool:
    try:
        Path(text)
    except ValueError:
        return False
    return True


def _reference_read(paths: list[tuple[int, str]], value: Any, usage: Any) -> None:
    """What UsageMap.read did before it was compiled: each path read by Path.get."""
    for code, text in paths:
        get = Path(text).get
        if code == tracing._TEXT:
            if usage.pieces is not None:
                piece = get(value)
                if "*" in text and isinstance(piece, list):  # the text of every part
                    piece = "".join(p for p in piece if isinstance(p, str))
                if isinstance(piece, str) and piece:
                    usage.pieces.append(piece)
        elif code == tracing._MODEL:
            if usage.model is None:
                model = get(value)
                if isinstance(model, enum.Enum):
                    model = str(model.value)
                if type(model) is str and model:
                    usage.model = model
        elif code == tracing._FINISH:
            reason = get(value)
            if isinstance(reason, list):
                reason = next((r for r in reason if r is not None), None)
            if reason is not None and type(reason) is not str:
                reason = str(getattr(reason, "value", reason))
            if reason:  # an empty one says nothing
                usage.finish_reason = reason
        else:
            # A token count: an int, a finite float truncated, up to 18 ASCII digits.
            found, count = get(value), None
            if type(found) is int:
                count = found
            elif type(found) is float and math.isfinite(found):
                count = int(found)
            elif type(found) is str and len(found) <= 18 and found.isascii() and found.isdigit():
                count = int(found)
            if count is not None:
                if code == tracing._TOKENS_IN:
                    usage.tokens_input = count
                else:
                    usage.tokens_output = count


def _state(usage: Any) -> tuple[Any, ...]:
    return (usage.model, usage.tokens_input, usage.tokens_output, usage.finish_reason, usage.pieces)


# More examples than the profile's away from CI; the CI profile's cap (200) under CI=true.
@settings(
    max_examples=min(600, settings().max_examples) if os.environ.get("CI") == "true" else 600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    paths=st.lists(st.tuples(st.integers(0, 4), _PATHS.filter(_valid)), max_size=5),
    values=st.lists(_VALUES, min_size=1, max_size=3),
    model_known=st.booleans(),
)
def test_the_compiled_reader_reads_what_each_path_reads(
    paths: list[tuple[int, str]], values: list[Any], model_known: bool
) -> None:
    fields: dict[int, str] = dict(paths)  # one path per field, as a UsageMap has
    names = ["text", "model", "tokens_input", "tokens_output", "finish_reason"]
    usage_map = UsageMap(**{names[code]: text for code, text in fields.items()})
    ordered = sorted(fields.items())
    expected, found = tracing._Usage(text=True), tracing._Usage(text=True)
    if model_known:
        expected.model = found.model = "known"
    read = usage_map.reader(None)
    for value in values:  # a stream's chunks, one after the other
        _reference_read(ordered, value, expected)
        read(found, None, value)
        assert _state(found) == _state(expected), (value, read.__doc__)
    # A response's reader fills the TracedCall itself (no text).
    call = TracedCall(0.0, "c", "op")
    once = tracing._Usage()
    _reference_read(ordered, values[0], once)
    usage_map._fill_call(values[0], call)
    assert (call.response_model, call.tokens_input, call.tokens_output, call.finish_reason) == (
        once.model,
        once.tokens_input,
        once.tokens_output,
        once.finish_reason,
    )


def test_the_compiled_reader_reads_named_events_and_paths_with_odd_keys() -> None:
    usage_map = UsageMap(
        model={"start": "message.model"},
        tokens_input={"start": "message.usage.input_tokens"},
        tokens_output={"delta": "usage.output_tokens"},
        text="delta.text",
        finish_reason={"delta": "delta.stop-reason"},  # not a Python name
    )
    assert usage_map.wants_event("start") and not usage_map.wants_event("ping")
    found = tracing._Usage(text=True)
    on_chunk = usage_map.bind(found)
    on_chunk("start", {"message": {"model": "m1", "usage": {"input_tokens": 7}}})
    on_chunk("other", {"delta": {"text": "Hel"}})
    on_chunk("other", {"delta": {"text": "lo"}, "message": {"model": "ignored"}})
    on_chunk("delta", {"delta": {"stop-reason": "end"}, "usage": {"output_tokens": 3.9}})
    assert _state(found) == ("m1", 7, 3, "end", ["Hel", "lo"])


def test_a_reader_that_fails_on_a_chunk_skips_it_and_says_so_once() -> None:
    class Exploding(BaseModel):
        @property
        def usage(self) -> Any:
            raise RuntimeError("boom")

    usage_map = UsageMap(tokens_input="usage.n", model="model")
    found = tracing._Usage()
    with pytest.warns(RuntimeWarning, match="RuntimeError: boom"):
        usage_map.reader()(found, None, Exploding())
    usage_map.reader()(found, None, {"usage": {"n": 2}, "model": "m"})
    assert (found.tokens_input, found.model) == (2, "m")


_GRID_VALUES: list[Any] = [
    {"a": {"b": 1, "type": 2.7}, "items": "gpt", "model": ""},
    {"a": [10, 20.5], "0": "zero", 0: "int key", -1: "minus"},
    {"a": [{"b": None}, {"b": "stop"}], "items": [None, "stop", Reason.STOP]},
    [1, 2, [3, StrReason.STOP]],
    (4, "x", {"a": 5}),
    None,
    "text",
    True,
    Tagged(type=3, a=[Tagged(type="stop")], extra={"b": 9}),
    Tagged.model_validate({"type": Reason.STOP, "b": StrReason.STOP, "model": "gpt"}),
    Plain(a=Plain(b=6), items=[7], model="m"),
    MappingProxyType({"items": [8], "a": {"b": "mapped"}}),
    {"items": [{"type": "t"}, Tagged(type=11)], "a": []},
    {"a": {"b": float("nan"), "type": float("inf")}, "model": StrReason.STOP, "b": ""},
    {"a": ["9" * 19, "9" * 18, " 12"], "items": ["", "-3"], "model": Reason.STOP},
]
_GRID_PATHS = [
    "a",
    "a.b",
    "a.type",
    "a.0",
    "a.1",
    "a.-1",
    "a.-2",
    "a.5",
    "0",
    "-1",
    "type",
    "items",
    "items.0",
    "items.1",
    "items.0.type",
    "items.*",
    "items.*.type",
    "a.*.b",
    "a.0.type",
    "a.0.b",
    "extra.b",
    "model",
    "b",
    "2.1",
]


@pytest.mark.parametrize("text", _GRID_PATHS)
def test_each_compiled_path_reads_what_path_get_reads(text: str) -> None:
    names = ["text", "model", "tokens_input", "tokens_output", "finish_reason"]
    for code, name in enumerate(names):
        read = UsageMap(**{name: text}).reader(None)
        for value in _GRID_VALUES:
            expected, found = tracing._Usage(text=True), tracing._Usage(text=True)
            _reference_read([(code, text)], value, expected)
            read(found, None, value)
            assert _state(found) == _state(expected), (name, value, read.__doc__)


# -- what the HTTP runtime records: worked out when read, complete, a plain copy ----------------


def _traces_of_every_kind(api: respx.MockRouter, sink: MemorySink) -> list[TracedCall]:
    api.post("/chat/completions", json__model="bad").respond(400, json={"error": "bad model"})
    api.post("/chat/completions").respond(200, json=COMPLETION)
    api.get("/things/7").respond(200, json={"id": 7})
    client = Demo(service=LLM_SERVICE, token=SECRET, tracer=Tracer(sink))
    quiet = Demo(service=LLM_SERVICE, token=SECRET, tracer=Tracer(sink, capture_content=False))
    chat(client)
    chat(quiet)
    with pytest.raises(errors.BadRequestError):
        client._call(CHAT, body={"model": "bad", "messages": MESSAGES})
    client._call(GET_THING, path={"thing_id": 7})
    return sink.calls


def test_every_field_of_every_kind_of_trace_is_set(api: respx.MockRouter) -> None:
    for call in _traces_of_every_kind(api, MemorySink()):
        assert type(call) is tracing._LazyCall
        for name in tracing._LazyCall.__slots__:  # the private state, set on the call path
            tracing._LazyCall.__dict__[name].__get__(call)
        for name in tracing._FIELDS:  # slots of TracedCall or worked out when read
            getattr(call, name)
        assert json.loads(call.to_json()) == json.loads(json.dumps(call.to_dict()))


def test_cost_input_and_output_are_worked_out_when_first_read(api: respx.MockRouter) -> None:
    sink = MemorySink()
    ok = _traces_of_every_kind(api, sink)[0]
    assert isinstance(ok, tracing._LazyCall)
    # Nothing parsed, scrubbed or priced on the call's path: the wire bytes are kept.
    assert isinstance(ok._raw_output, bytes) and isinstance(ok._raw_body, bytes)
    assert ok._cost is tracing._PENDING
    assert ok.cost == pytest.approx(EXPECTED_COST)
    assert ok.output == COMPLETION
    assert ok._raw_output is None  # dropped once parsed
    assert ok.input == {"body": {"model": "gpt-4o-mini", "messages": MESSAGES}}
    assert ok._raw_body is None
    # Fields set by a reader (or a sink) win over what would be worked out.
    again = _traces_of_every_kind(api, MemorySink())[0]
    again.cost, again.output, again.input = 1.5, "mine", {"body": None}
    assert (again.cost, again.output, again.input) == (1.5, "mine", {"body": None})
    assert json.loads(again.to_json())["output"] == "mine"


def test_a_trace_read_from_many_threads_at_once_is_worked_out_the_same(
    api: respx.MockRouter,
) -> None:
    for _ in range(5):
        call = _traces_of_every_kind(api, MemorySink())[0]
        barrier = threading.Barrier(8)
        seen: list[tuple[Any, Any, Any]] = []

        def read(
            call: TracedCall = call,
            barrier: threading.Barrier = barrier,
            seen: list[tuple[Any, Any, Any]] = seen,
        ) -> None:
            barrier.wait()
            seen.append((call.output, call.input, call.cost))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8 and all(s == seen[0] for s in seen)
        assert seen[0][0] == COMPLETION


def test_a_copy_or_a_pickle_of_a_trace_is_a_plain_traced_call_without_secrets(
    api: respx.MockRouter,
) -> None:
    import copy
    import dataclasses
    import pickle

    for call in _traces_of_every_kind(api, MemorySink()):
        data = pickle.dumps(call)
        # The client's scrubber (which holds the secret) and the raw bytes stay behind.
        assert SECRET.encode() not in data and b"Scrubber" not in data
        for twin in (pickle.loads(data), copy.copy(call), copy.deepcopy(call)):
            assert type(twin) is TracedCall
            assert twin == TracedCall(*(getattr(call, name) for name in tracing._FIELDS))
            assert twin.to_dict() == call.to_dict()
        changed = dataclasses.replace(call, operation="renamed")
        assert changed.operation == "renamed" and changed.output == call.output
        assert json.loads(changed.to_json())["cost"] == call.cost


def test_a_memory_sink_is_fed_directly_unless_its_emit_is_replaced() -> None:
    class Counting(MemorySink):
        def __init__(self) -> None:
            super().__init__()
            self.emitted = 0

        def emit(self, call: TracedCall) -> None:
            self.emitted += 1
            super().emit(call)

    plain, counting, patched = MemorySink(), Counting(), MemorySink()
    seen: list[TracedCall] = []
    patched.emit = seen.append  # type: ignore[method-assign, assignment]
    tracer = Tracer(plain, counting, patched)
    tracer.emit(_call(1))
    assert len(plain) == 1 and counting.emitted == 1 and len(seen) == 1 and len(patched) == 0


def test_the_scrubber_finds_every_form_of_a_secret_with_one_search_per_secret() -> None:
    scrubber = tracing.Scrubber(["Bearer sk-1/2", "sk-1/2", "other"])
    # "Bearer sk-1/2" holds "sk-1/2": only the shorter one (and its encodings) is searched.
    assert set(scrubber._needles) == {"sk-1/2", "sk-1%2F2", "other"}
    text = "no secret here"
    assert scrubber.text(text) is text
    assert scrubber.text("auth: Bearer sk-1/2") == "auth: **********"
    assert scrubber.text("key sk-1%2F2 and other") == "key ********** and **********"
    plain = tracing.Scrubber(["Bearer sk-12", "sk-12"])
    assert plain._raw_needles == (b"sk-12",)
    assert not plain.clean(b'{"a": "Bearer sk-12"}') and plain.clean(b'{"a": "sk-1"}')


def test_a_plain_secret_in_the_wire_json_is_scrubbed_from_the_jsonl_line(
    api: respx.MockRouter, tmp_path: FilePath
) -> None:
    secret = "sk-plain-4f1c9a"  # JSON writes it as it is: the raw text is searched for it
    api.post("/chat/completions").respond(200, json={**COMPLETION, "id": f"echo {secret}"})
    target = tmp_path / "t.jsonl"
    memory = MemorySink()
    sink = JsonlSink(target)
    client = Demo(service=LLM_SERVICE, token=secret, tracer=Tracer(sink, memory))
    chat(client, messages=[{"role": "user", "content": f"key {secret}"}])
    api.post("/chat/completions").respond(200, json=COMPLETION)
    chat(client)  # no secret: both spliced as received
    sink.write_queued()
    lines = target.read_bytes().splitlines()
    assert len(lines) == 2 and all(secret.encode() not in line for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert first["output"]["id"] == "echo **********"
    assert first["input"]["body"]["messages"][0]["content"] == "key **********"
    assert second["output"] == COMPLETION
    assert [json.loads(c.to_json()) for c in memory.calls] == [first, second]


_HOSTILE_KEYS = [
    "x'); getattr(__import__('os'), 'system')('touch {marker}'); ('",
    'x"]) or getattr(__import__("os"), "system")("touch {marker}") or (["',
    "line\nbreak; getattr(__import__('os'), 'system')('touch {marker}')",
    "class",
    "__class__",
    "é",
]


@pytest.mark.parametrize("key", _HOSTILE_KEYS)
def test_a_path_from_a_spec_never_becomes_code_in_the_compiled_reader(
    key: str, tmp_path: FilePath
) -> None:
    # The reader is compiled from the paths; a key can only ever be a string literal or a
    # plain identifier in it. A key that tried to escape its literal is read as a key.
    marker = tmp_path / "ran"
    key = key.format(marker=marker)
    assert "." not in key
    read = UsageMap(model=f"{key}.name").reader(None)
    found = tracing._Usage()
    read(found, None, {key: {"name": "m-1"}})
    assert not marker.exists()
    assert found.model == "m-1"


def test_a_model_is_read_the_same_before_and_after_its_class_is_known() -> None:
    # The compiled readers read a model's attribute directly once _model_step has met its
    # class; until then through _step. Both give the same.
    class Fresh(BaseModel):
        model_config = ConfigDict(extra="allow")
        usage: Any = None
        type_: Any = Field(None, alias="type")

    read = UsageMap(tokens_input="usage.n", model="type", finish_reason="extra").reader()
    value = Fresh.model_validate({"usage": {"n": 3}, "type": "m", "extra": "stop"})
    assert Fresh not in tracing._MODELS
    first, second = tracing._Usage(), tracing._Usage()
    read(first, None, value)
    assert Fresh in tracing._MODELS
    read(second, None, value)
    assert _state(first) == _state(second) == ("m", 3, None, "stop", None)
