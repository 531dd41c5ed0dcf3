"""The uniform LLM role over hand-written clients shaped like generated ones.

Five providers (OpenAI, Anthropic, Cohere v2, Mistral, Ollama) are mapped onto the role
purely by data (ChatMap / StreamMap / EmbedMap); respx answers with bodies and stream
events shaped like each provider's documented wire format.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import httpx
import pytest
import respx
from pydantic import BaseModel, ConfigDict

from builder.runtime import errors
from builder.runtime.auth import ApiKeyAuth, BearerAuth, NoAuth
from builder.runtime.client import AsyncClient, SyncClient
from builder.runtime.config import Setting, resolve_settings
from builder.runtime.llm import (
    AsyncLLMMixin,
    ChatMap,
    ChatResult,
    ChatStream,
    Embeddings,
    EmbedMap,
    LLMMixin,
    LLMRole,
    NotSupportedError,
    StreamMap,
)
from builder.runtime.operation import Decoder, Operation, Service, StreamFormat
from builder.runtime.pricing import Pricing
from builder.runtime.resilience import RetryPolicy
from builder.runtime.tracing import MemorySink, Tracer

pytestmark = pytest.mark.timeout(20)

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.0, jitter=False)

if "pricing" in Service.__dataclass_fields__:
    PricedService: Any = Service
else:  # tracing (which adds `provider` and `pricing` to Service) is not in yet

    @dataclasses.dataclass(frozen=True, slots=True)
    class _PricedService(Service):
        provider: str | None = None
        pricing: Pricing | None = None

    PricedService = _PricedService


def _service(name: str, base_url: str, auth: Any, pricing: Pricing | None = None) -> Service:
    return PricedService(  # type: ignore[no-any-return]
        name=name,
        base_url=base_url,
        auth=auth,
        retry=FAST_RETRY,
        circuit_breaker=(3, 30.0),
        provider=name,
        pricing=pricing,
    )


def _settings(prefix: str, key_required: bool = True) -> tuple[Setting, ...]:
    key = Setting("api_key", str, env=f"{prefix}_API_KEY", required=key_required, secret=True)
    return (key, Setting("base_url", str, env=f"{prefix}_BASE_URL"))


class _Sync(SyncClient):
    """The constructor every generated client has, once for all the test providers."""

    _settings: ClassVar[tuple[Setting, ...]]

    def __init__(
        self, *, api_key: str | None = "sk-test-key", base_url: str | None = None, **kw: Any
    ) -> None:
        given = {"api_key": api_key, "base_url": base_url}
        config = resolve_settings(self._settings, given, connector=self._service.name)
        super().__init__(config, **kw)


class _Async(AsyncClient):
    _settings: ClassVar[tuple[Setting, ...]]

    def __init__(
        self, *, api_key: str | None = "sk-test-key", base_url: str | None = None, **kw: Any
    ) -> None:
        given = {"api_key": api_key, "base_url": base_url}
        config = resolve_settings(self._settings, given, connector=self._service.name)
        super().__init__(config, **kw)


# -- OpenAI: typed responses (small pydantic models, as generated) -------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class OAIMessage(_Open):
    role: str
    content: str | None = None


class OAIChoice(_Open):
    index: int
    message: OAIMessage
    finish_reason: str | None = None


class OAIUsage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ChatCompletion(_Open):
    id: str
    model: str
    choices: list[OAIChoice]
    usage: OAIUsage | None = None


class OAIDelta(_Open):
    content: str | None = None


class OAIChunkChoice(_Open):
    index: int
    delta: OAIDelta
    finish_reason: str | None = None


class ChatCompletionChunk(_Open):
    model: str
    choices: list[OAIChunkChoice]
    usage: OAIUsage | None = None


class OAIEmbedding(_Open):
    index: int
    embedding: list[float]


class EmbeddingList(_Open):
    data: list[OAIEmbedding]
    model: str
    usage: OAIUsage


OPENAI_URL = "https://api.openai.com/v1"
OPENAI_PRICING = Pricing(
    as_of="2025-08-07",
    source="https://openai.com/api/pricing/",
    models={"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0), "text-embedding-3-small": (0.02, 0)},
)
OPENAI_CHAT: Operation[ChatCompletion] = Operation(
    "create_chat_completion", "POST", "/chat/completions", response=Decoder(ChatCompletion)
)
OPENAI_STREAM: Operation[ChatCompletionChunk] = Operation(
    "stream_chat_completion",
    "POST",
    "/chat/completions",
    stream=StreamFormat("sse", Decoder(ChatCompletionChunk), done="[DONE]"),
)
OPENAI_EMBED: Operation[EmbeddingList] = Operation(
    "create_embeddings", "POST", "/embeddings", response=Decoder(EmbeddingList)
)
OPENAI_OPTIONS = {"max_tokens": "max_completion_tokens"}
OPENAI_LLM = LLMRole(
    provider="openai",
    default_model="gpt-4o-mini",
    default_embedding_model="text-embedding-3-small",
    chat=ChatMap(
        operation=OPENAI_CHAT,
        model="model",
        messages="messages",
        system=None,
        options=OPENAI_OPTIONS,
        fixed={},
        content="choices.0.message.content",
        finish_reason="choices.0.finish_reason",
        response_model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    ),
    stream=StreamMap(
        operation=OPENAI_STREAM,
        model="model",
        messages="messages",
        system=None,
        options=OPENAI_OPTIONS,
        fixed={"stream": True, "stream_options": {"include_usage": True}},
        text="choices.0.delta.content",
        finish_reason="choices.0.finish_reason",
        response_model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    ),
    embed=EmbedMap(
        operation=OPENAI_EMBED,
        model="model",
        input="input",
        input_type=None,
        input_types={},
        fixed={},
        options={},
        vectors="data.*.embedding",
        tokens_input="usage.prompt_tokens",
        max_batch=2048,
    ),
)
OPENAI_SERVICE = _service("openai", OPENAI_URL, BearerAuth(token="{api_key}"), OPENAI_PRICING)


class OpenAI(_Sync, LLMMixin):
    _service = OPENAI_SERVICE
    _llm = OPENAI_LLM
    _settings = _settings("OPENAI")


class AsyncOpenAI(_Async, AsyncLLMMixin):
    _service = OPENAI_SERVICE
    _llm = OPENAI_LLM
    _settings = _settings("OPENAI")


def openai_chat_body(content: str = "Hello! How can I help?", model: str = "") -> dict[str, Any]:
    """A chat.completion object as OpenAI documents it."""
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model or "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    """SSE frames: (event name or None, data object or raw string)."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def openai_stream_body(request: httpx.Request, pieces: tuple[str, ...] = ("Hel", "lo")) -> bytes:
    """chat.completion.chunk events; usage only when the request asked for it
    (``stream_options.include_usage``), then ``[DONE]``."""
    sent = json.loads(request.content)
    with_usage = bool((sent.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        frame = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            frame["usage"] = None
        return frame

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": piece})) for piece in pieces]
    events.append((None, chunk({}, "stop")))
    if with_usage:
        usage = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return sse(events)


def fake_vector(text: str) -> list[float]:
    """A vector that identifies its text, so order can be checked."""
    return [float(len(text)), float(sum(map(ord, text)) % 97), 0.5]


def openai_embed_response(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    texts = sent["input"]
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": fake_vector(t)}
                for i, t in enumerate(texts)
            ],
            "model": sent["model"],
            "usage": {"prompt_tokens": 4 * len(texts), "total_tokens": 4 * len(texts)},
        },
    )


# -- Anthropic: messages API, named SSE events, no [DONE] ----------------------------------------

ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_CHAT: Operation[Any] = Operation(
    "create_message", "POST", "/v1/messages", response=Decoder(None)
)
ANTHROPIC_STREAM: Operation[Any] = Operation(
    "stream_message", "POST", "/v1/messages", stream=StreamFormat("sse", Decoder(None))
)
ANTHROPIC_LLM = LLMRole(
    provider="anthropic",
    default_model="claude-sonnet-4-5",
    chat=ChatMap(
        operation=ANTHROPIC_CHAT,
        system="system",
        content="content.0.text",
        finish_reason="stop_reason",
        response_model="model",
        tokens_input="usage.input_tokens",
        tokens_output="usage.output_tokens",
    ),
    stream=StreamMap(
        operation=ANTHROPIC_STREAM,
        system="system",
        fixed={"stream": True},
        text={"content_block_delta": "delta.text"},
        finish_reason={"message_delta": "delta.stop_reason"},
        response_model={"message_start": "message.model"},
        tokens_input={"message_start": "message.usage.input_tokens"},
        tokens_output={"message_delta": "usage.output_tokens"},
    ),
)
ANTHROPIC_PRICING = Pricing(
    as_of="2025-08-07",
    source="https://www.anthropic.com/pricing",
    models={"claude-sonnet-4-5": (3.0, 15.0)},
)
ANTHROPIC_SERVICE = dataclasses.replace(
    _service("anthropic", ANTHROPIC_URL, ApiKeyAuth("x-api-key", "{api_key}"), ANTHROPIC_PRICING),
    headers={"anthropic-version": "2023-06-01"},
)


class Anthropic(_Sync, LLMMixin):
    _service = ANTHROPIC_SERVICE
    _llm = ANTHROPIC_LLM
    _settings = _settings("ANTHROPIC")


class AsyncAnthropic(_Async, AsyncLLMMixin):
    _service = ANTHROPIC_SERVICE
    _llm = ANTHROPIC_LLM
    _settings = _settings("ANTHROPIC")


def anthropic_message(text: str = "Hi! I'm Claude.") -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 2095, "output_tokens": 503},
    }


def anthropic_stream_body(pieces: tuple[str, ...] = ("Hello", "!")) -> bytes:
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5-20250929",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return sse(events)


# -- Cohere v2: chat, named SSE events, embed with input_type ------------------------------------

COHERE_URL = "https://api.cohere.com"
COHERE_CHAT: Operation[Any] = Operation("chat", "POST", "/v2/chat", response=Decoder(None))
COHERE_STREAM: Operation[Any] = Operation(
    "chat_stream", "POST", "/v2/chat", stream=StreamFormat("sse", Decoder(None))
)
COHERE_EMBED: Operation[Any] = Operation("embed", "POST", "/v2/embed", response=Decoder(None))
COHERE_LLM = LLMRole(
    provider="cohere",
    default_model="command-r-08-2024",
    default_embedding_model="embed-v4.0",
    chat=ChatMap(
        operation=COHERE_CHAT,
        content="message.content.0.text",
        finish_reason="finish_reason",
        response_model=None,
        tokens_input="usage.billed_units.input_tokens",
        tokens_output="usage.billed_units.output_tokens",
    ),
    stream=StreamMap(
        operation=COHERE_STREAM,
        fixed={"stream": True},
        text={"content-delta": "delta.message.content.text"},
        finish_reason={"message-end": "delta.finish_reason"},
        tokens_input={"message-end": "delta.usage.billed_units.input_tokens"},
        tokens_output={"message-end": "delta.usage.billed_units.output_tokens"},
    ),
    embed=EmbedMap(
        operation=COHERE_EMBED,
        input="texts",
        input_type="input_type",
        input_types={"query": "search_query", "document": "search_document"},
        fixed={"embedding_types": ["float"]},
        vectors="embeddings.float",
        tokens_input="meta.billed_units.input_tokens",
        max_batch=96,
    ),
)
COHERE_PRICING = Pricing(
    as_of="2025-08-07",
    source="https://cohere.com/pricing",
    models={"command-r-08-2024": (0.15, 0.6), "embed-v4.0": (0.12, 0.0)},
)
COHERE_SERVICE = _service("cohere", COHERE_URL, BearerAuth(token="{api_key}"), COHERE_PRICING)


class Cohere(_Sync, LLMMixin):
    _service = COHERE_SERVICE
    _llm = COHERE_LLM
    _settings = _settings("CO")


class AsyncCohere(_Async, AsyncLLMMixin):
    _service = COHERE_SERVICE
    _llm = COHERE_LLM
    _settings = _settings("CO")


def cohere_chat_body() -> dict[str, Any]:
    return {
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        "finish_reason": "COMPLETE",
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": "LLMs are large language models."}],
        },
        "usage": {
            "billed_units": {"input_tokens": 5, "output_tokens": 418},
            "tokens": {"input_tokens": 71, "output_tokens": 418},
        },
    }


def cohere_stream_body() -> bytes:
    start_message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": []}
    usage = {
        "billed_units": {"input_tokens": 3, "output_tokens": 2},
        "tokens": {"input_tokens": 69, "output_tokens": 2},
    }
    return sse(
        [
            (
                "message-start",
                {"id": "29f14a5a", "type": "message-start", "delta": {"message": start_message}},
            ),
            (
                "content-start",
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                },
            ),
            (
                "content-delta",
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": "Bonjour"}}},
                },
            ),
            (
                "content-delta",
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": " !"}}},
                },
            ),
            ("content-end", {"type": "content-end", "index": 0}),
            (
                "message-end",
                {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}},
            ),
        ]
    )


def cohere_embed_response(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    texts = sent["texts"]
    return httpx.Response(
        200,
        json={
            "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
            "embeddings": {"float": [fake_vector(t) for t in texts]},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2}},
            "response_type": "embeddings_by_type",
        },
    )


# -- Mistral: OpenAI's shape; usage in the last stream chunk always ------------------------------

MISTRAL_URL = "https://api.mistral.ai/v1"
MISTRAL_CHAT: Operation[Any] = Operation(
    "chat_completion", "POST", "/chat/completions", response=Decoder(None)
)
MISTRAL_STREAM: Operation[Any] = Operation(
    "chat_stream",
    "POST",
    "/chat/completions",
    stream=StreamFormat("sse", Decoder(None), done="[DONE]"),
)
MISTRAL_EMBED: Operation[Any] = Operation(
    "embeddings", "POST", "/embeddings", response=Decoder(None)
)
MISTRAL_LLM = LLMRole(
    provider="mistral",
    default_model="mistral-small-latest",
    default_embedding_model="mistral-embed",
    chat=ChatMap(
        operation=MISTRAL_CHAT,
        content="choices.0.message.content",
        finish_reason="choices.0.finish_reason",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    ),
    stream=StreamMap(
        operation=MISTRAL_STREAM,
        fixed={"stream": True},
        text="choices.0.delta.content",
        finish_reason="choices.0.finish_reason",
        response_model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    ),
    embed=EmbedMap(
        operation=MISTRAL_EMBED,
        vectors="data.*.embedding",
        tokens_input="usage.prompt_tokens",
    ),
)
MISTRAL_SERVICE = _service(
    "mistral",
    MISTRAL_URL,
    BearerAuth(token="{api_key}"),
    Pricing(
        as_of="2025-08-07",
        source="https://mistral.ai/pricing",
        models={"mistral-small-latest": (0.1, 0.3)},
    ),
)


class Mistral(_Sync, LLMMixin):
    _service = MISTRAL_SERVICE
    _llm = MISTRAL_LLM
    _settings = _settings("MISTRAL")


def mistral_stream_body() -> bytes:
    base = {"id": "cmpl-e5cc70bb", "object": "chat.completion.chunk", "created": 1702256327}
    model = "mistral-small-latest"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {**base, "model": model, "choices": [choice], **extra}

    usage = {"prompt_tokens": 10, "total_tokens": 14, "completion_tokens": 4}
    return sse(
        [
            (None, chunk({"role": "assistant", "content": ""})),
            (None, chunk({"content": "Ciao"})),
            (None, chunk({"content": "!"}, "stop", usage=usage)),
            (None, "[DONE]"),
        ]
    )


# -- Ollama: /api/chat (NDJSON stream, usage on the last line), /api/embed -----------------------

OLLAMA_URL = "http://localhost:11434"
OLLAMA_CHAT: Operation[Any] = Operation("chat", "POST", "/api/chat", response=Decoder(None))
OLLAMA_STREAM: Operation[Any] = Operation(
    "chat_stream", "POST", "/api/chat", stream=StreamFormat("ndjson", Decoder(None))
)
OLLAMA_EMBED: Operation[Any] = Operation("embed", "POST", "/api/embed", response=Decoder(None))
OLLAMA_OPTIONS = {"max_tokens": "options.num_predict", "temperature": "options.temperature"}
OLLAMA_LLM = LLMRole(
    provider="ollama",
    default_model="llama3.2",
    default_embedding_model="all-minilm",
    chat=ChatMap(
        operation=OLLAMA_CHAT,
        options=OLLAMA_OPTIONS,
        fixed={"stream": False},
        content="message.content",
        finish_reason="done_reason",
        tokens_input="prompt_eval_count",
        tokens_output="eval_count",
    ),
    stream=StreamMap(
        operation=OLLAMA_STREAM,
        options=OLLAMA_OPTIONS,
        fixed={"stream": True},
        text="message.content",
        finish_reason="done_reason",
        response_model="model",
        tokens_input="prompt_eval_count",
        tokens_output="eval_count",
    ),
    embed=EmbedMap(
        operation=OLLAMA_EMBED,
        vectors="embeddings",
        tokens_input="prompt_eval_count",
        max_batch=512,
    ),
)
OLLAMA_SERVICE = _service("ollama", OLLAMA_URL, NoAuth())


class Ollama(_Sync, LLMMixin):
    _service = OLLAMA_SERVICE
    _llm = OLLAMA_LLM
    _settings = _settings("OLLAMA", key_required=False)


def ollama_chat_line(content: str, done: bool = False) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line.update(
            done_reason="stop",
            total_duration=4883583458,
            load_duration=1334875,
            prompt_eval_count=26,
            prompt_eval_duration=342546000,
            eval_count=282,
            eval_duration=4535599000,
        )
    return line


def ollama_stream_body() -> bytes:
    lines = [ollama_chat_line("The"), ollama_chat_line(" sky"), ollama_chat_line("", done=True)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def body_of(route: respx.Route, call: int = -1) -> Any:
    return json.loads(route.calls[call].request.content)


# -- chat / generate ------------------------------------------------------------------------------


def test_openai_chat_builds_the_body_and_reads_the_typed_response(
    mock: respx.MockRouter,
) -> None:
    route = mock.post(f"{OPENAI_URL}/chat/completions").respond(json=openai_chat_body())
    with OpenAI() as client:
        result = client.chat(
            [{"role": "user", "content": "Hi"}], max_tokens=50, temperature=0.2, seed=None
        )
    assert body_of(route) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,  # renamed by the map's options
        "temperature": 0.2,  # not listed: sent under its own name
    }
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-test-key"
    assert isinstance(result, ChatResult)
    assert result.content == "Hello! How can I help?"
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert (result.tokens_input, result.tokens_output) == (19, 10)
    assert result.finish_reason == "stop"
    # The dated model is priced as gpt-4o-mini, not as the shorter gpt-4o.
    assert result.cost == pytest.approx((19 * 0.15 + 10 * 0.6) / 1_000_000)
    assert result.latency > 0
    assert isinstance(result.raw, ChatCompletion)
    assert (result.provider, result.cached) == ("openai", False)


def test_generate_puts_the_system_prompt_first(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/chat/completions").respond(json=openai_chat_body())
    OpenAI().generate("Say hi", "Be brief", model="gpt-4o")
    assert body_of(route)["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hi"},
    ]
    assert body_of(route)["model"] == "gpt-4o"


def test_messages_may_be_models(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/chat/completions").respond(json=openai_chat_body())
    OpenAI().chat([OAIMessage(role="user", content="typed")])
    assert body_of(route)["messages"] == [{"role": "user", "content": "typed"}]


def test_unknown_model_costs_none(mock: respx.MockRouter) -> None:
    body = openai_chat_body(model="my-finetune-7")
    mock.post(f"{OPENAI_URL}/chat/completions").respond(json=body)
    result = OpenAI().chat("hello", model="my-finetune-7")
    assert result.model == "my-finetune-7"
    assert result.tokens_input == 19
    assert result.cost is None


def test_anthropic_takes_the_system_prompt_as_a_field(mock: respx.MockRouter) -> None:
    route = mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(json=anthropic_message())
    result = Anthropic().chat(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
        ],
        system_prompt="Answer in English.",
        max_tokens=1024,
    )
    sent = body_of(route)
    # System messages are lifted out of the list: one message list serves every provider.
    assert sent == {
        "model": "claude-sonnet-4-5",
        "system": "Answer in English.\n\nYou are terse.",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1024,
    }
    headers = route.calls[0].request.headers
    assert headers["x-api-key"] == "sk-test-key"
    assert headers["anthropic-version"] == "2023-06-01"
    assert result.content == "Hi! I'm Claude."
    assert result.model == "claude-sonnet-4-5-20250929"
    assert (result.tokens_input, result.tokens_output) == (2095, 503)
    assert result.finish_reason == "end_turn"
    assert result.cost == pytest.approx((2095 * 3.0 + 503 * 15.0) / 1_000_000)


def test_system_messages_of_text_parts_are_lifted_too(mock: respx.MockRouter) -> None:
    route = mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(json=anthropic_message())
    parts = [{"type": "text", "text": "You are terse. "}, {"type": "text", "text": "Be kind."}]
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    Anthropic().chat(
        [
            {"role": "system", "content": parts},
            {"role": "user", "content": "Hello"},
            {"role": "system", "content": image},  # not text: left for the provider to judge
        ],
        max_tokens=16,
    )
    sent = body_of(route)
    assert sent["system"] == "You are terse. Be kind."
    assert sent["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": image},
    ]


def test_cohere_chat_without_a_model_in_the_response(mock: respx.MockRouter) -> None:
    route = mock.post(f"{COHERE_URL}/v2/chat").respond(json=cohere_chat_body())
    result = Cohere().generate("What is an LLM?", system_prompt="Be precise")
    assert body_of(route)["messages"][0] == {"role": "system", "content": "Be precise"}
    assert result.content == "LLMs are large language models."
    assert result.model == "command-r-08-2024"  # the requested one: Cohere does not echo it
    assert result.finish_reason == "COMPLETE"
    assert (result.tokens_input, result.tokens_output) == (5, 418)
    assert result.cost == pytest.approx((5 * 0.15 + 418 * 0.6) / 1_000_000)


def test_mistral_chat(mock: respx.MockRouter) -> None:
    body = openai_chat_body("Bonjour", model="mistral-small-latest")
    mock.post(f"{MISTRAL_URL}/chat/completions").respond(json=body)
    result = Mistral().chat("Salut")
    assert (result.content, result.provider) == ("Bonjour", "mistral")
    assert result.cost == pytest.approx((19 * 0.1 + 10 * 0.3) / 1_000_000)


def test_ollama_options_nest_and_fixed_fields_win(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OLLAMA_URL}/api/chat").respond(
        json=ollama_chat_line("Blue, because of Rayleigh scattering.", done=True)
    )
    result = Ollama().chat("Why is the sky blue?", max_tokens=64, temperature=0.1, stream=True)
    assert body_of(route) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "options": {"num_predict": 64, "temperature": 0.1},
        "stream": False,  # the map's fixed value: an option cannot turn it into a stream
    }
    assert result.content == "Blue, because of Rayleigh scattering."
    assert (result.tokens_input, result.tokens_output, result.finish_reason) == (26, 282, "stop")
    assert result.cost is None  # no pricing for a local model


def test_a_call_goes_through_the_runtime_pipeline(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/chat/completions")
    route.side_effect = [
        httpx.Response(503, json={"error": {"message": "overloaded"}}),
        httpx.Response(200, json=openai_chat_body()),
    ]
    assert OpenAI().chat("hi").content == "Hello! How can I help?"
    assert route.call_count == 2  # retried by the client's retry policy


def test_errors_are_connector_errors(mock: respx.MockRouter) -> None:
    mock.post(f"{OPENAI_URL}/chat/completions").respond(
        400, json={"error": {"message": "bad temperature"}}
    )
    with pytest.raises(errors.BadRequestError, match="bad temperature"):
        OpenAI().chat("hi", temperature=9)


def test_a_model_is_needed(mock: respx.MockRouter) -> None:
    role = dataclasses.replace(OPENAI_LLM, default_model=None)

    class NoDefault(OpenAI):
        _llm = role

    with pytest.raises(errors.ConfigError, match="no model given"):
        NoDefault().chat("hi")


def test_missing_capability_is_a_clear_error() -> None:
    with pytest.raises(NotSupportedError, match="anthropic has no embeddings"):
        Anthropic().embed(["x"])

    class ChatOnly(OpenAI):
        _llm = dataclasses.replace(OPENAI_LLM, stream=None)

    with pytest.raises(NotSupportedError, match="openai has no streaming"):
        ChatOnly().stream("hi")
    assert issubclass(NotSupportedError, errors.ConnectorError)


# -- streams --------------------------------------------------------------------------------------


def test_openai_stream_with_usage(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/chat/completions")
    route.side_effect = lambda request: httpx.Response(
        200, content=openai_stream_body(request, ("Hel", "lo", " there"))
    )
    stream = OpenAI().stream("hi", max_tokens=5)
    assert stream.result is None
    assert list(stream) == ["Hel", "lo", " there"]
    sent = body_of(route)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_completion_tokens"] == 5
    result = stream.result
    assert result is not None
    assert result.content == "Hello there"
    assert (result.tokens_input, result.tokens_output) == (8, 2)
    assert result.finish_reason == "stop"
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.cost == pytest.approx((8 * 0.15 + 2 * 0.6) / 1_000_000)
    assert result.raw is None and result.provider == "openai"


def test_openai_stream_without_include_usage_has_no_tokens(mock: respx.MockRouter) -> None:
    assert OPENAI_LLM.stream is not None
    plain = StreamMap(
        operation=OPENAI_STREAM,
        fixed={"stream": True},
        text="choices.0.delta.content",
        finish_reason="choices.0.finish_reason",
        response_model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    )

    class NoUsage(OpenAI):
        _llm = dataclasses.replace(OPENAI_LLM, stream=plain)

    mock.post(f"{OPENAI_URL}/chat/completions").mock(
        side_effect=lambda request: httpx.Response(200, content=openai_stream_body(request))
    )
    stream = NoUsage().stream("hi")
    assert "".join(stream) == "Hello"
    assert stream.result is not None
    assert (stream.result.tokens_input, stream.result.tokens_output) == (None, None)
    assert stream.result.cost is None


def test_anthropic_stream_reads_named_events(mock: respx.MockRouter) -> None:
    route = mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(
        content=anthropic_stream_body(("Hello", "!", " How can I help?")),
        headers={"content-type": "text/event-stream"},
    )
    with Anthropic().stream("Hi", system_prompt="Be kind", max_tokens=256) as stream:
        chunks = list(stream)
    assert chunks == ["Hello", "!", " How can I help?"]
    assert body_of(route)["system"] == "Be kind" and body_of(route)["stream"] is True
    result = stream.result
    assert result is not None
    assert result.content == "Hello! How can I help?"
    assert result.model == "claude-sonnet-4-5-20250929"
    assert (result.tokens_input, result.tokens_output) == (25, 15)
    assert result.finish_reason == "end_turn"
    assert result.cost == pytest.approx((25 * 3.0 + 15 * 15.0) / 1_000_000)


def test_cohere_stream_reads_named_events(mock: respx.MockRouter) -> None:
    mock.post(f"{COHERE_URL}/v2/chat").respond(content=cohere_stream_body())
    stream = Cohere().stream([{"role": "user", "content": "Dis bonjour"}])
    assert list(stream) == ["Bonjour", " !"]
    assert stream.result is not None
    assert stream.result.finish_reason == "COMPLETE"
    assert (stream.result.tokens_input, stream.result.tokens_output) == (3, 2)
    assert stream.result.model == "command-r-08-2024"


def test_mistral_stream_has_usage_in_its_last_chunk(mock: respx.MockRouter) -> None:
    mock.post(f"{MISTRAL_URL}/chat/completions").respond(content=mistral_stream_body())
    stream = Mistral().stream("Salut")
    assert list(stream) == ["Ciao", "!"]
    assert stream.result is not None
    assert (stream.result.tokens_input, stream.result.tokens_output) == (10, 4)
    assert stream.result.finish_reason == "stop"


def test_ollama_stream_is_ndjson_with_usage_on_the_last_line(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OLLAMA_URL}/api/chat").respond(content=ollama_stream_body())
    stream = Ollama().stream("Why is the sky blue?", temperature=0)
    assert list(stream) == ["The", " sky"]
    assert body_of(route)["stream"] is True
    assert body_of(route)["options"] == {"temperature": 0}
    assert stream.result is not None
    assert stream.result.content == "The sky"
    assert (stream.result.tokens_input, stream.result.tokens_output) == (26, 282)
    assert stream.result.finish_reason == "stop"


class TrackedBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether it was closed."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.content.splitlines(keepends=True)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.content.splitlines(keepends=True):
            yield line

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def test_the_request_is_sent_when_iteration_starts(mock: respx.MockRouter) -> None:
    route = mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(content=anthropic_stream_body())
    stream = Anthropic().stream("Hi")
    assert route.call_count == 0
    assert next(stream) == "Hello"
    assert route.call_count == 1
    stream.close()


def test_leaving_the_with_block_closes_the_http_stream(mock: respx.MockRouter) -> None:
    body = TrackedBody(anthropic_stream_body(("a", "b", "c")))
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(stream=body)
    with Anthropic().stream("Hi") as stream:
        assert next(stream) == "a"
        assert not body.closed
    assert body.closed
    assert stream.result is None  # abandoned: no final answer
    assert stream.text == "a"


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """What is freed is freed by its last reference going: a stream that only the cycle
    collector would free stays open (as it does between collections)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_an_abandoned_stream_is_closed_and_traced_at_once(
    mock: respx.MockRouter, no_cycle_collector: None
) -> None:
    body = TrackedBody(anthropic_stream_body(("a", "b", "c")))
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(stream=body)
    sink = MemorySink()
    for chunk in Anthropic(tracer=Tracer(sink)).stream("Hi"):
        assert chunk == "a"
        break
    assert body.closed
    [call] = sink.calls
    assert call.abandoned and call.streamed


def test_an_abandoned_async_stream_is_closed(
    mock: respx.MockRouter, no_cycle_collector: None
) -> None:
    body = TrackedBody(anthropic_stream_body(("a", "b", "c")))
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(stream=body)

    async def run() -> None:
        async for chunk in AsyncAnthropic().stream("Hi"):
            assert chunk == "a"
            break
        # The loop's finalizer hook closes a dropped async generator in a task of its own.
        for _ in range(5):
            await asyncio.sleep(0)
        assert body.closed

    asyncio.run(run())


def test_a_stream_error_status_is_raised_on_first_chunk(mock: respx.MockRouter) -> None:
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(
        401, json={"type": "error", "error": {"type": "authentication_error", "message": "bad"}}
    )
    stream: ChatStream = Anthropic().stream("Hi")
    with pytest.raises(errors.AuthenticationError):
        next(stream)


# -- embed / transform ----------------------------------------------------------------------------


def test_embed_batches_up_to_max_batch_and_keeps_order(mock: respx.MockRouter) -> None:
    assert OPENAI_LLM.embed is not None

    class SmallBatches(OpenAI):
        _llm = dataclasses.replace(
            OPENAI_LLM,
            embed=EmbedMap(
                operation=OPENAI_EMBED,
                vectors="data.*.embedding",
                tokens_input="usage.prompt_tokens",
                max_batch=2,
            ),
        )

    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    texts = ["alpha", "be", "gamma ray", "d", "epsilon"]
    result = SmallBatches().embed(texts)
    assert route.call_count == 3
    assert [body_of(route, i)["input"] for i in range(3)] == [
        ["alpha", "be"],
        ["gamma ray", "d"],
        ["epsilon"],
    ]
    assert isinstance(result, Embeddings)
    assert list(result) == [fake_vector(t) for t in texts]
    assert result.dimensions == 3
    assert result.tokens_input == 4 * 5  # summed over the requests
    assert result.cost == pytest.approx(20 * 0.02 / 1_000_000)
    assert result.model == "text-embedding-3-small"
    assert len(result.raw) == 3 and isinstance(result.raw[0], EmbeddingList)
    assert result.provider == "openai" and result.latency > 0


def test_embed_one_request_within_the_limit(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    result = OpenAI().embed(["x"] * 300, model="text-embedding-3-large")
    assert route.call_count == 1
    assert len(result) == 300 and result.cost is None  # -large is not in this price table
    assert OpenAI().embed("one text").dimensions == 3
    assert len(OpenAI().embed([])) == 0
    assert route.call_count == 2  # no request for no texts


def test_cohere_embed_sends_its_input_type(mock: respx.MockRouter) -> None:
    route = mock.post(f"{COHERE_URL}/v2/embed").mock(side_effect=cohere_embed_response)
    result = Cohere().embed(["what is a vector?"], input_type="query")
    assert body_of(route) == {
        "model": "embed-v4.0",
        "texts": ["what is a vector?"],
        "input_type": "search_query",
        "embedding_types": ["float"],
    }
    assert list(result) == [fake_vector("what is a vector?")]
    assert result.tokens_input == 2
    assert result.cost == pytest.approx(2 * 0.12 / 1_000_000)
    # A value the map does not translate is sent as it is.
    Cohere().embed(["x"], input_type="classification")
    assert body_of(route)["input_type"] == "classification"


def test_input_type_is_ignored_by_a_provider_without_one(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    OpenAI().embed(["x"], input_type="query")
    assert "input_type" not in body_of(route)


def test_ollama_and_mistral_embed(mock: respx.MockRouter) -> None:
    mock.post(f"{OLLAMA_URL}/api/embed").respond(
        json={
            "model": "all-minilm",
            "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [0.1, 0.2, 0.3]],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": 8,
        }
    )
    result = Ollama().embed(["Why is the sky blue?", "Why is the grass green?"])
    assert result.dimensions == 3 and result.tokens_input == 8 and result.cost is None
    mock.post(f"{MISTRAL_URL}/embeddings").mock(side_effect=openai_embed_response)
    assert list(Mistral().embed(["a", "bb"])) == [fake_vector("a"), fake_vector("bb")]


def test_a_short_answer_is_an_error(mock: respx.MockRouter) -> None:
    mock.post(f"{OPENAI_URL}/embeddings").respond(
        json={
            "object": "list",
            "data": [],
            "model": "m",
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
    )
    with pytest.raises(errors.ResponseValidationError, match="asked for 2 embeddings, got 0"):
        OpenAI().embed(["a", "b"])


class Doc(BaseModel):
    id: int
    body: str
    vector: list[float] | None = None


class Untyped(BaseModel):
    id: int
    body: str


def test_transform_adds_vectors_to_dicts_and_models(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    records = [{"id": 1, "meta": {"title": "first"}}, {"id": 2, "meta": {"title": "second"}}]
    out = OpenAI().transform(records, "meta.title", "embedding")
    assert out == [
        {"id": 1, "meta": {"title": "first"}, "embedding": fake_vector("first")},
        {"id": 2, "meta": {"title": "second"}, "embedding": fake_vector("second")},
    ]
    assert "embedding" not in records[0]  # copies, not the caller's records
    docs = OpenAI().transform([Doc(id=1, body="hello")], "body", "vector")
    assert docs == [Doc(id=1, body="hello", vector=fake_vector("hello"))]
    assert route.call_count == 2
    with pytest.raises(TypeError, match="Untyped has no field 'vector'"):
        OpenAI().transform([Untyped(id=1, body="x")], "body", "vector")
    with pytest.raises(ValueError, match="record 1 has no text field 'body'"):
        OpenAI().transform([{"body": "a"}, {"text": "b"}], "body", "vector")


# -- async ----------------------------------------------------------------------------------------


def test_async_chat_stream_embed_transform(mock: respx.MockRouter) -> None:
    mock.post(f"{OPENAI_URL}/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200,
            **(
                {"content": openai_stream_body(request)}
                if json.loads(request.content).get("stream")
                else {"json": openai_chat_body()}
            ),
        )
    )
    embed_route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)

    async def run() -> None:
        async with AsyncOpenAI() as client:
            result = await client.generate("hi", "be brief", max_tokens=3)
            assert result.content == "Hello! How can I help?" and result.tokens_output == 10
            stream = client.stream("hi")
            assert [chunk async for chunk in stream] == ["Hel", "lo"]
            assert stream.result is not None and stream.result.tokens_input == 8
            vectors = await client.embed(["a", "b"])
            assert list(vectors) == [fake_vector("a"), fake_vector("b")]
            records = await client.transform([{"t": "c"}], "t", "v")
            assert records == [{"t": "c", "v": fake_vector("c")}]

    asyncio.run(run())
    assert embed_route.call_count == 2


def test_async_anthropic_stream_closes_when_left(mock: respx.MockRouter) -> None:
    body = TrackedBody(anthropic_stream_body(("x", "y")))
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(stream=body)

    async def run() -> None:
        client = AsyncAnthropic()
        async with client.stream("Hi") as stream:
            assert await stream.__anext__() == "x"
        assert body.closed
        full = AsyncAnthropic()
        mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(content=anthropic_stream_body())
        stream = full.stream("Hi")
        assert "".join([c async for c in stream]) == "Hello!"
        assert stream.result is not None and stream.result.tokens_output == 15

    asyncio.run(run())


def test_async_cohere_embed_and_missing_capability(mock: respx.MockRouter) -> None:
    mock.post(f"{COHERE_URL}/v2/embed").mock(side_effect=cohere_embed_response)

    async def run() -> None:
        result = await AsyncCohere().embed(["doc"], input_type="document")
        assert list(result) == [fake_vector("doc")]
        with pytest.raises(NotSupportedError, match="anthropic has no embeddings"):
            await AsyncAnthropic().embed(["x"])

    asyncio.run(run())
    assert body_of(mock.routes[0])["input_type"] == "search_document"


# -- tracing: the role's calls are the client's own calls -----------------------------------------


def test_role_calls_are_traced_with_usage_and_cost(mock: respx.MockRouter) -> None:
    tracing = pytest.importorskip("builder.runtime.tracing")
    sink = tracing.MemorySink()
    usage = tracing.UsageMap(
        model="model",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
        request_model="model",
    )
    stream_usage = tracing.UsageMap(
        model={"message_start": "message.model"},
        tokens_input={"message_start": "message.usage.input_tokens"},
        tokens_output={"message_delta": "usage.output_tokens"},
        text={"content_block_delta": "delta.text"},
        request_model="model",
    )
    traced_chat: Operation[ChatCompletion] = Operation(
        "create_chat_completion",
        "POST",
        "/chat/completions",
        response=Decoder(ChatCompletion),
        usage=usage,
    )
    traced_stream: Operation[Any] = Operation(
        "stream_message",
        "POST",
        "/v1/messages",
        stream=StreamFormat("sse", Decoder(None)),
        usage=stream_usage,
    )
    assert OPENAI_LLM.chat is not None and ANTHROPIC_LLM.stream is not None
    chat_map = ChatMap(
        operation=traced_chat,
        content="choices.0.message.content",
        tokens_input="usage.prompt_tokens",
        tokens_output="usage.completion_tokens",
    )
    stream_map = StreamMap(
        operation=traced_stream,
        system="system",
        fixed={"stream": True},
        text={"content_block_delta": "delta.text"},
        response_model={"message_start": "message.model"},
        tokens_input={"message_start": "message.usage.input_tokens"},
        tokens_output={"message_delta": "usage.output_tokens"},
    )

    class TracedOpenAI(OpenAI):
        _llm = dataclasses.replace(OPENAI_LLM, chat=chat_map)

    class TracedAnthropic(Anthropic):
        _llm = dataclasses.replace(ANTHROPIC_LLM, stream=stream_map)

    mock.post(f"{OPENAI_URL}/chat/completions").respond(json=openai_chat_body())
    mock.post(f"{ANTHROPIC_URL}/v1/messages").respond(content=anthropic_stream_body())
    tracer = tracing.Tracer(sink)
    result = TracedOpenAI(tracer=tracer).chat("hi")
    stream = TracedAnthropic(tracer=tracer).stream("hi")
    assert "".join(stream) == "Hello!"
    chat_call, stream_call = sink.calls
    assert (chat_call.provider, chat_call.operation) == ("openai", "create_chat_completion")
    assert (chat_call.tokens_input, chat_call.tokens_output) == (19, 10)
    assert chat_call.cost == pytest.approx(result.cost)
    assert stream_call.streamed and stream_call.tokens_output == 15
    assert stream.result is not None and stream.result.cost is not None
    assert stream_call.cost == pytest.approx(stream.result.cost)
    assert stream_call.output == stream.result.content


def test_a_dated_model_is_priced_as_the_listed_name_it_is_dated_from() -> None:
    pricing = Pricing(
        as_of="2026-11-01",
        source="test",
        models={"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)},
        default=None,
    )
    for _ in range(2):  # the second time from what the first found
        assert pricing.price("gpt-4o-mini-2024-07-18") == (0.15, 0.6)
        assert pricing.price("gpt-4o-2024-08-06") == (2.5, 10.0)
        assert pricing.price("gpt-4omni") is None  # not a dated form of a listed name
        assert pricing.price("gpt-4o-mini") == (0.15, 0.6)
    assert pricing.cost("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert pricing == Pricing("2026-11-01", "test", dict(pricing.models))  # lookups not compared
    for i in range(5000):  # a flood of unknown names is not all kept
        assert pricing.price(f"other-{i}") is None
    assert len(pricing._fallbacks) <= 1024
