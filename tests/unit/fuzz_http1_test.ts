/**
 * Property-based tests of the HTTP/1 parsers (lib/http1): the head scanner,
 * request and response head parsing, body framing and the chunked decoder.
 *
 * - Incremental = whole: a valid head or chunked body split into reads at
 *   random points (1-byte reads included) gives exactly what it gives whole,
 *   and what it was generated from.
 * - Robustness: mutated inputs either parse or throw HttpParseError (never
 *   another error), whole and incremental agree, and nothing accepted breaks
 *   the invariants request smuggling depends on (one framing, no hidden CR/LF,
 *   token field names, no more body bytes than chunk data). The chunked
 *   decoder is also compared with an independent reference decoder.
 *
 * Deterministic (seeded, bounded); a failure prints FUZZ_SEED to replay it.
 */
import assert from "node:assert/strict";
import {
  type BodyFraming,
  ChunkedDecoder,
  clientKeepAlive,
  HeadScanner,
  HttpParseError,
  LAST_CHUNK,
  latin1Decode,
  latin1Encode,
  listTokens,
  MAX_TARGET_LENGTH,
  parseRequestHead,
  parseResponseHead,
  requestFraming,
  responseFraming,
  serverKeepAlive,
  writeChunkHeader,
} from "../../lib/http1/mod.ts";
import { forAll, type Rng } from "../_helpers/fuzz.ts";
import { hasBadChars } from "../../lib/http1/head.ts";

// ---------------------------------------------------------------------------
// Shared helpers.

const TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const range = (a: number, b: number) =>
  Array.from({ length: b - a + 1 }, (_, i) => String.fromCharCode(a + i)).join("");
const VCHAR = range(0x21, 0x7e);
const OBS_TEXT = range(0x80, 0xff);
const HEX = "0123456789abcdefABCDEF";

function latin1(b: ArrayLike<number>): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/**
 * Increasing cut points in (0, len], ending with `len`: where a stream of
 * `len` bytes is split into reads. Every byte (1-byte reads), a few random
 * cuts, or random small or large steps.
 */
function cuts(r: Rng, len: number): number[] {
  if (len === 0) return [0];
  const out: number[] = [];
  switch (r.int(4)) {
    case 0:
      for (let i = 1; i <= len; i++) out.push(i);
      return out;
    case 1: {
      const set = new Set<number>([len]);
      for (let k = r.range(1, 6); k > 0; k--) set.add(r.range(1, len));
      return [...set].sort((a, b) => a - b);
    }
    default: {
      const step = r.bool() ? 3 : 40;
      for (let i = r.range(1, step); i < len; i += r.range(1, step)) out.push(i);
      out.push(len);
      return out;
    }
  }
}

/** Runs `fn`; a failure names the input (so the report shows what broke). */
function about<T>(input: string | Uint8Array, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const shown = typeof input === "string" ? input : latin1(input);
    const detail = e instanceof Error ? e.stack ?? e.message : String(e);
    throw new Error(`input ${JSON.stringify(shown.slice(0, 3000))}\n${detail}`, { cause: e });
  }
}

/** Lets only HttpParseError through as a value; anything else fails the property. */
function parseError(e: unknown, stage: string): { status: number; message: string; stage: string } {
  if (!(e instanceof HttpParseError)) {
    throw new Error(
      `${stage} threw ${e instanceof Error ? e.name : typeof e}, not HttpParseError`,
      {
        cause: e,
      },
    );
  }
  return { status: e.status, message: e.message, stage };
}

/** `s` with each letter's case flipped at random. */
function randomCase(r: Rng, s: string): string {
  let out = "";
  for (const c of s) out += r.bool() ? c.toUpperCase() : c.toLowerCase();
  return out;
}

// ---------------------------------------------------------------------------
// Heads: generation.

interface Field {
  name: string;
  /** What follows the colon on the wire (value with optional whitespace around it). */
  raw: string;
  /** The parsed value. */
  value: string;
}

function fieldValue(r: Rng): { raw: string; value: string } {
  let value: string;
  if (r.bool(0.3)) {
    value = r.pick(["", "a.test", "keep-alive", "text/html; charset=utf-8", "0", "caf\xe9"]);
  } else {
    const n = r.range(0, 24);
    let s = "";
    for (let i = 0; i < n; i++) {
      const p = r.next();
      s += p < 0.7 ? r.pick([...VCHAR]) : p < 0.85 ? r.pick([...OBS_TEXT]) : r.pick([" ", "\t"]);
    }
    value = s.replace(/^[ \t]+|[ \t]+$/g, "");
  }
  const ows = () => r.string(r.range(0, 2), " \t");
  return { raw: ows() + value + ows(), value };
}

function fieldName(r: Rng): string {
  for (;;) {
    const name = r.bool(0.3)
      ? randomCase(r, r.pick(["host", "accept", "user-agent", "connection", "x-a", "cookie"]))
      : r.string(r.range(1, 16), TCHAR);
    const lower = name.toLowerCase();
    if (lower !== "content-length" && lower !== "transfer-encoding") return name;
  }
}

function randomFields(r: Rng): Field[] {
  const out: Field[] = [];
  for (let n = r.range(0, 8); n > 0; n--) out.push({ name: fieldName(r), ...fieldValue(r) });
  return out;
}

/** A framing field, inserted at a random place; the framing it means. */
function addFraming(r: Rng, fields: Field[], allowChunked: boolean): BodyFraming {
  const at = () => r.range(0, fields.length);
  const ows = () => r.string(r.range(0, 2), " \t");
  const choice = r.int(allowChunked ? 3 : 2);
  if (choice === 0) return { kind: "none" };
  if (choice === 1) {
    const digits = r.bool(0.2) ? "0".repeat(r.range(1, 3)) + r.range(0, 999) : String(
      r.bool(0.9) ? r.range(0, 100000) : r.range(0, 999999999999999),
    );
    const v = digits.slice(-15);
    fields.splice(at(), 0, {
      name: randomCase(r, "content-length"),
      raw: ows() + v + ows(),
      value: v,
    });
    return { kind: "length", length: Number(v) };
  }
  const v = r.pick(["", ", ", ",", " ,"]) + randomCase(r, "chunked") + r.pick(["", ",", ", "]);
  fields.splice(at(), 0, {
    name: randomCase(r, "transfer-encoding"),
    raw: ows() + v + ows(),
    value: v.trim(),
  });
  return { kind: "chunked" };
}

function host(r: Rng): string {
  return r.pick([
    "a.test",
    "127.0.0.1",
    "[::1]",
    r.string(r.range(1, 10), "abcdefghijklmnopqrstuvwxyz0123456789-.") || "x",
  ]);
}

function requestTarget(r: Rng): string {
  const origin = () => "/" + r.string(r.range(0, 40), VCHAR);
  switch (r.int(6)) {
    case 0:
      return "*";
    case 1:
      return `${host(r)}:${r.range(1, 65535)}`;
    case 2:
    case 3:
      return `${r.pick(["http", "https", "HTTP"])}://${host(r)}${
        r.bool() ? ":" + r.range(1, 65535) : ""
      }${origin()}`;
    case 4:
      if (r.bool(0.05)) return "/" + r.string(MAX_TARGET_LENGTH - 1, VCHAR);
      return origin();
    default:
      return origin();
  }
}

interface RequestModel {
  text: string;
  start: number;
  end: number;
  method: string;
  target: string;
  minor: 0 | 1;
  fields: Field[];
  framing: BodyFraming;
}

function genRequest(r: Rng): RequestModel {
  const method = r.bool(0.7)
    ? r.pick(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"])
    : r.string(r.range(1, 10), TCHAR);
  const target = requestTarget(r);
  const minor = r.bool(0.8) ? 1 : 0;
  const fields = randomFields(r);
  const framing = addFraming(r, fields, minor === 1);
  const leading = r.bool(0.8) ? 0 : r.range(1, 4);
  const head = `${method} ${target} HTTP/1.${minor}\r\n` +
    fields.map((f) => `${f.name}:${f.raw}\r\n`).join("") + "\r\n";
  const start = 2 * leading;
  const tail = r.bool() ? "" : latin1(r.bytes(r.range(1, 20)));
  return {
    text: "\r\n".repeat(leading) + head + tail,
    start,
    end: start + head.length,
    method,
    target,
    minor,
    fields,
    framing,
  };
}

interface ResponseModel {
  text: string;
  end: number;
  minor: 0 | 1;
  status: number;
  reason: string;
  fields: Field[];
  method: string;
  framing: BodyFraming;
}

function genResponse(r: Rng): ResponseModel {
  const minor = r.bool(0.8) ? 1 : 0;
  const status = r.bool(0.7)
    ? r.pick([100, 101, 200, 204, 206, 301, 304, 404, 500, 502])
    : r.range(100, 999);
  const reasonChars = "\t " + VCHAR + OBS_TEXT;
  const reason = r.bool(0.7) ? r.pick(["OK", "Not Found", "", "Ok\tfine"]) : r.string(
    r.range(0, 20),
    reasonChars,
  );
  const withSpace = reason !== "" || r.bool();
  const fields = randomFields(r);
  const method = r.pick(["GET", "POST", "HEAD", "PUT"]);
  const ows = () => r.string(r.range(0, 2), " \t");
  // What the fields say, before the method and status are taken into account.
  let framing: BodyFraming = { kind: "close" };
  const te = minor === 1 && r.bool(0.3);
  if (te) {
    const v = randomCase(r, "chunked");
    fields.splice(r.range(0, fields.length), 0, {
      name: randomCase(r, "transfer-encoding"),
      raw: ows() + v + ows(),
      value: v,
    });
    framing = { kind: "chunked" };
  }
  if (r.bool(0.5)) {
    // Content-Length, sometimes repeated with the same value (RFC 9110 8.6).
    const n = r.range(0, 100000);
    for (let k = r.bool(0.8) ? 1 : r.range(2, 3); k > 0; k--) {
      const v = r.bool(0.8) ? String(n) : `${n}, ${n}`;
      fields.splice(r.range(0, fields.length), 0, {
        name: randomCase(r, "content-length"),
        raw: ows() + v + ows(),
        value: v,
      });
    }
    if (!te) framing = { kind: "length", length: n };
  }
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) {
    framing = { kind: "none" };
  }
  const head = `HTTP/1.${minor} ${status}${withSpace ? " " + reason : ""}\r\n` +
    fields.map((f) => `${f.name}:${f.raw}\r\n`).join("") + "\r\n";
  const tail = r.bool() ? "" : latin1(r.bytes(r.range(1, 20)));
  return { text: head + tail, end: head.length, minor, status, reason, fields, method, framing };
}

// ---------------------------------------------------------------------------
// Heads: running the parsers.

interface ParsedHead {
  names: string[];
  lower: string[];
  values: string[];
  method?: string;
  target?: string;
  status?: number;
  reason?: string;
  minor: 0 | 1;
  /** clientKeepAlive / serverKeepAlive. */
  keepAlive: boolean;
}

type HeadOutcome =
  | { kind: "incomplete" }
  | { kind: "error"; status: number; message: string; stage: string }
  | {
    kind: "ok";
    start: number;
    end: number;
    head: ParsedHead;
    framing: BodyFraming | { error: number; message: string };
  };

/**
 * Scans `bytes` delivered in reads ending at `at` (each read passes every
 * byte so far, as the proxy does), then parses the head and its framing.
 */
function runHead(
  bytes: Uint8Array,
  at: number[],
  response: boolean,
  method = "GET",
  maxBytes = 65536,
): HeadOutcome {
  const scanner = new HeadScanner(maxBytes, response);
  let end = -1;
  try {
    for (const cut of at) {
      end = scanner.scan(bytes.subarray(0, cut));
      if (end >= 0) break;
    }
  } catch (e) {
    return { kind: "error", ...parseError(e, "scan") };
  }
  if (end < 0) return { kind: "incomplete" };
  assert.ok(end <= bytes.length && scanner.start < end, "head bounds");
  let head: ParsedHead;
  let framing: BodyFraming | { error: number; message: string };
  try {
    if (response) {
      const h = parseResponseHead(bytes, scanner.start, end);
      const { names, lower, values } = h.headers;
      head = {
        minor: h.minor,
        status: h.status,
        reason: h.reason,
        names,
        lower,
        values,
        keepAlive: serverKeepAlive(h),
      };
      try {
        framing = responseFraming(h, method);
      } catch (e) {
        const { status, message } = parseError(e, "framing");
        framing = { error: status, message };
      }
    } else {
      const h = parseRequestHead(bytes, scanner.start, end);
      const { names, lower, values } = h.headers;
      head = {
        method: h.method,
        target: h.target,
        minor: h.minor,
        names,
        lower,
        values,
        keepAlive: clientKeepAlive(h),
      };
      try {
        framing = requestFraming(h);
      } catch (e) {
        const { status, message } = parseError(e, "framing");
        framing = { error: status, message };
      }
    }
  } catch (e) {
    return { kind: "error", ...parseError(e, "parse") };
  }
  return { kind: "ok", start: scanner.start, end, head, framing };
}

/** Runs a head whole and split at random points; both must agree. */
function wholeAndSplit(
  r: Rng,
  bytes: Uint8Array,
  response: boolean,
  method?: string,
  maxBytes?: number,
): HeadOutcome {
  const whole = runHead(bytes, [bytes.length], response, method, maxBytes);
  const split = runHead(bytes, cuts(r, bytes.length), response, method, maxBytes);
  assert.deepEqual(split, whole, "split reads gave another result than one read");
  return whole;
}

// deno-lint-ignore no-control-regex
const FORBIDDEN_IN_LINE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** What must hold for every head the parser accepts, whatever the input was. */
function checkAcceptedHead(
  bytes: Uint8Array,
  o: Extract<HeadOutcome, { kind: "ok" }>,
  response: boolean,
  method: string,
): void {
  const text = latin1(bytes.subarray(0, o.end));
  // Only empty lines (at most 4) are skipped before the start line.
  assert.ok(/^(?:\r\n){0,4}$/.test(text.slice(0, o.start)), "skipped bytes");
  const headText = text.slice(o.start);
  assert.ok(headText.endsWith("\r\n\r\n"), "head ends with an empty line");
  const lines = headText.slice(0, -4).split("\r\n");
  for (const line of lines) {
    // No CR or LF outside the CRLF pairs, no control characters but HTAB, no empty line.
    assert.ok(!FORBIDDEN_IN_LINE.test(line), `control character in accepted line ${line}`);
    assert.notEqual(line, "", "empty line inside an accepted head");
  }
  const h = o.head;
  if (response) {
    const prefix = `HTTP/1.${h.minor} ${h.status}`;
    assert.ok(h.status! >= 100 && h.status! <= 999);
    assert.equal(lines[0], lines[0] === prefix ? prefix : `${prefix} ${h.reason}`);
  } else {
    assert.ok(TOKEN.test(h.method!), "method is a token");
    assert.ok(/^[\x21-\x7e]+$/.test(h.target!), "target is visible ASCII");
    assert.ok(h.target!.length <= MAX_TARGET_LENGTH, "target length");
    assert.equal(lines[0], `${h.method} ${h.target} HTTP/1.${h.minor}`);
  }
  // Every other line is exactly one field: token name, colon, OWS, value, OWS.
  assert.equal(lines.length - 1, h.names.length, "one field per line");
  for (let i = 0; i < h.names.length; i++) {
    const name = h.names[i];
    const value = h.values[i];
    assert.ok(TOKEN.test(name), `field name ${JSON.stringify(name)} is a token`);
    assert.equal(h.lower[i], name.toLowerCase());
    assert.ok(!/^[ \t]|[ \t]$/.test(value), "value has no surrounding whitespace");
    assert.ok(lines[i + 1].startsWith(name + ":"), "field line starts with its name");
    assert.equal(lines[i + 1].slice(name.length + 1).replace(/^[ \t]+|[ \t]+$/g, ""), value);
  }
  // Framing: one way to find the end of the body, never two.
  const all = (n: string) => h.values.filter((_, i) => h.lower[i] === n);
  const cl = all("content-length");
  const te = all("transfer-encoding");
  const f = o.framing;
  if ("error" in f) {
    assert.equal(f.error, response ? 502 : 400);
    return;
  }
  // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
  // framing; the connection is closed after it (a request is refused).
  if (h.minor === 0 && te.length > 0) assert.equal(h.keepAlive, false, "HTTP/1.0 + TE kept alive");
  if (response && te.length > 0 && cl.length > 0) {
    assert.equal(h.keepAlive, false, "response with TE and CL kept alive");
  }
  if (response) {
    const s = h.status!;
    if (method === "HEAD" || s < 200 || s === 204 || s === 304) {
      assert.deepEqual(f, { kind: "none" });
    } else if (f.kind === "chunked") {
      assert.deepEqual(listTokens(te), ["chunked"]);
    } else if (f.kind === "length") {
      assert.equal(te.length, 0);
      const parts = cl.flatMap((v) => v.split(",").map((p) => p.trim()));
      assert.ok(parts.length > 0 && parts.every((p) => /^\d+$/.test(p) && Number(p) === f.length));
    } else {
      assert.equal(f.kind, "close");
      assert.equal(te.length + cl.length, 0);
    }
    return;
  }
  if (f.kind === "chunked") {
    assert.equal(h.minor, 1, "Transfer-Encoding only in HTTP/1.1");
    assert.equal(cl.length, 0, "accepted with both Transfer-Encoding and Content-Length");
    assert.equal(te.length, 1, "one Transfer-Encoding field");
    assert.deepEqual(listTokens(te), ["chunked"]);
  } else if (f.kind === "length") {
    assert.equal(te.length, 0, "accepted with both Transfer-Encoding and Content-Length");
    assert.equal(cl.length, 1, "accepted with more than one Content-Length");
    assert.ok(/^\d{1,15}$/.test(cl[0]) && Number(cl[0]) === f.length, "Content-Length value");
  } else {
    assert.equal(f.kind, "none");
    assert.equal(te.length + cl.length, 0);
  }
}

/**
 * What the proxy forwards (`Name: value` lines) parses to the same head at
 * the next hop.
 */
function checkReserialised(o: Extract<HeadOutcome, { kind: "ok" }>, response: boolean): void {
  const h = o.head;
  const start = response
    ? `HTTP/1.${h.minor} ${h.status} ${h.reason}`
    : `${h.method} ${h.target} HTTP/1.${h.minor}`;
  const text = start + "\r\n" + h.names.map((n, i) => `${n}: ${h.values[i]}\r\n`).join("") +
    "\r\n";
  const again = runHead(latin1Encode(text), [text.length], response);
  assert.equal(again.kind, "ok", "a forwarded head parses again");
  if (again.kind !== "ok") return;
  assert.deepEqual(again.head, h);
}

// ---------------------------------------------------------------------------
// Heads: properties.

/** Whether the connection stays open after a generated (valid) message. */
function keepAliveModel(minor: 0 | 1, fields: Field[], response = false): boolean {
  const has = (name: string) => fields.some((f) => f.name.toLowerCase() === name);
  // A response with Transfer-Encoding and Content-Length is read as chunked,
  // and its connection is never reused (RFC 9112 6.3).
  if (response && has("transfer-encoding") && has("content-length")) return false;
  const tokens = fields.filter((f) => f.name.toLowerCase() === "connection")
    .flatMap((f) => f.value.split(",")).map((t) => t.trim().toLowerCase());
  return !tokens.includes("close") && (minor === 1 || tokens.includes("keep-alive"));
}

Deno.test("fuzz http1: valid request heads parse the same in any reads, as generated", () => {
  forAll("request head: incremental = whole = model", { seed: 0x51a7, runs: 1500 }, (r) => {
    const m = genRequest(r);
    const bytes = latin1Encode(m.text);
    about(m.text, () => {
      const o = wholeAndSplit(r, bytes, false);
      assert.deepEqual(o, {
        kind: "ok",
        start: m.start,
        end: m.end,
        head: {
          method: m.method,
          target: m.target,
          minor: m.minor,
          names: m.fields.map((f) => f.name),
          lower: m.fields.map((f) => f.name.toLowerCase()),
          values: m.fields.map((f) => f.value),
          keepAlive: keepAliveModel(m.minor, m.fields),
        },
        framing: m.framing,
      });
      checkAcceptedHead(bytes, o as Extract<HeadOutcome, { kind: "ok" }>, false, "GET");
      checkReserialised(o as Extract<HeadOutcome, { kind: "ok" }>, false);
      // Every proper prefix of the head needs more bytes.
      const cut = r.range(0, m.end - 1);
      assert.deepEqual(runHead(bytes.subarray(0, cut), [cut], false), { kind: "incomplete" });
    });
  });
});

Deno.test("fuzz http1: valid response heads parse the same in any reads, as generated", () => {
  forAll("response head: incremental = whole = model", { seed: 0x7e59, runs: 1200 }, (r) => {
    const m = genResponse(r);
    const bytes = latin1Encode(m.text);
    about(m.text, () => {
      const o = wholeAndSplit(r, bytes, true, m.method);
      assert.deepEqual(o, {
        kind: "ok",
        start: 0,
        end: m.end,
        head: {
          minor: m.minor,
          status: m.status,
          reason: m.reason,
          names: m.fields.map((f) => f.name),
          lower: m.fields.map((f) => f.name.toLowerCase()),
          values: m.fields.map((f) => f.value),
          keepAlive: keepAliveModel(m.minor, m.fields, true),
        },
        framing: m.framing,
      });
      checkAcceptedHead(bytes, o as Extract<HeadOutcome, { kind: "ok" }>, true, m.method);
      checkReserialised(o as Extract<HeadOutcome, { kind: "ok" }>, true);
    });
  });
});

/** Framing fields as attackers write them: odd case, whitespace, lists, junk. */
function framingLine(r: Rng): string {
  const sep = () => r.pick([":", ": ", ":\t", ":  ", " :", "\t:", ": \t"]);
  const tail = () => r.pick(["", "", " ", "\t", "\x0b", "\r"]);
  if (r.bool()) {
    const v = r.pick([
      "0",
      "5",
      "05",
      "42",
      "-1",
      "+5",
      "5, 5",
      "5,6",
      "5,",
      "0x5",
      "5 5",
      "",
      "5\x00",
      "1".repeat(16),
      "99999999999999999999",
      "\xb5",
    ]);
    return randomCase(r, "content-length") + sep() + v + tail();
  }
  const v = r.pick([
    "chunked",
    "Chunked",
    "CHUNKED",
    "chunked, chunked",
    "gzip, chunked",
    "chunked, gzip",
    "identity",
    "chunked,",
    ", chunked",
    "xchunked",
    "chunked;q=1",
    "chunked\x0b",
    '"chunked"',
    "",
  ]);
  return r.pick(["", "", "", " ", "\t", "X-", "\x00"]) + randomCase(r, "transfer-encoding") +
    sep() + v + tail();
}

/** 1-4 random mutations of a head, including duplicated and conflicting framing fields. */
function mutateHead(r: Rng, text: string): string {
  let s = text;
  for (let k = r.range(1, 4); k > 0; k--) {
    const at = r.range(0, s.length);
    switch (r.int(12)) {
      case 9: // empty lines before the start line (a few are skipped)
        s = "\r\n".repeat(r.range(1, 6)) + s;
        break;
      case 10: // the other HTTP version
        s = s.replace(/HTTP\/1\.[01]/, (v) => v === "HTTP/1.1" ? "HTTP/1.0" : "HTTP/1.1");
        break;
      case 11: { // a Connection field
        const i = s.indexOf("\r\n") + 2;
        const v = r.pick(["keep-alive", "close", "Keep-Alive, Upgrade", "upgrade"]);
        if (i > 1) s = s.slice(0, i) + `${randomCase(r, "connection")}: ${v}\r\n` + s.slice(i);
        break;
      }
      case 0: // flip a byte
        if (s.length > 0) {
          const i = r.int(s.length);
          s = s.slice(0, i) + String.fromCharCode(r.int(256)) + s.slice(i + 1);
        }
        break;
      case 1:
      case 2: { // insert a byte that matters to the grammar
        const c = r.pick([
          "\r",
          "\n",
          "\x00",
          " ",
          "\t",
          ":",
          ",",
          "\x7f",
          "\x0b",
          "\x0c",
          "\r\n",
          "\r\n\r\n",
          "\n\n",
          "\r\r\n",
          String.fromCharCode(r.range(0x80, 0xff)),
        ]);
        s = s.slice(0, at) + c + s.slice(at);
        break;
      }
      case 3: // delete a byte
        s = s.slice(0, at) + s.slice(at + 1);
        break;
      case 4: // truncate
        if (r.bool(0.3)) s = s.slice(0, at);
        break;
      case 5: { // duplicate a line
        const lines = s.split("\r\n");
        const i = r.int(lines.length);
        lines.splice(i, 0, lines[i]);
        s = lines.join("\r\n");
        break;
      }
      case 6:
      case 7: { // add a framing field after some line of the head
        const ends = [...s.matchAll(/\r\n/g)].map((m) => m.index! + 2);
        const i = ends.length > 0 ? r.pick(ends) : 0;
        s = s.slice(0, i) + framingLine(r) + "\r\n" + s.slice(i);
        break;
      }
      default: { // change the case of a stretch
        const j = Math.min(s.length, at + r.range(1, 20));
        s = s.slice(0, at) + randomCase(r, s.slice(at, j)) + s.slice(j);
      }
    }
  }
  return s;
}

Deno.test("fuzz http1: mutated request heads parse or throw HttpParseError, never smuggle", () => {
  let accepted = 0;
  forAll("request head: mutations keep the invariants", { seed: 0x5a6e, runs: 4000 }, (r) => {
    const m = genRequest(r);
    const text = mutateHead(r, m.text);
    const bytes = latin1Encode(text);
    const maxBytes = r.bool(0.1) ? r.range(8, 200) : 65536;
    about(text, () => {
      const o = wholeAndSplit(r, bytes, false, undefined, maxBytes);
      if (o.kind === "error") {
        assert.ok([400, 414, 431].includes(o.status), `status ${o.status}`);
      }
      if (o.kind === "ok") {
        accepted++;
        assert.ok(o.end <= maxBytes, "head no larger than maxBytes");
        checkAcceptedHead(bytes, o, false, "GET");
        checkReserialised(o, false);
      }
    });
  });
  // The mutations must leave enough accepted heads for the invariants to mean something.
  assert.ok(accepted > 400, `only ${accepted} mutated heads accepted`);
});

Deno.test("fuzz http1: mutated response heads parse or throw HttpParseError (502)", () => {
  let accepted = 0;
  forAll("response head: mutations keep the invariants", { seed: 0x7e5b, runs: 3000 }, (r) => {
    const m = genResponse(r);
    const text = mutateHead(r, m.text);
    const bytes = latin1Encode(text);
    about(text, () => {
      const o = wholeAndSplit(r, bytes, true, m.method);
      if (o.kind === "error") assert.equal(o.status, 502);
      if (o.kind === "ok") {
        accepted++;
        checkAcceptedHead(bytes, o, true, m.method);
        checkReserialised(o, true);
      }
    });
  });
  assert.ok(accepted > 300, `only ${accepted} mutated heads accepted`);
});

Deno.test("fuzz http1: random bytes never crash the head parsers", () => {
  forAll("head: random bytes", { seed: 0xb17e5, runs: 1500 }, (r) => {
    const alphabet = r.bool() ? "GET / HTTP/1.1\r\n: \tchunked0Content-Length" : latin1(r.bytes(8));
    const text = r.string(r.range(0, 80), alphabet) + (r.bool() ? "\r\n\r\n" : "");
    const bytes = latin1Encode(text);
    about(text, () => {
      for (const response of [false, true]) {
        const o = wholeAndSplit(r, bytes, response);
        if (o.kind === "ok") checkAcceptedHead(bytes, o, response, "GET");
      }
    });
  });
});

Deno.test("fuzz http1: hasBadChars says what the control-character regex it replaced says", () => {
  // deno-lint-ignore no-control-regex
  const BAD_CHARS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n/;
  forAll("head: control characters", { seed: 0xc7a25, runs: 4000 }, (r) => {
    const alphabet = r.bool() ? "ab:\t\r\n \x00\x7f\x1f\x80\xff" : latin1(r.bytes(6));
    const text = r.string(r.range(0, 40), alphabet);
    const bytes = latin1Encode(text);
    // A window inside a larger buffer: the bytes around it must not count.
    const pad = r.range(0, 3);
    const buf = new Uint8Array(bytes.length + 2 * pad).fill(r.bool() ? 0x0a : 0x0d);
    buf.set(bytes, pad);
    assert.equal(latin1Decode(buf, pad, pad + bytes.length), text);
    assert.equal(
      hasBadChars(buf, pad, pad + bytes.length),
      BAD_CHARS.test(text),
      JSON.stringify(text),
    );
  });
});

// ---------------------------------------------------------------------------
// Chunked bodies: generation.

interface ChunkedModel {
  text: string;
  /** Length of the body (through the final CRLF). */
  end: number;
  data: Uint8Array;
  /** The size of the trailer section as the decoder counts it (all but its last LF). */
  trailerBytes: number;
}

/** A chunk size in hex: random case, sometimes leading zeros (at most 16 digits in all). */
function hexSize(r: Rng, n: number): string {
  const hex = randomCase(r, n.toString(16));
  return (r.bool(0.3) ? "0".repeat(r.range(1, 16 - hex.length)) : "") + hex;
}

/** Chunk extensions (RFC 9112 7.1.1), with the whitespace and quoting the grammar allows. */
function chunkExt(r: Rng): string {
  if (r.bool(0.6)) return "";
  const bws = () => r.string(r.range(0, 2), " \t");
  let s = "";
  for (let k = r.range(1, 3); k > 0; k--) {
    s += bws() + ";" + bws() + r.string(r.range(1, 8), TCHAR);
    if (r.bool()) {
      const qd = "\t " + VCHAR.replace(/["\\]/g, "");
      const val = r.bool() ? r.string(r.range(1, 8), TCHAR) : '"' + Array.from(
        { length: r.range(0, 8) },
        () => r.bool(0.8) ? r.pick([...qd]) : "\\" + r.pick([..."\t " + VCHAR]),
      ).join("") + '"';
      s += bws() + "=" + bws() + val;
    }
  }
  return s;
}

function genChunked(r: Rng): ChunkedModel {
  let text = "";
  const data: number[] = [];
  for (let k = r.range(0, 6); k > 0; k--) {
    const size = r.bool(0.9) ? r.range(1, 64) : r.range(65, 3000);
    const bytes = r.bytes(size);
    // Data that looks like framing must stay data.
    if (r.bool(0.2)) bytes.set(latin1Encode("0\r\n\r\n").subarray(0, Math.min(5, size)));
    text += hexSize(r, size) + chunkExt(r) + "\r\n" + latin1(bytes) + "\r\n";
    data.push(...bytes);
  }
  text += hexSize(r, 0) + chunkExt(r) + "\r\n";
  const trailerStart = text.length;
  for (let k = r.bool(0.7) ? 0 : r.range(1, 3); k > 0; k--) {
    text += r.string(r.range(1, 12), TCHAR) + ":" + r.string(r.range(0, 2), " \t") +
      r.string(r.range(0, 20), "\t " + VCHAR + OBS_TEXT) + "\r\n";
  }
  text += "\r\n";
  const end = text.length;
  if (r.bool()) text += latin1(r.bytes(r.range(1, 20)));
  return { text, end, data: new Uint8Array(data), trailerBytes: end - 1 - trailerStart };
}

// ---------------------------------------------------------------------------
// Chunked bodies: the decoder, and an independent reference.

type ChunkedOutcome =
  | { kind: "done"; consumed: number; data: Uint8Array }
  | { kind: "incomplete"; data: Uint8Array }
  | { kind: "error"; status: number; message: string };

interface DecoderOptions {
  fromServer: boolean;
  maxTrailerBytes: number;
}

/** Feeds `bytes` in reads ending at `at`, as a caller with one growing buffer does. */
function runChunked(bytes: Uint8Array, at: number[], opts: DecoderOptions): ChunkedOutcome {
  const d = new ChunkedDecoder(opts);
  const out: number[] = [];
  let consumed = 0;
  try {
    for (const cut of at) {
      if (d.done) break;
      const n = d.decode(bytes, consumed, cut, (p) => {
        assert.ok(p.length > 0, "empty data piece");
        for (const b of p) out.push(b);
      });
      assert.ok(Number.isInteger(n) && n >= 0 && n <= cut - consumed, `consumed ${n}`);
      consumed += n;
      if (!d.done) assert.equal(consumed, cut, "stopped early without finishing the body");
      // Data can only come from bytes consumed.
      assert.ok(out.length <= consumed, "more data than bytes consumed");
    }
  } catch (e) {
    const { status, message } = parseError(e, "decode");
    return { kind: "error", status, message };
  }
  const data = new Uint8Array(out);
  return d.done ? { kind: "done", consumed, data } : { kind: "incomplete", data };
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const TRAILER_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*$/;
const TRAILER_PREFIX =
  /^(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]*|[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)$/;

/**
 * Whether `s` is a chunk-size line (without its CRLF), or when `complete` is
 * false the start of one: 1-16 hex digits worth at most 2^53-1, then
 * nothing, or whitespace and a `;` and visible ASCII or whitespace (4096
 * bytes at most after the digits).
 */
function sizeLine(s: string, complete: boolean): boolean {
  const digits = /^[0-9a-fA-F]*/.exec(s)![0];
  const ext = s.slice(digits.length);
  if (digits.length > 16 || (digits !== "" && BigInt("0x" + digits) > MAX_SAFE)) return false;
  if (ext.length > 4096) return false;
  if (complete) return digits !== "" && /^(?:[ \t]*;[\t\x20-\x7e]*)?$/.test(ext);
  return ext === "" || (digits !== "" && /^[ \t]*(?:;[\t\x20-\x7e]*)?$/.test(ext));
}

/**
 * A reference chunked decoder, written differently (whole buffer, line by
 * line, regular expressions) from the streaming one, to the grammar the
 * streaming one documents: 1-16 hex digits (value at most 2^53-1), chunk
 * extensions of visible ASCII and whitespace after a `;` (4096 bytes at
 * most), CRLF line ends, token trailer names, and a trailer section of at
 * most `maxTrailer` bytes (not counting its last LF).
 */
function referenceChunked(b: Uint8Array, maxTrailer: number): "error" | ChunkedOutcome {
  const n = b.length;
  const data: number[] = [];
  const incomplete = (): ChunkedOutcome => ({ kind: "incomplete", data: new Uint8Array(data) });
  /** The line at `from`: its text and where the next one starts; "incomplete" or "error". */
  const line = (
    from: number,
    full: (s: string) => boolean,
    prefix: (s: string) => boolean,
  ): { s: string; next: number } | "incomplete" | "error" => {
    let j = from;
    while (j < n && b[j] !== 13 && b[j] !== 10) j++;
    const s = latin1(b.subarray(from, j));
    if (j === n) return prefix(s) ? "incomplete" : "error";
    if (b[j] === 10 || !full(s)) return "error";
    if (j + 1 === n) return "incomplete";
    return b[j + 1] === 10 ? { s, next: j + 2 } : "error";
  };
  let i = 0;
  for (;;) {
    const l = line(i, (s) => sizeLine(s, true), (s) => sizeLine(s, false));
    if (l === "incomplete") return incomplete();
    if (l === "error") return "error";
    const size = Number(BigInt("0x" + /^[0-9a-fA-F]+/.exec(l.s)![0]));
    i = l.next;
    if (size === 0) break;
    if (i + size > n) {
      for (let k = i; k < n; k++) data.push(b[k]);
      return incomplete();
    }
    for (let k = i; k < i + size; k++) data.push(b[k]);
    i += size;
    if (i === n) return incomplete();
    if (b[i] !== 13) return "error";
    if (i + 1 === n) return incomplete();
    if (b[i + 1] !== 10) return "error";
    i += 2;
  }
  const trailerStart = i;
  for (;;) {
    const l = line(i, (s) => s === "" || TRAILER_LINE.test(s), (s) => TRAILER_PREFIX.test(s));
    if (l === "error") return "error";
    if (l === "incomplete") return n - trailerStart > maxTrailer ? "error" : incomplete();
    if (l.s === "") {
      // Counted: everything but the final LF.
      if (l.next - 1 - trailerStart > maxTrailer) return "error";
      return { kind: "done", consumed: l.next, data: new Uint8Array(data) };
    }
    if (l.next - trailerStart > maxTrailer) return "error";
    i = l.next;
  }
}

/** Decodes whole and split; they must agree, and agree with the reference. */
function checkChunked(r: Rng, bytes: Uint8Array, opts: DecoderOptions): ChunkedOutcome {
  const whole = runChunked(bytes, [bytes.length], opts);
  const split = runChunked(bytes, cuts(r, bytes.length), opts);
  assert.deepEqual(split, whole, "split reads gave another result than one read");
  const ref = referenceChunked(bytes, opts.maxTrailerBytes);
  if (ref === "error") {
    assert.equal(whole.kind, "error", "the reference decoder rejects this body");
  } else {
    assert.deepEqual(whole, ref, "the reference decoder reads this body otherwise");
  }
  if (whole.kind === "error") assert.equal(whole.status, opts.fromServer ? 502 : 400);
  return whole;
}

function decoderOptions(r: Rng): DecoderOptions {
  return { fromServer: r.bool(), maxTrailerBytes: r.bool(0.8) ? 65536 : r.range(0, 64) };
}

// ---------------------------------------------------------------------------
// Chunked bodies: properties.

Deno.test("fuzz http1: valid chunked bodies decode the same in any reads, as generated", () => {
  forAll("chunked: incremental = whole = model", { seed: 0xc4c6, runs: 1500 }, (r) => {
    const m = genChunked(r);
    const bytes = latin1Encode(m.text);
    about(m.text, () => {
      // Sometimes a trailer limit right at the trailer section's size.
      const max = r.bool(0.7) ? 65536 : Math.max(0, m.trailerBytes + r.range(-2, 2));
      const fromServer = r.bool();
      const o = checkChunked(r, bytes, { fromServer, maxTrailerBytes: max });
      if (m.trailerBytes > max) {
        assert.equal(o.kind, "error");
        assert.match((o as { message: string }).message, /trailer section too large/);
      } else {
        assert.deepEqual(o, { kind: "done", consumed: m.end, data: m.data });
      }
    });
  });
});

Deno.test("fuzz http1: re-encoded chunks (writeChunkHeader, LAST_CHUNK) decode to the data", () => {
  forAll("chunked: encode then decode", { seed: 0xe4c0, runs: 500 }, (r) => {
    const pieces = Array.from({ length: r.range(0, 5) }, () => r.bytes(r.range(1, 300)));
    const out = new Uint8Array(pieces.reduce((a, p) => a + p.length + 20, 0) + 5);
    let o = 0;
    for (const p of pieces) {
      o = writeChunkHeader(out, o, p.length);
      out.set(p, o);
      o += p.length;
      out.set([13, 10], o);
      o += 2;
    }
    out.set(LAST_CHUNK, o);
    o += LAST_CHUNK.length;
    const want = new Uint8Array(pieces.flatMap((p) => [...p]));
    const opts = { fromServer: false, maxTrailerBytes: 65536 };
    assert.deepEqual(checkChunked(r, out.subarray(0, o), opts), {
      kind: "done",
      consumed: o,
      data: want,
    });
  });
});

function mutateChunked(r: Rng, text: string): string {
  let s = text;
  for (let k = r.range(1, 3); k > 0; k--) {
    const at = r.range(0, s.length);
    switch (r.int(7)) {
      case 0:
        if (s.length > 0) {
          const i = r.int(s.length);
          s = s.slice(0, i) + String.fromCharCode(r.int(256)) + s.slice(i + 1);
        }
        break;
      case 1:
      case 2: {
        const c = r.pick([
          "\r",
          "\n",
          "\x00",
          " ",
          "\t",
          ";",
          ":",
          "=",
          '"',
          "0",
          "f",
          "\r\n",
          "\x7f",
          String.fromCharCode(r.range(0x80, 0xff)),
        ]);
        s = s.slice(0, at) + c + s.slice(at);
        break;
      }
      case 3:
        s = s.slice(0, at) + s.slice(at + 1);
        break;
      case 4:
        s = s.slice(0, at);
        break;
      case 5: { // duplicate a stretch
        const j = Math.min(s.length, at + r.range(1, 12));
        s = s.slice(0, j) + s.slice(at, j) + s.slice(j);
        break;
      }
      default: { // a size line with a huge or odd size
        const size = r.pick([
          "ffffffffffffffffff",
          "20000000000000",
          "1fffffffffffff",
          "00000000000000001",
          "0000000000000001",
          "-1",
          "0x10",
          "+5",
          "",
          "1 ",
          "1\t;x",
        ]);
        s = s.slice(0, at) + size + "\r\n" + s.slice(at);
      }
    }
  }
  return s;
}

Deno.test("fuzz http1: mutated chunked bodies decode as the reference decoder does", () => {
  const kinds = { done: 0, incomplete: 0, error: 0 };
  forAll("chunked: mutations = reference", { seed: 0xc4c7, runs: 4000 }, (r) => {
    const m = genChunked(r);
    const text = mutateChunked(r, m.text);
    const bytes = latin1Encode(text);
    about(text, () => {
      const o = checkChunked(r, bytes, decoderOptions(r));
      kinds[o.kind]++;
      if (o.kind === "done") assert.ok(o.data.length <= o.consumed);
    });
  });
  for (const [k, n] of Object.entries(kinds)) assert.ok(n > 200, `only ${n} outcomes ${k}`);
});

Deno.test("fuzz http1: chunked bytes from a small alphabet decode as the reference does", () => {
  forAll("chunked: random = reference", { seed: 0xc4c8, runs: 3000 }, (r) => {
    const text = r.string(r.range(0, 60), r.pick(['0123456789aF\r\n;: \t=x"', "01\r\n"]));
    const bytes = latin1Encode(text);
    about(text, () => void checkChunked(r, bytes, decoderOptions(r)));
  });
});

Deno.test("fuzz http1: a chunk size over 2^53-1 or of more than 16 digits is an error", () => {
  forAll("chunked: size overflow", { seed: 0x0f10, runs: 800 }, (r) => {
    let hex: string;
    if (r.bool()) {
      // A value above 2^53-1 (some leading zeros, at most 16 digits in all).
      const digits = r.range(14, 16);
      hex = "0".repeat(r.range(0, 16 - digits));
      let v = "";
      do v = r.string(digits, HEX); while (BigInt("0x" + v) <= MAX_SAFE);
      hex += v;
    } else {
      // More than 16 digits, whatever their value (leading zeros included).
      hex = "0".repeat(r.range(0, 20)) + r.string(r.range(1, 24), HEX);
      if (hex.length <= 16) hex = "0".repeat(17 - hex.length) + hex;
    }
    const text = hex + r.pick(["", ";a=b", " ;x"]) + "\r\n" + latin1(r.bytes(r.range(0, 30)));
    const bytes = latin1Encode(text);
    about(text, () => {
      const o = checkChunked(r, bytes, { fromServer: false, maxTrailerBytes: 65536 });
      assert.equal(o.kind, "error");
      assert.match((o as { message: string }).message, /too large/);
    });
  });
});
