"""The network model: RTT = overhead + route factor x 2 x great-circle distance / fibre speed + jitter.

Light in fibre covers ~200,000 km/s (refractive index ~1.47). Real routes are longer than the great circle:
published measurements put the route factor around 1.3-1.6 on long-haul paths (more on short hops), so it
is a parameter (default fitted on measured P50 round trips, see core.geo). Jitter is exponential with a configurable mean (queueing in routers is
one-sided: it only ever adds delay). The deterministic part is the same formula as aigrid.core.geo.rtt_ms,
which the scheduler uses for its prediction; only the jitter is unknown to the scheduler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import numpy as np

from aigrid.core.geo import DEFAULT_OVERHEAD_MS, DEFAULT_ROUTE_FACTOR, EARTH_RADIUS_KM, FIBRE_KM_PER_MS


@dataclass(frozen=True, slots=True)
class Network:
    route_factor: float = DEFAULT_ROUTE_FACTOR
    overhead_ms: float = DEFAULT_OVERHEAD_MS
    jitter_ms: float = 1.0
    """Mean of the exponential jitter added to each round trip."""

    @overload
    def base_rtt_ms(self, distance_km: float) -> float: ...
    @overload
    def base_rtt_ms(self, distance_km: np.ndarray) -> np.ndarray: ...
    def base_rtt_ms(self, distance_km: float | np.ndarray) -> float | np.ndarray:
        """The deterministic part, for one distance or an array of them."""
        return self.overhead_ms + self.route_factor * 2.0 * distance_km / FIBRE_KM_PER_MS

    def rtt_ms(self, distance_km: float, u: float) -> float:
        """RTT for one request; u in [0, 1) is that request's own uniform draw (same draw for every policy)."""
        return self.base_rtt_ms(distance_km) - self.jitter_ms * math.log1p(-u)


def distances_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Haversine distances from one point to many (vectorised)."""
    p1, p2 = np.radians(lat0), np.radians(lat)
    dphi = p2 - p1
    dlmb = np.radians(lon - lon0)
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    out: np.ndarray = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    return out
