"""`aigrid audit query --firewall blocked|flagged|redacted|any` on a log written by the real audit writer, with
records of each kind of verdict (the firewall's own Verdict.to_dict, as the guard writes them): each filter returns
exactly the records that hold a verdict that did that (any: at least one verdict), none without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.audit.record import AuditRecord
from aigrid.cli import app
from aigrid.security.firewall.pipeline import Verdict
from tests.audit.test_query import elsewhere, write_log  # noqa: F401 (elsewhere: an autouse fixture)

T0 = 1_796_000_000.0

BLOCKED = Verdict("injection", "blocked", "prompt injection suspected", 0.99, "messages[0].content", "user")
FLAGGED = Verdict("injection", "flagged", "prompt injection suspected", 0.7, "messages[1].content", "tool_result")
REDACTED = Verdict("pii_output", "redacted", "email address", None, "answer", "model")

KINDS: list[tuple[str, list[Verdict]]] = [  # request id, its verdicts
    ("req-none", []),
    ("req-blocked", [BLOCKED]),
    ("req-flagged", [FLAGGED]),
    ("req-redacted", [REDACTED]),
    ("req-flagged-redacted", [FLAGGED, REDACTED]),
    ("req-flagged-blocked", [FLAGGED, BLOCKED]),
    ("req-none-again", []),
]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    blocked = [any(v.action == "blocked" for v in verdicts) for _, verdicts in KINDS]
    return write_log(tmp_path / "audit.db", [AuditRecord(
        ts=T0 + i, request_id=request_id, tenant="bank", key_id="key-bank", model="smollm2-135m",
        decision={"chosen": None}, outcome="error:prompt_blocked" if blocked[i] else "ok",
        firewall=[v.to_dict() for v in verdicts], extra={"route": "/v1/chat/completions"})
        for i, (request_id, verdicts) in enumerate(KINDS)], checkpoint_every=3)


@pytest.mark.parametrize(("action", "request_ids"), [
    ("blocked", ["req-blocked", "req-flagged-blocked"]),
    ("flagged", ["req-flagged", "req-flagged-redacted", "req-flagged-blocked"]),
    ("redacted", ["req-redacted", "req-flagged-redacted"]),
    ("any", ["req-blocked", "req-flagged", "req-redacted", "req-flagged-redacted", "req-flagged-blocked"]),
])
def test_each_firewall_filter_returns_exactly_its_records(log: Path, action: str, request_ids: list[str]) -> None:
    result = CliRunner().invoke(app, ["audit", "query", str(log), "--format", "jsonl", "--firewall", action])
    assert result.exit_code == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["request_id"] for r in found] == request_ids
    assert [[v["action"] for v in r["firewall"]] for r in found] == [  # each record whole, as written
        [v.action for v in dict(KINDS)[request_id]] for request_id in request_ids]


def test_without_the_filter_every_record_is_returned(log: Path) -> None:
    """The log holds every kind (the filters above select from all seven, not from what happened to be written)."""
    result = CliRunner().invoke(app, ["audit", "query", str(log), "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["request_id"] for r in found] == [request_id for request_id, _ in KINDS]
    assert [r["firewall"] for r in found] == [[v.to_dict() for v in verdicts] for _, verdicts in KINDS]
