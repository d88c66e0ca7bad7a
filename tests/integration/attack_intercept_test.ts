/**
 * Adversarial tests: inside an intercepted (decrypted) CONNECT tunnel, every
 * request is decided on its own. A request whose Host or absolute URL names
 * another host, a URL deny rule, and a second keep-alive or pipelined
 * request to a denied path are all refused, and the TLS origin never sees them.
 */

import assert from "node:assert/strict";
import { createCa } from "../../lib/tls/ca.ts";
import { createInterceptor } from "../../lib/tls/intercept.ts";
import { clientHello, newRecords, startAttackEnv, tlsRecords } from "../_helpers/attack.ts";
import { TEST_CA_PEM } from "../_helpers/origin.ts";
import { RawClient } from "../_helpers/proxy.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const ca = await createCa();

/**
 * The test origin's certificate names a.test, b.test and example.test (not
 * allowed.test), so here a.test is the allowed host and b.test the denied one.
 */
async function env() {
  const interceptor = await createInterceptor({ ca, upstreamCaCerts: [TEST_CA_PEM] });
  return await startAttackEnv({
    tlsOrigin: true,
    intercept: interceptor,
    names: { allowed: "a.test", denied: "b.test", others: ["example.test"] },
    extraRules: (p) => ({ "example.test": "allow", [`https://a.test:${p}/admin`]: "deny" }),
  });
}

/** CONNECT + TLS (trusting our CA) to `authority`, with SNI `sni`. */
async function tunnel(proxyPort: number, authority: string, sni: string): Promise<Deno.TlsConn> {
  const c = await RawClient.connect(proxyPort);
  await c.send(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const r = await c.response({ head: true });
  assert.equal(r.status, 200);
  return await Deno.startTls(c.conn, { hostname: sni, caCerts: [ca.certPem] });
}

/** Writes `requests`, reads until `count` responses with Content-Length arrived or the peer closes (bounded). */
async function exchange(
  tls: Deno.TlsConn,
  requests: string,
  count: number,
  ms = 5000,
): Promise<string[]> {
  await tls.write(enc.encode(requests));
  let text = "";
  const buf = new Uint8Array(65536);
  const timer = setTimeout(() => tls.close(), ms);
  const split = (): string[] | undefined => {
    const out: string[] = [];
    let rest = text;
    for (let i = 0; i < count; i++) {
      const h = rest.indexOf("\r\n\r\n");
      if (h < 0) return undefined;
      const len = /content-length: (\d+)/i.exec(rest.slice(0, h));
      const end = h + 4 + (len ? Number(len[1]) : 0);
      if (rest.length < end) return undefined;
      out.push(rest.slice(0, end));
      rest = rest.slice(end);
    }
    return out;
  };
  try {
    while (!split()) {
      const n = await tls.read(buf).catch(() => null);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
  return split() ?? text.split(/(?=HTTP\/1\.1 \d{3} )/).filter((s) => s !== "");
}

Deno.test("attack intercept: requests inside a decrypted tunnel cannot name another host", async (t) => {
  const e = await env();
  const A = e.allowed;
  const D = e.denied;
  const cases: [string, string, number][] = [
    ["Host names the denied host", `GET /hello HTTP/1.1\r\nHost: ${D}\r\n\r\n`, 403],
    [
      "Host names another allowed host",
      `GET /hello HTTP/1.1\r\nHost: example.test:${e.p}\r\n\r\n`,
      403,
    ],
    [
      "Host names the tunnel host on another port",
      `GET /hello HTTP/1.1\r\nHost: a.test:1\r\n\r\n`,
      403,
    ],
    [
      "absolute https URL to the denied host",
      `GET https://${D}/hello HTTP/1.1\r\nHost: ${D}\r\n\r\n`,
      403,
    ],
    [
      "absolute http URL to the tunnel host",
      `GET http://${A}/hello HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
      403,
    ],
    ["two Host headers", `GET /hello HTTP/1.1\r\nHost: ${A}\r\nHost: ${D}\r\n\r\n`, 400],
    ["missing Host", `GET /hello HTTP/1.1\r\n\r\n`, 400],
    ["CONNECT inside the tunnel", `CONNECT ${D} HTTP/1.1\r\nHost: ${D}\r\n\r\n`, 400],
    ["URL userinfo", `GET https://a.test@${D}/hello HTTP/1.1\r\nHost: ${D}\r\n\r\n`, 400],
  ];
  try {
    for (const [name, req, status] of cases) {
      await t.step(name, async () => {
        const before = e.proxy.records.length;
        const seen = e.origin.requests.length;
        const tls = await tunnel(e.proxy.port, A, "a.test");
        const [res] = await exchange(tls, req, 1);
        tls.close();
        assert.match(res ?? "", new RegExp(`^HTTP/1\\.1 ${status} `), `${name}: ${res}`);
        // The tunnel record and the request record.
        const recs = await newRecords(e.proxy, before, 2);
        // The request's record comes first, the tunnel's when it closes.
        const inner = recs[0];
        assert.equal(recs[1].url, A);
        assert.equal(inner.status, status);
        assert.notEqual(inner.decision, "allow");
        assert.equal(inner.host, "a.test", "the record names the tunnel's host");
        assert.equal(e.origin.requests.length, seen, `${name}: reached the origin`);
      });
    }
  } finally {
    await e.close();
  }
});

Deno.test("attack intercept: a URL deny rule holds for keep-alive and pipelined requests", async (t) => {
  const e = await env();
  const A = e.allowed;
  try {
    await t.step("second keep-alive request to a denied path", async () => {
      const before = e.proxy.records.length;
      const tls = await tunnel(e.proxy.port, A, "a.test");
      const [first] = await exchange(tls, `GET /hello HTTP/1.1\r\nHost: ${A}\r\n\r\n`, 1);
      assert.match(first, /^HTTP\/1\.1 200 /);
      const [second] = await exchange(tls, `GET /admin HTTP/1.1\r\nHost: ${A}\r\n\r\n`, 1);
      assert.match(second, /^HTTP\/1\.1 403 /);
      const [third] = await exchange(
        tls,
        `GET /%61dmin/../admin?x=1 HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        1,
      );
      assert.match(third, /^HTTP\/1\.1 403 /);
      tls.close();
      const recs = await newRecords(e.proxy, before, 4);
      assert.deepEqual(
        recs.filter((r) => r.method === "GET").map((r) => [r.decision, r.status]),
        [["allow", 200], ["deny", 403], ["deny", 403]],
      );
    });
    await t.step("pipelined in one write after an allowed POST body", async () => {
      const before = e.proxy.records.length;
      const tls = await tunnel(e.proxy.port, A, "a.test");
      const res = await exchange(
        tls,
        `POST /echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 5\r\n\r\nhello` +
          `GET /admin HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        2,
      );
      tls.close();
      assert.match(res[0], /^HTTP\/1\.1 200 /);
      assert.match(res[1], /^HTTP\/1\.1 403 /);
      await newRecords(e.proxy, before, 3);
    });
    await t.step("smuggled by CL.TE inside the tunnel", async () => {
      const before = e.proxy.records.length;
      const tls = await tunnel(e.proxy.port, A, "a.test");
      const res = await exchange(
        tls,
        `POST /echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n` +
          `GET /admin HTTP/1.1\r\nHost: ${A}\r\n\r\n`,
        1,
      );
      tls.close();
      assert.match(res[0], /^HTTP\/1\.1 400 /);
      await newRecords(e.proxy, before, 2);
    });
    assert.ok(
      !e.origin.requests.some((r) => r.path.includes("admin")),
      JSON.stringify(e.origin.requests),
    );
    assert.ok(
      e.origin.requests.some((r) => r.path === "/hello"),
      "control: allowed requests got through",
    );
  } finally {
    await e.close();
  }
});

Deno.test("attack intercept: Proxy-Authorization and nominated hop-by-hop fields stop at the proxy", async () => {
  const e = await env();
  const A = e.allowed;
  try {
    const tls = await tunnel(e.proxy.port, A, "a.test");
    const [res] = await exchange(
      tls,
      `GET /echo HTTP/1.1\r\nHost: ${A}\r\nProxy-Authorization: Basic c2VjcmV0\r\nX-Secret: 1\r\nConnection: X-Secret\r\n\r\n`,
      1,
    );
    tls.close();
    const body = JSON.parse(res.slice(res.indexOf("\r\n\r\n") + 4));
    assert.ok(!("proxy-authorization" in body.headers));
    assert.ok(!("x-secret" in body.headers));
  } finally {
    await e.close();
  }
});

Deno.test("attack intercept: SNI naming a denied host is refused before any certificate is made", async () => {
  const e = await env();
  try {
    const c = await RawClient.connect(e.proxy.port);
    await c.send(`CONNECT ${e.allowed} HTTP/1.1\r\nHost: ${e.allowed}\r\n\r\n`);
    assert.equal((await c.response({ head: true })).status, 200);
    await c.send(tlsRecords(clientHello({ sni: ["b.test"], alpn: ["http/1.1"] })));
    const after = await c.readToEnd(3000);
    c.close();
    assert.equal(after.charCodeAt(0), 0x15, "a TLS alert, not a ServerHello");
    const [rec] = await newRecords(e.proxy, 0, 1);
    assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
    assert.equal(e.origin.requests.length, 0);
  } finally {
    await e.close();
  }
});
