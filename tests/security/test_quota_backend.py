"""The in-process quota backend: its forgetting of ended windows stays cheap when every counter is live."""

from __future__ import annotations

from aigrid.security.quota_backend import Counter, MemoryQuotaBackend

DAY = 86_400.0


def _budget(user: int, amount: int = 10, now: float = 0.0) -> Counter:
    """A day's token budget of one key (a JWT's `sub`: one for each user of a tenant's identity provider)."""
    return Counter(f"q:{{t}}:key:jwt:user{user}:budget:0", amount, 1_000, now + DAY, DAY)


async def test_live_counters_past_the_bound_do_not_make_every_request_rebuild_the_table() -> None:
    """Past `max_counters` every request went through the whole table to forget ended windows, found none while
    all were live (a day's budget of each of a tenant's JWT users: one counter a user), and did it again on the
    next: at the default 100,000, 32 ms of the event loop per admission and per settlement (about 15 requests a
    second for the whole gateway). Now a pass that frees little waits for the table to double."""
    backend = MemoryQuotaBackend(max_counters=1_000)
    passes = 0
    expire = backend.expire

    def counted(now: float) -> None:
        nonlocal passes
        passes += 1
        expire(now)

    backend.expire = counted  # type: ignore[method-assign]
    for user in range(3_000):
        assert (await backend.consume([_budget(user)]))[0] is None
        await backend.adjust([_budget(user, -5)])
    assert passes <= 4, f"{passes} passes over the table for 3,000 requests"
    # nothing live was forgotten: every user's budget still holds what it was charged
    assert [await backend.value(_budget(u).key) for u in (0, 1_500, 2_999)] == [5, 5, 5]
    assert (await backend.consume([_budget(0, 996)]))[0] == 0  # 5 + 996 > 1,000: still refused


async def test_ended_windows_are_forgotten_once_past_the_bound() -> None:
    backend = MemoryQuotaBackend(max_counters=100)
    for user in range(100):
        await backend.consume([Counter(f"old{user}:rpm:0", 1, 10, 60.0, 60.0)])
    await backend.consume([Counter("new:rpm:2", 1, 10, 180.0, 60.0)])  # a later window: the old ones ended
    assert await backend.value("old0:rpm:0") == 0 and await backend.value("new:rpm:2") == 1
    assert len(backend._values) == 1
