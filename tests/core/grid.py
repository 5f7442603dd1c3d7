"""Small hand-built grids for core tests."""

from __future__ import annotations

from aigrid.core.types import Endpoint, EndpointState, GeoPoint, GridView, ModelInfo, Site

CITIES = {
    "frankfurt": GeoPoint(50.11, 8.68), "tokyo": GeoPoint(35.68, 139.69),
    "ashburn": GeoPoint(39.04, -77.49), "saopaulo": GeoPoint(-23.55, -46.63),
}
SITES = {
    "fra": Site("fra", "Frankfurt", CITIES["frankfurt"], "EU", power_budget_w=250, idle_power_w=60, peak_power_w=180),
    "nrt": Site("nrt", "Tokyo", CITIES["tokyo"], "JP"),
    "iad": Site("iad", "Ashburn", CITIES["ashburn"], "US"),
    "gru": Site("gru", "Sao Paulo", CITIES["saopaulo"], "BR"),
}
MODELS = {"small": ModelInfo("small", "fam", 1.0), "big": ModelInfo("big", "fam", 8.0)}


def endpoint(site: str, model: str = "small", *, price: float = 0.1, slots: int = 4) -> Endpoint:
    m = MODELS[model]
    return Endpoint(f"{site}-{model}", site, model, m.family, m.params_b, price, 2 * price,
                    max_concurrency=slots, prefill_tps=2000, decode_tps=50)


def view(endpoints: tuple[Endpoint, ...], states: dict[str, EndpointState] | None = None,
         prefix_owner: dict[str, str] | None = None) -> GridView:
    return GridView(SITES, endpoints, states or {}, prefix_owner or {}, MODELS)


FOUR = tuple(endpoint(s) for s in SITES)
