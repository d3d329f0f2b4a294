// A typed program against /client.js and its declarations (src/web/client.d.ts):
// `tsc -p tests/browser` checks it (tests/typescript.rs), then it runs for real
// against a live gateway over each transport, so a declaration that does not
// match the client fails one way or the other.

/** Fails the run. */
function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Error(`typed example: ${what}`);
}

/** The client as it is now (reads after a call are not narrowed by reads before it). */
function now(c: TickerClient.Client): { rate: number | null; state: TickerClient.State } {
  return { rate: c.rate, state: c.state };
}

/** Resolves when `arm`'s callback is called, or fails after `ms`. */
function waitFor<T>(arm: (done: (v: T) => void) => void, what: string, ms = 10000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`typed example: no ${what} in ${ms} ms`)), ms);
    arm((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/**
 * Subscribes over one transport; checks the snapshot, an update, a refusal, the rate and
 * the end. With a `token`, against a gateway with authentication off, it is not needed.
 */
async function overTransport(base: string, transport: TickerClient.Transport, token?: TickerClient.Token): Promise<void> {
  let onSnapshot: (q: TickerClient.Quote) => void = () => {};
  let onRefused: (e: TickerClient.ErrorMessage) => void = () => {};
  let onClosed: () => void = () => {};
  const transportErrors: string[] = [];
  const options: TickerClient.Options = {
    transports: [transport],
    maxRate: 5,
    stallTimeoutMs: 20000,
    openTimeoutMs: 5000,
    pingIntervalMs: 1000,
    pollWaitSec: 1,
    token,
    onState(state: TickerClient.State, c: TickerClient.Client) {
      if (state === "closed") onClosed();
      check(c.transport === transport, `transport ${c.transport}, not ${transport}`);
    },
    onMessage(msg: TickerClient.ServerMessage, c: TickerClient.Client) {
      if (msg.type === "snapshot") {
        const merged: TickerClient.Quote | undefined = c.quotes[msg.sym];
        check(merged !== undefined && merged.seq === msg.seq, `${msg.sym} merged from its snapshot`);
        onSnapshot(merged);
      }
    },
    onError(err: TickerClient.ErrorMessage | TickerClient.TransportError) {
      if (err.code === "transport") transportErrors.push(err.message);
      else if (err.code === "unknown_symbol") onRefused(err);
    },
  };
  const client: TickerClient.Client = TickerClient.connect(base, options);
  const snapshot = waitFor<TickerClient.Quote>((done) => (onSnapshot = done), `${transport} snapshot`);
  const refused = waitFor<TickerClient.ErrorMessage>((done) => (onRefused = done), `${transport} refusal`);
  client.subscribe(["aapl", "ZZZZ"], 2);
  const quote = await snapshot;
  check(quote.sym === "AAPL" && typeof quote.seq === "number" && typeof quote.t === "number", "a quote");
  check(typeof quote.bp === "string", "prices are strings");
  const error = await refused;
  check(error.symbols !== undefined && error.symbols.includes("ZZZZ"), "ZZZZ refused");
  check(!client.symbols.has("ZZZZ") && client.symbols.has("AAPL"), "refused symbols dropped");
  check(client.state === "open", `state ${client.state}`);
  check(client.rate === 2, `rate ${client.rate}`);
  check(client.opts.pollWaitSec === 1 && client.opts.transports[0] === transport, "options kept");
  const limits: TickerClient.Limits | null = client.limits;
  check(limits !== null && limits.max_rate > 0, "limits from the welcome");
  client.setRate(1);
  check(now(client).rate === 1, "setRate");
  client.unsubscribe(["AAPL"]);
  check(client.quotes.AAPL === undefined && client.symbols.size === 0, "unsubscribed and forgotten");
  const closed = waitFor<void>((done) => (onClosed = done), `${transport} close`);
  client.close();
  await closed;
  check(now(client).state === "closed", "closed");
  check(transportErrors.length === 0, `transport errors: ${transportErrors.join("; ")}`);
}

/** Runs the example against the gateway at `base`. */
export async function run(base: string): Promise<void> {
  const fresh = async (): Promise<string> => "tk_not-needed";
  for (const transport of ["ws", "sse", "poll"] as const) {
    await overTransport(base, transport);
    await overTransport(base, transport, fresh);
  }
  // The constructor is public too, and the global is on `window` in a browser.
  const direct: TickerClient.Client = new TickerClient.Client(base, { transports: ["poll"], token: "tk_x" });
  direct.setToken(() => null);
  direct.close();
  const fromWindow: typeof TickerClient | undefined = (globalThis as unknown as Partial<Window>).TickerClient;
  check(fromWindow === TickerClient, "the global");
}

/** Never called: wrong uses the declarations must refuse. */
export function refusedUses(client: TickerClient.Client): void {
  // @ts-expect-error: not a transport
  TickerClient.connect("", { transports: ["xhr"] });
  // @ts-expect-error: symbols are an array
  client.subscribe("AAPL");
  // @ts-expect-error: the state is read-only
  client.state = "open";
  TickerClient.connect("", {
    onMessage(msg) {
      // @ts-expect-error: only quote messages have a sym
      msg.sym.toUpperCase();
    },
  });
  // @ts-expect-error: no such method
  client.reconnect();
  // @ts-expect-error: a token is a string or a function that gives one
  TickerClient.connect("", { token: 42 });
  // @ts-expect-error: the function gives the token, not an object
  client.setToken(async () => ({ token: "tk_x" }));
}
