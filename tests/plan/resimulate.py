"""Re-simulate a check scenario `aigrid plan` emitted, independently of the planner's own bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigrid.sim.experiment import run_experiment
from aigrid.sim.scenario import load_scenario


@dataclass
class Rerun:
    within: np.ndarray
    """Per request: served within the scenario's TTFT and TPOT SLO."""
    tenant: np.ndarray
    """Per request: the demand's tenant (the simulator tenant's name before its first '/')."""
    violations: int
    city: np.ndarray

    def attainment(self) -> dict[str, float]:
        return {t: float(self.within[self.tenant == t].mean()) for t in set(self.tenant.tolist())}


def resimulate(path: Path) -> Rerun:
    sc = load_scenario(path)
    ex = run_experiment(sc)
    r, w = ex.runs[0].result, ex.workload
    within = (r.status == 1) & (np.nan_to_num(r.ttft_s, nan=np.inf) <= sc.slo.ttft_ms / 1000) & (
        np.nan_to_num(r.tpot_s, nan=0.0) <= sc.slo.tpot_ms / 1000)
    tenant = np.array([w.tenant_names[k].split("/")[0] for k in w.tenant])
    return Rerun(within, tenant, int(r.violation.sum()), w.city)
