"""Prometheus metrics of one gateway, on a registry owned by the app (no global registry).

With several worker processes (`--workers N`) the parent sets PROMETHEUS_MULTIPROC_DIR: every worker's
values go to files there (prometheus-client's multiprocess mode) and /metrics on any worker reports all of
them, counters and histograms summed, gauges as the highest live worker's value, except the requests in
flight at each endpoint, summed over the live workers (each worker writes its own count after every exchange
with the hub, and when it serves /metrics), and the requests waiting in the admission queues, summed too.

A worker that died leaves its counters and histograms (its requests stay counted): retire_worker folds them into
one archive file per kind, where prometheus-client's mark_process_dead left two files per dead worker, every one
read at every scrape (1,000 dead workers: 2,000 files, 197 MB, 1.7 s of the event loop per scrape, against 9 ms;
scripts/metrics_dead_workers.py).

/metrics shows no `<name>_created` series: prometheus-client adds one to every counter's and histogram's label set
in a single process (its creation time; the multiprocess collector has none), which Prometheus's text format reads
as one more series each, and its switch off (disable_created_metrics) is one flag for the whole process.
exposition() drops them instead, for this gateway's registry alone. A family renamed (DEPRECATED_NAMES) is shown
under its old name too for one release (docs/upgrading.md)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from aigrid.audit.log import AuditSink
from aigrid.core.types import Circuit
from aigrid.core.urgency import LEVELS

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""The GenAI semantic conventions' advisory buckets for gen_ai.client.token.usage."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""... and for gen_ai.client.operation.duration (seconds)."""
SYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
"""One exchange with the shared state takes about a Redis round trip: sub-millisecond beside the gateways."""
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20)
QUEUE_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""A wait for the firewall's worker thread: none to a few ms behind small texts, seconds behind a 4 MiB document
(2-4 s of CPU each, docs/security.md "Cost")."""
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
"""The GenAI semantic conventions' advisory buckets for gen_ai.server.time_per_output_token (seconds)."""


CIRCUIT_VALUE = {Circuit.CLOSED: 0, Circuit.HALF_OPEN: 1, Circuit.OPEN: 2}
"""aigrid_endpoint_circuit's value for each state (the highest the worst: the gauge is the highest live worker's)."""

DEPRECATED_NAMES = {"aigrid_ttft_observed_over_predicted_ratio": "aigrid_ttft_observed_over_predicted"}
"""A family's current name -> the old one /metrics still shows beside it (the same samples), for one release."""

REJECTED_CODES = ("rate_limit_exceeded", "overloaded", "batch_limit_exceeded", "deadline_unmeetable",
                  "no_eligible_endpoint", "upstream_failed", "insufficient_storage", "audit_unavailable",
                  "quota_unavailable", "shutting_down", "too_many_connections", "store_unavailable", "internal_error")
"""aigrid_requests_rejected_total's codes shown at 0 from the start: every refusal the grid counts on every route (a
429 or a 5xx of aigrid.errors and gateway/batch_store.py, and routes.INTERNAL's 500), those its alerts count among
them. A client's 4xx codes first appear at their first (no alert counts them)."""
ADMISSION_OUTCOMES = ("waited", "dispatched", "shed", "late")
"""aigrid_admission_total's outcomes (admission.Admission._count), each shown at 0 for every urgency class."""

Written = Callable[..., None]
"""How a method here writes each of its series on its own: `written(what, write, *args)` runs `write(*args)` (the
gateway's one guarded writer, observe.MetricsWrites, Proxy.written: a failure counted and logged, rate-limited, never
the request's). Left out: each write raises as it fails (a caller with its own guard)."""

_RETIRE_LOCK = "retire.lock"
"""In the multiprocess folder: held shared while a scrape reads the files, alone while retire_worker swaps a dead
worker's files for the archive (a scrape between the two would count that worker twice, or not at all: a
counter going down, which Prometheus reads as a reset)."""


@contextlib.contextmanager
def _folder_lock(folder: str, how: int) -> Iterator[None]:
    fd = os.open(os.path.join(folder, _RETIRE_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)  # and its lock


class _Collector(MultiProcessCollector):
    """Every worker's values, read while no dead worker's files are being folded into the archive."""

    def collect(self) -> list[Metric]:
        with _folder_lock(self._path, fcntl.LOCK_SH):
            return list(super().collect())


class _Exposed:
    """What /metrics shows of `source`: no `_created` series, and each renamed family under its old name too."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for metric in self._source.collect():
            created = metric.name + "_created"
            if any(s.name == created for s in metric.samples):
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric
            old = DEPRECATED_NAMES.get(metric.name)
            if old is not None:
                alias = Metric(old, f"Deprecated: renamed {metric.name}. {metric.documentation}", metric.type)
                alias.samples = [s._replace(name=old + s.name[len(metric.name):]) for s in metric.samples]
                yield alias


def retire_worker(pid: int, folder: str | Path) -> None:
    """Worker `pid` is dead: its live gauges go (mark_process_dead) and its counters and histograms are added into
    `counter_archive.db` / `histogram_archive.db` (a dead worker's requests stay counted, in one file whatever the
    number of workers that died), its own files removed."""
    folder = str(folder)
    mark_process_dead(pid, folder)
    with _folder_lock(folder, fcntl.LOCK_EX):
        for kind in ("counter", "histogram"):
            dead = os.path.join(folder, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = os.path.join(folder, f"{kind}_archive.db")
            totals: dict[str, float] = {}
            for path in (archive, dead):
                if os.path.exists(path):
                    for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
                        totals[key] = totals.get(key, 0.0) + value
            written = archive + ".new"  # not *.db: no scrape reads it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(written)
            out = MmapedDict(written)
            try:
                for key, value in totals.items():
                    out.write_value(key, value, 0.0)
            finally:
                out.close()
            os.replace(written, archive)
            os.unlink(dead)


def _memoise_children(metric: Counter | Gauge | Histogram) -> None:
    """`metric.labels(*values)` keeps each label set's child: prometheus-client's own labels() takes a lock
    and str()s every value on each call, ~9 calls per request. A child is never removed here, so the one kept
    is the one labels() would return (keyword calls go to labels() itself)."""
    children: dict[tuple[object, ...], Any] = {}
    make = metric.labels

    def labels(*values: object, **by_name: object) -> Any:
        if by_name:
            return make(*values, **by_name)
        child = children.get(values)
        if child is None:
            child = children[values] = make(*values)
        return child

    metric.labels = labels  # type: ignore[method-assign]


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("aigrid_requests", "Requests by site, endpoint and outcome",
                                ["site", "endpoint", "outcome"], registry=r)
        self.rejected = Counter("aigrid_requests_rejected", "Requests answered with an error before routing "
                                "or with no eligible endpoint", ["code"], registry=r)
        self.retries = Counter("aigrid_retries", "Attempts moved to the next candidate", ["endpoint"], registry=r)
        self.hedges = Counter("aigrid_hedges", "Second attempts started because the first byte was late",
                              registry=r)
        self.hedge_wins = Counter("aigrid_hedge_wins", "Which attempt answered first when hedged", ["winner"],
                                  registry=r)
        self.continuations = Counter("aigrid_stream_continuations", "Streams continued on another endpoint "
                                     "after their engine failed mid-answer", ["site"], registry=r)
        self.ttft = Histogram("aigrid_ttft_seconds", "Time to first byte from the engine, as the gateway saw it",
                              ["site"], buckets=TTFT_BUCKETS, registry=r)
        self.ttft_ratio = Histogram(
            "aigrid_ttft_observed_over_predicted_ratio", "Observed / predicted (p50) time to first token per endpoint: "
            "1 is a perfect prediction; the calibration drives it there", ["endpoint"],
            buckets=(0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.11, 1.25, 1.5, 2.0, 4.0), registry=r)
        self.tpot = Histogram("aigrid_tpot_seconds", "Time per output token after the first of a streamed answer, "
                              "as the gateway relayed it ((end - first byte) / (output tokens - 1))", ["site"],
                              buckets=TPOT_BUCKETS, registry=r)
        self.tokens = Counter("aigrid_tokens", "Tokens reported in usage", ["site", "kind"], registry=r)
        self.healthy = Gauge("aigrid_endpoint_healthy", "1 when the last health check passed",
                             ["site", "endpoint"], registry=r, multiprocess_mode="livemax")
        self.circuit = Gauge(
            "aigrid_endpoint_circuit", "The endpoint's circuit breaker as of its last health check: 0 closed, 1 "
            "half-open, 2 open (open here, or opened by another gateway and cooling down)", ["site", "endpoint"],
            registry=r, multiprocess_mode="livemax")
        self.circuit_opens = Counter(
            "aigrid_endpoint_circuit_opens", "Times a failure opened the endpoint's circuit (consecutive failures "
            "from closed, or the one attempt let through half-open failing again)", ["site", "endpoint"], registry=r)
        self.inflight = Gauge("aigrid_endpoint_inflight", "Requests this gateway has open to the endpoint",
                              ["site", "endpoint"], registry=r, multiprocess_mode="livesum")
        self._inflight_written: dict[str, int] = {}
        self.audit_lost = Counter("aigrid_audit_records_lost", "Audit records the audit log could not queue within "
                                  "its bounded wait after the answer was sent, or of requests that finished after "
                                  "it stopped (each is logged at error level)", registry=r)
        self.quota_unsettled = Counter("aigrid_quota_settle_failures", "Requests whose quota reservation the quota "
                                       "store failed to settle with the real usage (the reservation stands; each "
                                       "is logged, the audit record still written)", registry=r)
        self.quota_unreleased = Counter("aigrid_quota_unreleased", "Quota charges whose answer was lost and whose "
                                        "release the store kept refusing until the charge's op expired (or the "
                                        "gateway stopped): what the store applied stays charged for its window "
                                        "(each logged)", registry=r)
        self.background_abandoned = Counter(
            "aigrid_background_abandoned", "Background responses failed by a reader of this gateway because "
            "their owner's lease ended (its process died): each audited once here, its quota left charged at its "
            "reservation (its usage is unknown)", registry=r)
        # the OpenTelemetry GenAI client metrics, in Prometheus form (dots become underscores)
        genai = ["gen_ai_operation_name", "gen_ai_request_model"]
        self.genai_tokens = Histogram("gen_ai_client_token_usage", "GenAI semconv gen_ai.client.token.usage: "
                                      "tokens per request", [*genai, "gen_ai_token_type"], buckets=TOKEN_BUCKETS,
                                      registry=r)
        self.genai_duration = Histogram("gen_ai_client_operation_duration_seconds", "GenAI semconv "
                                        "gen_ai.client.operation.duration: whole request, seconds",
                                        [*genai, "error_type"], buckets=DURATION_BUCKETS, registry=r)
        self.genai_ttft = Histogram("gen_ai_server_time_to_first_token_seconds", "GenAI semconv "
                                    "gen_ai.server.time_to_first_token: first token of a streamed answer relayed from "
                                    "the engine (not a whole answer's, nor a tool loop's), seconds",
                                    genai, buckets=TTFT_BUCKETS, registry=r)
        self.genai_tpot = Histogram("gen_ai_server_time_per_output_token_seconds", "GenAI semconv "
                                    "gen_ai.server.time_per_output_token: after the first token of a streamed "
                                    "answer, seconds per token", genai, buckets=TPOT_BUCKETS, registry=r)
        self.queue = Gauge("aigrid_endpoint_waiting", "Requests waiting at the engine (engine metrics)",
                           ["site", "endpoint"], registry=r, multiprocess_mode="livemax")
        self.admission = Counter("aigrid_admission", "Admission queue outcomes by urgency class: waited, "
                                 "dispatched, shed (429), late (deadline refused before any engine work)",
                                 ["priority_class", "outcome"], registry=r)
        self.admission_waiting = Gauge("aigrid_admission_waiting", "Requests waiting in this gateway's "
                                       "admission queue for capacity", registry=r,
                                       multiprocess_mode="livesum")
        self.responses_sockets = Gauge(
            "aigrid_responses_sockets", "WebSocket /v1/responses connections open (gateway.max_sockets bounds a "
            "process's): inc() when one is accepted, dec() when it closes", registry=r, multiprocess_mode="livesum")
        self.admission_wait = Histogram("aigrid_admission_wait_seconds", "Time requests waited in the admission "
                                        "queue", ["priority_class"], buckets=DURATION_BUCKETS, registry=r)
        self.firewall_waiting = Gauge(
            "aigrid_firewall_queue_waiting", "Requests waiting for the firewall's worker thread to read their texts "
            "(not the one it reads; security/firewall/screen.py)", registry=r, multiprocess_mode="livesum")
        self.firewall_wait = Histogram(
            "aigrid_firewall_queue_wait_seconds", "Time a request's texts waited for the firewall's worker thread, "
            "from queued to its read starting; before routing, so in no TTFT figure (texts read in place wait "
            "none and are not observed)", buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.audit_waiting = Gauge(
            "aigrid_audit_queue_waiting", "Audit records waiting to be written (a worker of --workers N: posted to its "
            "hub and not yet acknowledged); at aigrid_audit_queue_limit requests are refused 503 audit_unavailable",
            registry=r, multiprocess_mode="livemax")
        self.audit_limit = Gauge(
            "aigrid_audit_queue_limit", "The audit records waiting at which requests are refused 503 audit_unavailable "
            "(security.audit.queue_max; a worker: the records it may leave unacknowledged by its hub)", registry=r,
            multiprocess_mode="livemax")
        self._audit_written: list[int | None] = [None, None]  # (waiting, limit) as last written
        self.shared_sync = Histogram("aigrid_shared_sync_seconds", "Round trip of one exchange of the in-flight "
                                     "ledger, circuits, affinity and calibration outcomes with the shared state "
                                     "(Redis, or the workers' hub)", buckets=SYNC_BUCKETS, registry=r)
        self.shared_sync_failures = Counter("aigrid_shared_sync_failures", "Exchanges with the shared state that "
                                            "failed: the gateway serves from its last view, marked stale",
                                            registry=r)
        for metric in vars(self).values():
            if isinstance(metric, Counter | Gauge | Histogram) and metric._labelnames:
                _memoise_children(metric)

    def start_at_zero(self) -> None:
        """Show at 0, from the start, the fixed sets of series that an alert rule (deploy/prometheus/aigrid-rules.yaml)
        fires on from a few counts: aigrid_requests_rejected_total for each of REJECTED_CODES (one 503 quota_unavailable,
        audit_unavailable or store_unavailable pages) and aigrid_admission_total for each urgency class and
        ADMISSION_OUTCOMES (AigridLoadShedding). A labelled series has no sample until its first inc(): it appeared at
        1, and increase() over it, with no sample before, read 0, so a gateway's first count of each after its start
        was lost: where one count pages it never did, elsewhere it was seen one count later. Nothing per endpoint or
        site here: aigrid_requests_total's outcomes and the TTFT/TPOT histograms are read only by ratios and
        quantiles gated by at least 20 attempts in the window, where one count missed changes no alert, and creating
        them for every endpoint and site grew /metrics with the grid (8 series an endpoint, 34 a site: 25,067 series
        at 1,000 endpoints). aigrid_endpoint_circuit_opens_total's (one an endpoint, one open pages) are created by
        count_circuits. With workers each creates them at 0 in its own file: summed, 0 adds nothing (a dead worker's
        zeros fold into the archive as its counts do). Gauges are left out: 0 would say an endpoint is down
        (aigrid_endpoint_healthy) before its first check."""
        for code in REJECTED_CODES:
            self.rejected.labels(code)
        for level in LEVELS:
            for outcome in ADMISSION_OUTCOMES:
                self.admission.labels(level, outcome)

    def set_inflight(self, endpoints: Iterable[tuple[str, str]], inflight: Callable[[str], int],
                     written: Written | None = None, what: str = "the requests in flight") -> None:
        """Write this process's requests open at each (site, endpoint), only where the count changed. With
        workers the gauge is summed over them, so each must keep its own current, not only the one that serves
        /metrics: before, /metrics showed the highest worker's count as of its last scrape (9 of 16 streams).
        Each endpoint's through `written`, its count kept as written once it was (until the thirty-first session
        it was kept before the write: one that failed was not tried again until the count moved, and the first
        failing skipped the endpoints after it)."""
        write = written or _direct
        for site, endpoint in endpoints:
            n = inflight(endpoint)
            if self._inflight_written.get(endpoint) != n:
                write(what, self._inflight_set, site, endpoint, n)

    def _inflight_set(self, site: str, endpoint: str, n: int) -> None:
        self.inflight.labels(site, endpoint).set(n)
        self._inflight_written[endpoint] = n  # once written: a write that raised is tried again

    def count_circuits(self, site_of: Mapping[str, str],
                       written: Callable[[str, Callable[[], None]], None]) -> Callable[[str], None]:
        """TelemetryStore.on_circuit_open for these endpoints (id -> site): each one's count shown from 0 at once (a
        counter's first sample at 1 is no increase() in Prometheus: a first opening would not be seen). Each opening
        is written through `written` (Proxy.written, observe.MetricsWrites: a failed write counted and logged,
        rate-limited, never the request's)."""
        for endpoint, site in site_of.items():
            self.circuit_opens.labels(site, endpoint)
        return lambda endpoint: self.circuit_opened(site_of[endpoint], endpoint, written)

    def circuit_opened(self, site: str, endpoint: str,
                       written: Callable[[str, Callable[[], None]], None] | None = None) -> None:
        """A failure opened `endpoint`'s circuit (TelemetryStore.on_circuit_open): counted, and the gauge open at once
        (the scraper writes it again at each health check). Each through count_circuits' `written`, on its own: a
        metrics file that cannot grow is logged there, rate-limited (the failure being recorded is the request's, not
        the metrics'); until the thirty-first session the count failing skipped the gauge."""
        write = written or _direct
        what = f"the circuit of {endpoint} opening"
        write(what, lambda: self.circuit_opens.labels(site, endpoint).inc())
        write(what, lambda: self.circuit.labels(site, endpoint).set(CIRCUIT_VALUE[Circuit.OPEN]))

    def set_audit_backlog(self, sink: AuditSink | None, written: Written | None = None,
                          what: str = "the audit log") -> None:
        """Write the audit log's backlog (AuditSink.backlog), only where it changed; none (no audit log, or not
        started yet): left as it is. Each gauge through `written` on its own, its value kept as written once it was:
        until the thirty-first session the backlog was kept before the writes, so one that failed was not tried
        again until the backlog moved (a gauge stale for as long as the queue stood still), and
        aigrid_audit_queue_waiting failing skipped aigrid_audit_queue_limit."""
        backlog = None if sink is None else sink.backlog()
        if backlog is None:
            return
        write = written or _direct
        for i, value in enumerate(backlog):
            if self._audit_written[i] != value:
                write(what, self._backlog_set, i, value)

    def _backlog_set(self, i: int, value: int) -> None:
        (self.audit_waiting, self.audit_limit)[i].set(value)
        self._audit_written[i] = value  # once written: a write that raised is tried again at the next close

    def readable(self) -> CollectorRegistry:
        """The registry to read values from: this one, or every worker's values in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            _Collector(merged)
            return merged
        return self.registry

    def exposition(self) -> bytes:
        """The /metrics text (every worker's in multiprocess mode), without `_created` series."""
        return generate_latest(_Exposed(self.readable()))

    def genai(self, operation: str, model: str, duration_s: float, ttft_s: float | None,
              usage: Mapping[str, Any] | None, error_type: str = "", site: str | None = None, *,
              written: Written | None = None, what: str = "") -> None:
        """One finished request in the GenAI metrics, and its time per output token by `site` (a streamed
        answer that succeeded with at least two output tokens: its first-token time is `ttft_s`). Each series
        through `written` (`what`: the request's route), on its own: until the thirty-first session they were one
        guarded call (observe.observe), the first failing skipping the request's others."""
        write = written or _direct
        write(what, observe_child, self.genai_duration, duration_s, operation, model, error_type)
        if ttft_s is not None:
            write(what, observe_child, self.genai_ttft, ttft_s, operation, model)
        if usage:
            for kind, key in (("input", "prompt_tokens"), ("output", "completion_tokens")):
                if isinstance(usage.get(key), int):
                    write(what, observe_child, self.genai_tokens, usage[key], operation, model, kind)
        out = usage.get("completion_tokens") if usage else None
        if ttft_s is not None and not error_type and isinstance(out, int) and out >= 2 and duration_s > ttft_s:
            tpot = (duration_s - ttft_s) / (out - 1)
            write(what, observe_child, self.genai_tpot, tpot, operation, model)
            if site is not None:
                write(what, observe_child, self.tpot, tpot, site)


def _direct(what: str, write: Callable[..., None], *args: Any) -> None:
    """A Written for a caller with its own guard: `write(*args)`, raising as it fails."""
    write(*args)


def observe_child(metric: Histogram, value: float, *labels: str) -> None:
    """`value` in `metric`'s child of `labels`, as one Written write (its labels() inside the guard: a multiprocess
    child opens its file)."""
    metric.labels(*labels).observe(value)


def add_child(metric: Counter, amount: float, *labels: str) -> None:
    """`amount` more in `metric`'s child of `labels`, as one Written write (as observe_child)."""
    metric.labels(*labels).inc(amount)
