/**
 * Real origin servers on loopback, port 0, for integration tests: an HTTP
 * server (plain or TLS with the test CA in tests/testdata/tls) with a few
 * useful routes, and a raw TCP server for misbehaving origins.
 *
 * Routes of {@linkcode startOrigin}:
 * - `GET /hello`: `hello from <name>` (text/plain, Content-Length);
 * - `ANY /echo`: answers JSON `{ method, path, headers, bodyLength, bodySha256 }`;
 * - `POST /upload`: streams the body in, answers JSON `{ bodyLength, bodySha256 }`;
 * - `GET /bytes/N`: N bytes (pattern `i % 251`), Content-Length;
 * - `GET /chunked/N`: the same N bytes, streamed without a length (chunked);
 * - `GET /slow?ms=N`: answers after N ms;
 * - `GET /status/N`: an empty response with status N;
 * - `GET /ws`: WebSocket echo;
 * - anything else: 404.
 *
 * Every request is appended to `origin.requests` (method, path, headers).
 *
 * @module
 */

const TLS_DIR = new URL("../testdata/tls/", import.meta.url);

/** The test CA certificate (PEM), for clients that must trust the TLS origin. */
export const TEST_CA_PEM: string = Deno.readTextFileSync(new URL("ca.pem", TLS_DIR));
/** Path of the test CA certificate, for curl --cacert and friends. */
export const TEST_CA_PATH: string = new URL("ca.pem", TLS_DIR).pathname;
/** The origin certificate and key (localhost, *.test, 127.0.0.1, ::1). */
export const ORIGIN_CERT_PEM: string = Deno.readTextFileSync(new URL("origin.pem", TLS_DIR));
export const ORIGIN_KEY_PEM: string = Deno.readTextFileSync(new URL("origin-key.pem", TLS_DIR));

/** A request as the origin saw it. */
export interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

/** A running origin. */
export interface Origin {
  /** Port on 127.0.0.1. */
  port: number;
  /** `http://127.0.0.1:PORT` or `https://...`. */
  url: string;
  tls: boolean;
  requests: SeenRequest[];
  close(): Promise<void>;
}

/** Options of {@linkcode startOrigin}. */
export interface OriginOptions {
  /** Serve TLS with the test certificate. */
  tls?: boolean;
  /** Name in `/hello` answers. @default {"origin"} */
  name?: string;
  hostname?: string;
}

/** The bytes `/bytes/N` and `/chunked/N` serve. */
export function patternBytes(n: number, offset = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i + offset) % 251;
  return out;
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of bytes, hex (to compare with `/echo` and `/upload` answers). */
export function sha256(data: Uint8Array): Promise<string> {
  return sha256Hex(data);
}

async function readAll(body: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of body) {
    parts.push(p);
    n += p.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Starts an HTTP (or HTTPS) origin on 127.0.0.1, port 0. */
export function startOrigin(options: OriginOptions = {}): Promise<Origin> {
  const name = options.name ?? "origin";
  const requests: SeenRequest[] = [];
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    requests.push({ method: req.method, path: url.pathname + url.search, headers });
    const p = url.pathname;
    if (p === "/hello") return new Response(`hello from ${name}`);
    if (p === "/echo" || p === "/upload") {
      let body: Uint8Array;
      try {
        body = await readAll(req.body);
      } catch {
        return new Response("request body failed", { status: 400 });
      }
      const info: Record<string, unknown> = {
        bodyLength: body.length,
        bodySha256: await sha256Hex(body),
      };
      if (p === "/echo") Object.assign(info, { method: req.method, path: p + url.search, headers });
      return Response.json(info);
    }
    let m = /^\/bytes\/(\d+)$/.exec(p);
    if (m) return new Response(patternBytes(Number(m[1])) as Uint8Array<ArrayBuffer>);
    m = /^\/chunked\/(\d+)$/.exec(p);
    if (m) {
      const total = Number(m[1]);
      let sent = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= total) return c.close();
          const n = Math.min(16384 + (sent % 7), total - sent);
          c.enqueue(patternBytes(n, sent));
          sent += n;
        },
      });
      return new Response(stream);
    }
    if (p === "/slow") {
      await new Promise((r) => setTimeout(r, Number(url.searchParams.get("ms") ?? 100)));
      return new Response("slow");
    }
    m = /^\/status\/(\d{3})$/.exec(p);
    if (m) return new Response(null, { status: Number(m[1]) });
    if (p === "/ws") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(e.data);
      return response;
    }
    return new Response("not found", { status: 404 });
  };
  return new Promise((resolve) => {
    const base = {
      hostname: options.hostname ?? "127.0.0.1",
      port: 0,
      onListen: () => {},
    };
    const server = options.tls
      ? Deno.serve({ ...base, cert: ORIGIN_CERT_PEM, key: ORIGIN_KEY_PEM }, handler)
      : Deno.serve(base, handler);
    const port = server.addr.port;
    resolve({
      port,
      url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
      tls: !!options.tls,
      requests,
      close: () => server.shutdown(),
    });
  });
}

/** A raw TCP origin: `onConn` gets each accepted connection (and must close it). */
export interface RawOrigin {
  port: number;
  close(): Promise<void>;
}

/** Starts a raw TCP server on 127.0.0.1, port 0. */
export function startRawOrigin(onConn: (conn: Deno.Conn) => Promise<void>): RawOrigin {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const t = onConn(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await loop.catch(() => {});
      await Promise.all([...tasks]);
    },
  };
}

/**
 * A raw origin that reads request heads only, never bodies (as a server that
 * ignores them does), and answers each with `answer(head)` (the head without
 * its blank line). It honours only `Connection: close` (closing after that
 * answer); connections close after 10 s.
 */
export function startHeadOnlyOrigin(answer: (head: string) => string): RawOrigin {
  return startRawOrigin(async (conn) => {
    let data = "";
    const buf = new Uint8Array(65536);
    const deadline = setTimeout(() => conn.close(), 10_000);
    try {
      while (true) {
        let end: number;
        while ((end = data.indexOf("\r\n\r\n")) < 0) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return;
          data += String.fromCharCode(...buf.subarray(0, n));
        }
        const head = data.slice(0, end);
        data = data.slice(end + 4);
        const bytes = Uint8Array.from(answer(head), (c) => c.charCodeAt(0));
        if (await conn.write(bytes).catch(() => null) === null) return;
        if (/^connection:[^\r]*\bclose\b/im.test(head)) return;
      }
    } finally {
      clearTimeout(deadline);
    }
  });
}

/** Reads from a raw connection until `\r\n\r\n` (a request head); returns it as text. */
export async function readHeadText(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(65536);
  let n = 0;
  while (true) {
    const r = await conn.read(buf.subarray(n));
    if (r === null) break;
    n += r;
    const text = new TextDecoder().decode(buf.subarray(0, n));
    if (text.includes("\r\n\r\n")) return text;
  }
  return new TextDecoder().decode(buf.subarray(0, n));
}

/** A DNS server on 127.0.0.1 (UDP) answering A/AAAA from a fixed table. */
export interface DnsServer {
  /** Use as `nameServer` in ProxyOptions. */
  nameServer: { ipAddr: string; port: number };
  /** Names asked, in order (lower case, no trailing dot). */
  queries: string[];
  close(): Promise<void>;
}

/**
 * Starts a tiny authoritative DNS server for tests: `records` maps a name to
 * its addresses (IPv4 and IPv6 literals); other names get NXDOMAIN.
 */
export async function startDnsServer(records: Record<string, string[]>): Promise<DnsServer> {
  const dgram = await import("node:dgram");
  const { parseIPv6, parseIPv4 } = await import("../../lib/net/guard.ts");
  const sock = dgram.createSocket("udp4");
  const queries: string[] = [];
  sock.on("message", (msg: Uint8Array, rinfo: { port: number; address: string }) => {
    try {
      // Header (12 bytes), then one question: labels, qtype, qclass.
      let o = 12;
      const labels: string[] = [];
      while (msg[o] !== 0) {
        labels.push(new TextDecoder().decode(msg.subarray(o + 1, o + 1 + msg[o])));
        o += msg[o] + 1;
      }
      o += 1;
      const qtype = (msg[o] << 8) | msg[o + 1];
      const question = msg.subarray(12, o + 4);
      const name = labels.join(".").toLowerCase();
      queries.push(name);
      const addrs = records[name];
      const answers: number[] = [];
      let count = 0;
      for (const a of addrs ?? []) {
        const v4 = parseIPv4(a);
        const rdata = qtype === 1 && v4 !== undefined
          ? [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255]
          : qtype === 28 && v4 === undefined
          ? [...parseIPv6(a)!]
          : undefined;
        if (!rdata) continue;
        count++;
        answers.push(0xc0, 12, 0, qtype, 0, 1, 0, 0, 0, 5, 0, rdata.length, ...rdata);
      }
      const rcode = addrs ? 0 : 3;
      const head = [msg[0], msg[1], 0x81, 0x80 | rcode, 0, 1, 0, count, 0, 0, 0, 0];
      sock.send(new Uint8Array([...head, ...question, ...answers]), rinfo.port, rinfo.address);
    } catch {
      // malformed query: ignore
    }
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    nameServer: { ipAddr: "127.0.0.1", port: sock.address().port },
    queries,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}
