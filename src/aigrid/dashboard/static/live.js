// The live feed: server-sent events read with fetch() rather than EventSource, so that an API key can go in
// the Authorization header (EventSource cannot send one) when the gateway enforces authentication.

class Unauthorized extends Error {}

async function readEvents(url, key, onEvent, signal) {
  const headers = key ? {authorization: "Bearer " + key} : {};
  const resp = await fetch(url, {headers, signal, cache: "no-store"});
  if (resp.status === 401 || resp.status === 403) throw new Unauthorized(`HTTP ${resp.status}`);
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

// Keep one feed open until stop(): reconnect after a drop, ask for a key on 401.
export function follow(url, {onEvent, onStatus, askKey}) {
  const ctl = new AbortController();
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        onStatus("connecting");
        await readEvents(url, sessionStorage.getItem("aigrid-key"), (n, d) => {
          if (ctl.signal.aborted) return;  // stopped: a block read before the abort must not touch the page
          onStatus("live"); onEvent(n, d);
        }, ctl.signal);
        if (!ctl.signal.aborted) onStatus("reconnecting");
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof Unauthorized) {
          onStatus("needs an API key");
          sessionStorage.setItem("aigrid-key", await askKey());
          continue;
        }
        onStatus("reconnecting");
      }
      await sleep(2000);
    }
  })();
  return () => ctl.abort();
}
