// The page: wires the live feed (or a replay) to the map, the per-site charts and the decisions table.
// Read-only: it only ever GETs from the gateway.

import {GridMap} from "./map.js";
import {SiteCharts} from "./charts.js";
import {DecisionTable} from "./table.js";
import {follow} from "./live.js";
import {Replay, parseCsv, parseSites} from "./replay.js";
import {simTime, utcTime} from "./time_text.js";

const $ = id => document.getElementById(id);
const map = new GridMap($("map"));
const charts = new SiteCharts($("site-cards"), $("site-count"));
const table = new DecisionTable(document.querySelector("#decisions tbody"), $("decision-count"));
let stopLive = null, replay = null, replayTimer = null, lastGrid = null, playing = true;
let shownAt = null;  // the time of the live picture on the page (the last grid event), null when none
let tickS = 1, pictureSeen = null;  // the feed's tick (hello's interval_s); when its last picture came (ms, monotonic)

// The numbers of the site tapped, clicked or chosen with Enter on the map, in a line under it (kept up to date with
// each picture; the same site again, or Escape, closes it): a site's tooltip is read on hover only, and a site
// without a card (a grid of more than 12) had its numbers nowhere else.
let siteShown = null;

function renderSiteInfo() {
  const box = $("site-info"), text = siteShown == null ? null : map.describe(siteShown);
  box.hidden = text == null;
  // written only when it changed: the line is aria-live, and a screen reader re-read the same numbers each picture
  if (box.textContent !== (text || "")) box.textContent = text || "";
  // each site button says whether the line it controls is open for it (aria-expanded, aria-controls="site-info"):
  // the map writes the one that was open and the one opened, never every site's each picture
  map.setExpanded(text == null ? null : siteShown);
}

function showSite(ev) {
  const g = ev.target.closest && ev.target.closest("g.site");
  if (!g) return;
  if (ev.type === "keydown") {
    if (ev.key !== "Enter" && ev.key !== " ") return;
    ev.preventDefault();
  }
  siteShown = siteShown === g.dataset.site ? null : g.dataset.site;
  renderSiteInfo();
}

$("map-sites").addEventListener("click", showSite);
$("map-sites").addEventListener("keydown", showSite);
document.addEventListener("keydown", ev => {
  if (ev.key === "Escape" && siteShown != null) { siteShown = null; renderSiteInfo(); }
});

function setMode(text, cls) {
  const badge = $("mode");
  badge.textContent = text;
  badge.className = "badge " + (cls || "");
  document.body.dataset.mode = cls || text;
}

function askKey() {
  const form = $("key-form");
  form.hidden = false;
  return new Promise(resolve => {
    form.onsubmit = ev => { ev.preventDefault(); form.hidden = true; resolve($("key-input").value.trim()); };
  });
}

const utc = at => utcTime(at) + " UTC";

// The feed lost (the gateway stopped, the network dropped): what the page shows is the last picture, marked stale
// and dated. The badge alone said "reconnecting" beside green sites, "ok" cards and a clock that had just stopped.
function liveStatus(s) {
  setMode(s, s === "live" ? "live" : s === "connecting" ? "" : "error");
  if (s === "live") delete document.body.dataset.stale;
  else if (shownAt != null) {
    document.body.dataset.stale = "1";
    $("clock").textContent = "last update " + utc(shownAt);
  }
}

// A feed whose connection stays open but that sends nothing (the gateway's event loop stuck, a proxy holding the
// connection) is as lost as a dropped one: the badge said "live" over a picture that had stopped. No picture for
// STALL_TICKS ticks (at least STALL_MIN_S) is shown as stale; the next picture on that connection makes it live.
const STALL_TICKS = 5, STALL_MIN_S = 5;

function watchStall() {
  if (!stopLive || pictureSeen == null || document.body.dataset.mode !== "live") return;
  if (performance.now() - pictureSeen > 1000 * Math.max(STALL_MIN_S, STALL_TICKS * tickS)) liveStatus("stalled");
}

function startLive() {
  stopReplay();
  charts.reset(); table.reset(); map.clearArcs();
  shownAt = null; pictureSeen = null;
  $("live-button").hidden = true;
  $("time-column").textContent = "time (UTC)";
  stopLive = follow("/dashboard/events", {
    askKey,
    onStatus: liveStatus,
    onEvent: (name, data) => {
      if (name === "hello") {
        $("grid-name").textContent = data.name;
        if (data.interval_s > 0) tickS = data.interval_s;
        // a new connection's first message: the stall is counted from it, not from the picture before a drop (one
        // longer than the stall's bound showed a feed back and live as 'stalled' until its first picture)
        pictureSeen = performance.now();
      } else if (name === "grid") {
        lastGrid = data;
        shownAt = data.at;
        pictureSeen = performance.now();
        map.setSites(data.sites);
        renderSiteInfo();
        charts.push(data.sites);
        $("clock").textContent = utc(data.at);
      } else if (name === "decisions") {
        table.upsert(data);
        map.addArcs(data);
      }
    },
  });
}

function stopReplay() {
  if (replayTimer) clearInterval(replayTimer);
  replayTimer = null;
  replay = null;
  $("replay-bar").hidden = true;
  $("summary").hidden = true;
}

// summary.json's figures per policy, named for an operator: goodput and mean_utilization are fractions (0.97 read
// as a count or ms), shown as percentages.
const SUMMARY = [
  {key: "ttft_p50_ms", label: "TTFT p50 (ms)"},
  {key: "ttft_p99_ms", label: "TTFT p99 (ms)"},
  {key: "goodput", label: "goodput", percent: true, title: "share of all requests served within their SLO"},
  {key: "cost_usd", label: "cost (USD)"},
  {key: "rejected", label: "rejected", title: "requests not served"},
  {key: "mean_utilization", label: "mean utilization", percent: true,
   title: "mean over endpoints of the share of their capacity in use"},
];

function renderSummary(summary) {
  const box = $("summary");
  const policies = summary && summary.policies;
  if (!policies) { box.hidden = true; return; }
  const t = document.createElement("table");
  const head = t.insertRow();
  for (const [label, title] of [["policy", ""], ...SUMMARY.map(c => [c.label, c.title])]) {
    const th = head.appendChild(document.createElement("th"));
    th.textContent = label;
    if (title) th.title = title;
  }
  for (const [name, m] of Object.entries(policies)) {
    const r = t.insertRow();
    r.insertCell().textContent = name;
    for (const c of SUMMARY) {
      const v = m[c.key];
      r.insertCell().textContent = v == null ? "\u2013" : typeof v !== "number" ? v
        : c.percent ? Number((v * 100).toPrecision(3)) + "%"
        : Math.abs(v) >= 100 ? String(Math.round(v)) : String(Number(v.toPrecision(3)));
    }
  }
  box.replaceChildren(t);
  box.hidden = false;
}

function speed() {
  const v = $("replay-speed").value;
  return v === "auto" ? Math.max(1, replay.duration / 60) : Number(v);
}

// A replay (even one whose files then fail to load) ends the live feed until the user clicks Live: the feed's
// status update on every event put "live" back over a replay's error within one tick. The time column's header
// changes with the rows (startReplay): files that fail to load leave the live rows, on UTC, in the table.
function leaveLive() {
  if (stopLive) { stopLive(); stopLive = null; }
  shownAt = null; pictureSeen = null;
  delete document.body.dataset.stale;
  $("live-button").hidden = false;
}

function startReplay({rows, sites, summary, name}) {
  leaveLive();
  stopReplay();
  charts.reset(); table.reset(); map.clearArcs();
  $("time-column").textContent = "sim time";
  replay = new Replay(rows, sites);
  table.reset(replay.rows.length);
  $("replay-bar").hidden = false;
  setMode("replay", "replay");
  $("grid-name").textContent = name || "simulator run";
  renderSummary(summary);
  const pick = $("replay-policy");
  pick.replaceChildren(...replay.policies.map(p => new Option(p, p)));
  pick.onchange = () => { replay.select(pick.value); table.reset(replay.rows.length); map.clearArcs(); charts.reset(); };
  const notes = [];
  if (!replay.hasClients) notes.push("requests.csv has no client_lat/client_lon: no arcs");
  if (replay.missing.size) notes.push(`${replay.missing.size} sites without coordinates (add sites.json)`);
  $("replay-note").textContent = notes.join("; ");
  playing = true;
  $("replay-play").textContent = "Pause";
  let last = performance.now();
  replayTimer = setInterval(() => {
    const now = performance.now(), dt = (now - last) / 1000;
    last = now;
    if (!playing || !replay) return;
    const out = replay.advance(dt * speed());
    map.setSites(out.sites);
    renderSiteInfo();
    charts.push(out.sites);
    table.upsert(out.decisions, false, replay.next);
    map.addArcs(out.decisions);
    $("replay-time").textContent = `t = ${simTime(replay.t)} / ${simTime(replay.duration)} (${replay.policy})`;
    $("replay-seek").value = String(Math.round(1000 * replay.t / Math.max(replay.duration, 1e-9)));
    $("clock").textContent = "sim " + simTime(replay.t);
    document.body.dataset.replayT = String(replay.t);
    if (replay.done) { playing = false; $("replay-play").textContent = "Play"; document.body.dataset.replayDone = "1"; }
  }, 500);
}

function authHeaders() {
  const key = sessionStorage.getItem("aigrid-key");
  return key ? {authorization: "Bearer " + key} : {};
}

// Without sites.json a run is drawn on this gateway's own sites (right for a simulation of this grid).
async function orLiveSites(sites) {
  if (sites.length) return sites;
  if (lastGrid) return lastGrid.sites;
  try {
    const r = await fetch("/dashboard/state", {headers: authHeaders(), cache: "no-store"});
    return r.ok ? (await r.json()).grid.sites : [];
  } catch (e) {
    return [];
  }
}

// A replay file that is not JSON (a run cut short, a file of another kind) is named on the badge: it threw out of
// the loader, and the page stayed on "connecting" with the error in the console only.
function parseJson(name, text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${name} is not JSON (${e.message})`);
  }
}

function replayFailed(e) {
  setMode("replay: " + (e && e.message ? e.message : String(e)), "error");
}

async function readFiles(fileList) {
  leaveLive();
  const files = Object.fromEntries([...fileList].map(f => [f.name.replace(/^.*[\\/]/, ""), f]));
  const csv = files["requests.csv"] || Object.values(files).find(f => f.name.endsWith(".csv"));
  if (!csv) { setMode("replay needs requests.csv", "error"); return; }
  const json = async name => (files[name] ? parseJson(name, await files[name].text()) : null);
  const sites = await json("sites.json");
  startReplay({rows: parseCsv(await csv.text()), sites: await orLiveSites(parseSites(sites)),
               summary: await json("summary.json"), name: sites && sites.scenario});
}

// ?replay= names a folder on this origin only, and the key goes to this gateway's own replay route only: a
// link whose ?replay= named another site sent the operator's key (and took the run it shows) from that site.
function replayBase(asked, here) {
  if (asked === "1" || asked === "server") return "/dashboard/replay/";
  let url;
  try { url = new URL(asked.replace(/\/?$/, "/"), here); } catch (e) { return null; }
  return url.origin === new URL(here).origin && asked.startsWith("/") && !asked.startsWith("//")
    ? url.pathname : null;
}

async function fetchRun(base) {
  const ours = base === "/dashboard/replay/";
  let headers = ours ? authHeaders() : {};
  // This gateway lists what its run has (no 404s for optional files); any other directory is just tried.
  let index = ours ? await fetch("/dashboard/replay", {headers, cache: "no-store"}) : null;
  // A tab opened on ?replay=1 has no key yet: ask for it, as the live feed does (it said "no simulator run").
  while (index && (index.status === 401 || index.status === 403)) {
    setMode("needs an API key", "error");
    sessionStorage.setItem("aigrid-key", await askKey());
    headers = authHeaders();
    index = await fetch("/dashboard/replay", {headers, cache: "no-store"});
  }
  const files = index && index.ok ? (await index.json()).files : null;
  const get = async name => {
    if (files && !files.includes(name)) return null;
    const r = await fetch(base + name, {headers, cache: "no-store"});
    return r.ok ? r.text() : null;
  };
  const csv = await get("requests.csv");
  if (csv == null) { setMode("no simulator run at " + base, "error"); return; }
  const sitesText = await get("sites.json"), summary = await get("summary.json");
  const sites = sitesText ? parseJson("sites.json", sitesText) : null;
  startReplay({rows: parseCsv(csv), sites: await orLiveSites(parseSites(sites)),
               summary: summary ? parseJson("summary.json", summary) : null, name: sites && sites.scenario});
}

$("replay-files").addEventListener("change", ev => readFiles(ev.target.files).catch(replayFailed));
$("live-button").addEventListener("click", () => { history.replaceState(null, "", "/dashboard"); startLive(); });
// A seek: the table shows the requests arrived by the new time, not the rows of the time left (a seek back showed
// requests yet to arrive, under "so far").
function seekReplay(t) {
  replay.seek(t);
  map.clearArcs();
  table.reset(replay.rows.length);
  table.upsert(replay.arrivedDecisions(), false, replay.next);
}

$("replay-play").addEventListener("click", () => {
  if (replay && replay.done) seekReplay(0);
  playing = !playing;
  $("replay-play").textContent = playing ? "Pause" : "Play";
});
$("replay-seek").addEventListener("input", ev => {
  if (replay) seekReplay(replay.duration * Number(ev.target.value) / 1000);
});
setInterval(() => { map.fade(); watchStall(); }, 500);

map.loadLand("/dashboard/static/countries-110m.json").catch(e => console.error("map outline:", e));
const asked = new URLSearchParams(location.search).get("replay");
if (asked) {
  // ?replay=1 reads the run this gateway serves at /dashboard/replay/; ?replay=/some/path/ a folder on this origin.
  const base = replayBase(asked, location.href);
  if (base) fetchRun(base).catch(replayFailed);
  else setMode("replay: only a folder on this gateway (?replay=1 or ?replay=/path/)", "error");
} else {
  startLive();
}
