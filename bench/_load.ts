/**
 * Load generators and their output parsers: wrk (plain-HTTP keep-alive
 * throughput, absolute-form requests to a proxy through a Lua script), hey
 * (rate-limited latency, and HTTPS through a proxy's CONNECT), curl (bulk
 * download, first request to a new host), and an in-process holder of many open
 * CONNECT tunnels.
 *
 * Every run is bounded: wrk and hey by duration (-d / -z) or count (-n), curl by
 * --max-time, and all of them by a kill timeout in {@linkcode runTool}.
 *
 * @module
 */

import { runTool } from "./_proc.ts";

/** Where a client sends its requests: straight to the origin, or through a proxy. */
export interface Route {
  /** Proxy URL such as "http://127.0.0.1:8080", or undefined for a direct request. */
  proxy?: string;
}

/** Figures common to wrk and hey runs. */
export interface LoadResult {
  /** Successful (2xx/3xx) responses per second. */
  rps: number;
  /** Completed requests (any status). */
  requests: number;
  /** Responses outside 2xx/3xx. */
  non2xx: number;
  /** Socket or client errors (connect, read, timeout). For wrk, read errors include servers closing keep-alive. */
  errors: number;
  /** Latency percentiles in milliseconds, keyed by percentile (50, 90, 99). */
  latencyMs: Record<number, number>;
  /** The tool's own output, for the log. */
  raw: string;
}

/** Convert "4.82ms", "812.00us", "1.02s" or "2.5m" (wrk units) to milliseconds. */
export function wrkDurationMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new Error(`Cannot parse wrk duration "${text}"`);
  const v = Number(m[1]);
  const scale: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
  return v * scale[m[2]];
}

/** Parse the summary wrk prints with --latency. */
export function parseWrk(out: string): LoadResult {
  const total = /(\d+) requests in ([\d.]+\w+)/.exec(out);
  if (!total) throw new Error(`Cannot parse wrk output:\n${out}`);
  const latencyMs: Record<number, number> = {};
  const dist = out.split("Latency Distribution")[1] ?? "";
  for (const m of dist.matchAll(/^\s+(\d+)%\s+([\d.]+\w+)\s*$/gm)) {
    latencyMs[Number(m[1])] = wrkDurationMs(m[2]);
  }
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = sock ? sock.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const requests = Number(total[1]);
  // wrk's own Requests/sec counts error responses too; a proxy answering 403 fast must not look fast.
  const rps = (requests - non2xx) / (wrkDurationMs(total[2]) / 1000);
  return { rps, requests, non2xx, errors, latencyMs, raw: out };
}

/** Parse hey's default summary output. */
export function parseHey(out: string): LoadResult & { statuses: Record<string, number> } {
  const total = /^\s+Total:\s+([\d.]+) secs/m.exec(out);
  if (!total) throw new Error(`Cannot parse hey output:\n${out}`);
  const latencyMs: Record<number, number> = {};
  for (const m of out.matchAll(/^\s+(\d+)%+ in ([\d.]+) secs/gm)) {
    latencyMs[Number(m[1])] = Number(m[2]) * 1000;
  }
  const statuses: Record<string, number> = {};
  const statusBlock = out.split("Status code distribution:")[1]?.split(/\n\s*\n/)[0] ?? "";
  for (const m of statusBlock.matchAll(/\[(\d+)\]\s+(\d+) responses/g)) {
    statuses[m[1]] = Number(m[2]);
  }
  let errors = 0;
  const errBlock = out.split("Error distribution:")[1] ?? "";
  for (const m of errBlock.matchAll(/^\s+\[(\d+)\]\s/gm)) errors += Number(m[1]);
  let requests = 0, non2xx = 0;
  for (const [code, n] of Object.entries(statuses)) {
    requests += n;
    if (!/^[23]/.test(code)) non2xx += n;
  }
  // hey's Requests/sec counts failed requests too; count only 2xx/3xx responses.
  const rps = (requests - non2xx) / Number(total[1]);
  return { rps, requests, non2xx, errors, latencyMs, statuses, raw: out };
}

/** Options for {@linkcode wrk}. */
export interface WrkOptions extends Route {
  /** Absolute URL of the resource, e.g. "http://origin.test/small". */
  url: string;
  connections: number;
  durationS: number;
  /** wrk threads. Default 1: leaves the second core to the proxy and the origin. */
  threads?: number;
  /** Directory for the Lua script. */
  tmpDir: string;
}

/**
 * Keep-alive load with wrk. wrk has no proxy option, so for a proxy it connects
 * to the proxy and a Lua script sends absolute-form request lines with the
 * origin's Host header, which is exactly what an HTTP client sends to a proxy.
 */
export async function wrk(opts: WrkOptions): Promise<LoadResult> {
  const args = [
    "-t",
    String(opts.threads ?? 1),
    "-c",
    String(opts.connections),
    "-d",
    `${opts.durationS}s`,
    "--timeout",
    "10s",
    "--latency",
  ];
  if (opts.proxy) {
    const u = new URL(opts.url);
    const script = `${opts.tmpDir}/wrk-${crypto.randomUUID()}.lua`;
    await Deno.writeTextFile(
      script,
      `wrk.path = ${JSON.stringify(u.href)}\nwrk.headers["Host"] = ${JSON.stringify(u.host)}\n`,
    );
    args.push("-s", script, opts.proxy + "/");
  } else {
    args.push(opts.url);
  }
  const r = await runTool("wrk", args, { timeoutMs: (opts.durationS + 30) * 1000 });
  if (r.code !== 0 || r.timedOut) {
    throw new Error(`wrk failed (exit ${r.code}${r.timedOut ? ", timed out" : ""}): ${r.stderr}`);
  }
  return parseWrk(r.stdout);
}

/** Options for {@linkcode hey}. */
export interface HeyOptions extends Route {
  url: string;
  /** Concurrent workers. */
  concurrency: number;
  /** Run for this long (hey -z). One of durationS or requests is required. */
  durationS?: number;
  /** Send this many requests (hey -n). */
  requests?: number;
  /** Per-worker rate limit in requests/s (hey -q). */
  qpsPerWorker?: number;
}

/**
 * Load with hey. Through a proxy, http:// URLs are sent in absolute form and
 * https:// URLs go through CONNECT. hey skips certificate verification, so an
 * intercepting proxy's CA need not be installed; hey puts the URL's host,
 * including any port, into SNI.
 */
export async function hey(opts: HeyOptions): Promise<ReturnType<typeof parseHey>> {
  const args = ["-c", String(opts.concurrency), "-t", "20"];
  if (opts.durationS !== undefined) args.push("-z", `${opts.durationS}s`);
  else if (opts.requests !== undefined) args.push("-n", String(opts.requests));
  else throw new Error("hey needs durationS or requests");
  if (opts.qpsPerWorker !== undefined) args.push("-q", String(opts.qpsPerWorker));
  if (opts.proxy) args.push("-x", opts.proxy);
  args.push(opts.url);
  // A count-bounded run still needs an upper bound in time: assume >= 50 req/s.
  const bound = opts.durationS ?? Math.max(60, (opts.requests ?? 0) / 50);
  const r = await runTool("hey", args, { timeoutMs: (bound + 60) * 1000 });
  if (r.code !== 0 || r.timedOut) {
    throw new Error(`hey failed (exit ${r.code}${r.timedOut ? ", timed out" : ""}): ${r.stderr}`);
  }
  return parseHey(r.stdout);
}

/** Result of one curl transfer. */
export interface CurlResult {
  status: number;
  bytes: number;
  /** Average download speed in bytes/s. */
  speed: number;
  /** Total time in ms (curl's time_total: from start to last byte). */
  totalMs: number;
  /** Time until TLS to the origin was up, in ms (time_appconnect). */
  tlsMs: number;
}

/** Options for {@linkcode curl}. */
export interface CurlOptions extends Route {
  url: string;
  /** CA file for the (apparent) origin certificate. */
  cacert?: string;
  /** curl --resolve entries ("host:port:addr"); only used for direct requests. */
  resolve?: string[];
  /** Give up after this many seconds. Default 120. */
  maxTimeS?: number;
}

/** One transfer with curl, body discarded; fails on a transport error. */
export async function curl(opts: CurlOptions): Promise<CurlResult> {
  const max = opts.maxTimeS ?? 120;
  const args = [
    "-sS",
    "-o",
    "/dev/null",
    "--max-time",
    String(max),
    "--noproxy",
    "",
    "-w",
    "%{http_code} %{size_download} %{speed_download} %{time_total} %{time_appconnect}",
  ];
  if (opts.cacert) args.push("--cacert", opts.cacert);
  if (opts.proxy) args.push("-x", opts.proxy);
  else for (const r of opts.resolve ?? []) args.push("--resolve", r);
  args.push(opts.url);
  const r = await runTool("curl", args, { timeoutMs: (max + 10) * 1000, env: noProxyEnv() });
  if (r.code !== 0) throw new Error(`curl ${opts.url} failed (exit ${r.code}): ${r.stderr.trim()}`);
  const [status, bytes, speed, total, tls] = r.stdout.trim().split(" ").map(Number);
  return { status, bytes, speed, totalMs: total * 1000, tlsMs: tls * 1000 };
}

function noProxyEnv(): Record<string, string> {
  // Our proxy choice is explicit; never let an inherited *_proxy variable reroute a request.
  return { http_proxy: "", https_proxy: "", HTTP_PROXY: "", HTTPS_PROXY: "", ALL_PROXY: "" };
}

/** Options for {@linkcode openTunnels}. */
export interface TunnelOptions {
  /** Proxy host and port. */
  proxyHost: string;
  proxyPort: number;
  /** CONNECT target host (name or IP) and port. */
  host: string;
  port: number;
  /** PEM of the CA the client should trust (origin's CA for a pure tunnel). */
  caPem: string;
  /** How many tunnels. */
  count: number;
  /** Open this many at a time. Default 50. */
  parallel?: number;
  /** Path to GET once through each tunnel to prove it relays. Default "/small". */
  path?: string;
}

/** Open tunnels, each with a completed TLS handshake and one request answered. */
export interface Tunnels {
  /** Tunnels that are open and verified. */
  open: number;
  /** Errors for tunnels that failed, first few only. */
  failures: string[];
  /** Close all of them. */
  close(): void;
}

/**
 * Open `count` CONNECT tunnels through a proxy, complete a TLS handshake to the
 * origin inside each, and send one keep-alive request, then hold them open.
 */
export async function openTunnels(opts: TunnelOptions): Promise<Tunnels> {
  const conns: Deno.Conn[] = [];
  const failures: string[] = [];
  let failed = 0;
  const parallel = opts.parallel ?? 50;
  const path = opts.path ?? "/small";
  const authority = `${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${opts.port}`;
  const hostHeader = opts.port === 443 ? opts.host : authority;
  const one = async () => {
    let tcp: Deno.TcpConn | undefined;
    let tls: Deno.TlsConn | undefined;
    try {
      tcp = await Deno.connect({ hostname: opts.proxyHost, port: opts.proxyPort });
      await writeAll(tcp, `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const head = await readHead(tcp);
      if (!/^HTTP\/1\.[01] 200/.test(head)) {
        throw new Error(`CONNECT answered: ${head.split("\r\n")[0]}`);
      }
      tls = await Deno.startTls(tcp, { hostname: opts.host, caCerts: [opts.caPem] });
      tcp = undefined;
      await writeAll(tls, `GET ${path} HTTP/1.1\r\nHost: ${hostHeader}\r\n\r\n`);
      const resp = await readHead(tls);
      if (!/^HTTP\/1\.1 200/.test(resp)) throw new Error(`GET answered: ${resp.split("\r\n")[0]}`);
      const len = Number(/content-length:\s*(\d+)/i.exec(resp)?.[1] ?? NaN);
      if (!Number.isFinite(len)) throw new Error("response without Content-Length");
      await readExactly(tls, len - leftover.get(tls)!);
      conns.push(tls);
    } catch (e) {
      failed++;
      if (failures.length < 5) failures.push(String(e instanceof Error ? e.message : e));
      try {
        (tls ?? tcp)?.close();
      } catch { /* closed */ }
    }
  };
  const leftover = new Map<Deno.Conn, number>();
  // readHead may read past the header; remember how many body bytes it consumed.
  async function readHead(conn: Deno.Conn): Promise<string> {
    const buf = new Uint8Array(16384);
    let used = 0;
    while (true) {
      const n = await conn.read(buf.subarray(used));
      if (n === null) throw new Error("connection closed before a response");
      used += n;
      const text = new TextDecoder("latin1").decode(buf.subarray(0, used));
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        leftover.set(conn, used - (end + 4));
        return text.slice(0, end);
      }
      if (used === buf.length) throw new Error("response header too large");
    }
  }
  for (let started = 0; started < opts.count; started += parallel) {
    const batch = Math.min(parallel, opts.count - started);
    await Promise.all(Array.from({ length: batch }, one));
  }
  if (failed > failures.length) failures.push(`... ${failed} failed in all`);
  return {
    open: conns.length,
    failures,
    close() {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.length = 0;
    },
  };
}

async function writeAll(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

async function readExactly(conn: Deno.Conn, n: number): Promise<void> {
  const buf = new Uint8Array(65536);
  while (n > 0) {
    const got = await conn.read(buf.subarray(0, Math.min(n, buf.length)));
    if (got === null) throw new Error("connection closed mid-body");
    n -= got;
  }
}
