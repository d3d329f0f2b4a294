// Shared by the peer servers: settings from env/args, the symbol universe, a
// simulated feed like the gateway's `sim` (quotes spread evenly over the symbols,
// emitted every 5 ms), and the tiny HTTP side (/readyz, /api/v1/symbols, /metrics).
// Runs under Node and under Bun (the Bun peer imports it too).

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

/** --port/--qps/--universe/--symbols flags, falling back to PORT, FEED_QPS, UNIVERSE_FILE, SYMBOLS. */
export function settings(argv = process.argv.slice(2), env = process.env) {
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (m) flags[m[1]] = m[2] ?? argv[++i];
  }
  return {
    host: flags.host ?? env.HOST ?? "127.0.0.1",
    port: Number(flags.port ?? env.PORT ?? 8090),
    qps: Number(flags.qps ?? env.FEED_QPS ?? 1000),
    universe: flags.universe ?? env.UNIVERSE_FILE ?? new URL("../../feeds/universe.tsv", import.meta.url).pathname,
    symbols: Number(flags.symbols ?? env.SYMBOLS ?? 500),
    // Seconds without movement after start (the opening quotes exist at once).
    startDelay: Number(flags["start-delay"] ?? env.START_DELAY ?? 0),
  };
}

/** Microseconds since the Unix epoch, sub-millisecond resolution (same clock as the loadgen). */
export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** The first `n` rows of a universe TSV (sym, name, ref_price, tick_size, feed). */
export function loadUniverse(path, n) {
  const rows = readFileSync(path, "utf8").split("\n").slice(1).filter((l) => l.trim());
  return rows.slice(0, n).map((line) => {
    const [sym, name, refPrice, tickSize, feed] = line.split("\t");
    const decimals = (tickSize.split(".")[1] ?? "").length;
    const tick = Number(tickSize);
    return { sym, name, feed, decimals, tick, ref: Math.max(10, Math.round(Number(refPrice) / tick)) };
  });
}

/** The feed's tick, in ms (the gateway's sim feed ticks every 5 ms too). */
const TICK_MS = 5;

/**
 * A random-walk market over `universe`. Every 5 ms it emits the quotes due at
 * `qps` (round-robin over the symbols, so evenly spread), calling onQuote(sym, msg)
 * with a partial update like the gateway's sim feed: a bid or ask change with its
 * size, or a trade (last price, size, volume). Prices are decimal strings.
 */
export class SimFeed {
  constructor(universe, qps, onQuote) {
    this.qps = qps;
    this.onQuote = onQuote;
    this.received = 0;
    this.ticks = 0;
    this.next = 0;
    this.state = universe.map((u) => {
      const bid = u.ref - 1;
      const s = {
        u, seq: 1, t: Date.now(), ti: nowUs(), bid, ask: bid + 2, last: u.ref,
        bs: 100, as: 100, ls: 100, v: 0,
      };
      s.snapshot = this.full(s);
      return s;
    });
  }

  price(s, ticks) {
    return (ticks * s.u.tick).toFixed(s.u.decimals);
  }

  full(s) {
    return {
      type: "snapshot", sym: s.u.sym, seq: s.seq, t: s.t,
      bp: this.price(s, s.bid), bs: s.bs, ap: this.price(s, s.ask), as: s.as,
      lp: this.price(s, s.last), ls: s.ls, v: s.v, ti: s.ti,
    };
  }

  step(s, ti = nowUs()) {
    s.seq += 1;
    s.t = Date.now();
    s.ti = ti;
    const m = { type: "update", sym: s.u.sym, seq: s.seq, t: s.t };
    const r = Math.random();
    if (r < 0.55) {
      // Quote change: move the bid or the ask by one tick, spread stays 1–3 ticks.
      const up = Math.random() < 0.5 ? 1 : -1;
      if (Math.random() < 0.5) {
        s.bid = Math.max(1, Math.min(s.ask - 1, s.bid + up));
        if (s.ask - s.bid > 3) s.bid = s.ask - 3;
        s.bs = 100 * (1 + Math.floor(Math.random() * 10));
        m.bp = this.price(s, s.bid);
        m.bs = s.bs;
      } else {
        s.ask = Math.max(s.bid + 1, s.ask + up);
        if (s.ask - s.bid > 3) s.ask = s.bid + 3;
        s.as = 100 * (1 + Math.floor(Math.random() * 10));
        m.ap = this.price(s, s.ask);
        m.as = s.as;
      }
    } else {
      s.last = Math.random() < 0.5 ? s.bid : s.ask;
      s.ls = 100 * (1 + Math.floor(Math.random() * 5));
      s.v += s.ls;
      m.lp = this.price(s, s.last);
      m.ls = s.ls;
      m.v = s.v;
    }
    m.ti = s.ti;
    s.snapshot = null; // rebuilt lazily
    return m;
  }

  snapshot(sym) {
    const s = this.bySym?.get(sym);
    if (!s) return null;
    if (!s.snapshot) s.snapshot = this.full(s);
    return s.snapshot;
  }

  start(delaySeconds = 0) {
    this.bySym = new Map(this.state.map((s) => [s.u.sym, s]));
    if (delaySeconds > 0) {
      setTimeout(() => this.start(0), delaySeconds * 1000);
      return;
    }
    const t0 = performance.now();
    let emitted = 0;
    // Ticks on a fixed 5 ms schedule from t0, as the gateway's sim feed does
    // (tokio's interval with `MissedTickBehavior::Delay`: a tick more than
    // 5 ms late moves the schedule to 5 ms after it, never a burst of
    // ticks). setInterval would not: JS timers count the next 5 ms from when
    // the callback ran, so a server whose loop is busy sending (the tick's
    // fan-out runs in the same loop) ticks less often, with more quotes per
    // tick, which its sockets then send in fewer writes: Bun's loop ticked
    // about 110 times a second, not 200, at the light load on one core.
    // `ticks` counts them (/metrics).
    let next = t0 + TICK_MS;
    const tick = () => {
      const now = performance.now();
      const due = Math.floor(((now - t0) / 1000) * this.qps) - emitted;
      // One stamp per tick: the quotes of a tick arrive together, as they do at
      // the gateway, which stamps them all on ingest before fanning any out.
      // (Stamped one by one, a quote would not count the wait behind the fan-out
      // of the tick's earlier quotes.)
      const ti = nowUs();
      for (let i = 0; i < due; i++) {
        const s = this.state[this.next];
        this.next = (this.next + 1) % this.state.length;
        this.onQuote(s.u.sym, this.step(s, ti));
      }
      emitted += Math.max(0, due);
      this.received += Math.max(0, due);
      this.ticks += 1;
      next = now > next + TICK_MS ? now + TICK_MS : next + TICK_MS;
      this.timer = setTimeout(tick, Math.max(0, next - performance.now()));
    };
    this.timer = setTimeout(tick, TICK_MS);
  }
}

/**
 * The HTTP side all peers share: GET /readyz → 200, GET /api/v1/symbols (the
 * loadgen reads the universe from it, as from the gateway), GET /metrics with the
 * two counters the driver reads and the feed's ticks. Returns a function path →
 * {type, body}, or null for paths it does not serve (the Bun peer wraps it in a
 * fetch handler).
 */
export function httpRoutes(universe, counters) {
  const symbols = JSON.stringify(universe.map((u) => ({ sym: u.sym, name: u.name, feed: u.feed })));
  return (path) => {
    if (path === "/readyz" || path === "/healthz") {
      return { type: "text/plain", body: "ready\n" };
    } else if (path === "/api/v1/symbols") {
      return { type: "application/json", body: symbols };
    } else if (path === "/metrics") {
      const c = counters();
      return {
        type: "text/plain; version=0.0.4",
        body: `ticker_feed_quotes_received_total ${c.quotes}\n` +
          `ticker_messages_sent_total{type="update"} ${c.updates}\n` +
          `ticker_feed_ticks_total ${c.ticks}\n`,
      };
    }
    return null;
  };
}

/** httpRoutes as a node:http handler (req, res); returns false for paths it does not serve. */
export function httpHandler(universe, counters) {
  const route = httpRoutes(universe, counters);
  return (req, res) => {
    const r = route(req.url.split("?")[0]);
    if (!r) return false;
    res.writeHead(200, { "content-type": r.type }).end(r.body);
    return true;
  };
}

/** The welcome frame of the peers' `n`-th session (ticker.v1 subset). */
export function welcomeFrame(n, universe) {
  return JSON.stringify([{
    type: "welcome", session: `s-${n.toString(16)}`, protocol: "ticker.v1", format: "json",
    limits: { max_symbols: universe.length, max_rate: 1000, default_rate: 1000 },
  }]);
}

/**
 * The reply frame to one client message of the ticker.v1 subset the peers speak:
 * `subscribe` → `subscribed`, one snapshot per symbol, an error for unknown ones;
 * `join(sym)` adds the client to a symbol's room or topic. Anything else is a
 * `bad_request`.
 */
export function replyFrame(text, isKnown, feed, join) {
  let op;
  try {
    op = JSON.parse(text);
  } catch {
    return JSON.stringify([{ type: "error", code: "bad_request", message: "not JSON" }]);
  }
  if (op?.op !== "subscribe" || !Array.isArray(op.symbols)) {
    return JSON.stringify([{ type: "error", id: op?.id, code: "bad_request", message: "unsupported op" }]);
  }
  const ok = op.symbols.filter(isKnown);
  const bad = op.symbols.filter((s) => !isKnown(s));
  const out = [{ type: "subscribed", id: op.id, symbols: ok, max_rate: op.max_rate ?? 1000 }];
  for (const sym of ok) {
    join(sym);
    if (op.snapshot !== false) out.push(feed.snapshot(sym));
  }
  if (bad.length) {
    out.push({ type: "error", id: op.id, code: "unknown_symbol", message: `unknown symbol: ${bad[0]}`, symbols: bad });
  }
  return JSON.stringify(out);
}
