"""A child process started on a port picked for it. free_port() picks a port that was free a moment ago and lets
it go: until the child binds it, another process can take it (on a busy machine every outgoing connection takes
its local port from the same range). Every test that hands a picked port to a child starts the child through
on_a_free_port(), which starts it again on a new port when it could not bind the first."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aigrid.engines.llama_server import free_port

T = TypeVar("T")
TRIES = 3
TAKEN = ("address already in use", "couldn't bind")
"""What a child says when its port was taken: the kernel's EADDRINUSE (Python, Go), llama-server's own words."""


def port_taken(text: str) -> bool:
    low = text.lower()
    return any(words in low for words in TAKEN)


def on_a_free_port(start: Callable[[int], T], *, pick: Callable[[], int] | None = None, tries: int = TRIES) -> T:
    """`start(port)` with a port `pick()`ed just before: it returns once its process serves there, or raises (its
    process stopped) with what the process said. Started again on a new port, up to `tries` times in all, when
    that says the port was taken; any other failure is raised at once. `pick`: free_port by default."""
    for attempt in range(1, tries + 1):
        port = (pick or free_port)()
        try:
            return start(port)
        except Exception as e:  # noqa: BLE001 (only a taken port is tried again; the rest is raised as it was)
            if attempt == tries or not port_taken(str(e)):
                raise
    raise AssertionError("not reached")
