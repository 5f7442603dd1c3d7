"""Right-sized tenants in the simulator: `model: auto` with a quality target (docs/models.md).

The traces carry sizes, not text, so each request of a right-sized tenant draws one labelled held-out prompt
(data/model-routing/heldout_sample.csv unless the tenant names another file). The gateway's own code turns
it into what the core reads, exactly as live: the shipped estimate (rightsize/estimator.py) gives the
per-model quality of the tenant's ladder and the tenant's threshold (rightsize/right_sizer.py), and the core
chooses model and endpoint together on the five axes. The prompt's labels then score the model that served
it: the smallest model of the ladder takes the mid-size reference's label, the largest the large one's
(the labels compare Mixtral-8x7B with GPT-4; the simulated models stand in for them, as the estimate's model
card says). Request sizes stay the trace's.

A tenant that differs from an earlier right-sized one only in name, model and right_size replays its requests
and prompts (sim/workload.py), so `always-large` declared beside `auto` compares them request by request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import overload

import numpy as np

from aigrid.errors import InvalidRequest
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.right_sizer import RightSizer, ladder_quality
from aigrid.rightsize.routing_data import RoutingData, read_routing_csv
from aigrid.sim.grid import Grid
from aigrid.sim.scenario import RightSizeDef, Scenario, ScenarioProblem
from aigrid.sim.workload import Workload, twin_of
from aigrid.spec.models import RightSizeSpec

HELDOUT = Path(__file__).resolve().parents[3] / "data" / "model-routing" / "heldout_sample.csv"
OK = 1  # sim.runner's status of a served request
log = logging.getLogger("aigrid.sim")


@dataclass(frozen=True)
class Prompts:
    """A labelled prompt set with the estimate's per-model quality for one ladder."""

    ladder: tuple[str, ...]
    """Smallest first."""
    threshold: float
    quality: tuple[dict[str, float], ...]
    """Per prompt: estimated quality per ladder model (what RequestInfo.quality carries)."""
    small_label: np.ndarray
    large_label: np.ndarray

    def __len__(self) -> int:
        return len(self.quality)

    @overload
    def pick(self, u: float) -> np.int64: ...
    @overload
    def pick(self, u: np.ndarray) -> np.ndarray: ...
    def pick(self, u: float | np.ndarray) -> np.int64 | np.ndarray:
        return np.minimum((np.asarray(u) * len(self)).astype(np.int64), len(self) - 1)


def prompts_path(cfg: RightSizeDef) -> Path:
    if cfg.prompts is not None:
        return Path(cfg.prompts)
    for candidate in (HELDOUT, Path.cwd() / "data" / "model-routing" / "heldout_sample.csv"):
        if candidate.exists():
            return candidate
    raise ScenarioProblem(f"labelled prompts not found ({HELDOUT}); set right_size.prompts")


@lru_cache(maxsize=8)
def _read(path: str) -> RoutingData:
    """The file read once per process (worker processes forked after the parent read it share it), by the rules of
    `aigrid models eval` (routing_data: rows with an empty prompt left out, a file with more than MAX_EMPTY_SHARE
    of them refused). What reading left out or assumed is one WARNING line on `aigrid.sim`: until the thirtieth
    session the notes were dropped, and a file's empty prompts left out without a word."""
    try:
        data = read_routing_csv(Path(path))
    except InvalidRequest as e:  # a missing or malformed file, reported as the scenario's problem
        raise ScenarioProblem(f"right_size.prompts: {e}") from None
    if data.notes:
        log.warning("right_size.prompts: %s: %s", path, "; ".join(data.notes))
    return data


@lru_cache(maxsize=8)
def _prompts(path: str, ladder: tuple[str, ...], params: tuple[float, ...], target: float,
             max_drop: float | None) -> Prompts:
    """Read once per process (worker processes forked after the parent read it share it)."""
    data = _read(path)
    spec = RightSizeSpec(models=list(ladder), quality_target=target, max_quality_drop=max_drop)
    sizer = RightSizer({"t": spec}, dict(zip(ladder, params, strict=True)), QualityEstimator.load())
    estimator = sizer.estimator
    assert estimator is not None
    ordered = sizer.ladders["t"]
    quality = tuple(ladder_quality(ordered, estimator.estimate(p)) for p in data.prompts)
    return Prompts(ordered, sizer.thresholds["t"], quality, data.small, data.large)


def tenant_prompts(sc: Scenario, k: int) -> Prompts | None:
    """The labelled prompts and estimates of tenant k, when it right-sizes."""
    cfg = sc.tenants[k].right_size
    if cfg is None:
        return None
    params = {m.name: m.params_b for m in sc.models}
    ladder = tuple(sorted(cfg.models or params, key=lambda m: (params[m], m)))
    return _prompts(str(prompts_path(cfg)), ladder, tuple(params[m] for m in ladder), cfg.quality_target,
                    cfg.max_quality_drop)


def right_size_summary(sc: Scenario, grid: Grid, w: Workload, status: np.ndarray, endpoint: np.ndarray,
                       ttft_s: np.ndarray, cost_usd: np.ndarray) -> dict[str, object]:
    """Per right-sized tenant, and per tenant replaying its requests (e.g. always-large): requests, share
    served by each model, cost, TTFT p50 / p99, mean estimated and realised quality over served requests.
    Empty when no tenant right-sizes (agent tenants cannot: one row per request)."""
    if w.pick_u is None:
        return {}
    model_of = np.array([ep.model for ep in grid.endpoints] + [""])
    out: dict[str, object] = {}
    for k, tenant in enumerate(sc.tenants):
        origin = k if tenant.right_size is not None else twin_of(sc, k)
        if origin is None or sc.tenants[origin].right_size is None:
            continue
        prompts = tenant_prompts(sc, origin)
        assert prompts is not None
        rows = np.flatnonzero(w.tenant == k)
        served = rows[status[rows] == OK]
        q = prompts.pick(w.pick_u[served])
        models = model_of[endpoint[served]]
        estimated = np.array([prompts.quality[int(i)].get(m, np.nan) for i, m in zip(q, models, strict=True)])
        label = np.where(models == prompts.ladder[0], prompts.small_label[q],
                         np.where(models == prompts.ladder[-1], prompts.large_label[q], np.nan))
        ttft = ttft_s[served] * 1000.0
        out[tenant.name] = {
            "right_sized": tenant.right_size is not None, "replays": sc.tenants[origin].name,
            "threshold": prompts.threshold if tenant.right_size is not None else None,
            "requests": len(rows), "served": len(served),
            "share_by_model": {m: round(float((models == m).mean()), 4) if len(served) else 0.0
                               for m in prompts.ladder},
            "cost_usd": round(float(cost_usd[served].sum()), 6),
            "ttft_p50_ms": round(float(np.percentile(ttft, 50)), 3) if len(ttft) else None,
            "ttft_p99_ms": round(float(np.percentile(ttft, 99)), 3) if len(ttft) else None,
            "estimated_quality": round(float(np.nanmean(estimated)), 4) if len(served) else None,
            "realised_quality": round(float(np.nanmean(label)), 4) if np.isfinite(label).any() else None,
        }
    return {"right_size_by_tenant": out} if out else {}
