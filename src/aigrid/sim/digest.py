"""Fingerprints of a run, to prove that a change to the simulator or the core kept every decision.

`decisions`: SHA-256 over each call's final endpoint, status and number of attempts, in call order;
`outcomes`: over its TTFT, TPOT, end-to-end time and cost (float64 bytes). Two runs with equal digests
routed every request to the same endpoint after the same number of attempts and timed it identically.
details.json stores both per policy; `scripts/sim_digest.py` prints them for any scenario.
"""

from __future__ import annotations

import hashlib

import numpy as np

from aigrid.sim.runner import RunResult


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_digest(r: RunResult) -> dict[str, str]:
    """{"decisions": ..., "outcomes": ...} (hex SHA-256) for one run."""
    return {
        "decisions": _sha(r.endpoint.astype("<i8"), r.status.astype("<i1"), r.attempts.astype("<i1")),
        "outcomes": _sha(*(np.asarray(x, dtype="<f8") for x in (r.ttft_s, r.tpot_s, r.e2e_s, r.cost_usd))),
    }
