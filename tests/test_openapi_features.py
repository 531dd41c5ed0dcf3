"""OpenAPI import, feature by feature: a small hand-written document each, generated, imported.

Every test turns one document under ``tests/fixtures/openapi/`` into a connector package in
``tmp_path`` — through ``connector-builder import-openapi`` then ``generate``, or through a
spec whose ``source:`` names the document (an overlay) — imports that package under a unique
name, and asserts on what a user of the package sees: method signatures (argument names,
annotations as written, defaults), model fields, and what goes on the wire (respx).

The CLI is driven in-process through click's ``CliRunner``; every run must end with a known
exit status and never print a traceback, and every error must be located
(``FILE:LINE:COL: ...``).
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
import respx
import yaml
from click.testing import CliRunner, Result
from pydantic import TypeAdapter, ValidationError

from builder.cli import main
from builder.runtime import errors

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures" / "openapi"
LOCATED = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$", re.MULTILINE
)
REQUIRED = inspect.Parameter.empty
_counter = itertools.count()


# --------------------------------------------------------------------------- #
# Helpers: run the CLI, generate a package, import it
# --------------------------------------------------------------------------- #


def cli(*args: str | Path, exit_code: int | None = 0) -> Result:
    """Run the CLI in-process; never a traceback, never an exception escaping it."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    output = result.output  # stdout and stderr, interleaved
    assert "Traceback" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI raised {result.exception!r}\n{output}")
    assert result.exit_code in (0, 1, 2, 3), output
    if exit_code is not None:
        assert result.exit_code == exit_code, output
    return result


def located_errors(text: str) -> list[re.Match[str]]:
    """The located lines of an error report (``FILE:LINE:COL: ...``)."""
    return list(LOCATED.finditer(text))


@dataclass
class Generated:
    """A generated connector package, imported under a unique module name."""

    name: str
    spec: Path
    out: Path
    package: ModuleType
    client: ModuleType
    models: ModuleType
    stderr: str

    @property
    def cls(self) -> Any:
        """The sync client class."""
        return getattr(self.client, self.client.__all__[0])

    @property
    def async_cls(self) -> Any:
        return getattr(self.client, self.client.__all__[1])

    @property
    def directory(self) -> Path:
        return self.out / "connectors" / self.name


def load_package(out: Path, name: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import ``OUT/connectors/NAME`` as a fresh top-level package with a unique name.

    ``connectors`` is a namespace package already bound to the repository's ``generated/``;
    loading by file location under another name keeps every test's package separate.
    """
    directory = out / "connectors" / name
    unique = f"_openapi_feature_{name}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(
        unique, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[unique] = package
    spec.loader.exec_module(package)
    client = importlib.import_module(f"{unique}.client")
    models = importlib.import_module(f"{unique}.models")
    return package, client, models


def import_and_generate(tmp_path: Path, document: Path, name: str) -> Generated:
    """``import-openapi DOC --name NAME --out specs`` then ``generate specs/NAME.yaml``."""
    specs = tmp_path / "specs"
    cli("import-openapi", document, "--name", name, "--out", specs)
    spec = specs / f"{name}.yaml"
    assert spec.is_file()
    return generate(spec, tmp_path / "out", name)


def overlay(
    tmp_path: Path, document: Path, name: str, extra: dict[str, Any] | None = None, **source: Any
) -> Path:
    """Copy the document (and its directory's siblings) into ``tmp_path/specs`` and write a
    spec naming it as its ``source:``; return the spec's path."""
    specs = tmp_path / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for sibling in document.parent.iterdir():
        if sibling.is_file():
            shutil.copyfile(sibling, specs / sibling.name)
    data: dict[str, Any] = {
        "spec_version": 1,
        "name": name,
        "title": name.title(),
        "source": {"openapi": document.name, **source},
        **(extra or {}),
    }
    spec = specs / f"{name}.spec.yaml"  # never the name of a copied document
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return spec


def generate(spec: Path, out: Path, name: str) -> Generated:
    result = cli("generate", spec, "--out", out)
    assert (out / "connectors" / name / "client.py").is_file(), result.output
    package, client, models = load_package(out, name)
    return Generated(name, spec, out, package, client, models, result.stderr)


def from_source(tmp_path: Path, document: Path, name: str, **kwargs: Any) -> Generated:
    spec = overlay(tmp_path, document, name, **kwargs)
    return generate(spec, tmp_path / "out", name)


def signature(method: Any) -> dict[str, tuple[str, Any]]:
    """``{argument: (annotation as written, default or REQUIRED)}``, without ``self``."""
    params = inspect.signature(method).parameters
    out: dict[str, tuple[str, Any]] = {}
    for name, param in params.items():
        if name == "self":
            continue
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, f"{name} is not keyword-only"
        out[name] = (str(param.annotation), param.default)
    return out


def returns(method: Any) -> str:
    return str(inspect.signature(method).return_annotation)


def fields(model: Any) -> dict[str, str]:
    """A model's field annotations as written in models.py."""
    return dict(inspect.get_annotations(model))


def required_fields(model: Any) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.is_required()}


def methods(cls: Any) -> set[str]:
    from builder.runtime.client import SyncClient

    base = set(dir(SyncClient))
    return {
        name
        for name, value in vars(cls).items()
        if callable(value) and not name.startswith("_") and name not in base
    }


def query_pairs(request: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(str(request.url)).query, keep_blank_values=True)


def cookies_of(request: httpx.Request) -> dict[str, str]:
    header = request.headers.get("cookie", "")
    pairs = [part.strip().split("=", 1) for part in header.split(";") if part.strip()]
    return {k: v for k, v in pairs}


# --------------------------------------------------------------------------- #
# $ref
# --------------------------------------------------------------------------- #


def test_internal_refs_to_parameters_bodies_responses_and_schemas(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "refs" / "internal.yaml", "internal_refs")
    sig = signature(gen.cls.get_person)
    assert list(sig) == ["id"]
    assert sig["id"][0] in ("int", "Id")
    assert returns(gen.cls.get_person) == "Person"
    put = signature(gen.cls.replace_person)
    assert put["name"] == ("str", REQUIRED)
    assert put["address"][0].startswith("Address")
    assert fields(gen.models.Person) == {"name": "str", "address": "Address"}
    with respx.mock() as router:
        route = router.get("https://refs.example.com/v1/people/7").respond(
            json={"name": "Ada", "address": {"city": "London"}}
        )
        with gen.cls() as client:
            person = client.get_person(id=7)
    assert route.called
    assert isinstance(person, gen.models.Person)
    assert isinstance(person.address, gen.models.Address)
    assert person.address.city == "London"


def test_refs_to_relative_files_resolve(tmp_path: Path) -> None:
    """`common.yaml#/components/schemas/Address` (a shared file of schemas, not itself an
    OpenAPI document) and `pet.schema.json` (a whole file that is one JSON Schema)."""
    gen = from_source(tmp_path, FIXTURES / "refs" / "main.yaml", "file_refs")
    assert fields(gen.models.Person)["address"] == "Address"
    assert required_fields(gen.models.Address) == {"city"}
    person = gen.models.Person.model_validate(
        {"name": "Ada", "address": {"city": "London"}, "pet": {"species": "cat", "age": 3}}
    )
    assert person.address.city == "London"
    with pytest.raises(ValidationError):
        gen.models.Person.model_validate({"name": "Ada", "address": {"zip": "N1"}})


def test_import_openapi_keeps_relative_file_refs_working(tmp_path: Path) -> None:
    """import-openapi copies the document next to the spec; the files its `$ref`s reach must
    still be found when the spec is generated from another directory."""
    gen = import_and_generate(tmp_path, FIXTURES / "refs" / "main.yaml", "copied_refs")
    assert "get_person" in methods(gen.cls)
    assert fields(gen.models.Person)["address"] == "Address"


# --------------------------------------------------------------------------- #
# Schemas
# --------------------------------------------------------------------------- #


def test_circular_schemas_validate_nested_data(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "circular.yaml", "circular")
    Node = gen.models.Node
    assert fields(Node) == {
        "value": "int",
        "children": "list[Node] | None",
        "parent": "Node | None",
    }
    tree = {
        "value": 1,
        "children": [
            {"value": 2, "children": [{"value": 4, "children": []}]},
            {"value": 3, "parent": {"value": 1}},
        ],
    }
    with respx.mock() as router:
        router.get("https://tree.example.com/tree").respond(json=tree)
        router.get("https://tree.example.com/folders/f1").respond(
            json={"name": "docs", "files": [{"name": "a.txt", "folder": {"name": "docs"}}]}
        )
        with gen.cls() as client:
            node = client.get_tree()
            folder = client.get_folder(id="f1")
    assert isinstance(node, Node)
    assert isinstance(node.children[0].children[0], Node)
    assert node.children[0].children[0].value == 4
    assert node.children[1].parent.value == 1
    assert isinstance(folder.files[0].folder, gen.models.Folder)
    with pytest.raises(ValidationError):
        Node.model_validate({"value": 1, "children": [{"value": "not a number"}]})


def test_recursive_schema_that_is_not_an_object(tmp_path: Path) -> None:
    """`ErrorDetails = dict[str, ErrorDetails] | InnerErrors` (Discord's error shape)."""
    gen = import_and_generate(tmp_path, FIXTURES / "recursive_alias.yaml", "recursive_alias")
    details = TypeAdapter(gen.models.ErrorDetails)
    nested = {"user": {"name": {"_errors": ["too short"]}}}
    value = details.validate_python(nested)
    leaf = value["user"]["name"]
    assert leaf.model_dump(by_alias=True) == {"_errors": ["too short"]}
    with pytest.raises(ValidationError):
        details.validate_python({"user": {"name": {"_errors": "not a list"}}})
    with respx.mock() as router:
        router.post("https://errors.example.com/validate").respond(json=nested)
        with gen.cls() as client:
            assert isinstance(client.validate(name="x")["user"], dict)


def test_all_of_is_merged_into_one_model(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "allof.yaml", "all_of")
    Dog = gen.models.Dog
    assert fields(Dog) == {"id": "int", "name": "str", "barks": "bool", "breed": "str | None"}
    assert required_fields(Dog) == {"id", "name", "barks"}
    assert "barks" in (Dog.__doc__ or "")
    dog = Dog.model_validate({"id": 1, "name": "Rex", "barks": True})
    assert (dog.id, dog.name, dog.barks, dog.breed) == (1, "Rex", True, None)
    with pytest.raises(ValidationError):
        Dog.model_validate({"id": 1, "barks": True})  # `name` comes from the $ref member


def test_one_of_with_discriminator_validates_both_variants(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "oneof_discriminator.yaml", "one_of")
    pet = TypeAdapter(gen.models.Pet)
    cat = pet.validate_python({"kind": "cat", "meows": True})
    dog = pet.validate_python({"kind": "dog", "barks": 3})
    assert isinstance(cat, gen.models.Cat) and cat.meows is True
    assert isinstance(dog, gen.models.Dog) and dog.barks == 3
    with pytest.raises(ValidationError):
        pet.validate_python({"kind": "cat"})
    with respx.mock() as router:
        router.get("https://unions.example.com/pets/1").respond(json={"kind": "dog", "barks": 2})
        with gen.cls() as client:
            assert isinstance(client.get_pet(id=1), gen.models.Dog)


def test_any_of_without_discriminator_validates_both_variants(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "anyof.yaml", "any_of")
    value = TypeAdapter(gen.models.Value)
    assert value.validate_python(5) == 5
    labelled = value.validate_python({"label": "five", "amount": 5.0})
    assert labelled.label == "five"
    with pytest.raises(ValidationError):
        value.validate_python({"amount": 1.0})
    with respx.mock() as router:
        router.get("https://unions.example.com/values").respond(json=7)
        with gen.cls() as client:
            assert client.get_value() == 7


def test_nullable_openapi_3_0(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "nullable30.yaml", "nullable30")
    Thing = gen.models.Thing
    assert fields(Thing)["note"] == "str | None"
    assert fields(Thing)["count"] == "int | None"
    assert fields(Thing)["owner"] == "Owner | None"
    assert required_fields(Thing) == {"id", "note"}
    thing = Thing.model_validate({"id": "1", "note": None, "count": None, "owner": None})
    assert thing.note is None and thing.owner is None
    with pytest.raises(ValidationError):
        Thing.model_validate({"id": "1"})  # `note` is required even though it may be null
    assert signature(gen.cls.get_thing)["since"] == ("str | None", None)


def test_nullable_openapi_3_1_type_arrays(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "nullable31.yaml", "nullable31")
    Thing = gen.models.Thing
    annotations = fields(Thing)
    assert annotations["note"] == "str | None"
    assert annotations["size"] == "int | None"
    assert required_fields(Thing) == {"id", "note", "size"}
    thing = Thing.model_validate({"id": "1", "note": None, "size": None, "label": None})
    assert thing.note is None and thing.label is None
    with pytest.raises(ValidationError):
        Thing.model_validate({"id": "1", "note": 5, "size": None})


def test_one_of_with_a_null_member_is_just_nullable(tmp_path: Path) -> None:
    """3.1: `oneOf: [{type: string}, {type: "null"}]` is `str | None`, not `str | Any`."""
    gen = import_and_generate(tmp_path, FIXTURES / "nullable31.yaml", "null_member")
    assert fields(gen.models.Thing)["label"] == "str | None"
    with pytest.raises(ValidationError):
        gen.models.Thing.model_validate({"id": "1", "note": "x", "size": 1, "label": 5})


def test_enums_including_values_with_the_same_python_name(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "enums.yaml", "enums")
    assert set(typing.get_args(gen.models.Kind)) == {"a-b", "a_b", "A B", "1st", "class"}
    Item = gen.models.Item
    assert Item.model_validate({"kind": "a-b", "level": 1}).kind == "a-b"
    assert Item.model_validate({"kind": "a_b", "level": 3}).kind == "a_b"
    with pytest.raises(ValidationError):
        Item.model_validate({"kind": "a b", "level": 1})
    with pytest.raises(ValidationError):
        Item.model_validate({"kind": "a_b", "level": 4})
    sig = signature(gen.cls.list_items)
    assert sig["order"] == ("Literal['asc', 'desc']", "asc")
    assert sig["kind"][1] is None
    with respx.mock() as router:
        route = router.get("https://enums.example.com/items").respond(
            json=[{"kind": "a_b", "level": 2}]
        )
        with gen.cls() as client:
            items = client.list_items(kind="a-b")
    assert dict(query_pairs(route.calls.last.request)) == {"order": "asc", "kind": "a-b"}
    assert items[0].kind == "a_b"


def test_additional_properties_become_dicts(tmp_path: Path) -> None:
    gen = import_and_generate(
        tmp_path, FIXTURES / "additional_properties.yaml", "additional_properties"
    )
    annotations = fields(gen.models.Profile)
    assert annotations["labels"] == "dict[str, str] | None"
    assert annotations["extra"] == "dict[str, Any] | None"
    profile = gen.models.Profile.model_validate(
        {"name": "x", "labels": {"a": "b"}, "extra": {"n": [1, {"m": None}]}}
    )
    assert profile.labels == {"a": "b"}
    with pytest.raises(ValidationError):
        gen.models.Profile.model_validate({"name": "x", "labels": {"a": 1}})
    # A named schema that is only `additionalProperties: {type: integer}` is a dict of ints.
    scores = TypeAdapter(gen.models.Scores)
    assert scores.validate_python({"alice": 3, "bob": 5}) == {"alice": 3, "bob": 5}
    with pytest.raises(ValidationError):
        scores.validate_python({"alice": "three"})
    with respx.mock() as router:
        router.get("https://dicts.example.com/scores").respond(json={"alice": 3})
        with gen.cls() as client:
            assert client.get_scores() == {"alice": 3}


def test_read_only_fields_are_not_arguments(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "read_write_only.yaml", "read_only")
    sig = signature(gen.cls.create_account)
    assert "id" not in sig and "created_at" not in sig
    assert sig["email"] == ("str", REQUIRED)
    assert sig["password"] == ("str", REQUIRED)


def test_write_only_fields_need_not_come_back(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "read_write_only.yaml", "write_only")
    account = gen.models.Account.model_validate(
        {"id": "a1", "email": "a@example.com", "created_at": "2024-05-06T07:08:09Z"}
    )
    assert account.id == "a1"
    assert isinstance(account.created_at, datetime)


def test_formats_are_typed(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "formats.yaml", "formats")
    annotations = fields(gen.models.Event)
    assert annotations["id"] == "UUID"
    assert annotations["at"] == "datetime"
    assert annotations["day"] == "date"
    assert annotations["payload"] in ("str | None", "bytes | None")
    assert annotations["size"] == "int | None"
    assert annotations["ratio"] == "float | None"
    assert annotations["variation"] == "str"  # uuid, but "all" by default
    assert annotations["since"] == "datetime"  # a default that fits keeps the format
    event = gen.models.Event.model_validate(
        {"id": str(uuid.uuid4()), "at": "2024-01-02", "day": "2024-01-02"}
    )
    assert event.since == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)  # parsed, not text
    assert event.variation == "all"
    sig = signature(gen.cls.list_events)
    assert sig["after"][0] == "datetime | str | None"
    assert sig["day"][0] == "date | str | None"
    assert sig["owner"][0] == "UUID | str | None"
    owner = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with respx.mock() as router:
        route = router.get("https://formats.example.com/events").respond(
            json=[{"id": str(owner), "at": "2024-01-02T03:04:05Z", "day": "2024-01-02"}]
        )
        with gen.cls() as client:
            events = client.list_events(
                after=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), day=date(2024, 1, 2), owner=owner
            )
    query = dict(query_pairs(route.calls.last.request))
    assert datetime.fromisoformat(query["after"]) == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert query["day"] == "2024-01-02"
    assert query["owner"] == str(owner)
    assert events[0].id == owner
    assert events[0].at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert events[0].day == date(2024, 1, 2)


def test_schema_names_that_collide_in_python_get_distinct_valid_names(tmp_path: Path) -> None:
    """`metadata` and `_metadata` are both `Metadata` in PascalCase: the second needs another
    name that is still a valid schema name (the spec language wants PascalCase)."""
    gen = import_and_generate(tmp_path, FIXTURES / "schema_name_collision.yaml", "collision")
    response = fields(gen.models.GetThingResponse)
    assert response["meta"] != response["legacy"]
    thing = gen.models.GetThingResponse.model_validate(
        {"meta": {"count": 1}, "legacy": {"next": "n"}}
    )
    assert thing.meta.count == 1 and thing.legacy.next == "n"
    with pytest.raises(ValidationError):
        gen.models.GetThingResponse.model_validate({"meta": {"next": "n"}, "legacy": {"next": "n"}})


def test_fields_named_like_their_types(tmp_path: Path) -> None:
    """`date: date | None = None` in a class body makes `date` None for the annotations that
    pydantic evaluates afterwards: the generated models must still import and validate."""
    gen = import_and_generate(tmp_path, FIXTURES / "field_names.yaml", "field_names")
    Entry = gen.models.Entry
    entry = Entry.model_validate(
        {
            "id": 1,
            "date": "2024-01-02",
            "datetime": "2024-01-02T03:04:05Z",
            "time": "03:04:05",
            "uuid": "12345678-1234-5678-1234-567812345678",
        }
    )
    # Such a field gets a trailing underscore (like a keyword) and keeps its wire name.
    assert entry.date_ == date(2024, 1, 2)
    assert entry.datetime_ == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert isinstance(entry.uuid, uuid.UUID)
    assert Entry.model_validate({"id": 2}).date_ is None
    assert entry.model_dump(by_alias=True)["date"] == date(2024, 1, 2)
    # Builtins too: `list: list[str] | None = None` breaks `list[str]` the same way.
    listed = Entry.model_validate({"id": 3, "list": ["a"], "dict": {"n": 1}})
    dumped = listed.model_dump(by_alias=True)
    assert (dumped["list"], dumped["dict"]) == (["a"], {"n": 1})
    with pytest.raises(ValidationError):
        Entry.model_validate({"id": 4, "list": "not a list"})


def test_schemas_named_like_builtins(tmp_path: Path) -> None:
    """`Warning`, `Exception`, `Type` used before they are declared must mean the models,
    not Python's builtins."""
    gen = import_and_generate(tmp_path, FIXTURES / "builtin_names.yaml", "builtin_names")
    report = gen.models.Report.model_validate(
        {"id": "r", "warnings": [{"code": "W1"}], "error": {"message": "m"}, "kind": {"name": "k"}}
    )
    assert report.warnings[0].code == "W1"
    assert report.error.message == "m" and report.kind.name == "k"
    assert not isinstance(report.warnings[0], Warning)
    with pytest.raises(ValidationError):
        gen.models.Report.model_validate({"id": "r", "warnings": [{"text": "no code"}]})


def test_inline_model_named_like_a_component_schema_is_typed(tmp_path: Path) -> None:
    """The inline response of `facet` would be `FacetResponse`, a component schema's name: it
    gets another name, and the client's annotations name it (mypy --strict passes)."""
    gen = import_and_generate(tmp_path, FIXTURES / "inline_name_collision.yaml", "inline_names")
    wrapper = returns(gen.cls.facet)
    assert wrapper != "FacetResponse"
    assert fields(getattr(gen.models, wrapper))["result"] == "FacetResponse | None"
    with respx.mock() as router:
        router.post("https://inline.example.com/facet").respond(
            json={"result": {"hits": ["a"]}, "time": 0.5}
        )
        with gen.cls() as client:
            assert client.facet(key="k").result.hits == ["a"]
    checked = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-incremental",
            "--cache-dir", os.devnull, "-p", "connectors.inline_names",
        ],
        capture_output=True,
        text=True,
        cwd=gen.out,
        env={**os.environ, "MYPYPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --------------------------------------------------------------------------- #
# Parameters
# --------------------------------------------------------------------------- #


def test_path_query_header_and_cookie_parameters(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "params.yaml", "params")
    sig = signature(gen.cls.search_items)
    assert sig["org_id"] == ("str", REQUIRED)
    assert sig["q"] == ("str", REQUIRED)
    assert sig["x_request_id"] == ("str", REQUIRED)
    assert sig["limit"] == ("int", 20)
    assert sig["tags"] == ("list[str] | None", None)
    assert sig["ids"] == ("list[int] | None", None)
    assert sig["filter"][1] is None
    assert sig["session"] == ("str | None", None)
    assert sig["theme"] == ("str | None", None)
    with respx.mock() as router:
        route = router.get("https://params.example.com/api/orgs/acme%2Fone/items").respond(
            json=["x"]
        )
        with gen.cls() as client:
            assert client.search_items(
                org_id="acme/one",
                q="red shoes",
                x_request_id="req-1",
                tags=["a", "b"],
                session="s1",
                theme="dark",
            ) == ["x"]
    request = route.calls.last.request
    assert request.url.raw_path.startswith(b"/api/orgs/acme%2Fone/items")
    assert query_pairs(request) == [
        ("q", "red shoes"),
        ("limit", "20"),
        ("tags", "a"),
        ("tags", "b"),
    ]
    assert request.headers["X-Request-Id"] == "req-1"
    assert cookies_of(request) == {"session": "s1", "theme": "dark"}


def test_query_styles_explode_false_and_deep_object(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "params.yaml", "styles")
    with respx.mock() as router:
        route = router.get("https://params.example.com/api/orgs/o/items").respond(json=[])
        with gen.cls() as client:
            client.search_items(
                org_id="o",
                q="x",
                x_request_id="r",
                ids=[1, 2, 3],
                filter={"color": "red", "size": "L"},
            )
    pairs = query_pairs(route.calls.last.request)
    assert ("ids", "1,2,3") in pairs
    assert ("filter[color]", "red") in pairs
    assert ("filter[size]", "L") in pairs
    assert not [k for k, _ in pairs if k in ("filter", "color", "size")]


# --------------------------------------------------------------------------- #
# Request bodies and responses
# --------------------------------------------------------------------------- #


def test_request_bodies_json_form_multipart_binary_text(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "bodies.yaml", "bodies")
    assert signature(gen.cls.create_note)["title"] == ("str", REQUIRED)
    assert signature(gen.cls.login)["password"] == ("str", REQUIRED)
    assert signature(gen.cls.upload_file)["file"][0] == "bytes"
    assert signature(gen.cls.put_blob)["body"] == ("bytes", REQUIRED)
    assert signature(gen.cls.post_message)["body"] == ("str", REQUIRED)
    base = "https://bodies.example.com"
    with respx.mock() as router:
        note = router.post(f"{base}/notes").respond(201, json={"id": 1})
        login = router.post(f"{base}/login").respond(204)
        upload = router.post(f"{base}/uploads").respond(json={"size": 6})
        blob = router.put(f"{base}/blobs/k1").respond(204)
        message = router.post(f"{base}/messages").respond(204)
        with gen.cls() as client:
            assert client.create_note(title="hello").id == 1
            assert client.login(username="ada", password="s3cret&x=1") is None
            assert client.upload_file(file=b"\x00\x01data", caption="hi").size == 6
            assert client.put_blob(key="k1", body=b"\x00\xffraw") is None
            assert client.post_message(body="héllo") is None

    request = note.calls.last.request
    assert request.headers["content-type"].startswith("application/json")
    sent = json.loads(request.content)
    assert sent["title"] == "hello" and "body" not in sent

    request = login.calls.last.request
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(request.content.decode()) == {"username": ["ada"], "password": ["s3cret&x=1"]}

    request = upload.calls.last.request
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="file"' in body and b"filename=" in body and b"\x00\x01data" in body
    assert b'name="caption"' in body and b"hi" in body

    request = blob.calls.last.request
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.content == b"\x00\xffraw"

    request = message.calls.last.request
    assert request.headers["content-type"].startswith("text/plain")
    assert request.content.decode("utf-8") == "héllo"


def test_binary_and_text_responses_and_several_codes(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "responses.yaml", "responses")
    assert returns(gen.cls.download_report) == "bytes"
    assert returns(gen.cls.health) == "str"
    assert returns(gen.cls.get_widget) == "Widget"
    assert returns(gen.cls.delete_widget) == "None"
    base = "https://responses.example.com"
    pdf = b"%PDF-1.7\x00\xff\xfe"
    with respx.mock() as router:
        router.get(f"{base}/reports/r1.pdf").respond(
            content=pdf, headers={"content-type": "application/pdf"}
        )
        router.get(f"{base}/health").respond(text="all good")
        router.get(f"{base}/widgets/1").respond(json={"id": 1, "name": "one"})
        router.get(f"{base}/widgets/2").respond(202, json={"id": 2, "name": "two"})
        router.get(f"{base}/widgets/3").respond(404, json={"message": "no widget 3"})
        router.delete(f"{base}/widgets/1").respond(204)
        with gen.cls() as client:
            assert client.download_report(id="r1") == pdf
            assert client.health() == "all good"
            assert client.get_widget(id=1).name == "one"
            assert client.get_widget(id=2).name == "two"
            with pytest.raises(errors.NotFoundError) as caught:
                client.get_widget(id=3)
            assert client.delete_widget(id=1) is None
    assert caught.value.status_code == 404
    assert "no widget 3" in str(caught.value)


def test_servers_with_variables(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "servers.yaml", "servers")
    assert gen.client.SERVICE.base_url == "https://eu-west.api.example.com:8443/v2"
    with respx.mock() as router:
        route = router.get("https://eu-west.api.example.com:8443/v2/ping").respond(
            json={"ok": True}
        )
        other = router.get("http://127.0.0.1:9/v9/ping").respond(json={"ok": False})
        with gen.cls() as client:
            assert client.ping().ok is True
        with gen.cls(base_url="http://127.0.0.1:9/v9") as client:
            assert client.ping().ok is False
    assert route.called and other.called


# --------------------------------------------------------------------------- #
# Security
# --------------------------------------------------------------------------- #


def _me(gen: Generated, url: str = "https://secure.example.com/me", **settings: Any) -> Any:
    with respx.mock() as router:
        route = router.get(url__startswith=url).respond(json={"name": "me"})
        with gen.cls(**settings) as client:
            assert client.get_me().name == "me"
    return route.calls.last.request


def test_api_key_in_header(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "apikey_header.yaml", "key_header")
    assert "api_key" in inspect.signature(gen.cls.__init__).parameters
    request = _me(gen, api_key="k-123")
    assert request.headers["X-Api-Key"] == "k-123"
    assert "k-123" not in str(request.url)


def test_api_key_in_query(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "apikey_query.yaml", "key_query")
    request = _me(gen, api_key="k-123")
    assert dict(query_pairs(request)) == {"X-Api-Key": "k-123"}
    assert "X-Api-Key" not in request.headers


def test_api_key_in_cookie_alongside_a_cookie_parameter(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "apikey_cookie.yaml", "key_cookie")
    assert cookies_of(_me(gen, api_key="k-123")) == {"X-Api-Key": "k-123"}
    with respx.mock() as router:
        route = router.get("https://secure.example.com/me").respond(json={"name": "me"})
        with gen.cls(api_key="k-123") as client:
            client.get_me(lang="fr")
    assert cookies_of(route.calls.last.request) == {"X-Api-Key": "k-123", "lang": "fr"}


def test_http_bearer(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "bearer.yaml", "bearer")
    assert "token" in inspect.signature(gen.cls.__init__).parameters
    assert _me(gen, token="t-1").headers["Authorization"] == "Bearer t-1"


def test_http_basic(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "basic.yaml", "basic")
    request = _me(gen, username="ada", password="pa:ss")
    expected = base64.b64encode(b"ada:pa:ss").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


def test_oauth2_client_credentials(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "security" / "oauth2.yaml", "oauth")
    init = inspect.signature(gen.cls.__init__).parameters
    assert "client_id" in init and "client_secret" in init
    tokens = iter(["tok-1", "tok-2", "tok-3"])
    with respx.mock() as router:
        token_route = router.post("https://auth.oauth.example.com/token").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"access_token": next(tokens), "token_type": "bearer", "expires_in": 3600}
            )
        )
        api = router.get("https://api.oauth.example.com/me").mock(
            side_effect=[
                httpx.Response(200, json={"name": "first"}),
                httpx.Response(200, json={"name": "second"}),
                httpx.Response(401, json={"message": "token revoked"}),
                httpx.Response(200, json={"name": "after refresh"}),
            ]
        )
        with gen.cls(client_id="cid", client_secret="csecret") as client:
            assert client.get_me().name == "first"
            assert client.get_me().name == "second"
            assert token_route.call_count == 1  # cached across calls
            assert client.get_me().name == "after refresh"  # a 401 fetches a new token once
    assert token_route.call_count == 2
    token_request = token_route.calls[0].request
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["client_credentials"]
    assert "read" in form.get("scope", [""])[0].split()
    expected = base64.b64encode(b"cid:csecret").decode()
    assert token_request.headers["Authorization"] == f"Basic {expected}"
    bearer = [call.request.headers["Authorization"] for call in api.calls]
    assert bearer == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]


# --------------------------------------------------------------------------- #
# Swagger 2.0, naming
# --------------------------------------------------------------------------- #


def test_swagger_2_document(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "swagger2.json", "swagger_two")
    assert gen.client.SERVICE.base_url == "https://legacy.example.com/v1"
    assert signature(gen.cls.list_pets) == {
        "limit": ("int", 10),
        "tags": ("list[str] | None", None),
    }
    assert returns(gen.cls.list_pets) == "list[Pet]"
    assert signature(gen.cls.create_pet) == {
        "name": ("str", REQUIRED),
        "tag": ("str | None", None),
    }
    assert signature(gen.cls.upload_photo)["file"] == ("bytes", REQUIRED)
    assert fields(gen.models.Pet)["born"] == "date | None"
    base = "https://legacy.example.com/v1"
    with respx.mock() as router:
        pets = router.get(f"{base}/pets").respond(json=[{"id": 1, "name": "Rex"}])
        create = router.post(f"{base}/pets").respond(201, json={"id": 2, "name": "Tom"})
        photo = router.post(f"{base}/pets/2/photo").respond(json={"id": 2, "name": "Tom"})
        rename = router.post(f"{base}/pets/2/rename").respond(json={"id": 2, "name": "Tim"})
        with gen.cls() as client:
            assert client.list_pets(tags=["a", "b"])[0].name == "Rex"
            assert client.create_pet(name="Tom").id == 2
            client.upload_photo(pet_id=2, file=b"\x89PNG", caption="c")
            assert client.rename_pet(pet_id=2, name="Tim").name == "Tim"
    assert query_pairs(pets.calls.last.request) == [("limit", "10"), ("tags", "a,b")]
    assert json.loads(create.calls.last.request.content) == {"name": "Tom"}
    upload = photo.calls.last.request
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b"\x89PNG" in upload.content
    form = rename.calls.last.request
    assert form.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(form.content.decode()) == {"name": ["Tim"]}


def test_operation_names_from_operation_id_else_method_and_path(tmp_path: Path) -> None:
    gen = import_and_generate(tmp_path, FIXTURES / "naming.yaml", "naming")
    assert methods(gen.cls) == {
        "list_user_repos",  # operationId listUserRepos
        "post_users_user_id_repos",  # POST /users/{userId}/repos
        "get_http_status_checks",  # operationId Get-HTTPStatus.Checks
        "delete_v2_http_status_checks",  # DELETE /v2/HTTPStatus-checks
    }
    assert methods(gen.async_cls) == methods(gen.cls)
    assert inspect.iscoroutinefunction(gen.async_cls.list_user_repos)


# --------------------------------------------------------------------------- #
# The overlay: selection, rename, patches, skip
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"include_tags": ["pets"]}, {"list_pets", "create_pet", "delete_pet"}),
        ({"exclude_tags": ["pets", "internal"]}, {"list_stores"}),
        ({"include_paths": ["/pets*"], "exclude_tags": ["admin"]}, {"list_pets", "create_pet"}),
        ({"exclude_paths": ["/internal/*", "/pets/*"]}, {"list_pets", "create_pet", "list_stores"}),
        ({"include_operations": ["listStores", "get_stats"]}, {"list_stores", "get_stats"}),
        (
            {"exclude_operations": ["deletePet", "list_stores", "getStats"]},
            {"list_pets", "create_pet"},
        ),
        (
            {"include_tags": ["pets"], "rename": {"listPets": "all_pets", "deletePet": "remove"}},
            {"all_pets", "create_pet", "remove"},
        ),
    ],
    ids=[
        "include-tags",
        "exclude-tags",
        "paths",
        "exclude-paths",
        "include-ops",
        "exclude-ops",
        "rename",
    ],
)
def test_overlay_selection_and_rename(
    tmp_path: Path, source: dict[str, Any], expected: set[str]
) -> None:
    gen = from_source(tmp_path, FIXTURES / "selection.yaml", "selection", **source)
    assert methods(gen.cls) == expected


def test_overlay_patch_adds_pagination(tmp_path: Path) -> None:
    patch = {
        "operations": {
            "list_records": {
                "response": {"schema": "Record", "many": True},
                "pagination": {
                    "style": "cursor",
                    "items": "data",
                    "next": "next_cursor",
                    "cursor_param": "cursor",
                },
            }
        }
    }
    gen = from_source(tmp_path, FIXTURES / "pagination.yaml", "paged", extra=patch)
    base = "https://paged.example.com/records"
    with respx.mock() as router:
        route = router.get(url__startswith=base).mock(
            side_effect=[
                httpx.Response(200, json={"data": [{"id": 1}, {"id": 2}], "next_cursor": "c2"}),
                httpx.Response(200, json={"data": [{"id": 3}], "next_cursor": None}),
            ]
        )
        with gen.cls() as client:
            records = list(client.list_records(limit=2))
    assert [r.id for r in records] == [1, 2, 3]
    assert all(isinstance(r, gen.models.Record) for r in records)
    assert dict(query_pairs(route.calls[1].request)) == {"limit": "2", "cursor": "c2"}


def test_overlay_patch_naming_an_unknown_operation_is_a_located_error(tmp_path: Path) -> None:
    spec = overlay(
        tmp_path,
        FIXTURES / "pagination.yaml",
        "paged",
        extra={"operations": {"list_recordz": {"summary": "typo"}}},
    )
    result = cli("generate", spec, "--out", tmp_path / "out", exit_code=2)
    errors_ = [m for m in located_errors(result.stderr) if "list_recordz" in m.group(0)]
    assert errors_, result.stderr
    line = next(line for line in result.stderr.splitlines() if "list_recordz" in line)
    assert line.startswith(f"{spec}:")
    assert "did you mean 'list_records'" in line
    spec_lines = spec.read_text().splitlines()
    assert "list_recordz" in spec_lines[int(errors_[0].group("line")) - 1]
    assert not (tmp_path / "out" / "connectors").exists()


def _trace_line(document: Path) -> int:
    lines = document.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip() == "trace:")


def test_unconvertible_operation_not_skipped_is_an_error_at_the_document_line(
    tmp_path: Path,
) -> None:
    spec = overlay(tmp_path, FIXTURES / "unconvertible.yaml", "partly")
    result = cli("generate", spec, "--out", tmp_path / "out", exit_code=2)
    document = spec.parent / "unconvertible.yaml"
    hits = [m for m in located_errors(result.stderr) if m.group("file") == str(document)]
    assert hits, result.stderr
    assert int(hits[0].group("line")) in (_trace_line(document), _trace_line(document) + 1)
    assert "trace_debug" in result.stderr and "skip" in result.stderr
    assert not (tmp_path / "out" / "connectors").exists()


def test_unconvertible_operation_listed_under_skip_is_a_warning(tmp_path: Path) -> None:
    gen = from_source(
        tmp_path,
        FIXTURES / "unconvertible.yaml",
        "partly",
        extra={"skip": {"trace_debug": "TRACE cannot be expressed"}},
    )
    assert methods(gen.cls) == {"list_items"}
    warning = [line for line in gen.stderr.splitlines() if "trace_debug" in line]
    assert warning and "warning" in warning[0], gen.stderr
    assert LOCATED.match(warning[0])
    assert "trace_debug" in (gen.directory / "README.md").read_text()


def test_import_openapi_writes_the_skip_list(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    result = cli(
        "import-openapi", FIXTURES / "unconvertible.yaml", "--name", "partly", "--out", specs
    )
    assert "1 skipped" in result.output
    written = yaml.safe_load((specs / "partly.yaml").read_text())
    assert written["source"] == {"openapi": "partly.openapi.yaml"}
    assert set(written["skip"]) == {"trace_debug"}
    assert written["skip"]["trace_debug"].strip()
    assert (specs / "partly.openapi.yaml").read_bytes() == (
        FIXTURES / "unconvertible.yaml"
    ).read_bytes()
    gen = generate(specs / "partly.yaml", tmp_path / "out", "partly")
    assert methods(gen.cls) == {"list_items"}


# --------------------------------------------------------------------------- #
# Bad input to import-openapi: located, exit 2, no traceback
# --------------------------------------------------------------------------- #


def test_import_openapi_bad_input_is_located(tmp_path: Path) -> None:
    missing = cli(
        "import-openapi", tmp_path / "nope.yaml", "--name", "x", "--out", tmp_path, exit_code=2
    )
    assert located_errors(missing.stderr)
    broken = tmp_path / "broken.yaml"
    broken.write_text("openapi: 3.0.3\ninfo: {title: x\npaths: {}\n")
    result = cli("import-openapi", broken, "--name", "x", "--out", tmp_path / "o", exit_code=2)
    hits = located_errors(result.stderr)
    assert hits and hits[0].group("file") == str(broken) and int(hits[0].group("line")) >= 2
    not_openapi = tmp_path / "plain.yaml"
    not_openapi.write_text("just: a mapping\n")
    result = cli("import-openapi", not_openapi, "--name", "x", "--out", tmp_path / "o", exit_code=2)
    assert "not an OpenAPI document" in result.stderr
    result = cli(
        "import-openapi",
        FIXTURES / "servers.yaml",
        "--name",
        "Bad-Name",
        "--out",
        tmp_path / "o",
        exit_code=2,
    )
    assert located_errors(result.stderr)


def test_without_a_top_level_requirement_the_scheme_most_operations_name_is_used(
    tmp_path: Path,
) -> None:
    gen = import_and_generate(
        tmp_path, FIXTURES / "security" / "per_operation.yaml", "per_operation"
    )
    init = inspect.signature(gen.cls.__init__).parameters
    assert "api_key" in init and "token" not in init
    assert _me(gen, "https://ops.example.com/me", api_key="k-9").headers["X-Key"] == "k-9"


def test_oauth2_asks_only_for_the_scopes_the_document_requires(tmp_path: Path) -> None:
    import_and_generate(tmp_path, FIXTURES / "security" / "oauth2.yaml", "oauth_scopes")
    spec = yaml.safe_load((tmp_path / "specs" / "oauth_scopes.yaml").read_text())
    document = tmp_path / "specs" / "oauth_scopes.openapi.yaml"
    from builder.openapi.convert import convert
    from builder.openapi.document import load_document

    assert spec["source"]["openapi"] == document.name
    auth = convert(load_document(document), "oauth_scopes").spec["auth"]
    assert auth["scopes"] == ["read"]  # the flow offers read and write; getMe needs read
