"""The firewall pipeline: checks on request messages and on responses, with a per-tenant action each.

    input:  injection (user and tool messages, retrieved documents)  -> block | flag | off
            (block: scores above the model's block threshold are blocked, those between its flag and
            block thresholds are flagged, so borderline prompts pass with a verdict)
            pii (all message text)                                   -> redact | block | flag | off
    output: pii (whole responses, or streamed through StreamingRedactor) -> redact | flag | off

check_input never raises: it returns the verdicts (plain data for the audit log) and, when a check
blocked, result.raise_if_blocked() raises InvalidRequest (400, code "firewall_blocked") for the client. Messages follow the OpenAI chat shape: content is a string or a list of {"type": "text"} parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aigrid.errors import InvalidRequest
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pii import find_pii, redact
from aigrid.security.firewall.streaming import StreamingRedactor


class Action(StrEnum):
    OFF = "off"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class FirewallPolicy:
    injection: Action = Action.BLOCK
    pii_input: Action = Action.REDACT
    pii_output: Action = Action.REDACT
    injection_roles: frozenset[str] = frozenset({"user", "tool", "function"})
    """System and assistant messages come from the application, not from untrusted input."""


@dataclass(frozen=True, slots=True)
class Verdict:
    check: str
    action: str
    """What was done: flagged, redacted, blocked."""
    detail: str
    score: float | None = None
    message_index: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "action": self.action, "detail": self.detail, "score": self.score,
                "message": self.message_index}


@dataclass(slots=True)
class InputResult:
    messages: list[dict[str, Any]]
    """The messages to forward (redacted copies where the policy said so)."""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def blocked(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.action == "blocked"), None)

    def raise_if_blocked(self) -> None:
        verdict = self.blocked
        if verdict is not None:
            raise InvalidRequest(f"request blocked by the AI firewall: {verdict.detail}", code="firewall_blocked",
                                 param="messages")


class Firewall:
    def __init__(self, model: InjectionModel, policies: Mapping[str, FirewallPolicy] | None = None,
                 default: FirewallPolicy = FirewallPolicy()) -> None:
        self.model = model
        self.policies = dict(policies or {})
        self.default = default

    def policy(self, tenant: str) -> FirewallPolicy:
        return self.policies.get(tenant, self.default)

    def check_input(self, tenant: str, messages: Sequence[Mapping[str, Any]],
                    documents: Sequence[str] = ()) -> InputResult:
        """Run the input checks; stops at the first block (see InputResult.raise_if_blocked)."""
        policy = self.policy(tenant)
        result = InputResult([dict(m) for m in messages])
        for i, message in enumerate(result.messages):
            role = str(message.get("role", "user"))
            if policy.injection != Action.OFF and role in policy.injection_roles:
                self._injection(policy, _text_of(message), i, result.verdicts)
            if policy.pii_input != Action.OFF:
                self._pii_input(policy, message, i, result.verdicts)
            if result.blocked:
                return result
        for doc in documents:
            if policy.injection != Action.OFF:
                self._injection(policy, doc, None, result.verdicts)
            if result.blocked:
                return result
        return result

    def _injection(self, policy: FirewallPolicy, text: str, index: int | None, out: list[Verdict]) -> None:
        if not text:
            return
        score = self.model.score(text)
        if not score.is_injection:
            return
        where = "a retrieved document" if index is None else f"message {index}"
        block = policy.injection == Action.BLOCK and score.should_block
        verdict = Verdict("injection", "blocked" if block else "flagged",
                          f"prompt injection suspected in {where}", round(score.probability, 4), index)
        out.append(verdict)

    def _pii_input(self, policy: FirewallPolicy, message: dict[str, Any], index: int, out: list[Verdict]) -> None:
        kinds = sorted({m.kind for m in find_pii(_text_of(message))})
        if not kinds:
            return
        if policy.pii_input == Action.BLOCK:
            out.append(Verdict("pii", "blocked", f"personal data ({', '.join(kinds)}) in message {index}",
                               None, index))
            return
        if policy.pii_input == Action.REDACT:
            _redact_message(message)
        action = "redacted" if policy.pii_input == Action.REDACT else "flagged"
        out.append(Verdict("pii", action, f"personal data: {', '.join(kinds)}", None, index))

    def check_output(self, tenant: str, text: str) -> tuple[str, list[Verdict]]:
        """A whole (non-streamed) response: returns the text to send and the verdicts."""
        action = self.policy(tenant).pii_output
        kinds = sorted({m.kind for m in find_pii(text)}) if action != Action.OFF else []
        if not kinds:
            return text, []
        done = "redacted" if action == Action.REDACT else "flagged"
        verdict = Verdict("pii_output", done, f"personal data: {', '.join(kinds)}")
        return (redact(text) if action == Action.REDACT else text), [verdict]

    def output_redactor(self, tenant: str) -> StreamingRedactor | None:
        """A redactor for one streamed response, or None when the tenant's policy does not redact."""
        return StreamingRedactor() if self.policy(tenant).pii_output == Action.REDACT else None


def stream_verdicts(redactor: StreamingRedactor) -> list[Verdict]:
    """Verdicts for a finished stream (call after flush)."""
    if not redactor.found:
        return []
    return [Verdict("pii_output", "redacted", f"personal data: {', '.join(sorted(set(redactor.found)))}")]


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _redact_message(message: dict[str, Any]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = redact(content)
    elif isinstance(content, list):
        message["content"] = [dict(p, text=redact(str(p.get("text", ""))))
                              if isinstance(p, dict) and p.get("type") == "text" else p for p in content]
