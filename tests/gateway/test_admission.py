"""The gateway's admission queue on its own (gateway/admission.py), with a clock the test moves: a request
that waited is sent only where it can still meet what is left of its SLO (core.urgency.verdict)."""

from __future__ import annotations

import asyncio
import random

from aigrid.core.policies import BUILTIN_POLICIES
from aigrid.core.scheduler import schedule
from aigrid.core.types import Decision, EndpointState, RequestInfo
from aigrid.core.urgency import AdmissionRules
from aigrid.gateway.admission import Admission, Ticket
from aigrid.gateway.metrics import GatewayMetrics
from tests.core.grid import CITIES, endpoint, view

BALANCED = BUILTIN_POLICIES["balanced"]
GRID = (endpoint("fra", slots=4),)
FULL = {"fra-small": EndpointState(running=4, waiting=8)}  # seconds of queue: a fresh request waits
SHORT = {"fra-small": EndpointState(running=4, waiting=1)}  # a short queue: a fresh request would be sent


async def test_a_request_that_waited_goes_only_once_it_meets_what_is_left_of_its_slo() -> None:
    now = [100.0]
    state = [FULL]
    admission = Admission(AdmissionRules(), lambda: now[0], GatewayMetrics(), poll_s=3600.0)
    info = RequestInfo(id="r1", model="small", prompt_tokens=200, max_output_tokens=128,
                       client_location=CITIES["frankfurt"])

    def decide(request: RequestInfo) -> Decision:
        return schedule(request, view(GRID, state[0]), BALANCED, random.Random(0))

    slo = BALANCED.ttft_slo_ms
    state[0] = SHORT
    short = decide(info).chosen
    assert short is not None and 0 < short.prediction.ttft_ms < slo  # fresh, it would be sent here
    state[0] = FULL
    task = asyncio.create_task(admission.admit(info, decide, Ticket("t", 5, None), now[0], slo))
    await asyncio.sleep(0)
    assert not task.done() and len(admission.queue) == 1

    # It has waited so long that even the optimistic end of the short queue's prediction no longer fits in
    # the rest of its SLO.
    now[0] += (slo - short.prediction.ttft_p10_ms + 50.0) / 1000.0
    state[0] = SHORT
    admission.drain()
    await asyncio.sleep(0)
    assert not task.done() and len(admission.queue) == 1

    state[0] = {}  # the engine emptied: nothing ahead, it goes
    admission.drain()
    decision = await asyncio.wait_for(task, 30)  # at once (30 s for a loaded machine)
    assert decision.chosen is not None and decision.chosen.endpoint_id == "fra-small"
    assert len(admission.queue) == 0
