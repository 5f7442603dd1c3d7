"""scripts/plan_without.py --chunk: every site of a hardware runs the edited placement's checks with the prefill
chunk given, chunks the planner would not choose included (issue #16, the H100's chunk; docs/planning.md)."""

from __future__ import annotations

import pytest

from aigrid.plan.demand import load_demand
from tests.scripts.plan_scripts import DEMAND, SITES, plan_doc, script

without = script("plan_without", "plan_without_under_test")


def chunks(args: list[str]) -> dict[str, tuple[str, int]]:
    a = without.parse_args([str(DEMAND), "unused", *args])
    p = without.edited(a, load_demand(DEMAND), plan_doc())
    return {s.id: (s.hardware, s.chunk_tokens) for s in p.sites}


def test_every_site_of_the_hardware_gets_the_chunk_moved_and_added_ones_too() -> None:
    assert set(chunks([]).values()) == {("h100", 2048)}
    got = chunks(["--hardware", "eu-north-1=rtx-pro-6000", "--add", "eu-west-1=h100", "me-central-1=rtx-pro-6000",
                  "--chunk", "h100=8192"])
    assert got["eu-north-1"] == ("rtx-pro-6000", 1024) and got["me-central-1"] == ("rtx-pro-6000", 1024)
    assert {got[s] for s in SITES if s != "eu-north-1"} | {got["eu-west-1"]} == {("h100", 8192)}
    both = chunks(["--hardware", "eu-north-1=rtx-pro-6000", "--chunk", "h100=4096", "rtx-pro-6000=2048"])
    assert both["eu-north-1"] == ("rtx-pro-6000", 2048) and both["mx-central-1"] == ("h100", 4096)


@pytest.mark.parametrize(("arg", "message"), [
    ("b200=4096", "not hardware options of the demand: b200"),
    ("h100=32", "--chunk h100=32: a chunk is a whole number of tokens from 64 to 65536"),
    ("h100=4k", "--chunk h100=4k: a chunk is a whole number"),
])
def test_a_chunk_that_cannot_be_run_is_refused_naming_it(arg: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        chunks(["--chunk", arg])
