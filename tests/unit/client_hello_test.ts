import assert from "node:assert/strict";
import { ClientHelloError, parseClientHello } from "../../lib/tls/client_hello.ts";

/** Captures the first flight a real TLS client (Deno's rustls) sends to a loopback listener. */
async function captureHello(hostname: string, alpn?: string[]): Promise<Uint8Array> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const client = Deno.connect({ hostname: "127.0.0.1", port }).then((tcp) =>
    Deno.startTls(tcp, { hostname, alpnProtocols: alpn })
  );
  const server = await listener.accept();
  const buf = new Uint8Array(65536);
  let n = 0;
  // Read until the parser is satisfied (the hello may come in several reads).
  while (true) {
    const r = await server.read(buf.subarray(n));
    if (r === null) break;
    n += r;
    if (parseClientHello(buf.subarray(0, n))) break;
  }
  server.close();
  listener.close();
  const conn = await client;
  await conn.handshake().catch(() => {});
  conn.close();
  return buf.slice(0, n);
}

/** Builds a synthetic ClientHello with the given extensions (type, body). */
function buildHello(exts: [number, Uint8Array][], opts: { recordSize?: number } = {}): Uint8Array {
  const u16 = (n: number) => [n >> 8, n & 0xff];
  const extBytes: number[] = [];
  for (const [t, body] of exts) extBytes.push(...u16(t), ...u16(body.length), ...body);
  const body = [
    0x03,
    0x03,
    ...new Array(32).fill(7),
    0, // session id
    ...u16(2),
    0x13,
    0x01, // one suite
    1,
    0, // compression: null
    ...u16(extBytes.length),
    ...extBytes,
  ];
  const msg = [1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff, ...body];
  const size = opts.recordSize ?? 16384;
  const out: number[] = [];
  for (let i = 0; i < msg.length; i += size) {
    const frag = msg.slice(i, i + size);
    out.push(22, 3, 1, ...u16(frag.length), ...frag);
  }
  return new Uint8Array(out);
}

function sni(name: string, type = 0): Uint8Array {
  const n = new TextEncoder().encode(name);
  const entry = [type, n.length >> 8, n.length & 0xff, ...n];
  return new Uint8Array([entry.length >> 8, entry.length & 0xff, ...entry]);
}

Deno.test("client hello: a real rustls ClientHello with SNI and ALPN", async () => {
  const bytes = await captureHello("Origin.Test", ["http/1.1", "h2"]);
  const hello = parseClientHello(bytes)!;
  assert.equal(hello.serverName, "origin.test");
  assert.deepEqual(hello.alpn, ["http/1.1", "h2"]);
  assert.equal(hello.offersTls13, true);
  assert.equal(hello.length, bytes.length);
});

Deno.test("client hello: a real ClientHello to an IP literal has no SNI", async () => {
  const bytes = await captureHello("127.0.0.1");
  const hello = parseClientHello(bytes)!;
  assert.equal(hello.serverName, undefined);
});

Deno.test("client hello: split across reads, any split point asks for more", async () => {
  const bytes = await captureHello("a.test");
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(parseClientHello(bytes.subarray(0, i)), undefined, `prefix ${i}`);
  }
  assert.equal(parseClientHello(bytes)!.serverName, "a.test");
});

Deno.test("client hello: a message fragmented over several records", () => {
  const bytes = buildHello([[0, sni("frag.test")]], { recordSize: 10 });
  const hello = parseClientHello(bytes)!;
  assert.equal(hello.serverName, "frag.test");
  assert.equal(hello.length, bytes.length);
  // Bytes after the hello are not part of it.
  const more = new Uint8Array([...bytes, 23, 3, 3, 0, 1, 0]);
  assert.equal(parseClientHello(more)!.length, bytes.length);
});

Deno.test("client hello: too many records is an error, found without waiting for the rest", () => {
  // About 80 bytes of message in 1-byte records: 80 records.
  const bytes = buildHello([[0, sni("frag.test")]], { recordSize: 1 });
  assert.ok(parseClientHello(bytes, { maxRecords: 128 }), "fits 128 records");
  assert.throws(
    () => parseClientHello(bytes, { maxRecords: 64 }),
    (e: unknown) => e instanceof ClientHelloError && /more than 64 TLS records/.test(e.message),
  );
  // As soon as the 65th record header is there, not once the hello is complete.
  assert.throws(() => parseClientHello(bytes.subarray(0, 64 * 6 + 5)), ClientHelloError);
  assert.equal(parseClientHello(bytes.subarray(0, 64 * 6 + 4)), undefined);
});

Deno.test("client hello: non-TLS first bytes are reported as not TLS", () => {
  for (const text of ["GET / HTTP/1.1\r\n", "SSH-2.0-OpenSSH\r\n", "\x16\x02", "G"]) {
    assert.throws(
      () => parseClientHello(new TextEncoder().encode(text)),
      (e: unknown) => e instanceof ClientHelloError && e.notTls,
      text,
    );
  }
  // An SSLv2-style hello is not accepted either.
  assert.throws(
    () => parseClientHello(new Uint8Array([0x80, 0x2e, 0x01, 0x03, 0x01])),
    (e: unknown) => e instanceof ClientHelloError && e.notTls,
  );
});

Deno.test("client hello: malformed hellos are rejected", () => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array([22, 3, 1, 0, 0]), /record length 0/],
    [new Uint8Array([22, 3, 1, 0x40, 0x01]), /record length/],
    [new Uint8Array([22, 3, 1, 0, 4, 2, 0, 0, 0]), /not ClientHello/],
    [buildHello([[0, sni("a.test")], [0, sni("b.test")]]), /duplicate TLS extension/],
    [buildHello([[0, new Uint8Array([0, 20, 0, 0, 1, 0x61])]]), /truncated/],
    [buildHello([[0, sni("a b.test")]]), /invalid character/],
    [buildHello([[0, sni("a\u0000.test")]]), /invalid character/],
    [buildHello([[0, sni("")]]), /empty SNI/],
    [buildHello([[16, new Uint8Array([0, 1, 0])]]), /empty ALPN/],
  ];
  for (const [bytes, msg] of cases) {
    assert.throws(() => parseClientHello(bytes), (e: unknown) => {
      assert.ok(e instanceof ClientHelloError);
      assert.equal(e.notTls, false);
      assert.match(e.message, msg);
      return true;
    });
  }
  // Two host_names in one extension.
  const two = [...sni("a.test").subarray(2), ...sni("b.test").subarray(2)];
  assert.throws(
    () => parseClientHello(buildHello([[0, new Uint8Array([0, two.length, ...two])]])),
    /more than one host_name/,
  );
  // A hello larger than allowed.
  const big = buildHello([[21, new Uint8Array(5000)]]);
  assert.throws(() => parseClientHello(big, { maxLength: 1000 }), /too large/);
});

Deno.test("client hello: unknown SNI name types are skipped", () => {
  const ext = [...sni("x", 1).subarray(2), ...sni("ok.test").subarray(2)];
  const hello = parseClientHello(buildHello([[0, new Uint8Array([0, ext.length, ...ext])]]))!;
  assert.equal(hello.serverName, "ok.test");
});
