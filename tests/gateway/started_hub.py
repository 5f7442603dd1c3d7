"""A hub (gateway/hub.py, what the workers of one gateway share) started for a test, on a Unix socket in a folder of
its own."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aigrid.gateway.hub import Hub


@asynccontextmanager
async def started_hub(prefix: str, **options: Any) -> AsyncIterator[Hub]:
    """A Hub of no audit log and Hub's keyword `options`, started on hub.sock in a new folder of the system's temporary
    one named from `prefix` (short: a Unix socket path holds about 100 bytes, which pytest's tmp_path may pass);
    stopped and its folder removed when the block ends."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    hub = Hub(work / "hub.sock", None, **options)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        shutil.rmtree(work, ignore_errors=True)
