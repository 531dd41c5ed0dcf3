"""End to end: a connector generated from the corpus Petstore document, against a live server.

The document is ``shared/corpus/openapi/swagger-api__openapi.yaml`` (Petstore 3). It goes
through ``connector-builder import-openapi`` (into ``tmp_path``), then — as the written
spec's header invites — the spec gets an ``auth`` key (the document declares an ``api_key``
header scheme but names no scheme for the whole API), then ``connector-builder generate``.
The package is imported under a unique name and called against ``tests/servers/petstore.py``,
a Starlette app with in-memory state started by ``tests.servers.runner.run_server``.

Skipped, with a reason, when the corpus is absent.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from builder.cli import main
from builder.runtime import errors
from builder.runtime.resilience import RetryPolicy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "openapi"
DOCUMENT = CORPUS / "swagger-api__openapi.yaml"
API_KEY = "special-key"  # what tests/servers/petstore.py accepts
NO_RETRY = RetryPolicy(attempts=1)


def _cli(*args: str | Path) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def petstore(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The generated package's ``client`` module (``.models`` beside it)."""
    if not DOCUMENT.is_file():
        pytest.skip(f"the OpenAPI corpus is not at {CORPUS} (it comes with shared/)")
    root = tmp_path_factory.mktemp("petstore")
    document = root / "swagger-api__openapi.yaml"
    shutil.copyfile(DOCUMENT, document)
    specs = root / "specs"
    _cli("import-openapi", document, "--name", "petstore", "--out", specs)
    spec = specs / "petstore.yaml"
    with spec.open("a", encoding="utf-8") as handle:
        handle.write(
            yaml.safe_dump(
                {
                    "config": {
                        "api_key": {"secret": True, "env": "PETSTORE_API_KEY", "required": False}
                    },
                    "auth": {
                        "type": "api_key",
                        "name": "api_key",
                        "in": "header",
                        "value": "{config.api_key}",
                    },
                },
                sort_keys=False,
            )
        )
    out = root / "out"
    _cli("generate", spec, "--out", out)
    directory = out / "connectors" / "petstore"
    unique = f"_petstore_e2e_{uuid.uuid4().hex[:8]}"
    module_spec = importlib.util.spec_from_file_location(
        unique, directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    assert module_spec is not None and module_spec.loader is not None
    package = importlib.util.module_from_spec(module_spec)
    sys.modules[unique] = package
    module_spec.loader.exec_module(package)
    return importlib.import_module(f"{unique}.client")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    missing = [m for m in ("uvicorn", "starlette") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"end-to-end tests need {' and '.join(missing)} (pip install -e .[dev])"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; not skipping under CI=true")
        pytest.skip(reason)
    from tests.servers.runner import run_server

    with run_server(app_path="tests.servers.petstore:app", ready_path="/_health") as url:
        yield url


@pytest.fixture
def api(petstore: ModuleType, server: str) -> Iterator[Any]:
    with petstore.Petstore(base_url=f"{server}/api/v3", api_key=API_KEY, retry=NO_RETRY) as c:
        yield c


def _models(petstore: ModuleType) -> ModuleType:
    return importlib.import_module(petstore.__name__.rsplit(".", 1)[0] + ".models")


def _seen(server: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server}/_requests", timeout=5).json())


def _new_pet(api: Any, name: str, status: str = "available", **extra: Any) -> Any:
    return api.add_pet(
        name=name,
        photo_urls=[f"https://img.example/{name}.png"],
        category={"id": 1, "name": "Dogs"},
        tags=[{"id": 7, "name": f"tag-{name}"}],
        status=status,
        **extra,
    )


def test_the_generated_api_has_the_documents_operations(petstore: ModuleType) -> None:
    cls = petstore.Petstore
    expected = {
        "add_pet", "update_pet", "find_pets_by_status", "find_pets_by_tags", "get_pet_by_id",
        "update_pet_with_form", "delete_pet", "upload_file", "get_inventory", "place_order",
        "get_order_by_id", "delete_order", "create_user", "create_users_with_list_input",
        "login_user", "logout_user", "get_user_by_name", "update_user", "delete_user",
    }  # fmt: skip
    assert expected <= set(vars(cls))
    params = inspect.signature(cls.get_pet_by_id).parameters
    assert list(params) == ["self", "pet_id"] and params["pet_id"].annotation == "int"
    assert inspect.signature(cls.get_pet_by_id).return_annotation == "Pet"
    add = inspect.signature(cls.add_pet).parameters
    assert add["name"].default is inspect.Parameter.empty
    assert add["status"].annotation == "Literal['available', 'pending', 'sold'] | None"


def test_pet_lifecycle(api: Any, petstore: ModuleType, server: str) -> None:
    models = _models(petstore)
    created = _new_pet(api, "rex")
    assert isinstance(created, models.Pet) and isinstance(created.id, int)

    pet = api.get_pet_by_id(pet_id=created.id)
    assert isinstance(pet, models.Pet)
    assert pet.name == "rex" and pet.status == "available"
    assert isinstance(pet.category, models.Category) and pet.category.name == "Dogs"
    assert isinstance(pet.tags[0], models.Tag) and pet.tags[0].name == "tag-rex"
    assert pet.photo_urls == ["https://img.example/rex.png"]

    found = api.find_pets_by_status(status="available")
    assert created.id in {p.id for p in found}
    assert all(isinstance(p, models.Pet) for p in found)
    by_tag = api.find_pets_by_tags(tags=["tag-rex", "tag-nobody"])
    assert [p.id for p in by_tag] == [created.id]

    updated = api.update_pet(
        id=created.id, name="rex ii", photo_urls=pet.photo_urls, status="pending"
    )
    assert (updated.name, updated.status) == ("rex ii", "pending")
    assert created.id not in {p.id for p in api.find_pets_by_status(status="available")}
    assert created.id in {p.id for p in api.find_pets_by_status(status="pending")}

    renamed = api.update_pet_with_form(pet_id=created.id, name="rex iii", status="sold")
    assert (renamed.name, renamed.status) == ("rex iii", "sold")
    assert api.get_pet_by_id(pet_id=created.id).name == "rex iii"

    assert api.delete_pet(pet_id=created.id, api_key=API_KEY) is None
    with pytest.raises(errors.NotFoundError) as caught:
        api.get_pet_by_id(pet_id=created.id)
    assert caught.value.status_code == 404
    assert f"pet {created.id} not found" in str(caught.value)


def test_form_and_query_parameters_on_the_wire(api: Any, server: str) -> None:
    pet = _new_pet(api, "query-pet")
    api.update_pet_with_form(pet_id=pet.id, name="renamed pet", status="pending")
    api.find_pets_by_tags(tags=["a", "b c"])
    log = _seen(server)
    form = [r for r in log if r["method"] == "POST" and r["path"] == f"/api/v3/pet/{pet.id}"]
    assert form[-1]["query"] == "name=renamed+pet&status=pending"
    tags = [r for r in log if r["path"] == "/api/v3/pet/findByTags"]
    assert tags[-1]["query"] == "tags=a&tags=b+c"


def test_validation_errors_from_the_server(api: Any) -> None:
    with pytest.raises(errors.BadRequestError):
        api.update_pet_with_form(pet_id=_new_pet(api, "bad").id, status="lost")
    with pytest.raises(errors.NotFoundError):
        api.update_pet(id=987654321, name="ghost", photo_urls=[])


def test_binary_upload(api: Any, petstore: ModuleType, server: str) -> None:
    pet = _new_pet(api, "photo")
    result = api.upload_file(pet_id=pet.id, additional_metadata="front", body=b"\x89PNG\x00" * 10)
    assert isinstance(result, _models(petstore).ApiResponse)
    assert result.message == "additionalMetadata: front; 50 bytes"
    upload = [r for r in _seen(server) if r["path"].endswith("/uploadImage")][-1]
    assert upload["content_type"] == "application/octet-stream"


def test_store_orders(api: Any, petstore: ModuleType) -> None:
    models = _models(petstore)
    pet = _new_pet(api, "ordered")
    ship = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    order = api.place_order(pet_id=pet.id, quantity=2, ship_date=ship, status="approved")
    assert isinstance(order, models.Order)
    assert (order.pet_id, order.quantity, order.status) == (pet.id, 2, "approved")
    assert order.ship_date == ship and order.complete is False
    again = api.get_order_by_id(order_id=order.id)
    assert again == order
    inventory = api.get_inventory()
    assert isinstance(inventory, dict) and inventory.get("available", 0) >= 1
    assert api.delete_order(order_id=order.id) is None
    with pytest.raises(errors.NotFoundError):
        api.get_order_by_id(order_id=order.id)
    with pytest.raises(errors.UnprocessableEntityError):
        api.place_order(pet_id=123456789, quantity=1)


def test_users_and_login(api: Any, petstore: ModuleType) -> None:
    models = _models(petstore)
    user = api.create_user(username="ada", first_name="Ada", email="ada@example.com", password="pw")
    assert isinstance(user, models.User) and user.first_name == "Ada"
    assert api.login_user(username="ada", password="pw") == "logged in user session: ada"
    with pytest.raises(errors.BadRequestError):
        api.login_user(username="ada", password="wrong")
    assert api.logout_user() is None
    api.create_users_with_list_input(
        body=[{"username": "bob", "firstName": "Bob"}, models.User(username="cy", first_name="Cy")]
    )
    assert api.get_user_by_name(username="cy").first_name == "Cy"
    api.update_user(username="bob", body={"username": "bob", "lastName": "Builder"})
    assert api.get_user_by_name(username="bob").last_name == "Builder"
    assert api.delete_user(username="bob") is None
    with pytest.raises(errors.NotFoundError):
        api.get_user_by_name(username="bob")


def test_api_key_header_is_seen_by_the_server(
    petstore: ModuleType, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url = f"{server}/api/v3"
    with petstore.Petstore(base_url=base_url, api_key=API_KEY, retry=NO_RETRY) as api:
        pet = _new_pet(api, "keyed")
        assert api.get_pet_by_id(pet_id=pet.id).name == "keyed"
    fetched = [r for r in _seen(server) if r["path"] == f"/api/v3/pet/{pet.id}"]
    assert fetched[-1]["api_key"] == API_KEY
    with petstore.Petstore(base_url=base_url, api_key="wrong", retry=NO_RETRY) as api:
        with pytest.raises(errors.AuthenticationError) as caught:
            api.get_pet_by_id(pet_id=pet.id)
    assert caught.value.status_code == 401
    assert "wrong" not in repr(api.config)
    monkeypatch.setenv("PETSTORE_API_KEY", API_KEY)
    with petstore.Petstore(base_url=base_url, retry=NO_RETRY) as api:
        assert api.get_inventory()["available"] >= 1  # the key from the environment


def test_async_client(petstore: ModuleType, server: str) -> None:
    models = _models(petstore)

    async def scenario() -> tuple[Any, Any]:
        async with petstore.AsyncPetstore(
            base_url=f"{server}/api/v3", api_key=API_KEY, retry=NO_RETRY
        ) as api:
            created = await api.add_pet(name="async", photo_urls=[], status="pending")
            fetched, found = await asyncio.gather(
                api.get_pet_by_id(pet_id=created.id), api.find_pets_by_status(status="pending")
            )
            await api.delete_pet(pet_id=created.id)
            with pytest.raises(errors.NotFoundError):
                await api.get_pet_by_id(pet_id=created.id)
            return fetched, found

    fetched, found = asyncio.run(scenario())
    assert isinstance(fetched, models.Pet) and fetched.name == "async"
    assert fetched.id in {p.id for p in found}
