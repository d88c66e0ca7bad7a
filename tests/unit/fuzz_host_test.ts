/**
 * Property-based tests of host normalisation (lib/net/host.ts), the
 * destination guard's address classes (lib/net/guard.ts) and absolute-form
 * URL parsing (lib/net/url.ts).
 *
 * - Every spelling of an IPv4 address that the normaliser accepts (decimal,
 *   octal, hex, 1-4 parts, trailing dot, full-width digits, IPv4-mapped IPv6)
 *   becomes the same dotted-decimal host, and the guard treats every spelling
 *   alike.
 * - Every textual form of an IPv6 address (compressed anywhere, expanded,
 *   mixed case, embedded IPv4, with or without brackets) becomes one
 *   RFC 5952 form; zone ids are refused.
 * - Random strings only ever make the parsers throw their own error types,
 *   and what they accept is canonical (normalising again changes nothing).
 * - Absolute-form URLs: parse, format and parse again is a fixed point;
 *   userinfo, bad ports, empty hosts, backslashes, percent-encoded hosts and
 *   fragments are refused.
 *
 * Deterministic (seeded, bounded); a failure prints FUZZ_SEED to replay it.
 */
import assert from "node:assert/strict";
import {
  addressKey,
  classifyAddress,
  DestinationGuard,
  parseIPv4,
  parseIPv6,
} from "../../lib/net/guard.ts";
import {
  formatAuthority,
  HostError,
  isIpLiteral,
  normaliseHost,
  parseAuthority,
} from "../../lib/net/host.ts";
import { addressForDial } from "../../lib/net/resolve.ts";
import { formatUrl, normalisePath, parseAbsoluteForm, TargetError } from "../../lib/net/url.ts";
import { forAll, type Rng } from "../_helpers/fuzz.ts";

// ---------------------------------------------------------------------------
// Helpers.

/** Runs `fn`; a failure names the input. */
function about<T>(input: unknown, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const detail = e instanceof Error ? e.stack ?? e.message : String(e);
    throw new Error(`input ${JSON.stringify(input)}\n${detail}`, { cause: e });
  }
}

/** `fn()`'s result, or the error when it is one of `types`; any other error fails. */
function attempt<T>(fn: () => T, ...types: (new (...a: never[]) => Error)[]): T | Error {
  try {
    return fn();
  } catch (e) {
    if (types.some((t) => e instanceof t)) return e as Error;
    throw new Error(
      `threw ${e instanceof Error ? e.name : typeof e}, not ${types.map((t) => t.name)}`,
      { cause: e },
    );
  }
}

function randomCase(r: Rng, s: string): string {
  let out = "";
  for (const c of s) out += r.bool() ? c.toUpperCase() : c.toLowerCase();
  return out;
}

function dotted(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The guard the proxy would build: loopback listener, a LAN and a container network. */
function testGuard(): DestinationGuard {
  return new DestinationGuard({
    listenAddress: "127.0.0.1",
    listenPort: 8080,
    interfaceAddresses: ["192.168.5.5", "10.1.2.3", "fe80::5"],
    containerNetworks: ["172.17.0.1/16", "fd12:3456::1/64"],
  });
}

/** What the proxy decides for a host: the address it dials, and the guard's verdicts. */
function verdicts(guard: DestinationGuard, host: string) {
  const address = addressForDial(host);
  return {
    cls: classifyAddress(address),
    key: addressKey(address),
    p80: guard.check(address, 80, false),
    p8080: guard.check(address, 8080, false),
    exempt8080: guard.check(address, 8080, true),
  };
}

// ---------------------------------------------------------------------------
// IPv4 spellings.

/** An IPv4 address, often from a range the guard cares about. */
function interestingV4(r: Rng): number {
  const b = () => r.int(256);
  const pick = r.int(14);
  const parts = [
    [127, b(), b(), b()],
    [0, b(), b(), b()],
    [10, b(), b(), b()],
    [169, 254, b(), b()],
    [172, r.range(16, 31), b(), b()],
    [172, 17, b(), b()],
    [192, 168, b(), b()],
    [r.range(224, 239), b(), b(), b()],
    [r.range(240, 255), b(), b(), b()],
    r.pick([[100, 100, 100, 200], [168, 63, 129, 16], [192, 168, 5, 5], [10, 1, 2, 3]]),
    r.pick([[0, 0, 0, 0], [0, 0, 0, 1], [255, 255, 255, 255], [127, 0, 0, 1]]),
    [b(), b(), b(), b()],
    [b(), b(), b(), b()],
    [b(), b(), b(), b()],
  ][pick];
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
}

/** One number as the WHATWG IPv4 parser reads it: decimal, octal (leading 0) or hex (0x). */
function spellNumber(r: Rng, n: number): string {
  switch (r.int(3)) {
    case 0:
      return String(n);
    case 1:
      return "0".repeat(r.range(1, 3)) + (n === 0 ? "" : n.toString(8));
    default: {
      const hex = n === 0 && r.bool(0.3) ? "" : "0".repeat(r.range(0, 2)) + n.toString(16);
      return r.pick(["0x", "0X"]) + randomCase(r, hex);
    }
  }
}

const FULL_WIDTH: Record<string, string> = {
  ".": "\uff0e",
  x: "\uff58",
  X: "\uff38",
};
for (let i = 0; i < 10; i++) FULL_WIDTH[String(i)] = String.fromCharCode(0xff10 + i);
for (const c of "abcdef") FULL_WIDTH[c] = String.fromCharCode(0xff41 + c.charCodeAt(0) - 0x61);
for (const c of "ABCDEF") FULL_WIDTH[c] = String.fromCharCode(0xff21 + c.charCodeAt(0) - 0x41);

/**
 * A spelling of the IPv4 address `n` as a host: 1-4 parts (the last one
 * holding the remaining bits), each in any base, maybe a trailing dot,
 * maybe in full-width characters or with ideographic full stops.
 */
function spellV4(r: Rng, n: number, ascii = false): string {
  const k = r.range(1, 4);
  const bytes = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  const parts = bytes.slice(0, k - 1);
  let last = 0;
  for (const x of bytes.slice(k - 1)) last = last * 256 + x;
  parts.push(last);
  let s = parts.map((p) => spellNumber(r, p)).join(".") + (r.bool(0.2) ? "." : "");
  if (!ascii && r.bool(0.1)) s = [...s].map((c) => FULL_WIDTH[c] ?? c).join("");
  if (!ascii && r.bool(0.05)) s = s.replaceAll(".", "\u3002");
  return s;
}

/** IPv4-mapped IPv6 spellings of `n` (`::ffff:a.b.c.d` and its hex forms). */
function spellMapped(r: Rng, n: number): string {
  const hi = (n >>> 16).toString(16);
  const lo = (n & 0xffff).toString(16);
  const pad = (h: string) => "0".repeat(r.range(0, 4 - h.length)) + h;
  const prefix = r.pick(["::", "0::", "0:0:0:0:0:", "0000:0000:0000:0000:0000:", "0:0::"]);
  const tail = r.bool() ? dotted(n) : `${pad(hi)}:${pad(lo)}`;
  const s = randomCase(r, `${prefix}${pad("ffff")}:${tail}`);
  return r.bool(0.7) ? `[${s}]` : s;
}

Deno.test("fuzz host: every accepted spelling of an IPv4 address is one host, one guard verdict", () => {
  const guard = testGuard();
  forAll("host: IPv4 spellings", { seed: 0x1b4, runs: 2500 }, (r) => {
    const n = interestingV4(r);
    const want = dotted(n);
    const expected = verdicts(guard, want);
    for (let k = 0; k < 4; k++) {
      const spelling = k === 3 ? spellMapped(r, n) : spellV4(r, n);
      about({ want, spelling }, () => {
        const host = normaliseHost(spelling);
        assert.equal(host, want);
        assert.equal(normaliseHost(host), host);
        assert.ok(isIpLiteral(host));
        assert.deepEqual(verdicts(guard, host), expected);
        // The same through a URL and an authority (as the proxy reads them).
        if (!/[\u3002\uff00-\uffff]/.test(spelling)) {
          const port = r.range(1, 65535);
          const bracketed = spelling.includes(":") && !spelling.startsWith("[")
            ? `[${spelling}]`
            : spelling;
          assert.deepEqual(parseAuthority(`${bracketed}:${port}`), { host: want, port });
          assert.equal(parseAbsoluteForm(`http://${bracketed}:${port}/x`).host, want);
        }
      });
    }
  });
});

Deno.test("fuzz host: IPv4-compatible and other embedding IPv6 forms get the IPv4 address's guard verdict", () => {
  const guard = testGuard();
  forAll("host: IPv4 embedded in IPv6", { seed: 0x1b5, runs: 1500 }, (r) => {
    const n = interestingV4(r);
    const v4 = verdicts(guard, dotted(n));
    const [prefix, sameClass] = r.pick(
      [
        ["::", n > 1], // IPv4-compatible (::0.0.0.1 is ::1, IPv6 loopback)
        ["::ffff:0:", true], // SIIT
        ["64:ff9b::", true], // NAT64
      ] as const,
    );
    const spelling = `[${prefix}${dotted(n)}]`;
    about(spelling, () => {
      const host = normaliseHost(spelling);
      assert.ok(host.startsWith("["), "stays an IPv6 literal (only IPv4-mapped is rewritten)");
      const got = verdicts(guard, host);
      assert.equal(got.key, v4.key, "the guard sees the IPv4 address");
      if (sameClass) {
        assert.deepEqual(got, v4);
      } else {
        // 0.0.0.0 and 0.0.0.1 as IPv4-compatible are :: and ::1: protected all the same.
        assert.notEqual(got.cls, undefined);
        assert.notEqual(got.p80, undefined);
      }
    });
  });
});

// ---------------------------------------------------------------------------
// IPv6 forms.

/** Eight 16-bit words, with runs of zeros (where `::` goes) and small values. */
function randomV6(r: Rng): number[] {
  const words = Array.from(
    { length: 8 },
    () => r.bool(0.45) ? 0 : r.bool(0.3) ? r.int(256) : r.int(65536),
  );
  switch (r.int(8)) {
    case 0:
      return [0, 0, 0, 0, 0, 0, 0, r.int(3)]; // ::, ::1, ::2
    case 1:
      return [0xfe80, 0, 0, 0, ...words.slice(4)]; // link-local
    case 2:
      return [0, 0, 0, 0, 0, 0xffff, words[6], words[7]]; // IPv4-mapped
    case 3:
      return [0xfd00, 0x0ec2, ...words.slice(2)]; // AWS metadata prefix
    case 4:
      return [0xff00 | r.int(256), ...words.slice(1)]; // multicast
    default:
      return words;
  }
}

/** The RFC 5952 text of `words` (what the WHATWG serialiser writes). */
function rfc5952(words: number[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (best < 0) return hex(words);
  return hex(words.slice(0, best)) + "::" + hex(words.slice(best + bestLen));
}

/** Another textual form of `words`: any zero run compressed or none, padding, case, IPv4 tail. */
function spellV6(r: Rng, words: number[]): string {
  const word = (w: number) => "0".repeat(r.range(0, 4 - w.toString(16).length)) + w.toString(16);
  const v4Tail = r.bool(0.25);
  const groups = (v4Tail ? words.slice(0, 6) : words).map(word);
  const tail = v4Tail ? [dotted(((words[6] << 16) >>> 0) + words[7])] : [];
  // Zero runs that `::` may replace (one group or more).
  const runs: [number, number][] = [];
  for (let i = 0; i < groups.length; i++) {
    for (let j = i; j < groups.length && words[j] === 0; j++) runs.push([i, j + 1]);
  }
  let s: string;
  if (runs.length > 0 && r.bool(0.8)) {
    const [a, b] = r.pick(runs);
    const left = groups.slice(0, a).join(":");
    const right = [...groups.slice(b), ...tail].join(":");
    s = `${left}::${right}`;
  } else {
    s = [...groups, ...tail].join(":");
  }
  s = randomCase(r, s);
  return r.bool(0.7) ? `[${s}]` : s;
}

Deno.test("fuzz host: every textual form of an IPv6 address normalises to one RFC 5952 form", () => {
  const guard = testGuard();
  forAll("host: IPv6 forms", { seed: 0x1b6, runs: 2500 }, (r) => {
    const words = randomV6(r);
    const mapped = words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff;
    const want = mapped ? dotted(((words[6] << 16) >>> 0) + words[7]) : `[${rfc5952(words)}]`;
    const bytes = new Uint8Array(words.flatMap((w) => [w >> 8, w & 255]));
    const expected = verdicts(guard, want);
    for (let k = 0; k < 4; k++) {
      const spelling = spellV6(r, words);
      about({ want, spelling }, () => {
        const host = normaliseHost(spelling);
        assert.equal(host, want);
        assert.equal(normaliseHost(host), host);
        assert.deepEqual(parseIPv6(spelling), bytes, "the guard's own IPv6 parser agrees");
        assert.deepEqual(verdicts(guard, host), expected);
        assert.deepEqual(verdicts(guard, spelling.replace(/^\[|\]$/g, "")), expected);
        const bracketed = spelling.startsWith("[") ? spelling : `[${spelling}]`;
        assert.deepEqual(parseAuthority(`${bracketed}:443`), { host: want, port: 443 });
        // A zone id is refused, in every spelling (it would name an interface).
        const zoned = bracketed.slice(0, -1) + r.pick(["%25eth0", "%eth0", "%1", "%25"]) + "]";
        assert.ok(attempt(() => normaliseHost(zoned), HostError) instanceof HostError);
      });
    }
  });
});

// ---------------------------------------------------------------------------
// Random strings.

const HOST_CHARS = [
  ..."0123456789abcdefxX.:[]%-_",
  ..."0123456789....::",
  ..."@/\\?# \t\x00\x7f",
  "\u00fc",
  "\u3002",
  "\uff11",
  "\uff0e",
  "\u00ad",
  "\u200b",
  "\ufeff",
  "\ud800",
  "xn--",
  "ffff",
  "0x",
  "127",
  "255",
  "4294967295",
];

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** What must hold for every host the normaliser returns. */
function checkCanonicalHost(h: string): void {
  assert.equal(normaliseHost(h), h, "normalising again changes nothing");
  if (h.startsWith("[")) {
    assert.ok(h.endsWith("]") && !h.includes("%"), "a bracketed IPv6 literal, no zone");
    const b = parseIPv6(h);
    assert.ok(b !== undefined, "the guard can read it");
    assert.ok(!(b.slice(0, 10).every((x) => x === 0) && b[10] === 255 && b[11] === 255));
    assert.ok(isIpLiteral(h));
    return;
  }
  assert.ok(h.length >= 1 && h.length <= 253);
  const labels = h.split(".");
  for (const l of labels) assert.match(l, LABEL);
  const last = labels[labels.length - 1];
  // A host whose last label is a number is an IPv4 address, never a name to look up.
  if (/^(?:\d+|0x[0-9a-f]*)$/.test(last)) {
    assert.ok(parseIPv4(h) !== undefined, "numeric host is dotted-decimal IPv4");
    assert.ok(isIpLiteral(h));
  } else {
    assert.ok(!isIpLiteral(h));
  }
}

Deno.test("fuzz host: random strings normalise to a canonical host or throw HostError", () => {
  forAll("host: random strings", { seed: 0x1b7, runs: 4000 }, (r) => {
    const s = Array.from({ length: r.range(0, 14) }, () => r.pick(HOST_CHARS)).join("");
    about(s, () => {
      const h = attempt(() => normaliseHost(s), HostError);
      if (!(h instanceof Error)) checkCanonicalHost(h);
      const a = attempt(() => parseAuthority(s, r.pick([undefined, 80, 443])), HostError);
      if (!(a instanceof Error)) {
        checkCanonicalHost(a.host);
        assert.ok(Number.isInteger(a.port) && a.port >= 1 && a.port <= 65535);
        assert.deepEqual(parseAuthority(formatAuthority(a.host, a.port)), a);
      }
      const u = attempt(() => parseAbsoluteForm(`http://${s}/`), TargetError);
      if (!(u instanceof Error)) checkCanonicalHost(u.host);
      // A dialable answer is an IP literal the guard can classify.
      const d = attempt(() => addressForDial(s), HostError);
      if (!(d instanceof Error)) {
        assert.ok(parseIPv4(d) !== undefined || parseIPv6(d) !== undefined);
      }
    });
  });
});

// ---------------------------------------------------------------------------
// Absolute-form URLs.

const UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
const PATH_CHARS = UNRESERVED + "!$&'()*+,;=:@";

function randomDomain(r: Rng): string {
  const label = () => {
    const s = r.string(r.range(1, 10), "abcdefghijklmnopqrstuvwxyz0123456789-_");
    return s.replace(/^-+|-+$/g, "") || "a";
  };
  const labels = Array.from({ length: r.range(1, 4) }, label);
  // The last label of a name is not a number (that would be an IPv4 address).
  if (/^(?:\d+|0x[0-9a-f]*)$/i.test(labels[labels.length - 1])) labels.push("test");
  return randomCase(r, labels.join(".")) + (r.bool(0.1) ? "." : "");
}

function randomUrlHost(r: Rng): string {
  switch (r.int(4)) {
    case 0:
      return spellV4(r, interestingV4(r), true);
    case 1: {
      const s = spellV6(r, randomV6(r));
      return s.startsWith("[") ? s : `[${s}]`;
    }
    default:
      return randomDomain(r);
  }
}

function randomPath(r: Rng): string {
  const segment = () => {
    switch (r.int(6)) {
      case 0:
        return r.pick([".", "..", "%2e", "%2E%2e", ".%2e", ""]);
      case 1:
        return "%" + r.string(2, "0123456789abcdefABCDEF");
      default:
        return r.string(r.range(0, 8), PATH_CHARS);
    }
  };
  const path = Array.from({ length: r.range(0, 5) }, () => "/" + segment()).join("");
  const query = r.bool(0.3) ? "?" + r.string(r.range(0, 10), PATH_CHARS + "/?%") : "";
  return path + query;
}

function randomUrl(r: Rng): { url: string; scheme: string; authority: string; rest: string } {
  const scheme = randomCase(r, r.pick(["http", "https"]));
  const h = randomUrlHost(r);
  let port = "";
  if (r.bool(0.5)) {
    const p = String(r.bool(0.2) ? r.pick([80, 443]) : r.range(1, 65535));
    port = ":" + "0".repeat(r.range(0, 5 - p.length)) + p;
  }
  const authority = h + port;
  const rest = randomPath(r);
  return { url: `${scheme}://${authority}${rest}`, scheme, authority, rest };
}

Deno.test("fuzz url: absolute-form URLs parse, format and parse again to the same target", () => {
  forAll("url: round trip", { seed: 0x0e1, runs: 2500 }, (r) => {
    const u = randomUrl(r);
    about(u.url, () => {
      const p = parseAbsoluteForm(u.url);
      const scheme = u.scheme.toLowerCase();
      assert.equal(p.scheme, scheme);
      const want = parseAuthority(u.authority, scheme === "http" ? 80 : 443);
      assert.equal(p.host, want.host);
      assert.equal(p.port, want.port);
      assert.equal(
        p.path,
        normalisePath(u.rest === "" ? "/" : u.rest.startsWith("?") ? "/" + u.rest : u.rest),
      );
      assert.equal(normalisePath(p.path), p.path, "the forwarded path is already normal");
      const formatted = formatUrl(p.scheme, p.host, p.port, p.path);
      assert.deepEqual(parseAbsoluteForm(formatted), p);
      const again = parseAbsoluteForm(formatted);
      assert.equal(formatUrl(again.scheme, again.host, again.port, again.path), formatted);
    });
  });
});

Deno.test("fuzz url: userinfo, bad ports, empty hosts, backslashes, %-hosts, fragments are refused", () => {
  forAll("url: refusals", { seed: 0x0e2, runs: 2500 }, (r) => {
    const u = randomUrl(r);
    const hostPart = u.authority.replace(/:\d+$/, "");
    const scheme = u.scheme;
    const bad = r.pick([
      () =>
        `${scheme}://${r.pick(["user", "user:pw", ":pw", "", "a%40b"])}@${u.authority}${u.rest}`,
      () => `${scheme}://${hostPart}:${r.pick(["0", "00", "00000", "65536", "99999"])}${u.rest}`,
      // More than five digits, even when the value is a valid port (leading zeros).
      () =>
        `${scheme}://${hostPart}:${
          String(r.range(1, 65535)).padStart(r.range(6, 8), "0")
        }${u.rest}`,
      () => `${scheme}://${hostPart}:${r.range(65536, 9999999)}${u.rest}`,
      () => `${scheme}://${r.pick(["", ":80", ":", "[]", "[]:80", "."])}${u.rest}`,
      () => {
        const s = u.url;
        const from = s.indexOf("//") + 2;
        const at = r.range(from, s.length);
        return s.slice(0, at) + "\\" + s.slice(at);
      },
      () => {
        const i = r.int(hostPart.length + 1);
        const esc = r.pick(["%2e", "%41", "%00", "%25", "%5b", "%"]);
        return `${scheme}://${hostPart.slice(0, i)}${esc}${hostPart.slice(i)}${u.rest}`;
      },
      () => `${u.url}${u.rest === "" ? "/" : ""}#${r.string(r.range(0, 5), PATH_CHARS)}`,
      () => `${r.pick(["ftp", "file", "ws", "httpx", "h"])}://${u.authority}${u.rest}`,
    ])();
    about(bad, () => {
      const e = attempt(() => parseAbsoluteForm(bad), TargetError);
      assert.ok(e instanceof TargetError, "accepted");
    });
  });
});

Deno.test("fuzz url: normalising a path twice changes nothing", () => {
  const chars = [..."/./../%2e%2E%41%7e%2f%zz%%?&=+;:@ab~!$'()*,\"<>`{}^|", "%25", "%2e", "%c3%a9"];
  forAll("url: normalisePath idempotent", { seed: 0x0e3, runs: 4000 }, (r) => {
    const raw = "/" +
      Array.from(
        { length: r.range(0, 16) },
        () => r.bool(0.8) ? r.pick(chars) : String.fromCharCode(r.range(0x21, 0x7e)),
      ).join("");
    about(raw, () => {
      const p = attempt(() => normalisePath(raw), TargetError);
      if (p instanceof Error) {
        assert.ok(/[#\\]/.test(raw), `refused without a # or \\: ${p.message}`);
        return;
      }
      assert.ok(p.startsWith("/"));
      assert.equal(normalisePath(p), p);
      // No dot segment survives, however it was spelled.
      assert.ok(!/(?:^|\/)(?:\.|%2e){1,2}(?:\/|\?|$)/i.test(p.split("?")[0]), p);
    });
  });
});
