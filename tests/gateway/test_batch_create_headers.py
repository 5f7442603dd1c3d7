"""A batch's and a message batch's create check the headers its lines will be sent with (batch_line.KEPT_HEADERS:
x-aigrid-residency, x-aigrid-policy, x-aigrid-hedge, x-aigrid-client-location) as every model request's are checked
(batch_line.kept_headers: Routes.asked, Guard.authorize_scopes), answering the door's own 4xx naming the header.

Until the thirty-fourth session they were kept unread: a message batch of an EU-scoped key with
`x-aigrid-residency: US` was accepted (200) and each of its requests failed later (issue 12, ATK2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from aigrid.gateway.app import Gateway, build_app
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.batch_helpers import CHAT, jsonl, keyed_batches, line
from tests.gateway.message_batch_helpers import req
from tests.gateway.sdk_clients import anthropic_client, openai_client

SECRET = "batch-create-headers-secret-0123456789"
FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}
BAD = [  # (header, value, status, param)
    ("x-aigrid-residency", "US", 403, "x-aigrid-residency"),  # outside the EU key's jurisdictions
    ("x-aigrid-residency", "MARS", 400, "x-aigrid-residency"),  # no site of the grid is there
    ("x-aigrid-policy", "no-such-policy", 400, "x-aigrid-policy"),
    ("x-aigrid-hedge", "maybe", 400, "x-aigrid-hedge"),
    ("x-aigrid-client-location", "Atlantis", 400, "x-aigrid-client-location"),
]


@pytest.fixture
async def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, str]]:
    """Keys enforced; a key of tenant default narrowed to the EU."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    eu = ring.issue("default", Scopes(jurisdictions=frozenset({"EU"})))
    ring.save(tmp_path / "keys.json")
    async with keyed_batches(tmp_path) as (gw, _):
        yield gw, eu.api_key


@pytest.mark.parametrize(("header", "value", "status", "param"), BAD)
async def test_a_message_batch_with_a_header_its_requests_could_not_be_sent_with_is_refused(
        keyed: Any, header: str, value: str, status: int, param: str) -> None:
    gw, key = keyed
    client = anthropic_client(build_app(gw)).with_options(api_key=key, default_headers={**FRANKFURT, header: value})
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.batches.create(requests=[req("a", "EU secret")])
    body = caught.value.body
    assert caught.value.status_code == status, body
    assert isinstance(body, dict) and body["type"] == "error", body  # Anthropic's envelope
    assert header in body["error"]["message"], body
    fine = anthropic_client(build_app(gw)).with_options(api_key=key, default_headers=FRANKFURT)
    assert (await fine.messages.batches.list()).data == []  # nothing was made


@pytest.mark.parametrize(("header", "value", "status", "param"), BAD)
async def test_a_batch_with_a_header_its_lines_could_not_be_sent_with_is_refused(
        keyed: Any, header: str, value: str, status: int, param: str) -> None:
    gw, key = keyed
    client = openai_client(build_app(gw)).with_options(api_key=key, default_headers=FRANKFURT)
    f = await client.files.create(file=("eu.jsonl", jsonl(line("a", "EU secret"))), purpose="batch")
    with pytest.raises(openai.APIStatusError) as caught:
        await client.with_options(default_headers={**FRANKFURT, header: value}).batches.create(
            input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    body = caught.value.body
    assert caught.value.status_code == status, body
    assert isinstance(body, dict) and body["param"] == param, body
    assert (await client.batches.list()).data == []  # nothing was made


async def test_a_batch_with_headers_its_key_may_send_is_made(keyed: Any) -> None:
    gw, key = keyed
    asked = {**FRANKFURT, "x-aigrid-residency": "EU", "x-aigrid-hedge": "off"}
    client = openai_client(build_app(gw)).with_options(api_key=key, default_headers=asked)
    f = await client.files.create(file=("eu.jsonl", jsonl(line("a", "EU secret"))), purpose="batch")
    made = await client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
    assert made.status in ("validating", "in_progress", "finalizing", "completed"), made
    anth = anthropic_client(build_app(gw)).with_options(api_key=key, default_headers=asked)
    assert (await anth.messages.batches.create(requests=[req("a", "EU secret")])).id
