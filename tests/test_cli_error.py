"""The command line's counted words (cli_error.counted, cli_error.agreeing)."""

from __future__ import annotations

from aigrid.cli_error import agreeing, counted


def test_a_count_and_the_words_beside_it_agree() -> None:
    assert [f"{counted(n, 'record')} {agreeing(n, 'was', 'were')} skipped" for n in (0, 1, 2)] == [
        "0 records were skipped", "1 record was skipped", "2 records were skipped"]
    assert counted(1500, "request", grouped=True) == "1,500 requests"
