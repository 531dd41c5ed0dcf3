"""Secret hygiene: a planted secret never shows in reprs, errors, logs, generated files or help.

Distinctive values (``sk-PLANTED-<uuid>/+=``: the ``/``, ``+`` and ``=`` make its URL-encoded
forms differ from the raw one) are put in the secret setting of the generated ``github``,
``openai`` and ``example`` connectors and of ``querykey``, a connector generated here from a
tiny spec that sends its key as a query parameter (so the key is part of every URL). Each
is given the secret as a constructor argument and, separately, through its environment
variable. The clients are then driven into every failure the runtime maps: 401, 404, 500
(with the service echoing the credentials back in the body and a header), a stream whose
chunk echoes them, a body that fails validation (the local server's ``/v1/echo`` reflects
the request, credentials included), a timeout, a refused connection, a sink write that
fails, a pagination loop, and a setting that does not parse.

Checked for the secret in any of its forms (raw, percent-encoded, form-encoded):

* ``repr``/``str`` of clients, their configs and the settings' values;
* ``str``/``repr`` of every exception raised, its formatted traceback (chained exceptions
  included) and its public attributes (``message``, ``url``, ``body``, ``headers``);
* every log record of the ``httpx``, ``httpcore`` and ``connectors`` loggers at DEBUG;
* every file generated (``specs/`` and the query-key spec) with the secrets in the
  environment, and what ``connector-builder`` prints while doing it;
* ``connector-builder --help`` and every subcommand's ``--help``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import respx
from pydantic import BaseModel

from builder.runtime import errors
from builder.runtime.operation import Decoder, Operation
from builder.runtime.resilience import RetryPolicy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(attempts=2, initial_delay=0.0, max_delay=0.0, jitter=False)
ONCE = RetryPolicy(attempts=1)
LOGGERS = ("httpx", "httpcore", "connectors")

QUERYKEY_SPEC = """\
spec_version: 1
name: querykey
title: Query Key API
base_url: https://querykey.example.com
config:
  api_key: {type: string, secret: true, env: QUERYKEY_API_KEY, description: The key.}
  pin: {type: integer, secret: true, env: QUERYKEY_PIN, required: false}
auth: {type: api_key, in: query, name: api_key, value: "{config.api_key}"}
schemas:
  Thing:
    properties: {id: integer, name: string}
    required: [id, name]
operations:
  get_thing:
    method: GET
    path: /things/{thing_id}
    params: {thing_id: integer}
    response: Thing
  list_things:
    method: GET
    path: /things
    response: {schema: Thing, many: true}
    pagination: {style: link_header}
  create_thing:
    method: POST
    path: /things
    body: {schema: {properties: {name: string}, required: [name]}}
    response: Thing
  stream_things:
    method: GET
    path: /things/stream
    streaming: {format: ndjson, item: Thing}
roles:
  source: {read: list_things}
  sink: {write: create_thing}
"""


def planted() -> str:
    return f"sk-PLANTED-{uuid.uuid4().hex}/+="


def forms(secret: str) -> set[str]:
    """The secret as it may appear: raw, percent-encoded, form-encoded."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


def leaks(text: str, secret: str) -> list[str]:
    return sorted(form for form in forms(secret) if form in text)


# --------------------------------------------------------------------------------------- #
# The connectors under test
# --------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    sync: str
    async_: str
    setting: str  # the secret setting (a keyword argument)
    env: str  # its environment variable
    call: Callable[[Any], Any]  # one generated method, sync or async (same arguments)
    stream: Callable[[Any], Any] | None = None  # a generated streaming method
    sink: bool = False

    def classes(self) -> tuple[type[Any], type[Any]]:
        module = importlib.import_module(self.module)
        return getattr(module, self.sync), getattr(module, self.async_)


TARGETS = {
    "github": Target(
        "github",
        "connectors.github",
        "GitHub",
        "AsyncGitHub",
        "token",
        "GITHUB_TOKEN",
        lambda c: c.get_repository(owner="octocat", repo="hello"),
        sink=True,
    ),
    "openai": Target(
        "openai",
        "connectors.openai",
        "OpenAI",
        "AsyncOpenAI",
        "api_key",
        "OPENAI_API_KEY",
        lambda c: c.list_models(),
        stream=lambda c: c.stream_chat_completion(
            model="m", messages=[{"role": "user", "content": "hi"}]
        ),
    ),
    "example": Target(
        "example",
        "connectors.example",
        "Example",
        "AsyncExample",
        "api_key",
        "EXAMPLE_API_KEY",
        lambda c: c.get_note(note_id="123e4567-e89b-12d3-a456-426614174000"),
        stream=lambda c: c.export_all(),
        sink=True,
    ),
    "querykey": Target(
        "querykey",
        "connectors.querykey",
        "Querykey",
        "AsyncQuerykey",
        "api_key",
        "QUERYKEY_API_KEY",
        lambda c: c.get_thing(thing_id=1),
        stream=lambda c: c.stream_things(),
        sink=True,
    ),
}
SINK_RECORDS = {
    "github": [{"owner": "o", "repo": "r", "title": "t"}],
    "example": [{"title": "t"}],
    "querykey": [{"name": "n"}],
}


@pytest.fixture(scope="module")
def querykey_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Generate the query-key connector and make ``connectors.querykey`` importable."""
    from builder.generate import generate

    base = tmp_path_factory.mktemp("querykey")
    spec = base / "querykey.yaml"
    spec.write_text(QUERYKEY_SPEC, "utf-8")
    out = base / "out"
    generate([spec], out)
    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    try:
        yield out / "connectors" / "querykey"
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith("connectors.querykey")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.servers.runner import run_server

    with run_server() as url:
        yield url


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, querykey_package: Path) -> Target:
    return TARGETS[request.param]


@pytest.fixture(params=["argument", "env"])
def how(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = planted()
    for t in TARGETS.values():  # no real credential from the environment may interfere
        monkeypatch.delenv(t.env, raising=False)
        monkeypatch.delenv(f"{t.name.upper()}_BASE_URL", raising=False)
    return value


def make(
    target: Target, how: str, secret: str, monkeypatch: pytest.MonkeyPatch, *, sync: bool, **kw: Any
) -> Any:
    cls = target.classes()[0 if sync else 1]
    if how == "env":
        monkeypatch.setenv(target.env, secret)
        return cls(**kw)
    return cls(**{target.setting: secret}, **kw)


# --------------------------------------------------------------------------------------- #
# Capturing logs
# --------------------------------------------------------------------------------------- #


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[list[logging.LogRecord]]:
    handler = _Collect()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _record_text(record: logging.LogRecord) -> str:
    text = f"{record.name} {record.levelname} {record.getMessage()}"
    if record.exc_info:
        text += "".join(traceback.format_exception(*record.exc_info))
    return text


# --------------------------------------------------------------------------------------- #
# Driving the clients into every failure
# --------------------------------------------------------------------------------------- #


class Strict(BaseModel):
    """A model nothing the echo route returns can satisfy."""

    never_there: int


ECHO = Operation("echo", "GET", "/v1/echo", response=Decoder(Strict))
SLOW = Operation("slow", "GET", "/faults/slow", response=Decoder(Strict))


def _echo(status: int) -> Callable[[httpx.Request], httpx.Response]:
    """A service that reflects the credentials it was sent: in the body and a header."""

    def respond(request: httpx.Request) -> httpx.Response:
        sent = {
            "authorization": request.headers.get("authorization"),
            "x-api-key": request.headers.get("x-api-key"),
            "url": str(request.url),
            "query": dict(request.url.params),
        }
        return httpx.Response(
            status,
            json={"error": {"message": f"bad credentials: {json.dumps(sent)}"}, "sent": sent},
            headers={"X-Echo": json.dumps(sent)[:500]},
        )

    return respond


def _stream_echo(request: httpx.Request) -> httpx.Response:
    """A stream whose first chunk carries the credentials and does not validate."""
    chunk = json.dumps({"oops": request.headers.get("authorization"), "url": str(request.url)})
    if request.url.path.endswith("/chat/completions"):
        body = f"data: {chunk}\n\n"
        return httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )
    return httpx.Response(
        200, content=(chunk + "\n").encode(), headers={"content-type": "application/x-ndjson"}
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scenarios(target: Target, server: str) -> list[tuple[str, dict[str, Any], Callable[..., Any]]]:
    """(label, client keyword arguments, fn(client) -> result or awaitable)."""
    mocked = "https://mocked.invalid/api"
    out: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []
    for status in (401, 404, 500):
        out.append(
            (f"{status} echoing the credentials", {"base_url": mocked, "retry": FAST}, target.call)
        )
    if target.stream is not None:
        out.append(
            (
                "stream chunk echoing the credentials",
                {"base_url": mocked, "retry": FAST},
                target.stream,
            )
        )
    if target.sink:
        records = SINK_RECORDS[target.name]
        out.append(
            (
                "sink write refused (401)",
                {"base_url": mocked, "retry": FAST},
                lambda c: c.write(records),
            )
        )
    out.append(
        (
            "validation error of an echoed request",
            {"base_url": server, "retry": FAST},
            lambda c: c._call(ECHO),
        )
    )
    out.append(
        (
            "timeout",
            {"base_url": server, "retry": ONCE, "timeout": 0.2},
            lambda c: c._call(SLOW, query={"delay": 2, "key": uuid.uuid4().hex}),
        )
    )
    out.append(
        (
            "connection refused",
            {"base_url": f"http://127.0.0.1:{_closed_port()}", "retry": FAST},
            target.call,
        )
    )
    return out


def _status_of(label: str) -> int:
    return int(label[:3]) if label[:3].isdigit() else 401


def _drive(
    target: Target,
    how: str,
    secret: str,
    server: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    sync: bool,
) -> list[tuple[str, BaseException | None]]:
    """Run every scenario; what each raised (None: it did not raise)."""
    raised: list[tuple[str, BaseException | None]] = []
    for label, kwargs, fn in _scenarios(target, server):
        client = make(target, how, secret, monkeypatch, sync=sync, **kwargs)
        with respx.mock(assert_all_called=False) as mock:
            mock.route(host="127.0.0.1").pass_through()
            if "stream" in label:
                mock.route().mock(side_effect=_stream_echo)
            else:
                mock.route().mock(side_effect=_echo(_status_of(label)))
            try:
                if sync:
                    result = fn(client)
                    if "stream" in label:
                        with result as stream:
                            list(stream)
                    client.close()
                else:
                    asyncio.run(_run_async(client, fn, "stream" in label))
                raised.append((label, None))
            except BaseException as exc:  # noqa: BLE001 - we inspect whatever escapes
                raised.append((label, exc))
            finally:
                if sync:
                    client.close()
    return raised


async def _run_async(client: Any, fn: Callable[..., Any], streamed: bool) -> None:
    try:
        result = fn(client)
        if hasattr(result, "__await__"):
            result = await result
        if streamed:
            async with result as stream:
                async for _ in stream:
                    pass
    finally:
        await client.aclose()


def _exception_texts(
    exc: BaseException, attrs: tuple[str, ...] = ("message", "url", "body")
) -> dict[str, str]:
    texts = {
        "str": str(exc),
        "repr": repr(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    for attr in attrs:
        if hasattr(exc, attr):
            texts[f".{attr}"] = repr(getattr(exc, attr))
    cause = exc.__cause__
    while cause is not None:  # a WriteError's cause is the error of the record
        texts[f"cause {type(cause).__name__}"] = repr(cause) + str(cause)
        cause = cause.__cause__
    return texts


# --------------------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------------------- #


@pytest.mark.timeout(30)
def test_reprs_mask_the_secret(
    target: Target, how: str, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sync in (True, False):
        client = make(target, how, secret, monkeypatch, sync=sync)
        try:
            value = client.config[target.setting]
            shown = {
                "repr(client)": repr(client),
                "str(client)": str(client),
                "repr(config)": repr(client.config),
                "str(config)": str(client.config),
                "dict(config)": str(dict(client.config)),
                "repr(value)": repr(value),
                "str(value)": str(value),
                "format(value)": f"{value}|{value!s}|{value:>20}",
                "json": json.dumps(dict(client.config), default=str),
            }
            assert client.config.reveal(target.setting) == secret  # the real value is there
            bad = {
                where: leaks(text, secret) for where, text in shown.items() if leaks(text, secret)
            }
            assert not bad, f"{target.name} ({how}): secret shown by {bad}"
        finally:
            if sync:
                client.close()
            else:
                asyncio.run(client.aclose())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_errors_never_show_the_secret(
    target: Target, how: str, secret: str, server: str, sync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raised = _drive(target, how, secret, server, monkeypatch, sync=sync)
    problems = []
    for label, exc in raised:
        if exc is None:
            problems.append(f"{label}: nothing was raised")
            continue
        if not isinstance(exc, errors.ConnectorError):
            problems.append(f"{label}: {type(exc).__module__}.{type(exc).__name__} escaped: {exc}")
        for where, text in _exception_texts(exc).items():
            found = leaks(text, secret)
            if found:
                problems.append(
                    f"{label}: {type(exc).__name__} {where} shows {found}: {text[:300]}"
                )
    assert not problems, f"{target.name} ({how}, {'sync' if sync else 'async'}):\n" + "\n".join(
        problems
    )


@pytest.mark.timeout(30)
def test_error_headers_do_not_carry_an_echoed_secret(
    target: Target, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTPStatusError.headers`` keeps the response headers; a service that echoes the
    credential in one (``X-Echo`` here) must not get it into the exception unmasked."""
    client = make(
        target,
        "argument",
        secret,
        monkeypatch,
        sync=True,
        base_url="https://mocked.invalid",
        retry=ONCE,
    )
    with respx.mock() as mock:
        mock.route().mock(side_effect=_echo(401))
        with pytest.raises(errors.HTTPStatusError) as info:
            target.call(client)
    client.close()
    shown = repr(info.value.headers)
    assert not leaks(shown, secret), f"{target.name}: exc.headers = {shown[:300]}"


@pytest.mark.timeout(60)
def test_logs_never_show_the_secret(
    target: Target,
    secret: str,
    server: str,
    logs: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DEBUG records of httpx, httpcore and connectors while every failure happens, and
    while a paginated walk loops back (the runtime then warns, naming the link)."""
    _drive(target, "argument", secret, server, monkeypatch, sync=True)
    _drive(target, "env", secret, server, monkeypatch, sync=False)
    if target.name == "querykey":
        client = make(
            target, "argument", secret, monkeypatch, sync=True, base_url="https://mocked.invalid"
        )
        with respx.mock() as mock:
            # The service's next link is the page itself (keys in next links are common).
            mock.get(url__startswith="https://mocked.invalid/things").mock(
                side_effect=lambda request: httpx.Response(
                    200,
                    json=[{"id": 1, "name": "a"}],
                    headers={"Link": f'<{request.url}>; rel="next"'},
                )
            )
            assert len(list(client.list_things())) == 1
        client.close()
    assert logs, "nothing was logged: the capture is not working"
    bad = [_record_text(r) for r in logs if leaks(_record_text(r), secret)]
    assert not bad, (
        f"{target.name}: {len(bad)} of {len(logs)} log records show the secret, e.g.:\n"
        + "\n".join(sorted({b[:300] for b in bad})[:6])
    )


@pytest.mark.timeout(30)
def test_a_secret_setting_that_does_not_parse_is_not_echoed(
    querykey_package: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYKEY_PIN", secret)  # an integer setting: the value cannot parse
    cls = TARGETS["querykey"].classes()[0]
    with pytest.raises(errors.ConfigError) as info:
        cls(api_key="k")
    for where, text in _exception_texts(info.value).items():
        assert not leaks(text, secret), f"ConfigError {where}: {text}"


@pytest.mark.timeout(30)
def test_basic_credentials_echoed_back_are_not_shown(tmp_path: Path, secret: str) -> None:
    """Basic auth sends base64(user:password): a service echoing the header back must not
    get the credential into an error in that form either."""
    from builder.generate import generate

    spec = tmp_path / "basicecho.yaml"
    spec.write_text(
        QUERYKEY_SPEC.replace("name: querykey", "name: basicecho")
        .replace("QUERYKEY_", "BASICECHO_")
        .replace(
            'auth: {type: api_key, in: query, name: api_key, value: "{config.api_key}"}',
            'auth: {type: basic, username: user, password: "{config.api_key}"}',
        ),
        "utf-8",
    )
    generate([spec], tmp_path / "out")
    sys.path.insert(0, str(tmp_path / "out"))
    try:
        module = importlib.import_module("connectors.basicecho")
        client = module.Basicecho(api_key=secret, base_url="https://mocked.invalid", retry=FAST)
        with respx.mock() as mock:
            mock.route().mock(side_effect=_echo(401))
            with pytest.raises(errors.AuthenticationError) as info:
                client.get_thing(thing_id=1)
        client.close()
    finally:
        sys.path.remove(str(tmp_path / "out"))
        for name in [m for m in sys.modules if m.startswith("connectors.basicecho")]:
            del sys.modules[name]
    encoded = base64.b64encode(f"user:{secret}".encode()).decode()
    for where, text in _exception_texts(info.value).items():
        assert secret not in text and encoded not in text, (
            f"AuthenticationError {where}: {text[:300]}"
        )


@pytest.mark.timeout(120)
def test_generated_files_and_cli_output_hold_no_secret(tmp_path: Path, secret: str) -> None:
    """Generate specs/ and the query-key spec with every secret in the environment (CLI,
    a fresh process): neither the files (README, docs, test scaffolds, cases) nor what the
    CLI prints may hold it. The committed generated/ tree is scanned too."""
    spec = tmp_path / "specs" / "querykey.yaml"
    spec.parent.mkdir()
    spec.write_text(QUERYKEY_SPEC, "utf-8")
    for name in ("github", "openai", "example"):
        (tmp_path / "specs" / f"{name}.yaml").write_text(
            (ROOT / "specs" / f"{name}.yaml").read_text("utf-8"), "utf-8"
        )
    env = {**os.environ, **{t.env: secret for t in TARGETS.values()}, "QUERYKEY_PIN": secret}
    outputs = []
    for args in (
        ["generate", "specs", "--out", "out"],
        ["check", "specs", "--out", "out"],
        ["validate", "specs"],
        ["list", "specs", "--json"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", "from builder.cli import main; main()", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        outputs.append(proc.stdout + proc.stderr)
    assert not leaks("\n".join(outputs), secret)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    files += [
        p for p in (ROOT / "generated").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]
    assert any(p.name == "README.md" for p in files) and any(
        p.name.startswith("test_") for p in files
    )
    bad = [str(p) for p in files if leaks(p.read_bytes().decode("utf-8", "replace"), secret)]
    assert not bad, f"the secret is in generated files: {bad}"


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield (*prefix, name)
        yield from _commands(command, (*prefix, name))


@pytest.mark.timeout(60)
def test_help_never_shows_the_secret(secret: str) -> None:
    from click.testing import CliRunner

    from builder.cli import main

    env = {t.env: secret for t in TARGETS.values()}
    env["QUERYKEY_PIN"] = secret
    commands = list(_commands(main))
    assert {("generate",), ("check",), ("validate",)} <= set(commands)
    runner = CliRunner()
    for command in [(), *commands]:
        result = runner.invoke(main, [*command, "--help"], env=env)
        assert result.exit_code == 0, f"{command}: {result.output}"
        assert not leaks(result.output, secret), f"`{' '.join(command)} --help` shows the secret"
    # And the installed entry point, in a fresh process.
    proc = subprocess.run(
        [sys.executable, "-c", "from builder.cli import main; main()", "--help"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "generate" in proc.stdout
    assert not leaks(proc.stdout + proc.stderr, secret)


@pytest.mark.timeout(30)
def test_the_leak_detector_can_fail(secret: str) -> None:
    """The checks above look for the encoded forms too."""
    url = str(httpx.URL("https://x.test/p", params={"api_key": secret}))
    assert secret not in url and leaks(url, secret)
    assert leaks(f"key={secret}", secret)
    assert not leaks("key=**********", secret)
