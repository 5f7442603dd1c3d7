"""An upload's x-aigrid-residency keeps the file where it asks, as a conversation's or a batch's does.

Until the thirty-fourth session `POST /v1/files` read no residency header: a file uploaded with
`x-aigrid-residency: EU` was made as its key's (every jurisdiction), so a batch another key of the tenant created on
it, asked from Tokyo, had its lines (the prompts the uploader asked to keep in the EU) served at nrt (JP). Now the
file is made under the jurisdictions the header names (within its key's: else 403, and one no site of the grid is
in: 400, as on every other door), and a batch on it is routed there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.residency_grid import reached, residency_grid

SECRET = "upload-residency-secret-0123456789"
SECRET_TEXT = "EU-only secret 1234"
LINE = orjson.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {
    "model": "smollm2-135m", "messages": [{"role": "user", "content": SECRET_TEXT}]}}) + b"\n"
TOKYO = {"x-aigrid-client-location": "Tokyo"}


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[
        tuple[httpx.AsyncClient, dict[str, dict[str, str]], dict[str, FakeEngine]]]:
    """Keys enforced; tenant default's keys: two for every jurisdiction, one narrowed to the US."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = {"maker": ring.issue("default").api_key, "other": ring.issue("default").api_key,
            "us": ring.issue("default", Scopes(jurisdictions=frozenset({"US"}))).api_key}
    ring.save(tmp_path / "keys.json")
    async with residency_grid(spec_in(tmp_path, enforce=True), keys) as grid:
        yield grid


def _upload(c: httpx.AsyncClient, headers: dict[str, str]) -> Any:
    return c.post("/v1/files", headers=headers, files={"file": ("r.jsonl", LINE, "application/jsonl")},
                  data={"purpose": "batch"})


async def _kept_in_the_eu(c: httpx.AsyncClient, keys: dict[str, dict[str, str]], engines: dict[str, FakeEngine],
                          file_id: str) -> None:
    """A batch another key of the tenant creates on the file, asked from Tokyo, is served at fra (EU) only, and a
    key that may not use the EU does not see the file."""
    made = await c.post("/v1/batches", headers={**keys["other"], **TOKYO}, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert made.status_code == 200, made.text
    for _ in range(3000):  # polled up to 30 s: a loaded machine is late, not wrong
        batch = (await c.get(f"/v1/batches/{made.json()['id']}", headers=keys["other"])).json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            break
        await asyncio.sleep(0.01)
    assert batch["status"] == "completed", batch
    assert reached(engines, SECRET_TEXT) == {"fra-smollm2"}
    assert (await c.get(f"/v1/files/{file_id}", headers=keys["us"])).status_code == 404


async def test_a_file_uploaded_to_stay_in_the_eu_has_its_batch_served_there(grid: Any) -> None:
    c, keys, engines = grid
    up = await _upload(c, {**keys["maker"], "x-aigrid-residency": "EU"})
    assert up.status_code == 200, up.text
    await _kept_in_the_eu(c, keys, engines, up.json()["id"])


async def test_an_uploads_residency_is_checked_as_every_doors(grid: Any) -> None:
    """By the one check of the header (Guard.residency_within): the chat door's answer, word for word but what the
    403 says is refused, keeping files rather than sending requests (until brief RES of the thirty-fourth session the
    upload's 403 was its own, `key k may not keep files in EU`; until the thirty-fifth, FIX6, the chat door's
    "may not send requests to EU")."""
    c, keys, _ = grid
    chat = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for who, asked, status, code in (("maker", "Mars", 400, "invalid_request"),
                                     ("us", "EU", 403, "jurisdiction_not_allowed")):
        r = await _upload(c, {**keys[who], "x-aigrid-residency": asked})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == (code, "x-aigrid-residency"), err
        served = await c.post("/v1/chat/completions", headers={**keys[who], "x-aigrid-residency": asked}, json=chat)
        if status == 403:
            assert "may not keep files in EU; it may use" in err["message"], err
            err = {**err, "message": err["message"].replace("keep files in", "send requests to")}
        assert (served.status_code, served.json()["error"]) == (status, err), served.text
    assert (await c.get("/v1/files", headers=keys["maker"])).json()["data"] == []  # nothing kept


async def test_an_uploads_residency_is_read_as_the_model_doors_read_it(grid: Any) -> None:
    """Review RV2 of 18f16219: the upload refused a list naming one jurisdiction no site is in beside one that is
    (`eu, Mars`: 400), which the chat and batch doors serve within the sites there are, and took a header naming
    none (`,`: 200, a file kept nowhere), which they refuse (400 naming the header)."""
    c, keys, engines = grid
    chat = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for asked, status in (("eu, Mars", 200), (",", 400)):
        served = await c.post("/v1/chat/completions", headers={**keys["maker"], "x-aigrid-residency": asked}, json=chat)
        assert served.status_code == status, served.text
        up = await _upload(c, {**keys["maker"], "x-aigrid-residency": asked})
        assert up.status_code == status, (asked, up.text)
        if status != 200:
            assert up.json()["error"]["param"] == "x-aigrid-residency", up.text
            continue
        await _kept_in_the_eu(c, keys, engines, up.json()["id"])
