"""`aigrid sim`: a bad --out or a scenario naming what does not exist fails at once, in one line."""

from __future__ import annotations

from pathlib import Path

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
    assert code == 2 and "faults.0" in out and "eu-wset" in out and "eu-west" in out


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
    quiet = runner.invoke(app, ["sim", str(SMALL), "--out", str(tmp_path / "b"), "-j", "1", "--no-plots", "-q"])
    assert quiet.exit_code == 0 and "% (" not in quiet.output, quiet.output
