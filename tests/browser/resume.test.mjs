// The client library reconnecting with `resume` (PROTOCOL.md section 12), in
// headless Chromium driven by playwright-core:
//
//   GATEWAY_URL=http://127.0.0.1:8080 node --test tests/browser/resume.test.mjs
//
// tests/browser.rs starts a gateway where AAPL never moves and MSFT keeps moving.
// Each test lets the client take both snapshots, then cuts the link in place of an
// MSFT update, so while the client is away MSFT has changed and AAPL has not. After
// the reconnect the client must send its seqs, get a snapshot of MSFT only, keep
// its AAPL state as it was, and converge to the REST quotes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { TEST_TIMEOUT, WAIT, clientLog, openClient, waitClient } from "./common.mjs";

const SYMBOLS = ["AAPL", "MSFT"];

/** Whether the messages of one frame or poll answer carry an MSFT update. */
const carriesMsftUpdate = (msgs) => msgs.some((m) => m.type === "update" && m.sym === "MSFT");

/**
 * What the client saw over its first connection, and the messages of the second
 * one, split at the second message of type `marker` (subscribed, welcome).
 */
async function splitAtReconnect(page, marker) {
  return page.evaluate((marker) => {
    const at = log.msgs.findIndex((m, i) => m.type === marker && log.msgs.slice(0, i).some((x) => x.type === marker));
    const before = log.msgs.slice(0, at), seqs = {};
    for (const m of before) if (typeof m.seq === "number") seqs[m.sym] = m.seq;
    const first = Object.fromEntries(before.filter((m) => m.type === "snapshot").map(({ type, ...q }) => [q.sym, q]));
    return { seqs, first, after: log.msgs.slice(at) };
  }, marker);
}

/** Waits until the client's quote of every symbol equals GET /api/v1/quotes. */
async function waitSameAsRest(page, syms) {
  const differ = await page.evaluate(async ([syms, wait]) => {
    const until = Date.now() + wait;
    const plain = (q) => JSON.stringify(Object.keys(q).filter((k) => k !== "ti").sort().map((k) => [k, q[k]]));
    for (;;) {
      const res = await fetch(`${client.httpBase}/api/v1/quotes?symbols=${syms.join(",")}`, { cache: "no-store" });
      const rest = await res.json();
      const differ = rest.filter((q) => plain(q) !== plain(client.quotes[q.sym] || {}));
      if (!differ.length || Date.now() > until) {
        return differ.map((q) => `${q.sym}: rest ${plain(q)} client ${plain(client.quotes[q.sym] || {})}`);
      }
      await new Promise((r) => setTimeout(r, 50)); // poll again: MSFT moved in between
    }
  }, [syms, WAIT]);
  assert.deepEqual(differ, [], "the client's quotes never matched the REST quotes");
}

/**
 * After the reconnect (`after` starts at its first message): the client resumed
 * with `seqs`, AAPL got no snapshot and kept the state it had, MSFT got a snapshot
 * newer than the client's, and both converge to the REST quotes.
 */
async function checkResumed(page, { seqs, first, after }, resumeSent) {
  assert.deepEqual(Object.keys(seqs).sort(), SYMBOLS, JSON.stringify(seqs));
  assert.deepEqual(resumeSent, seqs, "the resubscription did not carry the client's seqs");
  const snapshots = after.filter((m) => m.type === "snapshot");
  assert.deepEqual(snapshots.map((m) => m.sym), ["MSFT"], JSON.stringify(after));
  assert.ok(snapshots[0].seq > seqs.MSFT, `MSFT snapshot seq ${snapshots[0].seq} after ${seqs.MSFT}`);
  await waitSameAsRest(page, SYMBOLS);
  const { aapl, aaplMessages } = await page.evaluate(() => ({
    aapl: client.quotes.AAPL,
    aaplMessages: log.msgs.filter((m) => m.sym === "AAPL").length,
  }));
  assert.deepEqual(aapl, first.AAPL, "AAPL's state changed across the reconnect");
  assert.equal(aaplMessages, 1, "AAPL had more than its first snapshot");
}

test("(1) client: after a WebSocket drop it reconnects with backoff and resumes", { timeout: TEST_TIMEOUT }, async (t) => {
  let conns = 0;
  const subscribes = []; // the subscribe ops the client sent, over every connection
  const { page } = await openClient(t, { symbols: SYMBOLS, maxRate: 50 }, (context) =>
    context.routeWebSocket(/\/ws(\?|$)/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        const op = JSON.parse(m);
        if (op.op === "subscribe") subscribes.push(op);
        server.send(m);
      });
      if (conns++ > 0) {
        server.onMessage((m) => ws.send(m));
        return;
      }
      // The first connection: both snapshots pass, then it drops in place of an MSFT update.
      const snapshots = new Set();
      let dropped = false;
      server.onMessage((m) => {
        if (dropped) return;
        const msgs = JSON.parse(m);
        if (snapshots.size === SYMBOLS.length && carriesMsftUpdate(msgs)) {
          dropped = true;
          return ws.close({ code: 1011, reason: "test drop" });
        }
        msgs.filter((x) => x.type === "snapshot").forEach((x) => snapshots.add(x.sym));
        ws.send(m);
      });
    }));
  await waitClient(page, "a second subscription and an MSFT snapshot on it", () => {
    const second = log.msgs.findIndex((m, i) => m.type === "subscribed" && log.msgs.slice(0, i).some((x) => x.type === "subscribed"));
    return second >= 0 && log.msgs.slice(second).some((m) => m.type === "snapshot" && m.sym === "MSFT") && client.state === "open";
  });
  const { states } = await clientLog(page);
  assert.match(states, /^ws:connecting ws:open (ws:reconnecting )+ws:open$/);
  const gap = await page.evaluate(() => {
    const s = log.states, drop = s.findIndex((x) => x.s === "ws:reconnecting");
    return s.slice(drop).find((x) => x.s === "ws:open").at - s[drop].at;
  });
  assert.ok(gap >= 350 && gap < 5000, `reconnected after ${gap} ms (backoff 0.5 s ± 25 %)`);
  assert.equal(conns, 2);
  assert.equal(subscribes.length, 2, JSON.stringify(subscribes));
  assert.equal(subscribes[0].resume, undefined, "the first subscription had nothing to resume");
  assert.deepEqual(subscribes.map((op) => [...op.symbols].sort().join()), ["AAPL,MSFT", "AAPL,MSFT"]);
  await checkResumed(page, await splitAtReconnect(page, "subscribed"), subscribes[1].resume);
});

test("(2) client: an expired long-poll session (410) is replaced by a new one that resumes", { timeout: TEST_TIMEOUT }, async (t) => {
  let expired = 0;
  const created = []; // the bodies of POST /poll
  const { page, requests } = await openClient(t, { symbols: SYMBOLS, transports: ["poll"], pollWaitSec: 1, maxRate: 50 }, async (context) => {
    await context.route((url) => url.pathname === "/poll", (route, req) => {
      created.push(req.postDataJSON());
      return route.fallback();
    });
    // The first poll answer that carries an MSFT update is replaced by a 410.
    await context.route((url) => url.pathname.startsWith("/poll/"), async (route, req) => {
      if (req.method() !== "GET" || expired) return route.fallback();
      const res = await route.fetch();
      const body = await res.json();
      if (!carriesMsftUpdate(body.messages || [])) return route.fulfill({ response: res, json: body });
      expired++;
      return route.fulfill({ status: 410, contentType: "application/json",
        body: JSON.stringify({ type: "error", code: "session_expired", message: "session expired" }) });
    });
  });
  await waitClient(page, "a second session, with an MSFT snapshot", () => {
    const second = log.msgs.findIndex((m, i) => m.type === "welcome" && log.msgs.slice(0, i).some((x) => x.type === "welcome"));
    return second >= 0 && log.msgs.slice(second).some((m) => m.type === "snapshot" && m.sym === "MSFT");
  });
  const sessions = await page.evaluate(() => log.msgs.filter((m) => m.type === "welcome").map((m) => m.session));
  assert.notEqual(sessions[0], sessions[1]);
  assert.equal(requests.filter((r) => r === "POST /poll").length, 2, requests.join("\n"));
  assert.equal(created[0].resume, undefined, "the first session had nothing to resume");
  await checkResumed(page, await splitAtReconnect(page, "welcome"), created[1].resume);
  const { transport, state, errors } = await clientLog(page);
  assert.equal(`${transport}:${state}`, "poll:open");
  assert.deepEqual(errors, []);
  // close() ends the session on the server.
  const deleted = page.waitForRequest((r) => r.method() === "DELETE" && r.url().endsWith(`/poll/${sessions[1]}`), { timeout: WAIT });
  await page.evaluate(() => client.close());
  await deleted;
  assert.equal((await clientLog(page)).state, "closed");
});
