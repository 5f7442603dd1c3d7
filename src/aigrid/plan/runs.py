"""One check run in the simulator, and where runs execute: local processes or a Ray cluster.

run_check() is the unit of work: a scenario (as plain data, so it travels to another process or machine)
in, a small dict of figures out: per tenant the share of requests within the SLO, per site what it served,
how much of that was within the SLO, and its utilisation. The simulator is used through its public entry
point, run_experiment(), and its result arrays.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Protocol

import numpy as np

from aigrid.errors import ConfigError

Job = dict[str, Any]
Outcome = dict[str, Any]
OK = 1  # aigrid.sim.runner's status of a served request


def run_check(job: Job) -> Outcome:
    from aigrid.sim.experiment import run_experiment
    from aigrid.sim.scenario import Scenario

    sc = Scenario.model_validate(job["scenario"])
    ex = run_experiment(sc)
    run = ex.runs[0]
    r, w, grid = run.result, ex.workload, run.grid
    ttft_ok = np.nan_to_num(r.ttft_s, nan=np.inf) <= sc.slo.ttft_ms / 1000.0
    tpot_ok = np.nan_to_num(r.tpot_s, nan=0.0) <= sc.slo.tpot_ms / 1000.0
    within = (r.status == OK) & ttft_ok & tpot_ok
    tenant_of_flow = np.array([name.split("/")[0] for name in w.tenant_names])
    tenant = tenant_of_flow[w.tenant] if len(w) else np.array([], dtype=str)
    tenants: dict[str, dict[str, float]] = {}
    for name in sorted(set(tenant_of_flow.tolist())):
        mine = tenant == name
        n = int(mine.sum())
        tenants[name] = {"requests": n, "within": int(within[mine].sum()),
                         "attainment": float(within[mine].mean()) if n else 1.0}
    site_of_ep = np.array([ep.site_id.split("+")[0] for ep in grid.endpoints])
    sites: dict[str, dict[str, float]] = {}
    served = r.endpoint >= 0
    ep_site = np.where(served, site_of_ep[np.maximum(r.endpoint, 0)], "")
    for sid in sorted(set(site_of_ep.tolist())):
        at = ep_site == sid
        util = r.utilization[site_of_ep == sid]
        sites[sid] = {"served": int(at.sum()), "bad": int((at & ~within).sum()),
                      "slow_ttft": int((at & ~ttft_ok).sum()), "slow_tpot": int((at & ~tpot_ok).sum()),
                      "utilization": float(util.mean()) if len(util) else 0.0}
    ok_ttft = r.ttft_s[r.status == OK]
    ok_tpot = r.tpot_s[(r.status == OK) & ~np.isnan(r.tpot_s)]  # a stream's mean over its answer (> 1 token)
    return {
        "check": job["check"], "requests": len(w), "within": int(within.sum()),
        "rejected": int((r.status != OK).sum()), "residency_violations": int(r.violation.sum()),
        "ttft_p99_ms": float(np.percentile(ok_ttft, 99) * 1000) if len(ok_ttft) else None,
        "tpot_p99_ms": float(np.percentile(ok_tpot, 99) * 1000) if len(ok_tpot) else None,
        "tpot_max_ms": float(ok_tpot.max() * 1000) if len(ok_tpot) else None,
        "tenants": tenants, "sites": sites, "wall_s": run.wall_s,
    }


class Backend(Protocol):
    name: str

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]: ...

    def close(self) -> None: ...


class LocalBackend:
    """A pool of worker processes (one per core by default)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]:
        if self.workers == 1:
            out = []
            for j in jobs:
                out.append(run_check(j))
                if done:
                    done()
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        futures: dict[Future[Outcome], int] = {self._pool.submit(run_check, j): i for i, j in enumerate(jobs)}
        results: list[Outcome | None] = [None] * len(jobs)
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if done:
                done()
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


RAY_PROBE_S = 5.0
"""How long `--ray HOST:PORT` waits for the cluster's port before giving up (Ray itself retries for minutes)."""


def _reachable(address: str, timeout_s: float = RAY_PROBE_S) -> None:
    """A ConfigError naming the address when nothing answers at its host and port (`ray://HOST:PORT` or
    `HOST:PORT`; 'auto' and other forms are left to Ray). ray.init on a wrong address logs a warning every few
    seconds for minutes before failing."""
    hostport = address.removeprefix("ray://")
    host, colon, port = hostport.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ConfigError(f"--ray {address}: nothing answers at {host}:{port} ({e}); give the address of the "
                          "cluster's head (ray://HOST:10001 or HOST:6379), or 'local'") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class RayBackend:
    """The same runs as Ray tasks on an existing cluster (`--ray ADDRESS`; 'local' starts one here)."""

    name = "ray"

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'aigrid[plan]'") from None
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH"))
                                                              if p)}}
            if address == "local":
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, runtime_env=env,
                         object_store_memory=128 * 1024 * 1024, log_to_driver=False)
            else:
                _reachable(address)
                try:
                    ray.init(address=address, runtime_env=env, log_to_driver=False)
                except (RuntimeError, ValueError, ConnectionError) as e:  # `bogus://`: a traceback
                    raise ConfigError(f"--ray {address}: Ray cannot connect ({_first_line(e)}); give the address "
                                      "of the cluster's head (ray://HOST:10001 or HOST:6379), or 'local'") from None
        self._task = ray.remote(run_check)

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]:
        refs = [self._task.remote(j) for j in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Outcome | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            ready, pending = self._ray.wait(pending, num_returns=1)
            for ref in ready:
                results[index[ref]] = self._ray.get(ref)
                if done:
                    done()
        return [r for r in results if r is not None]

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()

