"""deploy/grafana/aigrid-dashboard.json: the script's output, every query on metrics and labels the gateway
exports, every query accepted by promtool (Prometheus's own parser), panels that do not overlap."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.test_prometheus_rules import BY, MATCHER, NAME, TARGET_LABELS, exported, promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "aigrid-dashboard.json"


def built() -> str:
    spec = importlib.util.spec_from_file_location("build_grafana_dashboard",
                                                  ROOT / "scripts" / "build_grafana_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.render())


def targets() -> list[dict]:
    board = json.loads(DASHBOARD.read_text())
    return [t for p in board["panels"] for t in p.get("targets", [])]


def queries() -> list[str]:
    return [t["expr"] for t in targets()]


def as_prometheus(expr: str) -> str:
    """Grafana's variables as Prometheus would see them once Grafana filled them in."""
    return expr.replace("$__rate_interval", "5m").replace("$site", ".*")


def test_the_committed_dashboard_is_the_scripts_output() -> None:
    assert DASHBOARD.read_text() == built(), "run python scripts/build_grafana_dashboard.py"


def test_every_query_names_exported_metrics_and_their_labels() -> None:
    series = exported()
    assert len(queries()) >= 20
    for t in targets():
        expr = as_prometheus(t["expr"])
        names = NAME.findall(expr)
        assert names, expr
        labels: set[str] = set()
        for name, matchers in names:
            assert name in series, f"{name} is not exported (in {expr})"
            used = set(MATCHER.findall(matchers))
            assert used <= series[name][1], f"{name}: no label {used - series[name][1]}"
            labels |= series[name][1]
        for group in BY.findall(expr):
            by = {label.strip() for label in group.split(",") if label.strip()}
            assert by <= labels | TARGET_LABELS, f"by {by}: not a label of {expr}"
        for legend_label in re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]):  # a label the query keeps
            kept = set().union(*({x.strip() for x in g.split(",")} for g in BY.findall(expr)))
            assert legend_label in kept, f"legend {{{{{legend_label}}}}} of {expr}"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_prometheus(expr)} for i, expr in enumerate(queries())]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    run = subprocess.run([promtool(), "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_panels_have_unique_ids_use_the_datasource_variable_and_do_not_overlap() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "site"}


def test_the_errors_panel_counts_what_the_alert_counts() -> None:
    """The Errors stat says it counts as the AigridSiteErrors rule does: the same outcomes left out."""
    from tests.deploy.test_prometheus_rules import not_failed_outcomes, rules
    (rule,) = [r for r in rules() if r.get("record") == "site:aigrid_requests:error_ratio_5m"]
    board = json.loads(DASHBOARD.read_text())
    (errors,) = [p for p in board["panels"] if p["title"] == "Errors (5 m)"]
    (target,) = errors["targets"]
    assert not_failed_outcomes(target["expr"]) == not_failed_outcomes(rule["expr"])


def test_what_an_alert_watches_has_a_panel_and_what_should_stay_zero_is_alerted_on() -> None:
    """An operator paged by an alert finds its metric on the dashboard, and a panel that says each of its counters
    should stay 0 and is alerted on has an alert for each. aigrid_quota_unreleased_total (AigridQuotaChargesUnreleased)
    had no panel, and aigrid_background_abandoned_total, on the panel that said so, had no alert."""
    from tests.deploy.test_prometheus_rules import rules
    # a histogram's _count (the site alerts' traffic floor) is its +Inf bucket: a panel of its buckets shows it
    alerted = {re.sub(r"_seconds_count$", "_seconds_bucket", name)
               for rule in rules() if "alert" in rule for name, _ in NAME.findall(rule["expr"])}
    shown = {name for expr in queries() for name, _ in NAME.findall(expr)}
    assert alerted <= shown, sorted(alerted - shown)
    board = json.loads(DASHBOARD.read_text())
    for p in board["panels"]:
        if "alerted on" in p.get("description", ""):
            watched = {name for t in p["targets"] for name, _ in NAME.findall(t["expr"])}
            assert watched <= alerted, (p["title"], sorted(watched - alerted))
