"""Reproduce FastAPI/Starlette framework behaviour the OpenMemory emulator needs.

* request validation with pydantic, answered as FastAPI does:
  ``422 {"detail": [{"type", "loc", "msg", "input", "ctx"?}]}`` with ``loc``
  prefixed by ``"body"``, ``"query"`` or ``"path"``;
* invalid JSON → ``422`` ``json_invalid``; a missing body → ``missing``;
* Starlette's ``redirect_slashes``: an unknown path whose twin with/without a
  trailing slash exists → ``307`` with an absolute ``location``.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from memsyncd.daemon.http_server import Request, Response
from memsyncd.emulators.routing import Router
from memsyncd.emulators.service import Reply

__all__ = ["json_body", "redirect_slashes", "validate_model", "validate_value"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _unprocessable(errors: list[dict[str, Any]]) -> Reply:
    return Reply(Response.json({"detail": errors}, status=422))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _errors(exc: ValidationError, prefix: tuple[str | int, ...], *, missing_input_none: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": err["type"],
            "loc": [*prefix, *err["loc"]],
            "msg": err["msg"],
            "input": None if (missing_input_none and err["type"] == "missing") else _jsonable(err["input"]),
        }
        if "ctx" in err:
            item["ctx"] = _jsonable(err["ctx"])
        out.append(item)
    return out


def json_body(request: Request) -> Any:
    """The decoded JSON body; ``None`` when there is none.

    Raises:
        Reply: 422 ``json_invalid`` as FastAPI reports undecodable JSON.
    """
    if not request.body:
        return None
    try:
        return json.loads(request.body)
    except json.JSONDecodeError as exc:
        raise _unprocessable(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.pos],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except UnicodeDecodeError as exc:
        raise _unprocessable(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from exc


def validate_model(model: type[M], data: Any, where: str) -> M:
    """Validate ``data`` (a body or a query dict) against ``model``.

    Args:
        where: ``"body"`` or ``"query"``; used as the ``loc`` prefix.

    Raises:
        Reply: 422 in FastAPI's format.
    """
    if data is None and where == "body":
        raise _unprocessable([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _unprocessable(_errors(exc, (where,), missing_input_none=where == "query")) from exc


def validate_value(adapter: TypeAdapter[T], value: Any, loc: tuple[str | int, ...]) -> T:
    """Validate one parameter (a path parameter, a bare body list, ...).

    Raises:
        Reply: 422 in FastAPI's format.
    """
    if value is None:
        raise _unprocessable([{"type": "missing", "loc": list(loc), "msg": "Field required", "input": None}])
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise _unprocessable(_errors(exc, loc, missing_input_none=False)) from exc


def redirect_slashes(request: Request, router: Router[Any]) -> Response | None:
    """Starlette's trailing-slash redirect, or ``None`` when the twin path is unknown too."""
    if request.path == "/":
        return None
    twin = request.path[:-1] if request.path.endswith("/") else request.path + "/"
    if not router.has_path(twin):
        return None
    host = request.headers.get("host", "127.0.0.1")
    _, _, query = request.target.partition("?")
    location = f"http://{host}{twin}" + (f"?{query}" if query else "")
    return Response(307, b"", [("location", location)])
