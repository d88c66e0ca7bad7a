/**
 * The floor: the least a forward proxy on Deno can do per request, to tell
 * what the runtime costs from what netmonitor's engine adds. One upstream
 * connection per client connection, one `read` and one `write` each way per
 * request, no checks, no decisions, no log, no timeouts. It serves only what
 * the latency and HTTP rows send (absolute-form GETs answered with a
 * Content-Length body, no pipelining), and accepts the subset of `netmonitor
 * run`'s command line the benchmark passes:
 *
 *   deno task bench --only latency --netmonitor-cmd "deno run -A bench/_floor_proxy.ts"
 *
 * Not a proxy anyone should run: it trusts every byte it is sent.
 *
 * @module
 */

import { parseArgs } from "node:util";

const HELP = `Usage: _floor_proxy.ts [--data-dir DIR] run --port PORT [--resolve HOST:PORT:ADDR]...
  Listens on 127.0.0.1; other options are ignored.
`;

const CRLFCRLF = [13, 10, 13, 10];

function headEnd(buf: Uint8Array, n: number): number {
  outer: for (let i = 3; i < n; i++) {
    for (let k = 0; k < 4; k++) if (buf[i - 3 + k] !== CRLFCRLF[k]) continue outer;
    return i + 1;
  }
  return -1;
}

async function readHead(conn: Deno.Conn, buf: Uint8Array): Promise<[number, number] | null> {
  let n = 0;
  while (true) {
    const r = await conn.read(buf.subarray(n));
    if (r === null) return null;
    n += r;
    const end = headEnd(buf, n);
    if (end >= 0) return [end, n];
  }
}

async function serve(client: Deno.Conn, resolve: Map<string, string>): Promise<void> {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const buf = new Uint8Array(65536);
  const ubuf = new Uint8Array(65536);
  let up: Deno.Conn | undefined;
  try {
    while (true) {
      const req = await readHead(client, buf);
      if (!req) return;
      const head = dec.decode(buf.subarray(0, req[0]));
      const eol = head.indexOf("\r\n");
      const [method, target, version] = head.slice(0, eol).split(" ");
      const m = /^http:\/\/([^/:]+)(?::(\d+))?(\/.*)?$/.exec(target);
      if (!m) return;
      const port = Number(m[2] ?? 80);
      up ??= await Deno.connect({ hostname: resolve.get(`${m[1]}:${port}`) ?? m[1], port });
      await up.write(enc.encode(`${method} ${m[3] ?? "/"} ${version}${head.slice(eol)}`));
      const res = await readHead(up, ubuf);
      if (!res) return;
      const length = /\r\ncontent-length: *(\d+)/i.exec(dec.decode(ubuf.subarray(0, res[0])));
      let n = res[1];
      const total = res[0] + Number(length?.[1] ?? 0);
      while (n < total) {
        const r = await up.read(ubuf.subarray(n, total));
        if (r === null) return;
        n += r;
      }
      await client.write(ubuf.subarray(0, total));
    }
  } catch {
    // a benchmark client went away
  } finally {
    for (const c of [client, up]) {
      try {
        c?.close();
      } catch {
        // already closed
      }
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    strict: false,
    options: {
      port: { type: "string" },
      resolve: { type: "string", multiple: true },
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const resolve = new Map<string, string>();
  for (const r of (values.resolve as string[] | undefined) ?? []) {
    const i = r.lastIndexOf(":");
    resolve.set(r.slice(0, i), r.slice(i + 1));
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.port ?? 8080) });
  console.log(`Listening on http://127.0.0.1:${listener.addr.port}`);
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  for await (const conn of listener) serve(conn, resolve);
}
