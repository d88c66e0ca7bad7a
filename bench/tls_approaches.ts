/**
 * Which way to terminate TLS on a connection the proxy already accepted and
 * peeked at? Deno's public API has no server-side `startTls`, so:
 *
 *  - `node`: node:tls `TLSSocket` (server mode) over a node Duplex fed from
 *    the Deno conn, the peeked ClientHello replayed first (lib/tls/terminate.ts);
 *  - `loopback`: one `Deno.listenTls` on 127.0.0.1 per certificate, the
 *    client's bytes (peeked prefix + rest) piped to it over a loopback TCP
 *    connection, the accepted `TlsConn` used as the decrypted stream;
 *  - `direct`: a plain `Deno.listenTls` with one certificate, no peeking:
 *    the ceiling, not an option.
 *
 * For each: the first request to a host never seen before (leaf signing +
 * handshake + one request), keep-alive requests/s through the terminated
 * stream (wrk, 16 connections, 5 s), and memory and file descriptors with
 * 300 open connections to 300 different hosts. Each approach runs in its
 * own process. Loopback only, bounded in time and count.
 *
 *   deno run -A bench/tls_approaches.ts            # all three, prints a table
 *   deno run -A bench/tls_approaches.ts node       # one approach
 *
 * @module
 */

import type { Duplex } from "../lib/proxy/types.ts";
import { parseClientHello } from "../lib/tls/client_hello.ts";
import { createCa } from "../lib/tls/ca.ts";
import { type LeafCertificate, LeafIssuer } from "../lib/tls/leaf.ts";
import { terminateTls } from "../lib/tls/terminate.ts";

type Approach = "node" | "loopback" | "direct";
const APPROACHES: Approach[] = ["direct", "node", "loopback"];
const NEW_HOSTS = 40;
const OPEN_CONNS = 300;
const WRK_SECONDS = 5;

interface Result {
  approach: Approach;
  newHostP50: number;
  newHostP90: number;
  knownHostP50: number;
  signP50: number;
  reqPerSec: number;
  wrkLatency: string;
  rssMiB: number;
  fds: number;
}

// ---- approach "loopback": Deno.listenTls per certificate, bytes piped to it

interface HostListener {
  listener: Deno.TlsListener;
  waiting: Map<number, (c: Deno.TlsConn) => void>;
  early: Map<number, Deno.TlsConn>;
}
const listeners = new Map<string, HostListener>();

function hostListener(leaf: LeafCertificate): HostListener {
  const known = listeners.get(leaf.host);
  if (known) return known;
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: leaf.certPem,
    key: leaf.keyPem,
    alpnProtocols: ["http/1.1"],
  });
  const h: HostListener = { listener, waiting: new Map(), early: new Map() };
  (async () => {
    try {
      for await (const c of listener) {
        const port = c.remoteAddr.port;
        const w = h.waiting.get(port);
        if (w) {
          h.waiting.delete(port);
          w(c);
        } else h.early.set(port, c);
      }
    } catch {
      // listener closed
    }
  })();
  listeners.set(leaf.host, h);
  return h;
}

async function terminateLoopback(
  conn: Deno.TcpConn,
  prefix: Uint8Array,
  leaf: LeafCertificate,
): Promise<Duplex> {
  const h = hostListener(leaf);
  const inner = await Deno.connect({ hostname: "127.0.0.1", port: h.listener.addr.port });
  inner.setNoDelay(true);
  const port = inner.localAddr.port;
  const accepted = new Promise<Deno.TlsConn>((resolve) => {
    const early = h.early.get(port);
    if (early) {
      h.early.delete(port);
      resolve(early);
    } else h.waiting.set(port, resolve);
  });
  const w = inner.writable.getWriter();
  await w.write(prefix);
  w.releaseLock();
  conn.readable.pipeTo(inner.writable).catch(() => {});
  inner.readable.pipeTo(conn.writable).catch(() => {});
  const tls = await accepted;
  await tls.handshake();
  return tls;
}

// ---- a minimal keep-alive HTTP responder on the decrypted stream

const RESPONSE = new TextEncoder().encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");

async function serveHttp(d: Duplex): Promise<void> {
  const buf = new Uint8Array(16384);
  let tail = 0; // how many of "\r\n\r\n" matched at the end of the last read
  try {
    for (;;) {
      const n = await d.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i++) {
        const want = tail === 0 || tail === 2 ? 13 : 10;
        tail = buf[i] === want ? tail + 1 : buf[i] === 13 ? 1 : 0;
        if (tail === 4) {
          tail = 0;
          let off = 0;
          while (off < RESPONSE.length) off += await d.write(RESPONSE.subarray(off));
        }
      }
    }
  } catch {
    // client went away
  }
  try {
    d.close();
  } catch {
    // closed
  }
}

async function readHello(conn: Deno.TcpConn): Promise<{ prefix: Uint8Array; sni?: string }> {
  let data = new Uint8Array(0);
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("eof before ClientHello");
    const next = new Uint8Array(data.length + n);
    next.set(data);
    next.set(buf.subarray(0, n), data.length);
    data = next;
    const hello = parseClientHello(data);
    if (hello) return { prefix: data, sni: hello.serverName };
  }
}

// ---- one approach, in this process

async function measure(approach: Approach): Promise<Result> {
  const ca = await createCa();
  const leaves = await LeafIssuer.create(ca, { maxEntries: 10_000 });
  const fixed = await leaves.get("bench.test");
  const signTimes: number[] = [];

  let server: Deno.Listener;
  if (approach === "direct") {
    server = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: fixed.certPem,
      key: fixed.keyPem,
      alpnProtocols: ["http/1.1"],
    });
    (async () => {
      for await (const c of server) serveHttp(c);
    })().catch(() => {});
  } else {
    server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const c of server) {
        const conn = c as Deno.TcpConn;
        conn.setNoDelay(true);
        (async () => {
          const { prefix, sni } = await readHello(conn);
          const t = performance.now();
          const leaf = await leaves.get(sni ?? "127.0.0.1");
          signTimes.push(performance.now() - t);
          const d = approach === "node"
            ? await terminateTls(conn, prefix, { leaf })
            : await terminateLoopback(conn, prefix, leaf);
          await serveHttp(d);
        })().catch(() => {});
      }
    })().catch(() => {});
  }
  const port = (server.addr as Deno.NetAddr).port;
  const request = (host: string) =>
    new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);

  const open = async (host: string) => {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
    tcp.setNoDelay(true);
    const tls = await Deno.startTls(tcp, {
      hostname: host,
      caCerts: [ca.certPem],
      alpnProtocols: ["http/1.1"],
    });
    await tls.write(request(host));
    const buf = new Uint8Array(1024);
    let got = 0;
    while (got < RESPONSE.length) {
      const n = await tls.read(buf);
      if (n === null) throw new Error("closed before response");
      got += n;
    }
    return tls;
  };
  const timeOne = async (host: string) => {
    const t = performance.now();
    (await open(host)).close();
    return performance.now() - t;
  };
  const hostFor = (name: string) => (approach === "direct" ? "bench.test" : name);

  for (let i = 0; i < 5; i++) await timeOne(hostFor(`warm${i}.test`)); // JIT, root store
  signTimes.length = 0;
  const fresh: number[] = [];
  for (let i = 0; i < NEW_HOSTS; i++) fresh.push(await timeOne(hostFor(`new${i}.test`)));
  const known: number[] = [];
  for (let i = 0; i < NEW_HOSTS; i++) known.push(await timeOne(hostFor("new0.test")));

  const wrk = await new Deno.Command("wrk", {
    args: ["-t1", "-c16", `-d${WRK_SECONDS}s`, `https://127.0.0.1:${port}/`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wrkOut = new TextDecoder().decode(wrk.stdout);
  const reqPerSec = Number(/Requests\/sec:\s*([\d.]+)/.exec(wrkOut)?.[1] ?? NaN);
  const wrkLatency = /Latency\s+(\S+)/.exec(wrkOut)?.[1] ?? "?";

  await new Promise((r) => setTimeout(r, 200));
  const rss0 = Deno.memoryUsage().rss;
  const conns: Deno.TlsConn[] = [];
  for (let i = 0; i < OPEN_CONNS; i++) conns.push(await open(hostFor(`mem${i}.test`)));
  const rss1 = Deno.memoryUsage().rss;
  let fds = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) fds++;
  for (const c of conns) c.close();

  return {
    approach,
    newHostP50: pct(fresh, 50),
    newHostP90: pct(fresh, 90),
    knownHostP50: pct(known, 50),
    signP50: approach === "direct" ? 0 : pct(signTimes, 50),
    reqPerSec,
    wrkLatency,
    rssMiB: (rss1 - rss0) / 1048576,
    fds,
  };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))];
}

// ---- driver

if (import.meta.main) {
  const one = Deno.args[0] as Approach | undefined;
  if (one) {
    if (!APPROACHES.includes(one)) {
      console.error(`usage: tls_approaches.ts [${APPROACHES.join("|")}]`);
      Deno.exit(2);
    }
    console.log(JSON.stringify(await measure(one)));
    Deno.exit(0); // listeners and accept loops are left running on purpose
  }
  const rows: Result[] = [];
  for (const approach of APPROACHES) {
    console.error(`measuring ${approach}...`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, approach],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`${approach} failed`);
    rows.push(JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!));
  }
  const f = (n: number, d = 1) => n.toFixed(d);
  console.log(
    `| approach | new host, 1st request p50 / p90 (ms) | known host p50 (ms) | leaf sign p50 (ms) | keep-alive req/s (wrk -c16) | wrk latency | RSS +300 conns/hosts (MiB) | fds |`,
  );
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(
      `| ${r.approach} | ${f(r.newHostP50)} / ${f(r.newHostP90)} | ${f(r.knownHostP50)} | ${
        f(r.signP50, 2)
      } | ${f(r.reqPerSec, 0)} | ${r.wrkLatency} | ${f(r.rssMiB)} | ${r.fds} |`,
    );
  }
  console.log(
    `\n${
      new Date().toISOString().slice(0, 10)
    }, ${Deno.build.target}, ${navigator.hardwareConcurrency} CPUs, Deno ${Deno.version.deno}`,
  );
}
