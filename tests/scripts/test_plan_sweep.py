"""scripts/plan_sweep.py: reads plan_without.py's output into a table row (the worst tenant over every check,
failing or not), prices a variant with plan_without.py's rules before running it, and does not run one dearer
than --max-usd (issue #16's sweep of placements at or below $14.00/h, docs/planning.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.plan_scripts import DEMAND, ROOT, plan_doc, script

SCRIPT = ROOT / "scripts" / "plan_sweep.py"
sweep = script("plan_sweep", "plan_sweep")

OUTPUT = """\
6 sites, 6 devices, $13.90/h: mx-central-1 rtx-pro-6000 x 1 (chunk 1024), eu-central-1 h100 x 1 (chunk 2048)
07:00 UTC, all sites up: meets; worst tenant chat 100.00% within the SLO; TTFT p99 455 ms; 0 not served
07:00 UTC, eu-north-1 down: FAILS; worst tenant code 96.96% within the SLO; TTFT p99 1204 ms; 0 not served
    eu-central-1: 700 served, 20 outside the SLO (20 over TTFT, 0 over TPOT), utilisation 71%
12:00 UTC, eu-north-1 down: meets; worst tenant code 99.12% within the SLO; TTFT p99 690 ms; 0 not served
3 checks in 40 s
"""


def plan_dir(tmp_path: Path) -> Path:
    (tmp_path / "plan.json").write_text(json.dumps(plan_doc()))
    return tmp_path


def test_a_run_is_read_into_its_row_with_the_worst_tenant_of_any_check() -> None:
    r = sweep.parse(OUTPUT)
    assert r["usd"] == 13.90 and r["devices"] == 6
    assert r["placement"] == "mx-central-1 1xRTX, eu-central-1 1xH100"
    assert (r["passed"], r["checks"]) == (2, 3)
    assert r["worst"] == "code 96.96% (07:00 UTC, eu-north-1 down)"


def test_check_lines_with_the_tpot_figures_are_read() -> None:
    with_tpot = OUTPUT.replace("0 not served\n", "0 not served; TPOT p99 41 ms, max 96 ms\n")
    assert with_tpot.count("TPOT p99") == 3
    r = sweep.parse(with_tpot)
    assert (r["passed"], r["checks"]) == (2, 3) and r["worst"] == "code 96.96% (07:00 UTC, eu-north-1 down)"


def test_a_variant_is_priced_with_plan_without_rules(tmp_path: Path) -> None:
    d = plan_dir(tmp_path)
    price = sweep.price_only
    assert price(str(DEMAND), d, []) == 15.00
    assert price(str(DEMAND), d, ["--hardware", "eu-north-1=rtx-pro-6000"]) == 13.90
    assert price(str(DEMAND), d, ["--drop", "mx-central-1", "--add", "eu-west-1=l40s", "il-central-1=l40s"]) == 14.30
    assert price(str(DEMAND), d, ["--hardware", "eu-north-1=l40s", "--scale", "eu-north-1=1", "ap-east-1=-3"]) == 14.30


def test_the_committed_sweep_holds_only_placements_at_or_below_14_dollars(tmp_path: Path) -> None:
    variants = sweep.read_variants(ROOT / "scripts" / "plan_sweep_global.txt")
    assert len(variants) >= 30
    prices = [sweep.price_only(str(DEMAND), plan_dir(tmp_path), v) for v in variants]
    assert max(prices) <= 14.00 and min(prices) >= 12.50


def test_a_variant_dearer_than_max_usd_is_listed_and_not_run(tmp_path: Path) -> None:
    d = plan_dir(tmp_path)
    (tmp_path / "v.txt").write_text("# the plan itself, $15.00/h\n-\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(DEMAND), str(d), str(tmp_path / "v.txt"),
                           "--max-usd", "14"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[1/1] (the plan): $15.00/h > $14.00/h, not run" in done.stdout
    assert "| `(the plan)` | - | 15.00 | 0 of 0 | not run |" in done.stdout


def test_a_check_line_that_cannot_be_read_is_an_error_not_a_check_fewer() -> None:
    garbled = OUTPUT.replace("TTFT p99 1204 ms", "TTFT p99 n/a ms")
    with pytest.raises(ValueError, match="ran 3 checks and 2"):
        sweep.parse(garbled)


def test_a_variant_plan_without_would_refuse_is_refused_when_priced(tmp_path: Path) -> None:
    d = plan_dir(tmp_path)
    with pytest.raises(SystemExit, match="not sites of the plan: xx-nowhere-1"):
        sweep.price_only(str(DEMAND), d, ["--scale", "xx-nowhere-1=1"])
    with pytest.raises(SystemExit, match="not hardware options of the demand: b200"):
        sweep.price_only(str(DEMAND), d, ["--hardware", "eu-north-1=b200"])


def test_an_unmoved_site_keeps_the_price_of_its_plan(tmp_path: Path) -> None:
    d = plan_dir(tmp_path)
    doc = json.loads((d / "plan.json").read_text())
    doc["plan"]["sites"][0]["usd_per_device_hour"] = 3.5  # the plan's price, not the demand's today
    (d / "plan.json").write_text(json.dumps(doc))
    assert sweep.price_only(str(DEMAND), d, []) == 16.00
