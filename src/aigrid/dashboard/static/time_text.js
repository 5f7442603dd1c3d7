// How the page writes a time, the same in the header's clock and in the decisions table: a wall-clock instant in
// UTC, and a replay's simulated time since its run's start.

// "HH:MM:SS" of `at` (seconds since the epoch), in UTC; the zone is said by the caller (the clock, the column header).
export function utcTime(at) {
  return new Date(at * 1000).toISOString().slice(11, 19);
}

// "HH:MM:SS" of `s` simulated seconds, whole seconds (a run past 99 h widens its hours).
export function simTime(s) {
  s = Math.floor(s);
  return [s / 3600, (s % 3600) / 60, s % 60].map(v => String(Math.floor(v)).padStart(2, "0")).join(":");
}
