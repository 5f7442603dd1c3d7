"""Reading the audit log as an auditor or a FinOps engineer does: the records a question selects (`aigrid
audit query`) and what they add up to (`aigrid audit summary`: requests, tokens, blocks, errors and cost per
tenant, key, model, site, jurisdiction, outcome, day or hour).

The log is read as stored, read-only, one record at a time (about 4 s per 100,000 records, in constant memory). Each
record's body is the canonical JSON the chain hashes (record.py); a body that cannot be read as a record is
counted and skipped, never a traceback (`aigrid audit verify` names it). Times are the records' own (`ts` in
the hashed body, UTC). Cost is computed from the endpoints' prices in a grid spec given by the caller (the
records keep tokens and the endpoint that served, not prices), so it is the spend at those prices.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import orjson

from aigrid.audit.record import is_error
from aigrid.audit.store import check_format
from aigrid.audit.verify import NotAnAuditLog, check_path

GROUPS = ("tenant", "key", "model", "site", "endpoint", "jurisdiction", "outcome", "route", "loop_stop", "day", "hour")
"""What `summary --by` can group on."""
FIREWALL_ACTIONS = ("blocked", "flagged", "redacted", "any")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_when(text: str, now: datetime | None = None) -> float:
    """A time as given on the command line -> epoch seconds: ISO 8601 (`2026-12-01`, `2026-12-01T09:30`,
    with or without an offset; without one it is UTC) or a span back from now (`90m`, `24h`, `7d`).
    Raises ValueError saying what is accepted."""
    text = text.strip()
    if (m := _RELATIVE.match(text)) is not None:
        now = now or datetime.now(UTC)
        try:
            return (now - timedelta(seconds=float(m[1]) * _UNIT_S[m[2]])).timestamp()
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give ISO 8601 (2026-12-01, 2026-12-01T09:30, "
                         "2026-12-01T09:30+01:00; UTC without an offset) or a span back from now (90m, 24h, 7d)"
                         ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Selection:
    """Which records a question asks for. Empty sets select everything; outcomes are shell patterns
    (`error:*`)."""

    since: float | None = None
    until: float | None = None
    tenants: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    jurisdictions: frozenset[str] = frozenset()
    outcomes: tuple[str, ...] = ()
    request_id: str | None = None
    firewall: str | None = None
    """blocked / flagged / redacted: at least one verdict did that; any: at least one verdict."""

    def __post_init__(self) -> None:
        if self.firewall is not None and self.firewall not in FIREWALL_ACTIONS:
            raise ValueError(f"firewall must be one of {', '.join(FIREWALL_ACTIONS)}, not {self.firewall!r}")

    def matches(self, rec: Record) -> bool:
        if self.since is not None and not rec.ts >= self.since:
            return False
        if self.until is not None and not rec.ts < self.until:
            return False
        if self.request_id is not None and rec.request_id != self.request_id:
            return False
        for wanted, value in ((self.tenants, rec.tenant), (self.keys, rec.key_id), (self.models, rec.model),
                              (self.sites, rec.site), (self.jurisdictions, rec.jurisdiction)):
            if wanted and value not in wanted:
                return False
        if self.outcomes and not any(fnmatchcase(rec.outcome, pattern) for pattern in self.outcomes):
            return False
        if self.firewall is not None:
            actions = rec.firewall_actions
            if not actions or (self.firewall != "any" and self.firewall not in actions):
                return False
        return True


@dataclass(frozen=True)
class Record:
    """One audit record, as the questions see it; `body` is the record as stored."""

    seq: int
    body: Mapping[str, Any]

    def _str(self, name: str) -> str:
        value = self.body.get(name)
        return value if isinstance(value, str) else ""

    def _int(self, name: str) -> int:
        value = self.body.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    @property
    def ts(self) -> float:
        value = self.body.get("ts")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")

    @property
    def request_id(self) -> str:
        return self._str("request_id")

    @property
    def tenant(self) -> str:
        return self._str("tenant")

    @property
    def key_id(self) -> str:
        return self._str("key_id")

    @property
    def model(self) -> str:
        return self._str("model")

    @property
    def outcome(self) -> str:
        return self._str("outcome")

    @property
    def prompt_tokens(self) -> int:
        return self._int("prompt_tokens")

    @property
    def completion_tokens(self) -> int:
        return self._int("completion_tokens")

    @property
    def chosen(self) -> Mapping[str, Any]:
        decision = self.body.get("decision")
        chosen = decision.get("chosen") if isinstance(decision, Mapping) else None
        return chosen if isinstance(chosen, Mapping) else {}

    def _chosen(self, name: str) -> str:
        value = self.chosen.get(name)
        return value if isinstance(value, str) else ""

    @property
    def endpoint(self) -> str:
        """The endpoint that served (empty: none did, e.g. blocked before routing)."""
        return self._chosen("endpoint")

    @property
    def site(self) -> str:
        return self._chosen("site")

    @property
    def jurisdiction(self) -> str:
        return self._chosen("jurisdiction")

    @property
    def route(self) -> str:
        extra = self.body.get("extra")
        route = extra.get("route") if isinstance(extra, Mapping) else None
        return route if isinstance(route, str) else ""

    @property
    def loop_stop(self) -> str:
        """Why its tool loop ended (`extra.loop_stop`: answer, step_limit, token_budget, revoked...): a loop cut short
        is `ok` as one that answered; "" where no loop ran, and in records written before the thirty-seventh session."""
        extra = self.body.get("extra")
        stop = extra.get("loop_stop") if isinstance(extra, Mapping) else None
        return stop if isinstance(stop, str) else ""

    @property
    def cost_usd(self) -> float | None:
        """What the gateway recorded the answer cost (records written before it did: None)."""
        extra = self.body.get("extra")
        cost = extra.get("cost_usd") if isinstance(extra, Mapping) else None
        if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
            return float(cost)
        return None

    @property
    def firewall_actions(self) -> set[str]:
        verdicts = self.body.get("firewall")
        if not isinstance(verdicts, list):
            return set()
        return {str(v.get("action")) for v in verdicts if isinstance(v, Mapping) and v.get("action")}

    @property
    def time(self) -> datetime | None:
        """The record's time; None for a ts no calendar holds (NaN, beyond the year 9999: a forged record)."""
        try:
            return datetime.fromtimestamp(self.ts, UTC)
        except (OverflowError, ValueError, OSError):
            return None

    def group(self, by: str) -> str:
        """This record's value for a `summary --by` group."""
        if by in ("day", "hour"):
            when = self.time
            return "" if when is None else when.strftime("%Y-%m-%d" if by == "day" else "%Y-%m-%dT%H:00Z")
        return {"tenant": self.tenant, "key": self.key_id, "model": self.model, "site": self.site,
                "endpoint": self.endpoint, "jurisdiction": self.jurisdiction, "outcome": self.outcome,
                "route": self.route, "loop_stop": self.loop_stop}[by]


@dataclass
class Reading:
    """What a pass over the log found besides the records: bodies that could not be read as records."""

    read: int = 0
    unreadable: list[int] = field(default_factory=list)


def records(db_path: Path, selection: Selection, reading: Reading | None = None,
            through: int | None = None) -> Iterator[Record]:
    """The selected records in log order, up to seq `through` when given (the records a verification covered:
    a live log grows while it is read). Raises FileNotFoundError, NotAnAuditLog, or sqlite3.Error when the
    file cannot be read as a database; a body that is not a JSON object is skipped and its seq kept in
    `reading.unreadable`."""
    check_path(db_path)
    reading = reading if reading is not None else Reading()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.text_factory = bytes
    try:
        check_format(db)
        tables = {bytes(name).decode(errors="replace")
                  for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "audit_records" not in tables:
            raise NotAnAuditLog(f"{db_path} is not an audit database (it has no audit_records table)")
        rows = db.execute("SELECT seq, body FROM audit_records ORDER BY seq") if through is None else \
            db.execute("SELECT seq, body FROM audit_records WHERE seq <= ? ORDER BY seq", (through,))
        for seq, body in rows:
            reading.read += 1
            try:
                parsed = orjson.loads(body)
            except (orjson.JSONDecodeError, TypeError):
                parsed = None
            if not isinstance(parsed, dict) or not isinstance(seq, int):
                reading.unreadable.append(seq if isinstance(seq, int) else -1)
                continue
            record = Record(seq, parsed)
            if selection.matches(record):
                yield record
    finally:
        db.close()


@dataclass(frozen=True)
class Prices:
    """USD per million tokens (in, out) by endpoint id, from a grid spec."""

    per_endpoint: Mapping[str, tuple[float, float]]

    def cost(self, rec: Record) -> float | None:
        """The record's cost as charged (`extra.cost_usd`, written by the gateway at the prices of the day), else
        at these prices; 0 when no endpoint served; None for an endpoint they lack."""
        if (charged := rec.cost_usd) is not None:
            return charged
        if not rec.endpoint:
            return 0.0
        price = self.per_endpoint.get(rec.endpoint)
        if price is None:
            return None
        return (rec.prompt_tokens * price[0] + rec.completion_tokens * price[1]) / 1e6


@dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    blocked: int = 0
    """Records with a firewall verdict that blocked."""
    errors: int = 0
    """Records whose outcome is neither ok nor steered (errors, refusals, clients that left, cancels; a Responses
    target cut by the client's own steer ended as asked)."""
    cost_usd: float = 0.0
    unpriced: int = 0
    """Records without a recorded cost, served by an endpoint the prices lack (not in cost_usd)."""
    charged: int = 0
    """Records whose cost the gateway recorded (`extra.cost_usd`)."""
    notes: int = 0
    """The writer's own records (route `audit`, outcome `audit:...`: a log opened over unsigned records, a
    worker's lost requests), counted here only, never as requests."""

    def add(self, rec: Record, prices: Prices | None) -> None:
        self.requests += 1
        self.prompt_tokens += rec.prompt_tokens
        self.completion_tokens += rec.completion_tokens
        self.blocked += "blocked" in rec.firewall_actions
        self.errors += is_error(rec.outcome)
        self.charged += rec.cost_usd is not None
        if prices is not None:
            cost = prices.cost(rec)
            if cost is None:
                self.unpriced += 1
            else:
                self.cost_usd += cost


def is_note(rec: Record) -> bool:
    """A record the audit writer wrote of its own (AuditLog's note on opening, Hub.worker_lost), not a request."""
    return rec.route == "audit" and rec.outcome.startswith("audit:")


def summarise(found: Iterator[Record], by: Sequence[str],
              prices: Prices | None = None) -> tuple[dict[tuple[str, ...], Totals], Totals]:
    """Totals per group (the values of `by`, in that order) and over everything; the writer's own records
    (is_note) counted in the total's `notes` only."""
    unknown = [b for b in by if b not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)} (one of {', '.join(GROUPS)})")
    groups: dict[tuple[str, ...], Totals] = {}
    total = Totals()
    for rec in found:
        if is_note(rec):
            total.notes += 1
            continue
        key = tuple(rec.group(b) for b in by)
        (groups.get(key) or groups.setdefault(key, Totals())).add(rec, prices)
        total.add(rec, prices)
    return groups, total


FLAT_COLUMNS = ("seq", "time", "request_id", "tenant", "key_id", "model", "route", "outcome", "loop_stop", "endpoint",
                "site", "jurisdiction", "prompt_tokens", "completion_tokens", "firewall")


def flat(rec: Record) -> dict[str, object]:
    """One record as a row of FLAT_COLUMNS (the table and CSV of `query`)."""
    when = rec.time
    return {"seq": rec.seq, "time": "" if when is None else when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
            "request_id": rec.request_id, "tenant": rec.tenant, "key_id": rec.key_id, "model": rec.model,
            "route": rec.route, "outcome": rec.outcome, "loop_stop": rec.loop_stop, "endpoint": rec.endpoint, "site": rec.site,
            "jurisdiction": rec.jurisdiction, "prompt_tokens": rec.prompt_tokens,
            "completion_tokens": rec.completion_tokens, "firewall": ",".join(sorted(rec.firewall_actions))}
