/**
 * The proxy's public contract: how it asks for decisions, reports records,
 * and hands CONNECT tunnels to a TLS interceptor. Re-exported by mod.ts.
 *
 * @module
 */

import type { RequestTarget, Rule } from "../rules/types.ts";
import type { AccessRecord, DecisionSource } from "../log/record.ts";
import type { ClientHello } from "../tls/client_hello.ts";

/** A request (or CONNECT tunnel) waiting for a decision. */
export interface DecideInput {
  /** The normalised destination; `path` undefined for a CONNECT tunnel. */
  target: RequestTarget;
  /** HTTP method, "CONNECT" for a tunnel. */
  method: string;
  /** Client address, `ip:port` (`[v6]:port`). */
  client: string;
  /**
   * The exact URL (scheme, normalised authority without default port, path
   * and query) that an allow-url/deny-url answer would save. Undefined for a
   * CONNECT tunnel.
   */
  url?: string;
}

/** The final answer for one request. */
export interface FinalDecision {
  action: "allow" | "deny";
  source: DecisionSource;
  /** Human readable; goes verbatim into the 403 body, the log and stats. */
  reason: string;
  /** The rule that decided, when `source` is "rule". */
  rule?: Rule;
}

/**
 * Anything the proxy can speak HTTP/1 or relay bytes over: a `Deno.Conn`,
 * a `Deno.TlsConn`, or an adapter around another stream (see
 * `duplexFromStreams` in duplex.ts). This is the shape of `Deno.Conn`.
 */
export interface Duplex {
  /** Reads into `p`; resolves with the byte count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p` (at least one byte); resolves with the count written. */
  write(p: Uint8Array): Promise<number>;
  /** Half-closes the write side (TCP FIN / TLS close_notify) where possible. */
  closeWrite(): Promise<void>;
  /** Closes both directions; must not throw when already closed. */
  close(): void;
}

/**
 * What the proxy gives the interceptor for an allowed CONNECT tunnel, after
 * it has answered `200 Connection established`, read the client's complete
 * ClientHello and checked that its SNI names the CONNECT host.
 */
export interface InterceptRequest {
  /** CONNECT host, normalised (`normaliseHost`): a name, `1.2.3.4` or `[v6]`. */
  host: string;
  port: number;
  /** Client address, `ip:port`. */
  client: string;
  /** The parsed ClientHello (SNI, ALPN offers). */
  hello: ClientHello;
  /**
   * The client's raw connection. The bytes in `prefix` were already read
   * from it: a TLS server must consume `prefix` first, then `conn`.
   */
  conn: Duplex;
  /** The complete ClientHello record(s), plus anything the client sent after them. */
  prefix: Uint8Array;
  /** Aborted when the proxy shuts down. */
  signal: AbortSignal;
}

/** An intercepted tunnel: a decrypted client stream and a way to reach the origin. */
export interface InterceptedTunnel {
  /**
   * The decrypted client side. The proxy serves HTTP/1.1 on it (origin-form
   * requests, scheme https, Host must name the tunnel host) until it ends,
   * then calls `close()` on it.
   */
  client: Duplex;
  /**
   * Opens a verified TLS connection to the origin over `tcp`, a connection
   * the proxy has already dialled to an address that passed destination
   * protection. Must verify the certificate for `host` (SNI = `host` unless
   * it is an IP literal), offer ALPN http/1.1, and reject with an Error whose
   * message says what failed (it becomes the 502 body and the log's error).
   * Owns `tcp` from then on: closes it on failure.
   */
  connectUpstream(tcp: Deno.TcpConn, host: string, port: number): Promise<Duplex>;
}

/**
 * Decides, per allowed CONNECT, whether to decrypt the tunnel.
 *
 * The proxy calls `intercept()` once per allowed tunnel whose ClientHello
 * passed the SNI check. Return `null` without touching `req.conn` to relay the
 * tunnel's bytes untouched (passthrough). Otherwise do the TLS handshake with
 * the client (using `req.prefix` then `req.conn`) and resolve with the
 * decrypted stream; every request inside is then decided, forwarded and
 * recorded on its own. Reject to drop the tunnel: the rejection's message
 * becomes the tunnel record's `error` (e.g. "client rejected our certificate
 * (pinning?): add --passthrough example.com").
 */
export interface TunnelInterceptor {
  intercept(req: InterceptRequest): Promise<InterceptedTunnel | null>;
  /**
   * Optional: whether `intercept()` will decrypt tunnels to `host:port`
   * (false for passthrough hosts), known before the CONNECT is decided.
   *
   * When it says true, the CONNECT is decided with `decideTunnel` (when
   * given), nothing is dialled for the tunnel itself (each request inside
   * dials once it is allowed, so an unapproved CONNECT cannot probe ports),
   * and a later `null` from `intercept()` falls back to dialling and relaying.
   * When it says false, `intercept()` is not called: the tunnel is relayed.
   * Without it, every allowed tunnel is dialled first, then offered to
   * `intercept()`.
   */
  intercepts?(host: string, port: number): boolean;
}

/** Options of {@linkcode startProxy}. */
export interface ProxyOptions {
  /**
   * Address to listen on. Anything but loopback exposes the proxy to the
   * network; the CLI only uses another value when `--listen` asks for it.
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** Port to listen on; 0 picks a free one (see `ProxyServer.addr`). @default {8080} */
  port?: number;
  /**
   * Decides a request. Called once per request and per CONNECT. `signal` is
   * aborted when the client goes away or the proxy shuts down: resolve or
   * reject soon after. A rejection denies the request (fail closed).
   */
  decide(input: DecideInput, signal: AbortSignal): Promise<FinalDecision>;
  /**
   * Decides a CONNECT whose tunnel will be decrypted (see
   * `TunnelInterceptor.intercepts`). Every request inside is decided by
   * `decide` with its full URL, so this typically denies only what a rule
   * denies for the whole host and allows the rest without asking, leaving
   * the prompt to those requests. Default: `decide`.
   */
  decideTunnel?(input: DecideInput, signal: AbortSignal): Promise<FinalDecision>;
  /** Receives exactly one record per request and per tunnel. Must not throw. */
  record(rec: AccessRecord): void;
  /**
   * `"host:port"` -> IP address, like curl's `--resolve` (host normalised or
   * not). Mapped addresses are trusted: destination protection does not
   * apply to them.
   */
  resolve?: Map<string, string>;
  /**
   * A DNS server to ask instead of the system resolver (getaddrinfo, which
   * reads /etc/hosts). For air-gapped setups and tests.
   */
  nameServer?: { ipAddr: string; port?: number };
  /**
   * Refuse to connect to loopback, link-local, unspecified, multicast and the
   * proxy's own addresses unless an exact rule or `resolve` names them.
   * @default {true}
   */
  protectDestinations?: boolean;
  /** Upstream TCP connect timeout, ms (504 when exceeded). @default {10000} */
  connectTimeoutMs?: number;
  /** Time to receive a complete request head once its first byte arrived, ms (408). @default {15000} */
  headerTimeoutMs?: number;
  /** Time a keep-alive client connection may sit idle between requests, ms. @default {60000} */
  idleTimeoutMs?: number;
  /**
   * Time to wait for the upstream's response head, counted from the last
   * byte of the request sent to it, ms (504). A request body still streaming
   * up keeps the wait going.
   * @default {60000}
   */
  responseTimeoutMs?: number;
  /**
   * Longest time a message body may move no bytes, ms; 0 disables. Applies
   * to request bodies (the client stops sending: 408; the upstream stops
   * accepting: 504) and to response bodies (the upstream stops sending, or
   * the client stops reading: the connection is cut). The exchange's record
   * says which side stalled. Equal to the response timeout, so an upstream
   * gets the same 60 s of silence before and during its response (long polls
   * and event streams with a heartbeat under a minute keep working).
   * @default {60000}
   */
  bodyIdleTimeoutMs?: number;
  /**
   * Longest time a relayed CONNECT tunnel or WebSocket may move no bytes in
   * either direction before both connections are closed, ms; 0 disables.
   * Generous, because such connections legitimately sit quiet (WebSockets,
   * HTTP/2 connections between requests): it reclaims tunnels whose peers
   * vanished without a close, not slow ones.
   * @default {600000}
   */
  tunnelIdleTimeoutMs?: number;
  /** Time to wait for the client's TLS ClientHello after a CONNECT was answered, ms. @default {10000} */
  helloTimeoutMs?: number;
  /** Largest request or response head accepted, bytes (431 / 502 beyond). @default {65536} */
  maxHeaderBytes?: number;
  /** Time in-flight exchanges get to finish on shutdown before they are cut, ms. @default {5000} */
  shutdownGraceMs?: number;
  /**
   * Most client connections open at once (each may hold one upstream
   * connection too, so about twice as many file descriptors). Beyond it a new
   * connection is answered `503` with `Retry-After` and closed, and recorded
   * (decision deny, source policy, error "too many connections"). Well above
   * the 1,000 concurrent tunnels the proxy is sized for (under 100 MiB).
   * @default {4096}
   */
  maxConnections?: number;
  /**
   * Most client connections open at once from one client IP address (one
   * container), refused like `maxConnections`, so one client cannot take
   * every connection from the others.
   * @default {half of maxConnections: 2048}
   */
  maxConnectionsPerClient?: number;
  /** TLS interception for CONNECT tunnels; undefined relays their bytes. */
  intercept?: TunnelInterceptor;
  /**
   * Collect garbage once the proxy goes quiet after a busy spell (see
   * `MemoryReducer`; it needs `--v8-flags=--expose-gc`, else it does nothing).
   * @default {true}
   */
  reduceMemory?: boolean;
}

/** A running proxy. */
export interface ProxyServer {
  /** The address actually listened on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /**
   * Stops accepting, denies requests still waiting for a decision (503),
   * lets in-flight exchanges finish (up to `shutdownGraceMs`), closes idle
   * connections and tunnels, and resolves when every record was emitted.
   */
  shutdown(): Promise<void>;
  /** Resolves once the server stopped (after `shutdown()` or a listener failure). */
  readonly finished: Promise<void>;
}

export type { AccessRecord, DecisionSource, RequestTarget, Rule };
