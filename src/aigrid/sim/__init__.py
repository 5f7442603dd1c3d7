"""The simulator. This module is never compiled: it guards the optional compiled build of the simulator's hot
modules (scripts/build_core.py), as aigrid/core/__init__.py guards the core's.

Its manifest (_compiled.txt) holds the SHA-256 of every source the compiled modules were type-checked
against (every module of aigrid they import, directly or not, and every .py of the simulator). When one
differs, or the manifest is missing, it says so once on stderr and imports the simulator's .py sources
instead (the same decisions, slower); AIGRID_PURE=1 imports them without a word.
"""

from __future__ import annotations

from pathlib import Path

from aigrid.core import guard

_HERE = Path(__file__).parent

BUILD = guard(__name__, _HERE, _HERE.parent, "simulator")
"""Which simulator this process runs: 'compiled', 'pure' or 'stale' (compiled but out of date: the sources run)."""
