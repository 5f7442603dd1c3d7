"""Telemetry: the gateway's store of engine states, its in-flight ledger, circuit breakers, the prefill book
and the state gateways share.

The in-flight ledger (inflight.py) and the prefill book (prefill_book.py) may be compiled
(scripts/build_core.py): the simulator's view reads them per candidate of every decision. This module (never
compiled) guards that build as aigrid/core/__init__.py guards the core's, before either is imported: when a
source they were type-checked against (or any .py here) has changed since, it says so on stderr and imports
the sources (the same answers, slower); AIGRID_PURE=1 imports them without a word.
"""

from pathlib import Path

from aigrid.core import guard

BUILD = guard(__name__, Path(__file__).parent, Path(__file__).parent.parent, "in-flight ledger")
"""Which ledger and book this process runs: 'compiled', 'pure' or 'stale' (compiled but out of date: the
sources run)."""
