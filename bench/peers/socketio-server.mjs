// Peer for the ticker-gateway benchmark: a Socket.IO 4 server with one room per
// symbol, written the way its docs show (socket.join(room), io.to(room).emit()).
// Clients emit "subscribe" {symbols, max_rate}; the server answers "subscribed"
// and one "snapshot" event per symbol, then broadcasts each simulated quote to its
// room as an "update" event carrying `ti` (µs since the epoch).
//
//   node bench/peers/socketio-server.mjs --port 8092 --qps 2000 --universe feeds/universe.tsv --symbols 500
//
// Transport: WebSocket only (clients connect straight to
// ws://HOST:PORT/socket.io/?EIO=4&transport=websocket). max_rate is echoed, not enforced.

import http from "node:http";
import { Server } from "socket.io";
import { settings, loadUniverse, SimFeed, httpHandler } from "./feed.mjs";

const cfg = settings();
const universe = loadUniverse(cfg.universe, cfg.symbols);
const known = new Set(universe.map((u) => u.sym));
let updates = 0;

const handle = httpHandler(universe, () => ({ quotes: feed.received, ticks: feed.ticks, updates }));
// Socket.IO answers /socket.io/ itself and leaves every other request to this handler.
const server = http.createServer((req, res) => {
  if (!req.url.startsWith("/socket.io/") && !handle(req, res)) res.writeHead(404).end();
});
const io = new Server(server, { transports: ["websocket"], serveClient: false });

const feed = new SimFeed(universe, cfg.qps, (sym, msg) => {
  const room = io.of("/").adapter.rooms.get(sym);
  if (!room) return;
  updates += room.size;
  io.to(sym).emit("update", msg);
});

io.on("connection", (socket) => {
  socket.on("subscribe", (req) => {
    const symbols = Array.isArray(req?.symbols) ? req.symbols : [];
    const ok = symbols.filter((s) => known.has(s));
    socket.join(ok);
    socket.emit("subscribed", { symbols: ok, max_rate: req?.max_rate ?? 1000 });
    for (const sym of ok) socket.emit("snapshot", feed.snapshot(sym));
    const bad = symbols.filter((s) => !known.has(s));
    if (bad.length) socket.emit("error", { code: "unknown_symbol", symbols: bad });
  });
});

server.listen(cfg.port, cfg.host, () => {
  feed.start(cfg.startDelay);
  console.log(`socket.io peer on ${cfg.host}:${cfg.port}, ${universe.length} symbols, ${cfg.qps} quotes/s`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
