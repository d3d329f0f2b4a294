// A real @stomp/stompjs 7 client, driven line by line from tests/stomp/.
//
// stdin: one JSON command per line; stdout: one JSON event per line. The Rust
// test decides what to do and checks what arrives; this file only translates.
//
// Commands:
//   {"cmd":"connect","url":U,"options":{...}}   Client options (versions as a list)
//   {"cmd":"subscribe","destination":D,"headers":{...}}
//   {"cmd":"unsubscribe","id":I,"headers":{...}}
//   {"cmd":"receipt","id":R}                    watch for RECEIPT receipt-id:R
//   {"cmd":"publish","destination":D,"body":B}  SEND (refused by the server)
//   {"cmd":"begin"}                              BEGIN (refused by the server)
//   {"cmd":"raw","data":S}                       S as one WebSocket text message
//   {"cmd":"disconnect"}                         DISCONNECT, then close
// Events:
//   {"ev":"connected","headers":{...}}
//   {"ev":"message","headers":{...},"body":{...}}
//   {"ev":"unhandled","headers":{...},"body":"..."}  a MESSAGE for no subscription
//                                                  stompjs knows (raw SUBSCRIBE frames)
//   {"ev":"receipt","headers":{...}}
//   {"ev":"error","headers":{...},"body":"..."}
//   {"ev":"closed","code":N,"reason":S}
//   {"ev":"beat"}                                a heart-beat from the server
//   {"ev":"fatal","message":S}                   the bridge itself failed

import { emit, serve } from "./bridge.mjs";
import { Client, Versions } from "@stomp/stompjs";
import WebSocket from "ws";

// stompjs looks for a global WebSocket (Node 20 has none).
globalThis.WebSocket = WebSocket;

let client;

function connect({ url, options = {} }) {
  const { versions, ...rest } = options;
  client = new Client({
    brokerURL: url,
    // One connection per test: a close is the end, never a reconnect.
    reconnectDelay: 0,
    ...rest,
    ...(versions ? { stompVersions: new Versions(versions) } : {}),
  });
  client.onConnect = (frame) => emit({ ev: "connected", headers: frame.headers });
  client.onStompError = (frame) =>
    emit({ ev: "error", headers: frame.headers, body: frame.body });
  client.onWebSocketClose = (e) => emit({ ev: "closed", code: e.code, reason: e.reason });
  client.onUnhandledReceipt = (frame) => emit({ ev: "receipt", headers: frame.headers });
  client.onUnhandledMessage = (m) =>
    emit({ ev: "unhandled", headers: m.headers, body: m.body });
  client.debug = (line) => {
    if (line.includes("<<< PONG")) emit({ ev: "beat" });
  };
  client.activate();
}

const commands = {
  connect,
  subscribe({ destination, headers = {} }) {
    client.subscribe(
      destination,
      (m) => emit({ ev: "message", headers: m.headers, body: JSON.parse(m.body) }),
      headers,
    );
  },
  unsubscribe({ id, headers = {} }) {
    client.unsubscribe(id, headers);
  },
  receipt({ id }) {
    client.watchForReceipt(id, (frame) => emit({ ev: "receipt", headers: frame.headers }));
  },
  publish({ destination, body = "" }) {
    client.publish({ destination, body });
  },
  begin() {
    client.begin();
  },
  raw({ data }) {
    client.webSocket.send(data);
  },
  disconnect() {
    client.deactivate();
  },
};

await serve(commands);
