"""Write deploy/grafana/aigrid-dashboard.json: the Grafana dashboard of the gateway's /metrics.

Rebuild after changing a panel here: `python scripts/build_grafana_dashboard.py` (the JSON is committed;
tests/deploy/test_grafana_dashboard.py checks that it is this script's output, that every query names metrics
and labels the gateway exports, and that promtool parses every query).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "aigrid-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SITE = 'site=~"$site"'
RATE = "$__rate_interval"
NOT_FAILED = "ok|client_closed|steered|http_400|http_413|http_422|error:context_length_exceeded"
"""aigrid_requests_total's outcomes that are no failure of the site (deploy/prometheus/aigrid-rules.yaml's error ratio
leaves out the same): a client that hung up, an answer the gateway stopped itself, an engine refusing the client's own
request (its prompt past the context, a 400/413/422 of its fields). An engine's 401/403/404/408/429 are the site's."""


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(title: str, description: str, targets: list[tuple[str, str]], *, kind: str = "timeseries",
          unit: str = "short", w: int = 12, h: int = 8, **field: Any) -> dict[str, Any]:
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, **field}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
            "gridPos": {"w": w, "h": h}}


def quantiles(metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.99)) -> list[tuple[str, str]]:
    sel = "{" + selector + "}" if selector else ""
    return [(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{sel}[{RATE}])))",
             f"p{round(q * 100)} {{{{{by}}}}}") for q in qs]


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids in order and positions left to right, top to bottom (a row starts a new line)."""
    x = y = line = 0
    for i, item in enumerate(items, start=1):
        item["id"] = i
        pos = item["gridPos"]
        if item["type"] == "row" or x + pos["w"] > 24:
            x, y = 0, y + line
            line = 0
        pos["x"], pos["y"] = x, y
        x, line = x + pos["w"], max(line, pos["h"])
        if item["type"] == "row":
            x, y, line = 0, y + 1, 0
    return items


def dashboard() -> dict[str, Any]:
    items = [
        row("Traffic"),
        panel("Requests / s", "Answers and failed attempts at the chosen sites per second (aigrid_requests_total "
              "counts each attempt that failed before its first byte, then the answer where it was served).",
              [(f"sum(rate(aigrid_requests_total{{{SITE}}}[{RATE}]))", "requests/s")], kind="stat", unit="reqps",
              w=6, h=4),
        panel("Errors (5 m)", "Share of attempts at the chosen sites that failed (failed before the first byte, "
              "broke mid-stream, an engine's 5xx or 401/403/404/408/429), as the AigridSiteErrors rule counts them: "
              "a client that hung up, an answer the gateway stopped itself (steered) and an engine refusing the "
              "client's own request (error:context_length_exceeded, http_400/413/422) are no failure; a request "
              "served after failing over elsewhere counts its failed attempt here (0, not no data, while nothing "
              "failed).",
              [(f'(sum(rate(aigrid_requests_total{{{SITE},outcome!~"{NOT_FAILED}"}}[5m])) or vector(0)) / '
                f"sum(rate(aigrid_requests_total{{{SITE}}}[5m]))", "errors")], kind="stat", unit="percentunit",
              w=6, h=4),
        panel("TTFT p99 (5 m)", "Time to first byte from the engines, as the gateway saw it.",
              [(f"histogram_quantile(0.99, sum by (le) (rate(aigrid_ttft_seconds_bucket{{{SITE}}}[5m])))", "p99")],
              kind="stat", unit="s", w=6, h=4),
        panel("Healthy endpoints", "Endpoints whose last health check passed, of all the gateway probes.",
              [(f"sum(max by (endpoint) (aigrid_endpoint_healthy{{{SITE}}}))", "healthy"),
               (f"count(max by (endpoint) (aigrid_endpoint_healthy{{{SITE}}}))", "endpoints")],
              kind="stat", w=6, h=4),
        panel("Requests / s by site", "Where the routing core sends traffic.",
              [(f"sum by (site) (rate(aigrid_requests_total{{{SITE}}}[{RATE}]))", "{{site}}")], unit="reqps"),
        panel("Requests / s by outcome", "ok; failed_before_first_byte, broke_mid_stream, http_5xx and "
              "http_401/403/404/408/429 from engines (failures); client_closed, steered, and an engine refusing the "
              "client's own request, error:context_length_exceeded and http_400/413/422 (not failures).",
              [(f"sum by (outcome) (rate(aigrid_requests_total{{{SITE}}}[{RATE}]))", "{{outcome}}")],
              unit="reqps"),
        panel("Refused before routing, by code", "The gateway's own refusals: validation, keys, quotas, "
              "firewall blocks, no eligible endpoint.",
              [(f"sum by (code) (rate(aigrid_requests_rejected_total[{RATE}]))", "{{code}}")], unit="reqps"),
        panel("Tokens / s", "Prompt and completion tokens reported in the engines' usage.",
              [(f"sum by (kind) (rate(aigrid_tokens_total{{{SITE}}}[{RATE}]))", "{{kind}}")]),
        row("Latency"),
        panel("TTFT by site", "Time to first byte from the engine (p50 and p99).",
              quantiles("aigrid_ttft_seconds", "site", SITE), unit="s"),
        panel("TPOT by site", "Time per output token after the first, of streamed answers (p50 and p99).",
              quantiles("aigrid_tpot_seconds", "site", SITE), unit="s"),
        panel("TTFT observed / predicted by endpoint", "Median of observed over predicted TTFT: 1 is a "
              "perfect prediction; the calibration drives it there.",
              quantiles("aigrid_ttft_observed_over_predicted_ratio", "endpoint", qs=(0.5,))),
        panel("Admission wait by class (p99)", "Time requests waited in the gateway's admission queue for "
              "capacity, by urgency class.",
              quantiles("aigrid_admission_wait_seconds", "priority_class", qs=(0.99,)), unit="s"),
        row("Capacity"),
        panel("In flight by endpoint", "Requests this gateway has open to each endpoint.",
              [(f"sum by (endpoint) (aigrid_endpoint_inflight{{{SITE}}})", "{{endpoint}}")]),
        panel("Waiting at the engine by endpoint", "The engines' own queues (their metrics).",
              [(f"max by (endpoint) (aigrid_endpoint_waiting{{{SITE}}})", "{{endpoint}}")]),
        panel("Endpoint health", "1 when the endpoint's last health check passed.",
              [(f"max by (endpoint) (aigrid_endpoint_healthy{{{SITE}}})", "{{endpoint}}")], min=0, max=1),
        panel("Admission queue", "Requests waiting for capacity now, and the queue's outcomes per second "
              "(shed: 429 with Retry-After; late: a deadline refused before any engine work).",
              [("sum(aigrid_admission_waiting)", "waiting"),
               (f"sum by (priority_class, outcome) (rate(aigrid_admission_total[{RATE}]))",
                "{{priority_class}} {{outcome}}/s")]),
        panel("Firewall worker queue", "Requests waiting for the firewall's worker thread to read their texts now "
              "(a prompt past 2,000 characters, documents, tool results), and their wait from queued to read (p99), "
              "per gateway: it comes before routing, in no TTFT figure (AigridFirewallQueueSlow).",
              [("sum by (instance) (aigrid_firewall_queue_waiting)", "waiting {{instance}}"),
               (f"histogram_quantile(0.99, sum by (instance, le) (rate(aigrid_firewall_queue_wait_seconds_bucket"
                f"[{RATE}])))", "wait p99 (s) {{instance}}")]),
        row("Failover"),
        panel("Retries, hedges, continuations", "Attempts moved to the next candidate, second attempts started "
              "for a late first byte, streams continued elsewhere after their engine failed.",
              [(f"sum by (endpoint) (rate(aigrid_retries_total[{RATE}]))", "retry from {{endpoint}}"),
               (f"sum(rate(aigrid_hedges_total[{RATE}]))", "hedges"),
               (f"sum by (site) (rate(aigrid_stream_continuations_total{{{SITE}}}[{RATE}]))",
                "continued from {{site}}")], unit="ops"),
        panel("Circuits by endpoint", "Each endpoint's circuit breaker as of its last health check (0 closed, 1 "
              "half-open, 2 open; the highest any gateway sees), and the times a failure opened it in each 5 minutes: "
              "opening again and again is an endpoint failing its requests while its health checks pass "
              "(AigridEndpointCircuitReopening).",
              [(f"max by (endpoint) (aigrid_endpoint_circuit{{{SITE}}})", "state {{endpoint}}"),
               (f"sum by (endpoint) (increase(aigrid_endpoint_circuit_opens_total{{{SITE}}}[5m]))",
                "opened {{endpoint}} /5m")], min=0),
        panel("Shared state", "Round trip of the exchange with Redis or the workers' hub (p99), and failed "
              "exchanges (the gateway then serves from its last view).",
              [(f"histogram_quantile(0.99, sum by (le) (rate(aigrid_shared_sync_seconds_bucket[{RATE}])))",
                "sync p99 (s)"),
               (f"sum(rate(aigrid_shared_sync_failures_total[{RATE}]))", "failures/s")]),
        row("Audit and quotas"),
        panel("Audit records lost, quota settle failures, charges unreleased, background runs abandoned (1 h)",
              "Each should stay 0; each is also logged and alerted on (deploy/prometheus/aigrid-rules.yaml).",
              [("sum(increase(aigrid_audit_records_lost_total[1h]))", "audit records lost"),
               ("sum(increase(aigrid_quota_settle_failures_total[1h]))", "quota settle failures"),
               ("sum(increase(aigrid_quota_unreleased_total[1h]))", "quota charges unreleased"),
               ("sum(increase(aigrid_background_abandoned_total[1h]))", "background abandoned")], w=24),
        panel("Audit queue filled", "Audit records waiting to be written (a worker of --workers N: posted to its hub, "
              "not yet acknowledged) over the number at which requests are refused 503 audit_unavailable "
              "(security.audit.queue_max), the fullest worker of each gateway: near 100% the audit log's disk is "
              "not keeping up, and the refusals (AigridAuditUnavailable) follow.",
              [("max by (instance) (aigrid_audit_queue_waiting / aigrid_audit_queue_limit)", "{{instance}}")],
              unit="percentunit", min=0, max=1),
    ]
    return {
        "title": "aigrid gateway", "uid": "aigrid-gateway", "tags": ["aigrid", "inference"],
        "description": "The aigrid gateway's /metrics: traffic, latency per site, capacity, failover, audit. "
                       "Built by scripts/build_grafana_dashboard.py.",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "timezone": "utc",
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            {"name": "site", "label": "Site", "type": "query", "datasource": DS,
             "query": {"query": "label_values(aigrid_requests_total, site)", "refId": "site"},
             "definition": "label_values(aigrid_requests_total, site)", "refresh": 2, "includeAll": True,
             "allValue": ".*", "multi": True, "current": {"text": "All", "value": "$__all"}, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": layout(items),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
