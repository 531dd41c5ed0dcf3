"""An OpenAPI document -> a spec (as plain data), operation by operation.

Every operation either converts or is reported with the reason it cannot be generated;
nothing is dropped silently. The result is validated by the same spec models and checks
as a hand-written spec.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import marshal
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.cache import cache_root
from builder.naming import is_safe_identifier, pascal_case, snake_case, unique
from builder.openapi.document import HTTP_METHODS, OpenAPIDocument
from builder.openapi.schemas import SchemaConverter
from builder.spec.checks import RESERVED_ARGUMENTS, RESERVED_OPERATIONS
from builder.spec.models import Operation as OperationModel

_IGNORED_HEADERS = {"accept", "content-type", "authorization"}
# What a parameter may carry of a schema (an object parameter is a plain mapping).
_PARAM_SCHEMA_KEYS = {
    "type", "$ref", "description", "format", "enum", "default", "nullable", "items", "oneOf",
    "anyOf", "deprecated",
}  # fmt: skip
_JSON = re.compile(r"^application/([\w.+-]+\+)?json|^\*/\*$|/json$|^text/json")


@dataclass
class Selection:
    """Which operations of the document a spec takes (from its `source:`)."""

    include_tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    include_paths: list[str] = field(default_factory=list)
    exclude_paths: list[str] = field(default_factory=list)
    include_operations: list[str] = field(default_factory=list)
    exclude_operations: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)

    def wants(self, op_id: str, name: str, path: str, tags: list[str]) -> bool:
        ids = {op_id, name}
        if self.include_operations and not ids & set(self.include_operations):
            return False
        if ids & set(self.exclude_operations):
            return False
        if self.include_tags and not set(tags) & set(self.include_tags):
            return False
        if set(tags) & set(self.exclude_tags):
            return False
        if self.include_paths and not any(fnmatch.fnmatchcase(path, p) for p in self.include_paths):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude_paths)


@dataclass
class Converted:
    spec: dict[str, Any]
    unconvertible: dict[str, tuple[str, str]]  # name -> (reason, JSON pointer)
    pointers: dict[str, str]  # operation name -> its JSON pointer in the document
    total: int  # operations in the document before selection
    auth_settings: tuple[str, ...] = ()  # the settings only the converted `auth` uses


def convert(document: OpenAPIDocument, name: str, selection: Selection | None = None) -> Converted:
    """The document as spec data. ``import-openapi`` and then ``generate`` convert the same
    large document: the second time the result is read from a cache keyed by the document,
    the name, the selection and the converter's own code."""
    selection = selection or Selection()
    cache = _cache_file(document, name, selection)
    if cache is not None:
        try:
            spec, unconvertible, pointers, total, auth_settings = marshal.loads(cache.read_bytes())
            return Converted(spec, unconvertible, pointers, total, auth_settings)
        except (OSError, ValueError, EOFError, TypeError):
            pass
    converted = _Converter(document, name, selection).run()
    if cache is not None and not document.referenced_files():  # one file: its hash says all
        c = converted
        fields = (c.spec, c.unconvertible, c.pointers, c.total, c.auth_settings)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(marshal.dumps(fields))
            tmp.replace(cache)
        except (OSError, ValueError):
            pass  # not plain data, or no writable cache: convert again next time
    return converted


CACHED_ABOVE = 256 * 1024  # bytes of document: smaller ones convert faster than a lookup


def _cache_file(document: OpenAPIDocument, name: str, selection: Selection) -> Path | None:
    if len(document.text) < CACHED_ABOVE:
        return None
    key = hashlib.sha256(
        "\0".join(
            [_code_digest(), document.digest, name, json.dumps(asdict(selection), sort_keys=True)]
        ).encode()
    ).hexdigest()
    return cache_root() / "converted" / f"{key}.marshal"


@functools.cache
def _code_digest() -> str:
    """The converter's code, and the spec language it writes: a change to either is a miss."""
    builder = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*builder.glob("openapi/*.py"), *builder.glob("spec/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update((builder / "naming.py").read_bytes())
    return digest.hexdigest()


class _Converter:
    def __init__(self, document: OpenAPIDocument, name: str, selection: Selection) -> None:
        self.doc = document
        self.name = name
        self.selection = selection
        data = document.data
        self.v2 = document.major == "2.0"
        class_name = pascal_case(name)
        self.schemas = SchemaConverter(document, {class_name, f"Async{class_name}"})
        self.config: dict[str, Any] = {}
        self.consumes = data.get("consumes") or []

    # -- the document ---------------------------------------------------------------------

    def run(self) -> Converted:
        data = self.doc.data
        info: dict[str, Any] = data["info"] if isinstance(data.get("info"), dict) else {}
        auth = self.security()
        auth_settings = tuple(self.config)
        operations: dict[str, Any] = {}
        unconvertible: dict[str, tuple[str, str]] = {}
        pointers: dict[str, str] = {}
        taken = set(RESERVED_OPERATIONS)
        total = 0
        paths: dict[str, Any] = data["paths"] if isinstance(data.get("paths"), dict) else {}
        for path, item in paths.items():
            if not isinstance(item, dict):
                continue
            item_pointer = "#/paths/" + str(path).replace("~", "~0").replace("/", "~1")
            if "$ref" in item:
                try:
                    item, _, _ = self.doc.resolve(item["$ref"])
                except KeyError:
                    continue
            for method in HTTP_METHODS:
                op = item.get(method)
                if not isinstance(op, dict):
                    continue
                total += 1
                pointer = f"{item_pointer}/{method}"
                op_id = str(op.get("operationId") or "")
                tags = [str(t) for t in op.get("tags") or []]
                name = self.operation_name(op_id, method, str(path), taken)
                if not self.selection.wants(op_id, name, str(path), tags):
                    taken.discard(name)
                    continue
                pointers[name] = pointer
                try:
                    converted = self.operation(op, item, method, str(path), pointer)
                    OperationModel.model_validate(converted)
                except KeyError as exc:
                    unconvertible[name] = (f"unresolvable reference {exc}", pointer)
                except ValidationError as exc:
                    error = exc.errors(include_url=False)[0]
                    where = ".".join(str(p) for p in error["loc"])
                    unconvertible[name] = (
                        f"does not fit the spec language: {where}: {error['msg']}",
                        pointer,
                    )
                else:
                    operations[name] = converted
        spec: dict[str, Any] = {
            "spec_version": 1,
            "name": self.name,
            "title": str(info.get("title") or self.name).strip() or self.name,
            "base_url": self.base_url(),
            "config": self.config,
            "auth": auth,
            "schemas": self.schemas.finish(),
            "operations": operations,
        }
        description = info.get("description")
        if isinstance(description, str) and description.strip():
            spec["description"] = description.strip()
        docs = (
            (data.get("externalDocs") or {}).get("url")
            if isinstance(data.get("externalDocs"), dict)
            else None
        )
        if isinstance(docs, str) and docs.startswith("http"):
            spec["docs_url"] = docs
        return Converted(spec, unconvertible, pointers, total, auth_settings)

    def operation_name(self, op_id: str, method: str, path: str, taken: set[str]) -> str:
        renamed = self.selection.rename.get(op_id) or self.selection.rename.get(
            f"{method.upper()} {path}"
        )
        if renamed:
            taken.add(renamed)
            return renamed
        base = snake_case(op_id) if op_id else ""
        if not base:
            words = [w for w in re.split(r"[/{}]+", path) if w]
            base = snake_case(" ".join([method, *words])) or method
        if base[0].isdigit():
            base = f"op_{base}"
        if not is_safe_identifier(base) or base in RESERVED_OPERATIONS:
            base += "_"
        return unique(base, taken)

    def base_url(self) -> str:
        data = self.doc.data
        if self.v2:
            host = data.get("host")
            schemes = data.get("schemes") or ["https"]
            base_path = str(data.get("basePath") or "")
            if isinstance(host, str) and host:
                return f"{schemes[0]}://{host}{base_path}".rstrip("/")
            return ("http://localhost" + base_path).rstrip("/")
        servers = data.get("servers")
        if isinstance(servers, list) and servers and isinstance(servers[0], dict):
            url = str(servers[0].get("url") or "")
            for var, spec in (servers[0].get("variables") or {}).items():
                default = spec.get("default") if isinstance(spec, dict) else None
                url = url.replace("{" + str(var) + "}", str(default or ""))
            if url.startswith("//"):
                url = "https:" + url
            if not url.startswith(("http://", "https://")):
                url = "http://localhost/" + url.lstrip("/")
            return url.rstrip("/") or "http://localhost"
        return "http://localhost"

    # -- security -------------------------------------------------------------------------

    def security(self) -> dict[str, Any]:
        data = self.doc.data
        schemes = (
            data.get("securityDefinitions")
            if self.v2
            else (data.get("components") or {}).get("securitySchemes")
        )
        schemes = schemes if isinstance(schemes, dict) else {}
        requirements = self._requirements()
        chosen: str | None = None
        if requirements:
            # The document's own requirement; without one, the one most operations name.
            counts = Counter(next(iter(r)) for r in requirements)
            chosen = max(counts, key=lambda name: counts[name])
        if chosen is None and len(schemes) == 1:
            chosen = next(iter(schemes))
        scheme = schemes.get(chosen) if chosen else None
        if isinstance(scheme, dict) and "$ref" in scheme:
            scheme, _, _ = self.doc.resolve(scheme["$ref"])
        if not isinstance(scheme, dict):
            return {"type": "none"}
        env = self.name.upper()
        kind = scheme.get("type")
        if kind == "apiKey" and scheme.get("in") in ("header", "query", "cookie"):
            self.config["api_key"] = {
                "type": "string",
                "secret": True,
                "env": f"{env}_API_KEY",
                "description": "The API key.",
            }
            return {
                "type": "api_key",
                "name": str(scheme.get("name") or "X-API-Key"),
                "in": scheme["in"],
                "value": "{config.api_key}",
            }
        if kind == "basic" or (kind == "http" and str(scheme.get("scheme", "")).lower() == "basic"):
            self.config["username"] = {"type": "string", "env": f"{env}_USERNAME"}
            self.config["password"] = {"type": "string", "secret": True, "env": f"{env}_PASSWORD"}
            return {
                "type": "basic",
                "username": "{config.username}",
                "password": "{config.password}",
            }
        if kind == "oauth2":
            flows: dict[str, Any] = scheme["flows"] if isinstance(scheme.get("flows"), dict) else {}
            credentials = flows.get("clientCredentials") or (
                scheme if scheme.get("flow") == "application" else None
            )
            if isinstance(credentials, dict) and credentials.get("tokenUrl"):
                self.config["client_id"] = {"type": "string", "env": f"{env}_CLIENT_ID"}
                self.config["client_secret"] = {
                    "type": "string",
                    "secret": True,
                    "env": f"{env}_CLIENT_SECRET",
                }
                # The scopes the document's requirements name for it, not every scope of
                # the flow: a token should carry no more than the operations need.
                scopes: dict[str, None] = {}
                for requirement in requirements:
                    named = requirement.get(str(chosen))
                    scopes.update(dict.fromkeys(str(s) for s in named or ()))
                return {
                    "type": "oauth2_client_credentials",
                    "token_url": str(credentials["tokenUrl"]),
                    "client_id": "{config.client_id}",
                    "client_secret": "{config.client_secret}",
                    "scopes": [str(s) for s in scopes],
                }
        # bearer, other OAuth2 flows, OpenID Connect: the caller supplies an access token.
        self.config["token"] = {
            "type": "string",
            "secret": True,
            "env": f"{env}_TOKEN",
            "description": "An access token.",
        }
        return {"type": "bearer", "token": "{config.token}"}

    def _requirements(self) -> list[dict[str, Any]]:
        """The document's security requirements (each non-empty): its top-level ones if it
        has any, else every operation's, in order."""
        data = self.doc.data
        top = data.get("security")
        found = [r for r in top if isinstance(r, dict) and r] if isinstance(top, list) else []
        if found:
            return found
        paths: dict[str, Any] = data["paths"] if isinstance(data.get("paths"), dict) else {}
        for item in paths.values():
            if not isinstance(item, dict):
                continue
            for method, op in item.items():
                if method in HTTP_METHODS and isinstance(op, dict):
                    listed = op.get("security")
                    if isinstance(listed, list):
                        found += [r for r in listed if isinstance(r, dict) and r]
        return found

    # -- operations -----------------------------------------------------------------------

    def operation(
        self, op: dict[str, Any], item: dict[str, Any], method: str, path: str, pointer: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"method": method.upper(), "path": path}
        for key in ("summary", "description"):
            value = op.get(key)
            if isinstance(value, str) and value.strip():
                out[key] = value.strip()
        if op.get("deprecated") is True:
            out["deprecated"] = True
        tags = [str(t) for t in op.get("tags") or [] if isinstance(t, str)]
        if tags:
            out["tags"] = tags
        hint = pascal_case(str(op.get("operationId") or f"{method} {path}")) or "Operation"
        params, body_params = self.parameters(item, op, path, hint)
        if params:
            out["params"] = params
        body = self.body(op, body_params, hint)
        if body is not None:
            out["body"] = body
            schema = body.get("schema", {})
            if "$ref" in schema:
                schema = self.schemas.get(schema["$ref"])
            properties = schema.get("properties")
            if properties and _collides(properties, set(params)):
                # A body field and a parameter would be one argument: the body goes whole,
                # as one `body` argument typed by its model.
                body["schema"] = (
                    {"anyOf": [body["schema"], {"type": "object"}]}
                    if "$ref" in body["schema"]
                    else {"type": "object"}
                )
        response = self.response(op, hint)
        if response is not None:
            out["response"] = response
        errors = self.error_bodies(op, hint)
        if errors:
            out["errors"] = errors
        return out

    def error_bodies(self, op: dict[str, Any], hint: str) -> dict[str, Any]:
        """Documented JSON error bodies, by status ("404", "4XX", "default")."""
        responses = op.get("responses")
        out: dict[str, Any] = {}
        if not isinstance(responses, dict):
            return out
        for code, response in responses.items():
            key = str(code).upper()
            if not (key == "DEFAULT" or re.fullmatch(r"[45](\d\d|XX)", key)):
                continue
            if isinstance(response, dict) and "$ref" in response:
                response, _, _ = self.doc.resolve(response["$ref"])
            if not isinstance(response, dict):
                continue
            schema: Any = None
            if self.v2:
                schema = response.get("schema")
            elif isinstance(response.get("content"), dict) and response["content"]:
                media_type, media = _pick_media(response["content"])
                if isinstance(media, dict) and _content_kind(media_type) == "json":
                    schema = media.get("schema")
            if isinstance(schema, dict):
                converted = self.schemas.convert(schema, self.doc, f"{hint}Error")
                out["default" if key == "DEFAULT" else key] = converted
        return out

    def parameters(
        self, item: dict[str, Any], op: dict[str, Any], path: str, hint: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in [*(item.get("parameters") or []), *(op.get("parameters") or [])]:
            param = raw
            if isinstance(param, dict) and "$ref" in param:
                param, _, _ = self.doc.resolve(param["$ref"])
            if not isinstance(param, dict) or "name" not in param or "in" not in param:
                continue
            merged[(str(param["in"]), str(param["name"]))] = param
        out: dict[str, Any] = {}
        body_params: list[dict[str, Any]] = []
        taken: set[str] = set(RESERVED_ARGUMENTS)
        in_path = set(re.findall(r"\{([^{}]+)\}", path))
        for (location, wire), param in merged.items():
            if location in ("body", "formData"):
                body_params.append(param)
                continue
            if location not in ("path", "query", "header", "cookie"):
                continue
            if location == "header" and wire.lower() in _IGNORED_HEADERS:
                continue
            if location == "path" and wire not in in_path:
                continue
            python = snake_case(wire) or "param"
            if python[0].isdigit():
                python = f"p_{python}"
            if not is_safe_identifier(python):
                python += "_"
            python = unique(python, taken)
            schema = self.param_schema(param, f"{hint}{pascal_case(wire)}")
            if "properties" in schema:
                schema = {
                    "type": "object",
                    **{k: v for k, v in schema.items() if k in ("description", "nullable")},
                }
            entry: dict[str, Any] = {k: v for k, v in schema.items() if k in _PARAM_SCHEMA_KEYS}
            entry["in"] = location
            if python != wire:
                entry["name"] = wire
            if location != "path":
                entry["required"] = bool(param.get("required"))
                if entry["required"]:
                    entry.pop("default", None)
            else:
                entry.pop("default", None)
            description = param.get("description")
            if isinstance(description, str) and description.strip():
                entry["description"] = description.strip()
            if param.get("deprecated") is True:
                entry["deprecated"] = True
            style, explode = param.get("style"), param.get("explode")
            if self.v2 and param.get("collectionFormat") in ("csv", "ssv", "pipes", "tsv"):
                style, explode = (
                    {
                        "csv": "form",
                        "ssv": "spaceDelimited",
                        "pipes": "pipeDelimited",
                        "tsv": "tabDelimited",
                    }[param["collectionFormat"]],
                    False,
                )
            if style in (
                "form",
                "spaceDelimited",
                "pipeDelimited",
                "deepObject",
                "simple",
                "tabDelimited",
            ) and entry.get("type") in ("array", "object"):
                if style == "deepObject":
                    entry["style"] = "deepObject"
                elif (
                    explode is False
                    or style in ("spaceDelimited", "pipeDelimited", "tabDelimited")
                    or (style == "simple")
                ):
                    entry["style"] = {
                        "form": "form",
                        "simple": "form",
                        "spaceDelimited": "spaceDelimited",
                        "pipeDelimited": "pipeDelimited",
                        "tabDelimited": "tabDelimited",
                    }[style]
                    entry["explode"] = False
            out[python] = entry
        # Path placeholders the document forgot to declare still need an argument.
        for wire in sorted(in_path):
            if not any(e.get("in") == "path" and e.get("name", k) == wire for k, e in out.items()):
                python = unique(snake_case(wire) or "param", taken)
                out[python] = {
                    "type": "string",
                    "in": "path",
                    **({"name": wire} if python != wire else {}),
                }
        return out, body_params

    def param_schema(self, param: dict[str, Any], hint: str) -> dict[str, Any]:
        if "schema" in param and isinstance(param["schema"], dict):
            return self.schemas.convert(param["schema"], self.doc, hint)
        content = param.get("content")
        if isinstance(content, dict) and content:
            media = next(iter(content.values()))
            if isinstance(media, dict) and isinstance(media.get("schema"), dict):
                return self.schemas.convert(media["schema"], self.doc, hint)
        # Swagger 2.0: the schema keywords sit on the parameter itself.
        return self.schemas.convert(
            {k: v for k, v in param.items() if k not in ("name", "in", "required", "description")},
            self.doc,
            hint,
        )

    def body(
        self, op: dict[str, Any], body_params: list[dict[str, Any]], hint: str
    ) -> dict[str, Any] | None:
        if self.v2:
            return self._body_v2(op, body_params, hint)
        request = op.get("requestBody")
        if isinstance(request, dict) and "$ref" in request:
            request, _, _ = self.doc.resolve(request["$ref"])
        if not isinstance(request, dict):
            return None
        content = request.get("content")
        if not isinstance(content, dict) or not content:
            return None
        media_type, media = _pick_media(content)
        schema_node = media.get("schema") if isinstance(media, dict) else None
        kind = _content_kind(media_type)
        if kind == "binary":
            return {
                "schema": {"type": "string", "format": "binary"},
                "content_type": "binary",
                "media_type": media_type,
            }
        schema = (
            self.schemas.convert(schema_node, self.doc, f"{hint}Request")
            if isinstance(schema_node, dict)
            else {"type": "any"}
        )
        out: dict[str, Any] = {"schema": schema}
        if kind != "json":
            out["content_type"] = kind
        if kind == "text":
            out["schema"] = {"type": "string"}
        return out

    def _body_v2(
        self, op: dict[str, Any], params: list[dict[str, Any]], hint: str
    ) -> dict[str, Any] | None:
        body = next((p for p in params if p.get("in") == "body"), None)
        if body is not None:
            schema = body.get("schema")
            converted = (
                self.schemas.convert(schema, self.doc, f"{hint}Request")
                if isinstance(schema, dict)
                else {"type": "any"}
            )
            return {"schema": converted}
        form = [p for p in params if p.get("in") == "formData"]
        if not form:
            return None
        consumes = op.get("consumes") or self.consumes
        multipart = any(p.get("type") == "file" for p in form) or "multipart/form-data" in consumes
        properties = {
            str(p["name"]): self.param_schema(p, f"{hint}{pascal_case(str(p['name']))}")
            for p in form
        }
        required = [str(p["name"]) for p in form if p.get("required")]
        return {
            "schema": {"properties": properties, "required": required},
            "content_type": "multipart" if multipart else "form",
        }

    def response(self, op: dict[str, Any], hint: str) -> dict[str, Any] | None:
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            return {"content": "none"}
        codes = sorted(
            (str(c) for c in responses if str(c).startswith("2")), key=lambda c: c.replace("X", "9")
        )
        code = codes[0] if codes else ("default" if "default" in responses else None)
        if code is None:
            return {"content": "none"}
        response = (
            responses[code]
            if code in responses
            else responses[int(code)]
            if code.isdigit() and int(code) in responses
            else None
        )
        if isinstance(response, dict) and "$ref" in response:
            response, _, _ = self.doc.resolve(response["$ref"])
        if not isinstance(response, dict) or code == "204":
            return {"content": "none"}
        if self.v2:
            schema = response.get("schema")
            if not isinstance(schema, dict):
                return {"content": "none"}
            produces = op.get("produces") or self.doc.data.get("produces") or ["application/json"]
            kind = _content_kind(str(produces[0]))
            if kind == "binary" or schema.get("type") == "file":
                return {"content": "bytes"}
            return {"schema": self.schemas.convert(schema, self.doc, f"{hint}Response")}
        content = response.get("content")
        if not isinstance(content, dict) or not content:
            return {"content": "none"}
        media_type, media = _pick_media(content)
        kind = _content_kind(media_type)
        if kind == "binary":
            return {"content": "bytes"}
        if kind == "text" or media_type == "text/event-stream":
            return {"content": "text"}
        schema = media.get("schema") if isinstance(media, dict) else None
        if not isinstance(schema, dict):
            return {"content": "json"}
        return {"schema": self.schemas.convert(schema, self.doc, f"{hint}Response")}


def _pick_media(content: dict[str, Any]) -> tuple[str, Any]:
    for media_type, media in content.items():
        if _JSON.search(str(media_type).split(";")[0].strip().lower()):
            return str(media_type), media
    media_type = next(iter(content))
    return str(media_type), content[media_type]


def _content_kind(media_type: str) -> str:
    kind = media_type.split(";")[0].strip().lower()
    if _JSON.search(kind):
        return "json"
    if kind == "application/x-www-form-urlencoded":
        return "form"
    if kind.startswith("multipart/"):
        return "multipart"
    if kind.startswith("text/") or kind in (
        "application/xml",
        "application/yaml",
        "application/x-yaml",
    ):
        return "text"
    return "binary"


def _collides(properties: dict[str, Any], taken: set[str]) -> bool:
    from builder.naming import field_name

    names = [field_name(k) for k in properties]
    return bool(set(names) & (taken | set(RESERVED_ARGUMENTS))) or len(set(names)) != len(names)
