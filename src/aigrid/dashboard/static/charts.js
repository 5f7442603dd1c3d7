// Per-site sparklines in plain SVG: queue (running + waiting, waiting in red), TTFT (ms), tokens per second.
// History is kept in the browser from the moment the page opened (HISTORY points, one per tick).

import {siteLabel, ttftPlotted, ttftText} from "./site_text.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const HISTORY = 120, MAX_CARDS = 12;

function el(name, attrs = {}, parent = null, ns = SVG_NS) {
  const e = ns ? document.createElementNS(ns, name) : document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// A path through the history: it fills the width as it grows, then scrolls (HISTORY points wide). A tick without a
// value (a site down, no TTFT yet) is a gap: the line was drawn across it, as if there had been data.
function linePath(values, max) {
  const n = values.length, span = Math.max(n - 1, 1);
  let d = "", gap = true;
  values.forEach((v, i) => {
    if (v == null) { gap = true; return; }
    d += (gap ? "M" : "L") + (i / span * 100).toFixed(1) + "," + (32 - (v / max) * 30).toFixed(1);
    gap = false;
  });
  return d;
}

function fmt(v, unit) {
  if (v == null) return "n/a";
  return (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10) + (unit ? " " + unit : "");
}

export class SiteCharts {
  constructor(container, counter = null) {
    this.container = container;
    this.counter = counter;  // says how many sites have a card, when not all of them do
    this.series = new Map();   // site id -> {queue: [], waiting: [], ttft: [], tps: []}
    this.cards = new Map();
  }

  reset() {
    this.series.clear(); this.cards.clear(); this.container.replaceChildren();
    if (this.counter) this.counter.textContent = "";
  }

  push(sites) {
    for (const s of sites) {
      let h = this.series.get(s.id);
      if (!h) { h = {queue: [], waiting: [], ttft: [], tps: []}; this.series.set(s.id, h); }
      h.queue.push((s.running || 0) + (s.waiting || 0));
      h.waiting.push(s.waiting || 0);
      h.ttft.push(ttftPlotted(s));
      h.tps.push(s.tokens_per_s ?? null);
      for (const k of Object.keys(h)) if (h[k].length > HISTORY) h[k].shift();
    }
    const shown = this.pick(sites);
    const order = [];
    for (const s of shown) {
      let c = this.cards.get(s.id);
      if (!c) { c = this.card(s); this.cards.set(s.id, c); }
      this.update(c, s, this.series.get(s.id));
      order.push(c.root);
    }
    this.container.replaceChildren(...order);
    if (this.counter) {
      this.counter.textContent = shown.length < sites.length
        ? `(${shown.length} of ${sites.length} shown: down and degraded first, then the busiest)` : "";
    }
  }

  pick(sites) {
    // Every site when there are few; MAX_CARDS of a grid with more: those down, then degraded, then the busiest. By
    // business alone a site down (nothing sent to it, its queue empty) was never shown, in an incident too.
    if (sites.length <= MAX_CARDS) return [...sites].sort((a, b) => a.id.localeCompare(b.id));
    const unwell = s => (s.health === "down" ? 2 : s.health === "degraded" ? 1 : 0);
    const busy = s => { const h = this.series.get(s.id); return h.queue.reduce((a, b) => a + b, 0); };
    return [...sites].sort((a, b) => unwell(b) - unwell(a) || busy(b) - busy(a)).slice(0, MAX_CARDS);
  }

  card(s) {
    const root = el("div", {class: "card", "data-site": s.id}, null, null);
    const title = el("div", {class: "title"}, root, null);
    const name = el("span", {}, title, null);
    const label = siteLabel(s);
    el("b", {}, name, null).textContent = label.id;
    name.append(label.rest);
    const health = el("span", {}, title, null);
    const charts = el("div", {class: "charts"}, root, null);
    const mk = (label, cls) => {
      const box = el("div", {class: "chart"}, charts, null);
      const caption = el("div", {}, box, null);
      const svg = el("svg", {viewBox: "0 0 100 34", preserveAspectRatio: "none"}, box);
      const lines = cls.map(c => el("path", {class: c}, svg));
      return {caption, lines, label};
    };
    return {root, health, q: mk("queue", ["queue", "waiting"]), t: mk("TTFT", ["ttft"]), p: mk("tok/s", ["tps"])};
  }

  update(c, s, h) {
    c.health.className = "health-" + (s.health || "ok");
    c.health.textContent = `${s.health || "ok"} \u00b7 ${s.slots} slots`;
    const qmax = Math.max(1, s.slots || 1, ...h.queue);
    c.q.lines[0].setAttribute("d", linePath(h.queue, qmax));
    c.q.lines[1].setAttribute("d", linePath(h.waiting, qmax));
    c.q.caption.textContent = `queue ${h.queue.at(-1)}` + (h.waiting.at(-1) ? ` (${h.waiting.at(-1)} waiting)` : "");
    const tmax = Math.max(1, ...h.ttft.filter(v => v != null));
    c.t.lines[0].setAttribute("d", linePath(h.ttft, tmax));
    c.t.caption.textContent = "TTFT " + ttftText(s);
    const pmax = Math.max(1, ...h.tps.filter(v => v != null));
    c.p.lines[0].setAttribute("d", linePath(h.tps, pmax));
    c.p.caption.textContent = fmt(s.tokens_per_s, "tok/s");
  }
}
