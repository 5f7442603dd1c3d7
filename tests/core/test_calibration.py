"""Online calibration: a pure update that corrects a wrong spec and learns an honest p90."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from aigrid.core.calibration import COEF_RANGE, PRIOR_WEIGHT, Calibration, _fit, observe
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
        p = predict(req, ep, SITES["fra"], state)
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
    p = predict(req, endpoint("fra"), SITES["fra"], EndpointState(calibration=cal))
    assert p.ttft_p90_ms > p.ttft_ms > p.rtt_ms > 0


def test_a_weighted_observation_counts_as_that_share_of_one() -> None:
    """Weight 1 is the plain update; m observations of weight 1/m age the past as much as one observation
    does and add as much weight, so N gateways' outcomes at 1/(N-1) each do not shorten the fit's memory."""
    rng = random.Random(5)
    cal = Calibration()
    for _ in range(50):
        own = rng.uniform(20, 500)
        cal = observe(cal, 10.0, own, own * 2.0)
    assert observe(cal, 10.0, 100.0, 250.0, weight=1.0) == observe(cal, 10.0, 100.0, 250.0)
    one = observe(cal, 10.0, 100.0, 200.0)
    quarters = cal
    for _ in range(4):
        quarters = observe(quarters, 10.0, 100.0, 200.0, weight=0.25)
    assert quarters.sums[0] == pytest.approx(one.sums[0], rel=1e-3)  # about the same total weight and ageing
    assert quarters.prefill_coef == pytest.approx(one.prefill_coef, rel=1e-3)
    assert abs(quarters.log_q - cal.log_q) == pytest.approx(abs(one.log_q - cal.log_q), rel=1e-9)
    # a light observation moves a fit less than a full one
    far = observe(cal, 10.0, 100.0, 2000.0, weight=0.1)
    assert abs(far.prefill_coef - cal.prefill_coef) < abs(observe(cal, 10.0, 100.0, 2000.0).prefill_coef
                                                        - cal.prefill_coef)
    assert observe(cal, 10.0, 100.0, 200.0, weight=0.0) is cal


def _det3(a: float, b: float, c: float, d: float, e: float, f: float, g: float, h: float, i: float) -> float:
    """The determinant of the 3x3 matrix with rows (a, b, c), (d, e, f), (g, h, i), as the solver computed it."""
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def _fit_by_solver(sums: tuple[float, ...]) -> tuple[float, float, float]:
    """_fit as it was written before it was inlined: the normal equations through a generic Cramer solver
    (_det3 per determinant), the overhead refit, the clamps."""
    sw, s1, s2, sy, s11, s12, s22, s1y, s2y = sums
    l1 = PRIOR_WEIGHT * s11 / sw + 1e-9
    l2 = PRIOR_WEIGHT * s22 / sw + 1e-9
    m = (sw + PRIOR_WEIGHT, s1, s2, s1, s11 + l1, s12, s2, s12, s22 + l2)
    v = (sy, s1y + l1, s2y + l2)
    d = _det3(*m)
    if abs(d) <= 1e-12 * max(1.0, abs(m[0] * m[4] * m[8])):
        return 0.0, 1.0, 1.0
    a = _det3(v[0], m[1], m[2], v[1], m[4], m[5], v[2], m[7], m[8]) / d
    b1 = _det3(m[0], v[0], m[2], m[3], v[1], m[5], m[6], v[2], m[8]) / d
    b2 = _det3(m[0], m[1], v[0], m[3], m[4], v[1], m[6], m[7], v[2]) / d
    if a < 0.0:
        det = m[4] * m[8] - m[5] * m[7]
        if det <= 1e-12:
            return 0.0, 1.0, 1.0
        a, b1, b2 = 0.0, (v[1] * m[8] - m[5] * v[2]) / det, (m[4] * v[2] - m[7] * v[1]) / det
    lo, hi = COEF_RANGE
    return a, min(max(b1, lo), hi), min(max(b2, lo), hi)


def test_the_inlined_fit_is_the_solver_bit_for_bit() -> None:
    """_fit writes Cramer's rule out by hand (it runs once per outcome per gateway): the same bits as the
    generic solver on the sums of random observation streams, singular and refit cases included."""
    rng = random.Random(16)
    for _ in range(40):
        cal = Calibration()
        for _ in range(500):
            cal = observe(cal, rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 5000)]),
                          rng.choice([0.0, rng.uniform(0, 3), rng.uniform(0, 3000)]),
                          rng.choice([0.0, 0.05, rng.uniform(0, 10), rng.uniform(0, 9000)]),
                          weight=rng.choice([1.0, 1 / 15, 0.5]))
            assert _fit(cal.sums) == _fit_by_solver(cal.sums)
    for sums in ((1.0,) + (0.0,) * 8, (2.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5), (1e-300,) * 9):
        assert _fit(sums) == _fit_by_solver(sums)


def test_observe_builds_every_field() -> None:
    """observe builds its result with tuple.__new__ (no field count check): every field is there."""
    cal = observe(Calibration(), 10.0, 100.0, 180.0)
    assert isinstance(cal, Calibration) and len(cal) == len(Calibration._fields)
    assert cal._replace() == cal and cal.n == 1


def test_observe_each_is_observe_one_after_the_other_bit_for_bit() -> None:
    """observe_each folds a sequence of outcomes, skipping one source, as observe one at a time (the same
    calibration, field for field), invalid outcomes (NaN, negative) and weights of 1 and less included."""
    from aigrid.core.calibration import observe_each

    rng = random.Random(11)
    for _ in range(3000):
        cal = Calibration()
        for _ in range(rng.randrange(0, 30)):
            cal = observe(cal, rng.uniform(0, 500), rng.uniform(1, 900), rng.uniform(1, 3000))
        outcomes = []
        for _ in range(rng.randrange(0, 12)):
            bad = rng.random() < 0.05
            outcomes.append((rng.randrange(4), float("nan") if bad else rng.uniform(0, 500),
                             -1.0 if rng.random() < 0.03 else rng.uniform(0, 900), rng.uniform(0, 4000)))
        start, skip = rng.randrange(0, len(outcomes) + 1), rng.randrange(4)
        weight = rng.choice([1.0, 1 / 15, 0.5, 2.0])
        expected = cal
        for source, ahead, own, observed in outcomes[start:]:
            if source != skip:
                expected = observe(expected, ahead, own, observed, weight=weight)
        got = observe_each(cal, outcomes, start, skip, weight=weight)
        assert got == expected and type(got) is Calibration
        if expected is cal:
            assert got is cal
