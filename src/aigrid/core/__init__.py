"""The pure routing core. This module is never compiled: it guards the optional compiled build.

`make install` compiles the modules on a decision's path with mypyc (scripts/build_core.py): an extension
module beside each .py, which Python imports in its place. An extension beside a .py shadows it, so an edit
to the source would silently not run. Before any of the core is imported, this checks the build's manifest
(_compiled.txt: the SHA-256 of every .py of the core when it was compiled): when a source differs, or the
manifest is missing, it says so once on stderr and imports the .py sources instead (the same decisions,
slower). AIGRID_PURE=1 imports the .py sources without a word. `make core` rebuilds; `make clean-core`
removes the build.
"""

from __future__ import annotations

import os
import sys
from hashlib import sha256
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

_HERE = Path(__file__).parent
MANIFEST = "_compiled.txt"


def compiled_modules(root: Path = _HERE, package: str = __name__) -> dict[str, Path]:
    """Module name -> its .py, for each module of `package` (folder `root`, and its folders one level down)
    with a compiled extension beside its source."""
    out: dict[str, Path] = {}
    try:
        subpackages = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "__pycache__")
    except OSError:
        subpackages = []
    for folder in (root, *subpackages):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            for suffix in EXTENSION_SUFFIXES:
                if name.endswith(suffix):
                    source = folder / (name[: -len(suffix)] + ".py")
                    if source.exists():
                        parts = source.relative_to(root).with_suffix("").parts
                        out[".".join((package, *parts))] = source
                    break
    return out


def stale_sources(root: Path = _HERE, base: Path | None = None) -> list[str]:
    """The .py files that differ from the manifest written when the build of `root` was compiled (added,
    changed or removed since; the manifest itself when it is missing or unreadable): those it lists, named
    relative to `base` (default `root`), and every .py under `root`."""
    base = root if base is None else base
    try:
        recorded = dict(line.split("  ", 1)[::-1] for line in (root / MANIFEST).read_text().splitlines() if line)
    except (OSError, ValueError):
        return [MANIFEST]
    names = recorded.keys() | {p.relative_to(base).as_posix() for p in root.rglob("*.py")}
    return sorted(name for name in names
                  if not (base / name).is_file() or recorded.get(name) != sha256((base / name).read_bytes()).hexdigest())


class _Sources(MetaPathFinder):
    """Imports the .py source of each compiled module instead of its extension."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        source = self.modules.get(fullname)
        return None if source is None else spec_from_file_location(fullname, source)


def guard(package: str = __name__, root: Path = _HERE, base: Path | None = None,
          what: str = "routing core") -> str:
    """'compiled', 'pure' (nothing compiled, or AIGRID_PURE set) or 'stale' (the sources run) for the compiled
    build of `package` in folder `root` (its manifest's names relative to `base`). aigrid/sim/__init__.py
    guards the compiled simulator with it."""
    modules = compiled_modules(root, package)
    if not modules:
        return "pure"
    if os.environ.get("AIGRID_PURE", "") not in ("", "0"):
        sys.meta_path.insert(0, _Sources(modules))
        return "pure"
    stale = stale_sources(root, base)
    if not stale:
        return "compiled"
    sys.meta_path.insert(0, _Sources(modules))
    shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    print(f"{package}: the compiled {what} is out of date ({shown} changed since it was compiled); "
          "running the Python sources instead. `make core` rebuilds it, `make clean-core` removes it.",
          file=sys.stderr)
    return "stale"


BUILD = guard()
"""Which core this process runs: 'compiled', 'pure' or 'stale' (compiled but out of date: the sources run)."""
