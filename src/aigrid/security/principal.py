"""Who is calling, and what they may do: tenants, scopes and the authenticated principal (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from aigrid.core.urgency import parse_level


def scope_text(key: str, value: object) -> str:
    """One scope of Scopes.to_dict as plain text, as `aigrid keys list` and a narrowed operator key's 403 write it:
    `jurisdictions=EU,US`, and models_within (lists of patterns a model must match one of each) as `models within
    small-*, tiny-*` (and `and within ...` per further list), never as Python lists (`models_within=[['x']]`)."""
    if key == "models_within" and isinstance(value, list):
        return "models within " + " and within ".join(", ".join(map(str, patterns)) for patterns in value)
    return f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"


@dataclass(frozen=True, slots=True)
class Scopes:
    """Limits attached to a tenant or a key. None means "no limit at this level".

    models are glob patterns ("llama-*"); a request for model "auto" needs a pattern matching "auto"
    (for example "*"), because the router could otherwise pick any model.
    """

    models: frozenset[str] | None = None
    jurisdictions: frozenset[str] | None = None
    sites: frozenset[str] | None = None
    policy: str | None = None
    max_priority: int | None = None
    """The highest urgency level (0-9, core/urgency.py) requests may ask for; None: no limit at this level."""
    models_within: tuple[frozenset[str], ...] = ()
    """Each side's patterns when a key narrowed its tenant's: a model must match one of each set too. `models`
    alone is not exact (glob patterns have no exact intersection: a key's `llama-?` kept its tenant's `llama-*`,
    which the string `llama-?` matches, and so allowed every model the tenant may use)."""

    tools: frozenset[str] | None = None
    """Glob patterns of the grid's server-side tools requests may have run (the tenant's `tools`; keys and tokens
    name none, so a key has its tenant's)."""

    def allows_tool(self, name: str) -> bool:
        return self.tools is None or any(fnmatchcase(name, p) for p in self.tools)

    def allows_model(self, model: str) -> bool:
        return all(patterns is None or any(fnmatchcase(model, p) for p in patterns)
                   for patterns in (self.models, *self.models_within))

    def narrowed_by(self, other: Scopes) -> Scopes:
        """The scopes that satisfy both self and other (a key can only narrow its tenant)."""
        return Scopes(
            models=_both(self.models, other.models, combine=False),
            jurisdictions=_both(self.jurisdictions, other.jurisdictions, combine=True),
            sites=_both(self.sites, other.sites, combine=True),
            policy=other.policy or self.policy,
            max_priority=_lowest(self.max_priority, other.max_priority),
            tools=_both(self.tools, other.tools, combine=False),
            models_within=tuple(dict.fromkeys(
                (*self.models_within, *other.models_within,
                 *((self.models, other.models) if self.models is not None and other.models is not None else ())))),
        )

    def narrowing_of(self, tenant: Scopes) -> str:
        """Whether these scopes (a key's or token's, its tenant's `narrowed_by` it) narrow the tenant's `tenant`, and
        how, as `aigrid keys list` writes scopes (`jurisdictions=EU models=small-*`); empty where they do not. A key
        naming its tenant's own model patterns (a token's `models` claim as the tenant's) narrows nothing, but
        narrowed_by keeps both sides' patterns in models_within: only a side unlike the tenant's `models`, any of its
        models_within, and these scopes' own `models` (named as `models=`) is a narrowing of its own."""
        within = tuple(p for p in self.models_within if p not in (tenant.models, self.models, *tenant.models_within))
        own = tenant.to_dict()
        return " ".join(scope_text(k, v) for k, v in replace(self, models_within=within).to_dict().items()
                        if own.get(k) != v)

    def to_dict(self) -> dict[str, object]:
        within = {"models_within": [sorted(p) for p in self.models_within]} if self.models_within else {}
        tools = {"tools": _list(self.tools)} if self.tools is not None else {}
        return {"models": _list(self.models), "jurisdictions": _list(self.jurisdictions),
                "sites": _list(self.sites), "policy": self.policy, "max_priority": self.max_priority, **within,
                **tools}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Scopes:
        """Scopes as `to_dict` writes them (a key file's record, a batch's creator) or a token's claims: a ValueError
        naming the field for a value of the wrong type. Before, a value was turned into a string: a token's
        `policy: {...}` claim became a policy named "{...}", `models: [5]` the pattern "5"."""
        raw = data.get("max_priority")
        within = data.get("models_within") or []
        if not isinstance(within, list):
            raise ValueError(f"'models_within': expected a list of lists of strings, got {_shown(within)}")
        try:
            max_priority = None if raw is None else parse_level(raw)
        except ValueError as e:
            raise ValueError(f"'max_priority': {e}") from e
        return cls(models=_set("models", data.get("models")),
                   jurisdictions=_set("jurisdictions", data.get("jurisdictions")),
                   sites=_set("sites", data.get("sites")), policy=_str("policy", data.get("policy")),
                   max_priority=max_priority, tools=_set("tools", data.get("tools")),
                   models_within=tuple(s for s in (_set("models_within", w) for w in within) if s is not None))


DEFAULT_TENANT = "default"
"""The tenant every grid has, in its spec or not (gateway.guard.Guard adds it): the anonymous caller's where keys are
not enforced, and a key of it is never refused as unknown."""


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    scopes: Scopes = Scopes()
    store_prompts: bool = False
    """Opt-in: keep prompt text in the audit log (otherwise only keyed hashes)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The result of authentication: effective scopes are the tenant's narrowed by the key's."""

    tenant: str
    key_id: str
    scopes: Scopes
    method: str = "api_key"
    """api_key, jwt or anonymous (enforcement off)."""


def _both(a: frozenset[str] | None, b: frozenset[str] | None, *, combine: bool) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    if combine:
        return a & b
    # glob patterns cannot be intersected exactly: keep each pattern of one side that the other side
    # covers ("llama-3-*" under "llama-*"; the tenant's "llama-*" under a key's "*")
    return frozenset({p for p in b if any(fnmatchcase(p, q) for q in a)}
                     | {q for q in a if any(fnmatchcase(q, p) for p in b)})


def _lowest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _list(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def _set(name: str, value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name!r}: expected a list of strings, got {_shown(value)}")
    return frozenset(value)


def _str(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name!r}: expected a string, got {_shown(value)}")


def _shown(value: object) -> str:
    """A wrong value as an error quotes it: its type and at most 100 characters of it."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 100 else text[:100] + '...'}"
