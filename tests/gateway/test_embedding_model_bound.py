"""/v1/embeddings bounds its model's name as the model routes do (256 characters): it read any string, or any JSON
value as its str(), and the access line, the audit record (model, and the 404's message in extra) and the 404
held it whole: a 3 MB model name was 6 MB of audit record a request, kept for good, no token charged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.gateway.conftest import audit_rows, serving, spec_in
from tests.gateway.fake_engine import FakeEngine


@pytest.mark.parametrize("model", ["m" * 3_000_000, {"name": "x" * 1_000_000}, ["x"] * 100_000])
async def test_a_model_name_past_256_characters_is_a_400_naming_model(
        fakes: dict[str, FakeEngine], tmp_path: Path, model: Any) -> None:
    async with serving(spec_in(tmp_path), fakes) as (client, gw):
        r = await client.post("/v1/embeddings", json={"model": model, "input": "hi"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text[:300]
        assert len(r.content) < 1000
        (row,) = await audit_rows(gw)
        assert len(orjson.dumps(row)) < 4000 and row["outcome"] == "error:invalid_request"


async def test_a_model_of_256_characters_is_still_read(fakes: dict[str, FakeEngine], tmp_path: Path) -> None:
    async with serving(spec_in(tmp_path), fakes) as (client, _):
        r = await client.post("/v1/embeddings", json={"model": "m" * 256, "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
