/**
 * The proxy's typed errors and the one function that maps them to what the
 * client is told and what the log records.
 *
 * @module
 */

import { HttpParseError } from "../http1/errors.ts";
import { HostError } from "../net/host.ts";
import { TargetError } from "../net/url.ts";
import { DestinationRefusedError } from "../net/guard.ts";
import { DnsError } from "../net/resolve.ts";
import { DeadlineError } from "./reader.ts";
import { redactTargets } from "../log/redact.ts";

/** A request refused by built-in policy (Host/SNI mismatch, not TLS, ...). */
export class PolicyError extends Error {
  override name = "PolicyError";
}

/**
 * A request sent to the proxy as if it were the origin server. docker/_common.sh
 * (`nm_is_netmonitor`) recognises netmonitor by this 400's wording.
 */
export class NotProxyRequestError extends Error {
  override name = "NotProxyRequestError";
  constructor(readonly target: string) {
    // Redacted before it is cut: the message reaches the log.
    const shown = redactTargets(target);
    super(
      `"${shown.length > 60 ? shown.slice(0, 60) + "..." : shown}" is not a proxy request: ` +
        "netmonitor is an HTTP proxy; send absolute URLs (GET http://host/path) or CONNECT " +
        "host:443, for example by setting HTTP_PROXY/HTTPS_PROXY to this address",
    );
  }
}

/** The upstream could not be reached (connection refused, unreachable, reset). */
export class UpstreamConnectError extends Error {
  override name = "UpstreamConnectError";
}

/** The upstream did not connect or answer in time. */
export class UpstreamTimeoutError extends Error {
  override name = "UpstreamTimeoutError";
}

/** The upstream broke the exchange (bad response, closed early, TLS failure). */
export class UpstreamError extends Error {
  override name = "UpstreamError";
}

/** The proxy is shutting down and will not serve this request. */
export class ShutdownError extends Error {
  override name = "ShutdownError";
  constructor() {
    super("netmonitor is shutting down");
  }
}

/** The client went away (closed or reset its connection). */
export class ClientGoneError extends Error {
  override name = "ClientGoneError";
}

/**
 * A message body moved no bytes for the body idle timeout: the client
 * stopped sending its request body (408), or the upstream stopped accepting
 * it (504).
 */
export class StallError extends Error {
  override name = "StallError";
  constructor(message: string, readonly side: "client" | "upstream") {
    super(message);
  }
}

/** What the proxy answers for an error, and how it is logged. */
export interface ErrorOutcome {
  status: number;
  /** One line: the 4xx/5xx body and the log's `error`/`reason`. */
  message: string;
  /**
   * "policy": a built-in refusal (logged as deny/policy); "client": bad
   * request; "stall": a body stalled after the decision (logged with the
   * decision kept); "upstream"; "internal".
   */
  kind: "policy" | "client" | "stall" | "upstream" | "internal";
}

/**
 * Maps any error met while serving a request to its HTTP status: 400/414/431 for
 * malformed requests, 403 for policy refusals, 408 for slow clients (heads,
 * stalled request bodies), 502 for
 * upstream failures and DNS errors, 504 for upstream timeouts and stalls, 503 during
 * shutdown, 500 for anything unexpected (a bug).
 */
export function errorOutcome(e: unknown): ErrorOutcome {
  if (e instanceof HttpParseError) {
    return { status: e.status, message: e.message, kind: e.status === 502 ? "upstream" : "client" };
  }
  if (e instanceof TargetError || e instanceof HostError || e instanceof NotProxyRequestError) {
    return { status: 400, message: e.message, kind: "client" };
  }
  if (e instanceof PolicyError || e instanceof DestinationRefusedError) {
    return { status: 403, message: e.message, kind: "policy" };
  }
  if (e instanceof DeadlineError) return { status: 408, message: e.message, kind: "client" };
  if (e instanceof StallError) {
    return { status: e.side === "client" ? 408 : 504, message: e.message, kind: "stall" };
  }
  if (e instanceof DnsError || e instanceof UpstreamConnectError || e instanceof UpstreamError) {
    return { status: 502, message: e.message, kind: "upstream" };
  }
  if (e instanceof UpstreamTimeoutError) {
    return { status: 504, message: e.message, kind: "upstream" };
  }
  if (e instanceof ShutdownError) return { status: 503, message: e.message, kind: "internal" };
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { status: 500, message: `internal error: ${message}`, kind: "internal" };
}

/** A short description of an I/O error from Deno (for "what failed" messages). */
export function ioErrorText(e: unknown): string {
  if (e instanceof Deno.errors.ConnectionRefused) return "connection refused";
  if (e instanceof Deno.errors.ConnectionReset) return "connection reset";
  if (e instanceof Deno.errors.BrokenPipe) return "connection closed";
  if (e instanceof Deno.errors.NotConnected) return "not connected";
  if (e instanceof Deno.errors.TimedOut) return "timed out";
  if (e instanceof Error) return e.message.replace(/\s*\(os error \d+\)$/, "");
  return String(e);
}
