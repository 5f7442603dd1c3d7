"""One request's account, from the first byte read to the last byte sent: who asked, what was reserved,
what the firewall said, which decision served it and how it ended.

The audited routes (routes.py, `Audited`) create one Exchange per request, let the pipeline fill it in and
close it in a `finally` (Guard.finish): the quota reservation is settled and the audit record written
exactly once, whatever the exit: success, client error, firewall block, no eligible site, every candidate
failed, client gone, gateway shutdown. An exchange the gateway opens itself, outside an HTTP request (a batch's
line, a background Response's run, an automatic compaction's pass), is closed the same way (routes.own_exchange).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aigrid.core.types import Decision
from aigrid.errors import ApiError
from aigrid.gateway.admission import Ticket
from aigrid.gateway.decisions import DecisionRecord, first_byte_fields
from aigrid.gateway.output_filter import OutputFilter
from aigrid.gateway.tracing import NO_TRACE, RequestTrace
from aigrid.security.firewall.abuse import AbuseVerdict
from aigrid.security.firewall.pipeline import Verdict
from aigrid.security.principal import Principal
from aigrid.security.quotas import Reservation

if TYPE_CHECKING:
    from aigrid.gateway.relay_response import Hangup

LOOP_CUT = ("client_closed", "interrupted", "error:upstream_failed")
"""Ends of a tool loop that leave its finished model turns' usage (Exchange.loop_usage) as what was used: its client
left, its stream broke, or its engine failed after its tools acted (not run again elsewhere)."""
UNFINISHED = ("routing", "streaming")
"""Record states that mean the answer never ended (the client left or the gateway stopped mid-way)."""
MODEL_MAX_CHARS = 256
"""The longest model name the request schemas take (schemas.py, messages_schema.py): what the access line keeps of a
model a refused request's body named."""


@dataclass
class Exchange:
    route: str
    started: float
    """Wall-clock time the request arrived."""
    body: Mapping[str, Any] = field(default_factory=dict)
    model: str = ""
    principal: Principal | None = None
    reservation: Reservation | None = None
    preadmitted: bool = False
    """Admitted before its pipeline ran, by the exchange that made it (`take_admission`: a background Response's
    run, admitted by its create): Routes.route admits it no second time (no quota reserved again, no abuse signal
    counted twice); it settles the `reservation` it was handed."""
    abuse: AbuseVerdict | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    """Input verdicts, then those of the tool loop and of a whole (non-streamed) answer or an engine's refusal (streamed
    too: read whole, proxy.py)."""
    output: OutputFilter | None = None
    """A streamed answer's filter: its verdicts are read when the exchange closes."""
    decision: Decision | None = None
    record: DecisionRecord | None = None
    usage: Mapping[str, Any] | None = None
    """Usage of an answer the gateway made itself (embeddings); a proxied answer's is on the record."""
    error: ApiError | None = None
    outcome: str | None = None
    """Set for exits without an ApiError: cancelled, error:internal."""
    closed: bool = False
    _own_id: str = ""
    settles_abandoned: bool = False
    """A background run a reader failed as abandoned (its owner's lease lapsed) while its owner was only stalled:
    the reader's `abandoned` record charged it at its reservation, its usage unknown there; this exchange is
    settled to its real usage and its record, outcome `abandoned:settled` (final_outcome), is the run's second
    and last, carrying that usage (responses_api._abandoned_alive)."""
    unsettled: bool = False
    """The quota store failed to settle its reservation (Guard.finish): the reservation stands as charged."""
    trace: RequestTrace = NO_TRACE
    """The request's OpenTelemetry span; NO_TRACE (does nothing) when tracing is off (tracing.py)."""
    ticket: Ticket | None = None
    """Its urgency and what the admission queue did (admission.py); released when the exchange closes."""
    hangup: Hangup | None = None
    """Watches the client of a live model request (routes.Audited): its hang-up before the answer starts cancels
    the request; `hold()` around a step that must not be cut. None for a background run or a batch line."""
    loop_usage: dict[str, int] | None = None
    """A tool loop's finished model turns' usage so far (routes._tool_loop): what is charged when its client left
    before the loop's answer came (then the answer's count never comes)."""
    loop_holding: int = 0
    """The prompt tokens (the gateway's estimate) of the tool loop's later model turn an engine holds now: charged
    with `loop_usage` when the client leaves during that turn (its engine read the prompt)."""
    loop_stop: str | None = None
    """Why its tool loop ended (agents/loop.py Finished.stop: answer, step_limit, context_limit, token_budget,
    revoked, client_tool, max_tokens, tool_choice_none), told as its answer is made (routes._tool_loop); None where no
    loop ended (none ran, or its client left first). Its audit record's `extra.loop_stop` and its access line's
    `loop_stop`: a loop cut short answers 200, its outcome `ok`, and until the thirty-seventh session (brief AUDSTOP)
    neither told a loop cut for a revoked key, a step limit or a token budget from one that answered."""
    steps: bool = False
    """A tool loop with server-side tools answers it (routes.Routes._forward decides, once): only then are an
    answer's steps (`aigrid_steps`, `: aigrid-step` comments) the gateway's own. A front door that reads steps
    (responses_api.py: mcp_call items) reads this, not the rule again: the tools an MCP server offers change while a
    request runs."""
    tool_runs: list[dict[str, Any]] = field(default_factory=list)
    """Every server-side tool the tool loop had run for it, in order, each as it started and, once it ended, how
    (routes._tool_loop): `tool`, `site`, `call_id`, `arguments`, then `ok` and `ms` (a call the model made
    badly stands too, `ok` false: it was not run). A loop is never run again once a call was made
    (EngineFailedAfterActing). Its audit record names them (Guard._record)."""
    answered: int | None = None
    """The HTTP status of the answer its client was sent (routes.Audited, as the answer starts: 200 for a stream that
    started with 200, however it ended); None where no HTTP answer was sent (a batch's line, a background run, a
    client gone before its answer)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Fields its audit record's `extra` carries besides those made from the above (Guard._record): a
    background run's response id; an abandoned run's reason and quota settlement (responses_api.py)."""

    def hand_admission(self) -> Reservation:
        """This exchange's admission (Guard.admit: its quota reservation), handed to another exchange that serves
        its request and settles it (`take_admission`): a background Response's create hands it to its run. This
        one keeps only the limits' headroom (its answer's rate-limit headers), with no tokens and no counters,
        so that it settles nothing."""
        reservation = self.reservation
        assert reservation is not None, "hand_admission: this exchange was not admitted (Guard.admit)"
        self.reservation = replace(reservation, token_counters=(), reserved_tokens=0)
        return reservation

    def take_admission(self, reservation: Reservation) -> None:
        """Serve a request another exchange admitted (`hand_admission`): its reservation is this exchange's to
        settle, and Routes.route does not admit it again (`preadmitted`)."""
        self.reservation, self.preadmitted = reservation, True

    def final_usage(self) -> Mapping[str, Any] | None:
        if self.usage is not None:
            return self.usage
        usage = self.record.usage if self.record is not None else None
        if usage is None and self.loop_usage and any(self.loop_usage.values()) \
                and self.final_outcome() in LOOP_CUT:  # a tool loop's finished turns, which no answer counts: not 0
            return self.loop_usage
        return usage

    def final_outcome(self) -> str:
        if self.settles_abandoned:  # what the run did is in its record's extra (status, message)
            return "abandoned:settled"
        if self.error is not None:
            return f"error:{self.error.code}"
        if self.outcome is not None:
            return self.outcome
        if self.record is None:
            return "ok"
        return "client_closed" if self.record.status in UNFINISHED else self.record.status

    def failure(self) -> ApiError | None:
        """The gateway's error the request ended with: its own (`error`), or an engine's refusal that is one of the
        gateway's errors (DecisionRecord.refusal: a prompt past the engine's context), when that is how it ended. Its
        outcome, status and audited message are the same whoever found it (Guard._record, observe)."""
        if self.error is not None:
            return self.error
        refusal = self.record.refusal if self.record is not None else None
        return refusal if refusal is not None and self.final_outcome() == f"error:{refusal.code}" else None

    def error_status(self) -> int | None:
        """The HTTP status of an answer that is an error: the gateway's (`failure`), or an engine's refusal passed
        on (outcome `http_NNN`, proxy.finish: the access line said `status: null` for an engine's 400); None for an
        answer, and for an exit that sent no status of its own (client_closed, cancelled)."""
        if (failure := self.failure()) is not None:
            return failure.status
        outcome = self.final_outcome()
        code = outcome.removeprefix("http_")
        return int(code) if code != outcome and code.isdigit() else None

    def asked_model(self) -> str:
        """The model its client asked for: the one its checks read (`model`), else its body's `model` when that is a
        name (a request refused before or by its checks), cut to the schemas' 256 characters; "" when none."""
        if self.model:
            return self.model
        asked = self.body.get("model") if isinstance(self.body, Mapping) else None
        return asked[:MODEL_MAX_CHARS] if isinstance(asked, str) else ""

    def used_tokens(self) -> int:
        """What to charge (`charged_from` says which count): the engine's count when it sent one (a tool loop's
        client gone during a later model turn: its finished turns' counts and that turn's prompt); when an engine
        answered but its count never came, the prompt (the gateway's estimate) and the output tokens its stream
        delivered (a client that hung up or cancelled mid-stream, an engine that died: DecisionRecord.
        delivered_tokens; until the thirty-sixth session the reservation, prompt and max_tokens, 224 tokens for 24
        delivered), or the reservation where no stream counted them (a whole answer without a count, counts that
        cannot be charged), never more than the reservation; the prompt when the client left while an engine held
        the request, before any answer (its prefill was asked for: without this a client could have long prompts
        read for nothing by hanging up); nothing when no engine had it."""
        return self._charge()[0]

    def charged_from(self) -> str:
        """Which count `used_tokens` charges: `engine` (the engine's usage), `tool_loop` (a tool loop's finished turns),
        `delivered` (the prompt and the output its stream delivered), `reservation`, `prompt` (held unanswered) or
        `nothing`; the audit record's `extra.charged_from` where it is not the engine's (Guard._record)."""
        return self._charge()[1]

    def _charge(self) -> tuple[int, str]:
        usage = self.final_usage()
        if usage:
            loop = usage is self.loop_usage
            held = self.loop_holding if loop else 0  # a later loop turn cut at its engine
            used = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0) + held
            return used, "tool_loop" if loop else "engine"
        if self.reservation is None or self.record is None:
            return 0, "nothing"
        reserved = self.reservation.reserved_tokens
        if self.record.served_by is not None:
            delivered = self.record.delivered_tokens
            if delivered is None:
                return reserved, "reservation"
            return min(self.record.prompt_tokens + delivered, reserved), "delivered"
        if self.record.left_at is not None:
            return min(self.record.prompt_tokens, reserved), "prompt"
        return 0, "nothing"

    @property
    def request_id(self) -> str:
        """The id a client quotes (x-request-id, the audit record's request_id): the decision's (`aigrid explain`
        takes it) when one was made, else one of its own, made on first use."""
        if self.decision is not None:
            return self.decision.request_id
        if not self._own_id:
            self._own_id = f"req-{secrets.token_hex(8)}"
        return self._own_id

    def served_endpoint(self) -> str:
        """The endpoint that answered last ("" when none did)."""
        return (self.record.served_by or "").split(" -> ")[-1] if self.record is not None else ""

    def served_site(self) -> str | None:
        served = self.served_endpoint()
        if self.decision is None or not served:
            return None
        return next((c.site_id for c in self.decision.ranked if c.endpoint_id == served), None)

    def access_fields(self, now: float) -> dict[str, Any]:
        """The access log line of this request (aigrid.logs): who, where, how it ended, how long."""
        record = self.record
        served = self.served_endpoint()
        site = self.served_site()
        usage = self.final_usage() or {}
        return {"route": self.route, "request_id": self.request_id,
                "decision": self.decision.request_id if self.decision else None,
                "tenant": self.principal.tenant if self.principal else None,
                "key": self.principal.key_id if self.principal else None, "model": self.asked_model(),
                "site": site, "endpoint": served or None, "outcome": self.final_outcome(),
                "status": self.answered if self.answered is not None else self.error_status(),
                "ms": round((now - self.started) * 1000, 1),
                **first_byte_fields(record.to_first_byte() if record is not None else {}),
                "attempts": len(record.attempts) if record is not None else 0,
                "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                "firewall": [f"{v.check}:{v.action}" for v in self.all_verdicts()] or None,
                **({"loop_stop": self.loop_stop} if self.loop_stop is not None else {}),
                **({"urgency": self.ticket.to_dict()} if self.ticket is not None else {})}

    def all_verdicts(self) -> list[Verdict]:
        return [*self.verdicts, *(self.output.verdicts() if self.output is not None else [])]
