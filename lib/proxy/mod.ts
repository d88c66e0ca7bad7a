/**
 * netmonitor's forward proxy: HTTP/1.1 over `Deno.listen`/`Deno.connect`.
 *
 * ```ts
 * const server = await startProxy({
 *   port: 8080,
 *   decide: async (input, signal) => ({ action: "allow", source: "rule", reason: "..." }),
 *   record: (rec) => log.write(rec),
 * });
 * // ...
 * await server.shutdown();
 * ```
 *
 * What it does, per client connection:
 * - absolute-form requests (`GET http://host/path HTTP/1.1`, any method) are
 *   checked (target, Host header, framing), decided with `decide`, and
 *   forwarded with streamed bodies and keep-alive on both sides; `Upgrade`
 *   (WebSocket) is relayed after a 101;
 * - `CONNECT host:port` is decided on the host, then the client's TLS
 *   ClientHello must name that host in its SNI (see connect.ts for the
 *   policy), then the tunnel is relayed, or decrypted by `intercept`;
 * - destinations are resolved by the proxy and checked against destination
 *   protection (lib/net/guard.ts) before it dials exactly the checked address;
 * - every request and every tunnel yields one `AccessRecord` via `record`.
 *
 * Status codes the proxy produces itself: 400 malformed request (also
 * origin-form requests, which are not proxy requests), 403 denied by a
 * decision or by policy (Host/SNI mismatch, destination protection; with
 * `X-Netmonitor-Decision: deny; reason="..."`), 408 request head too slow or
 * request body stalled, 431 request head over `maxHeaderBytes`, 502 upstream
 * refused/unreachable, DNS failure or broken response, 503 shutting down or
 * over `maxConnections`/`maxConnectionsPerClient` (with `Retry-After`), 504
 * upstream timeout or stalled while taking the request body. Bodies and
 * relays that move no bytes for `bodyIdleTimeoutMs`/`tunnelIdleTimeoutMs`
 * are cut once their response started.
 * A request whose Host header disagrees with its URL is refused with 403
 * (logged as source "policy"), like a Host/SNI mismatch inside a tunnel.
 *
 * @module
 */

export { DEFAULTS, startProxy } from "./server.ts";
export { closeQuietly, countingDuplex, duplexFromStreams, writeAll } from "./duplex.ts";
export type { ByteCounts } from "./duplex.ts";
export type {
  AccessRecord,
  DecideInput,
  DecisionSource,
  Duplex,
  FinalDecision,
  InterceptedTunnel,
  InterceptRequest,
  ProxyOptions,
  ProxyServer,
  RequestTarget,
  Rule,
  TunnelInterceptor,
} from "./types.ts";
