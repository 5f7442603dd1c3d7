"""The in-memory stores hold what their budget says, in this process's memory (gateway/footprint.py).

Before, a record weighed its JSON length while it was held as Python objects: an empty conversation weighed
4 bytes and held 464, so a client creating empty conversations grew a gateway by ~30 GiB before the
"256 MiB" store evicted anything; stored responses held ~3.7 times their budget. Each test drives many
distinct records through a store with a small budget and measures what it really holds with tracemalloc.
"""

from __future__ import annotations

import gc
import secrets
import tracemalloc
from collections.abc import Callable
from typing import Any

from aigrid.gateway.conversation_store import ConversationStore, StoredConversation
from aigrid.gateway.footprint import footprint
from aigrid.gateway.response_store import Pending, ResponseStore, StoredResponse

BUDGET = 2 * 1024 * 1024


def held(build: Callable[[], Any]) -> tuple[Any, int]:
    """What `build()` returns, and the bytes it still holds once built."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        return kept, tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def _rid(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(24)}"


def response(i: int, tenant: str = "default") -> StoredResponse:
    rid = _rid("resp")
    final = {"id": rid, "object": "response", "created_at": 1, "status": "completed", "model": "emu",
             "output": [{"type": "message", "id": _rid("msg"), "status": "completed", "role": "assistant",
                         "content": [{"type": "output_text", "text": f" tok{i}" * 12, "annotations": []}]}],
             "usage": {"input_tokens": 5, "output_tokens": 12, "total_tokens": 17,
                       "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
             "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": 16,
             "parallel_tool_calls": True, "previous_response_id": None, "store": True, "temperature": 1.0,
             "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
             "truncation": "disabled", "user": f"user-{i}", "metadata": {"conversation": f"c{i}"}}
    turn = [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f" tok{i}" * 12}]
    inputs = [{"type": "message", "id": _rid("msg"), "role": "user",
               "content": [{"type": "input_text", "text": f"question {i}"}]}]
    return StoredResponse(rid, tenant, "EU", "s0", final, turn, inputs=inputs)


def test_empty_conversations_are_held_within_the_budget() -> None:
    n = 20_000  # ~9 MB held: all of them were kept before (4 bytes each of a 2 MiB budget)

    def build() -> ConversationStore:
        store = ConversationStore(max_bytes=BUDGET)
        for i in range(n):
            store.create(StoredConversation(_rid("conv"), f"tenant{i % 3}", 1, {} if i % 2 else {"k": f"v{i}"}))
        return store

    store, real = held(build)
    assert len(store) < n
    assert real <= BUDGET * 1.1, f"{len(store)} conversations hold {real} bytes for a budget of {BUDGET}"
    assert store._all.size <= BUDGET


def test_conversation_items_appended_and_deleted_keep_the_count_honest() -> None:
    store = ConversationStore(max_bytes=BUDGET)
    conv = store.create(StoredConversation(_rid("conv"), "t", 1))
    start = store._all.size
    added, _ = store.append("t", conv.id, [{"type": "message", "role": "user",
                                            "content": [{"type": "input_text", "text": "x" * 1000}]}]) or ([], None)
    assert store._all.size - start >= 1000
    assert store.delete_item("t", conv.id, added[0]["id"])
    assert store._all.size == start


def test_stored_responses_are_held_within_the_budget() -> None:
    n = 3_000  # ~12.7 MB held; before, ~1,900 of them (~8 MB) were kept for 2 MiB

    def build() -> ResponseStore:
        store = ResponseStore(max_bytes=BUDGET)
        for i in range(n):
            assert store.put(response(i, f"tenant{i % 2}"), None)
        return store

    store, real = held(build)
    assert real <= BUDGET * 1.1, f"{len(store._partitions['EU'])} responses hold {real} bytes for {BUDGET}"
    assert len(store._partitions["EU"]) >= BUDGET // (2 * 4_300)  # an estimate from above, not far above


def test_background_placeholders_stay_bounded_by_count() -> None:
    store = ResponseStore(max_pending=1_000)
    for i in range(5_000):
        store.add_pending(Pending(_rid("resp"), f"tenant{i % 4}", "emu", 1, settings={"max_output_tokens": 16}))
    assert len(store._pending) == 1_000


def test_footprint_counts_containers_and_values_once_each() -> None:
    assert footprint({}) > 0
    assert footprint({"text": "x" * 10_000}) > 10_000
    assert footprint([None, True, 3]) == footprint([0, 0, 0])  # shared singletons and small ints: not held
    assert footprint({"a": [1.5, "ab"]}) > footprint({"a": []})
