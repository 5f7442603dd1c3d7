"""An audit record's canonical JSON: the bytes hashed into the chain, identical whichever encoder writes them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.audit import record as record_module
from aigrid.audit.record import AuditRecord


def reference_body(record: AuditRecord) -> str:
    """The canonical JSON as json.dumps writes it (the encoder every record was written with before orjson)."""
    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, Mapping):
            return {str(k): finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value
    return json.dumps(finite({f.name: getattr(record, f.name) for f in fields(record)}), sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=-1e17, max_value=1e17)
           | st.text(st.characters(codec="utf-8"), max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), inner, max_size=4), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(decision=st.dictionaries(st.text(max_size=8), values, max_size=5), extra=st.dictionaries(st.text(max_size=8),
       values, max_size=3), firewall=st.lists(st.dictionaries(st.text(max_size=5), values, max_size=3), max_size=2),
       ts=st.floats(allow_nan=False), text=st.none() | st.text(max_size=20))
def test_body_is_the_json_dumps_canonical_form(decision: dict[str, Any], extra: dict[str, Any],
                                               firewall: list[dict[str, Any]], ts: float, text: str | None) -> None:
    record = AuditRecord(ts=ts, request_id="dec-1", tenant="t\u00e9", key_id="k", model="m", decision=decision,
                         firewall=firewall, prompt_text=text, extra=extra)
    assert record.body() == reference_body(record)


def test_a_typical_record_and_the_forms_orjson_writes_differently() -> None:
    decision = {"policy": "balanced", "chosen": {"endpoint": "emu0", "total": 0.977135},
                "candidates": [{"scores": {"ttft": 0.963968, "cost": 1.0}, "total": 0.94}], "rejected": {}}
    for extra in ({"route": "/v1/chat/completions", "urgency": {"queued_ms": 0.0, "deadline_ms": None}},
                  {"tiny": 1e-05, "big": 1e16, "huge": 2**65, "nan": float("nan"), "t": (1, 2), "k": {1: "a"}}):
        record = AuditRecord(ts=1796222002.3804317, request_id="dec-f7508bdd88e44f20", tenant="default",
                             key_id="anonymous", model="emulated", decision=decision, prompt_tokens=128, extra=extra)
        assert record.body() == reference_body(record)


def test_a_lone_surrogate_is_escaped_so_that_utf8_carries_the_body() -> None:
    """The chain hashes a body's UTF-8, which has no lone surrogate: json.dumps(ensure_ascii=False) left one in
    the body, and the writer failed on it for ever (tests/audit/test_audit_log.py). Escaped, it reads back."""
    record = AuditRecord(ts=1.5, request_id="r", tenant="t\u00e9", key_id="k", model="m", extra={"x": "a\ud800b"})
    body = record.body()
    assert body.encode("utf-8") and "\\ud800" in body and "\\u00e9" in body
    assert json.loads(body)["extra"]["x"] == "a\ud800b" and json.loads(body)["tenant"] == "t\u00e9"


def test_a_record_of_plain_values_is_written_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record of exact plain types (the gateway's, non-finite floats included) goes to orjson as it is: the copy
    (`_finite`) is made only for one that holds anything else, and both give json.dumps's canonical form."""
    copies: list[object] = []
    real = record_module._finite

    def counted(value: Any, odd: list[Any]) -> Any:
        copies.append(value)
        return real(value, odd)

    monkeypatch.setattr(record_module, "_finite", counted)
    decision = {"policy": "balanced", "chosen": {"endpoint": "emu0", "total": 0.977135},
                "candidates": [{"scores": {"ttft": 0.963968, "cost": 1.0}, "total": 0.94}], "rejected": {}}
    plain = AuditRecord(ts=1796222002.3804317, request_id="dec-f7508bdd88e44f20", tenant="default",
                        key_id="anonymous", model="emulated", decision=decision, prompt_tokens=128,
                        extra={"route": "/v1/chat/completions", "t": (1, 2.5), "nan": float("nan"),
                               "inf": [float("-inf")], "none": None, "yes": True, "zero": -0.0})
    assert plain.body() == reference_body(plain) and not copies
    for odd in ({"tiny": 1e-05}, {"k": {1: "a"}}, {"huge": 2**65, "nan": float("nan")}, {"s": Label("x")}):
        record = AuditRecord(ts=1.5, request_id="r", tenant="t", key_id="k", model="m", extra=odd)
        copies.clear()
        assert record.body() == reference_body(record) and copies, odd


class Label(str):
    """A str subclass: not an exact plain type, so it is copied first (json.dumps writes it as a string)."""
