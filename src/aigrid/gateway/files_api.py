"""OpenAI's Files API, as far as the Batch API needs it (the SDK's `client.files`): POST /v1/files (multipart:
`file`, `purpose`, optional `expires_after`), GET /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content,
DELETE /v1/files/{id}.

Only `purpose: batch` is accepted (a batch's input, JSONL); the batches' results are files of purpose
`batch_output`. Uploads larger than `gateway.batch.max_file_bytes` are refused with 413 while they arrive,
before the rest is read; so is one past what the tenant's storage quota leaves (400 storage_quota_exceeded),
that room held for it while it arrives (file_store.FileStore.reserve), so that uploads side by side cannot
together bring more. Its bytes are written as they arrive into the tenant's folder (FileStore.spool: Starlette's
multipart parser with its file part there, `_StoreParser`, not in the system's temporary folder) and the spool
becomes the file by a rename; a spool not kept is deleted, and a disk that refuses it is a 503
insufficient_storage naming `file`. Files live on the local disk of the machine running the gateway (file_store.py;
docs/batches.md, "Where files live"). Every route is authenticated, tenant-scoped (another tenant's file is a
404), residency-scoped (an upload is made under its key's jurisdictions, narrowed by its x-aigrid-residency;
a file made by a key whose jurisdictions are not all among the caller's, or by an
unrestricted key when the caller is narrowed, is a 404 too and is left out of the list: file_store.py) and
audited (routes.Audited: one record with the route, tenant and outcome; ids and sizes, never content).
Anthropic's Files API, on the same paths, is not served: a caller that sends `anthropic-version` (the Anthropic
SDK's `client.files`) gets Anthropic's 404 `not_found_error`, never OpenAI's batch files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from aigrid.errors import ApiError, InvalidRequest, NotFound, RequestTimeout
from aigrid.gateway.batch_store import BatchStore
from aigrid.gateway.cursor_list import page_object, page_query
from aigrid.gateway.envelope import ANTHROPIC_VERSION
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.file_store import RESERVE_SLACK_S, FileStore, Reservation, StoredFile
from aigrid.gateway.numbers import plain_int
from aigrid.gateway.open_off_loop import open_off_loop
from aigrid.gateway.request_coding import check_plain
from aigrid.gateway.request_info import H_RESIDENCY, residency
from aigrid.gateway.routes import Handler, Routes, audited_route, authenticate, body_too_large, json_response
from aigrid.gateway.slow_clients import body_deadline_s
from aigrid.security.authorize import check_made_for
from aigrid.security.principal import Principal, Scopes

FILES_PATH = "/v1/files"
PURPOSES = ("batch",)
FORM_SLACK = 64 * 1024
"""What a multipart body may hold besides the file (boundaries, part headers, the other fields)."""
_ERROR_FILE = "_error.jsonl"
"""How a batch's error file is named (batch_output.BatchOutput.errors); a `batch_output` file is made by the batch
runner only (an upload is `batch`), so no other file has such a name."""
_FIELDS = ("file", "purpose", "expires_after[anchor]", "expires_after[seconds]")
MAX_LIST = 10_000
CHUNK_BYTES = 1 << 16
"""How much of a file a download reads at a time."""
log = logging.getLogger("aigrid.batches")


class FileTooLarge(InvalidRequest):
    status = 413
    code = "file_too_large"


def _limited(receive: Receive, limit: int, refused: ApiError) -> Receive:
    """The request's body messages, `refused` as soon as more than `limit` bytes have come."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise refused
        return message

    return counted


class _StoreParser(MultiPartParser):
    """Starlette's multipart parser with each file part written to `spool()` (a file in the tenant's folder, on the
    disk the floor watches) instead of a SpooledTemporaryFile, which rolls over into the system's temporary folder
    past a megabyte."""

    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None],
                 spool: Callable[[], BinaryIO], **limits: Any) -> None:
        super().__init__(headers, stream, **limits)
        self._spool = spool

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:  # a file part: Starlette's spooled file, still empty, swapped for the store's own
            upload.file.close()
            upload.file = self._spool()


class FilesApi:
    def __init__(self, routes: Routes, files: FileStore, batches: BatchStore, max_bytes: int) -> None:
        self.gw = routes.gw
        self.files, self.batches = files, batches
        self.max_bytes = max_bytes

    def routes(self) -> list[Route]:
        one, content = FILES_PATH + "/{file_id}", FILES_PATH + "/{file_id}/content"

        def audited(method: str, path: str, handler: Handler) -> Route:
            return audited_route(self.gw, method, path, handler)

        return [audited("POST", FILES_PATH, self.upload), audited("GET", FILES_PATH, self.list),
                audited("GET", one, self.get), audited("DELETE", one, self.delete),
                audited("GET", content, self.content)]

    async def _caller(self, request: Request, ex: Exchange, *, heavy: bool = False) -> Principal:
        principal = (await authenticate(self.gw, request, ex, heavy=heavy))[0]
        if ANTHROPIC_VERSION in request.headers:  # the Anthropic SDK's client.files / client.beta.files
            raise NotFound("Anthropic's Files API is not served by this gateway: /v1/files holds OpenAI's Batch "
                           "API files (send a Message Batch its requests inline, client.messages.batches.create)")
        return principal

    async def upload(self, request: Request, ex: Exchange) -> Response:
        caller = self._kept_within(await self._caller(request, ex), request.headers.get(H_RESIDENCY))
        tenant = caller.tenant
        limit = self.max_bytes + FORM_SLACK
        declared = plain_int(request.headers.get("content-length", ""))
        if declared is not None and declared > limit:
            raise self._too_large()
        check_plain(request.headers)  # before any room is held or a byte read
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise InvalidRequest("POST /v1/files takes a multipart/form-data body with the fields file and purpose",
                                 param="file")
        deadline = body_deadline_s(declared, limit)
        # the room the tenant has left, up to max_file_bytes, held before a byte is read (a file surely past it,
        # by its Content-Length, is refused here): uploads side by side, in any worker, cannot together pass it
        most = self.max_bytes if declared is None else min(self.max_bytes, declared)
        held = await self.files.reserve(tenant, "file", most, max((declared or 0) - FORM_SLACK, 0),
                                        deadline + RESERVE_SLACK_S, jurisdictions=caller.scopes.jurisdictions)
        try:
            return await self._receive(request, ex, caller, held, deadline)
        finally:
            if held is not None:
                await self.files.release(held)

    def _kept_within(self, caller: Principal, header: str | None) -> Principal:
        """The caller as its upload is made under: narrowed to the jurisdictions its x-aigrid-residency names that
        a site of the grid is in (a file is seen, and a batch on it served, only within them), checked by the one
        check of every door (Guard.residency_within: naming none of the grid's, or none at all, `,`: 400; one
        outside the key's: 403). Until the thirty-fourth session the header was not read here: a file uploaded to stay in
        the EU had the batch another key of the tenant made on it served anywhere; until review RV2 of 18f16219
        `EU, Mars` was a 400 here (served in the EU by the chat and batch doors) and `,` a file kept nowhere."""
        asked = self.gw.guard.residency_within(caller, residency(header), "files")
        if asked is None:
            return caller
        return replace(caller, scopes=caller.scopes.narrowed_by(Scopes(jurisdictions=asked)))

    async def _receive(self, request: Request, ex: Exchange, caller: Principal, held: Reservation | None,
                       deadline: float) -> Response:
        """The upload read within its room (`held`, else max_file_bytes): refused as soon as more arrives, 413
        past max_file_bytes, 400 storage_quota_exceeded past what the tenant's quota left. Kept as made under the
        caller's jurisdictions."""
        room = self.max_bytes if held is None else held.bytes
        by_quota = held if held is not None and held.quota else None
        refused = by_quota.full("file") if by_quota is not None else self._too_large()
        counted = Request(request.scope, _limited(request.receive, room + FORM_SLACK, refused))
        spools: dict[BinaryIO, Path] = {}

        def spool() -> BinaryIO:
            path, f = self.files.spool(caller.tenant)
            spools[f] = path
            return f

        try:
            # the folder made off the event loop (the parser opens the spool in it when the file part begins)
            await asyncio.to_thread(self.files.folder(caller.tenant).mkdir, parents=True, exist_ok=True)
            try:
                async with asyncio.timeout(deadline):  # a trickled upload held its connection and request for good
                    async with contextlib.aclosing(counted.stream()) as stream:
                        form = await _StoreParser(counted.headers, stream, spool, max_files=1,
                                                  max_fields=len(_FIELDS), max_part_size=4096).parse()
            except MultiPartException as e:
                raise InvalidRequest(f"file: the multipart body could not be read: {e.message}", param="file") from None
            except TimeoutError:
                raise RequestTimeout(f"file: the upload did not arrive within {deadline:.0f} s", param="file") from None
            except OSError as e:  # the disk refused the spool (full, quota of the gateway's user)
                raise self.files.disk_refused(caller.tenant, "file", "upload", e) from None
            try:
                upload, purpose, expires_at = self._fields(form)
                if upload.size is not None and upload.size > room:
                    raise by_quota.full("file", upload.size) if by_quota is not None else self._too_large(upload.size)
                name = (upload.filename or "upload.jsonl")[:255]
                kept = spools[upload.file]
                try:
                    await asyncio.to_thread(upload.file.close)  # written whole (flushed) before it is renamed
                except OSError as e:
                    raise self.files.disk_refused(caller.tenant, "file", "upload", e) from None
                stored = await self.files.add(caller.tenant, name, purpose, kept, expires_at, reservation=held,
                                              jurisdictions=caller.scopes.jurisdictions)
                del spools[upload.file]  # the file's now, under its own name
            finally:
                await form.close()
        finally:
            await asyncio.to_thread(_delete, spools)
        ex.body = {"file_id": stored.id, "filename": stored.filename, "bytes": stored.bytes, "purpose": purpose}
        return json_response(stored.to_object())

    def _too_large(self, size: int | None = None) -> FileTooLarge:
        what = "file: the upload" if size is None else f"file: the upload ({size:,} bytes)"
        return FileTooLarge(body_too_large(what, self.max_bytes, "gateway.batch.max_file_bytes", one="file"),
                            param="file")

    @staticmethod
    def _fields(form: FormData) -> tuple[UploadFile, str, int | None]:
        for key in form:
            if key not in _FIELDS:
                raise InvalidRequest(f"{key}: unknown field; POST /v1/files takes file, purpose and expires_after",
                                     param=key)
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file: required, the file's content as a multipart file part", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("purpose: required; this gateway keeps files for the Batch API: 'batch'",
                                 param="purpose")
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose: {purpose[:64]!r} is not served; this gateway keeps files for the Batch "
                                 "API only: 'batch'", param="purpose")
        anchor, seconds = form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return upload, purpose, None
        if anchor != "created_at":
            raise InvalidRequest("expires_after.anchor: must be 'created_at'", param="expires_after.anchor")
        after = plain_int(seconds) if isinstance(seconds, str) else None
        if after is None or not 3600 <= after <= 2_592_000:
            raise InvalidRequest("expires_after.seconds: an integer from 3600 (1 hour) to 2592000 (30 days)",
                                 param="expires_after.seconds")
        return upload, purpose, int(time.time()) + after

    async def _found(self, request: Request, ex: Exchange, *,
                     heavy: bool = False) -> tuple[StoredFile, frozenset[str] | None, Principal]:
        """The file of the path, if the caller may see it (404 otherwise, as a missing one), the caller's
        allowed jurisdictions, and the caller."""
        caller = await self._caller(request, ex, heavy=heavy)
        allowed = caller.scopes.jurisdictions
        fid = request.path_params["file_id"]
        ex.body = {"file_id": fid}
        found = await self.files.get(caller.tenant, fid, allowed=allowed)
        if found is None:
            raise NotFound(f"no file {fid!r}", param="file_id")
        return found, allowed, caller

    async def get(self, request: Request, ex: Exchange) -> Response:
        return json_response((await self._found(request, ex))[0].to_object())

    async def content(self, request: Request, ex: Exchange) -> Response:
        """The file's bytes (up to max_file_bytes): one request against requests per minute, unlike a poll."""
        found, _, caller = await self._found(request, ex, heavy=True)
        await self._check_answers(caller, found)
        # opened once, here, and sent from that handle: a DELETE between the lookup and the read (its row, then its
        # bytes) is the 404 of a file not there, never a 500 when the response opens a path that just went
        try:
            f = await open_off_loop(self.files.disk_path(found))  # a cancel meanwhile closes the handle when it comes
        except FileNotFoundError:
            raise NotFound(f"no file {found.id!r}", param="file_id") from None
        # the name as uploaded stays the file's `filename`; the download names its last part only (a client that
        # saves by the header, curl -J or a browser, is not handed "../" or a folder)
        saved = PurePosixPath(found.filename.replace("\\", "/")).name
        return OpenFileResponse(f, saved if saved not in ("", ".", "..") else "file")

    async def _check_answers(self, caller: Principal, found: StoredFile) -> None:
        """A batch's output file holds the answers of the models that may serve its batch's creator: a key narrowed to
        other models may not read or delete it (check_produced_by, as a stored response; since the thirty-fifth
        session, its delete since review RV2); its error file (refusals) any key reads, its batch kept or not. An
        output file whose batch is no longer kept (dropped past gateway.batch.max_batches, its files kept) names no
        creator: any grid model's. Which file it is, once its batch is dropped, its name says (batch_output.BatchOutput:
        `{batch_id}_error.jsonl`; until review F1 of the thirty-fifth session a dropped batch's error file was judged
        as any grid model's answers, where a kept batch's was read by any key)."""
        if found.purpose != "batch_output":
            return
        made = await self.batches.maker_of_results(found.tenant, found.id)
        if made is None and PurePosixPath(found.path).name.endswith(_ERROR_FILE):
            return
        if made is not None and not made[1]:
            return
        check_made_for(caller, None if made is None else made[0].get("scopes") or {}, self.gw.spec.models, "file_id",
                       f"file {found.id!r} (a batch's results)")

    async def delete(self, request: Request, ex: Exchange) -> Response:
        found, allowed, caller = await self._found(request, ex)
        await self._check_answers(caller, found)
        user = await self.batches.uses_file(found.tenant, found.id)
        if user is not None:
            # the batch named only to a key that may see it (an unrestricted key may run one on a narrowed key's file)
            named = f"batch {user!r}" if await self.batches.get(found.tenant, user, allowed=allowed) else "a batch"
            raise InvalidRequest(f"file_id: {found.id!r} is the input of {named}, which has not ended; cancel "
                                 "it first (POST /v1/batches/{batch_id}/cancel)", param="file_id")
        await self.files.delete(found.tenant, found.id, allowed=allowed, unused=True)  # asked again, atomically
        return json_response({"id": found.id, "object": "file", "deleted": True})

    async def list(self, request: Request, ex: Exchange) -> Response:
        caller = await self._caller(request, ex)  # who asks first: no query checked for nobody
        query = request.query_params
        q = page_query(query, default_limit=MAX_LIST, max_limit=MAX_LIST)
        page = await self.files.list(caller.tenant, purpose=query.get("purpose"), after=q.after, limit=q.limit,
                                     ascending=q.ascending, allowed=caller.scopes.jurisdictions)
        if page is None:
            raise InvalidRequest(f"after: no file {q.after!r}", param="after")
        data, more = page
        return json_response(page_object([f.to_object() for f in data], more))


class OpenFileResponse(Response):
    """A file's bytes sent from a handle opened before the response (`f`, closed when it is sent, or not), as
    `application/octet-stream` with its Content-Length and an attachment's Content-Disposition naming `filename`
    (percent-escaped as RFC 6266's filename* when it holds anything but plain characters: a quote, a control
    character or a CR/LF never reaches the header as such). Exactly the Content-Length is sent, the size the file
    had when it was opened: lines appended after (a resumed batch writing on to its output file) are not, and a
    file cut shorter meanwhile ends the response with an error (logged), never a body other than its length."""

    media_type = "application/octet-stream"

    def __init__(self, f: BinaryIO, filename: str) -> None:
        super().__init__(media_type=self.media_type)
        self.f = f
        self.length = os.fstat(f.fileno()).st_size
        self.headers["content-length"] = str(self.length)
        escaped = quote(filename)
        self.headers["content-disposition"] = (f'attachment; filename="{filename}"' if escaped == filename
                                               else f"attachment; filename*=utf-8''{escaped}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            left = 0 if scope.get("method") == "HEAD" else self.length
            while left > 0:
                chunk = await asyncio.to_thread(self.f.read, min(CHUNK_BYTES, left))
                if not chunk:
                    log.error("%s: the file was cut to fewer than the %d bytes its download's Content-Length said "
                              "while it was sent; the response is broken off", self.f.name, self.length)
                    raise OSError(f"{self.f.name}: shorter than its Content-Length ({self.length} bytes) as it was sent")
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:  # on the loop: a read-only file's close costs nothing, and a cancelled answer cannot await a thread
            self.f.close()


def _delete(spools: dict[BinaryIO, Path]) -> None:
    """The spools of an upload not kept closed and deleted (blocking): none is left behind."""
    for f, path in spools.items():
        try:
            f.close()
        except OSError as e:  # the last bytes of a spool being dropped could not be flushed: dropped with it
            log.info("%s: closed without its last bytes (%s); deleted", path, e)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # called from a `finally`: the request's own error, if any, is the one to answer
            log.error("%s: an upload's spool could not be deleted (%s); the sweep removes it later", path, e)
