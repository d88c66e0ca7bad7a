/**
 * Dialling upstreams: resolve, check every address with the destination
 * guard, connect to exactly a checked address.
 *
 * @module
 */

import { isFixedAddressHost, normaliseHost, parseAuthority } from "../net/host.ts";
import { type DestinationGuard, DestinationRefusedError } from "../net/guard.ts";
import type { Resolver } from "../net/resolve.ts";
import { ioErrorText, UpstreamConnectError, UpstreamTimeoutError } from "./errors.ts";
import type { FinalDecision } from "./types.ts";

/** A dialled TCP connection. */
export interface Dialled {
  conn: Deno.TcpConn;
  /** The address dialled. */
  address: string;
  /** The address came from `--resolve`. */
  trusted: boolean;
  /**
   * The address is protected and was dialled under an exemption: reuse this
   * connection only for requests that carry the same exemption.
   */
  exempted: boolean;
}

/**
 * True when the decision lets this request reach protected addresses: it
 * came from a rule naming exactly this host (kind "host" or "url"), and that
 * host is an IP literal or a localhost name, so the rule itself says which
 * protected address is meant.
 *
 * A rule naming a DNS name does not exempt it: its DNS answer can change
 * after the rule was written (DNS rebinding), which would let an "always
 * allow example.com" answer reach 169.254.169.254 or the host's loopback.
 * Point such names at protected addresses with `--resolve` instead.
 */
export function decisionExempts(decision: FinalDecision, host: string): boolean {
  const rule = decision.rule;
  if (decision.action !== "allow" || decision.source !== "rule" || !rule) return false;
  if (rule.kind !== "host" && rule.kind !== "url") return false;
  if (!isFixedAddressHost(host)) return false;
  return ruleHost(rule.pattern, rule.kind) === host;
}

function ruleHost(pattern: string, kind: "host" | "url"): string | undefined {
  try {
    if (kind === "url") {
      const u = new URL(pattern);
      return normaliseHost(u.hostname);
    }
    try {
      return normaliseHost(pattern);
    } catch {
      return parseAuthority(pattern, 1).host;
    }
  } catch {
    return undefined;
  }
}

/** Options of {@linkcode Dialer}. */
export interface DialerOptions {
  resolver: Resolver;
  guard: DestinationGuard;
  /** Per-connection timeout, ms. */
  connectTimeoutMs: number;
}

/** Resolves, checks and connects. */
export class Dialer {
  constructor(readonly options: DialerOptions) {}

  /**
   * Connects to `host:port`. Addresses refused by the guard are skipped;
   * the others are tried in order until one connects.
   *
   * @throws {DnsError}, {DestinationRefusedError} (every address refused),
   *   {UpstreamConnectError}, {UpstreamTimeoutError}.
   */
  async dial(host: string, port: number, exempt: boolean): Promise<Dialled> {
    const { resolver, guard, connectTimeoutMs } = this.options;
    const addresses = await resolver.resolve(host, port);
    let refused: DestinationRefusedError | undefined;
    let lastError: Error | undefined;
    for (const { address, trusted } of addresses) {
      const cls = guard.check(address, port, exempt || trusted);
      if (cls !== undefined) {
        refused ??= new DestinationRefusedError(host, address, cls);
        continue;
      }
      const exempted = guard.check(address, port, false) !== undefined;
      try {
        const conn = await connectWithTimeout(address, port, connectTimeoutMs, host);
        return { conn, address, trusted, exempted };
      } catch (e) {
        lastError = e as Error;
      }
    }
    throw lastError ?? refused!;
  }
}

/**
 * The refusal a dial to `host:port` is certain to meet, when that is known
 * without asking DNS (an IP literal, a `--resolve` name, localhost): every
 * address is one the guard refuses. An intercepted tunnel dials only once a
 * request inside it is allowed, so its CONNECT is refused with this instead
 * of being opened (and logged as allowed) for requests that would all fail.
 */
export async function certainRefusal(
  dialer: Dialer,
  host: string,
  port: number,
  exempt: boolean,
): Promise<DestinationRefusedError | undefined> {
  const { resolver, guard } = dialer.options;
  const local = resolver.mapped(host, port) !== undefined || isFixedAddressHost(host);
  if (!local) return undefined;
  let first: DestinationRefusedError | undefined;
  for (const { address, trusted } of await resolver.resolve(host, port)) {
    const cls = guard.check(address, port, exempt || trusted);
    if (cls === undefined) return undefined;
    first ??= new DestinationRefusedError(host, address, cls);
  }
  return first;
}

async function connectWithTimeout(
  address: string,
  port: number,
  ms: number,
  host: string,
): Promise<Deno.TcpConn> {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort();
  }, ms);
  const where = address === host || `[${address}]` === host
    ? `${host}:${port}`
    : `${host}:${port} (${address})`;
  try {
    const conn = await Deno.connect({ hostname: address, port, signal: ac.signal });
    conn.setNoDelay(true);
    return conn;
  } catch (e) {
    if (timedOut) {
      throw new UpstreamTimeoutError(`connecting to ${where} timed out after ${ms} ms`);
    }
    throw new UpstreamConnectError(`cannot connect to ${where}: ${ioErrorText(e)}`);
  } finally {
    clearTimeout(timer);
  }
}
