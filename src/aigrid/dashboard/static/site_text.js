// How a site is named and how its TTFT reads, the same on its card and in its map tooltip.

// "id name · jurisdiction", each part once: in a planet run a site's name is its id ("s3180-cn s3180-cn").
export function siteLabel(s) {
  const name = s.name && s.name !== s.id ? " " + s.name : "";
  return {id: s.id, rest: name + (s.jurisdiction ? " \u00b7 " + s.jurisdiction : "")};
}

function age(s) {
  s = Math.max(0, s);
  return s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : (s / 3600).toFixed(1) + " h";
}

// The TTFT a site shows: none while it is down (its last value read as live data), and a value that is not
// recent (a replay holds a site's last one between its arrivals) says how old it is.
export function ttftText(s) {
  if (s.health === "down") return "n/a (down)";
  if (s.ttft_ms == null) return "n/a";
  const v = s.ttft_ms >= 100 ? Math.round(s.ttft_ms) : Math.round(s.ttft_ms * 10) / 10;
  return v + " ms" + (s.ttft_age_s != null ? ` (last, ${age(s.ttft_age_s)} ago)` : "");
}

// The value a site's TTFT chart plots this tick: what its card says, nothing while it is down.
export function ttftPlotted(s) {
  return s.health === "down" ? null : s.ttft_ms ?? null;
}
