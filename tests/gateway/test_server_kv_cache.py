"""`aigrid up` holds the KV cache its embedded engines allocate at start against the machine's available memory
(gateway/server.check_kv_cache_fits; its reader, aigrid.memory, in tests/test_memory.py). The spec's bound on a model's context (10,485,760) catches three zeros too many,
not two: `context: 1310720` passed and each 2-slot engine allocated 56 GiB of KV cache, unsaid. The machine's memory
is never read here: a fake reader (a function, or meminfo and cgroup files written to tmp_path) says what it has."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from aigrid.engines.llama_server import KV_BYTES_PER_TOKEN, embedded_kv_cache, free_port
from aigrid.errors import SpecError
from aigrid.gateway.server import check_kv_cache_fits, run_grid
from aigrid.memory import MACHINE, Memory, available_memory
from aigrid.spec.load import parse_spec
from aigrid.spec.models import GridSpec
from tests.fake_machine import GIB, available, limited, machine

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def demo(context: int = 8192) -> GridSpec:
    raw = yaml.safe_load(DEMO.read_text())
    raw["models"]["smollm2-135m"]["context"] = context
    return parse_spec(raw, "grid.yaml")


def test_the_estimate_is_the_context_times_the_slots_of_each_embedded_engine() -> None:
    """One estimate for `aigrid spec check`'s line and for this check: the demo's 4 engines x 2 slots x 8192."""
    cache = embedded_kv_cache(demo())
    assert cache == {e: 8192 * 2 * KV_BYTES_PER_TOKEN for e in ("fra-smollm2", "iad-smollm2", "nrt-smollm2",
                                                               "gru-smollm2")}
    assert sum(cache.values()) == 1440 * 2**20  # the 1,440 MiB spec check prints for the demo


def test_a_context_with_two_zeros_too_many_is_refused_naming_the_field_and_the_figures() -> None:
    spec = demo(1_310_720)  # within the spec's bound: 131,072 typed with a zero too many... and one more
    with pytest.raises(SpecError) as e:
        check_kv_cache_fits(spec, "grid.yaml", lambda: Memory(20 * GIB, MACHINE))
    (problem,) = e.value.problems
    assert problem.startswith("models.smollm2-135m.context 1,310,720 tokens x 8 slots of its embedded engines: "
                              "225.0 GiB of KV cache allocated at start, more than the 20.0 GiB this machine has "
                              "available (MemAvailable, /proc/meminfo)"), problem
    assert "Lower the context" in problem and str(e.value).startswith("invalid grid spec grid.yaml:"), problem


@pytest.mark.parametrize(("context", "available"), [
    (8192, 20 * GIB),         # the demo: 1,440 MiB
    (131_072, 23 * GIB),      # 22.5 GiB: fits, just
    (1_310_720, None),        # not said (no /proc/meminfo): not checked
])
def test_a_cache_that_fits_or_memory_not_said_starts(context: int, available: int | None) -> None:
    check_kv_cache_fits(demo(context), "grid.yaml", lambda: None if available is None else Memory(available, MACHINE))


def test_a_grid_without_embedded_engines_does_not_read_the_memory() -> None:
    raw = yaml.safe_load(DEMO.read_text())
    raw["endpoints"] = [dict(e, engine="llamacpp", url="http://127.0.0.1:9") for e in raw["endpoints"]]
    spec = parse_spec(raw, "grid.yaml")

    def never() -> Memory:
        raise AssertionError("the memory was read for a grid that starts no engine")

    check_kv_cache_fits(spec, "grid.yaml", never)


def test_a_container_s_cgroup_limit_is_held_where_it_leaves_less_than_the_host_s_memavailable(tmp_path: Path) -> None:
    """In a container /proc/meminfo is the host's: a 4 GiB container on a 20 GiB-free host was let allocate 20 GiB
    (and was killed at its limit). cgroup v2's memory.max less the group's use (memory.current less its inactive
    page cache, which the kernel takes back) is now the figure where it is smaller, and the error names it."""
    root = machine(tmp_path, {"": limited(str(4 * GIB), 2 * GIB, inactive_file=GIB)}, meminfo=available(20))
    have = available_memory(root)  # 1 GiB used: 3 GiB left
    assert have is not None and have.bytes == 3 * GIB, have
    spec = demo(16_384)  # 2,880 MiB: fits the 3 GiB
    check_kv_cache_fits(spec, "grid.yaml", lambda: have)
    with pytest.raises(SpecError) as e:
        check_kv_cache_fits(demo(32_768), "grid.yaml", lambda: have)  # 5,760 MiB: over 3 GiB, under 20 GiB
    (problem,) = e.value.problems
    assert ("5.6 GiB of KV cache allocated at start, more than the 3.0 GiB this process's cgroup may still take "
            f"(memory.max 4.0 GiB less the 1.0 GiB it uses, {root / 'sys' / 'fs' / 'cgroup'})") in problem, problem
    assert "MemAvailable" not in problem, problem


async def test_aigrid_up_refuses_before_any_engine_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through run_grid, as `aigrid up` calls it: refused before the port, the network namespaces or any engine (no
    llama-server is needed here: none is started)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"models\.smollm2-135m\.context 1,310,720 tokens x 8 slots"):
        await run_grid(demo(1_310_720), Console(file=StringIO()), port=free_port(), source="grid.yaml",
                       memory=lambda: Memory(20 * GIB, MACHINE))
    assert not (tmp_path / ".aigrid").exists()  # no engine's log written: none started
