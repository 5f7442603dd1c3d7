"""API keys: issued once, stored only as HMAC-SHA256(server secret, secret), looked up by key id.

A key reads `aig_<key id>_<secret>`. The secret has 256 bits of entropy, so a keyed fast hash is the
right tool (slow password hashes such as scrypt protect low-entropy passwords and would cost tens of
milliseconds per request); the server secret means a stolen key file alone does not allow offline checks.
The file is JSON, written atomically; the secret itself is never stored. A gateway's ring watches its file
(`KeyRing.watching`): a key created or revoked with `aigrid keys` takes effect within a second, without a
restart.

Upgrades: the file says its format (`version`, FORMAT; a file without one is format 1, as every aigrid before
the field wrote). A file of a later format (a newer aigrid's) is refused with a message saying so, never read
as what it is not; a file whose top level has no `keys` list is not a key file (before, it was read as no keys:
every request refused, silently). What this version cannot read is kept when it rewrites the file (`aigrid
keys create|revoke`): a record it skips and the fields it does not know, in a record or beside `keys`, are
written back as they were (before, the next `aigrid keys create` deleted them). A change of the file a
reader of the previous format would misread (a field whose loss changes what a key may do) takes a new FORMAT.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from aigrid.errors import ConfigError
from aigrid.security.principal import Scopes

log = logging.getLogger("aigrid.keys")
WATCH_INTERVAL_S = 1.0
"""How stale a watching ring may be: it looks at its file at most this often (one stat), when asked."""

PREFIX = "aig_"
FORMAT = 1
"""The key file's format (its `version`): this version reads and writes 1."""
UNKNOWN_DIGEST = "0" * 64
"""What an unknown key id's secret is compared with, so that its refusal costs a known id's work (no secret's
HMAC-SHA256 is all zeros, in any practical sense)."""
_RECORD_FIELDS = frozenset({"key_id", "tenant", "digest", "scopes", "created", "revoked", "revoked_at", "name"})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str
    digest: str
    scopes: Scopes = Scopes()
    created: float = 0.0
    revoked: bool = False
    name: str = ""
    revoked_at: float = 0.0
    """When it was revoked (Unix time); 0: not revoked, or revoked before the thirty-third session, which did not
    record it. Written only when known: a file without it is the same file (an older aigrid keeps it as a field it
    does not know; its loss changes nothing a key may do, so no new FORMAT)."""

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"key_id": self.key_id, "tenant": self.tenant, "digest": self.digest,
                                "scopes": self.scopes.to_dict(), "created": self.created, "revoked": self.revoked,
                                "name": self.name}
        if self.revoked_at:
            d["revoked_at"] = self.revoked_at
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> KeyRecord:
        scopes = d.get("scopes") or {}
        if not isinstance(scopes, dict):
            raise ValueError(f"key {d.get('key_id')}: scopes must be a mapping")
        created, revoked_at = d.get("created", 0.0), d.get("revoked_at", 0.0)
        return cls(key_id=str(d["key_id"]), tenant=str(d["tenant"]), digest=str(d["digest"]),
                   scopes=Scopes.from_dict(scopes),
                   created=float(created) if isinstance(created, int | float | str) else 0.0,
                   revoked=bool(d.get("revoked", False)), name=str(d.get("name", "")),
                   revoked_at=float(revoked_at) if isinstance(revoked_at, int | float) else 0.0)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: KeyRecord
    api_key: str
    """The full secret key: shown to the caller once, never stored."""


def split_key(api_key: str) -> tuple[str, str] | None:
    """`aig_<id>_<secret>` -> (id, secret), or None when it does not have that shape."""
    if not api_key.startswith(PREFIX):
        return None
    key_id, sep, secret = api_key[len(PREFIX):].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


class KeyRing:
    """Key records by id, with verification. Pure in memory; load/save move it to and from a file."""

    def __init__(self, server_secret: bytes | None, records: Iterable[KeyRecord] = ()) -> None:
        """`server_secret` None: a ring that lists and revokes its records (`aigrid keys list`, `revoke`: neither
        hashes a key) and can neither issue nor verify one (digest raises)."""
        if server_secret is not None and len(server_secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        self._secret = server_secret
        self._records = {r.key_id: r for r in records}
        self._path: Path | None = None
        self._seen: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._interval_s = WATCH_INTERVAL_S
        self._unreadable: tuple[int, int, int] | None = None
        self._kept: dict[str, object] = {}
        """What the file held that this version does not read (fields beside `keys`), written back by save."""
        self._kept_records: list[object] = []
        """The records load skipped, written back by save as they were."""
        self._kept_fields: dict[str, dict[str, object]] = {}
        """Per key id, the fields of its record this version does not know, written back by save."""

    def digest(self, secret: str) -> str:
        if self._secret is None:
            raise ValueError("this key ring was read without the server secret: it lists and revokes keys, it "
                             "cannot issue or verify one")
        return hmac.new(self._secret, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def issue(self, tenant: str, scopes: Scopes | None = None, name: str = "",
              now: float | None = None) -> IssuedKey:
        key_id = secrets.token_hex(6)
        while key_id in self._records:
            key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        created = time.time() if now is None else now
        record = KeyRecord(key_id, tenant, self.digest(secret), scopes or Scopes(), created, name=name)
        self._records[key_id] = record
        return IssuedKey(record, f"{PREFIX}{key_id}_{secret}")

    def verify(self, api_key: str) -> KeyRecord | None:
        """The record for a valid, unrevoked key, else None (constant-time digest comparison). An unknown or
        revoked key id costs the same work as a known one with a wrong secret: its secret is hashed and compared
        too (against UNKNOWN_DIGEST for an unknown id). Before, an unknown id returned before any hashing, so the
        time of a refusal told a caller which key ids exist."""
        parts = split_key(api_key)
        if parts is None:
            return None
        self._refresh()
        record = self._records.get(parts[0])
        expected = UNKNOWN_DIGEST if record is None else record.digest
        matches = hmac.compare_digest(expected, self.digest(parts[1]))
        return record if matches and record is not None and not record.revoked else None

    def get(self, key_id: str) -> KeyRecord | None:
        """The record of `key_id` (revoked or not), without a secret: for work that runs later as that key."""
        self._refresh()
        return self._records.get(key_id)

    def revoke(self, key_id: str, now: float | None = None) -> bool:
        """Revoke `key_id` (False: no such key). A key revoked already stays as it is, its `revoked_at` kept."""
        record = self._records.get(key_id)
        if record is None:
            return False
        if not record.revoked:
            self._records[key_id] = replace(record, revoked=True, revoked_at=time.time() if now is None else now)
        return True

    def records(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: (r.tenant, r.key_id))

    @classmethod
    def load(cls, path: Path, server_secret: bytes | None) -> KeyRing:
        """The ring of a key file (none there: an empty ring). ValueError, saying what is wrong, for a file
        that is not one (not JSON, another shape, a digest that is not one). `server_secret` None: a ring to list
        and revoke keys only (__init__)."""
        if not path.exists():
            return cls(server_secret)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except RecursionError as e:
            raise ValueError("nested too deep to be a key file") from e
        if isinstance(data, dict):
            _check_version(data.get("version", FORMAT))
        keys = data.get("keys", [] if not set(data) - {"version"} else None) if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise ValueError('not a key file: expected {"keys": [{"key_id": ..., "tenant": ..., "digest": ...}, ...]}')
        records = []
        skipped: list[object] = []
        fields: dict[str, dict[str, object]] = {}
        for i, d in enumerate(keys):
            try:
                if not isinstance(d, dict):
                    raise ValueError("not an object")
                r = KeyRecord.from_dict(d)
                if len(r.digest) != 64 or not all(c in "0123456789abcdef" for c in r.digest):
                    raise ValueError("its digest is not a SHA-256 hex digest")
            except (ValueError, KeyError, TypeError) as e:
                # one bad record is one key not valid, not the file refused: the others, their revocations
                # included, still count (a revocation saved beside a typo must not be lost)
                log.error("key file %s: record %d skipped (%s: %s): that key is not valid", path, i,
                          type(e).__name__, e)
                skipped.append(d)
                continue
            records.append(r)
            unknown = {k: v for k, v in d.items() if k not in _RECORD_FIELDS}
            if unknown:
                fields[r.key_id] = unknown
        ring = cls(server_secret, records)
        ring._kept = {k: v for k, v in data.items() if k not in ("keys", "version")}
        ring._kept_records, ring._kept_fields = skipped, fields
        return ring

    @classmethod
    def watching(cls, path: Path, server_secret: bytes, interval_s: float | None = None) -> KeyRing:
        """The ring of `path`, kept in step with it: when the file changes (`aigrid keys create` or `revoke`
        replace it atomically; a Kubernetes Secret's mount swaps it), the next lookup after `interval_s`
        reads it again. A file that cannot be read keeps the keys as they were (logged); a file that is gone
        leaves no key valid, as at start."""
        seen = _signature(path)  # before reading: a change in between is read again at the first look
        try:
            ring = cls.load(path, server_secret)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"security.keys_file: {path}: {e}") from e
        ring._path, ring._interval_s = path, WATCH_INTERVAL_S if interval_s is None else interval_s
        ring._seen = seen
        ring._checked = time.monotonic()
        return ring

    def _refresh(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < self._interval_s:
            return
        self._checked = now
        seen = _signature(self._path)  # before reading: a change made while it is read is seen next time
        if seen == self._seen:
            return
        try:
            fresh = KeyRing.load(self._path, self._secret)
        except Exception as e:  # noqa: BLE001 - whatever the file holds, a request is not its victim
            if seen != self._unreadable:  # once per change of the file, not once a second
                self._unreadable = seen
                log.error("key file %s changed but cannot be read (%s): the keys stay as they were", self._path, e)
            return  # not marked seen: read again at the next look
        before = self._records
        self._records, self._seen = fresh._records, seen
        added = fresh._records.keys() - before.keys()
        revoked = [k for k, r in fresh._records.items() if r.revoked and k in before and not before[k].revoked]
        removed = before.keys() - fresh._records.keys()
        log.warning("key file %s reloaded: %d keys (%d added, %d revoked, %d removed)", self._path,
                    len(fresh._records), len(added), len(revoked), len(removed))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        keys: list[object] = [{**r.to_dict(), **self._kept_fields.get(r.key_id, {})} for r in self.records()]
        payload = json.dumps({**self._kept, "version": FORMAT, "keys": keys + self._kept_records}, indent=2)
        # a fresh file, never one found there: a temporary file a run that died left (its mode kept, 0644) or a
        # symlink (the digests written through it, then the link made the key file) is removed first
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(payload)
        os.replace(tmp, path)


def _check_version(version: object) -> None:
    if version == FORMAT and isinstance(version, int) and not isinstance(version, bool):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
        raise ValueError(f"written by a newer aigrid (key file format {version}; this version reads format "
                         f"{FORMAT}): run that aigrid or a later one (this one leaves the file as it is)")
    raise ValueError(f"not a key file: its version {version!r} is not a format aigrid writes (1 or later)")


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does (an atomic replace gives a new inode), without reading it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
