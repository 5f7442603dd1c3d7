"""Great-circle distance and the network round-trip model.

RTT = fixed overhead + route_factor x 2 x distance / fibre speed. Light in fibre covers about 200 km per
millisecond (refractive index ~1.47); real routes are longer than the great circle. The defaults are fitted
to typical (P50), not best-case, measured round trips: Azure's published inter-region matrix
(../shared/data/network-rtt, 2,862 pairs; scripts/fit_rtt_model.py), which gives 9 ms + 1.45 x fibre with a
median absolute error of 11.5% (the previous 2 ms + 1.5 x sat near the minimum and was 15% off, -30% below
1,000 km). Physics sets the floor under it: no tuning removes it. Where a gateway measures its round trip to a
site it prefers the measurement (core.predict.network_ms).
"""

from __future__ import annotations

from math import asin, cos, radians, sin, sqrt

from aigrid.core.types import GeoPoint

EARTH_RADIUS_KM = 6371.0088
FIBRE_KM_PER_MS = 200.0
DEFAULT_ROUTE_FACTOR = 1.45
DEFAULT_OVERHEAD_MS = 9.0


def distance_km(a: GeoPoint, b: GeoPoint) -> float:
    """Haversine great-circle distance in kilometres."""
    dlat = radians(b.lat - a.lat)
    dlon = radians(b.lon - a.lon)
    h = sin(dlat / 2) ** 2 + cos(radians(a.lat)) * cos(radians(b.lat)) * sin(dlon / 2) ** 2
    root = sqrt(h)
    return 2 * EARTH_RADIUS_KM * asin(root if root < 1.0 else 1.0)  # min(1.0, root), without the builtin's cost


def rtt_ms(distance: float, route_factor: float = DEFAULT_ROUTE_FACTOR,
           overhead_ms: float = DEFAULT_OVERHEAD_MS) -> float:
    """Round-trip time in milliseconds for a path whose great-circle length is `distance` km."""
    return overhead_ms + route_factor * 2.0 * distance / FIBRE_KM_PER_MS
