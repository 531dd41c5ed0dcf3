"""A local HTTP server that fails in ways ``fake_services`` does not: at the TCP level.

Start it with ``run_server(app_path="tests.servers.faulty:app", ready_path="/health")``.
``app`` is a plain ASGI callable: a few paths are answered by reaching under the ASGI
interface to the connection's transport (uvicorn's protocol object is the ``__self__`` of
the ``send`` callable it hands the app), so that the connection can be *reset* (SO_LINGER
0, then abort: the client sees ECONNRESET) or closed half-way through a body; everything
else is a small Starlette app.

Routes (``key`` names a call counter; ``GET /calls?key=K`` reads it):

* ``/reset/before``   read the request, then reset the connection: no response at all;
* ``/reset/mid``      headers announcing ``size`` bytes of JSON, ``sent`` of them, reset;
* ``/close/mid``      the same, but a clean close (FIN): a truncated body;
* ``/reset/stream``   an SSE stream: two chunk events, then a reset;
* ``/html``           200 ``text/html`` where JSON is expected; ``/html502`` a proxy's 502 page;
* ``/trickle``        a valid JSON body, ``chunk`` bytes every ``interval`` seconds after
                      ``first`` seconds (``pause``: one pause of that long after the first chunk);
* ``/big``            ``mb`` megabytes of JSON (``status`` to make it an error response);
* ``/burst``          ``codes`` (comma separated, cycled) for the first ``fail`` calls, then 200;
* ``/{mode}/v1/chat/completions``, ``/{mode}/v1/models``: OpenAI-shaped routes for the
  generated ``OpenAI`` client (``base_url=.../{mode}.{key}/v1``, the counter's key being
  the whole ``{mode}.{key}``); ``mode`` is ``ok``, ``html``, ``reset-before``, ``reset-mid``,
  ``close-mid``, ``reset-stream``, ``trickle``, or ``burst`` (``burst.{key}.{fail}``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CALLS: dict[str, int] = {}


def _bump(key: str) -> int:
    CALLS[key] = CALLS.get(key, 0) + 1
    return CALLS[key]


def _query(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _num(query: dict[str, str], name: str, default: float) -> float:
    try:
        return float(query.get(name, default))
    except ValueError:
        return default


# --------------------------------------------------------------------------------------- #
# Transport-level faults
# --------------------------------------------------------------------------------------- #


def _transport(send: Send) -> asyncio.Transport:
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection's transport (not uvicorn's h11 server?)")
    return transport  # type: ignore[no-any-return]


async def _drain_request(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _reset(send: Send) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), not a FIN."""
    transport = _transport(send)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(3):  # let uvicorn see the connection lost before the app returns
        await asyncio.sleep(0)


async def _close(send: Send) -> None:
    _transport(send).close()
    for _ in range(3):
        await asyncio.sleep(0)


CHAT = {
    "id": "chatcmpl-faulty",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-fake-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hi"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}
MODELS = {"object": "list", "data": [{"id": "m", "object": "model", "created": 1, "owned_by": "x"}]}


def _ok_body(key: str, n: int) -> bytes:
    return json.dumps({"ok": True, "calls": n, "key": key}).encode()


async def reset_before(scope: Scope, receive: Receive, send: Send, key: str) -> None:
    _bump(key)
    await _drain_request(receive)
    await _reset(send)


async def cut_mid(
    scope: Scope, receive: Receive, send: Send, key: str, *, body: bytes, sent: int, rst: bool
) -> None:
    _bump(key)
    await _drain_request(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body[:sent], "more_body": True})
    await asyncio.sleep(0.05)  # let the part reach the client
    await (_reset(send) if rst else _close(send))


def _chunk_event(i: int) -> bytes:
    chunk = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-fake-mini",
        "choices": [{"index": 0, "delta": {"content": f"part{i} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def reset_stream(scope: Scope, receive: Receive, send: Send, key: str) -> None:
    _bump(key)
    await _drain_request(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for i in range(2):
        await send({"type": "http.response.body", "body": _chunk_event(i), "more_body": True})
    await asyncio.sleep(0.05)
    await _reset(send)


def _padded(data: dict[str, Any], size: int) -> bytes:
    """``data`` as JSON with a ``pad`` string making it ``size`` bytes long."""
    body = json.dumps({**data, "pad": ""}).encode()
    return json.dumps({**data, "pad": "x" * max(0, size - len(body))}).encode()


async def _raw(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve the transport-level routes; False when ``scope`` is not one of them."""
    path = scope["path"]
    query = _query(scope)
    key = query.get("key", "default")
    match = re.match(r"^/([^/]+)/v1/(chat/completions|models)$", path)
    if match:
        key = match.group(1)
        mode = key.split(".", 1)[0]
        body = json.dumps(CHAT if match.group(2) == "chat/completions" else MODELS).encode()
        if mode == "reset-before":
            await reset_before(scope, receive, send, key)
        elif mode in ("reset-mid", "close-mid"):
            await cut_mid(
                scope, receive, send, key, body=body, sent=len(body) // 2, rst=mode == "reset-mid"
            )
        elif mode == "reset-stream":
            await reset_stream(scope, receive, send, key)
        else:
            return False
        return True
    if path == "/reset/before":
        await reset_before(scope, receive, send, key)
    elif path in ("/reset/mid", "/close/mid"):
        size = int(_num(query, "size", 100_000))
        sent = int(_num(query, "sent", size // 2))
        await cut_mid(
            scope,
            receive,
            send,
            key,
            body=_padded({"ok": True, "calls": 0}, size),
            sent=sent,
            rst=path.startswith("/reset"),
        )
    elif path == "/reset/stream":
        await reset_stream(scope, receive, send, key)
    else:
        return False
    return True


# --------------------------------------------------------------------------------------- #
# Starlette routes
# --------------------------------------------------------------------------------------- #

HTML = b"""<!doctype html>
<html><head><title>Welcome</title></head>
<body><h1>It works!</h1><p>This is the default web page for this server.</p></body></html>
"""
PROXY_502 = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body>
</html>
"""


def _key(request: Request) -> str:
    return request.query_params.get("key", "default")


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def calls(request: Request) -> Response:
    return JSONResponse({"calls": CALLS.get(_key(request), 0)})


async def html(request: Request) -> Response:
    _bump(_key(request))
    return Response(HTML, media_type="text/html")


async def html502(request: Request) -> Response:
    _bump(_key(request))
    return Response(PROXY_502, status_code=502, media_type="text/html")


async def trickle(request: Request) -> Response:
    """A valid JSON body, sent slowly."""
    n = _bump(_key(request))
    q = request.query_params
    first = float(q.get("first", 0))
    interval = float(q.get("interval", 0.05))
    chunk = int(q.get("chunk", 1))
    pause = float(q.get("pause", 0))
    size = int(q.get("size", 60))
    body = _padded({"ok": True, "calls": n}, size)
    if request.url.path.endswith("/v1/chat/completions"):
        body = json.dumps(CHAT).encode() + b" " * max(0, size - len(json.dumps(CHAT)))

    async def gen() -> AsyncIterator[bytes]:
        if first:
            await asyncio.sleep(first)
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]
            if pause and i == 0:
                await asyncio.sleep(pause)
            elif interval:
                await asyncio.sleep(interval)

    return StreamingResponse(gen(), media_type="application/json")


async def big(request: Request) -> Response:
    n = _bump(_key(request))
    size = int(float(request.query_params.get("mb", 4)) * 1024 * 1024)
    status = int(request.query_params.get("status", 200))
    data = {"ok": True, "calls": n} if status < 400 else {"error": {"message": "x" * 300}}
    return Response(_padded(data, size), status_code=status, media_type="application/json")


async def burst(request: Request) -> Response:
    n = _bump(_key(request))
    fail = int(request.query_params.get("fail", 2))
    codes = [int(c) for c in request.query_params.get("codes", "500,502,503").split(",")]
    headers = {}
    if request.query_params.get("retry_after"):
        headers["Retry-After"] = request.query_params["retry_after"]
    if n <= fail:
        code = codes[(n - 1) % len(codes)]
        return JSONResponse(
            {"error": {"message": f"burst failure {n} ({code})"}}, status_code=code, headers=headers
        )
    return JSONResponse({"ok": True, "calls": n})


async def openai_modes(request: Request) -> Response:
    """``/{mode}/v1/...`` for the modes served by Starlette: ok, html, trickle, burst."""
    key = request.path_params["mode"]
    mode = key.split(".", 1)[0]
    chat = request.url.path.endswith("/chat/completions")
    n = _bump(key)
    if mode == "html":
        return Response(HTML, media_type="text/html")
    if mode == "trickle":
        return await trickle(request)
    if mode == "burst":
        fail = key.rsplit(".", 1)[-1]
        if n <= int(fail):
            code = (500, 502, 503)[(n - 1) % 3]
            return JSONResponse({"error": {"message": f"burst failure {n}"}}, status_code=code)
    return JSONResponse(CHAT if chat else MODELS)


async def reset(request: Request) -> Response:
    CALLS.clear()
    return JSONResponse({"ok": True})


starlette_app = Starlette(
    routes=[
        Route("/health", health),
        Route("/calls", calls),
        Route("/html", html, methods=["GET", "POST"]),
        Route("/html502", html502, methods=["GET", "POST"]),
        Route("/trickle", trickle),
        Route("/big", big),
        Route("/burst", burst, methods=["GET", "POST"]),
        Route("/{mode}/v1/chat/completions", openai_modes, methods=["POST"]),
        Route("/{mode}/v1/models", openai_modes),
        Route("/_reset", reset, methods=["POST"]),
    ]
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and await _raw(scope, receive, send):
        return
    await starlette_app(scope, receive, send)


__all__ = ["app", "starlette_app"]
