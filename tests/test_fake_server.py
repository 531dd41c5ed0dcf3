"""Smoke tests for the fake OpenAI/GitHub server used by e2e tests and benchmarks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.servers.runner import run_server


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server() as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    # trust_env=False: never route localhost traffic through a configured proxy.
    with httpx.Client(base_url=base_url, timeout=10.0, trust_env=False) as c:
        c.post("/_reset").raise_for_status()
        yield c


def _sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of a complete SSE body, in order."""
    out: list[str] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(line[len("data: ") :])
    return out


@pytest.mark.timeout(30)
def test_issue_pagination_follows_link_header(client: httpx.Client) -> None:
    url: str | None = "/repos/octo/hello/issues?state=all&per_page=10"
    pages: list[list[dict[str, Any]]] = []
    while url is not None:
        resp = client.get(url)
        assert resp.status_code == 200
        assert resp.headers["X-RateLimit-Limit"] == "5000"
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
        pages.append(resp.json())
        links = resp.links
        if "next" in links:
            next_url = links["next"]["url"]
            assert next_url.startswith(str(client.base_url).rstrip("/") + "/")
            assert "state=all" in next_url  # other query params survive
            assert "page=3" in links["last"]["url"]
            url = next_url
        else:
            url = None

    assert [len(p) for p in pages] == [10, 10, 3]
    numbers = [issue["number"] for page in pages for issue in page]
    assert numbers == list(range(1, 24))
    first = pages[0][0]
    expected_keys = {"id", "title", "state", "user", "labels", "body", "created_at", "html_url"}
    assert expected_keys <= set(first)
    datetime.fromisoformat(first["created_at"].replace("Z", "+00:00"))


@pytest.mark.timeout(30)
def test_retry_after_fault_counts_calls(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    for expected in (1, 2):
        resp = client.get("/faults/retry_after", params={"key": key, "fail": 2, "value": 3})
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "3"
        assert client.get("/faults/calls", params={"key": key}).json() == {"calls": expected}
    resp = client.get("/faults/retry_after", params={"key": key, "fail": 2})
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "calls": 3}

    # HTTP-date form of Retry-After.
    key2 = uuid.uuid4().hex
    resp = client.get(
        "/faults/retry_after", params={"key": key2, "fail": 1, "mode": "date", "value": 30}
    )
    assert resp.status_code == 429
    when = parsedate_to_datetime(resp.headers["Retry-After"])
    delta = (when - datetime.now(UTC)).total_seconds()
    assert 25 <= delta <= 31


@pytest.mark.timeout(30)
@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_ends_with_done(client: httpx.Client, include_usage: bool) -> None:
    body: dict[str, Any] = {
        "model": "gpt-fake-mini",
        "messages": [{"role": "user", "content": "hello big world"}],
        "stream": True,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    data = _sse_data(resp.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}

    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
        assert chunks[-1] is usage_chunks[0]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    else:
        assert usage_chunks == []
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    plain = client.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert text == plain["choices"][0]["message"]["content"] == "echo: hello big world"


@pytest.mark.timeout(30)
def test_chat_stream_chunk_count_header(client: httpx.Client) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    resp = client.post("/v1/chat/completions", json=body, headers={"x-chunks": "500"})
    data = _sse_data(resp.text)
    content_chunks = [d for d in data[:-1] if "content" in json.loads(d)["choices"][0]["delta"]]
    assert len(content_chunks) == 500
    assert data[-1] == "[DONE]"


@pytest.mark.timeout(30)
def test_echo_reflects_request(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/echo",
        params=[("api_key", "k1"), ("tag", "a"), ("tag", "b")],
        headers={"Authorization": "Bearer secret", "X-Custom": "Yes"},
        json={"hello": [1, 2]},
    )
    echoed = resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/v1/echo"
    assert echoed["query"] == {"api_key": ["k1"], "tag": ["a", "b"]}
    assert echoed["headers"]["authorization"] == "Bearer secret"
    assert echoed["headers"]["x-custom"] == "Yes"
    assert echoed["json"] == {"hello": [1, 2]}

    got = client.get("/v1/echo").json()
    assert got["method"] == "GET" and got["json"] is None and got["query"] == {}


@pytest.mark.timeout(30)
def test_misc_faults_and_shapes(client: httpx.Client) -> None:
    # status fault: fail once, then succeed
    key = uuid.uuid4().hex
    failed = client.get("/faults/status", params={"key": key, "fail": 1, "code": 502})
    assert failed.status_code == 502 and "error" in failed.json()
    assert client.get("/faults/status", params={"key": key, "fail": 1}).json()["calls"] == 2

    # truncated JSON / wrong shape
    bad = client.get("/faults/bad_json")
    assert bad.status_code == 200 and bad.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        bad.json()
    assert client.get("/faults/wrong_shape").json() == {"unexpected": True}

    # cut SSE stream: 2 complete events then a dangling partial one
    cut = client.get("/faults/sse_cut").text
    assert cut.count("\n\n") == 2 and not cut.endswith("\n\n") and "[DONE]" not in cut

    # ndjson
    lines = client.get("/faults/ndjson", params={"n": 4}).text.splitlines()
    assert [json.loads(x).get("i") for x in lines[:-1]] == [0, 1, 2, 3]
    assert json.loads(lines[-1])["done"] is True

    # embeddings are deterministic and 8-dimensional
    emb = client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b", "a"]}).json()
    vecs = [d["embedding"] for d in emb["data"]]
    assert len(vecs[0]) == 8 and vecs[0] == vecs[2] != vecs[1]

    # GitHub 403 rate-limit response
    rl = client.get("/rate_limited")
    assert rl.status_code == 403 and rl.headers["X-RateLimit-Remaining"] == "0"
    assert set(rl.json()) == {"message", "documentation_url"}

    # created issue
    created = client.post("/repos/o/r/issues", json={"title": "T", "labels": ["bug"]})
    assert created.status_code == 201 and created.json()["title"] == "T"

    # search + pulls pagination
    search = client.get("/search/issues", params={"q": "x", "per_page": 20, "page": 2}).json()
    assert search["total_count"] == 23 and len(search["items"]) == 3
    pulls = client.get("/repos/o/r/pulls", params={"per_page": 50})
    assert len(pulls.json()) == 23 and "Link" not in pulls.headers
