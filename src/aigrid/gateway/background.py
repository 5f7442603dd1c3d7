"""Background Responses (`background: true`): the runs a gateway owns, one asyncio task each.

POST /v1/responses with `background: true` answers at once with a queued Response; its request runs later
in a task held here, through the same pipeline as any request (responses_api.py: routes.Routes.route in an
Exchange of its own, closed by routes.own_exchange). This object is created with the gateway (app.py,
`Gateway.background`), never at module level, and the lifespan stops it: every run still going is
cancelled and awaited, so that each settles its quota and writes its audit record before the audit log
stops, and its placeholder says failed ("the gateway stopped").

Cancel: a run of this process is cancelled here at once (`cancel`); one a worker of the same gateway runs
(`--workers N`), or another gateway sharing a Redis store (`gateway.stores`), is stopped by the process
that runs it, which asks its store every `poll_s` which of its runs a client cancelled (`watch`). A run that has reached its end (its answer being stored, its exchange closing) is
never interrupted: a cancel then waits for it.

Lease: with a shared store (the workers' hub, a Redis) each run's placeholder names its owner (`owner`, a
random id per BackgroundRuns: per process), and the owner renews its lease in that store once per `poll_s`
while it has runs (`renew`: one heartbeat per process, not per run; a create renews it before its placeholder
is announced). A process that dies stops renewing: after `lease_s` the first reader of one of its runs (GET,
the stream follower, cancel; responses_api.py) fails it with ABANDONED and ends its event log, once whoever
races (the store's atomic step), and logs a warning naming the response and the owner. That one reader also
closes the dead run's exit (responses_api.py `_close_abandoned`): one audit record of BACKGROUND_ROUTE, outcome
"abandoned", through the gateway's one audit path (routes.close_exchange, Guard.finish), naming the dead owner;
its quota is settled at its reservation, explicitly: what the dead process reserved at admission (the prompt's
estimate and the output limit, in the quota store shared with it) stays charged, since nobody knows the tokens
its run used (the record counts none, and says so). A connection to the store that closes says nothing of death
(the hub client reconnects); only the lease does. `lease_s` is several polls, so that a live owner, even with
one run that takes hours, is never taken for dead; an owner that was only stalled (or cut off from its store)
past its lease and comes back stops the run at its next poll (its late answer is not stored), and that run's
exchange settles its reservation to its usage as any exit's and writes the run's second and last record,
outcome "abandoned:settled", with the same response id and that usage (Exchange.settles_abandoned): at most
two records a run, the second settlement-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from aigrid.errors import ApiError, Overloaded, StoreUnavailable
from aigrid.gateway.envelope import bounded_error
from aigrid.gateway.stopping import CUT

log = logging.getLogger("aigrid.gateway")
BACKGROUND_ROUTE = "/v1/responses (background)"
"""The route of a background run's exchange: its audit record, access log line and span."""
POLL_S = 0.5
MAX_RUNS = 10_000
MAX_RUNS_PER_TENANT = 1_000
"""Runs one gateway (one worker) holds at once, in all and per tenant: more is a 429, never a task more."""
CANCEL_WAIT_S = 10.0
"""How long a cancel waits for this process's run to end (its quota settled, its record written)."""
LEASE_S = 10.0
"""How long an owner's heartbeat keeps its runs alive to readers: a run whose owner has not renewed it for
this long is failed by its next reader. More than twice poll_s (a live owner renews every poll)."""
ABANDONED = {"code": "server_error", "message": "the gateway running this background response stopped before it "
                                               "ended"}
"""A background response's error when its owner's lease ended before it did (its process died)."""
CANCELLED = "the background response was cancelled"
"""The reason a run is cancelled with when its client cancels it (POST /v1/responses/{id}/cancel, here or on another
worker: `watch`). One whose engine held it is charged its prompt
(proxy.py), as a client that hangs up then is: before 2026-12-06 the run was cancelled with no reason and charged
nothing, so a long prompt created in the background and cancelled at once was prefilled for free. The stop's
cancel is stopping.CUT: work the grid throws away, charged nothing beyond what was delivered (docs/reliability.md)."""


LAPSED = "the background response's owner was taken for dead"
"""The reason a run is cancelled with when a reader failed it, its owner's lease lapsed (ABANDONED), and the owner
comes back: work the grid throws away, charged nothing beyond what was delivered (proxy._CHARGED_CUTS leaves it out).
From c92da63f to area W (twenty-seventh session) such a run was cancelled with CANCELLED and charged its prompt."""


class Keeper(Protocol):
    """The shared store of this process's runs (stores.Responses): cancels read, the lease renewed."""

    async def cancelled(self, keys: list[tuple[str, str]]) -> dict[str, str]:
        """Of these runs (tenant, response id), the ids a client cancelled ("cancelled") or a reader failed
        ("failed", its owner taken for dead), each with that status."""
        ...

    async def heartbeat(self, owner: str, lease_s: float) -> None: ...


class BackgroundRuns:
    def __init__(self, poll_s: float = POLL_S, max_runs: int = MAX_RUNS,
                 max_per_tenant: int = MAX_RUNS_PER_TENANT, lease_s: float = LEASE_S) -> None:
        if lease_s <= 2 * poll_s:
            raise ValueError(f"lease_s ({lease_s}) must be more than twice poll_s ({poll_s}), or live runs would "
                             "be taken for dead")
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}  # response id -> (tenant, its run)
        self._per_tenant: dict[str, int] = {}
        self._ending: set[str] = set()
        self._halted: dict[str, str] = {}  # runs told to stop, and why (a cancel can be lost: _halt)
        self._poll_s = poll_s
        self._max, self._max_per_tenant = max_runs, max_per_tenant
        self._watcher: asyncio.Task[None] | None = None
        self.owner = secrets.token_hex(8)
        """This process's id as its runs' owner (Pending.owner), whose lease it renews."""
        self.lease_s = lease_s
        self._renewed = -lease_s  # time.monotonic() of its last heartbeat
        self.stopping = False
        """True once the gateway stops: a run cancelled now was not cancelled by its client."""

    def __len__(self) -> int:
        return len(self._tasks)

    def check_room(self, tenant: str) -> None:
        """Overloaded (429, Retry-After) when this gateway runs as many as it holds, in all or for `tenant`."""
        mine = self._per_tenant.get(tenant, 0)
        if len(self._tasks) >= self._max or mine >= self._max_per_tenant:
            held = f"{mine} of this tenant's" if mine >= self._max_per_tenant else f"{len(self._tasks)}"
            raise Overloaded(f"background: {held} background responses are running on this gateway, as many as "
                             "it holds; retry later", param="background", headers={"retry-after": "1"})

    def spawn(self, rid: str, tenant: str, run: Coroutine[Any, Any, None], shared: Keeper | None = None) -> None:
        """Run `run` in a task of its own; `shared`: the store others read it from, where this process renews
        its lease and asks which runs a client cancelled elsewhere."""
        task = asyncio.create_task(run, name=f"aigrid-background-{rid}")
        self._tasks[rid] = (tenant, task)
        self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1
        task.add_done_callback(lambda _: self._ended(rid))
        if shared is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(shared), name="aigrid-background-cancels")

    async def renew(self, shared: Keeper) -> None:
        """This process's lease renewed in `shared`, unless it was within the last poll_s (a create calls it
        before announcing its placeholder, the watcher every poll_s). Raises what the store raises."""
        now = time.monotonic()
        if now - self._renewed < self._poll_s:
            return
        await shared.heartbeat(self.owner, self.lease_s)
        self._renewed = now

    def _ended(self, rid: str) -> None:
        found = self._tasks.pop(rid, None)
        self._ending.discard(rid)
        self._halted.pop(rid, None)
        if found is not None:
            left = self._per_tenant.pop(found[0], 1) - 1
            if left:
                self._per_tenant[found[0]] = left

    def ending(self, rid: str) -> None:
        """The run `rid` has its outcome and is recording it: a cancel from now on waits instead."""
        self._ending.add(rid)

    def owns(self, rid: str) -> bool:
        return rid in self._tasks

    def _halt(self, rid: str, task: asyncio.Task[None], why: str) -> None:
        """Stop the run `rid`: cancel its task with `why` (CANCELLED, which proxy.py reads to charge a prompt its
        engine held; the stop's CUT, charged nothing), and remember it, because the cancel can be lost. redis-py runs each command
        inside asyncio.wait_for (its socket timeout), which on Python 3.11 swallows a cancel that lands as the
        command completes (CPython gh-86296; tests/telemetry/test_periodic.py), and the run would go on to its end.
        The run calls check() between its steps (per streamed chunk, after a whole answer)."""
        self._halted.setdefault(rid, why)
        task.cancel(why)

    def check(self, rid: str) -> None:
        """Raise CancelledError in the run `rid` when it was told to stop and has not begun recording its
        outcome: a cancel lost in a Redis call (_halt) is delivered here at the run's next step, with its reason."""
        if (rid in self._halted or self.stopping) and rid not in self._ending:
            raise asyncio.CancelledError(self._halted.get(rid, CUT))

    async def cancel(self, rid: str, wait_s: float = CANCEL_WAIT_S) -> None:
        """Cancel this process's run `rid` (unless it is recording its outcome) and wait until it ended."""
        found = self._tasks.get(rid)
        if found is None:
            return
        task = found[1]
        if rid not in self._ending:
            self._halt(rid, task, CANCELLED)
        await asyncio.wait({task}, timeout=wait_s)

    async def _watch(self, shared: Keeper) -> None:
        """While this process runs any: every poll_s, its lease renewed, and the runs a client cancelled on
        another worker (or a reader failed, taking this process for dead) stopped."""
        while self._tasks and not self.stopping:
            await asyncio.sleep(self._poll_s)
            keys = [(tenant, rid) for rid, (tenant, _) in self._tasks.items() if rid not in self._ending]
            try:
                await self.renew(shared)
                stop = await shared.cancelled(keys) if keys else {}
            except (ConnectionError, StoreUnavailable) as e:  # its store away (hub, Redis): ask again next time
                log.debug("background runs: could not renew the lease or ask for cancels: %s", e)
                continue
            except Exception:  # a bug, or a store answering in another form: logged, and the watcher goes on (it
                # ended, unlogged: the lease went unrenewed and readers failed this process's live runs as dead)
                log.exception("background runs: could not renew the lease or ask for cancels")
                continue
            for rid, status in stop.items():
                found = self._tasks.get(rid)
                if found is not None and rid not in self._ending:
                    self._halt(rid, found[1], CANCELLED if status == "cancelled" else LAPSED)

    async def stop(self) -> None:
        """The gateway stops: every run still going is cancelled (unless recording its outcome) and awaited. Its
        reason is the stop's (stopping.CUT): the grid's cut, charged nothing beyond what was delivered, as an HTTP
        request the stop cuts; its response fails (STOPPED) and is never run again."""
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        tasks = [task for _, task in self._tasks.values()]
        for rid, (_, task) in list(self._tasks.items()):
            if rid not in self._ending:
                self._halt(rid, task, CUT)
        if tasks:
            await asyncio.wait(tasks)


_ERROR_CODES = {429: "rate_limit_exceeded"}


def error_object(e: ApiError) -> dict[str, Any]:
    """A failed Response's `error`: OpenAI's code (a client mistake found by the pipeline is an
    `invalid_prompt`, too many requests `rate_limit_exceeded`, anything else `server_error`), the gateway's
    message, and the error's own type, code and field as the envelope would have named them: its message and field
    bounded as the envelope's are (envelope.bounded_error; until the twenty-ninth session a client's value quoted in
    it was stored and read back whole)."""
    shown = bounded_error(e.envelope())["error"]  # its message and field bounded, as every envelope's
    assert isinstance(shown, dict)
    return {"code": error_code(e.status), "message": shown["message"], "type": e.type, "param": shown["param"],
            "aigrid_code": e.code}


def error_code(status: int) -> str:
    """OpenAI's code of a failed Response's `error` for an error of HTTP `status`, the gateway's (error_object) or an
    engine's refusal (responses_api._refusal_object)."""
    return _ERROR_CODES.get(status) or ("invalid_prompt" if 400 <= status < 500 else "server_error")
