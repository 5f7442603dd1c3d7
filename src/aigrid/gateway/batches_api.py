"""OpenAI's Batch API (the SDK's `client.batches`): POST /v1/batches, GET /v1/batches, GET /v1/batches/{id},
POST /v1/batches/{id}/cancel.

Create reads the whole input file and checks it line by line, streamed from disk (batch_input.check_file; at
most `gateway.batch.max_checking` files at once per process, a create beyond waiting its turn) before it accepts
the batch: a
file with mistakes makes a batch that has failed validation, with OpenAI's `errors` (code, line, message,
param); a bad request body is a 400 naming the field. An accepted batch is `validating` until a gateway
process claims it (this one, at once: batch_runner.py), then runs each line through the one pipeline as its
creator at urgency `batch` (batch_line.py). Cancel marks it `cancelling` (any worker; the process running
it stops starting lines, lets the running ones finish, then it is `cancelled` with what was done).

Every route is authenticated, tenant-scoped (another tenant's batch is a 404), residency-scoped (a batch, or an
input file, made by a key whose jurisdictions are not all among the caller's is a 404 too, left out of the list;
a batch and its output and error files are made under its creator's jurisdictions: batch_store.py) and audited
(routes.Audited: one record with the route and outcome, the ids, never the file's text). docs/batches.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.errors import InvalidRequest, NotFound
from aigrid.gateway.batch_input import check_file
from aigrid.gateway.batch_line import caller_record, kept_headers, line_bound
from aigrid.gateway.batch_runner import BatchRunner
from aigrid.gateway.batch_store import OPENAI_PREFIX, BatchStore
from aigrid.gateway.batches_schema import BatchCreate
from aigrid.gateway.cursor_list import page_object, page_query
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.file_store import FileStore
from aigrid.gateway.front_door import validate
from aigrid.gateway.routes import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    Handler,
    Routes,
    audited_route,
    authenticate,
    json_response,
)
from aigrid.security.authorize import check_made_for
from aigrid.security.principal import Principal, Scopes

log = logging.getLogger("aigrid.batches")

BATCHES_PATH = "/v1/batches"
ENDPOINTS = (CHAT_PATH, COMPLETIONS_PATH)
"""The endpoints a batch's lines may call (OpenAI's others, embeddings included, are a 400 naming endpoint)."""
WINDOW_S = 24 * 3600
MAX_LIST = 100


def batch_object(bid: str, created: int, *, endpoint: str, input_file_id: str, status: str, model: str | None,
                 total: int = 0, completion_window: str = "24h",
                 metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """OpenAI's Batch object as created (the row both batch APIs keep and the runner updates)."""
    return {
        "id": bid, "object": "batch", "endpoint": endpoint, "model": model, "errors": None,
        "input_file_id": input_file_id, "completion_window": completion_window, "status": status,
        "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
        "expires_at": created + WINDOW_S, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": total, "completed": 0, "failed": 0}, "usage": None, "metadata": metadata}


class BatchesApi:
    def __init__(self, routes: Routes, files: FileStore, store: BatchStore, runner: BatchRunner) -> None:
        self.gw, self.pipeline = routes.gw, routes
        self.files, self.store, self.runner = files, store, runner
        self._checking = asyncio.Semaphore(self.gw.spec.gateway.batch.max_checking)
        """Input files this process reads and checks at once (gateway.batch.max_checking)."""

    def routes(self) -> list[Route]:
        one, cancel = BATCHES_PATH + "/{batch_id}", BATCHES_PATH + "/{batch_id}/cancel"

        def audited(method: str, path: str, handler: Handler) -> Route:
            return audited_route(self.gw, method, path, handler)

        return [audited("POST", BATCHES_PATH, self.create), audited("GET", BATCHES_PATH, self.list),
                audited("GET", one, self.get), audited("POST", cancel, self.cancel)]

    async def _caller(self, request: Request, ex: Exchange) -> tuple[Principal, dict[str, str]]:
        return await authenticate(self.gw, request, ex)

    async def create(self, request: Request, ex: Exchange) -> Response:
        gw = self.gw
        caller, headers = await self._caller(request, ex)
        raw = await self.pipeline.read_json(request)
        req = validate(BatchCreate, raw)
        if req.endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint: {req.endpoint!r} is not served in batches; use one of "
                                 f"{', '.join(ENDPOINTS)}", param="endpoint")
        bid, created = "batch_" + os.urandom(12).hex(), int(time.time())
        ex.body = {"batch_id": bid, "input_file_id": req.input_file_id, "endpoint": req.endpoint}
        found = await self.files.get(caller.tenant, req.input_file_id, allowed=caller.scopes.jurisdictions)
        if found is None:
            raise NotFound(f"input_file_id: no file {req.input_file_id!r}", param="input_file_id")
        if found.purpose != "batch":
            raise InvalidRequest(f"input_file_id: {found.id!r} has purpose {found.purpose!r}; a batch reads a file "
                                 "uploaded with purpose 'batch'", param="input_file_id")
        await self.files.check_room(caller.tenant, "input_file_id", files=2,  # its output and error files will be
                                    jurisdictions=caller.scopes.jurisdictions)  # the tenant's files too
        if found.jurisdictions is not None:  # a file made under a narrower residency than the caller's: its
            # batch is made, served and kept under that residency too (its lines routed only there, its results
            # seen by the keys that see the file), whoever creates it
            caller = replace(caller, scopes=caller.scopes.narrowed_by(Scopes(jurisdictions=found.jurisdictions)))
        kept = kept_headers(self.pipeline, caller, headers)  # as its lines will be sent: a bad one is this 4xx
        async with self._checking:  # in its turn: a create beyond waits (the input files of many are not read at once)
            try:
                checked = await asyncio.to_thread(check_file, self.files.disk_path(found), req.endpoint,
                                                  gw.known_models, gw.spec.gateway.batch.max_lines,
                                                  caller.scopes.allows_model, line_bound(gw))
            except FileNotFoundError:  # deleted since it was found (a DELETE drops the row, then the bytes)
                raise NotFound(f"input_file_id: no file {req.input_file_id!r}", param="input_file_id") from None
        obj = batch_object(bid, created, endpoint=req.endpoint, input_file_id=req.input_file_id,
                           status="failed" if checked.errors else "validating", model=checked.model,
                           total=0 if checked.errors else checked.count,
                           completion_window=req.completion_window, metadata=req.metadata)
        if req.output_expires_after is not None:
            obj["output_expires_after"] = req.output_expires_after.model_dump()
        if checked.errors:
            obj.update(failed_at=created, errors={"object": "list", "data": checked.errors})
        dropped = await self.store.create(caller.tenant, obj, caller_record(caller), kept,
                                          jurisdictions=caller.scopes.jurisdictions,
                                          keep=gw.spec.gateway.batch.max_batches)
        if dropped:
            log.info("tenant %r at gateway.batch.max_batches (%d): dropped its oldest ended batches %s for %s",
                     caller.tenant, gw.spec.gateway.batch.max_batches, ", ".join(dropped), bid)
        if not checked.errors:
            self.runner.submit(bid)
        return json_response(obj)

    async def _found(self, request: Request, ex: Exchange) -> tuple[Principal, str]:
        caller = (await self._caller(request, ex))[0]
        bid = request.path_params["batch_id"]
        ex.body = {"batch_id": bid}
        return caller, bid

    async def get(self, request: Request, ex: Exchange) -> Response:
        caller, bid = await self._found(request, ex)
        obj = await self.store.get(caller.tenant, bid, allowed=caller.scopes.jurisdictions)
        if obj is None:
            raise NotFound(f"no batch {bid!r}", param="batch_id")
        return json_response(obj)

    async def cancel(self, request: Request, ex: Exchange) -> Response:
        """validating or in_progress -> cancelling (the running lines finish, then cancelled); cancelling or
        cancelled: returned as it is; any other status is a 400 naming batch_id."""
        caller, bid = await self._found(request, ex)
        made = await self.store.row(bid)
        if made is not None and made.tenant == caller.tenant and await self.store.get(
                caller.tenant, bid, allowed=caller.scopes.jurisdictions) is not None:
            # its answers are those of the models that may serve its creator: a key narrowed to other models may not
            # cancel them (check_made_for, as a stored response's cancel; since review RV2 of the thirty-fifth session)
            check_made_for(caller, made.principal.get("scopes") or {}, self.gw.spec.models, "batch_id",
                           f"batch {bid!r}")
        obj = await self.runner.cancel(bid, caller.tenant, prefix=OPENAI_PREFIX, allowed=caller.scopes.jurisdictions)
        if obj is None:
            raise NotFound(f"no batch {bid!r}", param="batch_id")
        if obj["status"] not in ("cancelling", "cancelled"):
            raise InvalidRequest(f"batch_id: batch {bid!r} is {obj['status']}; only a validating or in-progress "
                                 "batch can be cancelled", param="batch_id")
        return json_response(obj)

    async def list(self, request: Request, ex: Exchange) -> Response:
        caller = (await self._caller(request, ex))[0]  # who asks first: no query checked for nobody
        q = page_query(request.query_params, max_limit=MAX_LIST, ordered=False)  # newest first, no `order` (OpenAI's)
        page = await self.store.list(caller.tenant, q.after, q.limit, allowed=caller.scopes.jurisdictions)
        if page is None:
            raise InvalidRequest(f"after: no batch {q.after!r}", param="after")
        data, more = page
        return json_response(page_object(data, more))

