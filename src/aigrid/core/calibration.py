"""Online calibration of one endpoint's TTFT model from observed outcomes. Pure: (calibration, observation)
-> calibration, so the gateway and the simulator run the very same update.

The predictor (core.predict) models two parts of an engine's time to first token from the spec and what it
can see: `ahead`, the wait behind the work already there (admission, prefill of the prompt tokens pending
ahead), and `own`, this request's prefill. What the engine really takes, y, differs: the spec's prefill rate
may be 4x wrong, the engine has a fixed overhead (tokenisation, scheduling, the HTTP hop), part of the
pending work is already done when the request arrives, and queueing nobody reported adds to it. Each served
request gives one observation (ahead, own, y) with y = observed TTFT - observed network time, and the
calibration fits

    y = overhead + prefill_coef x own + queue_coef x ahead

by exponentially weighted least squares (forgetting factor DECAY) with a ridge pull towards (0, 1, 1), so a
handful of points cannot throw it far, made robust with Huber weights on the log ratio of each observation to
the current prediction. Residuals are skewed: a request that met queueing nobody could see (another
gateway's sends since the last exchange, traffic from elsewhere) takes far longer than modelled, while none
takes far less; plain least squares chases that mean and over-predicts the typical request. With the weights
the fit follows the bulk (closer to the median, the best point under absolute error), and the tail is left to
the p90 ratio below. It also tracks the 90th percentile of the out-of-sample ratio
y / prediction with a stochastic-approximation quantile estimator (Robbins-Monro), so that decisions can use
p90 = p50 x ratio_q, not only a point guess.

The peers: the Gateway API Inference Extension trains quantile XGBoost in a sidecar every few seconds (a
second service; no network term); Dynamo's KV router uses a fixed cost (prefill blocks ahead minus cached
overlap plus decode blocks) and learns nothing. This is a closed-form three-coefficient fit per endpoint,
O(1) per observation, with the network kept outside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import exp, log
from typing import NamedTuple

DECAY = 0.98
"""Weight kept by the past at each observation: an effective memory of ~50 requests."""
MIN_OBSERVATIONS = 8
"""Below this many observations `ready` is False and the predictor does not use the fit yet."""
PRIOR_WEIGHT = 2.0
"""The ridge prior counts as this many observations."""
QUANTILE = 0.9
QUANTILE_STEP = 0.1
"""Robbins-Monro step on the log ratio: +9% after a miss above the quantile, -1% after a hit below."""
INITIAL_LOG_Q = log(1.3)
COEF_RANGE = (0.05, 20.0)
HUBER_K = 0.25
"""An observation more than exp(HUBER_K) = 1.28x away from the current prediction, either way, counts with
weight HUBER_K / |log ratio| (Huber's M-estimator on the log scale)."""



class Calibration(NamedTuple):
    """The fitted model of one endpoint, plus the decayed sums it was fitted from. A NamedTuple (immutable,
    like core.types' records): one is built per outcome folded in, per gateway that learns of it."""

    n: int = 0
    sums: tuple[float, ...] = (0.0,) * 9
    """sw, s_own, s_ahead, s_y, s_own2, s_own_ahead, s_ahead2, s_own_y, s_ahead_y (decayed)."""
    overhead_ms: float = 0.0
    prefill_coef: float = 1.0
    queue_coef: float = 1.0
    log_q: float = INITIAL_LOG_Q
    """log of the QUANTILE of observed / predicted engine time."""

    @property
    def ready(self) -> bool:
        return self.n >= MIN_OBSERVATIONS

    @property
    def ratio_q(self) -> float:
        """The p90 multiplier: p90 = p50 x ratio_q."""
        return exp(self.log_q)

    def parts_ms(self, ahead_ms: float, own_ms: float) -> tuple[float, float]:
        """Calibrated (queue, prefill) of the engine time, about the median; the overhead counts as prefill."""
        prefill = self.overhead_ms + self.prefill_coef * own_ms
        return self.queue_coef * ahead_ms, 0.1 if 0.1 > prefill else prefill  # max(prefill, 0.1), cheaper

    def engine_ms(self, ahead_ms: float, own_ms: float) -> float:
        queue, prefill = self.parts_ms(ahead_ms, own_ms)
        return queue + prefill


new_record = tuple.__new__
"""types.new_record's (types.py imports this module, so this one cannot import it from there)."""


def observe(cal: Calibration, ahead_ms: float, own_ms: float, observed_ms: float,
            decay: float = DECAY, weight: float = 1.0) -> Calibration:
    """Fold one outcome in: `ahead_ms` and `own_ms` were the uncalibrated modelled parts at decision time,
    `observed_ms` what the engine took (TTFT minus network). Returns the new calibration.

    `weight` (0 < weight <= 1) is how much of one observation this counts as: it adds `weight` to the sums,
    ages the past by decay ** weight and moves the p90 by `weight` of a step. Another gateway's outcomes
    are folded in with weight 1 / (gateways sharing - 1), so that all the others together count as much as
    this gateway's own: without it, N gateways' outcomes shorten the fit's memory N times and a single
    burst swings every gateway's fit at once (measured in docs/routing.md, "Calibration shared between
    gateways")."""
    if not (ahead_ms >= 0.0 and own_ms >= 0.0 and observed_ms >= 0.0 and weight > 0.0):  # also rejects NaN
        return cal
    # every field at once (compiled: tuple reads, where each `cal.field` was a generic attribute lookup)
    n, (sw, s1, s2, sy, s11, s12, s22, s1y, s2y), a, b1, b2, log_q = cal
    sw, s1, s2, sy, s11, s12, s22, s1y, s2y, a, b1, b2, log_q = _step(
        sw, s1, s2, sy, s11, s12, s22, s1y, s2y, a, b1, b2, log_q, ahead_ms, own_ms, observed_ms, decay, weight)
    # tuple.__new__, as the NamedTuple's own __new__ does, without that Python frame: once per outcome per gateway
    return new_record(Calibration, (n + 1, (sw, s1, s2, sy, s11, s12, s22, s1y, s2y), a, b1, b2, log_q))


def observe_each(cal: Calibration, outcomes: Sequence[tuple[int, float, float, float]], start: int, skip: int,
                 decay: float = DECAY, weight: float = 1.0) -> Calibration:
    """observe(cal, ahead_ms, own_ms, observed_ms, decay, weight) for each (source, ahead_ms, own_ms,
    observed_ms) of outcomes[start:] whose source is not `skip`, in order: the very same calibration (the
    same operations in the same order), without building the ones in between. For a gateway folding the
    other gateways' outcomes of one endpoint, several at a time (the simulator's shared log)."""
    n, (sw, s1, s2, sy, s11, s12, s22, s1y, s2y), a, b1, b2, log_q = cal
    folded = 0
    for k in range(start, len(outcomes)):
        source, ahead_ms, own_ms, observed_ms = outcomes[k]
        if source == skip or not (ahead_ms >= 0.0 and own_ms >= 0.0 and observed_ms >= 0.0 and weight > 0.0):
            continue  # observe returns the calibration unchanged
        sw, s1, s2, sy, s11, s12, s22, s1y, s2y, a, b1, b2, log_q = _step(
            sw, s1, s2, sy, s11, s12, s22, s1y, s2y, a, b1, b2, log_q, ahead_ms, own_ms, observed_ms, decay, weight)
        folded += 1
    if not folded:
        return cal
    return new_record(Calibration, (n + folded, (sw, s1, s2, sy, s11, s12, s22, s1y, s2y), a, b1, b2, log_q))


Step = tuple[float, float, float, float, float, float, float, float, float, float, float, float, float]
"""The nine decayed sums, the fit (overhead, prefill coefficient, queue coefficient) and log_q after one outcome."""


def _step(sw: float, s1: float, s2: float, sy: float, s11: float, s12: float, s22: float, s1y: float, s2y: float,
          overhead_ms: float, prefill_coef: float, queue_coef: float, old_log_q: float,
          ahead_ms: float, own_ms: float, observed_ms: float, decay: float, weight: float) -> Step:
    """One valid outcome folded into a calibration's sums, fit and quantile, all as plain floats (compiled: C
    doubles, no tuple or float object until the caller builds the Calibration)."""
    # max(x, lo) and min(x, hi) written as the comparison the builtin makes (the same bits, cheaper): this
    # runs once per outcome per gateway that learns of it
    if 1.0 < weight:
        weight = 1.0
    prefill = overhead_ms + prefill_coef * own_ms  # cal.engine_ms(ahead_ms, own_ms), inline
    r = log((0.1 if 0.1 > observed_ms else observed_ms) / (queue_coef * ahead_ms + (0.1 if 0.1 > prefill else prefill)))
    log_q = old_log_q + weight * QUANTILE_STEP * (QUANTILE - (1.0 if r <= old_log_q else 0.0))
    if 0.0 > log_q:
        log_q = 0.0
    x1, x2, y = own_ms, ahead_ms, observed_ms
    w = weight if abs(r) <= HUBER_K else weight * HUBER_K / abs(r)
    if weight != 1.0:
        decay **= weight
    sw, s1, s2, sy = sw * decay + w, s1 * decay + w * x1, s2 * decay + w * x2, sy * decay + w * y
    s11, s12, s22 = s11 * decay + w * x1 * x1, s12 * decay + w * x1 * x2, s22 * decay + w * x2 * x2
    s1y, s2y = s1y * decay + w * x1 * y, s2y * decay + w * x2 * y
    a, b1, b2 = _solve(sw, s1, s2, sy, s11, s12, s22, s1y, s2y)
    return sw, s1, s2, sy, s11, s12, s22, s1y, s2y, a, b1, b2, log_q


def _fit(sums: tuple[float, ...]) -> tuple[float, float, float]:
    """_solve over a tuple of the nine sums."""
    sw, s1, s2, sy, s11, s12, s22, s1y, s2y = sums
    return _solve(sw, s1, s2, sy, s11, s12, s22, s1y, s2y)


def _solve(sw: float, s1: float, s2: float, sy: float, s11: float, s12: float, s22: float, s1y: float,
           s2y: float) -> tuple[float, float, float]:
    """Ridge least squares for y = a + b1 x1 + b2 x2, pulled towards (0, 1, 1) by PRIOR_WEIGHT pseudo-points
    (scaled to each feature's mean square, so the pull does not depend on units).

    The normal equations M (a, b1, b2) = v, with M symmetric:

        | sw + l0   s1         s2        |       | sy        |
        | s1        s11 + l1   s12       |   v = | s1y + l1  |
        | s2        s12        s22 + l2  |       | s2y + l2  |

    solved by Cramer's rule, each determinant written out by cofactor expansion along its first row, as the
    generic solver it replaced computed it (the same operations in the same order, so the same bits: checked
    in tests/core/test_calibration.py; this runs once per outcome per gateway that learns of it, and the calls
    and tuples of a solver function were most of its cost)."""
    l1 = PRIOR_WEIGHT * s11 / sw + 1e-9
    l2 = PRIOR_WEIGHT * s22 / sw + 1e-9
    m00, m11, m22 = sw + PRIOR_WEIGHT, s11 + l1, s22 + l2
    v1, v2 = s1y + l1, s2y + l2
    # M's rows are (m00, s1, s2), (s1, m11, s12), (s2, s12, m22)
    d = m00 * (m11 * m22 - s12 * s12) - s1 * (s1 * m22 - s12 * s2) + s2 * (s1 * s12 - m11 * s2)
    scale = abs(m00 * m11 * m22)
    if abs(d) <= 1e-12 * (scale if scale > 1.0 else 1.0):  # max(1.0, scale), as the builtin compares
        return 0.0, 1.0, 1.0
    a = (sy * (m11 * m22 - s12 * s12) - s1 * (v1 * m22 - s12 * v2) + s2 * (v1 * s12 - m11 * v2)) / d
    if a < 0.0:  # an overhead cannot be negative: refit without it
        det = m11 * m22 - s12 * s12
        if det <= 1e-12:
            return 0.0, 1.0, 1.0
        a = 0.0
        b1 = (v1 * m22 - s12 * v2) / det
        b2 = (m11 * v2 - s12 * v1) / det
    else:
        b1 = (m00 * (v1 * m22 - s12 * v2) - sy * (s1 * m22 - s12 * s2) + s2 * (s1 * v2 - v1 * s2)) / d
        b2 = (m00 * (m11 * v2 - v1 * s12) - s1 * (s1 * v2 - v1 * s2) + sy * (s1 * s12 - m11 * s2)) / d
    lo, hi = COEF_RANGE  # min(max(b, lo), hi), as the builtins compare
    b1 = lo if lo > b1 else b1
    b2 = lo if lo > b2 else b2
    return a, hi if hi < b1 else b1, hi if hi < b2 else b2
