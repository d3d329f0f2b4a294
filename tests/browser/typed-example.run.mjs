// Runs the compiled typed example (its path is the first argument) against the
// gateway at GATEWAY_URL, after loading /client.js as a page would.
import { readFile } from "node:fs/promises";
import vm from "node:vm";

const base = process.env.GATEWAY_URL;
const res = await fetch(`${base}/client.js`);
if (!res.ok) throw new Error(`GET /client.js: HTTP ${res.status}`);
vm.runInThisContext(await res.text(), { filename: "client.js" });
const { run } = await import(process.argv[2]);
await run(base);
console.log("typed example: ok over ws, sse and poll");
