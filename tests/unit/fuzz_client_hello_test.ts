/**
 * Property-based tests of the TLS ClientHello parser (lib/tls/client_hello.ts),
 * its SNI policy in the proxy (`sniProblem`) and the record framing check
 * (lib/tls/record_stream.ts). Deterministic: seeded, bounded iterations.
 */
import assert from "node:assert/strict";
import {
  type ClientHello,
  ClientHelloError,
  parseClientHello,
} from "../../lib/tls/client_hello.ts";
import { TlsRecordError, TlsRecordStream } from "../../lib/tls/record_stream.ts";
import { sniProblem } from "../../lib/proxy/connect.ts";
import { normaliseHost } from "../../lib/net/host.ts";
import { forAll, type Rng } from "../_helpers/fuzz.ts";

// ---------------------------------------------------------------------------
// A model of a ClientHello and its encoder.

interface Ext {
  type: number;
  body: Uint8Array;
}

interface HelloModel {
  version: number;
  sessionId: Uint8Array;
  suites: number[];
  compression: number[];
  /** undefined: no extensions block at all (SSL-era hello). */
  exts?: Ext[];
  /** What the parser must report. */
  want: { serverName?: string; alpn: string[]; offersTls13: boolean };
}

const enc = new TextEncoder();

function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff];
}

function vec(lenBytes: 1 | 2, body: ArrayLike<number>): number[] {
  const len = lenBytes === 1 ? [body.length] : u16(body.length);
  return [...len, ...Array.from(body)];
}

function latin1(b: ArrayLike<number>): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/** A server_name extension body: a list of (type, name) entries. */
function sniBody(entries: Array<[number, Uint8Array]>): Uint8Array {
  const list: number[] = [];
  for (const [t, name] of entries) list.push(t, ...vec(2, name));
  return new Uint8Array(vec(2, list));
}

function alpnBody(protocols: Uint8Array[]): Uint8Array {
  const list: number[] = [];
  for (const p of protocols) list.push(...vec(1, p));
  return new Uint8Array(vec(2, list));
}

function encodeBody(m: HelloModel): Uint8Array {
  const out: number[] = [
    ...u16(m.version),
    ...new Array(32).fill(0x5a),
    ...vec(1, m.sessionId),
    ...vec(2, m.suites.flatMap(u16)),
    ...vec(1, m.compression),
  ];
  if (m.exts !== undefined) {
    const exts: number[] = [];
    for (const e of m.exts) exts.push(...u16(e.type), ...vec(2, e.body));
    out.push(...vec(2, exts));
  }
  return new Uint8Array(out);
}

function handshake(body: Uint8Array): Uint8Array {
  const n = body.length;
  const out = new Uint8Array(4 + n);
  out.set([1, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  out.set(body, 4);
  return out;
}

/** Splits a handshake message over TLS records at the given fragment sizes. */
function recordsOf(msg: Uint8Array, sizes: number[], versions: number[]): Uint8Array {
  const out: number[] = [];
  let off = 0;
  sizes.forEach((size, i) => {
    out.push(22, 3, versions[i], ...u16(size), ...msg.subarray(off, off + size));
    off += size;
  });
  assert.equal(off, msg.length);
  return new Uint8Array(out);
}

const LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789";

/** A random valid DNS name (as clients send it: letters, digits, '-', maybe upper case). */
function hostName(r: Rng): string {
  const labels: string[] = [];
  const n = r.range(1, 5);
  for (let i = 0; i < n; i++) {
    const len = r.bool(0.1) ? r.range(30, 63) : r.range(1, 12);
    let label = r.string(len, LABEL_CHARS);
    if (len > 2 && r.bool(0.2)) {
      label = label[0] + r.string(len - 2, LABEL_CHARS + "-") + label[len - 1];
    }
    if (r.bool(0.1)) label = label.toUpperCase();
    labels.push(label);
  }
  if (r.bool(0.2)) labels.push(r.pick(["com", "test", "xn--p1ai", "io"]));
  return labels.join(".");
}

const KNOWN_OTHER_EXTS = [5, 10, 11, 13, 18, 21, 23, 27, 35, 45, 51, 65281, 17513];

/** A random valid ClientHello model. */
function randomHello(r: Rng): HelloModel {
  const version = r.pick([0x0303, 0x0303, 0x0301, 0x0302]);
  const sessionId = r.bytes(r.pick([0, 32, r.int(33)]));
  const suites = Array.from({ length: r.range(1, 40) }, () => r.int(65536));
  const compression = r.bool(0.9) ? [0] : Array.from({ length: r.range(1, 4) }, () => r.int(256));
  if (r.bool(0.05)) {
    return { version, sessionId, suites, compression, want: { alpn: [], offersTls13: false } };
  }
  const exts: Ext[] = [];
  const want: HelloModel["want"] = { alpn: [], offersTls13: false };
  if (r.bool(0.85)) {
    const name = hostName(r);
    want.serverName = name.toLowerCase();
    const entries: Array<[number, Uint8Array]> = [[0, enc.encode(name)]];
    // Unknown name types are skipped (RFC 6066); they may come before or after.
    for (let i = r.int(3) === 0 ? r.range(1, 2) : 0; i > 0; i--) {
      const other: [number, Uint8Array] = [r.range(1, 255), r.bytes(r.int(20))];
      if (r.bool()) entries.push(other);
      else entries.unshift(other);
    }
    exts.push({ type: 0, body: sniBody(entries) });
  }
  if (r.bool(0.7)) {
    const protocols = Array.from(
      { length: r.range(1, 5) },
      () =>
        r.bool(0.7)
          ? enc.encode(r.pick(["h2", "http/1.1", "h3", "spdy/3", "acme-tls/1"]))
          : r.bytes(r.range(1, 30)),
    );
    want.alpn = protocols.map(latin1);
    exts.push({ type: 16, body: alpnBody(protocols) });
  }
  if (r.bool(0.6)) {
    const versions = r.shuffle([0x0304, 0x0303, 0x0302, 0x7f1c, 0x0a0a].slice(0, r.range(1, 5)));
    want.offersTls13 = versions.includes(0x0304);
    exts.push({ type: 43, body: new Uint8Array(vec(1, versions.flatMap(u16))) });
  }
  const used = new Set(exts.map((e) => e.type));
  for (let i = r.int(8); i > 0; i--) {
    const type = r.pick([
      ...KNOWN_OTHER_EXTS,
      0x0a0a + 0x1010 * r.int(16), // GREASE
      r.int(65536),
    ]);
    if (used.has(type)) continue;
    used.add(type);
    let size = r.bool(0.3) ? 0 : r.range(1, 64);
    if (r.bool(0.03)) size = r.range(1000, 20000); // padding / post-quantum key share
    exts.push({ type, body: type === 21 ? new Uint8Array(size) : r.bytes(size) });
  }
  return { version, sessionId, suites, compression, exts: r.shuffle(exts), want };
}

/** The hello's records: fragment sizes at random (1..16384 each, at most `maxRecords`). */
function encodeRecords(r: Rng, m: HelloModel, maxRecords = 64): Uint8Array {
  const msg = handshake(encodeBody(m));
  const minRecords = Math.ceil(msg.length / 16384);
  const count = r.bool(0.4)
    ? minRecords
    : r.range(minRecords, Math.min(maxRecords, msg.length, minRecords + 20));
  let sizes: number[];
  for (;;) {
    const cuts = new Set<number>();
    while (cuts.size < count - 1) cuts.add(r.range(1, msg.length - 1));
    const points = [0, ...[...cuts].sort((a, b) => a - b), msg.length];
    sizes = points.slice(1).map((p, i) => p - points[i]);
    if (sizes.every((s) => s <= 16384)) break;
  }
  const versions = sizes.map((_, i) => i === 0 ? r.pick([0, 1, 1, 3]) : r.pick([1, 3]));
  return recordsOf(msg, sizes, versions);
}

/** Parses, and sorts the outcome: a result, "need more", or a typed error (anything else throws). */
function outcome(input: Uint8Array): ClientHello | "need" | ClientHelloError {
  try {
    return parseClientHello(input) ?? "need";
  } catch (e) {
    if (e instanceof ClientHelloError) return e;
    throw new Error(`untyped exception ${e} for input ${hexOf(input)}`, { cause: e });
  }
}

function hexOf(b: Uint8Array): string {
  const s = Array.from(b.subarray(0, 400), (x) => x.toString(16).padStart(2, "0")).join("");
  return b.length > 400 ? `${s}... (${b.length} bytes)` : s;
}

// ---------------------------------------------------------------------------
// An independent reference reading of the same bytes, for the differential
// properties: deliberately lenient (it rejects only what cannot be parsed at
// all), so that whatever the real parser accepts, it must read the same way.

interface Reference {
  /** Bytes of the records that carry the message. */
  length: number;
  /** Every host_name (type 0) entry of every server_name extension. */
  hostNames: Uint8Array[];
  serverNameExts: number;
  alpn: string[];
  offersTls13: boolean;
}

function referenceParse(input: Uint8Array): Reference | "need" | "bad" {
  const msg: number[] = [];
  let off = 0;
  let need = -1;
  while (need < 0 || msg.length < need) {
    if (input.length - off < 5) return "need";
    if (input[off] !== 22) return "bad";
    const len = (input[off + 3] << 8) | input[off + 4];
    if (input.length - off - 5 < len) return "need";
    for (let i = 0; i < len; i++) msg.push(input[off + 5 + i]);
    off += 5 + len;
    if (need < 0 && msg.length >= 4) need = 4 + ((msg[1] << 16) | (msg[2] << 8) | msg[3]);
  }
  let p = 4;
  const end = need;
  const take = (n: number, limit = end): number => {
    if (p + n > limit) throw new Error("short");
    const at = p;
    p += n;
    return at;
  };
  const u8 = (limit?: number) => msg[take(1, limit)];
  const u16r = (limit?: number) => {
    const at = take(2, limit);
    return (msg[at] << 8) | msg[at + 1];
  };
  const ref: Reference = {
    length: off,
    hostNames: [],
    serverNameExts: 0,
    alpn: [],
    offersTls13: false,
  };
  try {
    take(2 + 32);
    take(u8());
    take(u16r());
    take(u8());
    if (p === end) return ref;
    const extsEnd = p + 2 + ((msg[p] << 8) | msg[p + 1]);
    take(2);
    if (extsEnd > end) return "bad";
    while (p < extsEnd) {
      const type = u16r(extsEnd);
      const extEnd = p + 2 + ((msg[p] << 8) | msg[p + 1]);
      take(2, extsEnd);
      if (extEnd > extsEnd) return "bad";
      if (type === 0) {
        ref.serverNameExts++;
        const listEnd = p + 2 + ((msg[p] << 8) | msg[p + 1]);
        take(2, extEnd);
        if (listEnd > extEnd) return "bad";
        while (p < listEnd) {
          const t = u8(listEnd);
          const n = u16r(listEnd);
          const at = take(n, listEnd);
          if (t === 0) ref.hostNames.push(new Uint8Array(msg.slice(at, at + n)));
        }
      } else if (type === 16) {
        const listEnd = p + 2 + ((msg[p] << 8) | msg[p + 1]);
        take(2, extEnd);
        if (listEnd > extEnd) return "bad";
        while (p < listEnd) {
          const n = u8(listEnd);
          ref.alpn.push(latin1(msg.slice(take(n, listEnd), p)));
        }
      } else if (type === 43) {
        const listEnd = p + 1 + msg[p];
        take(1, extEnd);
        if (listEnd > extEnd) return "bad";
        while (p < listEnd) if (u16r(listEnd) === 0x0304) ref.offersTls13 = true;
      }
      p = extEnd;
    }
  } catch {
    return "bad";
  }
  return ref;
}

/** The SNI the real parser may report for what the reference read, or "reject". */
function allowedSni(ref: Reference): string | undefined | "reject" {
  if (ref.serverNameExts > 1 || ref.hostNames.length > 1) return "reject";
  if (ref.hostNames.length === 0) return undefined;
  const name = ref.hostNames[0];
  if (name.length === 0) return "reject";
  if (!/^[A-Za-z0-9._-]+$/.test(latin1(name))) return "reject";
  return latin1(name).toLowerCase();
}

/** Checks a real outcome against the reference reading of the same bytes. */
function checkAgainstReference(input: Uint8Array, got: ReturnType<typeof outcome>): void {
  if (got instanceof ClientHelloError) return; // failing closed is always allowed
  const ref = referenceParse(input);
  if (got === "need") {
    // Waiting for bytes that the message does not need would stall the tunnel
    // until the hello timeout: the reference must need them too (or the
    // framing is broken beyond reading, which the parser may notice later).
    assert.notEqual(typeof ref, "object", `need more, but the message is complete`);
    return;
  }
  assert.equal(typeof ref, "object", `a result for input the reference reads as ${ref}`);
  const r = ref as Reference;
  const sni = allowedSni(r);
  assert.notEqual(sni, "reject", `SNI accepted from ${r.hostNames.map(latin1)}`);
  assert.equal(got.serverName, sni);
  assert.deepEqual(got.alpn, r.alpn);
  assert.equal(got.offersTls13, r.offersTls13);
  assert.equal(got.length, r.length);
  assert.ok(got.length <= input.length);
}

// ---------------------------------------------------------------------------

Deno.test("fuzz client hello: random valid hellos parse exactly, whatever the record splits", () => {
  forAll("valid hello", { seed: 0xc11e47, runs: 400 }, (r) => {
    const m = randomHello(r);
    const bytes = encodeRecords(r, m);
    const hello = parseClientHello(bytes);
    assert.ok(hello, "a whole hello is a result");
    assert.equal(hello.serverName, m.want.serverName);
    assert.deepEqual(hello.alpn, m.want.alpn);
    assert.equal(hello.offersTls13, m.want.offersTls13);
    assert.equal(hello.version, m.version);
    assert.equal(hello.length, bytes.length);
    // Bytes after it (the client's next records) are not part of it.
    const more = new Uint8Array([...bytes, ...r.bytes(r.range(1, 40))]);
    const again = parseClientHello(more);
    assert.equal(again?.length, bytes.length);
    assert.equal(again?.serverName, m.want.serverName);
    checkAgainstReference(bytes, hello);
  });
});

Deno.test("fuzz client hello: every prefix of a valid hello needs more bytes", () => {
  forAll("prefixes", { seed: 0x9ef1, runs: 250 }, (r) => {
    const bytes = encodeRecords(r, randomHello(r));
    // Record boundaries and their neighbours, plus random cut points; all of
    // them for short hellos.
    const cuts = new Set<number>();
    if (bytes.length <= 300) { for (let i = 0; i < bytes.length; i++) cuts.add(i); }
    else {
      for (let i = 0; i < 6; i++) cuts.add(i);
      for (let i = 0; i < 40; i++) cuts.add(r.int(bytes.length));
      for (let i = 1; i <= 6; i++) cuts.add(bytes.length - i);
    }
    for (const cut of cuts) {
      assert.equal(parseClientHello(bytes.subarray(0, cut)), undefined, `prefix of ${cut} bytes`);
    }
    // Fed as it arrives, in random segments: "need more" until the last one.
    const buf: number[] = [];
    let off = 0;
    while (off < bytes.length) {
      const n = Math.min(bytes.length - off, r.bool(0.3) ? r.range(1, 4) : r.range(1, 400));
      buf.push(...bytes.subarray(off, off + n));
      off += n;
      const res = parseClientHello(new Uint8Array(buf));
      if (off < bytes.length) assert.equal(res, undefined, `after ${off} bytes`);
      else assert.equal(res?.length, bytes.length);
    }
  });
});

/** A random change to the bytes: flips, overwrites, cuts, inserts, length fields. */
function mutate(r: Rng, input: Uint8Array): Uint8Array {
  const b = [...input];
  for (let k = r.range(1, 4); k > 0; k--) {
    if (b.length === 0) b.push(r.int(256));
    const at = r.int(b.length);
    switch (r.int(8)) {
      case 0:
        b[at] ^= 1 << r.int(8);
        break;
      case 1:
        b[at] = r.pick([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, r.int(256)]);
        break;
      case 2:
        b.length = r.int(b.length + 1); // truncate
        break;
      case 3:
        b.splice(at, 0, ...r.bytes(r.range(1, 8)));
        break;
      case 4:
        b.splice(at, r.range(1, 8));
        break;
      case 5: {
        // a 16-bit length field off by a little, or huge
        const v = ((b[at] << 8) | (b[at + 1] ?? 0)) + r.pick([-2, -1, 1, 2, 0x8000]);
        b[at] = (v >> 8) & 0xff;
        if (at + 1 < b.length) b[at + 1] = v & 0xff;
        break;
      }
      case 6: {
        // duplicate a slice (a repeated extension or entry, roughly)
        const len = r.range(1, 40);
        b.splice(at, 0, ...b.slice(at, at + len));
        break;
      }
      default:
        b.push(...r.bytes(r.range(1, 10)));
    }
  }
  return new Uint8Array(b);
}

Deno.test("fuzz client hello: mutated hellos give a result, need more, or a ClientHelloError", () => {
  forAll("mutations", { seed: 0x3a7e, runs: 3000 }, (r) => {
    const bytes = encodeRecords(r, randomHello(r), 8);
    const input = mutate(r, bytes);
    const got = outcome(input);
    checkAgainstReference(input, got);
  });
});

Deno.test("fuzz client hello: random bytes behind a handshake record header never crash it", () => {
  forAll("random bodies", { seed: 0xb0d1e5, runs: 3000 }, (r) => {
    const body = r.bytes(r.int(300));
    // A plausible start, so that the body parser is reached often.
    const prefix = r.bool(0.7) ? [1, 0, (body.length >> 8) & 0xff, body.length & 0xff, 3, 3] : [];
    const msg = new Uint8Array([...prefix, ...body]);
    const input = msg.length === 0 ? msg : recordsOf(msg, [msg.length], [r.pick([1, 3])]);
    checkAgainstReference(input, outcome(input));
  });
});

// ---------------------------------------------------------------------------
// The SNI policy: every tricky spelling is either refused by the parser or
// compared after normalisation, and only the CONNECT host itself passes.

const TRICKY_NAMES: string[] = [
  "a.test",
  "A.TEST",
  "a.test.",
  "a.test..",
  ".a.test",
  ".",
  "..",
  "a..test",
  "a.test\0",
  "a.test\0.evil.test",
  "\0",
  "a.test:443",
  "a.test:80",
  "a .test",
  "a.test ",
  " a.test",
  "a/test",
  "a\\test",
  "a@a.test",
  "a%2etest",
  "xn--bcher-kva.test",
  "b\u00fccher.test",
  "a.test\u3002",
  "a\u3002test",
  "_a.test",
  "-a.test",
  "a-.test",
  "127.0.0.1",
  "0x7f.1",
  "2130706433",
  "[::1]",
  "::1",
  "a".repeat(64) + ".test",
  "a.".repeat(130) + "test",
  "evil.test",
  "a.test.evil.test",
  "evila.test",
  "",
];

const CONNECT_HOSTS = ["a.test", "evil.test", "xn--bcher-kva.test", "127.0.0.1", "[::1]"];

function utf8OrLatin1(r: Rng, s: string): Uint8Array {
  // Non-ASCII in either encoding: a parser must refuse both.
  return r.bool() ? enc.encode(s) : new Uint8Array(Array.from(s, (c) => c.charCodeAt(0) & 0xff));
}

Deno.test("fuzz client hello: tricky SNI names fail closed against the CONNECT host", () => {
  forAll("tricky SNI", { seed: 0x5e1, runs: 1500 }, (r) => {
    const base = r.pick(TRICKY_NAMES);
    let name = base;
    // Random case changes, and sometimes a random character somewhere.
    name = Array.from(name, (c) => r.bool(0.2) ? c.toUpperCase() : c).join("");
    if (r.bool(0.3)) {
      const at = r.int(name.length + 1);
      const ch = String.fromCharCode(r.pick([0, 9, 10, 13, 32, 35, 37, 46, 47, 58, 64, 92, 0xe9]));
      name = name.slice(0, at) + ch + name.slice(at);
    }
    const nameBytes = utf8OrLatin1(r, name);
    const m = randomHello(r);
    m.exts ??= [];
    m.exts = m.exts.filter((e) => e.type !== 0);
    m.exts.splice(r.int(m.exts.length + 1), 0, { type: 0, body: sniBody([[0, nameBytes]]) });
    const bytes = encodeRecords(r, m);
    const got = outcome(bytes);
    checkAgainstReference(bytes, got);
    if (got === "need") throw new Error("a whole hello needs more");
    const ascii = /^[A-Za-z0-9._-]+$/.test(latin1(nameBytes));
    if (got instanceof ClientHelloError) {
      assert.ok(!ascii, `refused a DNS-character name ${JSON.stringify(name)}: ${got.message}`);
      return;
    }
    assert.ok(ascii, `accepted ${JSON.stringify(name)}`);
    const sni: string = latin1(nameBytes).toLowerCase();
    assert.equal(got.serverName, sni);
    for (const host of CONNECT_HOSTS) {
      const problem = sniProblem(got, host);
      if (problem !== undefined) continue;
      // Accepted: the SNI names exactly that host (case and one trailing dot
      // aside), or spells the same IP address.
      const sameName: boolean = sni.replace(/\.$/, "") === host;
      let sameIp = false;
      try {
        sameIp = /^[\d.]+$|^\[/.test(host) && normaliseHost(sni) === host;
      } catch {
        // not a host at all: sameIp stays false
      }
      assert.ok(sameName || sameIp, `SNI ${JSON.stringify(sni)} passed for ${host}`);
    }
  });
});

Deno.test("fuzz client hello: two server_name extensions or two host_names are refused", () => {
  forAll("double SNI", { seed: 0xd0b1e, runs: 300 }, (r) => {
    const m = randomHello(r);
    m.exts = (m.exts ?? []).filter((e) => e.type !== 0);
    const first = enc.encode(hostName(r));
    const second = enc.encode(r.bool() ? hostName(r) : latin1(first));
    const bodies = r.bool()
      ? [sniBody([[0, first]]), sniBody([[0, second]])] // two extensions
      : [sniBody(r.shuffle([[0, first], [0, second], [r.range(1, 255), r.bytes(4)]]))]; // one, two names
    for (const body of bodies) m.exts.splice(r.int(m.exts.length + 1), 0, { type: 0, body });
    const got = outcome(encodeRecords(r, m));
    assert.ok(got instanceof ClientHelloError, `accepted: ${JSON.stringify(got)}`);
  });
});

// ---------------------------------------------------------------------------
// The record framing check of relayed tunnels.

function randomRecords(r: Rng): { bytes: Uint8Array; starts: number[] } {
  const out: number[] = [];
  const starts: number[] = [];
  for (let n = r.range(1, 30); n > 0; n--) {
    starts.push(out.length);
    const len = r.bool(0.05) ? r.range(16384, 16384 + 2048) : r.int(300);
    out.push(r.range(20, 24), 3, r.range(0, 4), ...u16(len), ...r.bytes(len));
  }
  return { bytes: new Uint8Array(out), starts };
}

function pushSplit(r: Rng, stream: TlsRecordStream, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) {
    const n = Math.min(bytes.length - off, r.bool(0.3) ? r.range(1, 6) : r.range(1, 3000));
    stream.push(bytes.subarray(off, off + n));
    off += n;
  }
}

Deno.test("fuzz record stream: valid records, split anywhere, are accepted and counted", () => {
  forAll("record stream", { seed: 0x7ec0, runs: 300 }, (r) => {
    const { bytes, starts } = randomRecords(r);
    const s = new TlsRecordStream();
    pushSplit(r, s, bytes);
    assert.equal(s.records, starts.length);
  });
});

Deno.test("fuzz record stream: a bad header is a TlsRecordError at its offset, however split", () => {
  forAll("bad record header", { seed: 0xbad5, runs: 1000 }, (r) => {
    const { bytes, starts } = randomRecords(r);
    const k = r.int(starts.length);
    const at = starts[k];
    const b = bytes.slice();
    switch (r.int(3)) {
      case 0:
        b[at] = r.pick([0, 19, 25, 0x47, 0xff]); // content type
        break;
      case 1:
        b[at + r.pick([1, 2])] = r.pick([0, 2, 5, 0xff]); // version
        if (b[at + 1] === 3 && b[at + 2] <= 4) b[at + 1] = 4;
        break;
      default: {
        const len = r.range(16384 + 2049, 65535); // too long
        b[at + 3] = len >> 8;
        b[at + 4] = len & 0xff;
      }
    }
    const s = new TlsRecordStream();
    let err: unknown;
    try {
      pushSplit(r, s, b.subarray(0, at + 5 + r.int(10)));
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof TlsRecordError, `got ${err}`);
    assert.match(err.message, new RegExp(`at byte ${at} of the tunnel`));
    assert.equal(s.records, k);
  });
});

Deno.test("fuzz record stream: arbitrary bytes only ever throw TlsRecordError", () => {
  forAll("record stream garbage", { seed: 0x6a7b, runs: 800 }, (r) => {
    const { bytes } = randomRecords(r);
    const input = mutate(r, bytes);
    const whole = new TlsRecordStream();
    let wholeErr: string | undefined;
    try {
      whole.push(input);
    } catch (e) {
      if (!(e instanceof TlsRecordError)) throw e;
      wholeErr = e.message;
    }
    // Splitting never changes the verdict.
    const split = new TlsRecordStream();
    let splitErr: string | undefined;
    try {
      pushSplit(r, split, input);
    } catch (e) {
      if (!(e instanceof TlsRecordError)) throw e;
      splitErr = e.message;
    }
    assert.equal(splitErr, wholeErr);
    assert.equal(split.records, whole.records);
  });
});
