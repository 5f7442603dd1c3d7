// The world map: equirectangular projection computed here, country outlines from the vendored world-atlas
// TopoJSON (decoded by the vendored topojson-client), sites as circles (area ~ slots, colour ~ load or
// health) and arcs from clients to the sites serving them, fading out over ARC_LIFE_MS.

import {siteLabel, ttftText} from "./site_text.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 1000, LAT_MAX = 84, LAT_MIN = -58;
const H = W * (LAT_MAX - LAT_MIN) / 360;
const ARC_LIFE_MS = 30000, MAX_ARCS = 400;
const PALETTE = ["#4aa3ff", "#ff7f50", "#b37feb", "#36cfc9", "#ffc53d", "#f759ab", "#95de64", "#ff9c6e",
  "#5cdbd3", "#adc6ff", "#ffd666", "#d3adf7"];

function project(lat, lon) {
  return [(lon + 180) / 360 * W, (LAT_MAX - lat) / (LAT_MAX - LAT_MIN) * H];
}

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function ringPath(ring) {
  // A ring that jumps across the antimeridian is split, never drawn as a streak across the map.
  let d = "", prevLon = null, split = false;
  for (const [lon, lat] of ring) {
    const [x, y] = project(lat, lon);
    const jump = prevLon !== null && Math.abs(lon - prevLon) > 180;
    split = split || jump;
    d += (prevLon === null || jump ? "M" : "L") + x.toFixed(1) + "," + y.toFixed(1);
    prevLon = lon;
  }
  return split ? d : d + "Z";
}

function geometryPath(g) {
  if (!g) return "";
  const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
  return polys.map(p => p.map(ringPath).join("")).join("");
}

function loadOf(site) {
  return site.load ?? site.utilization ?? 0;
}

function loadClass(site) {
  if (site.health === "down") return "down";
  const load = loadOf(site);
  return load >= 1 ? "hot" : load >= 0.5 ? "warm" : "ok";
}

const LOAD_WORD = {ok: "idle", warm: "busy", hot: "saturated", down: "down"};

// A site's load read without its colour (WCAG 1.4.1; green and red are one colour to a red-green colour-blind
// operator): the circle fills from the bottom as a glass does, empty when idle, full at load 1 or more. `level` is
// the filled part, the segment of the circle (centre x, y, radius r) below a chord at `fill` of its height.
function levelPath(x, y, r, fill) {
  if (!(fill > 0)) return "";
  if (fill >= 1) {
    return `M${(x - r).toFixed(2)},${y.toFixed(2)}a${r},${r} 0 1 0 ${2 * r},0a${r},${r} 0 1 0 ${-2 * r},0Z`;
  }
  const cy = y + r - 2 * r * fill, half = Math.sqrt(Math.max(0, r * r - (cy - y) ** 2));
  return `M${(x - half).toFixed(2)},${cy.toFixed(2)}A${r},${r} 0 ${fill > 0.5 ? 1 : 0} 0 ` +
    `${(x + half).toFixed(2)},${cy.toFixed(2)}Z`;
}

// A site down is crossed out: grey and its red edge read as a saturated site's full circle without colour.
function crossPath(x, y, r) {
  const k = r * 0.6;
  return `M${(x - k).toFixed(2)},${(y - k).toFixed(2)}l${(2 * k).toFixed(2)},${(2 * k).toFixed(2)}` +
    `M${(x + k).toFixed(2)},${(y - k).toFixed(2)}l${(-2 * k).toFixed(2)},${(2 * k).toFixed(2)}`;
}

// Whether a request went to the site its row names: on its way (routing, streaming), served, or an answer begun there
// (served_by: cut, an engine's error). Anything else was served nowhere: rejected, failed everywhere, refused before
// any engine work (shed with 429, its deadline unmeetable: their decisions name the site they would have gone to,
// and were drawn as arcs to it, as if served), a simulator's shed or expired request.
const ON_ITS_WAY = new Set(["routing", "streaming", "ok"]);

function sentThere(row) {
  return row.status !== "rejected" && row.status !== "failed" && (ON_ITS_WAY.has(row.status) || !!row.served_by);
}

export class GridMap {
  constructor(svg) {
    this.svg = svg;
    svg.setAttribute("viewBox", `0 0 ${W} ${H.toFixed(1)}`);
    this.land = svg.querySelector("#map-land");
    this.arcs = svg.querySelector("#map-arcs");
    this.clients = svg.querySelector("#map-clients");
    this.sitesLayer = svg.querySelector("#map-sites");
    this.sites = new Map();       // id -> {g, body, level, ring, title, x, y, button} and what was last drawn
    this.arcById = new Map();     // decision id -> {path, dot, born}
    this.colours = new Map();
    this.expanded = null;         // the site whose numbers line (app.js's #site-info) is open: setExpanded
    // a planet's tooltips are written as the pointer comes to a site (setSites writes them on a map of up to 40)
    this.sitesLayer.addEventListener("pointerover", e => {
      const g = e.target.closest && e.target.closest("g.site");
      if (g) this.writeTip(this.sites.get(g.dataset.site));
    });
  }

  async loadLand(url) {
    for (let lon = -150; lon <= 150; lon += 30) {
      const [x] = project(0, lon);
      el("path", {class: "graticule", d: `M${x},0V${H}`}, this.land);
    }
    for (let lat = -30; lat <= 60; lat += 30) {
      const [, y] = project(lat, 0);
      el("path", {class: "graticule", d: `M0,${y}H${W}`}, this.land);
    }
    const world = await (await fetch(url)).json();
    const countries = window.topojson.feature(world, world.objects.countries).features;
    const d = countries.map(f => geometryPath(f.geometry)).join("");
    el("path", {class: "land", d, "data-countries": String(countries.length)}, this.land);
  }

  colourOf(siteId) {
    if (!this.colours.has(siteId)) this.colours.set(siteId, PALETTE[this.colours.size % PALETTE.length]);
    return this.colours.get(siteId);
  }

  setSites(sites) {
    // a loop, not Math.max(...array): a spread passes each site as an argument, past ~125k a RangeError
    let maxSlots = 1;
    for (const s of sites) maxSlots = Math.max(maxSlots, s.slots || 1);
    const many = sites.length > 40;
    const seen = new Set();
    for (const s of sites) {
      seen.add(s.id);
      let v = this.sites.get(s.id);
      if (!v) {
        const [x, y] = project(s.lat, s.lon);
        const g = el("g", {class: "site", "data-site": s.id}, this.sitesLayer);
        const ring = el("circle", {class: "ring", cx: x, cy: y, r: 0}, g);
        const body = el("circle", {class: "body", cx: x, cy: y, r: 4}, g);
        const level = el("path", {class: "level"}, g);
        const title = el("title", {}, g);
        if (!many) {  // reached with Tab, worked with Enter or Space (app.js shows its numbers under the map)
          g.setAttribute("tabindex", "0");
          g.setAttribute("role", "button");
          g.setAttribute("aria-controls", "site-info");  // whether its line is open: setExpanded
          g.setAttribute("aria-expanded", String(s.id === this.expanded));
          const label = el("text", {x: x + 8, y: y - 8}, g);
          label.textContent = s.id;
        }
        v = {g, body, level, ring, title, x, y, button: !many};
        this.sites.set(s.id, v);
        this.colourOf(s.id);
      }
      // A planet's thousands of sites each picture: only what changed is written (a site's fill path, radius, ring,
      // class and tooltip were rebuilt and set for every site each time). The fill is drawn in 1/20 steps.
      const r = (many ? 2.5 : 5) + (many ? 7 : 11) * Math.sqrt((s.slots || 1) / maxSlots);
      const drawn = r.toFixed(1);  // the body's radius as set
      const queue = (s.waiting || 0) / Math.max(s.slots || 1, 1);
      const ring = queue > 0 ? (r + 3 + Math.min(queue, 3) * 4).toFixed(1) : "0";
      const cls = loadClass(s);
      const fill = cls === "down" ? -1 : Math.round(Math.min(Math.max(loadOf(s), 0), 1) * 20) / 20;
      if (v.drawn !== drawn) { v.body.setAttribute("r", drawn); }
      if (v.ringR !== ring) { v.ring.setAttribute("r", ring); v.ringR = ring; }
      if (v.cls !== cls) { v.g.setAttribute("class", "site " + cls); v.cls = cls; }
      if (v.drawn !== drawn || v.fill !== fill) {
        const d = Number(drawn);
        v.level.setAttribute("d", fill < 0 ? crossPath(v.x, v.y, d) : levelPath(v.x, v.y, d, fill));
        v.drawn = drawn; v.fill = fill;
      }
      // the tooltip, read on hover: on a planet written when the pointer comes, not for every site each picture
      v.site = s;
      if (!many) this.writeTip(v);
    }
    for (const [id, v] of this.sites) {
      if (!seen.has(id)) { v.g.remove(); this.sites.delete(id); }
    }
  }

  // The site whose numbers line is open (null: none), said on its button (aria-expanded). Only the button that was
  // open and the one opened are written: app.js walked every site button for it each picture, and a planet's
  // thousands of sites were matched against the buttons' selector each time; a site drawn later says it as it comes.
  setExpanded(id) {
    if (id === this.expanded) return;
    const was = this.expanded == null ? null : this.sites.get(this.expanded);
    if (was && was.button) was.g.setAttribute("aria-expanded", "false");
    this.expanded = id;
    const now = id == null ? null : this.sites.get(id);
    if (now && now.button) now.g.setAttribute("aria-expanded", "true");
  }

  // A site's tooltip from its latest numbers, written only when its text changed.
  writeTip(v) {
    if (!v) return "";
    const s = v.site, named = siteLabel(s), cls = loadClass(s);
    const tip = named.id + named.rest + "\n" +
      `load ${Number(loadOf(s)).toFixed(2)} (${LOAD_WORD[cls]}), ` +
      `slots ${s.slots}, running ${s.running ?? 0}, waiting ${s.waiting ?? 0}, health ${s.health || "ok"}\n` +
      `TTFT ${ttftText(s)}`;
    if (v.tip !== tip) { v.title.textContent = tip; v.tip = tip; }
    return tip;
  }

  // A site's numbers, its tooltip's lines on one: a tooltip is read on hover only, never on a phone or from the
  // keyboard. null when the map has no such site.
  describe(id) {
    const v = this.sites.get(id);
    return v ? this.writeTip(v).split("\n").join(" \u00b7 ") : null;
  }

  addArcs(rows) {
    const now = performance.now();
    for (const row of rows) {
      if (!row.client) continue;
      const target = row.site ? this.sites.get(row.site) : null;
      let a = this.arcById.get(row.id);
      if (!a) {
        const [cx, cy] = project(row.client.lat, row.client.lon);
        a = {cx, cy, born: now, path: null,
             dot: el("circle", {class: "client", cx, cy, r: 2.6, "data-decision": row.id}, this.clients)};
        this.arcById.set(row.id, a);
      }
      if (target && sentThere(row)) {
        const colour = this.colourOf(row.site);
        if (!a.path) a.path = el("path", {class: "arc", "data-decision": row.id}, this.arcs);
        a.path.setAttribute("d", arcPath(a.cx, a.cy, target.x, target.y));
        a.path.setAttribute("stroke", colour);
        a.dot.setAttribute("fill", colour);
        a.path.dataset.site = row.site;
      } else if (!sentThere(row)) {
        // a ring, not a dot: red against a site's colour was the only mark of a request served nowhere
        a.dot.setAttribute("class", "client rejected");
        a.dot.setAttribute("r", "4");
        if (a.path) { a.path.remove(); a.path = null; }
      }
    }
    while (this.arcById.size > MAX_ARCS) this.removeArc(this.arcById.keys().next().value);
  }

  fade() {
    const now = performance.now();
    for (const [id, a] of this.arcById) {
      const age = (now - a.born) / ARC_LIFE_MS;
      if (age >= 1) { this.removeArc(id); continue; }
      const o = (1 - age) * 0.9 + 0.05;
      if (a.path) a.path.setAttribute("stroke-opacity", o.toFixed(2));
      a.dot.setAttribute("fill-opacity", o.toFixed(2));
      a.dot.setAttribute("stroke-opacity", o.toFixed(2));
    }
  }

  removeArc(id) {
    const a = this.arcById.get(id);
    if (!a) return;
    if (a.path) a.path.remove();
    a.dot.remove();
    this.arcById.delete(id);
  }

  clearArcs() { for (const id of [...this.arcById.keys()]) this.removeArc(id); }
}

function arcPath(x1, y1, x2, y2) {
  const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, len = Math.hypot(x2 - x1, y2 - y1);
  // Bow every arc upwards (towards the north), more for longer routes.
  const nx = -(y2 - y1) / (len || 1), ny = (x2 - x1) / (len || 1);
  const s = ny > 0 ? -1 : 1;
  const k = 0.22 * len;
  return `M${x1.toFixed(1)},${y1.toFixed(1)}Q${(mx + s * nx * k).toFixed(1)},${(my + s * ny * k).toFixed(1)} ` +
    `${x2.toFixed(1)},${y2.toFixed(1)}`;
}
