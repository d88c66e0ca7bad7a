/**
 * Rule patterns and their canonical forms.
 *
 * A pattern is one of:
 * - `*`: every request (optionally `*:PORT`);
 * - an exact host, `github.com`, an IPv4 literal `10.0.0.1` or a bracketed IPv6
 *   literal `[::1]`, optionally with a port (`example.com:8443`);
 * - a wildcard `*.github.com`: every subdomain at any depth, never the apex and
 *   never a plain string suffix (`evilgithub.com` does not match);
 * - an exact URL `http(s)://host[:port]/path[?query]`.
 *
 * Hosts go through {@linkcode normaliseHost}; URL paths and queries go through
 * {@linkcode canonicalPathQuery}. Requests are canonicalised by the very same
 * functions, so a spelling trick cannot make a request miss a deny rule. An
 * allow URL rule is compared in the form the proxy forwards instead
 * ({@linkcode forwardedPathQuery}), so it allows exactly what it names.
 *
 * @module
 */

import { defaultPort, HostError, isIpLiteral, normaliseHost } from "../net/host.ts";
import { escapeStrayPercent, normalisePath } from "../net/url.ts";
import { RuleError } from "./errors.ts";

/** A pattern parsed into its canonical parts. */
export type ParsedPattern =
  | { kind: "any"; port?: number }
  | { kind: "host"; host: string; port?: number }
  | { kind: "wildcard"; suffix: string; port?: number }
  | {
    kind: "url";
    scheme: "http" | "https";
    host: string;
    /** Always present: the scheme's default port when the URL has none. */
    port: number;
    /** Canonical path, see {@linkcode canonicalPathQuery}. */
    path: string;
    /** Canonical query without "?", undefined when absent or empty. */
    query?: string;
    /**
     * Path and query exactly as the proxy would forward a request for this
     * URL (`normalisePath`, lib/net/url.ts); what an allow URL rule is
     * compared with. Undefined when no request is ever forwarded that way
     * (a backslash in the path: such requests are refused).
     */
    forwarded?: string;
  };

const URL_START = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/is;
const HOST_PORT = /^(\[[^\]]*\]|[^:\[\]]*)(?::([^:]*))?$/;

/**
 * Parses and canonicalises a pattern.
 * @throws {RuleError} with a message naming the pattern and what is wrong.
 */
export function parsePattern(pattern: string): ParsedPattern {
  const fail = (why: string): never => {
    throw new RuleError(`invalid pattern "${pattern}": ${why}`, "pattern");
  };
  const p = pattern.trim();
  if (p === "") return fail("the pattern is empty");
  if (p === "*") return { kind: "any" };

  const url = URL_START.exec(p);
  if (url) return parseUrlPattern(url, fail);
  if (/^[a-z][a-z0-9+.-]*:\/(?!\/)/i.test(p)) {
    return fail(`a URL pattern starts with "http://" or "https://"`);
  }
  if (/[/?#]/.test(p)) {
    return fail(`a URL pattern needs a scheme, like "https://${p}"`);
  }
  if (p.includes("@")) return fail(`"@" is not allowed in a host`);

  // A bare IPv6 literal (two or more colons, no brackets) has no port.
  let hostPart: string;
  let portPart: string | undefined;
  if (!p.startsWith("[") && (p.match(/:/g)?.length ?? 0) >= 2) {
    hostPart = p;
  } else {
    const m = HOST_PORT.exec(p);
    if (!m) return fail('expected a host, optionally followed by ":PORT"');
    hostPart = m[1];
    portPart = m[2];
  }
  const port = portPart === undefined ? undefined : parsePort(portPart, fail);

  if (hostPart === "*") return { kind: "any", port };
  if (hostPart.startsWith("*.")) {
    const rest = hostPart.slice(2);
    if (rest.includes("*")) {
      return fail(`only one "*" is allowed, as the whole first label, like "*.example.com"`);
    }
    const suffix = host(rest, fail);
    if (isIpLiteral(suffix)) return fail("a wildcard cannot be applied to an IP address");
    return { kind: "wildcard", suffix, port };
  }
  if (hostPart.startsWith("*")) {
    return fail(`a wildcard is "*." followed by a domain, like "*.${hostPart.slice(1)}"`);
  }
  if (hostPart.includes("*")) {
    return fail(`"*" is only allowed as the whole first label, like "*.example.com"`);
  }
  return { kind: "host", host: host(hostPart, fail), port };
}

function parseUrlPattern(m: RegExpExecArray, fail: (why: string) => never): ParsedPattern {
  const scheme = m[1].toLowerCase() as "http" | "https";
  const authority = m[2];
  const rest = m[3];
  if (scheme !== "http" && scheme !== "https") {
    return fail(`only http:// and https:// URLs can be rules`);
  }
  if (authority === "") return fail("the URL has no host");
  if (authority.includes("@")) return fail("a URL pattern cannot contain a user name or password");
  if (rest.includes("#")) {
    return fail("a URL pattern cannot contain a #fragment (clients never send it)");
  }
  if (authority.startsWith("*") || authority.includes("*.")) {
    return fail(
      `wildcards are not allowed in URL patterns; use a host pattern like "${authority}"`,
    );
  }
  const hp = HOST_PORT.exec(authority);
  if (!hp) return fail("expected scheme://host[:port]/path");
  const h = host(hp[1], fail);
  let port: number;
  if (hp[2] === undefined) port = defaultPort(scheme)!;
  else if (hp[2] === "") return fail(`the port after ":" is missing`);
  else port = parsePort(hp[2], fail);
  // The URL a client requests for the pattern, read the way the proxy reads
  // requests: `https://h/x//../admin` is `/x/admin` (RFC 3986 5.2.4, as
  // clients and the proxy resolve it), not the `/admin` of merging slashes
  // before resolving dot segments, which is for reading a path a server got.
  const forwarded = forwardedPathQuery(rest);
  const { path, query } = canonicalPathQuery(forwarded ?? rest);
  return { kind: "url", scheme, host: h, port, path, query, forwarded };
}

function host(raw: string, fail: (why: string) => never): string {
  try {
    return normaliseHost(raw);
  } catch (e) {
    if (e instanceof HostError) return fail(`"${raw}" is not a valid host name or IP address`);
    throw e;
  }
}

function parsePort(raw: string, fail: (why: string) => never): number {
  if (!/^\d{1,5}$/.test(raw)) return fail(`"${raw}" is not a port number`);
  const port = Number(raw);
  if (port < 1 || port > 65535) return fail(`port ${raw} is outside 1-65535`);
  return port;
}

/**
 * A string that is equal for two patterns exactly when they mean the same
 * thing (`GitHub.com.` and `github.com`; `https://h:443/%7e` and `https://h/~`).
 */
export function patternIdentity(p: ParsedPattern): string {
  const port = (n?: number) => n === undefined ? "" : `:${n}`;
  switch (p.kind) {
    case "any":
      return `*${port(p.port)}`;
    case "host":
      return `${p.host}${port(p.port)}`;
    case "wildcard":
      return `*.${p.suffix}${port(p.port)}`;
    case "url":
      return `${p.scheme}://${p.host}:${p.port}${p.path}${
        p.query === undefined ? "" : `?${p.query}`
      }`;
  }
}

/**
 * The path and query the proxy forwards for a URL whose text after the
 * authority is `rest` (empty, `/...` or `?...`): the same steps as
 * `parseAbsoluteForm`. Undefined when the proxy would refuse the request.
 */
export function forwardedPathQuery(rest: string): string | undefined {
  try {
    return normalisePath(rest === "" ? "/" : rest.startsWith("?") ? "/" + rest : rest);
  } catch {
    return undefined;
  }
}

/** Characters that keep their escape in a path: decoding them would change its meaning. */
const PATH_KEEP_ESCAPED = "/?#%\\";
/** Same for a query: its separators. */
const QUERY_KEEP_ESCAPED = "&=+;#%";

/**
 * Canonical form of a request target's path and query (the part after the
 * authority), used for both URL rules and requests. It keeps the case of
 * letters (deny URL rules also compare {@linkcode loosePath}). The steps make every spelling that common
 * servers treat as the same resource compare equal, so a `deny-url` cannot be
 * dodged with another spelling:
 *
 * 0. a `%` that starts no escape is `%25` (so decoding makes no new escape);
 * 1. the `#fragment` is dropped (never sent, but harmless to accept);
 * 2. runs of `/` and `\` collapse to one `/` (nginx `merge_slashes`), before
 *    dot segments are resolved, as nginx does;
 * 3. the WHATWG URL parser resolves `.`/`..` segments, including the `%2e`
 *    spellings, and percent-encodes what must be;
 * 4. escapes of printable ASCII are decoded (`%7E` -> `~`, `%41` -> `A`),
 *    except those that change meaning (`%2F`, `%3F`, `%25`, `%5C` in the path;
 *    `%26`, `%3D`, `%2B`, `%3B` in the query); other escapes are upper-cased;
 * 5. in the query, `+` means a space and becomes `%20`;
 * 6. an empty query (a trailing `?`) is the same as none.
 */
export function canonicalPathQuery(raw: string): { path: string; query?: string } {
  let s = escapeStrayPercent(raw);
  const hash = s.indexOf("#");
  if (hash >= 0) s = s.slice(0, hash);
  const q = s.indexOf("?");
  let path = q >= 0 ? s.slice(0, q) : s;
  const rawQuery = q >= 0 ? s.slice(q + 1) : "";
  path = path.replace(/[/\\]+/g, "/");
  if (!path.startsWith("/")) path = `/${path}`;
  const url = new URL(rawQuery === "" ? path : `${path}?${rawQuery}`, "http://canonical.invalid");
  const canonPath = normaliseEscapes(url.pathname.replace(/\/{2,}/g, "/"), PATH_KEEP_ESCAPED);
  const search = url.search.slice(1);
  if (search === "") return { path: canonPath };
  const canonQuery = normaliseEscapes(search, QUERY_KEEP_ESCAPED).replaceAll("+", "%20");
  return { path: canonPath, query: canonQuery };
}

/**
 * The readings of `raw` that servers have when they decode `%2F` or `%5C` in
 * its path to a separator before merging slashes and resolving dot segments;
 * empty when its path has neither. nginx and Python's http.server (on Unix)
 * decode `%2F` to `/` but `%5C` to a backslash that separates nothing, so to
 * them `/a%5Cb/..%2Fadmin` is `/admin`; servers on Windows read both as
 * separators; some read `%5C` as one and keep `%2F`. A deny URL rule is
 * checked against each reading (see `RuleSet`): one reading with both decoded
 * would be `/a/admin` there, and the deny dodged.
 */
export function slashReadings(raw: string): string[] {
  const end = raw.search(/[?#]/);
  const path = end < 0 ? raw : raw.slice(0, end);
  const slash = /%2f/i.test(path);
  const back = /%5c/i.test(path);
  if (!slash && !back) return [];
  const rest = end < 0 ? "" : raw.slice(end);
  const out: string[] = [];
  if (slash) out.push(path.replace(/%2f/gi, "/") + rest);
  if (back) out.push(path.replace(/%5c/gi, "/") + rest);
  if (slash && back) out.push(path.replace(/%(?:2f|5c)/gi, "/") + rest);
  return out;
}

/** Trailing dots and escaped white space of a segment (see {@linkcode loosePath}). */
const TRAILING_DOTS_AND_SPACE = /(?:\.|%(?:09|0A|0B|0C|0D|20))+$/;

/**
 * The loosest reading of a canonical path (from {@linkcode canonicalPathQuery})
 * that common servers other than nginx serve as one resource, for deny URL
 * rules only (they may over-match; an allow never uses it):
 *
 * - a `;param` ends its segment (Tomcat, Jetty and Spring strip path
 *   parameters before resolving dot segments, so `/x/..;/admin` is `/admin`
 *   and `/admin;jsessionid=1` is `/admin`), and so does `%00` (C strings);
 * - trailing dots and white space of a segment are dropped (Windows, IIS:
 *   `/admin.` and `/admin%20` open `admin`; Spring's `trimTokens`);
 * - dot segments are then resolved and runs of `/` merged again;
 * - trailing slashes are dropped (Express, Rails, ASP.NET Core, Laravel and
 *   older Spring route `/admin/` as `/admin`; Python's http.server serves the
 *   file `admin` for `/admin%2F`);
 * - letters are lower-cased (Express routes and IIS paths ignore case).
 *
 * Applying it again changes nothing.
 */
export function loosePath(path: string): string {
  const segments = path.split("/").map((segment) => {
    const end = segment.search(/;|%00/);
    const s = end < 0 ? segment : segment.slice(0, end);
    const trimmed = s.replace(TRAILING_DOTS_AND_SPACE, "");
    // A segment of only dots stays a dot segment (`..%20` is `..`).
    return trimmed === "" ? s.replace(/%(?:09|0A|0B|0C|0D|20)/g, "") : trimmed;
  });
  // Slashes merged before dot segments are resolved, as nginx and Tomcat do
  // (`/a/;x/../b` is `/b`); the dot segments that stripping made (`..;` is
  // `..`) are resolved by the URL parser. The path is canonical already, so
  // the parser has nothing else to change. Never resolved against a base:
  // `//admin` is a path here, not a host.
  const joined = `/${segments.join("/")}`.replace(/\/{2,}/g, "/");
  const resolved = new URL(`http://canonical.invalid${joined}`).pathname;
  const noTrailing = resolved.length > 1 ? resolved.replace(/\/+$/, "") : resolved;
  return (noTrailing === "" ? "/" : noTrailing).toLowerCase();
}

function normaliseEscapes(s: string, keep: string): string {
  return s.replace(/%([0-9A-Fa-f]{2})/g, (_m, hex: string) => {
    const code = parseInt(hex, 16);
    const ch = String.fromCharCode(code);
    return code > 0x20 && code < 0x7f && !keep.includes(ch) ? ch : `%${hex.toUpperCase()}`;
  });
}
