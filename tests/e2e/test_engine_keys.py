"""Engines that require a key, for real: `aigrid node --api-key-env` starts llama.cpp with the key in its
environment, `aigrid gateway` reaches it with the endpoint's `api_key_env`, and nobody else does. A gateway
started without the variable stops at once, naming the field, instead of coming up with every engine
answering 401."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import BIN, start_gateway, start_node, write_spec
from tests.engine_support import require_llama_server
from tests.ports import on_a_free_port, port_taken

pytestmark = pytest.mark.engine
CHAT = {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Name a river."}]}


def test_a_keyed_node_serves_the_gateway_that_holds_its_key_and_nobody_else(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    require_llama_server()
    monkeypatch.setenv("FRA_ENGINE_KEY", "fra-" + "k" * 40)
    node, url = start_node(tmp_path, "fra", api_key_env="FRA_ENGINE_KEY")
    try:
        assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 401
        spec = write_spec(tmp_path, {"fra": url}, api_key_env="FRA_ENGINE_KEY")
        gateway, base = start_gateway(tmp_path, spec, "keyed")
        try:
            r = httpx.post(base + "/v1/chat/completions", json=CHAT, timeout=60)
            assert r.status_code == 200, r.text
            assert r.headers["x-aigrid-site"] == "fra"
        finally:
            gateway.stop()

        monkeypatch.delenv("FRA_ENGINE_KEY")

        def refused(port: int) -> subprocess.CompletedProcess[str]:  # tried again if its port was taken meanwhile
            done = subprocess.run([str(BIN / "aigrid"), "gateway", str(spec), "--port", str(port)], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
            if port_taken(done.stdout + done.stderr):
                raise RuntimeError(done.stdout + done.stderr)
            return done

        done = on_a_free_port(refused)
        assert done.returncode != 0
        said = done.stdout + done.stderr
        assert "endpoints[0].api_key_env: environment variable FRA_ENGINE_KEY" in said, said
        assert "Traceback" not in said
    finally:
        node.stop()
    engine_logs = list((tmp_path / ".aigrid" / "logs").glob("node-*.log"))
    assert engine_logs and all("k" * 40 not in p.read_text() for p in [node.log, *engine_logs])


def test_a_node_told_to_use_a_key_that_is_not_set_says_so(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "aigrid"), "node", "--api-key-env", "AIGRID_TEST_UNSET_KEY"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "--api-key-env: environment variable AIGRID_TEST_UNSET_KEY is not set or empty" in said, said
    assert "Traceback" not in said
