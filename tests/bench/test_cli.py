"""`aigrid bench`: nonsense counts and a bad --out are refused before any request is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app

runner = CliRunner()
NOWHERE = "http://127.0.0.1:1/v1"  # nothing listens: a check that runs after the load would show failures


@pytest.mark.parametrize(("args", "named"), [
    (["-n", "0"], "--requests"),
    (["-n", "-5"], "--requests"),
    (["--mode", "closed", "--concurrency", "0"], "--concurrency"),
    (["--output-tokens", "0"], "--output-tokens"),
    (["--header", "x-aigrid-tenant=eu-bank"], "--header"),  # no colon: it was dropped without a word
    (["--header", "[/]x"], "[/]x"),  # printed as written (it was a rich MarkupError traceback)
])
def test_bad_arguments_are_refused_before_the_run(args: list[str], named: str) -> None:
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", *args])
    assert r.exit_code == 2 and named in r.output, r.output
    assert "ok," not in r.output  # no table: nothing ran


def test_an_out_that_is_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "-n", "2", "--quiet", "--out", str(taken)])
    assert r.exit_code == 2 and "--out" in r.output and "ok," not in r.output, r.output
    assert not isinstance(r.exception, OSError)
