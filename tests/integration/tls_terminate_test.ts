/**
 * Server-side TLS termination (lib/tls/terminate.ts) against real clients:
 * Deno's TLS client, curl and openssl s_client, over loopback TCP, with the
 * ClientHello bytes read first and re-injected as the proxy does.
 */
import assert from "node:assert/strict";
import { hasAll } from "../_helpers/tools.ts";
import type { Duplex } from "../../lib/proxy/types.ts";
import { parseClientHello } from "../../lib/tls/client_hello.ts";
import { createCa } from "../../lib/tls/ca.ts";
import { LeafIssuer } from "../../lib/tls/leaf.ts";
import { ClientTlsError, type TerminatedTls, terminateTls } from "../../lib/tls/terminate.ts";

const ca = await createCa({ hostname: "test" });
const leaves = await LeafIssuer.create(ca);
const caDir = await Deno.makeTempDir({ prefix: "nm-tls-term-" });
const caPath = `${caDir}/ca.pem`;
await Deno.writeTextFile(caPath, ca.certPem);
globalThis.addEventListener("unload", () => Deno.removeSync(caDir, { recursive: true }));

type Handler = (tls: TerminatedTls) => Promise<void>;
interface Terminator {
  port: number;
  /** One settled outcome per accepted connection: the stream, or the handshake error. */
  outcomes: Promise<TerminatedTls | ClientTlsError>[];
  close(): Promise<void>;
}

interface TerminatorOptions {
  /** How many bytes to read before handing over; default: the whole ClientHello. */
  prefixBytes?: number;
  handshakeTimeoutMs?: number;
  signal?: AbortSignal;
  /** Host for the leaf when the client sends no SNI. */
  fallbackHost?: string;
}

/** A TCP server that peeks like the proxy, then terminates TLS and runs `handler`. */
function startTerminator(handler: Handler, options: TerminatorOptions = {}): Terminator {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const outcomes: Promise<TerminatedTls | ClientTlsError>[] = [];
  const tasks: Promise<unknown>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      conn.setNoDelay(true);
      const outcome = (async () => {
        let prefix = new Uint8Array(0);
        let sni: string | undefined;
        const buf = new Uint8Array(options.prefixBytes ?? 4096);
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) throw new Error("client closed before sending a ClientHello");
          const next = new Uint8Array(prefix.length + n);
          next.set(prefix);
          next.set(buf.subarray(0, n), prefix.length);
          prefix = next;
          if (options.prefixBytes !== undefined) break;
          const hello = parseClientHello(prefix);
          if (hello) {
            sni = hello.serverName;
            break;
          }
        }
        const leaf = await leaves.get(sni ?? options.fallbackHost ?? "127.0.0.1");
        try {
          return await terminateTls(conn, prefix, {
            leaf,
            handshakeTimeoutMs: options.handshakeTimeoutMs,
            signal: options.signal,
          });
        } catch (e) {
          if (e instanceof ClientTlsError) return e;
          throw e;
        }
      })();
      outcomes.push(outcome);
      tasks.push(
        outcome.then(async (o) => {
          if (o instanceof ClientTlsError) return;
          try {
            await handler(o);
          } finally {
            o.close();
          }
        }).catch(() => {}),
      );
    }
  })();
  return {
    port: listener.addr.port,
    outcomes,
    async close() {
      listener.close();
      await loop.catch(() => {});
      await Promise.allSettled(tasks);
    },
  };
}

async function writeAll(d: Duplex, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await d.write(data.subarray(off));
}

/** Answers every request head with 200 and `ok <host>` (keep-alive). */
const httpResponder: Handler = async (tls) => {
  const buf = new Uint8Array(8192);
  let head = "";
  for (;;) {
    const n = await tls.read(buf);
    if (n === null) return;
    head += new TextDecoder().decode(buf.subarray(0, n));
    let end;
    while ((end = head.indexOf("\r\n\r\n")) >= 0) {
      const host = /\r\nhost: *([^\r]*)/i.exec(head.slice(0, end))?.[1] ?? "";
      const close = /\r\nconnection: *close/i.test(head.slice(0, end));
      head = head.slice(end + 4);
      const body = `ok ${host} ${tls.servername} ${tls.alpnProtocol}`;
      await writeAll(
        tls,
        new TextEncoder().encode(
          `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        ),
      );
      if (close) {
        await tls.closeWrite();
        return;
      }
    }
  }
};

/** Echoes every byte back, then closes its write side at EOF. */
const echo: Handler = async (tls) => {
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await tls.read(buf);
    if (n === null) break;
    await writeAll(tls, buf.subarray(0, n));
  }
  await tls.closeWrite();
};

async function denoClient(port: number, host: string, caCerts?: string[]): Promise<Deno.TlsConn> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true);
  return await Deno.startTls(tcp, { hostname: host, caCerts, alpnProtocols: ["http/1.1"] });
}

async function run(cmd: string, args: string[], stdin = "") {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + (i >> 8)) % 251;
  return out;
}

Deno.test("terminate: Deno client trusting the CA, 2 MiB echoed both ways, ALPN http/1.1", async () => {
  const server = startTerminator(echo);
  try {
    const client = await denoClient(server.port, "api.example.test", [ca.certPem]);
    const info = await client.handshake();
    assert.equal(info.alpnProtocol, "http/1.1");
    const data = pattern(2 * 1024 * 1024);
    const writing = (async () => {
      await writeAll(client, data);
      await client.closeWrite();
    })();
    const got = new Uint8Array(data.length);
    let off = 0;
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await client.read(buf);
      if (n === null) break;
      got.set(buf.subarray(0, n), off);
      off += n;
    }
    await writing;
    assert.equal(off, data.length);
    assert.deepEqual(got, data);
    client.close();
    const tls = await server.outcomes[0];
    assert.ok(!(tls instanceof ClientTlsError));
    assert.equal(tls.servername, "api.example.test");
    assert.equal(tls.alpnProtocol, "http/1.1");
  } finally {
    await server.close();
  }
});

Deno.test("terminate: the prefix may end anywhere (7 bytes peeked, the rest from the conn)", async () => {
  const server = startTerminator(httpResponder, { prefixBytes: 7, fallbackHost: "split.test" });
  try {
    const client = await denoClient(server.port, "split.test", [ca.certPem]);
    await writeAll(client, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: split.test\r\n\r\n"));
    const buf = new Uint8Array(1024);
    const n = await client.read(buf);
    assert.match(
      new TextDecoder().decode(buf.subarray(0, n!)),
      /^HTTP\/1\.1 200 OK.*ok split\.test/s,
    );
    client.close();
  } finally {
    await server.close();
  }
});

Deno.test("terminate: curl --cacert, keep-alive over one connection, name and IP hosts", {
  ignore: !hasAll("curl"),
}, async () => {
  const server = startTerminator(httpResponder);
  try {
    const url = `https://web.test:${server.port}/`;
    const r = await run("curl", [
      "-sS",
      "--cacert",
      caPath,
      "--resolve",
      `web.test:${server.port}:127.0.0.1`,
      "-o",
      "/dev/null",
      url,
      "-o",
      "/dev/null",
      url,
      "-w",
      "%{http_code} %{num_connects}\n",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "200 1\n200 0\n", "the second request reused the connection");
    assert.equal(server.outcomes.length, 1);
    // No SNI for an IP URL: the leaf for 127.0.0.1 carries an iPAddress SAN curl accepts.
    const ip = await run("curl", ["-sS", "--cacert", caPath, `https://127.0.0.1:${server.port}/`]);
    assert.equal(ip.code, 0, ip.stderr);
    assert.equal(ip.stdout, "ok 127.0.0.1:" + server.port + " null http/1.1");
  } finally {
    await server.close();
  }
});

Deno.test("terminate: openssl s_client verifies the chain and host, TLS 1.3 and 1.2", {
  ignore: !hasAll("openssl"),
}, async () => {
  const server = startTerminator(httpResponder);
  try {
    for (const version of ["-tls1_3", "-tls1_2"]) {
      const r = await run("openssl", [
        "s_client",
        version,
        "-connect",
        `127.0.0.1:${server.port}`,
        "-servername",
        "check.test",
        "-verify_hostname",
        "check.test",
        "-CAfile",
        caPath,
        "-verify_return_error",
        "-alpn",
        "http/1.1",
        "-quiet",
      ], "GET / HTTP/1.1\r\nHost: check.test\r\nConnection: close\r\n\r\n");
      assert.match(r.stderr, /verify return:1/, r.stderr);
      assert.doesNotMatch(r.stderr, /verify error/);
      assert.match(r.stdout, /ok check\.test check\.test http\/1\.1/, `${version}: ${r.stdout}`);
    }
  } finally {
    await server.close();
  }
});

Deno.test(
  "terminate: a client that does not trust the CA is reported as rejecting the certificate",
  { ignore: !hasAll("curl") },
  async () => {
    const server = startTerminator(httpResponder);
    try {
      await assert.rejects(async () => {
        const c = await denoClient(server.port, "pinned.test");
        try {
          await c.handshake();
        } finally {
          c.close();
        }
      }, /UnknownIssuer/);
      const deno = await server.outcomes[0];
      assert.ok(deno instanceof ClientTlsError, String(deno));
      assert.equal(deno.failure, "rejected-certificate");
      assert.equal(deno.rejectedCertificate, true);
      assert.equal(deno.alert, "UnknownCA");
      assert.match(
        deno.message,
        /client rejected netmonitor's certificate \(TLS alert UnknownCA\)/,
      );

      const r = await run("curl", [
        "-sS",
        "--resolve",
        `pinned.test:${server.port}:127.0.0.1`,
        `https://pinned.test:${server.port}/`,
      ]);
      assert.notEqual(r.code, 0);
      const viaCurl = await server.outcomes[1];
      assert.ok(viaCurl instanceof ClientTlsError);
      assert.equal(viaCurl.rejectedCertificate, true, viaCurl.message);
    } finally {
      await server.close();
    }
  },
);

Deno.test("terminate: not TLS, a stalled handshake, a vanished client, an abort", async () => {
  // Plain HTTP where a ClientHello should be.
  {
    const server = startTerminator(httpResponder, { prefixBytes: 64 });
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x.test\r\n\r\n"));
      const e = await server.outcomes[0];
      assert.ok(e instanceof ClientTlsError);
      assert.equal(e.failure, "failed");
      assert.equal(e.rejectedCertificate, false);
      c.close();
    } finally {
      await server.close();
    }
  }
  // A client that sends the start of a record and then nothing.
  {
    const server = startTerminator(httpResponder, { prefixBytes: 3, handshakeTimeoutMs: 300 });
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await c.write(new Uint8Array([22, 3, 1]));
      const e = await server.outcomes[0];
      assert.ok(e instanceof ClientTlsError);
      assert.equal(e.failure, "timeout");
      assert.match(e.message, /did not complete the TLS handshake in time/);
      // The terminator closed the connection.
      assert.equal(await c.read(new Uint8Array(16)), null);
      c.close();
    } finally {
      await server.close();
    }
  }
  // A client that goes away mid-handshake.
  {
    const server = startTerminator(httpResponder, { prefixBytes: 3 });
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await c.write(new Uint8Array([22, 3, 1]));
      c.close();
      const e = await server.outcomes[0];
      assert.ok(e instanceof ClientTlsError);
      assert.equal(e.failure, "closed");
      assert.match(e.message, /closed the connection during the TLS handshake/);
    } finally {
      await server.close();
    }
  }
  // Shutdown: the signal aborts a handshake in progress.
  {
    const ac = new AbortController();
    const server = startTerminator(httpResponder, { prefixBytes: 3, signal: ac.signal });
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await c.write(new Uint8Array([22, 3, 1]));
      while (server.outcomes.length === 0) await new Promise((r) => setTimeout(r, 10));
      ac.abort();
      const e = await server.outcomes[0];
      assert.ok(e instanceof ClientTlsError);
      assert.equal(e.failure, "aborted");
      c.close();
    } finally {
      await server.close();
    }
  }
});

Deno.test("terminate: EOF and close propagate both ways", async () => {
  let serverSide: TerminatedTls | undefined;
  const closed = Promise.withResolvers<number | null>();
  const server = startTerminator(async (tls) => {
    serverSide = tls;
    await writeAll(tls, new TextEncoder().encode("hello"));
    await tls.closeWrite(); // close_notify + FIN: the client reads EOF
    closed.resolve(await tls.read(new Uint8Array(10))); // the client's close: null
  });
  try {
    const c = await denoClient(server.port, "eof.test", [ca.certPem]);
    const buf = new Uint8Array(100);
    const n = await c.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "hello");
    assert.equal(await c.read(buf), null);
    c.close();
    assert.equal(await closed.promise, null);
    assert.ok(serverSide);
    await assert.rejects(() => serverSide!.write(new Uint8Array(1)));
  } finally {
    await server.close();
  }
});

Deno.test("terminate: handshakes rustls refuses (TLS 1.0 only, ALPN h2 only) fail cleanly", {
  ignore: !hasAll("curl", "openssl"),
}, async () => {
  const server = startTerminator(httpResponder);
  try {
    const tls10 = await run("openssl", [
      "s_client",
      "-tls1",
      "-cipher",
      "DEFAULT@SECLEVEL=0",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-servername",
      "old.test",
    ]);
    assert.notEqual(tls10.code, 0);
    const h2 = await run("openssl", [
      "s_client",
      "-alpn",
      "h2",
      "-connect",
      `127.0.0.1:${server.port}`,
      "-servername",
      "h2.test",
      "-CAfile",
      caPath,
    ]);
    assert.notEqual(h2.code, 0, h2.stdout);
    for (const outcome of server.outcomes) {
      const e = await outcome;
      assert.ok(e instanceof ClientTlsError, String(e));
      assert.equal(e.rejectedCertificate, false);
    }
    assert.equal(server.outcomes.length, 2);
    // And the terminator still serves others.
    const ok = await run("curl", ["-sS", "--cacert", caPath, `https://127.0.0.1:${server.port}/`]);
    assert.equal(ok.code, 0, ok.stderr);
  } finally {
    await server.close();
  }
});

Deno.test("terminate: a client cannot make the terminator buffer what nobody reads", async () => {
  const reading = Promise.withResolvers<void>();
  let received = 0;
  const server = startTerminator(async (tls) => {
    await reading.promise; // the "origin" is slow: nothing is read until released
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await tls.read(buf);
      if (n === null) return;
      received += n;
    }
  });
  try {
    const client = await denoClient(server.port, "upload.test", [ca.certPem]);
    await client.handshake();
    const total = 64 * 1024 * 1024;
    let sent = 0;
    const chunk = new Uint8Array(65536);
    const writing = (async () => {
      while (sent < total) sent += await client.write(chunk);
      await client.closeWrite();
    })();
    // Wait until the writer stops making progress (backpressure), or finishes.
    let last = -1;
    while (sent !== last && sent < total) {
      last = sent;
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.ok(sent < 16 * 1024 * 1024, `${sent} bytes accepted while nothing was read`);
    reading.resolve();
    await writing;
    client.close();
    while (received < total) await new Promise((r) => setTimeout(r, 20));
    assert.equal(received, total);
  } finally {
    reading.resolve();
    await server.close();
  }
});

Deno.test("terminate: mutated ClientHellos fail cleanly and never take the process down", async () => {
  // A real ClientHello, captured from Deno's TLS client.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const captured = (async () => {
      const s = await listener.accept();
      const buf = new Uint8Array(4096);
      let hello = new Uint8Array(0);
      while (!parseClientHello(hello)) {
        const n = await s.read(buf);
        if (n === null) throw new Error("no ClientHello");
        hello = new Uint8Array([...hello, ...buf.subarray(0, n)]);
      }
      s.close();
      return hello;
    })();
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const client = Deno.startTls(tcp, { hostname: "fuzz.test" });
    const hello = await captured;
    await client.then((c) => c.handshake().finally(() => c.close())).catch(() => {});

    let seed = 0x2545f491; // xorshift32: the same mutations every run
    const random = () => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 2 ** 32;
    };
    const leaf = await leaves.get("fuzz.test");
    const attempts = Array.from({ length: 40 }, async (_, i) => {
      const mutated = hello.slice();
      for (let f = 0; f <= i % 4; f++) {
        mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
      }
      const peer = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const conn = await listener.accept();
      try {
        return await terminateTls(conn, mutated, { leaf, handshakeTimeoutMs: 300 }).then(
          (tls) => {
            tls.close();
            return "completed";
          },
          (e) => (e instanceof ClientTlsError ? e.failure : `unexpected ${e}`),
        );
      } finally {
        peer.close();
      }
    });
    const outcomes = await Promise.all(attempts);
    for (const o of outcomes) assert.ok(o === "failed" || o === "timeout", o);
  } finally {
    listener.close();
  }
});
