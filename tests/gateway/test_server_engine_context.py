"""The context an embedded engine holds (gateway/server.py start_embedded, run_node): each slot holds the spec's
model `context`. Before, every engine ran llama-server's --ctx-size 2048 x its slots whatever the spec declared: the
demo's `context: 8192` passed the gateway's context check, the agent loop's context_limit and Responses' compaction
at 80% of 8192, and llama.cpp refused anything over 2048 tokens a slot with its own 400.

A stand-in engine (a script answering 200 on every GET) records the command line it was started with."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from io import StringIO
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from aigrid.cli import NODE_CONTEXT
from aigrid.engines.llama_server import free_port
from aigrid.engines.model_files import LLAMA_SERVER_ENV, find_model_file
from aigrid.errors import EngineBuildError
from aigrid.gateway.server import run_node, start_embedded
from aigrid.spec.load import parse_spec
from aigrid.spec.models import ModelSpec
from tests.engines.test_llama_server import SERVE_OK

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in llama-server as $AIGRID_LLAMA_SERVER, run in tmp_path; each start appends its argv to the file
    returned, one line each."""
    try:
        find_model_file()
    except EngineBuildError as exc:
        pytest.skip(f"the embedded model is not installed: {exc}")
    (tmp_path / "serve.py").write_text("import http.server, sys\n" + SERVE_OK)
    argv = tmp_path / "argv.txt"
    binary = tmp_path / "llama-server"
    binary.write_text('#!/bin/sh\nif [ "$1" = "--help" ]; then echo "--metrics  enable"; exit 0; fi\n'
                      f'echo "$@" >> {argv}\nexec {sys.executable} {tmp_path / "serve.py"} "$@"\n')
    binary.chmod(0o755)
    monkeypatch.setenv(LLAMA_SERVER_ENV, str(binary))
    monkeypatch.chdir(tmp_path)  # the engines' logs go under .aigrid/logs
    return argv


def slots_and_ctx(argv: Path) -> tuple[str, str]:
    """--parallel and --ctx-size of the one start recorded."""
    (line,) = argv.read_text().splitlines()
    words = line.split()
    return words[words.index("--parallel") + 1], words[words.index("--ctx-size") + 1]


def demo_with(context: int, slots: int) -> dict:
    raw = yaml.safe_load(DEMO.read_text())
    raw["models"]["smollm2-135m"]["context"] = context
    raw["endpoints"] = [dict(raw["endpoints"][0], slots=slots)]  # one engine is enough
    return raw


@pytest.mark.parametrize(("context", "slots"), [(3000, 2), (8192, 1)])
async def test_each_slot_of_an_embedded_engine_holds_the_specs_model_context(
        started: Path, context: int, slots: int) -> None:
    spec = parse_spec(demo_with(context, slots))
    async with AsyncExitStack() as stack:
        urls = await start_embedded(spec, stack, Console(file=StringIO()))
        assert list(urls) == ["fra-smollm2"]
    assert slots_and_ctx(started) == (str(slots), str(context * slots))


async def test_a_node_holds_the_context_it_is_given_and_says_so(started: Path) -> None:
    out = StringIO()
    node = asyncio.create_task(run_node(Console(file=out, width=400), host="127.0.0.1", port=free_port(), slots=2, threads=1,
                                        alias="m", context=3000))
    try:
        async with asyncio.timeout(60):
            while "engine m at" not in out.getvalue():
                assert not node.done(), out.getvalue()
                await asyncio.sleep(0.05)
    finally:
        node.cancel()
        await asyncio.gather(node, return_exceptions=True)
    assert slots_and_ctx(started) == ("2", "6000")
    assert "context 3000 tokens a slot x 2 slots" in out.getvalue()


def test_a_node_and_a_spec_that_both_leave_the_context_out_agree() -> None:
    """`aigrid node` held 2048 tokens a slot while a spec's model context defaults to 8192."""
    assert NODE_CONTEXT == ModelSpec.model_fields["context"].default
