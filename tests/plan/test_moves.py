"""The hardware move of refinement (plan/moves.py): a passing site is tried on cheaper hardware of the supply, the
simulator's verdict on every check and every arrival sample decides, and the planner keeps the cheapest that
passes. A fake backend stands in for the simulator: its verdict is written here, per hardware and sample."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.plan.checks import SAMPLE_SEED_STEP
from aigrid.plan.chunks import chunk_for
from aigrid.plan.demand import Demand, DemandError, load_demand, parse_demand
from aigrid.plan.gridspec import grid_spec
from aigrid.plan.moves import site_moves
from aigrid.plan.placement import Placement, PlannedSite, from_sizing
from aigrid.plan.planner import plan
from aigrid.plan.runs import Job, Outcome
from aigrid.plan.screen import Sizing
from aigrid.plan.supply import candidate_sites
from aigrid.plan.traffic import Traffic, build_traffic
from aigrid.plan.verify import Verifier
from aigrid.sim.geography import load_cities
from aigrid.spec.load import read_yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "examples" / "plan" / "small.yaml"
MODEL = "llama-3.1-8b"
PLACEMENT = Placement("t", (
    PlannedSite("fra", "Frankfurt", 50.11, 8.68, "DE", "EU", "h100", 1, 2.5, ((MODEL, 1),)),
    PlannedSite("iad", "Ashburn", 39.04, -77.49, "US", "US", "h100", 1, 2.5, ((MODEL, 1),))))


class Fake:
    """Every check passes (every tenant 100% within the SLO, each site 90% used) except where `fails(site,
    sample)` says a site's hardware misses: then its tenants get 50%."""

    name = "fake"

    def __init__(self, fails: Callable[[dict[str, Any], int], bool], base_seed: int,
                 when: Callable[[dict[str, Any]], bool] = lambda check: True, utilization: float = 0.9) -> None:
        """`when(check)`: on which checks (the job's hour, failed site, label) the sites may miss at all."""
        self.fails, self.base_seed, self.when, self.utilization = fails, base_seed, when, utilization
        self.scenarios: list[dict[str, Any]] = []

    def map(self, jobs: list[Job], done: Callable[[], None] | None = None) -> list[Outcome]:
        out = []
        for j in jobs:
            sc = j["scenario"]
            self.scenarios.append(sc)
            sample = (sc["seed"] - self.base_seed) // SAMPLE_SEED_STEP
            bad = self.when(j["check"]) and any(self.fails(s, sample) for s in sc["sites"])
            share = 0.5 if bad else 1.0
            out.append({"check": j["check"], "requests": 100, "within": int(100 * share), "rejected": 0,
                        "residency_violations": 0, "ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0, "tpot_max_ms": 60.0,
                        "tenants": {t["name"].split("/")[0]: {"requests": 10, "within": int(10 * share),
                                                              "attainment": share} for t in sc["tenants"]},
                        "sites": {s["id"]: {"served": 10, "bad": 10 if bad else 0, "slow_ttft": 10 if bad else 0,
                                            "slow_tpot": 0, "utilization": self.utilization} for s in sc["sites"]}})
            if done is not None:
                done()
        return out

    def close(self) -> None:
        pass


def small(rtx: bool = False, samples: int = 1, supply: dict[str, Any] | None = None,
          **verify: int) -> tuple[Demand, Traffic]:
    raw = read_yaml(SMALL, DemandError, "demand file")
    assert isinstance(raw, dict)
    if rtx:
        raw["supply"]["hardware"]["rtx-pro-6000"] = {"usd_per_hour": 1.40}
    raw["supply"].update(supply or {})
    raw["verify"] = {**raw["verify"], "samples": samples, **verify}
    d = parse_demand(raw, str(SMALL), base=SMALL.parent)
    return d, build_traffic(d, load_cities(), d.verify.window_s)


def test_the_planner_moves_sites_to_the_cheaper_hardware_that_passes_every_check() -> None:
    d, _ = small(rtx=True)
    fake = Fake(lambda site, sample: site["hardware"] == "l40s", d.seed)  # the L40S misses, the RTX passes
    result = plan(d, backend=fake, compare=True)
    assert result.best is not None
    hw = {s.hardware for s in result.best.placement.sites}
    assert hw == {"rtx-pro-6000"}, result.best.placement  # the screen proposed H100 sites: every one moved
    assert result.best.placement.usd_per_hour < len(result.best.placement.sites) * 2.5
    rtx_chunk = chunk_for(d, "rtx-pro-6000")
    assert rtx_chunk == 1024 and all(s.chunk_tokens == rtx_chunk for s in result.best.placement.sites)
    # the chosen hardware and its chunk are the emitted spec's: grid.yaml's sites and the emulators' flags
    spec, emulators = grid_spec(d, result.best.placement)
    assert {s["hardware"] for s in spec["sites"].values()} == {"rtx-pro-6000"}
    assert all(e[e.index("--chunk-tokens") + 1] == "1024" for e in emulators)
    # the plan's every check ran on the moved placement
    assert all(o["sites"].keys() == {s.id for s in result.best.placement.sites} for o in result.best.outcomes)
    # the naive shapes keep their rules: no hardware move
    assert all(s.hardware == "h100" for n in result.naive if n.verdict is not None for s in n.verdict.placement.sites)
    assert any(n.verdict is not None for n in result.naive)


def test_a_move_is_kept_only_when_every_arrival_sample_passes() -> None:
    d1, t = small(samples=1)
    d2, _ = small(samples=2)

    def l40s_misses_on_sample_1(site: dict[str, Any], sample: int) -> bool:
        return site["hardware"] == "l40s" and sample == 1

    one = Verifier(d1, t, Fake(l40s_misses_on_sample_1, d1.seed)).refine(PLACEMENT, {}, moves=True)
    assert one.passed and {s.hardware for s in one.placement.sites} == {"l40s"}
    assert one.placement.usd_per_hour == pytest.approx(1.80)  # 2 x 1 L40S: moved (2 each), then trimmed
    two = Verifier(d2, t, Fake(l40s_misses_on_sample_1, d2.seed)).refine(PLACEMENT, {}, moves=True)
    assert two.passed and two.placement.key() == PLACEMENT.key()  # sample 1 fails every L40S move: kept as it was
    off = Verifier(d1, t, Fake(l40s_misses_on_sample_1, d1.seed)).refine(PLACEMENT, {})
    assert off.placement.key() == PLACEMENT.key()  # without moves (the naive shapes): as before


def test_the_moves_stay_within_their_trials_and_the_progress_bar_counts_every_run() -> None:
    d, t = small(move_trials=1)  # verify.move_trials (`aigrid plan --move-trials`)
    fake = Fake(lambda site, sample: site["hardware"] == "l40s", d.seed)  # every move fails
    planned: list[int] = []
    done: list[None] = []
    v = Verifier(d, t, fake, on_run=lambda: done.append(None), on_plan=planned.append)
    out = v.refine(PLACEMENT, {}, moves=True)
    assert out.placement.key() == PLACEMENT.key()
    tried = {tuple(s["hardware"] for s in sc["sites"]) for sc in fake.scenarios}
    assert tried == {("h100", "h100"), ("l40s", "h100")}  # one candidate: the dearest site's cheapest option
    checks = 3  # one peak hour: every site up, fra down, iad down
    assert len(fake.scenarios) == checks + 1  # the candidate stopped at its first (closest to failing) check
    assert sum(planned) == len(done) == v.runs == len(fake.scenarios)
    d, t = small(move_trials=0)
    fake = Fake(lambda site, sample: site["hardware"] == "l40s", d.seed)
    assert Verifier(d, t, fake).refine(PLACEMENT, {}, moves=True).placement.key() == PLACEMENT.key()
    assert all(s["hardware"] == "h100" for sc in fake.scenarios for s in sc["sites"])  # 0: no move tried


def test_a_check_that_failed_a_candidate_runs_first_and_alone_for_the_next() -> None:
    """A candidate's checks run in batches, stopping at the first that fails: the check that failed earlier
    candidates runs first and alone (it ran in the third batch, after the checks closest to failing, whatever
    had failed before). Two-site moves (verify.pair_trials) are off: the single-site ones are counted here."""
    d, t = small(rtx=True, pair_trials=0)
    v = Verifier(d, t, Fake(lambda site, sample: False, d.seed))
    last = v.checks(PLACEMENT, {})[-1]  # every check passes at 100%: the order is the checks', this one last
    assert len(v.checks(PLACEMENT, {})) == 3 and last.failed is not None
    fake = Fake(lambda site, sample: site["hardware"] != "h100", d.seed, when=lambda c: c["failed"] == last.failed)
    v = Verifier(d, t, fake)
    out = v.refine(PLACEMENT, {}, moves=True)
    assert out.placement.key() == PLACEMENT.key()  # every candidate fails that one check: none kept
    moved = [sc for sc in fake.scenarios if any(s["hardware"] != "h100" for s in sc["sites"])]
    tried = {tuple(s["hardware"] for s in sc["sites"]) for sc in moved}
    assert len(tried) == 4  # each site on the RTX PRO 6000 and the L40S
    # the first candidate: the first check (passes), then the other two (one fails); each next one: that one
    assert len(moved) == 3 + 1 + 1 + 1, [sc["name"] for sc in moved]
    # with more checks (three hours: nine), a candidate failing the first check stops after that one run
    checks = Verifier(d, t, fake).checks(PLACEMENT, {}, (4, 10))
    assert len(checks) == 9
    fake = Fake(lambda site, sample: site["hardware"] != "h100", d.seed,
                when=lambda c: (c["hour"], c["failed"]) == (checks[0].hour, checks[0].failed))
    Verifier(d, t, fake).refine(PLACEMENT, {}, also_hours=(4, 10), moves=True)
    moved = [sc for sc in fake.scenarios if any(s["hardware"] != "h100" for s in sc["sites"])]
    assert len(moved) == 4, [sc["name"] for sc in moved]  # was 4 x 3 (the first third of the nine together)


def test_by_default_every_site_is_tried_on_each_cheaper_option() -> None:
    """verify.move_trials' default (16) covers a proposal of up to six sites with two cheaper options each, as
    the global example's: 6 stopped after three sites (docs/planning.md, "Every site tried"). Two-site moves
    (verify.pair_trials) are off: the single-site ones are counted here."""
    d, t = small(rtx=True, pair_trials=0)
    four = Placement("t", PLACEMENT.sites + (
        PlannedSite("cdg", "Paris", 48.86, 2.35, "FR", "EU", "h100", 1, 2.5, ((MODEL, 1),)),
        PlannedSite("ord", "Chicago", 41.85, -87.65, "US", "US", "h100", 1, 2.5, ((MODEL, 1),))))
    fake = Fake(lambda site, sample: site["hardware"] != "h100", d.seed)  # every move fails
    out = Verifier(d, t, fake).refine(four, {}, moves=True)
    assert out.placement.key() == four.key()
    tried = {tuple((s["id"], s["hardware"]) for s in sc["sites"]) for sc in fake.scenarios
             if any(s["hardware"] != "h100" for s in sc["sites"])}
    assert len(tried) == 4 * 2  # each site on the RTX PRO 6000 and on the L40S


@pytest.mark.parametrize("trials", [0, 1, 3])
def test_move_trials_option_reaches_the_moves(trials: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid plan --move-trials N` is the cap of the hardware moves (it was a constant of plan/moves.py, 6):
    each proposal tries N candidates when every one fails."""
    import aigrid.plan.cli as plan_cli

    seen: list[Fake] = []

    def planned(d: Demand, **kw: Any) -> Any:
        assert d.verify.move_trials == trials and d.verify.samples == 2
        seen.append(Fake(lambda site, sample: site["hardware"] == "l40s", d.seed))  # every move fails
        return plan(d, **{**kw, "backend": seen[-1]})

    monkeypatch.setattr(plan_cli, "plan", planned)
    monkeypatch.setattr(plan_cli, "write_outputs", lambda *a, **k: [])
    r = CliRunner().invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "p"), "--quiet", "--samples", "2",
                                 "--move-trials", str(trials)])
    assert r.exit_code == 0, r.output
    tried = {tuple((s["hardware"], s["replicas"]) for s in sc["sites"]) for sc in seen[0].scenarios
             if any(s["hardware"] == "l40s" for s in sc["sites"])}
    assert len(tried) == trials  # small.yaml verifies one proposal; each candidate a placement of its own


def test_move_trials_out_of_range_name_the_field_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(DemandError, match=r"verify\.move_trials: Input should be greater than or equal to 0"):
        small(move_trials=-1)
    r = CliRunner().invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "p"), "--move-trials", "101", "-q"])
    assert r.exit_code == 2 and "--move-trials" in r.output and "less than or equal to 100" in r.output, r.output


def test_candidates_keep_throughput_when_that_is_cheaper_else_buy_what_the_saving_allows() -> None:
    d, t = small(rtx=True, supply={"max_gpus_per_site": 16})
    two = PLACEMENT.scaled("fra", 3)  # 4 H100 at fra, $10.00/h
    moves = site_moves(d, t, two, "fra")
    assert [m.site("fra").hardware for m in moves] == ["rtx-pro-6000", "l40s"]  # cheapest candidate first
    rtx, l40s = (m.site("fra") for m in moves)
    # an RTX PRO 6000 serves about half an H100's requests: 8 keep the throughput but cost $11.20, so 7 ($9.80)
    assert rtx.replicas == ((MODEL, 7),) and rtx.usd_per_hour == pytest.approx(9.80)
    assert l40s.replicas == ((MODEL, 11),) and l40s.chunk_tokens == chunk_for(d, "l40s")
    # small.yaml's own max_gpus_per_site (8) holds the 7 RTX PRO 6000, not the 11 L40S (a hand-written site:
    # the supply's cap alone)
    d, t = small(rtx=True)
    assert [m.site("fra").devices for m in site_moves(d, t, two, "fra")] == [7]
    assert site_moves(d, t, PLACEMENT, "fra")[0].site("fra").replicas == ((MODEL, 1),)
    assert load_demand(SMALL).supply.hardware.keys() == {"h100", "l40s"}  # the example itself is not edited


def candidate_placement(d: Demand, sites: dict[str, tuple[str, int]]) -> Placement:
    """Candidate site id -> (hardware, replicas of MODEL), made as the planner makes a proposal (from_sizing: each
    site carries its candidate's limits)."""
    cands = candidate_sites(d, load_cities())
    idx = [cands.index(sid) for sid in sites]
    z = Sizing(tuple(idx), tuple(hw for hw, _ in sites.values()), tuple({MODEL: n} for _, n in sites.values()), 0.0,
               0.0, np.zeros((len(idx), 24)), 0.0, 0.0)
    return from_sizing("t", d, cands, z)


FRA, IAD = "frankfurt-am-main-de", "ashburn-us"


def devices_at(scenario: dict[str, Any], site: str) -> int:
    return sum(s["replicas"] * s["gpus_per_replica"] for s in scenario["sites"] if s["id"].startswith(site))


def test_a_move_keeps_the_sites_device_limit_and_runs_no_candidate_past_it() -> None:
    """RV3's case: small.yaml with the RTX PRO 6000 at $1.40 and Frankfurt limited to 2 GPUs. Frankfurt's 2 H100
    moved to 3 RTX PRO 6000 or 5 L40S, where the site holds 2: the screen sizes within the limit, the move did not."""
    free, t = small(rtx=True)
    p = candidate_placement(free, {FRA: ("h100", 2), IAD: ("h100", 1)})
    moved = {m.site(FRA).hardware: m.site(FRA).devices for m in site_moves(free, t, p, FRA)}
    assert moved == {"rtx-pro-6000": 3, "l40s": 5}  # no limit: the two candidates
    d, t = small(rtx=True, supply={"limits": {"Frankfurt am Main": {"max_gpus": 2}}})
    p = candidate_placement(d, {FRA: ("h100", 2), IAD: ("h100", 1)})
    assert dict(p.site(FRA).max_devices) == {"h100": 2, "l40s": 2, "rtx-pro-6000": 2}
    assert site_moves(d, t, p, FRA) == []  # both past the limit: not candidates
    d, t = small(rtx=True, supply={"limits": {"Frankfurt am Main": {"max_gpus": 3}}})
    p = candidate_placement(d, {FRA: ("h100", 2), IAD: ("h100", 1)})
    assert {m.site(FRA).hardware: m.site(FRA).devices for m in site_moves(d, t, p, FRA)} == {"rtx-pro-6000": 3}
    # the refinement never simulates a placement past the limit (every move would pass here)
    d, t = small(rtx=True, supply={"limits": {"Frankfurt am Main": {"max_gpus": 2}}})
    p = candidate_placement(d, {FRA: ("h100", 2), IAD: ("h100", 1)})
    fake = Fake(lambda site, sample: False, d.seed)
    out = Verifier(d, t, fake).refine(p, {}, moves=True)
    assert out.passed and max(devices_at(sc, FRA) for sc in fake.scenarios) == 2
    assert any(s["hardware"] != "h100" for sc in fake.scenarios for s in sc["sites"])  # Ashburn's moves were tried


def test_a_move_keeps_the_sites_power_limit_with_each_hardwares_peak_power() -> None:
    """max_power_kw counts each option's peak power (sim/hardware.py: H100 700 W, RTX PRO 6000 600 W, L40S 350 W):
    1.75 kW holds 5 L40S (1,750 W) but not 3 RTX PRO 6000 (1,800 W)."""
    d, t = small(rtx=True, supply={"limits": {"Frankfurt am Main": {"max_power_kw": 1.75}}})
    p = candidate_placement(d, {FRA: ("h100", 2), IAD: ("h100", 1)})
    assert dict(p.site(FRA).max_devices) == {"h100": 2, "l40s": 5, "rtx-pro-6000": 2}
    assert {m.site(FRA).hardware: m.site(FRA).devices for m in site_moves(d, t, p, FRA)} == {"l40s": 5}


def test_growing_stops_at_the_sites_limit_and_the_proposal_fails_as_infeasible_there() -> None:
    """Frankfurt (4 H100, limit 5) misses every check: it grows by half (2), but only to its limit of 5, then it
    cannot grow and the proposal fails, its reason naming the site (plan.json, compare.md, the CLI)."""
    d, t = small(supply={"limits": {"Frankfurt am Main": {"max_gpus": 5}}})
    p = candidate_placement(d, {FRA: ("h100", 4), IAD: ("h100", 1)})
    fake = Fake(lambda site, sample: site["id"].startswith(FRA), d.seed)
    notes: list[str] = []
    out = Verifier(d, t, fake, note=notes.append).refine(p, {}, max_rounds=6)
    assert not out.passed
    assert [devices_at(sc, FRA) for sc in fake.scenarios][::3] == [4, 5]  # three checks a round; then stopped
    assert out.reason.startswith(f"infeasible at its limits: {FRA} cannot grow past 5 x h100: the site may hold 5")
    assert any("cannot grow past 5 x h100" in n for n in notes)


def test_growing_to_faster_hardware_keeps_the_power_limit() -> None:
    """A lightly used site that misses moves to faster hardware, unless its replicas would pass the site's limit
    there: 4 L40S (1,400 W) at a 1.4 kW limit do not become 4 H100 (2,800 W); it grows where it is, and fails
    at its limit."""
    d, t = small(supply={"limits": {"Frankfurt am Main": {"max_power_kw": 1.4}}})
    p = candidate_placement(d, {FRA: ("l40s", 4), IAD: ("h100", 1)})
    fake = Fake(lambda site, sample: site["id"].startswith(FRA), d.seed, utilization=0.1)
    out = Verifier(d, t, fake).refine(p, {}, max_rounds=6)
    assert not out.passed and "cannot grow past 4 x l40s" in out.reason
    assert all(s["hardware"] == "l40s" for sc in fake.scenarios for s in sc["sites"] if s["id"].startswith(FRA))
    # without the limit it moves to the H100, as before
    d, t = small()
    fake = Fake(lambda site, sample: site["id"].startswith(FRA), d.seed, utilization=0.1)
    Verifier(d, t, fake).refine(candidate_placement(d, {FRA: ("l40s", 4), IAD: ("h100", 1)}), {}, max_rounds=2)
    assert any(s["hardware"] == "h100" for sc in fake.scenarios for s in sc["sites"] if s["id"].startswith(FRA))


def test_the_global_examples_limits_allow_every_move_its_plans_tried() -> None:
    """examples/plan/global.yaml has max_gpus_per_site 32 and no site limits: every candidate the PLN4 runs tried
    (docs/planning.md, "Every site tried": each of the six one-H100 sites on 1 RTX PRO 6000 and 2 L40S; the second
    proposal's Tel Aviv on 5 RTX PRO 6000; Hong Kong's 3 RTX PRO 6000 at three samples) is still a candidate, so
    its plans do not change."""
    d = load_demand(ROOT / "examples" / "plan" / "global.yaml")
    t = build_traffic(d, load_cities(), d.verify.window_s)
    six = ("mx-central-1", "eu-central-1", "eu-north-1", "eu-south-2", "ap-south-1", "ap-east-1")
    p = candidate_placement(d, {s: ("h100", 1) for s in six})
    assert all(dict(s.max_devices) == {"h100": 32, "l40s": 32, "rtx-pro-6000": 32} for s in p.sites)
    for sid in six:
        got = {m.site(sid).hardware: m.site(sid).devices for m in site_moves(d, t, p, sid)}
        assert got == {"rtx-pro-6000": 1, "l40s": 2}, sid
    second = candidate_placement(d, {"eu-west-1": ("h100", 2), "eu-west-3": ("h100", 3), "il-central-1": ("h100", 3)})
    assert [m.site("il-central-1").devices for m in site_moves(d, t, second, "il-central-1")
            if m.site("il-central-1").hardware == "rtx-pro-6000"] == [5]
    three = candidate_placement(d, {"ap-east-1": ("h100", 2)})
    assert [m.site("ap-east-1").devices for m in site_moves(d, t, three, "ap-east-1")
            if m.site("ap-east-1").hardware == "rtx-pro-6000"] == [3]
