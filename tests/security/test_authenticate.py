"""Keys, JWT and scopes: the exact errors a client sees for 401 and 403."""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import replace
from pathlib import Path

import jwt
import pytest

from aigrid.core.types import RequestInfo
from aigrid.errors import AuthenticationError, ConfigError, PermissionDenied
from aigrid.security.authenticate import Authenticator
from aigrid.security.authorize import authorize, scope_request
from aigrid.security.jwt_bearer import JwtSettings
from aigrid.security.keys import KeyRing
from aigrid.security.keys_cli import create_key, revoke_key
from aigrid.security.principal import Scopes, Tenant

SECRET = b"0123456789abcdef-server-secret"
TENANTS = {"bank": Tenant("bank", Scopes(jurisdictions=frozenset({"EU", "CH"}))), "default": Tenant("default")}


def make_auth(**kw: object) -> tuple[Authenticator, str]:
    ring = KeyRing(SECRET)
    issued = ring.issue("bank", Scopes(models=frozenset({"llama-*"}), jurisdictions=frozenset({"EU"})))
    return Authenticator(ring, TENANTS, **kw), issued.api_key  # type: ignore[arg-type]


def test_valid_key_gives_principal_with_narrowed_scopes() -> None:
    auth, key = make_auth()
    p = auth.authenticate(f"Bearer {key}")
    assert p.tenant == "bank" and p.method == "api_key"
    assert p.scopes.jurisdictions == frozenset({"EU"})
    assert key.split("_")[1] == p.key_id


@pytest.mark.parametrize("header", [None, "", "Bearer aig_nope_nope", "Basic abc", "Bearer ", "Bearer sk-123"])
def test_missing_or_bad_credentials_are_401(header: str | None) -> None:
    auth, _ = make_auth()
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(header)
    assert e.value.status == 401
    assert e.value.envelope()["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert e.value.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_secret_for_a_real_key_id_is_401() -> None:
    auth, key = make_auth()
    tampered = key[:-3] + ("aaa" if not key.endswith("aaa") else "bbb")
    with pytest.raises(AuthenticationError):
        auth.authenticate(f"Bearer {tampered}")


def test_enforcement_off_allows_anonymous_but_still_rejects_bad_keys() -> None:
    auth, _ = make_auth(enforce=False)
    assert auth.authenticate(None).method == "anonymous"
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer aig_x_y")


def test_a_key_of_a_tenant_the_grid_lacks_is_a_401_naming_that_tenant_alone() -> None:
    """The 401 said "credentials belong to an unknown tenant": a key made for a mistyped tenant gave its holder no
    cause to read. It names the key's own tenant (its holder's), and none of the grid's."""
    ring = KeyRing(SECRET)
    key = ring.issue("bnak", Scopes()).api_key
    with pytest.raises(AuthenticationError) as e:
        Authenticator(ring, TENANTS).authenticate(f"Bearer {key}")
    assert e.value.status == 401 and e.value.headers["WWW-Authenticate"] == "Bearer"
    message = e.value.envelope()["error"]["message"]  # type: ignore[index]
    assert "'bnak'" in message and "bank" not in message.replace("'bnak'", ""), message


def test_scope_violations_are_403() -> None:
    auth, key = make_auth()
    p = auth.authenticate(f"Bearer {key}")
    authorize(p, "llama-3-8b")
    with pytest.raises(PermissionDenied) as e:
        authorize(p, "gpt-4o")
    assert e.value.status == 403 and e.value.code == "model_not_allowed"
    with pytest.raises(PermissionDenied):
        authorize(p, "auto")
    with pytest.raises(PermissionDenied) as e:
        authorize(p, "llama-3-8b", jurisdictions=frozenset({"US"}))
    assert e.value.code == "jurisdiction_not_allowed"


def test_a_residency_name_not_printable_comes_back_escaped_in_the_403() -> None:
    """A key narrowed to EU that sends `x-aigrid-residency: EU,<CSI>2J` passes the 400 (EU is on the grid) and is
    refused here: the name outside its scopes came back raw in the message (review RV5 of e87d0273, which escaped it
    in the 400 only); now as repr, as every header's error shows such a value."""
    auth, key = make_auth()
    p = auth.authenticate(f"Bearer {key}")
    with pytest.raises(PermissionDenied) as e:
        authorize(p, "llama-3-8b", jurisdictions=frozenset({"EU", "\x9b2J"}))
    assert e.value.code == "jurisdiction_not_allowed"
    assert "\x9b" not in e.value.message and "may not send requests to '\\x9b2J';" in e.value.message, e.value.message


def test_key_scopes_only_narrow_the_tenant() -> None:
    tenant = Scopes(models=frozenset({"llama-*"}), jurisdictions=frozenset({"EU", "CH"}))
    wide = tenant.narrowed_by(Scopes(models=frozenset({"*"}), jurisdictions=frozenset({"EU", "US"})))
    assert wide.models == frozenset({"llama-*"}) and wide.jurisdictions == frozenset({"EU"})
    narrow = tenant.narrowed_by(Scopes(models=frozenset({"llama-3-*", "gpt-*"}), policy="cost-first"))
    assert narrow.allows_model("llama-3-8b") and not narrow.allows_model("llama-2-7b")
    assert not narrow.allows_model("gpt-4o") and narrow.policy == "cost-first"


def test_scopes_say_how_a_key_narrows_its_tenant() -> None:
    """Scopes.narrowing_of (moved from gateway.guard.Guard.narrowing, thirty-third session): a key naming its tenant's
    own model patterns narrows nothing, though narrowed_by keeps both sides' patterns in models_within; one naming
    other patterns, or fewer jurisdictions, is a narrowing, written as `aigrid keys list` writes scopes."""
    tenant = Scopes(models=frozenset({"small-*"}), jurisdictions=frozenset({"EU", "US"}))
    assert tenant.narrowed_by(Scopes(models=frozenset({"small-*"}))).narrowing_of(tenant) == ""
    assert tenant.narrowed_by(Scopes()).narrowing_of(tenant) == ""
    eu = tenant.narrowed_by(Scopes(jurisdictions=frozenset({"EU"})))
    assert eu.narrowing_of(tenant) == "jurisdictions=EU"
    one = tenant.narrowed_by(Scopes(models=frozenset({"small-1*"})))
    assert one.narrowing_of(tenant) == "models=small-1*"
    twice = Scopes(models_within=(frozenset({"small-1*", "small-2*"}),))
    assert twice.narrowing_of(Scopes()) == "models within small-1*, small-2*"
    everything = Scopes().narrowed_by(Scopes(models=frozenset({"*"})))
    assert everything.narrowing_of(Scopes()) == "models=*"


@pytest.mark.parametrize("tenant,key", [
    ({"llama-*"}, {"llama-?"}),           # the key's `?` kept the tenant's `*`: the whole tenant
    ({"llama-3-?b"}, {"llama-3-*b"}),     # the tenant's `?` kept the key's `*`: past the tenant
])
def test_a_key_s_model_patterns_never_widen_a_model_scope(tenant: set[str], key: set[str]) -> None:
    from fnmatch import fnmatchcase

    narrowed = Scopes(models=frozenset(tenant)).narrowed_by(Scopes(models=frozenset(key)))
    for model in ("llama-3", "llama-70b", "llama-3-8b", "llama-3-70b", "gpt-4", "gpt-4o", "gpt-x"):
        both = any(fnmatchcase(model, p) for p in tenant) and any(fnmatchcase(model, p) for p in key)
        assert narrowed.allows_model(model) == both, model
    # a batch stores its JWT creator's scopes and narrows them by the tenant again (batch_line.line_caller)
    again = Scopes(models=frozenset(tenant)).narrowed_by(Scopes.from_dict(narrowed.to_dict()))
    assert all(again.allows_model(m) == narrowed.allows_model(m) for m in ("llama-70b", "llama-3-70b", "gpt-4o"))


def test_a_token_s_model_claim_narrows_within_the_tenant() -> None:
    tenants = {**TENANTS, "bank": Tenant("bank", Scopes(models=frozenset({"llama-*"})))}
    settings = JwtSettings(issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",))
    p = Authenticator(KeyRing(SECRET), tenants, jwt=settings).authenticate(f"Bearer {token(models=['llama-?'])}")
    assert p.scopes.allows_model("llama-3") and not p.scopes.allows_model("llama-70b")
    with pytest.raises(PermissionDenied):
        authorize(p, "llama-70b")


def test_scope_request_sets_hard_filters_for_the_core() -> None:
    auth, key = make_auth()
    p = auth.authenticate(f"Bearer {key}")
    r = scope_request(p, RequestInfo(id="r1", model="llama-3-8b", allowed_jurisdictions=frozenset({"EU", "US"})))
    assert r.tenant == "bank" and r.allowed_jurisdictions == frozenset({"EU"})
    assert scope_request(p, RequestInfo(id="r2", model="m")).allowed_jurisdictions == frozenset({"EU"})


def test_key_file_stores_only_digests_and_revocation_works(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    lines: list[str] = []
    key_id = create_key(path, "bank", models=["llama-*"], secret=SECRET, echo=lines.append)
    api_key = next(line.split()[-1] for line in lines if line.startswith("api key:"))
    stored = path.read_text()
    assert api_key.split("_", 2)[2] not in stored and key_id in stored
    assert json.loads(stored)["keys"][0]["scopes"]["models"] == ["llama-*"]
    auth = Authenticator(KeyRing.load(path, SECRET), TENANTS)
    assert auth.authenticate(f"Bearer {api_key}").key_id == key_id
    assert revoke_key(path, key_id)
    with pytest.raises(AuthenticationError):
        Authenticator(KeyRing.load(path, SECRET), TENANTS).authenticate(f"Bearer {api_key}")
    with pytest.raises(AuthenticationError):  # a different server secret cannot verify stored digests
        Authenticator(KeyRing.load(path, b"another-secret-of-16+b"), TENANTS).authenticate(f"Bearer {api_key}")


@pytest.mark.parametrize(("scope", "flag"), [({"models": [""]}, "--model"), ({"jurisdictions": [" EU"]}, "--jurisdiction"),
                                            ({"sites": [""]}, "--site"), ({"policy": ""}, "--policy")])
def test_a_key_limited_to_an_empty_name_is_refused_at_creation(tmp_path: Path, scope: dict[str, object],
                                                               flag: str) -> None:
    """`aigrid keys create --model ''` issued a key that may use no model (every request a 403) and wrote it."""
    path = tmp_path / "keys.json"
    with pytest.raises(ConfigError, match=f"^{flag} "):
        create_key(path, "bank", secret=SECRET, echo=lambda _: None, **scope)  # type: ignore[arg-type]
    assert not path.exists()


JWT_KEY = "jwt-test-secret-that-is-long-enough-for-hs256"


def token(**claims: object) -> str:
    base: dict[str, object] = {"iss": "https://idp.example", "aud": "aigrid", "sub": "svc-1", "tenant": "bank",
                               "exp": int(time.time()) + 600}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, JWT_KEY, algorithm="HS256")


def jwt_auth() -> Authenticator:
    settings = JwtSettings(issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",))
    return Authenticator(KeyRing(SECRET), TENANTS, jwt=settings)


def test_jwt_bearer_accepted_and_narrows_scopes() -> None:
    p = jwt_auth().authenticate(f"Bearer {token(jurisdictions=['CH'])}")
    assert (p.tenant, p.key_id, p.method) == ("bank", "jwt:bank/svc-1", "jwt")
    assert p.scopes.jurisdictions == frozenset({"CH"})


def test_a_token_is_never_an_api_key_to_what_knows_keys_by_id() -> None:
    """A token's key id was its `sub` as written: one spelled like an API key's id (12 hex digits) of the same
    tenant was that key to the abuse signals and to a background response's creator check (which let its holder
    cancel the key's runs). A token's key id is `jwt:` + its tenant + sub now (test_jwt_key_ids.py)."""
    ring = KeyRing(SECRET)
    issued = ring.issue("bank")
    auth = Authenticator(ring, TENANTS, jwt=JwtSettings(issuer="https://idp.example", audience="aigrid",
                                                         key=JWT_KEY, algorithms=("HS256",)))
    by_token = auth.authenticate(f"Bearer {token(sub=issued.record.key_id)}")
    by_key = auth.authenticate(f"Bearer {issued.api_key}")
    assert by_key.key_id == issued.record.key_id and by_token.key_id == f"jwt:bank/{issued.record.key_id}"


@pytest.mark.parametrize("claims,code", [
    ({"exp": int(time.time()) - 3600}, "token_expired"),
    ({"aud": "someone-else"}, "invalid_token"),
    ({"iss": "https://evil.example"}, "invalid_token"),
    ({"iss": "https://idp"}, "invalid_token"),  # a part of the issuer: PyJWT 2.10.0 took it (CVE-2024-53861)
    ({"aud": ["someone-else", "aigrid-x"]}, "invalid_token"),
    ({"nbf": int(time.time()) + 3600}, "invalid_token"),
    ({"exp": None}, "invalid_token"),
    ({"tenant": None}, "invalid_token"),
])
def test_jwt_bad_claims_are_401(claims: dict[str, object], code: str) -> None:
    with pytest.raises(AuthenticationError) as e:
        jwt_auth().authenticate(f"Bearer {token(**claims)}")
    assert e.value.code == code


def test_jwt_with_wrong_signature_or_unknown_tenant_is_401() -> None:
    forged = jwt.encode({"iss": "https://idp.example", "aud": "aigrid", "sub": "x", "tenant": "bank",
                         "exp": int(time.time()) + 60}, "another-secret-another-secret-1234", algorithm="HS256")
    with pytest.raises(AuthenticationError):
        jwt_auth().authenticate(f"Bearer {forged}")
    with pytest.raises(AuthenticationError):
        jwt_auth().authenticate(f"Bearer {token(tenant='nobody')}")


def test_a_key_can_only_lower_its_tenants_highest_priority() -> None:
    from aigrid.security.principal import Scopes

    tenant = Scopes(max_priority=9)
    assert tenant.narrowed_by(Scopes(max_priority=5)).max_priority == 5
    assert Scopes(max_priority=5).narrowed_by(Scopes(max_priority=9)).max_priority == 5
    assert tenant.narrowed_by(Scopes()).max_priority == 9
    assert Scopes.from_dict(Scopes(max_priority=2).to_dict()) == Scopes(max_priority=2)
    assert Scopes.from_dict({"max_priority": "batch"}).max_priority == 0


def test_a_watching_ring_follows_its_file_and_keeps_its_keys_when_the_file_is_unreadable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    lines: list[str] = []
    key_id = create_key(path, "bank", secret=SECRET, echo=lines.append)
    key = next(word for line in lines for word in line.split() if word.startswith("aig_"))
    ring = KeyRing.watching(path, SECRET, interval_s=3600)
    assert ring.verify(key) is not None
    revoke_key(path, key_id)
    assert ring.verify(key) is not None  # looked at most once an interval: not yet
    ring._interval_s = 0.0
    assert ring.verify(key) is None and ring.get(key_id) is not None and ring.get(key_id).revoked  # type: ignore[union-attr]
    assert "1 revoked" in caplog.text
    lines.clear()
    other_id = create_key(path, "bank", secret=SECRET, echo=lines.append)
    other = next(word for line in lines for word in line.split() if word.startswith("aig_"))
    assert ring.verify(other) is not None
    path.write_text('{"keys": [{"key_id": ')  # someone editing it by hand, half saved
    assert ring.verify(other) is not None  # the keys stay as they were
    assert "cannot be read" in caplog.text
    path.unlink()  # gone: no key is valid, as a gateway started without the file
    assert ring.verify(other) is None and ring.get(other_id) is None


@pytest.mark.parametrize("content", ["[]", '{"keys": "abc"}', "[" * 100_000 + "]" * 100_000, '{"keys": '])
def test_a_key_file_of_another_shape_keeps_the_keys_and_never_fails_a_request(
        tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    """A review's finding: only some errors were caught, so '[]', '{"keys": [1]}', a deep nest or a non-ASCII
    digest made every key check that looked at the file a 500, once a second in every worker."""
    path = tmp_path / "keys.json"
    lines: list[str] = []
    create_key(path, "bank", secret=SECRET, echo=lines.append)
    key = next(word for line in lines for word in line.split() if word.startswith("aig_"))
    ring = KeyRing.watching(path, SECRET, interval_s=0.0)
    path.write_text(content)
    for _ in range(3):
        assert ring.verify(key) is not None
    assert caplog.text.count("cannot be read") == 1  # once per change of the file
    with pytest.raises(ValueError):
        KeyRing.load(path, SECRET)  # and `aigrid up` on such a file says what is wrong, before serving


def test_a_gateway_started_on_a_broken_key_file_names_it(tmp_path: Path) -> None:
    from aigrid.errors import ConfigError

    path = tmp_path / "keys.json"
    path.write_text('{"keys": "abc"}')
    with pytest.raises(ConfigError, match=r"security.keys_file: .*keys.json: not a key file"):
        KeyRing.watching(path, SECRET)


def test_one_bad_record_is_one_key_not_valid_and_a_revoke_beside_it_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A review's finding: refusing the whole file for one bad digest kept the old keys, so a revoke saved in
    the same write as a typo was lost and the revoked key stayed valid."""
    path = tmp_path / "keys.json"
    lines: list[str] = []
    revoked_id = create_key(path, "bank", secret=SECRET, echo=lines.append)
    create_key(path, "bank", secret=SECRET, echo=lines.append)
    first, second = [word for line in lines for word in line.split() if word.startswith("aig_")]
    ring = KeyRing.watching(path, SECRET, interval_s=0.0)
    data = json.loads(path.read_text())
    for d in data["keys"]:
        d["revoked"] = d["key_id"] == revoked_id
    data["keys"] += [{"key_id": "typo", "tenant": "bank", "digest": "ABC"}, 1, {"tenant": "bank"}]
    path.write_text(json.dumps(data))
    assert ring.verify(first) is None and ring.verify(second) is not None
    assert caplog.text.count("skipped") == 3


def test_a_token_that_lives_longer_than_the_grid_accepts_is_401() -> None:
    """A token's `exp` had no maximum: one minted to last a year was a credential nobody could revoke before then
    (only the provider rotating its key). `security.jwt.max_lifetime_s` (a day by default) bounds it."""
    settings = JwtSettings(issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",),
                           max_lifetime_s=3600)
    auth = Authenticator(KeyRing(SECRET), TENANTS, jwt=settings)
    assert auth.authenticate(f"Bearer {token(exp=int(time.time()) + 3600)}").tenant == "bank"
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(f"Bearer {token(exp=int(time.time()) + 365 * 86400)}")
    assert e.value.code == "invalid_token" and "max_lifetime_s" in e.value.message
    unbounded = Authenticator(KeyRing(SECRET), TENANTS, jwt=JwtSettings(
        issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",), max_lifetime_s=None))
    assert unbounded.authenticate(f"Bearer {token(exp=int(time.time()) + 365 * 86400)}").tenant == "bank"


def test_tokens_name_only_the_tenants_the_grid_lets_them() -> None:
    """The identity provider was trusted for every tenant of the grid, an operator tenant's too: a token naming
    any tenant was that tenant. `security.jwt.tenants` (glob patterns) limits which tenants tokens may name."""
    settings = JwtSettings(issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",),
                           tenants=("ba*",))
    auth = Authenticator(KeyRing(SECRET), TENANTS, jwt=settings)
    assert auth.authenticate(f"Bearer {token()}").tenant == "bank"
    others = [t for t in TENANTS if not t.startswith("ba")]
    assert others, TENANTS
    with pytest.raises(AuthenticationError) as e:
        auth.authenticate(f"Bearer {token(tenant=others[0])}")
    assert e.value.code == "invalid_token" and "security.jwt.tenants" in e.value.message


def test_the_spec_bounds_tokens_by_default() -> None:
    from aigrid.spec.models import JwtSpec

    spec = JwtSpec(issuer="https://idp.example", audience="aigrid", secret_env="X")
    assert (spec.max_lifetime_s, spec.tenants) == (86_400.0, None)


def test_the_gateway_reads_the_token_limits_from_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.gateway.guard import _jwt
    from aigrid.spec.models import JwtSpec, SecuritySpec

    monkeypatch.setenv("AIGRID_TEST_JWT", JWT_KEY)
    j = JwtSpec(issuer="https://idp.example", audience="aigrid", secret_env="AIGRID_TEST_JWT", tenants=["ba*"],
                max_lifetime_s=600)
    settings = _jwt(SecuritySpec(jwt=j))
    assert settings is not None and (settings.tenants, settings.max_lifetime_s) == (("ba*",), 600)


@pytest.mark.parametrize("sub", ["svc\nforged audit line", "svc\x1b[31m", "svc\u202eevil", "svc\u2028x", "a" * 256])
def test_a_sub_that_key_ids_logs_and_audit_records_cannot_carry_is_401(sub: str) -> None:
    """A token's `sub` goes as it is into its key id (`jwt:<tenant>/<sub>`): logs, audit records, quota and abuse
    keys. A newline, a terminal escape, a right-to-left override or more than OpenID Connect's 255 characters
    reached all of them (twenty-third session)."""
    with pytest.raises(AuthenticationError) as e:
        jwt_auth().authenticate(f"Bearer {token(sub=sub)}")
    assert e.value.code == "invalid_token" and "'sub'" in str(e.value)
    assert jwt_auth().authenticate(f"Bearer {token(sub='auth0|5f7c-é.ü@example.com')}").key_id.endswith("@example.com")


def test_a_401_quotes_a_token_s_header_a_hundred_characters_at_most() -> None:
    """What a token's header says (a kid, a `crit` member) was quoted whole in the 401 and whatever logs it."""
    crit = jwt.encode({"sub": "x"}, JWT_KEY, algorithm="HS256", headers={"crit": ["x" * 5000], "x" * 5000: 1})
    with pytest.raises(AuthenticationError) as e:
        jwt_auth().authenticate(f"Bearer {crit}")
    assert e.value.code == "invalid_token" and len(str(e.value)) < 300



@pytest.mark.parametrize(("claim", "value"), [
    ("policy", {"name": "fast"}), ("policy", 5), ("policy", ["fast"]), ("models", 5), ("models", [5]),
    ("models", ["llama-*", {"a": 1}]), ("jurisdictions", "EU"), ("jurisdictions", {"EU": True}), ("sites", "fra"),
    ("sites", [True]), ("max_priority", 2.5), ("max_priority", [9]), ("max_priority", True)])
def test_a_scope_claim_of_the_wrong_type_is_401_naming_it(claim: str, value: object) -> None:
    """A scope claim was turned into a string whatever its type (twenty-third session): `policy: {...}` named a
    policy "{'name': 'fast'}", `models: [5]` allowed the pattern "5". Each is a 401 `invalid_token` naming it."""
    with pytest.raises(AuthenticationError) as e:
        jwt_auth().authenticate(f"Bearer {token(**{claim: value})}")
    assert e.value.code == "invalid_token" and f"'{claim}'" in str(e.value), str(e.value)
    assert len(str(e.value)) < 300


def test_a_scope_claim_of_the_right_type_narrows() -> None:
    p = jwt_auth().authenticate(f"Bearer {token(policy='fast', models=['llama-*'], sites=('fra',), max_priority=3)}")
    assert (p.scopes.policy, p.scopes.sites, p.scopes.max_priority) == ("fast", frozenset({"fra"}), 3)


def test_a_caller_authenticated_earlier_is_judged_again_by_the_same_rules() -> None:
    """Authenticator.again (a batch's creator when its lines run): a key or a token's kept scopes narrowed by its
    tenant's now; a revoked key, or a token's caller once tokens are no longer accepted or may not name its tenant,
    is a 401."""
    ring = KeyRing(SECRET)
    issued = ring.issue("bound", Scopes(jurisdictions=frozenset({"EU", "US"})))
    tenants = {"bound": Tenant("bound", Scopes(jurisdictions=frozenset({"EU"})))}
    settings = JwtSettings(issuer="https://idp.example", audience="aigrid", key=JWT_KEY, algorithms=("HS256",))
    auth = Authenticator(ring, tenants, jwt=settings)
    assert auth.again("bound", "api_key", issued.record.key_id, Scopes(), made="x").scopes.jurisdictions == {"EU"}
    kept = Scopes(jurisdictions=frozenset({"US"}))
    assert auth.again("bound", "jwt", "jwt:bound/svc-1", kept, made="x").scopes.jurisdictions == frozenset()
    ring.revoke(issued.record.key_id)
    with pytest.raises(AuthenticationError):
        auth.again("bound", "api_key", issued.record.key_id, Scopes(), made="this batch")
    for changed in (replace(auth, jwt=None), replace(auth, jwt=replace(settings, tenants=("bank",)))):
        with pytest.raises(AuthenticationError) as denied:
            changed.again("bound", "jwt", "jwt:bound/svc-1", Scopes(), made="this batch")
        assert denied.value.code == "invalid_token"


def test_an_unknown_or_revoked_key_id_costs_the_same_hashing_as_a_known_one_with_a_wrong_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # key ids are not secret, but a refusal that skipped the hash for an unknown id answered faster than a known
    # id's wrong secret, and so told a caller which ids exist: every refusal must hash and compare once
    ring = KeyRing(SECRET)
    known = ring.issue("bank").api_key
    revoked = ring.issue("bank")
    ring.revoke(revoked.record.key_id)
    calls: list[str] = []
    real_digest, real_compare = KeyRing.digest, hmac.compare_digest
    monkeypatch.setattr(KeyRing, "digest", lambda self, s: calls.append("digest") or real_digest(self, s))
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append("compare") or real_compare(a, b))
    for key in (known[:-3] + ("aaa" if not known.endswith("aaa") else "bbb"),  # a known id, a wrong secret
                "aig_000000000000_" + known.rsplit("_", 1)[1],                 # an id no key has
                revoked.api_key):                                              # a revoked key, its right secret
        calls.clear()
        assert ring.verify(key) is None
        assert calls == ["digest", "compare"], key
    calls.clear()
    assert ring.verify(known) is not None and calls == ["digest", "compare"]


def test_scope_request_changes_other_fields_in_the_same_copy() -> None:
    """The pipeline sets the request's urgency (priority, deadline) where it scopes it: one copy of RequestInfo, not
    two (~8 us a request of 18; scripts/request_path_cost.py --cuts, thirty-second session)."""
    auth, key = make_auth()
    p = auth.authenticate(f"Bearer {key}")
    asked = RequestInfo(id="r1", model="llama-3-8b", allowed_jurisdictions=frozenset({"EU", "US"}), prefix_hash="abc")
    both = scope_request(p, asked, priority=9, deadline_ms=250.0)
    assert both == replace(scope_request(p, asked), priority=9, deadline_ms=250.0)
    assert both.priority == 9 and both.deadline_ms == 250.0 and both.tenant == "bank"
    assert both.allowed_jurisdictions == frozenset({"EU"}) and both.prefix_hash not in (None, "abc")


def test_a_live_callers_own_token_is_verified_again_its_exp_read() -> None:
    """Authenticator.again with the request's own Authorization header (a live tool loop's turn, routes._tool_loop):
    the token is verified again, so one past its `exp` is a 401 `token_expired` (without the header, as for a
    background run, a token cannot be read again); a token of another caller is refused; a valid one's claims are
    the scopes it holds now. Before (thirty-seventh session, brief AUDSTOP) an expired token's caller passed."""
    auth = jwt_auth()
    kept = Scopes(jurisdictions=frozenset({"CH"}))
    expired = f"Bearer {token(exp=int(time.time()) - 3600)}"
    with pytest.raises(AuthenticationError) as e:
        auth.again("bank", "jwt", "jwt:bank/svc-1", kept, made="this request", authorization=expired)
    assert e.value.code == "token_expired"
    assert auth.again("bank", "jwt", "jwt:bank/svc-1", kept, made="this request").scopes == TENANTS["bank"].scopes \
        .narrowed_by(kept)  # no header: judged on what was kept, as before
    with pytest.raises(AuthenticationError, match="no longer names its caller"):
        auth.again("bank", "jwt", "jwt:bank/svc-1", kept, made="this request",
                   authorization=f"Bearer {token(sub='svc-2')}")
    fresh = auth.again("bank", "jwt", "jwt:bank/svc-1", kept, made="this request",
                       authorization=f"Bearer {token(jurisdictions=['EU'])}")
    assert fresh.scopes.jurisdictions == frozenset({"EU"})
