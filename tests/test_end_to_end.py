"""End-to-end tests: generated connectors and the runtime against a real local HTTP server.

One uvicorn process (``tests.servers.fake_services``) serves the whole module. Every test has
a hard deadline and uses fast retry policies, so the module finishes in a few seconds.

Routes that are not operations of a spec (``/faults/...``, ``/rate_limited``, ``/v1/echo``)
are reached through hand-made :class:`Operation` objects, either on a tiny ad-hoc client over
the runtime (:class:`FaultClient`) or on a generated client's ``_call``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.client import AsyncClient, SyncClient
from builder.runtime.config import Config
from builder.runtime.operation import Decoder, Operation, Service, StreamFormat
from builder.runtime.resilience import CircuitBreaker, RetryPolicy
from connectors.github import AsyncGitHub, GitHub
from connectors.openai import AsyncOpenAI, OpenAI

pytestmark = pytest.mark.integration

TOKEN = "e2e-token-123"
API_KEY = "sk-e2e-key-456"

#: Retries with (almost) no waiting; Retry-After still honoured up to 5 s.
FAST = RetryPolicy(
    attempts=3, initial_delay=0.01, max_delay=0.05, jitter=False, max_retry_after=5.0
)


def _fast(**changes: Any) -> RetryPolicy:
    fields = {
        "attempts": FAST.attempts,
        "initial_delay": FAST.initial_delay,
        "max_delay": FAST.max_delay,
        "jitter": FAST.jitter,
        "max_retry_after": FAST.max_retry_after,
    }
    fields.update(changes)
    return RetryPolicy(**fields)


# --------------------------------------------------------------------------- #
# Server fixture and raw helpers
# --------------------------------------------------------------------------- #


def _server_deps_missing() -> list[str]:
    return [name for name in ("uvicorn", "starlette") if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Base URL of the fake services, started once for the module."""
    missing = _server_deps_missing()
    if missing:
        reason = f"end-to-end tests need {' and '.join(missing)} (pip install -e .[dev])"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; not skipping under CI=true")
        pytest.skip(reason)
    from tests.servers.runner import run_server

    with run_server() as url:
        yield url


@pytest.fixture
def base_url(server: str) -> str:
    """The server's base URL, with its state (counters, created issues) reset."""
    with httpx.Client(base_url=server, timeout=5.0, trust_env=False) as raw:
        raw.post("/_reset").raise_for_status()
    return server


def _raw_get(base_url: str, path: str, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=5.0, trust_env=False) as raw:
        return raw.get(path, params=params)


def _calls(base_url: str, key: str) -> int:
    """How many times the server saw a fault route with this ``key``."""
    return int(_raw_get(base_url, "/faults/calls", key=key).json()["calls"])


def _github_requests_since_reset(base_url: str) -> int:
    """GitHub-route requests served since the last reset, read off the fake rate limit.

    Every GitHub-style route consumes one unit of ``X-RateLimit-Remaining`` (5000 after a
    reset); the probe itself consumes one more.
    """
    probe = _raw_get(base_url, "/repos/probe/probe")
    return 5000 - int(probe.headers["X-RateLimit-Remaining"]) - 1


def _key() -> str:
    return uuid.uuid4().hex


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _recording_client(base_url: str, **kw: Any) -> tuple[httpx.Client, list[httpx.Request]]:
    """An httpx client that remembers every request it sends."""
    seen: list[httpx.Request] = []
    client = httpx.Client(
        base_url=base_url,
        timeout=10.0,
        trust_env=False,
        event_hooks={"request": [seen.append]},
        **kw,
    )
    return client, seen


def _raised(fn: Callable[[], Any]) -> BaseException:
    """Run ``fn``, which must fail; return what it raised (any exception type)."""
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - we want to see exactly what escapes
        return exc
    raise AssertionError("expected an exception, got none")


def _assert_connector_error(exc: BaseException, cls: type[errors.ConnectorError]) -> None:
    """Exactly ``cls``; never a raw httpx exception, nor one chained for the caller to see."""
    escaped_httpx = isinstance(exc, httpx.HTTPError) or type(exc).__module__.startswith("httpx")
    assert not escaped_httpx, f"raw httpx exception escaped: {type(exc).__name__}: {exc}"
    assert type(exc) is cls, f"expected {cls.__name__}, got {type(exc).__name__}: {exc}"
    assert not isinstance(exc.__cause__, httpx.HTTPError)


# --------------------------------------------------------------------------- #
# An ad-hoc client over the runtime, for the fault routes
# --------------------------------------------------------------------------- #

FAULTS = Service(name="faults", base_url="http://127.0.0.1:9", timeout=10.0, retry=FAST)


class Ok(BaseModel):
    ok: bool
    calls: int


class Chunk(BaseModel):
    id: str
    model: str
    choices: list[dict[str, Any]]


RETRY_AFTER: Operation[Ok] = Operation(
    "retry_after", "GET", "/faults/retry_after", response=Decoder(Ok)
)
STATUS: Operation[Ok] = Operation("status", "GET", "/faults/status", response=Decoder(Ok))
SLOW: Operation[Ok] = Operation("slow", "GET", "/faults/slow", response=Decoder(Ok))
BAD_JSON_TYPED: Operation[Ok] = Operation(
    "bad_json", "GET", "/faults/bad_json", response=Decoder(Ok)
)
BAD_JSON_UNTYPED: Operation[Any] = Operation("bad_json", "GET", "/faults/bad_json")
WRONG_SHAPE: Operation[Ok] = Operation(
    "wrong_shape", "GET", "/faults/wrong_shape", response=Decoder(Ok)
)
SSE_CUT: Operation[Chunk] = Operation(
    "sse_cut",
    "GET",
    "/faults/sse_cut",
    stream=StreamFormat("sse", Decoder(Chunk), done="[DONE]"),
)
NDJSON: Operation[Any] = Operation(
    "ndjson", "GET", "/faults/ndjson", stream=StreamFormat("ndjson", Decoder())
)
MODELS_OP: Operation[Any] = Operation("models", "GET", "/v1/models")


class FaultClient(SyncClient):
    _service = FAULTS

    def __init__(self, base_url: str, *, service: Service | None = None, **kw: Any) -> None:
        if service is not None:
            self._service = service
        super().__init__(Config({"base_url": base_url}), **kw)


class AsyncFaultClient(AsyncClient):
    _service = FAULTS

    def __init__(self, base_url: str, *, service: Service | None = None, **kw: Any) -> None:
        if service is not None:
            self._service = service
        super().__init__(Config({"base_url": base_url}), **kw)


# --------------------------------------------------------------------------- #
# GitHub
# --------------------------------------------------------------------------- #


def _github(base_url: str, **kw: Any) -> GitHub:
    kw.setdefault("retry", FAST)
    return GitHub(token=TOKEN, base_url=base_url, **kw)


@pytest.mark.timeout(20)
def test_github_get_repository_is_typed(base_url: str) -> None:
    from connectors.github.models import Repository, SimpleUser

    with _github(base_url) as gh:
        repo = gh.get_repository(owner="octo", repo="hello")

    assert isinstance(repo, Repository)
    assert isinstance(repo.owner, SimpleUser)
    assert repo.full_name == "octo/hello"
    assert repo.name == "hello"
    assert repo.private is False
    assert repo.owner.login == "octo"
    assert repo.owner.id == 42
    assert repo.stargazers_count == 1234
    assert repo.default_branch == "main"
    assert repo.html_url == f"{base_url}/octo/hello"


@pytest.mark.timeout(20)
def test_github_sends_auth_and_service_headers(base_url: str) -> None:
    echo: Operation[Any] = Operation("echo", "GET", "/v1/echo")
    with _github(base_url) as gh:
        seen = gh._call(echo, query={"a": 1, "skip": None})

    assert seen["method"] == "GET"
    assert seen["query"] == {"a": ["1"]}  # None-valued parameters are left out
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == "connector-builder (github)"
    assert TOKEN not in repr(gh)  # the secret setting stays masked


@pytest.mark.timeout(20)
def test_github_list_issues_walks_three_pages(base_url: str) -> None:
    from connectors.github.models import Issue

    with _github(base_url) as gh:
        issues = list(gh.list_issues(owner="octo", repo="hello", per_page=10))

    assert _github_requests_since_reset(base_url) == 3
    assert len(issues) == 23
    assert all(isinstance(issue, Issue) for issue in issues)
    assert [issue.number for issue in issues] == list(range(1, 24))
    assert {issue.state for issue in issues} == {"open"}
    assert issues[0].title == "Issue 1 in octo/hello"
    assert issues[0].labels is not None and issues[0].labels[0].name == "enhancement"
    assert issues[0].created_at == datetime(2024, 1, 1, 1, tzinfo=UTC)


@pytest.mark.timeout(20)
def test_github_list_issues_pages_and_link_query(base_url: str) -> None:
    http, seen = _recording_client(base_url)
    with http, GitHub(token=TOKEN, http_client=http, retry=FAST) as gh:
        pages = list(gh.list_issues(owner="octo", repo="hello", state="all", per_page=10).pages())

    assert [len(page) for page in pages] == [10, 10, 3]
    assert len(seen) == 3
    assert [r.url.params.get("page") for r in seen] == [None, "2", "3"]
    # The next links keep every other query parameter.
    for request in seen:
        assert request.url.path == "/repos/octo/hello/issues"
        assert request.url.params["state"] == "all"
        assert request.url.params["per_page"] == "10"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    numbers = [issue.number for page in pages for issue in page]
    assert numbers == list(range(1, 24))
    closed = [issue.number for page in pages for issue in page if issue.state == "closed"]
    assert closed == [3, 6, 9, 12, 15, 18, 21]


@pytest.mark.timeout(20)
def test_github_pager_is_lazy(base_url: str) -> None:
    with _github(base_url) as gh:
        pager = gh.list_issues(owner="octo", repo="lazy", per_page=10)
        assert _github_requests_since_reset(base_url) == 0
        first = next(iter(pager))
        assert first.number == 1
    # only the first page was fetched (plus the probe of the previous assertion)
    assert _github_requests_since_reset(base_url) == 2


@pytest.mark.timeout(20)
def test_github_search_issues_paginates_through_items(base_url: str) -> None:
    from connectors.github.models import Issue

    with _github(base_url) as gh:
        results = list(gh.search_issues(q="is:open bug", per_page=10))
        pages = list(gh.search_issues(q="is:open bug", per_page=10).pages())

    assert len(results) == 23
    assert all(isinstance(issue, Issue) for issue in results)
    assert [issue.number for issue in results] == list(range(1, 24))
    assert results[4].title == "is:open bug result 5"
    assert [len(page) for page in pages] == [10, 10, 3]
    assert _github_requests_since_reset(base_url) == 6


@pytest.mark.timeout(20)
def test_github_create_issue_sends_json_body(base_url: str) -> None:
    import json

    from connectors.github.models import Issue

    http, seen = _recording_client(base_url)
    with http, GitHub(token=TOKEN, http_client=http, retry=FAST) as gh:
        issue = gh.create_issue(
            owner="octo", repo="new", title="Broken build", body="It fails.", labels=["bug", "ci"]
        )

    assert len(seen) == 1
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/repos/octo/new/issues"
    assert request.headers["content-type"] == "application/json"
    # None-valued fields (assignees, milestone) are not sent.
    assert json.loads(request.content) == {
        "title": "Broken build",
        "body": "It fails.",
        "labels": ["bug", "ci"],
    }

    assert isinstance(issue, Issue)
    assert issue.number == 1001
    assert issue.title == "Broken build"
    assert issue.body == "It fails."
    assert issue.state == "open"
    assert issue.labels is not None
    assert [label.name for label in issue.labels] == ["bug", "ci"]
    assert issue.html_url == f"{base_url}/octo/new/issues/1001"


@pytest.mark.timeout(20)
def test_github_create_issue_validation_error_is_typed(base_url: str) -> None:
    with _github(base_url) as gh:
        exc = _raised(lambda: gh.create_issue(owner="octo", repo="new", title=""))

    _assert_connector_error(exc, errors.UnprocessableEntityError)
    assert isinstance(exc, errors.UnprocessableEntityError)
    assert exc.status_code == 422
    assert exc.method == "POST"
    assert "Validation Failed" in str(exc)


@pytest.mark.timeout(20)
def test_github_source_role_read_and_read_batch(base_url: str) -> None:
    with _github(base_url) as gh:
        records = list(gh.read(owner="octo", repo="src", per_page=10))
        assert len(records) == 23
        assert gh.metrics.records_read == 23
        assert gh.metrics.errors == 0

        batches = list(gh.read_batch(5, owner="octo", repo="src", per_page=10))
        assert [len(batch) for batch in batches] == [5, 5, 5, 5, 3]
        assert [issue.number for batch in batches for issue in batch] == list(range(1, 24))
        assert gh.metrics.batches == 5
        assert gh.metrics.records_read == 46

    assert _github_requests_since_reset(base_url) == 6


@pytest.mark.timeout(20)
def test_github_sink_role_write(base_url: str) -> None:
    records = [
        {"owner": "octo", "repo": "sink", "title": "first"},
        {"owner": "octo", "repo": "sink", "title": "second", "body": "b", "labels": ["x"]},
    ]
    with _github(base_url) as gh:
        assert gh.write(records) == 2
        assert gh.metrics.records_written == 2
        assert gh.metrics.batches == 1
        assert gh.metrics.errors == 0

        bad = [
            {"owner": "octo", "repo": "sink", "title": "third"},
            {"owner": "octo", "repo": "sink", "title": ""},  # rejected with 422
            {"owner": "octo", "repo": "sink", "title": "never sent"},
        ]
        exc = _raised(lambda: gh.write(bad))
        assert type(exc) is errors.WriteError
        assert isinstance(exc, errors.WriteError)
        assert exc.written == 1
        assert exc.failed == bad[1:]
        assert isinstance(exc.__cause__, errors.UnprocessableEntityError)
        assert gh.metrics.records_written == 3
        assert gh.metrics.errors == 1

    # 2 + 2 POSTs reached the server; the last record was never sent.
    assert _github_requests_since_reset(base_url) == 4


@pytest.mark.timeout(20)
def test_github_rate_limited_403_maps_to_rate_limited_error(base_url: str) -> None:
    rate_limited: Operation[Any] = Operation(
        "rate_limited", "GET", "/rate_limited", retry=RetryPolicy(attempts=1)
    )
    with _github(base_url) as gh:
        started = time.monotonic()
        exc = _raised(lambda: gh._call(rate_limited))
        elapsed = time.monotonic() - started

    _assert_connector_error(exc, errors.RateLimitedError)
    assert isinstance(exc, errors.RateLimitedError)
    assert exc.status_code == 403
    assert exc.retry_after is None  # no Retry-After header: the reset time says it all
    assert exc.reset_at is not None
    ahead = (exc.reset_at - datetime.now(UTC)).total_seconds()
    assert 55 <= ahead <= 61
    assert "API rate limit exceeded" in str(exc)
    assert TOKEN not in str(exc)
    assert elapsed < 2


# --------------------------------------------------------------------------- #
# OpenAI
# --------------------------------------------------------------------------- #

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there world"},
]


def _openai(base_url: str, **kw: Any) -> OpenAI:
    kw.setdefault("retry", FAST)
    return OpenAI(api_key=API_KEY, base_url=f"{base_url}/v1", **kw)


@pytest.mark.timeout(20)
def test_openai_create_chat_completion(base_url: str) -> None:
    from connectors.openai.models import ChatCompletion

    with _openai(base_url) as ai:
        completion = ai.create_chat_completion(model="gpt-fake-mini", messages=MESSAGES)

    assert isinstance(completion, ChatCompletion)
    assert completion.model == "gpt-fake-mini"
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello there world"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5  # "be brief" + "hello there world"
    assert completion.usage.completion_tokens == 4  # "echo:", "hello", "there", "world"
    assert completion.usage.total_tokens == 9


@pytest.mark.timeout(20)
def test_openai_stream_matches_non_stream_and_ends_with_usage(base_url: str) -> None:
    from connectors.openai.models import ChatCompletionChunk

    with _openai(base_url) as ai:
        expected = ai.create_chat_completion(model="gpt-fake-mini", messages=MESSAGES)
        with ai.stream_chat_completion(
            model="gpt-fake-mini", messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream:
            chunks = list(stream)
        assert stream.response.is_closed

    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    # role chunk + 4 content chunks + finish chunk + usage chunk
    assert len(chunks) == 7
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content == "echo: hello there world"
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump() == expected.usage.model_dump()
    assert all(chunk.usage is None for chunk in chunks[:-1])


@pytest.mark.timeout(20)
def test_openai_stream_without_usage_has_no_usage_chunk(base_url: str) -> None:
    with (
        _openai(base_url) as ai,
        ai.stream_chat_completion(model="gpt-fake-mini", messages=MESSAGES) as stream,
    ):
        chunks = list(stream)

    assert len(chunks) == 6
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


@pytest.mark.timeout(20)
def test_openai_500_chunk_stream_arrives_complete(base_url: str) -> None:
    http, seen = _recording_client(f"{base_url}/v1", headers={"x-chunks": "500"})
    prompt = [{"role": "user", "content": "a b c"}]
    with http, OpenAI(api_key=API_KEY, http_client=http, retry=FAST) as ai:
        with ai.stream_chat_completion(
            model="gpt-fake-mini", messages=prompt, stream_options={"include_usage": True}
        ) as stream:
            chunks = list(stream)

    assert len(seen) == 1
    assert seen[0].headers["x-chunks"] == "500"
    assert seen[0].headers["authorization"] == f"Bearer {API_KEY}"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 500
    words = ["echo:", "a", "b", "c"]
    assert "".join(pieces) == " ".join(words[i % 4] for i in range(500))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 500


@pytest.mark.timeout(20)
def test_openai_stream_can_be_closed_early(base_url: str) -> None:
    http, _ = _recording_client(f"{base_url}/v1", headers={"x-chunks": "5000"})
    with http, OpenAI(api_key=API_KEY, http_client=http, retry=FAST) as ai:
        with ai.stream_chat_completion(model="m", messages=MESSAGES) as stream:
            taken = []
            for chunk in stream:
                taken.append(chunk)
                if len(taken) == 3:
                    break
        assert stream.response.is_closed
        # the pool is still usable afterwards
        assert len(ai.list_models().data) == 3
    assert len(taken) == 3


@pytest.mark.timeout(20)
def test_openai_create_embeddings_for_a_list(base_url: str) -> None:
    from connectors.openai.models import EmbeddingList

    with _openai(base_url) as ai:
        result = ai.create_embeddings(input=["alpha", "beta gamma", "delta"], model="emb")
        single = ai.create_embeddings(input="beta gamma", model="emb")

    assert isinstance(result, EmbeddingList)
    assert [e.index for e in result.data] == [0, 1, 2]
    assert all(len(e.embedding) == 8 for e in result.data)
    assert all(-1.0 <= x <= 1.0 for e in result.data for x in e.embedding)
    assert result.data[0].embedding != result.data[1].embedding
    # deterministic: the same text gives the same vector
    assert single.data[0].embedding == result.data[1].embedding
    assert result.model == "emb"


@pytest.mark.timeout(20)
def test_openai_list_models(base_url: str) -> None:
    with _openai(base_url) as ai:
        models = ai.list_models()

    assert [m.id for m in models.data] == ["gpt-fake-mini", "gpt-fake-large", "text-embedding-fake"]


@pytest.mark.timeout(20)
def test_openai_bad_request_is_typed(base_url: str) -> None:
    with _openai(base_url) as ai:
        exc = _raised(lambda: ai.create_chat_completion(model="m", messages=[]))

    _assert_connector_error(exc, errors.BadRequestError)
    assert isinstance(exc, errors.BadRequestError)
    assert exc.status_code == 400
    assert "'messages' must be a non-empty array." in str(exc)
    assert API_KEY not in str(exc)


# --------------------------------------------------------------------------- #
# Faults through the runtime
# --------------------------------------------------------------------------- #


@pytest.mark.timeout(20)
def test_retry_after_zero_seconds_is_retried_once(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url) as client:
        result = client._call(RETRY_AFTER, query={"key": key, "fail": 1, "value": 0})

    assert result == Ok(ok=True, calls=2)
    assert _calls(base_url, key) == 2


@pytest.mark.timeout(20)
def test_retry_after_seconds_replaces_backoff(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url) as client:
        started = time.monotonic()
        result = client._call(RETRY_AFTER, query={"key": key, "fail": 1, "value": 1})
        elapsed = time.monotonic() - started

    assert result.calls == 2
    assert _calls(base_url, key) == 2
    assert 0.9 <= elapsed < 3.0  # waited what the header asked, not the 10 ms backoff


@pytest.mark.timeout(20)
def test_retry_after_http_date_is_retried(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url) as client:
        started = time.monotonic()
        result = client._call(
            RETRY_AFTER, query={"key": key, "fail": 1, "value": 2, "mode": "date"}
        )
        elapsed = time.monotonic() - started

    assert result == Ok(ok=True, calls=2)
    assert _calls(base_url, key) == 2
    # an HTTP date has 1 s precision: now + 2 s means a wait in (1, 2]
    assert 0.9 <= elapsed < 3.5


@pytest.mark.timeout(20)
def test_retry_after_beyond_max_raises_at_once(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url, retry=_fast(attempts=4, max_retry_after=5.0)) as client:
        started = time.monotonic()
        exc = _raised(
            lambda: client._call(RETRY_AFTER, query={"key": key, "fail": 5, "value": 120})
        )
        elapsed = time.monotonic() - started

    _assert_connector_error(exc, errors.RateLimitedError)
    assert isinstance(exc, errors.RateLimitedError)
    assert exc.status_code == 429
    assert exc.retry_after == 120.0
    assert exc.reset_at is None
    assert exc.headers["retry-after"] == "120"
    assert _calls(base_url, key) == 1
    assert elapsed < 1.0


@pytest.mark.timeout(20)
def test_503_n_times_then_success(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url, retry=_fast(attempts=4)) as client:
        result = client._call(STATUS, query={"key": key, "code": 503, "fail": 2})

    assert result == Ok(ok=True, calls=3)
    assert _calls(base_url, key) == 3


@pytest.mark.timeout(20)
@pytest.mark.parametrize("attempts", [1, 3])
def test_5xx_always_gives_server_error_after_attempts(base_url: str, attempts: int) -> None:
    key = _key()
    with FaultClient(base_url, retry=_fast(attempts=attempts)) as client:
        exc = _raised(lambda: client._call(STATUS, query={"key": key, "code": 503, "fail": 100}))

    _assert_connector_error(exc, errors.ServerError)
    assert isinstance(exc, errors.ServerError)
    assert exc.status_code == 503
    assert exc.method == "GET"
    assert f"Injected failure {attempts}" in str(exc)
    assert _calls(base_url, key) == attempts
    if attempts > 1:
        assert f"after {attempts} attempts" in str(exc)


@pytest.mark.timeout(20)
def test_4xx_is_not_retried(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url) as client:
        exc = _raised(lambda: client._call(STATUS, query={"key": key, "code": 404, "fail": 5}))

    _assert_connector_error(exc, errors.NotFoundError)
    assert _calls(base_url, key) == 1


@pytest.mark.timeout(20)
def test_read_timeout_gives_timeout_error_after_bounded_retries(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url, timeout=0.3, retry=_fast(attempts=2)) as client:
        started = time.monotonic()
        exc = _raised(lambda: client._call(SLOW, query={"key": key, "delay": 2}))
        elapsed = time.monotonic() - started

    _assert_connector_error(exc, errors.TimeoutError)
    assert isinstance(exc, errors.TimeoutError)
    assert isinstance(exc, errors.TransportError)
    assert "after 2 attempts" in str(exc)
    assert 0.6 <= elapsed < 1.8
    assert _calls(base_url, key) == 2


@pytest.mark.timeout(20)
def test_read_timeout_once_then_success(base_url: str) -> None:
    key = _key()
    with FaultClient(base_url, timeout=0.3, retry=_fast(attempts=3)) as client:
        result = client._call(SLOW, query={"key": key, "delay": 2, "fail": 1})

    assert result == Ok(ok=True, calls=2)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("op", [BAD_JSON_TYPED, BAD_JSON_UNTYPED], ids=["typed", "untyped"])
def test_truncated_json_is_a_validation_error(base_url: str, op: Operation[Any]) -> None:
    with FaultClient(base_url) as client:
        exc = _raised(lambda: client._call(op))

    _assert_connector_error(exc, errors.ResponseValidationError)
    assert isinstance(exc, errors.ResponseValidationError)
    assert exc.body == '{"id": 1, "na'


@pytest.mark.timeout(20)
@pytest.mark.parametrize("op", [BAD_JSON_TYPED, BAD_JSON_UNTYPED], ids=["typed", "untyped"])
def test_truncated_json_message_says_not_valid_json(base_url: str, op: Operation[Any]) -> None:
    # A body that is not JSON at all must not be described as a model mismatch.
    with FaultClient(base_url) as client:
        exc = _raised(lambda: client._call(op))

    assert isinstance(exc, errors.ResponseValidationError)
    assert "not valid JSON" in str(exc)
    assert "does not match the declared model" not in str(exc)


@pytest.mark.timeout(20)
def test_wrong_shape_is_a_validation_error(base_url: str) -> None:
    with FaultClient(base_url) as client:
        exc = _raised(lambda: client._call(WRONG_SHAPE))

    _assert_connector_error(exc, errors.ResponseValidationError)
    assert isinstance(exc, errors.ResponseValidationError)
    assert "does not match the declared model" in str(exc)
    assert "ok" in str(exc) and "calls" in str(exc)
    assert exc.body == '{"unexpected":true}'


@pytest.mark.timeout(20)
def test_wrong_shape_from_a_generated_client(base_url: str) -> None:
    # The GitHub repository model against a body that is not a repository.
    from connectors.github.models import Repository

    op: Operation[Any] = Operation(
        "get_repository", "GET", "/faults/wrong_shape", response=Decoder(Repository)
    )
    with _github(base_url) as gh:
        exc = _raised(lambda: gh._call(op))

    _assert_connector_error(exc, errors.ResponseValidationError)
    assert str(exc).startswith("github.get_repository: response does not match")


@pytest.mark.timeout(20)
def test_sse_cut_mid_event_is_a_stream_error_after_two_chunks(base_url: str) -> None:
    received: list[Chunk] = []

    def consume() -> None:
        with FaultClient(base_url) as client, client._stream(SSE_CUT) as stream:
            for chunk in stream:
                received.append(chunk)

    exc = _raised(consume)

    _assert_connector_error(exc, errors.StreamError)
    assert "middle of an event" in str(exc)
    assert [c.choices[0]["delta"]["content"] for c in received] == ["Hello ", "world"]


class Token(BaseModel):
    i: int
    text: str


class Strict(BaseModel):
    required_field: int


NDJSON_TOKENS: Operation[Token] = Operation(
    "ndjson", "GET", "/faults/ndjson", stream=StreamFormat("ndjson", Decoder(Token))
)
SSE_STRICT: Operation[Strict] = Operation(
    "sse_cut",
    "GET",
    "/faults/sse_cut",
    stream=StreamFormat("sse", Decoder(Strict), done="[DONE]"),
)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("mode", "op", "good"),
    [("sync", NDJSON_TOKENS, 3), ("sync", SSE_STRICT, 0), ("async", NDJSON_TOKENS, 3)],
    ids=["sync-ndjson", "sync-sse", "async-ndjson"],
)
def test_stream_chunk_of_wrong_shape_is_a_validation_error(
    base_url: str, mode: str, op: Operation[Any], good: int
) -> None:
    # NDJSON: 3 token lines match the model, then the final {"done": true, ...} line does not.
    # SSE: the very first event lacks the required field.
    received: list[Any] = []

    def consume_sync() -> None:
        with FaultClient(base_url) as client, client._stream(op, query={"n": 3}) as stream:
            for chunk in stream:
                received.append(chunk)

    async def consume_async() -> None:
        async with AsyncFaultClient(base_url) as client:
            async with await client._stream(op, query={"n": 3}) as stream:
                async for chunk in stream:
                    received.append(chunk)

    exc = _raised(consume_sync if mode == "sync" else lambda: asyncio.run(consume_async()))

    _assert_connector_error(exc, errors.ResponseValidationError)
    assert "does not match the declared model" in str(exc)
    assert len(received) == good


@pytest.mark.timeout(20)
def test_mid_stream_read_timeout_is_a_stream_error(base_url: str) -> None:
    # The server sends the first event at once, then pauses 1 s between events.
    chat: Operation[Any] = Operation(
        "chat",
        "POST",
        "/v1/chat/completions",
        stream=StreamFormat("sse", Decoder(), done="[DONE]"),
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "a b"}], "stream": True}
    received: list[Any] = []

    def consume() -> None:
        with FaultClient(base_url, timeout=0.3) as client:
            with client._stream(chat, query={"delay": 1}, body=body) as stream:
                for chunk in stream:
                    received.append(chunk)

    started = time.monotonic()
    exc = _raised(consume)
    elapsed = time.monotonic() - started

    _assert_connector_error(exc, errors.StreamError)
    assert "the stream broke" in str(exc)
    assert len(received) == 1
    assert received[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert elapsed < 1.0


@pytest.mark.timeout(20)
def test_streamed_request_is_retried_on_503(base_url: str) -> None:
    key = _key()
    op: Operation[Any] = Operation(
        "status", "GET", "/faults/status", stream=StreamFormat("ndjson", Decoder())
    )
    with FaultClient(base_url, retry=_fast(attempts=3)) as client:
        with client._stream(op, query={"key": key, "fail": 2}) as stream:
            lines = list(stream)

    assert lines == [{"ok": True, "calls": 3}]
    assert _calls(base_url, key) == 3


@pytest.mark.timeout(20)
def test_openai_stream_error_status_is_typed(base_url: str) -> None:
    async def async_error() -> None:
        async with AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1", retry=FAST) as ai:
            await ai.stream_chat_completion(model="m", messages=[])

    with _openai(base_url) as ai:
        exc = _raised(lambda: ai.stream_chat_completion(model="m", messages=[]))
    _assert_connector_error(exc, errors.BadRequestError)
    assert "'messages' must be a non-empty array." in str(exc)

    exc = _raised(lambda: asyncio.run(async_error()))
    _assert_connector_error(exc, errors.BadRequestError)
    assert "'messages' must be a non-empty array." in str(exc)


@pytest.mark.timeout(20)
def test_ndjson_stream_is_parsed(base_url: str) -> None:
    with FaultClient(base_url) as client:
        stream = client._stream(NDJSON, query={"n": 5})
        with stream:
            lines = list(stream)

    assert lines[:5] == [{"i": i, "text": f"token {i}"} for i in range(5)]
    assert lines[5] == {
        "done": True,
        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
    }
    assert len(lines) == 6


@pytest.mark.timeout(20)
def test_large_ndjson_stream_is_parsed(base_url: str) -> None:
    with FaultClient(base_url) as client, client._stream(NDJSON, query={"n": 1000}) as stream:
        lines = list(stream)

    assert len(lines) == 1001
    assert [line["i"] for line in lines[:-1]] == list(range(1000))
    assert lines[-1]["done"] is True


@pytest.mark.timeout(20)
def test_connection_refused_is_connection_failed_error() -> None:
    port = _closed_port()
    with FaultClient(f"http://127.0.0.1:{port}", retry=_fast(attempts=2)) as client:
        started = time.monotonic()
        exc = _raised(lambda: client._call(STATUS))
        elapsed = time.monotonic() - started

    _assert_connector_error(exc, errors.ConnectionFailedError)
    assert "after 2 attempts" in str(exc)
    assert elapsed < 3.0


@pytest.mark.timeout(20)
def test_connection_refused_from_generated_clients() -> None:
    port = _closed_port()
    gh = GitHub(token=TOKEN, base_url=f"http://127.0.0.1:{port}", retry=_fast(attempts=1))
    with gh:
        exc = _raised(lambda: gh.get_repository(owner="o", repo="r"))
    _assert_connector_error(exc, errors.ConnectionFailedError)
    assert TOKEN not in str(exc)

    ai = OpenAI(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1", retry=_fast(attempts=1))
    with ai:
        exc = _raised(lambda: ai.stream_chat_completion(model="m", messages=MESSAGES))
    _assert_connector_error(exc, errors.ConnectionFailedError)


# Every fault, sync: (name, client options, call, expected error).
_SYNC_FAULTS: list[tuple[str, dict[str, Any], Callable[[FaultClient], Any], type]] = [
    (
        "5xx",
        {},
        lambda c: c._call(STATUS, query={"key": _key(), "fail": 100}),
        errors.ServerError,
    ),
    (
        "429-too-long",
        {},
        lambda c: c._call(RETRY_AFTER, query={"key": _key(), "fail": 9, "value": 600}),
        errors.RateLimitedError,
    ),
    (
        "timeout",
        {"timeout": 0.2, "retry": _fast(attempts=1)},
        lambda c: c._call(SLOW, query={"key": _key(), "delay": 2}),
        errors.TimeoutError,
    ),
    ("bad-json", {}, lambda c: c._call(BAD_JSON_TYPED), errors.ResponseValidationError),
    ("wrong-shape", {}, lambda c: c._call(WRONG_SHAPE), errors.ResponseValidationError),
    ("sse-cut", {}, lambda c: list(c._stream(SSE_CUT)), errors.StreamError),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("options", "call", "expected"),
    [case[1:] for case in _SYNC_FAULTS],
    ids=[case[0] for case in _SYNC_FAULTS],
)
def test_no_raw_httpx_error_escapes_sync(
    base_url: str, options: dict[str, Any], call: Callable[[FaultClient], Any], expected: type
) -> None:
    with FaultClient(base_url, **options) as client:
        exc = _raised(lambda: call(client))
    _assert_connector_error(exc, expected)


@pytest.mark.timeout(20)
def test_no_raw_httpx_error_escapes_async(base_url: str) -> None:
    async def scenario() -> dict[str, BaseException]:
        out: dict[str, BaseException] = {}

        async def capture(name: str, coro: Any) -> None:
            try:
                await coro
            except BaseException as exc:  # noqa: BLE001
                out[name] = exc

        async def consume(stream_coro: Any) -> list[Any]:
            async with await stream_coro as stream:
                return [chunk async for chunk in stream]

        async with AsyncFaultClient(base_url) as client:
            await capture("5xx", client._call(STATUS, query={"key": _key(), "fail": 100}))
            await capture("bad-json", client._call(BAD_JSON_TYPED))
            await capture("wrong-shape", client._call(WRONG_SHAPE))
            await capture("sse-cut", consume(client._stream(SSE_CUT)))
        async with AsyncFaultClient(base_url, timeout=0.2, retry=_fast(attempts=2)) as slow:
            await capture("timeout", slow._call(SLOW, query={"key": _key(), "delay": 2}))
        refused = AsyncFaultClient(f"http://127.0.0.1:{_closed_port()}", retry=_fast(attempts=2))
        async with refused:
            await capture("refused", refused._call(STATUS))
        return out

    raised = asyncio.run(scenario())

    expected = {
        "5xx": errors.ServerError,
        "bad-json": errors.ResponseValidationError,
        "wrong-shape": errors.ResponseValidationError,
        "sse-cut": errors.StreamError,
        "timeout": errors.TimeoutError,
        "refused": errors.ConnectionFailedError,
    }
    assert set(raised) == set(expected)
    for name, cls in expected.items():
        _assert_connector_error(raised[name], cls)


# --------------------------------------------------------------------------- #
# Async under concurrency
# --------------------------------------------------------------------------- #


@pytest.mark.timeout(25)
def test_async_openai_50_concurrent_chat_completions(base_url: str) -> None:
    async def scenario() -> list[Any]:
        async with AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1", retry=FAST) as ai:
            return await asyncio.gather(
                *(
                    ai.create_chat_completion(
                        model="gpt-fake-mini",
                        messages=[{"role": "user", "content": f"question number {i}"}],
                    )
                    for i in range(50)
                )
            )

    results = asyncio.run(scenario())

    assert len(results) == 50
    for i, completion in enumerate(results):
        assert completion.choices[0].message.content == f"echo: question number {i}"
        assert completion.usage.prompt_tokens == 3
        assert completion.usage.completion_tokens == 4
    assert len({completion.id for completion in results}) == 50


@pytest.mark.timeout(20)
def test_async_openai_stream(base_url: str) -> None:
    async def scenario() -> tuple[list[Any], Any]:
        async with AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1", retry=FAST) as ai:
            expected = await ai.create_chat_completion(model="m", messages=MESSAGES)
            async with await ai.stream_chat_completion(
                model="m", messages=MESSAGES, stream_options={"include_usage": True}
            ) as stream:
                chunks = [chunk async for chunk in stream]
            return chunks, expected

    chunks, expected = asyncio.run(scenario())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == expected.usage.total_tokens


@pytest.mark.timeout(20)
def test_async_github_paginates_five_repos_concurrently(base_url: str) -> None:
    repos = [f"repo{i}" for i in range(5)]

    async def collect(gh: AsyncGitHub, repo: str) -> list[Any]:
        return [issue async for issue in gh.list_issues(owner="octo", repo=repo, per_page=10)]

    async def pages(gh: AsyncGitHub, repo: str) -> list[int]:
        return [
            len(page) async for page in gh.list_issues(owner="octo", repo=repo, per_page=10).pages()
        ]

    async def scenario() -> tuple[list[list[Any]], list[int]]:
        async with AsyncGitHub(token=TOKEN, base_url=base_url, retry=FAST) as gh:
            results = await asyncio.gather(*(collect(gh, repo) for repo in repos))
            sizes = await pages(gh, "extra")
        return results, sizes

    results, sizes = asyncio.run(scenario())

    assert sizes == [10, 10, 3]
    for repo, issues in zip(repos, results, strict=True):
        assert [issue.number for issue in issues] == list(range(1, 24))
        assert all(issue.title.endswith(f"in octo/{repo}") for issue in issues)
    assert _github_requests_since_reset(base_url) == 5 * 3 + 3


@pytest.mark.timeout(20)
def test_async_github_roles(base_url: str) -> None:
    async def scenario() -> tuple[list[int], int, Any]:
        async with AsyncGitHub(token=TOKEN, base_url=base_url, retry=FAST) as gh:
            sizes = [
                len(batch) async for batch in gh.read_batch(10, owner="octo", repo="a", per_page=10)
            ]
            written = await gh.write([{"owner": "octo", "repo": "a", "title": "t"}])
            return sizes, written, gh.metrics

    sizes, written, metrics = asyncio.run(scenario())

    assert sizes == [10, 10, 3]
    assert written == 1
    assert metrics.records_read == 23
    assert metrics.records_written == 1
    assert metrics.batches == 4


# --------------------------------------------------------------------------- #
# Circuit breaker against the real server
# --------------------------------------------------------------------------- #


@pytest.mark.timeout(20)
def test_circuit_breaker_opens_fails_fast_and_recovers(base_url: str) -> None:
    service = Service(
        name="breaker",
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy(attempts=1),
        circuit_breaker=(3, 0.5),
    )
    failing = {"key": _key(), "code": 503, "fail": 100}
    healthy_key = _key()

    with FaultClient(base_url, service=service) as client:
        breaker = client.circuit_breaker
        assert isinstance(breaker, CircuitBreaker)
        assert breaker.state == CircuitBreaker.CLOSED

        for n in range(1, 4):
            exc = _raised(lambda: client._call(STATUS, query=failing))
            _assert_connector_error(exc, errors.ServerError)
            assert _calls(base_url, failing["key"]) == n
        assert breaker.state == CircuitBreaker.OPEN

        # Open: fails fast without contacting the server.
        started = time.monotonic()
        exc = _raised(lambda: client._call(STATUS, query=failing))
        assert time.monotonic() - started < 0.1
        _assert_connector_error(exc, errors.CircuitOpenError)
        assert isinstance(exc, errors.CircuitOpenError)
        assert 0 < exc.retry_in <= 0.5
        assert _calls(base_url, failing["key"]) == 3
        # ... for every request of the client, not just the failing one
        exc = _raised(lambda: client._call(STATUS, query={"key": healthy_key, "fail": 0}))
        _assert_connector_error(exc, errors.CircuitOpenError)
        assert _calls(base_url, healthy_key) == 0

        time.sleep(0.55)
        assert breaker.state == CircuitBreaker.HALF_OPEN

        # Half-open: one trial call goes through; success closes the circuit.
        result = client._call(STATUS, query={"key": healthy_key, "fail": 0})
        assert result == Ok(ok=True, calls=1)
        assert breaker.state == CircuitBreaker.CLOSED
        assert client._call(STATUS, query={"key": healthy_key, "fail": 0}).calls == 2


@pytest.mark.timeout(20)
def test_circuit_breaker_failed_trial_reopens(base_url: str) -> None:
    service = Service(
        name="breaker",
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy(attempts=1),
        circuit_breaker=(2, 0.3),
    )
    failing = {"key": _key(), "code": 503, "fail": 100}
    with FaultClient(base_url, service=service) as client:
        for _ in range(2):
            _assert_connector_error(
                _raised(lambda: client._call(STATUS, query=failing)), errors.ServerError
            )
        time.sleep(0.35)
        assert client.circuit_breaker is not None
        assert client.circuit_breaker.state == CircuitBreaker.HALF_OPEN
        # the trial fails: open again at once
        _assert_connector_error(
            _raised(lambda: client._call(STATUS, query=failing)), errors.ServerError
        )
        assert client.circuit_breaker.state == CircuitBreaker.OPEN
        _assert_connector_error(
            _raised(lambda: client._call(STATUS, query=failing)), errors.CircuitOpenError
        )
    assert _calls(base_url, failing["key"]) == 3


@pytest.mark.timeout(20)
def test_circuit_breaker_recovers_after_a_cancelled_trial_call(base_url: str) -> None:
    # A half-open trial call that is cancelled (asyncio.wait_for timing out) must not leave
    # the circuit open for good: once reset_timeout has passed again, calls go through.
    service = Service(
        name="breaker",
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy(attempts=1),
        circuit_breaker=(1, 0.2),
    )
    healthy_key = _key()

    async def scenario() -> tuple[str, Any]:
        async with AsyncFaultClient(base_url, service=service) as client:
            try:
                await client._call(STATUS, query={"key": _key(), "fail": 100})
            except errors.ServerError:
                pass
            await asyncio.sleep(0.25)
            assert client.circuit_breaker is not None
            state = client.circuit_breaker.state
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    client._call(SLOW, query={"key": _key(), "delay": 2}), timeout=0.2
                )
            await asyncio.sleep(0.3)
            try:
                return state, await client._call(STATUS, query={"key": healthy_key, "fail": 0})
            except errors.ConnectorError as exc:
                return state, exc

    state, outcome = asyncio.run(scenario())

    assert state == CircuitBreaker.HALF_OPEN
    assert outcome == Ok(ok=True, calls=1), f"circuit stuck open: {outcome!r}"
    assert _calls(base_url, healthy_key) == 1
