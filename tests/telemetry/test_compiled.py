"""The optional compiled in-flight ledger and prefill book (scripts/build_core.py, TELEMETRY_COMPILED): a group of
their own, guarded by aigrid/telemetry/__init__.py, so the live gateway and the simulator run them compiled, or
their sources whenever one they were type-checked against has changed since the build, or AIGRID_PURE is set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aigrid.telemetry as telemetry
from aigrid.telemetry.prefill_book import PrefillBook
from tests.core.test_compiled import assert_pure_imports

ROOT = Path(__file__).resolve().parents[2]


def test_aigrid_pure_imports_the_ledger_s_and_book_s_sources() -> None:
    assert_pure_imports("aigrid.telemetry", "aigrid.telemetry.inflight", "aigrid.telemetry.prefill_book")


def test_the_build_this_process_runs_is_known() -> None:
    assert telemetry.BUILD in ("compiled", "pure", "stale")


def test_the_build_depends_on_the_ledger_the_book_and_what_they_import() -> None:
    out = subprocess.run([sys.executable, "scripts/build_core.py", "--sources"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    for name in ("src/aigrid/telemetry/__init__.py", "src/aigrid/telemetry/inflight.py",
                 "src/aigrid/telemetry/prefill_book.py", "src/aigrid/telemetry/store.py",
                 "src/aigrid/core/types.py"):
        assert name in out, name


def test_the_book_keeps_the_latest_anchor_compiled_or_not() -> None:
    """first_token compares the new anchor's time with the last one's (compiled, a tuple of floats is boxed
    afresh at each use: an identity test would never hold)."""
    book = PrefillBook()
    for rid, (arrives, produced) in enumerate([(1.0, 2.0), (1.5, 3.0), (0.5, 2.5), (2.0, 3.0)]):
        book.sent("e", rid, arrives, 10)
        book.first_token("e", rid, produced)
    assert book.anchor("e") == (3.0, 1.5)  # the latest first token; a tie (3.0) keeps the first
