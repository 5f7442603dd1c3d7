"""The aigrid command: clear errors (never a traceback) and the key and audit sub-commands."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aigrid.audit.log import AuditLog
from aigrid.audit.record import AuditRecord
from aigrid.audit.signing import generate_keypair, load_private_key
from aigrid.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_spec_check_ok_and_bad(tmp_path: Path) -> None:
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "demo.yaml")])
    assert r.exit_code == 0 and "4 sites, 4 endpoints, 1 model, 2 tenants" in r.output, r.output  # "1 models" before
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "demo.yaml").read_text().replace("lat: 50.11", "lat: 500"))
    r = runner.invoke(app, ["spec", "check", str(bad)])
    assert r.exit_code == 2 and "sites.fra.lat" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(("made", "says"), [(None, "cannot read file: No such file or directory"),
                                            ("folder", "cannot read file: Is a directory"),
                                            ("", "the file is empty: a grid spec is a YAML mapping"),
                                            ("a: [\n", "not valid YAML at line 2")])
def test_spec_check_of_a_file_it_cannot_read_is_one_line(tmp_path: Path, made: str | None, says: str) -> None:
    """`aigrid spec check nope.yaml` said `invalid grid spec nope.yaml:` and a list of one: a file not read is no
    grid spec yet (spec check takes scenarios and demand files too); one line, as `aigrid sim` and `plan` say it
    (thirty-eighth session)."""
    given = tmp_path / "given.yaml"
    if made == "folder":
        given.mkdir()
    elif made is not None:
        given.write_text(made)
    r = runner.invoke(app, ["spec", "check", str(given)])
    assert r.exit_code == 2 and r.output.startswith(f"error: {given}: {says}"), r.output
    assert "invalid grid spec" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("command", ["up", "gateway"])
@pytest.mark.parametrize(("made", "says"), [(None, "cannot read file: No such file or directory"),
                                            ("folder", "cannot read file: Is a directory")])
def test_up_of_a_spec_it_cannot_read_is_one_line(tmp_path: Path, command: str, made: str | None, says: str) -> None:
    """`aigrid up nope.yaml` said `invalid grid spec nope.yaml:` and `  - cannot read file: ...` after `spec check`,
    `sim` and `plan` said it on one line (review RV5 of UX4's e9e6c5a5)."""
    given = tmp_path / "given.yaml"
    if made == "folder":
        given.mkdir()
    r = runner.invoke(app, [command, str(given)])
    assert r.exit_code == 2 and r.output.startswith(f"error: {given}: {says}"), r.output
    assert "invalid grid spec" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_spec_check_says_the_kv_cache_the_embedded_engines_allocate(tmp_path: Path) -> None:
    """Each slot of an embedded engine holds its model's context, its KV cache allocated at start: a context typed
    with a zero too many took gigabytes at `aigrid up` with no word before. The demo: 4 engines x 2 slots x 8192
    tokens x 23,040 bytes (KV_BYTES_PER_TOKEN) = 1,440 MiB; a grid without embedded engines says nothing of it."""
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "demo.yaml")], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "info the 4 embedded engines allocate about 1,440 MiB of KV cache at start" in r.output, r.output
    # the figure is SmolLM2-135M's, whatever model the spec declares (review RV2: the line said only "its model")
    assert "22.5 KiB a token of SmolLM2-135M, the model every embedded engine runs" in r.output, r.output
    one = tmp_path / "one.yaml"
    one.write_text((ROOT / "examples" / "demo.yaml").read_text().replace("context: 8192", "context: 131072"))
    r = runner.invoke(app, ["spec", "check", str(one)], env={"COLUMNS": "300"})
    assert "allocate about 23,040 MiB of KV cache" in r.output, r.output  # 131,072 x 8 slots x 22.5 KiB
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "right-size.yaml")])
    assert r.exit_code == 0 and "KV cache" not in r.output, r.output


def test_spec_check_says_the_path_as_given_on_one_line(tmp_path: Path) -> None:
    """`aigrid spec check` printed the path through rich markup unescaped (`[x].yaml` came out as `.yaml`, the
    file another one) and wrapped its line at 80 columns when piped, the command it names cut in two."""
    folder = tmp_path / ("a-folder-with-a-long-name-" * 3)
    folder.mkdir()
    for example, end in (("demo.yaml", "4 sites, 4 endpoints, 1 model, 2 tenants"),
                         ("sim/small.yaml", "`aigrid sim {path}`")):
        path = folder / f"[x]{Path(example).name}"
        path.write_text((ROOT / "examples" / example).read_text())
        r = runner.invoke(app, ["spec", "check", str(path)])
        line = r.output.splitlines()[0]  # (a stale compiled build's note may follow, on stderr)
        assert r.exit_code == 0 and line.startswith(f"ok {path}: ") and line.endswith(end.format(path=path)), r.output


def test_node_context_is_bounded_as_a_spec_models_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid node --context` had no upper bound where a spec's model `context` has spec.models.MAX_CONTEXT: 131072
    typed with two zeros too many started llama-server with a KV cache of 281 GiB a slot. Past the bound the flag
    is refused, named, before the node starts; the bound itself is taken."""
    from aigrid import memory
    from aigrid.gateway import server
    from aigrid.spec.models import MAX_CONTEXT

    started: list[int] = []

    async def run_node(console: object, **options: Any) -> None:
        started.append(options["context"])

    monkeypatch.setattr(server, "run_node", run_node)
    monkeypatch.setattr(memory, "available_memory", lambda: memory.Memory(2**50, memory.MACHINE))  # its cache fits
    r = runner.invoke(app, ["node", "--context", str(MAX_CONTEXT + 1)], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "'--context'" in r.output and f"less than or equal to {MAX_CONTEXT}" in r.output, \
        r.output
    assert started == [] and "Traceback" not in r.output
    r = runner.invoke(app, ["node", "--context", str(MAX_CONTEXT)])
    assert r.exit_code == 0 and started == [MAX_CONTEXT], r.output


def test_node_refuses_a_kv_cache_that_does_not_fit_in_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """N4: `aigrid node` allocates --context x --slots tokens of KV cache at start (22.5 KiB a token) with no memory
    check, where `aigrid up` refuses a spec whose cache does not fit (gateway/server.check_kv_cache_fits): the node
    now holds it against the same figure (MemAvailable, or a cgroup v2 limit where smaller) through the same check
    (server.kv_cache_over, here a fake reader, never the machine's) and refuses, naming --context, before the engine
    starts. 65,536 x 2 slots is 2,880 MiB."""
    from aigrid import memory
    from aigrid.gateway import server

    started: list[int] = []

    async def run_node(console: object, **options: Any) -> None:
        started.append(options["context"])

    monkeypatch.setattr(server, "run_node", run_node)
    monkeypatch.setattr(memory, "available_memory", lambda: memory.Memory(2 * 2**30, memory.MACHINE))
    r = runner.invoke(app, ["node", "--context", "65536"], env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "'--context'" in said and "65,536 tokens x 2 slots" in said, r.output
    assert "2.8 GiB of KV cache allocated at start, more than the 2.0 GiB this machine has available" in said, said
    assert "Lower --context (or --slots)" in said and started == [] and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["node", "--context", "32768", "--slots", "2"])  # 1,440 MiB: fits
    assert r.exit_code == 0 and started == [32768], r.output
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # not said (no /proc): not checked, as aigrid up
    r = runner.invoke(app, ["node", "--context", "65536"])
    assert r.exit_code == 0 and started == [32768, 65536], r.output


def test_gateway_refuses_embedded_endpoints() -> None:
    """Said before the port is checked: beside a running `make run` (the demo's port taken) it said only that the
    port was in use, and the spec was named "(spec)"."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = runner.invoke(app, ["gateway", str(ROOT / "examples" / "demo.yaml"), "--port", port])
    assert r.exit_code == 2 and "use `aigrid up`" in r.output, r.output
    assert f"invalid grid spec {ROOT / 'examples' / 'demo.yaml'}:" in " ".join(r.output.split()), r.output  # the file


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.json"
    r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--jurisdiction", "EU"])
    assert r.exit_code == 2 and "AIGRID_KEY_SECRET" in r.output  # no secret: a clear error
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--jurisdiction", "EU"])
    assert r.exit_code == 0 and "api key: aig_" in r.output
    secret = r.output.split("api key: ")[1].split()[0]
    assert secret not in keys.read_text()  # only the digest is stored
    key_id = r.output.split("key id:")[1].split()[0]
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(keys)])
    assert key_id in r.output and "active" in r.output
    r = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys)])
    assert r.exit_code == 0 and r.output == f"revoked {key_id}\n", r.output
    assert "revoked" in runner.invoke(app, ["keys", "list", "--keys-file", str(keys)]).output
    # revoked again: said so, and when (it said "revoked" again), the exit status 0 as before
    r = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys)])
    assert r.exit_code == 0 and f"{key_id} was already revoked (at 20" in r.output, r.output


def test_keys_create_refuses_a_tenant_the_spec_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid keys create` checked its tenant against nothing: a mistyped one got a key, and every request with it
    was a 401. With --spec a tenant the spec lacks is refused with the nearest name and no key is made; without a
    spec the command warns that it did not check."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    keys, spec = tmp_path / "keys.json", str(ROOT / "examples" / "demo.yaml")
    r = runner.invoke(app, ["keys", "create", "eu-bnak", "--keys-file", str(keys), "--spec", spec],
                      env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "tenant 'eu-bnak' is not one of" in said and "(did you mean eu-bank?)" in said, said
    assert not keys.exists()  # no key was made
    for tenant in ("eu-bank", "default"):  # a spec tenant, and the one every grid has
        r = runner.invoke(app, ["keys", "create", tenant, "--keys-file", str(keys), "--spec", spec])
        assert r.exit_code == 0 and "api key: aig_" in r.output and "warning" not in r.output, r.output
    r = runner.invoke(app, ["keys", "create", "eu-bnak", "--keys-file", str(keys)], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and "api key: aig_" in r.output, r.output
    assert "warning: tenant 'eu-bnak' not checked against a grid spec's tenants (give --spec FILE)" in r.stderr


def test_keys_create_of_the_default_tenant_warns_of_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --spec, `keys create default` warned that the tenant was not checked, though every grid has it, and
    the warning was cut at 80 columns mid-sentence (7 Dec 2026, thirty-third session)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    keys = tmp_path / "keys.json"
    r = runner.invoke(app, ["keys", "create", "default", "--keys-file", str(keys)], env={"COLUMNS": "80"})
    assert r.exit_code == 0 and "warning" not in r.output and "api key: aig_" in r.output, r.output
    r = runner.invoke(app, ["keys", "create", "someone", "--keys-file", str(keys)], env={"COLUMNS": "80"})
    [line] = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 0 and line.startswith("warning: tenant 'someone' not checked") and \
        line.endswith("refused (401) on every request"), r.stderr


@pytest.mark.parametrize(("limits", "says"), [
    (["--site", "fr"], "{spec}: --site: unknown site 'fr' (did you mean fra?) (sites: fra, gru, iad, nrt)"),
    (["--jurisdiction", "eu"], "{spec}: --jurisdiction: no site is in jurisdiction 'eu'; sites are in 'EU'"),
    (["--jurisdiction", "EUR"], "{spec}: --jurisdiction: no site is in EUR (did you mean EU?)"),
    (["--model", "smollm-135m"], "{spec}: --model: ['smollm-135m'] match no model an endpoint serves (did you mean "
                                 "smollm2-135m?)"),
    (["--policy", "cheapest"], "--policy 'cheapest': not a policy of {spec}"),
])
def test_keys_create_refuses_limits_the_spec_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    limits: list[str], says: str) -> None:
    """`keys create --spec` checked the key's tenant against the grid, not its limits: `--site fr` made a key every
    request of which was refused (7 Dec 2026, thirty-third session). Each limit is checked as the spec checks a
    tenant's; one the grid has beside one it lacks (a site yet to come) is not refused."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    keys, spec = tmp_path / "keys.json", str(ROOT / "examples" / "demo.yaml")
    r = runner.invoke(app, ["keys", "create", "default", "--keys-file", str(keys), "--spec", spec, *limits],
                      env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and says.format(spec=spec) in said and "no key was made" in said, said
    assert not keys.exists()
    r = runner.invoke(app, ["keys", "create", "default", "--keys-file", str(keys), "--spec", spec,
                            "--jurisdiction", "EU", "--jurisdiction", "CH", "--model", "smollm2-*", "--site", "fra",
                            "--policy", "cost-first"])
    assert r.exit_code == 0 and "api key: aig_" in r.output, r.output
    # a site yet to come beside one the grid has is kept, as the docs' row says (it was refused, "every request with
    # its key would be refused", though fra serves it: review of ebbf1670)
    r = runner.invoke(app, ["keys", "create", "default", "--keys-file", str(keys), "--spec", spec, "--site", "fra",
                            "--site", "ams"])
    assert r.exit_code == 0 and "api key: aig_" in r.output, r.output


@pytest.mark.parametrize(("tenant", "limits", "says"), [
    ("eu-bank", ["--site", "iad"], "the key: no endpoint is within its --site ['iad'] and tenant eu-bank's "
                                   "allowed_jurisdictions ['EU']"),
    ("default", ["--site", "fra", "--jurisdiction", "US"], "the key: no endpoint is within its --jurisdiction "
                                                           "['US'], --site ['fra']"),
    ("eu-bank", ["--jurisdiction", "US", "--jurisdiction", "EUU"], "the key: no endpoint is within its "
                                                                   "--jurisdiction ['US', 'EUU'] and tenant eu-bank's"),
])
def test_keys_create_refuses_limits_that_leave_no_endpoint_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tenant: str, limits: list[str], says: str) -> None:
    """check_scopes, a copy of the spec's tenant check, took each of a key's limits alone and apart from its
    tenant's: an EU-only tenant's key with `--site iad`, or `--site fra --jurisdiction US`, made a key every request
    of which was refused (review, 7 Dec 2026, thirty-third session). The spec's own check now runs on the key's
    limits within its tenant's, naming what leaves nothing; limits that leave an endpoint still make a key."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    keys, spec = tmp_path / "keys.json", str(ROOT / "examples" / "demo.yaml")
    r = runner.invoke(app, ["keys", "create", tenant, "--keys-file", str(keys), "--spec", spec, *limits],
                      env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"{spec}: {says}" in said and "no key was made" in said, said
    assert not keys.exists()
    for fine in (["--site", "fra"], ["--site", "fra", "--site", "ams"], ["--jurisdiction", "EU", "--model", "smollm2-*"]):
        r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--spec", spec, *fine])
        assert r.exit_code == 0 and "api key: aig_" in r.output, (fine, r.output)


@pytest.mark.parametrize(("value", "says"), [(None, "AIGRID_KEY_SECRET is not set"), ("short", "it holds 5 bytes"),
                                             ("é" * 7, "it holds 14 bytes")])
def test_keys_say_whether_the_secret_is_unset_or_too_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            value: str | None, says: str) -> None:
    """A secret set but shorter than 16 bytes was told "set AIGRID_KEY_SECRET to a random secret ...", as if it
    were unset (7 Dec 2026, thirty-second session): the operator who had set it looked for a typo in the name."""
    if value is None:
        monkeypatch.delenv("AIGRID_KEY_SECRET", raising=False)
    else:
        monkeypatch.setenv("AIGRID_KEY_SECRET", value)
    r = runner.invoke(app, ["keys", "create", "chat", "--keys-file", str(tmp_path / "keys.json")])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "at least 16 bytes" in out and says in out, out
    assert not (tmp_path / "keys.json").exists()
    assert "warning" not in out, out  # one clear error: not the tenant's warning first (thirty-second session)


def test_keys_read_the_secret_from_the_variable_secret_env_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid keys` read AIGRID_KEY_SECRET only: a gateway whose spec names another (security.secret_env) needed
    its value copied over under that name. `--secret-env NAME` reads NAME, held to security.secret_env's pattern."""
    from aigrid.security.keys import KeyRing

    monkeypatch.delenv("AIGRID_KEY_SECRET", raising=False)
    monkeypatch.setenv("GRID_SECRET", "0123456789abcdef-grid")
    keys = tmp_path / "keys.json"
    r = runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--secret-env", "GRID_SECRET"])
    assert r.exit_code == 0 and "api key: aig_" in r.output, r.output
    api_key = r.output.split("api key: ")[1].split()[0]
    key_id = r.output.split("key id:")[1].split()[0]
    record = KeyRing.load(keys, b"0123456789abcdef-grid").verify(api_key)  # hashed with GRID_SECRET's value
    assert record is not None and record.key_id == key_id
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(keys), "--secret-env", "GRID_SECRET"])
    assert r.exit_code == 0 and key_id in r.output and "active" in r.output, r.output
    r = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys), "--secret-env", "GRID_SECRET"])
    assert r.exit_code == 0 and "revoked" in r.output, r.output
    r = runner.invoke(app, ["keys", "create", "chat", "--keys-file", str(keys)])  # without it: AIGRID_KEY_SECRET, unset
    assert r.exit_code == 2 and "set AIGRID_KEY_SECRET" in r.output, r.output
    for args in (["create", "chat"],):  # list and revoke read no secret (tests/security/test_keys_cli.py)
        r = runner.invoke(app, ["keys", *args, "--keys-file", str(keys), "--secret-env", "OTHER_SECRET"])
        assert r.exit_code == 2 and "set OTHER_SECRET" in r.output, r.output
        for bad in ("GRID-SECRET", "1SECRET", "$GRID_SECRET", ""):
            fresh = tmp_path / "new" / "keys.json"
            r = runner.invoke(app, ["keys", *args, "--keys-file", str(fresh), "--secret-env", bad])
            said = " ".join(r.output.split())
            assert r.exit_code == 2 and f"--secret-env {bad!r}: not an environment variable's name" in said, said
            assert not fresh.parent.exists()  # refused before the key file is touched


def test_audit_verify_intact_then_tampered(tmp_path: Path) -> None:
    priv, pub, db = tmp_path / "a.pem", tmp_path / "a.pub.pem", tmp_path / "audit.db"
    generate_keypair(priv, pub)

    async def write() -> None:
        log = AuditLog(db, load_private_key(priv))
        await log.start()
        for i in range(5):
            await log.append(AuditRecord(ts=float(i), request_id=f"r{i}", tenant="t", key_id="k", model="m"))
        await log.stop()

    asyncio.run(write())
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert r.exit_code == 0 and "OK" in r.stdout and r.stderr == "", r.output  # the report: stdout
    import sqlite3

    with sqlite3.connect(db) as c:
        c.execute("DROP TRIGGER audit_records_no_update")  # an attacker holding the file can do this
        c.execute("UPDATE audit_records SET body = replace(body, '\"tenant\":\"t\"', '\"tenant\":\"x\"') WHERE seq = 3")
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert r.exit_code == 1 and "first bad record 3" in r.stdout and r.stderr == "", r.output


def test_up_fails_fast_when_the_port_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["up", str(ROOT / "examples" / "demo.yaml"), "--port", str(port)])
    assert r.exit_code == 2 and "is another gateway running" in r.output


def test_node_on_a_taken_port_says_so_in_one_line_naming_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid node --port N` with N taken started llama-server, which failed to bind: the node printed "llama-server
    exited with code 1 while starting" and twenty lines of its log. It is refused before any engine starts, in one
    line naming --port, what shows the port's holder and a port free now."""
    import re
    import socket

    from aigrid.gateway import server

    started: list[object] = []

    class NoEngine:
        def __init__(self, cfg: object) -> None:
            started.append(cfg)
            raise AssertionError("no engine is started on a taken port")

    monkeypatch.setattr(server, "LlamaServerProcess", NoEngine)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(app, ["node", "--port", str(port)], env={"COLUMNS": "300"})
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and started == [] and len(lines) == 1, r.output
    assert lines[0].startswith(f"error: --port: cannot listen on 127.0.0.1:{port}: Address already in use"), r.output
    assert f"ss -ltnp 'sport = :{port}'" in lines[0] and re.search(r"give --port \d+ \(free now\)$", lines[0]), r.output
    r = runner.invoke(app, ["node", "--host", "not a host", "--port", str(port)], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and started == [] and "error: --host: cannot listen on not a host" in r.output, r.output


def _up_on_a_taken_port() -> tuple[int, str]:
    """`aigrid up` of the demo on a port taken (and the one after it taken too): the port and what it said."""
    import socket

    with socket.socket() as taken, socket.socket() as next_taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            next_taken.bind(("127.0.0.1", port + 1))
        except OSError:  # someone else's already: taken all the same
            pass
        else:
            next_taken.listen()
        r = runner.invoke(app, ["up", str(ROOT / "examples" / "demo.yaml"), "--port", str(port)])
    assert r.exit_code == 2, r.output
    return port, " ".join(r.output.split())


def test_a_taken_port_names_how_to_find_its_holder_and_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` beside a running grid said only "pick another port with --port", which `make run` did not
    take: the error now names the command that shows what holds the port, a port free now past it (one taken
    right after it is skipped), and the command that was run on that port (not the demo's, nor make's)."""
    import re

    monkeypatch.delenv("AIGRID_MAKE_RUN", raising=False)  # as from a shell
    monkeypatch.setenv("MAKELEVEL", "1")  # a user's own Makefile (and `make test`) run under make, not `make run`
    port, out = _up_on_a_taken_port()
    assert f"ss -ltnp 'sport = :{port}'" in out
    free = re.search(r"add --port (\d+) \(free now\) to this command", out)
    assert free is not None, out
    assert port + 2 <= int(free[1]) <= port + 21
    assert f"aigrid up examples/demo.yaml --port {free[1]}" not in out and "make run" not in out.split("Stop it")[1]


@pytest.mark.parametrize("command", ["gateway", "up"])
def test_a_taken_port_suggests_the_command_that_was_run_on_a_free_port(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str) -> None:
    """`aigrid gateway grid.yaml` on a taken port was told to run `aigrid up examples/demo.yaml --port N` (another
    command, another spec): the hint is now the command the user ran with its --port set to a free one."""
    import re
    import socket

    monkeypatch.delenv("AIGRID_MAKE_RUN", raising=False)
    spec = tmp_path / "grid.yaml"
    demo = (ROOT / "examples" / "demo.yaml").read_text()
    spec.write_text(demo.replace("engine: embedded", "engine: llamacpp, url: 'http://127.0.0.1:9'"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [command, str(spec), "--port", str(port)]
        monkeypatch.setattr("sys.argv", ["aigrid", *argv])
        r = runner.invoke(app, argv)
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    free = re.search(r"add --port (\d+) \(free now\) to this command: `aigrid (\S+) (\S+) --port (\d+)`", out)
    assert free is not None, out
    assert (free[2], free[3], free[4]) == (command, str(spec), free[1]) and int(free[1]) != port, out
    assert "examples/demo.yaml" not in out, out


def test_a_taken_port_under_make_run_is_told_as_makes_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `make run` (its recipe sets AIGRID_MAKE_RUN) the error said "add --port N to this command", and
    `make run` took no --port: it now says `make run PORT=N` with the free port, and the aigrid form beside it."""
    import re

    monkeypatch.setenv("AIGRID_MAKE_RUN", "1")
    port, out = _up_on_a_taken_port()
    free = re.search(r"start on port (\d+) \(free now\) instead: `make run PORT=(\d+)`", out)
    assert free is not None and free[1] == free[2], out
    assert port + 2 <= int(free[1]) <= port + 21
    assert "to this command" not in out and f"up SPEC --port {free[1]}` without make" in out, out


def _make_run(*args: str, env_port: str | None = None) -> str:
    """The line `make -n run ARGS` would run to start the grid (nothing is run, installed or built)."""
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make")
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    if env_port is not None:
        env["PORT"] = env_port
    out = subprocess.run(["make", "-n", "run", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    [line] = [line for line in out.splitlines() if "bin/aigrid up " in line]
    return line


def test_make_run_takes_a_port() -> None:
    """A newcomer with 8080 taken was told to type `.venv/bin/aigrid up examples/demo.yaml --port 8081`: `make
    run PORT=8081` now passes --port 8081 to `aigrid up`, and gives no --port without PORT, even where the
    environment has a PORT of its own (a platform's, for its servers)."""
    assert _make_run("PORT=8081").endswith("bin/aigrid up examples/demo.yaml --port 8081")
    assert _make_run().startswith("AIGRID_MAKE_RUN=1 ")  # what tells the port error it was `make run`
    assert _make_run("PORT=8081", "SPEC=examples/demo-netns.yaml").endswith(
        "bin/aigrid up examples/demo-netns.yaml --port 8081")
    assert _make_run(env_port="3000").endswith("bin/aigrid up examples/demo.yaml")


@pytest.mark.parametrize("content", [None, b"not a database, a text file\n" * 200, b""])
def test_audit_verify_of_what_is_not_an_audit_log(tmp_path: Path, content: bytes | None) -> None:
    pub = tmp_path / "a.pub.pem"
    generate_keypair(tmp_path / "a.pem", pub)
    db = tmp_path / "audit.db"
    if content is None:
        db.mkdir()  # a directory
    else:
        db.write_bytes(content)
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert r.exit_code == 2 and "error: cannot verify" in r.output and str(db) in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("command", ["verify", "query", "summary"])
def test_an_audit_database_that_is_a_folder_is_named_so(tmp_path: Path, command: str) -> None:
    """`aigrid audit verify .aigrid` (the folder, not the database in it) said "cannot be read as an audit database
    (disk I/O error)", SQLite's words for a folder; query and summary "cannot read .aigrid: disk I/O error" (7 Dec
    2026, thirty-third session)."""
    pub = tmp_path / "a.pub.pem"
    generate_keypair(tmp_path / "a.pem", pub)
    r = runner.invoke(app, ["audit", command, str(tmp_path), "--public-key", str(pub)], env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"{tmp_path} is a folder, not an audit database" in said, said
    assert "disk I/O" not in said and "security.audit.path" in said, said


def test_audit_verify_of_a_missing_database_says_error(tmp_path: Path) -> None:
    """`aigrid audit verify` on a missing database printed "cannot verify: ..." without the "error:" every other
    command's failure starts with (7 Dec 2026, thirty-second session)."""
    db = tmp_path / "none.db"
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(tmp_path / "a.pub.pem")])
    assert r.exit_code == 2 and r.output.startswith(f"error: cannot verify: no audit database at {db}"), r.output


def test_audit_verify_and_keygen_print_their_errors_on_stderr_and_the_report_on_stdout(tmp_path: Path) -> None:
    """`aigrid audit verify` (and keygen) printed their `error:` lines on stdout, every other command on stderr
    (found this session): a script reading the report from stdout read the error as the report."""
    pub, db = tmp_path / "a.pub.pem", tmp_path / "audit.db"
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub)])
    assert (r.exit_code, r.stdout) == (2, "") and r.stderr == f"error: cannot verify: no audit database at {db}\n"
    anchor = f"7:{'ab' * 32}"  # the verdict is the report's: stdout
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub), "--anchor", anchor])
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot verify: no audit database"), r.stderr
    assert r.stdout.startswith(f"TAMPERED: the anchor {anchor} vouches for a log that is no longer there"), r.stdout
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(pub), "--anchor", "bogus"])
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith("error: cannot verify: --anchor"), r.output
    generate_keypair(tmp_path / "a.pem", pub)
    r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "a.pem"), "--public-key",
                            str(tmp_path / "b.pub.pem")])
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.startswith(f"error: {tmp_path / 'a.pem'} exists"), r.output


def test_audit_keygen_makes_both_folders_and_fails_in_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "a" / "k.pem"),
                            "--public-key", str(tmp_path / "b" / "k.pub.pem")])
    assert r.exit_code == 0 and (tmp_path / "b" / "k.pub.pem").exists(), r.output
    (tmp_path / "taken").write_text("")
    r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "taken" / "k.pem"),
                            "--public-key", str(tmp_path / "c" / "k.pub.pem")])
    assert r.exit_code == 2 and "taken" in r.output and not isinstance(r.exception, OSError), r.output


def test_keys_list_of_a_file_that_is_not_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    bad = tmp_path / "keys.json"
    bad.write_text("garbage\n")
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(bad)])
    assert r.exit_code == 2 and str(bad) in r.output and not isinstance(r.exception, ValueError), r.output


def test_keys_create_and_revoke_name_the_flag_when_the_key_file_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They said only `[Errno 21] Is a directory: '...'`, or `[Errno 17] File exists` for a file where the key
    file's folder must be, naming no flag."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    for keys, says in ((tmp_path / "folder", "Is a directory"),
                       (tmp_path / "file" / "keys.json", f"a file stands where its folder {tmp_path / 'file'} must be")):
        for args in (["create", "eu-bank"], ["revoke", "abc"]):
            r = runner.invoke(app, ["keys", *args, "--keys-file", str(keys)])
            out = " ".join(r.output.split())
            assert r.exit_code == 2 and f"--keys-file {keys}: cannot" in out and says in out, out
    assert (tmp_path / "file").read_text() == ""


def test_explain_against_a_server_that_is_not_a_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(404, text="<html>File not found</html>"))
    r = runner.invoke(app, ["explain", "dec-1", "--gateway", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "404" in r.output and "http://127.0.0.1:9" in r.output, r.output
    assert not isinstance(r.exception, ValueError)


DECISION = {
    "id": "dec-1", "policy": "balanced", "tenant": "default", "model": "m", "status": "ok",
    "client": {"lat": 35.68, "lon": 139.69}, "served_by": "nrt-smollm2-long-endpoint-name", "ttft_ms": 130.0,
    "reason": "chose nrt-smollm2-long-endpoint-name", "rejected": [], "attempts": [],
    "candidates": [{"endpoint": "nrt-smollm2-long-endpoint-name", "model": "smollm2-135m", "site": "nrt",
                    "jurisdiction": "JP", "scores": {"ttft": 0.9, "cost": 0.7, "affinity": 0.7, "headroom": 0.8,
                                                     "proximity": 1.0},
                    "total": 0.846, "predicted_ttft_ms": 124.0, "predicted_ttft_p90_ms": 181.0, "rtt_ms": 9.0,
                    "rtt_source": "modelled", "queue_ms": 0.0, "prefill_ms": 115.0, "distance_km": 10872,
                    "measured_rtt_ms": 2.4}],
}


def test_explain_piped_is_not_cut_to_80_columns_and_prints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, json=DECISION))
    r = runner.invoke(app, ["explain", "dec-1"])
    assert r.exit_code == 0, r.output
    for cell in ("nrt-smollm2-long-endpoint-name", "proximity", "pred. TTFT ms", "prefill", "gw rtt", "10,872"):
        assert cell in r.output, r.output  # an 80-column console prints "…" for most of them
    r = runner.invoke(app, ["explain", "dec-1", "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == DECISION, r.output


def test_explain_names_the_gateway_it_cannot_reach() -> None:
    r = runner.invoke(app, ["explain", "dec-1", "--gateway", "http://127.0.0.1:1"])
    assert r.exit_code == 2 and "http://127.0.0.1:1" in r.output, r.output


def test_explain_with_no_gateway_running_says_how_to_start_one_or_name_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid explain` before `make run` (or after it stopped) said only "[Errno 111] Connection refused"."""
    import httpx

    def refused(url: str, **kwargs: object) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(httpx, "get", refused)
    r = runner.invoke(app, ["explain", "dec-1"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "http://127.0.0.1:8080" in out, out
    assert "is it running? `make run` starts" in out and "--gateway URL names another" in out, out


@pytest.mark.parametrize(("gateway", "said"), [("http://127.0.0.1:8080", "timed out"), ("http://[::1", "Invalid")])
def test_explain_asks_whether_the_gateway_runs_only_where_no_connection_was_made(
        monkeypatch: pytest.MonkeyPatch, gateway: str, said: str) -> None:
    """A gateway that took past explain's 5 s runs (asking whether it does sent the reader to start a second
    one, whose port is taken), and a mistyped --gateway is a URL to fix: neither is asked whether it runs."""
    import httpx

    def slow(url: str, **kwargs: object) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    if said == "timed out":
        monkeypatch.setattr(httpx, "get", slow)
    r = runner.invoke(app, ["explain", "dec-1", "--gateway", gateway])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"cannot reach the gateway at {gateway}" in out and said in out, out
    assert "is it running" not in out, out


@pytest.mark.parametrize("command", ["up", "gateway"])
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_gateway_port_out_of_range(command: str, port: str) -> None:
    r = runner.invoke(app, [command, str(ROOT / "examples" / "demo.yaml"), "--port", port])
    assert r.exit_code == 2 and "--port" in r.output and not isinstance(r.exception, OverflowError), r.output


def test_keys_refuse_an_empty_tenant_and_a_missing_file_and_list_scopes_readably(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    keys = tmp_path / "keys.json"
    for tenant in ("", "  ", " eu-bank"):
        r = runner.invoke(app, ["keys", "create", tenant, "--keys-file", str(keys)])
        assert r.exit_code == 2 and "tenant" in r.output and not keys.exists(), r.output
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(tmp_path / "typo.json")])
    assert r.exit_code == 2 and "typo.json" in r.output and "no such file" in r.output, r.output
    runner.invoke(app, ["keys", "create", "eu-bank", "--keys-file", str(keys), "--jurisdiction", "EU"])
    runner.invoke(app, ["keys", "create", "chat", "--keys-file", str(keys)])
    listed = runner.invoke(app, ["keys", "list", "--keys-file", str(keys)]).output
    assert "jurisdictions=EU" in listed and "any model, any site" in listed and "{" not in listed, listed


def test_audit_keygen_leaves_no_half_pair_when_the_public_key_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "pubdir").mkdir()
    args = ["audit", "keygen", "--private-key", str(tmp_path / "k.pem")]
    r = runner.invoke(app, [*args, "--public-key", str(tmp_path / "pubdir")])
    assert r.exit_code == 2 and not (tmp_path / "k.pem").exists(), r.output
    assert runner.invoke(app, [*args, "--public-key", str(tmp_path / "k.pub.pem")]).exit_code == 0


@pytest.mark.parametrize(("typed", "says"), [("serve", "`aigrid up SPEC`"), ("run", "`aigrid gateway SPEC`"),
                                            ("validate", "`aigrid spec check FILE`"), ("verify", "`aigrid audit verify DB`"),
                                            ("simulate", "`aigrid sim SCENARIO`")])
def test_a_command_named_as_other_tools_name_it_says_what_to_type(typed: str, says: str) -> None:
    """`aigrid serve` (as `vllm serve`) said only "No such command 'serve'.", and `aigrid simulate` "Did you mean
    'emulator'?" (7 Dec 2026, thirty-third session)."""
    r = runner.invoke(app, [typed, "x"], env={"COLUMNS": "300"})
    said = " ".join(r.output.replace("│", " ").split())
    assert r.exit_code == 2 and f"No such command '{typed}': " in said and says in said, said
    assert "emulator" not in said
    r = runner.invoke(app, ["benchmark"], env={"COLUMNS": "300"})  # typer's own guess stands where it has one
    assert r.exit_code == 2 and "Did you mean 'bench'?" in r.output, r.output


def test_spec_check_names_the_files_a_spec_names_that_are_not_there(tmp_path: Path) -> None:
    """`spec check` said ok of a spec whose site documents, endpoint tls_ca_file or agents.sql database did not
    exist, and `aigrid up` refused it seconds later (7 Dec 2026, thirty-third session). Each is named by its field,
    relative to the spec's folder; once they are there, ok."""
    import yaml

    raw = yaml.safe_load((ROOT / "examples" / "right-size.yaml").read_text())
    raw["sites"]["fra"]["documents"] = [{"path": "docs/*.txt"}, {"path": "faq.md"}]
    raw["endpoints"][0].update(url="https://127.0.0.1:9101", tls_ca_file="ca.pem")
    raw["agents"] = {"sql": {"ledger": {"path": "ledger.db"}}}
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump(raw))
    r = runner.invoke(app, ["spec", "check", str(spec)], env={"COLUMNS": "300"})
    said = r.output
    assert r.exit_code == 2 and not said.startswith("ok"), said
    for line in (f"sites.fra.documents[0].path: no file matches {tmp_path}/docs/*.txt",
                 f"sites.fra.documents[1].path: no such file {tmp_path}/faq.md",
                 f"endpoints[0].tls_ca_file: no such file {tmp_path}/ca.pem",
                 f"agents.sql.ledger.path: no such file {tmp_path}/ledger.db"):
        assert f"  - {line} (aigrid up and aigrid gateway refuse to start without it)" in said, said
    (tmp_path / "docs").mkdir()
    for name in ("docs/a.txt", "faq.md", "ca.pem", "ledger.db"):
        (tmp_path / name).write_text("x")
    r = runner.invoke(app, ["spec", "check", str(spec)], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and r.output.startswith(f"ok {spec}"), r.output


@pytest.mark.parametrize(("args", "says"), [
    (["up", "examples/sim/small.yaml"], "is a simulator scenario (for `aigrid sim`), not a grid spec"),
    (["gateway", "examples/plan/small.yaml"], "is a planner demand file (for `aigrid plan`), not a grid spec"),
    (["keys", "create", "default", "--spec", "examples/sim/small.yaml"], "is a simulator scenario"),
])
def test_a_grid_command_given_another_kind_of_file_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               args: list[str], says: str) -> None:
    """`aigrid up examples/sim/small.yaml` listed a dozen fields a grid spec lacks or does not take (`gateway.count:
    Extra inputs are not permitted`, `models: Input should be a valid dictionary`), where `aigrid sim` of a grid spec
    says what the file is (7 Dec 2026, thirty-third session)."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    monkeypatch.chdir(ROOT)
    r = runner.invoke(app, [*args, *(["--keys-file", str(tmp_path / "k.json")] if args[0] == "keys" else [])],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 2 and says in r.output and "Extra inputs" not in r.output, r.output
    assert not (tmp_path / "k.json").exists()


def test_audit_keygen_refuses_one_file_for_both_keys(tmp_path: Path) -> None:
    """`aigrid audit keygen --private-key k.pem --public-key k.pem` wrote the private key, then the public key over
    it, and said "wrote k.pem (keep secret) and k.pem (give to auditors)": the signing key was lost (7 Dec 2026,
    thirty-third session, review of d96f2a28). Refused, exit 2, nothing written (also when the paths differ only in
    spelling)."""
    (tmp_path / "sub").mkdir()
    for public in (tmp_path / "k.pem", tmp_path / "sub" / ".." / "k.pem"):
        r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "k.pem"),
                                "--public-key", str(public)], env={"COLUMNS": "300"})
        said = " ".join(r.output.split())
        assert r.exit_code == 2 and said.startswith("error: --private-key and --public-key name the same file"), said
        assert not (tmp_path / "k.pem").exists()


def test_audit_keygen_never_overwrites_a_public_key(tmp_path: Path) -> None:
    """A rotation's `aigrid audit keygen --private-key new.pem` (the default --public-key) wrote its public key over
    the old one, the only key the checkpoints signed before the rotation verify with: `audit verify` then said
    TAMPERED of an intact log (7 Dec 2026, thirty-third session). The command refuses, exit 2, and writes nothing."""
    old_pub = tmp_path / "k.pub.pem"
    assert runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "k.pem"),
                               "--public-key", str(old_pub)]).exit_code == 0
    kept = old_pub.read_bytes()
    r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "new.pem"),
                            "--public-key", str(old_pub)], env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and said.startswith(f"error: {old_pub} exists; refusing to overwrite a public key"), said
    assert old_pub.read_bytes() == kept and not (tmp_path / "new.pem").exists()
    r = runner.invoke(app, ["audit", "keygen", "--private-key", str(tmp_path / "k.pem"),
                            "--public-key", str(tmp_path / "other.pub.pem")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "refusing to overwrite a signing key" in r.output


@pytest.mark.parametrize("decision", ["dec-1", "req-1"])
def test_explain_at_a_server_that_is_no_gateway_says_so(monkeypatch: pytest.MonkeyPatch, decision: str) -> None:
    """`aigrid explain dec-1 --gateway` at an engine or the emulator (OpenAI-style errors) printed that server's own
    404, "error: no route /v1/decisions/dec-1", as if the gateway had no such route (7 Dec 2026, thirty-third
    session); a req- id added the audit hint, which is the gateway's."""
    import httpx

    theirs = {"error": {"message": f"no route /v1/decisions/{decision}", "type": "invalid_request_error",
                        "param": None, "code": "not_found"}}
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(404, json=theirs))
    r = runner.invoke(app, ["explain", decision, "--gateway", "127.0.0.1:9101"], env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and f"no route /v1/decisions/{decision} (http://127.0.0.1:9101 is no aigrid gateway: " \
        "--gateway URL names the gateway" in said and "audit query" not in said, said


def test_explain_of_a_request_id_says_it_is_no_decision_and_where_its_record_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request's x-request-id is `req-...`: explain said only that the gateway keeps the most recent
    decisions, as if it had been dropped; it never had one, and the audit log has its record."""
    import httpx

    gone = {"error": {"message": "no decision 'req-1' (the gateway keeps only the most recent decisions)",
                      "type": "not_found_error", "param": "decision_id", "code": "not_found"}}
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(404, json=gone))
    r = runner.invoke(app, ["explain", "req-1"])
    assert r.exit_code == 1 and "not a decision id" in r.output, r.output
    assert "aigrid audit query --request-id req-1" in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["explain", "dec-1"])  # a decision id that is gone: the gateway's word only
    assert r.exit_code == 1 and "not a decision id" not in r.output, r.output


@pytest.mark.parametrize(("gateway", "level"), [({}, "info"), ({"log_level": "error"}, "error")])
def test_a_worker_logs_at_the_specs_level_its_default_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          gateway: dict, level: str) -> None:
    """worker.json holds only what the spec set; a worker read a level left unset as "warning", so `make run` (a
    worker per core) wrote no access line at all, where the spec's default, info, writes one per request."""
    import aigrid.gateway.workers
    import aigrid.logs

    levels: list[str] = []
    process: list[object] = []
    real = aigrid.logs.configure

    def configure(lvl: str, *args: object, **kw: object) -> aigrid.logs.LogSink:
        levels.append(lvl)
        process.append(kw.get("process"))
        return real(lvl, *args, **kw)  # type: ignore[arg-type]

    async def serve(*args: object) -> None:
        return None

    for name in ("aigrid", "uvicorn.error"):  # configure() sets their levels: put back after the test
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    monkeypatch.setattr(aigrid.logs, "configure", configure)
    monkeypatch.setattr(aigrid.gateway.workers, "serve_worker", serve)
    config = tmp_path / "worker.json"
    config.write_text(json.dumps({"spec": {"name": "g", "gateway": gateway}}))
    r = runner.invoke(app, ["worker", str(config), "--index", "1"])
    assert r.exit_code == 0 and levels == [level], (r.output, levels)
    assert process == [{"worker": 1}]  # every line says which worker wrote it


@pytest.mark.parametrize("given", ["http://127.0.0.1:8091", "http://127.0.0.1:8091/", "http://127.0.0.1:8091/v1",
                                   "http://127.0.0.1:8091/v1/", "127.0.0.1:8091", "127.0.0.1:8091/v1"])
def test_explain_takes_the_gateway_or_its_openai_base_url(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """The banner prints the OpenAI base URL (.../v1); given as --gateway it asked /v1/v1/decisions/ID, a 404.
    Host and port alone (`--gateway 127.0.0.1:8091`, as `ss -ltn` shows a listener) was "Request URL is missing an
    'http://' or 'https://' protocol" (7 Dec 2026, thirty-second session): the gateway's plain HTTP is meant."""
    import httpx

    asked: list[str] = []

    def get(url: str, **kw: object) -> httpx.Response:
        asked.append(url)
        return httpx.Response(200, json=DECISION)

    monkeypatch.setattr(httpx, "get", get)
    r = runner.invoke(app, ["explain", "dec-1", "--gateway", given, "--json"])
    assert r.exit_code == 0 and asked == ["http://127.0.0.1:8091/v1/decisions/dec-1"], (r.output, asked)


@pytest.mark.parametrize("what", ["spec", "sim"])
def test_an_error_prints_a_files_control_characters_escaped(tmp_path: Path, what: str) -> None:
    """An error quotes what the file says (a key it does not know), and the file is whoever wrote it: a key holding
    terminal escapes (`ESC ]52;c;...` writes the operator's clipboard in the terminals that allow it, `ESC [1A
    ESC [2K` erases the lines above, a bidi override reorders what is shown) reached the terminal as written. Now
    every character of an error that is not printable (but the lines the message itself has) is shown escaped."""
    bad = tmp_path / "bad.yaml"
    source = ROOT / "examples" / ("demo.yaml" if what == "spec" else "sim/small.yaml")
    bad.write_text(source.read_text() + '"x\\e]52;c;Y3VybCBldmlsfHNo\\a\\e[1A\\e[2K\\u202ey": 1\n')
    r = runner.invoke(app, ["spec", "check", str(bad)] if what == "spec" else ["sim", str(bad), "--out",
                                                                               str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "\x1b" not in r.output and "\x07" not in r.output and "\u202e" not in r.output, repr(r.output)
    assert "x\\x1b]52;c;Y3VybCBldmlsfHNo\\x07\\x1b[1A\\x1b[2K\\u202ey" in r.output, repr(r.output)


def test_help_lists_each_command_s_summary_as_written_not_broken_where_its_source_wraps() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert "end-to-end latency, throughput, goodput under an SLO." in rows["bench"]
    assert "(continuous batching with chunked prefill," in rows["emulator"]


def _commands() -> list[tuple[str, object]]:
    """Every command of `aigrid`, by its full name (the lazy groups build theirs when listed)."""
    import typer
    import typer.main

    found: list[tuple[str, object]] = []

    def walk(cmd: object, name: str) -> None:
        found.append((name, cmd))
        if hasattr(cmd, "list_commands"):
            ctx = typer.Context(cmd)  # type: ignore[arg-type]
            for sub in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, sub), f"{name} {sub}")  # type: ignore[attr-defined]

    walk(typer.main.get_command(app), "aigrid")
    return found


def test_no_help_text_is_eaten_as_rich_markup() -> None:
    """--help renders help texts as rich markup: `[default: .aigrid/audit-signing.pub.pem]` in the help of
    `aigrid audit verify --public-key` (and of query and summary) was read as a style tag and dropped, so
    the help never said which key is read by default."""
    from rich.text import Text

    eaten = [f"{name} {param}: {text!r}" for name, cmd in _commands()
             for param, text in [("(help)", getattr(cmd, "help", None) or "")]
             + [(p.name, getattr(p, "help", None) or "") for p in cmd.params]  # type: ignore[attr-defined]
             if Text.from_markup(text).plain != text]
    assert not eaten, "\n".join(eaten)
    r = runner.invoke(app, ["audit", "verify", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert "audit-signing.pub.pem" in r.output, r.output


@pytest.mark.parametrize("command", ["up", "gateway"])
def test_replay_of_no_simulator_run_is_refused_before_the_gateway_starts(
        tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--replay sim-out` with a typo (or a folder with no requests.csv) started the gateway all the same, and
    /dashboard?replay=1 then answered only that the replay directory had no requests.csv."""
    import aigrid.gateway.server

    started: list[object] = []

    async def run_grid(*args: object, **kwargs: object) -> None:
        started.append(kwargs)

    monkeypatch.setattr(aigrid.gateway.server, "run_grid", run_grid)
    spec = str(ROOT / "examples" / "demo.yaml")
    for bad in (tmp_path / "no-such-run", tmp_path):
        r = runner.invoke(app, [command, spec, "--replay", str(bad), "--workers", "1"])
        assert not started and r.exit_code == 2, r.output
        assert "--replay" in r.output and "requests.csv" in r.output, r.output
    (tmp_path / "requests.csv").write_text("policy,arrival_s,site\n")
    r = runner.invoke(app, [command, spec, "--replay", str(tmp_path), "--workers", "1"])
    assert len(started) == 1 and r.exit_code == 0, r.output


def test_spec_check_takes_every_example_and_names_what_a_scenario_or_demand_is_for(tmp_path: Path) -> None:
    """Every YAML file under examples/ passes `aigrid spec check`: the simulator's scenarios and the planner's
    demand files printed a dozen "Extra inputs are not permitted" as if they were broken grid specs."""
    examples = sorted((ROOT / "examples").rglob("*.yaml"))
    assert len(examples) > 10
    for path in examples:
        r = runner.invoke(app, ["spec", "check", str(path)])
        assert r.exit_code == 0 and " ".join(r.output.split()).startswith(f"ok {path}"), r.output
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "sim" / "small.yaml")])
    assert "simulator scenario" in r.output and "aigrid sim" in r.output, r.output
    r = runner.invoke(app, ["spec", "check", str(ROOT / "examples" / "plan" / "small.yaml")])
    assert "demand" in r.output and "aigrid plan" in r.output, r.output
    # a broken scenario is still refused, with the scenario's own errors, not the grid spec's
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "examples" / "sim" / "small.yaml").read_text().replace("requests: 1500", "requests: -5"))
    r = runner.invoke(app, ["spec", "check", str(broken)])
    assert r.exit_code == 2 and "requests" in r.output and "Extra inputs" not in r.output, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize(("example", "field", "typo"), [
    ("sim/small.yaml", "duration_s", "duraton_s"), ("sim/small.yaml", "requests", "request"),
    ("plan/small.yaml", "traffic", "trafic"), ("plan/small.yaml", "supply", "suply")])
def test_spec_check_of_a_scenario_or_demand_with_a_typo_in_a_field_names_the_typo(
        tmp_path: Path, example: str, field: str, typo: str) -> None:
    """`aigrid spec check` took a file for a scenario only with both `duration_s` and `requests` (a demand file
    both `traffic` and `supply`): one of them mistyped, the file was checked as a grid spec, a dozen errors
    ("endpoints: Field required", "seed: Extra inputs ...") and the typo among them as a grid spec's unknown
    field. One of the two is enough now: the file's own check names the typo and the field it meant."""
    given = tmp_path / "typo.yaml"
    text = (ROOT / "examples" / example).read_text()
    assert f"\n{field}:" in text
    given.write_text(text.replace(f"\n{field}:", f"\n{typo}:"))
    r = runner.invoke(app, ["spec", "check", str(given)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"{typo}: Extra inputs are not permitted (did you mean {field}?)" in out, out
    assert "endpoints" not in out and "Traceback" not in out, out
    # one line: the required field the typo meant was a second one, `requests: Field required` (thirty-eighth session)
    assert "Field required" not in out, out


@pytest.mark.parametrize(("example", "was", "typo", "says"), [
    ("plan/small.yaml", "peak_rps: 12", "peak_rp", "traffic.peak_rp: Extra inputs are not permitted (did you mean "
     "peak_rps?)"),
    ("plan/small.yaml", "{name: chat, share: 0.6", "shares", "tenants[0].shares: Extra inputs are not permitted (did "
     "you mean share?)"),
    ("sim/small.yaml", "{id: us-east, city:", "ids", "sites[0].ids: Extra inputs are not permitted (did you mean id?)"),
    ("demo.yaml", "    family: smollm2", "famly", "models.smollm2-135m.famly: Extra inputs are not permitted (did you "
     "mean family?)"),
])
def test_a_mistyped_required_key_is_one_error_line(tmp_path: Path, example: str, was: str, typo: str,
                                                   says: str) -> None:
    """A required key mistyped was two errors, `traffic.peak_rps: Field required` and `traffic.peak_rp: Extra inputs
    are not permitted (did you mean peak_rps?)`: the second names both, so it is the one said (thirty-eighth
    session); a required field left out with no typo beside it is still `Field required`."""
    key = says.split(" (did you mean ")[1].split("?")[0]
    code, out = _spec_check_of_edited(tmp_path, example, was, was.replace(key, typo))
    assert code == 2 and says in out and "Field required" not in out and "Traceback" not in out, out
    code, out = _spec_check_of_edited(tmp_path, example, was, was.replace(key, "zzzzzzzz"))
    assert code == 2 and f"{says.split(typo)[0]}{key}: Field required" in out, out


@pytest.mark.parametrize(("example", "was", "now", "says"), [
    ("sim/small.yaml", "city: Tokyo", "city: Tokio", "site 'ap-tokyo': no city named 'Tokio' in GeoNames"),
    ("sim/small.yaml", "jurisdictions: [EU]", "jurisdictions: [EUR]",
     "tenants[1].jurisdictions: no site of tenant 'eu-bank' is in EUR"),
    ("sim/small.yaml", "continents: [EU], jurisdictions", "continents: [XX], jurisdictions",
     "tenants[1].continents: unknown continent 'XX' (known: AF, AS, EU, NA, OC, SA)"),
    ("sim/small.yaml", "sites: [eu-west]", "sites: [eu-wst]", "faults[0].sites: no site 'eu-wst' (did you mean "
     "eu-west?) (sites: ap-tokyo, eu-west, us-east)"),
    ("plan/small.yaml", "Chicago, San Jose", "Chicgo, San Jose",
     "supply.candidates.cities: no city named 'Chicgo' in GeoNames")])
def test_spec_check_of_a_scenario_or_demand_refuses_what_its_run_would_refuse(
        tmp_path: Path, example: str, was: str, now: str, says: str) -> None:
    """`aigrid spec check` said `ok` to a scenario whose site is in a city GeoNames does not have (`Tokio`), whose
    tenant may run only where no site is (`[EUR]`) or lives on no continent, whose fault names no site, and to a
    demand file with a mistyped candidate city: `aigrid sim` / `aigrid plan` refused each seconds later. The
    check runs the same setup checks now, and names the field."""
    code, out = _spec_check_of_edited(tmp_path, example, was, now)
    assert code == 2 and says in out and "ok " not in out and "Traceback" not in out, out


def _spec_check_of_edited(tmp_path: Path, example: str, was: str, now: str) -> tuple[int, str]:
    """`aigrid spec check` of an example with its one `was` written `now`: the exit code and the output, one line."""
    given = tmp_path / "edited.yaml"
    text = (ROOT / "examples" / example).read_text()
    assert text.count(was) == 1, was
    given.write_text(text.replace(was, now))
    r = runner.invoke(app, ["spec", "check", str(given)])
    return r.exit_code, " ".join(r.output.split())


@pytest.mark.parametrize(("example", "was", "now", "says"), [
    ("sim/small.yaml", "hardware: h100", "hardware: h1000", "unknown hardware 'h1000' (did you mean h100?) (known: cpu, h100,"),
    ("sim/small.yaml", "city: Tokyo", "city: Tokio", "no city named 'Tokio' in GeoNames (close: Toki, Topki, Tokyo)"),
    ("sim/small.yaml", "models: [llama-3.1-8b]}\n  - {id: eu-west", "models: [llama-3-8b]}\n  - {id: eu-west",
     "site 'us-east' serves unknown model 'llama-3-8b' (did you mean llama-3.1-8b?) (models: llama-3.1-8b)"),
    ("sim/small.yaml", "share: 0.7, trace: conv, model: llama-3.1-8b", "share: 0.7, trace: conv, model: llama3.1-8b",
     "tenant 'chat' asks for unknown model 'llama3.1-8b' (did you mean llama-3.1-8b?)"),
    ("sim/small.yaml", "nearest,", "neerest,", "unknown policy 'neerest' (did you mean nearest?)"),
    ("plan/small.yaml", "Chicago, San Jose", "Chicgo, San Jose", "no city named 'Chicgo' in GeoNames (close: Chicago"),
    ("plan/small.yaml", "l40s: {", "l40x: {", "supply.hardware: unknown profile 'l40x' (did you mean l40s?) (known: cpu, h100,"),
    ("plan/small.yaml", "continents: [EU], jurisdictions", "continents: [EUR], jurisdictions",
     "tenants[2].continents: unknown continent 'EUR' (did you mean EU?) (known: AF, AS, EU, NA, OC, SA)"),
    # a continent or a country no city is on: `tenant 'eu-bank': no cities in its continents/countries`, no field and
    # no code meant (a fault's or a generated site set's continents were not checked); a city a name begins:
    # `Frankfurt` offered only Frankfort (thirty-eighth session)
    ("sim/small.yaml", "continents: [EU], jurisdictions", "continents: [EUR], jurisdictions",
     "tenants[1].continents: unknown continent 'EUR' (did you mean EU?) (known: AF, AS, EU, NA, OC, SA)"),
    ("sim/small.yaml", "continents: [EU], jurisdictions", "countries: [XX], jurisdictions",
     "tenants[1].countries: no GeoNames city in 'XX' (ISO country codes, e.g. DE, US)"),
    ("sim/small.yaml", "continents: [EU], jurisdictions", "countries: [de], jurisdictions",
     "tenants[1].countries: no GeoNames city in 'de' (did you mean DE?) (ISO country codes, e.g. DE, US)"),
    ("sim/small.yaml", "sites: [eu-west]", "continents: [Europe]",
     "faults[0].continents: unknown continent 'Europe' (did you mean EU?) (known: AF, AS, EU, NA, OC, SA)"),
    ("sim/right-size.yaml", "count: 60\n", "count: 60\n  continents: [EU, Eur]\n",
     "generate_sites.continents: unknown continent 'Eur' (did you mean EU?)"),
    ("sim/small.yaml", "city: Frankfurt am Main", "city: Frankfurt",
     "no city named 'Frankfurt' in GeoNames (close: Frankfurt am Main, Frankfurt (Oder), Frankfort)"),
    ("plan/small.yaml", "Chicago, San Jose, Frankfurt am Main", "Chicago, San Jose, Frankfurt",
     "supply.candidates.cities: no city named 'Frankfurt' in GeoNames (close: Frankfurt am Main,"),
    ("plan/small.yaml", "model: llama-3.1-8b, continents: [EU],", "model: llama-8b, continents: [EU],",
     "unknown model 'llama-8b' (did you mean llama-3.1-8b?) (models: llama-3.1-8b)")])
def test_a_mistyped_value_of_a_scenario_or_demand_names_the_nearest_known_one(
        tmp_path: Path, example: str, was: str, now: str, says: str) -> None:
    """A grid spec's mistyped site, model, policy or engine names the one meant (`did you mean fra?`); a scenario's
    or a demand file's hardware, city, model, policy or continent did not, and listed the known ones as a Python
    list (`(known: ['cpu', 'h100', ...])`) (7 Dec 2026, thirty-second session): now the nearest is named, as in a
    grid spec (a city: the GeoNames names spelt nearly so, as a tenant's cities say them), and lists are plain."""
    code, out = _spec_check_of_edited(tmp_path, example, was, now)
    assert code == 2 and says in out and "['" not in out and "Traceback" not in out, out


@pytest.mark.parametrize(("command", "given", "says"), [
    ("sim", "demo.yaml", "is a grid spec"), ("sim", "plan/small.yaml", "is a planner demand file"),
    ("plan", "demo.yaml", "is a grid spec"), ("plan", "sim/small.yaml", "is a simulator scenario")])
def test_sim_and_plan_name_the_kind_of_file_they_were_given(command: str, given: str, says: str) -> None:
    """`aigrid sim examples/demo.yaml` (a grid spec, the file a user has) answered with a dozen fields it lacks or
    should not have, as if it were a broken scenario; it says what the file is and which command takes it."""
    r = runner.invoke(app, [command, str(ROOT / "examples" / given), "--out", "/nonexistent/never-written"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and says in out and "Extra inputs" not in out, out


def test_explain_takes_an_id_pasted_with_its_header_line_end_and_stays_under_decisions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An id cut from `curl -D -` output keeps the header's CR (`dec-...\\r`): explain was an httpx InvalidURL
    traceback. An id with `/` or `..` asked another route (`../../healthz` asked /healthz), whose answer
    was then rendered as a decision: a KeyError traceback."""
    import httpx

    asked: list[str] = []

    def get(url: str, **kwargs: object) -> httpx.Response:
        asked.append(url)
        return httpx.Response(200, json={"status": "ok", "healthy": []})

    monkeypatch.setattr(httpx, "get", get)
    r = runner.invoke(app, ["explain", "dec-1\r"])
    assert asked == ["http://127.0.0.1:8080/v1/decisions/dec-1"], asked
    r = runner.invoke(app, ["explain", "../../healthz"])
    assert asked[-1].startswith("http://127.0.0.1:8080/v1/decisions/") and "/../" not in asked[-1], asked
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), out
    assert "not a decision" in out, out


@pytest.mark.parametrize(("given", "says"), [
    ([], "--api-key KEY or in AIGRID_API_KEY"), (["--api-key", "aig_wrong"], "(--api-key or AIGRID_API_KEY) was refused"),
    (["--api-key", ""], "--api-key KEY or in AIGRID_API_KEY")], ids=["none", "wrong", "empty"])
def test_explain_refused_for_a_key_says_how_explain_takes_one(monkeypatch: pytest.MonkeyPatch, given: list[str],
                                                              says: str) -> None:
    """A gateway that enforces keys answered explain with its message for an HTTP client ("send 'Authorization:
    Bearer <key>'"), which a user of the command cannot act on: it now says how explain takes a key. An empty key
    (AIGRID_API_KEY= exported empty) is sent as none: it is told how to give one, not that a key was refused."""
    import httpx

    sent: list[object] = []

    def get(url: str, **kwargs: object) -> httpx.Response:
        sent.append(kwargs.get("headers"))
        message = "invalid API key" if "aig_wrong" in given else "missing API key: send 'Authorization: Bearer <key>'"
        return httpx.Response(401, json={"error": {"message": message, "type": "authentication_error"}})

    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.delenv("AIGRID_API_KEY", raising=False)
    r = runner.invoke(app, ["explain", "dec-1", *given])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and says in out and "Traceback" not in out, out
    assert sent == [{"authorization": "Bearer aig_wrong"} if "aig_wrong" in given else {}], sent


@pytest.mark.parametrize("pasted", ["x-aigrid-decision: dec-1", "X-Aigrid-Decision:dec-1\r", "request-id: dec-1"])
def test_explain_takes_the_header_line_pasted_whole(monkeypatch: pytest.MonkeyPatch, pasted: str) -> None:
    """The quickstart's `curl -s -D - ... | grep x-aigrid` prints `x-aigrid-decision: dec-...`; that line pasted
    whole (quoted) asked for a decision named `x-aigrid-decision: dec-...` and was told it is not a decision id,
    with an `aigrid audit query --request-id` of the whole line to run."""
    import httpx

    asked: list[str] = []

    def get(url: str, **kwargs: object) -> httpx.Response:
        asked.append(url)
        return httpx.Response(200, json=DECISION)

    monkeypatch.setattr(httpx, "get", get)
    r = runner.invoke(app, ["explain", pasted])
    assert r.exit_code == 0, r.output
    assert asked == ["http://127.0.0.1:8080/v1/decisions/dec-1"], asked


def test_audit_verify_names_the_public_key_it_could_not_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from another folder, verify read the default key and said only "[Errno 2] No such file or directory:
    '.aigrid/audit-signing.pub.pem'" (nothing about --public-key); a file that is no PEM key sent the reader to
    the cryptography library's FAQ."""
    db, other = tmp_path / "audit.db", tmp_path / "not-a-key.yaml"
    other.write_text("name: x\n")
    db.write_bytes(b"")  # there: a missing database is named before the key (0a2a43f3)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["audit", "verify", str(db)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "--public-key .aigrid/audit-signing.pub.pem: no such file" in out, out
    r = runner.invoke(app, ["audit", "verify", str(db), "--public-key", str(other)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"--public-key {other}: not an Ed25519 public key" in out, out
    assert "cryptography.io" not in out, out
    for command in ("query", "summary"):  # said "cannot read audit.db: ... '/nonexist.pem'": blamed the log
        r = runner.invoke(app, ["audit", command, str(db), "--public-key", str(tmp_path / "nonexist.pem")])
        out = " ".join(r.output.split())
        assert r.exit_code == 2 and f"--public-key {tmp_path / 'nonexist.pem'}: no such file" in out, out


def test_no_option_shows_two_defaults() -> None:
    """`aigrid plan --help` said of --workers "(default: one per core)" and then "[default: 0]": an option whose
    help says its default in words shows no other."""
    both = [f"{name} {p.name}: {p.default!r} beside {p.help!r}" for name, cmd in _commands()  # type: ignore[attr-defined]
            for p in cmd.params if "(default:" in (getattr(p, "help", None) or "")  # type: ignore[attr-defined]
            and p.default is not None and p.show_default is not False]
    assert not both, "\n".join(both)


@pytest.mark.parametrize("command", ["up", "gateway"])
def test_workers_help_shows_its_lower_bound(command: str) -> None:
    """`aigrid up --help` showed `--workers <int>` where every other bounded count shows `<int range> [x>=1]`,
    and `--workers 0` was then refused ("must be at least 1"): the help now says the bound it enforces."""
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    line = next(x for x in r.output.splitlines() if "--workers" in x)
    assert "[x>=1]" in line, line
    refused = runner.invoke(app, [command, str(ROOT / "examples" / "demo.yaml"), "--workers", "0"])
    assert refused.exit_code == 2 and "--workers" in refused.output, refused.output


def test_spec_check_says_a_variable_is_not_expanded_once(tmp_path: Path) -> None:
    """A url of `http://${HOST}:9100` said "environment variables are not expanded in a grid spec; write the
    value" and then the same words again in parentheses."""
    spec = tmp_path / "env.yaml"
    spec.write_text((ROOT / "examples" / "right-size.yaml").read_text().replace("http://127.0.0.1:9101",
                                                                               "http://${HOST}:9101"))
    r = runner.invoke(app, ["spec", "check", str(spec)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and out.count("not expanded") == 1, out


def test_every_argument_and_option_says_what_it_is() -> None:
    """`aigrid explain --help` listed `decision_id <str> [required]` and nothing else (which id? the header's),
    `aigrid keys revoke` its key_id, `aigrid bench` --stream and --plots, without a word."""
    bare = [f"{name} {p.name}" for name, cmd in _commands() if not getattr(cmd, "hidden", False)
            for p in cmd.params if not getattr(p, "help", None)  # type: ignore[attr-defined]
            and p.name != "help" and not getattr(p, "hidden", False)]
    assert not bare, bare


@pytest.mark.parametrize("body", [{"error": "not found"}, {"error": None}, {"error": ["x"]}])
def test_explain_of_a_server_whose_error_is_no_object_is_one_error_line(
        monkeypatch: pytest.MonkeyPatch, body: dict[str, object]) -> None:
    """A server that answers `{"error": "not found"}` (its error a string, not OpenAI's object) was an
    AttributeError traceback: its message was read as `body["error"].get("message")`."""
    import httpx

    monkeypatch.setattr(httpx, "get", lambda url, **kwargs: httpx.Response(404, json=body))
    r = runner.invoke(app, ["explain", "dec-1"])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), (out, r.exception)
    assert "not a decision" in out or "no decision" in out, out


def _every_command(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(group, "list_commands"):  # a group (typer's own click, from 0.29)
        context = type(group).context_class(group)
        for name in group.list_commands(context):
            found += _every_command(group.get_command(context, name), (*path, name))
    return found


def test_every_help_shows_a_flag_as_a_flag() -> None:
    """typer 0.29 printed a type beside each flag, `--help <bool>`, `--json <bool>`, `--no-plots <bool>`, as if
    it took a value, and a repeated option as `<list[Path]>`. Every command's --help, those mounted from their
    own modules included."""
    import typer.main

    commands = _every_command(typer.main.get_command(app))
    assert ("audit", "query") in commands and ("bench",) in commands and ("models", "eval") in commands
    for command in commands:
        r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert r.exit_code == 0, (command, r.output)
        assert "<bool>" not in r.output and "<list[" not in r.output, (command, r.output)
        help_line = next(line for line in r.output.splitlines() if "--help" in line)
        assert help_line.split("--help")[1].split() == ["Show", "this", "message", "and", "exit.", "│"], help_line
    r = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert "--quiet" in r.output and "--no-quiet" not in r.output, r.output  # an off-by-default switch, no pair
    r = runner.invoke(app, ["audit", "query", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert any(line.split()[1:3] == ["--tenant", "<str>"] for line in r.output.splitlines() if "--tenant" in line)
    assert any(line.split()[1:3] == ["--public-key", "<path>"] for line in r.output.splitlines()
               if "--public-key" in line), r.output


@pytest.mark.parametrize(("args", "option", "values"), [
    (["audit", "query", "audit.db"], "--format", ["table", "jsonl", "csv"]),
    (["audit", "summary", "audit.db"], "--format", ["table", "csv", "json"]),
    (["gateway", str(ROOT / "examples" / "demo.yaml")], "--log-level", ["debug", "info", "warning", "error"]),
    (["up", str(ROOT / "examples" / "demo.yaml")], "--log-level", ["debug", "info", "warning", "error"]),
])
def test_an_option_of_fixed_values_lists_them_in_help_and_refuses_another_naming_them(
        args: list[str], option: str, values: list[str]) -> None:
    """--format and --log-level were plain strings checked by hand: --help did not list the values (nor could
    test_docs_commands check a documented one). Typed as Literal, typer lists them and refuses another, before
    the command runs, naming the option and each value."""
    r = runner.invoke(app, [*args[:-1], "--help"], env={"COLUMNS": "200"})
    assert f"<{'|'.join(values)}>" in r.output, r.output
    r = runner.invoke(app, [*args, option, "loud"], env={"COLUMNS": "200"})
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"'{option}'" in out, out
    assert "'loud' is not one of " + ", ".join(f"'{v}'" for v in values) in out, out


def test_keys_list_of_a_folder_says_it_is_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", "0123456789abcdef-test")
    r = runner.invoke(app, ["keys", "list", "--keys-file", str(tmp_path)])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"--keys-file {tmp_path}: a directory, not a key file" in said, r.output


def test_the_keys_commands_default_secret_env_is_the_one_the_key_store_reads() -> None:
    """cli.SECRET_ENV (eeaf38eb) writes keys_cli.SECRET_ENV's value again, since cli.py imports keys_cli only when a
    keys command runs, and security.secret_env's default is a third spelling: `aigrid keys create` with no
    --secret-env must hash with the secret a gateway of a spec without secret_env reads."""
    from aigrid import cli
    from aigrid.security import keys_cli
    from aigrid.spec.models import SecuritySpec

    assert cli.SECRET_ENV == keys_cli.SECRET_ENV == SecuritySpec.model_fields["secret_env"].default


def test_up_without_a_spec_outside_the_repository_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid up` (no spec) in a folder without examples/demo.yaml said `invalid grid spec examples/demo.yaml: cannot
    read file: No such file or directory`, as if the demo's spec were broken (thirty-fourth session, an operator's
    first hour)."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["up"], env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "invalid grid spec" not in said, said
    assert (f"error: no spec named, and the default, examples/demo.yaml (the demo grid), is not under {tmp_path}: "
            "start the demo from the repository's root (`make run`), or name a spec: `aigrid up SPEC.yaml`") in said, said


@pytest.mark.parametrize("given", ["../../etc", "dec-1/attempts", "x-aigrid-decision: a/b"])
def test_explain_of_an_id_with_a_slash_asks_nothing_and_blames_no_gateway(monkeypatch: pytest.MonkeyPatch,
                                                                          given: str) -> None:
    """An id with `/` was sent quoted (%2F), but the gateway's router decodes it: `aigrid explain ../../etc` against
    the demo asked /etc, and its 404 said "http://127.0.0.1:18100 is no aigrid gateway" of the gateway itself
    (thirty-fourth session, an operator's first hour). No id has a `/`: it is refused before any request."""
    import httpx

    asked: list[str] = []

    def get(url: str, **kwargs: object) -> httpx.Response:
        asked.append(url)
        return httpx.Response(404, json={"error": {"message": "Not Found: GET /etc", "param": None}})

    monkeypatch.setattr(httpx, "get", get)
    r = runner.invoke(app, ["explain", given], env={"COLUMNS": "300"})
    out = " ".join(r.output.split())
    assert asked == [] and r.exit_code == 1, (asked, out)
    assert "is not a decision id: give the x-aigrid-decision header's value (dec-...)" in out, out
    assert "no aigrid gateway" not in out, out
