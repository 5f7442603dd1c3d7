// Replay a simulator run on the map: requests.csv (one row per request and policy), with summary.json and
// sites.json when present. Virtual time runs `speed` times faster than the wall clock; each tick yields the
// grid state (in flight per site, TTFT, tokens/s) and the decisions that arrived, in the live feed's shapes.
//
// requests.csv columns used: policy, request, arrival_s, tenant, status, endpoint, site, ttft_ms, e2e_ms,
// output_tokens, and client_lat / client_lon / client_city when the simulator writes them (arcs need them).
// sites.json: {"sites": [{id, name, lat, lon, jurisdiction, slots}]} or {"sites": {id: {...}}}; the
// gateway's own /v1/grid answer also works (slots summed from its endpoints).

export function parseCsv(text) {
  const lines = text.split(/\r?\n/).filter(l => l.length);
  const split = line => {
    const out = [];
    let cur = "", quoted = false;
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      if (quoted) {
        if (ch === '"' && line[i + 1] === '"') { cur += '"'; i++; }
        else if (ch === '"') quoted = false;
        else cur += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { out.push(cur); cur = ""; }
      else cur += ch;
    }
    out.push(cur);
    return out;
  };
  const header = split(lines[0] || "");
  return lines.slice(1).map(l => {
    const cells = split(l), row = {};
    header.forEach((h, i) => { row[h] = cells[i] ?? ""; });
    return row;
  });
}

export function parseSites(obj) {
  if (!obj) return [];
  const raw = obj && obj.sites ? obj.sites : obj;
  const list = Array.isArray(raw) ? raw : Object.entries(raw || {}).map(([id, s]) => ({id, ...s}));
  const slots = {};
  for (const e of (obj && obj.endpoints) || []) slots[e.site] = (slots[e.site] || 0) + (e.slots || 1);
  return list.filter(s => s.lat != null && s.lon != null)
    .map(s => ({id: s.id, name: s.name || s.id, lat: +s.lat, lon: +s.lon, jurisdiction: s.jurisdiction || "",
                slots: +(s.slots ?? slots[s.id] ?? 1)}));
}

const num = v => (v === "" || v == null ? null : Number(v));

export class Replay {
  constructor(rows, sites, policy) {
    this.all = rows;
    this.sites = new Map(sites.map(s => [s.id, s]));
    this.policies = [...new Set(rows.map(r => r.policy || "run"))];
    this.hasClients = rows.length > 0 && "client_lat" in rows[0] && "client_lon" in rows[0];
    this.missing = new Set();
    this.select(policy || this.policies[0]);
  }

  select(policy) {
    this.policy = policy;
    this.rows = this.all.filter(r => (r.policy || "run") === policy).map(r => ({
      id: `${policy}#${r.request}`, t: num(r.arrival_s) ?? 0, site: r.site || null, endpoint: r.endpoint || null,
      status: r.status || "ok", ttft: num(r.ttft_ms), e2e: num(r.e2e_ms), tokens: num(r.output_tokens) ?? 0,
      tenant: r.tenant || "", city: r.client_city || "",
      client: this.hasClients && r.client_lat !== "" ? {lat: +r.client_lat, lon: +r.client_lon} : null,
    })).sort((a, b) => a.t - b.t);
    for (const r of this.rows) if (r.site && !this.sites.has(r.site)) this.missing.add(r.site);
    this.duration = this.rows.length ? this.rows[this.rows.length - 1].t : 0;
    this.seek(0);
  }

  seek(t) {
    this.t = Math.max(0, Math.min(t, this.duration));
    let lo = 0, hi = this.rows.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.rows[mid].t <= this.t) lo = mid + 1; else hi = mid; }
    this.next = lo;
    this.active = this.rows.slice(0, lo).filter(r => r.status === "ok" && r.t + (r.e2e ?? 0) / 1000 > this.t)
      .map(r => ({end: r.t + (r.e2e ?? 0) / 1000, site: r.site, tokens: r.tokens}));
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
    const tokens = {}, inflight = {}, ttft = {};
    this.active = this.active.filter(a => {
      if (a.end <= to) { tokens[a.site] = (tokens[a.site] || 0) + a.tokens; return false; }
      inflight[a.site] = (inflight[a.site] || 0) + 1;
      return true;
    });
    for (const r of arrived) {
      if (r.site && r.ttft != null) (ttft[r.site] = ttft[r.site] || []).push(r.ttft);
    }
    this.t = to;
    const span = Math.max(to - from, 1e-9);
    const sites = [...this.sites.values()].map(s => {
      const n = inflight[s.id] || 0, slots = Math.max(s.slots || 1, 1);
      const tt = ttft[s.id];
      return {...s, running: Math.min(n, slots), waiting: Math.max(n - slots, 0), load: n / slots,
              utilization: Math.min(n, slots) / slots, health: "ok",
              ttft_ms: tt ? tt.reduce((a, b) => a + b, 0) / tt.length : null,
              tokens_per_s: (tokens[s.id] || 0) / span};
    });
    const decisions = arrived.slice(-60).map(r => ({
      id: r.id, sim_s: r.t, place: r.city || (r.client ? `${r.client.lat.toFixed(1)}, ${r.client.lon.toFixed(1)}` : "\u2013"),
      client: r.client, tenant: r.tenant, site: r.site, served_by: r.endpoint, chosen: r.endpoint,
      scores: null, total: null, predicted_ttft_ms: null, ttft_ms: r.ttft, status: r.status,
    }));
    return {sites, decisions, arrived: arrived.length};
  }
}
