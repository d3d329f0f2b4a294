// The dashboard over WebRTC DataChannels in headless Chromium (playwright-core).
//
//   GATEWAY_URL=http://127.0.0.1:8080 node --test tests/browser/webrtc.test.mjs
//
// tests/browser.rs starts a gateway with WebRTC enabled and a simulated feed and
// runs this file. Every wait polls for a condition with a timeout.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DEFAULT_WATCHLIST, TEST_TIMEOUT, openDashboard, prices, waitFor, waitPriced, waitPricesChange, waitStatus,
} from "./common.mjs";

const WEBRTC_FIRST = "?transports=webrtc,ws";

test("the dashboard streams live prices over the DataChannel", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page, pageErrors } = await openDashboard(t, { query: WEBRTC_FIRST });
  await waitStatus(page, "webrtc");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);
  // The prices moved over the channel: the client never left WebRTC.
  assert.equal(await page.textContent("#status-transport"), "webrtc");
  assert.deepEqual(pageErrors, []);
});

test("the status bar's toggle moves the dashboard to WebRTC and back", { timeout: TEST_TIMEOUT }, async (t) => {
  const { page, pageErrors } = await openDashboard(t, {});
  await waitStatus(page, "ws");
  assert.equal(await page.isChecked("#webrtc-toggle"), false);
  // The toggle reloads the page with WebRTC first.
  await Promise.all([page.waitForURL(/transports=webrtc/), page.click("#webrtc-toggle")]);
  await waitStatus(page, "webrtc");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);
  assert.equal(await page.isChecked("#webrtc-toggle"), true);
  await Promise.all([page.waitForURL((url) => !url.search.includes("transports=")), page.click("#webrtc-toggle")]);
  await waitStatus(page, "ws");
  assert.equal(await page.isChecked("#webrtc-toggle"), false);
  assert.deepEqual(pageErrors, []);
});

test("an unreachable UDP port falls back to WebSocket, which keeps updating", { timeout: TEST_TIMEOUT }, async (t) => {
  const offers = [];
  const { page, pageErrors } = await openDashboard(t, {
    query: WEBRTC_FIRST,
    // The answer names a UDP port nobody listens on: ICE never connects.
    setup: (context) => context.route("**/webrtc/offer", async (route) => {
      const res = await route.fetch();
      const body = await res.json();
      offers.push(res.status());
      body.sdp = body.sdp.replace(/(a=candidate:\S+ \d+ udp \d+ \S+ )\d+/gi, "$19");
      await route.fulfill({ response: res, json: body });
    }),
  });
  await waitStatus(page, "ws");
  await waitPriced(page, DEFAULT_WATCHLIST);
  await waitPricesChange(page, await prices(page), 2);
  assert.ok(offers.length >= 1 && offers.every((s) => s === 200), `offers: ${offers}`);
  assert.deepEqual(pageErrors, []);
});
