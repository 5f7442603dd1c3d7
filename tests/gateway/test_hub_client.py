"""hub_client.HubClient against a hub of other code (a worker started again after an upgrade on disk talks to the
running parent's hub)."""

import asyncio
from pathlib import Path
from typing import Any

from aigrid.gateway.hub_client import HubClient


def test_a_hub_that_answers_cancels_as_a_list_of_ids_is_read_as_cancels(tmp_path: Path) -> None:
    """A hub before 8b3971f4 answers response_cancelled with a list of ids; a newer worker's watcher read it with
    .items() (AttributeError, outside the watcher's except: its lease went unrenewed)."""
    client = HubClient(tmp_path / "hub.sock")
    answers: dict[str, Any] = {"old": ["r1", "r2"], "new": {"r1": "cancelled", "r2": "failed"}}

    async def ask(which: str) -> dict[str, str]:
        async def call(op: str, arg: Any, timeout: float = 0) -> Any:
            assert op == "response_cancelled" and arg == [["t", "r1"], ["t", "r2"]]
            return answers[which]

        client.call = call  # type: ignore[method-assign]
        return await client.response_cancelled([("t", "r1"), ("t", "r2")])

    assert asyncio.run(ask("old")) == {"r1": "cancelled", "r2": "cancelled"}
    assert asyncio.run(ask("new")) == {"r1": "cancelled", "r2": "failed"}
