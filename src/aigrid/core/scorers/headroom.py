"""Axis 4, capacity and power headroom: the scarcest of free batch slots, free KV cache, free power.

Power draw comes from DCGM (EndpointState.power_source == "dcgm") where the site exports it; otherwise it
is estimated as idle + (peak - idle) x utilization from the site's hardware profile, and the note says so.
A site without a power budget is not limited by power.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigrid.core.compiling import mypyc_attr
from aigrid.core.plugins import Context, Score, clamp01
from aigrid.core.types import Endpoint, EndpointState, Prediction, Site


def slot_utilization(endpoint: Endpoint, state: EndpointState) -> float:
    slots = endpoint.max_concurrency
    return (state.running + state.waiting) / (1 if 1 > slots else slots)  # max(slots, 1): see core/predict.py


def power_draw_w(site: Site, endpoint: Endpoint, state: EndpointState,
                 util: float | None = None) -> tuple[float | None, str]:
    """The draw DCGM reports, else the estimate from slot utilization (`util`: slot_utilization, when the
    caller has it)."""
    if state.power_w is not None:
        return state.power_w, state.power_source
    if site.peak_power_w <= 0:
        return None, "none"
    util = clamp01(slot_utilization(endpoint, state) if util is None else util)
    return site.idle_power_w + (site.peak_power_w - site.idle_power_w) * util, "estimated"


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class HeadroomScorer:
    axis: str = "headroom"

    def score(self, ctx: Context, endpoint: Endpoint, state: EndpointState, prediction: Prediction) -> Score:
        site = ctx.view.sites[endpoint.site_id]
        util = slot_utilization(endpoint, state)
        free = clamp01(1.0 - util)
        note = "slots {:.2f}"
        args: tuple[object, ...] = (free,)
        if state.kv_usage is not None:
            kv = clamp01(1.0 - state.kv_usage)
            note, args = note + " kv {:.2f}", (*args, kv)
            if kv < free:  # min(free, kv)
                free = kv
        if site.power_budget_w > 0:
            draw, source = power_draw_w(site, endpoint, state, util)
            if draw is not None:
                power = clamp01(1.0 - draw / site.power_budget_w)
                note, args = note + " power(" + source + ") {:.2f}", (*args, power)
                if power < free:  # min(free, power)
                    free = power
        return free, note, args
