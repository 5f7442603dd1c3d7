"""A gateway worker's side of its hub (hub.py): one Unix-socket connection, requests answered by id, and the
three things a worker gets from it in the shapes the gateway already uses:
HubSharedState (a telemetry SharedState), HubQuotaBackend (a QuotaBackend) and HubAuditLog (the audit log's
append/accepting, the records written by the hub, the one writer). `publish_decision` / `decision` /
`recent_decisions` share decision records for `aigrid explain`; the `response_*` calls share stored
Responses-API answers and background placeholders (responses_api.py, background.py), with the names and
meanings of ResponseStore's methods; `abuse_exchange` sends a batch of abuse digests and answers the
verdicts over all workers (gateway/abuse_sync.py).

What needs no answer is posted, not called: a quota settlement, an audit record and a decision leave in the
batch frame of their event-loop turn (hub_protocol), and the request does not wait for the hub. The audit
records are still acknowledged, once per batch, off the request's path: HubAuditLog counts the records not
yet acknowledged (accepting() refuses new requests past max_pending, as it refused them past that many
unanswered calls) and, on a worker's stop, waits for them. A decision is posted once, with its outcome,
when its request ends; one still in flight DECISION_INFLIGHT_S to twice that after it was made is posted
then too (decision_made), so the other workers show a long stream's decision while it runs. Per one-token
request this is one message in a shared frame, where it was four frames and two answers.

The connection is opened on first use (inside the running loop; nothing starts in a constructor) and again
after it broke. Every failure surfaces as the error the caller of that shape already handles:
SharedStateUnavailable, AuditUnavailable, or (quotas) an AigridError that the pipeline answers with 503; a
posted message the hub refused or never acknowledged (the connection broke) is logged and counted by
whoever posted it, but a quota settlement never acknowledged, which is sent again under its op (HubQuotaBackend).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigrid.audit.record import AuditRecord
from aigrid.errors import AuditUnavailable, SharedStateUnavailable, UpstreamFailed
from aigrid.gateway.hub_protocol import (
    HELLO,
    Done,
    FrameTooLarge,
    FrameWriter,
    Lost,
    PostBatch,
    frame,
    read_frame,
)
from aigrid.gateway.record_fields import read_record
from aigrid.gateway.response_store import BrokenHistory, Pending, StoredResponse
from aigrid.security.firewall.abuse_shared import Batch, SharedVerdicts, answer_from_wire, request_to_wire
from aigrid.security.quota_backend import MEMORY_OP_TTL_S, Consumed, Counter, Released
from aigrid.security.quota_retry import TryAgain
from aigrid.telemetry.prefill_book import from_wire, to_wire
from aigrid.telemetry.shared import LocalReport, SharedView

if TYPE_CHECKING:
    from aigrid.gateway.decisions import DecisionRecord

log = logging.getLogger("aigrid.hub")
_FROM_HUB = "a record from the workers' hub"
CALL_TIMEOUT_S = 5.0
ABUSE_TIMEOUT_S = 1.0
"""An abuse batch not answered within this is given up (the worker's own verdicts stand meanwhile)."""
DECISION_INFLIGHT_S = 0.5
"""A decision whose request is still running this long (to twice this) after it was made is shared then,
before its outcome: the longest another worker's `aigrid explain` or /v1/decisions does not see it."""
STOP_WAIT_S = 5.0
"""How long a stopping worker waits for the hub's acknowledgement of its last audit records."""
RESEND_MAX = 1000
"""Settlements waiting to be sent again (their connection broke before the hub acknowledged them); one more is
lost (logged, counted)."""
RESEND_WITHIN_S = MEMORY_OP_TTL_S - CALL_TIMEOUT_S
"""A settlement is sent again only this long after its first post: the hub keeps its op MEMORY_OP_TTL_S (30 s) from
when it applied it, never earlier than that post, so a copy arriving within it applies nothing if the first was
applied; later it could apply twice, so it is lost instead (logged, counted). The margin covers a copy's way to a
busy hub."""
RESEND_PAUSE_S = 0.5
"""Between tries to reach the hub again while settlements wait."""


class HubError(ConnectionError):
    """The hub could not be reached or refused the operation."""


class Unreachable(HubError):
    """No connection to the hub could be opened (nothing was sent)."""


class HubClient:
    def __init__(self, path: Path, token: str = "") -> None:
        """`token`: the hub's (hub.Hub.token), said first on each connection (hub_protocol.HELLO); a hub refuses a
        connection without it."""
        self.path = path
        self._token = token
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._frames: FrameWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._batches: dict[int, PostBatch] = {}  # posted batches waiting for the hub's acknowledgement, by id
        self._young: dict[str, DecisionRecord] = {}  # decisions made since the last tick, by id
        self._old: dict[str, DecisionRecord] = {}  # made before the last tick and still running
        self._tick: asyncio.TimerHandle | None = None
        self._closed = False
        """aclose() began: the connection's end is this worker's own, not logged as broken."""
        self.closing: list[Callable[[], None]] = []
        """Called first in aclose() (HubQuotaBackend: its settlements still waiting to be sent again are lost)."""

    async def _connection(self) -> FrameWriter:
        if self._writer is not None and self._frames is not None and not self._writer.is_closing():
            return self._frames
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                except OSError as e:
                    raise Unreachable(f"cannot reach the workers' hub at {self.path}: {e}") from e
                self._closed = False
                self._writer.write(frame([0, HELLO, self._token]))  # before any other frame
                self._frames = FrameWriter(self._writer)
                self._reader_task = asyncio.create_task(self._read(reader), name="aigrid-hub-reader")
        assert self._frames is not None
        return self._frames

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why: BaseException | None = None
        try:
            while True:
                req_id, ok, result = await read_frame(reader)
                fut = self._waiting.pop(req_id, None)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(result)
                    else:
                        fut.set_exception(HubError(str(result)))
                batch = self._batches.pop(req_id, None)
                if batch is not None:
                    batch.answered(result if ok else [[i, str(result)] for i, _ in batch.done])
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            why = e
        finally:
            waiting = sum(not fut.done() for fut in self._waiting.values())
            if why is not None and not self._closed and (waiting or self._batches):  # said with why (review RV4)
                log.warning("the connection to the workers' hub broke (%s): %d call(s) and %d posted batch(es) "
                            "waiting failed; the next call opens it again",
                            "the hub closed it" if isinstance(why, asyncio.IncompleteReadError) else repr(why),
                            waiting, len(self._batches))
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(HubError("the connection to the workers' hub broke"))
            self._waiting.clear()
            batches, self._batches = self._batches, {}
            for batch in batches.values():
                batch.lost("the connection to the workers' hub broke before it acknowledged")
            if self._writer is not None:
                self._writer.close()

    async def call(self, op: str, arg: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        frames = await self._connection()
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            frames.send([req_id, op, arg])
        except FrameTooLarge as e:  # this call fails alone (sent, the hub would drop the connection)
            self._waiting.pop(req_id, None)
            raise HubError(f"{op} is too large for the workers' hub: {e}") from e
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as e:
            raise HubError(f"the workers' hub did not answer {op} within {timeout} s") from e
        finally:
            self._waiting.pop(req_id, None)

    async def post(self, op: str, arg: Any, done: Done | None = None) -> None:
        """Hand over without waiting: into this turn's batch frame, in order with every other frame of this
        worker. With `done`, the hub acknowledges the batch and `done` hears whether it took this message
        (None) or why not (it refused it; the connection broke first); its batch is answered once however
        many of its messages want that. Raises HubError when the hub cannot be reached now."""
        frames = self._frames if self._live() else await self._connection()
        assert frames is not None
        try:
            batch = frames.post(op, arg)
        except FrameTooLarge as e:
            raise HubError(f"{op} is too large for the workers' hub: {e}") from e
        if done is not None:
            if not batch.id:
                batch.id = next(self._ids)
                self._batches[batch.id] = batch
            batch.done.append((len(batch.items) - 1, done))

    def _live(self) -> bool:
        return self._writer is not None and self._frames is not None and not self._writer.is_closing()

    def decision_made(self, record: DecisionRecord) -> None:
        """A decision just made, for the other workers' `aigrid explain` and /v1/decisions: posted with its
        outcome when its request ends (publish_decision), and before that only if the request still runs at
        the first tick that comes DECISION_INFLIGHT_S or more after it (so a long stream's decision shows
        while it runs; a short request's decision is posted once)."""
        self._young[record.decision.request_id] = record
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(DECISION_INFLIGHT_S, self._share_running)

    def _share_running(self) -> None:
        running, self._old, self._young = self._old, self._young, {}
        self._tick = None
        if self._old:
            self._tick = asyncio.get_running_loop().call_later(DECISION_INFLIGHT_S, self._share_running)
        if self._frames is None or not self._live():
            return  # no connection now: their outcomes open one when their requests end
        for record in running.values():
            with contextlib.suppress(TypeError):  # not encodable: its outcome's post fails in its request
                self._frames.post("decision", record.to_dict())

    async def publish_decision(self, record: dict[str, Any]) -> None:
        """A decision with its outcome (its request ended): posted, in place of any earlier post of it."""
        rid = record.get("id")
        if isinstance(rid, str) and self._young.pop(rid, None) is None:
            self._old.pop(rid, None)
        try:
            await self.post("decision", record)
        except HubError as e:  # explain and the other workers' lists lack it; the request itself is served
            log.warning("decision %s not published to the workers' hub: %s", rid, e)

    async def decision(self, decision_id: str) -> dict[str, Any] | None:
        try:
            found = await self.call("decision_get", decision_id)
        except HubError as e:  # answered as not found (this worker's own decisions are still read)
            log.warning("decision %s: the workers' hub could not be asked: %s", decision_id, e)
            return None
        return found if isinstance(found, dict) else None

    async def recent_decisions(self, limit: int, tenant: str | None = None) -> list[dict[str, Any]] | None:
        """Every worker's latest decisions (`tenant`'s only, when given), newest first; None when the hub cannot be
        asked (logged)."""
        try:
            return list(await self.call("decisions_recent", limit if tenant is None else [limit, tenant]))
        except HubError as e:
            log.warning("recent decisions: the workers' hub could not be asked (this worker's own are shown): %s", e)
            return None

    async def abuse_exchange(self, since: int, batch: Batch) -> SharedVerdicts:
        """This worker's abuse digests since its last batch in; the verdicts over all workers that changed
        after `since` out (abuse_shared.HubAbuse). Raises HubError."""
        raw = await self.call("abuse", request_to_wire(since, batch), timeout=ABUSE_TIMEOUT_S)
        return answer_from_wire(raw)

    async def response_put(self, record: StoredResponse, allowed: frozenset[str] | None) -> bool:
        arg = [dataclasses.asdict(record), None if allowed is None else sorted(allowed)]
        return bool(await self.call("response_put", arg))

    async def response_get(self, tenant: str, response_id: str) -> StoredResponse | None:
        found = await self.call("response_get", [tenant, response_id])
        return None if found is None else read_record(StoredResponse, found, _FROM_HUB)

    async def response_history(self, record: StoredResponse) -> list[dict[str, Any]]:
        """Raises BrokenHistory like ResponseStore.history."""
        found = await self.call("response_history", [record.tenant, record.id])
        if "missing" in found:
            raise BrokenHistory(found["missing"])
        return list(found["history"])

    async def response_delete(self, tenant: str, response_id: str) -> bool:
        return bool(await self.call("response_delete", [tenant, response_id]))

    async def response_lookup(self, tenant: str, response_id: str) -> StoredResponse | Pending | None:
        found = await self.call("response_lookup", [tenant, response_id])
        if found is None:
            return None
        if "pending" in found:
            return read_record(Pending, found["pending"], _FROM_HUB)
        return read_record(StoredResponse, found.get("stored"), _FROM_HUB)

    async def response_pending_add(self, pending: Pending) -> None:
        await self.call("response_pending_add", dataclasses.asdict(pending))

    async def response_mark(self, tenant: str, response_id: str, status: str,
                            error: dict[str, Any] | None = None) -> Pending | None:
        found = await self.call("response_mark", [tenant, response_id, status, error])
        return None if found is None else read_record(Pending, found, _FROM_HUB)

    async def response_complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        arg = [dataclasses.asdict(record), None if allowed is None else sorted(allowed)]
        return str(await self.call("response_complete", arg))

    async def response_cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        found = await self.call("response_cancelled", [list(k) for k in keys])
        if isinstance(found, list):  # a hub of the code before 8b3971f4 (this worker started again after an upgrade
            # on disk, its hub the running parent's): ids only, cancels and failures alike, read as before (cancels)
            return {str(rid): "cancelled" for rid in found}
        return {str(rid): str(status) for rid, status in found.items()}

    async def response_pending_delete(self, tenant: str, response_id: str) -> Pending | None:
        found = await self.call("response_pending_delete", [tenant, response_id])
        return None if found is None else read_record(Pending, found, _FROM_HUB)

    async def aclose(self) -> None:
        """Close the connection after writing every frame still gathered (none is lost on a worker's exit;
        HubAuditLog.stop waited for the acknowledgement of the audit records before)."""
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for closing in self.closing:
            closing()
        if self._writer is not None:
            if self._frames is not None:
                self._frames.flush()
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(STOP_WAIT_S):
                    await self._writer.wait_closed()  # the transport's buffer written out
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._writer = self._reader_task = None


class HubSharedState:
    """SharedState through the hub: the other workers' ledgers, circuits, affinity and calibration
    observations."""

    def __init__(self, client: HubClient) -> None:
        self._client = client

    async def exchange(self, report: LocalReport) -> SharedView:
        arg = {"gateway": report.gateway_id, "inflight": {k: list(v) for k, v in report.inflight.items()},
               "circuits": dict(report.circuits_opened), "affinity": [list(a) for a in report.affinity],
               "tenants": dict(report.tenants), "calibration": [list(o) for o in report.calibration],
               "queues": to_wire(report.queues)}
        try:
            view = await self._client.call("exchange", arg)
        except HubError as e:
            raise SharedStateUnavailable(str(e)) from e
        return SharedView({k: (v[0], v[1], v[2]) for k, v in view["inflight"].items()},
                          {k: float(v) for k, v in view["circuits"].items()},
                          tuple((k, e) for k, e in view["affinity"]),
                          {str(k): int(v) for k, v in (view.get("tenants") or {}).items()},
                          tuple((str(e), float(a), float(o), float(y)) for e, a, o, y in view.get("calibration") or ()),
                          int(view.get("peers") or 0), from_wire(view.get("queues")))

    async def aclose(self) -> None:
        """The client is the worker's, closed with it."""


def _counters(counters: Sequence[Counter]) -> list[list[Any]]:
    return [[c.key, c.amount, c.limit, c.expires_at, c.ttl_s] for c in counters]


class HubQuotaBackend:
    """QuotaBackend through the hub: one set of counters for every worker. A check is a call (the hub
    admits or refuses it against every worker's requests: exact); a check with no counters (no limit applies)
    admits without one. A settlement is posted: it only corrects the reservation to the real usage, and
    until the hub has it the tenant is charged its reservation, never less. One named by an op that the hub never
    acknowledged (the connection broke), or that could not be posted at all (no connection could be opened), is sent
    again under the same op once the hub can be reached (applied once either way: the hub keeps the op), within RESEND_WITHIN_S of its first post and RESEND_MAX waiting at most; one
    past those, refused by the hub, or without an op is logged and counted (`unsettled`, `on_unsettled`): its
    reservation stands."""

    def __init__(self, client: HubClient) -> None:
        self._client = client
        self.unsettled = 0
        self.on_unsettled: Callable[[], None] | None = None
        self._resend = TryAgain[dict[str, Any]](
            self._post, lambda wire, why: self._lose(why, wire), what="quota settlement",
            within_s=RESEND_WITHIN_S, max_waiting=RESEND_MAX, pause_s=RESEND_PAUSE_S, pause_max_s=RESEND_PAUSE_S,
            wait_first=False)
        """Settlements waiting to be sent again (the message; TryAgain holds when it was first posted)."""
        client.closing.append(self._give_up)

    async def consume(self, counters: Sequence[Counter], op: str | None = None) -> Consumed:
        if not counters:
            return None, []
        full, values = await self._call("consume", {"counters": _counters(counters), "op": op})
        return (None, [int(v) for v in values]) if full is None else (int(full), [])

    async def grow(self, counters: Sequence[Counter], give: int, op: str | None = None) -> int | None:
        if not counters:
            return 0
        short = await self._call("grow", {"counters": _counters(counters), "op": op, "give": give})
        return None if short is None else int(short)

    async def release(self, op: str, counters: Sequence[Counter]) -> None:
        await self._call("release", {"counters": _counters(counters), "op": op})

    async def _call(self, op: str, arg: dict[str, Any]) -> Any:
        try:
            return await self._client.call(op, arg)
        except HubError as e:
            if "arrived after it was released" in str(e):
                raise Released(str(e)) from e
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e

    async def adjust(self, counters: Sequence[Counter], op: str | None = None) -> None:
        if not counters and op is None:  # one under an op with nothing to correct still tells the hub it is settled
            return
        wire, first = {"counters": _counters(counters), "op": op}, time.monotonic()
        try:
            await self._post(wire, first)
        except Unreachable as e:  # nothing sent: under its op it waits for the hub as a lost one does
            if op is None:
                raise UpstreamFailed(f"quota counters unavailable: {e}") from e
            self._again(first, wire, f"not posted: {e}")
        except HubError as e:
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e

    async def _post(self, wire: dict[str, Any], first: float) -> None:
        def done(error: str | None) -> None:
            if error is None:
                return
            if isinstance(error, Lost) and wire["op"] is not None:
                self._again(first, wire, f"not acknowledged: {error}")
            else:
                self._lose(error, wire)

        await self._client.post("adjust", wire, done)

    def _again(self, first: float, wire: dict[str, Any], error: str) -> None:
        """A settlement under its op, that the hub may not have (`error`), queued to be sent again once the hub can
        be reached (quota_retry.TryAgain, every RESEND_PAUSE_S); past RESEND_MAX waiting or RESEND_WITHIN_S from its
        first post, lost."""
        why = self._resend.add(wire, first)
        if why is not None:
            self._lose(f"{error}; settlements: {why}", wire)
        else:
            log.warning("quota settlement %s %s; sent again once the hub can be reached", wire["op"], error)

    def _give_up(self) -> None:
        """The worker stops: the settlements still waiting are lost."""
        self._resend.stop("the worker stopped before the hub could be reached again")

    def _lose(self, error: str, wire: dict[str, Any]) -> None:
        self.unsettled += 1
        log.error("quota settlement lost (%s); the reservation stands: %s", error, wire)
        if self.on_unsettled is not None:
            self.on_unsettled()

    async def value(self, key: str) -> int:
        try:
            return int(await self._client.call("value", key))
        except HubError as e:
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e


class HubAuditLog:
    """The audit log as a worker sees it: records go to the hub, the one writer of the chain, in this
    worker's order. append() posts a record and returns (as AuditLog.append returns once the record is
    queued); the hub acknowledges each batch of records. Records not acknowledged yet count against
    max_pending (accepting(): the gateway refuses new requests past it, so a hub that does not keep up holds
    the workers back). One the hub refused (its queue stayed full for its AUDIT_WAIT_S) or never
    acknowledged (the connection broke; none within stop_wait_s of stop()) is logged with its body and
    counted in `lost` (and `on_lost`); one that cannot be posted at all is refused to the caller
    (AuditUnavailable), as before."""

    def __init__(self, client: HubClient, max_pending: int = 1000, stop_wait_s: float = STOP_WAIT_S) -> None:
        self._client = client
        self._unacked: dict[int, str] = {}  # record number -> body, until the hub acknowledges it
        self._numbers = itertools.count()
        self._max_pending = max_pending
        self._stop_wait_s = stop_wait_s
        self._running = False
        self._idle: asyncio.Event | None = None
        self.lost = 0
        """Records append() took that the hub did not (refused, or never acknowledged): each logged."""
        self.on_lost: Callable[[], None] | None = None

    async def start(self) -> None:
        self._running = True

    def accepting(self) -> bool:
        return self._running and len(self._unacked) < self._max_pending

    def backlog(self) -> tuple[int, int]:
        """(records posted and not yet acknowledged by the hub, max_pending: accepting() is false there)."""
        return len(self._unacked), self._max_pending

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None:
        """Post the record (`timeout` is not waited: the hub applies its own to a full queue)."""
        if not self._running:
            raise AuditUnavailable("the audit log is not running")
        number, body = next(self._numbers), record.body()
        try:
            await self._client.post("audit", [record.ts, body], lambda error: self._acknowledged(number, error))
        except HubError as e:
            raise AuditUnavailable(f"the workers' hub did not take the record: {e}") from e
        self._unacked[number] = body

    def _acknowledged(self, number: int, error: str | None) -> None:
        body = self._unacked.pop(number, None)
        if body is not None and error is not None:
            self._lose(error, body)
        if not self._unacked and self._idle is not None:
            self._idle.set()

    def _lose(self, why: str, body: str) -> None:
        self.lost += 1
        log.error("audit record lost: %s; record: %s", why, body)
        if self.on_lost is not None:
            self.on_lost()

    async def flush(self) -> None:
        """Wait until the hub acknowledged every record appended so far."""
        while self._unacked:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def stop(self) -> None:
        """Refuse new records; wait (stop_wait_s at most) for the hub to acknowledge the last ones, and count
        those it did not as lost."""
        self._running = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_wait_s):
                await self.flush()
        unacked, self._unacked = self._unacked, {}
        for body in unacked.values():
            self._lose(f"the workers' hub did not acknowledge it within {self._stop_wait_s} s", body)
