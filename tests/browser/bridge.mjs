// What the client bridges share (stomp-bridge.mjs, socketio-bridge.mjs): events
// out as JSON lines on stdout, commands in as JSON lines on stdin, each run by
// its handler in `commands`; the process ends when stdin closes.

import { createInterface } from "node:readline";

export const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

export async function serve(commands) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    try {
      const command = JSON.parse(line);
      commands[command.cmd](command);
    } catch (e) {
      emit({ ev: "fatal", message: String(e && e.stack ? e.stack : e) });
    }
  }
  // stdin closed: the test is over.
  process.exit(0);
}
