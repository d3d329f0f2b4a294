// Browser tests of the dashboard page, in headless Chromium driven by playwright-core.
//
//   GATEWAY_URL=http://127.0.0.1:8080 node --test tests/browser/dashboard.test.mjs
//
// tests/browser.rs starts a gateway with a simulated feed and runs this file. Every
// wait polls for a condition with a timeout (no fixed sleeps). WebSocket and SSE are
// made unavailable for real (Playwright closes the page's WebSocket; /sse requests
// are aborted at the network layer), so the fallbacks run as they would in the field.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BASE, DEFAULT_WATCHLIST, TEST_TIMEOUT, addSymbol, blockWebSocket, clientLog, openClient, openDashboard,
  prices, rowSymbols, waitClient, waitFor, waitPriced, waitPricesChange, waitStatus,
} from "./common.mjs";

const SCREENSHOTS = fileURLToPath(new URL("./screenshots/", import.meta.url));

async function watchlistState(page) {
  return page.evaluate(() => ({
    url: (new URLSearchParams(location.search).get("symbols") || "").split(",").filter(Boolean),
    stored: JSON.parse(localStorage.getItem("ticker.watchlist") || "[]"),
  }));
}

/** Adding an unknown symbol shows the error and leaves no row; the rest keep going. */
async function checkUnknownSymbol(page) {
  await addSymbol(page, "ZZZZ");
  await waitFor(page, "an unknown-symbol error for ZZZZ", () => {
    const e = document.querySelector('#errors .error[data-code="unknown_symbol"][data-sym="ZZZZ"]');
    return e && /unknown symbol/i.test(e.textContent) && /ZZZZ/.test(e.textContent);
  });
  await waitFor(page, "no ZZZZ row", () => !document.querySelector('tr[data-sym="ZZZZ"]'));
  const { url, stored } = await watchlistState(page);
  assert.ok(!url.includes("ZZZZ") && !stored.includes("ZZZZ"), `ZZZZ still in the watchlist: ${url} / ${stored}`);
  await waitPricesChange(page, await prices(page), 1);
}

test("(1) the dashboard loads, streams over WebSocket and updates", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page, pageErrors } = await openDashboard(t);
  // Record tick flashes as they happen (the class is removed again shortly after).
  await page.evaluate(() => {
    window.__flashes = 0;
    new MutationObserver((muts) => {
      for (const m of muts) if (/flash-(up|down)/.test(m.target.className)) window.__flashes++;
    }).observe(document.querySelector("#grid-body"), { subtree: true, attributes: true, attributeFilter: ["class"] });
  });
  await waitFor(page, "rows for the default watchlist", (want) =>
    JSON.stringify([...document.querySelectorAll("tr[data-sym]")].map((tr) => tr.dataset.sym)) === JSON.stringify(want),
  DEFAULT_WATCHLIST);
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);
  await waitFor(page, "a green or red tick flash", () => window.__flashes > 0);
  await waitFor(page, "sparklines with at least 2 points", () =>
    [...document.querySelectorAll("tr[data-sym] .spark")].some((s) => Number(s.dataset.points) >= 2));
  await waitFor(page, "a live feed, messages/s and quote age in the status bar", () =>
    document.querySelector("#status-feed").textContent === "live" &&
    /^\d+$/.test(document.querySelector("#status-rate").textContent) &&
    /^\d+\.\d s$/.test(document.querySelector("#status-age").textContent));

  // Every row is complete and well formed.
  const cells = await page.$$eval("tr[data-sym]", (trs) => trs.map((tr) => Object.fromEntries(
    ["bid", "ask", "last", "chg", "pct", "vol", "time"].map((c) => [c, tr.querySelector(`td.${c}`).textContent]))));
  for (const c of cells) {
    assert.match(c.chg, /^[+-]?\d+(\.\d+)?$/, JSON.stringify(c));
    assert.match(c.pct, /^[+-]?\d+\.\d\d%$/, JSON.stringify(c));
    assert.match(c.vol, /^\d{1,3}(,\d{3})*$/, JSON.stringify(c));
    assert.match(c.time, /^\d\d:\d\d:\d\d\.\d{3}$/, JSON.stringify(c));
    assert.ok(Number(c.bid) <= Number(c.ask), `bid above ask: ${JSON.stringify(c)}`);
  }
  assert.equal(await page.locator("#banner").isVisible(), false, "a banner is shown while live");

  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, "dashboard.png"), fullPage: true });
  assert.deepEqual(pageErrors, []);
});

test("(2) the watchlist is edited: add, remove, rate; kept in the URL and localStorage", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page, pageErrors } = await openDashboard(t);
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);

  await addSymbol(page, "ibm"); // lower case is normalised
  await waitPriced(page, ["IBM"]);
  let wl = await watchlistState(page);
  assert.ok(wl.url.includes("IBM") && wl.stored.includes("IBM"), `IBM not saved: ${JSON.stringify(wl)}`);

  await page.click('tr[data-sym="MSFT"] .remove');
  await waitFor(page, "the MSFT row to go", () => !document.querySelector('tr[data-sym="MSFT"]'));
  wl = await watchlistState(page);
  assert.ok(!wl.url.includes("MSFT") && !wl.stored.includes("MSFT"), `MSFT still saved: ${JSON.stringify(wl)}`);
  assert.deepEqual(wl.url, wl.stored);
  assert.equal(await page.evaluate(() => window.dashboard.client.symbols.has("MSFT")), false);

  // The rate selector re-subscribes; the gateway grants the new rate.
  await page.evaluate(() => {
    const c = window.dashboard.client, orig = c.opts.onMessage;
    window.__granted = [];
    c.opts.onMessage = (m, cl) => { if (m.type === "subscribed") window.__granted.push(m.max_rate); orig(m, cl); };
  });
  await page.selectOption("#rate-select", "1");
  await waitFor(page, "the gateway to grant max_rate 1", () => window.__granted.includes(1));
  assert.equal(await page.evaluate(() => localStorage.getItem("ticker.rate")), "1");

  // A new visit without ?symbols= gets the watchlist back from localStorage.
  await page.goto(`${BASE}/`);
  await waitStatus(page, "ws");
  const expected = [...DEFAULT_WATCHLIST.filter((s) => s !== "MSFT"), "IBM"];
  await waitPriced(page, expected);
  assert.deepEqual(await rowSymbols(page), expected);
  assert.equal(await page.inputValue("#rate-select"), "1");
  assert.deepEqual(pageErrors, []);
});

test("(3) an unknown symbol is reported and leaves no row", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page, pageErrors } = await openDashboard(t);
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await checkUnknownSymbol(page);
  assert.deepEqual(await rowSymbols(page), DEFAULT_WATCHLIST);
  assert.deepEqual(pageErrors, []);
});


test("(4) without WebSocket the dashboard falls back to SSE", { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = { ws: 0 };
  const { page, pageErrors } = await openDashboard(t, { setup: (context) => blockWebSocket(context, seen) });
  await waitStatus(page, "sse");
  assert.ok(seen.ws >= 1, "the page never tried WebSocket");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);

  // Changing the symbol set reopens the stream, still on SSE.
  await addSymbol(page, "IBM");
  await waitPriced(page, ["IBM"]);
  await checkUnknownSymbol(page);
  await waitStatus(page, "sse");
  await waitPricesChange(page, await prices(page), 2);
  assert.deepEqual(pageErrors, []);
});

test("(5) without WebSocket and SSE the dashboard falls back to long-polling", { timeout: TEST_TIMEOUT }, async (t) => {
  const seen = { ws: 0, sse: 0 };
  const { page, pageErrors } = await openDashboard(t, {
    setup: async (context) => {
      await blockWebSocket(context, seen);
      await context.route("**/sse**", (route) => { seen.sse++; return route.abort(); });
    },
  });
  await waitStatus(page, "poll");
  assert.ok(seen.ws >= 1 && seen.sse >= 1, `the page skipped a transport: ${JSON.stringify(seen)}`);
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);

  // Ops travel as POST /poll/{session}.
  await addSymbol(page, "IBM");
  await waitPriced(page, ["IBM"]);
  await page.click('tr[data-sym="MSFT"] .remove');
  await waitFor(page, "the MSFT row to go", () => !document.querySelector('tr[data-sym="MSFT"]'));
  await checkUnknownSymbol(page);
  await waitStatus(page, "poll");
  await waitPricesChange(page, await prices(page), 2);
  assert.deepEqual(pageErrors, []);
});

// ---- the client library on its own (client.js in a blank page of the gateway) ----

test("(6) client: a WebSocket that goes silent is detected as stalled and replaced by SSE", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page } = await openClient(t, { symbols: ["AAPL"], stallTimeoutMs: 2000, pingIntervalMs: 500 }, (context) =>
    // Pass the first server frame (welcome), then freeze the link: nothing more arrives, pongs included.
    context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
      const server = ws.connectToServer();
      let frames = 0;
      server.onMessage((m) => { if (frames++ === 0) ws.send(m); });
    }));
  await waitClient(page, "ws to open", () => client.transport === "ws" && client.state === "open");
  const openedAt = await page.evaluate(() => Date.now());
  await waitClient(page, "a fallback to SSE with AAPL quotes", () =>
    client.transport === "sse" && client.state === "open" && client.quotes.AAPL && client.quotes.AAPL.lp);
  const { states, errors } = await clientLog(page);
  assert.match(states, /ws:open .*ws:reconnecting .*sse:open/);
  assert.ok(errors.some((e) => /^transport ws: no message/.test(e)), errors.join("; "));
  const stalledAfter = (await page.evaluate(() => Date.now())) - openedAt;
  assert.ok(stalledAfter >= 1900, `declared stalled after only ${stalledAfter} ms`);
});

test("(7) client: pings keep a quiet WebSocket open", { timeout: TEST_TIMEOUT }, async (t) => {
  // No symbols: only pongs arrive. 8 pongs 300 ms apart span more than the stall timeout.
  const { page } = await openClient(t, { stallTimeoutMs: 1500, pingIntervalMs: 300 });
  await waitClient(page, "8 pongs", () => log.msgs.filter((m) => m.type === "pong").length >= 8);
  const { states, errors, transport, state } = await clientLog(page);
  assert.equal(`${transport}:${state}`, "ws:open", states);
  assert.deepEqual(errors, []);
});

test("(8) client: SSE and long-polling idle without symbols, stream from the first subscribe", { timeout: TEST_TIMEOUT }, async (t) => {
  for (const transport of ["sse", "poll"]) {
    const { page, requests } = await openClient(t, { transports: [transport] });
    await waitClient(page, `${transport} open and idle`, (tr) => client.transport === tr && client.state === "open", transport);
    assert.deepEqual(requests.filter((r) => /\/(sse|poll)/.test(r)), [], "a request without symbols");
    await page.evaluate(() => client.subscribe(["AAPL", "MSFT"]));
    await waitClient(page, `AAPL and MSFT quotes over ${transport}`, () => client.quotes.AAPL?.lp && client.quotes.MSFT?.lp);
    await page.evaluate(() => client.unsubscribe(["AAPL"]));
    assert.deepEqual(await page.evaluate(() => Object.keys(client.quotes)), ["MSFT"]);
    await page.evaluate(() => client.unsubscribe(["MSFT"]));
    await page.evaluate(() => client.subscribe(["IBM"]));
    await waitClient(page, `IBM quotes over ${transport}`, () => client.quotes.IBM?.lp);
    const { errors, state } = await clientLog(page);
    assert.equal(state, "open");
    assert.deepEqual(errors, [], `${transport}: ${errors.join("; ")}`);
    assert.deepEqual(await page.evaluate(() => Object.keys(client.quotes)), ["IBM"]);
  }
});

// ---- the dashboard's connection states ----

test("(9) the dashboard shows 'reconnecting' while the gateway is unreachable, then recovers", { timeout: TEST_TIMEOUT }, async (t) => {
  let down = false;
  let current = null;
  const { page, pageErrors } = await openDashboard(t, {
    setup: async (context) => {
      await context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
        if (down) return ws.close();
        current = ws;
        ws.connectToServer(); // forwards both ways
      });
      await context.route((url) => /^\/(sse|poll)/.test(url.pathname), (route) => (down ? route.abort() : route.fallback()));
    },
  });
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  const shown = await prices(page);

  down = true;
  await current.close({ code: 1001, reason: "test: gateway gone" });
  await waitFor(page, "the reconnecting state and banner", () =>
    document.querySelector("#status-state").textContent === "reconnecting" &&
    /reconnecting/i.test(document.querySelector("#banner:not([hidden])")?.textContent || ""));
  // The last known prices stay on screen meanwhile.
  assert.deepEqual(Object.keys(await prices(page)), Object.keys(shown));

  down = false;
  await waitStatus(page, "ws");
  await waitFor(page, "the banner to go", () => document.querySelector("#banner").hidden);
  await waitPricesChange(page, await prices(page), 2);
  assert.deepEqual(pageErrors, []);
});

test("(10) the dashboard shows 'stale feed' when quotes stop on a live connection", { timeout: TEST_TIMEOUT }, async (t) => {
  let freeze = false;
  const { page, pageErrors } = await openDashboard(t, {
    setup: (context) => context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
      const server = ws.connectToServer();
      server.onMessage((frame) => {
        // While frozen, quotes are withheld; everything else (pongs, replies) passes.
        const msgs = JSON.parse(frame).filter((m) => !freeze || (m.type !== "update" && m.type !== "snapshot"));
        if (msgs.length) ws.send(JSON.stringify(msgs));
      });
    }),
  });
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitFor(page, "a live feed", () => document.querySelector("#status-feed").textContent === "live");

  freeze = true;
  await waitFor(page, "the stale-feed state and banner", () =>
    document.querySelector("#status-feed").textContent === "stale feed" &&
    /stale feed/i.test(document.querySelector("#banner:not([hidden])")?.textContent || ""));
  assert.equal(await page.textContent("#status-state"), "open");

  freeze = false;
  await waitFor(page, "the feed to be live again", () =>
    document.querySelector("#status-feed").textContent === "live" && document.querySelector("#banner").hidden);
  assert.deepEqual(pageErrors, []);
});
