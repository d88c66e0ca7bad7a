/**
 * Message body framing (RFC 9112 6) and the hop-by-hop rules a proxy applies
 * when it forwards a head.
 *
 * Requests are judged strictly, because a request whose length two parsers
 * see differently is how request smuggling works. Responses come from a
 * server the operator allowed; they are judged strictly enough that we never
 * misframe what we send to the client.
 *
 * @module
 */

import { HttpParseError } from "./errors.ts";
import { type HeaderList, listTokens } from "./headers.ts";
import type { RequestHead, ResponseHead } from "./head.ts";

/** How a message body is delimited. */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

export const NO_BODY: BodyFraming = Object.freeze({ kind: "none" });
const CHUNKED: BodyFraming = Object.freeze({ kind: "chunked" });
const CLOSE: BodyFraming = Object.freeze({ kind: "close" });

const DIGITS = /^\d{1,15}$/;

/**
 * The body framing of a request.
 * @throws {HttpParseError} 400 on Transfer-Encoding other than exactly
 *   `chunked`, Transfer-Encoding in HTTP/1.0, Transfer-Encoding together with
 *   Content-Length, more than one Content-Length, a value that is not a
 *   plain decimal number, or a framing header spelled with `_`.
 */
export function requestFraming(head: RequestHead): BodyFraming {
  const h = head.headers;
  refuseFramingLookalikes(h);
  const te = h.getAll("transfer-encoding");
  const clCount = h.count("content-length");
  if (te.length > 0) {
    if (head.minor === 0) throw new HttpParseError("Transfer-Encoding in an HTTP/1.0 request");
    if (clCount > 0) throw new HttpParseError("both Transfer-Encoding and Content-Length");
    const codings = listTokens(te);
    if (te.length !== 1 || codings.length !== 1 || codings[0] !== "chunked") {
      throw new HttpParseError(`unsupported Transfer-Encoding ${JSON.stringify(te.join(", "))}`);
    }
    return CHUNKED;
  }
  if (clCount === 0) return NO_BODY;
  if (clCount > 1) throw new HttpParseError("more than one Content-Length");
  const v = h.get("content-length")!;
  if (!DIGITS.test(v)) throw new HttpParseError(`invalid Content-Length ${JSON.stringify(v)}`);
  return { kind: "length", length: Number(v) };
}

/**
 * Refuses `Transfer_Encoding` and `Content_Length` (any case). Servers that
 * map header names to CGI-style variables (`HTTP_TRANSFER_ENCODING`: Puma,
 * older gunicorn) read them as the framing headers we did not see, so the
 * body would end where we do not think it ends.
 * @throws {HttpParseError} 400
 */
function refuseFramingLookalikes(h: HeaderList): void {
  for (const name of h.lower) {
    if ((name.length !== 14 && name.length !== 17) || !name.includes("_")) continue;
    const dashed = name.replaceAll("_", "-");
    if (dashed === "content-length" || dashed === "transfer-encoding") {
      throw new HttpParseError(
        `header ${JSON.stringify(name)} would be read as ${dashed} by some servers`,
      );
    }
  }
}

/**
 * The body framing of a response to a request with `method`.
 * @throws {HttpParseError} 502 on an unsupported transfer coding or
 *   conflicting Content-Length values.
 */
export function responseFraming(head: ResponseHead, method: string): BodyFraming {
  const s = head.status;
  if (method === "HEAD" || s < 200 || s === 204 || s === 304) return NO_BODY;
  const h = head.headers;
  const te = h.getAll("transfer-encoding");
  if (te.length > 0) {
    const codings = listTokens(te);
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw new HttpParseError(
        `upstream used unsupported Transfer-Encoding ${JSON.stringify(te.join(", "))}`,
        502,
      );
    }
    return CHUNKED; // Transfer-Encoding overrides Content-Length (RFC 9112 6.3)
  }
  const length = responseContentLength(h);
  return length === undefined ? CLOSE : { kind: "length", length };
}

/**
 * The Content-Length of a response, tolerating identical repeated values
 * (`42, 42`) as RFC 9110 8.6 allows; undefined when absent.
 * @throws {HttpParseError} 502 on differing or malformed values.
 */
export function responseContentLength(h: HeaderList): number | undefined {
  const values = h.getAll("content-length");
  if (values.length === 0) return undefined;
  let length: number | undefined;
  for (const v of values) {
    for (const part of v.split(",")) {
      const p = part.trim();
      if (!DIGITS.test(p)) {
        throw new HttpParseError(`upstream sent invalid Content-Length ${JSON.stringify(v)}`, 502);
      }
      const n = Number(p);
      if (length !== undefined && n !== length) {
        throw new HttpParseError("upstream sent conflicting Content-Length values", 502);
      }
      length = n;
    }
  }
  return length;
}

/**
 * Fields that describe one connection and are never forwarded as received
 * (RFC 9110 7.6.1), plus the framing fields the proxy writes itself.
 */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
]);

/**
 * For requests the proxy also writes Host itself (from the URL), and drops
 * the fields that make some servers (IIS's URL Rewrite, Symfony, Zend) serve
 * another path than the request line's: a URL rule decided that path.
 */
const HOP_BY_HOP_REQUEST = new Set([...HOP_BY_HOP, "host", "x-original-url", "x-rewrite-url"]);

/**
 * Fields a `Connection` header may not remove: the proxy sets them itself,
 * and letting a client strip them (`Connection: Content-Length`) would make
 * the upstream frame the request differently than we did.
 */
const NOT_NOMINATABLE = new Set(["host", "content-length", "transfer-encoding"]);

/**
 * Lower-case names of the fields to drop when forwarding: the fixed
 * hop-by-hop set plus those the Connection header names. For a request
 * (`request` true) Host is dropped too: the proxy writes it from the URL.
 */
export function hopByHop(h: HeaderList, request: boolean): Set<string> {
  const base = request ? HOP_BY_HOP_REQUEST : HOP_BY_HOP;
  const conn = h.getAll("connection");
  if (conn.length === 0) return base;
  const drop = new Set(base);
  for (const t of listTokens(conn)) if (!NOT_NOMINATABLE.has(t)) drop.add(t);
  return drop;
}

/** The Connection header's tokens, lower-cased. */
export function connectionTokens(h: HeaderList): string[] {
  return listTokens(h.getAll("connection"));
}

/** True when the client wants its connection kept open after this exchange. */
export function clientKeepAlive(head: RequestHead): boolean {
  const tokens = connectionTokens(head.headers);
  if (tokens.includes("close")) return false;
  if (head.minor === 1) return true;
  return tokens.includes("keep-alive");
}

/**
 * True when the server allows another request on its connection. Never after
 * an HTTP/1.0 response with Transfer-Encoding: its framing is faulty (RFC 9112
 * 6.1), and the bytes after what was read as its body may be the rest of it.
 * Nor after one with both Transfer-Encoding and Content-Length: it is read as
 * chunked, but a sender that meant the Content-Length (or a response split by
 * a third party) leaves bytes that the next request would take for its answer
 * (RFC 9112 6.3: "ought to be handled as an error").
 */
export function serverKeepAlive(head: ResponseHead): boolean {
  const h = head.headers;
  if (h.has("transfer-encoding") && (head.minor === 0 || h.has("content-length"))) return false;
  const tokens = connectionTokens(head.headers);
  if (tokens.includes("close")) return false;
  return head.minor === 1 || tokens.includes("keep-alive");
}

/**
 * The protocol a request asks to switch to (`Upgrade` named in
 * `Connection`), or undefined.
 */
export function upgradeRequested(head: RequestHead): string | undefined {
  if (head.minor !== 1) return undefined;
  const up = head.headers.get("upgrade");
  if (up === undefined || up === "") return undefined;
  return connectionTokens(head.headers).includes("upgrade") ? up : undefined;
}

/**
 * Writes the fields of `h` that are not in `drop` as `Name: value\r\n` lines.
 */
export function fieldLines(h: HeaderList, drop: Set<string>): string {
  let s = "";
  const { names, lower, values } = h;
  for (let i = 0; i < names.length; i++) {
    if (!drop.has(lower[i])) s += names[i] + ": " + values[i] + "\r\n";
  }
  return s;
}
