"""Server-sent events and newline-delimited JSON, decoded line by line.

Our own SSE decoder rather than a library's: it is a few lines on the streaming hot path,
and it can tell a stream that was cut mid-event (an error) from one that ended cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feeds on lines (without their line ending); returns an event at each blank line."""

    __slots__ = ("_event", "_data", "_id", "_retry", "_pending")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self._pending = False

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._pending:
                return None
            event = ServerSentEvent(
                self._event or "message", "\n".join(self._data), self._id, self._retry
            )
            self._event, self._data, self._retry, self._pending = "", [], None, False
            return event
        if line[0] == ":":
            return None  # a comment, e.g. a keep-alive
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        self._pending = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    @property
    def mid_event(self) -> bool:
        """True when lines of an event arrived but not the blank line that ends it."""
        return self._pending
