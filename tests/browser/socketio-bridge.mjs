// A real socket.io-client 4, driven line by line from tests/socketio.rs.
//
// stdin: one JSON command per line; stdout: one JSON event per line.
//
// Commands:
//   {"cmd":"connect","url":U,"options":{...}}     io(U, options) (reconnection off
//                                                  unless the options say otherwise)
//   {"cmd":"connect",...,"vanish":"upgrading"}     the same, and the process dies
//                                                  (SIGKILL) the moment its WebSocket
//                                                  probe succeeded, before the upgrade
//                                                  packet: a client gone mid-upgrade
//   {"cmd":"emit","event":E,"args":A,"ack":true}  emit E(A), with an ack callback if asked
//   {"cmd":"emit_binary","event":E}               emit E with a binary argument
//   {"cmd":"disconnect"}
//   {"cmd":"drop"}                                 close the Engine.IO connection under the
//                                                  socket, as a lost network does
// Events:
//   {"ev":"connect","transport":T,"sid":S}           S: the Engine.IO session id
//   {"ev":"upgrade","transport":T}
//   {"ev":"upgrade_error","message":M}              the WebSocket probe failed
//   {"ev":"vanishing"}                              the last line before the SIGKILL
//   {"ev":"event","name":N,"data":D}              every server event
//   {"ev":"ack","event":E,"data":D}
//   {"ev":"connect_error","message":M}
//   {"ev":"disconnect","reason":R}
//   {"ev":"fatal","message":S}

import { emit, serve } from "./bridge.mjs";
import { io } from "socket.io-client";

let socket;

const commands = {
  connect({ url, options = {}, vanish }) {
    socket = io(url, { reconnection: false, ...options });
    socket.io.on("open", () => {
      const engine = socket.io.engine;
      engine.on("upgrade", (t) => emit({ ev: "upgrade", transport: t.name }));
      engine.on("upgradeError", (e) => emit({ ev: "upgrade_error", message: e.message }));
      if (vanish === "upgrading") {
        engine.on("upgrading", () => {
          emit({ ev: "vanishing" });
          process.kill(process.pid, "SIGKILL");
        });
      }
    });
    socket.on("connect", () =>
      emit({ ev: "connect", transport: socket.io.engine.transport.name, sid: socket.io.engine.id }),
    );
    socket.on("connect_error", (e) => emit({ ev: "connect_error", message: e.message }));
    socket.on("disconnect", (reason) => emit({ ev: "disconnect", reason }));
    socket.onAny((name, data) => emit({ ev: "event", name, data }));
  },
  emit({ event, args, ack }) {
    if (ack) socket.emit(event, args, (data) => emit({ ev: "ack", event, data }));
    else socket.emit(event, args);
  },
  emit_binary({ event }) {
    socket.emit(event, Buffer.from([1, 2, 3]));
  },
  disconnect() {
    socket.disconnect();
  },
  drop() {
    socket.io.engine.close();
  },
};

await serve(commands);
