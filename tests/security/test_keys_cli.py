"""`aigrid keys create|revoke` (security/keys_cli.py) change the key file one at a time: each reads, changes and
writes it under an exclusive lock, so that two run side by side (a provisioning script creating keys while an
operator revokes a leaked one) both count."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from aigrid.security import keys_cli
from aigrid.security.keys import KeyRing

SECRET = b"test-secret-0123456789abcdef"


def test_a_revocation_made_while_a_key_is_created_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    leaked = keys_cli.create_key(path, "bank", secret=SECRET, echo=lambda _: None)
    revoked: list[bool] = []
    issue = KeyRing.issue

    def slow_issue(self: KeyRing, *args, **kwargs):  # the create has read the file; a revoke runs meanwhile
        t = threading.Thread(target=lambda: revoked.append(keys_cli.revoke_key(path, leaked)))
        t.start()
        t.join(0.5)  # done at once without a lock; waits for this create's lock with one
        threads.append(t)
        return issue(self, *args, **kwargs)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(KeyRing, "issue", slow_issue)
    started = time.monotonic()
    created = keys_cli.create_key(path, "bank", secret=SECRET, echo=lambda _: None)
    monkeypatch.setattr(KeyRing, "issue", issue)
    threads[0].join(10)
    assert revoked == [True] and time.monotonic() - started < 10
    ring = KeyRing.load(path, SECRET)
    found = ring.get(leaked)
    assert found is not None and found.revoked  # before: the create wrote the file it had read, the key valid again
    assert ring.get(created) is not None


def test_the_key_file_is_written_for_its_owner_alone_whatever_lies_at_its_temporary_name(tmp_path: Path) -> None:
    """`KeyRing.save` opened `<file>.tmp` without O_EXCL: a temporary file left by a run that died (or made by
    another user of the folder) kept its mode, 0644, and became the key file; a symlink there had the digests
    written through it into the file it names, and then became the key file itself (twenty-third session)."""
    path = tmp_path / "keys.json"
    tmp = tmp_path / "keys.json.tmp"
    tmp.write_text("left by a run that died")
    tmp.chmod(0o644)
    keys_cli.create_key(path, "bank", secret=SECRET, echo=lambda _: None)
    assert path.stat().st_mode & 0o777 == 0o600 and not path.is_symlink()
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("not a key file")
    tmp.symlink_to(victim)
    keys_cli.create_key(path, "bank", secret=SECRET, echo=lambda _: None)
    assert victim.read_text() == "not a key file"
    assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    assert len(KeyRing.load(path, SECRET).records()) == 2


def test_a_keys_models_within_is_listed_as_the_narrowed_operators_403_names_it() -> None:
    """(final review F2, 7 Dec 2026) `aigrid keys list` wrote a key's models_within (a key file's record may hold
    it: Scopes.from_dict reads it) as Python lists, `models_within=['small-*', 'tiny-*']`, while a narrowed operator
    key's 403 wrote it `models within small-*, tiny-*` (a copy of the same formatting in guard.py). One function,
    principal.scope_text, writes both."""
    from aigrid.security.principal import Scopes

    scopes = Scopes(jurisdictions=frozenset({"EU"}), models_within=(frozenset({"small-*", "tiny-*"}),
                                                                     frozenset({"x"})))
    assert keys_cli.scopes_text(scopes) == "jurisdictions=EU models within small-*, tiny-* and within x"


def test_a_second_revoke_says_the_key_was_revoked_already_and_when(tmp_path: Path) -> None:
    """`aigrid keys revoke` of a revoked key said "revoked" again (found by UX): it says it was revoked already and
    when, and leaves the file (its first revocation's time) as it was. A key revoked by an aigrid that did not record
    the time says so."""
    path = tmp_path / "keys.json"
    key_id = keys_cli.create_key(path, "bank", secret=SECRET, echo=lambda _: None)
    said: list[str] = []
    assert keys_cli.revoke_key(path, key_id, echo=said.append)
    written = path.read_text()
    record = KeyRing.load(path, SECRET).get(key_id)
    assert record is not None and record.revoked and record.revoked_at > 0
    assert keys_cli.revoke_key(path, key_id, echo=said.append)  # still true: the key is revoked
    when = keys_cli.revoked_when(record.revoked_at)
    assert said == [f"revoked {key_id}", f"{key_id} was already revoked ({when})"] and when.startswith("at 20")
    assert path.read_text() == written
    # a record an older aigrid revoked: no revoked_at
    old = written.replace(f'"revoked_at": {record.revoked_at}', '"revoked_at": 0')
    assert old != written
    path.write_text(old)
    said.clear()
    assert keys_cli.revoke_key(path, key_id, echo=said.append)
    assert said == [f"{key_id} was already revoked (when is not recorded: revoked before aigrid recorded it)"]
    assert not keys_cli.revoke_key(path, "nope", echo=said.append) and len(said) == 1


@pytest.mark.parametrize(("tenant_models", "key_models", "refused"), [
    (["all-minilm-l6-v2"], ["smollm2-*"], True),  # an indexer tenant's key limited to chat models: nothing left
    (["smollm2-*"], ["all-minilm-l6-v2"], True),  # a chat tenant's key limited to the embedding model it lacks
    (["smollm*"], ["smollm2-135m"], False),
    (["all-minilm-l6-v2"], ["all-minilm-l6-v2"], False),
])
def test_a_keys_models_are_checked_within_its_tenants(tenant_models: list[str], key_models: list[str],
                                                      refused: bool) -> None:
    """(review, 7 Dec 2026, thirty-third session) check_scopes checked a key's model patterns against the grid alone:
    a key of models its tenant may not use was made, and every request with it was refused (403). The spec's own
    check (GridSpec.limit_problems) now runs on the key's limits within its tenant's."""
    import yaml

    from aigrid.errors import ConfigError
    from aigrid.spec.load import parse_spec

    raw = yaml.safe_load((Path(__file__).parents[2] / "examples" / "demo.yaml").read_text())
    raw["tenants"]["limited"] = {"models": tenant_models}
    spec = parse_spec(raw, "demo")
    if not refused:
        keys_cli.check_scopes(spec, "demo", "limited", models=key_models)
        return
    with pytest.raises(ConfigError) as e:
        keys_cli.check_scopes(spec, "demo", "limited", models=key_models)
    assert str(e.value).startswith(f"demo: the key: no endpoint is within its --model {key_models} and tenant "
                                   f"limited's models {tenant_models}: every request with its key would be refused"), e


def test_list_and_revoke_read_no_secret_and_create_still_needs_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid keys list` and `revoke` demanded AIGRID_KEY_SECRET and never used it (any 16 bytes did): neither
    hashes a key. They read none now (an operator revoking a leaked key needs the key file only), the key still
    verified by the gateway's secret until revoked; `create` hashes the new key, and still needs it."""
    monkeypatch.delenv("AIGRID_KEY_SECRET", raising=False)
    path = tmp_path / "keys.json"
    issued: list[str] = []
    key_id = keys_cli.create_key(path, "bank", secret=SECRET, echo=issued.append)
    api_key = issued[1].split("api key: ")[1]
    assert KeyRing.load(path, SECRET).verify(api_key) is not None
    listed: list[str] = []
    keys_cli.list_keys(path, echo=listed.append)
    assert len(listed) == 2 and listed[1].startswith(key_id) and "active" in listed[1], listed
    said: list[str] = []
    assert keys_cli.revoke_key(path, key_id, echo=said.append) and said == [f"revoked {key_id}"]
    assert KeyRing.load(path, SECRET).verify(api_key) is None  # revoked for the gateway, which holds the secret
    with pytest.raises(keys_cli.ConfigError, match="set AIGRID_KEY_SECRET"):
        keys_cli.create_key(path, "bank", echo=said.append)
    unkeyed = KeyRing.load(path, None)  # a ring read without the secret neither issues nor verifies a key
    for hashing in (lambda: unkeyed.issue("bank"), lambda: unkeyed.verify(api_key)):
        with pytest.raises(ValueError, match="without the server secret"):
            hashing()


def test_list_names_its_columns_and_says_when_the_file_holds_no_key(tmp_path: Path) -> None:
    """`aigrid keys list` printed `bfbedc306a37  eu-bank  active  -  jurisdictions=EU` with no header, so an
    operator could not tell what the `-` was (the key's --name label), and a key file without a key printed
    nothing (brief UX2, 7 Dec 2026). A header line names the columns now, and an empty file says so."""
    path = tmp_path / "keys.json"
    key_id = keys_cli.create_key(path, "bank", secret=SECRET, name="ci", echo=lambda _: None)
    listed: list[str] = []
    keys_cli.list_keys(path, echo=listed.append)
    assert listed[0].split() == ["id", "tenant", "state", "name", "limits"], listed
    assert listed[1].split()[:4] == [key_id, "bank", "active", "ci"], listed
    header, row = listed[0], listed[1]
    assert row.index("bank") == header.index("tenant") and row.index("ci") == header.index("name"), listed
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**json.loads(path.read_text()), "keys": []}))  # the same file, its key taken out
    said: list[str] = []
    keys_cli.list_keys(empty, echo=said.append)
    assert said == [f"{empty}: no keys"], said
