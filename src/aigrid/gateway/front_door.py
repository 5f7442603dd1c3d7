"""What the two other front doors (Anthropic Messages, OpenAI Responses) share around the one pipeline:
the headers they hand it, validation in their own words, and reading or re-streaming its answer.

The pipeline (routes.Routes.route) answers with a JSON Response, or a RelayResponse streaming chat SSE;
a front door translates either, and closes the relay when its own stream ends so that the relay's cleanup
(release the engine, settle the quota, write the audit record) runs exactly once, whatever the exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response

from aigrid.errors import ApiError
from aigrid.gateway.chat_events import ChatEvent, chat_events
from aigrid.gateway.envelope import field_name, from_validation
from aigrid.gateway.relay_response import RelayResponse, aclose_body

M = TypeVar("M", bound=BaseModel)
IMAGE_IN_TOOL_RESULT = "[an image the tool returned: not shown, this grid passes tool results to the model as text]"
"""What the model reads in place of an image in a tool's result (Anthropic's tool_result, a Responses
function_call_output): a chat tool message holds text only (OpenAI's format), so the image cannot go with it.
Said to the model, not refused: an agent (Claude Code reading an image file, a screenshot tool) keeps the
result in every later turn, and a refusal would end its session for good."""
DOCUMENT_IN_TOOL_RESULT = ("[a document the tool returned: not shown, this grid reads documents as text (a PDF or a "
                           "file is not read)]")
"""The same for a document in an Anthropic tool_result that is not text (a PDF, a file)."""


def pipeline_headers(request: HTTPConnection) -> dict[str, str]:
    """The request's (or a WebSocket handshake's) headers for the pipeline, its credentials as `with_api_key`
    reads them."""
    return with_api_key({k.lower(): v for k, v in request.headers.items()})


def with_api_key(headers: dict[str, str]) -> dict[str, str]:
    """`headers` (lower-case names) whose `authorization` is the caller's credentials: the Authorization header,
    else an `x-api-key` as its bearer key (the Anthropic SDK's and LiteLLM's way). Every route reads its caller
    from here (routes.header_dict, pipeline_headers), so that a key is a key on each: chat, completions and
    embeddings read Authorization alone (a 401 with enforcement on for a client sending x-api-key) where models,
    files and Messages took either. Both present naming different keys is a 401 (routes.one_credential)."""
    api_key = headers.get("x-api-key", "").strip()
    if api_key and not headers.get("authorization"):
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def validate(schema: type[M], body: dict[str, Any], *, dotted: bool = False) -> M:
    """`body` read by `schema`, else the client's 400 naming the field as the door's API does (`dotted`: Anthropic's
    Messages door; envelope.field_name)."""
    try:
        return schema.model_validate(body)
    except ValidationError as e:
        raise from_validation(e, dotted=dotted) from e


def aigrid_headers(resp: Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.startswith("x-aigrid-")}


def served_model(resp: Response, asked: str) -> str:
    """The grid model that served the pipeline's answer (its `x-aigrid-model`: the answering endpoint's model, an
    escalation's larger one), else the model asked: what the Messages and Responses doors write in their answer's
    `model`, as chat and completions write it over the engine's own name (relay.model_named). A family fallback, `auto` and an escalation
    serve another model than the request names; until the thirty-fourth session those doors wrote the one named."""
    return resp.headers.get("x-aigrid-model") or asked


RETRY_HEADERS = ("retry-after", "x-should-retry")
"""What the pipeline's answer to an engine's refusal says about trying again (proxy.py: a hosted engine's 429 with
its Retry-After, when it is a time (`_a_time`), and `x-should-retry: false` past a wait an SDK sits through), kept by
every door that answers in its own shape (`retry_headers`) as `/v1/chat/completions` passes them: until the
twenty-eighth session the Messages and Responses doors dropped both, so the SDKs retried an engine's
`retry-after: 3600` (and its `retry-after: 7`) within seconds, after their own backoff."""


def retry_headers(resp: Response) -> dict[str, str]:
    """The RETRY_HEADERS of the pipeline's answer (an engine's refusal), for a door's own answer to it."""
    return {k: resp.headers[k] for k in RETRY_HEADERS if k in resp.headers}


def is_event_stream(resp: Response) -> bool:
    return isinstance(resp, RelayResponse) and resp.status_code < 400 \
        and resp.headers.get("content-type", "").startswith("text/event-stream")


async def whole_body(resp: Response) -> bytes:
    """A non-streamed answer's bytes (a relay that is not SSE, e.g. an engine's 4xx, is read to its end)."""
    if isinstance(resp, RelayResponse):
        chunks = resp.body_iterator
        try:
            return b"".join([c async for c in chunks])
        finally:
            await aclose_body(chunks)
    return bytes(resp.body)


async def restream(resp: RelayResponse, translate: Callable[[AsyncIterator[ChatEvent]], AsyncIterator[bytes]],
                   steps: bool = False) -> AsyncIterator[bytes]:
    """The relay's chat SSE, translated; the relay is closed however this stream ends. `steps`: chat_events'."""
    chunks = resp.body_iterator
    try:
        async for out in translate(chat_events(chunks, steps)):
            yield out
    finally:
        await aclose_body(chunks)


_OWN_FIELD = {"logprobs": "include"}
"""Chat fields a front door sets from a field of its own: the Responses API's `include:
["message.output_text.logprobs"]` asks for chat's `logprobs` (the Messages API has none)."""


def name_own_field(err: ApiError, origins: Sequence[str], *, dotted: bool = False) -> None:
    """An error of the pipeline that names a message of the translated conversation (a firewall block at
    `messages[3].content`) names the front door's own field instead (`messages.2.content.0.content`);
    `origins[i]` is where chat message i came from, a tool's field named in the door's form (envelope.field_name:
    `dotted` on the Messages door). Read from the field's parts (ApiError.field, which the chat schema, the tool
    loop, the firewall and the pipeline's other checks give): until the thirty-eighth session the chat param string
    was parsed again here."""
    if err.param in _OWN_FIELD:
        err.param = own_field = _OWN_FIELD[err.param]
        err.message = f"{err.message} (at {own_field})"
        return
    field = err.field
    if field is None or len(field) < 2 or not isinstance(field[1], int):
        return
    if field[0] == "tools":  # both front doors keep the client's tools in order, their fields at the tool's top
        rest = field[3:] if field[2:3] == ("function",) else field[2:]
        own = field_name(("tools", field[1], *rest), dotted=dotted)  # tools[2].function.name -> tools.2.name
        said = f"'{err.param}'"  # a schema's sentence quotes the chat field: the client's own instead
        err.message = err.message.replace(said, f"'{own}'") if said in err.message else f"{err.message} (at {own})"
        err.param, err.field = own, ("tools", field[1], *rest)  # the door's own field, for what names it further
        return
    index = field[1]
    if field[0] != "messages" or index >= len(origins):
        return
    own = origins[index]
    chat_field = str(err.param)
    # a message that opens with the chat path ("messages[3].content[1]: ...", a replayed call's arguments too deep:
    # "messages[1].tool_calls[0].function.arguments at a.b: ...") opens with the client's own field (the second
    # said the chat path, then "(at input[1].arguments)", until the thirty-eighth session's review, RV3)
    if err.message.startswith((f"{chat_field}: ", f"{chat_field} at ")):
        err.message = own + err.message.removeprefix(chat_field)
    else:
        err.message = f"{err.message} (at {own})"
    err.param, err.field = own, None
