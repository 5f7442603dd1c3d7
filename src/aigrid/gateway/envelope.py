"""The OpenAI error envelope, and the one place where errors become HTTP responses."""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aigrid.errors import ApiError, InvalidRequest

log = logging.getLogger("aigrid.gateway")
ANTHROPIC_PREFIX = "/v1/messages"
_HTTP_TYPES = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}


def error_response(err: ApiError) -> Response:
    return Response(orjson.dumps(err.envelope()), status_code=err.status,
                    media_type="application/json", headers=err.headers)


_UNION_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_union_label(part: object) -> bool:
    """pydantic names the union branch it tried in the location ('str', 'list[...]'): not a field."""
    return isinstance(part, str) and (part in _UNION_LABELS or "[" in part)


def from_validation(e: ValidationError) -> InvalidRequest:
    errors = e.errors()
    first = max(errors, key=lambda err: len(err["loc"])) if len(errors) > 1 else errors[0]  # the deepest
    loc = ".".join(str(x) for x in first["loc"] if not _is_union_label(x))
    return InvalidRequest(f"invalid value for '{loc}': {first['msg']}", param=loc or None)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def _anthropic(request: Request) -> bool:
    """Anthropic's Messages API answers its errors in Anthropic's shape (messages_api.py)."""
    return request.url.path.startswith(ANTHROPIC_PREFIX)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    typ, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", "http_error"))
    message = f"{exc.detail}: {request.method} {request.url.path}"
    body: dict[str, object] = {"error": {"message": message, "type": typ, "param": None, "code": code}}
    if _anthropic(request):
        body = {"type": "error", "error": {"type": typ, "message": message}}
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug of ours, never a client's mistake: logged with its traceback, answered with the envelope."""
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "internal error in the aigrid gateway (logged)"
    body: dict[str, object] = {"error": {"message": message, "type": "server_error", "param": None,
                                         "code": "internal_error"}}
    if _anthropic(request):
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")
