"""`aigrid sim`: a bad --out or a scenario naming what does not exist fails at once, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app

runner = CliRunner()
SMALL = Path(__file__).resolve().parents[2] / "examples" / "sim" / "small.yaml"


def _sim(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["sim", *args, "-j", "1", "--no-plots", "-q"])
    assert "Traceback" not in r.output and not isinstance(r.exception, (OSError, ValueError)), r.output
    return r.exit_code, r.output


def test_an_out_that_is_a_file_fails_before_the_run(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    code, out = _sim(str(SMALL), "--out", str(taken))
    assert code == 2 and "--out" in out and "not a directory" in out
    code, out = _sim(str(SMALL), "--out", str(taken / "below"))
    assert code == 2 and "--out" in out


def test_a_fault_on_an_unknown_site_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("sites: [eu-west]", "sites: [eu-wset]"))
    code, out = _sim(str(bad), "--out", str(tmp_path / "out"))
    assert code == 2 and "faults[0]" in out and "eu-wset" in out and "eu-west" in out


def test_a_tenant_jurisdiction_no_site_is_in_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("jurisdictions: [EU]", "jurisdictions: [EUU]"))
    code, out = _sim(str(bad), "--out", str(tmp_path / "out"))
    assert code == 2 and "eu-bank" in out and "EUU" in out


def test_progress_goes_to_a_log_as_lines_when_it_is_not_a_terminal(tmp_path: Path) -> None:
    """Piped to a log, a long run said nothing until the end (the bar draws only on a terminal): one line per
    policy every 10% instead; --quiet still prints none."""
    r = runner.invoke(app, ["sim", str(SMALL), "--out", str(tmp_path / "a"), "-j", "1", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert all(f"{policy}: 100% (" in r.output for policy in ("balanced", "nearest", "least-loaded")), r.output
    # the closing line names every report it wrote, not summary.json alone (thirty-eighth session)
    assert f"wrote {tmp_path / 'a'}/summary.json, details.json, requests.csv (" in r.output, r.output
    quiet = runner.invoke(app, ["sim", str(SMALL), "--out", str(tmp_path / "b"), "-j", "1", "--no-plots", "-q"])
    assert quiet.exit_code == 0 and "% (" not in quiet.output, quiet.output


def test_a_run_stopped_while_writing_its_reports_leaves_the_earlier_reports_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a full disk) while requests.csv was written left the new summary.json beside a requests.csv cut
    short, in the folder the dashboard replays and scripts read as complete."""
    import aigrid.sim.cli as sim_cli
    from aigrid.sim.report import write_outputs

    out = tmp_path / "out"
    sim_cli.run_scenario(SMALL, out, plots=False, quiet=True, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"summary.json", "requests.csv"} <= before.keys()

    def stopped(ex: object, where: Path) -> list[Path]:
        (where / "summary.json").write_text("{}\n")  # the new run's summary, then Ctrl-C mid-CSV
        (where / "requests.csv").write_text("policy,request\nbalanced,")
        raise KeyboardInterrupt

    monkeypatch.setattr(sim_cli, "write_outputs", stopped)
    with pytest.raises(KeyboardInterrupt):
        sim_cli.run_scenario(SMALL, out, plots=False, quiet=True, workers=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half, nothing left behind
    monkeypatch.setattr(sim_cli, "write_outputs", write_outputs)

    def full_disk(ex: object, where: Path) -> list[Path]:
        raise OSError(28, "No space left on device", str(where / "requests.csv"))

    monkeypatch.setattr(sim_cli, "write_outputs", full_disk)
    code, said = _sim(str(SMALL), "--out", str(out))
    said = " ".join(said.split())
    assert code == 2 and f"cannot write {out / 'requests.csv'} (No space left on device)" in said, said
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_removes_the_reports_of_an_earlier_run_it_does_not_write_and_nothing_else(tmp_path: Path) -> None:
    """An earlier run's PNGs stayed beside a --no-plots run's reports, as if they were this run's."""
    import aigrid.sim.cli as sim_cli

    out = tmp_path / "out"
    sim_cli.run_scenario(SMALL, out, plots=True, quiet=True, workers=1)
    first = {p.name for p in out.iterdir()}
    assert "ttft_cdf.png" in first and first <= set(sim_cli.REPORTS)  # REPORTS names every file it writes
    (out / "notes.txt").write_text("mine")
    (out / "old.png").write_text("mine too")
    code, said = _sim(str(SMALL), "--out", str(out))  # --no-plots
    assert code == 0, said
    assert {p.name for p in out.iterdir()} == {"summary.json", "details.json", "requests.csv", "notes.txt", "old.png"}


def test_workers_0_is_one_per_core_as_aigrid_plan_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid plan --workers 0` is one per core; `aigrid sim --workers 0` was refused (min 1). Both take it now,
    and both helps say it."""
    from aigrid.sim import cli as sim_cli

    asked: list[int | None] = []
    monkeypatch.setattr(sim_cli, "run_scenario", lambda *a, workers=None, **k: asked.append(workers) or {})
    r = runner.invoke(app, ["sim", str(SMALL), "--out", str(tmp_path / "o"), "--workers", "0", "--no-plots", "-q"])
    assert r.exit_code == 0 and asked == [None], r.output  # None: the default, one per core
    for command in ("sim", "plan"):
        shown = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output.split())
        assert "(0, the default: one per core)" in shown, (command, shown)
