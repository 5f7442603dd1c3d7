// Replay a simulator run on the map: requests.csv (one row per request and policy), with summary.json and
// sites.json when present. Virtual time runs `speed` times faster than the wall clock; each tick yields the
// grid state (in flight per site, TTFT, tokens/s) and the decisions that arrived, in the live feed's shapes.
//
// requests.csv columns used: policy, request, arrival_s, tenant, status, endpoint, site, ttft_ms, e2e_ms,
// output_tokens, and client_lat / client_lon / client_city when the simulator writes them (arcs need them).
// sites.json: {"sites": [{id, name, lat, lon, jurisdiction, slots}]} or {"sites": {id: {...}}}; the
// gateway's own /v1/grid answer also works (slots summed from its endpoints).

// RFC 4180: a quoted cell may hold commas, doubled quotes and line breaks (CR, LF or CRLF); records end at CRLF, LF
// or CR outside quotes; a blank line is no record (as Python's csv.DictReader); a leading byte-order mark is dropped.
// Each row is an object keyed by the header's cells, "" for a cell the row lacks. Cells are returned as written.
export function parseCsv(text) {
  const records = [];
  let row = [], cur = "", quoted = false, started = false;
  const end = () => {
    if (started) { row.push(cur); records.push(row); }
    row = []; cur = ""; started = false;
  };
  const special = /[",\r\n]/g;
  for (let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; i < text.length;) {
    const ch = text[i];
    if (quoted) {  // up to the next quote: the cell's end, or a doubled quote (an unclosed one takes the rest)
      const q = text.indexOf('"', i);
      cur += text.slice(i, q < 0 ? text.length : q);
      if (q < 0) break;
      if (text[q + 1] === '"') { cur += '"'; i = q + 2; } else { quoted = false; i = q + 1; }
    } else if (ch === '"') { quoted = true; started = true; i++; }
    else if (ch === ",") { row.push(cur); cur = ""; started = true; i++; }
    else if (ch === "\n" || ch === "\r") { i += ch === "\r" && text[i + 1] === "\n" ? 2 : 1; end(); }
    else {  // a run of plain text
      special.lastIndex = i;
      const j = special.exec(text) ? special.lastIndex - 1 : text.length;
      cur += text.slice(i, j); started = true; i = j;
    }
  }
  end();
  const header = records[0] || [];
  return records.slice(1).map(cells => {
    const row = {};
    header.forEach((h, i) => { row[h] = cells[i] ?? ""; });
    return row;
  });
}

// A text cell as the scenario wrote it: the simulator's CSV writer (printable.spreadsheet_cell) puts a ' before
// text a spreadsheet would run as a formula (= + - @ tab CR at its start; = + - @ after a , ; tab or line break
// inside it). The page takes those guards off, so that names read as written and a site's id in requests.csv
// matches its id in sites.json; a name that itself held such a ' shows without it.
export function unguard(cell) {
  if (!cell || !cell.includes("'")) return cell || "";
  return cell.replace(/^'(?=[=+\-@\t\r])/, "").replace(/([,;\t\r\n])'(?=[=+\-@])/g, "$1");
}

const num = v => (v === "" || v == null ? null : Number(v));

// A site's TTFT in a replay is the mean over the requests that reached it in the last TTFT_WINDOW_S simulated
// seconds (or the tick, when longer); with none there, its last value, with its age. Each tick's own arrivals alone
// left most ticks of a busy run without a TTFT: the card read "n/a" beside a chart that drew a line.
export const TTFT_WINDOW_S = 10;
const SHOWN_PER_TICK = 60;

// {lat, lon} when both are numbers on the globe, else null: a site or client without a usable place is not drawn
// (a NaN went into the SVG's attributes, one console error per element and tick).
function point(lat, lon) {
  const [y, x] = [num(lat), num(lon)];
  return Number.isFinite(y) && Number.isFinite(x) && Math.abs(y) <= 90 && Math.abs(x) <= 180 ? {lat: y, lon: x} : null;
}

export function parseSites(obj) {
  if (!obj) return [];
  const raw = obj && obj.sites ? obj.sites : obj;
  const list = Array.isArray(raw) ? raw : Object.entries(raw || {}).map(([id, s]) => ({id, ...s}));
  const slots = Object.create(null);  // by site id (a site `constructor` is no Object's own)
  for (const e of (obj && obj.endpoints) || []) slots[e.site] = (slots[e.site] || 0) + (e.slots || 1);
  return list.filter(s => s && point(s.lat, s.lon))
    .map(s => ({id: s.id, name: s.name || s.id, lat: +s.lat, lon: +s.lon, jurisdiction: s.jurisdiction || "",
                slots: +(s.slots ?? slots[s.id] ?? 1)}));
}

export class Replay {
  constructor(rows, sites, policy) {
    // the names as the scenario wrote them (the CSV writer's formula guards off); numbers as they are
    this.all = rows.map(r => ({...r, policy: unguard(r.policy) || "run", site: unguard(r.site),
                               endpoint: unguard(r.endpoint), tenant: unguard(r.tenant),
                               client_city: unguard(r.client_city)}));
    this.sites = new Map(sites.map(s => [s.id, s]));
    this.policies = [...new Set(this.all.map(r => r.policy))];
    this.hasClients = rows.length > 0 && "client_lat" in rows[0] && "client_lon" in rows[0];
    this.missing = new Set();
    this.select(policy || this.policies[0]);
  }

  select(policy) {
    this.policy = policy;
    this.rows = this.all.filter(r => r.policy === policy).map(r => ({
      id: `${policy}#${r.request}`, t: num(r.arrival_s) ?? 0, site: r.site || null, endpoint: r.endpoint || null,
      status: r.status || "ok", ttft: num(r.ttft_ms), e2e: num(r.e2e_ms), tokens: num(r.output_tokens) ?? 0,
      tenant: r.tenant || "", city: r.client_city || "",
      client: this.hasClients ? point(r.client_lat, r.client_lon) : null,
    })).sort((a, b) => a.t - b.t);
    for (const r of this.rows) if (r.site && !this.sites.has(r.site)) this.missing.add(r.site);
    this.duration = this.rows.length ? this.rows[this.rows.length - 1].t : 0;
    this.seek(0);
  }

  seek(t) {
    this.t = Math.max(0, Math.min(t, this.duration));
    let lo = 0, hi = this.rows.length;
    // the rows before t have arrived; those at t arrive with the next advance (at seek(0) a run's first requests,
    // at 0 s, were counted as already past and never shown)
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.rows[mid].t < this.t) lo = mid + 1; else hi = mid; }
    this.next = lo;
    this.active = this.rows.slice(0, lo).filter(r => r.status === "ok" && r.t + (r.e2e ?? 0) / 1000 > this.t)
      .map(r => ({end: r.t + (r.e2e ?? 0) / 1000, site: r.site, tokens: r.tokens}));
    this.lastTtft = Object.create(null);  // site -> {ms, t}: its latest request's TTFT and when it arrived
    this.recentTtft = [];                 // {t, site, ms} of the requests in the window, oldest first
    for (let i = 0; i < lo; i++) this.noteTtft(this.rows[i], this.rows[i].t > this.t - TTFT_WINDOW_S);
  }

  noteTtft(r, recent = true) {
    if (!r.site || r.ttft == null) return;
    this.lastTtft[r.site] = {ms: r.ttft, t: r.t};
    if (recent) this.recentTtft.push({t: r.t, site: r.site, ms: r.ttft});
  }

  // {site: {ttft_ms, ttft_age_s}} at simulated time `to`, the window at least `span` seconds long
  ttftAt(to, span) {
    const from = to - Math.max(TTFT_WINDOW_S, span);
    let k = 0;
    while (k < this.recentTtft.length && this.recentTtft[k].t <= from) k++;
    this.recentTtft = this.recentTtft.slice(k);
    const sum = Object.create(null), n = Object.create(null);
    for (const x of this.recentTtft) { sum[x.site] = (sum[x.site] || 0) + x.ms; n[x.site] = (n[x.site] || 0) + 1; }
    const out = Object.create(null);
    for (const site of Object.keys(this.lastTtft)) {
      const last = this.lastTtft[site];
      out[site] = n[site] ? {ttft_ms: sum[site] / n[site], ttft_age_s: null}
        : {ttft_ms: last.ms, ttft_age_s: to - last.t};
    }
    return out;
  }

  get done() { return this.t >= this.duration && this.next >= this.rows.length; }

  // Advance virtual time by dt seconds; return {sites, decisions} for the view.
  advance(dt) {
    const from = this.t, to = Math.min(this.duration, this.t + dt);
    const arrived = [];
    while (this.next < this.rows.length && this.rows[this.next].t <= to) arrived.push(this.rows[this.next++]);
    for (const r of arrived) {
      if (r.status === "ok") this.active.push({end: r.t + (r.e2e ?? 0) / 1000, site: r.site, tokens: r.tokens});
    }
    // by site id, on objects without a prototype: a site `constructor` or `toString` read Object's own (its count a
    // string), and `__proto__` threw at the first TTFT, which stopped the replay
    const tokens = Object.create(null), inflight = Object.create(null);
    this.active = this.active.filter(a => {
      if (a.end <= to) { tokens[a.site] = (tokens[a.site] || 0) + a.tokens; return false; }
      inflight[a.site] = (inflight[a.site] || 0) + 1;
      return true;
    });
    for (const r of arrived) this.noteTtft(r);
    this.t = to;
    const span = Math.max(to - from, 1e-9);
    const ttft = this.ttftAt(to, to - from);
    const sites = [...this.sites.values()].map(s => {
      const n = inflight[s.id] || 0, slots = Math.max(s.slots || 1, 1);
      const tt = ttft[s.id];
      return {...s, running: Math.min(n, slots), waiting: Math.max(n - slots, 0), load: n / slots,
              utilization: Math.min(n, slots) / slots, health: "ok",
              ttft_ms: tt ? tt.ttft_ms : null, ttft_age_s: tt ? tt.ttft_age_s : null,
              tokens_per_s: (tokens[s.id] || 0) / span};
    });
    // the table keeps the newest SHOWN_PER_TICK of a tick's arrivals; `arrived` counts them all
    return {sites, decisions: decisionRows(arrived), arrived: arrived.length};
  }

  // The decision rows of the newest requests arrived by the replay's time: after a seek the table shows these (it
  // kept the rows of the time it left, a seek back showing requests yet to arrive under "so far").
  arrivedDecisions() { return decisionRows(this.rows.slice(Math.max(0, this.next - SHOWN_PER_TICK), this.next)); }
}

// The decision table's rows of the newest SHOWN_PER_TICK of `rows` (requests, oldest first), as the live feed's.
function decisionRows(rows) {
  return rows.slice(-SHOWN_PER_TICK).map(r => ({
    id: r.id, sim_s: r.t, place: r.city || (r.client ? `${r.client.lat.toFixed(1)}, ${r.client.lon.toFixed(1)}` : "\u2013"),
    client: r.client, tenant: r.tenant, site: r.site, served_by: r.endpoint, chosen: r.endpoint,
    scores: null, total: null, predicted_ttft_ms: null, ttft_ms: r.ttft, status: r.status,
  }));
}
