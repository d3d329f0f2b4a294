// Peer for the ticker-gateway benchmark: Bun's native server (uWebSockets inside),
// used the way its docs show: `Bun.serve` with `websocket` handlers, one pub/sub
// topic per symbol (`ws.subscribe(sym)`), and `server.publish(sym, frame)` for
// each quote, so the fan-out runs in uWebSockets' native code, not in a
// JavaScript loop. It speaks the same subset of ticker.v1 as ws-server.mjs, frame
// for frame: welcome, subscribe → subscribed + one snapshot per symbol (one
// frame), then one update per frame carrying `ti` (µs since the epoch, taken once
// at the start of the feed tick that made the quote: feed.mjs's SimFeed, shared
// with the Node peers). HTTP (/readyz, /api/v1/symbols, /metrics) is served by the
// same server's fetch handler on the same port, as ws-server.mjs shares its port.
//
//   node_modules/@oven/bun-linux-x64-baseline/bin/bun bench/peers/bun-server.mjs \
//     --port 8093 --qps 2000 --universe feeds/universe.tsv --symbols 500
//
// No throttling: max_rate is echoed, not enforced. Bun's defaults are kept (no
// tuning): a socket whose send buffer holds more than `backpressureLimit` (16 MiB)
// has further messages dropped, not buffered; idle sockets get pings.

import { settings, loadUniverse, SimFeed, httpRoutes, welcomeFrame, replyFrame } from "./feed.mjs";

if (typeof Bun === "undefined") {
  console.error("bun-server.mjs runs under Bun (npm package @oven/bun-linux-x64-baseline), not node");
  process.exit(2);
}

const cfg = settings();
const universe = loadUniverse(cfg.universe, cfg.symbols);
const known = new Set(universe.map((u) => u.sym));
let updates = 0;
let sessions = 0;
let server = null;

const feed = new SimFeed(universe, cfg.qps, (sym, msg) => {
  const subscribers = server.subscriberCount(sym);
  if (subscribers === 0) return;
  // Encoded once; uWebSockets writes the same frame to every subscriber of the topic.
  server.publish(sym, JSON.stringify([msg]));
  updates += subscribers;
});

const route = httpRoutes(universe, () => ({ quotes: feed.received, ticks: feed.ticks, updates }));

server = Bun.serve({
  hostname: cfg.host,
  port: cfg.port,
  fetch(req, srv) {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      // Like ws (its default handleProtocols), accept the client's first subprotocol
      // (ticker.v1.json): the client insists on getting one back.
      const asked = req.headers.get("sec-websocket-protocol");
      const protocol = asked?.split(",")[0].trim();
      const headers = protocol ? { "Sec-WebSocket-Protocol": protocol } : undefined;
      if (srv.upgrade(req, { headers })) return undefined;
      return new Response("upgrade failed\n", { status: 400 });
    }
    const r = route(new URL(req.url).pathname);
    if (!r) return new Response("not found\n", { status: 404 });
    return new Response(r.body, { headers: { "content-type": r.type } });
  },
  websocket: {
    open(ws) {
      ws.send(welcomeFrame(++sessions, universe));
    },
    message(ws, data) {
      const text = typeof data === "string" ? data : data.toString();
      ws.send(replyFrame(text, (s) => known.has(s), feed, (sym) => ws.subscribe(sym)));
    },
    // Closed sockets leave their topics by themselves.
    close() {},
  },
});

feed.start(cfg.startDelay);
console.log(`bun peer (Bun ${Bun.version}) on ${cfg.host}:${server.port}, ${universe.length} symbols, ${cfg.qps} quotes/s`);
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
