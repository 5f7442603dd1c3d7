"""The optional compiled simulator (scripts/build_core.py, docs/simulator.md "The compiled simulator"): its
modules' extensions shadow their sources, so aigrid/sim/__init__.py imports the sources whenever a source
they were type-checked against has changed since the build, and whenever AIGRID_PURE is set."""

from __future__ import annotations

import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import aigrid.core as core
import aigrid.sim as sim
from tests.core.test_compiled import assert_pure_imports

ROOT = Path(__file__).resolve().parents[2]


def test_a_source_it_imports_changed_or_one_of_the_simulator_added_since_the_build_is_stale(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    (tmp_path / "core").mkdir()
    files = {"sim/runner.py": "x = 1\n", "core/types.py": "y = 2\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    root = tmp_path / "sim"
    assert core.stale_sources(root, tmp_path) == [core.MANIFEST]  # no manifest: never trust the build
    (root / core.MANIFEST).write_text("".join(f"{sha256(t.encode()).hexdigest()}  {n}\n" for n, t in files.items()))
    assert core.stale_sources(root, tmp_path) == []
    (tmp_path / "core" / "types.py").write_text("y = 3\n")  # outside the simulator, but compiled against
    assert core.stale_sources(root, tmp_path) == ["core/types.py"]
    (tmp_path / "core" / "types.py").write_text("y = 2\n")
    (root / "new.py").write_text("")
    assert core.stale_sources(root, tmp_path) == ["sim/new.py"]
    (root / "new.py").unlink()
    (root / "runner.py").unlink()
    assert core.stale_sources(root, tmp_path) == ["sim/runner.py"]


def test_the_build_depends_on_what_the_compiled_modules_import() -> None:
    out = subprocess.run([sys.executable, "scripts/build_core.py", "--sources"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    for name in ("src/aigrid/sim/runner.py", "src/aigrid/sim/__init__.py", "src/aigrid/core/types.py",
                 "src/aigrid/core/scheduler.py", "src/aigrid/engines/engine_model.py",
                 "src/aigrid/telemetry/inflight.py", "src/aigrid/sim/experiment.py", "src/aigrid/engines/__init__.py",
                 "src/aigrid/engines/emulator_model.py", "src/aigrid/engines/step_cost.py"):
        assert name in out, name


def test_aigrid_pure_imports_the_simulator_s_sources() -> None:
    assert_pure_imports("aigrid.sim", "aigrid.sim.runner", "aigrid.sim.clock")


def test_the_build_this_process_runs_is_known() -> None:
    assert sim.BUILD in ("compiled", "pure", "stale")


def test_aigrid_pure_imports_the_engine_model_s_source() -> None:
    """The engine model is compiled in a group of its own, guarded by aigrid/engines/__init__.py (the engine
    emulator imports it without the simulator)."""
    assert_pure_imports("aigrid.engines", "aigrid.engines.engine_model")


def test_the_engine_emulator_s_job_subclasses_the_engine_model_s_compiled_or_not() -> None:
    """engine_model.Job is marked for Python subclasses (compiled, a class refuses them otherwise): the
    emulator's Job adds its sink and the engine calls back with it."""
    from aigrid.engines import engine_model
    from aigrid.engines.emulator_model import Job
    from aigrid.engines.step_cost import EnginePerf

    class Clock:
        now = 0.0
        calls: list = []

        def at(self, when: float, handler: object, arg: object = None) -> None:
            self.calls.append((when, handler, arg))

    seen: list[object] = []
    perf = EnginePerf("x", 10.0, 0.1, 0.0001, 0.05, 1.0, 2048, 8, 100_000, 0.1, 0.2, 100.0, 300.0)
    clock = Clock()
    engine = engine_model.Engine(0, perf, clock, lambda job, now: seen.append(job), lambda job, now: None,
                                 lambda i: None)
    job = Job(100, 5, sink=None, arrived=0.0)  # type: ignore[arg-type]
    engine.submit(job)
    when, handler, arg = clock.calls[-1]
    clock.now = when
    handler(arg)
    assert seen == [job] and isinstance(seen[0], Job) and seen[0].sink is None and job.prompt_tokens == 100


def test_the_engine_s_step_cost_is_the_perf_record_s_bit_for_bit() -> None:
    """Engine.step_ms writes EnginePerf.step_ms out (compiled, without a Python call per event): the same
    float for every batch, context and prefill chunk."""
    import random

    from aigrid.engines import engine_model
    from aigrid.engines.step_cost import EnginePerf

    rng = random.Random(5)
    for _ in range(2000):
        perf = EnginePerf("x", rng.uniform(1, 40), rng.uniform(0, 1), rng.uniform(0, 1e-3), rng.uniform(0, 0.2),
                          rng.uniform(0, 5), rng.choice([512, 2048, 8192]), 256, 10**6, 0.1, 0.2, 100.0, 300.0)
        engine = engine_model.Engine(0, perf, None, None, None, None)  # type: ignore[arg-type]
        engine.decoding = [(0.0, k, None) for k in range(rng.randrange(0, 40))]  # type: ignore[misc]
        engine.ctx = rng.uniform(0, 1e6)
        if rng.random() < 0.7:
            engine.prefill.append(engine_model.Job(0, rng.randrange(1, 20_000), 10, 0.0))
            engine.prefill_tokens = rng.uniform(0, 30_000)
        chunk = engine._chunk()
        assert engine.step_ms() == perf.step_ms(len(engine.decoding), engine.ctx, chunk)
