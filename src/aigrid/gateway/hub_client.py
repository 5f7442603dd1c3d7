"""A gateway worker's side of its hub (hub.py): one Unix-socket connection, requests answered by id, and the
three things a worker gets from it in the shapes the gateway already uses:
HubSharedState (a telemetry SharedState), HubQuotaBackend (a QuotaBackend) and HubAuditLog (the audit log's
append/accepting, the records written by the hub, the one writer). `publish_decision` / `decision` /
`recent_decisions` share decision records for `aigrid explain`; the `response_*` calls share stored
Responses-API answers and background placeholders (responses_api.py, background.py), with the names and
meanings of ResponseStore's methods; `abuse_exchange` sends a batch of abuse digests and answers the
verdicts over all workers (gateway/abuse_sync.py).

The connection is opened on first use (inside the running loop; nothing starts in a constructor) and again
after it broke. Every failure surfaces as the error the caller of that shape already handles:
SharedStateUnavailable, AuditUnavailable, or (quotas) an AigridError that the pipeline answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aigrid.audit.record import AuditRecord
from aigrid.errors import AuditUnavailable, SharedStateUnavailable, UpstreamFailed
from aigrid.gateway.hub_protocol import FrameWriter, read_frame
from aigrid.gateway.response_store import BrokenHistory, Pending, StoredResponse
from aigrid.security.firewall.abuse_shared import Batch, SharedVerdicts, answer_from_wire, request_to_wire
from aigrid.security.quota_backend import Counter
from aigrid.telemetry.prefill_book import from_wire, to_wire
from aigrid.telemetry.shared import LocalReport, SharedView

CALL_TIMEOUT_S = 5.0
ABUSE_TIMEOUT_S = 1.0
"""An abuse batch not answered within this is given up (the worker's own verdicts stand meanwhile)."""


class HubError(ConnectionError):
    """The hub could not be reached or refused the operation."""


class HubClient:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._frames: FrameWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

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
                    raise HubError(f"cannot reach the workers' hub at {self.path}: {e}") from e
                self._frames = FrameWriter(self._writer)
                self._reader_task = asyncio.create_task(self._read(reader), name="aigrid-hub-reader")
        assert self._frames is not None
        return self._frames

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                req_id, ok, result = await read_frame(reader)
                fut = self._waiting.pop(req_id, None)
                if fut is not None and not fut.done():
                    if ok:
                        fut.set_result(result)
                    else:
                        fut.set_exception(HubError(str(result)))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(HubError("the connection to the workers' hub broke"))
            self._waiting.clear()
            if self._writer is not None:
                self._writer.close()

    async def call(self, op: str, arg: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        frames = await self._connection()
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        frames.send([req_id, op, arg])
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError as e:
            raise HubError(f"the workers' hub did not answer {op} within {timeout} s") from e
        finally:
            self._waiting.pop(req_id, None)

    async def tell(self, op: str, arg: Any) -> None:
        """Send without waiting for an answer (in order with every other frame of this worker)."""
        (await self._connection()).send([0, op, arg])

    async def publish_decision(self, record: dict[str, Any]) -> None:
        with contextlib.suppress(HubError):
            await self.tell("decision", record)

    async def decision(self, decision_id: str) -> dict[str, Any] | None:
        try:
            found = await self.call("decision_get", decision_id)
        except HubError:
            return None
        return found if isinstance(found, dict) else None

    async def recent_decisions(self, limit: int) -> list[dict[str, Any]]:
        try:
            return list(await self.call("decisions_recent", limit))
        except HubError:
            return []

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
        return None if found is None else StoredResponse(**found)

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
        return Pending(**found["pending"]) if "pending" in found else StoredResponse(**found["stored"])

    async def response_pending_add(self, pending: Pending) -> None:
        await self.call("response_pending_add", dataclasses.asdict(pending))

    async def response_mark(self, tenant: str, response_id: str, status: str,
                            error: dict[str, Any] | None = None) -> Pending | None:
        found = await self.call("response_mark", [tenant, response_id, status, error])
        return None if found is None else Pending(**found)

    async def response_complete(self, record: StoredResponse, allowed: frozenset[str] | None) -> str:
        arg = [dataclasses.asdict(record), None if allowed is None else sorted(allowed)]
        return str(await self.call("response_complete", arg))

    async def response_cancelled(self, keys: list[tuple[str, str]]) -> list[str]:
        return [str(rid) for rid in await self.call("response_cancelled", [list(k) for k in keys])]

    async def response_pending_delete(self, tenant: str, response_id: str) -> Pending | None:
        found = await self.call("response_pending_delete", [tenant, response_id])
        return None if found is None else Pending(**found)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
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
    """QuotaBackend through the hub: one set of counters for every worker."""

    def __init__(self, client: HubClient) -> None:
        self._client = client

    async def consume(self, counters: Sequence[Counter]) -> int | None:
        try:
            result = await self._client.call("consume", _counters(counters))
        except HubError as e:
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e
        return None if result is None else int(result)

    async def adjust(self, counters: Sequence[Counter]) -> None:
        try:
            await self._client.call("adjust", _counters(counters))
        except HubError as e:
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e

    async def value(self, key: str) -> int:
        try:
            return int(await self._client.call("value", key))
        except HubError as e:
            raise UpstreamFailed(f"quota counters unavailable: {e}") from e


class HubAuditLog:
    """The audit log as a worker sees it: records go to the hub, the one writer of the chain."""

    def __init__(self, client: HubClient, max_pending: int = 1000) -> None:
        self._client = client
        self._pending = 0
        self._max_pending = max_pending
        self._running = False
        self.lost = 0
        """Always 0: every record was acknowledged by the hub, or refused to its caller (AuditUnavailable)."""

    async def start(self) -> None:
        self._running = True

    def accepting(self) -> bool:
        return self._running and self._pending < self._max_pending

    async def append(self, record: AuditRecord, timeout: float | None = None) -> None:
        if not self._running:
            raise AuditUnavailable("the audit log is not running")
        self._pending += 1
        try:
            await self._client.call("audit", [record.ts, record.body()], timeout=timeout or CALL_TIMEOUT_S)
        except HubError as e:
            raise AuditUnavailable(f"the workers' hub did not take the record: {e}") from e
        finally:
            self._pending -= 1

    async def flush(self) -> None:
        """Every record appended so far was acknowledged by the hub before append() returned."""

    async def stop(self) -> None:
        self._running = False
