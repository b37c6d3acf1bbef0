// callgate's headroom page: reads GET /v1/usage/stream (server-sent events) and draws it.
// Plain JavaScript, no framework, nothing loaded from elsewhere. The stream is read with
// fetch() rather than EventSource so the token travels in the Authorization header (a
// ?token= URL would land in access logs and browser history).
"use strict";

(function () {
  const TOKEN_KEY = "callgate.token";
  const PAGE = 50;          // gauges shown at first; "show more" adds as many again
  const MAX_WINDOWS = 50;
  const MAX_QUEUES = 50;    // numbers with callers on hold
  const MAX_ENTRIES = 20;   // callers listed per number
  const RECONNECT_MS = 2000;
  const OUTCOMES = ["admitted", "queued", "retry_later", "rejected"];
  const fmt = new Intl.NumberFormat("en");
  const fmtRate = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

  const $ = (id) => document.getElementById(id);
  let last = null;          // the latest event's document
  let lastUsage = null;     // the latest usage the store gave: kept (marked stale) while it is down
  let shown = PAGE;
  let events = 0;
  let reader = null;

  // DOM helpers: text goes in as text, never as HTML (scope names come from config).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setStatus(state, text) {
    const node = $("status");
    node.dataset.state = state;
    node.textContent = text;
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  function seconds(value) {
    if (value < 90) return `${value < 10 ? fmtRate.format(value) : Math.round(value)} s`;
    if (value < 5400) return `${Math.round(value / 60)} min`;
    return `${fmtRate.format(value / 3600)} h`;
  }

  function level(used, cap) {
    if (cap <= 0 || used >= cap) return "full";
    return used / cap >= 0.8 ? "warn" : "ok";
  }

  function gauge(kind, scope, used, cap, extra) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${cap > 0 ? Math.min(100, (100 * used) / cap) : 100}%`;
    return el("div", {
      class: "gauge", "data-layer": kind, "data-scope": scope, "data-in-use": used,
      "data-cap": cap, "data-level": level(used, cap), role: "meter",
      ariaValueNow: used, ariaValueMax: cap, ariaLabel: `${kind} ${scope}`,
    },
    el("span", { class: "label" }, el("span", { class: "kind" }, kind), scope),
    el("div", { class: "track" }, fill),
    el("span", { class: "value" }, `${fmt.format(used)} / ${fmt.format(cap)}`, extra || null));
  }

  // the connection ------------------------------------------------------------------
  async function connect() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    $("forget").hidden = !token;
    setStatus("connecting", "connecting…");
    let response;
    try {
      response = await fetch("/v1/usage/stream", {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: "no-store",
      });
    } catch (err) {
      return retry("gate unreachable");
    }
    if (response.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      return askToken(token ? "That token was refused; check it and try again." : "");
    }
    if (!response.ok || !response.body) return retry(`HTTP ${response.status}`);
    reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (err) {
      // the connection dropped: fall through to reconnect
    }
    retry("stream ended");
  }

  function retry(why) {
    setStatus("error", `${why}; reconnecting…`);
    setTimeout(connect, RECONNECT_MS);
  }

  function dispatch(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (name !== "usage" || data.length === 0) return;
    last = JSON.parse(data.join("\n"));
    events += 1;
    document.body.dataset.events = String(events);
    setStatus("live", "live");
    render();
  }

  function askToken(message) {
    setStatus("error", "needs a token");
    $("login").hidden = false;
    $("login-error").textContent = message;
    $("token").focus();
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("login").hidden = true;
    connect();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (reader) reader.cancel();
    location.reload();
  });

  $("filter").addEventListener("input", () => { shown = PAGE; render(); });
  $("kind").addEventListener("change", () => { shown = PAGE; render(); });
  $("more").addEventListener("click", () => { shown += PAGE; render(); });

  // drawing --------------------------------------------------------------------------
  function render() {
    if (!last) return;
    const doc = last;
    const store = $("store");
    store.dataset.up = String(doc.store.up);
    store.textContent = doc.store.up ? "store up" : `store DOWN: ${doc.store.error}`;
    $("account").hidden = !doc.account;
    $("account").textContent = doc.account ? `account ${doc.account}` : "";
    renderDecisions(doc.process);
    if (doc.usage) lastUsage = doc.usage;
    document.body.dataset.stale = String(!doc.usage && lastUsage !== null);
    $("updated").textContent = doc.usage ? `updated ${clock(doc.usage.now)} (gate clock)`
      : lastUsage ? `store down: gauges as of ${clock(lastUsage.now)}, now ${clock(doc.process.now)}`
        : `store down since before ${clock(doc.process.now)}`;
    const usage = lastUsage || { layers: [], windows: [], cooldowns: [], now: doc.process.now };
    renderLayers(usage.layers);
    renderWindows(usage.windows);
    renderQueues(doc.queue, usage.layers);
    renderCooldowns(usage.cooldowns, usage.now);
  }

  function tile(attrs, name, rate, total) {
    return el("div", { class: "tile", ...attrs },
      el("div", { class: "name" }, name),
      el("div", { class: "rate" }, `${fmtRate.format(rate)}/s`),
      el("div", { class: "total" }, `${fmt.format(total)} in all`));
  }

  function renderDecisions(process) {
    $("since").textContent = `counted by this gate process since ${clock(process.started)}; ` +
      `rates over the last ${fmtRate.format(process.rate_window_s)} s`;
    $("outcomes").replaceChildren(...OUTCOMES.map((outcome) => tile(
      { "data-outcome": outcome, "data-total": process.totals.by_outcome[outcome] || 0,
        "data-busy": (process.rates.by_outcome[outcome] || 0) > 0 },
      outcome.replace("_", " "), process.rates.by_outcome[outcome] || 0,
      process.totals.by_outcome[outcome] || 0)));
    const layers = Object.keys(process.totals.refused_by_layer);
    $("refused").replaceChildren(...(layers.length ? layers.map((layer) => tile(
      { "data-layer": layer, "data-total": process.totals.refused_by_layer[layer] },
      layer, process.rates.refused_by_layer[layer] || 0,
      process.totals.refused_by_layer[layer])) : [el("p", { class: "muted" }, "no refusals")]));
    const top = (key, label) => {
      const found = process.top_refusing[key];
      return found ? `${label}: ${found.layer} (${fmt.format(found.refusals)})` : `${label}: none`;
    };
    $("top").textContent = `Refused most — ${top("300", "last 5 min")} · ${top("3600", "last 60 min")}`;
  }

  function renderLayers(layers) {
    const needle = $("filter").value.trim().toLowerCase();
    const kind = $("kind").value;
    const rows = layers.filter((row) => (!kind || row.layer === kind) &&
      (!needle || `${row.layer} ${row.scope}`.toLowerCase().includes(needle)));
    const util = (row) => (row.cap > 0 ? row.in_use / row.cap : (row.in_use > 0 ? 2 : 1));
    rows.sort((a, b) => util(b) - util(a) || b.queued - a.queued || b.in_use - a.in_use ||
      (a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : 0));
    const visible = rows.slice(0, shown);
    $("layers").replaceChildren(...visible.map((row) => gauge(row.layer, row.scope, row.in_use,
      row.cap, row.queued ? el("span", { class: "waiting" }, `+${fmt.format(row.queued)} waiting`)
        : null)));
    $("layers-count").textContent = `showing ${fmt.format(visible.length)} of ` +
      `${fmt.format(rows.length)} scopes` +
      (rows.length !== layers.length ? ` (${fmt.format(layers.length)} in all)` : "");
    $("more").hidden = rows.length <= shown;
  }

  function renderWindows(windows) {
    const rows = windows.slice().sort((a, b) => b.count / b.limit - a.count / a.limit ||
      (a.scope < b.scope ? -1 : 1));
    $("windows").replaceChildren(...rows.slice(0, MAX_WINDOWS).map((w) =>
      gauge("window", w.scope, w.count, w.limit,
        el("span", { class: "muted" }, ` per ${seconds(w.period_s)}`))));
    $("windows-count").textContent = windows.length
      ? `showing ${Math.min(MAX_WINDOWS, rows.length)} of ${fmt.format(windows.length)}, fullest first`
      : "no rate windows";
  }

  function renderQueues(queue, layers) {
    const byNumber = new Map();
    for (const entry of queue.entries) {
      if (!byNumber.has(entry.number)) byNumber.set(entry.number, []);
      byNumber.get(entry.number).push(entry);
    }
    const lengths = new Map(layers.filter((r) => r.layer === "number" && r.queued > 0)
      .map((r) => [r.scope, r.queued]));
    for (const number of byNumber.keys()) if (!lengths.has(number)) lengths.set(number, 0);
    const numbers = [...lengths.keys()].sort((a, b) =>
      (lengths.get(b) || byNumber.get(b).length) - (lengths.get(a) || byNumber.get(a).length));
    const waiting = [...lengths.values()].reduce((sum, n) => sum + n, 0) || queue.total;
    $("queue-count").textContent = numbers.length
      ? `${fmt.format(waiting)} waiting on ${fmt.format(numbers.length)} number(s)` +
        (queue.total > queue.entries.length
          ? ` (details of the first ${fmt.format(queue.entries.length)})` : "")
      : "nobody on hold";
    $("queues").replaceChildren(...numbers.slice(0, MAX_QUEUES).map((number) => {
      const entries = (byNumber.get(number) || []).sort((a, b) => a.position - b.position);
      const longest = entries.reduce((most, e) => Math.max(most, e.waited_s), 0);
      const rows = entries.slice(0, MAX_ENTRIES).map((e) => el("tr", { "data-call": e.call_id },
        el("td", { class: "num" }, e.position), el("td", {}, e.call_id),
        el("td", { class: "num" }, e.priority), el("td", { class: "num" }, seconds(e.waited_s))));
      return el("details", { "data-number": number, open: numbers.length <= 5 },
        el("summary", {}, `${number}: ${fmt.format(lengths.get(number) || entries.length)} ` +
          `waiting, longest ${seconds(longest)}`),
        el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, el("th", { class: "num" }, "#"), el("th", {}, "call"),
            el("th", { class: "num" }, "priority"), el("th", { class: "num" }, "waited"))),
          el("tbody", {}, ...rows))));
    }));
  }

  function renderCooldowns(cooldowns, now) {
    if (!cooldowns.length) {
      $("cooldowns").replaceChildren(el("p", { class: "muted" }, "no key is cooling down"));
      return;
    }
    $("cooldowns").replaceChildren(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "key"), el("th", {}, "until"))),
      el("tbody", {}, ...cooldowns.map((c) => el("tr", { "data-key": c.scope },
        el("td", {}, c.scope),
        el("td", {}, c.until === null ? "disabled until reload"
          : `${clock(c.until)} (in ${seconds(Math.max(0, c.until - now))})`)))))));
  }

  connect();
})();
