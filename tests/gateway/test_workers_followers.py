"""With `--workers N` every worker's readers of background event logs (GET /v1/responses/{id}?stream=true, counted
in no quota, each polling the one hub 20 times a second) land on one store: the per-tenant bound
(responses_api.MAX_FOLLOWERS_PER_TENANT) was per worker, so one tenant spreading its readers over N workers held N
times it (2,000 readers with two workers, 40,000 hub calls a second). Each worker now serves its share."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from aigrid.gateway import responses_api
from aigrid.gateway.app import build_gateway
from aigrid.gateway.hub_client import HubClient
from aigrid.gateway.wiring import upstream
from aigrid.gateway.workers import _worker_gateway, worker_spec
from tests.gateway.conftest import spec_in
from tests.gateway.test_responses_background_stream import _engines, _gateway, served


async def test_a_worker_serves_its_share_of_a_tenants_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway of 4 readers per tenant run as two workers: each serves 2 of the tenant's readers, the third a 429
    naming the share, so the two together serve the 4, not 8."""
    monkeypatch.setattr(responses_api, "MAX_FOLLOWERS_PER_TENANT", 4)
    gw = await _gateway(tmp_path, _engines(tmp_path, delay_s=0.5))  # 40 words: a run of 20 s
    gw.workers = 2
    async with served(gw) as oai:
        created = await oai.responses.create(model="smollm2-135m", input="Count", background=True, stream=True)
        rid = (await created.__anext__()).response.id
        opened: list[object] = [created]
        try:
            while True:  # readers until one is refused
                try:
                    opened.append(await oai.responses.retrieve(rid, stream=True))
                except openai.RateLimitError as e:
                    refused = e.response
                    break
                assert len(opened) <= 5, "more readers than the whole gateway's bound on one worker"
            assert len(opened) - 1 == 2 and refused.headers["retry-after"] == "1", len(opened) - 1
            message = refused.json()["error"]["message"]
            assert "2 streams" in message and "share of the gateway's 4 over 2 workers" in message, message
        finally:
            for stream in opened:
                await stream.close()  # type: ignore[attr-defined]


async def test_one_process_alone_serves_the_whole_bound_and_a_share_is_never_zero(tmp_path: Path) -> None:
    gw = build_gateway(spec_in(tmp_path), _engines(tmp_path))  # built, not started: nothing is called
    most = responses_api.MAX_FOLLOWERS_PER_TENANT
    assert gw.workers == 1 and gw.share(most) == most
    gw.workers = 3
    assert gw.share(most) == most // 3
    gw.workers = 10 * most
    assert gw.share(most) == 1


async def test_a_worker_knows_how_many_workers_share_its_hub(tmp_path: Path) -> None:
    """worker.json names the count (workers.run_workers); the worker's gateway takes it."""
    spec = spec_in(tmp_path)
    up = upstream(spec)
    try:
        urls = {e.id: "http://127.0.0.1:9" for e in spec.endpoints}  # nothing is called: the gateway is only built
        config = {"spec": worker_spec(spec), "urls": urls, "embedded_key": None, "workers": 3}
        gateway = _worker_gateway(spec, config, 0, HubClient(tmp_path / "hub.sock"), up)
        assert gateway.workers == 3
    finally:
        await up.aclose()
