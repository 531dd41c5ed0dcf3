"""Every pagination style, laziness, loop protection, and the async pager."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from builder.runtime import errors
from builder.runtime.auth import ApiKeyAuth
from builder.runtime.operation import Decoder, Operation
from builder.runtime.pagination import PageWalk, Pagination, dig
from tests.runtime._clients import AsyncDemo, Demo, Item, service

pytestmark = pytest.mark.timeout(10)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A mock transport that records every request and answers through ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


def items(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"n{i}"} for i in ids]


def op(pagination: Pagination, decoder: Decoder | None = None) -> Operation[Any]:
    return Operation(
        "list_items",
        "GET",
        "/items",
        response=decoder or Decoder(list[Item]),
        pagination=pagination,
    )


def ids(found: list[Any]) -> list[int]:
    return [i.id if isinstance(i, Item) else i["id"] for i in found]


# -- dig and PageWalk ----------------------------------------------------------------------


def test_dig() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert dig(data, ("a", "b", "1", "c")) == 2
    assert dig(data, ()) == data
    assert dig(data, ("a", "x")) is None
    assert dig(data, ("a", "b", "5")) is None
    assert dig(data, ("a", "b", "c")) is None
    assert dig(None, ("a",)) is None


def test_walk_items() -> None:
    walk = PageWalk(Pagination("cursor", items_path=("data",)), {})
    assert walk.items({"data": [1, 2]}) == [1, 2]
    assert walk.items({"other": 1}) == []
    with pytest.raises(ValueError, match="expected a list at data"):
        walk.items({"data": {"not": "a list"}})
    assert PageWalk(Pagination("cursor"), {}).items([3]) == [3]


def test_walk_initial_query() -> None:
    assert PageWalk(Pagination("page", size_param="per_page", page_size=5), {}).query == {
        "per_page": 5,
        "page": 1,
    }
    assert PageWalk(Pagination("offset", size_param="limit", page_size=5), {"limit": 9}).query == {
        "limit": 9,
        "offset": 0,
    }
    assert PageWalk(Pagination("page", start_page=0), {"page": 4}).query == {"page": 4}


# -- styles --------------------------------------------------------------------------------


def test_link_header_walks_every_page_lazily() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        headers = {}
        if page < 3:
            headers["Link"] = (
                f'<https://api.test/items?page={page + 1}&per_page=2>; rel="next", '
                '<https://api.test/items?page=3&per_page=2>; rel="last"'
            )
        return httpx.Response(200, json=items(2 * page - 1, 2 * page), headers=headers)

    server = Recorder(handler)
    with Demo(transport=server.transport) as client:
        pager = client._paginate(op(Pagination("link_header")), query={"per_page": 2})
        assert server.requests == []  # nothing before iteration
        iterator = iter(pager)
        assert server.requests == []
        first = next(iterator)
        assert first == Item(id=1, name="n1")
        assert len(server.requests) == 1
        rest = list(iterator)
    assert ids([first, *rest]) == [1, 2, 3, 4, 5, 6]
    assert server.urls == [
        "https://api.test/items?per_page=2",
        "https://api.test/items?page=2&per_page=2",
        "https://api.test/items?page=3&per_page=2",
    ]
    assert all(server.requests[i].headers["Authorization"].startswith("Bearer ") for i in range(3))


def test_next_url_absolute_and_relative() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = request.url.params.get("p", "1")
        if page == "1":
            return httpx.Response(200, json={"data": items(1), "next": "/items?p=2"})
        if page == "2":
            return httpx.Response(
                200, json={"data": items(2), "next": "https://api.test/items?p=3"}
            )
        return httpx.Response(200, json={"data": items(3), "next": None})

    server = Recorder(handler)
    spec = Pagination("next_url", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2, 3]
    assert server.urls == [
        "https://api.test/items",
        "https://api.test/items?p=2",
        "https://api.test/items?p=3",
    ]


def test_next_url_keeps_query_auth_and_headers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "p" not in request.url.params:
            return httpx.Response(200, json={"data": items(1), "next": "/items?p=2"})
        return httpx.Response(200, json={"data": items(2)})

    server = Recorder(handler)
    auth = ApiKeyAuth(name="key", value="{token}", location="query")
    spec = Pagination("next_url", items_path=("data",), next_path=("next",))
    with Demo(token="k1", service=service(auth=auth), transport=server.transport) as client:
        found = list(client._paginate(op(spec), query={"q": "x"}, headers={"X-Trace": "t"}))
    assert ids(found) == [1, 2]
    assert dict(server.requests[0].url.params) == {"key": "k1", "q": "x"}
    # The next URL's own query survives; the API key is added, the first page's query is not.
    assert dict(server.requests[1].url.params) == {"p": "2", "key": "k1"}
    assert [r.headers["X-Trace"] for r in server.requests] == ["t", "t"]


def test_cursor_from_body_path() -> None:
    pages = {None: (items(1, 2), "c1"), "c1": (items(3, 4), "c2"), "c2": (items(5), None)}

    def handler(request: httpx.Request) -> httpx.Response:
        data, cursor = pages[request.url.params.get("after")]
        return httpx.Response(200, json={"data": data, "meta": {"next_cursor": cursor}})

    server = Recorder(handler)
    spec = Pagination(
        "cursor", items_path=("data",), next_path=("meta", "next_cursor"), cursor_param="after"
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec), query={"limit": 2}))) == [1, 2, 3, 4, 5]
    assert server.urls == [
        "https://api.test/items?limit=2",
        "https://api.test/items?limit=2&after=c1",
        "https://api.test/items?limit=2&after=c2",
    ]


def test_empty_cursor_stops() -> None:
    server = Recorder(lambda r: httpx.Response(200, json={"data": items(1), "next": ""}))
    spec = Pagination("cursor", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1]
    assert len(server.requests) == 1


def test_cursor_from_last_item() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("starting_after", "0"))
        data = items(*[i for i in range(after + 1, after + 3) if i <= 5])
        return httpx.Response(200, json={"data": data})

    server = Recorder(handler)
    spec = Pagination(
        "cursor", items_path=("data",), cursor_param="starting_after", cursor_from_item="id"
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2, 3, 4, 5]
    assert [r.url.params.get("starting_after") for r in server.requests] == [None, "2", "4", "5"]


def test_has_more_flag_stops_the_walk() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("starting_after")
        if after is None:
            return httpx.Response(200, json={"data": items(1, 2), "has_more": True})
        return httpx.Response(200, json={"data": items(3, 4), "has_more": False})

    server = Recorder(handler)
    spec = Pagination(
        "cursor",
        items_path=("data",),
        cursor_param="starting_after",
        cursor_from_item="id",
        has_more_path=("has_more",),
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2, 3, 4]
    assert len(server.requests) == 2


def test_offset_with_size_param_stops_on_a_short_page() -> None:
    data = items(1, 2, 3, 4, 5)

    def handler(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return httpx.Response(200, json={"results": data[offset : offset + limit]})

    server = Recorder(handler)
    spec = Pagination("offset", items_path=("results",), size_param="limit", page_size=2)
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2, 3, 4, 5]
    assert [r.url.params.multi_items() for r in server.requests] == [
        [("limit", "2"), ("offset", "0")],
        [("limit", "2"), ("offset", "2")],
        [("limit", "2"), ("offset", "4")],
    ]


def test_offset_without_size_stops_on_an_empty_page() -> None:
    data = items(1, 2, 3)

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        return httpx.Response(200, json=data[offset : offset + 2])

    server = Recorder(handler)
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(Pagination("offset"))))) == [1, 2, 3]
    assert [r.url.params["offset"] for r in server.requests] == ["0", "2", "3"]


def test_offset_with_has_more_ignores_short_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        if offset == 0:
            return httpx.Response(200, json={"data": items(1), "more": True})
        return httpx.Response(200, json={"data": items(2), "more": False})

    server = Recorder(handler)
    spec = Pagination(
        "offset", items_path=("data",), size_param="limit", page_size=10, has_more_path=("more",)
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2]
    assert [r.url.params["offset"] for r in server.requests] == ["0", "1"]


def test_page_number() -> None:
    data = items(1, 2, 3, 4, 5)

    def handler(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["per_page"])
        return httpx.Response(200, json=data[(page - 1) * size : page * size])

    server = Recorder(handler)
    spec = Pagination("page", size_param="per_page", page_size=2)
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2, 3, 4, 5]
    assert [r.url.params["page"] for r in server.requests] == ["1", "2", "3"]


def test_page_number_start_and_caller_page() -> None:
    server = Recorder(
        lambda r: httpx.Response(200, json=items(1) if r.url.params["page"] in {"0", "7"} else [])
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(Pagination("page", start_page=0))))) == [1]
        assert ids(list(client._paginate(op(Pagination("page")), query={"page": 7}))) == [1]
    assert [r.url.params["page"] for r in server.requests] == ["0", "1", "7", "8"]


def test_pages_yields_whole_typed_pages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"items": items(*range(page * 10, page * 10 + 3 - page))})

    server = Recorder(handler)
    spec = Pagination("page", items_path=("items",))
    with Demo(transport=server.transport) as client:
        pages = list(client._paginate(op(spec)).pages())
    assert [ids(p) for p in pages if p] == [[10, 11], [20]]
    assert len(server.requests) == len(pages) == 3
    assert all(isinstance(i, Item) for p in pages for i in p)


def test_without_decoder_items_are_raw() -> None:
    server = Recorder(
        lambda r: httpx.Response(200, json=items(1) if r.url.params["page"] == "1" else [])
    )
    operation: Operation[Any] = Operation("list", "GET", "/items", pagination=Pagination("page"))
    with Demo(transport=server.transport) as client:
        assert list(client._paginate(operation)) == [{"id": 1, "name": "n1"}]


def test_iterating_again_starts_over_and_leaves_the_callers_query_alone() -> None:
    server = Recorder(
        lambda r: httpx.Response(200, json=items(1) if r.url.params["page"] == "1" else [])
    )
    query = {"q": "x"}
    with Demo(transport=server.transport) as client:
        pager = client._paginate(op(Pagination("page")), query=query)
        assert ids(list(pager)) == [1]
        assert ids(list(pager)) == [1]
    assert query == {"q": "x"}
    assert [r.url.params["page"] for r in server.requests] == ["1", "2", "1", "2"]


def two_pages(style: str) -> tuple[Pagination, Handler]:
    """A pagination spec and a server that splits items 1..4 over two pages of two."""

    def page_number(params: httpx.QueryParams) -> int:
        if "offset" in params:
            return int(params["offset"]) // 2 + 1
        if "page" in params:
            return int(params["page"])
        marker = params.get("p") or params.get("cursor") or params.get("after")
        return {None: 1, "2": 2, "c2": 2}.get(marker, 3)

    def handler(request: httpx.Request) -> httpx.Response:
        number = page_number(request.url.params)
        if number == 2:
            return httpx.Response(200, json={"data": items(3, 4), "more": False})
        if number != 1:
            return httpx.Response(200, json={"data": []})
        body: dict[str, Any] = {"data": items(1, 2), "more": True}
        headers = {}
        if style == "link_header":
            headers["Link"] = '</items?p=2>; rel="next"'
        elif style == "next_url":
            body["next"] = "https://api.test/items?p=2"
        else:
            body["next"] = "c2"
        return httpx.Response(200, json=body, headers=headers)

    specs = {
        "link_header": Pagination("link_header", items_path=("data",)),
        "next_url": Pagination("next_url", items_path=("data",), next_path=("next",)),
        "cursor": Pagination("cursor", items_path=("data",), next_path=("next",)),
        "cursor_from_item": Pagination(
            "cursor",
            items_path=("data",),
            cursor_param="after",
            cursor_from_item="id",
            has_more_path=("more",),
        ),
        "has_more": Pagination(
            "cursor", items_path=("data",), next_path=("next",), has_more_path=("more",)
        ),
        "offset": Pagination("offset", items_path=("data",), size_param="limit", page_size=2),
        "page": Pagination("page", items_path=("data",), size_param="per_page", page_size=2),
    }
    return specs[style], handler


@pytest.mark.parametrize(
    "style",
    ["link_header", "next_url", "cursor", "cursor_from_item", "has_more", "offset", "page"],
)
def test_every_style_is_lazy_and_walks_all_pages(style: str) -> None:
    spec, handler = two_pages(style)
    server = Recorder(handler)
    with Demo(transport=server.transport) as client:
        pager = client._paginate(op(spec))
        iterator = iter(pager)
        assert server.requests == []
        assert next(iterator).id == 1
        assert len(server.requests) == 1
        assert next(iterator).id == 2
        assert len(server.requests) == 1  # the second page is not fetched before it is needed
        assert [item.id for item in iterator] == [3, 4]
        pages = [ids(page) for page in pager.pages() if page]
    assert pages == [[1, 2], [3, 4]]
    # Offset and page styles only learn of the end from a short (here: empty) page.
    per_walk = 3 if style in {"offset", "page"} else 2
    assert len(server.requests) == 2 * per_walk


# -- loop protection -----------------------------------------------------------------------


def test_self_referencing_next_link_stops() -> None:
    server = Recorder(
        lambda r: httpx.Response(
            200, json=items(1), headers={"Link": '<https://api.test/items>; rel="next"'}
        )
    )
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(Pagination("link_header"))))) == [1]
    assert len(server.requests) == 1


def test_repeated_cursor_stops(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") is None:
            return httpx.Response(200, json={"data": items(1), "next": "c1"})
        return httpx.Response(200, json={"data": items(2), "next": "c1"})

    server = Recorder(handler)
    spec = Pagination("cursor", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2]
    assert len(server.requests) == 2
    assert "already followed" in caplog.text


def test_next_link_cycle_never_serves_a_page_twice() -> None:
    # Page 2 points back at page 1: the walk must stop, not fetch page 1 again.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json={"data": items(2), "next": "/items"})
        return httpx.Response(200, json={"data": items(1), "next": "/items?page=2"})

    server = Recorder(handler)
    spec = Pagination("next_url", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec)))) == [1, 2]
    assert len(server.requests) == 2


def test_cursor_equal_to_the_one_just_used_stops() -> None:
    # The caller resumes from cursor "c5" and the service answers with "c5" again.
    server = Recorder(lambda r: httpx.Response(200, json={"data": items(5), "next": "c5"}))
    spec = Pagination("cursor", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(spec), query={"cursor": "c5"}))) == [5]
    assert len(server.requests) == 1


# -- errors --------------------------------------------------------------------------------


def test_items_not_a_list_is_a_validation_error() -> None:
    server = Recorder(lambda r: httpx.Response(200, json={"data": {"id": 1}}))
    spec = Pagination("cursor", items_path=("data",), next_path=("next",))
    with Demo(transport=server.transport) as client:
        with pytest.raises(errors.ResponseValidationError, match="expected a list at data"):
            list(client._paginate(op(spec)))


def test_bad_item_is_a_validation_error() -> None:
    server = Recorder(lambda r: httpx.Response(200, json=[{"id": "x"}]))
    with Demo(transport=server.transport) as client:
        with pytest.raises(errors.ResponseValidationError) as info:
            list(client._paginate(op(Pagination("page"))))
    assert "0.id" in info.value.message
    assert "0.name: Field required" in info.value.message


def test_invalid_json_page_is_a_validation_error() -> None:
    server = Recorder(lambda r: httpx.Response(200, text="nope"))
    with Demo(transport=server.transport) as client:
        with pytest.raises(errors.ResponseValidationError):
            list(client._paginate(op(Pagination("page"))))


def test_error_status_on_a_later_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "1":
            return httpx.Response(200, json=items(1))
        return httpx.Response(404, json={"message": "gone"})

    server = Recorder(handler)
    found: list[Any] = []
    with Demo(transport=server.transport) as client:
        with pytest.raises(errors.NotFoundError, match="gone"):
            for item in client._paginate(op(Pagination("page"))):
                found.append(item)
    assert ids(found) == [1]


def test_pages_are_retried(sleeps: list[float]) -> None:
    answers = iter(
        [httpx.Response(200, json=items(1)), httpx.Response(503), httpx.Response(200, json=[])]
    )
    server = Recorder(lambda r: next(answers))
    with Demo(transport=server.transport) as client:
        assert ids(list(client._paginate(op(Pagination("page"))))) == [1]
    assert [r.url.params["page"] for r in server.requests] == ["1", "2", "2"]
    assert sleeps == [0.0]


# -- async ---------------------------------------------------------------------------------


def test_async_pager_walks_lazily() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        headers = {"Link": f'</items?page={page + 1}>; rel="next"'} if page < 3 else {}
        return httpx.Response(200, json=items(page), headers=headers)

    server = Recorder(handler)

    async def main() -> tuple[list[int], list[list[int]]]:
        async with AsyncDemo(transport=server.transport) as client:
            pager = client._paginate(op(Pagination("link_header")))
            assert server.requests == []
            found = [item.id async for item in pager]
            pages = [ids(p) async for p in pager.pages()]
        return found, pages

    found, pages = asyncio.run(main())
    assert found == [1, 2, 3]
    assert pages == [[1], [2], [3]]
    assert len(server.requests) == 6


def test_async_pager_cursor_and_loop_protection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        nxt = {None: "a", "a": "b", "b": "a"}[cursor]
        return httpx.Response(
            200, json={"data": items(len(cursor or "") + (cursor == "b")), "next": nxt}
        )

    server = Recorder(handler)
    spec = Pagination("cursor", items_path=("data",), next_path=("next",))

    async def main() -> list[int]:
        async with AsyncDemo(transport=server.transport) as client:
            return [item.id async for item in client._paginate(op(spec))]

    assert asyncio.run(main()) == [0, 1, 2]
    assert [r.url.params.get("cursor") for r in server.requests] == [None, "a", "b"]
