import math

import numpy as np

from aigrid.core.geo import rtt_ms
from aigrid.sim.network import Network, distances_km


def test_rtt_is_overhead_plus_route_factor_times_fibre_round_trip() -> None:
    net = Network(route_factor=1.5, overhead_ms=2.0, jitter_ms=0.0)
    assert net.rtt_ms(1000.0, 0.3) == 2.0 + 1.5 * 2 * 1000 / 200  # 17 ms
    assert Network().base_rtt_ms(6000.0) == rtt_ms(6000.0)  # the same formula (and defaults) the scheduler predicts with


def test_jitter_is_one_sided_with_the_configured_mean() -> None:
    net = Network(jitter_ms=4.0)
    u = (np.arange(100_000) + 0.5) / 100_000
    extra = np.array([net.rtt_ms(0.0, x) for x in u]) - net.base_rtt_ms(0.0)
    assert extra.min() >= 0 and math.isclose(extra.mean(), 4.0, rel_tol=0.01)


def test_great_circle_distances_match_known_city_pairs() -> None:
    # Frankfurt -> New York ~6,200 km; Tokyo -> Sydney ~7,800 km.
    d = distances_km(np.array([40.71, -33.87]), np.array([-74.01, 151.21]), 50.11, 8.68)
    assert 6150 < d[0] < 6250
    d2 = distances_km(np.array([-33.87]), np.array([151.21]), 35.68, 139.69)
    assert 7750 < d2[0] < 7850
