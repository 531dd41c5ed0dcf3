"""Formatting: black only where it changes something, with black's result byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

import builder.render as render
from builder import formatting
from builder.formatting import FormatError, black, format_python
from builder.generate import load_all
from builder.ir import build

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path / "cache"))


def _raw_modules(spec: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What the templates write for ``spec``, before formatting."""
    raw: dict[str, str] = {}
    monkeypatch.setattr(render, "format_python", lambda source, name: raw.setdefault(name, source))
    for item in load_all([spec]):
        render.render_package(build(item.loaded.spec, item.path.name))
    return raw


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_prebuilt_module_is_exactly_what_black_makes_of_the_template_output(
    spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _raw_modules(spec, monkeypatch)
    assert raw
    for name, source in raw.items():
        assert format_python(source, name) == black(source), name


# Blank lines as black places them (the templates' job), but for runs that are too long;
# statements as black would never write them.
MESSY = '''"""Module docstring.  (Long lines on purpose.)

With a blank line inside, which stays.
"""

import os

x = {"a": 1}



def short() -> None:
    pass


class Thing:
    """A class.


    Two blank lines above, inside the docstring: kept.
    """

    value: int = 1


    def method(self, first_argument_with_a_long_name: int, second_argument_with_a_long_name: str) -> dict[str, int]:
        if first_argument_with_a_long_name > 1 and second_argument_with_a_long_name != "a value":
            return {"first": first_argument_with_a_long_name, "second": len(second_argument_with_a_long_name), "third": 3}
        elif first_argument_with_a_long_name < -100000 and second_argument_with_a_long_name == "another value":
            return {}
        else:
            return {"first": 1}

    @property
    def prop(self) -> int:
        return self.value


async def run(items: list[int]) -> None:
    for item in items:
        await something_with_a_rather_long_name(item, keyword_argument=item * 2, another_keyword=item + 1)
    with open("f") as handle:
        handle.write(
            "x"
        )
    try:
        pass
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, LookupError, OSError) as exc:
        raise RuntimeError("failed to run the thing that was supposed to run without failing") from exc



'''


def test_a_messy_module_comes_out_as_black_makes_it() -> None:
    assert format_python(MESSY, "messy.py") == black(MESSY)


def test_a_statement_that_fits_is_not_given_to_black(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = formatting._black_batch

    def spy(texts: list[str]) -> list[str]:
        seen.extend(texts)
        return real(texts)

    monkeypatch.setattr(formatting, "_black_batch", spy)
    source = 'x = 1\n\n\ndef f(a: int) -> int:\n    """Doc."""\n    return a\n'
    assert format_python(source, "m.py") == black(source)
    assert seen == []
    long = "\n\ny = [" + ", ".join(f"item_{i}" for i in range(30)) + "]\n"
    assert format_python(source + long, "m.py") == black(source + long)
    assert len(seen) == 1 and seen[0].endswith(long.lstrip())


def test_parts_are_formatted_in_parallel_and_then_read_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(formatting, "PARALLEL_ABOVE", 4)
    source = "".join(
        f"def function_number_{i}(first_parameter: int, second: str, third: float) -> None:\n"
        f"    call_something(first_parameter, second, third, {i}, keyword_argument={i}, x=1)\n\n\n"
        for i in range(12)
    )
    expected = black(source)
    assert format_python(source, "m.py") == expected

    def refuse(texts: list[str]) -> list[str]:
        raise AssertionError(f"formatted again: {len(texts)} parts")

    monkeypatch.setattr(formatting, "_format_many", refuse)
    assert format_python(source, "m.py") == expected


def test_generated_code_that_does_not_parse_is_a_builder_bug() -> None:
    with pytest.raises(FormatError, match="does not parse"):
        format_python("def f(:\n", "broken.py")


CORPUS = ROOT.parent / "shared" / "corpus" / "openapi"
# Documents with what the templates must lay out themselves: long signatures, request
# bodies, error maps, unions, enums, form and multipart bodies, Swagger 2.0.
CORPUS_DOCUMENTS = [
    "swagger-api__openapi.yaml",
    "nytimes__books-api-books-api.json",
    "docusign__maestro-v1-0-0.json",
    "hubspot__crm-objects-v3-objects.json",
    "twilio__twilio-voice-v1.yaml",
    "typesense__openapi.yml",
    "adyen__recurringservice-v68.yaml",
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", CORPUS_DOCUMENTS)
def test_corpus_documents_come_out_as_black_makes_them(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (CORPUS / name).is_file():
        pytest.skip(f"the OpenAPI corpus is not at {CORPUS} (it comes with shared/)")
    from click.testing import CliRunner

    from builder.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(
        main, ["import-openapi", str(CORPUS / name), "--name", "doc", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    raw = _raw_modules(tmp_path / "doc.yaml", monkeypatch)
    for module, source in raw.items():
        assert format_python(source, module) == black(source), module
