// What the browser test files share: headless Chromium (playwright-core) for the
// gateway at GATEWAY_URL, pages of the dashboard and of the client library alone, and
// waits that poll the page for a condition with a timeout (never a fixed sleep).

import { after, before } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const BASE = (process.env.GATEWAY_URL || "").replace(/\/+$/, "");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const WAIT = 15_000; // longest single wait for a condition
export const TEST_TIMEOUT = 90_000;
export const DEFAULT_WATCHLIST = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "META"];

/** The browser of the test file that imported this module. */
export let browser;

before(async () => {
  assert.ok(BASE, "set GATEWAY_URL to the gateway's base URL, e.g. http://127.0.0.1:8080");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // WebRTC to a loopback server in a machine without a real interface needs both.
      "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
    // launch() gives every run a fresh temporary profile (user-data-dir) of its own.
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh context (own localStorage) and page; `setup` may install routes first. */
export async function openDashboard(t, { query = "", setup } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 640 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  if (setup) await setup(context, page);
  await page.goto(`${BASE}/${query}`);
  return { context, page, pageErrors };
}

/** What the page shows, for failure messages. */
async function describe(page) {
  return page.evaluate(() => {
    const txt = (s) => document.querySelector(s)?.textContent.trim();
    const rows = [...document.querySelectorAll("tr[data-sym]")].map((tr) =>
      `${tr.dataset.sym} ${tr.querySelector("td.bid").textContent}/${tr.querySelector("td.ask").textContent} ${tr.querySelector("td.last").textContent}`);
    return `transport=${txt("#status-transport")} state=${txt("#status-state")} feed=${txt("#status-feed")} ` +
      `errors=[${txt("#errors")}] url=${location.search} rows=[${rows.join("; ")}]`;
  }).catch((e) => `(page unreadable: ${e.message})`);
}

/** Waits until `fn(arg)` is truthy in the page; the error says what and shows the page. */
export async function waitFor(page, what, fn, arg, timeout = WAIT) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}\n  page: ${await describe(page)}\n  ${e.message.split("\n")[0]}`);
  }
}

export function waitStatus(page, transport, state = "open") {
  return waitFor(page, `status transport=${transport} state=${state}`, ([tr, st]) =>
    document.querySelector("#status-transport")?.textContent === tr &&
    document.querySelector("#status-state")?.textContent === st, [transport, state]);
}

/** Every listed symbol has a row whose bid, ask and last show prices. */
export function waitPriced(page, syms) {
  return waitFor(page, `prices in rows ${syms.join(",")}`, (syms) => syms.every((s) => {
    const tr = document.querySelector(`tr[data-sym="${s}"]`);
    return tr && ["bid", "ask", "last"].every((c) => /^\d+(\.\d+)?$/.test(tr.querySelector(`td.${c}`).textContent));
  }), syms);
}

/** bid|ask|last of every row. */
export function prices(page) {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll("tr[data-sym]")].map((tr) =>
    [tr.dataset.sym, ["bid", "ask", "last"].map((c) => tr.querySelector(`td.${c}`).textContent).join("|")])));
}

/** Waits until the prices of at least `n` symbols differ from `before`. */
export function waitPricesChange(page, before, n = 2) {
  return waitFor(page, `price changes in ${n} symbols`, ([before, n]) => {
    let changed = 0;
    for (const tr of document.querySelectorAll("tr[data-sym]")) {
      const now = ["bid", "ask", "last"].map((c) => tr.querySelector(`td.${c}`).textContent).join("|");
      if (before[tr.dataset.sym] && before[tr.dataset.sym] !== now) changed++;
    }
    return changed >= n;
  }, [before, n]);
}

/** Open on `transport`, every row of `syms` priced, and prices moving. */
export async function waitStreaming(page, transport, syms = DEFAULT_WATCHLIST) {
  await waitStatus(page, transport);
  await waitPriced(page, syms);
  await waitPricesChange(page, await prices(page), 2);
}

export function rowSymbols(page) {
  return page.$$eval("tr[data-sym]", (trs) => trs.map((tr) => tr.dataset.sym));
}

/** Adds `text` to the watchlist through the form. */
export async function addSymbol(page, text) {
  await page.fill("#watchlist-input", text);
  await page.click("#watchlist-add");
}

/** Makes every WebSocket the page opens fail: it is closed before any message. */
export async function blockWebSocket(context, counter) {
  await context.routeWebSocket(/\/ws(\?|$)/, (ws) => { counter.ws++; ws.close(); });
}

/**
 * A blank page with client.js loaded and a client started with `opts`; window.log
 * records states ("transport:state", with times), messages and errors. The page is
 * the gateway's own (/healthz) unless `from` names another page; the client
 * connects to the gateway either way. `requests` lists "METHOD /path" of each
 * request and "WS /path" of each WebSocket. With `mint`, the client's token is a function
 * that asks `mint()` (in Node) for a fresh one each time.
 */
export async function openClient(t, opts, setup, { from = `${BASE}/healthz`, mint } = {}) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  page.on("websocket", (ws) => requests.push(`WS ${new URL(ws.url()).pathname}`));
  if (setup) await setup(context, page);
  if (mint) await page.exposeFunction("mintToken", mint);
  await page.goto(from);
  await page.addScriptTag({ url: `${BASE}/client.js` });
  await page.evaluate(([opts, base, minted]) => {
    const log = (window.log = { states: [], msgs: [], errors: [] });
    if (minted) opts.token = () => window.mintToken();
    window.client = TickerClient.connect(base, Object.assign(opts, {
      onState: (s, c) => log.states.push({ at: Date.now(), s: `${c.transport}:${s}` }),
      onMessage: (m) => log.msgs.push(m),
      onError: (e) => log.errors.push(`${e.code} ${e.message}`),
    }));
    if (opts.symbols) window.client.subscribe(opts.symbols);
  }, [opts, from.startsWith(BASE) ? "" : BASE, Boolean(mint)]);
  return { page, requests };
}

export async function clientLog(page) {
  return page.evaluate(() => ({
    states: log.states.map((x) => x.s).join(" "), errors: log.errors,
    types: log.msgs.map((m) => m.type).join(","), transport: client.transport, state: client.state,
  }));
}

export async function waitClient(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 50 });
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await clientLog(page))}`);
  }
}
