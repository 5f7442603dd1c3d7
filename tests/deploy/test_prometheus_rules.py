"""deploy/prometheus: the alerting and recording rules name metrics and labels the gateway really exports,
and promtool (Prometheus's own checker, fetched by scripts/fetch_promtool.sh) accepts them and passes their
unit tests (aigrid-rules.test.yaml: synthetic series that must fire, and must not fire, each alert)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from aigrid.core.urgency import LEVELS
from aigrid.gateway.app import build_gateway
from aigrid.gateway.metrics import GatewayMetrics
from tests.gateway.conftest import spec_in
from tests.gateway.fake_engine import FakeEngine
from tests.test_docs_match import _anchors

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "aigrid-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "aigrid-rules.test.yaml"
NAME = re.compile(r"(?<![\w:])((?:aigrid|gen_ai)_[a-z0-9_]+)(?![\w:])(\{[^}]*\})?")  # not a recorded rule's name
BY = re.compile(r"\bby\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GATEWAY_JOB = "aigrid-gateway"  # the gateways' scrape job, as docs/deploy.md ("Gateway keys") names it
UP = re.compile(r'\bup\{job="([^"]*)"\}')  # Prometheus's own series per scrape target
# labels a `by (...)` may name beside the series' own: a histogram bucket's le, and the target labels (instance,
# job) Prometheus puts on every series it scrapes. The rules' and the dashboard's tests both read this one set
TARGET_LABELS = frozenset({"le", "instance", "job"})


def exported() -> dict[str, tuple[str, set[str]]]:
    """Every series name /metrics can show -> (its family, its labels)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for metric in vars(GatewayMetrics()).values():
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        family, labels = metric._name, set(metric._labelnames)
        if isinstance(metric, Counter):
            out[family + "_total"] = (family, labels)
        elif isinstance(metric, Histogram):
            out[family + "_bucket"] = (family, labels | {"le"})
            out[family + "_sum"] = out[family + "_count"] = (family, labels)
        else:
            out[family] = (family, labels)
    return out


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_every_metric_and_label_a_rule_names_is_exported() -> None:
    series = exported()
    for rule in rules():
        expr = rule["expr"]
        names = NAME.findall(expr)
        assert names or re.search(r"\b\w+:\w+:\w+\b", expr) or UP.search(expr), f"{rule}: names no metric"
        assert set(UP.findall(expr)) <= {GATEWAY_JOB}, f"{rule}: up of a job the docs do not name"
        labels_used: set[str] = set()
        for name, matchers in names:
            assert name in series, f"{rule.get('alert') or rule.get('record')}: {name} is not exported " \
                                   f"(known: {sorted(series)})"
            used = set(MATCHER.findall(matchers))
            assert used <= series[name][1], f"{name}: no label {used - series[name][1]}"
            labels_used |= series[name][1]
        for group in BY.findall(expr):
            by = {label.strip() for label in group.split(",") if label.strip()}
            assert not names or by <= labels_used | TARGET_LABELS, \
                f"{rule}: by {by} names a label no metric here has"


def promtool() -> str:
    found = shutil.which("promtool") or str(Path.home() / ".cache" / "aigrid" / "promtool" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.skip("no promtool: run scripts/fetch_promtool.sh (make test does)")
    return found


def unit_tests() -> list[dict]:
    return yaml.safe_load(RULE_TESTS.read_text())["tests"]


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    """aigrid-rules.test.yaml had cases for the newer alerts only: AigridLoadShedding, AigridSharedStateFailing,
    AigridQuotaSettleFailures and AigridQuotaChargesUnreleased were never run on a series by promtool, so a wrong
    matcher, window or `for` in them would have passed every check. Each alert needs an evaluation that expects it
    firing and one that expects it quiet (exp_alerts: [])."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts - firing == set(), f"no case fires {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"no case keeps {sorted(alerts - quiet)} quiet"


@pytest.mark.parametrize("command", [["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]])
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(command: list[str]) -> None:
    run = subprocess.run([promtool(), *command], cwd=RULES.parent, capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout, run.stdout


def not_failed_outcomes(expr: str) -> set[str]:
    """The outcomes of aigrid_requests_total that `expr`'s failure count leaves out (its `outcome!=` / `!~` matcher)."""
    (values,) = re.findall(r'aigrid_requests_total\{[^}]*outcome\s*!(?:=|~)\s*"([^"]*)"', expr)
    return set(values.split("|"))


def test_a_site_s_error_ratio_counts_failures_not_clients_that_hung_up() -> None:
    """aigrid_requests_total's outcomes (proxy.Proxy.finish): ok, failed_before_first_byte, broke_mid_stream, http_NNN
    (the engine's status), client_closed (the client hung up, or the gateway's stop cut it) and steered (an answer
    the gateway stopped itself, relay_response.STEERED). The error ratio counted every outcome but ok, so a site whose
    clients cancel their streams (agents often do) fired AigridSiteErrors with nothing wrong at the site. Nor is an
    engine refusing the client's own request the site's failure: a prompt past its context (booked as the gateway's
    own error:context_length_exceeded since the twenty-ninth session, http_400 before) or a 400/413/422 of the
    client's fields paged the site's on-call for a client's mistake. An engine's 401/403 (the grid's key), 404 (a
    model not loaded), 408 and 429 (its capacity) stay the site's."""
    from aigrid.gateway.engine_errors import CONTEXT_CODE
    from aigrid.gateway.relay_response import STEERED
    (rule,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:error_ratio_5m"]
    left_out = not_failed_outcomes(rule["expr"])
    assert left_out == {"ok", "client_closed", STEERED, f"error:{CONTEXT_CODE}", "http_400", "http_413",
                        "http_422"}, left_out


def test_what_the_error_ratio_leaves_out_as_the_clients_mistake_is_alerted_on_by_its_own_share() -> None:
    """Leaving an engine's 400/413/422 and its context refusal out of the error ratio (29fd1335) also hid a gateway
    bug that has every engine answer 400 (a field the engines refuse): no alert fired. Their share has its own
    recording rule and a warning, over exactly the outcomes the error ratio leaves out beside ok, client_closed and
    steered (aigrid-rules.test.yaml: site syd, every attempt a 400, fires it and not AigridSiteErrors)."""
    from aigrid.gateway.relay_response import STEERED
    (errors,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:error_ratio_5m"]
    (share,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:client_refused_ratio_5m"]
    (counted,) = set(re.findall(r'aigrid_requests_total\{[^}]*outcome\s*=~\s*"([^"]*)"', share["expr"]))
    assert set(counted.split("|")) == not_failed_outcomes(errors["expr"]) - {"ok", "client_closed", STEERED}
    (alert,) = [r for r in rules() if r.get("alert") == "AigridSiteClientRefusalsHigh"]
    assert alert["expr"].startswith("site:aigrid_requests:client_refused_ratio_5m >"), alert["expr"]
    assert alert["labels"]["severity"] == "warning", alert


FLOORED = re.compile(r"(site:(\w+):\w+?_(?:5m|1h)) > [\d.]+\s+and on \(site\) sum by \(site\) "
                     r"\(increase\((\w+)\[(?:5m|1h)\]\)\) >= (\d+)\s*")


def test_every_alert_on_a_site_s_share_or_quantile_has_a_traffic_floor() -> None:
    """A share or a p99 of a handful of requests is noise: AigridSiteErrors (and the client refusals' share, and the
    p99 TTFT and TPOT) had no floor, so at a quiet site at night one failed attempt of six (17%), or five slow answers
    in a row, paged on-call (aigrid-rules.test.yaml: sites lax, bom and jnb fired them). Each now needs at least as
    many attempts (first tokens, streamed answers: what its share or quantile is of) at the site in its 5 minutes,
    the one floor the docs name; 50 failed of 500 still fires (site ams)."""
    on_site = [r for r in rules() if "alert" in r and "site:" in r["expr"]]
    assert {r["alert"] for r in on_site} == {"AigridSiteTTFTHigh", "AigridSiteTPOTHigh", "AigridSiteErrors",
                                             "AigridSiteClientRefusalsHigh", "AigridSiteErrorsSustained"}, on_site
    floors = set()
    for rule in on_site:
        match = FLOORED.fullmatch(rule["expr"])
        assert match, f"{rule['alert']}: no traffic floor in {rule['expr']!r}"
        record, family, counted, floor = match.groups()
        # the floor counts over the share's own window
        assert record.endswith("_" + re.findall(r"\[(\w+)\]", rule["expr"])[-1]), rule
        # what the share is of (every attempt) or what the quantile's histogram observed (its _count)
        assert counted == (family + "_total" if family == "aigrid_requests" else family + "_count"), rule
        floors.add(int(floor))
    (floor,) = floors
    assert 1 / floor <= 0.05, "one failure alone must not pass AigridSiteErrors' 5% at the floor"
    assert f"at least {floor} attempts" in (ROOT / "docs" / "observability.md").read_text()


def test_a_site_failing_often_but_never_three_in_a_row_at_low_traffic_is_alerted_on_over_the_hour() -> None:
    """A site failing 2 of every 3 attempts, alternately, at 3 attempts a minute opened no circuit (3 consecutive
    failures open it) and stayed under the 5-minute floor of 20: nothing paged. The hour's share counts exactly what
    the 5-minute share counts (its window aside), with the same floor, and a quarter failing, which one or two failed
    blips at the floor do not pass (aigrid-rules.test.yaml: hkg fires it, cpt at 6% and hel at 2 attempts do not)."""
    (five,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:error_ratio_5m"]
    (hour,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:error_ratio_1h"]
    assert hour["expr"] == five["expr"].replace("[5m]", "[1h]"), hour["expr"]
    (alert,) = [r for r in rules() if r.get("alert") == "AigridSiteErrorsSustained"]
    match = FLOORED.fullmatch(alert["expr"])
    assert match and match.group(1) == "site:aigrid_requests:error_ratio_1h", alert["expr"]
    threshold = float(re.findall(r"> ([\d.]+)", alert["expr"])[0])
    assert 2 / int(match.group(4)) <= threshold < 2 / 3, "two failures at the floor pass it, or 2 of 3 do not"


def test_the_firewall_worker_s_wait_is_alerted_on_per_gateway_with_a_traffic_floor() -> None:
    """A request's wait for the firewall's worker thread (screen.py) comes before routing, outside aigrid_ttft_seconds:
    nothing exported it, so a gateway whose worker was backlogged was seen by no rule. Its p99 per gateway (each has
    its own worker) is alerted on with the site alerts' floor of requests read there in the 5 minutes
    (aigrid-rules.test.yaml: a backlogged gw-0 fires, gw-1 quiet, a quiet gateway of 10 slow reads quiet and firing
    with the floor removed)."""
    (record,) = [r for r in rules() if r.get("record") == "instance:aigrid_firewall_queue_wait_seconds:p99_5m"]
    assert record["expr"] == ("histogram_quantile(0.99, sum by (instance, le) "
                              "(rate(aigrid_firewall_queue_wait_seconds_bucket[5m])))"), record
    (alert,) = [r for r in rules() if r.get("alert") == "AigridFirewallQueueSlow"]
    match = re.fullmatch(r"instance:aigrid_firewall_queue_wait_seconds:p99_5m > ([\d.]+)\s+and on \(instance\) "
                         r"sum by \(instance\) \(increase\(aigrid_firewall_queue_wait_seconds_count\[5m\]\)\) "
                         r">= (\d+)\s*", alert["expr"])
    assert match, alert["expr"]
    (site_floor,) = {int(m.group(4)) for r in rules() if "alert" in r and (m := FLOORED.fullmatch(r["expr"]))}
    assert int(match.group(2)) == site_floor and float(match.group(1)) == 1.0


def test_one_gateway_whose_scrape_fails_is_alerted_on_the_job_the_docs_name() -> None:
    """AigridGatewayMetricsAbsent is absent(): it fires only when no gateway at all is scraped, so one replica whose
    scrape is refused (a 401) left the alerts half blind with nothing said. A rule on `up` of the gateways' job does;
    its job name must be the one docs/deploy.md tells operators to give the scrape job, or it never matches."""
    on_up = [r for r in rules() if UP.search(r["expr"])]
    assert [r.get("alert") for r in on_up] == ["AigridGatewayScrapeFailing"], on_up
    assert re.search(rf"\bup\{{job=\"{GATEWAY_JOB}\"\}}\s*==\s*0\b", on_up[0]["expr"]), on_up[0]["expr"]
    assert f"job_name: {GATEWAY_JOB}" in (ROOT / "docs" / "deploy.md").read_text()


def test_refusals_for_a_quota_store_that_does_not_answer_are_alerted() -> None:
    """A quota store that refuses or hangs makes every charge a 503 quota_unavailable (guard.Guard._reserve), counted in
    aigrid_requests_rejected_total{code=...}: no rule read it, so a Redis full under noeviction refused every request
    unalerted. The code the rule names must be the error's own."""
    from aigrid.errors import QuotaUnavailable
    (rule,) = [r for r in rules() if r.get("alert") == "AigridQuotaUnavailable"]
    assert f'aigrid_requests_rejected_total{{code="{QuotaUnavailable.code}"}}' in rule["expr"], rule["expr"]


def test_refusals_for_an_audit_log_that_cannot_take_records_are_alerted() -> None:
    """An audit log that cannot take records (its writer stalled on a full or read-only disk, its queue full) refuses
    every request 503 audit_unavailable before serving it (guard.Guard._audit_accepting), counted in
    aigrid_requests_rejected_total{code=...}: no rule read it (AigridAuditRecordsLost counts records lost after an
    answer, none here), so a full audit disk stopped the grid unalerted. Critical, as the quota store's; the code the
    rule names must be the error's own."""
    from aigrid.errors import AuditUnavailable
    (rule,) = [r for r in rules() if r.get("alert") == "AigridAuditUnavailable"]
    assert f'aigrid_requests_rejected_total{{code="{AuditUnavailable.code}"}}' in rule["expr"], rule["expr"]
    assert rule["labels"]["severity"] == "critical", rule


def test_follow_ups_refused_for_a_response_store_that_does_not_answer_are_alerted() -> None:
    """A store of stored Responses and Conversations (gateway.stores) that does not answer refuses every create that
    needs its history 503 store_unavailable (stores_redis: logged once an outage), counted in
    aigrid_requests_rejected_total{code=...} (measured: a wrong Redis password, a conversation and a
    previous_response_id follow-up counted 2, a create without history answered 200 and not stored, a GET refused and
    not counted); no rule read it. The code the rule names must be the error's own."""
    from aigrid.errors import StoreUnavailable
    (rule,) = [r for r in rules() if r.get("alert") == "AigridResponseStoreUnavailable"]
    assert f'aigrid_requests_rejected_total{{code="{StoreUnavailable.code}"}}' in rule["expr"], rule["expr"]


DEADLINE_FLOORED = re.compile(r"aigrid_requests:deadline_unmeetable_ratio_5m > ([\d.]+)\s+and on \(\) \((.*)\) >= (\d+)\s*",
                              re.S)


def test_requests_refused_for_their_deadline_are_alerted_on_with_a_traffic_floor() -> None:
    """The admission queue's 503 deadline_unmeetable (no endpoint predicted to answer within the client's deadline,
    refused before any engine works on it; or after failed attempts left too little of it, proxy.py) had no alert:
    AigridLoadShedding reads the queue's 429s alone, and a grid whose predictions say every engine is too slow sheds
    nothing. Their share is alerted on now, with the site alerts' floor (aigrid-rules.test.yaml: a busy grid refusing
    9% fires, a quiet one refusing a third of 15 does not, a grid that refused everything and sent nothing does). The
    code the rules name must be the error's own, counted once a request in aigrid_requests_rejected_total."""
    from aigrid.errors import DeadlineUnmeetable
    refused = f'aigrid_requests_rejected_total{{code="{DeadlineUnmeetable.code}"}}'
    (share,) = [r for r in rules() if r.get("record") == "aigrid_requests:deadline_unmeetable_ratio_5m"]
    assert share["expr"].count(refused) == 2 and "aigrid_requests_total" in share["expr"], share["expr"]
    (alert,) = [r for r in rules() if r.get("alert") == "AigridDeadlinesMissed"]
    match = DEADLINE_FLOORED.fullmatch(alert["expr"])
    assert match, f"no traffic floor in {alert['expr']!r}"
    threshold, counted, floor = match.groups()
    assert refused in counted and "increase(aigrid_requests_total[5m])" in counted, counted
    assert 1 / int(floor) <= float(threshold), "one refusal alone must not pass the share at the floor"
    assert alert["labels"]["severity"] == "warning", alert


GRID_FLOORED = re.compile(r"(aigrid_requests:\w+_ratio_5m) > ([\d.]+)\s+and on \(\) \((.*)\) >= (\d+)\s*", re.S)
REFUSED = re.compile(r"aigrid_requests_rejected_total\{[^}]*\}")


def test_requests_the_grid_routed_nowhere_or_failed_everywhere_are_alerted_on_with_a_traffic_floor() -> None:
    """A 503 no_eligible_endpoint (every endpoint that may serve the request unhealthy or its circuit open: no
    attempt made, so no site's error share saw it) and a 502 upstream_failed (every candidate tried failed, while each
    site's share may stay under 5%) are what clients get when the grid took their request and served it nowhere, and
    no rule read them. Their share has its own alert now, over exactly those codes (the errors' own); each alert on a
    grid-wide share has a floor over what its share counts (aigrid-rules.test.yaml: a busy grid with a model down
    fires, a quiet grid does not, a grid with every endpoint down and no attempt does)."""
    from aigrid.errors import NoEligibleEndpoint, UpstreamFailed
    (share,) = [r for r in rules() if r.get("record") == "aigrid_requests:unserved_ratio_5m"]
    (codes,) = set(re.findall(r'aigrid_requests_rejected_total\{code=~"([^"]*)"\}', share["expr"]))
    assert set(codes.split("|")) == {NoEligibleEndpoint.code, UpstreamFailed.code}, codes
    on_grid = [r for r in rules() if "alert" in r and r["expr"].startswith("aigrid_requests:")]
    assert {r["alert"] for r in on_grid} == {"AigridDeadlinesMissed", "AigridRequestsUnserved"}, on_grid
    for alert in on_grid:
        match = GRID_FLOORED.fullmatch(alert["expr"])
        assert match, f"{alert['alert']}: no traffic floor in {alert['expr']!r}"
        record, threshold, counted, floor = match.groups()
        (recorded,) = [r for r in rules() if r.get("record") == record]
        # the floor counts what the share is of: the same refusals, and the attempts
        assert set(REFUSED.findall(counted)) == set(REFUSED.findall(recorded["expr"])), alert
        assert "increase(aigrid_requests_total[5m])" in counted, alert
        assert 1 / int(floor) <= float(threshold), f"{alert['alert']}: one refusal alone passes the share"


def test_every_alert_has_a_runbook_url_naming_a_section_of_the_docs_that_exists() -> None:
    """Each alert's `runbook_url` is a docs page of this repository and one of its headings (GitHub's anchor), the
    section that says what the alert means, what to check first and the fix; and the runbook has no section of an
    alert that is no more."""
    alerts = [rule for rule in rules() if "alert" in rule]
    runbook = ROOT / "docs" / "observability.md"
    for rule in alerts:
        url = rule.get("annotations", {}).get("runbook_url")
        assert url, f"{rule['alert']}: no runbook_url"
        page, _, anchor = url.partition("#")
        assert (ROOT / page).is_file() and anchor, f"{rule['alert']}: {url} names no page of the docs and anchor"
        assert anchor in _anchors(ROOT / page), f"{rule['alert']}: {page} has no heading #{anchor}"
        # its own section (### <alert name>), not another alert's: a copied line passed the checks above
        assert (page, anchor) == ("docs/observability.md", rule["alert"].lower()), f"{rule['alert']}: {url}"
    text = runbook.read_text()
    section = text[text.index("## Runbook"):]
    section = section[:section.index("\n## ", 1)]
    assert set(re.findall(r"^### (\w+)$", section, re.M)) == {rule["alert"] for rule in alerts}
    # and each says what the alert means, what to look at first and what to do
    for part in re.split(r"^### ", section, flags=re.M)[1:]:
        name = part.partition("\n")[0]
        for head in ("**Means**: ", "**First checks**: ", "**Fix**: "):
            assert re.search(rf"^{re.escape(head)}\S", part, re.M), f"{name}: no {head.strip()} in its section"


VALUE_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


FLOOR = re.compile(r"\band on \([^)]*\)\s*\(?\s*sum\b.*\bincrease\(.*\)\s*>=\s*(\d+)\s*$", re.S)
"""An alert's traffic floor: `... and on (site) sum by (site) (increase(X[5m])) >= 20`."""


def floored() -> dict[str, int]:
    """Each alert gated by a traffic floor, and each recording rule read only by such alerts -> the floor."""
    out = {}
    for rule in rules():
        if "alert" in rule and (floor := FLOOR.search(rule["expr"].strip())):
            out[rule["alert"]] = int(floor.group(1))
    alerts = [rule for rule in rules() if "alert" in rule]
    for rule in rules():
        if "record" in rule:
            readers = [a for a in alerts if re.search(rf"(?<![\w:]){re.escape(rule['record'])}(?![\w:])", a["expr"])]
            if readers and all(a["alert"] in out for a in readers):
                out[rule["record"]] = min(out[a["alert"]] for a in readers)
    return out


def test_every_counter_a_rule_reads_is_unlabelled_or_shown_at_0_from_the_start(tmp_path: Path) -> None:
    """A labelled counter's series has no sample until its first inc(): one that appears at 1 has no earlier sample,
    so increase() and rate() over it read 0, and a gateway's first count of it after its start is lost (one 503
    quota_unavailable never fired AigridQuotaUnavailable). Each labelled counter (a histogram's buckets and count
    too) a rule reads must be shown at 0 by a fresh gateway (GatewayMetrics.start_at_zero, count_circuits) for every
    label value known at its start: each of the spec's sites and endpoints, each urgency class, each value a rule's
    matcher selects (code="quota_unavailable", outcome=~"http_400|..."), and at least one value a negative matcher
    keeps. Gauges are not counted with increase() (and 0 would say an endpoint is down before its first check).
    Exempt: a rule gated by a traffic floor of at least 20 attempts in its window (the site shares and quantiles,
    AigridDeadlinesMissed, AigridRequestsUnserved) and the recording rules only those read. Each is a share or a
    quantile over at least 20 counts: the first count of a series missed after a restart (once per series) moves it
    by one count of 20 or more, where one count alone never pages (1 of 20 is 5%, not over AigridSiteErrors' 5%), so no
    alert turns on it; and creating those series (aigrid_requests_total per endpoint x outcome, the TTFT/TPOT
    histograms per site) grew /metrics with the grid: 25,067 series at 1,000 endpoints, 220,067 at 8,800 (review
    RV2), for nothing."""
    spec = spec_in(tmp_path)
    gw = build_gateway(spec, {e.id: FakeEngine(e.id) for e in spec.endpoints})
    shown: dict[str, list[dict[str, str]]] = {}
    for line in gw.metrics.exposition().decode().splitlines():
        head, _, value = line.rpartition(" ")
        if line.startswith("#") or "{" not in head or float(value) != 0:
            continue
        name, _, labels = head.partition("{")
        shown.setdefault(name, []).append({k: v for k, _, v in VALUE_MATCHER.findall(labels)})
    known = {"site": {e.site for e in spec.endpoints}, "endpoint": {e.id for e in spec.endpoints},
             "priority_class": set(LEVELS)}
    kinds = {m._name: m for m in vars(gw.metrics).values() if isinstance(m, Counter | Gauge | Histogram)}
    series = exported()
    exempt = floored()
    assert min(exempt.values()) >= 20, exempt
    checked, skipped = set(), set()
    for rule in rules():
        for name, matchers in NAME.findall(rule["expr"]):
            family, labels = series[name]
            labels = labels - {"le"}
            if isinstance(kinds[family], Gauge) or not labels:
                continue  # a gauge, or an unlabelled counter: shown at 0 from the start by prometheus-client
            if (rule.get("alert") or rule.get("record")) in exempt:
                skipped.add(name)
                continue
            where = f"{rule.get('alert') or rule.get('record')}: {name}{matchers}"
            at_zero = shown.get(name, [])
            for label in labels & known.keys():
                missing = known[label] - {s.get(label) for s in at_zero}
                assert not missing, f"{where}: no series at 0 for {label} {sorted(missing)}"
            for label, op, value in VALUE_MATCHER.findall(matchers):
                values = {s.get(label, "") for s in at_zero}
                if op in ("=", "=~"):
                    missing = set(value.split("|")) - values
                    assert not missing, f"{where}: no series at 0 for {label} {sorted(missing)}"
                else:
                    assert any(not re.fullmatch(value, v) for v in values), f"{where}: none at 0 that it keeps"
            checked.add(name)
    # the rules' labelled counters, all looked at (a regex above that matched nothing would pass every rule): those a
    # count alone pages on checked, those read only under a floor exempt (and read by no unfloored rule)
    assert {"aigrid_admission_total", "aigrid_requests_rejected_total",
            "aigrid_endpoint_circuit_opens_total"} <= checked, checked
    assert {"aigrid_requests_total", "aigrid_ttft_seconds_bucket", "aigrid_ttft_seconds_count",
            "aigrid_tpot_seconds_bucket", "aigrid_tpot_seconds_count"} <= skipped - checked, (skipped, checked)
    assert {"AigridSiteErrors", "AigridSiteErrorsSustained", "AigridSiteTTFTHigh", "AigridSiteTPOTHigh",
            "site:aigrid_requests:error_ratio_5m", "site:aigrid_ttft_seconds:p99_5m"} <= exempt.keys(), exempt


def test_the_docs_inhibit_rule_names_alerts_that_exist_and_a_label_both_carry() -> None:
    """docs/observability.md's Alertmanager example: AigridSiteErrors mutes AigridSiteErrorsSustained for the same
    site (a busy site failing past a quarter fires both). Each matcher names an alert of the rules, and each `equal`
    label is one both alerts' series carry (a `by (...)` of the alert or of a recording rule it reads): a label one of
    them lacks would never be equal, and the inhibit rule would mute nothing."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", (ROOT / "docs" / "observability.md").read_text(), re.S | re.M)
    inhibits = [rule for block in blocks if "inhibit_rules" in block
                for rule in yaml.safe_load(block)["inhibit_rules"]]
    assert inhibits, "no inhibit_rules example in docs/observability.md"
    exprs = {rule.get("alert") or rule.get("record"): rule["expr"] for rule in rules()}

    def carried(alert: str) -> set[str]:
        expr = exprs[alert]
        read = [expr] + [e for name, e in exprs.items()
                         if ":" in name and re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr)]
        return {label.strip() for e in read for by in BY.findall(e) for label in by.split(",")}

    pairs = set()
    for rule in inhibits:
        names = []
        for side in ("source_matchers", "target_matchers"):
            [matcher] = rule[side]
            name = re.fullmatch(r'alertname="(\w+)"', matcher)
            assert name and name.group(1) in exprs, matcher
            names.append(name.group(1))
            assert set(rule["equal"]) <= carried(name.group(1)), (name.group(1), rule["equal"])
        pairs.add(tuple(names))
    assert ("AigridSiteErrors", "AigridSiteErrorsSustained") in pairs
