"""model: auto with right-sizing, through the whole gateway pipeline, on FAKE engines (tests/gateway/
fake_engine.py: canned answers, no model): the per-prompt estimate decides the model, the response names
it, and the decision explains it."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from aigrid.explain import render_decision
from aigrid.gateway.app import build_app, build_gateway
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.right_sizer import ladder_quality
from aigrid.spec.load import load_spec
from aigrid.spec.models import AuditSpec, TenantSpec
from tests.gateway.fake_engine import FakeEngine

SPEC = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"
PROMPTS = [
    "What is the capital of France?",
    "Which of the following is a primary color?\nA. Green\nB. Red\nC. Purple\nD. Orange\nAnswer:",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\n"
    "D. 6\nAnswer:",
    "Statement 1 | Every integral domain has a field of quotients. Statement 2 | A polynomial of degree n over "
    "a ring can have at most n zeros.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:",
    "A train leaves at 3:15 pm at 62 miles per hour; a second leaves at 4:05 pm at 78 miles per hour. When "
    "does the second catch up, and how far from the station?",
    "Write a haiku about spring.",
    "Which of these is a mammal?\nA. Shark\nB. Dolphin\nC. Trout\nD. Octopus\nAnswer:",
]


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def setup(tmp_path: Path):
    spec = load_spec(SPEC)
    est = QualityEstimator.load()
    gains = sorted(est.estimate(p).gain for p in PROMPTS)
    tau = (gains[3] + gains[4]) / 2  # an operating point between the 4th and 5th prompt: both models get used
    tenants = dict(spec.tenants)
    tenants["auto"] = TenantSpec.model_validate({"policy": "balanced", "right_size": {"max_quality_drop": tau}})
    sec = spec.security.model_copy(update={"keys_file": str(tmp_path / "keys.json"), "audit": AuditSpec(
        path=str(tmp_path / "audit.db"), signing_key=str(tmp_path / "audit.pem"))})
    spec = spec.model_copy(update={"tenants": tenants, "security": sec})
    fakes = {e.id: FakeEngine(e.id) for e in spec.endpoints}
    gw = build_gateway(spec, fakes, rng=random.Random(7), sleep=_no_sleep)
    await gw.scraper.scrape_once()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        yield c, est, tau, fakes


async def _ask(client: httpx.AsyncClient, prompt: str, tenant: str = "auto") -> httpx.Response:
    r = await client.post("/v1/chat/completions", headers={"x-aigrid-tenant": tenant, "x-aigrid-client-location":
                                                            "Frankfurt"},
                          json={"model": "auto", "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    return r


async def test_each_prompt_goes_to_the_model_its_estimate_calls_for(setup):
    client, est, tau, fakes = setup
    served = {}
    for prompt in PROMPTS:
        r = await _ask(client, prompt)
        e = est.estimate(prompt)
        want = "large-70b" if e.gain > tau else "small-1b"
        assert r.headers["x-aigrid-model"] == want, (prompt, e, tau)
        served[prompt] = want
        d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
        choice = d["model_choice"]
        assert choice["chosen"] == want and choice["best"] == "large-70b"
        assert choice["estimates"] == pytest.approx(ladder_quality(["small-1b", "large-70b"], e), abs=1e-4)
        assert f"model {want}: estimated quality" in d["reason"] if want == "small-1b" else \
            "model large-70b: the best estimate" in d["reason"] and "small-1b more than" in d["reason"]
        if want == "small-1b":
            assert choice["cost_saved_usd"] > 0 and "saves $" in d["reason"]
            assert [c["model"] for c in d["candidates"]] == ["small-1b", "large-70b"]
        else:
            assert [x["filter"] for x in d["rejected"]] == ["quality"]
        text = "".join(str(line) for line in render_decision(d).renderables[:4])
        assert f"model {want} (right-sized)" in text
    assert set(served.values()) == {"small-1b", "large-70b"}
    # the engines got the served model's name, not "auto"
    assert {b["model"] for b in fakes["fra-small"].received} == {"small-1b"}
    assert {b["model"] for b in fakes["iad-large"].received} == {"large-70b"}


async def test_tenants_without_right_size_keep_auto_as_any_model(setup):
    client, *_ = setup
    r = await _ask(client, PROMPTS[3], tenant="default")
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["model_choice"] is None and not d["rejected"]
    assert r.headers["x-aigrid-model"] in ("small-1b", "large-70b")


async def test_a_named_model_is_never_right_sized(setup):
    client, *_ = setup
    r = await client.post("/v1/chat/completions", headers={"x-aigrid-tenant": "auto"},
                          json={"model": "large-70b", "messages": [{"role": "user", "content": PROMPTS[0]}]})
    assert r.status_code == 200
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["model_choice"] is None  # (family fallback, a policy setting, may still serve it from small-1b)


async def test_a_request_refused_by_its_quota_is_not_estimated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The prompt's quality estimate (tokenized and embedded) was made before the quota step: a tenant past its
    requests per minute still had every prompt estimated, then got its 429. Now the estimate is made for the
    routing, once the request is within its quotas and past the firewall."""
    spec = load_spec(SPEC)
    tenants = dict(spec.tenants)
    tenants["auto"] = TenantSpec.model_validate({"policy": "balanced", "right_size": {"max_quality_drop": 0.1},
                                                 "quotas": {"requests_per_min": 1}})
    sec = spec.security.model_copy(update={"keys_file": str(tmp_path / "keys.json")})
    spec = spec.model_copy(update={"tenants": tenants, "security": sec})
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints}, rng=random.Random(7), sleep=_no_sleep)
    gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota minute for the whole test
    await gw.scraper.scrape_once()
    assert gw.right_sizer is not None and gw.right_sizer.estimator is not None
    estimated: list[str] = []
    estimate = gw.right_sizer.estimator.estimate

    def counted(prompt: str):
        estimated.append(prompt)
        return estimate(prompt)

    monkeypatch.setattr(gw.right_sizer.estimator, "estimate", counted)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        await _ask(c, PROMPTS[0])
        assert len(estimated) == 1
        r = await c.post("/v1/chat/completions", headers={"x-aigrid-tenant": "auto"},
                         json={"model": "auto", "messages": [{"role": "user", "content": PROMPTS[1]}]})
        assert r.status_code == 429, r.text
        assert len(estimated) == 1  # not estimated for a request its quota refused
