"""Fallback across providers, the response cache and get_llm's choice of provider."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from builder.runtime import errors, llm
from builder.runtime.config import Setting
from builder.runtime.llm import (
    DEFAULT_ORDER,
    AllProvidersFailedError,
    AsyncFallback,
    Fallback,
    ResponseCache,
    falls_over,
    get_llm,
)
from builder.runtime.resilience import RetryPolicy
from tests.runtime.test_llm_role import (
    ANTHROPIC_URL,
    COHERE_URL,
    OPENAI_URL,
    Anthropic,
    AsyncAnthropic,
    AsyncOpenAI,
    Cohere,
    OpenAI,
    TrackedBody,
    anthropic_message,
    anthropic_stream_body,
    body_of,
    cohere_embed_response,
    fake_vector,
    openai_chat_body,
    openai_embed_response,
    openai_stream_body,
)
from tests.runtime.test_llm_role import no_cycle_collector as no_cycle_collector

pytestmark = pytest.mark.timeout(20)

OPENAI_CHAT_URL = f"{OPENAI_URL}/chat/completions"
ANTHROPIC_MESSAGES_URL = f"{ANTHROPIC_URL}/v1/messages"
OVERLOADED = {"error": {"message": "overloaded"}}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


# -- which errors fall over -----------------------------------------------------------------------


def _status(code: int) -> errors.HTTPStatusError:
    return errors.error_for_status(code)("x", status_code=code)


@pytest.mark.parametrize("code", [500, 502, 503, 529, 429, 408, 401, 402, 403])
def test_provider_faults_fall_over(code: int) -> None:
    assert falls_over(_status(code))


@pytest.mark.parametrize("code", [400, 404, 409, 413, 422])
def test_caller_errors_do_not_fall_over(code: int) -> None:
    assert not falls_over(_status(code))


def test_transport_and_circuit_errors_fall_over() -> None:
    assert falls_over(errors.ConnectionFailedError("refused"))
    assert falls_over(errors.TimeoutError("slow"))
    assert falls_over(errors.StreamError("cut"))
    assert falls_over(errors.CircuitOpenError("open", retry_in=3.0))
    assert falls_over(llm.NotSupportedError("no embeddings"))
    assert not falls_over(errors.ConnectorError("something else"))


# -- Fallback: chat -------------------------------------------------------------------------------


def test_the_primary_answers_when_it_can(mock: respx.MockRouter) -> None:
    primary = mock.post(OPENAI_CHAT_URL).respond(json=openai_chat_body())
    secondary = mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message())
    result = Fallback([OpenAI(), Anthropic()]).chat("hi")
    assert result.provider == "openai"
    assert (primary.call_count, secondary.call_count) == (1, 0)


def test_a_failing_primary_falls_over_in_order(mock: respx.MockRouter) -> None:
    primary = mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    second = mock.post(f"{COHERE_URL}/v2/chat").respond(429, json={"message": "slow down"})
    third = mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message("from claude"))
    fallback = Fallback([OpenAI(), Cohere(), Anthropic()])
    result = fallback.generate("hi", "be brief", max_tokens=100)
    assert (result.provider, result.content) == ("anthropic", "from claude")
    assert primary.call_count == 3  # each client's own retry policy ran first
    assert second.call_count == 3
    assert body_of(third)["system"] == "be brief"


def test_a_caller_error_is_raised_at_once(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(400, json={"error": {"message": "bad request"}})
    secondary = mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message())
    with pytest.raises(errors.BadRequestError):
        Fallback([OpenAI(), Anthropic()]).chat("hi")
    assert secondary.call_count == 0


class CountingOpenAI(OpenAI):
    """Counts the role calls it is asked for (a skipped provider is not asked at all)."""

    asked = 0

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return super().chat(*args, **kwargs)


def test_an_open_circuit_is_skipped(mock: respx.MockRouter) -> None:
    primary = mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message())
    openai = CountingOpenAI()
    fallback = Fallback([openai, Anthropic()])
    assert fallback.chat("one").provider == "anthropic"
    assert primary.call_count == 3  # three failures: the breaker (threshold 3) opens
    breaker = openai.circuit_breaker
    assert breaker is not None and breaker.state == breaker.OPEN
    assert fallback.chat("two").provider == "anthropic"
    assert (openai.asked, primary.call_count) == (1, 3)  # skipped: not even asked


def test_every_failure_is_listed(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(500, json={"error": {"message": "boom"}})
    mock.post(ANTHROPIC_MESSAGES_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(AllProvidersFailedError) as caught:
        Fallback([OpenAI(), Anthropic()]).chat("hi")
    failures = caught.value.errors
    assert [name for name, _ in failures] == ["openai", "anthropic"]
    assert isinstance(failures[0][1], errors.ServerError)
    assert isinstance(failures[1][1], errors.ConnectionFailedError)
    message = str(caught.value)
    assert "openai:" in message and "boom" in message
    assert "anthropic:" in message and "refused" in message
    assert isinstance(caught.value, errors.ConnectorError)
    assert caught.value.__cause__ is failures[-1][1]  # the last one, shown in a traceback


def test_a_skipped_provider_is_listed_too(mock: respx.MockRouter) -> None:
    mock.post(ANTHROPIC_MESSAGES_URL).respond(500, json={"error": {"message": "down"}})
    openai = OpenAI()
    assert openai.circuit_breaker is not None
    for _ in range(3):
        openai.circuit_breaker.record_failure()
    with pytest.raises(AllProvidersFailedError, match=r"openai: .*skipped: circuit open") as caught:
        Fallback([openai, Anthropic()]).chat("hi")
    assert isinstance(caught.value.errors[0][1], errors.CircuitOpenError)


def test_retry_runs_the_whole_list_again(mock: respx.MockRouter, sleeps: list[float]) -> None:
    route = mock.post(OPENAI_CHAT_URL)
    route.side_effect = [
        httpx.Response(503, json=OVERLOADED),
        httpx.Response(200, json=openai_chat_body()),
    ]
    policy = RetryPolicy(attempts=2, initial_delay=0.25, jitter=False)
    once = RetryPolicy(attempts=1)
    result = Fallback([OpenAI(retry=once)], retry=policy).chat("hi")
    assert result.provider == "openai"
    assert route.call_count == 2
    assert sleeps == [0.25]  # the wait between the two rounds


def test_a_circuit_opened_in_one_round_is_skipped_in_the_next(mock: respx.MockRouter) -> None:
    route = mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    policy = RetryPolicy(attempts=2, initial_delay=0.0, jitter=False)
    with pytest.raises(AllProvidersFailedError) as caught:
        Fallback([OpenAI()], retry=policy).chat("hi")
    assert route.call_count == 3  # the client's three tries open its breaker (threshold 3)
    kinds = [type(error) for _, error in caught.value.errors]
    assert kinds == [errors.ServerError, errors.CircuitOpenError]


def test_models_per_provider(mock: respx.MockRouter) -> None:
    primary = mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    secondary = mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message())
    Fallback([OpenAI(), Anthropic()]).chat("hi", model={"openai": "gpt-4o"})
    assert body_of(primary)["model"] == "gpt-4o"
    assert body_of(secondary)["model"] == "claude-sonnet-4-5"  # its default


def test_a_model_map_names_a_provider_or_its_connector(mock: respx.MockRouter) -> None:
    route = mock.post("https://api.mistral.ai/v1/chat/completions").respond(
        json=openai_chat_body(model="mistral-large-latest")
    )
    mistral = get_llm("mistral", api_key="k")  # connector mistral, provider mistral_ai
    for name in ("mistral", "mistral_ai"):
        Fallback([mistral]).chat("hi", model={name: "mistral-large-latest"})
        assert body_of(route)["model"] == "mistral-large-latest"
    with pytest.raises(ValueError, match=r"'mistrall'.*mistral_ai or mistral"):
        Fallback([mistral]).chat("hi", model={"mistrall": "mistral-large-latest"})
    with pytest.raises(ValueError, match="'gpt'"):
        Fallback([OpenAI(), mistral]).stream("hi", model={"openai": "gpt-4o", "gpt": "x"})
    assert route.call_count == 2


# -- Fallback: embed, stream, async ---------------------------------------------------------------


def test_embed_skips_a_provider_without_embeddings(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    result = Fallback([Anthropic(), OpenAI()]).embed(["a", "b"])
    assert result.provider == "openai" and list(result) == [fake_vector("a"), fake_vector("b")]
    assert route.call_count == 1
    records = Fallback([Anthropic(), OpenAI()]).transform([{"t": "x"}], "t", "v")
    assert records == [{"t": "x", "v": fake_vector("x")}]


def test_embed_falls_over_with_input_type(mock: respx.MockRouter) -> None:
    mock.post(f"{OPENAI_URL}/embeddings").respond(502, text="bad gateway")
    cohere = mock.post(f"{COHERE_URL}/v2/embed").mock(side_effect=cohere_embed_response)
    result = Fallback([OpenAI(), Cohere()]).embed(["q"], input_type="query")
    assert result.provider == "cohere"
    assert body_of(cohere)["input_type"] == "search_query"


def test_stream_falls_over_before_the_first_chunk(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    mock.post(ANTHROPIC_MESSAGES_URL).respond(content=anthropic_stream_body(("Hi", " there")))
    stream = Fallback([OpenAI(), Anthropic()]).stream("hello")
    assert list(stream) == ["Hi", " there"]
    assert stream.provider == "anthropic"
    assert stream.result is not None and stream.result.tokens_output == 15


def test_a_garbled_first_event_falls_over(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(content=b"data: {not json\n\n")
    mock.post(ANTHROPIC_MESSAGES_URL).respond(content=anthropic_stream_body())
    assert "".join(Fallback([OpenAI(), Anthropic()]).stream("x")) == "Hello!"


def test_stream_does_not_fall_over_after_a_chunk(mock: respx.MockRouter) -> None:
    cut = b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    cut += b'"delta": {"type": "text_delta", "text": "Hal"}}\n\nevent: content_block_delta\n'
    mock.post(ANTHROPIC_MESSAGES_URL).respond(content=cut)
    backup = mock.post(OPENAI_CHAT_URL).mock(
        side_effect=lambda request: httpx.Response(200, content=openai_stream_body(request))
    )
    stream = Fallback([Anthropic(), OpenAI()]).stream("x")
    assert next(stream) == "Hal"
    with pytest.raises(errors.StreamError, match="middle of an event"):
        next(stream)
    assert backup.call_count == 0


def test_an_abandoned_fallback_stream_is_closed_at_once(
    mock: respx.MockRouter, no_cycle_collector: None
) -> None:
    body = TrackedBody(anthropic_stream_body(("a", "b", "c")))
    mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    mock.post(ANTHROPIC_MESSAGES_URL).respond(stream=body)
    for chunk in Fallback([OpenAI(), Anthropic()]).stream("x"):
        assert chunk == "a"
        break
    assert body.closed


def test_an_abandoned_async_fallback_stream_is_closed(
    mock: respx.MockRouter, no_cycle_collector: None
) -> None:
    body = TrackedBody(anthropic_stream_body(("a", "b", "c")))
    mock.post(ANTHROPIC_MESSAGES_URL).respond(stream=body)

    async def run() -> None:
        async for chunk in AsyncFallback([AsyncAnthropic()]).stream("x"):
            assert chunk == "a"
            break
        for _ in range(5):  # the loop's finalizer hook closes the generators in tasks
            await asyncio.sleep(0)
        assert body.closed

    asyncio.run(run())


def test_async_fallback(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    mock.post(ANTHROPIC_MESSAGES_URL).mock(
        side_effect=lambda request: httpx.Response(
            200,
            **(
                {"content": anthropic_stream_body(("a", "b"))}
                if json.loads(request.content).get("stream")
                else {"json": anthropic_message("async answer")}
            ),
        )
    )
    embed = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)

    async def run() -> None:
        fallback = AsyncFallback([AsyncOpenAI(), AsyncAnthropic()])
        result = await fallback.chat("hi")
        assert (result.provider, result.content) == ("anthropic", "async answer")
        stream = fallback.stream("hi")
        assert [c async for c in stream] == ["a", "b"]
        assert stream.provider == "anthropic"
        vectors = await AsyncFallback([AsyncAnthropic(), AsyncOpenAI()]).embed(["z"])
        assert vectors.provider == "openai" and list(vectors) == [fake_vector("z")]
        with pytest.raises(AllProvidersFailedError, match="anthropic has no embeddings"):
            await AsyncFallback([AsyncAnthropic()]).embed(["z"])

    asyncio.run(run())
    assert embed.call_count == 1


def test_a_fallback_needs_providers() -> None:
    with pytest.raises(ValueError):
        Fallback([])


# -- the response cache ---------------------------------------------------------------------------


def test_a_cached_chat_is_not_sent_again(mock: respx.MockRouter) -> None:
    route = mock.post(OPENAI_CHAT_URL).respond(json=openai_chat_body())
    cache = ResponseCache()
    client = OpenAI().with_cache(cache)
    first = client.chat("hi", temperature=0, top_p=1)
    again = client.chat("hi", top_p=1, temperature=0)  # same request, options reordered
    assert route.call_count == 1
    assert (first.cached, again.cached) == (False, True)
    assert first.cost is not None and first.cost > 0 and again.cost == 0.0
    assert again.content == first.content and again.tokens_input == first.tokens_input
    assert (cache.hits, cache.misses) == (1, 1)
    client.chat("hi", temperature=1, top_p=1)  # another request: a miss
    client.chat("hi", model="gpt-4o", temperature=0, top_p=1)
    assert route.call_count == 3
    OpenAI().chat("hi", temperature=0, top_p=1)  # this client has no cache
    assert route.call_count == 4
    OpenAI().chat("hi", temperature=0, top_p=1, cache=cache)  # per call
    assert route.call_count == 4


def test_cached_embeddings_are_copies(mock: respx.MockRouter) -> None:
    route = mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    cache = ResponseCache()
    first = OpenAI().embed(["a", "b"], cache=cache)
    second = OpenAI().embed(["a", "b"], cache=cache)
    assert route.call_count == 1
    assert second.cached and second.cost == 0.0 and list(second) == list(first)
    second[0].append(99.0)
    assert list(OpenAI().embed(["a", "b"], cache=cache)) == list(first)
    OpenAI().embed(["a", "b"], input_type="query", cache=cache, dimensions=2)
    assert route.call_count == 2


def test_no_caller_changes_what_the_cache_keeps(mock: respx.MockRouter) -> None:
    mock.post(f"{OPENAI_URL}/embeddings").mock(side_effect=openai_embed_response)
    mock.post(OPENAI_CHAT_URL).respond(json=openai_chat_body("the answer"))
    client = OpenAI().with_cache(ResponseCache())
    first = client.embed(["a"])  # a miss: the caller's own copy
    first[0][0] = 999.0  # normalised in place, say
    first.append([1.0])
    first.raw.clear()
    again = client.embed(["a"])
    assert list(again) == [fake_vector("a")] and len(again.raw) == 1
    again.raw[0].data.clear()  # a hit's raw responses are its own copy too
    assert len(client.embed(["a"]).raw[0].data) == 1
    chat = client.chat("hi")
    chat.raw.choices[0].message.content = "changed"
    hit, other = client.chat("hi"), client.chat("hi")
    assert hit.cached and hit.raw.choices[0].message.content == "the answer"
    hit.raw.choices[0].message.content = "changed too"
    assert other.raw.choices[0].message.content == "the answer"


def test_whole_floats_and_ints_are_one_cache_key(mock: respx.MockRouter) -> None:
    route = mock.post(OPENAI_CHAT_URL).respond(json=openai_chat_body())
    client = OpenAI().with_cache(ResponseCache())
    client.chat("hi", temperature=1, top_p=0.5)
    assert client.chat("hi", temperature=1.0, top_p=0.5).cached
    assert not client.chat("hi", temperature=1.5, top_p=0.5).cached
    assert route.call_count == 2


def test_an_async_fallback_awaits_what_a_wrapped_provider_method_returns() -> None:
    class Wrapped:  # a provider whose chat is a plain function returning a coroutine
        provider = "wrapped"

        def chat(self, messages: Any, **options: Any) -> Any:
            async def answer() -> str:
                return f"answer to {messages}"

            return answer()

    assert asyncio.run(AsyncFallback([Wrapped()]).chat("hi")) == "answer to hi"


def test_the_cache_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    fake_time = types.SimpleNamespace(
        monotonic=lambda: now[0], perf_counter=lambda: now[0], sleep=lambda s: None
    )
    monkeypatch.setattr(llm, "time", fake_time)
    cache = ResponseCache(max_entries=2, ttl=10.0)
    keys = [cache.key("p", "op", "m", {"n": n}) for n in range(3)]
    for key in keys:
        cache.put(key, key)
    assert len(cache) == 2 and cache.get(keys[0]) is None  # the oldest went first
    assert cache.get(keys[1]) == keys[1]
    cache.put(keys[0], "back")
    assert cache.get(keys[2]) is None  # keys[1] was used more recently than keys[2]
    now[0] += 10.5
    assert cache.get(keys[1]) is None  # expired
    assert ResponseCache.key("p", "o", "m", {"b": 1, "a": 2}) == ResponseCache.key(
        "p", "o", "m", {"a": 2, "b": 1}
    )


def test_fallback_consults_the_cache(mock: respx.MockRouter) -> None:
    mock.post(OPENAI_CHAT_URL).respond(503, json=OVERLOADED)
    secondary = mock.post(ANTHROPIC_MESSAGES_URL).respond(json=anthropic_message())
    fallback = Fallback([OpenAI(), Anthropic()], cache=ResponseCache())
    assert not fallback.chat("hi").cached
    cached = fallback.chat("hi")
    assert cached.cached and cached.provider == "anthropic"
    assert secondary.call_count == 1


# -- get_llm --------------------------------------------------------------------------------------


def _fake_connector(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    client: type,
    settings: tuple[Setting, ...],
    async_client: type | None = None,
) -> None:
    module = types.ModuleType(f"connectors.{name}")
    module.SETTINGS = settings  # type: ignore[attr-defined]
    module.Client = client  # type: ignore[attr-defined]
    if async_client is not None:
        module.AsyncClient = async_client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"connectors.{name}", module)


class EnvOpenAI(OpenAI):
    """As generated: every setting defaults to its environment variable."""

    def __init__(self, *, api_key: str | None = None, **kw: Any) -> None:
        super().__init__(api_key=api_key, **kw)


class EnvAsyncOpenAI(AsyncOpenAI):
    def __init__(self, *, api_key: str | None = None, **kw: Any) -> None:
        super().__init__(api_key=api_key, **kw)


class EnvAnthropic(Anthropic):
    def __init__(self, *, api_key: str | None = None, **kw: Any) -> None:
        super().__init__(api_key=api_key, **kw)


class EnvCohere(Cohere):
    def __init__(self, *, api_key: str | None = None, **kw: Any) -> None:
        super().__init__(api_key=api_key, **kw)


ENV_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CO_API_KEY", "OLLAMA_HOST", llm.ORDER_ENV)


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake connectors.<name> modules for every default provider, none configured."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    key = "api_key"
    for name in DEFAULT_ORDER:
        monkeypatch.setitem(sys.modules, f"connectors.{name}", None)  # not installed
    _fake_connector(
        monkeypatch,
        "openai",
        EnvOpenAI,
        (Setting(key, str, env="OPENAI_API_KEY", required=True, secret=True),),
        EnvAsyncOpenAI,
    )
    _fake_connector(
        monkeypatch,
        "anthropic",
        EnvAnthropic,
        (Setting(key, str, env="ANTHROPIC_API_KEY", required=True, secret=True),),
    )
    _fake_connector(
        monkeypatch,
        "cohere",
        EnvCohere,
        (Setting(key, str, env="CO_API_KEY", required=True, secret=True),),
    )
    # A local server: nothing required, one optional setting.
    _fake_connector(monkeypatch, "ollama", OpenAI, (Setting("base_url", str, env="OLLAMA_HOST"),))


@pytest.mark.usefixtures("providers")
def test_get_llm_by_name() -> None:
    client = get_llm("anthropic", api_key="k-1")
    assert isinstance(client, Anthropic) and client.provider == "anthropic"
    assert isinstance(get_llm("openai", api_key="k", asynchronous=True), AsyncOpenAI)
    with pytest.raises(errors.ConfigError, match="no connector named 'mistral'"):
        get_llm("mistral")
    with pytest.raises(errors.ConfigError, match="not a connector name"):
        get_llm("os.path")
    with pytest.raises(errors.ConfigError, match="has no async LLM client"):
        get_llm("cohere", api_key="k", asynchronous=True)


@pytest.mark.usefixtures("providers")
def test_auto_takes_the_first_configured_in_the_default_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DEFAULT_ORDER.index("openai") < DEFAULT_ORDER.index("anthropic")
    assert DEFAULT_ORDER[-1] == "ollama"  # local servers last
    monkeypatch.setenv("CO_API_KEY", "co-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "an-key")
    assert isinstance(get_llm(), Anthropic)
    monkeypatch.setenv("OPENAI_API_KEY", "oa-key")
    client = get_llm("auto")
    assert isinstance(client, OpenAI)
    assert client.config.reveal("api_key") == "oa-key"


@pytest.mark.usefixtures("providers")
def test_auto_order_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "oa-key")
    monkeypatch.setenv("CO_API_KEY", "co-key")
    assert isinstance(get_llm(order=["cohere", "openai"]), Cohere)
    monkeypatch.setenv(llm.ORDER_ENV, " cohere , openai")
    assert isinstance(get_llm(), Cohere)
    assert isinstance(get_llm(order=["openai"]), OpenAI)  # the argument wins


@pytest.mark.usefixtures("providers")
def test_auto_counts_settings_given_as_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    client = get_llm(order=["anthropic", "openai"], api_key="given")
    assert isinstance(client, Anthropic) and client.config.reveal("api_key") == "given"


def test_auto_names_a_connector_without_an_llm_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "gh-token")  # configured, but not an LLM connector
    with pytest.raises(errors.ConfigError, match="connectors.github has no LLM client"):
        get_llm(order=["github", "openai"])


def test_auto_async_passes_over_a_connector_without_an_async_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connectors.openai import AsyncOpenAI as GeneratedAsyncOpenAI

    monkeypatch.setenv("HUGGINGFACE_DEVICE", "cpu")  # local embeddings: configured, sync only
    monkeypatch.setenv("OPENAI_API_KEY", "oa-key")
    order = ["huggingface", "openai"]
    assert isinstance(get_llm(order=order, asynchronous=True), GeneratedAsyncOpenAI)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(errors.ConfigError, match=r"huggingface \(no async client\)"):
        get_llm(order=order, asynchronous=True)


@pytest.mark.usefixtures("providers")
def test_a_local_provider_needs_one_setting_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        get_llm()
    message = str(caught.value)
    assert "no LLM provider is configured" in message
    assert "openai (OPENAI_API_KEY)" in message and "anthropic (ANTHROPIC_API_KEY)" in message
    assert "mistral (not installed)" in message
    assert "ollama (one of OLLAMA_HOST)" in message
    assert llm.ORDER_ENV in message
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:11434")
    assert isinstance(get_llm(), OpenAI)  # the fake ollama module's class


def test_get_llm_finds_an_embeddings_only_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("connectors.local_vectors")

    class LocalVectors:
        def __init__(self, **settings: Any) -> None:
            self.settings = settings

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[0.0] for _ in texts]

    LocalVectors.__module__ = module.__name__
    module.LocalVectors = LocalVectors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    found = get_llm("local_vectors", model="m")
    assert isinstance(found, LocalVectors) and found.settings == {"model": "m"}
