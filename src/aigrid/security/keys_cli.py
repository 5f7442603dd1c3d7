"""Command-line helpers the CLI mounts as `aigrid keys create|list|revoke` (plain functions, no framework).

The server secret comes from an environment variable (at least 16 bytes): AIGRID_KEY_SECRET, or the one
`--secret-env NAME` names (the spec's security.secret_env, where a gateway reads it from another); the key file
holds only digests. Only `create` reads it (it hashes the new key); `list` and `revoke` hash nothing and read no
secret (until the thirty-fourth session they demanded one and never used it: any 16 bytes did). `create` and `revoke` read, change and write the file under an exclusive lock (`flock` on
`<file>.lock` beside it): two run side by side (a script creating keys while an operator revokes a leaked one)
each see the other's change; before, the one that wrote last wrote back the file it had read, and a revocation
made meanwhile was lost (the key valid again).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aigrid.core.urgency import parse_level
from aigrid.errors import ConfigError
from aigrid.security.keys import KeyRing
from aigrid.security.principal import DEFAULT_TENANT, Scopes, scope_text
from aigrid.spec.models import ENV_NAME
from aigrid.spec.near import did_you_mean

if TYPE_CHECKING:
    from aigrid.spec.models import GridSpec

SECRET_ENV = "AIGRID_KEY_SECRET"
LISTED_TENANTS = 20
"""At most this many of the spec's tenants are named when a key's is not among them."""


def check_tenant(tenant: str, spec_tenants: Collection[str], spec: str) -> None:
    """`aigrid keys create --spec FILE`: the key's tenant is one of the grid's (the spec's `tenants`, and
    `default`), else a ConfigError with the nearest name. Before, any name got a key, and every request with a
    mistyped one was a 401 the caller could not read a cause from."""
    known = sorted({*spec_tenants, DEFAULT_TENANT})
    if tenant in known:
        return
    listed = ", ".join(known[:LISTED_TENANTS]) + (f", ... ({len(known)} in all)" if len(known) > LISTED_TENANTS else "")
    raise ConfigError(f"tenant {tenant!r} is not one of {spec}'s tenants{did_you_mean(tenant, known)} "
                      f"(tenants: {listed}): every request with its key would be refused (401); no key was made")


KEY_FLAGS = {"allowed_jurisdictions": "--jurisdiction", "allowed_sites": "--site", "models": "--model"}
"""The tenant limit each of `keys create`'s flags narrows, as check_scopes names them."""


def check_scopes(spec: GridSpec, source: str, tenant: str = DEFAULT_TENANT, *, models: Sequence[str] = (),
                 jurisdictions: Sequence[str] = (), sites: Sequence[str] = (), policy: str | None = None) -> None:
    """`aigrid keys create --spec FILE`: the key's limits by the spec's own check of a tenant's
    (GridSpec.limit_problems: sites, jurisdictions and model patterns the grid lacks, each with the nearest name),
    then together with its tenant's (`tenant`, whose limits every request of the key is held to as well: an EU-only
    tenant's key with `--site iad` leaves no endpoint), and its policy among the grid's; a ConfigError naming each,
    no key made. Before, `--site iadd` made a key every request of which was refused (403), though --spec was given
    to check the key against the grid; until the review of 7 Dec 2026 (thirty-third session) each limit was checked
    alone, by a copy of the spec's check, and limits fine alone but leaving no endpoint together made such a key."""
    from aigrid.spec.load import policies
    from aigrid.spec.models import TenantSpec

    # a site the grid lacks beside one it has (a site yet to come) is kept: it serves nothing yet, so it is left out
    checked = [s for s in sites if s in spec.sites] or list(sites)
    key = TenantSpec(allowed_jurisdictions=list(jurisdictions) or None, allowed_sites=checked or None,
                     models=list(models) or None)
    own = spec.tenants.get(tenant, TenantSpec())
    problems = spec.limit_problems(key, where="the key", labels=KEY_FLAGS, within=(tenant, own), refused="")
    known = sorted(policies(spec))
    if policy is not None and policy not in known:
        problems.append(f"--policy {policy!r}: not a policy of {source}{did_you_mean(policy, known)} "
                        f"(policies: {', '.join(known)})")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems)
                          + ": every request with its key would be refused; no key was made")


def secret_env_name(name: str) -> str:
    """`--secret-env`'s value, held to the pattern security.secret_env has (ENV_NAME): checked before the key file
    is touched."""
    if not re.fullmatch(ENV_NAME, name):
        raise ConfigError(f"--secret-env {name!r}: not an environment variable's name (letters, digits and _, not "
                          "starting with a digit), as the spec's security.secret_env names it")
    return name


def server_secret(env: dict[str, str] | None = None, name: str = SECRET_ENV) -> bytes:
    """The key-hashing secret, from the variable `name` (AIGRID_KEY_SECRET unless `--secret-env` names another)."""
    value = (os.environ if env is None else env).get(secret_env_name(name), "")
    if len(value.encode()) < 16:  # set but short said only "set it": now how long it is (a short secret is refused)
        now = f"; it holds {len(value.encode())} bytes" if value else f"; {name} is not set"
        raise ConfigError(f"set {name} to a random secret of at least 16 bytes (e.g. `openssl rand -hex 32`){now}")
    return value.encode()


@contextmanager
def _changing(keys_file: Path) -> Iterator[None]:
    """Hold the key file's lock while it is read, changed and written (released when the process ends, however).
    No folder, no file to change: nothing to hold (a revoke answers "no key", as before)."""
    try:
        fd = os.open(keys_file.with_name(keys_file.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(keys_file: Path, secret: bytes | None) -> KeyRing:
    """The file's ring; a file this version cannot read (not JSON, another shape, a newer aigrid's format) is a
    ConfigError naming it (`aigrid keys create` and `revoke` printed a traceback), and is left as it is."""
    try:
        return KeyRing.load(keys_file, secret)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--keys-file {keys_file}: not a key file (not JSON: {e})") from None
    except ValueError as e:
        raise ConfigError(f"--keys-file {keys_file}: {e}") from None


def create_key(keys_file: Path, tenant: str, *, models: Sequence[str] = (), jurisdictions: Sequence[str] = (),
               sites: Sequence[str] = (), policy: str | None = None, max_priority: str | int | None = None,
               name: str = "", secret: bytes | None = None, secret_env: str = SECRET_ENV,
               echo: Callable[[str], None] = print) -> str:
    """Issue a key, store its digest, print the secret once; returns the key id."""
    if not tenant.strip() or tenant != tenant.strip():
        raise ConfigError(f"tenant {tenant!r}: a tenant's name, as the grid spec's `tenants` has it (not empty, "
                          "no surrounding spaces)")
    for flag, values in (("--model", models), ("--jurisdiction", jurisdictions), ("--site", sites),
                         ("--policy", () if policy is None else (policy,))):
        for value in values:
            if not value.strip() or value != value.strip():
                raise ConfigError(f"{flag} {value!r}: not empty, no surrounding spaces (a key limited to nothing "
                                  "serves nothing)")
    try:
        level = None if max_priority is None else parse_level(max_priority)
    except ValueError as e:
        raise ConfigError(f"--max-priority: {e}") from None
    secret = secret if secret is not None else server_secret(name=secret_env)
    scopes = Scopes(models=frozenset(models) or None, jurisdictions=frozenset(jurisdictions) or None,
                    sites=frozenset(sites) or None, policy=policy, max_priority=level)
    with _changing(keys_file):
        ring = _load(keys_file, secret)
        issued = ring.issue(tenant, scopes, name=name)
        ring.save(keys_file)
    echo(f"key id:  {issued.record.key_id} (tenant {tenant})")
    echo(f"api key: {issued.api_key}")
    echo("This is the only time the key is shown; only its digest was stored.")
    return issued.record.key_id


def list_keys(keys_file: Path, *, echo: Callable[[str], None] = print) -> None:
    """Each key's id, tenant, state, label and limits: no secret read (nothing is hashed)."""
    if keys_file.is_dir():  # it said "no such file"
        raise ConfigError(f"--keys-file {keys_file}: a directory, not a key file (give the file `aigrid keys create` "
                          "wrote)")
    if not keys_file.is_file():
        raise ConfigError(f"--keys-file {keys_file}: no such file (no key was issued there: `aigrid keys create`)")
    ring = _load(keys_file, None)
    records = list(ring.records())
    # a header names the columns: `bfbedc306a37  eu-bank  active  -  jurisdictions=EU` left an operator to guess
    # what the `-` was (the label, --name); and a file without a key printed nothing at all
    width = max((len(r.key_id) for r in records), default=12)
    if not records:
        echo(f"{keys_file}: no keys")
        return
    echo(f"{'id':<{width}}  {'tenant':<16} {'state':<8} {'name':<4}  limits")
    for r in records:
        state = "revoked" if r.revoked else "active"
        echo(f"{r.key_id:<{width}}  {r.tenant:<16} {state:<8} {r.name or '-':<4}  {scopes_text(r.scopes)}")


def scopes_text(scopes: Scopes) -> str:
    """A key's limits as `models=a,b jurisdictions=EU policy=p`, or `any model, any site` without limits."""
    parts = [scope_text(k, v) for k, v in scopes.to_dict().items() if v is not None]
    return " ".join(parts) or "any model, any site"


def revoke_key(keys_file: Path, key_id: str, *, echo: Callable[[str], None] | None = None) -> bool:
    """Revoke a key (False: no such key), telling `echo` what was done: `revoked ID`, or, for a key revoked already
    (the file left as it is, its time kept), that it was and when. Until the thirty-third session a second revoke
    said "revoked" again. No secret read: a revocation marks the record, it hashes nothing (an operator revoking a
    leaked key needs only the key file)."""
    with _changing(keys_file):
        ring = _load(keys_file, None)
        before = ring.get(key_id)
        if before is None or not ring.revoke(key_id):
            return False
        if not before.revoked:
            ring.save(keys_file)
    if echo is not None:
        echo(f"{key_id} was already revoked ({revoked_when(before.revoked_at)})" if before.revoked
             else f"revoked {key_id}")
    return True


def revoked_when(revoked_at: float) -> str:
    """When a key was revoked, as `aigrid keys revoke` says it: UTC to the second, or that it was not recorded."""
    if not revoked_at:
        return "when is not recorded: revoked before aigrid recorded it"
    return "at " + datetime.fromtimestamp(revoked_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
