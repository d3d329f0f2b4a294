// Peer for the ticker-gateway benchmark: a Node server on the `ws` package, used
// the way its README shows (a WebSocketServer attached to an http.Server, a
// broadcast loop over a set of clients), with one room (a Set of sockets) per
// symbol. It speaks the subset of ticker.v1 the load generator uses: welcome,
// subscribe → subscribed + one snapshot per symbol, then update messages carrying
// `ti` (µs since the epoch, taken at the start of the feed tick that made the
// quote).
//
//   node bench/peers/ws-server.mjs --port 8091 --qps 2000 --universe feeds/universe.tsv --symbols 500
//
// No throttling: max_rate is echoed, not enforced (the benchmark never asks for
// less than the feed gives a symbol). No backpressure either: ws buffers without bound.

import http from "node:http";
import { WebSocketServer, WebSocket } from "ws";
import { settings, loadUniverse, SimFeed, httpHandler, welcomeFrame, replyFrame } from "./feed.mjs";

const cfg = settings();
const universe = loadUniverse(cfg.universe, cfg.symbols);
const rooms = new Map(universe.map((u) => [u.sym, new Set()]));
let updates = 0;

const feed = new SimFeed(universe, cfg.qps, (sym, msg) => {
  const room = rooms.get(sym);
  if (room.size === 0) return;
  const data = JSON.stringify([msg]); // encoded once, sent to every socket in the room
  for (const client of room) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(data);
      updates++;
    }
  }
});

const handle = httpHandler(universe, () => ({ quotes: feed.received, ticks: feed.ticks, updates }));
const server = http.createServer((req, res) => {
  if (!handle(req, res)) res.writeHead(404).end();
});
const wss = new WebSocketServer({ server });
let sessions = 0;

wss.on("connection", (ws) => {
  const mine = new Set();
  ws.send(welcomeFrame(++sessions, universe));
  ws.on("error", () => {});
  ws.on("message", (data) => {
    ws.send(replyFrame(data.toString(), (s) => rooms.has(s), feed, (sym) => {
      rooms.get(sym).add(ws);
      mine.add(sym);
    }));
  });
  ws.on("close", () => {
    for (const sym of mine) rooms.get(sym).delete(ws);
  });
});

server.listen(cfg.port, cfg.host, () => {
  feed.start(cfg.startDelay);
  console.log(`ws peer on ${cfg.host}:${cfg.port}, ${universe.length} symbols, ${cfg.qps} quotes/s`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
