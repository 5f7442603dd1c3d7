"""An audit log whose disk hangs: its writer's next append waits until the test releases it (the tests of the audit
queue's bound and of its backlog in the metrics share this)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from aigrid.audit.log import AuditLog
from aigrid.gateway.app import Gateway


def stall_audit(gw: Gateway) -> tuple[threading.Event, threading.Event]:
    """(release, stuck): the audit writer's appends wait (up to 10 s) until `release` is set; `stuck` is set as soon
    as one waits."""
    audit = gw.guard.audit
    assert isinstance(audit, AuditLog)
    release, stuck = threading.Event(), threading.Event()
    real_append = audit.store.append

    def stalled(entries: Sequence[tuple[float, str]]) -> int:
        stuck.set()
        release.wait(10)  # the disk hangs
        return real_append(entries)

    audit.store.append = stalled  # type: ignore[method-assign]
    return release, stuck
