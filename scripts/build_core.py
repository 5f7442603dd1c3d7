"""Compile the routing core (src/aigrid/core/), the simulator's hot modules (src/aigrid/sim/) and the engine
model (src/aigrid/engines/engine_model.py) with mypyc, in place: an extension module beside each .py.

    python scripts/build_core.py           # compile (what `make install` runs; `make core` alone)
    python scripts/build_core.py --clean   # remove the compiled modules: the pure-Python core and simulator run
    python scripts/build_core.py --sources # the sources the build depends on (make's prerequisites)

The compiled modules decide exactly as the Python source does (docs/simulator.md, "The compiled core") at
about 40% fewer machine instructions per decision. Nothing requires them: without a C compiler, Python's
headers or mypy (the `dev` extra) this prints one line and leaves the pure-Python core in place, and
AIGRID_PURE=1 runs the pure-Python core with a build present.

Beside them it writes src/aigrid/core/_compiled.txt, the SHA-256 of every .py of the core at build time.
aigrid/core/__init__.py (never compiled) compares it at import: when any source has changed since, it says
so on stderr and imports the .py sources instead, so an edit is never shadowed by stale compiled code.
The simulator's build is a group of its own (its compiled code calls the core as Python, compiled or not)
with its own manifest, src/aigrid/sim/_compiled.txt: the SHA-256 of every source of aigrid the compiled
simulator modules import, directly or not (they were type-checked against them), which
aigrid/sim/__init__.py (never compiled) checks the same way (docs/simulator.md, "The compiled simulator"); the
engine model's group likewise, with src/aigrid/engines/_compiled.txt, checked by aigrid/engines/__init__.py,
and the in-flight ledger's and prefill book's, with src/aigrid/telemetry/_compiled.txt, checked by
aigrid/telemetry/__init__.py.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import shutil
import sys
import sysconfig
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CORE = SRC / "aigrid" / "core"
MANIFEST = CORE / "_compiled.txt"
BUILD = ROOT / "build" / "mypyc"
GROUP = "aigrid.core._compiled"
"""mypyc's shared library for the group: src/aigrid/core/_compiled__mypyc.*.so, beside the modules."""
SIM = SRC / "aigrid" / "sim"
SIM_GROUP = "aigrid.sim._compiled"

COMPILED = (
    "baselines", "calibration", "context", "geo", "picker", "predict", "right_size", "scheduler", "types", "urgency",
    "filters/capacity", "filters/context", "filters/health", "filters/model", "filters/quality", "filters/residency",
    "filters/tenant",
    "scorers/affinity", "scorers/cost", "scorers/headroom", "scorers/proximity", "scorers/ttft",
)
"""The modules on a decision's path, the baselines' included (the simulator runs them at every decision of a
baseline policy; compiled, their frozen routers cannot be copied, so the simulator shares them between its
gateways instead: sim/runner.py's _own), and types.py (the records every layer builds: compiled, their frozen
dataclasses are native classes, whose fields the core reads directly instead of through Python's generic
attribute lookup; they pickle and copy through their own __reduce__, types.reduce_record). Left as Python:
plugins.py (the protocols a plugin may subclass; a compiled protocol cannot be subclassed), compiling.py
(mypyc_attr, or its stand-in without mypy), the registry, the policies and the fair queue (not per
candidate). The compiled plugin classes are marked for Python subclasses (core/compiling.py)."""


SIM_COMPILED = ("clock", "gateway", "regional", "runner", "shared_state")
"""The simulator's modules on the per-event path: the event loop, what the gateways see (the view, the
ledgers, the calibration folds), the candidate lists and the run itself. The rest of the simulator (scenario,
workload, grid, metrics, reports, the worker processes) runs once per run or per experiment, or is pickled
(RunResult and Arrivals, in runner.py, are plain dataclasses: mypyc_attr(native_class=False))."""
SIM_MANIFEST = SIM / "_compiled.txt"

ENGINES = SRC / "aigrid" / "engines"
ENGINES_GROUP = "aigrid.engines._compiled"
ENGINES_COMPILED = ("engine_model",)
"""The engine model (continuous batching, one per endpoint: a third of the events of a baseline's run), a group
of its own, guarded by aigrid/engines/__init__.py: the engine emulator imports it without the simulator, and
subclasses its Job in Python (marked for it). step_cost.py stays Python: its EnginePerf records are pickled
with the grid (a compiled frozen dataclass is not)."""
ENGINES_MANIFEST = ENGINES / "_compiled.txt"

TELEMETRY = SRC / "aigrid" / "telemetry"
TELEMETRY_GROUP = "aigrid.telemetry._compiled"
TELEMETRY_COMPILED = ("inflight", "prefill_book")
"""The in-flight ledger and the prefill book (per send, first token and end, and per candidate of every
decision in the simulator's view), a group of their own, guarded by aigrid/telemetry/__init__.py: the live
gateway imports them without the simulator. The rest of telemetry (the store, the shared state, Redis, the
periodic tasks) stays Python."""
TELEMETRY_MANIFEST = TELEMETRY / "_compiled.txt"


def sources() -> list[Path]:
    """Every .py of the core: the manifest covers the interpreted ones too (the compiled code was checked
    against their types)."""
    return sorted(CORE.rglob("*.py"))


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_sources(paths: list[Path]) -> list[Path]:
    """`paths` and every source of aigrid they import, directly or not, with the packages' __init__.py on the
    way (read from the source: `import aigrid...` and `from aigrid... import ...`, wherever they stand)."""
    seen: set[Path] = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        parts = path.relative_to(SRC).parts
        todo += [init for k in range(1, len(parts)) if (init := SRC.joinpath(*parts[:k], "__init__.py")).is_file()]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("aigrid"):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "aigrid"]
            todo += [found for name in names if (found := _module_file(name)) is not None]
    return sorted(seen)


def sim_sources() -> list[Path]:
    """What the compiled simulator depends on: its modules' sources and every source of aigrid they import,
    plus every .py of the simulator (so that one added there shows in the manifest)."""
    return sorted(set(imported_sources([SIM / f"{m}.py" for m in SIM_COMPILED])) | set(SIM.glob("*.py")))


def engine_sources() -> list[Path]:
    """What the compiled engine model depends on: its source and every source of aigrid it imports, plus every
    .py of aigrid/engines (its guard checks them all)."""
    return sorted(set(imported_sources([ENGINES / f"{m}.py" for m in ENGINES_COMPILED])) | set(ENGINES.rglob("*.py")))


def telemetry_sources() -> list[Path]:
    """What the compiled ledger and book depend on: their sources and every source of aigrid they import, plus
    every .py of aigrid/telemetry (its guard checks them all)."""
    return sorted(set(imported_sources([TELEMETRY / f"{m}.py" for m in TELEMETRY_COMPILED]))
                  | set(TELEMETRY.rglob("*.py")))


def artefacts() -> list[Path]:
    return [p for folder in (CORE, SIM, ENGINES, TELEMETRY) for p in folder.rglob("*")
            if p.is_file() and any(p.name.endswith(s) for s in EXTENSION_SUFFIXES)]


def clean() -> int:
    gone = artefacts()
    for p in gone:
        p.unlink()
    MANIFEST.unlink(missing_ok=True)
    SIM_MANIFEST.unlink(missing_ok=True)
    ENGINES_MANIFEST.unlink(missing_ok=True)
    TELEMETRY_MANIFEST.unlink(missing_ok=True)
    return len(gone)


def _manifest(paths: list[Path], base: Path) -> str:
    return "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(base).as_posix()}\n" for p in paths)


def why_not() -> str | None:
    """Why this machine cannot compile (None: it can)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(cc.split()[0]) is None:
        return f"no C compiler ({cc.split()[0]})"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypy is not installed (pip install -e '.[dev]')"
    return None


def build() -> int:
    reason = why_not()
    if reason is not None:
        old = clean()  # a build this machine cannot redo is one the sources may have moved past
        print(f"aigrid: not compiling the routing core and simulator: {reason}; the pure-Python ones run "
              "(same decisions)"
              + (f"; removed the previous build ({old} files)" if old else ""))
        return 0
    from mypyc.build import mypycify
    from setuptools import setup

    started = time.monotonic()
    clean()
    # the sources' hashes as mypyc is about to read them: a source edited during the build (minutes on a loaded
    # machine) then reads as newer than the build, which is not used, rather than recorded as compiled
    manifests = {MANIFEST: _manifest(sources(), CORE), SIM_MANIFEST: _manifest(sim_sources(), SRC / "aigrid"),
                 ENGINES_MANIFEST: _manifest(engine_sources(), SRC / "aigrid"),
                 TELEMETRY_MANIFEST: _manifest(telemetry_sources(), SRC / "aigrid")}
    os.chdir(SRC)  # mypyc names modules by their path from here; build_ext --inplace writes beside them
    paths = [f"aigrid/core/{m}.py" for m in COMPILED]
    sim_paths = [f"aigrid/sim/{m}.py" for m in SIM_COMPILED]
    try:
        modules = mypycify(paths, opt_level="3", group_name=GROUP, target_dir=str(BUILD))
        # the simulator's group apart: compiled without the core, its code calls the core as Python (compiled,
        # pure or stale, whichever aigrid/core/__init__.py chose); the modules it imports are type-checked
        # (silently: their own typing is not this build's business) and recorded in its manifest
        modules += mypycify([*sim_paths, "--follow-imports=silent", "--ignore-missing-imports"], opt_level="3",
                            group_name=SIM_GROUP, target_dir=str(BUILD / "sim"))
        # the engine model apart too (the simulator calls it as Python): the emulator imports it on its own
        modules += mypycify([*(f"aigrid/engines/{m}.py" for m in ENGINES_COMPILED), "--follow-imports=silent",
                             "--ignore-missing-imports"], opt_level="3", group_name=ENGINES_GROUP,
                            target_dir=str(BUILD / "engines"))
        # the ledger and the prefill book apart too (the simulator and the gateway call them as Python)
        modules += mypycify([*(f"aigrid/telemetry/{m}.py" for m in TELEMETRY_COMPILED), "--follow-imports=silent",
                             "--ignore-missing-imports"], opt_level="3", group_name=TELEMETRY_GROUP,
                            target_dir=str(BUILD / "telemetry"))
        setup(name="aigrid-core-compiled", ext_modules=modules, py_modules=[],
              script_args=["-q", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp"),
                           "--build-lib", str(BUILD / "lib"),
                           "--parallel", str(os.cpu_count() or 1)])
    except (SystemExit, Exception) as exc:  # noqa: BLE001 (a failed build must leave no half of one behind)
        clean()
        print(f"aigrid: compiling the routing core failed ({exc}); removed the partial build. "
              "`make install COMPILE=0` skips it.", file=sys.stderr)
        return 1
    for manifest, text in manifests.items():
        manifest.write_text(text)
    print(f"aigrid: compiled the routing core ({len(COMPILED)} modules), the simulator ({len(SIM_COMPILED)}), "
          f"the engine model ({len(ENGINES_COMPILED)}) and the in-flight ledger ({len(TELEMETRY_COMPILED)}) "
          f"with mypyc in {time.monotonic() - started:.0f} s; AIGRID_PURE=1 runs the pure-Python ones")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules and their manifests")
    ap.add_argument("--sources", action="store_true", help="print the sources the build depends on")
    args = ap.parse_args()
    if args.clean:
        print(f"aigrid: removed {clean()} compiled module files; the pure-Python core and simulator run")
        return
    if args.sources:
        print(" ".join(p.relative_to(ROOT).as_posix()
                       for p in sorted({*sources(), *sim_sources(), *engine_sources(), *telemetry_sources()})))
        return
    sys.exit(build())


if __name__ == "__main__":
    main()
