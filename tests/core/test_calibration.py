"""Online calibration: a pure update that corrects a wrong spec and learns an honest p90."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from aigrid.core.calibration import Calibration, observe
from aigrid.core.predict import predict
from aigrid.core.types import EndpointState, RequestInfo
from tests.core.grid import CITIES, SITES, endpoint

TRUE_PREFILL_TPS = 2000.0


def true_engine_ms(prompt: int, ahead_tokens: int, rng: random.Random) -> float:
    """The 'real' engine: 12 ms fixed overhead, prefill at TRUE_PREFILL_TPS, half the pending work already
    done on arrival, lognormal noise."""
    work = prompt + 0.5 * ahead_tokens
    return (12.0 + work / TRUE_PREFILL_TPS * 1000.0) * rng.lognormvariate(0.0, 0.15)


def run(spec_tps: float, n: int, seed: int = 1) -> tuple[list[float], Calibration]:
    """Route n requests to one endpoint whose spec says spec_tps; return |error| / observed per request."""
    rng = random.Random(seed)
    ep = replace(endpoint("fra"), prefill_tps=spec_tps)
    cal, errors = Calibration(), []
    for i in range(n):
        prompt, pending = rng.randint(50, 4000), rng.choice([0, 0, 0, 2000, 8000])
        state = EndpointState(pending_requests=1 if pending else 0, pending_prompt_tokens=pending, calibration=cal)
        req = RequestInfo(f"r{i}", "small", prompt_tokens=prompt, client_location=CITIES["frankfurt"])
        p = predict(req, ep, SITES["fra"], state, warm=False)
        observed = true_engine_ms(prompt, pending, rng)
        errors.append(abs(p.queue_ms + p.prefill_ms - observed) / observed)
        cal = observe(cal, p.model_ahead_ms, p.model_own_ms, observed)
    return errors, cal


def test_a_spec_4x_wrong_is_corrected_within_500_requests() -> None:
    for tps in (TRUE_PREFILL_TPS * 4, TRUE_PREFILL_TPS / 4):
        errors, cal = run(tps, 500)
        assert np.median(errors[:8]) > 0.5  # the spec alone (before the fit is ready) is far off
        assert np.median(errors[-100:]) <= 0.25, tps
        assert cal.ready


def test_p90_ratio_covers_about_nine_in_ten() -> None:
    rng = random.Random(3)
    cal = Calibration()
    covered = []
    for _ in range(3000):
        own = rng.uniform(20, 500)
        observed = own * rng.lognormvariate(0.0, 0.3)
        covered.append(observed <= cal.engine_ms(0.0, own) * cal.ratio_q)
        cal = observe(cal, 0.0, own, observed)
    assert 0.85 <= np.mean(covered[1000:]) <= 0.95


def test_update_is_pure_and_ignores_nonsense() -> None:
    cal = Calibration()
    new = observe(cal, 10.0, 100.0, 150.0)
    assert cal == Calibration() and new.n == 1 and new is not cal
    assert observe(new, float("nan"), 1.0, 1.0) is new
    assert observe(new, 1.0, 1.0, -5.0) is new


def test_prediction_reports_p90_above_p50() -> None:
    errors, cal = run(TRUE_PREFILL_TPS, 200)
    req = RequestInfo("x", "small", prompt_tokens=1000, client_location=CITIES["tokyo"])
    p = predict(req, endpoint("fra"), SITES["fra"], EndpointState(calibration=cal), warm=False)
    assert p.ttft_p90_ms > p.ttft_ms > p.rtt_ms > 0
