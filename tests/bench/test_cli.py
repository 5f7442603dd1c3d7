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
    # accepted before, each a run that measured nothing: every request failed at once, or nothing met the SLO
    (["--timeout", "0"], "--timeout"),
    (["--slo-ttft-ms", "-1"], "--slo-ttft-ms"),
    (["--slo-tpot-ms", "nan"], "--slo-tpot-ms"),
    (["--mode", "poisson", "--rate", "nan"], "--rate must be a positive number, not nan"),
    (["--mode", "poisson", "--rate", "inf"], "--rate must be a positive number, not inf"),
    (["--mode", "trace", "--speedup", "inf"], "--speedup must be a positive number, not inf"),
    (["--mode", "trace", "--speedup", "0"], "--speedup must be a positive number, not 0.0"),
    (["--mode", "trace", "--trace-start", "-1"], "--trace-start"),
    # a run that would wait ~1e300 s for its first request (a week is the most)
    (["--mode", "poisson", "--rate", "1e-300"], "--rate 1e-300: the 100 requests would be sent over"),
    (["--mode", "trace", "--speedup", "1e-9"], "--speedup 1e-09: the 100 requests would be sent over"),
    (["--mode", "trace", "--max-output-tokens", "0"], "--max-output-tokens"),
    # a trace file given with another --mode was ignored: a run of made-up prompts (thirty-eighth session)
    (["--mode", "poisson", "--trace", "t.csv"], "--trace t.csv: a trace is replayed only with --mode trace, not "
     "--mode poisson; leave --mode out or give --mode trace"),
    (["--mode", "closed", "--trace", "t.csv"], "not --mode closed;"),
    # with no --mode, --trace is the run's workload: the file is read (it was a Poisson run, then refused; review
    # RV5 of UX4)
    (["--trace", "t.csv"], "error: t.csv: cannot read: No such file or directory"),
])
def test_bad_arguments_are_refused_before_the_run(args: list[str], named: str) -> None:
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", *args])
    assert r.exit_code == 2 and named in " ".join(r.output.split()), r.output
    assert "ok," not in r.output  # no table: nothing ran


def test_an_out_that_is_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "-n", "2", "--quiet", "--out", str(taken)])
    assert r.exit_code == 2 and "--out" in r.output and "ok," not in r.output, r.output
    assert not isinstance(r.exception, OSError)


def test_the_default_trace_is_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--mode trace without --trace replays the shipped Azure trace: it was the relative path
    data/traces/azure_llm_2023_conv.csv, so from any other directory it was "cannot read"."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", "--mode", "trace", "-n", "2",
                            "--speedup", "1000", "--timeout", "2"])
    assert "cannot read" not in r.output and "not found" not in r.output, r.output
    assert r.exit_code == 1 and "0/2 ok, 2 failed" in r.output, r.output  # replayed (nothing listens there)


def test_a_trace_file_without_mode_is_replayed(tmp_path: Path) -> None:
    """`--trace FILE` with no --mode replays the file, as `--mode trace --trace FILE` does: it ran --mode poisson's
    made-up prompts without a word, then UX4 refused it; a user who gives a trace means it replayed (review RV5)."""
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                     "2023-11-16 18:15:50.9951690,396,109\n")
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", "--trace", str(trace), "-n", "2",
                            "--speedup", "1000", "--timeout", "2"])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "aigrid bench: trace against" in out and "0/2 ok, 2 failed" in out, r.output


@pytest.mark.parametrize(("status", "says"), [(404, "ends in /v1"), (401, "--api-key"), (500, "--model")])
def test_a_url_without_models_says_what_to_give(monkeypatch: pytest.MonkeyPatch, status: int, says: str) -> None:
    """`aigrid bench http://127.0.0.1:8080` (no /v1) said "Client error '404 Not Found' for url ..." and sent the
    user to MDN's page on 404; it now says to give the base URL that ends in /v1 (or the key, or --model)."""
    import httpx

    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(status, text="Not Found"))
    r = runner.invoke(app, ["bench", "http://127.0.0.1:8080", "-n", "1", "--quiet"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and f"GET http://127.0.0.1:8080/models answered HTTP {status}" in out and says in out, out
    assert "developer.mozilla.org" not in out and "ok," not in out


@pytest.mark.parametrize("body", [b"[1, 2]", b'{"data": [{"name": "m"}]}', b'{"data": "m"}', b"<html>ok</html>",
                                  b'{"data": [{"id": ""}]}'])
def test_a_models_list_that_is_not_openais_is_one_line(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    """A 200 at /models that is no OpenAI model list (a JSON array, entries without an id: another server at
    that URL) was a traceback (AttributeError, KeyError), and an HTML page was 'Expecting value: line 1
    column 1 (char 0)'."""
    import httpx

    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, content=body))
    r = runner.invoke(app, ["bench", "http://127.0.0.1:8080/v1", "-n", "1", "--quiet"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    assert "http://127.0.0.1:8080/v1/models" in out and "--model" in out, out


def test_a_targets_text_reaches_the_terminal_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model name a target lists at /models (the table's title) and the body of its error answers (the error
    lines) were printed as they came: an ESC or a C1 CSI cleared the operator's terminal or set its title, a
    `[link=...]` rich markup (a `[/link]` it did not open: a MarkupError traceback)."""
    import httpx

    from aigrid.bench import cli
    from aigrid.bench.runner import Result, Run

    listed = {"data": [{"id": "m\x1b]0;owned\x1b\\[link=file:///x]y[/link]"}]}
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, json=listed))

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        failed = Result(0, 0.0, 0.0, 1, 0, 500, False, None, None, None, error="HTTP 500: \x1b[2J\x9b31m\u202efake")
        return Run([failed], 1.0, 0.1, config, 1)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", "http://127.0.0.1:8080/v1", "-n", "1", "--quiet"])
    assert r.exit_code == 1, r.output
    assert not any(c in r.output for c in "\x1b\x9b\u202e"), repr(r.output)
    out = "".join(r.output.split())
    assert "0/1ok" in out and "\\x1b[2J" in out and "[link=file:///x]y[/link]" in out, out


def test_a_peers_failure_is_one_cell_of_compare_md() -> None:
    """compare.md wrote a failed peer's message as it was: its `|` added columns, its HTML was rendered by a
    Markdown viewer."""
    from aigrid.bench.compare import markdown

    report = {"machine": {"nproc": 2, "cpu": "x", "python": "3.11"}, "pinned": False, "versions": {},
              "targets": {"litellm": {"error": "boom | <img src=x onerror=alert(1)> [a](javascript:x)\nmore"}}}
    row = next(line for line in markdown(report).splitlines() if line.startswith("| litellm"))
    assert row.replace("\\|", "").count("|") == 10 and "<img" not in row and "](" not in row.replace("\\]", ""), row


@pytest.mark.parametrize("given", ["127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"])
def test_a_url_without_its_scheme_is_plain_http(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """`aigrid bench 127.0.0.1:8080/v1` (as curl takes it) said "Request URL is missing an 'http://' or 'https://'
    protocol (is the server up at 127.0.0.1:8080/v1?)" (7 Dec 2026, thirty-second session); with --model each of
    its requests failed so. The gateway's plain HTTP is meant: the models are asked there, the run goes there."""
    import httpx

    from aigrid.bench import cli
    from aigrid.bench.runner import Run

    asked: list[str] = []
    ran: list[list[str]] = []

    def get(url: str, **kw: object) -> httpx.Response:
        asked.append(url)
        return httpx.Response(200, json={"data": [{"id": "m"}]})

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        ran.append(urls)
        return Run([], 1.0, 0.1, config, 1)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", given, "-n", "1", "--quiet"])
    assert asked == ["http://127.0.0.1:8080/v1/models"] and ran == [["http://127.0.0.1:8080/v1"]], (r.output, asked)
    assert "missing an" not in r.output, r.output


def test_a_url_that_refuses_connections_is_named() -> None:
    import socket

    with socket.socket() as held:  # bound, not listening: a connection to it is refused
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
        r = runner.invoke(app, ["bench", url, "--quiet", "-n", "1"])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"GET {url}/models: " in said and "refused" in said, r.output


def test_the_runs_summary_is_one_line_under_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary (requests ok and failed, rates, goodput, the client's CPU) was the table's caption: wrapped to
    the table's width and centred, three broken lines (`goodput 0.00 req/s (0%` / `within TTFT<=1000ms, ...`)
    on a terminal of any width and in a log. It is one line now."""
    monkeypatch.setenv("COLUMNS", "80")
    r = runner.invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", "-n", "2", "--rate", "100", "--timeout", "2"])
    assert r.exit_code == 1, r.output  # nothing listens there: both fail
    line = [x for x in r.output.splitlines() if "0/2 ok, 2 failed" in x]
    assert len(line) == 1 and "goodput 0.00 req/s (0% within TTFT<=1000ms" in line[0], r.output
    assert line[0].rstrip().endswith("of a core") or "send lag p99" in line[0], r.output


@pytest.mark.parametrize(("given", "error", "says"), [
    # vLLM, SGLang and the emulator answer a base URL without /v1 so: every request, no word of why
    ("http://127.0.0.1:8000", "HTTP 404: {\"detail\":\"Not Found\"}",
     "hint: http://127.0.0.1:8000 answered HTTP 404: give the OpenAI base URL, the one that ends in /v1 "
     "(e.g. http://127.0.0.1:8000/v1)"),
    ("http://127.0.0.1:8000/v1", "connect failed: [Errno 111] Connection refused",
     "hint: no request connected: is the server up at http://127.0.0.1:8000/v1?"),
])
def test_a_run_that_served_nothing_says_why(monkeypatch: pytest.MonkeyPatch, given: str, error: str,
                                           says: str) -> None:
    """With --model (no GET /models first to say so) a base URL without its /v1, or nothing listening, was a table
    of dashes and `3 x HTTP 404: ...` (7 Dec 2026, thirty-third session): the cause is said now."""
    from aigrid.bench import cli
    from aigrid.bench.runner import Result, Run

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        failed = Result(0, 0.0, 0.0, 1, 0, 404, False, None, None, None, error=error)
        return Run([failed, failed], 1.0, 0.1, config, 2)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", given, "--model", "m", "-n", "2", "--quiet"])
    assert r.exit_code == 1 and says in " ".join(r.output.split()), r.output


def test_a_404_at_a_v1_url_is_no_hint_to_add_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.bench import cli
    from aigrid.bench.runner import Result, Run

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        return Run([Result(0, 0.0, 0.0, 1, 0, 404, False, None, None, None, error="HTTP 404: no model m")], 1.0,
                   0.1, config, 1)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", "http://127.0.0.1:8000/v1/", "--model", "m", "-n", "1", "--quiet"])
    assert r.exit_code == 1 and "1 x HTTP 404" in r.output and "hint" not in r.output, r.output


@pytest.mark.parametrize(("given", "says"), [
    ("http://[::1", "'http://[::1': Invalid IPv6 URL"),
    ("http://127.0.0.1:99999/v1", "'http://127.0.0.1:99999/v1': Port out of range"),
    ("https://127.0.0.1:8000/v1", "'https://127.0.0.1:8000/v1': the load generator speaks plain http:// only"),
])
def test_a_url_the_run_cannot_use_is_refused_naming_it_before_any_request(monkeypatch: pytest.MonkeyPatch, given: str,
                                                                        says: str) -> None:
    """`aigrid bench 'http://[::1' --model m` said "error: Invalid IPv6 URL" (no URL named) from inside the run, and
    without --model an https URL asked its models first, then was refused (7 Dec 2026, thirty-third session)."""
    import httpx

    asked: list[str] = []
    monkeypatch.setattr(httpx, "get", lambda url, **kw: asked.append(url))
    for model in (["--model", "m"], []):
        r = runner.invoke(app, ["bench", given, *model, "-n", "1", "--quiet"])
        assert r.exit_code == 2 and r.output.startswith(f"error: {says}"), r.output
    assert asked == [], asked


def test_an_error_line_is_one_line_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`3 x HTTP 404: {"error":{"message":"no route POST` / `/chat/completions",...` was cut at 80 columns in the
    middle of the target's answer (7 Dec 2026, thirty-third session), as the hint and summary lines are not."""
    from aigrid.bench import cli
    from aigrid.bench.runner import Result, Run

    error = 'HTTP 404: {"error":{"message":"no route POST /chat/completions","type":"invalid_request_error"}}'

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        return Run([Result(0, 0.0, 0.0, 1, 0, 404, False, None, None, None, error=error)], 1.0, 0.1,
                   config, 1)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", "http://127.0.0.1:8000/v1", "--model", "m", "-n", "1", "--quiet"],
                      env={"COLUMNS": "80"})
    assert r.exit_code == 1 and f"1 x {error}\n" in r.output, r.output


def test_plots_of_a_run_where_every_request_failed_warn_of_nothing(tmp_path: Path) -> None:
    """`aigrid bench ... --out DIR` against nothing listening printed matplotlib's "UserWarning: No artists with labels
    found to put in legend" with report.py's path and source line (7 Dec 2026, thirty-third session)."""
    import warnings

    from aigrid.bench.report import write_plots
    from aigrid.bench.runner import Result, Run, RunConfig

    config = RunConfig(("http://127.0.0.1:1/v1",), "m", chat=True, stream=True, concurrency=0, timeout_s=1.0,
                       unique_prompts=True, headers=())
    failed = Result(0, 0.0, None, 1, 0, 0, False, None, None, None, error="connect failed: refused")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_plots(tmp_path, Run([failed], 1.0, 0.1, config, 1))
    assert [p.name for p in written] == ["ttft_cdf.png", "latency_over_time.png", "itl_hist.png"]
    assert not [w for w in caught if "legend" in str(w.message)], [str(w.message) for w in caught]


SECRET_URL = "http://ann:s3cret@127.0.0.1:{port}/v1"
"""A base URL with a user:password@ (a proxy's): bench's errors quote it as user:***@."""


@pytest.mark.parametrize(("given", "says"), [
    ("http://ann:s3cret@127.0.0.1:99999/v1", "error: 'http://ann:***@127.0.0.1:99999/v1': Port out of range"),
    ("https://ann:s3cret@127.0.0.1:8000/v1", "error: 'https://ann:***@127.0.0.1:8000/v1': the load generator "
                                             "speaks plain http:// only"),
    ("http://ann:s3cret@[::1/v1", "error: 'http://ann:***@[::1/v1': Invalid IPv6 URL"),
])
def test_a_urls_password_is_not_printed_by_its_check(given: str, says: str) -> None:
    """The URL check of 87f3a326 quoted a URL as given, `user:password@` and all (7 Dec 2026, thirty-third
    session): the password is `***` now, as the spec's errors quote an endpoint's URL (url_without_password)."""
    r = runner.invoke(app, ["bench", given, "--model", "m", "-n", "1", "--quiet"])
    assert r.exit_code == 2 and r.output.startswith(says) and "s3cret" not in r.output, r.output


@pytest.mark.parametrize("answer", [404, None])
def test_a_urls_password_is_not_printed_by_get_models(monkeypatch: pytest.MonkeyPatch, answer: int | None) -> None:
    """GET /models' errors (an HTTP status, no server there) named the URL with its password (thirty-third
    session)."""
    import socket

    import httpx

    with socket.socket() as held:  # bound, not listening: a connection to it is refused
        held.bind(("127.0.0.1", 0))
        url = SECRET_URL.format(port=held.getsockname()[1])
        if answer is not None:
            monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(answer, text="Not Found"))
        r = runner.invoke(app, ["bench", url, "-n", "1", "--quiet"])
    said = " ".join(r.output.split())
    shown = url.replace("s3cret", "***")
    assert r.exit_code == 2 and f"GET {shown}/models" in said and "s3cret" not in said, said
    if answer is None:
        assert f"is the server up at {shown}?" in said, said


@pytest.mark.parametrize(("path", "error", "says"), [
    ("", "HTTP 404: {\"detail\":\"Not Found\"}", "hint: http://ann:***@127.0.0.1:8000 answered HTTP 404"),
    ("/v1", "connect failed: [Errno 111] Connection refused",
     "hint: no request connected: is the server up at http://ann:***@127.0.0.1:8000/v1?"),
])
def test_a_urls_password_is_not_printed_after_the_run(monkeypatch: pytest.MonkeyPatch, path: str, error: str,
                                                     says: str) -> None:
    """The hints after a run that served nothing, and the table's title, named the URL with its password
    (thirty-third session)."""
    from aigrid.bench import cli
    from aigrid.bench.runner import Result, Run

    def fake_run(urls: list[str], plans: list[object], config: object, **kw: object) -> Run:
        failed = Result(0, 0.0, 0.0, 1, 0, 404, False, None, None, None, error=error)
        return Run([failed, failed], 1.0, 0.1, config, 2)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "run_bench", fake_run)
    r = runner.invoke(app, ["bench", f"http://ann:s3cret@127.0.0.1:8000{path}", "--model", "m", "-n", "2"],
                      env={"COLUMNS": "300"})
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and says in said and "s3cret" not in said, said
    assert "against http://ann:***@127.0.0.1:8000" in said, said  # the table's title


def test_a_urls_password_is_not_written_to_bench_json() -> None:
    """bench.json's summary listed the run's URLs as given, `user:password@` and all, where every line printed
    quotes them as user:***@ (50337286): the file is what a run's results are shared as (review, thirty-third
    session)."""
    from aigrid.bench.report import Slo, summary
    from aigrid.bench.runner import Result, Run, RunConfig

    config = RunConfig(("http://ann:s3cret@127.0.0.1:8000/v1",), "m")
    failed = Result(0, 0.0, 0.0, 1, 0, 404, False, None, None, None, error="HTTP 404")
    s = summary(Run([failed], 1.0, 0.1, config, 1), Slo())
    assert s["urls"] == ["http://ann:***@127.0.0.1:8000/v1"], s["urls"]
