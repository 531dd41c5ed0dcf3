"""Rendering details: the filters that carry spec text into generated code."""

from __future__ import annotations

from pathlib import Path

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


def test_compiled_templates_are_kept_beside_them_or_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Templates are compiled once per install, as Python modules are: a fresh process loads
    them compiled, from ``__pycache__`` beside the templates or, when that is read-only,
    from the cache."""
    import os
    import shutil

    import jinja2

    from builder import render

    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path / "cache"))
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(render, "TEMPLATES", templates)

    beside = render._template_bytecode(jinja2)
    assert beside.directory == str(templates / "__pycache__")

    # A read-only install: the templates' folder cannot be written.
    writable = os.access
    with monkeypatch.context() as patch:
        patch.setattr(
            os,
            "access",
            lambda p, mode: (
                writable(p, mode)
                and templates not in Path(p).parents
                and Path(p) != templates / "__pycache__"
            ),
        )
        cached = render._template_bytecode(jinja2)
    assert cached.directory == str(tmp_path / "cache" / "templates")

    compiled: list[str] = []

    class Counting(jinja2.Environment):
        def _compile(self, source: str, filename: str) -> object:
            compiled.append(filename)
            return super()._compile(source, filename)

    def fresh() -> jinja2.Environment:
        return Counting(
            loader=jinja2.FileSystemLoader(str(templates)),
            bytecode_cache=render._template_bytecode(jinja2),
        )

    (templates / "hello.j2").write_text("hello {{ name }}\n")
    fresh().get_template("hello.j2")
    assert compiled and list((templates / "__pycache__").iterdir())
    compiled.clear()
    fresh().get_template("hello.j2")  # a new process would do the same
    assert compiled == []
    (templates / "hello.j2").write_text("changed {{ name }}\n")
    assert fresh().get_template("hello.j2").render(name="x") == "changed x"
    assert compiled
