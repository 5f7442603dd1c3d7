"""Each tenant's prefix cache of its own on the engines that can keep one (security.isolate_prefix_cache).

An engine keeps one prefix cache for every request it serves: a tenant whose prompt shares a prefix another
tenant sent gets its first token sooner, a timing side channel of what others send. vLLM (0.9 and later) keeps
cached blocks apart by a request's `cache_salt`: requests share them only when their salts are equal; SGLang
(since its PR 10645) keys its radix cache by the request's `cache_salt` followed by its `extra_key`, and a salt of
a fixed length (32 hex digits) keeps a client's `extra_key` from reaching another tenant's namespace. With the
setting on, every request the gateway sends to an engine of a kind that reads the field carries the tenant's salt
(a BLAKE2b keyed by Guard.derived_key(KEY_PURPOSE), never the tenant's name); a client's own `cache_salt` is folded
into its tenant's, so a tenant may keep some of its requests apart from its others but never share with another
tenant. Engines of other kinds get nothing added (llama.cpp has no such field).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

KEY_PURPOSE = "prefix-cache-salt"
"""Guard.derived_key's purpose for the salts' key."""

SALTED_KINDS = frozenset({"vllm", "sglang"})
"""Engine kinds that read `cache_salt` (vLLM >= 0.9: docs.vllm.ai, "Automatic Prefix Caching"; SGLang's OpenAI
server: `OpenAIServingBase._compute_extra_key`, the radix cache's `RadixKey.extra_key`)."""

FIELD = "cache_salt"


class CacheSalt:
    """The salt each request to a salted endpoint carries."""

    def __init__(self, key: bytes, endpoints: Iterable[str]) -> None:
        """`endpoints`: the ids of the endpoints whose engines read the field."""
        self._key = key
        self._endpoints = frozenset(endpoints)

    def salt(self, tenant: str, client: Any = None) -> str:
        """The tenant's salt, with the client's own `cache_salt` (any JSON value, None for none) folded in."""
        data = orjson.dumps([tenant] if client is None else [tenant, client])
        return hashlib.blake2b(data, key=self._key, digest_size=16).hexdigest()

    def isolates(self, endpoint: str) -> bool:
        """Does `endpoint`'s engine read the field (each tenant's prefix cache kept apart from the others')?"""
        return endpoint in self._endpoints

    def apply(self, body: Mapping[str, Any], endpoint: str, tenant: str) -> Mapping[str, Any]:
        """`body` as `endpoint`'s engine is to get it: salted for the tenant where the engine reads the field."""
        if not self.isolates(endpoint):
            return body
        return {**body, FIELD: self.salt(tenant, body.get(FIELD))}
