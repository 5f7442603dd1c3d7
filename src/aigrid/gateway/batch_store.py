"""The batches of the Batch API (batches_api.py, batch_runner.py): one row of the SQLite index (batch_db.py)
each, shared by every gateway process on the machine.

A row holds OpenAI's Batch object as the clients read it, who created it (the principal, never a secret:
batch_line.py re-checks it for every line) with the routing headers of its create call, and its claim: the
process that runs it (`owner`) and when that process last renewed the claim (`heartbeat`). A claim is taken
in one statement (`claim`), so exactly one process runs a batch; one not renewed for `stale_s` (its process
died) is taken over, and a process that stops gracefully releases its claims at once (`release`).

Two APIs keep their batches here, told apart by the id's prefix: OpenAI's Batch API (`batch_...`,
batches_api.py) and Anthropic's Message Batches API (`msgbatch_...`, message_batches_api.py). One runner runs
both; a tenant-scoped read or change (`get`, `list`, `update` with a tenant, `delete`) sees only the batches of
the API that asks (`prefix`), so neither API lists, reads or cancels the other's.

A row records the jurisdictions its creator's key may use (`jurisdictions`; None: every one), and a tenant-scoped
read or change by a key narrowed to some jurisdictions (`allowed`) sees only the batches made by a key whose
jurisdictions are all among its own (batch_db.visible_to): the others are not found, as another tenant's.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from aigrid.errors import InvalidRequest, NotFound
from aigrid.gateway.batch_db import BatchDb, decode, encode, visible_to

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
"""Statuses a runner still has work for; every other one is final."""
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_IN_ACTIVE = f"status IN ({', '.join('?' * len(ACTIVE))})"
OPENAI_PREFIX = "batch_"
"""The ids of OpenAI's batches; Anthropic's message batches are `msgbatch_...` (message_batches_api.py)."""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    id: str
    tenant: str
    obj: dict[str, Any]
    """OpenAI's Batch object."""
    principal: dict[str, Any]
    headers: dict[str, str]
    owner: str | None
    jurisdictions: frozenset[str] | None = None
    """Those its creator's key may use (None: every one): its output and error files are made under them."""


class BatchLimit(InvalidRequest):
    """A create past the batches a tenant may keep, none of them ended (gateway.batch.max_batches)."""

    status = 429
    code = "batch_limit_exceeded"


def _row(r: sqlite3.Row) -> StoredBatch:
    return StoredBatch(r["id"], r["tenant"], orjson.loads(r["object"]), orjson.loads(r["principal"]),
                       orjson.loads(r["headers"]), r["owner"], decode(r["jurisdictions"]))


Mutate = Callable[[dict[str, Any]], bool]
"""Changes a Batch object in place; False: leave it as it was."""


class BatchStore:
    def __init__(self, db: BatchDb) -> None:
        self.db = db

    async def create(self, tenant: str, obj: dict[str, Any], principal: dict[str, Any],
                     headers: dict[str, str], *, jurisdictions: frozenset[str] | None = None,
                     keep: int | None = None) -> list[str]:
        """The batch's row, made under `jurisdictions` (its creator's allowed ones; None: every one), only while its
        input file's row is there (NotFound naming input_file_id: a DELETE won the race; FileStore.delete). `keep`: the most
        batches of its API (its id's prefix) the tenant keeps (gateway.batch.max_batches): past it its oldest ended
        ones are dropped, in the transaction that counts them (their files stay the tenant's), and BatchLimit raised
        when not enough have ended. The ids dropped."""
        prefix = str(obj["id"]).split("_", 1)[0] + "_"

        def insert(db: sqlite3.Connection) -> list[str]:
            if not db.execute("SELECT 1 FROM files WHERE id = ? AND tenant = ?",
                              (obj["input_file_id"], tenant)).fetchone():  # deleted since the create found it
                raise NotFound(f"input_file_id: no file {obj['input_file_id']!r}", param="input_file_id")
            dropped: list[str] = []
            if keep is not None:
                mine = "tenant = ? AND substr(id, 1, ?) = ?"
                held = db.execute(f"SELECT COUNT(*) FROM batches WHERE {mine}",
                                  (tenant, len(prefix), prefix)).fetchone()[0]
                over = held + 1 - keep
                if over > 0:
                    dropped = [r[0] for r in db.execute(
                        f"SELECT id FROM batches WHERE {mine} AND status IN ({', '.join('?' * len(FINAL))}) "
                        "ORDER BY created_at, rowid LIMIT ?", (tenant, len(prefix), prefix, *sorted(FINAL), over))]
                    if len(dropped) < over:
                        raise BatchLimit(f"this tenant keeps {held} batches, {held - len(dropped)} of them not ended, "
                                         f"the most it may keep (gateway.batch.max_batches: {keep}); wait for some to "
                                         "end (or cancel them): the oldest ended ones make room")
                    db.executemany("DELETE FROM batches WHERE id = ?", [(bid,) for bid in dropped])
            db.execute("INSERT INTO batches (id, tenant, created_at, status, object, principal, headers, owner, "
                       "heartbeat, jurisdictions) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                       (obj["id"], tenant, obj["created_at"], obj["status"], orjson.dumps(obj).decode(),
                        orjson.dumps(principal).decode(), orjson.dumps(headers).decode(), encode(jurisdictions)))
            return dropped

        return await self.db.write(insert)

    async def get(self, tenant: str, bid: str, *, prefix: str = OPENAI_PREFIX,
                  allowed: frozenset[str] | None = None) -> dict[str, Any] | None:
        """The tenant's batch of the API `prefix`, if a key allowed the jurisdictions `allowed` may see it."""
        if not bid.startswith(prefix):
            return None
        seen, seen_args = visible_to(allowed)

        def find(db: sqlite3.Connection) -> dict[str, Any] | None:
            r = db.execute(f"SELECT object FROM batches WHERE id = ? AND tenant = ? AND {seen}",
                           (bid, tenant, *seen_args)).fetchone()
            return None if r is None else orjson.loads(r["object"])

        return await self.db.read(find)

    async def row(self, bid: str) -> StoredBatch | None:
        def find(db: sqlite3.Connection) -> StoredBatch | None:
            r = db.execute("SELECT * FROM batches WHERE id = ?", (bid,)).fetchone()
            return None if r is None else _row(r)

        return await self.db.read(find)

    async def list(self, tenant: str, after: str | None, limit: int, *, before: str | None = None,
                   prefix: str = OPENAI_PREFIX,
                   allowed: frozenset[str] | None = None) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the tenant's batches a key allowed `allowed` may see, newest first, and whether more follow:
        the `limit` older than `after`, or the `limit` newer than `before` (Anthropic's `before_id`); None: no
        such batch."""
        seen, seen_args = visible_to(allowed)
        mine = f"tenant = ? AND id GLOB ? AND {seen}"

        def page(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool] | None:
            args: tuple[Any, ...] = (tenant, prefix + "*", *seen_args)
            cursor = after if after is not None else before
            if cursor is None:
                rows = db.execute(f"SELECT object FROM batches WHERE {mine} ORDER BY created_at DESC, rowid DESC "
                                  "LIMIT ?", (*args, limit + 1)).fetchall()
            else:
                r = db.execute(f"SELECT created_at, rowid FROM batches WHERE id = ? AND {mine}",
                               (cursor, *args)).fetchone()
                if r is None:
                    return None
                if after is not None:
                    rows = db.execute(f"SELECT object FROM batches WHERE {mine} AND (created_at < ? OR (created_at "
                                      "= ? AND rowid < ?)) ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                      (*args, r[0], r[0], r[1], limit + 1)).fetchall()
                else:
                    rows = db.execute(f"SELECT object FROM batches WHERE {mine} AND (created_at > ? OR (created_at "
                                      "= ? AND rowid > ?)) ORDER BY created_at ASC, rowid ASC LIMIT ?",
                                      (*args, r[0], r[0], r[1], limit + 1)).fetchall()
                    more = len(rows) > limit
                    return [orjson.loads(x["object"]) for x in reversed(rows[:limit])], more
            objs = [orjson.loads(x["object"]) for x in rows]
            return objs[:limit], len(objs) > limit

        return await self.db.read(page)

    async def update(self, bid: str, mutate: Mutate, tenant: str | None = None, *,
                     prefix: str = OPENAI_PREFIX, allowed: frozenset[str] | None = None) -> dict[str, Any] | None:
        """Read, change and write the Batch object in one transaction (a cancel from any process and the
        runner's progress never overwrite each other); the object after, or None when there is none (with a
        `tenant`: none of that tenant's of the API `prefix` that a key allowed `allowed` may see)."""
        if tenant is not None and not bid.startswith(prefix):
            return None
        seen, seen_args = visible_to(allowed)

        def change(db: sqlite3.Connection) -> dict[str, Any] | None:
            r = db.execute(f"SELECT object, tenant FROM batches WHERE id = ? AND {seen}", (bid, *seen_args)).fetchone()
            if r is None or (tenant is not None and r["tenant"] != tenant):
                return None
            obj = orjson.loads(r["object"])
            if mutate(obj):
                db.execute("UPDATE batches SET object = ?, status = ? WHERE id = ?",
                           (orjson.dumps(obj).decode(), obj["status"], bid))
            return obj

        return await self.db.write(change)

    async def delete(self, tenant: str, bid: str, *, prefix: str = OPENAI_PREFIX,
                     allowed: frozenset[str] | None = None) -> dict[str, Any] | None:
        """The tenant's batch as found, deleted when it has ended (FINAL); None when there is none that a key
        allowed `allowed` may see."""
        if not bid.startswith(prefix):
            return None
        seen, seen_args = visible_to(allowed)

        def remove(db: sqlite3.Connection) -> dict[str, Any] | None:
            r = db.execute(f"SELECT object FROM batches WHERE id = ? AND tenant = ? AND {seen}",
                           (bid, tenant, *seen_args)).fetchone()
            if r is None:
                return None
            obj: dict[str, Any] = orjson.loads(r["object"])
            if obj["status"] in FINAL:
                db.execute("DELETE FROM batches WHERE id = ?", (bid,))
            return obj

        return await self.db.write(remove)

    async def maker_of_results(self, tenant: str, fid: str) -> tuple[dict[str, Any], bool] | None:
        """Who created the tenant's batch whose output or error file is `fid` (its stored principal: tenant, key id,
        method, scopes), and whether `fid` is its output file, if there is such a batch: the models that may have
        answered in its output are those that may serve its creator (an error file holds refusals, no model's
        answer)."""
        def find(db: sqlite3.Connection) -> tuple[dict[str, Any], bool] | None:
            r = db.execute("SELECT principal, json_extract(object, '$.output_file_id') = ? FROM batches WHERE tenant = ? "
                           "AND ? IN (json_extract(object, '$.output_file_id'), json_extract(object, '$.error_file_id'))",
                           (fid, tenant, fid)).fetchone()
            return None if r is None else (dict(orjson.loads(r[0])), bool(r[1]))

        return await self.db.read(find)

    async def uses_file(self, tenant: str, fid: str) -> str | None:
        """The id of an unfinished batch of the tenant that reads file `fid`, if any."""
        def find(db: sqlite3.Connection) -> str | None:
            r = db.execute(f"SELECT id FROM batches WHERE tenant = ? AND {_IN_ACTIVE} AND "
                           "json_extract(object, '$.input_file_id') = ?", (tenant, *ACTIVE, fid)).fetchone()
            return None if r is None else r[0]

        return await self.db.read(find)

    # --- claims -----------------------------------------------------------------------------------------
    async def claimable(self, now: float, stale_s: float, limit: int) -> builtins.list[str]:
        """Unfinished batches no process runs (never claimed, released, or its claim gone stale), oldest first."""
        def find(db: sqlite3.Connection) -> builtins.list[str]:  # `list` in this class is its method
            return [r[0] for r in db.execute(
                f"SELECT id FROM batches WHERE {_IN_ACTIVE} AND (owner IS NULL OR heartbeat < ?) "
                "ORDER BY created_at, rowid LIMIT ?", (*ACTIVE, now - stale_s, limit))]

        return await self.db.read(find)

    async def claim(self, bid: str, owner: str, now: float, stale_s: float) -> StoredBatch | None:
        """Take the batch for `owner` unless another process holds a live claim on it."""
        def take(db: sqlite3.Connection) -> StoredBatch | None:
            taken = db.execute(f"UPDATE batches SET owner = ?, heartbeat = ? WHERE id = ? AND {_IN_ACTIVE} AND "
                               "(owner IS NULL OR owner = ? OR heartbeat < ?)",
                               (owner, now, bid, *ACTIVE, owner, now - stale_s)).rowcount
            if not taken:
                return None
            return _row(db.execute("SELECT * FROM batches WHERE id = ?", (bid,)).fetchone())

        return await self.db.write(take)

    async def renew(self, owner: str, bids: Sequence[str], now: float) -> dict[str, str]:
        """Renew `owner`'s claims on `bids`: each batch still claimed by it -> its status (a cancel shows)."""
        def touch(db: sqlite3.Connection) -> dict[str, str]:
            mine: dict[str, str] = {}
            for bid in bids:
                if db.execute("UPDATE batches SET heartbeat = ? WHERE id = ? AND owner = ?", (now, bid, owner)).rowcount:
                    mine[bid] = db.execute("SELECT status FROM batches WHERE id = ?", (bid,)).fetchone()[0]
            return mine

        return await self.db.write(touch)

    async def release(self, bid: str, owner: str) -> None:
        def drop(db: sqlite3.Connection) -> None:
            db.execute("UPDATE batches SET owner = NULL, heartbeat = NULL WHERE id = ? AND owner = ?", (bid, owner))

        await self.db.write(drop)


def start_cancelling(now: int) -> Callable[[dict[str, Any]], bool]:
    """The update (for BatchStore.update) that moves a validating or in-progress batch to cancelling: its running
    lines finish, no other starts; False (nothing changed) for a batch in any other status."""

    def cancelling(o: dict[str, Any]) -> bool:
        if o["status"] not in ("validating", "in_progress"):
            return False
        o.update(status="cancelling", cancelling_at=now)
        return True

    return cancelling
