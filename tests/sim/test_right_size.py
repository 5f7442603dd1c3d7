"""Right-sized tenants in the simulator (sim/right_size.py): `model: auto` with a quality target on a grid with
a small model at the edge and a large one in three regions, beside twins that replay the same requests."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from aigrid.sim.experiment import run_experiment
from aigrid.sim.right_size import tenant_prompts
from aigrid.sim.scenario import ScenarioError, ScenarioProblem, load_scenario

EXAMPLE = Path(__file__).parents[2] / "examples" / "sim" / "right-size.yaml"
SMALL, LARGE = "llama-3.2-1b", "llama-3.1-70b"


@pytest.fixture(scope="module")
def experiment():  # type: ignore[no-untyped-def]
    sc = load_scenario(EXAMPLE).model_copy(update={"duration_s": 150, "requests": 2400})
    return run_experiment(sc, workers=1)


def test_twins_replay_the_same_requests_and_prompts(experiment) -> None:  # type: ignore[no-untyped-def]
    w = experiment.workload
    names = list(w.tenant_names)
    rows = {n: np.flatnonzero(w.tenant == names.index(n)) for n in names}
    assert len({len(r) for r in rows.values()}) == 1
    for n in ("auto-10", "always-large", "always-small"):
        assert np.array_equal(w.t[rows[n]], w.t[rows["auto-5"]])
        assert np.array_equal(w.city[rows[n]], w.city[rows["auto-5"]])
        assert np.array_equal(w.pick_u[rows[n]], w.pick_u[rows["auto-5"]])


def test_the_small_model_serves_only_prompts_within_the_target(experiment) -> None:  # type: ignore[no-untyped-def]
    sc, w, run = experiment.scenario, experiment.workload, experiment.runs[0]
    models = np.array([ep.model for ep in run.grid.endpoints])
    for name in ("auto-5", "auto-10"):
        k = list(w.tenant_names).index(name)
        prompts = tenant_prompts(sc, k)
        rows = np.flatnonzero((w.tenant == k) & (run.result.status == 1))
        q = prompts.pick(w.pick_u[rows])
        gain = np.array([prompts.quality[i][LARGE] - prompts.quality[i][SMALL] for i in q])
        small = models[run.result.endpoint[rows]] == SMALL
        assert 0.1 < small.mean() < 0.9, name
        assert (gain[small] <= prompts.threshold + 1e-9).all()  # the quality filter is a hard constraint
        assert gain[~small].mean() > gain[small].mean()
        # and every decision was the core's: the eligible small model wins on the other axes when allowed
        assert small.sum() >= 0.9 * (gain <= prompts.threshold).sum()


def test_cost_ttft_and_quality_against_always_large(experiment) -> None:  # type: ignore[no-untyped-def]
    f = experiment.runs[0].metrics.right_size["right_size_by_tenant"]
    large, small, auto5, auto10 = f["always-large"], f["always-small"], f["auto-5"], f["auto-10"]
    assert large["share_by_model"][LARGE] == 1.0 and small["share_by_model"][SMALL] == 1.0
    assert auto10["share_by_model"][SMALL] > auto5["share_by_model"][SMALL]
    assert small["cost_usd"] < auto10["cost_usd"] < auto5["cost_usd"] < large["cost_usd"]
    assert auto5["ttft_p50_ms"] < large["ttft_p50_ms"]
    assert small["realised_quality"] < large["realised_quality"]
    assert small["estimated_quality"] < auto10["estimated_quality"] < auto5["estimated_quality"] \
        < large["estimated_quality"]


def test_bad_right_size_tenants_are_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    cases = {
        "model: auto,\n     right_size: {models: [llama-3.2-1b, llama-3.1-70b], quality_target: 0.05}":
            ("model: llama-3.1-70b,\n     right_size: {quality_target: 0.05}", "right_size needs model: auto"),
        "{name: always-large, share: 1, trace: conv, model: llama-3.1-70b}":
            ("{name: always-large, share: 1, trace: conv, model: auto}", "model auto needs right_size"),
        "right_size: {models: [llama-3.2-1b, llama-3.1-70b], quality_target: 0.10}":
            ("right_size: {models: [llama-3.2-1b, llama-9b], quality_target: 0.10}", "unknown model 'llama-9b'"),
    }
    for old, (new, message) in cases.items():
        assert old in text
        path = tmp_path / "bad.yaml"
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(ScenarioError, match=message):
            load_scenario(path)


def _prompts_file(path: Path, empty: set[int], n: int = 40) -> Path:
    rows = ["prompt,small_correct,large_correct"] + [
        f"{'' if i in empty else f'What is {i} + {i}?'},{i % 2},1" for i in range(n)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _with_prompts(tmp_path: Path, prompts: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "sc.yaml"
    path.write_text(EXAMPLE.read_text().replace("quality_target: 0.05}", f"quality_target: 0.05, prompts: '{prompts}'}}", 1))
    return load_scenario(path)


def test_a_prompts_file_with_empty_prompts_says_what_it_left_out(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """right_size.prompts is read by `aigrid models eval`'s rules, and the simulator threw its notes away: a file
    with empty prompts (refused whole before df23a32c) lost rows without a word. What reading left out is one
    WARNING line on aigrid.sim naming the file, the count and the lines."""
    prompts = _prompts_file(tmp_path / "few.csv", {5})
    sc = _with_prompts(tmp_path, prompts)
    with caplog.at_level(logging.WARNING, logger="aigrid.sim"):
        sized = tenant_prompts(sc, 0)
        assert tenant_prompts(sc, 1) is not None  # another ladder of the same file: read, and said, once
    assert sized is not None and len(sized) == 39
    said = [r.getMessage() for r in caplog.records if r.name == "aigrid.sim"]
    assert said == [f"right_size.prompts: {prompts}: 1 of 40 rows left out: an empty 'prompt' (line 7)"], said


def test_a_prompts_file_mostly_empty_is_the_scenarios_problem(tmp_path: Path) -> None:
    """More than MAX_EMPTY_SHARE (5%) of the rows without a prompt: the run used what was left of the file; it is
    refused as `aigrid models eval` refuses it, naming the share and the first lines."""
    sc = _with_prompts(tmp_path, _prompts_file(tmp_path / "most.csv", set(range(0, 40, 2))))
    with pytest.raises(ScenarioProblem, match=r"^right_size\.prompts: .*most\.csv: 20 of 40 rows \(50\.0%\) would be "
                                              r"left out: an empty 'prompt' \(lines 2, 4, 6, 8, 10, \.\.\.\); more "
                                              r"than 5% refuses the file"):
        tenant_prompts(sc, 0)
