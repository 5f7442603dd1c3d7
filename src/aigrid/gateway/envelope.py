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
_HTTP_TYPES = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}


def error_response(err: ApiError) -> Response:
    return Response(orjson.dumps(err.envelope()), status_code=err.status,
                    media_type="application/json", headers=err.headers)


def from_validation(e: ValidationError) -> InvalidRequest:
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    return InvalidRequest(f"invalid value for '{loc}': {first['msg']}", param=loc or None)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    typ, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", "http_error"))
    body = {"error": {"message": f"{exc.detail}: {request.method} {request.url.path}", "type": typ,
                      "param": None, "code": code}}
    return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug of ours, never a client's mistake: logged with its traceback, answered with the envelope."""
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"message": "internal error in the aigrid gateway (logged)", "type": "server_error",
                      "param": None, "code": "internal_error"}}
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")
