"""What /metrics shows of the gateway's registry: no `<name>_created` series (prometheus-client's default adds one
per counter and histogram label set, doubling their count beside `_total`/`_count`), turned off for this registry
alone (disable_created_metrics is process-wide); and a renamed family under its old name too for one release."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, generate_latest

from aigrid.gateway.metrics import DEPRECATED_NAMES, GatewayMetrics


def lines(m: GatewayMetrics) -> list[str]:
    return [line for line in m.exposition().decode().splitlines() if line and not line.startswith("#")]


def used() -> GatewayMetrics:
    m = GatewayMetrics()
    m.requests.labels("fra", "fra-1", "ok").inc()
    m.ttft.labels("fra").observe(0.2)
    m.ttft_ratio.labels("fra-1").observe(1.1)
    m.shared_sync_failures.inc()
    m.genai("chat", "smollm2-135m", 1.0, 0.2, {"prompt_tokens": 3, "completion_tokens": 9}, site="fra")
    return m


def test_no_created_series_for_any_counter_or_histogram_and_the_rest_all_there() -> None:
    m = used()
    shown = lines(m)
    assert not [line for line in shown if "_created" in line]
    assert 'aigrid_requests_total{endpoint="fra-1",outcome="ok",site="fra"} 1.0' in shown
    assert 'aigrid_shared_sync_failures_total 1.0' in shown
    assert 'aigrid_ttft_seconds_count{site="fra"} 1.0' in shown
    # the registry itself keeps them (another reader of it may want them): only the exposition drops them
    assert any(s.name.endswith("_created") for metric in m.registry.collect() for s in metric.samples)


def test_the_switch_is_this_registry_s_not_the_process_s() -> None:
    used().exposition()
    assert prometheus_client.metrics._use_created  # the process-wide flag untouched
    other = CollectorRegistry()
    Counter("someone_elses", "another library's counter in the same process", registry=other).inc()
    assert b"someone_elses_created" in generate_latest(other)


def test_a_renamed_family_is_shown_under_its_old_name_too_with_the_same_samples() -> None:
    shown = lines(used())
    for new, old in DEPRECATED_NAMES.items():
        ours = sorted(line[len(new):] for line in shown if line.startswith(new + "_"))
        theirs = sorted(line[len(old):] for line in shown if line.startswith(old + "_") and not line.startswith(new))
        assert ours and ours == theirs
    assert 'aigrid_ttft_observed_over_predicted_ratio_count{endpoint="fra-1"} 1.0' in shown
    assert 'aigrid_ttft_observed_over_predicted_count{endpoint="fra-1"} 1.0' in shown


WORKER = """
from aigrid.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
m.requests.labels("fra", "fra-1", "ok").inc()
m.ttft_ratio.labels("fra-1").observe(1.1)
print(m.exposition().decode())
"""


def test_a_worker_s_metrics_show_the_same_every_worker_s_values_read_from_the_folder(tmp_path: Path) -> None:
    """With --workers N every worker's /metrics reads the multiprocess folder: the old name is shown there too (and
    prometheus-client's multiprocess collector has no `_created` series of its own)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": "src"}
    text = subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, cwd=Path(__file__).parents[2],
                          capture_output=True, text=True).stdout
    shown = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert 'aigrid_requests_total{endpoint="fra-1",outcome="ok",site="fra"} 1.0' in shown  # read from the folder
    assert not [line for line in shown if "_created" in line]
    assert 'aigrid_ttft_observed_over_predicted_ratio_count{endpoint="fra-1"} 1.0' in shown
    assert 'aigrid_ttft_observed_over_predicted_count{endpoint="fra-1"} 1.0' in shown


GAUGES = """
import sys
from aigrid.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
m.firewall_waiting.set(int(sys.argv[1]))
m.admission_waiting.set(int(sys.argv[1]))
class Sink:
    lost = 0
    def backlog(self): return int(sys.argv[2]), 1000
m.set_audit_backlog(Sink())
"""


def test_with_workers_the_queues_backlogs_are_summed_or_the_highest_as_each_means(tmp_path: Path) -> None:
    """With --workers N each worker process has its own firewall worker thread and its own audit sink (records posted
    to the hub, bounded per worker): the requests waiting for a firewall thread are the sum over the workers
    (livesum, as the admission queues'), while a worker's audit backlog is against its own bound, so the highest is
    the one nearest refusing (livemax; a sum would pass the bound while no worker refused)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": "src"}
    root = Path(__file__).parents[2]
    for firewall, audit in ((2, 400), (3, 900)):  # two workers
        subprocess.run([sys.executable, "-c", GAUGES, str(firewall), str(audit)], env=env, check=True, cwd=root)
    text = subprocess.run([sys.executable, "-c", "from aigrid.gateway.metrics import GatewayMetrics; "
                           "print(GatewayMetrics().exposition().decode())"], env=env, check=True, cwd=root,
                          capture_output=True, text=True).stdout
    shown = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "aigrid_admission_waiting 5.0" in shown  # the reading as the gateway's own summed gauge
    assert "aigrid_firewall_queue_waiting 5.0" in shown
    assert "aigrid_audit_queue_waiting 900.0" in shown and "aigrid_audit_queue_limit 1000.0" in shown


CIRCUITS = """
import sys
from aigrid.gateway.metrics import GatewayMetrics
m = GatewayMetrics()
opened = m.count_circuits({"nrt-1": "nrt"}, lambda what, write: write())
for _ in range(int(sys.argv[2])):
    opened("nrt-1")
m.circuit.labels("nrt", "nrt-1").set(int(sys.argv[1]))
"""


def test_with_workers_an_endpoints_circuit_is_the_worst_any_worker_sees_and_its_openings_are_summed(
        tmp_path: Path) -> None:
    """Each worker process has its own circuit breakers (told of the others' openings through the shared state, which
    it may not have read yet): the endpoint's circuit is the highest state a live worker sees (livemax: open in one
    is open; a sum would read two half-open workers as open), its openings the sum of the workers' counts."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": "src"}
    root = Path(__file__).parents[2]
    for state, opens in ((2, 1), (1, 2)):  # a worker that sees it open, opened once; one that sees it half-open
        subprocess.run([sys.executable, "-c", CIRCUITS, str(state), str(opens)], env=env, check=True, cwd=root)
    text = subprocess.run([sys.executable, "-c", "from aigrid.gateway.metrics import GatewayMetrics; "
                           "print(GatewayMetrics().exposition().decode())"], env=env, check=True, cwd=root,
                          capture_output=True, text=True).stdout
    shown = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert 'aigrid_endpoint_circuit{endpoint="nrt-1",site="nrt"} 2.0' in shown
    assert 'aigrid_endpoint_circuit_opens_total{endpoint="nrt-1",site="nrt"} 3.0' in shown
