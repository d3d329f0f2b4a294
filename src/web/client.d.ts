/*
 * client.d.ts: TypeScript declarations of /client.js, the gateway's browser
 * client (served at /client.d.ts). Loading /client.js defines the global
 * `TickerClient`:
 *
 *   /// <reference path="client.d.ts" />
 *   const client = TickerClient.connect("", { maxRate: 5, onMessage(msg, c) { ... } });
 *   const authed = TickerClient.connect("", { token: async () => (await fetch("/my-token")).text() });
 *   client.subscribe(["AAPL", "MSFT"]);
 *
 * The messages are those of the ticker.v1 protocol (/api/v1/asyncapi.json).
 */

declare namespace TickerClient {
  /** The transports, tried in the order given ("webrtc" only when asked for). */
  type Transport = "webrtc" | "ws" | "sse" | "poll";

  /**
   * "connecting" until the first transport opens; "unauthorized" after the gateway
   * refused the credential (or it ran out), until setToken(); "closed" after close().
   */
  type State = "connecting" | "open" | "reconnecting" | "unauthorized" | "closed";

  /**
   * An API key or a JWT; or a function, sync or async, that returns a fresh one (called
   * before every connection and, for a JWT with an `exp`, before it expires). null, ""
   * or no option: no credential.
   */
  type Token = string | null | (() => string | null | Promise<string | null>);

  /** A decimal price, exact, as a string ("189.10"). */
  type Price = string;

  /** A symbol's merged state: its snapshot with every update applied. */
  interface Quote {
    sym: string;
    /** Per-symbol sequence; strictly increases. */
    seq: number;
    /** Source time, milliseconds since the Unix epoch. */
    t: number;
    bp?: Price;
    bs?: number;
    ap?: Price;
    as?: number;
    lp?: Price;
    ls?: number;
    v?: number;
    o?: Price;
    h?: Price;
    l?: Price;
    pc?: Price;
  }

  /** What the server allows, from its welcome. */
  interface Limits {
    max_symbols: number;
    max_rate: number;
    default_rate: number;
    /** The principal's own connection limit, when it has one. */
    max_connections?: number;
  }

  type RequestId = string | number;

  type ErrorCode =
    | "bad_request"
    | "unknown_symbol"
    | "too_many_symbols"
    | "not_entitled"
    | "unauthorized"
    | "rate_limited"
    | "no_quote"
    | "not_found"
    | "method_not_allowed"
    | "server_full"
    | "unknown_session"
    | "session_expired"
    | "too_many_connections"
    | "origin_not_allowed";

  interface Welcome {
    type: "welcome";
    session: string;
    protocol: "ticker.v1";
    format: "json" | "msgpack";
    limits: Limits;
    /** The principal, when authentication is on and the request carried the credential. */
    principal?: string;
  }
  /** The reply to a good `auth` op (authentication on). */
  interface Authenticated {
    type: "authenticated";
    id?: RequestId;
    principal: string;
    limits: Limits;
    /** The credential's exp, seconds since the Unix epoch. */
    expires?: number;
  }
  interface Subscribed {
    type: "subscribed";
    id?: RequestId;
    symbols: string[];
    /** The rate granted. */
    max_rate: number;
  }
  interface Unsubscribed {
    type: "unsubscribed";
    id?: RequestId;
    symbols: string[];
    /** Set when the server unsubscribed on its own (a refresh took the entitlement away). */
    reason?: "not_entitled";
  }
  interface Subscriptions {
    type: "subscriptions";
    id?: RequestId;
    symbols: { sym: string; max_rate: number }[];
  }
  interface Pong {
    type: "pong";
    id?: RequestId;
  }
  interface ErrorMessage {
    type: "error";
    id?: RequestId;
    code: ErrorCode;
    message: string;
    /** The symbols it is about (refused ones are dropped from the client's set). */
    symbols?: string[];
  }
  interface Snapshot extends Quote {
    type: "snapshot";
  }
  /** sym, seq, t and only the fields that changed. */
  interface Update extends Quote {
    type: "update";
  }

  type ServerMessage =
    | Welcome
    | Authenticated
    | Subscribed
    | Unsubscribed
    | Subscriptions
    | Pong
    | ErrorMessage
    | Snapshot
    | Update;

  /** A transport that failed to open, stalled or dropped (the client falls back or reconnects). */
  interface TransportError {
    type: "error";
    code: "transport";
    message: string;
  }

  interface Options {
    /** Tried in this order (default ["ws", "sse", "poll"]). */
    transports?: Transport[];
    /** Updates per second per symbol; null: the server's default. */
    maxRate?: number | null;
    /** Symbols to subscribe from the start. */
    symbols?: string[];
    /** No message or heartbeat this long: the transport is stalled (default 20000). */
    stallTimeoutMs?: number;
    /** No sign of life this long after opening: try the next transport (default 10000). */
    openTimeoutMs?: number;
    /** WebRTC: channels not open this long after the offer: try the next transport (default 5000). */
    webrtcOpenTimeoutMs?: number;
    /** WebSocket: how often the client sends {"op":"ping"} (default 10000). */
    pingIntervalMs?: number;
    /** Long-polling: the `wait` of each poll, in seconds (default 25). */
    pollWaitSec?: number;
    /** The credential, for a gateway with authentication on (PROTOCOL.md section 9). */
    token?: Token;
    /** The state or the transport changed. */
    onState?(state: State, client: Client): void;
    /** Every server message, after it is merged into `quotes`. */
    onMessage?(msg: ServerMessage, client: Client): void;
    /**
     * Error messages from the server, and transport failures. A refused or expired
     * credential comes as code "unauthorized" (then the state is "unauthorized").
     */
    onError?(err: ErrorMessage | TransportError, client: Client): void;
  }

  class Client {
    constructor(baseUrl: string, opts?: Options);
    /** The options in force (defaults filled in). */
    readonly opts: Required<Omit<Options, "symbols">> & Pick<Options, "symbols">;
    readonly state: State;
    /** The transport in use, or being tried. */
    readonly transport: Transport;
    /**
     * The merged state of each subscribed symbol that has a quote. It outlives a
     * connection: over ws and poll a reconnect resumes from each quote's `seq`, and
     * only the symbols that changed meanwhile get a new snapshot.
     */
    readonly quotes: Record<string, Quote>;
    /** The symbols the client keeps subscribed (across reconnects). */
    readonly symbols: Set<string>;
    /** The max_rate asked for every symbol; null: the server's default. */
    readonly rate: number | null;
    /** From the server's welcome; null before it. */
    readonly limits: Limits | null;
    /** Adds symbols (upper-cased), and sets the rate when `maxRate` is given. */
    subscribe(symbols: string[], maxRate?: number | null): void;
    /** Removes symbols; their quotes are forgotten at once. */
    unsubscribe(symbols: string[]): void;
    /** Changes the max_rate of every subscribed symbol. */
    setRate(rate: number | null): void;
    /** Replaces the credential and connects again with it (also out of "unauthorized"). */
    setToken(token: Token): void;
    /** Ends the connection for good; no reconnect. */
    close(): void;
  }

  /** Connects to the gateway at `baseUrl` ("" for this page's origin). */
  function connect(baseUrl: string, opts?: Options): Client;
}

interface Window {
  TickerClient: typeof TickerClient;
}
