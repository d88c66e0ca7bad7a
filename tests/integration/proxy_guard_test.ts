/**
 * Destination protection against real sockets: every spelling of loopback
 * and link-local is refused unless an exact rule or --resolve names it; DNS
 * answers are checked too; the proxy never dials itself.
 */

import assert from "node:assert/strict";
import { startDnsServer, startOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

async function get(proxyPort: number, url: string, host: string) {
  const c = await RawClient.connect(proxyPort);
  try {
    await c.send(`GET ${url} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    return await c.response();
  } finally {
    c.close();
  }
}

Deno.test("guard: loopback in every spelling is refused when only a catch-all allows it", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({ rules: { "*": "allow" } });
  const p = origin.port;
  const spellings = [
    "127.0.0.1",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "localhost",
    "LOCALHOST.",
    "app.localhost",
    "169.254.169.254",
    "[fe80::1]",
    "0.0.0.0",
    "[::]",
  ];
  try {
    for (const s of spellings) {
      const r = await get(proxy.port, `http://${s}:${p}/hello`, `${s}:${p}`);
      assert.equal(r.status, 403, s);
      assert.match(
        r.text,
        /destination protection: .* is a (loopback|link-local|unspecified) address/,
        s,
      );
      assert.match(
        r.headers.get("x-netmonitor-decision")!,
        /^deny; reason="destination protection/,
      );
    }
    const recs = await proxy.waitRecords(spellings.length);
    for (const rec of recs) {
      assert.deepEqual([rec.decision, rec.source, rec.status], ["deny", "policy", 403]);
      assert.match(rec.reason, /^destination protection: /);
    }
    assert.equal(recs[1].host, "127.0.0.1", "hosts are recorded normalised");
    assert.equal(origin.requests.length, 0);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("guard: an exact IP or localhost rule allows that destination, in any spelling", async () => {
  const origin = await startOrigin();
  const proxy = await startTestProxy({
    rules: { "127.0.0.1": "allow", localhost: "allow-domain" },
  });
  const p = origin.port;
  try {
    for (const s of ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost"]) {
      const r = await get(proxy.port, `http://${s}:${p}/hello`, `${s}:${p}`);
      assert.equal(r.status, 200, s);
      assert.equal(r.text, "hello from origin", s);
    }
    // The rule names 127.0.0.1, not [::1] or 127.0.0.2.
    assert.equal((await get(proxy.port, `http://[::1]:${p}/hello`, `[::1]:${p}`)).status, 403);
    assert.equal(
      (await get(proxy.port, `http://127.0.0.2:${p}/hello`, `127.0.0.2:${p}`)).status,
      403,
    );
    const recs = await proxy.waitRecords(7);
    assert.deepEqual(recs.map((r) => r.status), [200, 200, 200, 200, 200, 403, 403]);
    assert.equal(recs[4].reason, 'rule "localhost": allow-domain');
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("guard: --resolve mappings are trusted; a name resolving to loopback by DNS is not", async () => {
  const origin = await startOrigin();
  const dns = await startDnsServer({
    "rebind.test": ["127.0.0.1"],
    "meta.test": ["169.254.169.254"],
  });
  const proxy = await startTestProxy({
    rules: { "app.test": "allow-domain", "rebind.test": "allow-domain", "meta.test": "allow" },
    resolve: [["app.test", origin.port, "127.0.0.1"]],
    nameServer: dns.nameServer,
  });
  const p = origin.port;
  try {
    const ok = await get(proxy.port, `http://app.test:${p}/hello`, `app.test:${p}`);
    assert.equal(ok.status, 200);
    const rebind = await get(proxy.port, `http://rebind.test:${p}/hello`, `rebind.test:${p}`);
    assert.equal(rebind.status, 403);
    assert.match(rebind.text, /rebind\.test \(127\.0\.0\.1\) is a loopback address/);
    const meta = await get(proxy.port, `http://meta.test/latest/meta-data/`, "meta.test");
    assert.equal(meta.status, 403);
    assert.match(meta.text, /meta\.test \(169\.254\.169\.254\) is a link-local address/);
    assert.ok(dns.queries.includes("rebind.test") && dns.queries.includes("meta.test"));
    assert.ok(!dns.queries.includes("app.test"), "mapped names are not looked up");
    const recs = await proxy.waitRecords(3);
    assert.deepEqual(recs.map((r) => [r.decision, r.source, r.status]), [
      ["allow", "rule", 200],
      ["deny", "policy", 403],
      ["deny", "policy", 403],
    ]);
  } finally {
    await proxy.close();
    await dns.close();
    await origin.close();
  }
});

Deno.test("guard: the proxy never dials its own listening socket, even when named", async () => {
  const proxy = await startTestProxy({ rules: { "127.0.0.1": "allow" } });
  const own = proxy.port;
  try {
    const r = await get(own, `http://127.0.0.1:${own}/`, `127.0.0.1:${own}`);
    assert.equal(r.status, 403);
    assert.match(r.text, /127\.0\.0\.1 is the proxy's own address/);
    const c = await RawClient.connect(own);
    await c.send(`CONNECT 127.0.0.1:${own} HTTP/1.1\r\n\r\n`);
    assert.equal((await c.response()).status, 403);
    c.close();
    const recs = await proxy.waitRecords(2);
    assert.ok(recs.every((x) => x.source === "policy" && x.status === 403));
  } finally {
    await proxy.close();
  }
  // A trusted --resolve mapping to our own socket is refused too.
  const again = await startTestProxy({
    port: own,
    rules: { "loop.test": "allow" },
    resolve: [["loop.test", own, "127.0.0.1"]],
  });
  try {
    const r = await get(own, `http://loop.test:${own}/`, `loop.test:${own}`);
    assert.equal(r.status, 403);
    assert.match(r.text, /loop\.test \(127\.0\.0\.1\) is the proxy's own address/);
  } finally {
    await again.close();
  }
});
