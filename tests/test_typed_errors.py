"""Documented error bodies arrive decoded on the raised error (`.error`)."""

from __future__ import annotations

import httpx
import pytest
import respx

from builder.runtime.errors import NotFoundError, ServerError
from builder.runtime.resilience import RetryPolicy
from connectors.example import Example, Problem

NOTE = "123e4567-e89b-12d3-a456-426614174000"
URL = f"https://notes.example.com/api/notes/{NOTE}"


def client() -> Example:
    return Example(api_key="k", retry=RetryPolicy(attempts=1))


def test_a_documented_404_body_is_decoded() -> None:
    with respx.mock() as mock:
        mock.get(URL).respond(404, json={"code": "missing", "message": "no such note"})
        with client() as notes, pytest.raises(NotFoundError) as caught:
            notes.get_note(note_id=NOTE)
    assert isinstance(caught.value.error, Problem)
    assert caught.value.error.code == "missing"
    assert "no such note" in str(caught.value)


def test_the_default_entry_covers_other_statuses() -> None:
    with respx.mock() as mock:
        mock.get(URL).respond(500, json={"code": "boom"})
        with client() as notes, pytest.raises(ServerError) as caught:
            notes.get_note(note_id=NOTE)
    assert isinstance(caught.value.error, Problem) and caught.value.error.code == "boom"


def test_an_undocumented_body_leaves_error_empty_but_keeps_the_text() -> None:
    with respx.mock() as mock:
        mock.get(URL).mock(return_value=httpx.Response(404, text="<html>not found</html>"))
        with client() as notes, pytest.raises(NotFoundError) as caught:
            notes.get_note(note_id=NOTE)
    assert caught.value.error is None
    assert "<html>" in caught.value.body
