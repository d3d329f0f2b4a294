/*
 * client.js: TickerClient, a small browser client for the ticker.v1 gateway
 * (PROTOCOL.md). No build step, no dependencies; loading it defines
 * window.TickerClient.
 *
 *   const client = TickerClient.connect("", {      // "" = this page's origin
 *     token: "tk_...",                             // or () => fetchToken(): see Credentials
 *     transports: ["ws", "sse", "poll"],           // tried in this order
 *     maxRate: 5,                                  // updates/s per symbol (null: server default)
 *     stallTimeoutMs: 20000,                       // no message or heartbeat this long = stalled
 *     onState(state, client) {},                   // state or transport changed
 *     onMessage(msg, client) {},                   // every server message, after merging
 *     onError(err, client) {},                     // server error messages; transport failures
 *   });                                            //   arrive as {code: "transport", message}
 *   client.subscribe(["AAPL", "MSFT"]);
 *   client.quotes.AAPL      // {sym, seq, t, bp, ap, lp, ...}: snapshot with updates applied
 *   client.setRate(2); client.unsubscribe(["MSFT"]); client.close();
 *
 * client.state is "connecting" (never open yet), "open", "reconnecting", "unauthorized"
 * (the credential was refused or ran out: see Credentials) or "closed";
 * client.transport is the transport in use or being tried: "webrtc", "ws", "sse" or "poll".
 *
 * Transports (all carry the same message objects):
 *  - ws:   WebSocket /ws, subprotocol ticker.v1.json; every frame is a JSON array of
 *          messages. Browsers hide the server's pings, so the client sends
 *          {"op":"ping"} every 10 s; the pong (or any message) proves the link alive.
 *  - sse:  GET /sse?symbols=..&max_rate=..; each event's name is the message type,
 *          its data the message. Read with fetch() and a small parser rather than
 *          EventSource, because EventSource hides the server's 15 s comment
 *          heartbeats (a quiet symbol set would look stalled) and the JSON body of a
 *          400 (so an unknown symbol could not be reported). A new symbol set or
 *          rate reopens the stream with the new query.
 *  - poll: POST /poll → {session, messages}; then GET /poll/{session}?wait=25 in a
 *          loop; ops go to POST /poll/{session}; DELETE on close; 410 (expired;
 *          or 404, unknown) starts a new session.
 *  - webrtc: POST /webrtc/offer {"sdp"} → {"sdp"} (the credential as a Bearer
 *          header), then two DataChannels: ops and their replies on the reliable
 *          "ticker.v1", quotes on the unordered, unreliable "quotes" as whole states
 *          (snapshots) with their seq; an older seq than one already applied is
 *          dropped. Only when asked for (transports: ["webrtc", "ws", ...]); a channel
 *          not open within webrtcOpenTimeoutMs (5 s) falls back to the next transport.
 *  SSE and poll need at least one symbol: with none, they count as open but idle
 *  and start streaming on the first subscribe.
 *
 * Falling back and reconnecting: a transport that fails to open (error, or no sign
 * of life within openTimeoutMs) or that stalls is replaced by the next one in
 * `transports` at once; after the whole list failed, the next round starts after a
 * jittered exponential backoff (0.5 s doubling to 10 s, ±25 %). A transport that was
 * working and drops starts a new round from the first (preferred) transport, after
 * the backoff. After every (re)connect the client subscribes its symbols again.
 *
 * Resuming (PROTOCOL.md section 12): `quotes` outlive a connection. When ws or poll
 * subscribes again, it sends each quote's seq as `resume`; the server sends a
 * snapshot only of the symbols that changed meanwhile, and the others go on from
 * the state the client kept (same values, no message). SSE starts every stream with
 * snapshots; webrtc sends whole states anyway.
 *
 * One max_rate applies to all of a client's symbols (SSE can carry only one).
 * Symbols the server refuses (unknown_symbol, not_entitled, too_many_symbols) are
 * dropped from the client's set, so a reconnect does not ask for them again.
 *
 * Credentials (PROTOCOL.md section 9), for a gateway with authentication on: the
 * `token` option is an API key or a JWT, or a function (sync or async) that returns
 * a fresh one; the client calls it before every connection and every refresh. Each
 * transport presents it as a browser can:
 *  - ws:   the first op is {"op":"auth","token":..} (a browser cannot set headers
 *          on a WebSocket, and a token in the URL ends up in logs); the client
 *          subscribes once the reply, `authenticated`, has come.
 *  - sse:  before every stream it opens, POST /api/v1/tickets with
 *          `Authorization: Bearer` gives a single-use ticket for ?ticket=.
 *  - poll: `Authorization: Bearer` on POST /poll; the session id stands for it after.
 * Refresh: with a function token whose JWT has an `exp` (read, not verified; else the
 * `expires` of the server's reply), the client asks the function again 30 s before
 * `exp` (halfway through a shorter life) and sends {"op":"auth"} over ws and poll;
 * SSE cannot be refreshed in its stream, so it opens a new one with a fresh ticket.
 * A fixed token is never renewed; setToken(t) replaces it and reconnects.
 * Refusals: a 401, a close 4001/4003 or an `unauthorized` error reaches onError
 * (code "unauthorized", the server's message) and the client stops in state
 * "unauthorized", without trying other transports or again, until setToken() is
 * called. Only a credential that worked and then ran out (4003, "token expired")
 * is retried, once and at once, when `token` is a function.
 * Against a gateway with authentication off the token is not needed and is dropped
 * (the auth op's bad_request and the tickets' 404 are taken as "off").
 */
(function (global) {
  "use strict";

  const DEFAULTS = {
    transports: ["ws", "sse", "poll"],
    maxRate: null,
    stallTimeoutMs: 20000,
    openTimeoutMs: 10000,
    webrtcOpenTimeoutMs: 5000,
    pingIntervalMs: 10000,
    pollWaitSec: 25,
    token: null,
    onState() {}, onMessage() {}, onError() {},
  };
  const REFUSED = ["unknown_symbol", "not_entitled", "too_many_symbols"];
  const STABLE_MS = 5000;
  const AUTH_CLOSES = [4001, 4003]; // unauthorized; token expired (PROTOCOL.md section 8)
  const REFRESH_BEFORE_MS = 30000; // refresh this long before a token's exp ...
  const MIN_REFRESH_MS = 1000; // ... but never sooner than this after the last one

  /** Backoff before reconnect attempt n (0-based): 0.5 s doubling to 10 s, ±25 %. */
  function backoffMs(n) {
    return Math.min(10000, 500 * 2 ** n) * (0.75 + Math.random() * 0.5);
  }

  /** Reads a JSON error body, or null. */
  function errorBody(res) {
    return res.json().then((b) => (b && b.type === "error" ? b : null), () => null);
  }

  /** An `unauthorized` error message (the server's own words where it gave them). */
  function authError(message) {
    return { type: "error", code: "unauthorized", message };
  }

  /** The Error for a refused credential (HTTP 401): it carries the server's error body. */
  async function refusal(res) {
    const e = new Error(`HTTP ${res.status}`);
    e.auth = (await errorBody(res)) || authError(`HTTP ${res.status}`);
    return e;
  }

  /** A JWT's `exp` (seconds since the epoch), read without verifying; null if none. */
  function jwtExp(token) {
    const part = String(token).split(".")[1];
    if (!part) return null;
    try {
      const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(global.atob(b64 + "===".slice((b64.length + 3) % 4)));
      return typeof claims.exp === "number" ? claims.exp : null;
    } catch (e) {
      return null; // not a JWT: an API key
    }
  }

  class Client {
    constructor(baseUrl, opts) {
      this.opts = Object.assign({}, DEFAULTS, opts);
      const base = baseUrl || global.location.origin;
      this.httpBase = base.replace(/\/+$/, "");
      this.wsBase = this.httpBase.replace(/^http/, "ws");
      this.state = "connecting";
      this.transport = this.opts.transports[0];
      this.quotes = {};
      this.symbols = new Set((opts && opts.symbols) || []);
      this.rate = this.opts.maxRate;
      this.limits = null;
      this.conn = null; // the live attempt: {name, established, ...}
      this.ti = 0; // index of the transport being used or tried
      this.failures = 0; // backoff step: failed rounds since the last success
      this.authRetried = false; // an expired credential was retried since the last success
      this.nextId = 1;
      // Start on the next tick, so subscribe() calls right after connect() make
      // the first request already carry the symbols.
      this.timer = setTimeout(() => this._open(), 0);
      this.watchdog = setInterval(() => this._checkStall(), 1000);
    }

    // ---- public API ------------------------------------------------------

    /** Adds symbols (and optionally sets the client's max_rate). */
    subscribe(symbols, maxRate) {
      const fresh = symbols.map((s) => String(s).trim().toUpperCase()).filter((s) => s && !this.symbols.has(s));
      if (maxRate !== undefined && maxRate !== this.rate) this.setRate(maxRate);
      if (!fresh.length) return;
      fresh.forEach((s) => this.symbols.add(s));
      this._apply({ op: "subscribe", symbols: fresh, max_rate: this.rate, snapshot: true });
    }

    /** Removes symbols; their quotes are forgotten at once. */
    unsubscribe(symbols) {
      const gone = symbols.map((s) => String(s).toUpperCase()).filter((s) => this.symbols.delete(s));
      gone.forEach((s) => delete this.quotes[s]);
      if (gone.length) this._apply({ op: "unsubscribe", symbols: gone });
    }

    /** Changes the max_rate of every subscribed symbol. */
    setRate(rate) {
      this.rate = rate;
      if (this.symbols.size) {
        this._apply({ op: "subscribe", symbols: [...this.symbols], max_rate: rate, snapshot: false });
      }
    }

    /** Replaces the credential (see `token`) and connects again with it. */
    setToken(token) {
      this.opts.token = token;
      if (this.state === "closed") return;
      clearTimeout(this.timer);
      if (this.conn) this._teardown(this.conn);
      this.conn = null;
      this.ti = 0;
      this.failures = 0;
      this.authRetried = false;
      this._setState(this.state === "connecting" ? "connecting" : "reconnecting");
      this._open();
    }

    close() {
      if (this.state === "closed") return;
      clearTimeout(this.timer);
      clearInterval(this.watchdog);
      if (this.conn) this._teardown(this.conn);
      this.conn = null;
      this._setState("closed");
    }

    // ---- connection management ------------------------------------------

    _setState(state) {
      if (this.state === "closed") return;
      this.state = state;
      this.opts.onState(state, this);
    }

    /** Opens the transport at this.ti. */
    _open() {
      if (this.state === "closed") return;
      const name = this.opts.transports[this.ti];
      const conn = { name, established: 0, lastRx: Date.now() }; // established: when it opened
      this.conn = conn;
      this.transport = name;
      this.opts.onState(this.state, this); // report the transport being tried
      const openMs = name === "webrtc" ? this.opts.webrtcOpenTimeoutMs : this.opts.openTimeoutMs;
      conn.openTimer = setTimeout(() => this._fail(conn, "no answer in time"), openMs);
      this._token().then((token) => {
        if (conn !== this.conn) return;
        conn.token = token;
        conn.opened = true;
        try {
          TRANSPORTS[name].open(this, conn);
        } catch (e) {
          this._fail(conn, e.message || String(e)); // e.g. WebSocket unavailable
        }
      }, (e) => this._authFailed(conn, authError(`token: ${(e && e.message) || e}`)));
    }

    /** The credential to present now: the `token` option, or what its function gives. */
    async _token() {
      const t = this.opts.token;
      const token = typeof t === "function" ? await t() : t;
      return token ? String(token) : null;
    }

    /** A sign of life on `conn`; returns false if `conn` is no longer current. */
    _alive(conn) {
      if (conn !== this.conn) return false;
      conn.lastRx = Date.now();
      if (!conn.established) {
        conn.established = conn.lastRx;
        clearTimeout(conn.openTimer);
        this._setState("open");
      }
      return true;
    }

    /** `conn` failed: fall back to the next transport, or reconnect after a backoff. */
    _fail(conn, reason, stalled) {
      if (conn !== this.conn || this.state === "closed") return;
      this._teardown(conn);
      this.conn = null;
      this.opts.onError({ type: "error", code: "transport", message: `${conn.name}: ${reason}` }, this);
      // Only a connection that stayed up a while resets the backoff, so a server that
      // accepts and drops at once is not hammered every 0.5 s.
      if (conn.established && Date.now() - conn.established > STABLE_MS) this.failures = 0;
      let delay = 0;
      if (conn.established && !stalled) {
        // It worked and dropped: start again from the preferred transport.
        this.ti = 0;
        delay = backoffMs(this.failures++);
      } else if (++this.ti >= this.opts.transports.length) {
        // Every transport failed this round.
        this.ti = 0;
        delay = backoffMs(this.failures++);
      }
      this._setState(this.state === "connecting" ? "connecting" : "reconnecting");
      this.timer = setTimeout(() => this._open(), delay);
    }

    /** `conn` failed with `e`: a refused credential (`e.auth`), or a transport failure. */
    _failWith(conn, e) {
      if (e && e.auth) this._authFailed(conn, e.auth);
      else this._fail(conn, (e && e.message) || String(e));
    }

    /**
     * The credential of `conn` was refused or ran out. The caller hears of it (unless
     * `told`: the server's message went through onError already); a credential that
     * worked and ran out is retried once with a fresh one from the `token` function;
     * otherwise the client waits in "unauthorized" for setToken().
     */
    _authFailed(conn, err, told) {
      if (!conn || conn !== this.conn || this.state === "closed") return;
      this._teardown(conn);
      this.conn = null;
      if (!told) this.opts.onError(err, this);
      if (conn.authenticated && typeof this.opts.token === "function" && !this.authRetried) {
        this.authRetried = true;
        this._setState("reconnecting");
        this.timer = setTimeout(() => this._open(), 0);
        return;
      }
      this._setState("unauthorized");
    }

    /** The server took the credential of `conn`: plan its refresh before it expires. */
    _authenticated(conn, expires) {
      if (!conn) return;
      conn.authenticated = true;
      this.authRetried = false;
      clearTimeout(conn.refreshTimer);
      if (typeof this.opts.token !== "function") return; // a fixed token cannot be renewed
      const exp = jwtExp(conn.token) || expires;
      if (!exp) return; // an API key: it does not expire
      const left = exp * 1000 - Date.now();
      const delay = Math.max(MIN_REFRESH_MS, left - Math.min(REFRESH_BEFORE_MS, left / 2));
      conn.refreshTimer = setTimeout(() => this._refresh(conn), delay);
    }

    /** Presents a fresh credential on `conn`, the way its transport can. */
    _refresh(conn) {
      this._token().then((token) => {
        if (conn !== this.conn) return;
        if (!token) return this._authFailed(conn, authError("token: none to refresh with"));
        conn.token = token;
        TRANSPORTS[conn.name].refresh(this, conn);
      }, (e) => this._authFailed(conn, authError(`token: ${(e && e.message) || e}`)));
    }

    _teardown(conn) {
      conn.closed = true;
      clearTimeout(conn.openTimer);
      clearTimeout(conn.refreshTimer);
      if (conn.opened) TRANSPORTS[conn.name].close(this, conn);
    }

    _checkStall() {
      const c = this.conn;
      if (!c || !c.established || c.idle) return;
      // A long poll may rightly stay silent for its whole `wait`.
      const limit = this.opts.stallTimeoutMs + (c.name === "poll" ? this.opts.pollWaitSec * 1000 : 0);
      if (Date.now() - c.lastRx > limit) this._fail(c, `no message for ${Math.round(limit / 1000)} s`, true);
    }

    /**
     * Carries a subscription change to the server over the current transport (one
     * not opened yet, still getting its token, will ask for every symbol anyway).
     */
    _apply(op) {
      const c = this.conn;
      if (c && c.opened && !c.closed) TRANSPORTS[c.name].apply(this, c, Object.assign({ id: this.nextId++ }, op));
    }

    /**
     * The op that (re)subscribes every symbol, or null if there are none. With
     * `resume`, it carries the seq of every quote the client holds (PROTOCOL.md
     * section 12): the server sends snapshots only of the symbols that moved on.
     */
    _subscribeAll(resume) {
      if (!this.symbols.size) return null;
      const op = { op: "subscribe", id: this.nextId++, symbols: [...this.symbols], max_rate: this.rate, snapshot: true };
      const seqs = resume ? this._seqs() : null;
      if (seqs) op.resume = seqs;
      return op;
    }

    /** The seq of each subscribed symbol's quote, or null when there is none. */
    _seqs() {
      const seqs = {};
      for (const s of this.symbols) {
        const q = this.quotes[s];
        if (q && typeof q.seq === "number") seqs[s] = q.seq;
      }
      return Object.keys(seqs).length ? seqs : null;
    }

    // ---- messages ---------------------------------------------------------

    _handle(m) {
      if (!m || typeof m !== "object") return;
      switch (m.type) {
        case "welcome":
          this.limits = m.limits || null;
          if (m.principal) this._authenticated(this.conn); // a ticket or a header was taken
          break;
        case "authenticated":
          this.limits = m.limits || this.limits;
          this._authenticated(this.conn, m.expires);
          break;
        case "snapshot":
          if (!this.symbols.has(m.sym)) return; // late message for a dropped symbol
          this.quotes[m.sym] = Object.assign({}, m);
          delete this.quotes[m.sym].type;
          break;
        case "update": {
          if (!this.symbols.has(m.sym)) return;
          const q = this.quotes[m.sym] || (this.quotes[m.sym] = {});
          for (const k in m) if (k !== "type") q[k] = m[k];
          break;
        }
        case "unsubscribed":
          (m.symbols || []).forEach((s) => { if (!this.symbols.has(s)) delete this.quotes[s]; });
          break;
        case "error":
          if (REFUSED.includes(m.code)) {
            (m.symbols || []).forEach((s) => { this.symbols.delete(s); delete this.quotes[s]; });
          }
          this.opts.onError(m, this);
          break;
      }
      this.opts.onMessage(m, this);
      if (m.type === "error" && m.code === "unauthorized") this._authFailed(this.conn, m, true);
    }

    /** Handles the messages of the current connection, until it is replaced. */
    _handleAll(list) {
      const conn = this.conn;
      for (const m of Array.isArray(list) ? list : [list]) {
        if (this.conn !== conn) return;
        this._handle(m);
      }
    }
  }

  // ---- transports ----------------------------------------------------------
  // Each has open(client, conn), close(client, conn), apply(client, conn, op) and
  // refresh(client, conn) (presents conn.token, fresh, on the live connection).

  const TRANSPORTS = {};

  TRANSPORTS.ws = {
    open(client, conn) {
      const ws = new global.WebSocket(client.wsBase + "/ws", ["ticker.v1.json"]);
      conn.ws = ws;
      ws.onopen = () => {
        if (conn.token) {
          // The credential first; the symbols once it is taken (until then the
          // server answers other ops `unauthorized`).
          conn.authId = client.nextId++;
          ws.send(JSON.stringify({ op: "auth", id: conn.authId, token: conn.token }));
        } else {
          this.subscribeAll(client, conn);
        }
        conn.ping = setInterval(() => this.apply(client, conn, { op: "ping" }), client.opts.pingIntervalMs);
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string" || conn !== client.conn) return;
        let frame;
        try { frame = JSON.parse(ev.data); } catch (e) { return; }
        let msgs = Array.isArray(frame) ? frame : [frame];
        const pending = conn.authId !== undefined && !conn.authenticated;
        if (pending) {
          // A gateway with authentication off refuses the op as a bad request: go on without.
          const off = (m) => m && m.type === "error" && m.code === "bad_request" && m.id === conn.authId;
          if (msgs.some(off)) {
            msgs = msgs.filter((m) => !off(m));
            conn.authId = undefined;
          }
        }
        // A (mock or hostile) server that opens and sends nothing is not "open", nor
        // is one that has not taken the credential yet.
        if (conn.authId === undefined || conn.authenticated) client._alive(conn);
        else conn.lastRx = Date.now();
        client._handleAll(msgs);
        if (pending && conn === client.conn && (conn.authId === undefined || conn.authenticated)) {
          client._alive(conn);
          this.subscribeAll(client, conn);
        }
      };
      ws.onclose = (ev) => {
        const why = `closed (${ev.code}${ev.reason ? " " + ev.reason : ""})`;
        if (AUTH_CLOSES.includes(ev.code)) client._authFailed(conn, authError(`ws: ${why}`));
        else client._fail(conn, why);
      };
    },
    subscribeAll(client, conn) {
      const sub = client._subscribeAll(true);
      if (sub) conn.ws.send(JSON.stringify(sub));
    },
    close(client, conn) {
      clearInterval(conn.ping);
      const ws = conn.ws;
      if (!ws) return; // the constructor threw
      ws.onopen = ws.onmessage = ws.onclose = null;
      try { ws.close(1000); } catch (e) { /* already closed */ }
    },
    apply(client, conn, op) {
      // Before open, or before the credential is taken: the symbols go in subscribeAll.
      const ready = conn.authId === undefined || conn.authenticated || op.op === "ping";
      if (conn.ws.readyState === 1 && ready) conn.ws.send(JSON.stringify(op));
    },
    refresh(client, conn) {
      if (conn.ws.readyState === 1) conn.ws.send(JSON.stringify({ op: "auth", id: client.nextId++, token: conn.token }));
    },
  };

  TRANSPORTS.sse = {
    open(client, conn) {
      const ctl = (conn.ctl = new AbortController());
      conn.idle = !client.symbols.size;
      if (conn.idle) {
        client._alive(conn); // nothing to stream: open but idle until symbols are added
        return;
      }
      this.ticket(client, conn, ctl)
        .then((ticket) => {
          let url = `${client.httpBase}/sse?symbols=${encodeURIComponent([...client.symbols].join(","))}`;
          if (client.rate != null) url += `&max_rate=${encodeURIComponent(client.rate)}`;
          if (ticket) url += `&ticket=${encodeURIComponent(ticket)}`;
          return fetch(url, { signal: ctl.signal, cache: "no-store", headers: { Accept: "text/event-stream" } });
        })
        .then(async (res) => {
          if (res.status === 401) throw await refusal(res);
          if (res.status === 400 || res.status === 403) {
            const err = await errorBody(res);
            if (err && REFUSED.includes(err.code) && (err.symbols || []).length && !ctl.signal.aborted) {
              client._handle(err); // drops the refused symbols ...
              return this.reopen(client, conn); // ... and asks again for the rest
            }
          }
          if (!res.ok || !/^text\/event-stream/.test(res.headers.get("content-type") || "")) {
            throw new Error(`HTTP ${res.status}`);
          }
          client._alive(conn);
          await this.read(client, conn, ctl, res.body.getReader());
          throw new Error("stream ended");
        })
        .catch((e) => { if (!ctl.signal.aborted) client._failWith(conn, e); });
    },
    /**
     * A single-use ticket for the next stream, from POST /api/v1/tickets with the
     * token in the header (the stream's own URL then carries no secret that lasts);
     * null without a token, or where the gateway has authentication off (404).
     */
    async ticket(client, conn, ctl) {
      if (!conn.token) return null;
      const res = await fetch(`${client.httpBase}/api/v1/tickets`, {
        method: "POST",
        signal: ctl.signal,
        cache: "no-store",
        headers: { Authorization: `Bearer ${conn.token}` },
      });
      if (res.status === 404) return null;
      if (res.status === 401) throw await refusal(res);
      if (!res.ok) throw new Error(`HTTP ${res.status} for a ticket`);
      return (await res.json()).ticket;
    },
    /** Parses text/event-stream: "event:" names the type, "data:" lines the JSON. */
    async read(client, conn, ctl, reader) {
      const decoder = new TextDecoder();
      let buf = "", event = "", data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done || ctl.signal.aborted) return; // aborted: replaced by a new stream, or closed
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (data.length && client._alive(conn)) {
              let m = null;
              try { m = JSON.parse(data.join("\n")); } catch (e) { /* not JSON: skip */ }
              if (m && !m.type && event) m.type = event;
              client._handleAll(m);
            }
            event = "";
            data = [];
          } else if (line[0] === ":") {
            client._alive(conn); // heartbeat comment
          } else {
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") event = val;
            else if (field === "data") data.push(val);
          }
        }
      }
    },
    close(client, conn) {
      if (conn.ctl) conn.ctl.abort();
    },
    /** A new symbol set or rate means a new stream; coalesce changes made together. */
    apply(client, conn, op) {
      if (op.op === "ping" || conn.reopenPending) return;
      conn.reopenPending = true;
      setTimeout(() => { conn.reopenPending = false; if (!conn.closed) this.reopen(client, conn); }, 0);
    },
    reopen(client, conn) {
      if (conn.ctl) conn.ctl.abort();
      this.open(client, conn);
    },
    /** A stream cannot take a new credential: a new one, with a fresh ticket, replaces it. */
    refresh(client, conn) {
      this.reopen(client, conn);
    },
  };

  TRANSPORTS.poll = {
    open(client, conn) {
      const ctl = (conn.ctl = new AbortController());
      conn.idle = !client.symbols.size;
      if (conn.idle) {
        client._alive(conn); // a session needs a symbol: open but idle until one is added
        return;
      }
      // Errors of a loop whose session was replaced (ctl swapped) are not failures.
      this.start(client, conn).catch((e) => {
        if (!conn.closed && conn.ctl === ctl) client._failWith(conn, e);
      });
    },
    /** Creates a session with every symbol, then long-polls it. */
    async start(client, conn) {
      conn.session = null;
      const body = { symbols: [...client.symbols], max_rate: client.rate };
      const seqs = client._seqs();
      if (seqs) body.resume = seqs; // a new session after a drop or an expiry
      const res = await this.fetch(client, conn, "/poll", "POST", body, conn.token);
      if (res.status === 401) throw await refusal(res);
      if (!res.ok) {
        const err = await errorBody(res);
        if ((res.status === 400 || res.status === 403) && err && REFUSED.includes(err.code) && (err.symbols || []).length) {
          client._handle(err);
          return this.start(client, conn);
        }
        throw new Error(`HTTP ${res.status}`);
      }
      const reply = await res.json();
      if (conn.closed) return this.end(client, reply.session);
      conn.session = reply.session;
      client._alive(conn);
      client._handleAll(reply.messages || []);
      for (const op of conn.queued || []) this.apply(client, conn, op); // made while creating
      conn.queued = [];
      const session = conn.session;
      while (!conn.closed && conn.session === session) {
        const r = await this.fetch(client, conn, `/poll/${session}?wait=${client.opts.pollWaitSec}`, "GET");
        if (r.status === 410 || r.status === 404) return this.start(client, conn); // expired: a new session
        if (r.status === 401) throw await refusal(r); // the credential ran out: the session is over
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const got = await r.json();
        if (conn.closed || !client._alive(conn)) return;
        client._handleAll(got.messages || []);
      }
    },
    fetch(client, conn, path, method, body, token) {
      const init = { method, signal: conn.ctl.signal, cache: "no-store", headers: {} };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      if (token) init.headers.Authorization = `Bearer ${token}`;
      return fetch(client.httpBase + path, init);
    },
    /** One op: POST /poll/{session}; the answer carries its replies. */
    apply(client, conn, op) {
      if (conn.idle) {
        if (op.op === "subscribe") this.open(client, conn); // the first symbol: create a session
        return;
      }
      if (!conn.session) {
        if (op.op !== "ping") (conn.queued = conn.queued || []).push(op);
        return;
      }
      const session = conn.session;
      const ctl = conn.ctl;
      this.fetch(client, conn, `/poll/${session}`, "POST", op)
        .then(async (res) => {
          if (res.status === 410 || res.status === 404) {
            if (conn.session === session) { conn.session = null; conn.ctl.abort(); this.open(client, conn); }
            return;
          }
          if (res.status === 401) throw await refusal(res);
          if (!res.ok) throw new Error(`HTTP ${res.status} on ${op.op}`);
          const got = await res.json();
          if (!conn.closed && client._alive(conn)) client._handleAll(got.messages || []);
        })
        .catch((e) => { if (!conn.closed && conn.ctl === ctl) client._failWith(conn, e); });
    },
    /** The session takes a fresh credential as an op: POST /poll/{session} {"op":"auth"}. */
    refresh(client, conn) {
      this.apply(client, conn, { op: "auth", id: client.nextId++, token: conn.token });
    },
    end(client, session) {
      if (session) fetch(`${client.httpBase}/poll/${session}`, { method: "DELETE", keepalive: true }).catch(() => {});
    },
    close(client, conn) {
      conn.ctl.abort();
      this.end(client, conn.session);
    },
  };

  TRANSPORTS.webrtc = {
    open(client, conn) {
      if (!global.RTCPeerConnection) throw new Error("WebRTC unavailable");
      const pc = (conn.pc = new global.RTCPeerConnection());
      // Both channels exist before the offer, so it carries the data section.
      const ops = (conn.ops = pc.createDataChannel("ticker.v1"));
      const quotes = (conn.quotes = pc.createDataChannel("quotes", { ordered: false, maxRetransmits: 0 }));
      conn.seq = {}; // newest seq per symbol: older (reordered) states are dropped
      const parse = (ev) => {
        if (typeof ev.data !== "string" || conn !== client.conn) return null;
        try { const f = JSON.parse(ev.data); return Array.isArray(f) ? f : [f]; } catch (e) { return null; }
      };
      ops.onmessage = (ev) => {
        const msgs = parse(ev);
        if (!msgs || !client._alive(conn)) return;
        const welcome = msgs.some((m) => m && m.type === "welcome");
        client._handleAll(msgs);
        if (welcome && conn === client.conn) {
          this.subscribeAll(client, conn);
          conn.ping = setInterval(() => this.apply(client, conn, { op: "ping" }), client.opts.pingIntervalMs);
        }
      };
      quotes.onmessage = (ev) => {
        const msgs = parse(ev);
        if (!msgs || !client._alive(conn)) return;
        client._handleAll(msgs.filter((m) => {
          if (!m || typeof m.seq !== "number") return true;
          if (conn.seq[m.sym] > m.seq) return false;
          conn.seq[m.sym] = m.seq;
          return true;
        }));
      };
      ops.onclose = quotes.onclose = () => client._fail(conn, "channel closed");
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed") client._fail(conn, "connection failed");
      };
      const headers = { "Content-Type": "application/json" };
      if (conn.token) headers.Authorization = `Bearer ${conn.token}`;
      pc.createOffer()
        .then((offer) => pc.setLocalDescription(offer))
        .then(() => fetch(`${client.httpBase}/webrtc/offer`, {
          method: "POST", cache: "no-store", headers, body: JSON.stringify({ sdp: pc.localDescription.sdp }),
        }))
        .then(async (res) => {
          if (res.status === 401) throw await refusal(res);
          if (!res.ok) throw new Error(`HTTP ${res.status} for the offer`);
          const answer = await res.json();
          if (!conn.closed) await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
        })
        .catch((e) => { if (!conn.closed) client._failWith(conn, e); });
    },
    subscribeAll(client, conn) {
      const sub = client._subscribeAll(false); // whole states on an unreliable channel
      if (sub) this.apply(client, conn, sub);
    },
    close(client, conn) {
      clearInterval(conn.ping);
      if (conn.ops) conn.ops.onclose = conn.ops.onmessage = null;
      if (conn.quotes) conn.quotes.onclose = conn.quotes.onmessage = null;
      if (conn.pc) { conn.pc.onconnectionstatechange = null; conn.pc.close(); }
    },
    apply(client, conn, op) {
      // Before the welcome: the symbols go in subscribeAll.
      if (conn.ops && conn.ops.readyState === "open" && conn.established) conn.ops.send(JSON.stringify(op));
    },
    /** The offer carried the credential; a fresh one goes as an op. */
    refresh(client, conn) {
      this.apply(client, conn, { op: "auth", id: client.nextId++, token: conn.token });
    },
  };

  global.TickerClient = {
    /** Connects to the gateway at `baseUrl` ("" for this page's origin). */
    connect: (baseUrl, opts) => new Client(baseUrl, opts || {}),
    Client,
  };
})(typeof window !== "undefined" ? window : globalThis);
