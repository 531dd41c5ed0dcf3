"""A local server that speaks the wire formats of the LLM providers our specs describe.

Each provider lives under its own prefix, so one server serves every connector (point the
connector's ``base_url`` setting at ``<server>/<prefix>``):

========================  ===============================================================
``/openai/v1``            chat completions (JSON; SSE chunks ending in ``data: [DONE]``,
                          usage in a last chunk only with ``stream_options.include_usage``),
                          embeddings, models; a bearer key is required
``/compatible/v1``        the same OpenAI format with the key optional (vLLM, llama.cpp, ...)
``/mistral/v1``           OpenAI-like chat (usage always in the last chunk), embeddings, models
``/anthropic``            ``/v1/messages`` (JSON; named SSE events in the documented order,
                          no ``[DONE]``), ``/v1/messages/count_tokens``, ``/v1/models``;
                          ``x-api-key`` and ``anthropic-version`` are required, as is
                          ``max_tokens``, and a ``system`` role in ``messages`` is rejected
``/cohere``               ``/v2/chat`` (JSON; named SSE events), ``/v2/embed`` (``input_type``
                          required, at most 96 texts), ``/v1/models``
``/ollama``               ``/api/chat`` (streams NDJSON unless ``stream: false``; the last
                          line has ``done: true`` and the token counts), ``/api/embed``,
                          ``/api/tags``, ``/api/version``
========================  ===============================================================

Answers are deterministic so tests can assert exact values: the reply is ``"echo: "`` and
the last user message's text; a "token" is a whitespace-separated word; input tokens are
the words of every message (and the system prompt), output tokens the words of the reply.
A max-tokens option cuts the reply to that many words (finish reason: length), a stop
sequence cuts it before the first word that contains it. Vectors are pseudo-random floats
seeded by the text (and, for Cohere, the input type), of the model's documented size.

Faults: ``/fail/<status>/<prefix>/...`` answers any request with that status and the
provider's error body (429, 503 and 529 with ``Retry-After: 0``);
``/midstream/anthropic/v1/messages`` starts a stream and then sends Anthropic's ``error``
event. ``GET /_requests`` lists the requests received (provider, path, headers, body, the
client's port), ``GET /_stats`` the number of hits per path, ``POST /_reset`` clears both.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATE: dict[str, Any] = {"requests": [], "hits": {}, "next_id": 1}
_MAX_RECORDED = 500
_CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed, so answers do not vary by run
_CREATED_AT = "2026-01-01T00:00:00Z"


def _reset_state() -> None:
    STATE["requests"] = []
    STATE["hits"] = {}
    STATE["next_id"] = 1


def _next_id() -> int:
    value: int = STATE["next_id"]
    STATE["next_id"] = value + 1
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _record(request: Request, provider: str) -> Any:
    """Note the request (for tests to inspect) and return its JSON body (None if none)."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = {"_invalid_json": raw.decode(errors="replace")}
    path = request.url.path
    hits: dict[str, int] = STATE["hits"]
    hits[path] = hits.get(path, 0) + 1
    recorded: list[dict[str, Any]] = STATE["requests"]
    recorded.append(
        {
            "provider": provider,
            "method": request.method,
            "path": path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body,
            # The client's port: one port, one connection (kept alive between requests).
            "client_port": request.client.port if request.client else None,
        }
    )
    del recorded[:-_MAX_RECORDED]
    return body


# -- the deterministic "model" ------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or parts with a ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _words(text: str) -> int:
    return len(text.split())


class Reply:
    """The answer to a conversation: its pieces (one word each), the input token count and
    why it ended (``end``, ``length`` or ``stop``)."""

    def __init__(
        self,
        messages: list[Any],
        *,
        system: str = "",
        max_tokens: int | None = None,
        stop: Iterable[str] = (),
        chunks: int | None = None,
    ) -> None:
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        users = [
            _text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        self.tokens_input = _words(system) + sum(_words(t) for t in texts)
        words = ("echo: " + (users[-1] if users else "")).split()
        if chunks is not None:  # a long answer, for throughput measurements
            words = [words[i % len(words)] for i in range(chunks)]
        self.reason = "end"
        self.stop_sequence: str | None = None
        for index, word in enumerate(words):
            found = next((s for s in stop if s and s in word), None)
            if found is not None:
                words, self.reason, self.stop_sequence = words[:index], "stop", found
                break
        if max_tokens is not None and len(words) > max_tokens:
            words, self.reason = words[: max(max_tokens, 0)], "length"
        self.pieces = [w + " " for w in words[:-1]] + words[-1:]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def tokens_output(self) -> int:
        return len(self.pieces)


def _stops(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isdigit() else default


def _chunks(request: Request) -> int | None:
    raw = request.headers.get("x-chunks")
    return max(int(raw), 1) if raw and raw.isdigit() else None


def _vector(text: str, size: int, salt: str = "") -> list[float]:
    """``size`` floats in [-1, 1], the same for the same text (and salt) on every run."""
    seed = int.from_bytes(hashlib.sha256(f"{salt}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(size)]


_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "mistral-embed": 1024,
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "BAAI/bge-base-en-v1.5": 768,
    "BAAI/bge-large-en-v1.5": 1024,
}


def _dimensions(model: str, asked: Any = None) -> int:
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return asked
    return _DIMENSIONS.get(model.split(":")[0], 768)


def _batched(events: Iterable[str], size: int = 32) -> AsyncIterator[str]:
    """Events joined into writes of ``size``: clients parse each event all the same, and
    the server spends less time per event in throughput runs."""

    async def gen() -> AsyncIterator[str]:
        batch: list[str] = []
        for event in events:
            batch.append(event)
            if len(batch) >= size:
                yield "".join(batch)
                batch.clear()
        if batch:
            yield "".join(batch)

    return gen()


def _sse(events: Iterable[str]) -> StreamingResponse:
    return StreamingResponse(
        _batched(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _named(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {_dumps(data)}\n\n"


# -- errors, in each provider's shape ----------------------------------------------------------

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _error(provider: str, status: int, message: str) -> JSONResponse:
    body: dict[str, Any]
    if provider == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        body = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{_next_id():06d}",
        }
    elif provider == "mistral":
        kind = "invalid_request_error" if status < 500 else "internal_server_error"
        body = {"object": "error", "message": message, "type": kind, "param": None, "code": None}
    elif provider == "cohere":
        body = {"id": f"err-{_next_id():06d}", "message": message}
    elif provider == "ollama":
        body = {"error": message}
    else:  # openai and compatible
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    headers = {"Retry-After": "0"} if status in (429, 503, 529) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def fail(request: Request) -> Response:
    """``/fail/<status>/<provider>/...``: the provider's error body with that status."""
    provider = request.path_params["provider"]
    await _record(request, provider)
    status = int(request.path_params["status"])
    if not 400 <= status <= 599:
        return JSONResponse({"error": "status must be 400-599"}, status_code=400)
    return _error(provider, status, f"injected failure {status}")


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


# -- OpenAI, OpenAI-compatible and Mistral -------------------------------------------------------


def _openai_like(provider: str) -> Callable[[Request], Any]:
    """The chat completions handler of one OpenAI-like flavour."""
    needs_key = provider in ("openai", "mistral")

    async def chat(request: Request) -> Response:
        body = await _record(request, provider)
        if needs_key and _bearer(request) is None:
            return _error(provider, 401, "Incorrect API key provided")
        if not isinstance(body, dict):
            return _error(provider, 400, "The body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
            return _error(provider, 400, "'model' and a non-empty 'messages' are required.")
        max_tokens = _int_or_none(
            body.get("max_completion_tokens") if provider == "openai" else None
        ) or _int_or_none(body.get("max_tokens"))
        reply = Reply(
            messages, max_tokens=max_tokens, stop=_stops(body.get("stop")), chunks=_chunks(request)
        )
        model = str(body["model"])
        finish = "length" if reply.reason == "length" else "stop"
        usage = {
            "prompt_tokens": reply.tokens_input,
            "completion_tokens": reply.tokens_output,
            "total_tokens": reply.tokens_input + reply.tokens_output,
        }
        completion_id = f"chatcmpl-{_next_id():06d}"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": _CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        options = body.get("stream_options")
        # Mistral always reports usage, in the chunk that ends the answer; OpenAI only when
        # asked, in a chunk of its own after it (every chunk then has "usage": null).
        include_usage = provider == "mistral" or (
            isinstance(options, dict) and bool(options.get("include_usage"))
        )

        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> str:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": _CREATED,
                "model": model,
                "choices": choices,
            }
            if include_usage and provider != "mistral":
                data["usage"] = usage_value
            elif usage_value is not None:
                data["usage"] = usage_value
            return f"data: {_dumps(data)}\n\n"

        def events() -> Iterable[str]:
            yield chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
            for piece in reply.pieces:
                yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            last = [{"index": 0, "delta": {}, "finish_reason": finish}]
            if provider == "mistral":
                yield chunk(last, usage)
            else:
                yield chunk(last)
                if include_usage:
                    yield chunk([], usage)
            yield "data: [DONE]\n\n"

        return _sse(events())

    return chat


def _openai_embeddings(provider: str) -> Callable[[Request], Any]:
    needs_key = provider in ("openai", "mistral")

    async def embeddings(request: Request) -> Response:
        body = await _record(request, provider)
        if needs_key and _bearer(request) is None:
            return _error(provider, 401, "Incorrect API key provided")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(provider, 400, "'model' is required.")
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(provider, 400, "'input' must be a string or a list of strings.")
        model = str(body["model"])
        size = _dimensions(model, body.get("output_dimension") or body.get("dimensions"))
        tokens = sum(_words(t) for t in texts)
        answer: dict[str, Any] = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(t, size)}
                for i, t in enumerate(texts)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if provider == "mistral":
            answer["id"] = f"emb-{_next_id():06d}"
            answer["usage"]["completion_tokens"] = 0
        return JSONResponse(answer)

    return embeddings


_OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
_MISTRAL_MODELS = ["mistral-small-latest", "mistral-large-latest", "mistral-embed"]
_COMPATIBLE_MODELS = ["meta-llama/Llama-3.3-70B-Instruct-Turbo", "BAAI/bge-base-en-v1.5"]


def _openai_models(provider: str, names: list[str]) -> Callable[[Request], Any]:
    async def models(request: Request) -> Response:
        await _record(request, provider)
        data = [
            {"id": name, "object": "model", "created": _CREATED, "owned_by": provider}
            for name in names
        ]
        wanted = request.path_params.get("model_id")
        if wanted is not None:
            found = next((m for m in data if m["id"] == wanted), None)
            if found is None:
                return _error(provider, 404, f"Model {wanted!r} not found")
            return JSONResponse(found)
        return JSONResponse({"object": "list", "data": data})

    return models


# -- Anthropic -----------------------------------------------------------------------------------


def _anthropic_system(value: Any) -> str | None:
    """The system prompt's text; None when it is neither a string nor text blocks."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(b, dict) and b.get("type") == "text" for b in value
    ):
        return " ".join(str(b.get("text", "")) for b in value)
    return None


_ANTHROPIC_STOP = {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence"}


async def _anthropic_request(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    body = await _record(request, "anthropic")
    if not request.headers.get("x-api-key"):
        return None, _error("anthropic", 401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return None, _error("anthropic", 400, "anthropic-version: header is required")
    if request.method == "GET":
        return {}, None
    if not isinstance(body, dict):
        return None, _error("anthropic", 400, "The body must be a JSON object.")
    return body, None


def _anthropic_messages_error(body: dict[str, Any], *, needs_max_tokens: bool) -> str | None:
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if needs_max_tokens and _int_or_none(body.get("max_tokens")) is None:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return (
                f'messages.{index}.role: Unexpected role "{role}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
    if _anthropic_system(body.get("system")) is None:
        return "system: Input should be a valid string or a list of text blocks"
    return None


async def anthropic_messages(request: Request) -> Response:
    body, failed = await _anthropic_request(request)
    if failed is not None:
        return failed
    assert body is not None
    problem = _anthropic_messages_error(body, needs_max_tokens=True)
    if problem is not None:
        return _error("anthropic", 400, problem)
    reply = Reply(
        body["messages"],
        system=_anthropic_system(body.get("system")) or "",
        max_tokens=body["max_tokens"],
        stop=_stops(body.get("stop_sequences")),
        chunks=_chunks(request),
    )
    model = str(body["model"])
    message_id = f"msg_{_next_id():06d}"
    stop_reason = _ANTHROPIC_STOP[reply.reason]
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": reply.text}],
                "model": model,
                "stop_reason": stop_reason,
                "stop_sequence": reply.stop_sequence,
                "usage": {
                    "input_tokens": reply.tokens_input,
                    "output_tokens": reply.tokens_output,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        )
    return _sse(_anthropic_events(message_id, model, reply, stop_reason, fail_after=None))


def _anthropic_events(
    message_id: str, model: str, reply: Reply, stop_reason: str, fail_after: int | None
) -> Iterable[str]:
    """The documented order: message_start, content_block_start, ping, deltas,
    content_block_stop, message_delta, message_stop; with ``fail_after``, an ``error``
    event after that many deltas instead of the rest."""
    yield _named(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": reply.tokens_input, "output_tokens": 1},
            },
        },
    )
    yield _named(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield _named("ping", {"type": "ping"})
    for count, piece in enumerate(reply.pieces):
        if fail_after is not None and count == fail_after:
            yield _named(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            return
        yield _named(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
        )
    yield _named("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _named(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": reply.tokens_output},
        },
    )
    yield _named("message_stop", {"type": "message_stop"})


async def anthropic_midstream_error(request: Request) -> Response:
    body, failed = await _anthropic_request(request)
    if failed is not None:
        return failed
    assert body is not None
    reply = Reply(body.get("messages") or [], max_tokens=_int_or_none(body.get("max_tokens")))
    events = _anthropic_events(
        f"msg_{_next_id():06d}", str(body.get("model")), reply, "end_turn", 1
    )
    return _sse(events)


async def anthropic_count_tokens(request: Request) -> Response:
    body, failed = await _anthropic_request(request)
    if failed is not None:
        return failed
    assert body is not None
    problem = _anthropic_messages_error(body, needs_max_tokens=False)
    if problem is not None:
        return _error("anthropic", 400, problem)
    reply = Reply(body["messages"], system=_anthropic_system(body.get("system")) or "")
    return JSONResponse({"input_tokens": reply.tokens_input})


_ANTHROPIC_MODELS = [
    {"id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5"},
    {"id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5"},
    {"id": "claude-opus-4-1-20250805", "display_name": "Claude Opus 4.1"},
]


def _anthropic_model(entry: dict[str, str]) -> dict[str, Any]:
    return {"type": "model", "created_at": _CREATED_AT, **entry}


async def anthropic_models(request: Request) -> Response:
    _, failed = await _anthropic_request(request)
    if failed is not None:
        return failed
    limit = _query_int(request, "limit", 20)
    ids = [m["id"] for m in _ANTHROPIC_MODELS]
    after = request.query_params.get("after_id")
    start = ids.index(after) + 1 if after in ids else 0
    page = _ANTHROPIC_MODELS[start : start + limit]
    return JSONResponse(
        {
            "data": [_anthropic_model(m) for m in page],
            "has_more": start + limit < len(ids),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


async def anthropic_model(request: Request) -> Response:
    _, failed = await _anthropic_request(request)
    if failed is not None:
        return failed
    wanted = request.path_params["model_id"]
    for entry in _ANTHROPIC_MODELS:
        # An alias (claude-haiku-4-5) resolves to its dated model.
        if entry["id"] == wanted or entry["id"].startswith(wanted + "-"):
            return JSONResponse(_anthropic_model(entry))
    return _error("anthropic", 404, f"model: {wanted}")


# -- Cohere --------------------------------------------------------------------------------------

_COHERE_FINISH = {"end": "COMPLETE", "length": "MAX_TOKENS", "stop": "STOP_SEQUENCE"}
# Cohere counts tokens it adds around the prompt (and the end of the answer) but bills only
# yours: `tokens` is larger than `billed_units`, as in Cohere's documentation.
_COHERE_PROMPT_OVERHEAD = 4
_COHERE_ANSWER_OVERHEAD = 1


def _cohere_usage(reply: Reply) -> dict[str, Any]:
    return {
        "billed_units": {"input_tokens": reply.tokens_input, "output_tokens": reply.tokens_output},
        "tokens": {
            "input_tokens": reply.tokens_input + _COHERE_PROMPT_OVERHEAD,
            "output_tokens": reply.tokens_output + _COHERE_ANSWER_OVERHEAD,
        },
    }


async def cohere_chat(request: Request) -> Response:
    body = await _record(request, "cohere")
    if _bearer(request) is None:
        return _error("cohere", 401, "no api key supplied")
    if not isinstance(body, dict):
        return _error("cohere", 400, "invalid request: the body must be a JSON object")
    if not isinstance(body.get("model"), str):
        return _error("cohere", 400, "invalid request: model must be specified")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error("cohere", 400, "invalid request: messages must not be empty")
    reply = Reply(
        messages,
        max_tokens=_int_or_none(body.get("max_tokens")),
        stop=_stops(body.get("stop_sequences")),
        chunks=_chunks(request),
    )
    chat_id = f"c0{_next_id():06d}"
    finish = _COHERE_FINISH[reply.reason]
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": chat_id,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": [{"type": "text", "text": reply.text}]},
                "usage": _cohere_usage(reply),
            }
        )

    def events() -> Iterable[str]:
        yield _named(
            "message-start",
            {
                "id": chat_id,
                "type": "message-start",
                "delta": {
                    "message": {
                        "role": "assistant",
                        "content": [],
                        "tool_plan": "",
                        "tool_calls": [],
                        "citations": [],
                    }
                },
            },
        )
        yield _named(
            "content-start",
            {
                "type": "content-start",
                "index": 0,
                "delta": {"message": {"content": {"type": "text", "text": ""}}},
            },
        )
        for piece in reply.pieces:
            yield _named(
                "content-delta",
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": piece}}},
                },
            )
        yield _named("content-end", {"type": "content-end", "index": 0})
        yield _named(
            "message-end",
            {
                "type": "message-end",
                "delta": {"finish_reason": finish, "usage": _cohere_usage(reply)},
            },
        )

    return _sse(events())


_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
_COHERE_MAX_TEXTS = 96


async def cohere_embed(request: Request) -> Response:
    body = await _record(request, "cohere")
    if _bearer(request) is None:
        return _error("cohere", 401, "no api key supplied")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _error("cohere", 400, "invalid request: model must be specified")
    input_type = body.get("input_type")
    if input_type is None:
        return _error(
            "cohere", 400, "invalid request: input_type is required for embed models v3 and higher"
        )
    if input_type not in _COHERE_INPUT_TYPES:
        return _error("cohere", 400, f"invalid request: input_type {input_type!r} is not valid")
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return _error("cohere", 400, "invalid request: texts must be a list of strings")
    if len(texts) > _COHERE_MAX_TEXTS:
        return _error(
            "cohere",
            400,
            f"invalid request: texts can contain at most {_COHERE_MAX_TEXTS} items, "
            f"got {len(texts)}",
        )
    model = str(body["model"])
    size = _dimensions(model, body.get("output_dimension"))
    floats = [_vector(t, size, salt=input_type) for t in texts]
    kinds = body.get("embedding_types") or ["float"]
    embeddings: dict[str, Any] = {}
    for kind in kinds:
        if kind == "float":
            embeddings["float"] = floats
        elif kind == "int8":
            embeddings["int8"] = [[round(x * 127) for x in v] for v in floats]
        else:
            return _error(
                "cohere", 400, f"invalid request: embedding type {kind!r} is not served here"
            )
    return JSONResponse(
        {
            "id": f"e0{_next_id():06d}",
            "embeddings": embeddings,
            "texts": texts,
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"input_tokens": sum(_words(t) for t in texts)},
            },
            "response_type": "embeddings_by_type",
        }
    )


_COHERE_MODELS = [
    ("command-r-08-2024", "chat", 128_000),
    ("command-a-03-2025", "chat", 256_000),
    ("embed-v4.0", "embed", 128_000),
]


async def cohere_models(request: Request) -> Response:
    await _record(request, "cohere")
    if _bearer(request) is None:
        return _error("cohere", 401, "no api key supplied")
    size = _query_int(request, "page_size", 20)
    start = _query_int(request, "page_token", 0)
    endpoint = request.query_params.get("endpoint")
    listed = [
        {"name": name, "endpoints": [serves], "finetuned": False, "context_length": context}
        for name, serves, context in _COHERE_MODELS
        if endpoint is None or endpoint == serves
    ]
    page = listed[start : start + size]
    following = start + size
    return JSONResponse(
        {"models": page, "next_page_token": str(following) if following < len(listed) else None}
    )


# -- Ollama --------------------------------------------------------------------------------------

_OLLAMA_DONE = {"end": "stop", "length": "length", "stop": "stop"}


async def ollama_chat(request: Request) -> Response:
    body = await _record(request, "ollama")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return _error("ollama", 400, "model is required")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _error("ollama", 400, "messages must be a list")
    given = body.get("options")
    options: dict[str, Any] = given if isinstance(given, dict) else {}
    num_predict = _int_or_none(options.get("num_predict"))
    reply = Reply(
        messages,
        max_tokens=num_predict if num_predict is not None and num_predict >= 0 else None,
        stop=_stops(options.get("stop")),
        chunks=_chunks(request),
    )
    model = str(body["model"])
    final = {
        "model": model,
        "created_at": _CREATED_AT,
        "done": True,
        "done_reason": _OLLAMA_DONE[reply.reason],
        "total_duration": 1_000_000 * (reply.tokens_input + reply.tokens_output + 1),
        "load_duration": 1_000_000,
        "prompt_eval_count": reply.tokens_input,
        "prompt_eval_duration": 1_000_000 * reply.tokens_input,
        "eval_count": reply.tokens_output,
        "eval_duration": 1_000_000 * reply.tokens_output,
    }
    # Ollama streams unless the request says "stream": false.
    if body.get("stream", True) is False:
        return JSONResponse({**final, "message": {"role": "assistant", "content": reply.text}})

    def lines() -> Iterable[str]:
        for piece in reply.pieces:
            yield (
                _dumps(
                    {
                        "model": model,
                        "created_at": _CREATED_AT,
                        "message": {"role": "assistant", "content": piece},
                        "done": False,
                    }
                )
                + "\n"
            )
        yield _dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n"

    return StreamingResponse(_batched(lines()), media_type="application/x-ndjson")


async def ollama_embed(request: Request) -> Response:
    body = await _record(request, "ollama")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return _error("ollama", 400, "model is required")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return _error("ollama", 400, "input must be a string or a list of strings")
    model = str(body["model"])
    size = _dimensions(model, body.get("dimensions"))
    return JSONResponse(
        {
            "model": model,
            "embeddings": [_vector(t, size) for t in texts],
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": sum(_words(t) for t in texts),
        }
    )


_OLLAMA_MODELS = [
    ("llama3.2:latest", "3.2B", "llama"),
    ("nomic-embed-text:latest", "137M", "nomic-bert"),
]


async def ollama_tags(request: Request) -> Response:
    await _record(request, "ollama")
    return JSONResponse(
        {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": _CREATED_AT,
                    "size": 1_000_000,
                    "digest": hashlib.sha256(name.encode()).hexdigest(),
                    "details": {
                        "format": "gguf",
                        "family": family,
                        "families": [family],
                        "parameter_size": size,
                        "quantization_level": "Q4_K_M",
                    },
                }
                for name, size, family in _OLLAMA_MODELS
            ]
        }
    )


async def ollama_version(request: Request) -> Response:
    await _record(request, "ollama")
    return JSONResponse({"version": "0.12.6"})


# -- housekeeping --------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "time": time.time()})


async def reset(request: Request) -> Response:
    _reset_state()
    return JSONResponse({"ok": True})


async def requests_seen(request: Request) -> Response:
    provider = request.query_params.get("provider")
    seen = [r for r in STATE["requests"] if provider is None or r["provider"] == provider]
    return JSONResponse(seen)


async def stats(request: Request) -> Response:
    return JSONResponse({"hits": STATE["hits"]})


_GET, _POST = ["GET"], ["POST"]

routes = [
    Route("/_health", health, methods=_GET),
    Route("/_reset", reset, methods=_POST),
    Route("/_requests", requests_seen, methods=_GET),
    Route("/_stats", stats, methods=_GET),
    Route("/fail/{status:int}/{provider}/{rest:path}", fail, methods=["GET", "POST"]),
    Route("/midstream/anthropic/v1/messages", anthropic_midstream_error, methods=_POST),
]
for _prefix, _models in (
    ("openai", _OPENAI_MODELS),
    ("compatible", _COMPATIBLE_MODELS),
    ("mistral", _MISTRAL_MODELS),
):
    routes += [
        Route(f"/{_prefix}/v1/chat/completions", _openai_like(_prefix), methods=_POST),
        Route(f"/{_prefix}/v1/embeddings", _openai_embeddings(_prefix), methods=_POST),
        Route(f"/{_prefix}/v1/models", _openai_models(_prefix, _models), methods=_GET),
        Route(
            f"/{_prefix}/v1/models/{{model_id:path}}",
            _openai_models(_prefix, _models),
            methods=_GET,
        ),
    ]
routes += [
    Route("/anthropic/v1/messages", anthropic_messages, methods=_POST),
    Route("/anthropic/v1/messages/count_tokens", anthropic_count_tokens, methods=_POST),
    Route("/anthropic/v1/models", anthropic_models, methods=_GET),
    Route("/anthropic/v1/models/{model_id}", anthropic_model, methods=_GET),
    Route("/cohere/v2/chat", cohere_chat, methods=_POST),
    Route("/cohere/v2/embed", cohere_embed, methods=_POST),
    Route("/cohere/v1/models", cohere_models, methods=_GET),
    Route("/ollama/api/chat", ollama_chat, methods=_POST),
    Route("/ollama/api/embed", ollama_embed, methods=_POST),
    Route("/ollama/api/tags", ollama_tags, methods=_GET),
    Route("/ollama/api/version", ollama_version, methods=_GET),
]

app = Starlette(routes=routes)
