/**
 * Differential test: `netmonitor rules test <url|host[:port]>` must say what
 * the proxy does. For generated rules files and requests (host spellings:
 * case, trailing dots, IDN, IPv4 in other bases and short forms,
 * IPv4-mapped and NAT64 IPv6; ports: none, the default written out, with
 * leading zeros, others; paths: dot segments, doubled slashes, %2F/%5C,
 * %2e, escaped letters, stray %, ;params, `..;`, trailing dots, white
 * space and slashes, letter case, queries, fragments, backslashes),
 * it compares the CLI's answer (run in-process on a rules file) with the
 * decision of a real proxy wired like `netmonitor run --non-interactive`
 * (DecisionBroker, decideInterceptedTunnel, TunnelPassthrough, the TLS
 * interceptor), reached as absolute-form HTTP, as an intercepted HTTPS
 * request, and as a relayed tunnel (--no-intercept) for host[:port] targets.
 * It also re-decides the path the origin received: a request the rules deny
 * must never reach it.
 *
 * Every name and address is mapped to 127.0.0.1 with the proxy's resolve
 * option and a local DNS server with no records answers the rest: nothing
 * leaves loopback. NETMONITOR_DIFF_SEED and NETMONITOR_DIFF_SETS choose the
 * generated cases (the default run is a few hundred requests).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../cli/mod.ts";
import { decideInterceptedTunnel, refuseUndecryptable, TunnelPassthrough } from "../../cli/run.ts";
import { DecisionBroker } from "../../lib/decide/broker.ts";
import { normaliseHost } from "../../lib/net/host.ts";
import { type AccessRecord, startProxy } from "../../lib/proxy/mod.ts";
import { parseRules, RuleSet } from "../../lib/rules/mod.ts";
import { createCa } from "../../lib/tls/ca.ts";
import { createInterceptor, PassthroughList } from "../../lib/tls/intercept.ts";
import { clientHello, tlsRecords } from "../_helpers/attack.ts";
import {
  ORIGIN_CERT_PEM,
  ORIGIN_KEY_PEM,
  startDnsServer,
  TEST_CA_PEM,
} from "../_helpers/origin.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

// ------------------------------------------------------------------ random
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  return {
    next,
    pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)],
    chance: (p: number) => next() < p,
  };
}

// ------------------------------------------------------------------ the world
/** What one request looks like to `rules test` and on the wire. */
interface Req {
  /** The argument of `rules test`. */
  check: string;
  mode: "http" | "intercept" | "relay";
  /** host[:port] as a client sends it (CONNECT target without its port for "intercept"). */
  wireAuthority: string;
  /** Path and query as a client sends it (no fragment); undefined for "relay". */
  wirePath?: string;
  /** Normalised host and the port dialled. */
  host: string;
  port: number;
}

/** The outcome of one side. */
interface Outcome {
  kind: "allow" | "deny" | "ask" | "refused";
  reason: string;
  /** Request line the origin received, if the request got there. */
  seen?: string;
}

interface World {
  P: number;
  T: number;
  DEAD: number;
  setRules(text: string): Promise<RuleSet | undefined>;
  check(target: string): Promise<Outcome>;
  proxy(r: Req): Promise<Outcome>;
  rules: () => RuleSet;
  close(): Promise<void>;
}

async function startWorld(hosts: string[]): Promise<World> {
  const seenLines: string[] = [];
  const serveRaw = async (conn: Deno.Conn) => {
    try {
      let text = "";
      const buf = new Uint8Array(16384);
      while (!text.includes("\r\n\r\n")) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n));
      }
      seenLines.push(text.split("\r\n")[0]);
      await conn.write(
        enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
      );
    } catch {
      // the proxy went away
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tls = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: ORIGIN_CERT_PEM,
    key: ORIGIN_KEY_PEM,
  });
  const conns: Promise<void>[] = [];
  const accepting = [plain, tls].map(async (l) => {
    try {
      for await (const c of l) conns.push(serveRaw(c));
    } catch { /* closed */ }
  });
  const P = (plain.addr as Deno.NetAddr).port;
  const T = (tls.addr as Deno.NetAddr).port;
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const DEAD = (dead.addr as Deno.NetAddr).port;
  dead.close();

  const dns = await startDnsServer({});
  const resolve = new Map<string, string>();
  for (const h of hosts) {
    for (const port of [P, T, DEAD, 80, 443]) resolve.set(`${h}:${port}`, "127.0.0.1");
  }

  let current = RuleSet.empty;
  const rules = {
    get current() {
      return current;
    },
    add: () => Promise.reject(new Error("nothing is saved here")),
  };
  const broker = new DecisionBroker({ rules, nonInteractive: { default: "deny" } });
  const passthrough = new TunnelPassthrough(new PassthroughList([]), rules);
  const ca = await createCa();
  const inner = await createInterceptor({
    ca,
    upstreamCaCerts: [TEST_CA_PEM],
    passthrough: (h, p) => passthrough.mayRelayDecided(h, p),
  });
  const records: AccessRecord[] = [];
  const common = {
    hostname: "127.0.0.1",
    port: 0,
    resolve,
    nameServer: dns.nameServer,
    record: (r: AccessRecord) => void records.push(r),
    connectTimeoutMs: 2000,
    responseTimeoutMs: 3000,
    helloTimeoutMs: 2000,
  };
  // As cli/run.ts wires them.
  const intercepting = await startProxy({
    ...common,
    decide: (input, signal) => broker.decide(input, signal),
    decideTunnel: (input, signal) =>
      passthrough.isPassthrough(input.target.host, input.target.port)
        ? broker.decide(input, signal)
        : Promise.resolve(decideInterceptedTunnel(rules, input)),
    intercept: {
      intercepts: (h, p) => !passthrough.isPassthrough(h, p),
      intercept: (req) => inner.intercept(req),
    },
  });
  const relaying = await startProxy({
    ...common,
    decide: (input, signal) => refuseUndecryptable(current, input) ?? broker.decide(input, signal),
  });

  const dir = await Deno.makeTempDir({ prefix: "nm-differential-" });

  const waitRecords = async (from: number, n: number) => {
    const end = Date.now() + 3000;
    while (records.length - from < n && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 2));
    }
    return records.slice(from);
  };
  const outcome = (rec: AccessRecord | undefined, seen?: string): Outcome => {
    if (!rec) return { kind: "refused", reason: "no record" };
    if (rec.decision === "error" || rec.source === "policy" || rec.source === "error") {
      return { kind: "refused", reason: `${rec.source}: ${rec.reason} ${rec.error ?? ""}` };
    }
    if (rec.decision === "deny" && rec.source === "default") {
      return { kind: "ask", reason: rec.reason.replace(/, non-interactive default: deny$/, "") };
    }
    return { kind: rec.decision, reason: rec.reason, seen };
  };
  const readAll = async (c: { read(b: Uint8Array): Promise<number | null>; close(): void }) => {
    const buf = new Uint8Array(65536);
    const timer = setTimeout(() => {
      try {
        c.close();
      } catch { /* closed */ }
    }, 5000);
    try {
      while ((await c.read(buf).catch(() => null)) !== null);
    } finally {
      clearTimeout(timer);
    }
  };
  const readHead = async (conn: Deno.Conn) => {
    let text = "";
    const one = new Uint8Array(1);
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(one).catch(() => null);
      if (n === null) break;
      text += String.fromCharCode(one[0]);
    }
    return text;
  };
  const close = (c: Deno.Conn | Deno.TlsConn | undefined) => {
    try {
      c?.close();
    } catch { /* closed */ }
  };

  return {
    P,
    T,
    DEAD,
    rules: () => current,
    async setRules(text) {
      const parsed = parseRules(text);
      if (parsed.problems.length > 0) return undefined;
      await Deno.writeTextFile(join(dir, "network-rules.json"), text);
      current = new RuleSet(parsed.rules);
      return current;
    },
    async check(target) {
      let stdout = "";
      let stderr = "";
      const code = await main(["--data-dir", dir, "rules", "test", target], {
        stdout: (s) => void (stdout += s),
        stderr: (s) => void (stderr += s),
        stdinIsTerminal: false,
        stdoutIsTerminal: false,
      });
      const m = /^(allow|deny|ask): (.*)$/m.exec(stdout);
      if (code !== 0 || !m) return { kind: "refused", reason: stderr.split("\n")[0] };
      return { kind: m[1] as Outcome["kind"], reason: m[2] };
    },
    async proxy(r) {
      const from = records.length;
      const seenFrom = seenLines.length;
      const port = r.mode === "relay" ? relaying.addr.port : intercepting.addr.port;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      if (r.mode === "http") {
        await conn.write(enc.encode(
          `GET http://${r.wireAuthority}${r.wirePath} HTTP/1.1\r\n` +
            `Host: ${r.wireAuthority}\r\nConnection: close\r\n\r\n`,
        ));
        await readAll(conn);
        return outcome((await waitRecords(from, 1))[0], seenLines[seenFrom]);
      }
      const connect = /:\d+$/.test(r.wireAuthority) ? r.wireAuthority : `${r.wireAuthority}:443`;
      await conn.write(enc.encode(`CONNECT ${connect} HTTP/1.1\r\nHost: ${connect}\r\n\r\n`));
      const head = await readHead(conn);
      const tunnel = () => waitRecords(from, 1).then((recs) => outcome(recs[0]));
      if (!head.startsWith("HTTP/1.1 200")) {
        close(conn);
        return await tunnel();
      }
      const sni = /^[\d.]+$|^\[/.test(r.host) ? undefined : r.host;
      if (r.mode === "relay") {
        await conn.write(tlsRecords(clientHello(sni === undefined ? {} : { sni: [sni] })));
        close(conn);
        return await tunnel();
      }
      let session: Deno.TlsConn | undefined;
      try {
        session = await Deno.startTls(conn, {
          hostname: sni ?? r.host.replace(/^\[|\]$/g, ""),
          caCerts: [ca.certPem, TEST_CA_PEM],
        });
        await session.handshake();
        await session.write(enc.encode(
          `GET ${r.wirePath} HTTP/1.1\r\nHost: ${r.wireAuthority}\r\nConnection: close\r\n\r\n`,
        ));
        await readAll(session);
      } catch {
        // A relayed (passthrough) tunnel to an origin whose certificate does
        // not name the host: the tunnel's own decision is what counts.
      } finally {
        close(session ?? conn);
      }
      // The tunnel's record comes last, when it ends.
      const end = Date.now() + 3000;
      while (!records.slice(from).some((x) => x.method === "CONNECT") && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 2));
      }
      const recs = records.slice(from);
      const request = recs.find((x) => x.method !== "CONNECT");
      if (request) return outcome(request, seenLines[seenFrom]);
      return outcome(recs.find((x) => x.method === "CONNECT"));
    },
    async close() {
      await intercepting.shutdown();
      await relaying.shutdown();
      await broker.close();
      plain.close();
      tls.close();
      await Promise.all(accepting);
      await Promise.all(conns);
      await dns.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * Whether the two sides may differ for `r`: `rules test` does not know
 * `--no-intercept`, which refuses tunnels a deny URL rule needs decrypted;
 * and it refuses a URL with a backslash, which the proxy never sees when it
 * denies the CONNECT tunnel (by a host rule) before any request in it.
 */
function excused(r: Req, check: Outcome, proxy: Outcome): boolean {
  if (
    r.mode === "intercept" && check.kind === "refused" && /backslash/.test(check.reason) &&
    proxy.kind === "deny" && !proxy.seen
  ) {
    return true;
  }
  return r.mode === "relay" && /needs HTTPS decrypted/.test(proxy.reason);
}

function disagreement(r: Req, check: Outcome, proxy: Outcome, rules: RuleSet): string | undefined {
  if (proxy.seen) {
    // What the origin got must not be something the rules deny.
    const path = /^\S+ (\S+) HTTP/.exec(proxy.seen)?.[1];
    const d = path === undefined ? undefined : rules.decide({
      scheme: r.mode === "http" ? "http" : "https",
      host: r.host,
      port: r.port,
      path,
    });
    if (d?.action === "deny") return `the origin got ${path}, which ${d.reason} denies`;
  }
  if (excused(r, check, proxy)) return undefined;
  const reason = (o: Outcome) => o.kind === "refused" ? "" : o.reason;
  if (check.kind === proxy.kind && reason(check) === reason(proxy)) return undefined;
  return `rules test: ${check.kind}: ${check.reason}; proxy: ${proxy.kind}: ${proxy.reason}`;
}

// ------------------------------------------------------------------ generation
const CANON = [
  "a.test",
  "b.a.test",
  "xn--bcher-kva.test",
  "origin.test",
  "10.0.0.1",
  "[2001:db8::1]",
  "[64:ff9b::a00:1]",
];

/** [as written in a rule or given to rules test, as a client sends it] */
function hostSpellings(h: string): [string, string][] {
  const same = (list: string[]) => list.map((x): [string, string] => [x, x]);
  if (h === "10.0.0.1") {
    return same([
      h,
      "0xa.0.0.1",
      "012.0.0.01",
      "10.1",
      "167772161",
      "0XA000001",
      "10.0.0.1.",
      "[::ffff:10.0.0.1]",
      "[::FFFF:A00:1]",
    ]);
  }
  if (h === "[2001:db8::1]") {
    return same([h, "[2001:DB8::1]", "[2001:0db8:0:0:0:0:0:1]"]);
  }
  if (h === "[64:ff9b::a00:1]") return same([h, "[64:ff9b::10.0.0.1]"]);
  const out = same([h, h.toUpperCase(), `${h}.`, `${h[0].toUpperCase()}${h.slice(1)}.`]);
  if (h === "xn--bcher-kva.test") out.push(["bücher.test", h], ["BÜCHER.TEST.", h]);
  if (h === "a.test") out.push(["ａ.test", "a.test"], ["a。test", "a.test"]);
  return out;
}

const PATHS = ["/admin", "/a/b", "/a/b/", "/s?q=1", "/a;b", "/x%20y", "/"];

function pathSpellings(p: string): string[] {
  const q = p.indexOf("?");
  const path = q < 0 ? p : p.slice(0, q);
  const query = q < 0 ? "" : p.slice(q);
  const w = (x: string) => x + query;
  return [
    p,
    w(path.toUpperCase()),
    w(path + "/"),
    w("/" + path),
    w(path.replace(/\//g, "//")),
    w("/./" + path.slice(1)),
    w("/x/.." + path),
    w("/x//.." + path),
    w("/x/y//../.." + path),
    w("/x/%2e%2e" + path),
    w("/x/.%2E" + path),
    w("/x%2F..%2F" + path.slice(1)),
    w("/x%5c..%5c" + path.slice(1)),
    w(path + "%2F"),
    w(path + "//.."),
    path + "?",
    path + "?x=1",
    w(path) + "#frag",
    w(path + ";p"),
    w(path.replace(/[a-z]/, (c) => "%" + c.charCodeAt(0).toString(16))),
    w(path.replace(/[a-z]/, (c) => "%25" + c.charCodeAt(0).toString(16))),
    w(path + "/."),
    w(path + "%"),
    w(path + "%zz"),
    w("/" + path.slice(1).replace(/\//g, "\\")),
    w(path.replace(/;/g, "%3B")),
    w(path.replace(/%20/g, "+")),
    path + query.toUpperCase(),
    path + query.replace(/1/g, "%31"),
    path + "?q=a+b",
    path + "?q=a%20b",
    w(path + "'"),
    w(path + "|"),
    // What servers other than nginx read as the same path (Tomcat's `..;`,
    // trailing dots, white space and slashes, letter case).
    w("/x/..;" + path),
    w(path + "..;/"),
    w(path + ";jsessionid=1"),
    w(path + "."),
    w(path + "%20"),
    w(path + "%09"),
    w(path + "%00"),
    w(path + "%2F."),
    w(path.replace(/[a-z]/, (c) => c.toUpperCase())),
  ];
}

/** What a client puts on the wire for a path: no fragment, non-URL characters escaped. */
function wirePath(p: string): string {
  const h = p.indexOf("#");
  return (h < 0 ? p : p.slice(0, h)).replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c));
}

interface Generated {
  text: string;
  requests: Req[];
}

function generate(seed: number, w: Pick<World, "P" | "T" | "DEAD">): Generated {
  const { next, pick, chance } = rng(seed);
  const PORTS = [w.P, w.T, w.DEAD, 80, 443];
  const rules: Record<string, string> = {};
  const urls: Array<{ scheme: "http" | "https"; host: string; port: number; base: string }> = [];
  const hosts = new Set<string>();
  const portText = (scheme: string, port: number) => {
    if (port === (scheme === "http" ? 80 : 443) && chance(0.5)) return "";
    return port < 10000 && chance(0.3) ? `:0${port}` : `:${port}`;
  };
  for (let i = 0, n = 1 + Math.floor(next() * 4); i < n; i++) {
    const h = pick(CANON);
    hosts.add(h);
    const [written] = pick(hostSpellings(h));
    const kind = next();
    if (kind < 0.3) {
      rules[written] = pick(["allow", "deny", "allow-domain", "deny-domain", "passthrough"]);
    } else if (kind < 0.4) {
      rules[`${written}:${pick(PORTS)}`] = pick(["allow", "deny", "passthrough"]);
    } else if (kind < 0.5) {
      const parent = /^[a-z]/.test(h) ? h.slice(h.indexOf(".") + 1) : "test";
      rules[`*.${parent}`] = pick(["allow", "deny", "passthrough"]);
    } else if (kind < 0.55) {
      rules[chance(0.3) ? `*:${pick(PORTS)}` : "*"] = pick(["allow", "deny"]);
    } else {
      const scheme = pick(["http", "https"] as const);
      const port = chance(0.6) ? (scheme === "http" ? w.P : w.T) : scheme === "http" ? 80 : 443;
      const base = pick(PATHS);
      const path = chance(0.5) ? base : pick(pathSpellings(base));
      if (path.includes("#")) continue;
      rules[`${scheme}://${written}${portText(scheme, port)}${path}`] = pick([
        "allow",
        "deny",
        "allow-url",
        "deny-url",
      ]);
      urls.push({ scheme, host: h, port, base });
    }
  }
  if (chance(0.3)) rules["*"] = pick(["allow", "deny"]);

  const requests: Req[] = [];
  for (let i = 0; i < 25; i++) {
    let scheme = pick(["http", "https"] as const);
    let h = pick(hosts.size > 0 && chance(0.7) ? [...hosts] : CANON);
    let port = chance(0.6) ? (scheme === "http" ? w.P : w.T) : pick([w.DEAD, 80, 443]);
    let base = pick(PATHS);
    if (urls.length > 0 && chance(0.6)) {
      const u = pick(urls);
      ({ scheme, host: h, port, base } = u);
    }
    const [written, wire] = pick(hostSpellings(h));
    if (chance(0.2)) {
      // host[:port], decided like a relayed tunnel.
      const p = chance(0.3) ? "" : `:${port}`;
      requests.push({
        check: `${written}${p}`,
        mode: "relay",
        wireAuthority: `${wire}${p || ":443"}`,
        host: h,
        port: p ? port : 443,
      });
      continue;
    }
    const pt = portText(scheme, port);
    const path = chance(0.3) ? base : pick(pathSpellings(base));
    requests.push({
      check: `${scheme}://${written}${pt}${path}`,
      mode: scheme === "http" ? "http" : "intercept",
      wireAuthority: `${wire}${pt}`,
      wirePath: wirePath(path),
      host: h,
      port,
    });
  }
  return { text: JSON.stringify(rules, null, 2) + "\n", requests };
}

// ------------------------------------------------------------------ tests
function allHostSpellings(): string[] {
  const out = new Set<string>();
  for (const c of CANON) {
    for (const [written] of hostSpellings(c)) out.add(normaliseHost(written));
  }
  return [...out, "h.test"];
}

Deno.test("rules test and the proxy agree on minimal cases", async (t) => {
  const w = await startWorld(allHostSpellings());
  const { P, T } = w;
  // [name, rules, request, what the proxy must do]
  const cases: Array<[string, Record<string, string>, Req, Outcome["kind"]]> = [
    [
      "/x//../admin is forwarded and decided as /x/admin",
      { [`https://h.test:${T}/admin`]: "deny", "h.test": "allow" },
      {
        check: `https://h.test:${T}/x//../admin`,
        mode: "intercept",
        wireAuthority: `h.test:${T}`,
        wirePath: "/x//../admin",
        host: "h.test",
        port: T,
      },
      "allow",
    ],
    [
      "a #fragment is not sent: an allow URL rule matches",
      { [`http://h.test:${P}/ok`]: "allow", "*": "deny" },
      {
        check: `http://h.test:${P}/ok#top`,
        mode: "http",
        wireAuthority: `h.test:${P}`,
        wirePath: "/ok",
        host: "h.test",
        port: P,
      },
      "allow",
    ],
    [
      "a deny URL rule spelled /x//../admin denies /x/admin",
      { [`http://h.test:${P}/x//../admin`]: "deny", "h.test": "allow" },
      {
        check: `http://h.test:${P}/x/admin`,
        mode: "http",
        wireAuthority: `h.test:${P}`,
        wirePath: "/x/admin",
        host: "h.test",
        port: P,
      },
      "deny",
    ],
    [
      "a deny URL rule for an IPv4 host denies its NAT64 spelling",
      { [`http://10.0.0.1:${P}/admin`]: "deny", "*": "allow" },
      {
        check: `http://[64:ff9b::10.0.0.1]:${P}/admin`,
        mode: "http",
        wireAuthority: `[64:ff9b::10.0.0.1]:${P}`,
        wirePath: "/admin",
        host: "[64:ff9b::a00:1]",
        port: P,
      },
      "deny",
    ],
    [
      "a passthrough host is decided on the host",
      { "origin.test": "passthrough", [`https://origin.test:${T}/api`]: "allow" },
      {
        check: `https://origin.test:${T}/api`,
        mode: "intercept",
        wireAuthority: `origin.test:${T}`,
        wirePath: "/api",
        host: "origin.test",
        port: T,
      },
      "allow",
    ],
  ];
  try {
    for (const [name, rules, r, kind] of cases) {
      await t.step(name, async () => {
        const set = await w.setRules(JSON.stringify(rules));
        assert.ok(set, "valid rules");
        const proxy = await w.proxy(r);
        const check = await w.check(r.check);
        assert.equal(disagreement(r, check, proxy, set), undefined);
        assert.equal(proxy.kind, kind);
      });
    }
  } finally {
    await w.close();
  }
});

Deno.test("rules test and the proxy agree on generated rules and requests", async () => {
  const seed = Number(Deno.env.get("NETMONITOR_DIFF_SEED") ?? 20261129);
  const sets = Number(Deno.env.get("NETMONITOR_DIFF_SETS") ?? 16);
  const w = await startWorld(allHostSpellings());
  const problems: string[] = [];
  let compared = 0;
  try {
    for (let i = 0; i < sets; i++) {
      const { text, requests } = generate(seed + i, w);
      const set = await w.setRules(text);
      if (!set) continue; // two spellings of one pattern: rules check says so
      for (const r of requests) {
        let host: string;
        try {
          host = normaliseHost(r.wireAuthority.replace(/:\d*$/, ""));
        } catch {
          host = "";
        }
        // Only destinations mapped to loopback are ever sent.
        if (host !== r.host) continue;
        const proxy = await w.proxy(r);
        const check = await w.check(r.check);
        compared++;
        const why = disagreement(r, check, proxy, set);
        if (why) {
          problems.push(`rules ${text.replace(/\s+/g, " ")}${r.mode} ${r.check}: ${why}`);
        }
      }
    }
  } finally {
    await w.close();
  }
  assert.ok(compared > sets * 10, `only ${compared} requests compared`);
  assert.deepEqual(problems, [], `${problems.length} of ${compared} disagree`);
});
