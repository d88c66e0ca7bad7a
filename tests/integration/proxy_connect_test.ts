/**
 * CONNECT tunnels against a real TLS origin: allowed and denied tunnels,
 * the SNI check, the non-TLS policy, split and slow ClientHellos.
 */

import assert from "node:assert/strict";
import { has } from "../_helpers/tools.ts";
import { startOrigin, startRawOrigin, TEST_CA_PATH, TEST_CA_PEM } from "../_helpers/origin.ts";
import { curl, RawClient, startTestProxy } from "../_helpers/proxy.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Opens a CONNECT tunnel on a raw connection; returns the client and the 200 head. */
async function tunnel(proxyPort: number, authority: string): Promise<RawClient> {
  const c = await RawClient.connect(proxyPort);
  await c.send(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const r = await c.response({ head: true });
  assert.equal(r.status, 200, `CONNECT ${authority}: ${r.statusLine}`);
  return c;
}

/** GET over TLS on an established tunnel. */
async function getOverTls(c: RawClient, hostname: string, path: string, host: string) {
  const tls = await Deno.startTls(c.conn, { hostname, caCerts: [TEST_CA_PEM] });
  try {
    await tls.write(
      enc.encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    let text = "";
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await tls.read(buf).catch(() => null);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    try {
      tls.close();
    } catch { /* closed */ }
  }
}

Deno.test({
  name: "connect: curl fetches https through an allowed tunnel; one record for the tunnel",
  ignore: !has("curl"),
  async fn() {
    const origin = await startOrigin({ tls: true });
    const proxy = await startTestProxy({
      rules: { "origin.test": "allow-domain" },
      resolve: [["origin.test", origin.port, "127.0.0.1"]],
    });
    try {
      const r = await curl(proxy.url, [
        "--cacert",
        TEST_CA_PATH,
        `https://origin.test:${origin.port}/hello`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "hello from origin");
      const [rec] = await proxy.waitRecords(1);
      assert.equal(rec.method, "CONNECT");
      assert.equal(rec.url, `origin.test:${origin.port}`);
      assert.equal(rec.host, "origin.test");
      assert.deepEqual([rec.decision, rec.source, rec.status], ["allow", "rule", 200]);
      assert.ok(rec.bytesUp > 200 && rec.bytesDown > 500, JSON.stringify(rec));
      assert.deepEqual(proxy.decided[0].target, {
        scheme: "https",
        host: "origin.test",
        port: origin.port,
      });
      assert.equal(proxy.decided[0].url, undefined);
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});

Deno.test("connect: a Deno TLS client speaks through the relayed tunnel", async () => {
  const origin = await startOrigin({ tls: true });
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  try {
    const c = await tunnel(proxy.port, `origin.test:${origin.port}`);
    const text = await getOverTls(c, "origin.test", "/bytes/100000", `origin.test:${origin.port}`);
    assert.match(text, /^HTTP\/1\.1 200 OK/);
    assert.ok(text.length > 100000);
    const [rec] = await proxy.waitRecords(1);
    assert.equal(rec.status, 200);
    assert.ok(rec.bytesDown > 100000);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("connect: a denied tunnel gets 403 and is closed", async () => {
  const origin = await startRawOrigin(() => Promise.reject(new Error("must not connect")));
  const proxy = await startTestProxy({
    rules: { "*.blocked.test": "deny-domain" },
    resolve: [["x.blocked.test", origin.port, "127.0.0.1"]],
  });
  try {
    const c = await RawClient.connect(proxy.port);
    await c.send(
      `CONNECT x.blocked.test:${origin.port} HTTP/1.1\r\nHost: x.blocked.test:${origin.port}\r\n\r\n`,
    );
    const r = await c.response();
    assert.equal(r.status, 403);
    assert.match(
      r.headers.get("x-netmonitor-decision")!,
      /^deny; reason="rule \\"\*\.blocked\.test\\"/,
    );
    assert.match(r.text, /host: x\.blocked\.test/);
    assert.equal(await c.readToEnd(), "", "connection closed after the 403");
    c.close();
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.method, rec.decision, rec.source, rec.status], [
      "CONNECT",
      "deny",
      "rule",
      403,
    ]);
    assert.equal(rec.url, `x.blocked.test:${origin.port}`);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

/** A TCP origin that counts the bytes it receives (it never answers). */
function byteCountingOrigin() {
  const state = { bytes: 0, conns: 0 };
  const origin = startRawOrigin(async (conn) => {
    state.conns++;
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return;
      state.bytes += n;
    }
  });
  return { origin, state };
}

Deno.test("connect: an SNI that does not name the CONNECT host is denied before any byte goes out", async () => {
  const { origin, state } = byteCountingOrigin();
  const proxy = await startTestProxy({
    rules: { "allowed.test": "allow-domain", "evil.test": "allow-domain" },
    resolve: [["allowed.test", origin.port, "127.0.0.1"]],
  });
  try {
    const c = await tunnel(proxy.port, `allowed.test:${origin.port}`);
    const tls = await Deno.startTls(c.conn, { hostname: "evil.test", caCerts: [TEST_CA_PEM] });
    await assert.rejects(tls.handshake(), /AccessDenied|access.denied/i);
    tls.close();
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.method, rec.decision, rec.source], ["CONNECT", "deny", "policy"]);
    assert.equal(rec.reason, `SNI "evil.test" does not match the CONNECT host allowed.test`);
    assert.equal(rec.status, 200);
    assert.equal(state.bytes, 0, "nothing reached the origin");
    c.close();
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("connect: no SNI is denied for a named host, allowed for an IP literal", async () => {
  const { origin } = byteCountingOrigin();
  const tlsOrigin = await startOrigin({ tls: true });
  const proxy = await startTestProxy({
    rules: { "named.test": "allow-domain", "127.0.0.1": "allow-domain" },
    resolve: [["named.test", origin.port, "127.0.0.1"]],
  });
  try {
    const c = await tunnel(proxy.port, `named.test:${origin.port}`);
    // Connecting by IP makes the TLS client send no SNI.
    const tls = await Deno.startTls(c.conn, { hostname: "127.0.0.1", caCerts: [TEST_CA_PEM] });
    await assert.rejects(tls.handshake());
    tls.close();
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
    assert.match(rec.reason, /without SNI in a tunnel to named\.test/);

    // An exact IP rule allows the loopback origin (destination protection
    // exemption), and no SNI is fine for an IP literal.
    const c2 = await tunnel(proxy.port, `127.0.0.1:${tlsOrigin.port}`);
    const text = await getOverTls(c2, "127.0.0.1", "/hello", `127.0.0.1:${tlsOrigin.port}`);
    assert.match(text, /hello from origin$/);
    const recs = await proxy.waitRecords(2);
    assert.deepEqual([recs[1].decision, recs[1].source, recs[1].status], ["allow", "rule", 200]);
  } finally {
    await proxy.close();
    await origin.close();
    await tlsOrigin.close();
  }
});

Deno.test("connect: non-TLS first bytes are denied and the tunnel closed (fail closed)", async () => {
  const { origin, state } = byteCountingOrigin();
  const proxy = await startTestProxy({
    rules: { "plain.test": "allow-domain" },
    resolve: [["plain.test", origin.port, "127.0.0.1"]],
  });
  try {
    const c = await tunnel(proxy.port, `plain.test:${origin.port}`);
    await c.send(`GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n`);
    const r = await c.response();
    assert.equal(r.status, 403);
    assert.match(r.text, /must carry TLS/);
    c.close();
    const c2 = await tunnel(proxy.port, `plain.test:${origin.port}`);
    await c2.send("SSH-2.0-OpenSSH_9.2\r\n");
    assert.equal(await c2.readToEnd(), "");
    c2.close();
    const recs = await proxy.waitRecords(2);
    for (const rec of recs) {
      assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
      assert.equal(rec.reason, "tunnel traffic is not TLS (fail closed)");
      assert.match(rec.error!, /not a TLS handshake record/);
    }
    assert.equal(state.bytes, 0);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("connect: a ClientHello split into tiny delayed segments is reassembled", async () => {
  const origin = await startOrigin({ tls: true });
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
  });
  // A relay between a TLS client and the tunnel that dribbles the first 600
  // bytes 5 at a time.
  const splitter = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const relayDone = (async () => {
    const inbound = await splitter.accept();
    const c = await tunnel(proxy.port, `origin.test:${origin.port}`);
    const up = (async () => {
      const buf = new Uint8Array(65536);
      let sent = 0;
      while (true) {
        const n = await inbound.read(buf).catch(() => null);
        if (n === null) break;
        for (let o = 0; o < n;) {
          const step = sent < 600 ? Math.min(5, n - o) : n - o;
          await c.send(buf.slice(o, o + step));
          o += step;
          sent += step;
          if (sent <= 600) await new Promise((r) => setTimeout(r, 1));
        }
      }
      await c.conn.closeWrite().catch(() => {});
    })();
    const down = (async () => {
      const buf = new Uint8Array(65536);
      while (true) {
        const n = await c.conn.read(buf).catch(() => null);
        if (n === null) break;
        let o = 0;
        while (o < n) o += await inbound.write(buf.subarray(o, n));
      }
      inbound.close();
    })();
    await Promise.all([up, down]);
    c.close();
  })();
  try {
    const tcp = await Deno.connect({
      hostname: "127.0.0.1",
      port: (splitter.addr as Deno.NetAddr).port,
    });
    const tls = await Deno.startTls(tcp, { hostname: "origin.test", caCerts: [TEST_CA_PEM] });
    await tls.write(
      enc.encode(`GET /hello HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n`),
    );
    let text = "";
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await tls.read(buf).catch(() => null);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    tls.close();
    assert.match(text, /hello from origin$/);
    await relayDone;
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.decision, rec.status], ["allow", 200]);
  } finally {
    splitter.close();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("connect: a client that sends no ClientHello is cut after the hello timeout", async () => {
  const { origin } = byteCountingOrigin();
  const proxy = await startTestProxy({
    rules: { "slow.test": "allow-domain" },
    resolve: [["slow.test", origin.port, "127.0.0.1"]],
    helloTimeoutMs: 200,
  });
  try {
    const c = await tunnel(proxy.port, `slow.test:${origin.port}`);
    await c.send(new Uint8Array([22, 3, 1])); // the start of a record, then nothing
    assert.equal(await c.readToEnd(), "");
    c.close();
    const [rec] = await proxy.waitRecords(1);
    assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
    assert.equal(rec.error, "no TLS ClientHello within 200 ms");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("connect: bad targets, a body, a mismatching Host, protected destinations", async () => {
  const proxy = await startTestProxy({ rules: { "*": "allow" } });
  try {
    const cases: [string, number, RegExp][] = [
      [
        "CONNECT a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
        400,
        /invalid CONNECT target "a.test": missing port/,
      ],
      ["CONNECT a.test:0 HTTP/1.1\r\n\r\n", 400, /invalid port/],
      ["CONNECT http://a.test:443/ HTTP/1.1\r\n\r\n", 400, /invalid CONNECT target/],
      ["CONNECT a.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, /with a body/],
      [
        "CONNECT a.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
        403,
        /does not match the CONNECT host a\.test:443/,
      ],
      [
        "CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n",
        403,
        /destination protection: 127\.0\.0\.1 is a loopback address/,
      ],
      [
        "CONNECT [::ffff:169.254.169.254]:80 HTTP/1.1\r\n\r\n",
        403,
        /169\.254\.169\.254 is a link-local address/,
      ],
    ];
    for (const [req, status, body] of cases) {
      const c = await RawClient.connect(proxy.port);
      await c.send(req);
      const r = await c.response();
      assert.equal(r.status, status, req);
      assert.match(r.text, body, req);
      c.close();
    }
    const recs = await proxy.waitRecords(cases.length);
    assert.deepEqual(
      recs.map((r) => [r.method, r.decision, r.source, r.status]),
      [
        ["CONNECT", "error", "error", 400],
        ["CONNECT", "error", "error", 400],
        ["CONNECT", "error", "error", 400],
        ["CONNECT", "error", "error", 400],
        ["CONNECT", "deny", "policy", 403],
        ["CONNECT", "deny", "policy", 403],
        ["CONNECT", "deny", "policy", 403],
      ],
    );
  } finally {
    await proxy.close();
  }
});
