"""Tracing of calls and pages: every TracedCall field, sinks, switch-off, OTel, secrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import httpx
import pytest
import respx
from pydantic import BaseModel, ConfigDict

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
    sink = JsonlSink(target)
    client = Demo(service=LLM_SERVICE, tracer=Tracer(sink))
    chat(client)
    with pytest.raises(errors.BadRequestError):
        client._call(CHAT, body={"model": "bad", "messages": MESSAGES})
    # Readable before the sink is closed: each line is flushed.
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
    chat(Demo(service=LLM_SERVICE, tracer=Tracer(JsonlSink(target), memory)))
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


def test_jsonl_sink_may_buffer_its_lines_until_closed(tmp_path: FilePath) -> None:
    target = tmp_path / "buffered.jsonl"
    sink = JsonlSink(target, flush=False)
    for n in range(3):
        sink.emit(_call(n))
    assert target.read_bytes() == b""  # still in the buffer
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
    sink = LoggingSink(level="DEBUG")
    with caplog.at_level(logging.DEBUG, logger="connectors.tracing"):
        sink.emit(
            _call(1, request_model="m", tokens_input=3, tokens_output=4, cost=0.5, latency=0.25)
        )
        sink.emit(_call(2, error=tracing.TracedError("TimeoutError", "took too long"), latency=1.0))
    first, second = caplog.records
    assert first.levelno == logging.DEBUG
    assert first.getMessage() == "demo.op1 250.0 ms model=m tokens=3/4 cost=$0.500000"
    assert first.traced_call.operation == "op1"  # type: ignore[attr-defined]
    assert second.getMessage().endswith("error=TimeoutError: took too long")
    quiet = LoggingSink(logging.getLogger("some.quiet.logger"), level=logging.DEBUG)
    logging.getLogger("some.quiet.logger").setLevel(logging.WARNING)
    quiet.emit(_call())  # below the logger's level: nothing
    assert len(caplog.records) == 2
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
    client = Demo(service=LLM_SERVICE, tracer=Tracer(OpenTelemetrySink(provider), memory))
    chat(client)
    with pytest.raises(errors.ServerError):
        client._call(GET_THING, path={"thing_id": 1})
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
    chat(
        Demo(service=LLM_SERVICE, tracer=Tracer(OpenTelemetrySink(provider, capture_content=True)))
    )
    [span] = exporter.get_finished_spans()
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

    monkeypatch.setattr(UsageMap, "read", broken)
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
        JsonlSink(target),
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
    assert len(memory) == 3
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
