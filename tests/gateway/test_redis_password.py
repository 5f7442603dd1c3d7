"""`gateway.redis_password_env`: every Redis of a gateway (the shared state, the abuse relay over it, the quota
counters, the shared stores) authenticated with the password in the environment variable the spec names, against
a REAL redis-server started with --requirepass (tests/security/redis_server.py); a wrong password is a clear
error, a named variable that is not set stops the gateway, and the password is never in a log line, an error or
/v1/grid."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import ValidationError
from redis.exceptions import AuthenticationError

from aigrid.errors import ConfigError, SharedStateUnavailable
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.redis_client import connect
from aigrid.security.principal import Principal, Scopes
from aigrid.security.quotas import QuotaLimits, QuotaRules, Quotas
from aigrid.security.quotas_redis import RedisQuotaBackend
from aigrid.spec.models import GridSpec
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.security.redis_server import redis_server

PASSWORD = "s3cret-Redis-pw-7f1c"
WRONG = "not-the-password-9d2e"
ENV = "AIGRID_TEST_REDIS_PASSWORD"
IN_EU = {"x-aigrid-client-location": "Tokyo", "x-aigrid-residency": "EU"}


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis", password=PASSWORD) as p:
        yield p


def grid(tmp: Path, port: int, password_env: str | None = ENV) -> GridSpec:
    """The demo grid with every Redis the gateway has on one redis-server: shared state (and the abuse relay),
    quota counters, and the EU and unbound stores. Validated, as a spec file is."""
    tmp.mkdir(parents=True, exist_ok=True)
    url = f"redis://127.0.0.1:{port}/0"
    raw = spec_in(tmp).model_dump(mode="json", exclude_unset=True)
    raw["gateway"].update(shared_state_url=url, stores={"EU": url, "unbound": url})
    if password_env is not None:
        raw["gateway"]["redis_password_env"] = password_env
    raw["security"].update(quotas_redis_url=url, abuse={"action": "flag"})
    return GridSpec.model_validate(raw)


def build(spec: GridSpec) -> Gateway:
    return build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(1),
                         sleep=_no_sleep)


async def close(gw: Gateway) -> None:
    assert gw.sync is not None and gw.stores is not None
    await gw.sync.stop()
    await gw.stores.aclose()
    await gw.guard.stop()
    await gw.guard.quotas.backend._redis.aclose()  # type: ignore[attr-defined]


async def test_with_the_password_in_the_named_variable_every_redis_of_the_gateway_works(
        tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    direct = redis.Redis(port=port, password=PASSWORD)
    with caplog.at_level(logging.DEBUG):
        gw = build(grid(tmp_path, port))
        try:
            await gw.scraper.scrape_once()
            assert gw.sync is not None and await gw.sync.sync_once()  # shared state
            assert direct.zscore("aigrid:demo:gateways", gw.sync._id) is not None
            relay = gw.guard._abuse_relay  # the abuse relay, over the shared state's Redis
            assert relay is not None and await relay.relay([]) == []
            backend = gw.guard.quotas.backend  # the quota counters
            assert isinstance(backend, RedisQuotaBackend)
            quotas = Quotas(QuotaRules(default_key=QuotaLimits(requests_per_min=5)), backend, clock=lambda: 60.0,
                            prefix="pw")
            await quotas.admit(Principal("acme", "k-1", Scopes()), 1)
            assert int(direct.get("pw:{acme}:key:k-1:rpm:1") or 0) == 1
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)),
                                         base_url="http://gw") as c:  # the EU store
                r = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "hi"}, headers=IN_EU)
                assert r.status_code == 200, r.text
                assert direct.exists(f"aigrid:demo:resp:EU:{{default}}:{r.json()['id']}")
                shown = await c.get("/v1/grid")
                assert shown.status_code == 200 and PASSWORD not in shown.text
        finally:
            await close(gw)
            direct.close()
    assert PASSWORD not in caplog.text


async def test_a_wrong_password_is_a_clear_error_that_does_not_show_it(
        tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(ENV, WRONG)
    with caplog.at_level(logging.DEBUG):
        gw = build(grid(tmp_path, port))
        try:
            assert gw.sync is not None and not await gw.sync.sync_once()  # logged: shared state unreachable
            relay = gw.guard._abuse_relay
            assert relay is not None
            with pytest.raises(SharedStateUnavailable) as shared:
                await relay.relay([])
            assert "invalid username-password pair" in str(shared.value)
            with pytest.raises(AuthenticationError) as quota:
                await gw.guard.quotas.backend.value("x")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)),
                                         base_url="http://gw") as c:
                r = await c.post("/v1/responses", json={"model": "smollm2-135m", "input": "hi",
                                                        "conversation": "conv_nope"}, headers=IN_EU)
                assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        finally:
            await close(gw)
    assert "invalid username-password pair" in caplog.text
    for text in (caplog.text, str(shared.value), str(quota.value), r.text):
        assert WRONG not in text and PASSWORD not in text


async def test_without_the_field_a_redis_that_wants_a_password_refuses_as_before(port: int) -> None:
    client = connect(f"redis://127.0.0.1:{port}/0", None)
    try:
        with pytest.raises(AuthenticationError, match="authenticated|Authentication required"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_password_in_the_url_still_works_and_comes_first(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, WRONG)
    client = connect(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", ENV)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


def test_a_named_variable_that_is_not_set_stops_the_gateway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match=f"gateway.redis_password_env: the environment variable {ENV} "):
        build(grid(tmp_path, 6379))  # before any connection is tried
    monkeypatch.setenv(ENV, "")
    with pytest.raises(ConfigError, match="not set or is empty"):
        build(grid(tmp_path, 6379))


def test_the_field_names_a_variable_not_a_password() -> None:
    with pytest.raises(ValidationError, match="redis_password_env"):
        GridSpec.model_validate({**_minimal(), "gateway": {"redis_password_env": "hunter2 with spaces!"}})


def _minimal() -> dict[str, object]:
    raw = spec_in(Path("/nonexistent")).model_dump(mode="json", exclude_unset=True)
    raw.pop("gateway", None)
    return raw

