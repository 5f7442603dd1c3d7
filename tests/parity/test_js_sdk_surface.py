"""The official JavaScript SDKs on aigrid, as platform engineers call it from Node: `openai` and `@anthropic-ai/sdk`
(the versions tests/parity/js/package-lock.json pins; `make sdk-js` installs them) run tests/parity/js/driver.mjs
against a gateway served by uvicorn on 127.0.0.1. The driver uses the SDKs as a user would (their stream helpers
and parsers, their pagination, their error classes) and prints what they handed back; these tests assert on those
values. The JS SDKs parse streams and errors with their own code, not the Python SDKs': what one accepts the other
may not (tests/parity/test_openai_sdk_surface.py and test_anthropic_sdk_surface.py check the Python SDKs' types).

Engines are the Python parity tests' FAKES: vLLM-like answers ("Red is warm", usage 5 + 3) and a two-dimensional
embedder (test_openai_sdk_surface.py), and a SCRIPTED engine that calls the client's tool and then answers its
result. Cases are batched into as few node processes as the gateways' states allow: node and the SDKs take ~0.3 s to
start (3 s on a loaded machine), and the cases of one process run one after another in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.security.keys import KeyRing
from aigrid.spec.models import QuotaSpec, TenantSpec
from tests.agents.scripted_engine import ScriptedEngine, answer, call
from tests.gateway.batch_helpers import batch_spec, engines_for
from tests.gateway.conftest import _no_sleep, scripted_gateway, spec_in
from tests.parity.test_openai_sdk_surface import WORDS, FixedEmbedder, VllmLike
from tests.serving import serving

JS = Path(__file__).resolve().parent / "js"
SDKS = Path(os.environ.get("AIGRID_JS_SDKS") or JS)
"""Where node_modules (openai, @anthropic-ai/sdk, ws) is: tests/parity/js (the pinned versions, `make sdk-js`), or
AIGRID_JS_SDKS=DIR, a folder of other versions (scripts/sdk_matrix.py installs older majors into its cache). Node
resolves an ES module's packages from the script's own folder, so the driver is copied into DIR to run there."""
NODE = shutil.which("node")
ANSWER = "".join(WORDS)  # "Red is warm"
MODEL = "smollm2-135m"
SECRET = "js-sdk-test-secret-0123456789abcdef"
RPM_TENANT = "one-a-minute"


def _not_ready() -> str:
    """Why the driver cannot run here ('' when it can): no node, or a package that package.json pins missing from
    node_modules (openai, @anthropic-ai/sdk, ws)."""
    if NODE is None:
        return "no node on PATH: install Node.js (20 or later), then make sdk-js"
    pinned = json.loads((JS / "package.json").read_text(encoding="utf-8"))["dependencies"]
    missing = [name for name in sorted(pinned) if not (SDKS / "node_modules" / name / "package.json").is_file()]
    if SDKS != JS:
        return f"{', '.join(missing)} not installed in AIGRID_JS_SDKS={SDKS}/node_modules" if missing else ""
    return f"{', '.join(missing)} not installed in tests/parity/js/node_modules: make sdk-js" if missing else ""


NOT_READY = _not_ready()
pytestmark = pytest.mark.skipif(bool(NOT_READY), reason=NOT_READY)


@asynccontextmanager
async def on_socket(gw: Gateway) -> AsyncIterator[str]:
    """The gateway served by uvicorn on 127.0.0.1 (its lifespan starts and stops the guard, the batch runner and
    the scraper); its base URL."""
    gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota window for the whole test
    await gw.scraper.scrape_once()
    async with serving(build_app(gw)) as s:
        yield s.url


RUN_JS_S = 120.0
"""How long one node process may run; past it, it is killed and the test fails with what it wrote."""
SHOWN = 2_000
"""How many of the last characters of node's stderr and stdout a timed-out run's failure shows."""


async def _drain(stream: asyncio.StreamReader | None, into: bytearray) -> None:
    while stream is not None and (chunk := await stream.read(65536)):
        into += chunk


async def run_js(url: str, *cases: str, **env: str) -> dict[str, Any]:
    """The driver's answer to `cases`, run in one node process against `url` (this event loop serves it
    meanwhile). Past RUN_JS_S node is killed, and the failure shows the end of what it wrote (before: a bare
    TimeoutError, node's stderr lost)."""
    assert NODE is not None
    if SDKS != JS:
        shutil.copyfile(JS / "driver.mjs", SDKS / "driver.mjs")
    proc = await asyncio.create_subprocess_exec(
        NODE, str(SDKS / "driver.mjs"), *cases, cwd=SDKS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AIGRID_URL": url, **env})
    out, err = bytearray(), bytearray()
    try:
        await asyncio.wait_for(asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err), proc.wait()),
                               RUN_JS_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        with contextlib.suppress(TimeoutError):  # what was left in the pipes (a reading cancelled loses nothing)
            await asyncio.wait_for(asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err)), 5)
        pytest.fail(f"node ran past {RUN_JS_S:g} s and was killed ({' '.join(cases)}); its stderr (the last "
                    f"{SHOWN:,} characters): {err.decode(errors='replace')[-SHOWN:]!r}; its stdout: "
                    f"{out.decode(errors='replace')[-SHOWN:]!r}")
    assert proc.returncode == 0, err.decode()
    results: dict[str, Any] = json.loads(out)
    return results


def ok(results: dict[str, Any], case: str) -> Any:
    """One case's result; a case that threw fails here with what the SDK said, and one that uses what this SDK
    version lacks (an older major's, AIGRID_JS_SDKS) skips naming it."""
    got = results[case]
    assert "threw" not in got, f"{case}: {json.dumps(got['threw'], indent=1)}"
    if "unsupported" in got:
        pytest.skip(f"{case}: {got['unsupported']}")
    return got


def major(results: dict[str, Any], sdk: str) -> int:
    """The major version of `sdk` ("openai" or "anthropic") the driver ran."""
    return int(results["_versions"][sdk].split(".")[0])


ARGUMENTS = {"get_weather": {"city": "Paris"}, "calculator": {"expression": "1234 * 5678"}}


class ToolCaller(ScriptedEngine):
    """Calls the request's tool (get_weather for Paris, calculator for 1234 * 5678), and once the tool's result is
    in the conversation answers "The tool said: RESULT": with native tool calls, or as the constrained tool mode's
    JSON steps (the gateway then writes the answer itself)."""

    def __init__(self) -> None:
        super().__init__([])

    def open(self, path: str, body: bytes) -> Any:
        req = orjson.loads(body)
        messages = req.get("messages") or [{}]
        last = messages[-1]
        tool = "calculator" if b'"calculator"' in body or b"- calculator:" in body else "get_weather"
        if (req.get("response_format") or {}).get("json_schema", {}).get("name") == "agent_step":
            said = str(last.get("content"))
            self.replies.append(answer(f"The tool said: {said.split(' result: ', 1)[1]}") if " result: " in said
                                else call(tool, **ARGUMENTS[tool]))
        elif last.get("role") == "tool":
            self.replies.append({"content": f"The tool said: {last['content']}"})
        else:
            asked = str(messages[0].get("content"))
            calls = [{"name": tool, "arguments": ARGUMENTS[tool]}]
            if "TWICE" in asked:
                calls.append({"name": tool, "arguments": {"city": "Tokyo"}})
            self.replies.append({"tool_calls": calls, **({"content": "Let me check."} if "TALK" in asked else {})})
        return super().open(path, body)


class StreamedLogprobs(VllmLike):
    """VllmLike, whose streamed chat chunks also carry each word's log-probability when asked (as vLLM and
    llama.cpp stream them)."""

    async def _events(self, req: dict, chat: bool) -> AsyncIterator[bytes]:
        async for raw in super()._events(req, chat):
            if chat and req.get("logprobs") and raw.startswith(b"data: {"):
                event = orjson.loads(raw[6:])
                for choice in event["choices"]:
                    word = choice["delta"].get("content")
                    if word:
                        one = {"token": word, "logprob": -0.5, "bytes": list(word.encode())}
                        choice["logprobs"] = {"content": [{**one, "top_logprobs": [one]}]}
                raw = b"data: " + orjson.dumps(event) + b"\n\n"
            yield raw


def vllm_like(tmp: Path) -> Gateway:
    """The demo grid on vLLM-like FAKES with the fixed embedder, fast batch polling, and a tenant allowed one
    request a minute."""
    spec = batch_spec(tmp)
    spec = spec.model_copy(update={"tenants": {
        **spec.tenants, RPM_TENANT: TenantSpec(quotas=QuotaSpec(requests_per_min=1))}})
    gw = build_gateway(spec, {e.id: StreamedLogprobs(e.id) for e in spec.endpoints}, rng=random.Random(7),
                       sleep=_no_sleep)
    gw.agents.embedders["fixed-embedder"] = FixedEmbedder()  # type: ignore[assignment]
    return gw


SURFACE = ("chat", "chat_stream", "chat_stream_helper", "chat_n", "chat_logprobs", "completions", "embeddings",
           "models", "openai_errors", "rate_limited", "responses", "responses_stream", "responses_background",
           "responses_logprobs", "responses_input_items", "responses_socket", "responses_more", "batches",
           "message_batches", "paging", "messages", "messages_stream", "messages_more", "count_tokens",
           "anthropic_errors")


@pytest.fixture(scope="module")
def surface(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case of SURFACE against one vllm_like gateway, in one node process (node and the SDKs take 0.3 s to
    start on an idle machine, 3 s on a loaded one), in a thread of its own: its event loop serves the gateway."""
    tmp = tmp_path_factory.mktemp("js-surface")

    async def main() -> dict[str, Any]:
        async with on_socket(vllm_like(tmp)) as url:
            return await run_js(url, *SURFACE, AIGRID_TENANT=RPM_TENANT)

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, main()).result()


def openai_error(got: dict[str, Any], cls: str, status: int, code: str | None, typ: str,
                 param: str | None = None) -> None:
    """The openai SDK's own error class, with the status, code, type and param it read, and a request id."""
    assert (got.get("sdk"), got.get("class"), got.get("status")) == ("openai", cls, status), got
    assert (got["code"], got["type"], got["param"]) == (code, typ, param), got
    assert got["requestID"], got


def anthropic_error(got: dict[str, Any], cls: str, status: int | None, typ: str) -> None:
    """The anthropic SDK's own error class, with Anthropic's error type and a request id (header and body)."""
    assert (got.get("sdk"), got.get("class"), got.get("status"), got.get("type")) == ("anthropic", cls, status, typ), got
    assert got["requestID"] and got["error"]["type"] == "error" and got["error"]["error"]["type"] == typ, got
    if status is not None:  # an HTTP error's body names the id too; an error event of a stream carries none
        assert got["error"]["request_id"] == got["requestID"], got


def test_chat_completions_embeddings_models_and_errors_through_the_openai_js_sdk(surface: dict[str, Any]) -> None:
    res = surface
    chat = ok(res, "chat")
    assert (chat["object"], chat["model"], chat["created"]) == ("chat.completion", MODEL, 1764900000)
    assert chat["id"].startswith("chatcmpl-") and chat["requestID"] and chat["site"]
    assert chat["choices"] == [{"index": 0, "role": "assistant", "content": ANSWER, "finish": "stop"}]
    assert chat["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    streamed = ok(res, "chat_stream")
    assert (streamed["objects"], streamed["text"], streamed["finishes"]) == (["chat.completion.chunk"], ANSWER,
                                                                            ["stop"])
    assert streamed["usage"] == [{"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}]
    assert streamed["usageLast"] and len(streamed["ids"]) == 1  # one usage chunk, the last, with no choices
    helper = ok(res, "chat_stream_helper")  # ChatCompletionStream: the SDK's own accumulation of the chunks
    assert (helper["texts"], helper["content"], helper["finish"], helper["object"]) == (
        list(WORDS), ANSWER, "stop", "chat.completion")
    assert helper["usage"]["total_tokens"] == 8
    several = ok(res, "chat_n")
    for shape in (several["whole"], several["streamed"]):
        assert shape["choices"] == [[0, ANSWER, "stop"], [1, ANSWER, "stop"]]
        assert shape["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}  # prompt once
    completions = ok(res, "completions")
    assert (completions["object"], completions["text"], completions["finish"], completions["tokens"]) == (
        "text_completion", ANSWER, "stop", list(WORDS))
    assert completions["id"].startswith("cmpl-") and completions["usage"]["total_tokens"] == 8
    assert (completions["streamed"], completions["streamedObjects"]) == (ANSWER, ["text_completion"])
    assert completions["streamedUsage"]["total_tokens"] == 8
    embeddings = ok(res, "embeddings")
    assert (embeddings["object"], embeddings["model"], embeddings["usage"]) == (
        "list", "fixed-embedder", {"prompt_tokens": 7, "total_tokens": 7})
    assert [(o, i) for o, i, _ in embeddings["floats"]] == [("embedding", 0), ("embedding", 1)]
    vectors = [v for _, _, v in embeddings["floats"]]
    assert vectors == [pytest.approx([0.6, 0.8]), [1.0, 0.0]]
    assert [v for _, v in embeddings["decoded"]] == vectors  # the SDK's default: base64, decoded by the SDK
    models = ok(res, "models")
    assert MODEL in models["ids"] and "auto" in models["ids"] and "fixed-embedder" in models["ids"]
    assert len(models["ids"]) == len(set(models["ids"]))
    assert models["one"] == {"id": MODEL, "object": "model", "owned_by": "aigrid", "created": 0}
    errors = ok(res, "openai_errors")
    openai_error(errors["unknownModel"], "NotFoundError", 404, "model_not_found", "invalid_request_error", "model")
    openai_error(errors["streamedUnknownModel"], "NotFoundError", 404, "model_not_found", "invalid_request_error",
                 "model")
    openai_error(errors["badField"], "BadRequestError", 400, "invalid_request", "invalid_request_error",
                 "temperature")
    openai_error(errors["badRole"], "BadRequestError", 400, "invalid_request", "invalid_request_error",
                 "messages[0].role")
    openai_error(errors["unknownEmbedder"], "NotFoundError", 404, "model_not_found", "invalid_request_error", "model")
    openai_error(errors["retrieveUnknown"], "NotFoundError", 404, "model_not_found", "invalid_request_error", "model")
    openai_error(errors["notServed"], "NotFoundError", 404, "not_found", "invalid_request_error")
    openai_error(errors["responsesUnknown"], "NotFoundError", 404, "not_found", "invalid_request_error",
                 "response_id")
    openai_error(errors["responsesBadField"], "BadRequestError", 400, "invalid_request", "invalid_request_error",
                 "max_output_tokens")
    assert {e["shouldRetry"] for e in errors.values()} == {"false"}
    limited = ok(res, "rate_limited")
    assert limited["first"] == "stop"
    openai_error(limited["openai"], "RateLimitError", 429, "rate_limit_exceeded", "rate_limit_error")
    anthropic_error(limited["anthropic"], "RateLimitError", 429, "rate_limit_error")
    for sdk in ("openai", "anthropic"):  # 30 s into the quota's minute: retry when it ends
        assert (limited[sdk]["retryAfter"], limited[sdk]["shouldRetry"]) == ("30", "true")


def test_chat_logprobs_through_the_openai_js_sdk(surface: dict[str, Any]) -> None:
    res = surface
    logprobs = ok(res, "chat_logprobs")
    assert logprobs["whole"] == [[[w, -0.25, [w]] for w in WORDS]]
    assert logprobs["bytes"] == [list(w.encode()) for w in WORDS]
    if major(res, "openai") <= 6:
        pytest.skip("openai-node 6 and older: ChatCompletionStream starts a choice's snapshot with its first chunk's "
                    "logprobs, then appends them again (the first chunk's tokens twice; fixed in 7): an engine "
                    "that streams its first tokens in the role chunk, as this FAKE does, shows it; one whose role "
                    "chunk has no tokens (vLLM's) does not")
    assert logprobs["streamed"] == [[[w, -0.5, [w]] for w in WORDS]]
    assert logprobs["streamedN2"] == [[[w, -0.5, [w]] for w in WORDS]] * 2


def test_responses_through_the_openai_js_sdk(surface: dict[str, Any]) -> None:
    res = surface
    r = ok(res, "responses")
    assert r["id"].startswith("resp_") and (r["object"], r["status"], r["model"], r["outputText"]) == (
        "response", "completed", MODEL, ANSWER)
    assert r["output"] == [["message", "assistant", ["output_text"]]] and r["metadata"] == {"run": "1"}
    assert (r["usage"]["input_tokens"], r["usage"]["output_tokens"], r["usage"]["total_tokens"]) == (5, 3, 8)
    assert r["requestID"] and r["retrieved"] == [r["id"], "completed", ANSWER]
    assert r["next"] == ["completed", r["id"], ANSWER]
    stream = ok(res, "responses_stream")
    assert stream["types"] == ["response.created", "response.in_progress", "response.output_item.added",
                               "response.content_part.added", *["response.output_text.delta"] * 3,
                               "response.output_text.done", "response.content_part.done",
                               "response.output_item.done", "response.completed"]
    assert stream["sequence"] == list(range(len(stream["types"]))) and stream["text"] == ANSWER
    assert stream["completed"][0] == "completed" and stream["completed"][2] == 8
    helper = stream["helper"]  # ResponseStream: the SDK checks every event against its snapshot
    assert (helper["deltas"], helper["status"], helper["outputText"]) == (list(WORDS), "completed", ANSWER)
    background = ok(res, "responses_background")
    assert background["queued"] == ["response", "queued", True]
    assert background["done"] == [True, "completed", ANSWER]
    numbers = [n for n, _ in background["streamed"]]
    assert numbers == list(range(len(numbers))) and background["streamed"][-1][1] == "response.completed"
    assert background["resumed"] == background["streamed"][4:]  # starting_after 3
    assert background["helper"] == [True, "completed", ANSWER]  # responses.stream({response_id}) resumed it
    logprobs = ok(res, "responses_logprobs")
    assert logprobs["whole"] == [[w, -0.25] for w in WORDS] and logprobs["streamed"] == [[w, -0.5] for w in WORDS]
    assert logprobs["deltas"] == [[w] for w in WORDS]
    items = ok(res, "responses_input_items")  # newest first, as OpenAI lists them by default
    assert items == {"status": "completed", "items": [["message", "user", [["input_text", "Name a colour."]]],
                                                       ["message", "system", [["input_text", "Be brief."]]]]}


def test_responses_websocket_compaction_and_conversations_through_the_openai_js_sdk(surface: dict[str, Any]) -> None:
    res = surface
    stream = ok(res, "responses_stream")
    socket_ = ok(res, "responses_socket")  # WebSocket mode: the SDK's ResponsesWS over the `ws` package
    assert socket_["seen"] == stream["types"] * 2 and socket_["chained"]
    assert [f[0] for f in socket_["finals"]] == ["completed", "completed"]
    more = ok(res, "responses_more")
    assert more["counted"] == ["response.input_tokens", True]
    assert more["compacted"] == ["response.compaction", "compaction", "string", True]
    assert more["after"] == ["completed", ANSWER]  # the compaction item taken back as input
    assert more["deleted"] == ["NotFoundError", 404]
    assert more["cancelled"][0] and more["cancelled"][1] in ("cancelled", "completed")
    assert more["conversation"] == ["conversation", {"topic": "colours"}, {"topic": "paint"}, True, ANSWER]
    assert more["added"] == ["list", [["message", "user"]]]
    assert more["items"] == [["message", "user"], ["message", "user"], ["message", "assistant"], ["message", "user"]]
    assert more["one"] == [True, "message"] and more["afterDelete"]
    assert more["convDeleted"] == [True, True, "conversation.deleted"]


def test_files_batches_and_every_list_a_page_at_a_time_through_the_js_sdks(surface: dict[str, Any]) -> None:
    res = surface
    batches = ok(res, "batches")
    assert batches["file"][:2] == ["file", "batch"] and batches["file"][3] == "in.jsonl" and batches["file"][2] > 0
    assert batches["status"] == "completed" and batches["counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert batches["answers"] == [["r0", 200, ANSWER], ["r1", 200, ANSWER]] and batches["deleted"] == [True, True]
    message_batches = ok(res, "message_batches")
    assert message_batches["type"] == "message_batch"
    assert message_batches["counts"] == {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0}
    assert message_batches["results"] == [["a", "succeeded", ANSWER], ["b", "succeeded", ANSWER]]
    paging = ok(res, "paging")  # limit 1: the SDKs' auto-pagers follow has_more and the last id to the end
    listed = paging["listedFiles"]  # newest first: these three, then the batch's output (its input was deleted)
    assert listed[:3] == paging["files"][::-1] and len(listed) == len(set(listed)) == 4
    assert paging["items"] == paging["convItems"] == ["one", "two", "three"]
    assert paging["claudeModels"][:2] == [MODEL, "auto"] and len(paging["claudeModels"]) == 4
    assert paging["listedBatches"][:2] == paging["batches"][::-1] and len(paging["listedBatches"]) == 3
    listed = paging["listedOpenaiBatches"]  # these two, then the batches case's
    assert listed[:2] == paging["openaiBatches"][::-1] and len(listed) == len(set(listed)) == 3


def test_messages_through_the_anthropic_js_sdk(surface: dict[str, Any]) -> None:
    res = surface
    m = ok(res, "messages")
    assert m["id"].startswith("msg_") and (m["type"], m["role"], m["model"]) == ("message", "assistant", MODEL)
    assert m["content"] == [["text", ANSWER]] and m["stop"] == ["end_turn", None]
    assert (m["usage"]["input_tokens"], m["usage"]["output_tokens"]) == (5, 3)
    assert m["requestID"] and m["requestID"] == m["sdkRequestID"]
    stream = ok(res, "messages_stream")  # MessageStream, its 'text' events and finalMessage()
    assert stream["texts"] == list(WORDS) and stream["finalText"] == ANSWER
    assert stream["final"]["content"] == [["text", ANSWER]] and stream["final"]["stop"] == "end_turn"
    assert (stream["final"]["usage"]["input_tokens"], stream["final"]["usage"]["output_tokens"]) == (5, 3)
    assert stream["rawTypes"] == ["message_start", "content_block_start", *["content_block_delta"] * 3,
                                  "content_block_stop", "message_delta", "message_stop"]  # the SDK skips ping
    more = ok(res, "messages_more")
    assert more["warmed"][:2] == [0, "max_tokens"]  # max_tokens 0: the prompt read, nothing answered
    assert more["continued"] == more["whole"] == [[" is warm"], "end_turn"]  # a prefill continued, not repeated
    counted = ok(res, "count_tokens")
    assert counted["count"] > 0 and counted["hasMore"] is False and counted["ids"][:2] == [MODEL, "auto"]
    assert counted["one"] == [MODEL, "model", "string"]
    errors = ok(res, "anthropic_errors")
    for name in ("unknownModel", "retrieveUnknown", "streamUnknownModel", "unknownBatch"):
        anthropic_error(errors[name], "NotFoundError", 404, "not_found_error")
    for name in ("badMaxTokens", "systemRole", "countNoMessages"):
        anthropic_error(errors[name], "BadRequestError", 400, "invalid_request_error")
    refused = errors["systemRole"]  # the SDK's apiMessage (1.x; in 0.x the message of the error it keeps)
    assert "messages.0.role" in (refused["apiMessage"] if major(res, "anthropic") >= 1 else
                                 refused["error"]["error"]["message"])
    assert {e["shouldRetry"] for e in errors.values()} == {"false"}


@pytest.mark.parametrize("mode", ["native", "constrained"])
async def test_the_clients_own_tools_and_the_grids_through_the_js_sdks(tmp_path: Path, mode: str) -> None:
    """native: the engine's tool calls are relayed; constrained: the gateway decodes each step under a grammar
    and writes the tool calls (chunks, blocks, events) itself."""
    gw = await scripted_gateway(tmp_path, ToolCaller(), mode)
    async with on_socket(gw) as url:
        res = await run_js(url, "chat_tools", "messages_tools", "responses_tools", "server_tools", "tool_runner",
                           *(["parallel_tools"] if mode == "native" else []))
    paris, said = {"city": "Paris"}, "The tool said: sunny"
    chat = ok(res, "chat_tools")
    assert chat["whole"] == ["tool_calls", "function", "get_weather", paris, "string"]
    assert chat["streamed"] == ["tool_calls", "get_weather", paris]
    assert chat["answered"] == ["stop", said]
    assert chat["runTools"] == {"ran": [paris], "content": said}  # the SDK's own tool loop, two requests
    messages = ok(res, "messages_tools")
    assert messages["whole"] == ["tool_use", "get_weather", paris, "string"]
    assert messages["streamed"] == ["tool_use", "get_weather", paris, True]  # MessageStream's inputJson events
    assert messages["answered"] == ["end_turn", [["text", said]]]
    runner = ok(res, "tool_runner")  # client.beta.messages.toolRunner, whole and streamed
    assert runner == {"ran": [paris, paris], "final": ["end_turn", [["text", said]]],
                      "streamed": ["tool_use", "end_turn"]}
    responses = ok(res, "responses_tools")
    assert responses["call"] == ["completed", "get_weather", paris, "string"]
    assert responses["helper"] == ["completed", "get_weather", paris, False]
    assert responses["streamed"] == ["response.completed", paris] and responses["next"] == ["completed", said]
    grid = ok(res, "server_tools")  # calculator runs at the chosen site: the grid's tools listed (an mcp_list_tools
    for shape in (grid["whole"], grid["streamed"]):  # item, since the thirty-seventh session), an mcp_call, the answer
        assert shape == {"status": "completed", "text": "The tool said: 7006652", "output": [
            ["mcp_list_tools", None, None, "aigrid"], ["mcp_call", "calculator", "7006652", "aigrid"],
            ["message", None, None, None]]}
    assert grid["chat"] == grid["chatStreamed"] == ["stop", "The tool said: 7006652"]
    if mode == "native":
        two = ok(res, "parallel_tools")  # text, then two calls in one turn: indexes and ids as each SDK expects
        calls = [["call_0", "get_weather", paris], ["call_1", "get_weather", {"city": "Tokyo"}]]
        assert two["chat"] == two["chatWhole"] == ["tool_calls", "Let me check.", calls]
        blocks = [["text", "Let me check."], *[["tool_use", *c] for c in calls]]
        assert two["message"] == two["messageWhole"] == ["tool_use", blocks] and two["inputJsonSnapshots"] > 0
        items = [["message", "Let me check."], *[["function_call", *c] for c in calls]]
        assert two["response"] == two["responseWhole"] == ["completed", items]


async def test_a_key_the_gateway_never_issued_is_each_js_sdks_authentication_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    KeyRing(SECRET.encode()).save(tmp_path / "keys.json")
    spec = spec_in(tmp_path, enforce=True)
    gw = build_gateway(spec, {e.id: VllmLike(e.id) for e in spec.endpoints}, rng=random.Random(3), sleep=_no_sleep)
    async with on_socket(gw) as url:
        res = await run_js(url, "unauthorized", AIGRID_KEY="sk-never-issued")
    refused = ok(res, "unauthorized")
    for name in ("chat", "models", "responses"):
        openai_error(refused[name], "AuthenticationError", 401, "invalid_api_key", "authentication_error")
    for name in ("messages", "claudeModels"):
        anthropic_error(refused[name], "AuthenticationError", 401, "authentication_error")


async def test_failures_are_each_js_sdks_errors(gateway: Gateway, fakes: dict[str, Any], tmp_path: Path) -> None:
    """A stream every site breaks (after its first byte: no continuation can finish it), every site failing before
    its first byte, and no healthy site, as each SDK reports them."""
    for f in fakes.values():
        f.break_after = 0
    async with on_socket(gateway) as url:
        broken_run = await run_js(url, "broken")
        broken = ok(broken_run, "broken")
    engines = engines_for(tmp_path / "second")
    gw = build_gateway(spec_in(tmp_path / "second"), engines, rng=random.Random(3), sleep=_no_sleep)
    async with on_socket(gw) as url:
        failing = ok(await run_js(url, "every_site_fails"), "every_site_fails")
        for e in engines.values():
            e.down = True
        await gw.scraper.scrape_once()
        nowhere = ok(await run_js(url, "no_site"), "no_site")
    # mid-stream: the error event each SDK raises from the stream (no HTTP status: the 200 was sent)
    openai_error(broken["chat"], "APIError", None, "stream_interrupted", "upstream_error")  # type: ignore[arg-type]
    assert broken["chatChunks"] <= 1  # at most the role chunk, then the error
    assert broken["responsesEvents"] == ["response.created", "response.in_progress", "response.failed"]
    assert broken["responsesFailed"] == [["failed", "server_error"]]
    if major(broken_run, "openai") >= 6:  # openai 5's ResponseStream hands back its last snapshot (in_progress)
        assert broken["responses"]["notRefused"]["status"] == "failed"  # ResponseStream hands the failed response back
    anthropic_error(broken["messages"], "APIError", None, "api_error")
    openai_error(failing["chat"], "InternalServerError", 502, "upstream_failed", "upstream_error")
    anthropic_error(failing["messages"], "InternalServerError", 500, "api_error")
    openai_error(nowhere["chat"], "InternalServerError", 503, "no_eligible_endpoint", "service_unavailable_error")
    openai_error(nowhere["responses"], "InternalServerError", 503, "no_eligible_endpoint", "service_unavailable_error")
    overloaded = "OverloadedError" if major(broken_run, "anthropic") >= 1 else "InternalServerError"  # none in 0.x
    for name in ("messages", "messagesStream"):
        anthropic_error(nowhere[name], overloaded, 529, "overloaded_error")


async def test_a_node_run_past_its_time_fails_showing_what_node_wrote(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """run_js killed node at its timeout and raised a bare TimeoutError: what node had written to stderr (a hung
    SDK's warning, a stack) was lost. The failure now shows the end of its stderr and stdout. A stand-in for node
    that writes, then sleeps past a timeout of 3 s."""
    import sys

    stand_in = tmp_path / "node"
    stand_in.write_text("#!/bin/sh\necho 'a case hung: the stack' >&2\necho '{\"partial\"'\nexec sleep 120\n")
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys.modules[__name__], "NODE", str(stand_in))
    monkeypatch.setattr(sys.modules[__name__], "RUN_JS_S", 3.0)
    with pytest.raises(pytest.fail.Exception) as failed:
        await run_js("http://127.0.0.1:9", "a_case")
    said = str(failed.value)
    assert "node ran past 3 s and was killed (a_case)" in said
    assert "a case hung: the stack" in said and '{"partial"' in said, said
