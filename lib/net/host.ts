/**
 * Host normalisation shared by the rules engine and the proxy.
 *
 * Both sides of every comparison go through {@linkcode normaliseHost}, so an
 * attacker cannot pick a spelling (`0x7f.1`, `BÜCHER.de.`, `[0:0::1]`) that a
 * rule written in another spelling fails to see.
 *
 * @module
 */

/** A host name or IP literal that cannot be used. */
export class HostError extends Error {
  override name = "HostError";
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * Returns the canonical spelling of a host: lower case, IDN in punycode, no
 * trailing dot, IPv4 in dotted decimal (whatever base or shortening the input
 * used) and IPv6 compressed inside brackets (`[::1]`). An IPv6 literal may be
 * given with or without brackets.
 *
 * The WHATWG URL parser does the heavy lifting because it is what browsers and
 * most HTTP clients use, so we agree with them on what a host means.
 *
 * @throws {HostError} when the input is not a usable host name or IP literal.
 */
export function normaliseHost(input: string): string {
  const hit = normalised.get(input);
  if (hit !== undefined) return hit;
  const host = normaliseUncached(input);
  if (input.length <= 255) {
    if (normalised.size >= NORMALISED_MAX) normalised.clear();
    normalised.set(input, host);
  }
  return host;
}

// A request's host is normalised several times (its URL, its Host header,
// the rules, the destination guard), and it is nearly always one of a few
// names: the URL parser is most of the cost, so answers are remembered.
// Failures are not. A client spraying made-up names only empties the cache.
const normalised = new Map<string, string>();
const NORMALISED_MAX = 1024;

/**
 * `s` in double quotes, escaped as JSON. Errors reach the access log, whose
 * redaction reads the targets in quotes: a raw `"` in `s` (a client's Host
 * header) would close the quote early and leave the rest, a query with a
 * token say, unread.
 */
function quoted(s: string): string {
  return JSON.stringify(s);
}

function normaliseUncached(input: string): string {
  let raw = input.trim();
  if (raw === "") throw new HostError("empty host");
  if (raw.includes(":") && !raw.startsWith("[")) raw = `[${raw}]`;
  // The URL parser would read `[::1]:8443` as the host [::1] and a port, and
  // the port would be silently dropped: a host is only the literal.
  if (raw.startsWith("[") && !raw.endsWith("]")) {
    throw new HostError(`invalid host ${quoted(input)}`);
  }
  if (/[\s/?#@\\%]/.test(raw)) throw new HostError(`invalid character in host ${quoted(input)}`);
  let host: string;
  try {
    host = new URL(`http://${raw}/`).hostname;
  } catch {
    throw new HostError(`invalid host ${quoted(input)}`);
  }
  if (host.startsWith("[")) {
    // An IPv4-mapped IPv6 address reaches the IPv4 host: spell it as that
    // host, or a rule for 10.0.0.1 would not see [::ffff:10.0.0.1].
    const mapped = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(host);
    if (mapped) {
      const hi = parseInt(mapped[1], 16);
      const lo = parseInt(mapped[2], 16);
      return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    }
    return host;
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  if (host === "" || host.length > 253) throw new HostError(`invalid host ${quoted(input)}`);
  for (const label of host.split(".")) {
    if (!LABEL.test(label)) throw new HostError(`invalid host ${quoted(input)}`);
  }
  return host;
}

/** True when `host` (already normalised) is an IPv4 or IPv6 literal. */
export function isIpLiteral(host: string): boolean {
  return host.startsWith("[") || /^\d{1,3}(?:\.\d{1,3}){3}$/.test(host);
}

/** True when `host` (already normalised) is `localhost` or a name under it (RFC 6761: loopback). */
export function isLocalhostName(host: string): boolean {
  return host === "localhost" || host.endsWith(".localhost");
}

/**
 * True when `host` names one machine for certain, without DNS: an IP literal
 * or a localhost name. Rules the operator saves for such a host carry the
 * port, since a rule naming it lifts destination protection, and one answer
 * about port 80 must not open every port of the host's loopback.
 */
export function isFixedAddressHost(host: string): boolean {
  return isIpLiteral(host) || isLocalhostName(host);
}

/** The default port of a scheme, or undefined for schemes we do not proxy. */
export function defaultPort(scheme: string): number | undefined {
  return scheme === "http" ? 80 : scheme === "https" ? 443 : undefined;
}

/**
 * Splits `host[:port]` (the CONNECT target and Host header form) into its
 * normalised host and numeric port. IPv6 literals must be bracketed here.
 *
 * @throws {HostError} on a malformed authority or a port outside 1-65535.
 */
export function parseAuthority(
  authority: string,
  fallbackPort?: number,
): { host: string; port: number } {
  const m = /^(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?$/.exec(authority);
  if (!m) throw new HostError(`invalid authority ${quoted(authority)}`);
  const host = normaliseHost(m[1]);
  const port = m[2] === undefined ? fallbackPort : Number(m[2]);
  if (port === undefined) throw new HostError(`missing port in ${quoted(authority)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new HostError(`invalid port in ${quoted(authority)}`);
  }
  return { host, port };
}

/** Formats host and port back to `host:port`, omitting a scheme's default port. */
export function formatAuthority(host: string, port: number, scheme?: string): string {
  return scheme !== undefined && defaultPort(scheme) === port ? host : `${host}:${port}`;
}
