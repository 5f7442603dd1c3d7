"""`aigrid plan`: bad flags and a bad --out fail at once in one line naming the flag, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.plan.planner import plan

runner = CliRunner()
SMALL = Path(__file__).resolve().parents[2] / "examples" / "plan" / "small.yaml"


def _plan(tmp_path: Path, *args: str, out: Path | None = None) -> tuple[int, str]:
    r = runner.invoke(app, ["plan", str(SMALL), "--out", str(out or tmp_path / "out"), "--workers", "1", "-q",
                            "--no-map", *args])
    assert "Traceback" not in r.output and not isinstance(r.exception, (OSError, ValueError, IndexError)), r.output
    return r.exit_code, r.output


def test_an_out_that_is_a_file_fails_before_planning(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    code, out = _plan(tmp_path, out=taken)
    assert code == 2 and "--out" in out and "not a directory" in out


@pytest.mark.parametrize("growth", ["-1", "-2", "nan"])
def test_growth_out_of_range(tmp_path: Path, growth: str) -> None:
    code, out = _plan(tmp_path, "--growth", growth)
    assert code == 2 and "--growth" in out


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--traffic", "XX=1.3", "XX"),          # no such continent or country: the multiplier did nothing
    ("--traffic", "Europe=2", "Europe"),
    ("--residency", "chat=EUU", "EUU"),     # no site can be in it: "no placement met the SLO"
    ("--residency", "chat=FR", "EU"),       # a member state's sites are in jurisdiction EU
    # a tenant and a price's hardware named nearly (thirty-eighth session: `(tenants: ['chat', 'code', ...])`)
    ("--residency", "chatt=EU", "error: --residency: chatt: no tenant 'chatt' (did you mean chat?) (tenants: chat, "
     "code, eu-bank)"),
    ("--price", "l40=0.8", "error: --price: l40: not among the supply's hardware (did you mean l40s?) (h100, l40s;"),
    ("--traffic", "Asia=2", "error: --traffic: Asia: unknown place 'Asia' (did you mean AS?)"),
    ("--workers", "-3", "--workers"),
    ("--emulator-port", "70000", "--emulator-port"),
    ("--emulator-port", "-1", "--emulator-port"),
])
def test_flags_naming_nothing_are_refused(tmp_path: Path, flag: str, value: str, named: str) -> None:
    code, out = _plan(tmp_path, flag, value)
    assert code == 2 and named in " ".join(out.split()), out


@pytest.mark.parametrize(("made", "says"), [("file", "not a folder"), (None, "no such folder"),
                                            ("folder", "no plan.json in it")])
def test_from_what_is_no_plans_folder_says_what_it_is(tmp_path: Path, made: str | None, says: str) -> None:
    """`--from grid.yaml` said "cannot read plan.json ([Errno 20] Not a directory: 'grid.yaml/plan.json')" (7 Dec
    2026, thirty-third session): what is there, and what to give instead."""
    before = tmp_path / "before"
    if made == "file":
        before.write_text("name: x\n")
    elif made == "folder":
        before.mkdir()
    r = runner.invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "out"), "--workers", "1", "-q", "--no-map",
                            "--from", str(before)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"error: --from {before}: {says}; give the --out folder of an earlier `aigrid plan`" \
        in out, out
    assert "Errno" not in out, out
    # one `error:` line as every other bad flag's, not typer's box (`Invalid value: ...`), said before --out is made:
    # an empty folder was left behind (thirty-eighth session)
    assert "│" not in r.output and "Invalid value" not in out and not (tmp_path / "out").exists(), r.output


@pytest.mark.parametrize("previous", ['{"plan": 5}', '{"plan": {"sites": [{"x": 1}]}}', "[1]",
                                      '{"plan": {"sites": "fra"}}'])
def test_from_a_folder_whose_plan_json_is_not_a_plan_s_is_refused(tmp_path: Path, previous: str) -> None:
    """Each was a traceback (AttributeError, KeyError) after the demand was read."""
    (tmp_path / "before").mkdir()
    (tmp_path / "before" / "plan.json").write_text(previous)
    r = runner.invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "out"), "--workers", "1", "-q", "--no-map",
                            "--from", str(tmp_path / "before")])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"error: --from {tmp_path / 'before'}: plan.json is not a plan's" in out, r.output
    assert "│" not in r.output and not (tmp_path / "out").exists(), r.output
    assert not isinstance(r.exception, (AttributeError, KeyError, TypeError)), r.exception


def test_a_ray_address_ray_cannot_parse_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    code, out = _plan(tmp_path, "--ray", "bogus://")
    assert code == 2 and "--ray bogus://: Ray cannot connect" in " ".join(out.split()), out


def test_a_plan_is_written_whole_and_replaces_only_the_files_of_an_earlier_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan was written straight into --out: a run stopped while writing (Ctrl-C, a full disk) left a new
    plan.json beside an earlier grid.yaml or checks/ cut short; an earlier plan's compare.md, map.png or checks of
    other hours stayed beside a new plan as if they were its."""
    import aigrid.plan.cli as plan_cli
    from aigrid.errors import ConfigError
    from aigrid.plan.gridspec import write_grid

    results = []
    monkeypatch.setattr(plan_cli, "plan", lambda *a, **k: results.append(plan(*a, **k)) or results[-1])
    out = tmp_path / "out"
    assert _plan(tmp_path, out=out)[0] == 0
    first = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "plan.json" in first and any(name.startswith("checks/") for name in first)
    for name in ("compare.md", "map.png", "checks/09-03h-old-site.yaml", "notes.txt", "checks/mine.yaml"):
        (out / name).write_text("an earlier run's, or the user's")
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def stopped(folder: Path, *args: object, **kwargs: object) -> list[Path]:
        (folder / "grid.yaml").write_text("sites: {")  # cut short, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_cli, "write_grid", stopped)
    with pytest.raises(KeyboardInterrupt):
        plan_cli.write_outputs(results[0], out, plot=False)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    def full_disk(folder: Path, *args: object, **kwargs: object) -> list[Path]:
        raise OSError(28, "No space left on device", str(folder / "checks" / "00-16h-all-up.yaml"))

    monkeypatch.setattr(plan_cli, "write_grid", full_disk)
    with pytest.raises(ConfigError, match=f"cannot write {out / 'checks' / '00-16h-all-up.yaml'} \\(No space"):
        plan_cli.write_outputs(results[0], out, plot=False)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(plan_cli, "write_grid", write_grid)
    plan_cli.write_outputs(results[0], out, plot=False)
    again = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again == {**first, "notes.txt": before["notes.txt"], "checks/mine.yaml": before["checks/mine.yaml"]}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no folder of its own left behind


def test_piped_plan_prints_each_phase_once_and_its_last_line_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped to a log (`aigrid plan ... | tee plan.log`), the closing `wrote OUT (... backend local)` line was cut
    at 80 columns into two, and each phase's line was printed twice: once as it began and again as the bars'
    last picture when they closed."""
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "a-folder-whose-name-takes-the-line-past-eighty-columns"
    r = runner.invoke(app, ["plan", str(SMALL), "--out", str(out), "--workers", "1", "--no-map"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    wrote = [line for line in lines if line.startswith(f"wrote {out} (")]
    assert len(wrote) == 1 and wrote[0].endswith("backend local)") and len(wrote[0]) > 80, r.output
    for phase in ("screening", "simulator runs (peak"):
        assert sum(line.startswith(phase) for line in lines) == 1, r.output


def test_the_tables_are_printed_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's Markdown tables went through a 140-column console with markup: a row wider than that was cut in
    two (no longer a row of the table), and a tenant named `[bold]x` lost its brackets (7 Dec 2026, thirty-third
    session)."""
    from types import SimpleNamespace

    from aigrid.plan import cli as plan_cli

    row = "| " + " | ".join(f"[bold]tenant-{i}" for i in range(20)) + " |"
    done = SimpleNamespace(best=SimpleNamespace(placement=None, outcomes=None), naive=[], runs=1, screen_s=0.0,
                           verify_s=0.0, backend="local", proposals=[])
    monkeypatch.setattr(plan_cli, "plan", lambda *a, **k: done)
    monkeypatch.setattr(plan_cli, "write_outputs", lambda *a, **k: None)
    monkeypatch.setattr(plan_cli, "cost_markdown", lambda placement: row)
    monkeypatch.setattr(plan_cli, "slo_markdown", lambda outcomes, attainment: "| check |")
    r = runner.invoke(app, ["plan", str(SMALL), "--out", str(tmp_path / "out"), "--workers", "1", "--no-map"],
                      env={"COLUMNS": "80"})
    assert r.exit_code == 0 and row + "\n" in r.output, r.output
    # each table its own: a blank line between them (they ran together, one table to a Markdown reader)
    assert row + "\n\n| check |\n\n" in r.output, r.output
