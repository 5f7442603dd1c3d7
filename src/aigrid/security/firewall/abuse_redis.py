"""Abuse digests between gateways through Redis (`gateway.shared_state_url`), so one key's thresholds apply
to its requests on every gateway of a grid, not per gateway.

Each gateway appends its batch of digests (abuse_shared.py; no text) to the stream `aigrid:<grid>:abuse`,
capped at about `max_len` entries, and reads the other gateways' entries from where it left off, in one
pipeline per `security.abuse.share_interval_s`. It counts them in its own AbuseMonitor when it reads them,
so another gateway's request reaches this gateway's verdicts at most about two intervals late (its send,
then this read). A new gateway starts reading at the stream's end: history is not replayed (it would be
counted as new requests). Redis unreachable: SharedStateUnavailable (the caller answers from its own
requests until Redis answers again). An entry no gateway wrote (without its `g` field, or whose `b` is not
JSON or not a batch) is skipped and counted (`malformed`), the entries around it read as usual; a warning
with the count goes out at most once per MALFORMED_WARN_S, however many there are, and the entries skipped
inside that window are in the first warning after it (the next read once it is over, none arriving since).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from aigrid.errors import SharedStateUnavailable
from aigrid.redis_client import connect
from aigrid.security.firewall.abuse_shared import Batch, batch_from_wire, batch_to_wire

log = logging.getLogger("aigrid.abuse")

MALFORMED_WARN_S = 60.0
"""At most one warning per this many seconds about skipped entries (with how many since the last one)."""


class RedisAbuseRelay:
    def __init__(self, client: aioredis.Redis, grid: str, *, gateway_id: str | None = None,
                 max_len: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._r = client
        self._key = f"aigrid:{grid}:abuse"
        self.gateway_id = gateway_id or secrets.token_hex(8)
        self._max_len = max_len
        self._cursor: str | None = None
        """The last stream entry read (None: not started; the stream's end at the first relay)."""
        self._clock = clock
        self.malformed = 0
        """Entries skipped as no gateway writes them, since this relay started."""
        self._unwarned = 0
        """Entries skipped since the last warning."""
        self._first_unwarned: tuple[str, str] | None = None
        """The first of them: its id, and why it was skipped."""
        self._warned_at = float("-inf")

    @classmethod
    def from_url(cls, url: str, grid: str, *, password_env: str | None = None) -> RedisAbuseRelay:
        """`password_env`: gateway.redis_password_env (redis_client.py)."""
        return cls(connect(url, password_env, socket_timeout=1.0, socket_connect_timeout=1.0), grid)

    async def relay(self, batch: Batch) -> Batch:
        """Publish this gateway's batch; answer the other gateways' digests published since the last call."""
        try:
            if self._cursor is None:
                last = await self._r.xrevrange(self._key, count=1)
                self._cursor = _text(last[0][0]) if last else "0-0"
            pipe = self._r.pipeline(transaction=False)
            if batch:
                pipe.xadd(self._key, {"g": self.gateway_id, "b": orjson.dumps(batch_to_wire(batch))},
                          maxlen=self._max_len, approximate=True)
            pipe.xread({self._key: self._cursor}, count=self._max_len)
            read = (await pipe.execute())[-1]
        except RedisError as e:
            raise SharedStateUnavailable(f"abuse digests: Redis unreachable: {e}") from e
        others: Batch = []
        for _, entries in read or ():
            for entry_id, fields in entries:
                self._cursor = _text(entry_id)
                try:
                    if _field(fields, "g") != self.gateway_id.encode():
                        others.extend(batch_from_wire(orjson.loads(_field(fields, "b"))))
                except ValueError as e:  # orjson.JSONDecodeError is one
                    self.malformed += 1
                    self._unwarned += 1
                    self._first_unwarned = self._first_unwarned or (self._cursor, str(e)[:200])
        if self._first_unwarned is not None and self._clock() - self._warned_at >= MALFORMED_WARN_S:
            log.warning("abuse digests: skipped %d entr%s of %s that no gateway wrote (the first: %s, %s); "
                        "the other entries are counted", self._unwarned, "y" if self._unwarned == 1 else "ies",
                        self._key, *self._first_unwarned)
            self._unwarned, self._first_unwarned = 0, None
            self._warned_at = self._clock()
        return others

    async def aclose(self) -> None:
        await self._r.aclose()


def _field(fields: Mapping[bytes | str, bytes | str], name: str) -> bytes:
    """A stream entry's field as bytes, whether the client decodes replies or not; ValueError when missing."""
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        raise ValueError(f"no field {name!r}")
    return value.encode() if isinstance(value, str) else value


def _text(stream_id: bytes | str | None) -> str:
    """A stream entry's id as text: bytes from a client made with bytes replies (the gateway's), str from one
    that decodes them."""
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
