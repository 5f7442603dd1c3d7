"""An audit record is bounded whatever a client put in a value its error message echoes (guard.Guard._record)."""

from __future__ import annotations

from pathlib import Path

from aigrid.gateway.envelope import SHOWN_CHARS
from aigrid.gateway.guard import AUDIT_MESSAGE_MAX_CHARS
from tests.gateway.conftest import FakeEngine, audit_rows, serving, spec_in

BIG = "x" * 2_000_000
HI = [{"role": "user", "content": "hi"}]


async def test_an_error_message_echoing_a_clients_value_is_cut_in_its_audit_record(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """An `include` value /v1/responses does not know (check_include, twenty-first session) and a chat `tool_choice`
    are echoed whole in their 400's message, and the audit record kept that message whole: 2 MB of a value, 2 MB of
    audit record each time (the class of the embeddings model bounded at 256 characters the same session). The
    client's 400 says it cut since envelope.bounded_message (the value's first SHOWN_CHARS); the record keeps the
    whole message's head and says how long it was."""
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        said = []
        for path, body in [("/v1/responses", {"model": "smollm2-135m", "input": "hi", "include": [BIG]}),
                           ("/v1/chat/completions", {"model": "smollm2-135m", "messages": HI, "tool_choice": BIG})]:
            r = await client.post(path, json=body)
            shown = r.json()["error"]["message"]
            assert r.status_code == 400 and BIG[:SHOWN_CHARS] + "...'" in shown and BIG not in shown, r.text[:300]
            said.append(shown)
        rows = await audit_rows(gw)
    assert len(rows) == 2
    for row, shown in zip(rows, said, strict=True):
        message = row["extra"]["message"]
        head = shown[:shown.index(BIG[:SHOWN_CHARS]) + SHOWN_CHARS]  # what the client's and the record's share
        full = len(shown) - len(BIG[:SHOWN_CHARS] + "...") + len(BIG)  # the message's length before it was cut
        assert row["extra"]["status"] == 400 and message.startswith(head[:AUDIT_MESSAGE_MAX_CHARS])
        assert message.endswith(f"...({full} chars)")
        assert len(message) <= AUDIT_MESSAGE_MAX_CHARS + 32 , len(message)
        assert len(str(row)) < 3 * AUDIT_MESSAGE_MAX_CHARS  # was 2,000,500
