"""The one error hierarchy of aigrid.

    AigridError
     ├── SpecError                 a grid spec that cannot be loaded (names the file and the field)
     ├── ConfigError               a setting outside the spec (environment variable, key file) is wrong
     ├── EngineError               something went wrong talking to an engine
     │    ├── EngineUnavailable    could not connect, or failed before the first byte: try the next site
     │    │    └── EngineKeyRefused  it refused the gateway's key (401; 403 but from kind openai): the operator's
     │    └── EngineStreamBroken   failed after bytes were sent to the client
     ├── EngineBuildError          the embedded engine binary or model could not be found or built
     ├── SharedStateUnavailable    Redis (shared by several gateways) cannot be reached
     ├── WorkerError               a simulation run in a worker process died or failed unpicklably
     └── ApiError                  a client-facing error, mapped to the OpenAI error envelope
          ├── InvalidRequest       400  invalid_request_error
          ├── RequestTimeout       408  request_timeout (a request's head or body not sent within its deadline)
          ├── RequestHeaderTooLarge 431 request_header_too_large (a request's head over what the gateway takes)
          ├── AuthenticationError  401  authentication_error
          ├── PermissionDenied     403  permission_error
          ├── ModelNotFound        404  model_not_found
          ├── NotFound             404  not_found
          ├── RateLimited          429  rate_limit_exceeded (retried only when Retry-After <= 60 s)
          ├── Overloaded           429  overloaded (shed by the admission queue; Retry-After)
          ├── NoEligibleEndpoint   503  no_eligible_endpoint
          ├── DeadlineUnmeetable   503  deadline_unmeetable (refused before any engine work; not retried)
          ├── AuditUnavailable     503  audit_unavailable (the audit log cannot take the record)
          ├── StoreUnavailable     503  store_unavailable (the store of stored responses/conversations)
          ├── ShuttingDown         503  shutting_down (a request the gateway's stop cut before its answer began)
          ├── TooManyConnections   503  too_many_connections (a connection past the process's bound or its
          │                             address's share, refused as it is accepted; Retry-After)
          └── UpstreamFailed       502  upstream_error

Foreign errors (httpx, pydantic, yaml, OSError) are mapped into this tree once, at the boundary where
they are caught, and nowhere else.

Every ApiError also says whether the official SDKs should send the request again by themselves
(`ApiError.should_retry`, answered as `x-should-retry: true|false`, which the OpenAI and Anthropic SDKs obey
before their own rule of retrying 408, 409, 429 and >= 500): only when trying again can help, and only after
a wait an SDK call can sit through (docs/quickstart.md, "Errors and retries").
"""

from __future__ import annotations

from aigrid.field_names import Field, field_name
from aigrid.userinfo import without_userinfo


class AigridError(Exception):
    """Base of every error aigrid raises on purpose."""


MAX_LISTED = 20
"""The most problems an error's message lists (a file with 200,000 unknown keys printed 200,000 lines)."""


def listed(problems: list[str]) -> list[str]:
    """The first MAX_LISTED of `problems`, then 'and N more' for the rest (all of them when no more)."""
    if len(problems) <= MAX_LISTED:
        return problems
    return [*problems[:MAX_LISTED], f"and {len(problems) - MAX_LISTED:,} more"]


class SpecError(AigridError):
    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in listed(problems))
        super().__init__(f"invalid grid spec {path}:\n{lines}")


class ConfigError(AigridError):
    """A setting outside the spec file is missing or wrong (an environment variable, a key file)."""


class EngineError(AigridError):
    """An engine failed. Its text never holds a URL's user and password (an engine's base URL may carry them): the
    log, the audit records, the decisions and the health reasons all read it (userinfo.without_userinfo)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(without_userinfo(a) if isinstance(a, str) else a for a in args))


class EngineUnavailable(EngineError):
    pass


class EngineKeyRefused(EngineUnavailable):
    """The engine refused the gateway's key, or asked for one (HTTP 401, or 403 from a server the operator runs:
    engines/openai_compat.refused_statuses): the operator's to fix, not a passing failure."""


class EngineStreamBroken(EngineError):
    pass


class EngineFailedAfterActing(EngineError):
    """An engine failed in a tool loop after server-side tools had run for the request (they act: SQL, MCP, the
    web): its failure, but no other candidate is tried, since a second run would run them again."""


class EngineBuildError(AigridError):
    pass


class WorkerError(AigridError):
    """A simulation run in a worker process (sim/parallel.py) died, or raised something that could not be sent
    back; the message carries the worker's traceback."""


class SharedStateUnavailable(AigridError):
    """The store gateways share (Redis) cannot be reached: keep serving from the last view, marked stale."""


RETRY_WAIT_MAX_S = 60
"""The longest Retry-After after which an SDK is told to try again by itself: a per-minute window or a shed
request's wait always fit. A longer one (a token budget that resets in hours) is answered with
`x-should-retry: false`: the Anthropic SDK sleeps whatever Retry-After says (hours), the OpenAI SDK gives up
only above 120 s."""

NEVER_RETRIED_CODES = frozenset({"abuse_throttled"})
"""Codes that are never worth an SDK's retry whatever their status: abuse protection's throttle holds while the
key's recent requests (over minutes, the retry itself counted) still look like extraction."""


class ApiError(AigridError):
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None
    retry: bool | None = None
    """Whether the SDKs should send the request again by themselves; None: as the status and Retry-After say
    (should_retry)."""

    field: Field | None = None
    """The field `param` names, as its parts, where the check that raised it gave them (a front door writes it in
    its own form: gateway/front_door.name_own_field); `param` itself is OpenAI's form of them."""

    def __init__(self, message: str, *, param: str | Field | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, retry: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if isinstance(param, tuple):  # the field's parts: kept, and named in OpenAI's form
            self.field = param
            param = field_name(param)
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        if retry is not None:
            self.retry = retry

    def envelope(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def should_retry(self) -> bool:
        """True only where another try can succeed within a wait an SDK call sits through: the SDKs' own rule
        (408, 409, 429, >= 500), unless this error says otherwise (`retry`), its code is never worth it, or its
        Retry-After is longer than RETRY_WAIT_MAX_S."""
        if self.retry is not None:
            return self.retry
        if self.code in NEVER_RETRIED_CODES:
            return False
        wait = retry_after_s(self.headers)
        if wait is not None and wait > RETRY_WAIT_MAX_S:
            return False
        return self.status in (408, 409, 429) or self.status >= 500

    def response_headers(self) -> dict[str, str]:
        """The error's own headers and `x-should-retry`, which both SDKs obey."""
        return {**self.headers, "x-should-retry": "true" if self.should_retry() else "false"}


def retry_after_s(headers: dict[str, str]) -> float | None:
    """Retry-After (seconds) of an error's headers, whatever their case; None when absent or not a number."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


MISSING_PARAMETER = "missing_required_parameter"
"""OpenAI's `code` of an InvalidRequest for a required field left out: the request schema's (gateway/envelope.py),
a batch line's (gateway/batch_input.py) and the tool loop's own checks (agents/loop.py; until review RV4 of the
thirty-seventh session those said `invalid_request`)."""


class RequestTimeout(ApiError):
    """The client did not send its request's head or body within the gateway's deadline (gateway/slow_clients.py)."""
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class RequestHeaderTooLarge(ApiError):
    """A request's head larger than the gateway takes (gateway/slow_clients.MAX_HEAD_BYTES)."""
    status = 431
    type = "invalid_request_error"
    code = "request_header_too_large"


class AuthenticationError(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    """OpenAI's type of its 404s (a file, a batch, a response not found); Anthropic's envelope says
    not_found_error (envelope._ANTHROPIC_TYPES, by status)."""
    code = "not_found"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Overloaded(ApiError):
    """Every eligible endpoint is busy and the request waited as long as its class may, or lower-class work
    made room in a full admission queue: shed, with Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"


class DeadlineUnmeetable(ApiError):
    """The request's deadline (first token within N ms) cannot be met: refused before any engine works on it, or
    once the candidates tried failed and no other is predicted to answer within what is left (proxy.py).
    Not retried by the SDKs: their retry, sent after their back-off with the deadline header again, would be
    served after the deadline the client set."""

    status = 503
    type = "service_unavailable_error"
    code = "deadline_unmeetable"
    retry = False


class NoEligibleEndpoint(ApiError):
    """No site may serve the request now. Retried by the SDKs (a site may be healthy again); the caller passes
    `retry=False` where only hard constraints (residency, model, quality, the tenant's rules) rejected every site."""

    status = 503
    type = "service_unavailable_error"
    code = "no_eligible_endpoint"


class UpstreamFailed(ApiError):
    status = 502
    type = "upstream_error"
    code = "upstream_failed"


class InsufficientStorage(ApiError):
    """The disk the gateway keeps files on would be left with less free space than it must keep (the audit log's,
    the index's, running batches' results): an upload or a message batch is refused before its body is read."""

    status = 503
    type = "service_unavailable_error"
    code = "insufficient_storage"
    retry = False  # space is freed by an operator or by files expiring, not within a wait an SDK sits through


class AuditUnavailable(ApiError):
    """The audit log cannot take a record now (writer stalled or its queue full): the request is refused
    rather than served unaudited."""

    status = 503
    type = "service_unavailable_error"
    code = "audit_unavailable"


class QuotaUnavailable(ApiError):
    """The quota store (a Redis, or the workers' hub) did not answer a reservation in time: the request is refused
    rather than served uncounted (logged; gateway/guard.py). Before, a hung Redis held each request ~5 s and then
    answered a 500."""

    status = 503
    type = "service_unavailable_error"
    code = "quota_unavailable"


class ShuttingDown(ApiError):
    """The gateway is stopping and its grace ran out (or a second Ctrl-C/SIGTERM cut it short) before this request's
    answer began: cut, its quota settled and its record written (`cancelled`), then answered this, never the
    server's plain-text 500 (gateway/stopping.py). Retried by the SDKs: another gateway, or this one started
    again, serves it."""

    status = 503
    type = "service_unavailable_error"
    code = "shutting_down"


class TooManyConnections(ApiError):
    """A client connection past what one gateway process holds (gateway/slow_clients.py: half its file-descriptor
    limit), or past its address's share of that (gateway.connection_share_per_address): answered as it is accepted,
    before a byte of its request is read, and closed. The gateway's own capacity, not the client's rate: 503 with
    Retry-After (as nginx's limit_conn and Envoy's overload manager answer), never the 429 `overloaded` the
    admission queue sheds with. Retried by the SDKs (on a new connection, once others close)."""

    status = 503
    type = "service_unavailable_error"
    code = "too_many_connections"


class StoreUnavailable(ApiError):
    """The store that holds stored Responses, background placeholders or Conversations (a jurisdiction's
    Redis, or the workers' hub) did not answer: the request that needs it is refused, never answered from a
    partial history (gateway/stores.py)."""

    status = 503
    type = "service_unavailable_error"
    code = "store_unavailable"
