"""Parsing OpenAPI documents: the direct YAML walk gives exactly what PyYAML gives."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from builder.openapi import document
from builder.openapi.document import _NoDatesLoader, parse

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "openapi"
YAML_DOCUMENTS = sorted(
    p for p in [*CORPUS.glob("*.yaml"), *CORPUS.glob("*.yml")] if p.stat().st_size < 600 * 1024
) + sorted((ROOT / "tests" / "fixtures" / "openapi").rglob("*.yaml"))


def pyyaml(text: str) -> object:
    return yaml.load(text, Loader=_NoDatesLoader)  # noqa: S506 - a safe loader


def same(ours: object, theirs: object) -> bool:
    """Equal in type, value and key order (``==`` takes 1 for True and ignores order)."""
    return pickle.dumps(ours) == pickle.dumps(theirs)


@pytest.mark.parametrize("path", YAML_DOCUMENTS, ids=[p.name for p in YAML_DOCUMENTS])
def test_real_documents_parse_as_pyyaml_parses_them(path: Path) -> None:
    text = path.read_text("utf-8")
    assert same(parse(text, str(path)), pyyaml(text))


UNUSUAL = {
    "anchors and aliases": "a: &x {k: [1, 2]}\nb: *x\nc: [*x, *x]\n",
    "merge keys": "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n",
    "scalar types": "i: 12\nf: 1.5e3\nt: yes\nn: ~\nd: 2024-01-02\nh: 0x1F\ns: '12'\n",
    "non-string keys": "200: ok\n1.5: x\ntrue: t\n~: none\n",
    "a recursive alias": "a: &a [1, *a]\n",
    "sequence of mappings": "- {a: 1}\n- [b, {c: null}]\n- plain\n",
    "empty": "a: {}\nb: []\nc:\n",
    # The parser's tag for a plain scalar is remembered by its text: quoted text is a
    # string however it reads, and the same text in another place is typed alike.
    "one text plain and quoted": "a: 12\nb: '12'\nc: 12\nd: \"yes\"\ne: yes\nf: [yes, 'no', no]\n"
    "g: 1.5\nh: '1.5'\ni: null\nj: 'null'\nk: ~\n",
    "keys plain and quoted": "12: a\n'12': b\ntrue: c\n'true': d\n",
}


@pytest.mark.parametrize("text", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_unusual_yaml_is_what_pyyaml_makes_of_it(text: str) -> None:
    ours, theirs = parse(text, "x.yaml"), pyyaml(text)
    if "recursive" in text or "&a [1, *a]" in text:
        assert ours["a"][1] is ours["a"] and theirs["a"][1] is theirs["a"]
    else:
        assert same(ours, theirs)


def test_an_alias_is_one_object_as_with_pyyaml() -> None:
    data = parse("a: &x {k: 1}\nb: *x\n", "x.yaml")
    assert data["a"] is data["b"]


def test_an_unhashable_key_is_a_located_error() -> None:
    from builder.diagnostics import InputError

    with pytest.raises(InputError, match="x.yaml:1:"):
        parse("? [a, b]\n: value\n", "x.yaml")


def test_a_large_document_is_converted_once_then_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.openapi import convert as conversion
    from builder.openapi.document import load_document

    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path))
    monkeypatch.setattr(conversion, "CACHED_ABOVE", 0)
    path = ROOT / "tests" / "fixtures" / "openapi" / "bodies.yaml"
    first = conversion.convert(load_document(path), "bodies")

    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(conversion, "_Converter", refuse)
    again = conversion.convert(load_document(path), "bodies")
    assert again == first and again.spec is not first.spec
    with pytest.raises(AssertionError, match="converted again"):  # another name: another key
        conversion.convert(load_document(path), "other")


def test_a_document_with_references_to_other_files_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.openapi import convert as conversion
    from builder.openapi.document import load_document

    monkeypatch.setenv("CONNECTOR_BUILDER_CACHE", str(tmp_path))
    monkeypatch.setattr(conversion, "CACHED_ABOVE", 0)
    conversion.convert(load_document(ROOT / "tests/fixtures/openapi/refs/main.yaml"), "refs")
    assert not list(tmp_path.rglob("*.marshal"))


# -- a large document read in two halves --------------------------------------------------

HALVES = {
    "a key written again after the cut": "a: {x: 1}\nb: 2\nc: 3\na: {y: 1}\n",
    "a nested key written again": "c:\n  s:\n    k1: 1\n    k2: 2\n    k3: 3\n  s:\n    k4: 4\n",
    "the holding key written twice": "c:\n  s:\n    k1: 1\n    k2: 2\nc:\n  s:\n    k3: 3\n",
    "an alias to the other half": "a: &x {k: 1}\nb:\n  c: 1\n  d: 2\n  e: *x\n",
    "keys inside a block scalar": "a:\n  b: |\n    x: 1\n    y: 2\n    z: 3\n  c: 3\n",
    "keys inside a quoted scalar": 'a:\n  b: "x\n    y: 1\n    z: 2"\n  c: 2\n',
    "keys inside a flow mapping": "a:\n  b: {x: 1,\n    y: 2,\n    z: 3}\n  c: 3\n",
    "a top-level merge key": "base: &b {x: 1}\nq: 1\n<<: *b\nc: 2\n",
    "comments and blank lines": "a:\n  # c\n\n  b:\n    x: 1\n\n    # d\n    y: 2\n    z: 3\n",
    "a sequence holds the keys": "a:\n  - x: 1\n    y: 2\n    z: 3\n  - w: 4\n",
    "keys after the nested ones": "c:\n  s:\n    k1: 1\n    k2: 2\n    k3: 3\n  t: 1\nd: 2\n",
    "a holding key with spaces before its colon": "c  :\n  s:\n"
    + "".join(f"    k{i}: {i}\n" for i in range(6)),
    "a holding key YAML 1.1 reads as true": "on:\n  s:\n"
    + "".join(f"    k{i}: {i}\n" for i in range(6)),
    "a holding key written twice, once quoted": (
        'c:\n  s:\n    k0: 0\n"c":\n  s:\n    k1: 1\n    k2: 2\n    k3: 3\n'
    ),
    "sequences at the first column": "servers:\n- url: a\n  x: 1\n- url: b\ntags:\n- name: t\n"
    + "c:\n  s:\n"
    + "".join(f"    k{i}:\n    - {i}\n" for i in range(6)),
    "a sequence, not a mapping": "- a: 1\n  b: 2\n- c: 3\n  d: 4\n  e: 5\n",
    "typed scalars": "a:\n  s:\n    n: 12\n    t: yes\n    f: 1.5\n    d: 2024-01-02\n    z: ~\n",
}


@pytest.mark.parametrize("text", HALVES.values(), ids=HALVES.keys())
def test_a_document_read_in_halves_is_what_pyyaml_makes_of_it(text: str) -> None:
    halves = document._parse_in_halves(text, fork=False)
    assert halves is None or same(halves, pyyaml(text))


def test_keys_that_yaml_reads_otherwise_are_joined_as_yaml_reads_them() -> None:
    for name in (
        "a holding key with spaces before its colon",
        "a holding key YAML 1.1 reads as true",
    ):
        text = HALVES[name]
        halves = document._parse_in_halves(text, fork=False)
        assert halves is not None and same(halves, pyyaml(text)), name


def test_documents_are_cut_where_they_can_be() -> None:
    # Cut: under nested keys, and at the top; the text read as two documents.
    for text in (HALVES["a nested key written again"], HALVES["keys after the nested ones"]):
        assert document._cut(text) is not None
    assert document._cut("a:\n  b: 1\n  c: 2\nd: 3\n") is not None
    # Not inside a block scalar (its lines look like keys): after it.
    text = HALVES["keys inside a block scalar"]
    found = document._cut(text)
    assert found is not None and text[found[0] :].startswith("  c: 3") and found[1] == ["a"]
    # Not where a sequence holds the lines after the middle.
    assert document._cut(HALVES["a sequence holds the keys"]) is None


@pytest.mark.parametrize("path", YAML_DOCUMENTS, ids=[p.name for p in YAML_DOCUMENTS])
def test_real_documents_read_in_halves_are_what_pyyaml_makes_of_them(path: Path) -> None:
    text = path.read_text("utf-8")
    halves = document._parse_in_halves(text, fork=False)
    assert halves is None or same(halves, pyyaml(text))


def test_the_half_read_in_a_child_process_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"k{i}:\n  a: {i}\n  b: [x, y]\n" for i in range(3000))
    monkeypatch.setattr(document, "SPLIT_ABOVE", 1)
    assert same(document._parse_in_halves(text, fork=True), pyyaml(text))
    # A half that fails (here: in the child) makes the whole text read as one.
    broken = text + "z: [unclosed\n"
    with pytest.raises(document.InputError, match="x.yaml:"):
        parse(broken, "x.yaml")
