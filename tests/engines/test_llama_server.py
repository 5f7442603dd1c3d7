"""LlamaServerProcess without the real engine: the command line, start-up failures, stopping, restarting a
child that died, and the guarantee that a child never outlives its parent. Fake engines are small shell and Python scripts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aigrid.engines.llama_server import (
    LlamaServerConfig,
    LlamaServerProcess,
    build_command,
    free_ports,
    has_flag,
)
from aigrid.errors import EngineBuildError

HELP = """\
-np,   --parallel N                     number of server slots (default: -1, -1 = auto)
--log-colors [on|off|auto]              Set colored logging ('on', 'off', or 'auto', default: 'auto')
--ui-mcp-proxy, --webui-mcp-proxy, --no-ui-mcp-proxy, --no-webui-mcp-proxy
--ui,  --webui, --no-ui, --no-webui     whether to enable the Web UI (default: enabled)
--metrics                               enable prometheus compatible metrics endpoint (default: disabled)
"""


SERVE_OK = textwrap.dedent("""
    port = int(sys.argv[sys.argv.index("--port") + 1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")
"""The tail of a fake engine script: answer 200 on every GET at the --port it was given."""


def config(tmp_path: Path, binary: Path, **kw: object) -> LlamaServerConfig:
    return LlamaServerConfig(binary=binary, model=tmp_path / "m.gguf", log_path=tmp_path / "engine.log", **kw)  # type: ignore[arg-type]


def test_has_flag_matches_whole_flags_only() -> None:
    assert has_flag(HELP, "--no-webui")
    assert has_flag(HELP, "--metrics")
    assert not has_flag(HELP, "--no-webui-mcp")
    assert not has_flag("--ui, --webui   enable the Web UI", "--no-webui")


def test_command_line(tmp_path: Path) -> None:
    cfg = config(tmp_path, Path("/opt/llama-server"), slots=4, ctx_per_slot=1024, threads=1, alias="tiny")
    cmd = build_command(cfg, 8123, HELP)
    assert cmd[0] == "/opt/llama-server"
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--model"] == str(tmp_path / "m.gguf")
    assert (args["--host"], args["--port"]) == ("127.0.0.1", "8123")
    assert (args["--parallel"], args["--ctx-size"], args["--threads"]) == ("4", "4096", "1")
    assert args["--alias"] == "tiny"
    assert "--metrics" in cmd and "--no-webui" in cmd
    assert cmd[cmd.index("--log-colors") + 1] == "off"
    older_build = build_command(cfg, 8123, "--metrics   enable metrics\n")
    assert "--no-webui" not in older_build and "--log-colors" not in older_build


def fake_engine(tmp_path: Path, body: str) -> Path:
    """A shell script standing in for llama-server: answers --help, otherwise runs `body`."""
    script = tmp_path / "fake-llama-server"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "--help" ]; then echo "--metrics  enable"; exit 0; fi\n{body}\n')
    script.chmod(0o755)
    return script


async def test_early_exit_quotes_the_log(tmp_path: Path) -> None:
    binary = fake_engine(tmp_path, 'echo "error: failed to load model m.gguf"; exit 3')
    server = LlamaServerProcess(config(tmp_path, binary))
    with pytest.raises(EngineBuildError, match=r"(?s)exited with code 3.*failed to load model"):
        await server.start()
    assert server.pid is None


async def test_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    binary = fake_engine(tmp_path, 'echo "loading forever"; exec sleep 30')
    server = LlamaServerProcess(config(tmp_path, binary), ready_timeout_s=0.5)
    with pytest.raises(EngineBuildError, match=r"(?s)not ready after.*loading forever"):
        await server.start()
    assert server.pid is None
    await server.stop()  # idempotent


async def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready.py"
    ready.write_text(textwrap.dedent("""
        import http.server, signal, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn engine
    """) + SERVE_OK)
    binary = fake_engine(tmp_path, f'exec {sys.executable} {ready} "$@"')
    server = LlamaServerProcess(config(tmp_path, binary), stop_grace_s=0.3)
    async with server:
        pid = server.pid
        assert pid is not None and server.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


async def test_stop_says_whether_the_engine_stopped_in_time(tmp_path: Path) -> None:
    """stop() is False for an engine it had to kill (what `aigrid up` names as it stops), True for one that stopped
    on SIGTERM, and for one not running."""
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text("import http.server, signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SERVE_OK)
    polite = tmp_path / "polite.py"
    polite.write_text("import http.server, sys\n" + SERVE_OK)
    said = []
    for name, script in (("a", stubborn), ("b", polite)):
        (tmp_path / name).mkdir()
        binary = fake_engine(tmp_path / name, f'exec {sys.executable} {script} "$@"')
        server = LlamaServerProcess(config(tmp_path / name, binary), stop_grace_s=0.3)
        await server.start()
        said.append(await server.stop())
        said.append(await server.stop())  # stopped already
    assert said == [False, True, True, True]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a slow reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while it was read (ESRCH)
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    """Kill -9 a parent that started an engine: the engine must not be orphaned."""
    parent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, subprocess, sys, time
            from aigrid.engines.llama_server import _die_with_parent
            child = subprocess.Popen(["sleep", "60"], preexec_fn=_die_with_parent(os.getpid()))
            print(child.pid, flush=True)
            os.kill(os.getpid(), 9)
        """)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert parent.returncode == -signal.SIGKILL
    child_pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not alive(child_pid):
            return
        time.sleep(0.05)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


async def test_lost_port_race_is_retried_on_a_new_port(tmp_path: Path) -> None:
    serve = tmp_path / "serve.py"
    serve.write_text(textwrap.dedent("""
        import http.server, pathlib, sys
        marker = pathlib.Path(sys.argv[1])
        if not marker.exists():  # first start: somebody else took the port
            marker.write_text("x")
            print("E srv start: couldn't bind HTTP server socket, hostname: 127.0.0.1", flush=True)
            sys.exit(1)
    """) + SERVE_OK)
    binary = fake_engine(tmp_path, f'exec {sys.executable} {serve} {tmp_path / "tried"} "$@"')
    async with LlamaServerProcess(config(tmp_path, binary)) as server:
        assert server.pid is not None
    assert (tmp_path / "engine.log").read_text().count("$ ") == 2  # two command lines logged


async def test_other_start_failures_are_not_retried(tmp_path: Path) -> None:
    counter = tmp_path / "starts"
    binary = fake_engine(tmp_path, f'echo x >> {counter}; echo "bad model"; exit 2')
    with pytest.raises(EngineBuildError, match="bad model"):
        await LlamaServerProcess(config(tmp_path, binary)).start()
    assert counter.read_text().count("x") == 1


def test_free_ports_gives_a_run_of_ports_that_can_all_be_bound() -> None:
    base = free_ports(3)
    socks = [socket.socket() for _ in range(3)]
    try:
        for offset, sock in enumerate(socks):
            sock.bind(("127.0.0.1", base + offset))  # raises if any of the three is taken
    finally:
        for sock in socks:
            sock.close()


def serving(tmp_path: Path, first_line: str = "") -> tuple[LlamaServerProcess, Path]:
    """A fake engine that answers every GET (printing `first_line` first), and its process object."""
    ready = tmp_path / "ready.py"
    ready.write_text(f"import http.server, sys\n{first_line}" + SERVE_OK)
    binary = fake_engine(tmp_path, f'exec {sys.executable} {ready} "$@"')
    return LlamaServerProcess(config(tmp_path, binary)), binary


async def supervised(server: LlamaServerProcess, name: str) -> asyncio.Task[None]:
    return asyncio.create_task(server.supervise(name, backoff_s=(0.05, 0.1), stable_s=60))


async def until(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_killed_engine_is_restarted_on_its_port_and_logged(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    server, _ = serving(tmp_path, "print('serving', flush=True)\n")
    caplog.set_level(logging.WARNING, logger="aigrid.engines")
    async with server:
        first, url = server.pid, server.base_url
        task = await supervised(server, "fra-smollm2")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: server.restarts == 1)
        assert server.pid not in (None, first) and server.base_url == url  # the gateway keeps its URL
        assert httpx.get(url + "/health", timeout=2).status_code == 200
        said = caplog.text
        assert "engine fra-smollm2" in said and "exited with signal SIGKILL" in said and "serving" in said, said
        assert "is back" in said
        await cancel(task)
        second = server.pid
    assert second is not None and not alive(second)  # stop() took the restarted child down


async def test_a_restart_that_fails_is_tried_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    serve = tmp_path / "serve.py"
    serve.write_text(textwrap.dedent("""
        import http.server, pathlib, sys
        starts = pathlib.Path(sys.argv[1])
        n = int(starts.read_text()) + 1 if starts.exists() else 1
        starts.write_text(str(n))
        if n == 2:  # the first restart fails
            print("error: out of memory", flush=True)
            sys.exit(1)
    """) + SERVE_OK)
    binary = fake_engine(tmp_path, f'exec {sys.executable} {serve} {tmp_path / "starts"} "$@"')
    server = LlamaServerProcess(config(tmp_path, binary))
    caplog.set_level(logging.WARNING, logger="aigrid.engines")
    async with server:
        task = await supervised(server, "e")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        await until(lambda: server.restarts == 1)
        assert (tmp_path / "starts").read_text() == "3"
        assert "exited with signal SIGTERM" in caplog.text and "did not come back" in caplog.text, caplog.text
        await cancel(task)


async def test_supervise_ends_when_the_engine_is_stopped(tmp_path: Path) -> None:
    server, _ = serving(tmp_path)
    await server.start()
    task = await supervised(server, "e")
    await server.stop()
    await asyncio.wait_for(task, 30)  # returns (at once): a stopped engine is not brought back
    assert server.restarts == 0 and server.pid is None


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_stop_during_the_wait_before_a_restart_brings_nothing_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A review's finding: stop() while supervise waited to restart started a child nobody would stop."""
    server, _ = serving(tmp_path)
    caplog.set_level(logging.WARNING, logger="aigrid.engines")
    await server.start()
    task = asyncio.create_task(server.supervise("e", backoff_s=(2.0,)))
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    await until(lambda: "restarting it in" in caplog.text)  # supervise has seen the exit and waits 2 s
    await server.stop()
    assert not task.done()  # stop() came during the wait, not after it
    await asyncio.wait_for(task, 30)
    assert server.restarts == 0 and server.pid is None
    assert (tmp_path / "engine.log").read_text().count("$ ") == 1  # never started again


async def test_a_restart_that_cannot_even_be_spawned_is_tried_again(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The binary removed (a cache cleaned): the OSError ended supervision for good, with no log line."""
    server, binary = serving(tmp_path)
    script = binary.read_text()
    caplog.set_level(logging.WARNING, logger="aigrid.engines")
    async with server:
        task = await supervised(server, "e")
        binary.unlink()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        await until(lambda: "could not be started again" in caplog.text)
        assert not task.done()
        binary.write_text(script)
        binary.chmod(0o755)
        await until(lambda: server.restarts == 1)
        await cancel(task)


async def test_a_build_that_would_ignore_the_key_is_refused_before_it_serves_open(tmp_path: Path) -> None:
    """A llama-server older than LLAMA_API_KEY would start without the key and serve anyone: not started."""
    started = tmp_path / "started"
    binary = fake_engine(tmp_path, f"touch {started}; sleep 30")  # its --help lists no LLAMA_API_KEY
    with pytest.raises(EngineBuildError, match="does not read LLAMA_API_KEY"):
        await LlamaServerProcess(config(tmp_path, binary, api_key="k")).start()
    assert not started.exists()


GATEWAY = textwrap.dedent("""
    import asyncio, logging, os, signal, sys
    from pathlib import Path
    from aigrid.engines.llama_server import LlamaServerConfig, LlamaServerProcess
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)

    async def main() -> None:
        binary, tmp, then = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        cfg = LlamaServerConfig(binary=binary, model=tmp / "m.gguf", log_path=tmp / "engine.log")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)  # as uvicorn and `aigrid node` do
        async with LlamaServerProcess(cfg) as server:
            supervisor = asyncio.create_task(server.supervise("fra", backoff_s=(0.05,)))
            print("engine", server.pid, flush=True)
            if then == "kill -9":
                os.kill(os.getpid(), signal.SIGKILL)
            await stop.wait()
            await asyncio.sleep(0.5)  # a gateway's shutdown takes a while to reach its engines
            supervisor.cancel()
    asyncio.run(main())
""")
"""A gateway in small: starts one engine under `supervise`, stops it on SIGINT (or kills itself with `kill -9`)."""


def gateway(tmp_path: Path, then: str) -> tuple[subprocess.Popen[str], int]:
    """GATEWAY started as a terminal runs a command (its own process group) and its engine's pid."""
    ready = tmp_path / "ready.py"
    ready.write_text("import http.server, sys\n" + SERVE_OK)  # Python's default SIGINT: KeyboardInterrupt, exit
    binary = fake_engine(tmp_path, f'exec {sys.executable} {ready} "$@"')
    proc = subprocess.Popen([sys.executable, "-c", GATEWAY, str(binary), str(tmp_path), then], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    before = ""
    for line in proc.stdout:  # after any notice on stderr (a stale compiled build's)
        if line.startswith("engine "):
            return proc, int(line.split()[1])
        before += line
    with contextlib.suppress(ProcessLookupError):  # not left running (its engine dies with it: PR_SET_PDEATHSIG)
        os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(before + proc.communicate(timeout=10)[0])


def test_ctrl_c_stops_the_engine_without_a_crash_report(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals its whole foreground process group: each engine died of the SIGINT before the
    gateway's shutdown reached it, and `supervise` logged "exited with ...; restarting it" for every one."""
    proc, engine = gateway(tmp_path, "stop on SIGINT")
    try:
        assert os.getpgid(engine) == engine and os.getsid(engine) == engine  # its own session and group
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        out, _ = proc.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if alive(engine):
            os.kill(engine, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "exited with" not in out and "restarting" not in out, out
    assert not alive(engine)  # stop() ended it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_an_engine_in_its_own_session_still_dies_with_its_killed_parent(tmp_path: Path) -> None:
    proc, engine = gateway(tmp_path, "kill -9")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while alive(engine):
        if time.monotonic() > deadline:
            os.kill(engine, signal.SIGKILL)
            pytest.fail("the engine outlived its killed parent")
        time.sleep(0.05)
