"""Compile the routing core (src/aigrid/core/) with mypyc, in place: an extension module beside each .py.

    python scripts/build_core.py           # compile (what `make install` runs; `make core` alone)
    python scripts/build_core.py --clean   # remove the compiled modules: the pure-Python core runs

The compiled modules decide exactly as the Python source does (docs/simulator.md, "The compiled core") at
about 40% fewer machine instructions per decision. Nothing requires them: without a C compiler, Python's
headers or mypy (the `dev` extra) this prints one line and leaves the pure-Python core in place, and
AIGRID_PURE=1 runs the pure-Python core with a build present.

Beside them it writes src/aigrid/core/_compiled.txt, the SHA-256 of every .py of the core at build time.
aigrid/core/__init__.py (never compiled) compares it at import: when any source has changed since, it says
so on stderr and imports the .py sources instead, so an edit is never shadowed by stale compiled code.
"""

from __future__ import annotations

import argparse
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

COMPILED = (
    "calibration", "context", "geo", "picker", "predict", "right_size", "scheduler", "urgency",
    "filters/capacity", "filters/health", "filters/model", "filters/quality", "filters/residency",
    "filters/tenant",
    "scorers/affinity", "scorers/cost", "scorers/headroom", "scorers/proximity", "scorers/ttft",
)
"""The modules on a decision's path. Left as Python: types.py (the records every layer builds, pickles and
copies: a compiled frozen dataclass cannot be pickled or deep-copied, and it coerces an int given for a float
field), plugins.py (the protocols a plugin may subclass; a compiled protocol cannot be subclassed), compiling.py
(mypyc_attr, or its stand-in without mypy), the registry, the baselines, the policies and the fair queue
(not per candidate). The compiled plugin classes are marked for Python subclasses (core/compiling.py)."""


def sources() -> list[Path]:
    """Every .py of the core: the manifest covers the interpreted ones too (the compiled code was checked
    against their types)."""
    return sorted(CORE.rglob("*.py"))


def artefacts() -> list[Path]:
    return [p for p in CORE.rglob("*") if p.is_file() and any(p.name.endswith(s) for s in EXTENSION_SUFFIXES)]


def clean() -> int:
    gone = artefacts()
    for p in gone:
        p.unlink()
    MANIFEST.unlink(missing_ok=True)
    return len(gone)


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
        print(f"aigrid: not compiling the routing core: {reason}; the pure-Python core runs (same decisions)"
              + (f"; removed the previous build ({old} files)" if old else ""))
        return 0
    from mypyc.build import mypycify
    from setuptools import setup

    started = time.monotonic()
    clean()
    os.chdir(SRC)  # mypyc names modules by their path from here; build_ext --inplace writes beside them
    paths = [f"aigrid/core/{m}.py" for m in COMPILED]
    try:
        modules = mypycify(paths, opt_level="3", group_name=GROUP, target_dir=str(BUILD))
        setup(name="aigrid-core-compiled", ext_modules=modules, py_modules=[],
              script_args=["-q", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp"),
                           "--build-lib", str(BUILD / "lib"),
                           "--parallel", str(os.cpu_count() or 1)])
    except (SystemExit, Exception) as exc:  # noqa: BLE001 (a failed build must leave no half of one behind)
        clean()
        print(f"aigrid: compiling the routing core failed ({exc}); removed the partial build. "
              "`make install COMPILE=0` skips it.", file=sys.stderr)
        return 1
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(CORE).as_posix()}" for p in sources()]
    MANIFEST.write_text("\n".join(lines) + "\n")
    print(f"aigrid: compiled the routing core ({len(COMPILED)} modules, mypyc) in {time.monotonic() - started:.0f} s; "
          "AIGRID_PURE=1 runs the pure-Python core")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules and their manifest")
    args = ap.parse_args()
    if args.clean:
        print(f"aigrid: removed {clean()} compiled module files; the pure-Python core runs")
        return
    sys.exit(build())


if __name__ == "__main__":
    main()
