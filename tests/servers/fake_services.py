"""A small, real HTTP server that speaks OpenAI-style and GitHub-style wire formats.

Used by end-to-end tests and benchmarks (started in a separate process by
``tests.servers.runner.run_server``). Besides the two "services" it exposes a
set of deliberate faults under ``/faults/...`` and an ``/v1/echo`` route that
reflects the request back, so tests can assert exactly what a client sent.

Handlers are kept deliberately cheap: benchmarks measure *client* CPU, but a
slow server would still inflate wall-clock numbers.

All mutable state lives in the module-level ``STATE`` dict and is cleared by
``POST /_reset``. Starlette runs every handler on a single event loop, and no
handler awaits between reading and writing a counter, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# --------------------------------------------------------------------------- #
# State
# --------------------------------------------------------------------------- #

STATE: dict[str, Any] = {}


def _reset_state() -> None:
    """Put ``STATE`` back to its pristine shape."""
    STATE.clear()
    STATE.update(
        {
            # fault-call counters, keyed by the ``key`` query parameter
            "calls": {},
            # monotonically increasing id source for created objects
            "next_id": 1,
            # GitHub-style rate-limit bookkeeping
            "rate_remaining": 5000,
            "rate_reset": int(time.time()) + 3600,
            # issues created via POST /repos/{owner}/{repo}/issues, per "owner/repo"
            "created_issues": {},
        }
    )


_reset_state()


def _next_id() -> int:
    value: int = STATE["next_id"]
    STATE["next_id"] = value + 1
    return value


def _bump(key: str) -> int:
    """Increment and return the call counter for ``key``."""
    calls: dict[str, int] = STATE["calls"]
    n = calls.get(key, 0) + 1
    calls[key] = n
    return n


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #

_JSON_SEPARATORS = (",", ":")


def _dumps(obj: Any) -> str:
    """Compact JSON, as real APIs tend to send it."""
    return json.dumps(obj, separators=_JSON_SEPARATORS)


def _int_param(
    request: Request, name: str, default: int, lo: int | None = None, hi: int | None = None
) -> int:
    """Read an integer query parameter, falling back to ``default`` on garbage."""
    raw = request.query_params.get(name)
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    return value


def _float_param(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        return default


async def _json_body(request: Request) -> Any:
    """Parse the body as JSON; ``None`` when it is empty or not JSON."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _openai_error(message: str, status: int = 400, param: str | None = None) -> JSONResponse:
    """An error body shaped like OpenAI's."""
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        },
        status_code=status,
    )


# --------------------------------------------------------------------------- #
# OpenAI-style routes
# --------------------------------------------------------------------------- #

MODELS = [
    {"id": "gpt-fake-mini", "object": "model", "created": 1700000000, "owned_by": "fake"},
    {"id": "gpt-fake-large", "object": "model", "created": 1700000100, "owned_by": "fake"},
    {"id": "text-embedding-fake", "object": "model", "created": 1700000200, "owned_by": "fake"},
]


def _text_of(content: Any) -> str:
    """Flatten an OpenAI message ``content`` (string or list of parts) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(str(p) for p in parts)
    return "" if content is None else str(content)


def _count_tokens(text: str) -> int:
    """A crude but deterministic "tokenizer": one token per whitespace word."""
    return len(text.split())


def _content_pieces(prompt: str, chunks: int | None) -> list[str]:
    """Split the reply ``"echo: " + prompt`` into streaming pieces.

    Each piece is one word followed by a space, except the last one. With
    ``chunks`` set, the words are cycled until exactly that many pieces exist
    (used by throughput tests). Joining the pieces always gives the full
    non-streamed content, so stream and non-stream answers agree.
    """
    words = ("echo: " + prompt).split() or ["echo:"]
    if chunks is not None:
        words = [words[i % len(words)] for i in range(max(chunks, 1))]
    pieces = [w + " " for w in words]
    pieces[-1] = words[-1]
    return pieces


def _requested_chunks(request: Request) -> int | None:
    """``x-chunks`` header, or ``x-chunks`` / ``chunks`` query parameter."""
    raw = (
        request.headers.get("x-chunks")
        or request.query_params.get("x-chunks")
        or request.query_params.get("chunks")
    )
    if raw is None:
        return None
    try:
        return max(int(raw), 1)
    except ValueError:
        return None


async def chat_completions(request: Request) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _openai_error("Request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _openai_error("'messages' must be a non-empty array.", param="messages")
    model = str(body.get("model") or MODELS[0]["id"])

    last = messages[-1] if isinstance(messages[-1], dict) else {}
    pieces = _content_pieces(_text_of(last.get("content")), _requested_chunks(request))
    content = "".join(pieces)
    prompt_tokens = sum(
        _count_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
    )
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }
    completion_id = f"chatcmpl-fake{_next_id()}"
    created = int(time.time())

    if not body.get("stream"):
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    # Optional pacing between events (for time-to-first-token style tests).
    delay = _float_param(request, "delay", 0.0)

    def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> str:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            # Like OpenAI: with include_usage every chunk carries "usage",
            # null everywhere except the final usage-only chunk.
            chunk["usage"] = None
        if extra:
            chunk.update(extra)
        return "data: " + _dumps(chunk) + "\n\n"

    def events() -> Iterator[str]:
        yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        for piece in pieces:
            yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            yield event([], {"usage": usage})
        yield "data: [DONE]\n\n"

    async def paced() -> AsyncIterator[str]:
        # One write per event, with an optional sleep in between.
        for ev in events():
            yield ev
            if delay > 0:
                await asyncio.sleep(delay)

    async def batched() -> AsyncIterator[str]:
        # Without pacing, coalesce events into ~32-event writes: the client
        # still has to parse every event, but the server spends far less time
        # on per-write overhead during throughput benchmarks.
        batch: list[str] = []
        for ev in events():
            batch.append(ev)
            if len(batch) >= 32:
                yield "".join(batch)
                batch.clear()
        if batch:
            yield "".join(batch)

    return StreamingResponse(
        paced() if delay > 0 else batched(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


def _fake_embedding(text: str) -> list[float]:
    """8 deterministic floats in [-1, 1] derived from a SHA-256 of the text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [
        round(int.from_bytes(digest[i : i + 4], "big") / 0xFFFFFFFF * 2.0 - 1.0, 6)
        for i in range(0, 32, 4)
    ]


async def embeddings(request: Request) -> Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _openai_error("Request body must be a JSON object.")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        inputs = [raw_input]
    elif isinstance(raw_input, list) and all(isinstance(x, str) for x in raw_input):
        inputs = list(raw_input)
    else:
        return _openai_error("'input' must be a string or an array of strings.", param="input")
    tokens = sum(_count_tokens(t) for t in inputs)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _fake_embedding(text)}
                for i, text in enumerate(inputs)
            ],
            "model": str(body.get("model") or "text-embedding-fake"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": MODELS})


# --------------------------------------------------------------------------- #
# GitHub-style routes
# --------------------------------------------------------------------------- #

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_LABELS = [
    {"id": 101, "name": "bug", "color": "d73a4a"},
    {"id": 102, "name": "enhancement", "color": "a2eeef"},
    {"id": 103, "name": "question", "color": "d876e3"},
]


def _rate_headers() -> dict[str, str]:
    """Consume one unit of the (fake) rate limit and describe it in headers."""
    remaining = max(int(STATE["rate_remaining"]) - 1, 0)
    STATE["rate_remaining"] = remaining
    return {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(STATE["rate_reset"]),
    }


def _gh_json(
    request: Request, data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """JSON response carrying the GitHub rate-limit headers."""
    all_headers = _rate_headers()
    if headers:
        all_headers.update(headers)
    return JSONResponse(data, status_code=status, headers=all_headers)


def _user(login: str, user_id: int) -> dict[str, Any]:
    return {"login": login, "id": user_id}


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _issue_state(number: int, requested: str) -> str:
    """State of generated issue ``number`` given the ``state`` filter.

    With ``state=open`` (GitHub's default) or ``state=closed`` every generated
    issue matches, so the total is always the same; with ``state=all`` every
    third issue is closed.
    """
    if requested in ("open", "closed"):
        return requested
    return "closed" if number % 3 == 0 else "open"


def _issue(
    request: Request, owner: str, repo: str, number: int, state: str, title: str | None = None
) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "id": 1_000_000 + number,
        "number": number,
        "title": title or f"Issue {number} in {owner}/{repo}",
        "state": state,
        "user": _user(f"user{number % 5}", 500 + number % 5),
        "labels": [_LABELS[number % len(_LABELS)]],
        "body": f"Body of issue {number}.",
        "created_at": _iso(_EPOCH + timedelta(hours=number)),
        "html_url": f"{base}/{owner}/{repo}/issues/{number}",
    }


def _pull(request: Request, owner: str, repo: str, number: int, state: str) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    sha = hashlib.sha1(f"{owner}/{repo}#{number}".encode()).hexdigest()
    return {
        "id": 2_000_000 + number,
        "number": number,
        "title": f"Pull request {number} in {owner}/{repo}",
        "state": state,
        "user": _user(f"user{number % 5}", 500 + number % 5),
        "head": {"ref": f"feature-{number}", "sha": sha},
        "base": {"ref": "main", "sha": "0" * 40},
        "draft": number % 4 == 0,
        "html_url": f"{base}/{owner}/{repo}/pull/{number}",
    }


def _paginate(request: Request, total: int) -> tuple[range, dict[str, str]]:
    """Work out which item numbers (1-based) belong on this page.

    Returns the range of item numbers and a ``Link`` header dict (empty when
    everything fits on one page, as GitHub does). Link URLs are absolute,
    built from the request URL so every other query parameter is kept.
    """
    per_page = _int_param(request, "per_page", 30, lo=1, hi=100)
    page = _int_param(request, "page", 1, lo=1)
    last_page = max((total + per_page - 1) // per_page, 1)
    start = (page - 1) * per_page + 1
    numbers = range(start, min(start + per_page, total + 1))

    links: list[str] = []

    def link(p: int, rel: str) -> None:
        url = request.url.include_query_params(page=p, per_page=per_page)
        links.append(f'<{url}>; rel="{rel}"')

    if page > 1:
        link(page - 1, "prev")
    if page < last_page:
        link(page + 1, "next")
        link(last_page, "last")
    if page > 1:
        link(1, "first")
    return numbers, ({"Link": ", ".join(links)} if links else {})


async def get_repo(request: Request) -> Response:
    owner = request.path_params["owner"]
    repo = request.path_params["repo"]
    base = str(request.base_url).rstrip("/")
    return _gh_json(
        request,
        {
            "id": int.from_bytes(hashlib.sha1(f"{owner}/{repo}".encode()).digest()[:3], "big"),
            "name": repo,
            "full_name": f"{owner}/{repo}",
            "private": False,
            "owner": _user(owner, 42),
            "html_url": f"{base}/{owner}/{repo}",
            "description": f"Fake repository {owner}/{repo}",
            "stargazers_count": 1234,
            "default_branch": "main",
        },
    )


async def list_issues(request: Request) -> Response:
    owner = request.path_params["owner"]
    repo = request.path_params["repo"]
    state = request.query_params.get("state", "open")
    total = _int_param(request, "total", 23, lo=0)
    numbers, link = _paginate(request, total)
    items = [_issue(request, owner, repo, n, _issue_state(n, state)) for n in numbers]
    return _gh_json(request, items, headers=link)


async def create_issue(request: Request) -> Response:
    owner = request.path_params["owner"]
    repo = request.path_params["repo"]
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"]:
        return _gh_json(
            request,
            {
                "message": "Validation Failed",
                "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
                "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
            },
            status=422,
        )
    created: dict[str, list[dict[str, Any]]] = STATE["created_issues"]
    repo_issues = created.setdefault(f"{owner}/{repo}", [])
    # Numbers continue after the default generated set so they never collide.
    number = 1000 + len(repo_issues) + 1
    issue = _issue(request, owner, repo, number, "open", title=body["title"])
    issue["body"] = body.get("body")
    labels = body.get("labels") or []
    issue["labels"] = [
        {"id": 900 + i, "name": str(name), "color": "ededed"} for i, name in enumerate(labels)
    ]
    issue["created_at"] = _iso(datetime.now(UTC))
    repo_issues.append(issue)
    return _gh_json(request, issue, status=201)


async def list_pulls(request: Request) -> Response:
    owner = request.path_params["owner"]
    repo = request.path_params["repo"]
    state = request.query_params.get("state", "open")
    total = _int_param(request, "total", 23, lo=0)
    numbers, link = _paginate(request, total)
    items = [_pull(request, owner, repo, n, _issue_state(n, state)) for n in numbers]
    return _gh_json(request, items, headers=link)


async def search_issues(request: Request) -> Response:
    q = request.query_params.get("q", "")
    total = _int_param(request, "total", 23, lo=0)
    numbers, link = _paginate(request, total)
    items = [
        _issue(request, "octo", "search", n, _issue_state(n, "all"), title=f"{q} result {n}")
        for n in numbers
    ]
    return _gh_json(
        request,
        {"total_count": total, "incomplete_results": False, "items": items},
        headers=link,
    )


async def rate_limited(request: Request) -> Response:
    reset = int(time.time()) + 60
    return JSONResponse(
        {
            "message": "API rate limit exceeded for 127.0.0.1.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        },
        status_code=403,
        headers={
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        },
    )


# --------------------------------------------------------------------------- #
# Faults
# --------------------------------------------------------------------------- #


def _fault_key(request: Request) -> str:
    return request.query_params.get("key", "default")


async def fault_retry_after(request: Request) -> Response:
    """429 with ``Retry-After`` for the first ``fail`` calls of ``key``."""
    n = _bump(_fault_key(request))
    if n <= _int_param(request, "fail", 1, lo=0):
        value = _float_param(request, "value", 0.0)
        if request.query_params.get("mode", "seconds") == "date":
            when = datetime.now(UTC) + timedelta(seconds=value)
            retry_after = format_datetime(when, usegmt=True)
        else:
            retry_after = str(int(value)) if value == int(value) else str(value)
        return JSONResponse(
            {"error": {"message": "Too many requests", "type": "rate_limit", "calls": n}},
            status_code=429,
            headers={"Retry-After": retry_after},
        )
    return JSONResponse({"ok": True, "calls": n})


async def fault_status(request: Request) -> Response:
    """Status ``code`` (default 503) for the first ``fail`` calls of ``key``."""
    n = _bump(_fault_key(request))
    if n <= _int_param(request, "fail", 1, lo=0):
        code = _int_param(request, "code", 503, lo=100, hi=599)
        return JSONResponse(
            {"error": {"message": f"Injected failure {n}", "status": code, "calls": n}},
            status_code=code,
        )
    return JSONResponse({"ok": True, "calls": n})


async def fault_slow(request: Request) -> Response:
    """Sleep ``delay`` seconds, then 200.

    If ``fail`` is given, only the first ``fail`` calls of ``key`` are slow
    (handy for "time out once, then succeed" retry tests).
    """
    n = _bump(_fault_key(request))
    fail = request.query_params.get("fail")
    if fail is None or n <= _int_param(request, "fail", 0, lo=0):
        await asyncio.sleep(_float_param(request, "delay", 1.0))
    return JSONResponse({"ok": True, "calls": n})


async def fault_calls(request: Request) -> Response:
    calls: dict[str, int] = STATE["calls"]
    return JSONResponse({"calls": calls.get(_fault_key(request), 0)})


async def fault_sse_cut(request: Request) -> Response:
    """Two complete chunk events, then a half-written event and EOF."""

    def chunk(i: int, text: str) -> str:
        payload = {
            "id": "chatcmpl-cut",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": MODELS[0]["id"],
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        return "data: " + _dumps(payload) + "\n\n"

    async def gen() -> AsyncIterator[str]:
        yield chunk(0, "Hello ")
        yield chunk(1, "world")
        # Mid-event: no closing brace, no blank line, no [DONE].
        yield 'data: {"id":"chatcmpl-cut","object":"chat.completion.chunk","choi'

    return StreamingResponse(gen(), media_type="text/event-stream")


async def fault_bad_json(request: Request) -> Response:
    return Response('{"id": 1, "na', media_type="application/json")


async def fault_wrong_shape(request: Request) -> Response:
    return JSONResponse({"unexpected": True})


async def fault_ndjson(request: Request) -> Response:
    """``n`` JSON lines, then a final ``{"done": true, "usage": ...}`` line."""
    n = _int_param(request, "n", 3, lo=0)

    async def gen() -> AsyncIterator[str]:
        batch: list[str] = []
        for i in range(n):
            batch.append(_dumps({"i": i, "text": f"token {i}"}) + "\n")
            if len(batch) >= 64:
                yield "".join(batch)
                batch.clear()
        batch.append(
            _dumps(
                {
                    "done": True,
                    "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
                }
            )
            + "\n"
        )
        yield "".join(batch)

    return StreamingResponse(gen(), media_type="application/x-ndjson")


# --------------------------------------------------------------------------- #
# Echo & admin
# --------------------------------------------------------------------------- #


async def echo(request: Request) -> Response:
    """Reflect the request: method, path, query (lists), headers, JSON body."""
    query: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        query.setdefault(k, []).append(v)
    headers: dict[str, str] = {}
    for k, v in request.headers.items():  # Starlette already lower-cases names
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    raw = await request.body()
    parsed: Any = None
    if raw:
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": query,
            "headers": headers,
            "json": parsed,
            # raw body text as well, for form-encoded or non-JSON payloads
            "body": raw.decode("utf-8", "replace") if raw else None,
        }
    )


async def reset(request: Request) -> Response:
    _reset_state()
    return JSONResponse({"ok": True})


routes = [
    # OpenAI-style
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    # GitHub-style
    Route("/repos/{owner}/{repo}", get_repo, methods=["GET"]),
    Route("/repos/{owner}/{repo}/issues", list_issues, methods=["GET"]),
    Route("/repos/{owner}/{repo}/issues", create_issue, methods=["POST"]),
    Route("/repos/{owner}/{repo}/pulls", list_pulls, methods=["GET"]),
    Route("/search/issues", search_issues, methods=["GET"]),
    Route("/rate_limited", rate_limited, methods=["GET"]),
    # Faults
    Route("/faults/retry_after", fault_retry_after, methods=["GET"]),
    Route("/faults/status", fault_status, methods=["GET"]),
    Route("/faults/slow", fault_slow, methods=["GET"]),
    Route("/faults/calls", fault_calls, methods=["GET"]),
    Route("/faults/sse_cut", fault_sse_cut, methods=["GET"]),
    Route("/faults/bad_json", fault_bad_json, methods=["GET"]),
    Route("/faults/wrong_shape", fault_wrong_shape, methods=["GET"]),
    Route("/faults/ndjson", fault_ndjson, methods=["GET"]),
    # Admin
    Route("/_reset", reset, methods=["POST"]),
]

app = Starlette(routes=routes)
