"""heap.settle(): start-up's objects frozen out of the collector's scans, the young generation collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from aigrid.gateway.heap import YOUNG_THRESHOLD, settle, settle_when_started


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_lives_and_still_collects_new_cycles(restore_gc: None) -> None:
    settle()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == YOUNG_THRESHOLD

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after settling is still found and freed
    del a, b
    assert gc.collect() >= 2


class _Server:
    def __init__(self, started: bool, should_exit: bool) -> None:
        self.started, self.should_exit = started, should_exit


async def test_settles_only_once_the_server_started(restore_gc: None) -> None:
    assert await settle_when_started(_Server(started=False, should_exit=True), poll_s=0) is False
    assert gc.get_freeze_count() == 0
    assert await settle_when_started(_Server(started=True, should_exit=False), poll_s=0) is True
    assert gc.get_freeze_count() > 0
