"""Rendering details: chunked black formatting equals whole-module formatting; filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.render import (
    RenderError,
    _black,
    annotation,
    decoder,
    docstring,
    format_python,
    literal,
)

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "generated" / "connectors").glob("*/*.py"))


@pytest.mark.parametrize("module", MODULES, ids=[f"{m.parent.name}/{m.name}" for m in MODULES])
def test_chunked_formatting_is_byte_identical_to_black(
    module: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path))
    source = module.read_text()
    # Undo black's work a little (blank lines collapsed) so the chunker has something to do.
    messy = source.replace("\n\n\n", "\n\n")
    assert format_python(messy, module.name, chunked_above=5) == _black(messy)
    # Second run: every part comes from the cache, with the same result.
    assert format_python(messy, module.name, chunked_above=5) == _black(messy)


def test_literal_refuses_objects_and_escapes_strings() -> None:
    assert literal('a"b\n') == "'a\"b\\n'"
    assert literal(b"\x00") == "b'\\x00'"
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
