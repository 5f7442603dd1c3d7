"""A gateway that cannot start says why in one line and stops: with one process or with `--workers N`.

Before, a start that failed in the lifespan (a document not found, an MCP server that would not run, an audit
log that could not be opened) was uvicorn's traceback, and with workers every worker failed, was started again
and failed again, a traceback a second, for ever; Ctrl-C then hung the parent (its readiness probe waited on a
connection no worker would accept)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from aigrid.engines.llama_server import free_port
from aigrid.errors import ConfigError
from aigrid.gateway import server
from aigrid.gateway.server import _check_port_free
from aigrid.gateway.workers import _ready
from tests.ports import on_a_free_port, port_taken


def spec(tmp: Path, port: int) -> dict:
    return {"name": "startup", "gateway": {"host": "127.0.0.1", "port": port, "network": "none",
                                           "batch": {"dir": str(tmp / "batches")}},
            "models": {"emulated": {"family": "emulated", "params_b": 1.0}},
            "sites": {"s0": {"name": "S0", "lat": 50.0, "lon": 8.0, "jurisdiction": "EU"}},
            "endpoints": [{"id": "emu0", "site": "s0", "model": "emulated", "engine": "vllm",
                           "url": f"http://127.0.0.1:{free_port()}"}],
            "security": {"audit": {"path": str(tmp / "audit.db"), "signing_key": str(tmp / "audit.pem")}}}


def batch_dir_a_file(tmp: Path, grid: dict) -> str:
    (tmp / "not-a-folder").write_text("x")
    grid["gateway"]["batch"] = {"dir": str(tmp / "not-a-folder")}  # was a start, then a 500 for every batch call
    return "error: gateway.batch.dir: cannot keep batches in "


def documents_missing(tmp: Path, grid: dict) -> str:
    grid["sites"]["s0"]["documents"] = [{"path": "missing/*.txt"}]
    return "error: sites.s0.documents[0].path: [Errno 2] No such file or directory: '" + str(tmp / "missing")


def second_mcp_server_missing(tmp: Path, grid: dict) -> str:
    """The first MCP server starts, the second's command is not there: the first was never stopped (its stop was
    registered only once every server had started), and the gateway hung for good, the error line never printed
    and Ctrl-C did not stop it (with --workers 2, both workers)."""
    server = Path(__file__).resolve().parents[1] / "agents" / "mcp_server.py"
    grid["agents"] = {"mcp_servers": {"a_ok": {"command": [sys.executable, str(server)]},
                                      "b_missing": {"command": [str(tmp / "no-such-mcp-server")]}}}
    return "error: agents.mcp_servers.b_missing.command: cannot start "


@pytest.mark.parametrize(("workers", "failure"), [(1, documents_missing), (2, documents_missing),
                                                  (1, batch_dir_a_file), (1, second_mcp_server_missing),
                                                  (2, second_mcp_server_missing)])
def test_a_gateway_that_cannot_start_says_why_in_one_line_and_stops(tmp_path: Path, workers: int,
                                                                    failure: object) -> None:
    grid = spec(tmp_path, 0)
    expected = failure(tmp_path, grid)  # type: ignore[operator]
    spec_path = tmp_path / "spec.yaml"

    def run(port: int) -> tuple[subprocess.Popen[str], str, float]:  # again on a new port if its port was taken
        grid["gateway"]["port"] = port
        spec_path.write_bytes(orjson.dumps(grid))
        started = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "aigrid.cli", "gateway", str(spec_path), "--workers",
                              str(workers)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            _, stderr = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a hung start: its workers and MCP servers go too, not only the parent
            os.killpg(p.pid, signal.SIGKILL)
            _, stderr = p.communicate()
            pytest.fail(f"the gateway did not stop within 60 s: {stderr[-2000:]}")
        if port_taken(stderr):
            raise RuntimeError(stderr)
        return p, stderr, started

    p, stderr, started = on_a_free_port(run)
    assert p.returncode == 2, stderr[-2000:]
    assert expected in stderr, stderr[-2000:]
    assert stderr.count("error: ") == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "starting it again" not in stderr  # a worker that cannot start is not started again and again
    assert time.monotonic() - started < 60


def test_the_readiness_probe_gives_up_when_stopped_though_no_worker_accepts() -> None:
    """The parent's socket takes connections into its backlog with no worker accepting them."""
    async def probe() -> bool:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.3, stop.set)
            return await asyncio.wait_for(_ready("127.0.0.1", sock.getsockname()[1], stop), timeout=5)

    started = time.monotonic()
    assert asyncio.run(probe()) is False
    assert time.monotonic() - started < 3


def test_the_readiness_probe_has_no_deadline_of_its_own() -> None:
    """A start that takes long is still a start: with the probe's 120 s deadline such a grid never counted as
    started, and a worker that crashed later stopped the whole gateway instead of being started again. Here a
    /livez that answers only after a while is waited for by default, and not by a probe given a deadline."""
    async def probe(timeout_s: float | None) -> bool:
        # bound, not listening, until the late server listens on it: connections are refused meanwhile, and no other
        # process can take the port in those 1.5 s (it was bound, closed and bound again 1.5 s later)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

        async def livez(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        async def late_server() -> asyncio.Server:
            await asyncio.sleep(1.5)
            return await asyncio.start_server(livez, sock=sock)

        starting = asyncio.create_task(late_server())
        try:
            return await asyncio.wait_for(_ready("127.0.0.1", port, asyncio.Event(), timeout_s), timeout=10)
        finally:
            (await starting).close()

    assert asyncio.run(probe(None)) is True
    assert asyncio.run(probe(0.5)) is False


def test_the_port_check_names_a_bad_host_and_takes_ipv6() -> None:
    """`gateway.host: '::1'` was refused as 'is another gateway running?' (an IPv4 socket cannot bind an IPv6
    address), and so was a host that is no address of this machine."""
    on_a_free_port(lambda port: _check_port_free("::1", port))  # again if another process took it meanwhile
    with pytest.raises(ConfigError, match=r"gateway.host: cannot listen on not a host:\d+: .* \(an address of"):
        _check_port_free("not a host", free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="is another gateway running"):
            _check_port_free("127.0.0.1", taken.getsockname()[1])


def test_a_port_refused_for_its_privilege_is_named_as_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--port 80` run as a user: the kernel's EACCES was said as `gateway.host: ... (an address of this
    machine, e.g. 127.0.0.1 or 0.0.0.0)`, sending the reader to a host that was right."""
    def refused(host: str, port: int) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(server, "_bind", refused)  # this machine's tests may run as root, which may bind port 80
    with pytest.raises(ConfigError) as e:
        _check_port_free("127.0.0.1", 80)
    assert str(e.value) == ("gateway.port: cannot listen on 127.0.0.1:80: Permission denied; a port below 1024 "
                            "needs root (net.ipv4.ip_unprivileged_port_start): give --port or gateway.port 1024 or "
                            "above")


def _key_a_folder(tmp: Path) -> str:
    (tmp / "audit.pem").mkdir()
    return "security.audit.signing_key"


def _audit_path_a_folder(tmp: Path) -> str:
    (tmp / "audit.db").mkdir()
    return "security.audit.path"


@pytest.mark.parametrize("failure", [_key_a_folder, _audit_path_a_folder])
def test_a_start_that_fails_in_the_parent_leaves_no_folder_and_no_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: object) -> None:
    """A --workers start that failed in the parent itself (the audit log's signing key or path a folder) left its
    /tmp/aigrid-workers-* folder behind, worker.json in it holding the whole spec, and its listening socket open."""
    from aigrid.gateway.workers import run_workers
    from aigrid.spec.load import parse_spec

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(private))
    field = failure(tmp_path)  # type: ignore[operator]

    def fails(port: int) -> int:  # again on a new port if another process took it before run_workers listened
        grid = parse_spec(spec(tmp_path, port), "startup")
        with pytest.raises(ConfigError, match=field):
            asyncio.run(run_workers(grid, "127.0.0.1", port, {}, 2, worker_options={}, started=lambda: None))
        return port

    port = on_a_free_port(fails)
    # the socket is closed: this process holds none on the port (bind()ing it again, as before, also failed when
    # another process took the free port meanwhile)
    assert _own_sockets_on(port) == [], "run_workers left its listening socket open"
    assert [p.name for p in private.iterdir()] == []


def _own_sockets_on(port: int) -> list[str]:
    """This process's sockets whose local port is `port` (from /proc: every state, listening or not)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    mine = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            if (link := os.readlink(fd)) in inodes:
                mine.append(link)
    return mine


def test_the_banner_brackets_an_ipv6_host() -> None:
    """With gateway.host '::1' the banner printed http://::1:PORT: no URL a client or curl can use."""
    from io import StringIO

    from rich.console import Console

    from aigrid.gateway.server import banner
    from aigrid.spec.load import parse_spec

    grid = parse_spec(spec(Path("/nonexistent"), 18080), "startup")

    def shown(host: str) -> str:  # as the gateway prints it: rich markup, so a bracket must survive it
        out = StringIO()
        Console(file=out, width=400).print(banner(grid, host, 18080), highlight=False, soft_wrap=True)
        return out.getvalue()

    for host in ("::1", "fe80::1"):
        text = shown(host)
        assert f"http://[{host}]:18080/v1" in text and f"curl -sN http://[{host}]:18080/v1/chat/completions" in text
        assert f"http://{host}:" not in text
    assert "(OpenAI base URL: http://127.0.0.1:18080/v1)" in shown("127.0.0.1")


def test_the_banners_lines_work_as_printed_on_another_port_and_with_keys() -> None:
    """On a port other than 8080 the banner's `aigrid explain <id>` asked the demo's gateway at 8080 ("no
    decision"); with security.enforce its curl and explain were a 401. Now --gateway where it is needed, and the
    key from AIGRID_API_KEY (which explain reads itself) with a line saying how to get one."""
    from io import StringIO

    from rich.console import Console

    from aigrid.gateway.server import banner
    from aigrid.spec.load import parse_spec

    grid = parse_spec(spec(Path("/nonexistent"), 18080), "startup")

    def shown(g: object, port: int) -> str:
        out = StringIO()
        Console(file=out, width=400).print(banner(g, "127.0.0.1", port), highlight=False, soft_wrap=True)  # type: ignore[arg-type]
        return out.getvalue()

    assert "explain <x-aigrid-decision header> --gateway http://127.0.0.1:18080 " in shown(grid, 18080)
    text = shown(grid, 8080)
    assert "explain <x-aigrid-decision header>   |" in text and "--gateway" not in text
    assert "AIGRID_API_KEY" not in text and "keys:" not in text
    enforced = grid.model_copy(update={"security": grid.security.model_copy(update={"enforce": True})})
    text = shown(enforced, 8080)
    assert '-H "authorization: Bearer $AIGRID_API_KEY"' in text, text
    assert "keys create TENANT" in text and "export AIGRID_API_KEY=" in text, text


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["demo.yaml", "demo-netns.yaml", "right-size.yaml"])
def test_the_workers_read_the_spec_the_parent_read(name: str) -> None:
    """worker.json holds the spec the workers parse again: it must give them the same spec, and pass the checks
    that read what the writer set (every field written out, a `key_quotas` carrying the storage quota's defaults
    was refused by every worker, and `aigrid up` stopped)."""
    from aigrid.gateway.workers import worker_spec
    from aigrid.spec.load import load_spec, parse_spec

    spec = load_spec(EXAMPLES / name)
    assert parse_spec(worker_spec(spec), "worker.json") == spec


def test_the_banners_request_names_a_city_the_grid_knows() -> None:
    """The banner's curl line always named Tokyo: a 400 on every grid without it (examples/right-size.yaml, a
    planned grid.yaml)."""
    from aigrid.gateway.server import banner
    from aigrid.spec.load import load_spec

    root = Path(__file__).resolve().parents[2] / "examples"
    assert "x-aigrid-client-location: Tokyo" in banner(load_spec(root / "demo.yaml"), "127.0.0.1", 8080)
    sized = load_spec(root / "right-size.yaml")
    assert "tokyo" not in {s.name.lower() for s in sized.sites.values()} | {c.lower() for c in sized.cities}
    city = next(iter(sized.sites.values())).name
    assert f"x-aigrid-client-location: {city}" in banner(sized, "127.0.0.1", 8080)
