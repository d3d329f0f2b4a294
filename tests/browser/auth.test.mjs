// The dashboard and client.js against a gateway with authentication on, in headless
// Chromium (PROTOCOL.md section 9):
//
//   GATEWAY_URL=http://127.0.0.1:8080 AUTH_KEY=tk_.. AUTH_KEY_A=tk_.. JWT_SECRET=.. \
//   LISTED_PAGE=http://127.0.0.1:8081/ OTHER_PAGE=http://127.0.0.1:8082/ \
//     node --test tests/browser/auth.test.mjs
//
// tests/browser_auth.rs starts the gateway (an API key for every symbol in AUTH_KEY,
// one for A* in AUTH_KEY_A, HS256 tokens signed with JWT_SECRET, leeway 0 s, and
// LISTED_PAGE's origin in server.allowed_origins) and two blank pages on other
// origins, then runs this file. Every wait polls for a condition with a timeout.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  BASE, DEFAULT_WATCHLIST, TEST_TIMEOUT, WAIT, addSymbol, blockWebSocket, clientLog, openClient, openDashboard,
  waitClient, waitFor, waitPriced, waitStatus, waitStreaming,
} from "./common.mjs";

const KEY = process.env.AUTH_KEY;
const KEY_A = process.env.AUTH_KEY_A;
const SECRET = process.env.JWT_SECRET;
const LISTED_PAGE = process.env.LISTED_PAGE;
const OTHER_PAGE = process.env.OTHER_PAGE;
const TRANSPORTS = ["ws", "sse", "poll"];

/** An HS256 token for `desk-9` (every symbol), good for `secs` seconds. */
function jwt(secs, claims = {}) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + secs;
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: "desk-9", syms: ["*"], exp, ...claims })}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

/** Records every request URL, its Authorization header, and the WebSocket frames the page sends. */
function recordTraffic(page) {
  const seen = { requests: [], ws: [], sent: [] };
  page.on("request", (r) => seen.requests.push({ method: r.method(), url: r.url(), auth: r.headers().authorization }));
  page.on("websocket", (ws) => {
    seen.ws.push(ws.url());
    ws.on("framesent", (f) => seen.sent.push(String(f.payload)));
  });
  return seen;
}

/** No URL the page asked for (pages, WebSockets) carries the secret. */
function assertNotInUrls(seen, secret) {
  for (const url of [...seen.requests.map((r) => r.url), ...seen.ws]) {
    assert.ok(!url.includes(secret), `the token is in a URL: ${url}`);
  }
}

const requestsTo = (seen, method, path) =>
  seen.requests.filter((r) => r.method === method && new URL(r.url).pathname === path);

/** The dashboard's auth error is shown, it is in state "unauthorized", and no quote arrived. */
async function waitRefused(page, transport, message) {
  await waitStatus(page, transport, "unauthorized");
  await waitFor(page, "the auth error and banner", (message) =>
    new RegExp(message).test(document.querySelector('#errors .error[data-code="unauthorized"]')?.textContent || "") &&
    document.querySelector('#banner[data-kind="unauthorized"]:not([hidden])'), message);
  const shown = await page.evaluate(() => ({
    quotes: Object.keys(window.dashboard.client.quotes),
    cells: [...document.querySelectorAll("tr[data-sym] td.last")].map((td) => td.textContent),
  }));
  assert.deepEqual(shown.quotes, [], "quotes arrived without a credential");
  assert.ok(shown.cells.every((c) => c === "…"), `prices shown: ${shown.cells}`);
}

// ---- the dashboard ----

test("(1) a key in #token= streams over WebSocket; it leaves the address bar and never goes in a URL", { timeout: TEST_TIMEOUT }, async (t) => {
  let seen;
  const { page, pageErrors } = await openDashboard(t, {
    query: `#token=${KEY}`,
    setup: (context, page) => { seen = recordTraffic(page); },
  });
  await waitStreaming(page, "ws");
  // The credential is the WebSocket's first op.
  assert.equal(JSON.parse(seen.sent[0]).op, "auth");
  assert.equal(JSON.parse(seen.sent[0]).token, KEY);
  assert.equal(seen.ws.length, 1);
  const where = await page.evaluate(() => ({ hash: location.hash, kept: sessionStorage.getItem("ticker.token") }));
  assert.deepEqual(where, { hash: "", kept: KEY });
  assertNotInUrls(seen, KEY);

  // A reload takes the token kept for the tab.
  await page.reload();
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  assertNotInUrls(seen, KEY);
  assert.deepEqual(pageErrors, []);
});

test("(2) with WebSocket blocked the dashboard streams over SSE, with a fresh single-use ticket per stream", { timeout: TEST_TIMEOUT }, async (t) => {
  const counter = { ws: 0 };
  let seen;
  const { page, pageErrors } = await openDashboard(t, {
    query: `#token=${KEY}`,
    setup: async (context, page) => { seen = recordTraffic(page); await blockWebSocket(context, counter); },
  });
  await waitStreaming(page, "sse");
  assert.ok(counter.ws >= 1, "the page never tried WebSocket");
  // A new symbol set is a new stream, with a new ticket.
  await addSymbol(page, "IBM");
  await waitPriced(page, ["IBM"]);
  const tickets = requestsTo(seen, "POST", "/api/v1/tickets");
  assert.ok(tickets.length >= 2, `${tickets.length} tickets`);
  assert.ok(tickets.every((r) => r.auth === `Bearer ${KEY}`), "a ticket asked for without the bearer header");
  const used = requestsTo(seen, "GET", "/sse").map((r) => new URL(r.url).searchParams.get("ticket"));
  assert.ok(used.length >= 2 && used.every(Boolean), `streams without a ticket: ${used}`);
  assert.equal(new Set(used).size, used.length, "a ticket was used twice");
  assertNotInUrls(seen, KEY);
  assert.deepEqual(pageErrors, []);
});

test("(3) with WebSocket and SSE blocked the dashboard long-polls with the bearer header", { timeout: TEST_TIMEOUT }, async (t) => {
  const counter = { ws: 0, sse: 0 };
  let seen;
  const { page, pageErrors } = await openDashboard(t, {
    query: `#token=${KEY}`,
    setup: async (context, page) => {
      seen = recordTraffic(page);
      await blockWebSocket(context, counter);
      await context.route((url) => url.pathname === "/sse", (route) => { counter.sse++; return route.abort(); });
    },
  });
  await waitStreaming(page, "poll");
  assert.ok(counter.ws >= 1 && counter.sse >= 1, `the page skipped a transport: ${JSON.stringify(counter)}`);
  const created = requestsTo(seen, "POST", "/poll");
  assert.ok(created.length >= 1 && created.every((r) => r.auth === `Bearer ${KEY}`), JSON.stringify(created));
  assertNotInUrls(seen, KEY);
  assert.deepEqual(pageErrors, []);
});

test("(4) without a token: the auth error, no quote and no retry on each transport; the token field then connects", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of TRANSPORTS) {
    let seen;
    const { page, pageErrors } = await openDashboard(t, {
      query: `?transports=${transport}`,
      setup: (context, page) => { seen = recordTraffic(page); },
    });
    await waitRefused(page, transport, "unauthorized");
    // One attempt, then it waits for a token: no other transport, no reconnect.
    const attempts = seen.ws.length + requestsTo(seen, "GET", "/sse").length + requestsTo(seen, "POST", "/poll").length;
    assert.equal(attempts, 1, `${transport}: ${attempts} connection attempts`);

    await page.fill("#token-input", KEY);
    await page.click("#token-apply");
    await waitStreaming(page, transport);
    await waitFor(page, "the auth error and banner to go", () =>
      !document.querySelector('#errors .error[data-code="unauthorized"]') && document.querySelector("#banner").hidden);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("ticker.token")), KEY);
    assert.equal(await page.inputValue("#token-input"), "", "the field keeps the token on screen");
    assertNotInUrls(seen, KEY);
    assert.deepEqual(pageErrors, [], transport);
  }
});

test("(5) a refused key is reported once per transport, without retrying", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of TRANSPORTS) {
    let seen;
    const { page, pageErrors } = await openDashboard(t, {
      query: `?transports=${transport}#token=tk_not-a-key`,
      setup: (context, page) => { seen = recordTraffic(page); },
    });
    await waitRefused(page, transport, "invalid credential");
    const attempts = seen.ws.length + requestsTo(seen, "POST", "/api/v1/tickets").length + requestsTo(seen, "POST", "/poll").length;
    assert.equal(attempts, 1, `${transport}: ${attempts} attempts`);
    assert.deepEqual(pageErrors, [], transport);
  }
});

test("(6) symbols a key is not entitled to are removed with an explanation; the rest stream (SSE and long-polling: 403)", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of TRANSPORTS) {
    const { page, pageErrors } = await openDashboard(t, { query: `?transports=${transport}#token=${KEY_A}` });
    await waitStatus(page, transport);
    await waitPriced(page, ["AAPL", "AMZN"]);
    await waitFor(page, "only the A* rows left, the others explained", () => {
      const rows = [...document.querySelectorAll("tr[data-sym]")].map((tr) => tr.dataset.sym);
      const told = document.querySelectorAll('#errors .error[data-code="not_entitled"]').length;
      return rows.join() === "AAPL,AMZN" && told > 0;
    });
    assert.deepEqual(pageErrors, [], transport);
  }
});

// ---- client.js: refresh and expiry ----

test("(7) client: a function token is refreshed before it expires; the connection stays up", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of TRANSPORTS) {
    const minted = [];
    const mint = () => {
      const token = jwt(6);
      minted.push(JSON.parse(Buffer.from(token.split(".")[1], "base64url")).exp);
      return token;
    };
    const { page, requests } = await openClient(t, { transports: [transport], symbols: ["AAPL"] }, null, { mint });
    await waitClient(page, `${transport} open with AAPL`, () => client.state === "open" && client.quotes.AAPL);
    // Past the first token's exp (+1 s), quotes still arrive on the same connection.
    await waitClient(page, "the first token to run out", (exp) => Date.now() > exp * 1000 + 1000, minted[0]);
    const before = await page.evaluate(() => log.msgs.length);
    await waitClient(page, "quotes after it", (n) =>
      log.msgs.slice(n).some((m) => m.type === "update" || m.type === "snapshot"), before);
    const { states, errors } = await clientLog(page);
    assert.equal(states, `${transport}:connecting ${transport}:open`, `${transport}: it reconnected`);
    assert.deepEqual(errors, [], transport);
    assert.ok(minted.length >= 2, `${transport}: ${minted.length} tokens`);
    if (transport === "sse") {
      assert.ok(requests.filter((r) => r === "POST /api/v1/tickets").length >= 2, requests.join("\n"));
    } else {
      assert.ok(await page.evaluate(() => log.msgs.some((m) => m.type === "authenticated")), transport);
    }
  }
});

test("(8) client: a fixed token that runs out ends the connection once, with the server's reason", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of TRANSPORTS) {
    const { page, requests } = await openClient(t, { transports: [transport], symbols: ["AAPL"], token: jwt(4) });
    await waitClient(page, `${transport} open with AAPL`, () => client.state === "open" && client.quotes.AAPL);
    await waitClient(page, "the unauthorized state", () => client.state === "unauthorized");
    const { states, errors } = await clientLog(page);
    assert.equal(states, `${transport}:connecting ${transport}:open ${transport}:unauthorized`);
    assert.ok(errors.length === 1 && /^unauthorized .*expired/.test(errors[0]), `${transport}: ${errors}`);
    const opened = requests.filter((r) => /^(WS \/ws|GET \/sse|POST \/poll)$/.test(r)).length;
    assert.equal(opened, 1, `${transport}: ${requests.join(", ")}`);
  }
});

test("(9) client: a refresh the gateway refuses ends the WebSocket; a function token gets one fresh try", { timeout: TEST_TIMEOUT }, async (t) => {
  // The first token is desk-9's; the later ones desk-8's: a refresh must be for the same principal.
  let n = 0;
  const mint = () => jwt(4, n++ === 0 ? {} : { sub: "desk-8" });
  const { page } = await openClient(t, { transports: ["ws"], symbols: DEFAULT_WATCHLIST }, null, { mint });
  // The new connection resubscribes with `resume`: snapshots of what moved meanwhile,
  // then updates (eight symbols of the busy market, so some move within the wait).
  await waitClient(page, "a new connection as desk-8, with quotes", () => {
    const at = log.msgs.findIndex((m) => m.type === "authenticated" && m.principal === "desk-8");
    const since = at < 0 ? [] : log.msgs.slice(at);
    const sub = since.findIndex((m) => m.type === "subscribed");
    return client.state === "open" && sub >= 0 && since.slice(sub).some((m) => m.type === "snapshot" || m.type === "update");
  });
  const { states, errors } = await clientLog(page);
  assert.match(states, /^ws:connecting ws:open (ws:reconnecting )+ws:open/);
  assert.ok(errors.some((e) => /same principal/.test(e)), errors.join("; "));
});

// ---- another page's origin (CORS) ----

/** Waits until `check()` (in Node) is truthy, polling every 50 ms. */
async function until(what, check) {
  const deadline = Date.now() + WAIT;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Chromium's account of the requests that failed for CORS: "METHOD /path: reason".
 * (The pages of this test install no Playwright route: with routing on, Playwright
 * answers CORS preflights itself and the gateway's answer would go unseen.)
 */
async function corsFailures(context, page) {
  const failed = [];
  const sent = new Map();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.requestWillBeSent", (e) => sent.set(e.requestId, `${e.request.method} ${new URL(e.request.url).pathname}`));
  cdp.on("Network.loadingFailed", (e) => {
    if (e.corsErrorStatus) failed.push(`${sent.get(e.requestId)}: ${e.corsErrorStatus.corsError}`);
  });
  return failed;
}

test("(10) a page of a listed origin uses the gateway over SSE and long-polling with the bearer header; another is refused at the preflight", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of ["sse", "poll"]) {
    const opts = { transports: [transport], symbols: ["AAPL"], token: KEY, openTimeoutMs: 5000 };
    const listed = await openClient(t, opts, null, { from: LISTED_PAGE });
    await waitClient(listed.page, `${transport} quotes on the listed page`, () =>
      client.state === "open" && client.quotes.AAPL && client.quotes.AAPL.lp);
    assert.deepEqual((await clientLog(listed.page)).errors, [], transport);
    // The header went cross-origin: the preflight let it through.
    const ok = await listed.page.evaluate((base) =>
      fetch(`${base}/api/v1/quotes/AAPL`, { headers: { Authorization: `Bearer ${client.opts.token}` } }).then((r) => r.status), BASE);
    assert.equal(ok, 200);

    let failed;
    const other = await openClient(t, opts, async (context, page) => { failed = await corsFailures(context, page); }, { from: OTHER_PAGE });
    await waitClient(other.page, `${transport} refused on the other page`, () =>
      log.errors.some((e) => /^transport /.test(e)));
    const refused = await other.page.evaluate((base) =>
      fetch(`${base}/api/v1/quotes/AAPL`, { headers: { Authorization: "Bearer x" } }).then((r) => `HTTP ${r.status}`, (e) => e.name), BASE);
    assert.equal(refused, "TypeError");
    const path = transport === "sse" ? "POST /api/v1/tickets" : "POST /poll";
    await until(`Chromium's account of the refused ${path} and quote requests`, () =>
      failed.some((f) => f.startsWith(path)) && failed.some((f) => f.startsWith("GET /api/v1/quotes/AAPL")));
    assert.ok(failed.every((f) => /: Preflight/.test(f)), `not refused at the preflight: ${failed.join("; ")}`);
    assert.deepEqual(await other.page.evaluate(() => Object.keys(client.quotes)), [], transport);
  }
});
