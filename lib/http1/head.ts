/**
 * Request and response heads: finding their end in a byte stream, parsing
 * them strictly, and writing them back out.
 *
 * Heads are decoded as Latin-1 so that every byte round-trips: obs-text in a
 * header value (allowed by RFC 9110, used by real servers in e.g.
 * Content-Disposition) reaches the other side unchanged.
 *
 * @module
 */

import { HttpParseError } from "./errors.ts";
import { HeaderList } from "./headers.ts";
import { redactTargets } from "../log/redact.ts";

/** A parsed request head. */
export interface RequestHead {
  method: string;
  /** The request-target exactly as sent (absolute-, origin-, authority- or asterisk-form). */
  target: string;
  /** Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: 0 | 1;
  headers: HeaderList;
}

/** A parsed response head. */
export interface ResponseHead {
  minor: 0 | 1;
  status: number;
  reason: string;
  headers: HeaderList;
}

const LF = 10;
const CR = 13;
/** At most this many empty lines are skipped before a request line (RFC 9112 2.2). */
const MAX_LEADING_EMPTY_LINES = 4;

/**
 * Finds the end of a head (the empty line) incrementally, so a head that
 * arrives in many small reads is scanned once in total, and rejects bare LF
 * as soon as it is seen.
 */
export class HeadScanner {
  #pos = 0;
  #lineStart = 0;
  #start = 0;
  #seenLine = false;
  #empties = 0;

  /**
   * @param maxBytes largest head accepted, including the final CRLFCRLF.
   * @param fromServer true when scanning a response (errors become 502).
   */
  constructor(readonly maxBytes = 65536, readonly fromServer = false) {}

  /** Forgets the previous head; call before scanning the next one. */
  reset(): void {
    this.#pos = 0;
    this.#lineStart = 0;
    this.#start = 0;
    this.#seenLine = false;
    this.#empties = 0;
  }

  /** Offset of the start line within the scanned bytes (after skipped empty lines). */
  get start(): number {
    return this.#start;
  }

  /** True once any byte of a head (other than skipped empty lines) was seen. */
  get started(): boolean {
    return this.#seenLine || this.#pos > this.#lineStart;
  }

  /**
   * Scans `buf`, the bytes from the head's first byte on. Pass the same bytes
   * again plus newly read ones on each call.
   *
   * @returns the head's length through its final CRLFCRLF, or -1 when more
   *   bytes are needed.
   * @throws {HttpParseError} 400 on a bare LF or too many empty lines before
   *   the start line, 431 when the head exceeds `maxBytes` (502 for all of them
   *   when scanning a server's response).
   */
  scan(buf: Uint8Array): number {
    while (true) {
      const lf = buf.indexOf(LF, this.#pos);
      if (lf < 0 || lf >= this.maxBytes) {
        this.#pos = buf.length;
        if (buf.length >= this.maxBytes) throw this.#tooLarge();
        return -1;
      }
      if (lf === this.#lineStart || buf[lf - 1] !== CR) {
        throw new HttpParseError("bare LF in head", this.fromServer ? 502 : 400);
      }
      this.#pos = lf + 1;
      if (lf - 1 === this.#lineStart) {
        if (this.#seenLine) return lf + 1;
        // Empty line before the start line: tolerated a few times (clients
        // sometimes send CRLF after a POST body).
        if (++this.#empties > MAX_LEADING_EMPTY_LINES) {
          throw new HttpParseError(
            "too many empty lines before the start line",
            this.fromServer ? 502 : 400,
          );
        }
        this.#start = this.#lineStart = lf + 1;
        continue;
      }
      this.#seenLine = true;
      this.#lineStart = lf + 1;
    }
  }

  #tooLarge(): HttpParseError {
    return this.fromServer
      ? new HttpParseError(`response head larger than ${this.maxBytes} bytes`, 502)
      : new HttpParseError(`request head larger than ${this.maxBytes} bytes`, 431);
  }
}

const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
// deno-lint-ignore no-control-regex
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;

/**
 * The longest request target accepted, bytes: RFC 9112 asks for at least
 * 8,000 (nginx and Apache allow 8 KiB too). Everything downstream (URL
 * normalisation, rule matching, log redaction, the prompt) works on the
 * target, several times per request on the proxy's one thread; a 64 KiB
 * target of `%%%...` cost tens of milliseconds there.
 */
export const MAX_TARGET_LENGTH = 8192;

/**
 * Parses a request head. `buf[start, end)` is the head as delimited by
 * {@linkcode HeadScanner} (`start` = `scanner.start`, `end` = its result).
 *
 * @throws {HttpParseError} 400 on anything RFC 9112 does not allow:
 *   malformed request line, unsupported version, obs-fold, control
 *   characters, invalid field names or whitespace before the colon; 414 on a
 *   target longer than {@linkcode MAX_TARGET_LENGTH}.
 */
export function parseRequestHead(buf: Uint8Array, start: number, end: number): RequestHead {
  const lines = splitHead(buf, start, end, 400);
  const m = REQUEST_LINE.exec(lines[0]);
  if (!m) throw new HttpParseError(describeBadRequestLine(lines[0]), 400);
  if (m[2].length > MAX_TARGET_LENGTH) {
    throw new HttpParseError(
      `request target of ${m[2].length} bytes, longer than the ${MAX_TARGET_LENGTH} allowed`,
      414,
    );
  }
  const headers = parseFields(lines, 400);
  return { method: m[1], target: m[2], minor: m[3] === "1" ? 1 : 0, headers };
}

/**
 * Parses a response head from an upstream server.
 * @throws {HttpParseError} 502 on a malformed head.
 */
export function parseResponseHead(buf: Uint8Array, start: number, end: number): ResponseHead {
  const lines = splitHead(buf, start, end, 502);
  const m = STATUS_LINE.exec(lines[0]);
  if (!m) throw new HttpParseError(`malformed status line from upstream: ${quote(lines[0])}`, 502);
  const headers = parseFields(lines, 502);
  return { minor: m[1] === "1" ? 1 : 0, status: Number(m[2]), reason: m[3] ?? "", headers };
}

function splitHead(buf: Uint8Array, start: number, end: number, status: 400 | 502): string[] {
  // end includes the final CRLFCRLF; the last line's CRLF and the empty line go.
  if (hasBadChars(buf, start, end - 4)) {
    throw new HttpParseError(
      status === 400 ? "control character in request head" : "control character in response head",
      status,
    );
  }
  return latin1Decode(buf, start, end - 4).split("\r\n");
}

/**
 * True when `buf[start, end)` holds a control character other than HTAB, a
 * CR not followed by LF, or an LF not preceded by CR. A loop over the bytes:
 * the regex it replaced (`[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n`
 * on the decoded head, kept as the tests' oracle) cost more, with its
 * look-behind, than the rest of parsing a typical head.
 */
export function hasBadChars(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (b >= 0x20) {
      if (b === 0x7f) return true;
      continue;
    }
    if (b === 0x09) continue;
    if (b === 0x0d) {
      if (i + 1 >= end || buf[i + 1] !== 0x0a) return true;
      i++; // the LF of this CRLF
      continue;
    }
    return true; // LF without CR, or another control character
  }
  return false;
}

/** `tchar` of RFC 9110 5.6.2, by character code. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

/** True when `s[0, end)` is a token (RFC 9110 5.6.2). */
function isTokenPrefix(s: string, end: number): boolean {
  if (end === 0) return false;
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TCHAR[c] === 0) return false;
  }
  return true;
}

function parseFields(lines: string[], status: 400 | 502): HeaderList {
  const headers = new HeaderList();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) {
      throw new HttpParseError(
        "obsolete line folding (header line starts with whitespace)",
        status,
      );
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      throw new HttpParseError(`header line without a name: ${fieldPreview(line)}`, status);
    }
    if (!isTokenPrefix(line, colon)) {
      throw new HttpParseError(
        `invalid header name: ${fieldPreview(line.slice(0, colon))}`,
        status,
      );
    }
    headers.add(line.slice(0, colon), trimOws(line, colon + 1));
  }
  return headers;
}

/**
 * What an error may say about a malformed header line: its leading name-like
 * part and its length, never the rest. A line such as `Authorization Bearer
 * TOKEN` (a missing colon) carries a secret, and errors reach the log.
 */
function fieldPreview(line: string): string {
  // Only a short name followed by a separator is shown: a line that is all
  // one token may be a header value wrapped onto its own line (a token).
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20})([ \t:])/.exec(line);
  const lead = m
    ? `starts with ${JSON.stringify(m[1])}, then ${JSON.stringify(m[2])}`
    : "not shown";
  return `${lead} (${line.length} bytes)`;
}

function trimOws(s: string, from: number): string {
  let a = from;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return s.slice(a, b);
}

function describeBadRequestLine(line: string): string {
  if (/^PRI \* HTTP\/2\.0$/.test(line)) return "HTTP/2 is not supported, use HTTP/1.1";
  const m = / HTTP\/(\d+(?:\.\d+)?)$/.exec(line);
  if (m && m[1] !== "1.1" && m[1] !== "1.0") return `unsupported HTTP version ${m[1]}`;
  return `malformed request line: ${quote(line)}`;
}

/**
 * Quotes a string for an error message, shortened and with non-printables
 * escaped. Errors reach the access log: secrets are redacted first, so that
 * the cut cannot leave the start of one (`http://user:pass` without its `@`).
 */
export function quote(s: string, max = 80): string {
  const safe = redactTargets(s);
  const cut = safe.length > max ? safe.slice(0, max) + "..." : safe;
  return JSON.stringify(cut);
}

/** Decodes bytes as Latin-1 (each byte one UTF-16 unit). */
export function latin1Decode(buf: Uint8Array, start: number, end: number): string {
  const CHUNK = 8192;
  if (end - start <= CHUNK) {
    return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
  }
  let s = "";
  for (let i = start; i < end; i += CHUNK) {
    s += String.fromCharCode.apply(
      null,
      buf.subarray(i, Math.min(end, i + CHUNK)) as unknown as number[],
    );
  }
  return s;
}

const encoder = new TextEncoder();
// deno-lint-ignore no-control-regex
const ASCII = /^[\x00-\x7f]*$/;

/** Encodes a string whose characters are all below U+0100 as Latin-1 bytes. */
export function latin1Encode(s: string): Uint8Array {
  // A head is a few hundred characters: a loop is cheaper than a call into
  // the runtime's encoder, which only pays off for long strings.
  if (s.length > 4096 && ASCII.test(s)) return encoder.encode(s);
  const out = new Uint8Array(s.length);
  latin1EncodeInto(s, out, 0);
  return out;
}

/**
 * Writes `s` (characters below U+0100) as Latin-1 bytes into `out` from
 * `offset`, which must leave room for `s.length` bytes.
 */
export function latin1EncodeInto(s: string, out: Uint8Array, offset: number): void {
  for (let i = 0; i < s.length; i++) out[offset + i] = s.charCodeAt(i) & 0xff;
}
