"""Pagination styles: cursor, offset/limit, page number, Link header, next URL in the body.

:class:`PageWalk` holds the state of one walk through the pages and decides, from each
response, what to request next. It does no I/O, so the sync and async pagers share it. A
walk stops when a next link or cursor repeats one already followed, so a service that
points back at a page it served cannot send it round in circles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

__all__ = ["PageWalk", "Pagination", "dig"]


def _warn(message: str, *args: Any) -> None:
    import logging  # only when it has something to say

    logging.getLogger("connectors.pagination").warning(message, *args)


def dig(data: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path in decoded JSON, or None where it is missing."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


@dataclass(frozen=True, slots=True)
class Pagination:
    """How an operation's results are split into pages (declared in the spec)."""

    style: Literal["link_header", "next_url", "cursor", "offset", "page"]
    items_path: tuple[str, ...] = ()
    # next_url: where the next URL is; cursor: where the next cursor is.
    next_path: tuple[str, ...] = ()
    # cursor: the query parameter that carries it, or take it from a field of the last item.
    cursor_param: str = "cursor"
    cursor_from_item: str | None = None
    has_more_path: tuple[str, ...] = ()
    # offset and page: parameter names and the page size to ask for.
    offset_param: str = "offset"
    page_param: str = "page"
    size_param: str | None = None
    page_size: int | None = None
    start_page: int = 1


class PageWalk:
    """One walk through the pages of a paginated operation."""

    __slots__ = ("spec", "query", "url", "_seen", "_pages")

    def __init__(self, spec: Pagination, query: dict[str, Any]) -> None:
        self.spec = spec
        self.query = query
        self.url: str | None = None  # an absolute next URL replaces path and query
        self._seen: set[Any] = set()
        self._pages = 0
        if spec.size_param and spec.page_size and query.get(spec.size_param) is None:
            query[spec.size_param] = spec.page_size
        if spec.style == "page" and query.get(spec.page_param) is None:
            query[spec.page_param] = spec.start_page
        if spec.style == "offset" and query.get(spec.offset_param) is None:
            query[spec.offset_param] = 0
        if spec.style == "cursor" and query.get(spec.cursor_param) not in (None, ""):
            self._seen.add(query[spec.cursor_param])  # a cursor leading back here ends the walk

    def items(self, body: Any) -> list[Any]:
        found = dig(body, self.spec.items_path) if self.spec.items_path else body
        if found is None:
            return []
        if not isinstance(found, list):
            raise ValueError(f"expected a list at {'.'.join(self.spec.items_path) or 'the top'}")
        return found

    def advance(self, response: httpx.Response, body: Any, items: list[Any]) -> bool:
        """Set up the next request; False when there are no more pages."""
        spec = self.spec
        self._pages += 1
        if spec.style == "link_header":
            link = response.links.get("next")
            return self._follow(link.get("url") if link else None, response)
        if spec.style == "next_url":
            return self._follow(dig(body, spec.next_path), response)
        if not items:
            return False
        if spec.has_more_path and not dig(body, spec.has_more_path):
            return False
        if spec.style == "cursor":
            if spec.cursor_from_item:
                last = items[-1]
                cursor = last.get(spec.cursor_from_item) if isinstance(last, dict) else None
            else:
                cursor = dig(body, spec.next_path)
            if cursor in (None, "") or cursor in self._seen:
                if cursor:
                    _warn("pagination stopped: cursor %r was already followed", cursor)
                return False
            self._seen.add(cursor)
            self.query[spec.cursor_param] = cursor
            return True
        size = self.query.get(spec.size_param) if spec.size_param else None
        if size is not None and not spec.has_more_path and len(items) < int(size):
            return False  # a short page is the last one
        if spec.style == "offset":
            self.query[spec.offset_param] = int(self.query[spec.offset_param]) + len(items)
        else:
            self.query[spec.page_param] = int(self.query[spec.page_param]) + 1
        return True

    def _follow(self, target: Any, response: httpx.Response) -> bool:
        if not target or not isinstance(target, str):
            return False
        self._seen.add(str(response.request.url))  # the page just served
        url = str(response.request.url.join(target))
        if url in self._seen:
            _warn("pagination stopped: next link %s was already followed", url)
            return False
        self._seen.add(url)
        self.url = url
        return True
