/*
 * dashboard.js: the live trading dashboard served at "/". No framework; uses
 * TickerClient from client.js.
 *
 * - Watchlist: from ?symbols=A,B, else localStorage, else the default list; every
 *   edit is written back to both. Symbols the gateway refuses (unknown_symbol, ...)
 *   are removed with an explanation in #errors.
 * - Grid: one tr[data-sym] per symbol with td.bid/.ask/.last/.chg/.pct/.vol/.time,
 *   an SVG sparkline (.spark) of the recent last prices, and a .remove button.
 *   Price cells flash (class flash-up / flash-down) on up and down ticks.
 * - Rate selector (#rate-select): max updates per second per symbol.
 * - Status bar: #status-transport, #status-state (client state), #status-feed
 *   ("waiting", "live", "stale feed": no quote for more than 5 s while open, or
 *   "offline" while not open), #status-rate
 *   (quote messages per second), #status-age (age of the newest quote's `t`).
 * - ?transports=sse,poll restricts the client's transports (debugging), and
 *   ?transports=webrtc,ws,sse,poll puts WebRTC first (its DataChannels, falling back
 *   to WebSocket when they do not open within 5 s): the status bar's
 *   #webrtc-toggle reloads the page with it, or without it; ?rate=N
 *   sets the initial rate (else the last one chosen, kept in localStorage).
 * - Access token, for a gateway with authentication on: the #token-form field, or the
 *   URL fragment #token=... (a fragment never leaves the browser; a query string
 *   reaches servers and their logs, so ?token= is ignored and dropped). It is kept
 *   for this tab only (sessionStorage) and taken out of the address bar. A refused
 *   or expired token shows the "unauthorized" state, its error and a banner.
 */
(function () {
  "use strict";

  const DEFAULT_WATCHLIST = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "META"];
  const RATES = [1, 2, 5, 10];
  const DEFAULT_RATE = 5;
  const LIST_KEY = "ticker.watchlist";
  const RATE_KEY = "ticker.rate";
  const TOKEN_KEY = "ticker.token";
  const SYMBOL_RE = /^[A-Z0-9.\-_/]{1,16}$/;
  const STALE_MS = 5000;
  const SPARK_POINTS = 60;
  const FLASH_MS = 700;
  const REFUSED = {
    unknown_symbol: "unknown symbol: the gateway does not know it",
    not_entitled: "not entitled to this symbol",
    too_many_symbols: "too many symbols for one client",
  };

  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);

  // ---- watchlist ----------------------------------------------------------

  /** Splits user text ("ibm, msft nvda") into valid and invalid symbols. */
  function parseSymbols(text) {
    const valid = [], invalid = [];
    for (const raw of String(text || "").split(/[\s,;]+/)) {
      const s = raw.trim().toUpperCase();
      if (!s) continue;
      (SYMBOL_RE.test(s) ? valid : invalid).push(s);
    }
    return { valid: [...new Set(valid)], invalid };
  }

  function loadWatchlist() {
    if (params.has("symbols")) return parseSymbols(params.get("symbols")).valid;
    try {
      const stored = JSON.parse(localStorage.getItem(LIST_KEY));
      if (Array.isArray(stored)) return parseSymbols(stored.join(",")).valid;
    } catch (e) { /* unreadable: use the default */ }
    return DEFAULT_WATCHLIST.slice();
  }

  /** Writes the watchlist to localStorage and the URL (?symbols=A,B, other params kept). */
  function saveWatchlist() {
    try { localStorage.setItem(LIST_KEY, JSON.stringify(watchlist)); } catch (e) { /* private mode */ }
    const parts = ["symbols=" + watchlist.map(encodeURIComponent).join(",")];
    for (const [k, v] of params) {
      if (k !== "symbols" && k !== "token") parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
    }
    history.replaceState(null, "", `${location.pathname}?${parts.join("&")}${location.hash}`);
  }

  let watchlist = loadWatchlist();

  // ---- access token ---------------------------------------------------------

  let token = null;

  /** Keeps `t` ("" or null: none) for this tab. */
  function storeToken(t) {
    token = t || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private mode: kept in memory only */ }
  }

  /** A #token=... in the fragment wins over the one kept; it leaves the address bar. */
  function takeTokenFromFragment() {
    const frag = new URLSearchParams(location.hash.slice(1));
    if (!frag.has("token")) return false;
    storeToken(frag.get("token"));
    frag.delete("token");
    const rest = frag.toString();
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? "#" + rest : ""}`);
    return true;
  }

  try { token = sessionStorage.getItem(TOKEN_KEY) || null; } catch (e) { /* private mode */ }
  takeTokenFromFragment();

  function loadRate() {
    const r = Number(params.get("rate") || localStorage.getItem(RATE_KEY));
    return RATES.includes(r) ? r : DEFAULT_RATE;
  }

  // ---- grid rows ------------------------------------------------------------

  const rows = new Map(); // sym -> {tr, cells, poly, svg, points, shown, dirty}
  const names = {}; // sym -> company name, from /api/v1/symbols
  const tbody = $("#grid-body");
  const SVG_NS = "http://www.w3.org/2000/svg";

  function addRow(sym) {
    const tr = document.createElement("tr");
    tr.dataset.sym = sym;
    tr.className = "pending";
    const cells = {};
    const symTd = document.createElement("td");
    symTd.className = "sym";
    symTd.textContent = sym;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = names[sym] || "";
    symTd.appendChild(name);
    tr.appendChild(symTd);
    for (const c of ["bid", "ask", "last", "chg", "pct", "vol", "spark-cell", "time"]) {
      const td = document.createElement("td");
      td.className = c;
      if (c !== "spark-cell") td.textContent = "…";
      cells[c] = td;
      tr.appendChild(td);
    }
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 100 22");
    svg.setAttribute("preserveAspectRatio", "none");
    const poly = document.createElementNS(SVG_NS, "polyline");
    svg.appendChild(poly);
    cells["spark-cell"].appendChild(svg);
    const act = document.createElement("td");
    act.className = "act";
    const rm = document.createElement("button");
    rm.className = "remove";
    rm.type = "button";
    rm.title = `Remove ${sym}`;
    rm.setAttribute("aria-label", `Remove ${sym}`);
    rm.textContent = "×";
    rm.addEventListener("click", () => removeSymbols([sym]));
    act.appendChild(rm);
    tr.appendChild(act);
    tbody.appendChild(tr);
    rows.set(sym, { tr, cells, svg, poly, name, points: [], shown: {}, dirty: false });
  }

  function decimals(s) {
    const i = String(s).indexOf(".");
    return i < 0 ? 0 : String(s).length - i - 1;
  }

  function fmtTime(t) {
    const d = new Date(t);
    const p = (n, w = 2) => String(n).padStart(w, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  /** Sets a price cell; flashes it green/red when the price moved up/down. */
  function setPrice(row, cell, value) {
    if (value === undefined) return;
    const td = row.cells[cell];
    const before = row.shown[cell];
    if (before === value) return;
    td.textContent = value;
    row.shown[cell] = value;
    if (before === undefined) return;
    const dir = Number(value) > Number(before) ? "flash-up" : Number(value) < Number(before) ? "flash-down" : null;
    if (!dir) return;
    td.classList.remove("flash-up", "flash-down");
    td.classList.add(dir);
    clearTimeout(td._flash);
    td._flash = setTimeout(() => td.classList.remove(dir), FLASH_MS);
  }

  function renderRow(sym, row) {
    const q = client.quotes[sym];
    if (!q) return;
    row.tr.classList.remove("pending");
    setPrice(row, "bid", q.bp);
    setPrice(row, "ask", q.ap);
    setPrice(row, "last", q.lp);
    if (q.lp !== undefined && q.pc !== undefined && Number(q.pc) !== 0) {
      const places = Math.max(decimals(q.lp), decimals(q.pc));
      const chg = Number(q.lp) - Number(q.pc);
      const dir = chg > 0 ? "up" : chg < 0 ? "down" : "";
      row.cells.chg.textContent = (chg > 0 ? "+" : "") + chg.toFixed(places);
      row.cells.pct.textContent = (chg > 0 ? "+" : "") + ((chg / Number(q.pc)) * 100).toFixed(2) + "%";
      row.cells.chg.className = "chg " + dir;
      row.cells.pct.className = "pct " + dir;
      row.svg.setAttribute("class", "spark " + dir);
    }
    if (q.v !== undefined) row.cells.vol.textContent = Number(q.v).toLocaleString("en-US");
    if (q.t !== undefined) row.cells.time.textContent = fmtTime(q.t);
    renderSpark(row, q.pc);
  }

  /** Draws the recent last prices as a polyline, scaled to the row's own range. */
  function renderSpark(row, pc) {
    const pts = row.points;
    if (!pts.length) return;
    const min = Math.min(...pts), max = Math.max(...pts);
    const span = max - min;
    const y = (p) => (span ? 20 - ((p - min) / span) * 18 : 11).toFixed(1);
    // Spread over the full width (one point: a flat line), newest at the right.
    const xs = pts.length > 1 ? pts.map((_, i) => (i * 100) / (pts.length - 1)) : [0, 100];
    const ys = pts.length > 1 ? pts.map(y) : [y(pts[0]), y(pts[0])];
    row.poly.setAttribute("points", xs.map((x, i) => `${x.toFixed(1)},${ys[i]}`).join(" "));
    row.svg.dataset.points = String(pts.length);
    row.svg.setAttribute("aria-label", `last ${pts.length} prices, previous close ${pc || "?"}`);
  }

  // Repaint dirty rows once per animation frame, however many messages came in.
  let frameQueued = false;
  function queueRender() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(() => {
      frameQueued = false;
      for (const [sym, row] of rows) if (row.dirty) { row.dirty = false; renderRow(sym, row); }
    });
  }

  // ---- errors -----------------------------------------------------------------

  function showError(text, attrs) {
    const box = $("#errors");
    const key = attrs ? `${attrs.code}:${attrs.sym || ""}` : text;
    for (const el of box.children) if (el.dataset.key === key) el.remove(); // newest wins
    const div = document.createElement("div");
    div.className = "error";
    div.dataset.key = key;
    if (attrs) { div.dataset.code = attrs.code; if (attrs.sym) div.dataset.sym = attrs.sym; }
    const span = document.createElement("span");
    span.textContent = text;
    const x = document.createElement("button");
    x.className = "dismiss";
    x.type = "button";
    x.textContent = "×";
    x.setAttribute("aria-label", "Dismiss");
    x.addEventListener("click", () => div.remove());
    div.append(span, x);
    box.prepend(div);
    while (box.children.length > 6) box.lastElementChild.remove();
  }

  // ---- watchlist edits -----------------------------------------------------------

  function addSymbols(text) {
    const { valid, invalid } = parseSymbols(text);
    for (const s of invalid) showError(`"${s}" is not a valid symbol (1–16 of A–Z 0–9 . - _ /)`, { code: "invalid_symbol", sym: s });
    const fresh = valid.filter((s) => !rows.has(s));
    if (!fresh.length) return;
    watchlist.push(...fresh);
    fresh.forEach(addRow);
    saveWatchlist();
    updateEmpty();
    client.subscribe(fresh);
  }

  /** Removes symbols from the grid and the watchlist; a server `refusal` {code, text} is shown. */
  function removeSymbols(syms, refusal) {
    for (const s of syms) {
      const row = rows.get(s);
      if (row) { row.tr.remove(); rows.delete(s); }
      if (refusal) showError(`${s}: ${refusal.text}. Removed from the watchlist.`, { code: refusal.code, sym: s });
    }
    watchlist = watchlist.filter((s) => !syms.includes(s));
    saveWatchlist();
    updateEmpty();
    if (!refusal) client.unsubscribe(syms); // refused ones the client has dropped already
  }

  function updateEmpty() {
    $("#empty").hidden = rows.size > 0;
  }

  // ---- status ---------------------------------------------------------------

  let recent = []; // receive times of quote messages in the last second
  let lastQuoteAt = 0; // local time of the last quote message
  let openedAt = 0; // local time the connection (last) opened
  let newestT = null; // greatest `t` seen

  function setBanner(kind, text) {
    const b = $("#banner");
    b.hidden = !kind;
    b.dataset.kind = kind || "";
    b.textContent = text || "";
  }

  function updateStatus() {
    const now = Date.now();
    recent = recent.filter((t) => now - t < 1000);
    $("#status-rate").textContent = String(recent.length);
    $("#status-age").textContent = newestT == null ? "–" : `${(Math.max(0, now - newestT) / 1000).toFixed(1)} s`;
    const st = client.state;
    const el = $("#status-state");
    el.textContent = st;
    el.dataset.state = st;
    $("#status-transport").textContent = client.transport || "–";
    const quiet = now - Math.max(lastQuoteAt, openedAt);
    const stale = st === "open" && rows.size > 0 && quiet > STALE_MS;
    const feed = $("#status-feed");
    const feedState = st !== "open" ? "offline" : stale ? "stale" : lastQuoteAt ? "live" : "waiting";
    feed.dataset.feed = feedState;
    feed.textContent = feedState === "stale" ? "stale feed" : feedState;
    document.body.dataset.state = stale ? "stale" : st;
    if (st === "connecting") setBanner("connecting", `Connecting to the gateway (trying ${client.transport})…`);
    else if (st === "reconnecting") setBanner("reconnecting", `Connection lost: reconnecting (trying ${client.transport})…`);
    else if (st === "closed") setBanner("closed", "Disconnected.");
    else if (st === "unauthorized") {
      setBanner("unauthorized", token
        ? "Not authorized: the gateway refused the access token. Enter another one above."
        : "Not authorized: the gateway wants an access token. Enter it above (or open the page with #token=…).");
    }
    else if (stale) setBanner("stale", `Stale feed: no quote for ${Math.round(quiet / 1000)} s.`);
    else setBanner(null);
  }

  // ---- wiring ---------------------------------------------------------------

  const allowed = (params.get("transports") || "").split(",").filter((t) => ["webrtc", "ws", "sse", "poll"].includes(t));
  const rate = loadRate();
  $("#rate-select").value = String(rate);
  const webrtcToggle = $("#webrtc-toggle");
  webrtcToggle.checked = allowed[0] === "webrtc";
  webrtcToggle.addEventListener("change", () => {
    const url = new URL(location.href);
    if (webrtcToggle.checked) url.searchParams.set("transports", "webrtc,ws,sse,poll");
    else url.searchParams.delete("transports");
    location.assign(url.toString());
  });

  const client = TickerClient.connect("", {
    transports: allowed.length ? allowed : ["ws", "sse", "poll"],
    maxRate: rate,
    token,
    onState(state) {
      if (state === "open") {
        openedAt = Date.now();
        for (const el of document.querySelectorAll('#errors .error[data-code="unauthorized"]')) el.remove();
      }
      updateStatus();
    },
    onMessage(m) {
      if (m.type !== "snapshot" && m.type !== "update") return;
      const row = rows.get(m.sym);
      if (!row) return;
      const now = Date.now();
      recent.push(now);
      lastQuoteAt = now;
      if (m.t != null && (newestT == null || m.t > newestT)) newestT = m.t;
      if (m.lp !== undefined) {
        row.points.push(Number(m.lp));
        if (row.points.length > SPARK_POINTS) row.points.shift();
      }
      row.dirty = true;
      queueRender();
    },
    onError(err) {
      if (err.code === "transport") { console.info("ticker transport:", err.message); return; }
      const why = REFUSED[err.code];
      const syms = (err.symbols || []).filter((s) => rows.has(s) || watchlist.includes(s));
      if (why && syms.length) removeSymbols(syms, { code: err.code, text: why });
      else showError(`${err.code}: ${err.message || "error"}`, { code: err.code });
    },
  });

  watchlist.forEach(addRow);
  updateEmpty();
  saveWatchlist();
  client.subscribe(watchlist);

  $("#watchlist-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("#watchlist-input");
    addSymbols(input.value);
    input.value = "";
    input.focus();
  });
  /** The token field never shows the token; its placeholder tells whether one is set. */
  function showTokenField() {
    $("#token-input").value = "";
    $("#token-input").placeholder = token ? "Token set (enter another)" : "Access token";
  }
  /** Connects again with the token now kept (or none). */
  function applyToken() {
    showTokenField();
    client.setToken(token);
  }
  showTokenField();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    storeToken($("#token-input").value.trim());
    applyToken();
  });
  window.addEventListener("hashchange", () => { if (takeTokenFromFragment()) applyToken(); });
  $("#rate-select").addEventListener("change", (ev) => {
    const r = Number(ev.target.value);
    try { localStorage.setItem(RATE_KEY, String(r)); } catch (e) { /* private mode */ }
    client.setRate(r);
  });

  // Company names for the symbol column (cosmetic; the grid works without them).
  fetch("/api/v1/symbols").then((r) => r.json()).then((list) => {
    for (const s of list) names[s.sym] = s.name;
    for (const [sym, row] of rows) row.name.textContent = names[sym] || "";
  }).catch(() => {});

  setInterval(updateStatus, 250);
  updateStatus();
  window.dashboard = { client, rows, watchlist: () => watchlist.slice() };
})();
