/**
 * Adversarial tests: reaching loopback, the metadata service, unspecified
 * addresses and the proxy itself through odd spellings, DNS answers and
 * catch-all rules. Destination protection must refuse all of them (403,
 * source "policy") even when `"*": "allow"` is the only rule, and the
 * loopback origin behind them must never be reached.
 *
 * Spellings of non-loopback protected addresses (169.254.169.254 and
 * friends) are first checked against the guard in-process, so a guard bug
 * fails the test before the proxy could dial anything off this machine.
 */

import assert from "node:assert/strict";
import {
  assertGuardRefuses,
  attempt,
  newRecords,
  seenPaths,
  startAttackEnv,
} from "../_helpers/attack.ts";
import { startOrigin } from "../_helpers/origin.ts";
import { startTestProxy } from "../_helpers/proxy.ts";

const LOOPBACK_SPELLINGS = [
  "127.0.0.1",
  "2130706433",
  "0x7f.1",
  "0x7F.0.0.1",
  "0x7f000001",
  "0177.0.0.1",
  "0177.1",
  "017700000001",
  "127.1",
  "127.0.1",
  "127.255.255.254",
  "[::1]",
  "[0::1]",
  "[0000:0000:0000:0000:0000:0000:0000:0001]",
  "[::ffff:127.0.0.1]",
  "[::ffff:7f00:1]",
  "[::127.0.0.1]",
  "[::ffff:0:127.0.0.1]",
  "[64:ff9b::127.0.0.1]",
  "[2002:7f00:1::]",
  "localhost",
  "LOCALHOST.",
  "foo.localhost",
  "0",
  "0.0.0.0",
  "0x0",
  "[::]",
];

const METADATA_SPELLINGS = [
  "169.254.169.254",
  "2852039166",
  "0xa9fea9fe",
  "0251.0376.0251.0376",
  "0xa9.0xfe.0xa9.0xfe",
  "169.254.43518",
  "[::ffff:169.254.169.254]",
  "[::ffff:a9fe:a9fe]",
  "[fe80::1]",
  "[fe80::a9fe:a9fe]",
  "224.0.0.1",
  "255.255.255.255",
];

Deno.test('attack destination: with only "*": allow, loopback/unspecified spellings are refused', async (t) => {
  const env = await startAttackEnv({ replaceRules: { "*": "allow" } });
  const { p, proxy, origin } = env;
  try {
    for (const s of LOOPBACK_SPELLINGS) {
      await t.step(`GET http://${s}:P/`, async () => {
        const before = proxy.records.length;
        const a = await attempt(
          proxy.port,
          `GET http://${s}:${p}/hello HTTP/1.1\r\nHost: ${s}:${p}\r\n\r\n`,
        );
        const r = a.responses[0];
        assert.equal(r.status, 403, `${s}: ${r.statusLine} ${r.text}`);
        assert.match(r.text, /destination protection/);
        const [rec] = await newRecords(proxy, before, 1);
        assert.deepEqual([rec.decision, rec.source, rec.status], ["deny", "policy", 403]);
        assert.match(rec.reason, /^destination protection: /);
      });
      await t.step(`CONNECT ${s}:P`, async () => {
        const before = proxy.records.length;
        const a = await attempt(
          proxy.port,
          `CONNECT ${s}:${p} HTTP/1.1\r\nHost: ${s}:${p}\r\n\r\n`,
          {
            closeMs: 2000,
          },
        );
        assert.equal(a.responses[0].status, 403, `${s}: ${a.responses[0].statusLine}`);
        assert.ok(a.closed, "a denied CONNECT closes the connection");
        const [rec] = await newRecords(proxy, before, 1);
        assert.deepEqual([rec.method, rec.decision, rec.source], ["CONNECT", "deny", "policy"]);
      });
    }
    assert.deepEqual(seenPaths(origin), [], "the loopback origin was reached");
  } finally {
    await env.close();
  }
});

Deno.test('attack destination: metadata, link-local, multicast spellings are refused under "*": allow', async (t) => {
  const env = await startAttackEnv({ replaceRules: { "*": "allow" } });
  try {
    for (const s of METADATA_SPELLINGS) {
      await t.step(s, async () => {
        assertGuardRefuses(s, 80);
        const before = env.proxy.records.length;
        const a = await attempt(
          env.proxy.port,
          `GET http://${s}/latest/meta-data/ HTTP/1.1\r\nHost: ${s}\r\nMetadata-Flavor: Google\r\n\r\n`,
        );
        assert.equal(a.responses[0].status, 403, `${s}: ${a.responses[0].text}`);
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
        assert.match(
          rec.reason,
          /destination protection: .* is a (link-local|multicast|reserved) address/,
        );
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack destination: cloud metadata endpoints outside 169.254/16 are protected too", () => {
  // AWS's IPv6 instance metadata endpoint (fd00:ec2::254) and Alibaba
  // Cloud's (100.100.100.200) serve the same credentials as
  // 169.254.169.254. Checked in-process only: if the guard lets them
  // through, the proxy would dial them, so nothing is sent.
  for (const s of ["[fd00:ec2::254]", "100.100.100.200"]) {
    assertGuardRefuses(s, 80);
  }
});

Deno.test("attack destination: with only an unrelated allow rule, odd loopback spellings are denied", async () => {
  const env = await startAttackEnv();
  try {
    for (const s of ["2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost", "0"]) {
      const before = env.proxy.records.length;
      const a = await attempt(
        env.proxy.port,
        `GET http://${s}:${env.p}/hello HTTP/1.1\r\nHost: ${s}:${env.p}\r\n\r\n`,
      );
      assert.equal(a.responses[0].status, 403, s);
      const [rec] = await newRecords(env.proxy, before, 1);
      assert.equal(rec.decision, "deny", s);
    }
    assert.deepEqual(seenPaths(env.origin), []);
  } finally {
    await env.close();
  }
});

Deno.test("attack destination: names that DNS resolves to protected addresses are refused", async (t) => {
  const env = await startAttackEnv({
    replaceRules: {
      "*": "allow",
      // An exact rule on a DNS name does not vouch for its (changeable) answer.
      "rebind.test": "allow",
    },
    dnsRecords: {
      "rebind.test": ["127.0.0.1"],
      "rebind6.test": ["::1"],
      "mapped.test": ["::ffff:127.0.0.1"],
      "zero.test": ["0.0.0.0"],
      "both.test": ["127.0.0.1", "::1"],
      "meta.test": ["169.254.169.254"],
    },
  });
  try {
    for (
      const name of [
        "rebind.test",
        "rebind6.test",
        "mapped.test",
        "zero.test",
        "both.test",
        "meta.test",
      ]
    ) {
      await t.step(name, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(
          env.proxy.port,
          `GET http://${name}:${env.p}/hello HTTP/1.1\r\nHost: ${name}:${env.p}\r\n\r\n`,
        );
        assert.equal(a.responses[0].status, 403, `${name}: ${a.responses[0].text}`);
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
        assert.match(rec.reason, /destination protection/);
      });
    }
    assert.deepEqual(seenPaths(env.origin), []);
    assert.ok(
      env.dns.queries.includes("rebind.test"),
      "names were resolved by the test DNS server",
    );
  } finally {
    await env.close();
  }
});

Deno.test("attack destination: an /etc/hosts name pointing at loopback is refused (system resolver)", async () => {
  const hosts = await Deno.readTextFile("/etc/hosts").catch(() => "");
  // A non-localhost name that /etc/hosts maps to 127.x, e.g. the machine's own name.
  const name = hosts.split("\n")
    .map((l) => l.replace(/#.*/, "").trim().split(/\s+/))
    .filter((f) => f.length > 1 && f[0].startsWith("127."))
    .flatMap((f) => f.slice(1))
    .find((n) => /^[a-z0-9-]+$/i.test(n) && !/^localhost/i.test(n));
  if (!name) return; // nothing to test on this machine
  const origin = await startOrigin();
  const proxy = await startTestProxy({ rules: { "*": "allow" } });
  try {
    const a = await attempt(
      proxy.port,
      `GET http://${name}:${origin.port}/hello HTTP/1.1\r\nHost: ${name}:${origin.port}\r\n\r\n`,
    );
    assert.equal(a.responses[0].status, 403, `${name}: ${a.responses[0].text}`);
    const [rec] = await newRecords(proxy, 0, 1);
    assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
    assert.equal(origin.requests.length, 0);
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("attack destination: --resolve to loopback is trusted by design (control)", async () => {
  const env = await startAttackEnv({ replaceRules: { "*": "allow" } });
  try {
    const a = await attempt(
      env.proxy.port,
      `GET http://${env.allowed}/hello HTTP/1.1\r\nHost: ${env.allowed}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(a.responses[0].status, 200);
    assert.deepEqual(seenPaths(env.origin), ["/hello"]);
  } finally {
    await env.close();
  }
});

/** A port that was free a moment ago, so the proxy's own port can be named in its options. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("attack destination: no spelling, rule or --resolve makes the proxy dial itself", async (t) => {
  const own = freePort();
  const proxy = await startTestProxy({
    port: own,
    rules: {
      "*": "allow",
      "127.0.0.1": "allow",
      "localhost": "allow",
      "[::1]": "allow",
      "0.0.0.0": "allow",
    },
    resolve: [["loop.test", own, "127.0.0.1"], ["loop6.test", own, "::ffff:127.0.0.1"]],
  });
  const targets = [
    "127.0.0.1",
    "0x7f.1",
    "2130706433",
    "[::ffff:127.0.0.1]",
    "localhost",
    "[::1]",
    "0.0.0.0",
    "loop.test",
    "loop6.test",
  ];
  try {
    for (const s of targets) {
      await t.step(`GET http://${s}:OWN/`, async () => {
        const before = proxy.records.length;
        const a = await attempt(
          proxy.port,
          `GET http://${s}:${own}/ HTTP/1.1\r\nHost: ${s}:${own}\r\n\r\n`,
        );
        assert.equal(a.responses[0].status, 403, `${s}: ${a.responses[0].text}`);
        // Exactly one record: had the proxy dialled itself there would be two.
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.source, "policy");
        assert.match(rec.reason, /destination protection/);
      });
      await t.step(`CONNECT ${s}:OWN`, async () => {
        const before = proxy.records.length;
        const a = await attempt(proxy.port, `CONNECT ${s}:${own} HTTP/1.1\r\n\r\n`, {
          closeMs: 2000,
        });
        assert.equal(a.responses[0].status, 403, `${s}: ${a.responses[0].text}`);
        const [rec] = await newRecords(proxy, before, 1);
        assert.equal(rec.source, "policy");
      });
    }
  } finally {
    await proxy.close();
  }
});
