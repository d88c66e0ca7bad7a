/**
 * Request targets: absolute-form URLs sent to a proxy, and the path
 * normalisation that makes "what was decided" and "what is forwarded" the
 * same string.
 *
 * A URL rule like `deny http://x.test/admin` must not be dodged by
 * `/./admin`, `/a/../admin` or `/%61dmin`. So the proxy normalises the
 * path once (RFC 3986 6.2.2: dot segments removed, percent-encoded
 * unreserved characters decoded, percent-escapes upper-cased), decides on
 * the result, and forwards exactly that.
 *
 * @module
 */

import { defaultPort, formatAuthority, HostError, parseAuthority } from "./host.ts";

/** A request target that is not acceptable. */
export class TargetError extends Error {
  override name = "TargetError";
}

/** A parsed absolute-form target. */
export interface AbsoluteTarget {
  scheme: "http" | "https";
  /** Normalised host (`normaliseHost`). */
  host: string;
  port: number;
  /** Normalised path and query (see {@linkcode normalisePath}). */
  path: string;
}

/**
 * Parses an absolute-form request target (`http://host[:port]/path?query`).
 *
 * @throws {TargetError} on another scheme, userinfo (`http://a@b/`), a
 *   fragment, or a bad host, port or path.
 */
export function parseAbsoluteForm(target: string): AbsoluteTarget {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(target);
  if (!m) throw new TargetError(`not an absolute URL: ${JSON.stringify(short(target))}`);
  const scheme = m[1].toLowerCase();
  if (scheme !== "http" && scheme !== "https") {
    throw new TargetError(`unsupported URL scheme "${scheme}"`);
  }
  const authority = m[2];
  if (authority.includes("@")) {
    throw new TargetError("credentials in the URL (user@host) are not allowed");
  }
  let host: string;
  let port: number;
  try {
    ({ host, port } = authorityOf(authority, defaultPort(scheme)));
  } catch (e) {
    throw new TargetError(e instanceof HostError ? e.message : `invalid host in URL`);
  }
  const rest = m[3];
  const path = normalisePath(rest === "" ? "/" : rest.startsWith("?") ? "/" + rest : rest);
  return { scheme, host, port, path };
}

const authorityCache = new Map<string, { host: string; port: number } | HostError>();
/** A 253-character name, a port, and room for brackets and a userinfo nobody should send. */
const MAX_CACHED_AUTHORITY = 300;

/**
 * `parseAuthority` with a small memo: a proxy sees the same few hosts over
 * and over, and normalising one runs the WHATWG URL parser.
 *
 * @throws {HostError} as `parseAuthority` does.
 */
export function authorityOf(
  authority: string,
  fallbackPort?: number,
): { host: string; port: number } {
  const key = `${fallbackPort ?? ""} ${authority}`;
  let v = authorityCache.get(key);
  if (v === undefined) {
    try {
      v = parseAuthority(authority, fallbackPort);
    } catch (e) {
      if (!(e instanceof HostError)) throw e;
      v = e;
    }
    // Only what can be a host and port: a 60 KiB Host header per entry
    // would make the memo hold 60 MiB.
    if (authority.length <= MAX_CACHED_AUTHORITY) {
      if (authorityCache.size >= 1024) authorityCache.clear();
      authorityCache.set(key, v);
    }
  }
  if (v instanceof HostError) throw v;
  return v;
}

/** Entries in the memo of {@linkcode authorityOf} (for tests). */
export function cachedAuthorities(): number {
  return authorityCache.size;
}

const UNRESERVED = /%([0-9A-Fa-f]{2})/g;

/**
 * `s` with every `%` that does not start an escape (two hex digits) written
 * as `%25`. Decoding escapes next to a stray `%` would otherwise make new
 * ones: `%%32e` would become `%2e`, a dot that was not there when the dot
 * segments were resolved, and normalising again would change the target.
 */
export function escapeStrayPercent(s: string): string {
  return s.includes("%") ? s.replace(/%(?![0-9A-Fa-f]{2})/g, "%25") : s;
}

/**
 * Normalises an origin-form target (`/path?query`): dot segments removed
 * (also percent-encoded ones), unreserved characters decoded, remaining
 * percent-escapes upper-cased, a `%` that starts no escape written `%25`,
 * characters that are not allowed in a URL percent-encoded (WHATWG URL
 * rules, as browsers do). Normalising the result again changes nothing.
 *
 * @throws {TargetError} when it does not start with "/", contains a fragment
 *   or a backslash (servers disagree on what it means), or is not a URL.
 */
export function normalisePath(raw: string): string {
  if (!raw.startsWith("/")) throw new TargetError(`request path must start with "/"`);
  if (raw.includes("#")) throw new TargetError("fragment (#) in request target");
  if (raw.includes("\\")) throw new TargetError("backslash in request target");
  // Fast path: nothing to normalise in the common case.
  if (!/%|\/\.|[^\x21-\x7e]|["<>`{}^|]/.test(raw) && !raw.includes("'")) return raw;
  let url: URL;
  try {
    // Concatenate, never resolve relative to a base: "//evil.test/x" is a path here.
    url = new URL("http://h" + escapeStrayPercent(raw));
  } catch {
    throw new TargetError(`invalid request target ${JSON.stringify(short(raw))}`);
  }
  if (url.host !== "h") {
    throw new TargetError(`invalid request target ${JSON.stringify(short(raw))}`);
  }
  return decodeUnreserved(url.pathname) + decodeUnreserved(url.search);
}

function decodeUnreserved(s: string): string {
  if (!s.includes("%")) return s;
  return s.replace(UNRESERVED, (_all, hex: string) => {
    const c = parseInt(hex, 16);
    const ch = String.fromCharCode(c);
    return /[A-Za-z0-9\-._~]/.test(ch) ? ch : "%" + hex.toUpperCase();
  });
}

/** `scheme://authority/path` with the default port omitted. */
export function formatUrl(scheme: string, host: string, port: number, path: string): string {
  return `${scheme}://${formatAuthority(host, port, scheme)}${path}`;
}

function short(s: string): string {
  return s.length > 100 ? s.slice(0, 100) + "..." : s;
}
