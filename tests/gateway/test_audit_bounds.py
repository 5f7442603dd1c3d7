"""An audit record is bounded whatever a client put in a value its error message echoes (guard.Guard._record): it
keeps the message the client was told (envelope.bounded_message), no more."""

from __future__ import annotations

from pathlib import Path

from aigrid.gateway.envelope import ERROR_MESSAGE_CHARS, SHOWN_CHARS
from tests.gateway.conftest import FakeEngine, audit_rows, serving, spec_in

BIG = "x" * 2_000_000
HI = [{"role": "user", "content": "hi"}]


async def test_an_error_message_echoing_a_clients_value_is_cut_in_its_audit_record(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """An `include` value /v1/responses does not know (check_include, twenty-first session) and a chat `tool_choice`
    are echoed whole in their 400's message, and the audit record kept that message whole: 2 MB of a value, 2 MB of
    audit record each time (the class of the embeddings model bounded at 256 characters the same session). The
    client's 400 says it cut since envelope.bounded_message (the value's first SHOWN_CHARS); the record keeps that
    message, the one the client was told (until the twenty-ninth session the whole message's first 4,096 characters,
    saying how long it was)."""
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
        assert row["extra"]["status"] == 400 and row["extra"]["message"] == shown
        assert len(str(row)) < 2 * ERROR_MESSAGE_CHARS  # was 2,000,500


async def test_a_schemas_400_is_audited_as_the_client_was_told_it(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """A value the schema refuses (`temperature` of 100,000 x's): the client's 400 quotes its first SHOWN_CHARS, but
    from 4874100d (from_validation no longer cutting: the cut is made where the error is rendered) the audit record
    cut the raw message apart, at 4,096 characters, keeping 4,096 of the client's x's (before it: 272 characters).
    The record keeps the message the client was told."""
    value = "x" * 100_000
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/chat/completions", json={"model": "smollm2-135m", "messages": HI,
                                                            "temperature": value})
        rows = await audit_rows(gw)
    shown = r.json()["error"]["message"]
    assert r.status_code == 400 and "x" * SHOWN_CHARS + "...'" in shown and "x" * (SHOWN_CHARS + 1) not in shown
    assert len(rows) == 1 and rows[0]["extra"]["status"] == 400
    assert rows[0]["extra"]["message"] == shown, len(rows[0]["extra"]["message"])
