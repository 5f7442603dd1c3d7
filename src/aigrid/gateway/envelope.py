"""The error envelopes, and the one place where errors become HTTP responses: OpenAI's
{"error": {"message", "type", "param", "code"}} everywhere, except Anthropic's
{"type": "error", "error": {"type", "message"}} (with Anthropic's status codes) under /v1/messages and to a
caller that sends `anthropic-version` (the Anthropic SDKs, on every route)."""

from __future__ import annotations

import logging
import re
import secrets

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from aigrid.errors import MISSING_PARAMETER, ApiError, InvalidRequest
from aigrid.field_names import field_name
from aigrid.gateway.unknown_path import route_index, shown_path

log = logging.getLogger("aigrid.gateway")
ANTHROPIC_PREFIX = "/v1/messages"
ANTHROPIC_VERSION = "anthropic-version"
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    529: "overloaded_error"}
_ANTHROPIC_STATUS = {502: 500, 503: 529}
"""Anthropic has no 502 or 503: an upstream failure is its api_error (500), no eligible site its overload."""
_HTTP_TYPES = {404: ("invalid_request_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}
"""OpenAI's envelope of a path not served: OpenAI's own type for it (its 'Invalid URL' 404)."""
API_PREFIX = "/v1/"
"""The API's paths, where a method a path does not take is a 404 (http_error_handler)."""
_API_FAMILIES = frozenset({"chat", "completions", "embeddings", "models", "messages", "responses", "batches", "files",
                           "conversations"})
"""The first segment of the API's paths: one asked for without /v1 is a client whose base URL lacks it."""


def error_response(err: ApiError) -> Response:
    """The OpenAI envelope, with the error's headers and `x-should-retry` (ApiError.should_retry); its message and
    param bounded (bounded_error)."""
    return Response(orjson.dumps(bounded_error(err.envelope())), status_code=err.status,
                    media_type="application/json", headers=err.response_headers())


def bounded_error(envelope: dict[str, object]) -> dict[str, object]:
    """An OpenAI envelope (ApiError.envelope) with its message bounded (bounded_message) and its param cut to
    SHOWN_CHARS: a new dict where either changed, else the same one."""
    error = envelope.get("error")
    if not isinstance(error, dict):
        return envelope
    message, param = error.get("message"), error.get("param")
    shown = bounded_message(message) if isinstance(message, str) else message
    cut = _cut(param) if isinstance(param, str) else param
    if shown is message and cut is param:
        return envelope
    return {**envelope, "error": {**error, "message": shown, "param": cut}}


_UNION_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _is_union_label(part: object) -> bool:
    """pydantic names the union branch it tried in the location ('str', 'list[...]'): not a field."""
    return isinstance(part, str) and (part in _UNION_LABELS or "[" in part)


def field_path(loc: tuple[int | str, ...], *, dotted: bool = False) -> str:
    """A validation error's location as the client's field path (field_name of field_parts)."""
    return field_name(field_parts(loc), dotted=dotted)


def field_parts(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A validation error's location as the client's field's parts: without the union branches pydantic names
    ('str', 'list[...]'), and without the tag it names after an item of a list of tagged unions
    (`messages.0.content.0.text.text` is the field `messages[0].content[0].text`, of a `text` block)."""
    out: list[int | str] = []
    tag_next = False
    for part in loc:
        if _is_union_label(part):
            tag_next = "tagged-union[" in str(part) and not str(part).startswith("tagged-union[")
            continue
        if tag_next and isinstance(part, str):  # the branch's tag, after the list index
            tag_next = False
            continue
        out.append(part)
    return tuple(out)


SHOWN_CHARS = 200
"""The most characters of a client's value an error's message quotes (shown_values): the rest is the client's own."""
_QUOTED = re.compile(r"(?<![\w\\])(?:'(?:[^'\\]++|\\.)*+'|\"(?:[^\"\\]++|\\.)*+\")")
"""A quoted value in a sentence: a repr (`'...'`, or `"..."` where it holds a `'`), or a field path the sentence
quotes; an apostrophe inside a word (the grid's) or an escaped quote opens none, and a run ends at the first quote
not escaped: linear in the sentence (a closing quote also checked for a word after it was quadratic on a value of
escaped quotes, 300,000 of them: minutes). Possessive runs (Python 3.11), which match the same spans: a run of
plain characters is one step, not one a character (a 2 MB value quoted in a message took 1 s on 2 shared cores)."""


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def shown_values(message: str) -> str:
    """`message` with each quoted value in it (a client's value, as a validator's sentence quotes it with repr, or a
    field path holding a client's key) cut to SHOWN_CHARS characters and `...` inside its quotes. A 400 for
    `"temperature": "x" * 100000` said the whole value back (100,171 bytes; service_tier, a tool call's or an
    Anthropic tool's `type`, a metadata key, alike): the client's own value, at most SHOWN_CHARS of it, is enough
    to find the mistake."""
    if len(message) <= SHOWN_CHARS:  # no quoted value in it can be longer
        return message
    return _QUOTED.sub(lambda m: m[0] if len(m[0]) <= SHOWN_CHARS + 2 else m[0][0] + _cut(m[0][1:-1]) + m[0][-1],
                       message)


ERROR_MESSAGE_CHARS = 2500
"""The most characters of any error's message a client gets (bounded_message; the grid's own sentences are under
600): past it, what remains is a client's value of many parts (a list of strings each within SHOWN_CHARS), cut
there."""


def bounded_message(message: str) -> str:
    """Any error's message as a client gets it, on every door's renderer (error_response, anthropic_error, the
    Responses WebSocket's error event, a failed background Response's `error`: background.error_object): the values
    quoted in it cut (shown_values), and the whole at most ERROR_MESSAGE_CHARS. About 40 messages quote a client's
    value or an id from the URL with repr (a Responses `include` entry of 100,000 characters was a 100,405-byte 400):
    bounded here, none of them by its own site, a schema's 400 (from_validation) included: until the twenty-ninth
    session that was bounded twice, its sentence cut at 2,000 characters there and the whole again here. A message
    within SHOWN_CHARS is returned as it is (the same object)."""
    shown = shown_values(message)
    if len(shown) > ERROR_MESSAGE_CHARS:
        shown = f"{shown[:ERROR_MESSAGE_CHARS]}... ({len(shown):,} characters)"
    return shown


def from_validation(e: ValidationError, *, dotted: bool = False) -> InvalidRequest:
    """The client's 400 of a request that failed its schema, on every door that has one (chat, completions,
    Messages, Responses, a batch's lines): the deepest error's field, named as the door's API names it (field_name:
    `dotted` on the Messages door), and sentence. The client's values in them (a
    value a validator's sentence quotes, a dict's key in the field's path: metadata.KEY) are cut where every error
    is rendered (bounded_message, bounded_error), not here."""
    errors = e.errors()
    first = max(errors, key=lambda err: len(err["loc"])) if len(errors) > 1 else errors[0]  # the deepest
    parts = field_parts(first["loc"])
    loc = field_name(parts, dotted=dotted)
    msg = first["msg"]
    if first["type"] == "missing" and loc and msg == "Field required":  # pydantic's, no sentence of the grid's own
        # OpenAI's words and code (Messages: anthropic_error_response); the code was invalid_request until review RV4
        err = InvalidRequest(missing_parameter(loc), param=loc, code=MISSING_PARAMETER)
    else:
        if first["type"] == "value_error":  # the grid's own check: its sentence, without pydantic's "Value error, "
            msg = msg.removeprefix("Value error, ")
        err = InvalidRequest(f"invalid value for '{loc}': {msg}", param=loc or None)
    err.field = parts or None  # a front door names the field in its own form from these (front_door.name_own_field)
    return err




def missing_parameter(loc: str) -> str:
    """OpenAI's sentence for a required field left out (until the thirty-seventh session `invalid value for
    'messages': Field required`, of a value the client never sent)."""
    return f"Missing required parameter: '{loc}'."


ANTHROPIC_ERROR_CODES = {"thread_not_found": "thread_not_found",
                         "unsupported_content_encoding": "request_body_encoding_unsupported"}
"""Codes of ours and the `error.details.error_code` Anthropic's API says for the same fault (the SDKs pick an error
class, and the tool runner its recovery, by it: `anthropic.RequestBodyEncodingUnsupportedError` for a body's
`Content-Encoding` the API does not read)."""


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None,
                    error_code: str | None = None, request_id: str | None = None) -> Response:
    """Anthropic's envelope, its message bounded (bounded_message); `request_id` (the id the `request-id` header
    carries) in the body too, as Anthropic's API answers, when the caller knows it."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error: dict[str, object] = {"type": kind, "message": bounded_message(message)}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body: dict[str, object] = {"type": "error", "error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def anthropic_error_response(err: ApiError, request_id: str | None = None) -> Response:
    """Anthropic's envelope and status of one of our errors, with its headers and `x-should-retry`."""
    status = 413 if err.code == "request_too_large" else _ANTHROPIC_STATUS.get(err.status, err.status)
    message = err.message if err.param is None or err.param in err.message else f"{err.param}: {err.message}"
    if err.param is not None and err.message == missing_parameter(err.param):  # Anthropic's words for it
        message = f"{err.param}: Field required"
    return anthropic_error(status, message, err.response_headers(),
                           ANTHROPIC_ERROR_CODES.get(err.code or ""), request_id)


async def api_error_handler(request: Request, exc: Exception, request_id: str | None = None) -> Response:
    """`request_id`: the exchange's (routes.Audited), written into Anthropic's body as Anthropic does."""
    assert isinstance(exc, ApiError)
    return anthropic_error_response(exc, request_id) if _anthropic(request) else error_response(exc)


def _anthropic(request: Request) -> bool:
    """Anthropic's Messages API answers its errors in Anthropic's shape (messages_api.py), and so does every
    route to a caller that says it speaks Anthropic's API (the Anthropic SDKs send `anthropic-version` on every
    call): its `client.models`, a path not served (`client.beta.skills`) or its `client.files`."""
    return request.url.path.startswith(ANTHROPIC_PREFIX) or ANTHROPIC_VERSION in request.headers


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """A route this gateway does not serve. Under /v1/ a method a path does not take (Starlette's 405) is
    answered as the 404 of a path not served: the SDKs have no class for a 405 (a bare `APIStatusError`), and
    every such call is an SDK method aigrid does not serve (`client.models.delete`,
    `client.chat.completions.list`), which they should see as the `NotFoundError`
    an unknown path is. Elsewhere (the dashboard) a 405 stays a 405. A 404 names the route nearest the path
    when one is (unknown_path.py), in Anthropic's envelope when that route is under /v1/messages; the path is
    said back escaped, and cut (a path of any length was said whole)."""
    assert isinstance(exc, HTTPException)
    not_served = exc.status_code == 405 and request.url.path.startswith(API_PREFIX)
    status = 404 if not_served else exc.status_code
    typ, code = _HTTP_TYPES.get(status, ("invalid_request_error", "http_error"))
    path = shown_path(request.scope["path"])
    hint = _base_url_hint(request, status)
    near = (route_index(request.scope.get("app")).nearest(request.scope["path"])  # the app's own routes
            if exc.status_code == 404 and not hint else None)  # (scope["app"]: Starlette's)
    message = (f"{exc.detail}: {request.method} {path}" + hint
               + (f" (did you mean {near.said(request.method)}?)" if near else ""))
    # sorted: Starlette joins a route's methods from a set, whose order changes with the hash seed (a fresh clone's
    # run read 'HEAD, GET' where others read 'GET, HEAD')
    allowed = ", ".join(sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip())) \
        if exc.status_code == 405 else ""
    if not_served:
        message = (f"{request.method} {path} is not served by this gateway"
                   + (f" (this path takes {allowed})" if allowed else ""))
    body: dict[str, object] = {"error": {"message": message, "type": typ, "param": None, "code": code}}
    request_id = f"req-{secrets.token_hex(8)}"  # as an audited route's own (Exchange.request_id): the SDKs' err.request_id
    headers = {"x-request-id": request_id, "request-id": request_id, "x-should-retry": "false"}
    if allowed:  # the methods the path takes, on the 404 too (RFC 9110: a server MAY send Allow in any response)
        headers["allow"] = allowed
    if _anthropic(request) or (near is not None and near.path.startswith(ANTHROPIC_PREFIX)):
        return anthropic_error(status, message, headers, request_id=request_id)
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _base_url_hint(request: Request, status: int) -> str:
    """What a 404 says when the client's base URL is the likely mistake: a client configured with the gateway's
    address and no /v1 (OpenAI's SDKs and most tools add only the path), or one with /v1 that adds /v1 itself
    (the Anthropic SDKs and Claude Code)."""
    if status != 404:
        return ""
    path = request.url.path
    base = shown_path(str(request.base_url).rstrip("/"))  # from the client's Host header: escaped and cut
    if path.startswith(API_PREFIX + "v1/"):
        return (f" (/v1 twice: the Anthropic SDKs and Claude Code add /v1 themselves, so their base URL is {base}; "
                f"OpenAI's is {base}/v1)")
    if not path.startswith(API_PREFIX) and path.strip("/").split("/")[0] in _API_FAMILIES:
        return f" (the API is under /v1: an OpenAI client's base URL is {base}/v1)"
    return ""


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug of ours, never a client's mistake: logged with its traceback, answered with the envelope."""
    request_id = f"req-{secrets.token_hex(8)}"
    log.exception("internal error on %s %s (request id %s)", request.method, request.url.path, request_id,
                  exc_info=exc)
    response = internal_error(request, request_id)
    response.raw_headers.extend(((b"x-request-id", request_id.encode()), (b"request-id", request_id.encode())))
    return response


def internal_error(request: Request, request_id: str | None = None) -> Response:
    """The envelope of an internal error (the caller has logged it, and sends the request id's headers)."""
    message = "internal error in the aigrid gateway (logged)"
    body: dict[str, object] = {"error": {"message": message, "type": "server_error", "param": None,
                                         "code": "internal_error"}}
    if _anthropic(request):
        return anthropic_error(500, message, request_id=request_id)
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")
