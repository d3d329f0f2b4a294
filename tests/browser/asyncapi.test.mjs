// The AsyncAPI document of the push protocols (src/transport/asyncapi.json),
// checked by @asyncapi/parser and against a live gateway (GATEWAY_URL, whose
// feed keeps AAPL and MSFT moving): every message a WebSocket session and an SSE
// stream receive matches the schema of the document's message of its type, and
// the WebSocket session receives every server message the document names; a
// STOMP session sends every frame the document names (its examples) and gets
// every server frame it names, headers and body as documented; Socket.IO's
// packets, and socket.io-client's calls (the examples), acks and events, are
// those of the document.
// Driven by tests/asyncapi.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";
import { io } from "socket.io-client";

const BASE = process.env.GATEWAY_URL;
const WAIT_MS = 20000;
const text = readFileSync(new URL("../../src/transport/asyncapi.json", import.meta.url), "utf8");
const { document, diagnostics } = await new Parser().parse(text);

/** The messages of a channel: name → validator of its payload. */
function validators(channel) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  const out = new Map();
  for (const m of document.channels().get(channel).messages()) {
    out.set(m.name(), ajv.compile(m.payload().json()));
  }
  return out;
}

/** Checks `msg` against the message named by its type; returns a problem or null. */
function problem(schemas, name, msg) {
  const validate = schemas.get(name);
  if (!validate) return `no message named ${name}: ${JSON.stringify(msg)}`;
  if (msg.type !== name) return `a ${name} message of type ${msg.type}`;
  return validate(msg) ? null : `${JSON.stringify(msg)}: ${JSON.stringify(validate.errors)}`;
}

/** Awaits `work`, failing after WAIT_MS; `end` runs either way. */
async function within(what, work, end) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing more in ${WAIT_MS} ms`)), WAIT_MS);
  });
  try {
    await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
    end();
  }
}

test("the document parses with no errors or warnings", () => {
  // Severity 0 is an error, 1 a warning.
  const errors = diagnostics.filter((d) => d.severity <= 1).map((d) => `${d.code}: ${d.message} at ${d.path.join(".")}`);
  assert.deepEqual(errors, []);
  assert.ok(document, "a document");
  assert.equal(document.version(), "3.0.0");
});

test("its examples match their headers and payloads", () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  let n = 0;
  for (const m of document.allMessages()) {
    for (const ex of m.examples()) {
      for (const [part, schema, value] of [["headers", m.headers(), ex.headers()], ["payload", m.payload(), ex.payload()]]) {
        if (value === undefined) continue;
        assert.ok(schema, `${m.name()}: an example's ${part}, and no schema for them`);
        const validate = ajv.compile(schema.json());
        assert.ok(validate(value), `${m.name()} ${part}: ${JSON.stringify(validate.errors)}`);
        n++;
      }
    }
  }
  assert.ok(n >= 37, `${n} examples`);
});

/** Messages only a server with authentication on sends (this one runs without). */
const authOnly = (m) => m.tags().all().some((t) => t.name() === "authentication");

test("a live WebSocket session gets every server message, each as documented", async () => {
  const schemas = validators("ws");
  // Server messages have a `type`; client ops an `op`.
  const serverNames = document.channels().get("ws").messages().all()
    .filter((m) => m.payload().json().properties.type && !authOnly(m))
    .map((m) => m.name());
  const seen = new Set();
  const problems = [];
  const ws = new WebSocket(BASE.replace(/^http/, "ws") + "/ws", ["ticker.v1.json"]);
  const all = new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error("WebSocket error"));
    ws.onopen = () => {
      ws.send(JSON.stringify({ op: "subscribe", id: 1, symbols: ["AAPL", "MSFT", "ZZZZ"], max_rate: 50 }));
      ws.send(JSON.stringify({ op: "list", id: 2 }));
      ws.send(JSON.stringify({ op: "ping", id: "p" }));
    };
    ws.onmessage = (ev) => {
      const frame = JSON.parse(ev.data);
      assert.ok(Array.isArray(frame) && frame.length > 0, "every frame is a non-empty array");
      for (const msg of frame) {
        const p = problem(schemas, msg.type, msg);
        if (p) problems.push(p);
        if (msg.type === "update" && !seen.has("update")) {
          ws.send(JSON.stringify({ op: "unsubscribe", id: 4, symbols: ["MSFT"] }));
        }
        seen.add(msg.type);
      }
      if (serverNames.every((n) => seen.has(n))) resolve();
    };
  });
  await within("WebSocket", all, () => ws.close());
  assert.deepEqual(problems, []);
  assert.deepEqual([...seen].sort(), [...serverNames].sort());
});

test("a live SSE stream's events are documented messages", async () => {
  const schemas = validators("sse");
  const ctl = new AbortController();
  const problems = [];
  const types = [];
  const read = (async () => {
    const res = await fetch(`${BASE}/sse?symbols=AAPL,MSFT`, { signal: ctl.signal });
    assert.equal(res.status, 200);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    while (!types.includes("update")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the stream ended");
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (block.startsWith(":")) continue; // the heartbeat comment
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        const msg = JSON.parse(data);
        const p = problem(schemas, event, msg);
        if (p) problems.push(p);
        types.push(event);
      }
    }
  })();
  await within("SSE", read, () => ctl.abort());
  assert.deepEqual(problems, []);
  assert.deepEqual(types.slice(0, 2), ["welcome", "subscribed"]);
});

// STOMP and Socket.IO: their messages by the operations that send them.

const ajv = new Ajv({ strict: false, allErrors: true });

/** Checks `value` against `part` ("headers" or "payload") of message `m`; returns a problem or null. */
function mismatch(m, part, value) {
  const schema = m[part]();
  if (!schema) return value === undefined ? null : `${m.name()}: no ${part} documented, got ${JSON.stringify(value)}`;
  const validate = ajv.compile(schema.json());
  return validate(value) ? null : `${m.name()} ${part} ${JSON.stringify(value)}: ${JSON.stringify(validate.errors)}`;
}

/** Operation `id`'s messages and its reply's, each by name. */
function operation(id) {
  const op = document.operations().get(id);
  assert.ok(op, `operation ${id}`);
  const byName = (msgs) => new Map((msgs ? msgs.all() : []).map((m) => [m.name(), m]));
  return { op, messages: byName(op.messages()), replies: byName(op.reply()?.messages()) };
}

/** The operations of `channel` other than those `except` names. */
function operationsOf(channel, except = []) {
  return document.operations().all()
    .filter((op) => op.channels().all().some((c) => c.id() === channel) && !except.includes(op.id()))
    .map((op) => operation(op.id()));
}

/** Message `m`'s first example. */
function example(m) {
  const ex = m.examples().all()[0];
  assert.ok(ex, `${m.name()} has an example`);
  return ex;
}

/** What callbacks push, awaited one at a time. */
class Queue {
  items = [];
  waiting = [];
  push(item) {
    const w = this.waiting.shift();
    if (w) w(item);
    else this.items.push(item);
  }
  next() {
    return this.items.length ? Promise.resolve(this.items.shift()) : new Promise((r) => this.waiting.push(r));
  }
}

const ESCAPED = { "\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r" };
const UNESCAPED = Object.fromEntries(Object.entries(ESCAPED).map(([c, e]) => [e, c]));

/** A STOMP 1.2 frame from the server: its command, headers (the first of a repeated one) and body. */
function parseFrame(text) {
  const end = text.indexOf("\n\n");
  const [command, ...lines] = text.slice(0, end).split("\n");
  // CONNECTED escapes nothing.
  const value = command === "CONNECTED" ? (s) => s : (s) => s.replace(/\\[\\nrc]/g, (e) => UNESCAPED[e]);
  const headers = {};
  const repeated = [];
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = value(line.slice(0, colon));
    if (name in headers) repeated.push(name);
    else headers[name] = value(line.slice(colon + 1));
  }
  return { command, headers, repeated, body: text.slice(end + 2) };
}

/** A client frame as STOMP 1.2 writes it. */
function writeFrame(command, headers) {
  const value = ["CONNECT", "STOMP"].includes(command) ? (s) => s : (s) => s.replace(/[\\\n:\r]/g, (c) => ESCAPED[c]);
  const lines = Object.entries(headers).map(([n, v]) => `${value(n)}:${value(String(v))}`);
  return [command, ...lines].join("\n") + "\n\n\0";
}

test("a live STOMP session sends every documented frame and gets every server frame, each as documented", async () => {
  const ops = operationsOf("stomp");
  const client = new Map(ops.filter((o) => o.op.isReceive()).flatMap((o) => [...o.messages]));
  const server = new Map(ops.flatMap((o) => [...(o.op.isSend() ? o.messages : []), ...o.replies]));
  const refused = operation("stompRefused").messages;
  const problems = [];
  const sent = new Set();
  const seen = new Set();
  const sockets = [];

  function check(f) {
    seen.add(f.command);
    const m = server.get(f.command);
    if (!m) return problems.push(`an undocumented frame: ${JSON.stringify(f)}`);
    if (f.repeated.length) problems.push(`${f.command} repeats ${f.repeated}`);
    let body;
    if (f.body !== "") {
      if (Buffer.byteLength(f.body) !== Number(f.headers["content-length"])) {
        problems.push(`${f.command}: content-length ${f.headers["content-length"]} for ${f.body}`);
      }
      body = JSON.parse(f.body);
    }
    for (const p of [mismatch(m, "headers", f.headers), mismatch(m, "payload", body)]) if (p) problems.push(p);
  }

  /** A connection speaking v12.stomp. */
  async function session() {
    const frames = new Queue();
    const ws = new WebSocket(BASE.replace(/^http/, "ws") + "/ws", ["v12.stomp"]);
    sockets.push(ws);
    let buf = "";
    ws.onmessage = (ev) => {
      buf += ev.data;
      let end;
      while ((end = buf.indexOf("\0")) >= 0) {
        // EOLs before a frame are heart-beats.
        frames.push({ frame: parseFrame(buf.slice(0, end).replace(/^[\r\n]+/, "")) });
        buf = buf.slice(end + 1);
      }
    };
    ws.onclose = (ev) => frames.push({ closed: ev.code });
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("STOMP WebSocket error"));
    });
    assert.equal(ws.protocol, "v12.stomp");
    return {
      send(command, headers) {
        sent.add(command);
        ws.send(writeFrame(command, headers));
      },
      /** The next frame; fails on the close. */
      async next() {
        const item = await frames.next();
        assert.equal(item.closed, undefined, "closed while a frame was due");
        check(item.frame);
        return item.frame;
      },
      /** Frames until one matches. */
      async until(pred) {
        for (;;) {
          const f = await this.next();
          if (pred(f)) return f;
        }
      },
      /** Frames until the close; its code. */
      async closed() {
        for (;;) {
          const item = await frames.next();
          if (item.closed !== undefined) return item.closed;
          check(item.frame);
        }
      },
    };
  }

  /** The headers of the example of client frame `command`, with `changes`. */
  const headers = (command, changes = {}) => ({ ...example(client.get(command)).headers(), ...changes });

  /** A session past CONNECT (or STOMP). */
  async function connected(command = "CONNECT") {
    const s = await session();
    s.send(command, headers(command));
    const f = await s.next();
    assert.equal(f.command, "CONNECTED");
    return s;
  }

  const run = (async () => {
    // A subscription's life: RECEIPT before the snapshot, then updates.
    let s = await connected();
    const sub = headers("SUBSCRIBE");
    s.send("SUBSCRIBE", sub);
    const receipt = await s.next();
    assert.deepEqual([receipt.command, receipt.headers["receipt-id"]], ["RECEIPT", sub.receipt]);
    for (const type of ["snapshot", "update"]) {
      const m = await s.until((f) => f.command === "MESSAGE" && JSON.parse(f.body).type === type);
      assert.equal(m.headers.subscription, sub.id);
      assert.equal(m.headers.destination, sub.destination);
    }
    const unsub = headers("UNSUBSCRIBE");
    s.send("UNSUBSCRIBE", unsub);
    await s.until((f) => f.command === "RECEIPT" && f.headers["receipt-id"] === unsub.receipt);
    const bye = headers("DISCONNECT");
    s.send("DISCONNECT", bye);
    await s.until((f) => f.command === "RECEIPT" && f.headers["receipt-id"] === bye.receipt);
    assert.equal(await s.closed(), 1000);

    // An unknown symbol: ERROR naming the receipt, then the close.
    s = await connected("STOMP");
    s.send("SUBSCRIBE", headers("SUBSCRIBE", { destination: "/topic/quotes.ZZZZ", receipt: "z" }));
    const error = await s.until((f) => f.command === "ERROR");
    assert.equal(error.headers["receipt-id"], "z");
    assert.equal(await s.closed(), 1000);

    // Every refused frame: ERROR, then the close.
    for (const command of refused.keys()) {
      s = await connected();
      s.send(command, headers(command));
      const e = await s.next();
      assert.deepEqual([e.command, e.headers["receipt-id"]], ["ERROR", headers(command).receipt], command);
      assert.equal(await s.closed(), 1000, command);
    }
  })();
  await within("STOMP", run, () => sockets.forEach((ws) => ws.close()));
  assert.deepEqual(problems, []);
  assert.deepEqual([...sent].sort(), [...client.keys()].sort());
  assert.deepEqual([...seen].sort(), [...server.keys()].sort());
});

test("live Socket.IO packets, acks and events are as documented", async () => {
  const open = operation("socketioOpen").messages.get("open");
  const connect = operation("socketioConnect");
  const auth = example(connect.messages.get("connect")).payload();
  const push = operation("socketioPush").messages;
  // What the client sends but its CONNECT.
  const calls = operationsOf("socketio", ["socketioConnect"]).filter((o) => o.op.isReceive());
  const problems = [];
  const note = (p) => p && problems.push(p);

  // The polling handshake offers the upgrade; it is closed again at once.
  const polling = `${BASE}/socket.io/?EIO=4&transport=polling`;
  const answer = await (await fetch(polling)).text();
  assert.equal(answer[0], "0", answer);
  const handshake = JSON.parse(answer.slice(1));
  note(mismatch(open, "payload", handshake));
  assert.deepEqual(handshake.upgrades, ["websocket"]);
  await fetch(`${polling}&sid=${handshake.sid}`, { method: "POST", body: "1" });

  // A WebSocket of its own: the open packet, CONNECT_ERROR for another
  // namespace, CONNECT for the default one.
  const packets = new Queue();
  const ws = new WebSocket(BASE.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket");
  ws.onmessage = (ev) => packets.push(ev.data);
  const raw = (async () => {
    const first = await packets.next();
    assert.equal(first[0], "0", first);
    const opened = JSON.parse(first.slice(1));
    note(mismatch(open, "payload", opened));
    assert.deepEqual(opened.upgrades, []);
    ws.send("40/admin,");
    const refusal = await packets.next();
    assert.ok(refusal.startsWith("44/admin,"), refusal);
    note(mismatch(connect.replies.get("connect_error"), "payload", JSON.parse(refusal.slice("44/admin,".length))));
    ws.send("40" + JSON.stringify(auth));
    const connected = await packets.next();
    assert.ok(connected.startsWith("40{"), connected);
    const namespace = JSON.parse(connected.slice(2));
    note(mismatch(connect.replies.get("connect"), "payload", namespace));
    assert.equal(namespace.sid, opened.sid);
  })();
  await within("Socket.IO packets", raw, () => ws.close());

  // socket.io-client (polling, then the upgrade) makes every documented call
  // with its example and an ack, and one without an ack that fails.
  const events = new Set();
  const acks = new Set();
  const acked = new Set();
  const names = calls.flatMap((c) => [...c.messages.keys()]);
  const wanted = new Set(
    calls.flatMap((c) => [...c.replies.entries()].filter(([, m]) => !authOnly(m)).map(([n]) => n)),
  );
  const socket = io(BASE, { reconnection: false, auth });
  const all = new Promise((resolve, reject) => {
    const done = () => {
      const every = (want, got) => [...want].every((n) => got.has(n));
      if (every(push.keys(), events) && every(wanted, acks) && every(names, acked)) resolve();
    };
    socket.on("connect_error", reject);
    socket.onAny((name, data) => {
      const m = push.get(name);
      if (m) note(mismatch(m, "payload", data));
      else problems.push(`an undocumented event ${name}: ${JSON.stringify(data)}`);
      events.add(name);
      done();
    });
    socket.on("connect", () => {
      for (const { messages, replies } of calls) {
        for (const [name, m] of messages) {
          socket.emit(name, example(m).payload(), (data) => {
            const reply = replies.get(data?.type);
            if (reply) note(mismatch(reply, "payload", data));
            else problems.push(`${name} acked with ${JSON.stringify(data)}`);
            acks.add(data?.type);
            acked.add(name);
            done();
          });
        }
      }
      socket.emit("subscribe", { symbols: ["ZZZZ"] });
    });
  });
  await within("Socket.IO", all, () => socket.disconnect());
  assert.deepEqual(problems, []);
});
