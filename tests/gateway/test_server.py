"""What `aigrid up` and `aigrid gateway` say at the start (gateway/server.py): the banner's lines, as printed, work;
a problem with the spec names its file."""

from __future__ import annotations

import asyncio
import json
import shlex
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.gateway.server import banner
from aigrid.security.keys import KeyRing
from aigrid.spec.load import load_spec
from aigrid.spec.models import GridSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def shown(spec: GridSpec) -> str:
    """The banner as the gateway prints it (rich markup)."""
    out = StringIO()
    Console(file=out, width=400).print(banner(spec, "127.0.0.1", 8080), highlight=False, soft_wrap=True)
    return out.getvalue()


def test_ctrl_c_stops_every_engine_only_where_the_gateway_started_them() -> None:
    """`aigrid gateway` (and `aigrid up` of a grid without embedded engines) said "Ctrl-C stops the gateway and every
    engine": it started none, and Ctrl-C left them running."""
    assert "Ctrl-C stops the gateway and the engines it started." in shown(load_spec(EXAMPLES / "demo.yaml"))
    external = load_spec(EXAMPLES / "right-size.yaml")
    assert all(e.engine != "embedded" for e in external.endpoints)
    text = shown(external)
    assert "every engine" not in text and "Ctrl-C stops the gateway (its engines run elsewhere, and run on)." in text


def test_the_try_line_asks_for_a_short_answer() -> None:
    """The banner's `try:` curl (and README's) sent no max_tokens: the answer may run to gateway.max_output_tokens
    (4,096), and the demo's 135M model looped there, so a new user's first request took 303 s on 2 busy cores
    (7 Dec 2026). Now it asks for at most 64 tokens, well under the grid's limit."""
    demo = load_spec(EXAMPLES / "demo.yaml")
    line = next(x for x in shown(demo).splitlines() if x.strip().startswith("try:"))
    words = shlex.split(line.split("try:", 1)[1])
    body = json.loads(words[words.index("-d") + 1])
    assert body["stream"] is True and 0 < body["max_tokens"] <= 64 < demo.gateway.max_output_tokens, body


def test_ctrl_c_names_only_the_engines_started_where_up_mixes_embedded_and_external() -> None:
    """`aigrid up` of a grid with embedded and external endpoints starts and stops the embedded ones only; the
    banner said "and every engine"."""
    demo = load_spec(EXAMPLES / "demo.yaml")
    first, *rest = demo.endpoints
    mixed = demo.model_copy(update={"endpoints": [
        first.model_copy(update={"engine": "vllm", "url": "http://10.0.0.5:8000"}), *rest]})
    assert rest and all(e.engine == "embedded" for e in rest)
    text = shown(mixed)
    assert "every engine" not in text, text
    assert ("Ctrl-C stops the gateway and the engines it started (the others run elsewhere, and run on)."
            in text), text


@pytest.mark.parametrize(("keys_file", "secret_env"), [
    (None, None), ("custom/keys.json", None), ("custom/keys.json", "GRID_SECRET"), (None, "GRID_SECRET")])
def test_the_keys_line_makes_a_key_this_gateway_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys_file: str | None, secret_env: str | None) -> None:
    """With keys enforced the banner said `aigrid keys create TENANT (with AIGRID_KEY_SECRET)` whatever the spec's
    security.keys_file: the key went to .aigrid/keys.json, which a gateway reading another file never read (401).
    Now the command as printed, run in the gateway's folder, makes a key the gateway's key ring verifies."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec(EXAMPLES / "demo.yaml")
    security = {"enforce": True, **({"keys_file": keys_file} if keys_file else {}),
                **({"secret_env": secret_env} if secret_env else {})}
    spec = spec.model_copy(update={"security": spec.security.model_copy(update=security)})
    line = next(x for x in shown(spec).splitlines() if "keys create" in x)
    command = line.split("enforced: ", 1)[1].split(", then export", 1)[0]
    assert ("--keys-file" in command) == (keys_file is not None), command
    # another secret_env is named as `--secret-env NAME` (it said `AIGRID_KEY_SECRET="$NAME" aigrid keys create`,
    # from before `keys create` took --secret-env): the gateway's variable alone is set, AIGRID_KEY_SECRET is not
    assert ("--secret-env" in command) == (secret_env is not None), command
    monkeypatch.delenv("AIGRID_KEY_SECRET", raising=False)
    words = shlex.split(command.removesuffix(" (with AIGRID_KEY_SECRET)"))
    gateway_secret = "s3cret-of-the-gateway-" + "x" * 16
    env = {spec.security.secret_env: gateway_secret}
    assert words[:3] == ["aigrid", "keys", "create"] and words[3] == "TENANT", command
    result = CliRunner().invoke(app, [*words[1:3], "acme", *words[4:]], env=env)
    assert result.exit_code == 0, result.output
    api_key = next(x.split("api key: ", 1)[1] for x in result.output.splitlines() if x.startswith("api key: "))
    record = KeyRing.load(Path(spec.security.keys_file), gateway_secret.encode()).verify(api_key.strip())
    assert record is not None and record.tenant == "acme"


def test_a_spec_problem_found_at_start_names_the_file() -> None:
    """`aigrid gateway examples/demo.yaml` (embedded engines, which only `aigrid up` starts) said "invalid grid spec
    'demo'": the spec's `name:`, where every other spec error names the file."""
    path = EXAMPLES / "demo.yaml"
    result = CliRunner().invoke(app, ["gateway", str(path)])
    assert result.exit_code == 2, result.output
    assert f"invalid grid spec {path}:" in " ".join(result.output.split()), result.output
    assert "'demo'" not in result.output
    # the endpoints as a plain list, not a Python one (7 Dec 2026, thirty-second session: "endpoints ['fra-...', ...]")
    ids = ", ".join(e.id for e in load_spec(path).endpoints if e.engine == "embedded")
    assert f"endpoints {ids} are embedded" in " ".join(result.output.split()), result.output
    assert "[" not in result.output.split("endpoints", 1)[1].split("are embedded")[0], result.output


class _Engine:
    """Stands for an embedded engine (LlamaServerProcess): started at once, stopped in time unless its id says
    `stubborn` (then killed: stop() False)."""
    stopped: list[str] = []

    def __init__(self, cfg: Any) -> None:
        self.config, self.base_url, self.pid = cfg, "http://127.0.0.1:9", 1

    async def start(self) -> None:
        pass

    async def supervise(self, ep_id: str) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> bool:
        self.stopped.append(self.config.log_path.stem)
        return "stubborn" not in self.config.log_path.stem


@pytest.mark.parametrize("workers", [1, 2])
async def test_ctrl_c_on_up_says_what_stopped_and_which_engine_did_not_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """Ctrl-C on `aigrid up` printed `stopping engines...` and never said they had: now one line once every engine
    has stopped, naming the one that had to be killed."""
    from aigrid.engines.llama_server import free_port
    from aigrid.gateway import server

    class Served:  # uvicorn's serve() as Ctrl-C ends it
        should_exit = True

        async def serve(self) -> None:
            pass

    async def workers_served(*args: object, **kwargs: object) -> None:
        pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(server, "LlamaServerProcess", _Engine)
    monkeypatch.setattr(server, "gateway_server", lambda *a, **k: Served())
    monkeypatch.setattr(server, "run_workers", workers_served)
    monkeypatch.setattr(_Engine, "stopped", [])
    spec = load_spec(EXAMPLES / "demo.yaml")
    ids = [e.id for e in spec.endpoints if e.engine == "embedded"]
    spec.endpoints[0] = spec.endpoints[0].model_copy(update={"id": "tokyo-stubborn"})
    out = StringIO()
    await server._serve_grid(spec, Console(file=out, width=400), "127.0.0.1", free_port(), True, None, workers, {},
                             "demo.yaml", lambda: None)
    lines = out.getvalue().splitlines()
    assert sorted(_Engine.stopped) == sorted(["tokyo-stubborn", *ids[1:]]), _Engine.stopped
    assert lines[-2:] == ["stopping engines...", f"stopped the gateway{f' ({workers} worker processes)' if workers > 1 else ''}"
                          f" and {len(ids)} engines (tokyo-stubborn did not stop in time after SIGTERM: killed; its log "
                          f"under .aigrid/logs)"], lines


def test_the_stopped_line_counts_what_stopped() -> None:
    from aigrid.gateway.server import stopped_line

    assert stopped_line({}) == "stopped the gateway"
    assert stopped_line({"a": True}) == "stopped the gateway and 1 engine"
    assert stopped_line({"a": False, "b": False, "c": True}, 4) == (
        "stopped the gateway (4 worker processes) and 3 engines (a, b did not stop in time after SIGTERM: killed; "
        "their logs under .aigrid/logs)")
