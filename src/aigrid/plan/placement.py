"""A placement: which sites, which hardware, how many replicas of which model; and what it costs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from aigrid.plan.chunks import DEFAULT_CHUNK, chunk_for
from aigrid.plan.demand import Demand
from aigrid.plan.screen import Sizing
from aigrid.plan.supply import Candidates, device_cap
from aigrid.sim.hardware import HARDWARE

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class PlannedSite:
    id: str
    city: str
    lat: float
    lon: float
    country: str
    jurisdiction: str
    hardware: str
    gpus_per_replica: int
    usd_per_device_hour: float
    replicas: tuple[tuple[str, int], ...]
    """(model, replicas) pairs."""
    chunk_tokens: int = DEFAULT_CHUNK
    """The prefill chunk its engines run with (plan/chunks.py)."""
    max_devices: tuple[tuple[str, int], ...] = ()
    """(hardware option, the most devices the site may hold of it): its candidate's row of
    Candidates.max_devices (supply.device_cap), the limits the screen sized it within, carried so that
    refinement keeps them; () for a site not made from a candidate (written by hand): then
    supply.max_gpus_per_site alone."""

    @property
    def devices(self) -> int:
        return sum(n for _, n in self.replicas) * self.gpus_per_replica

    @property
    def usd_per_hour(self) -> float:
        return self.devices * self.usd_per_device_hour


@dataclass(frozen=True)
class Placement:
    label: str
    sites: tuple[PlannedSite, ...]

    @property
    def usd_per_hour(self) -> float:
        return sum(s.usd_per_hour for s in self.sites)

    @property
    def usd_per_month(self) -> float:
        return self.usd_per_hour * HOURS_PER_MONTH

    @property
    def devices(self) -> int:
        return sum(s.devices for s in self.sites)

    def site(self, site_id: str) -> PlannedSite:
        return next(s for s in self.sites if s.id == site_id)

    def scaled(self, site_id: str, delta: int) -> Placement:
        """Every model at the site gets `delta` more replicas (never fewer than 1)."""
        sites = tuple(replace(s, replicas=tuple((m, max(1, n + delta)) for m, n in s.replicas)) if s.id == site_id
                      else s for s in self.sites)
        return replace(self, sites=sites)

    def rehoused(self, site_id: str, hardware: str, usd_per_device_hour: float, gpus: int,
                 chunk_tokens: int = DEFAULT_CHUNK) -> Placement:
        sites = tuple(replace(s, hardware=hardware, usd_per_device_hour=usd_per_device_hour, gpus_per_replica=gpus,
                              chunk_tokens=chunk_tokens) if s.id == site_id else s for s in self.sites)
        return replace(self, sites=sites)

    def key(self) -> tuple[tuple[str, str, int, tuple[tuple[str, int], ...]], ...]:
        return tuple((s.id, s.hardware, s.chunk_tokens, s.replicas) for s in self.sites)


def price_of(demand: Demand, hardware: str) -> tuple[float, int]:
    """(usd per device-hour, gpus per replica) of a hardware option of the supply."""
    opt = demand.supply.hardware.get(hardware)
    if opt is None:
        return HARDWARE[hardware].usd_per_hour, 1
    return (opt.usd_per_hour or HARDWARE[hardware].usd_per_hour), opt.gpus_per_replica


def cap_of(demand: Demand, site: PlannedSite, hardware: str) -> int:
    """The most devices of `hardware` `site` may hold: what its candidate carried, else supply.device_cap
    without a site limit."""
    caps = dict(site.max_devices)
    return caps[hardware] if hardware in caps else device_cap(demand.supply, None, hardware)


def chunk_of(demand: Demand, hardware: str) -> int:
    """The prefill chunk the plan gives `hardware`'s engines (the simulator's default where none holds TPOT)."""
    return chunk_for(demand, hardware) or DEFAULT_CHUNK


def from_sizing(label: str, demand: Demand, cands: Candidates, sizing: Sizing) -> Placement:
    sites = []
    for s, hw, reps in zip(sizing.sites, sizing.hardware, sizing.replicas, strict=True):
        price, gpus = price_of(demand, hw)
        sites.append(PlannedSite(cands.id[s], cands.city[s], float(cands.lat[s]), float(cands.lon[s]),
                                 cands.country[s], cands.jurisdiction[s], hw, gpus, price, tuple(sorted(reps.items())),
                                 chunk_of(demand, hw),
                                 tuple((h, int(n)) for h, n in zip(cands.hardware, cands.max_devices[s], strict=True))))
    return Placement(label, tuple(sites))
