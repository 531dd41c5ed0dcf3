"""Rendering details: the filters that carry spec text into generated code."""

from __future__ import annotations

import pytest

from builder.render import (
    RenderError,
    annotation,
    decoder,
    docstring,
    literal,
)


def test_literal_refuses_objects_and_escapes_strings() -> None:
    assert literal('a"b\n') == "'a\"b\\n'"  # black keeps single quotes: fewer escapes
    assert literal("it's") == '"it\'s"'
    assert literal("plain") == '"plain"'
    assert literal(b"\x00") == 'b"\\x00"'
    assert literal((1,)) == "(1,)"
    with pytest.raises(RenderError):
        literal(object())


def test_docstring_cannot_close_the_docstring() -> None:
    text = docstring('end """ here \\ and \u202e"')
    assert '"""' not in text and "\u202e" not in text and text.endswith('\\"')


@pytest.mark.parametrize("bad", ["__import__('os')", "x()", "[a for a in b]", "lambda: 1", "a.b()"])
def test_annotations_allow_only_type_syntax(bad: str) -> None:
    with pytest.raises(RenderError):
        annotation(bad)
    with pytest.raises(RenderError):
        decoder(f"lazy=lambda: {bad}")


def test_decoder_allows_lazy_model_lookups() -> None:
    text = "lazy=lambda: GenericAlias(dict, (str, _models().Item))"
    assert decoder(text) == text
    assert decoder("lazy=lambda: _models().Item, many=True").endswith("many=True")
