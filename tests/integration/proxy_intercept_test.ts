/**
 * The proxy's side of TLS interception, with the real interceptor from
 * lib/tls: requests inside a decrypted tunnel are decided one by one with
 * their https URL, their Host must name the tunnel host, a tunnel that will
 * be decrypted dials nothing before a request is allowed, and passthrough
 * hosts are relayed.
 */

import assert from "node:assert/strict";
import { createCa } from "../../lib/tls/ca.ts";
import { createInterceptor } from "../../lib/tls/intercept.ts";
import { terminateTls } from "../../lib/tls/terminate.ts";
import type { TunnelInterceptor } from "../../lib/proxy/mod.ts";
import {
  ORIGIN_CERT_PEM,
  ORIGIN_KEY_PEM,
  startOrigin,
  startRawOrigin,
  TEST_CA_PEM,
} from "../_helpers/origin.ts";
import { RawClient, rulesDecider, startTestProxy } from "../_helpers/proxy.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const ca = await createCa();

async function interceptor(passthrough: string[] = []): Promise<TunnelInterceptor> {
  const inner = await createInterceptor({
    ca,
    upstreamCaCerts: [TEST_CA_PEM],
    passthrough: (host) => passthrough.includes(host),
  });
  return {
    intercepts: (host) => !passthrough.includes(host),
    intercept: (req) => inner.intercept(req),
  };
}

/** Opens a tunnel and a TLS session inside it, trusting `caPem`. */
async function tlsThroughProxy(proxyPort: number, authority: string, sni: string, caPem: string) {
  const c = await RawClient.connect(proxyPort);
  await c.send(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const r = await c.response({ head: true });
  assert.equal(r.status, 200);
  return await Deno.startTls(c.conn, { hostname: sni, caCerts: [caPem] });
}

/** Sends requests on a TLS connection; reads `count` responses (Content-Length or chunked). */
async function exchange(tls: Deno.TlsConn, requests: string, count: number): Promise<string> {
  await tls.write(enc.encode(requests));
  let text = "";
  const buf = new Uint8Array(65536);
  const complete = () => {
    let rest = text;
    for (let i = 0; i < count; i++) {
      const h = rest.indexOf("\r\n\r\n");
      if (h < 0) return false;
      const len = /content-length: (\d+)/i.exec(rest.slice(0, h));
      const end = h + 4 + (len ? Number(len[1]) : 0);
      if (rest.length < end) return false;
      rest = rest.slice(end);
    }
    return true;
  };
  while (!complete()) {
    const n = await tls.read(buf);
    if (n === null) break;
    text += dec.decode(buf.subarray(0, n));
  }
  return text;
}

Deno.test("intercept: each request in a decrypted tunnel is decided and recorded with its URL", async () => {
  const origin = await startOrigin({ tls: true });
  const p = origin.port;
  const proxy = await startTestProxy({
    decide: rulesDecider({
      "origin.test": "allow-domain",
      [`https://origin.test:${p}/secret`]: "deny",
    }),
    resolve: [["origin.test", p, "127.0.0.1"]],
    intercept: await interceptor(),
  });
  try {
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", ca.certPem);
    const h = `Host: origin.test:${p}\r\n\r\n`;
    const text = await exchange(
      tls,
      `GET /hello HTTP/1.1\r\n${h}GET /secret?x=1 HTTP/1.1\r\n${h}GET /hello HTTP/1.1\r\n${h}`,
      3,
    );
    tls.close();
    const parts = text.split(/(?=HTTP\/1\.1 )/);
    assert.match(parts[0], /^HTTP\/1\.1 200 /);
    assert.match(parts[0], /hello from origin$/);
    assert.match(parts[1], /^HTTP\/1\.1 403 /);
    assert.match(
      parts[1],
      /X-Netmonitor-Decision: deny; reason="rule \\"https:\/\/origin\.test:\d+\/secret\\": deny"/,
    );
    assert.match(parts[2], /hello from origin$/);
    const recs = await proxy.waitRecords(4);
    const inner = recs.filter((r) => r.method === "GET");
    assert.deepEqual(inner.map((r) => [r.url, r.decision, r.status]), [
      [`https://origin.test:${p}/hello`, "allow", 200],
      [`https://origin.test:${p}/secret?x=1`, "deny", 403],
      [`https://origin.test:${p}/hello`, "allow", 200],
    ]);
    const tunnel = recs.find((r) => r.method === "CONNECT")!;
    assert.deepEqual([tunnel.url, tunnel.status], [`origin.test:${p}`, 200]);
    assert.ok(tunnel.bytesUp > 0 && tunnel.bytesDown > 0);
    assert.deepEqual(proxy.decided.map((d) => d.url), [
      undefined,
      `https://origin.test:${p}/hello`,
      `https://origin.test:${p}/secret?x=1`,
      `https://origin.test:${p}/hello`,
    ]);
    assert.equal(origin.requests.length, 2, "the denied request never reached the origin");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: a Host naming another host inside the tunnel is refused (403, policy)", async () => {
  const origin = await startOrigin({ tls: true });
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain", "other.test": "allow-domain" },
    resolve: [["origin.test", p, "127.0.0.1"], ["other.test", p, "127.0.0.1"]],
    intercept: await interceptor(),
  });
  try {
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", ca.certPem);
    const text = await exchange(
      tls,
      `GET /hello HTTP/1.1\r\nHost: other.test:${p}\r\n\r\n`,
      1,
    );
    tls.close();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.match(text, /does not match the tunnel host origin\.test:\d+/);
    const recs = await proxy.waitRecords(2);
    const r = recs.find((x) => x.method === "GET")!;
    assert.deepEqual([r.decision, r.source, r.status], ["deny", "policy", 403]);
    assert.equal(origin.requests.length, 0);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: decideTunnel decides the CONNECT; nothing is dialled until a request is allowed", async () => {
  let conns = 0;
  const origin = startRawOrigin((conn) => {
    conns++;
    conn.close();
    return Promise.resolve();
  });
  const p = origin.port;
  const tunnels: string[] = [];
  const proxy = await startTestProxy({
    decide: rulesDecider({}),
    decideTunnel: (input) => {
      tunnels.push(input.target.host);
      return Promise.resolve({ action: "allow", source: "policy", reason: "decided per request" });
    },
    resolve: [["probe.test", p, "127.0.0.1"]],
    intercept: await interceptor(),
  });
  try {
    const tls = await tlsThroughProxy(proxy.port, `probe.test:${p}`, "probe.test", ca.certPem);
    const text = await exchange(tls, `GET / HTTP/1.1\r\nHost: probe.test:${p}\r\n\r\n`, 1);
    tls.close();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.deepEqual(tunnels, ["probe.test"]);
    const recs = await proxy.waitRecords(2);
    const t = recs.find((r) => r.method === "CONNECT")!;
    assert.deepEqual([t.decision, t.source, t.reason], ["allow", "policy", "decided per request"]);
    assert.equal(conns, 0, "an unapproved tunnel does not even open a TCP connection");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: passthrough hosts are relayed with the origin's own certificate", async () => {
  const origin = await startOrigin({ tls: true });
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", p, "127.0.0.1"]],
    intercept: await interceptor(["origin.test"]),
  });
  try {
    // Trusting only the test CA: it works only if the tunnel is not decrypted.
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", TEST_CA_PEM);
    const text = await exchange(tls, `GET /hello HTTP/1.1\r\nHost: origin.test:${p}\r\n\r\n`, 1);
    tls.close();
    assert.match(text, /hello from origin$/);
    const recs = await proxy.waitRecords(1);
    assert.equal(recs.length, 1, "only the tunnel is recorded: nothing inside was seen");
    assert.equal(recs[0].method, "CONNECT");
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: an upstream with a certificate we do not trust is a 502 inside the tunnel", async () => {
  const origin = await startOrigin({ tls: true });
  const p = origin.port;
  const inner = await createInterceptor({ ca }); // no test CA: the origin is untrusted
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", p, "127.0.0.1"]],
    intercept: inner,
  });
  try {
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", ca.certPem);
    const text = await exchange(tls, `GET /hello HTTP/1.1\r\nHost: origin.test:${p}\r\n\r\n`, 1);
    tls.close();
    assert.match(text, /^HTTP\/1\.1 502 /);
    assert.match(text, /TLS to origin\.test:\d+ failed/);
    const recs = await proxy.waitRecords(2);
    const r = recs.find((x) => x.method === "GET")!;
    assert.deepEqual([r.decision, r.status], ["allow", 502]);
    assert.match(r.error!, /TLS to origin\.test/);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: a response that ends with the origin's close ends with close_notify, a truncated one without", async () => {
  // A TLS origin (the test certificate) answering without a length: the body
  // ends where the connection does. "/clean" ends it with close_notify,
  // "/cut" drops the connection without one (a truncation).
  const bodyArrived = Promise.withResolvers<void>();
  const leaf = {
    host: "origin.test",
    certPem: ORIGIN_CERT_PEM,
    keyPem: ORIGIN_KEY_PEM,
    notBefore: new Date(0),
    notAfter: new Date(0),
  };
  const origin = startRawOrigin(async (conn) => {
    const tls = await terminateTls(conn, new Uint8Array(0), { leaf });
    let head = "";
    const buf = new Uint8Array(4096);
    while (!head.includes("\r\n\r\n")) {
      const n = await tls.read(buf);
      if (n === null) return;
      head += dec.decode(buf.subarray(0, n));
    }
    await tls.write(enc.encode("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body"));
    if (head.startsWith("GET /clean ")) await tls.closeWrite();
    else await bodyArrived.promise; // then dropped, once the client has the body
    tls.close();
  });
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "origin.test": "allow-domain" },
    resolve: [["origin.test", p, "127.0.0.1"]],
    intercept: await interceptor(),
  });
  /** Everything the client reads, and how the stream ended. */
  const fetchThrough = async (path: string) => {
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", ca.certPem);
    await tls.write(enc.encode(`GET ${path} HTTP/1.1\r\nHost: origin.test:${p}\r\n\r\n`));
    let text = "";
    let end = "clean";
    const buf = new Uint8Array(4096);
    try {
      while (true) {
        const n = await tls.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n));
        if (path === "/cut" && text.endsWith("the whole body")) bodyArrived.resolve();
      }
    } catch (e) {
      end = e instanceof Error ? e.message : String(e);
    } finally {
      tls.close();
    }
    return { text, end };
  };
  try {
    const clean = await fetchThrough("/clean");
    assert.match(clean.text, /^HTTP\/1\.1 200 [^]*\r\n\r\nthe whole body$/);
    assert.equal(clean.end, "clean", "a complete body must end with close_notify");
    const cut = await fetchThrough("/cut");
    assert.match(cut.text, /the whole body$/);
    assert.match(cut.end, /close_notify/, "a truncated body must not be made to look complete");
  } finally {
    bodyArrived.resolve();
    await proxy.close();
    await origin.close();
  }
});

Deno.test("intercept: a tunnel that must be decrypted by the time its CONNECT is allowed is decrypted", async () => {
  // origin.test is passthrough when its CONNECT arrives; while that CONNECT
  // waits for its decision (a prompt may take a minute), the rules change so
  // that its tunnels must be decrypted (a deny URL rule for it landed).
  const origin = await startOrigin({ tls: true });
  const p = origin.port;
  let passthrough = true;
  const inner = await createInterceptor({
    ca,
    upstreamCaCerts: [TEST_CA_PEM],
    passthrough: () => passthrough,
  });
  const rules = rulesDecider({
    "origin.test": "allow-domain",
    [`https://origin.test:${p}/secret`]: "deny",
  });
  const proxy = await startTestProxy({
    decide: (input) => {
      if (input.method === "CONNECT") passthrough = false; // the rules changed meanwhile
      return rules(input);
    },
    resolve: [["origin.test", p, "127.0.0.1"]],
    intercept: { intercepts: () => !passthrough, intercept: (req) => inner.intercept(req) },
  });
  try {
    // Trusting only netmonitor's CA: the handshake works only if the tunnel is decrypted.
    const tls = await tlsThroughProxy(proxy.port, `origin.test:${p}`, "origin.test", ca.certPem);
    const text = await exchange(tls, `GET /secret HTTP/1.1\r\nHost: origin.test:${p}\r\n\r\n`, 1);
    tls.close();
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.deepEqual(proxy.decided.map((d) => d.url), [
      undefined,
      `https://origin.test:${p}/secret`,
    ]);
    assert.equal(origin.requests.length, 0, "the denied request never reached the origin");
  } finally {
    await proxy.close();
    await origin.close();
  }
});
