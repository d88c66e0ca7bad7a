/**
 * Destination protection covers every address of this host, not only the
 * proxy's listen address: with `--listen 127.0.0.1`, a container must not
 * reach services on the docker0 gateway or eth0 through `"*": "allow"` or a
 * DNS name that resolves there (rebinding). Only this machine's own
 * addresses are contacted: the origin listens on the interface address.
 */

import assert from "node:assert/strict";
import { classifyAddress } from "../../lib/net/guard.ts";
import { startDnsServer, startOrigin } from "../_helpers/origin.ts";
import { RawClient, startTestProxy } from "../_helpers/proxy.ts";

/** A non-loopback, non-link-local IPv4 address of this machine (docker0, eth0, ...). */
function ownAddress(): string | undefined {
  const candidates = Deno.networkInterfaces().filter((i) =>
    i.family === "IPv4" && classifyAddress(i.address) === undefined
  );
  // Prefer the docker bridge: that is what a container reaches.
  return (candidates.find((i) => i.name === "docker0") ?? candidates[0])?.address;
}

const OWN = ownAddress();
if (OWN === undefined) {
  console.warn("guard_own_addresses_test: no non-loopback interface address; skipped");
}

async function get(proxyPort: number, url: string, host: string) {
  const c = await RawClient.connect(proxyPort);
  try {
    await c.send(`GET ${url} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    return await c.response();
  } finally {
    c.close();
  }
}

Deno.test({
  name: "guard: this host's interface address is refused through a catch-all and by DNS",
  ignore: OWN === undefined,
  async fn() {
    const own = OWN!;
    const origin = await startOrigin({ hostname: own });
    const dns = await startDnsServer({ "x.attacker.test": [own] });
    const proxy = await startTestProxy({ rules: { "*": "allow" }, nameServer: dns.nameServer });
    const p = origin.port;
    try {
      const direct = await get(proxy.port, `http://${own}:${p}/hello`, `${own}:${p}`);
      assert.equal(direct.status, 403);
      assert.match(direct.text, /destination protection: .* is an address of this host/);
      const rebound = await get(
        proxy.port,
        `http://x.attacker.test:${p}/hello`,
        `x.attacker.test:${p}`,
      );
      assert.equal(rebound.status, 403);
      assert.ok(
        rebound.text.includes(`x.attacker.test (${own}) is an address of this host`),
        rebound.text,
      );
      const recs = await proxy.waitRecords(2);
      for (const rec of recs) {
        assert.deepEqual([rec.decision, rec.source, rec.status], ["deny", "policy", 403]);
      }
      assert.equal(origin.requests.length, 0);
    } finally {
      await proxy.close();
      await dns.close();
      await origin.close();
    }
  },
});

Deno.test({
  name: "guard: an exact IP rule or a --resolve mapping reaches this host's interface address",
  ignore: OWN === undefined,
  async fn() {
    const own = OWN!;
    const origin = await startOrigin({ hostname: own });
    const p = origin.port;
    const proxy = await startTestProxy({
      rules: { [own]: "allow", "svc.test": "allow-domain", "*": "allow" },
      resolve: [["svc.test", p, own]],
    });
    try {
      const byRule = await get(proxy.port, `http://${own}:${p}/hello`, `${own}:${p}`);
      assert.equal(byRule.status, 200);
      assert.equal(byRule.text, "hello from origin");
      const byResolve = await get(proxy.port, `http://svc.test:${p}/hello`, `svc.test:${p}`);
      assert.equal(byResolve.status, 200);
      assert.equal(origin.requests.length, 2);
      const recs = await proxy.waitRecords(2);
      assert.deepEqual(recs.map((r) => [r.status, r.reason]), [
        [200, `rule "${own}": allow`],
        [200, 'rule "svc.test": allow-domain'],
      ]);
    } finally {
      await proxy.close();
      await origin.close();
    }
  },
});
