/**
 * Responses the proxy writes itself: denials and errors.
 * @module
 */

const encoder = new TextEncoder();

const REASONS: Record<number, string> = {
  200: "Connection established",
  400: "Bad Request",
  403: "Forbidden",
  408: "Request Timeout",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** The reason phrase for a status the proxy writes. */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Error";
}

/** Options of {@linkcode proxyResponse}. */
export interface ProxyResponseOptions {
  /** Ask the client to close (and the proxy will). */
  close: boolean;
  /** Value of `X-Netmonitor-Decision`, for denials. */
  decision?: string;
  /** HEAD requests get the headers only. */
  head?: boolean;
  /** `Retry-After` in seconds, for 503s. */
  retryAfter?: number;
}

/** A complete plain-text response; `body` gets a final newline. */
export function proxyResponse(
  status: number,
  body: string,
  options: ProxyResponseOptions,
): { bytes: Uint8Array; bodyLength: number } {
  const payload = encoder.encode(body.endsWith("\n") ? body : body + "\n");
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n` +
    "Content-Type: text/plain; charset=utf-8\r\n" +
    "X-Content-Type-Options: nosniff\r\n" +
    `Content-Length: ${payload.length}\r\n` +
    "Cache-Control: no-store\r\n";
  if (options.decision !== undefined) head += `X-Netmonitor-Decision: ${options.decision}\r\n`;
  if (options.retryAfter !== undefined) head += `Retry-After: ${options.retryAfter}\r\n`;
  if (options.close) head += "Connection: close\r\n";
  head += "\r\n";
  const headBytes = encoder.encode(head);
  if (options.head) return { bytes: headBytes, bodyLength: 0 };
  const out = new Uint8Array(headBytes.length + payload.length);
  out.set(headBytes);
  out.set(payload, headBytes.length);
  return { bytes: out, bodyLength: payload.length };
}

/**
 * The `X-Netmonitor-Decision` value: `deny; reason="..."`, the reason as an
 * RFC 9110 quoted-string with anything but printable ASCII replaced.
 */
export function decisionHeader(action: "deny" | "allow", reason: string): string {
  const safe = reason.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, (c) => "\\" + c);
  return `${action}; reason="${safe.length > 300 ? safe.slice(0, 300) + "..." : safe}"`;
}

/** The 200 that opens a CONNECT tunnel. */
export const CONNECT_ESTABLISHED: Uint8Array = encoder.encode(
  "HTTP/1.1 200 Connection established\r\n\r\n",
);

/** A fatal TLS alert `access_denied`, sent when a tunnel's ClientHello is refused. */
export const TLS_ALERT_ACCESS_DENIED: Uint8Array = new Uint8Array([
  0x15,
  0x03,
  0x03,
  0x00,
  0x02,
  0x02,
  0x31,
]);
