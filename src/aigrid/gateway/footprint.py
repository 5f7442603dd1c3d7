"""What a record of the in-memory stores costs in this process's memory, in bytes: the unit of their budgets.

The stores (response_store.py, conversation_store.py) counted a record by its JSON length, but keep it as Python
objects: a stored response of 1.1 kB of JSON held 4.2 kB (tracemalloc), an empty conversation 4 bytes of JSON
for 464 bytes held, a background placeholder 512 bytes. A budget of "256 MiB" so held ~1 GiB of responses per
jurisdiction and, of conversations, some 30 GiB before it evicted anything: a client creating empty
conversations grew the process until it was killed (docs/reliability.md, "Memory over time").

`footprint(value)` walks a JSON-shaped value (dict, list, str, int, float, bool, None; a tuple as a list) and
sums `sys.getsizeof` of every container and value (a dict's keys are the same few strings in every record:
not counted), without de-duplicating shared objects: an estimate from
above (a key string shared between records counts in each), within ~10% of tracemalloc's figure for the
stores' records (tests/gateway/test_memory_stores.py). `RECORD` is what a record costs besides its values:
its dataclass, its id strings, and its place in the store's maps (FairLru: an OrderedDict entry and a tuple).
"""

from __future__ import annotations

import sys
from typing import Any

RECORD = 400
"""Bytes one record costs besides its values (measured: 464 for an empty conversation, all told)."""


def footprint(value: Any) -> int:
    size = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if v is None or v is True or v is False or (type(v) is int and -5 <= v <= 256):
            continue  # one object per process, whatever holds it
        size += sys.getsizeof(v)
        if isinstance(v, dict):
            stack.extend(v.values())  # keys: the same few strings in every record (literals, orjson's cache)
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return size
