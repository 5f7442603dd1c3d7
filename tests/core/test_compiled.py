"""The optional compiled core (scripts/build_core.py, docs/simulator.md "The compiled core"): an extension
module beside a .py shadows it, so aigrid/core/__init__.py imports the sources whenever one has changed since
the build, and whenever AIGRID_PURE is set."""

from __future__ import annotations

import os
import subprocess
import sys
from hashlib import sha256
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import aigrid.core as core


def write_manifest(root: Path) -> None:
    """What scripts/build_core.py writes after a build."""
    lines = [f"{sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*.py"))]
    (root / core.MANIFEST).write_text("\n".join(lines) + "\n")


def test_a_source_changed_added_or_removed_since_the_build_is_stale(tmp_path: Path) -> None:
    (tmp_path / "scorers").mkdir()
    (tmp_path / "scheduler.py").write_text("x = 1\n")
    (tmp_path / "scorers" / "ttft.py").write_text("y = 2\n")
    assert core.stale_sources(tmp_path) == [core.MANIFEST]  # no manifest: never trust the build
    write_manifest(tmp_path)
    assert core.stale_sources(tmp_path) == []
    (tmp_path / "scorers" / "ttft.py").write_text("y = 3\n")
    assert core.stale_sources(tmp_path) == ["scorers/ttft.py"]
    (tmp_path / "scorers" / "ttft.py").write_text("y = 2\n")
    (tmp_path / "new.py").write_text("")
    assert core.stale_sources(tmp_path) == ["new.py"]
    (tmp_path / "new.py").unlink()
    (tmp_path / "scheduler.py").unlink()
    assert core.stale_sources(tmp_path) == ["scheduler.py"]


def test_the_compiled_modules_are_those_with_an_extension_beside_their_source(tmp_path: Path) -> None:
    ext = EXTENSION_SUFFIXES[0]
    (tmp_path / "filters").mkdir()
    for name in ("scheduler", "filters/tenant"):
        (tmp_path / f"{name}.py").write_text("")
        (tmp_path / f"{name}{ext}").write_bytes(b"")
    (tmp_path / "types.py").write_text("")
    (tmp_path / f"_compiled__mypyc{ext}").write_bytes(b"")  # mypyc's shared library: no source of its own
    assert core.compiled_modules(tmp_path) == {"aigrid.core.scheduler": tmp_path / "scheduler.py",
                                               "aigrid.core.filters.tenant": tmp_path / "filters" / "tenant.py"}


def assert_pure_imports(package: str, *modules: str) -> None:
    """With AIGRID_PURE=1 a fresh process runs `package` pure and imports each module from its .py source,
    silently (also tests/sim/test_compiled.py)."""
    code = (f"import {package} as p, " + ", ".join(f"{m} as m{i}" for i, m in enumerate(modules))
            + "; print(p.BUILD, " + ", ".join(f"m{i}.__file__" for i in range(len(modules))) + ")")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "AIGRID_PURE": "1"},
                         capture_output=True, text=True, check=True)
    build, *files = out.stdout.split()
    assert build == "pure" and len(files) == len(modules) and all(f.endswith(".py") for f in files), out.stdout
    assert out.stderr == ""


def test_aigrid_pure_imports_the_sources() -> None:
    assert_pure_imports("aigrid.core", "aigrid.core.scheduler", "aigrid.core.scorers.ttft")


def test_a_plugin_may_subclass_the_core_s_plugins_compiled_or_not() -> None:
    """The scorers, filters, pickers and Scheduler are marked for Python subclasses (core/compiling.py): a
    compiled class refuses them otherwise. The scheduler calls the subclass's override."""
    import random

    from aigrid.core.filters.capacity import HasCapacity
    from aigrid.core.picker import SloPicker
    from aigrid.core.plugins import Context, Filter, Verdict
    from aigrid.core.policies import BUILTIN_POLICIES
    from aigrid.core.scheduler import Profile, Scheduler, default_profile
    from aigrid.core.scorers.ttft import TtftScorer
    from aigrid.core.types import Endpoint, RequestInfo
    from tests.core.grid import FOUR, view

    class NotFra(HasCapacity):
        def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
            return Verdict(False, "no fra") if endpoint.site_id == "fra" else super().check(ctx, endpoint)

    class Flat(TtftScorer):
        def score(self, *args: object) -> tuple[float, str, tuple[object, ...]]:
            return 0.5, "flat", ()

    class Open(Filter):  # the protocols stay Python: an explicit subclass is allowed too
        name = "open"

        def applies(self, ctx: Context) -> bool:
            return False

        def check(self, ctx: Context, endpoint: Endpoint) -> Verdict:
            raise AssertionError("not applied")

    class Mine(Scheduler):
        pass

    base = default_profile()
    scorers = tuple(Flat() if s.axis == "ttft" else s for s in base.scorers)
    profile = Profile((*base.filters, NotFra(name="not-fra"), Open()), scorers, type("P", (SloPicker,), {})())
    d = Mine(profile)(RequestInfo("r", "small", 200), view(FOUR), BUILTIN_POLICIES["balanced"], random.Random(0))
    assert [(r.site_id, r.filter) for r in d.rejected] == [("fra", "not-fra")]
    assert d.ranked and all(c.scores["ttft"] == 0.5 for c in d.ranked)
