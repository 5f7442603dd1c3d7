"""URLs in a grid spec: an engine's, an exporter's and Redis's are checked by `spec check`, not found wrong
after `up` (an endpoint that only ever shows UNHEALTHY, or a traceback at start)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.errors import SpecError
from aigrid.gateway.wiring import build_engines, upstream
from aigrid.spec.load import parse_spec
from aigrid.spec.models import engine_base_url
from tests.gateway import hostile_engine as H

RIGHT_SIZE = Path(__file__).resolve().parents[2] / "examples" / "right-size.yaml"


def raw() -> dict:
    return yaml.safe_load(RIGHT_SIZE.read_text())


@pytest.mark.parametrize(("url", "expected"), [
    ("127.0.0.1:9101", "endpoints[0].url: '127.0.0.1:9101' is not an http(s) URL (e.g. http://host:8000)"),
    ("localhost:9101", "is not an http(s) URL"),
    ("ftp://127.0.0.1:9101", "is not an http(s) URL"),
    ("http://", "is not an http(s) URL"),
    ("http://my host:9101", "is not an http(s) URL"),
    ("http://127.0.0.1:99999", "endpoints[0].url: 'http://127.0.0.1:99999': the port must be a number from 1 to 65535"),
    ("http://127.0.0.1:0", "the port must be a number from 1 to 65535"),
    ("http://${ENGINE_HOST}:9101", "environment variables are not expanded in a grid spec"),
])
def test_an_endpoint_url_that_is_no_http_url_names_the_field(url: str, expected: str) -> None:
    spec = raw()
    spec["endpoints"][0]["url"] = url
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "grid.yaml")
    assert expected in str(e.value), str(e.value)


def test_exporter_and_redis_urls_are_checked() -> None:
    spec = raw()
    spec["endpoints"][1]["power_metrics_url"] = "dcgm:9400/metrics"
    spec["gateway"].update(shared_state_url="localhost:6379", otel={"enabled": True, "endpoint": "collector:4318"})
    spec["security"] = {"quotas_redis_url": "http://redis:6379"}
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "grid.yaml")
    assert sorted(p.split(":")[0] for p in e.value.problems) == [
        "endpoints[1].power_metrics_url", "gateway.otel.endpoint", "gateway.shared_state_url",
        "security.quotas_redis_url"], e.value.problems
    assert "'http://redis:6379' is not a Redis URL" in str(e.value)


def test_good_urls_pass() -> None:
    spec = raw()
    spec["endpoints"][0]["url"] = "https://[::1]:8443/v1"
    spec["gateway"].update(shared_state_url="unix:///run/redis.sock", otel={"endpoint": "http://collector:4318"})
    assert parse_spec(spec).endpoints[0].url == "https://[::1]:8443"  # its /v1 taken off (below)


@pytest.mark.parametrize(("url", "base"), [
    ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000"),  # vLLM's, as OpenAI's SDKs and LiteLLM take it
    ("http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000"),
    ("https://api.openai.com/v1", "https://api.openai.com"),
    ("https://llm.example.com/team-a/v1", "https://llm.example.com/team-a"),  # a server under a path
    ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),  # a base, as it was
    ("http://10.0.0.5:8000/", "http://10.0.0.5:8000/"),
    ("http://10.0.0.5:8000/v10", "http://10.0.0.5:8000/v10"),
    # a base with /v1/ in its own path (Cloudflare AI Gateway's, which serves /v1/chat/completions under it)
    ("https://gateway.ai.cloudflare.com/v1/acc/gw/workers-ai", "https://gateway.ai.cloudflare.com/v1/acc/gw/workers-ai"),
])
def test_an_endpoint_url_given_with_v1_is_the_servers_base(url: str, base: str) -> None:
    """What a newcomer pastes is the base URL an OpenAI client takes, with /v1; the adapters add /v1/chat/completions
    and probe /v1/models, so `spec check` passed it and the endpoint was asked /v1/v1/... and stayed UNHEALTHY."""
    spec = raw()
    spec["endpoints"][0]["url"] = url
    assert parse_spec(spec, "grid.yaml").endpoints[0].url == base


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1/chat/completions", "http://10.0.0.5:8000/v1/models/",
                                 "https://gateway.ai.cloudflare.com/v1/acc/gw/workers-ai/v1/chat/completions"])
def test_an_endpoint_url_that_is_an_api_path_names_the_field(url: str) -> None:
    spec = raw()
    spec["endpoints"][0]["url"] = url
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "grid.yaml")
    assert f"endpoints[0].url: '{url}': give the server's base URL" in str(e.value)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1/v1", "http://10.0.0.5:8000/v1/v1/",
                                 "https://llm.example.com/team-a/v1//v1"])
def test_an_endpoint_url_with_v1_twice_is_refused_naming_the_field(url: str) -> None:
    """A url ending in /v1/v1 had one /v1 taken off, and the url so read, read again (a spec written back, a
    second load), had the other taken off: a different engine base."""
    spec = raw()
    spec["endpoints"][0]["url"] = url
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "grid.yaml")
    assert f"endpoints[0].url: '{url}': /v1 twice; give the server's base URL" in str(e.value), str(e.value)


_SEGMENTS = st.sampled_from(["v1", "v1", "", "team-a", "chat", "completions", "models", "x", "V1", "v10"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_SEGMENTS, max_size=6), st.sampled_from(["http://10.0.0.5:8000", "https://[::1]:8443"]))
def test_an_endpoint_url_read_again_is_the_same_url(segments: list[str], host: str) -> None:
    """engine_base_url is idempotent: what it makes of a url it makes of again, unchanged, and never refuses."""
    url = host + "".join(f"/{s}" for s in segments)
    try:
        base = engine_base_url(url)
    except ValueError:
        return
    assert base is not None and engine_base_url(base) == base, (url, base)


async def test_an_engine_given_with_v1_is_asked_at_its_own_paths(tmp_path: Path) -> None:
    """End to end, spec to adapter: an `openai` endpoint whose url ends in /v1 is probed at /v1/models (it was
    /v1/v1/models, a 404: unhealthy) and sent its requests at /v1/chat/completions."""
    paths: list[str] = []

    def answer(path: str, request: dict) -> H.Script:
        paths.append(path)
        return H.whole(orjson.dumps(H.answer_of()))

    engine = await H.HostileEngine(answer).start()
    engine.gets["/v1/models"] = lambda: H.whole(b'{"object": "list", "data": []}')
    spec = raw()
    spec["endpoints"] = [{**spec["endpoints"][0], "engine": "openai", "url": f"{engine.url}/v1"}]
    up = upstream()
    try:
        adapter = build_engines(parse_spec(spec, "grid.yaml"), {}, up)[spec["endpoints"][0]["id"]]
        assert await adapter.health() is True
        async with adapter.open("/v1/chat/completions", b'{"model": "m", "messages": []}') as answered:
            assert answered.status == 200
        assert paths == ["/v1/chat/completions"]
    finally:
        await up.aclose()
        await engine.stop()


def test_gateway_redis_option_is_checked_before_anything_starts() -> None:
    """`aigrid gateway SPEC --redis nope` was a ValueError traceback from redis-py once the gateway started."""
    r = CliRunner().invoke(app, ["gateway", str(RIGHT_SIZE), "--redis", "localhost:6379", "--port", "18399"])
    assert r.exit_code == 2
    assert "--redis" in r.output and "is not a Redis URL" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999", "redis://127.0.0.1:abc", "rediss://h:0/0"])
def test_a_redis_url_with_a_bad_port_names_the_field(url: str) -> None:
    """redis-py read the port only when the gateway started: a ValueError traceback ('Port out of range',
    'Port could not be cast to integer'), after spec check had said ok."""
    spec = raw()
    spec["gateway"]["shared_state_url"] = url
    spec["security"] = {"quotas_redis_url": url}
    with pytest.raises(SpecError) as e:
        parse_spec(spec, "grid.yaml")
    assert sorted(e.value.problems) == [
        f"{field}: {url!r}: the port must be a number from 1 to 65535"
        for field in ("gateway.shared_state_url", "security.quotas_redis_url")], e.value.problems
    r = CliRunner().invoke(app, ["gateway", str(RIGHT_SIZE), "--redis", url, "--port", "18399"],
                           env={"COLUMNS": "200"})  # the whole message on one line of the error box
    assert r.exit_code == 2, r.output
    assert "--redis" in r.output and "the port must be a number from 1 to 65535" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_redis_urls_with_a_port_without_one_or_a_socket_pass() -> None:
    for url in ("redis://h:6379/0", "redis://h", "rediss://:pw@[::1]:6380", "unix:///run/redis.sock"):
        spec = raw()
        spec["gateway"]["shared_state_url"] = url
        assert parse_spec(spec).gateway.shared_state_url == url


@pytest.mark.parametrize(("jwt", "expected"), [
    ({"issuer": "i", "audience": "a", "jwks_url": "idp.example/jwks"}, "security.jwt.jwks_url: 'idp.example/jwks' is not an http(s) URL"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://idp.example/jwks", "secret_env": "S"},
     "give exactly one of key_file, secret_env or jwks_url"),
    ({"issuer": "i", "audience": "a"}, "give exactly one of key_file, secret_env or jwks_url"),
    ({"issuer": "i", "audience": "a", "jwks_url": "http://idp.example/jwks"}, "a JWKS is fetched over https"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://idp.example/jwks", "jwks_refresh_s": 1},
     "security.jwt.jwks_refresh_s"),
])
def test_a_jwt_key_source_is_one_and_a_jwks_url_is_a_url(jwt: dict, expected: str) -> None:
    spec = raw()
    spec.setdefault("security", {})["jwt"] = jwt
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "right-size.yaml")
    assert expected in str(info.value), str(info.value)


def test_a_jwks_url_is_accepted() -> None:
    spec = raw()
    spec.setdefault("security", {})["jwt"] = {"issuer": "i", "audience": "a", "jwks_url": "https://idp.example/jwks"}
    assert parse_spec(spec, "right-size.yaml").security.jwt.jwks_url == "https://idp.example/jwks"  # type: ignore[union-attr]


def test_spec_check_says_which_url_it_calls_for_an_endpoint_given_with_v1(tmp_path: Path) -> None:
    """`spec check` took a trailing /v1 off without a word: one info line names the endpoint and the URL called."""
    spec = raw()
    spec["endpoints"][0]["url"] = "http://10.0.0.5:8000/v1/"
    spec["endpoints"][1]["url"] = "http://10.0.0.6:8000"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = CliRunner().invoke(app, ["spec", "check", str(path)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    ident = spec["endpoints"][0]["id"]
    lines = [line for line in r.output.splitlines() if "/v1" in line]
    assert lines == [f"info endpoints.0 ({ident}): url 'http://10.0.0.5:8000/v1/' is the base http://10.0.0.5:8000 "
                     "(the /v1 taken off): the gateway calls http://10.0.0.5:8000/v1/chat/completions"], r.output
    assert r.output.splitlines()[-1].startswith("ok "), r.output


def test_spec_check_s_info_line_prints_no_password_of_an_endpoint_url(tmp_path: Path) -> None:
    """The info line for a url given with /v1 quoted it whole, a proxy's user:password@ included (CI logs keep
    `spec check`'s output); it masks the password as the spec's errors do (spec.models.url_without_password)."""
    spec = raw()
    spec["endpoints"][0]["url"] = "http://bob:s3cret@10.0.0.5:8000/v1"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = CliRunner().invoke(app, ["spec", "check", str(path)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "s3cret" not in r.output, r.output
    ident = spec["endpoints"][0]["id"]
    assert (f"info endpoints.0 ({ident}): url 'http://bob:***@10.0.0.5:8000/v1' is the base http://bob:***@10.0.0.5:8000 "
            "(the /v1 taken off): the gateway calls http://bob:***@10.0.0.5:8000/v1/chat/completions") in r.output, r.output


def test_spec_check_of_a_fifo_reads_it_once_and_says_its_info_lines(tmp_path: Path) -> None:
    """`spec check` read the file a second time for its info lines: a spec given as a pipe or FIFO (`aigrid spec
    check <(...)`) had been drained by the first read, so the lines were missing (a pipe) or the check waited for a
    writer and failed with an error (a FIFO)."""
    import os
    import threading

    spec = raw()
    spec["endpoints"][0]["url"] = "http://10.0.0.5:8000/v1"
    fifo = tmp_path / "grid.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:  # blocks until spec check opens it to read
            f.write(yaml.safe_dump(spec).encode())

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    r = CliRunner().invoke(app, ["spec", "check", str(fifo)], env={"COLUMNS": "300"})
    writer.join(timeout=30)
    assert r.exit_code == 0, r.output
    assert f"info endpoints.0 ({spec['endpoints'][0]['id']}): url 'http://10.0.0.5:8000/v1'" in r.output, r.output


@pytest.mark.parametrize(("url", "shown"), [
    ("http://ops:p@ss@proxy:3128/v1", "http://ops:***@proxy:3128/v1"),
    ("http://u:a@b@c@10.0.0.7:8000", "http://u:***@10.0.0.7:8000"),
    ("http://ops:s3cret@gpu-7:8000/v1?x=a@b", "http://ops:***@gpu-7:8000/v1?x=a@b"),
    ("http://ops@gpu-7:8000", "http://ops@gpu-7:8000"),
    ("http://gpu-7:8000/a@b", "http://gpu-7:8000/a@b"),
])
def test_a_password_holding_an_at_sign_is_masked_whole(url: str, shown: str) -> None:
    """httpx reads the userinfo up to the authority's last `@` (`u:p@ss@host` sends the password `p@ss`): the mask
    covers all of it, not just what comes before the first `@` (it printed `http://ops:***@ss@proxy:3128/v1`)."""
    from aigrid.spec.models import url_without_password

    assert url_without_password(url) == shown
