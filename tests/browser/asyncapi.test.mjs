// The AsyncAPI document of the push protocols (src/transport/asyncapi.json),
// checked by @asyncapi/parser and against a live gateway (GATEWAY_URL, whose
// feed keeps AAPL and MSFT moving): every message a WebSocket session and an SSE
// stream receive matches the schema of the document's message of its type, and
// the WebSocket session receives every server message the document names.
// Driven by tests/asyncapi.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";

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

test("the document parses with no errors", () => {
  const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.code}: ${d.message} at ${d.path.join(".")}`);
  assert.deepEqual(errors, []);
  assert.ok(document, "a document");
  assert.equal(document.version(), "3.0.0");
});

test("its examples match their payloads", () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  let n = 0;
  for (const m of document.allMessages()) {
    const validate = ajv.compile(m.payload().json());
    for (const ex of m.examples()) {
      assert.ok(validate(ex.payload()), `${m.name()}: ${JSON.stringify(validate.errors)}`);
      n++;
    }
  }
  assert.ok(n >= 13, `${n} examples`);
});

test("a live WebSocket session gets every server message, each as documented", async () => {
  const schemas = validators("ws");
  // Server messages have a `type`; client ops an `op`.
  const serverNames = document.channels().get("ws").messages().all()
    .filter((m) => m.payload().json().properties.type)
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
