"""Anthropic's Message Batches API (the SDK's `client.messages.batches`): POST/GET /v1/messages/batches,
GET/DELETE /v1/messages/batches/{id}, POST /v1/messages/batches/{id}/cancel, GET /v1/messages/batches/{id}/results.

A message batch is run by the OpenAI Batch API's runner (batch_runner.py), over its store and claims: create
checks every request as POST /v1/messages checks it (a mistake: 400 naming `requests.N.params.field`), writes
the requests as an input file of Messages lines (purpose `message_batch`, not the Files API's: file_store.HIDDEN)
and a batch row whose endpoint is /v1/messages and whose id is `msgbatch_...`; the runner claims it and runs
each request through the Messages API's pipeline path as the batch's creator, at urgency `batch`, with one
audit record each (message_batch_line.py). Its output and error files are read back here as Anthropic's
results (JSONL of `{custom_id, result: {type: succeeded | errored | canceled | expired, ...}}`).

The row keeps OpenAI's Batch object, which the runner updates; it is shown as Anthropic's MessageBatch
(`message_batch`). Every route is authenticated (x-api-key or a bearer key), tenant-scoped (another
tenant's batch, or an OpenAI batch: 404 not_found_error), residency-scoped (a batch made by a key whose
jurisdictions are not all among the caller's: 404 not_found_error too, left out of the list; its requests and
results are made under its creator's jurisdictions: batch_store.py) and audited (routes.Audited); errors leave
in Anthropic's shape (envelope.py, by path). docs/messages-api.md, "Message Batches".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aigrid.errors import ApiError, InvalidRequest, NotFound, Overloaded, PermissionDenied
from aigrid.gateway.batch_input import Line, lines_not_done
from aigrid.gateway.batch_line import caller_record, kept_headers, line_bound
from aigrid.gateway.batch_runner import RESULT_LOST, BatchRunner
from aigrid.gateway.batch_store import FINAL, BatchStore
from aigrid.gateway.batches_api import batch_object
from aigrid.gateway.body_values import check_values
from aigrid.gateway.cursor_list import page_query
from aigrid.gateway.envelope import from_validation
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.file_store import RESERVE_SLACK_S, FileStore, Reservation
from aigrid.gateway.front_door import name_own_field, validate
from aigrid.gateway.message_batches_schema import MessageBatchRequest, MessageBatchShape
from aigrid.gateway.messages_api import MESSAGES_PATH
from aigrid.gateway.messages_schema import MessagesRequest
from aigrid.gateway.messages_translate import chat_body, name_messages_field, placed_messages
from aigrid.gateway.numbers import plain_int
from aigrid.gateway.open_off_loop import open_off_loop
from aigrid.gateway.routes import (
    Handler,
    Routes,
    audited_route,
    authenticate,
    body_too_large,
    json_object,
    json_response,
    receive_body,
)
from aigrid.gateway.schemas import ChatRequest
from aigrid.gateway.slow_clients import body_deadline_s
from aigrid.security.authorize import check_made_for
from aigrid.security.principal import Principal

log = logging.getLogger("aigrid.batches")
MESSAGE_BATCHES_PATH = "/v1/messages/batches"
PREFIX = "msgbatch_"
MAX_LIST = 1000
_PROCESSING = {"cancelling": "canceling", **{s: "ended" for s in FINAL}}
"""The runner's status -> Anthropic's processing_status (every other one: in_progress)."""
LARGE_AT_ONCE = 1
"""Creates whose body is larger than a live request may be (gateway.max_body_bytes) parsed and checked at once
in one gateway process. Checking one takes about 7 x its body in memory (its parsed JSON beside it; 10.7 x
before each request was checked and freed in turn): 100 MiB bodies checked side by side took the process past a
machine's memory. A body waits its turn on disk (it arrives first, however slowly, without holding the turn)."""
LARGE_WAIT_S = 10.0
"""How long such a create waits for its turn before it is shed (429 overloaded, Retry-After)."""


def _time(t: int | None) -> str | None:
    """Anthropic's RFC 3339 datetime."""
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lost_results(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's `result_lost` errors (batch_runner._lost): the requests that ran whose results no file kept, in
    neither file, shown as errored results."""
    errors = obj.get("errors") or {}
    return [e for e in errors.get("data") or ()
            if e.get("code") == RESULT_LOST and isinstance(e.get("aigrid_custom_id"), str)]


def _unended(obj: dict[str, Any]) -> int:
    """The requests of the batch in neither of its files nor lost: not run (yet)."""
    counts = obj["request_counts"]
    return counts["total"] - counts["completed"] - counts["failed"] - len(lost_results(obj))


def lost_error(lost: dict[str, Any]) -> dict[str, Any]:
    """The error of a request whose result was lost (a `result_lost` error of its batch): it ran (it is not tried
    again), so not `canceled`; the runner's message (charged or not), and its request id, as every errored result
    carries it (the decision's, for `aigrid explain`: until the thirtieth session none). A batch ended before then
    kept no request id: none is given."""
    error: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": str(lost.get("message"))}}
    if isinstance(lost.get("aigrid_request_id"), str):
        error["request_id"] = lost["aigrid_request_id"]
    return error


def message_batch(obj: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The stored batch (OpenAI's Batch object, as the runner keeps it) as Anthropic's MessageBatch. Counts move
    as requests end (Anthropic shows them only once the batch has ended); once it has ended, the requests
    never started are `canceled` (or errored, in a batch whose requests could no longer be read), and those whose
    result was lost (`lost_results`) errored."""
    status = obj["status"]
    processing = _PROCESSING.get(status, "in_progress")
    counts = obj["request_counts"]
    expired = int(counts.get("expired", 0))
    rest = _unended(obj)
    ended = processing == "ended"
    return {
        "id": obj["id"], "type": "message_batch", "processing_status": processing,
        "request_counts": {"processing": 0 if ended else rest, "succeeded": counts["completed"],
                           "errored": counts["failed"] - expired + len(lost_results(obj))
                           + (rest if status == "failed" else 0),
                           "canceled": rest if ended and status in ("cancelled", "completed") else 0,
                           "expired": expired + (rest if status == "expired" else 0)},
        "created_at": _time(obj["created_at"]), "expires_at": _time(obj["expires_at"]),
        "ended_at": _time(obj.get(f"{status}_at")) if ended else None,
        "cancel_initiated_at": _time(obj.get("cancelling_at")), "archived_at": None,
        "results_url": f"{base_url}{MESSAGE_BATCHES_PATH}/{obj['id']}/results" if ended else None,
    }


def result_line(record: dict[str, Any], ok: bool) -> dict[str, Any]:
    """A line of the runner's output or error file as Anthropic's MessageBatchIndividualResponse."""
    if ok:
        result: dict[str, Any] = {"type": "succeeded", "message": record["response"]["body"]}
    elif record.get("response") is None:  # not run before the batch expired (batch_runner.EXPIRED)
        result = {"type": "expired"}
    else:
        result = {"type": "errored", "error": record["response"]["body"]}
    return {"custom_id": record["custom_id"], "result": result}


class MessageBatchesApi:
    def __init__(self, routes: Routes, files: FileStore, store: BatchStore, runner: BatchRunner) -> None:
        self.gw, self.pipeline = routes.gw, routes
        self.files, self.store, self.runner = files, store, runner
        self._large = asyncio.Semaphore(LARGE_AT_ONCE)
        self.large_wait_s = LARGE_WAIT_S

    def routes(self) -> list[Route]:
        one = MESSAGE_BATCHES_PATH + "/{message_batch_id}"

        def audited(method: str, path: str, handler: Handler) -> Route:
            return audited_route(self.gw, method, path, handler)

        return [audited("POST", MESSAGE_BATCHES_PATH, self.create), audited("GET", MESSAGE_BATCHES_PATH, self.list),
                audited("GET", one, self.get), audited("DELETE", one, self.delete),
                audited("POST", one + "/cancel", self.cancel), audited("GET", one + "/results", self.results)]

    async def _caller(self, request: Request, ex: Exchange, *,
                      heavy: bool = False) -> tuple[Principal, dict[str, str]]:
        return await authenticate(self.gw, request, ex, heavy=heavy)  # x-api-key is the bearer key, as on /v1/messages

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # --- create -----------------------------------------------------------------------------------------------
    async def create(self, request: Request, ex: Exchange) -> Response:
        caller, headers = await self._caller(request, ex)
        kept = kept_headers(self.pipeline, caller, headers)  # as its requests will be sent: a bad one is this 4xx
        limit = self.gw.spec.gateway.batch.max_file_bytes
        declared = plain_int(request.headers.get("content-length", ""))
        if declared is not None and declared > limit:
            raise self._too_large()
        deadline = body_deadline_s(declared, limit)
        # its requests file and its two result files (results, errors) will be the tenant's files, the result files
        # counted from its start (batch_runner._room_to_start), as an OpenAI batch's: room for the three asked before
        # its body is read (before, for its requests file alone: its results then passed the count by up to two)
        await self.files.check_room(caller.tenant, "requests", files=3, jurisdictions=caller.scopes.jurisdictions)
        # the room the tenant has left, up to the body's size, held while it arrives (a tenant at its storage quota:
        # refused before its body is read); the requests' file takes its place
        held = await self.files.reserve(caller.tenant, "requests", limit if declared is None else declared, 0,
                                        deadline + RESERVE_SLACK_S, jurisdictions=caller.scopes.jurisdictions)
        try:  # the body and the input file each on disk past a megabyte: the store's, which the floor watches (never
            # the system's temporary folder), as files with no name (nothing left behind by a process that dies)
            folder = self.files.folder(caller.tenant)
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            with tempfile.SpooledTemporaryFile(1 << 20, dir=str(folder)) as body, \
                    tempfile.SpooledTemporaryFile(1 << 20, dir=str(folder)) as lines:
                size = await self._spool(request, body, held, deadline)  # type: ignore[arg-type]
                async with self._turn(size):
                    count = await asyncio.to_thread(self._check, body, caller.scopes.allows_model, lines)
                bid, created = PREFIX + os.urandom(12).hex(), int(time.time())
                ex.body = {"batch_id": bid, "requests": count}
                stored = await self.files.add(caller.tenant, f"{bid}_requests.jsonl", "message_batch", lines,
                                              param="requests", reservation=held,
                                              jurisdictions=caller.scopes.jurisdictions)
        except OSError as e:  # the disk refused a spool (full): the disk's refusal, as its floor's (it was a 500)
            raise self.files.disk_refused(caller.tenant, "requests", "batch", e) from None
        finally:
            if held is not None:
                await self.files.release(held)
        obj = batch_object(bid, created, endpoint=MESSAGES_PATH, input_file_id=stored.id, status="validating",
                           model=None, total=count)
        obj["request_counts"]["expired"] = 0
        try:
            await self.store.create(caller.tenant, obj, caller_record(caller), kept,
                                    jurisdictions=caller.scopes.jurisdictions)
        except BaseException as e:  # no batch names the requests file: removed, not left counting against the
            # tenant's storage quota with nothing to delete it by (it is hidden from /v1/files)
            log.warning("message batch %s of tenant %r not created (%s): its requests file %s removed", bid,
                        caller.tenant, type(e).__name__, stored.id)
            try:
                await self.files.delete(caller.tenant, stored.id, hidden=True)
            except Exception:
                log.exception("message batch %s: its requests file %s could not be removed", bid, stored.id)
            raise
        self.runner.submit(bid)
        return json_response(message_batch(obj, self._base(request)))

    def _too_large(self) -> InvalidRequest:
        limit = self.gw.spec.gateway.batch.max_file_bytes
        return InvalidRequest(body_too_large("the batch", limit, "gateway.batch.max_file_bytes", one="batch"),
                              code="request_too_large")

    async def _spool(self, request: Request, out: BinaryIO, held: Reservation | None, deadline: float) -> int:
        """The body written to `out` as it arrives, within `deadline` (else 408), and its size: refused as soon
        as it passes its room (`held`: what the tenant's storage quota left, 400 storage_quota_exceeded) or
        gateway.batch.max_file_bytes (413 request_too_large). Nothing of it is parsed here."""
        room = self.gw.spec.gateway.batch.max_file_bytes if held is None else held.bytes
        spooled = UploadFile(out)  # written off the event loop once on disk
        return await receive_body(
            request, room, lambda: held.full("requests") if held is not None and held.quota else self._too_large(),
            spooled.write, deadline)

    @asynccontextmanager
    async def _turn(self, size: int) -> AsyncIterator[None]:
        """A body larger than a live request may be (gateway.max_body_bytes) is parsed and checked in its turn
        (LARGE_AT_ONCE per process), waiting on disk; past large_wait_s: 429 overloaded with Retry-After."""
        if size <= self.gw.spec.gateway.max_body_bytes:
            yield
            return
        try:
            async with asyncio.timeout(self.large_wait_s):
                await self._large.acquire()
        except TimeoutError:
            raise Overloaded(f"requests: {LARGE_AT_ONCE} large message batch(es) are being read on this gateway, as "
                             "many as it reads at once; retry later", param="requests",
                             headers={"retry-after": f"{max(1, round(self.large_wait_s))}"}) from None
        try:
            yield
        finally:
            self._large.release()

    def _check(self, src: IO[bytes], may_use: Callable[[str], bool], out: IO[bytes]) -> int:
        """Every request of the body (`src`) checked as POST /v1/messages checks it (in a thread: a batch may hold
        many), the creator's model scope before a model's existence, and written to `out` as the input file of
        Messages lines the runner reads; how many. The body's bytes are dropped once parsed, and each request
        once written: what is held at once is the parsed JSON, not also the bytes, a validated copy and the
        file."""
        src.seek(0)
        body = json_object(src.read(), counted=False, dotted=True)  # its requests counted each, as a body
        validate(MessageBatchShape, body, dotted=True)
        requests: list[Any] = body["requests"]
        spec = self.gw.spec.gateway
        if len(requests) > spec.batch.max_lines:
            raise InvalidRequest(f"requests: a batch holds at most {spec.batch.max_lines} requests on this gateway "
                                 "(gateway.batch.max_lines); split it into several batches", param="requests")
        seen: set[str] = set()
        for i, item in enumerate(requests):
            requests[i] = None  # freed once written
            at = f"requests.{i}"
            params = item.get("params") if isinstance(item, dict) else None
            if isinstance(params, dict):  # before its schema walks it
                check_values(params, where=f"{at}.params.")
            req = _request(item, at)
            if req.custom_id in seen:
                raise InvalidRequest(f"{at}.custom_id: {req.custom_id!r} is the custom_id of an earlier request; "
                                     "each request of a batch needs its own", param=f"{at}.custom_id")
            seen.add(req.custom_id)
            self._check_params(req.params, at, may_use)
            out.write(orjson.dumps({"custom_id": req.custom_id, "method": "POST", "url": MESSAGES_PATH,
                                    "body": item["params"]}) + b"\n")
        return len(requests)

    def _check_params(self, params: MessagesRequest, at: str, may_use: Callable[[str], bool]) -> None:
        gw = self.gw
        if params.stream:
            raise InvalidRequest(f"{at}.params.stream: a batch's request is answered whole; leave stream out or "
                                 "false", param=f"{at}.params.stream")
        if not may_use(params.model):  # before its existence: a key learns no model of the grid it may not use
            raise PermissionDenied(f"{at}.params.model: this key may not use the model {params.model!r}",
                                   param=f"{at}.params.model", code="model_not_allowed")
        if params.model != "auto" and params.model not in gw.known_models:
            raise InvalidRequest(f"{at}.params.model: the model {params.model!r} does not exist on this grid",
                                 param=f"{at}.params.model")
        limit = gw.spec.gateway.max_output_tokens
        if params.max_tokens > limit:
            raise InvalidRequest(f"{at}.params.max_tokens: {params.max_tokens} exceeds this grid's limit of {limit}",
                                 param=f"{at}.params.max_tokens")
        origins: list[str] = []  # where each chat message came from (a refusal of the translation leaves it empty)
        try:  # the chat request it becomes, as the pipeline will read it
            origins.extend(where for _, where in placed_messages(params))
            try:
                ChatRequest.model_validate(chat_body(params))
            except ValidationError as e:
                raise from_validation(e) from e
        except ApiError as e:
            name_own_field(e, origins, dotted=True)
            # `stop_sequences`, a tool's `input_schema`, as POST /v1/messages names them (until the thirty-eighth
            name_messages_field(e, params)  # session's review, RV3: chat's `stop`, `tools.0.parameters`)
            field = f"{at}.params.{e.param}" if e.param else f"{at}.params"
            raise InvalidRequest(f"{field}: {e.message}", param=field) from e

    # --- read, list -------------------------------------------------------------------------------------------
    async def _named(self, request: Request, ex: Exchange, *, heavy: bool = False) -> tuple[Principal, str]:
        """(the caller, the batch id of the path), the id noted on the exchange for its record."""
        caller = (await self._caller(request, ex, heavy=heavy))[0]
        bid = request.path_params["message_batch_id"]
        ex.body = {"batch_id": bid}
        return caller, bid

    async def _found(self, request: Request, ex: Exchange, *,
                     heavy: bool = False) -> tuple[Principal, dict[str, Any]]:
        """The batch of the path, if the caller may see it (else 404, as a missing one)."""
        caller, bid = await self._named(request, ex, heavy=heavy)
        obj = await self.store.get(caller.tenant, bid, prefix=PREFIX, allowed=caller.scopes.jurisdictions)
        if obj is None:
            raise NotFound(f"message_batch_id: no message batch {bid!r}", param="message_batch_id")
        return caller, obj

    async def get(self, request: Request, ex: Exchange) -> Response:
        return json_response(message_batch((await self._found(request, ex))[1], self._base(request)))

    async def list(self, request: Request, ex: Exchange) -> Response:
        caller = (await self._caller(request, ex))[0]  # who asks first: no query checked for nobody
        query = request.query_params
        limit = page_query(query, max_limit=MAX_LIST, ordered=False).limit  # newest first, by after_id or before_id
        after, before = query.get("after_id"), query.get("before_id")
        if after is not None and before is not None:
            raise InvalidRequest("after_id: give after_id or before_id, not both", param="after_id")
        page = await self.store.list(caller.tenant, after, limit, before=before, prefix=PREFIX,
                                     allowed=caller.scopes.jurisdictions)
        if page is None:
            name = "after_id" if after is not None else "before_id"
            raise InvalidRequest(f"{name}: no message batch {after or before!r}", param=name)
        objs, more = page
        data = [message_batch(o, self._base(request)) for o in objs]
        return json_response({"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})

    # --- cancel, delete ---------------------------------------------------------------------------------------
    async def cancel(self, request: Request, ex: Exchange) -> Response:
        """in_progress -> canceling (the running requests finish, the others end canceled); canceling or
        canceled: returned as it is; a batch that ended otherwise: 400."""
        caller, found = await self._found(request, ex)
        await self._check_answers(caller, found)
        obj = await self.runner.cancel(found["id"], caller.tenant, prefix=PREFIX, allowed=caller.scopes.jurisdictions)
        if obj is None:
            raise NotFound(f"message_batch_id: no message batch {found['id']!r}", param="message_batch_id")
        if obj["status"] not in ("cancelling", "cancelled"):
            raise InvalidRequest(f"message_batch_id: {obj['id']!r} has ended; only a batch in progress can be "
                                 "canceled", param="message_batch_id")
        return json_response(message_batch(obj, self._base(request)))

    async def _check_answers(self, caller: Principal, found: dict[str, Any]) -> None:
        """The caller's tenant's batch `found` holds the answers of the models that may serve its creator: a key
        narrowed to other models may not read, cancel or delete them (check_made_for, as a stored response; since the
        thirty-fifth session, cancel and delete since review RV2). One that ended without an answer (no output file:
        each request errored, was canceled or expired) holds none: any key of the tenant reads its refusals, as an
        OpenAI batch's error file (its owner whose tenant was narrowed after creating it was refused them until
        review F1)."""
        if found["status"] in FINAL and found.get("output_file_id") is None:
            return
        bid = found["id"]
        made = await self.store.row(bid)
        if made is not None and made.tenant == caller.tenant:
            check_made_for(caller, made.principal.get("scopes") or {}, self.gw.spec.models, "message_batch_id",
                           f"message batch {bid!r}")

    async def delete(self, request: Request, ex: Exchange) -> Response:
        """An ended batch, its requests and results are deleted; one still processing: 400 (cancel it first)."""
        caller, bid = await self._named(request, ex)
        tenant = caller.tenant
        if (seen := await self.store.get(tenant, bid, prefix=PREFIX, allowed=caller.scopes.jurisdictions)) is not None:
            await self._check_answers(caller, seen)  # one it may not see is the 404 below
        obj = await self.store.delete(tenant, bid, prefix=PREFIX, allowed=caller.scopes.jurisdictions)
        if obj is None:
            raise NotFound(f"message_batch_id: no message batch {bid!r}", param="message_batch_id")
        if obj["status"] not in FINAL:
            raise InvalidRequest(f"message_batch_id: {bid!r} is still processing; a message batch can be deleted "
                                 "once it has ended (cancel it first)", param="message_batch_id")
        for fid in (obj["input_file_id"], obj.get("output_file_id"), obj.get("error_file_id")):
            if fid is not None:
                await self.files.delete(tenant, fid, hidden=True)
        return json_response({"id": bid, "type": "message_batch_deleted"})

    # --- results ----------------------------------------------------------------------------------------------
    async def results(self, request: Request, ex: Exchange) -> Response:
        """Every line of the batch's output and error files parsed and written again (up to max_file_bytes each):
        one request against requests per minute, unlike a poll."""
        caller, obj = await self._found(request, ex, heavy=True)
        tenant = caller.tenant
        if obj["status"] not in FINAL:
            raise InvalidRequest(f"message_batch_id: {obj['id']!r} is still processing; its results are ready once "
                                 "processing_status is ended (results_url)", param="message_batch_id")
        await self._check_answers(caller, obj)
        rest = _unended(obj)
        # every file opened before the response starts: a DELETE of the batch racing it (its rows, then its files)
        # is the 404 of the batch, not a 200 cut short after its headers
        files: list[tuple[BinaryIO, bool]] = []
        opened: list[BinaryIO] = []  # every handle, closed whatever ends the response (_Results) or stops it before
        try:
            for fid, ok in ((obj.get("output_file_id"), True), (obj.get("error_file_id"), False)):
                f = None if fid is None else await self.files.get(tenant, fid, hidden=True)
                if f is not None:
                    files.append((await _open(self.files.disk_path(f), opened), ok))
            source = await self.files.get(tenant, obj["input_file_id"], hidden=True) if rest > 0 else None
            unrun = None if source is None else await _open(self.files.disk_path(source), opened)
            kind = {"expired": "expired", "failed": "errored"}.get(obj["status"], "canceled")
            never_run = None if unrun is None else functools.partial(lines_not_done, unrun, MESSAGES_PATH,
                                                                      self.gw.spec.gateway.batch.max_lines,
                                                                      line_bound(self.gw))
            return _Results(_results(files, never_run, kind, lost_results(obj)), opened)
        except FileNotFoundError:
            _close(opened)
            raise NotFound(f"message_batch_id: no message batch {obj['id']!r}", param="message_batch_id") from None
        except BaseException:
            _close(opened)
            raise


async def _open(path: Path, opened: list[BinaryIO]) -> BinaryIO:
    """`path` opened for reading off the loop (`open_off_loop`: a cancel during the open closes the handle when it
    comes) and added to `opened` (closed with the response)."""
    handle = await open_off_loop(path)
    opened.append(handle)
    return handle


def _close(handles: list[BinaryIO]) -> None:
    """Each handle closed (again, if it was: a no-op), on the loop: a read-only file's close costs nothing, and a
    response cancelled (its client gone) cannot await a thread for it."""
    for h in handles:
        h.close()


class _Results(StreamingResponse):
    """A message batch's results; the files opened for them (`opened`) closed when the response ends, however it
    ends: a client that leaves during the output, an error, or a body never started, whose generator's own
    `finally` never runs (they were closed only when the body was read to its end, else left to the garbage
    collector)."""

    def __init__(self, body: AsyncIterator[bytes], opened: list[BinaryIO]) -> None:
        super().__init__(body, media_type="application/x-jsonl")
        self._opened = opened

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            _close(self._opened)


def _request(item: Any, at: str) -> MessageBatchRequest:
    """One request of the batch validated, its mistake named from the body's root (`requests.3.params.x`)."""
    try:
        return MessageBatchRequest.model_validate(item)
    except ValidationError as e:
        err = from_validation(e, dotted=True)
        field = f"{at}.{err.param}" if err.param else at
        raise InvalidRequest(err.message.replace(f"'{err.param or ''}'", f"'{field}'", 1), param=field) from e


async def _results(files: list[tuple[BinaryIO, bool]], unrun: Callable[[set[str]], AsyncGenerator[Line, None]] | None,
                   kind: str, lost: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The output and error files (opened before the response, closed when it ends: `_Results`) as Anthropic's
    results; then each request whose result was `lost` (it ran: errored, lost_error; until the thirtieth session
    shown as not run, `canceled` in a batch that completed); then, read from the batch's requests as the runner reads
    them (`unrun`: a request never held past a live request's bound), each one that never ran (`kind`: canceled,
    expired, or errored when the batch failed)."""
    done: set[str] = set()
    for f, ok in files:
        async for text in _lines(f):
            record = orjson.loads(text)
            done.add(record["custom_id"])
            yield orjson.dumps(result_line(record, ok)) + b"\n"
    for entry in lost:
        cid = entry["aigrid_custom_id"]
        if cid not in done:
            done.add(cid)
            yield orjson.dumps({"custom_id": cid, "result": {"type": "errored", "error": lost_error(entry)}}) + b"\n"
    if unrun is None:
        return
    never: dict[str, Any] = {"type": kind}
    if kind == "errored":
        never["error"] = {"type": "error", "error": {"type": "api_error",
                                                     "message": "this request was not run: its batch failed"}}
    async with aclosing(unrun(done)) as lines:
        async for line in lines:
            yield orjson.dumps({"custom_id": line.custom_id, "result": never}) + b"\n"


async def _lines(f: BinaryIO) -> AsyncIterator[bytes]:
    """The open file's non-blank lines, read a megabyte at a time off the event loop."""
    while chunk := await asyncio.to_thread(f.readlines, 1 << 20):
        for text in chunk:
            if text.strip():
                yield text
