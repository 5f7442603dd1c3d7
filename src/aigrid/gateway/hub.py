"""The hub of a gateway's worker processes: what must be one across them, held by the process that started
them (workers.py), behind a Unix socket.

- Shared telemetry: each worker's in-flight ledger, the circuits it opened, the cache affinity it learned
  and the outcomes its TTFT calibration learned from, merged for the others exactly as the Redis backend
  merges several gateways (telemetry/shared.py). Affinity entries and calibration observations are relayed
  from a bounded queue with a cursor per worker: each worker gets the others' entries since its previous
  exchange (never its own back), and folds the observations into its own calibrations with the same pure
  update (core.calibration.observe), so every worker's calibration learns from every worker's outcomes.
  With `--redis` the workers use Redis instead, like any gateways.
- Quota counters (security/quota_backend.py), unless the spec keeps them in Redis: one tenant's limit is
  one limit, not one per worker; and the reservations each worker holds unsettled, released when it dies
  (Reservations).
- The audit log: the only writer, so the hash chain stays one verifiable chain; workers hand their records
  over in order and the hub appends them as they arrive, acknowledging each batch of them.
- Decision records: each worker publishes its decisions (with their outcomes when their requests end, and
  while they run if they run long: hub_client.DECISION_INFLIGHT_S), so `aigrid explain` and /v1/decisions
  find a decision whichever worker served it.
- Stored Responses-API answers (response_store.py, same partitions per jurisdiction), so a follow-up with
  previous_response_id finds its conversation whichever worker serves it; and the placeholders of background
  responses (no conversation content), so any worker answers GET and cancel of one that another worker runs:
  a cancel marks the placeholder, and the worker that runs it stops it when it next asks (background.py);
  each worker renews its runs' lease here every poll (its heartbeat, on the hub's clock), and a worker that
  finds a run whose owner's lease ended (that worker died; its connection alone says nothing, a worker
  reconnects) fails it (`response_abandon`, once: the hub handles one call at a time);
  and the event logs of streamed background responses (event_log.py), so a resume on any worker reads them.
- Conversations-API conversations (conversation_store.py, ops `conversation_*`), so any worker serves them and
  the responses in them.
- Abuse signals over all workers: each worker sends the digests of its requests in one batch per
  `security.abuse.share_interval_s`; the hub counts them in one AbuseMonitor (HubAbuse,
  security/firewall/abuse_shared.py) and answers the verdicts that changed since that worker's last
  answer, so a key's thresholds apply to its requests on every worker together. With
  `gateway.shared_state_url` the hub also relays its workers' digests to the other gateways through Redis
  and counts theirs (security/firewall/abuse_redis.py), once per share interval.
A connection is served only once it has said the hub's token (`Hub.token`, a random secret of each start, which the
parent hands each worker it starts through an inherited pipe, never a file or the environment: workers.py), compared
in constant time: the socket's folder is its user's alone, but any process of that user could connect and post
telemetry, quota charges and releases, audit records or decisions (since the thirty-fifth session; before, every
connection was served).
Each connection's frames are handled in order, a batch's messages too (hub_protocol: what a worker posts
without waiting, its settlements, audit records and decisions, one frame per event-loop turn); nothing here
blocks the loop but a full audit queue, which holds that worker back (backpressure) exactly as it would
hold back a single gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import hmac
import itertools
import logging
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.errors import AuditUnavailable, SharedStateUnavailable
from aigrid.gateway.conversation_store import ConversationStore
from aigrid.gateway.decisions import Latest
from aigrid.gateway.guard import start_audit
from aigrid.gateway.hub_protocol import BATCH, HELLO_S, FrameTooLarge, FrameWriter, read_frame, read_hello
from aigrid.gateway.record_fields import read_record
from aigrid.gateway.response_store import BrokenHistory, Pending, ResponseStore, StoredResponse
from aigrid.security.firewall.abuse import AbuseMonitor, AbuseRules
from aigrid.security.firewall.abuse_shared import (
    MAX_PENDING,
    Batch,
    HubAbuse,
    answer_to_wire,
    request_from_wire,
)
from aigrid.security.quota_backend import Counter, MemoryQuotaBackend, Released
from aigrid.telemetry.periodic import Periodic
from aigrid.telemetry.prefill_book import Report, from_wire, to_wire
from aigrid.telemetry.shared import affinity_tag
from aigrid.telemetry.store import merge_peer_reports

if TYPE_CHECKING:  # redis only where a spec names it (guard.abuse_relay)
    from aigrid.security.firewall.abuse_redis import RedisAbuseRelay

log = logging.getLogger("aigrid.hub")
WORKER_LOST = "audit:worker_lost"
"""The outcome of the record a hub writes when a worker exits with requests in flight (Hub.worker_lost)."""
AUDIT_NOTE_WAIT_S = 5.0
_Entry = TypeVar("_Entry", bound=tuple[Any, ...])
R = TypeVar("R")
AUDIT_WAIT_S = 5.0
HELD_PASS = 10_000
"""How many unsettled reservations the hub keeps by worker (Reservations) before it looks for those whose windows all
ended (one whose settlement never came: the hub refused it, or the worker gave it up), the next pass at twice what a
pass left: about 300 bytes each."""
_peer: contextvars.ContextVar[int | None] = contextvars.ContextVar("aigrid_hub_peer", default=None)
"""The pid of the worker whose connection the current call came on (each connection's task has its own context)."""


class Hub:
    def __init__(self, path: Path, audit: AuditLog | None, *, ttl_s: float = 5.0, affinity_max: int = 10_000,
                 decisions_max: int = 20_000, abuse_rules: AbuseRules | None = None,
                 abuse_relay: RedisAbuseRelay | None = None, abuse_interval_s: float = 0.25,
                 calibration_max: int = 4096, token: str | None = None) -> None:
        self.path = path
        self.token = token or secrets.token_hex(32)
        """The secret a connection must say first (hub_protocol.HELLO): `token`, else a new random one."""
        self.audit = audit
        self._ttl_s = ttl_s
        self._inflight: dict[str, tuple[float, dict[str, list[int]]]] = {}  # worker -> (wall time, ledger)
        self._tenants: dict[str, dict[str, int]] = {}  # worker -> its requests in flight per tenant (admission)
        self._queues: dict[str, Report] = {}  # worker -> its pending prompts in time (telemetry/prefill_book.py)
        self._circuits: dict[str, float] = {}
        self._affinity: Latest[tuple[int, str, str, str]] = Latest(affinity_max)  # seq, key, endpoint, worker
        """The affinity entries a new worker replays (by sequence number, per tenant: shared.affinity_tag): past
        `affinity_max` the tenant holding the most loses its oldest. Until the thirty-seventh session the oldest of
        all went, and one tenant's 10,000 sessions pushed every other tenant's out of a new worker's replay."""
        self._observations: deque[tuple[int, list[Any], str]] = deque(maxlen=calibration_max)  # seq, obs, worker
        self._seq = 0
        self._cursor: dict[str, int] = {}
        self.quotas = MemoryQuotaBackend()
        self._decisions: Latest[dict[str, Any]] = Latest(decisions_max)
        self.responses = ResponseStore()
        self.conversations = ConversationStore()
        self.abuse = HubAbuse(AbuseMonitor(abuse_rules or AbuseRules()))
        self._relay = abuse_relay
        self._outbox: Batch = []
        self._relay_down = False
        self._relay_loop = Periodic(self._relay_abuse, abuse_interval_s, "aigrid-hub-abuse-relay")
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.held = Reservations(self.quotas)

    async def start(self) -> None:
        if self.audit is not None:
            await start_audit(self.audit)
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        if self._relay is not None:
            await self._relay_loop.start()

    async def stop(self) -> None:
        await self._relay_loop.stop()
        if self._relay is not None:
            await self._relay.aclose()
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            for task in list(self._conns):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._server = None
        if self.audit is not None:
            await self.audit.stop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        pid = _peer_pid(writer)
        said = False
        try:
            said = await self._said_hello(reader, pid)
        finally:
            if not said:  # refused, or cancelled while it said nothing: closed and forgotten on every exit
                self._conns.discard(task)
                writer.close()
        if not said:
            return
        frames = FrameWriter(writer)
        _peer.set(pid)
        self.held.opened(pid)
        try:
            while True:
                try:
                    req_id, op, arg = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:
                    if self._server is None or not self._server.is_serving():
                        return  # stop(): end quietly (Python 3.11's stream callback logs a cancelled task as an error)
                    raise
                if op == BATCH:
                    result, ok = await self._batch(arg), True
                else:
                    result, ok = await self._handle_one(op, arg)
                if req_id:
                    try:
                        frames.send([req_id, ok, result])
                    except FrameTooLarge as e:  # that call fails alone; the connection and its other calls go on
                        log.warning("hub: the answer to %s is not sent: %s", op, e)
                        frames.send([req_id, False, f"the answer to {op} is too large for the workers' hub: {e}"])
        finally:
            self._conns.discard(task)
            self.held.closed(pid)  # a lost worker's last connection read to its end: its reservations released
            writer.close()

    async def _said_hello(self, reader: asyncio.StreamReader, pid: int | None) -> bool:
        """Whether the connection opened with the hub's token within HELLO_S (hmac.compare_digest); a refusal is
        logged with the peer's pid, and the connection is closed unanswered."""
        try:
            async with asyncio.timeout(HELLO_S):
                said = await read_hello(reader)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            said = None
        except asyncio.CancelledError:
            if self._server is None or not self._server.is_serving():
                return False  # stop() while it said nothing
            raise
        if said is not None and hmac.compare_digest(said.encode(), self.token.encode()):
            return True
        log.warning("hub: a connection from pid %s did not open with the hub's token: closed, nothing read from it",
                    pid if pid is not None else "(unknown)")
        return False

    async def _handle_one(self, op: str, arg: Any) -> tuple[Any, bool]:
        try:
            return await self.handle(op, arg), True
        except (AuditUnavailable, Released, ValueError, KeyError, TypeError) as e:
            log.warning("hub: %s failed: %s", op, e)
            return str(e), False

    async def _batch(self, messages: list[list[Any]]) -> list[list[Any]]:
        """A worker's posted messages, in order; the answer (when the batch wants one) names those refused."""
        failed = []
        for i, (op, arg) in enumerate(messages):
            result, ok = await self._handle_one(op, arg)
            if not ok:
                failed.append([i, result])
        return failed

    async def handle(self, op: str, arg: Any) -> Any:
        if op == "exchange":
            return self.exchange(arg)
        if op == "consume":  # a quota call: {"counters": [...], "op": its op or None[, "give": N]} (hub_client)
            counters, named = _counters(arg["counters"]), _op(arg)
            consumed = await self.quotas.consume(counters, named)
            self.held.charged(_peer.get(), named, counters)
            return consumed
        if op == "grow":
            counters, named = _counters(arg["counters"]), _op(arg)
            grown = await self.quotas.grow(counters, int(arg["give"]), named)
            self.held.charged(_peer.get(), named, counters)
            return grown
        if op == "adjust":
            self.held.settled(_op(arg))
            return await self.quotas.adjust(_counters(arg["counters"]), _op(arg))
        if op == "release":
            self.held.released(str(arg["op"]))
            return await self.quotas.release(str(arg["op"]), _counters(arg["counters"]))
        if op == "value":
            return await self.quotas.value(str(arg))
        if op == "audit":
            if self.audit is None:
                raise AuditUnavailable("this grid has no audit log")
            ts, body = arg
            await self.audit.append_entry(float(ts), str(body), timeout=AUDIT_WAIT_S)
            return None
        if op == "abuse":
            since, batch = request_from_wire(arg)
            if self._relay is not None:
                self._outbox.extend(batch)
            return answer_to_wire(self.abuse.exchange(since, batch))
        if op == "decision":
            self._decisions.add(arg["id"], str(arg.get("tenant")), arg)
            return None
        if op == "decision_get":
            return self._decisions.get(str(arg))
        if op == "decisions_recent":  # a limit (every tenant's), or [limit, tenant]: the newest first
            limit, tenant = (arg, None) if isinstance(arg, int) else (arg[0], str(arg[1]))
            return self._decisions.recent(int(limit), tenant)
        if op.startswith("response_"):
            return self._responses(op, arg)
        if op.startswith("conversation_"):  # conversations_api.Conversations, the same wire form as in-process
            return self.conversations.apply(op.removeprefix("conversation_"), arg)
        raise ValueError(f"unknown hub operation {op!r}")

    async def _relay_abuse(self) -> None:
        """The workers' digests out to the other gateways, theirs in (Redis); this gateway's alone while
        Redis does not answer (logged once each way)."""
        assert self._relay is not None
        batch, self._outbox = self._outbox[-MAX_PENDING:], []
        try:
            others = await self._relay.relay(batch)
        except SharedStateUnavailable as e:
            if not self._relay_down:
                log.warning("abuse signals: Redis did not answer (%s); counting this gateway's requests only", e)
            self._relay_down = True
            return
        if self._relay_down:
            log.warning("abuse signals: Redis answers again; counting every gateway's requests")
        self._relay_down = False
        self.abuse.absorb(others)

    def _responses(self, op: str, arg: Any) -> Any:
        if op == "response_put":
            record, allowed = arg
            return self.responses.put(_from_worker(StoredResponse, record),
                                      None if allowed is None else frozenset(allowed))
        if op == "response_complete":
            record, allowed = arg
            return self.responses.complete(_from_worker(StoredResponse, record),
                                           None if allowed is None else frozenset(allowed))
        if op == "response_pending_add":
            self.responses.add_pending(_from_worker(Pending, arg))
            return None
        if op == "response_cancelled":
            return self.responses.cancelled([(str(t), str(r)) for t, r in arg])
        if op == "response_mark":
            tenant, rid, status, error = arg
            return _asdict(self.responses.mark(tenant, rid, status, error))
        if op == "response_events_append":
            tenant, rid, first, events, ended = arg
            self.responses.events.append(str(tenant), str(rid), int(first), [str(e) for e in events], bool(ended))
            return None
        if op == "response_heartbeat":
            owner, lease_s = arg
            self.responses.heartbeat(str(owner), float(lease_s))
            return None
        if op == "response_abandon":
            pending, error = arg
            return _asdict(self.responses.abandon(_from_worker(Pending, pending), error))
        if op == "response_events_next":
            tenant, rid = arg
            next_ = self.responses.events.next(str(tenant), str(rid))
            return None if next_ is None else list(next_)
        if op == "response_events_read":
            tenant, rid, after, limit = arg
            got = self.responses.events.read(str(tenant), str(rid), int(after), int(limit))
            return None if got is None else [got[0], got[1]]
        tenant, rid = arg
        if op == "response_lookup":
            found_any = self.responses.lookup(tenant, rid)
            if found_any is None:
                return None
            return {"pending" if isinstance(found_any, Pending) else "stored": dataclasses.asdict(found_any)}
        if op == "response_pending_delete":
            return _asdict(self.responses.delete_pending(tenant, rid))
        if op == "response_delete":
            return self.responses.delete(tenant, rid)
        if op == "response_events_delete":
            return self.responses.events.delete(tenant, rid)
        found = self.responses.get(tenant, rid)
        if op == "response_get":
            return None if found is None else dataclasses.asdict(found)
        if op == "response_history":
            if found is None:
                return {"missing": rid}
            try:
                return {"history": self.responses.history(found)}
            except BrokenHistory as e:
                return {"missing": e.args[0]}
        raise ValueError(f"unknown hub operation {op!r}")

    async def worker_lost(self, gateway_id: str, index: int, pid: int, code: int | None) -> dict[str, int]:
        """A worker process that exited unasked (killed, crashed): its requests in flight end with it, and their
        audit records with them, so the log says so in a record of its own (outcome `audit:worker_lost`, the
        tenants and counts the worker last reported); its share of the shared view (in-flight ledger, queues,
        tenants' counts) stops counting now, not after the report TTL. Returns the counts per tenant."""
        self.held.lost(pid)  # its reservations released once its connections are read to their end
        ledger = self._inflight.pop(gateway_id, (0.0, {}))[1]
        tenants = {str(t): int(n) for t, n in self._tenants.pop(gateway_id, {}).items() if int(n) > 0}
        self._queues.pop(gateway_id, None)
        requests = sum(int(load[0]) + int(load[2]) for load in ledger.values())  # pending a first token + decoding
        message = (f"gateway worker {index} (pid {pid}) exited with {code} while {requests} requests were in flight "
                   "on it; their audit records are lost (they ended with the process)")
        log.error("%s; tenants: %s", message, tenants or "none reported")
        if self.audit is not None and requests > 0:
            record = AuditRecord(ts=time.time(), request_id="", tenant="-", key_id="-", model="", outcome=WORKER_LOST,
                                 extra={"route": "audit", "worker": index, "pid": pid, "exit": code,
                                        "in_flight": requests, "tenants": tenants, "message": message})
            try:
                await self.audit.append(record, timeout=AUDIT_NOTE_WAIT_S)
            except AuditUnavailable as e:
                log.error("the record of worker %d's lost requests could not be written: %s", index, e)
        return tenants

    def exchange(self, report: dict[str, Any]) -> dict[str, Any]:
        """One worker's report in, the others' merged view out (the Redis backend's semantics)."""
        me, now = str(report["gateway"]), time.time()
        self._inflight[me] = (now, report["inflight"])
        self._queues[me] = from_wire(report.get("queues"))
        self._tenants[me] = report.get("tenants") or {}
        self._circuits.update(report["circuits"])
        for key, endpoint in report["affinity"]:
            self._seq += 1
            self._affinity.add(str(self._seq), affinity_tag(key), (self._seq, key, endpoint, me))
        for observation in report.get("calibration") or ():
            self._seq += 1
            self._observations.append((self._seq, observation, me))
        inflight: dict[str, list[int]] = {}
        tenants: dict[str, int] = {}
        for worker, (at, ledger) in list(self._inflight.items()):
            if now - at > self._ttl_s:
                del self._inflight[worker]  # a worker that stopped reporting stops counting
                self._tenants.pop(worker, None)
                self._queues.pop(worker, None)
                continue
            if worker == me:
                continue
            for ep, load in ledger.items():
                prev = inflight.get(ep, [0, 0, 0])
                inflight[ep] = [prev[0] + load[0], prev[1] + load[1], prev[2] + load[2]]
            for tenant, n in self._tenants.get(worker, {}).items():
                tenants[tenant] = tenants.get(tenant, 0) + int(n)
        since = self._cursor.get(me, 0)
        self._cursor[me] = self._seq
        # the entries since this worker's last exchange, read back from the newest (not the whole queue)
        affinity = [[k, e] for _, k, e, w in _since(self._affinity.newest(), since) if w != me]
        calibration = [o for _, o, w in _since(reversed(self._observations), since) if w != me]
        queues = merge_peer_reports([q for worker, q in self._queues.items() if worker != me], now)
        return {"inflight": inflight, "circuits": self._circuits, "affinity": affinity, "tenants": tenants,
                "calibration": calibration, "peers": sum(1 for worker in self._inflight if worker != me),
                "queues": to_wire(queues)}


class Reservations:
    """The quota reservations each worker holds on the hub's store, charged (admission, a tool loop's further turns)
    and not yet settled, so that those of a worker that dies (killed, crashed: Hub.worker_lost) are released: its
    requests ended with it, and nothing else would settle them. A worker is its connections' peer pid (SO_PEERCRED;
    where the system does not tell it, nothing is kept and a dead worker's reservations stay charged); a reservation is
    its admission's op, which its further turns' and settlement's ops are named after (`{op}.ID`: quotas._op_after).
    A settlement (even one with nothing to correct: Quotas.settle) or a release ends what it names. A dead worker's are
    released only once every connection it had is read to its end, so that a settlement it sent before it died is
    applied first, never after the release (which would take it back twice). What is released is what each charge
    applied (taken back where its window is still held, its op recorded as released): the tokens the dead requests
    used before the worker died are not charged (their count died with it). A reservation handed on (a background
    Response's create hands its admission to its run: Exchange.hand_admission) was said settled by the create's own
    close: a worker that dies during such a run leaves the run's reservation charged, as before."""

    def __init__(self, store: MemoryQuotaBackend) -> None:
        self._store = store
        self._by_pid: dict[int, dict[str, list[tuple[str, list[Counter]]]]] = {}
        """pid -> admission's op -> each charge under it (its op, its counters holding what it applied)."""
        self._pid_of: dict[str, int] = {}
        self._conns: dict[int, int] = {}  # pid -> its connections open now
        self._lost: set[int] = set()  # pids that died, released once their connections end
        self._next_pass = HELD_PASS

    def opened(self, pid: int | None) -> None:
        if pid is not None:
            self._conns[pid] = self._conns.get(pid, 0) + 1

    def closed(self, pid: int | None) -> None:
        if pid is None:
            return
        left = self._conns.get(pid, 1) - 1
        if left > 0:
            self._conns[pid] = left
            return
        self._conns.pop(pid, None)
        if pid in self._lost:
            self._release(pid)

    def charged(self, pid: int | None, op: str | None, counters: list[Counter]) -> None:
        """A charge under `op` that a worker's call made (nothing kept if it applied nothing: refused, or a repeat of
        one released)."""
        applied = None if pid is None or op is None else self._store.applied(op)
        if applied is None or op is None or pid is None or not any(applied):
            return
        root = _root(op)
        kept = [dataclasses.replace(c, amount=a) for c, a in zip(counters, applied, strict=False) if a]
        charges = self._by_pid.setdefault(pid, {}).setdefault(root, [])
        if all(o != op for o, _ in charges):  # a repeat of a charge is kept once
            charges.append((op, kept))
        self._pid_of[root] = pid
        if len(self._pid_of) > self._next_pass:
            self._forget_ended()

    def settled(self, op: str | None) -> None:
        if op is not None and (pid := self._pid_of.pop(_root(op), None)) is not None:
            self._by_pid.get(pid, {}).pop(_root(op), None)

    def released(self, op: str) -> None:
        root = _root(op)
        pid = self._pid_of.get(root)
        charges = self._by_pid.get(pid, {}) if pid is not None else {}
        if root in charges:
            charges[root] = [(o, c) for o, c in charges[root] if o != op]
            if not charges[root]:
                del charges[root], self._pid_of[root]

    def lost(self, pid: int) -> None:
        """The worker `pid` died: its reservations are released now, or once its connections are read to their end."""
        if pid in self._conns:
            self._lost.add(pid)
        else:
            self._release(pid)

    def _release(self, pid: int) -> None:
        self._lost.discard(pid)
        held = self._by_pid.pop(pid, {})
        for root, charges in held.items():
            self._pid_of.pop(root, None)
            for op, counters in charges:
                self._store.take_back(op, counters)
        if held:
            log.warning("hub: released the %d quota reservations of worker pid %d, which died with them in flight",
                        len(held), pid)

    def _forget_ended(self) -> None:
        now = time.time()
        for held in self._by_pid.values():
            for root in [r for r, charges in held.items() if all(c.expires_at <= now for _, cs in charges for c in cs)]:
                del held[root]
                self._pid_of.pop(root, None)
        self._next_pass = max(HELD_PASS, 2 * len(self._pid_of))


def _root(op: str) -> str:
    """Admission's op, of `op` or of a further turn's or a settlement's op named after it (`{op}.ID`)."""
    head, sep, tail = op.rpartition(":op:")
    return f"{head}{sep}{tail.partition('.')[0]}"


def _peer_pid(writer: asyncio.StreamWriter) -> int | None:
    """The pid of the process at the other end of a Unix socket (Linux's SO_PEERCRED), or None."""
    sock = writer.get_extra_info("socket")
    creds = getattr(socket, "SO_PEERCRED", None)
    if sock is None or creds is None:
        return None
    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, creds, struct.calcsize("3i")))
    except OSError:
        return None
    return int(pid) if pid > 0 else None


def _from_worker(cls: type[R], data: object) -> R:
    """A record a worker sent, fields a newer aigrid added left out (a worker started again after an upgrade on disk,
    its hub the running parent: record_fields.py); ValueError, answered to that worker, for one unreadable."""
    found = read_record(cls, data, f"a {cls.__name__} record from a worker")
    if found is None:
        raise ValueError(f"unreadable {cls.__name__} record")
    return found


def _asdict(found: Pending | None) -> dict[str, Any] | None:
    return None if found is None else dataclasses.asdict(found)


def _since(newest_first: Iterable[_Entry], since: int) -> list[_Entry]:
    """The entries with a sequence number above `since`, oldest first (`newest_first`: in sequence order, newest
    first)."""
    newer = list(itertools.takewhile(lambda entry: entry[0] > since, newest_first))
    newer.reverse()
    return newer


def _op(arg: dict[str, Any]) -> str | None:
    op = arg.get("op")
    return None if op is None else str(op)


def _counters(raw: list[list[Any]]) -> list[Counter]:
    return [Counter(str(k), int(a), int(limit), float(exp), float(ttl)) for k, a, limit, exp, ttl in raw]
