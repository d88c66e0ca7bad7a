/**
 * Helpers for the adversarial tests (tests/integration/attack_*_test.ts and
 * tests/e2e/attack_*_test.ts): a proxy in front of a real loopback origin
 * reachable under an allowed and a denied name, raw clients with bounded
 * waits, hand-made TLS ClientHellos, and a raw origin that records every
 * byte it receives.
 *
 * Every wait here is bounded; every address is loopback.
 *
 * @module
 */

import assert from "node:assert/strict";
import { addressForDial } from "../../lib/net/resolve.ts";
import { DestinationGuard } from "../../lib/net/guard.ts";
import { normaliseHost } from "../../lib/net/host.ts";
import type { AccessRecord } from "../../lib/proxy/mod.ts";
import {
  type DnsServer,
  type Origin,
  type RawOrigin,
  startDnsServer,
  startOrigin,
  startRawOrigin,
} from "./origin.ts";
import {
  RawClient,
  type RawResponse,
  startTestProxy,
  type TestProxy,
  type TestProxyOptions,
} from "./proxy.ts";

const enc = new TextEncoder();

/** A proxy, an origin reachable as allowed.test and denied.test, and a local DNS server. */
export interface AttackEnv {
  origin: Origin;
  dns: DnsServer;
  proxy: TestProxy;
  /** The origin's port (also the port of allowed.test and denied.test). */
  p: number;
  /** `allowed.test:P` (or the `names` option's allowed name). */
  allowed: string;
  /** `denied.test:P` (or the `names` option's denied name). */
  denied: string;
  close(): Promise<void>;
}

/** Options of {@linkcode startAttackEnv}. */
export interface AttackEnvOptions extends TestProxyOptions {
  /**
   * Extra rules; the defaults are allowed.test allow, denied.test deny. A
   * function gets the origin's port (for URL rules that name it).
   */
  extraRules?: Record<string, string> | ((p: number) => Record<string, string>);
  /** Replace the default rules entirely. */
  replaceRules?: Record<string, string>;
  /** Records of the local DNS server (name -> addresses). */
  dnsRecords?: Record<string, string[]>;
  /** Start a TLS origin instead of a plain one. */
  tlsOrigin?: boolean;
  /**
   * The names of the allowed and denied hosts, plus other names mapped to
   * the origin (no rule). @default {{ allowed: "allowed.test", denied: "denied.test" }}
   */
  names?: { allowed: string; denied: string; others?: string[] };
}

/**
 * Starts an origin, a DNS server (so no name ever reaches the real resolver)
 * and a proxy with `allowed.test` and `denied.test` mapped to the origin by
 * `--resolve`, rules `allowed.test: allow`, `denied.test: deny`, and no rule
 * meaning deny.
 */
export async function startAttackEnv(options: AttackEnvOptions = {}): Promise<AttackEnv> {
  const origin = await startOrigin({ tls: options.tlsOrigin, name: "origin" });
  const dns = await startDnsServer(options.dnsRecords ?? {});
  const p = origin.port;
  const { extraRules, replaceRules, dnsRecords: _d, tlsOrigin: _t, resolve, names, ...rest } =
    options;
  const allowed = names?.allowed ?? "allowed.test";
  const denied = names?.denied ?? "denied.test";
  const rules = replaceRules ?? {
    [allowed]: "allow",
    [denied]: "deny",
    ...(typeof extraRules === "function" ? extraRules(p) : extraRules),
  };
  const proxy = await startTestProxy({
    rules,
    nameServer: dns.nameServer,
    resolve: [
      [allowed, p, "127.0.0.1"],
      [denied, p, "127.0.0.1"],
      ...(names?.others ?? []).map((n): [string, number, string] => [n, p, "127.0.0.1"]),
      ...(resolve ?? []),
    ],
    ...rest,
  });
  return {
    origin,
    dns,
    proxy,
    p,
    allowed: `${allowed}:${p}`,
    denied: `${denied}:${p}`,
    async close() {
      await proxy.close();
      await origin.close();
      await dns.close();
    },
  };
}

/** What a raw attempt produced. */
export interface Attempt {
  /** Responses parsed, in order. */
  responses: RawResponse[];
  /** Bytes after the parsed responses, as text. */
  rest: string;
  /** True when the proxy closed the connection (within `closeMs`). */
  closed: boolean;
}

/** Options of {@linkcode attempt}. */
export interface AttemptOptions {
  /** Responses to read. @default {1} */
  responses?: number;
  /** Longest wait for the responses, ms. @default {5000} */
  ms?: number;
  /** Longest wait for the proxy to close after them, ms. @default {600} */
  closeMs?: number;
  /** Bytes are sent one write each this many bytes, with a pause (ms) between. */
  drip?: { size: number; pauseMs: number };
}

/**
 * Sends raw bytes to the proxy on a new connection, reads `responses`
 * responses, then waits (bounded) to see whether the proxy closes.
 * A response that does not arrive in time throws.
 */
export async function attempt(
  port: number,
  data: string | Uint8Array,
  opts: AttemptOptions = {},
): Promise<Attempt> {
  const c = await RawClient.connect(port);
  const want = opts.responses ?? 1;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    c.close();
  }, opts.ms ?? 5000);
  const responses: RawResponse[] = [];
  try {
    const bytes = typeof data === "string" ? latin1(data) : data;
    if (opts.drip) {
      for (let o = 0; o < bytes.length; o += opts.drip.size) {
        await c.send(bytes.subarray(o, o + opts.drip.size)).catch(() => {});
        await sleep(opts.drip.pauseMs);
      }
    } else {
      await c.send(bytes).catch(() => {});
    }
    for (let i = 0; i < want; i++) responses.push(await c.response());
  } catch (e) {
    clearTimeout(timer);
    c.close();
    throw new Error(
      `${timedOut ? "timed out" : "failed"} after ${responses.length} of ${want} responses: ${
        (e as Error).message
      }`,
    );
  }
  clearTimeout(timer);
  const closeMs = opts.closeMs ?? 600;
  let closeTimedOut = false;
  const t2 = setTimeout(() => {
    closeTimedOut = true;
    c.close();
  }, closeMs);
  const rest = await c.readToEnd(closeMs + 5000);
  clearTimeout(t2);
  c.close();
  return { responses, rest, closed: !closeTimedOut };
}

/** Sends bytes, expects the proxy to close without any response (bounded). */
export async function expectSilentClose(port: number, data: string | Uint8Array, ms = 3000) {
  const c = await RawClient.connect(port);
  let timedOut = false;
  const t = setTimeout(() => {
    timedOut = true;
    c.close();
  }, ms);
  await c.send(typeof data === "string" ? latin1(data) : data).catch(() => {});
  const text = await c.readToEnd(ms + 5000);
  clearTimeout(t);
  c.close();
  return { text, closed: !timedOut };
}

/**
 * Waits until `n` more records than `before` arrived, then a little longer,
 * and asserts there are exactly `n`: one record per request, no more.
 */
export async function newRecords(
  proxy: TestProxy,
  before: number,
  n: number,
): Promise<AccessRecord[]> {
  await proxy.waitRecords(before + n, 5000);
  await sleep(150);
  const got = proxy.records.slice(before);
  assert.equal(
    got.length,
    n,
    `expected exactly ${n} new record(s), got ${got.length}: ${JSON.stringify(got, null, 1)}`,
  );
  return got;
}

/** Paths the origin saw, in order. */
export function seenPaths(origin: Origin): string[] {
  return origin.requests.map((r) => r.path);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Encodes a string byte for byte (code units below 256), so tests can send any byte. */
export function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) throw new Error(`latin1: character U+${c.toString(16)} at ${i}`);
    out[i] = c;
  }
  return out;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ------------------------------------------------------------ TLS hellos

function u16(n: number): number[] {
  return [(n >> 8) & 255, n & 255];
}

function vec16(b: number[]): number[] {
  return [...u16(b.length), ...b];
}

/** Options of {@linkcode clientHello}. */
export interface HelloOptions {
  /** host_name entries of the server_name extension (none: no extension). */
  sni?: string[];
  /** Send the server_name extension twice, the second time with these names. */
  secondSniExtension?: string[];
  /** ALPN offers. */
  alpn?: string[];
  /** Extra extensions, `[type, data]`. */
  extensions?: [number, number[]][];
}

/** A TLS 1.2/1.3 ClientHello handshake message (type, length, body), built by hand. */
export function clientHello(opts: HelloOptions = {}): Uint8Array {
  const exts: number[] = [];
  const sniExt = (names: string[]) => {
    const list: number[] = [];
    for (const n of names) list.push(0, ...vec16([...enc.encode(n)]));
    exts.push(...u16(0), ...vec16(vec16(list)));
  };
  if (opts.sni) sniExt(opts.sni);
  if (opts.secondSniExtension) sniExt(opts.secondSniExtension);
  if (opts.alpn) {
    const list: number[] = [];
    for (const a of opts.alpn) list.push(a.length, ...enc.encode(a));
    exts.push(...u16(16), ...vec16(vec16(list)));
  }
  for (const [type, data] of opts.extensions ?? []) exts.push(...u16(type), ...vec16(data));
  const random = new Array(32).fill(7);
  const body = [
    0x03,
    0x03,
    ...random,
    0, // session id
    ...vec16([0x13, 0x01, 0xc0, 0x2f]), // cipher suites
    1,
    0, // compression: null
    ...vec16(exts),
  ];
  return new Uint8Array([
    1,
    (body.length >> 16) & 255,
    (body.length >> 8) & 255,
    body.length & 255,
    ...body,
  ]);
}

/**
 * Wraps a handshake message in TLS records; `fragment` splits it into records
 * of at most that many bytes (a legal but unusual fragmentation).
 */
export function tlsRecords(message: Uint8Array, fragment = 16384): Uint8Array {
  const out: number[] = [];
  for (let o = 0; o < message.length; o += fragment) {
    const part = message.subarray(o, o + fragment);
    out.push(22, 3, 1, ...u16(part.length), ...part);
  }
  return new Uint8Array(out);
}

/** A raw origin that records every byte each connection sends it. */
export interface RecordingOrigin extends RawOrigin {
  /** Bytes received, one entry per connection (in accept order). */
  received: Uint8Array[];
  /** Connections accepted. */
  readonly accepted: number;
}

/**
 * Starts a raw TCP origin that records what it receives. `reply` (if given)
 * is written once the first bytes arrived.
 */
export function startRecordingOrigin(
  reply?: (first: Uint8Array) => Uint8Array | undefined,
): RecordingOrigin {
  const received: Uint8Array[] = [];
  let accepted = 0;
  const origin = startRawOrigin(async (conn) => {
    const i = accepted++;
    received[i] = new Uint8Array(0);
    const buf = new Uint8Array(65536);
    let replied = false;
    const deadline = setTimeout(() => conn.close(), 10_000);
    try {
      while (true) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        received[i] = concat(received[i], buf.slice(0, n));
        if (reply && !replied) {
          replied = true;
          const r = reply(received[i]);
          if (r) await conn.write(r).catch(() => 0);
        }
      }
    } finally {
      clearTimeout(deadline);
    }
  });
  return {
    port: origin.port,
    close: () => origin.close(),
    received,
    get accepted() {
      return accepted;
    },
  };
}

/**
 * Safety check before sending a protected-address spelling through the
 * proxy: the proxy's own guard must already refuse it, so a bug elsewhere
 * can at worst make the proxy dial loopback, never the network.
 */
export function assertGuardRefuses(spelling: string, port: number): void {
  const host = normaliseHost(spelling);
  const address = addressForDial(host);
  const cls = new DestinationGuard({ listenAddress: "127.0.0.1", listenPort: 1 }).check(
    address,
    port,
    false,
  );
  assert.ok(cls !== undefined, `${spelling} (${address}) is not protected: refusing to send it`);
}

/**
 * SHA-256("HelloRetryRequest"): the random that makes a ServerHello a TLS 1.3
 * HelloRetryRequest (RFC 8446 4.1.3), written out here independently of lib/.
 */
// deno-fmt-ignore
export const HRR_RANDOM: number[] = [
  0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
  0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
