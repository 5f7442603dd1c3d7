"""`aigrid node`'s key: taken from the variable it is told (or llama.cpp's own LLAMA_API_KEY), refused when it
cannot be one; a node listening beyond loopback without one is warned about (whether a host is loopback)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from aigrid.errors import ConfigError
from aigrid.gateway.server import _loopback, run_node


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("node.internal", False),
])
def test_whether_a_host_is_reachable_from_this_machine_only(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback


@pytest.mark.parametrize(("environ", "api_key_env", "says"), [
    ({}, "NODE_KEY", "--api-key-env: environment variable NODE_KEY is not set or empty"),
    ({"NODE_KEY": "a,b"}, "NODE_KEY", "printable ASCII without spaces or commas"),
    ({"NODE_KEY": "a b"}, "NODE_KEY", "printable ASCII without spaces or commas"),
    ({"LLAMA_ARG_API_KEY_FILE": "/etc/keys"}, None, "LLAMA_ARG_API_KEY_FILE is set"),
    ({"LLAMA_API_KEY": "x,y"}, None, "the value of LLAMA_API_KEY is not a key"),
])
async def test_a_key_that_cannot_be_used_stops_the_node_before_its_engine_starts(
        environ: dict[str, str], api_key_env: str | None, says: str) -> None:
    out = io.StringIO()
    with pytest.raises(ConfigError, match=says):
        await run_node(Console(file=out), host="127.0.0.1", port=1, slots=1, threads=1, alias="m",
                       context=2048, api_key_env=api_key_env, environ=environ)
    if "LLAMA_API_KEY" in environ:  # llama.cpp's own variable is honoured, and that is said
        assert "as if --api-key-env LLAMA_API_KEY" in out.getvalue()


def test_the_embedded_engines_do_not_inherit_the_gateways_secrets_or_other_engines_keys() -> None:
    from pathlib import Path

    import yaml

    from aigrid.gateway.server import secret_variables
    from aigrid.spec.load import parse_spec

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml").read_text())
    raw["endpoints"][1]["api_key_env"] = "SITE_B_KEY"
    raw.setdefault("security", {})["jwt"] = {"issuer": "i", "audience": "a", "secret_env": "JWT_SECRET"}
    assert secret_variables(parse_spec(raw)) == {"AIGRID_KEY_SECRET", "JWT_SECRET", "SITE_B_KEY"}
