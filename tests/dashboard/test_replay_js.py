"""The page's own replay code (static/replay.js) run in node: parseCsv reads any RFC 4180 file as Python's csv
module does (quoted commas, doubled quotes, line breaks inside a cell), and the Replay shows the scenario's names
as written, the simulator's CSV writer's formula guards taken off. Skipped without node."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aigrid.printable import spreadsheet_cell, spreadsheet_writer

REPLAY_JS = Path(__file__).resolve().parents[2] / "src" / "aigrid" / "dashboard" / "static" / "replay.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node: the page's replay.js is not tried")


def node(tmp_path: Path, body: str, data: object) -> Any:
    """`body` run as a module with replay.js as R (parseCsv, parseSites and Replay by name) and `data` (JSON) read from
    stdin as `data`; what it writes with out(value) comes back, from JSON."""
    module = tmp_path / "replay.mjs"
    shutil.copy(REPLAY_JS, module)
    script = (f"import * as R from {json.dumps(module.as_uri())}; const {{parseCsv, parseSites, Replay}} = R;"
              "import {readFileSync} from 'fs'; const data = JSON.parse(readFileSync(0, 'utf8'));"
              "const out = v => process.stdout.write(JSON.stringify(v));" + body)
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], input=json.dumps(data),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CELLS = ["plain", "a,b", 'say "hi"', "two\nlines", "crlf\r\nin it", "lone\rcr", "", '""', "trailing\n", "é ✓"]


def files() -> list[str]:
    """CSV texts with every kind of cell, as Python's csv writes them (minimal and full quoting, CRLF and LF
    records), and by hand: no line break at the end, blank lines between records, a quoted empty cell."""
    texts = []
    for quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_NONNUMERIC, csv.QUOTE_ALL):  # minimal with LF: a CR unquoted
        for terminator in ("\r\n", "\n"):
            out = io.StringIO()
            w = csv.writer(out, quoting=quoting, lineterminator=terminator)
            w.writerow(["policy", "tenant", "site", "n"])
            for i, cell in enumerate(CELLS):
                w.writerow(["p", cell, CELLS[-1 - i], i])
            texts.append(out.getvalue())
    texts.append('policy,tenant\r\n"x","a\r\nb"\r\n\r\ny,""\n\nz,"q""" ')
    texts.append('policy,tenant\ra,"b\rc"\rd,e')
    return texts


def test_parse_csv_reads_what_pythons_csv_reads(tmp_path: Path) -> None:
    """parseCsv split the file into lines first: a cell with a line break (a scenario's or tenant's name) broke its
    row in two, and each half read as a row of its own."""
    texts = files()
    parsed = node(tmp_path, "out(data.map(parseCsv));", texts)
    for text, rows in zip(texts, parsed, strict=True):
        expected = [{k: v or "" for k, v in row.items() if k is not None}  # a missing cell "", extras dropped
                    for row in csv.DictReader(io.StringIO(text, newline=""))]
        assert rows == expected, repr(text)
    assert parsed[0][3]["tenant"] == "two\nlines" and len(parsed[0]) == len(CELLS)


def test_parse_csv_drops_a_byte_order_mark_and_pads_short_rows(tmp_path: Path) -> None:
    rows = node(tmp_path, "out(parseCsv(data));", "\ufeffpolicy,site,ttft_ms\r\nbalanced,a\r\n")
    assert rows == [{"policy": "balanced", "site": "a", "ttft_ms": ""}]


NAMES = {"site": "us;=east", "tenant": "=agent\n@SUM(1)", "client_city": "-Sao;+Paulo", "policy": "@near,=x"}


def test_the_replay_shows_the_names_the_writer_guarded(tmp_path: Path) -> None:
    """The simulator's writer puts a ' before formula-like text (printable.spreadsheet_cell): the page showed it,
    and a site's guarded id in requests.csv matched no site in sites.json (drawn nowhere, 'sites without
    coordinates'). The guards come off; a cell that only looks guarded is left alone."""
    out = io.StringIO()
    w = spreadsheet_writer(out)
    w.writerow(["policy", "request", "arrival_s", "tenant", "status", "endpoint", "site", "ttft_ms", "e2e_ms",
                "output_tokens", "client_city", "client_lat", "client_lon"])
    for i in range(3):
        w.writerow([spreadsheet_cell(NAMES["policy"]), i, 0.5 * i, spreadsheet_cell(NAMES["tenant"]), "ok",
                    spreadsheet_cell("us;=east/m/0"), spreadsheet_cell(NAMES["site"]), 120.5, 900.0, 64,
                    spreadsheet_cell(NAMES["client_city"]), -23.55, -46.63])
    text = out.getvalue()
    assert "'=" in text and "'@" in text and "'-" in text  # the writer's guards are there to take off
    shown = node(tmp_path, """
      const r = new Replay(parseCsv(data.csv), parseSites(data.sites));
      const d = r.advance(10).decisions[0];
      out({policies: r.policies, missing: [...r.missing], decision: d});""",
                 {"csv": text, "sites": {"sites": [{"id": NAMES["site"], "lat": 39, "lon": -77, "slots": 4}]}})
    assert shown["policies"] == [NAMES["policy"]] and shown["missing"] == []
    d = shown["decision"]
    assert (d["tenant"], d["site"], d["place"], d["served_by"]) == (
        NAMES["tenant"], NAMES["site"], NAMES["client_city"], "us;=east/m/0")
    plain = ["'quoted", "it's", "a'=b", "'", "", "''=x", "a;''=x"]
    assert node(tmp_path, "out(data.map(R.unguard));", plain) == plain


def test_a_site_named_like_an_objects_own_property_replays(tmp_path: Path) -> None:
    """The replay counted per site on plain objects: a site `constructor` or `toString` started from Object's own
    function (its load a string, NaN), and `__proto__` threw at the first TTFT, which stopped the whole replay."""
    names = ["constructor", "toString", "__proto__", "hasOwnProperty"]
    out = io.StringIO()
    w = spreadsheet_writer(out)
    w.writerow(["policy", "request", "arrival_s", "status", "site", "ttft_ms", "e2e_ms", "output_tokens"])
    for i, name in enumerate(names):
        w.writerow(["p", i, 1.0, "ok", name, 100.0 + i, 60000.0, 10])
    shown = node(tmp_path, """
      const sites = parseSites({sites: data.names.map((id, i) => ({id, lat: i, lon: i})),
                                endpoints: data.names.map(site => ({site, slots: 2}))});
      const r = new Replay(parseCsv(data.csv), sites);
      out({slots: sites.map(s => s.slots), sites: r.advance(5).sites});""", {"csv": out.getvalue(), "names": names})
    assert shown["slots"] == [2, 2, 2, 2]
    assert [(s["id"], s["running"], s["load"], s["ttft_ms"]) for s in shown["sites"]] == [
        (name, 1, 0.5, 100.0 + i) for i, name in enumerate(names)]


def test_a_site_or_client_without_a_usable_place_is_not_drawn(tmp_path: Path) -> None:
    """A latitude that is no number (or off the globe) went into the map's SVG as NaN: one console error per
    element and tick, an arc to nowhere. Such a site is left out (as one without coordinates), such a client has
    no arc; the rest replay."""
    sites = [{"id": "ok", "lat": "35.5", "lon": 139}, {"id": "text", "lat": "north", "lon": 0},
             {"id": "far", "lat": 91, "lon": 0}, {"id": "empty", "lat": "", "lon": ""}, None]
    text = ("policy,request,arrival_s,status,site,e2e_ms,client_lat,client_lon\r\n"
            "p,0,1,ok,ok,100,48.8,2.3\r\np,1,1,ok,ok,100,x,2.3\r\np,2,1,ok,ok,100,,\r\np,3,1,ok,ok,100,12,181\r\n")
    shown = node(tmp_path, """
      const sites = parseSites({sites: data.sites});
      out({sites: sites.map(s => [s.id, s.lat, s.lon]),
           clients: new Replay(parseCsv(data.csv), sites).advance(5).decisions.map(d => d.client)});""",
                 {"sites": sites, "csv": text})
    assert shown["sites"] == [["ok", 35.5, 139]]
    assert shown["clients"] == [{"lat": 48.8, "lon": 2.3}, None, None, None]


def test_a_sites_ttft_is_held_between_its_arrivals_with_its_age(tmp_path: Path) -> None:
    """A site's TTFT was the mean of that tick's arrivals only: a busy run's cards read 'TTFT n/a' most ticks
    while the chart drew a line through them. It is the mean over the last TTFT_WINDOW_S simulated seconds now,
    else the last value with its age (the card and the chart plot the same); a run's first request (at 0 s) is
    replayed too (seek(0) counted it as already past)."""
    text = ("policy,request,arrival_s,status,site,ttft_ms,e2e_ms,output_tokens\r\n"
            "p,0,0,ok,a,100,10,1\r\np,1,4,ok,a,200,10,1\r\np,2,30,ok,a,600,10,1\r\np,3,31,ok,b,50,10,1\r\n")
    shown = node(tmp_path, """
      const r = new Replay(parseCsv(data.csv), [{id: 'a', lat: 0, lon: 0}, {id: 'b', lat: 1, lon: 1}]);
      const ticks = [];
      for (const dt of [1, 4, 9, 2, 10, 17]) {
        const o = r.advance(dt);
        ticks.push({t: r.t, arrived: o.decisions.map(d => d.id), seen: r.next,
                    a: [o.sites[0].ttft_ms, o.sites[0].ttft_age_s], b: [o.sites[1].ttft_ms, o.sites[1].ttft_age_s]});
      }
      r.seek(20);
      const back = r.advance(1).sites[0];
      out({window: R.TTFT_WINDOW_S, ticks, back: [back.ttft_ms, back.ttft_age_s]});""", {"csv": text})
    assert shown["window"] == 10
    t = shown["ticks"]
    assert [x["t"] for x in t] == [1, 5, 14, 16, 26, 31]
    assert t[0]["arrived"] == ["p#0"] and [x["seen"] for x in t] == [1, 2, 2, 2, 2, 4]
    assert [x["a"] for x in t] == [[100, None], [150, None], [200, 10], [200, 12], [200, 22], [600, None]]
    assert [x["b"] for x in t] == [[None, None]] * 5 + [[50, None]]
    assert shown["back"] == [200, 17]  # after a seek: the last value before it, its age from there
