// The live table of recent decisions: newest on top, one row per decision id, updated in place as the
// decision's outcome arrives (routing -> streaming -> ok, with the measured TTFT).

import {simTime, utcTime} from "./time_text.js";

const AXES = ["ttft", "cost", "affinity", "headroom", "proximity"];
const MAX_ROWS = 50;

function time(row) {
  return row.sim_s != null ? "+" + simTime(row.sim_s) : utcTime(row.at);
}

function ms(v) { return v == null ? "\u2013" : Math.round(v) + " ms"; }

// A status that is not an answer, a request on its way, or its client's leaving: refused (rejected, overloaded,
// deadline_unmeetable, a simulator's shed or expired), failed, cut (interrupted) or an engine's error (http_NNN).
// Coloured as rejected and failed are: only those two were, so a 503 deadline_unmeetable read as a neutral status.
const NOT_BAD = new Set(["ok", "routing", "streaming", "client_closed"]);
const wentWrong = status => !NOT_BAD.has(status);

export class DecisionTable {
  constructor(tbody, counter) {
    this.tbody = tbody;
    this.counter = counter;
    this.rows = new Map();
    this.total = 0;
    this.inRun = null;  // a replay: how many requests its run has (the policy shown)
  }

  reset(inRun = null) {
    this.rows.clear(); this.total = 0; this.inRun = inRun; this.tbody.replaceChildren(); this.counter.textContent = "";
  }

  // `soFar`, in a replay, is how many of the run's requests have arrived (a tick gives the table its newest 60 of
  // thousands): the counter said "2100 seen" of a run's 30,000 requests, counting only the rows it was given.
  upsert(rows, flash = true, soFar = null) {
    for (const row of rows) {
      let tr = this.rows.get(row.id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.id = row.id;
        for (let i = 0; i < 14; i++) tr.appendChild(document.createElement("td"));
        if (flash) tr.className = "fresh";
        this.tbody.prepend(tr);
        this.rows.set(row.id, tr);
        this.total += 1;
      }
      this.fill(tr, row);
    }
    while (this.rows.size > MAX_ROWS) {
      const [id, tr] = this.rows.entries().next().value;
      tr.remove();
      if (tr.why) tr.why.remove();
      this.rows.delete(id);
    }
    if (soFar != null) this.total = soFar;
    const n = v => v.toLocaleString("en");
    this.counter.textContent = `(newest ${n(this.rows.size)} shown of ${n(this.total)} ` +
      (this.inRun == null ? "received since the page opened)" : `so far, of ${n(this.inRun)} in the run)`);
  }

  fill(tr, row) {
    const td = tr.children;
    tr.dataset.site = row.site || "";
    td[0].textContent = time(row);
    td[1].textContent = row.place || "unknown";
    td[2].textContent = row.tenant || "";
    td[3].textContent = row.site || "\u2013";
    td[4].textContent = row.served_by || row.chosen || "\u2013";
    AXES.forEach((axis, i) => {
      const v = row.scores ? row.scores[axis] : undefined;
      const cell = td[5 + i];
      cell.textContent = v == null ? "\u2013" : v.toFixed(2);
      cell.className = v == null ? "" : "score";
      cell.style.setProperty("--v", v == null ? "0" : String(v));
    });
    td[10].textContent = row.total == null ? "\u2013" : row.total.toFixed(2);
    td[11].textContent = ms(row.predicted_ttft_ms);
    // a whole answer's first byte (not streamed) or a tool loop's is no TTFT: shown apart, in brackets, not beside
    // the prediction as if it were one (the row's ttft_ms is a first token's time only: feed.first_byte_fields)
    const whole = row.ttft_ms == null && row.first_byte_ms != null;
    td[12].textContent = whole ? `(${ms(row.first_byte_ms)})` : ms(row.ttft_ms);
    td[12].title = whole ? "first byte of a whole answer (not streamed) or of a tool loop: not a TTFT" : "";
    td[13].className = "status-" + row.status + (wentWrong(row.status) ? " status-bad" : "");
    // why it went where it did, and, when it failed there, why it failed: the reason alone named the site it was
    // sent to ("chose iad-smollm2 ...") of a request that failed
    const failed = (row.failures || []).join("; ");
    tr.reason = [failed && "failed: " + failed, row.reason].filter(Boolean).join(". Routed: ");
    if (!tr.reason) {
      td[13].textContent = row.status;
      if (tr.why) { tr.why.remove(); tr.why = null; }
    } else {
      let button = td[13].firstElementChild;
      if (!button) {
        button = document.createElement("button");
        button.type = "button";
        button.className = "why";
        button.setAttribute("aria-expanded", "false");
        button.addEventListener("click", () => this.toggle(tr));
        td[13].replaceChildren(button);
      }
      button.textContent = row.status;
      button.title = tr.reason;  // a mouse's hover, as before
      if (tr.why) tr.why.firstChild.firstChild.textContent = tr.reason;
    }
  }

  // Why a decision went as it did (its reason: why it was rejected, where it was sent) was the status cell's hover
  // title alone, which a phone (no hover) and the keyboard never reach. The status is a button: a tap, a click,
  // Enter or Space opens a row under the decision that says why, as text; again, closes it.
  toggle(tr) {
    const button = tr.lastElementChild.firstElementChild;
    if (tr.why) {
      tr.why.remove();
      tr.why = null;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const why = document.createElement("tr");
    why.className = "why-row";
    const cell = why.appendChild(document.createElement("td"));
    cell.colSpan = 14;
    const text = cell.appendChild(document.createElement("div"));
    text.className = "why-text";
    text.textContent = tr.reason;
    tr.after(why);
    tr.why = why;
    button.setAttribute("aria-expanded", "true");
  }
}
