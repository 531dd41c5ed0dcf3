"""Request building (path, query, headers, JSON body) and response decoding."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from builder.runtime import errors
from builder.runtime.operation import Decoder, Operation
from tests.runtime._clients import (
    CREATE_ITEM,
    GET_ITEM,
    LIST_ITEMS,
    RAW,
    Color,
    Demo,
    Item,
    Level,
    NewItem,
)

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def client() -> Any:
    with Demo() as demo:
        yield demo


def last(route: respx.Route) -> httpx.Request:
    return route.calls.last.request


# -- decoding ------------------------------------------------------------------------------


def test_model_is_validated(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/1").respond(200, json={"id": "1", "name": "one", "extra": True})
    item = client._call(GET_ITEM, path={"id": 1})
    assert type(item) is Item
    assert item == Item(id=1, name="one")


def test_list_of_models(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items").respond(200, json=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    items = client._call(LIST_ITEMS)
    assert items == [Item(id=1, name="a"), Item(id=2, name="b")]
    assert all(type(i) is Item for i in items)


def test_invalid_json_is_a_validation_error(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/1").respond(200, text="<html>oops</html>")
    with pytest.raises(errors.ResponseValidationError) as info:
        client._call(GET_ITEM, path={"id": 1})
    assert info.value.body == "<html>oops</html>"
    # Not valid JSON at all is not "does not match the model", whether or not there is one.
    assert info.value.message.startswith("response is not valid JSON"), info.value.message
    assert info.value.operation == "get_item"
    assert info.value.__cause__ is None


def test_invalid_json_without_model(api: respx.MockRouter, client: Demo) -> None:
    api.get("/raw").respond(200, text="{not json")
    with pytest.raises(errors.ResponseValidationError) as info:
        client._call(RAW)
    assert info.value.message.startswith("response is not valid JSON")


def test_wrong_shape_names_the_field(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items/1").respond(200, json={"id": 1})
    with pytest.raises(errors.ResponseValidationError) as info:
        client._call(GET_ITEM, path={"id": 1})
    message = info.value.message
    assert message.startswith("response does not match the declared model")
    assert "name: Field required" in message
    assert info.value.body == '{"id":1}'


def test_wrong_shape_in_a_list_names_the_index(api: respx.MockRouter, client: Demo) -> None:
    api.get("/items").respond(200, json=[{"id": 1, "name": "a"}, {"id": "x", "name": "b"}])
    with pytest.raises(errors.ResponseValidationError) as info:
        client._call(LIST_ITEMS)
    assert "1.id:" in info.value.message


def test_no_decoder_returns_plain_json(api: respx.MockRouter, client: Demo) -> None:
    api.get("/raw").respond(200, json={"a": [1, 2, None]})
    assert client._call(RAW) == {"a": [1, 2, None]}


def test_empty_json_body_is_none(api: respx.MockRouter, client: Demo) -> None:
    api.get("/raw").respond(204)
    assert client._call(RAW) is None


@pytest.mark.parametrize(
    ("kind", "expected"), [("text", "héllo"), ("bytes", "héllo".encode()), ("none", None)]
)
def test_text_bytes_and_none_kinds(
    api: respx.MockRouter, client: Demo, kind: Any, expected: Any
) -> None:
    api.get("/raw").respond(
        200, content="héllo".encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    op: Operation[Any] = Operation("raw", "GET", "/raw", response_kind=kind)
    assert client._call(op) == expected


def test_lazy_decoder_resolves_type_once() -> None:
    calls: list[int] = []

    def load() -> type[Item]:
        calls.append(1)
        return Item

    decoder = Decoder(lazy=load)
    assert calls == []
    assert decoder.from_json(b'{"id": 1, "name": "a"}') == Item(id=1, name="a")
    assert decoder.from_python({"id": 2, "name": "b"}) == Item(id=2, name="b")
    assert calls == [1]


def test_decoder_many_decodes_a_list_of_the_type() -> None:
    decoder = Decoder(lazy=lambda: Item, many=True)
    assert decoder.from_json(b'[{"id": 1, "name": "a"}]') == [Item(id=1, name="a")]
    assert decoder.from_python([]) == []
    with pytest.raises(ValueError):
        decoder.from_python({"id": 1, "name": "a"})


def test_decoder_without_type_and_with_non_model_type() -> None:
    assert Decoder().from_json(b"[1, 2]") == [1, 2]
    assert Decoder(list[int]).from_json(b'["1", 2]') == [1, 2]
    assert Decoder(dict[str, float]).from_python({"a": "1.5"}) == {"a": 1.5}


# -- JSON body -----------------------------------------------------------------------------


def test_model_body_uses_aliases_and_drops_none(api: respx.MockRouter, client: Demo) -> None:
    route = api.post("/items").respond(201, json={"id": 1, "name": "n"})
    client._call(CREATE_ITEM, body=NewItem(name="n", display_name="Nice"))
    request = last(route)
    assert request.content == b'{"name":"n","displayName":"Nice"}'
    assert request.headers["Content-Type"] == "application/json"


def test_dict_body_drops_none_values(api: respx.MockRouter, client: Demo) -> None:
    route = api.post("/items").respond(201, json={"id": 1, "name": "n"})
    client._call(CREATE_ITEM, body={"name": "n", "note": None, "tags": ["a"], "count": 0})
    assert json.loads(last(route).content) == {"name": "n", "tags": ["a"], "count": 0}


def test_dict_body_with_model_values(api: respx.MockRouter, client: Demo) -> None:
    route = api.post("/items").respond(201, json={"id": 1, "name": "n"})
    client._call(CREATE_ITEM, body={"item": NewItem(name="n"), "other": None})
    assert json.loads(last(route).content) == {"item": {"name": "n"}}


def test_list_body(api: respx.MockRouter, client: Demo) -> None:
    route = api.post("/items").respond(201, json={"id": 1, "name": "n"})
    client._call(CREATE_ITEM, body=[NewItem(name="a"), NewItem(name="b", note="x")])
    assert json.loads(last(route).content) == [{"name": "a"}, {"name": "b", "note": "x"}]


def test_body_keeps_caller_headers(api: respx.MockRouter, client: Demo) -> None:
    route = api.post("/items").respond(201, json={"id": 1, "name": "n"})
    client._call(CREATE_ITEM, headers={"Idempotency-Key": "k1"}, body={"name": "n"})
    request = last(route)
    assert request.headers["Idempotency-Key"] == "k1"
    assert request.headers["Content-Type"] == "application/json"


def test_no_body_sends_no_content(api: respx.MockRouter, client: Demo) -> None:
    route = api.get("/items/1").respond(200, json={"id": 1, "name": "n"})
    client._call(GET_ITEM, path={"id": 1})
    request = last(route)
    assert request.content == b""
    assert "Content-Type" not in request.headers


# -- query, headers, path ------------------------------------------------------------------


def test_query_drops_none_repeats_lists_and_sends_enum_values(
    api: respx.MockRouter, client: Demo
) -> None:
    route = api.get("/items").respond(200, json=[])
    client._call(
        LIST_ITEMS,
        query={
            "q": "a b",
            "skip": None,
            "tag": ["x", "y"],
            "color": Color.RED,
            "colors": [Color.RED, Color.GREEN],
            "level": Level.HIGH,
            "flag": True,
            "off": False,
            "n": 0,
        },
    )
    url = last(route).url
    assert url.params.multi_items() == [
        ("q", "a b"),
        ("tag", "x"),
        ("tag", "y"),
        ("color", "red"),
        ("colors", "red"),
        ("colors", "green"),
        ("level", "3"),
        ("flag", "true"),
        ("off", "false"),
        ("n", "0"),
    ]
    assert "skip" not in url.params


def test_headers_drop_none_and_send_enum_values(api: respx.MockRouter, client: Demo) -> None:
    route = api.get("/items").respond(200, json=[])
    client._call(LIST_ITEMS, headers={"X-Color": Color.GREEN, "X-N": 5, "X-None": None})
    request = last(route)
    assert request.headers["X-Color"] == "green"
    assert request.headers["X-N"] == "5"
    assert "X-None" not in request.headers


def test_boolean_header_is_sent_like_other_booleans(api: respx.MockRouter, client: Demo) -> None:
    # Query and path booleans go out as "true"/"false"; a header must not say "True".
    route = api.get("/items").respond(200, json=[])
    client._call(LIST_ITEMS, headers={"X-Dry-Run": True})
    assert last(route).headers["X-Dry-Run"] == "true"


@pytest.mark.parametrize(
    ("value", "raw_path"),
    [
        ("a/b c", b"/items/a%2Fb%20c"),
        ("../admin", b"/items/..%2Fadmin"),
        ("x?y#z&w=1", b"/items/x%3Fy%23z%26w%3D1"),
        ("ünï", b"/items/%C3%BCn%C3%AF"),
        ("100%", b"/items/100%25"),
        (42, b"/items/42"),
        (Color.RED, b"/items/red"),
        (Level.LOW, b"/items/1"),
        (True, b"/items/true"),
    ],
)
def test_path_params_are_percent_encoded(
    api: respx.MockRouter, client: Demo, value: Any, raw_path: bytes
) -> None:
    route = api.route(method="GET").respond(200, json={"id": 1, "name": "n"})
    client._call(GET_ITEM, path={"id": value})
    assert last(route).url.raw_path == raw_path


def test_several_path_params() -> None:
    op: Operation[Any] = Operation("get", "GET", "/orgs/{org}/repos/{repo}/issues/{n}")
    assert op.url_path({"org": "a b", "repo": "x/y", "n": 3}) == "/orgs/a%20b/repos/x%2Fy/issues/3"
    assert Operation("l", "GET", "/static").url_path(None) == "/static"
    assert repr(op) == "Operation('get', GET /orgs/{org}/repos/{repo}/issues/{n})"
