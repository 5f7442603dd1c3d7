"""One engine, the same arrivals, three ways: the simulator's engine model (engines/engine_model.py) on the virtual
clock as the simulator runs it; the same on the virtual clock advanced at every step as the emulator's token ticker
advances it; and the engine emulator (engines/emulator_model.EmulatedEngine) on the asyncio loop's wall clock, with
no HTTP. Prints each request's first token and end (seconds after the first arrival's origin) and the emulator's
lag behind the simulator in ms.

    PYTHONPATH=src .venv/bin/python scripts/parity_one_engine.py [ARRIVALS]

ARRIVALS is `time:prompt_tokens,...` (32 output tokens each); by default the six requests eu-west/0 received in
tests/parity's burst test as the simulator ran it (L40S, llama-3.1-8b of examples/sim/small.yaml). The first two
columns must agree to the microsecond (one model, whoever reads it in between); the emulator's lag is its event
loop's lateness (a few ms on an idle machine)."""

from __future__ import annotations

import asyncio
import sys

from aigrid.engines import engine_model
from aigrid.engines.emulator_model import EmulatedEngine, EmulatorConfig, Job, Sink
from aigrid.engines.step_cost import EnginePerf
from aigrid.sim.clock import EventLoop
from aigrid.sim.hardware import engine_perf

OUTPUT_TOKENS = 32
BURST_EU_WEST_0 = "0.4355:1000,0.6161:2000,1.0331:6000,1.2415:6000,2.0615:6000,2.6981:4000"
Times = dict[int, list[float]]


def parse(text: str) -> list[tuple[float, int]]:
    out = []
    for item in text.split(","):
        t, prompt = item.split(":")
        out.append((float(t), int(prompt)))
    return sorted(out)


def simulated(perf: EnginePerf, arrivals: list[tuple[float, int]], tick: bool) -> Times:
    """The engine model on the virtual clock; with `tick`, advanced at every step while a sequence decodes."""
    loop = EventLoop()
    times: Times = {}
    eng = engine_model.Engine(0, perf, loop, lambda j, t: times.__setitem__(j.rid, [t, -1.0]),
                              lambda j, t: times[j.rid].__setitem__(1, t), lambda _: None)

    def arrive(job: tuple[int, int]) -> None:
        eng.submit(engine_model.Job(job[0], job[1], OUTPUT_TOKENS, loop.now))

    def ticker(_: object) -> None:
        eng.advance(loop.now)
        if len(times) < len(arrivals) or any(end < 0 for _, end in times.values()):
            loop.after(eng.step_ms() / 1000.0, ticker)

    for i, (t, prompt) in enumerate(arrivals):
        loop.at(t, arrive, (i, prompt))
    if tick:
        loop.at(0.0, ticker)
    loop.run()
    return times


class _Times(Sink):
    def __init__(self, times: Times, i: int, loop: asyncio.AbstractEventLoop, t0: float) -> None:
        self.times, self.i, self.loop, self.t0 = times, i, loop, t0

    def token(self, job: Job) -> None:
        if job.generated == 1:
            self.times[self.i] = [self.loop.time() - self.t0, -1.0]

    def finish(self, job: Job) -> None:
        self.times[self.i][1] = self.loop.time() - self.t0


async def emulated(perf: EnginePerf, arrivals: list[tuple[float, int]]) -> tuple[Times, float]:
    """The engine emulator on the wall clock; also the median lateness of a 10 ms timer meanwhile (ms)."""
    loop = asyncio.get_running_loop()
    engine = EmulatedEngine(EmulatorConfig.from_perf(perf, "m"))
    times: Times = {}
    t0 = loop.time() + 0.05

    def arrive(i: int, prompt: int) -> None:
        engine.submit(Job(prompt, OUTPUT_TOKENS, _Times(times, i, loop, t0), loop.time()))

    for i, (t, prompt) in enumerate(arrivals):
        loop.call_at(t0 + t, arrive, i, prompt)
    late: list[float] = []
    while len(times) < len(arrivals) or any(end < 0 for _, end in times.values()):
        before = loop.time()
        await asyncio.sleep(0.01)
        late.append((loop.time() - before - 0.01) * 1000.0)
    return times, sorted(late)[len(late) // 2]


def main() -> None:
    arrivals = parse(sys.argv[1] if len(sys.argv) > 1 else BURST_EU_WEST_0)
    perf = engine_perf("l40s", 8.03, 131072)
    sim, ticked = simulated(perf, arrivals, False), simulated(perf, arrivals, True)
    emu, late_ms = asyncio.run(emulated(perf, arrivals))
    print(f"one {perf.hardware} engine, {len(arrivals)} requests of {OUTPUT_TOKENS} output tokens; "
          f"emulator's event loop late by {late_ms:.1f} ms (median)")
    print("req  arrive prompt |  simulated     |  sim, ticked   |  emulated      | emulator lag ms")
    print("                   |  first   end   |  first   end   |  first   end   |  first    end")
    for i, (t, prompt) in enumerate(arrivals):
        (sf, se), (tf, te), (ef, ee) = sim[i], ticked[i], emu[i]
        print(f"{i:3} {t:7.3f} {prompt:6} | {sf:6.3f} {se:6.3f} | {tf:6.3f} {te:6.3f} | {ef:6.3f} {ee:6.3f} | "
              f"{(ef - sf) * 1000:+6.1f} {(ee - se) * 1000:+6.1f}")
    worst = max(abs(a - b) for i in sim for a, b in zip(sim[i], ticked[i], strict=True))
    print(f"simulated vs ticked: largest difference {worst * 1e6:.3f} us")


if __name__ == "__main__":
    main()
