"""Guard.start/stop (the gateway's lifespan) and what Guard reads of security.jwt at start."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from aigrid.gateway.app import build_gateway
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.fake_engine import FakeEngine


def _writers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "aigrid-audit-writer" and not t.done()]


async def test_a_second_start_opens_nothing_and_stop_closes_the_one_audit_log(
        tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """A test started the guard and then its app's lifespan started it again: each start built and opened an audit log
    of its own, and stop() closed the second only, the first's writer left running (twenty-third session)."""
    guard = build_gateway(spec_in(tmp_path), fakes, rng=random.Random(3), sleep=_no_sleep).guard
    await guard.start()
    first = guard.audit
    assert first is not None and len(_writers()) == 1
    await guard.start()
    assert guard.audit is first and len(_writers()) == 1
    await guard.stop()
    assert not first.accepting() and _writers() == []
