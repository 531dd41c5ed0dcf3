"""A local Petstore: the operations of the corpus document ``swagger-api__openapi.yaml``.

Petstore 3 (``/pet``, ``/pet/{petId}``, ``/pet/findByStatus``, ``/pet/findByTags``,
``/pet/{petId}/uploadImage``, ``/store/inventory``, ``/store/order...``, ``/user...``) with
in-memory state, speaking JSON only, for the end-to-end tests of the OpenAPI import
(``tests/test_openapi_end_to_end.py``). Start it with::

    from tests.servers.runner import run_server

    with run_server(app_path="tests.servers.petstore:app", ready_path="/_health") as url:
        ...

Like the document, ``GET /pet/{petId}`` and ``GET /store/inventory`` require the
``api_key`` header (401 without it). Every request's method, path and ``api_key`` header is
recorded; ``GET /_requests`` returns the log, ``POST /_reset`` clears the state.

State lives in module globals; Starlette runs the handlers on one event loop and no
handler awaits between reading and writing it, so no locking is needed.
"""

from __future__ import annotations

import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "special-key"
PET_STATUSES = ("available", "pending", "sold")
ORDER_STATUSES = ("placed", "approved", "delivered")

PETS: dict[int, dict[str, Any]] = {}
ORDERS: dict[int, dict[str, Any]] = {}
USERS: dict[str, dict[str, Any]] = {}
REQUESTS: list[dict[str, Any]] = []
_ids = itertools.count(1000)


def _reset() -> None:
    global _ids
    PETS.clear()
    ORDERS.clear()
    USERS.clear()
    REQUESTS.clear()
    _ids = itertools.count(1000)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _requires_key(request: Request) -> JSONResponse | None:
    if request.headers.get("api_key") != API_KEY:
        return _error(401, "a valid api_key header is required")
    return None


def _valid_pet(body: dict[str, Any] | None) -> str | None:
    if body is None:
        return "the body is not a JSON object"
    if not isinstance(body.get("name"), str) or not isinstance(body.get("photoUrls"), list):
        return "a pet needs `name` and `photoUrls`"
    if body.get("status") is not None and body["status"] not in PET_STATUSES:
        return f"unknown status {body['status']!r}"
    return None


# --------------------------------------------------------------------------- #
# pet
# --------------------------------------------------------------------------- #


async def add_pet(request: Request) -> Response:
    body = await _json_object(request)
    problem = _valid_pet(body)
    if problem:
        return _error(422, problem)
    assert body is not None
    pet = {**body, "id": body.get("id") or next(_ids)}
    PETS[pet["id"]] = pet
    return JSONResponse(pet)


async def update_pet(request: Request) -> Response:
    body = await _json_object(request)
    problem = _valid_pet(body)
    if problem:
        return _error(422, problem)
    assert body is not None
    if body.get("id") not in PETS:
        return _error(404, "pet not found")
    PETS[body["id"]] = dict(body)
    return JSONResponse(PETS[body["id"]])


async def find_by_status(request: Request) -> Response:
    status = request.query_params.get("status", "available")
    if status not in PET_STATUSES:
        return _error(400, f"invalid status value {status!r}")
    return JSONResponse([p for p in PETS.values() if p.get("status") == status])


async def find_by_tags(request: Request) -> Response:
    wanted = set(request.query_params.getlist("tags"))
    found = [p for p in PETS.values() if wanted & {t.get("name") for t in p.get("tags") or []}]
    return JSONResponse(found)


async def get_pet(request: Request) -> Response:
    denied = _requires_key(request)
    if denied:
        return denied
    pet_id = _int(request.path_params["petId"])
    if pet_id is None:
        return _error(400, "invalid id")
    if pet_id not in PETS:
        return _error(404, f"pet {pet_id} not found")
    return JSONResponse(PETS[pet_id])


async def update_pet_with_form(request: Request) -> Response:
    pet_id = _int(request.path_params["petId"])
    if pet_id is None or pet_id not in PETS:
        return _error(404, "pet not found")
    pet = PETS[pet_id]
    name = request.query_params.get("name")
    status = request.query_params.get("status")
    if status is not None and status not in PET_STATUSES:
        return _error(400, f"invalid status value {status!r}")
    if name is not None:
        pet["name"] = name
    if status is not None:
        pet["status"] = status
    return JSONResponse(pet)


async def delete_pet(request: Request) -> Response:
    pet_id = _int(request.path_params["petId"])
    if pet_id is None:
        return _error(400, "invalid pet value")
    if PETS.pop(pet_id, None) is None:
        return _error(404, "pet not found")
    return Response(status_code=200)


async def upload_image(request: Request) -> Response:
    pet_id = _int(request.path_params["petId"])
    if pet_id is None or pet_id not in PETS:
        return _error(404, "pet not found")
    data = await request.body()
    if request.headers.get("content-type") != "application/octet-stream":
        return _error(
            400, f"expected application/octet-stream, not {request.headers.get('content-type')}"
        )
    metadata = request.query_params.get("additionalMetadata", "")
    PETS[pet_id].setdefault("photoUrls", []).append(f"memory://{pet_id}/{len(data)}")
    return JSONResponse(
        {
            "code": 200,
            "type": "upload",
            "message": f"additionalMetadata: {metadata}; {len(data)} bytes",
        }
    )


# --------------------------------------------------------------------------- #
# store
# --------------------------------------------------------------------------- #


async def inventory(request: Request) -> Response:
    denied = _requires_key(request)
    if denied:
        return denied
    counts: dict[str, int] = {}
    for pet in PETS.values():
        status = pet.get("status") or "available"
        counts[status] = counts.get(status, 0) + 1
    return JSONResponse(counts)


async def place_order(request: Request) -> Response:
    body = await _json_object(request)
    if body is None:
        return _error(400, "the body is not a JSON object")
    if body.get("status") is not None and body["status"] not in ORDER_STATUSES:
        return _error(422, f"unknown status {body['status']!r}")
    if body.get("petId") is not None and body["petId"] not in PETS:
        return _error(422, f"no pet {body['petId']}")
    order = {"status": "placed", "complete": False, **body, "id": body.get("id") or next(_ids)}
    ORDERS[order["id"]] = order
    return JSONResponse(order)


async def get_order(request: Request) -> Response:
    order_id = _int(request.path_params["orderId"])
    if order_id is None:
        return _error(400, "invalid id")
    if order_id not in ORDERS:
        return _error(404, "order not found")
    return JSONResponse(ORDERS[order_id])


async def delete_order(request: Request) -> Response:
    order_id = _int(request.path_params["orderId"])
    if order_id is None:
        return _error(400, "invalid id")
    if ORDERS.pop(order_id, None) is None:
        return _error(404, "order not found")
    return Response(status_code=200)


# --------------------------------------------------------------------------- #
# user
# --------------------------------------------------------------------------- #


def _store_user(body: dict[str, Any]) -> dict[str, Any]:
    user = {**body, "id": body.get("id") or next(_ids)}
    USERS[str(user.get("username"))] = user
    return user


async def create_user(request: Request) -> Response:
    body = await _json_object(request)
    if body is None or not isinstance(body.get("username"), str):
        return _error(422, "a user needs a `username`")
    return JSONResponse(_store_user(body))


async def create_with_list(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, list) or not body:
        return _error(422, "expected a non-empty list of users")
    created = [_store_user(u) for u in body if isinstance(u, dict)]
    return JSONResponse(created[-1])


async def login(request: Request) -> Response:
    username = request.query_params.get("username")
    password = request.query_params.get("password")
    user = USERS.get(username or "")
    if user is None or user.get("password") != password:
        return _error(400, "invalid username/password supplied")
    return JSONResponse(
        f"logged in user session: {username}",
        headers={"X-Rate-Limit": "5000", "X-Expires-After": "2030-01-01T00:00:00Z"},
    )


async def logout(request: Request) -> Response:
    return Response(status_code=200)


async def user(request: Request) -> Response:
    username = request.path_params["username"]
    if username not in USERS:
        return _error(404, "user not found")
    if request.method == "GET":
        return JSONResponse(USERS[username])
    if request.method == "DELETE":
        del USERS[username]
        return Response(status_code=200)
    body = await _json_object(request)
    if body is None:
        return _error(400, "the body is not a JSON object")
    USERS.pop(username)
    _store_user({**body, "username": body.get("username") or username})
    return Response(status_code=200)


# --------------------------------------------------------------------------- #
# test helpers
# --------------------------------------------------------------------------- #


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def requests_log(request: Request) -> Response:
    return JSONResponse(REQUESTS)


async def reset(request: Request) -> Response:
    _reset()
    return Response(status_code=204)


routes = [
    Route("/api/v3/pet", add_pet, methods=["POST"]),
    Route("/api/v3/pet", update_pet, methods=["PUT"]),
    Route("/api/v3/pet/findByStatus", find_by_status, methods=["GET"]),
    Route("/api/v3/pet/findByTags", find_by_tags, methods=["GET"]),
    Route("/api/v3/pet/{petId}", get_pet, methods=["GET"]),
    Route("/api/v3/pet/{petId}", update_pet_with_form, methods=["POST"]),
    Route("/api/v3/pet/{petId}", delete_pet, methods=["DELETE"]),
    Route("/api/v3/pet/{petId}/uploadImage", upload_image, methods=["POST"]),
    Route("/api/v3/store/inventory", inventory, methods=["GET"]),
    Route("/api/v3/store/order", place_order, methods=["POST"]),
    Route("/api/v3/store/order/{orderId}", get_order, methods=["GET"]),
    Route("/api/v3/store/order/{orderId}", delete_order, methods=["DELETE"]),
    Route("/api/v3/user", create_user, methods=["POST"]),
    Route("/api/v3/user/createWithList", create_with_list, methods=["POST"]),
    Route("/api/v3/user/login", login, methods=["GET"]),
    Route("/api/v3/user/logout", logout, methods=["GET"]),
    Route("/api/v3/user/{username}", user, methods=["GET", "PUT", "DELETE"]),
    Route("/_health", health, methods=["GET"]),
    Route("/_requests", requests_log, methods=["GET"]),
    Route("/_reset", reset, methods=["POST"]),
]


class _Recorder:
    """ASGI middleware: log each request's method, path, query and ``api_key`` header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            REQUESTS.append(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": scope["query_string"].decode("latin-1"),
                    "api_key": headers.get("api_key"),
                    "content_type": headers.get("content-type"),
                }
            )
        await self.app(scope, receive, send)


app = _Recorder(Starlette(routes=routes))
