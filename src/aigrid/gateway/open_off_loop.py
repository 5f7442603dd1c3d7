"""A file opened for reading in a thread, off the event loop, whose handle is never left to the garbage collector.

A cancel (the client gone) that lands while the thread opens the file cannot stop the thread: the handle it opens
after all is closed as soon as the thread hands it over (`_close_late`). Used by the Files API's downloads and
message batch results, the two responses that send a stored file from an open handle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO


async def open_off_loop(path: Path) -> BinaryIO:
    """`path` opened "rb" in a thread; an OSError (FileNotFoundError: deleted meanwhile) is the caller's."""
    pending = asyncio.ensure_future(asyncio.to_thread(path.open, "rb"))
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        pending.add_done_callback(_close_late)
        raise


def _close_late(done: asyncio.Future[Any]) -> None:
    """The handle a cancelled open's thread opened after all, closed (nothing when the open failed)."""
    if not done.cancelled() and done.exception() is None:
        done.result().close()
