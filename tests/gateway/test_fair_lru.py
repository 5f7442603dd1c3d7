"""gateway/fair_lru.py: over budget, the tenant holding the most loses its oldest record; a quiet tenant keeps
its records whatever a noisy one writes (and through the in-memory stores that use it)."""

from __future__ import annotations

from aigrid.gateway.conversation_store import ConversationStore, StoredConversation
from aigrid.gateway.fair_lru import FairLru
from aigrid.gateway.response_store import Pending, ResponseStore, StoredResponse


def test_one_tenant_is_a_plain_lru_and_the_newest_record_stays() -> None:
    lru: FairLru[str] = FairLru(30)
    for i in range(4):
        lru.put("a", f"r{i}", f"v{i}", 10)
    assert [lru.get("a", f"r{i}") for i in range(4)] == [None, "v1", "v2", "v3"] and lru.size == 30
    lru.resize("a", "r1", 5)  # written again: now the newest, so r2 goes
    assert lru.get("a", "r2") is None and lru.get("a", "r1") == "v1" and lru.size == 25
    lru.put("a", "big", "huge", 100)  # alone over budget: the others go, the one being written stays
    assert len(lru) == 1 and lru.get("a", "big") == "huge"


def test_a_noisy_tenant_evicts_its_own_records_not_a_quiet_ones() -> None:
    lru: FairLru[int] = FairLru(100)
    for i in range(3):
        lru.put("quiet", f"q{i}", i, 10)
    for i in range(50):
        lru.put("noisy", f"n{i}", i, 10)
    assert [lru.get("quiet", f"q{i}") for i in range(3)] == [0, 1, 2]
    assert sum(lru.get("noisy", f"n{i}") is not None for i in range(50)) == 7 and lru.size == 100
    assert lru.get("noisy", "n49") == 49 and ("noisy", "n0") not in lru
    assert lru.pop("quiet", "q0") == 0 and lru.size == 90 and len(lru) == 9


def test_the_stores_keep_a_quiet_tenants_conversations_and_responses() -> None:
    convs = ConversationStore(max_bytes=5_000)
    convs.create(StoredConversation("conv_quiet", "quiet", 1, items=[{"type": "message", "content": "hello"}]))
    for i in range(200):
        convs.create(StoredConversation(f"conv_{i}", "noisy", 1, items=[{"type": "message", "content": "x" * 100}]))
    assert convs.get("quiet", "conv_quiet") is not None and convs.get("noisy", "conv_0") is None
    assert convs.get("noisy", "conv_199") is not None

    responses = ResponseStore(max_bytes=5_000, max_pending=10)
    keep = StoredResponse("resp_quiet", "quiet", "EU", "fra", {}, turn=[{"role": "user", "content": "hi"}])
    assert responses.put(keep, None)
    for i in range(200):
        responses.put(StoredResponse(f"resp_{i}", "noisy", "EU", "fra", {},
                                     turn=[{"role": "user", "content": "y" * 100}]), None)
    assert responses.get("quiet", "resp_quiet") is not None and responses.get("noisy", "resp_0") is None
    responses.add_pending(Pending("resp_bg", "quiet", "m", 1))
    for i in range(50):
        responses.add_pending(Pending(f"resp_bg{i}", "noisy", "m", 1))
    assert responses.lookup("quiet", "resp_bg") is not None and responses.lookup("noisy", "resp_bg0") is None
