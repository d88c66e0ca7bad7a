/**
 * The proxy's TLS interceptor: decrypts allowed CONNECT tunnels with a leaf
 * certificate from the local CA, and connects to origins with verified TLS.
 * Implements {@linkcode TunnelInterceptor} from lib/proxy/types.ts.
 *
 * @module
 */

import type { InterceptedTunnel, InterceptRequest, TunnelInterceptor } from "../proxy/types.ts";
import { HostError, normaliseHost } from "../net/host.ts";
import { type CaFiles, type CertificateAuthority, ensureCa } from "./ca.ts";
import { LeafIssuer } from "./leaf.ts";
import { ClientTlsError, terminateTls } from "./terminate.ts";
import { connectUpstreamTls, loadUpstreamCaCerts, useSystemRootStore } from "./upstream.ts";

/** The tunnel cannot be intercepted; the message (with a hint) goes to the tunnel's log record. */
export class InterceptError extends Error {
  override name = "InterceptError";
  /**
   * @param rejectedCertificate true when the client refused netmonitor's
   *   certificate (not trusting the CA, or pinning).
   */
  constructor(message: string, readonly rejectedCertificate = false, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Hosts whose tunnels are relayed without decryption. Entries are host names
 * or IPs (exact match after normalisation) or `*.example.com` (any subdomain
 * of example.com, not example.com itself, as in the rules file).
 */
export class PassthroughList {
  readonly #exact = new Set<string>();
  readonly #suffixes: string[] = [];

  /** @throws {HostError} `invalid --passthrough "x": ...` for an unusable entry. */
  constructor(entries: Iterable<string> = []) {
    for (const entry of entries) this.add(entry);
  }

  /** Adds one entry. @throws {HostError} for an unusable entry. */
  add(entry: string): void {
    try {
      if (entry.startsWith("*.")) this.#suffixes.push("." + normaliseHost(entry.slice(2)));
      else this.#exact.add(normaliseHost(entry));
    } catch (e) {
      throw new HostError(
        `invalid --passthrough "${entry}": ${e instanceof Error ? e.message : e}`,
      );
    }
  }

  /** True when tunnels to `host` (normalised) are relayed untouched. */
  matches(host: string): boolean {
    return this.#exact.has(host) || this.#suffixes.some((s) => host.endsWith(s));
  }

  get size(): number {
    return this.#exact.size + this.#suffixes.length;
  }
}

/** Options for {@linkcode createInterceptor}. */
export interface InterceptorOptions {
  /** The CA that signs leaf certificates. */
  ca: CertificateAuthority;
  /** Leaf issuer to use. Default: a new one for `ca` (generates the shared leaf key). */
  leaves?: LeafIssuer;
  /** Extra trusted roots for origins, PEM (`--upstream-ca`); added to the root store. */
  upstreamCaCerts?: string[];
  /**
   * Tunnels not to decrypt: a list (`--passthrough`), or a predicate (e.g.
   * one that also consults the rules file). Default: none.
   */
  passthrough?: PassthroughList | ((host: string, port: number) => boolean);
  /** Client and upstream TLS handshakes must finish within this time. Default: 10000 ms. */
  handshakeTimeoutMs?: number;
}

/**
 * Creates the interceptor the proxy calls for each allowed CONNECT tunnel.
 *
 * - Passthrough hosts: `intercepts()` says false and `intercept()` resolves
 *   `null` (the proxy relays bytes).
 * - A client whose ALPN offers exclude http/1.1 (h2-only, gRPC): rejects
 *   with a hint to use passthrough, since netmonitor speaks HTTP/1.1 inside.
 * - Otherwise: TLS handshake with the client using a leaf for the CONNECT
 *   host; a client that rejects the certificate gives an
 *   {@linkcode InterceptError} with `rejectedCertificate` and the hint
 *   `add --passthrough HOST`.
 * - `connectUpstream` verifies the origin's certificate for the tunnel host
 *   and rejects with an `UpstreamTlsError` (message = 502 body).
 */
export async function createInterceptor(options: InterceptorOptions): Promise<TunnelInterceptor> {
  const leaves = options.leaves ?? await LeafIssuer.create(options.ca);
  const passthrough = options.passthrough;
  const isPassthrough = passthrough === undefined
    ? () => false
    : typeof passthrough === "function"
    ? passthrough
    : (host: string) => passthrough.matches(host);
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
  const upstream = { caCerts: options.upstreamCaCerts, handshakeTimeoutMs };
  const connectUpstream: InterceptedTunnel["connectUpstream"] = (tcp, host, port) =>
    connectUpstreamTls(tcp, host, port, upstream);

  return {
    intercepts: (host, port) => !isPassthrough(host, port),
    async intercept(req: InterceptRequest): Promise<InterceptedTunnel | null> {
      if (isPassthrough(req.host, req.port)) return null;
      const offers = req.hello.alpn;
      if (offers.length > 0 && !offers.includes("http/1.1")) {
        closeQuietly(req.conn);
        throw new InterceptError(
          `client offers only ${
            describeOffers(offers)
          } by ALPN; netmonitor intercepts HTTP/1.1 only: ` +
            `add --passthrough ${req.host} ${orRule(req.host)} to relay it undecrypted`,
        );
      }
      let leaf;
      try {
        leaf = await leaves.get(req.host);
      } catch (e) {
        closeQuietly(req.conn);
        throw new InterceptError(
          `cannot issue a certificate for ${req.host}: ${e instanceof Error ? e.message : e}`,
          false,
          { cause: e },
        );
      }
      try {
        const client = await terminateTls(req.conn, req.prefix, {
          leaf,
          signal: req.signal,
          handshakeTimeoutMs,
        });
        return { client, connectUpstream };
      } catch (e) {
        if (e instanceof ClientTlsError && e.rejectedCertificate) {
          throw new InterceptError(
            `${e.message}; trust the netmonitor CA (netmonitor ca path) ` +
              `or add --passthrough ${req.host} ${orRule(req.host)}`,
            true,
            { cause: e },
          );
        }
        if (e instanceof ClientTlsError && e.failure === "closed") {
          throw new InterceptError(
            `${e.message}; if the client pins certificates, add --passthrough ${req.host} ` +
              orRule(req.host),
            false,
            { cause: e },
          );
        }
        throw new InterceptError(e instanceof Error ? e.message : String(e), false, { cause: e });
      }
    },
  };
}

/** Options for {@linkcode prepareInterception}. */
export interface PrepareInterceptionOptions {
  /** Where the CA lives (`dataPaths()`'s caCert and caKey). */
  files: CaFiles;
  /** `--upstream-ca` files. */
  upstreamCaFiles?: readonly string[];
  /** `--passthrough` entries. */
  passthrough?: readonly string[];
  /** Extra passthrough test, e.g. from the rules file; OR-ed with `passthrough`. */
  isPassthrough?: (host: string, port: number) => boolean;
}

/** What {@linkcode prepareInterception} set up. */
export interface PreparedInterception {
  interceptor: TunnelInterceptor;
  ca: CertificateAuthority;
  /** True when this call created the CA (first run): tell the user to trust it. */
  created: boolean;
  /** The root store Deno verifies origins with, e.g. `system,mozilla`. */
  rootStore: string;
}

/**
 * Everything `netmonitor run` needs for interception, in one call, before
 * the proxy starts: switches Deno to the system + Mozilla root store (must
 * precede the first TLS connection), loads or creates the CA, reads the
 * `--upstream-ca` files, validates `--passthrough`, generates the leaf key.
 *
 * @throws {import("./ca.ts").CaError} for an unusable CA,
 *   {@linkcode HostError} for a bad `--passthrough`, Error for a bad `--upstream-ca`.
 */
export async function prepareInterception(
  options: PrepareInterceptionOptions,
): Promise<PreparedInterception> {
  const rootStore = useSystemRootStore();
  const list = new PassthroughList(options.passthrough ?? []);
  const upstreamCaCerts = await loadUpstreamCaCerts(options.upstreamCaFiles ?? []);
  const { ca, created } = await ensureCa(options.files);
  const extra = options.isPassthrough;
  const interceptor = await createInterceptor({
    ca,
    upstreamCaCerts: upstreamCaCerts.length > 0 ? upstreamCaCerts : undefined,
    passthrough: extra ? (host, port) => list.matches(host) || extra(host, port) : list,
  });
  return { interceptor, ca, created, rootStore };
}

/** The rules-file way to the same passthrough, for hints. */
function orRule(host: string): string {
  return `(or the rule: netmonitor rules add ${host} passthrough)`;
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}

/**
 * ALPN names as the record shows them: the client picks them (up to 64 KiB of
 * bytes), so at most a few, each quoted if odd and cut short.
 */
export function describeOffers(offers: string[]): string {
  const shown = offers.slice(0, 4).map((o) =>
    /^[\x21-\x7e]{1,32}$/.test(o) ? o : JSON.stringify(o.length > 32 ? o.slice(0, 32) + "..." : o)
  );
  const more = offers.length - shown.length;
  return shown.join(", ") + (more > 0 ? ` (and ${more} more)` : "");
}
