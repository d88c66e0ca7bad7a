/**
 * Adversarial tests: CONNECT tunnels relayed without interception. The
 * origin behind allowed.test and denied.test is a raw TCP server that records
 * every byte, so "nothing was relayed" is checked on the wire, not inferred.
 */

import assert from "node:assert/strict";
import {
  attempt,
  clientHello,
  concat,
  HRR_RANDOM,
  latin1,
  newRecords,
  type RecordingOrigin,
  sleep,
  startRecordingOrigin,
  tlsRecords,
} from "../_helpers/attack.ts";
import { startDnsServer } from "../_helpers/origin.ts";
import { RawClient, startTestProxy, type TestProxy } from "../_helpers/proxy.ts";

const TLS_ALERT = 0x15;

interface Env {
  origin: RecordingOrigin;
  proxy: TestProxy;
  p: number;
  close(): Promise<void>;
}

async function startEnv(
  reply?: (first: Uint8Array) => Uint8Array | undefined,
): Promise<Env> {
  const origin = startRecordingOrigin(reply);
  const dns = await startDnsServer({});
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "allowed.test": "allow", "denied.test": "deny" },
    nameServer: dns.nameServer,
    helloTimeoutMs: 800,
    resolve: [["allowed.test", p, "127.0.0.1"], ["denied.test", p, "127.0.0.1"]],
  });
  return {
    origin,
    proxy,
    p,
    async close() {
      await proxy.close();
      await origin.close();
      await dns.close();
    },
  };
}

/** Total bytes the origin received on all connections. */
function originBytes(o: RecordingOrigin): number {
  return o.received.reduce((n, b) => n + (b?.length ?? 0), 0);
}

/**
 * Opens a tunnel to `target`, then sends `payload` (in `drip`-byte writes if
 * given). Returns the CONNECT status, what came back after it, and whether
 * the proxy closed (bounded by `ms`).
 */
async function tunnel(
  port: number,
  target: string,
  payload: Uint8Array,
  opts: { drip?: number; ms?: number; pipelined?: boolean } = {},
) {
  const c = await RawClient.connect(port);
  const ms = opts.ms ?? 3000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    c.close();
  }, ms);
  try {
    const head = latin1(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    if (opts.pipelined) await c.send(concat(head, payload)).catch(() => {});
    else await c.send(head);
    const r = await c.response({ head: true });
    if (!opts.pipelined && r.status === 200) {
      if (opts.drip) {
        for (let o = 0; o < payload.length; o += opts.drip) {
          await c.send(payload.subarray(o, o + opts.drip)).catch(() => {});
          await sleep(1);
        }
      } else {
        await c.send(payload).catch(() => {});
      }
    }
    const after = latin1(await c.readToEnd(ms + 1000));
    return { status: r.status, after, closed: !timedOut };
  } finally {
    clearTimeout(timer);
    c.close();
  }
}

/** Waits (bounded) until the origin received at least `n` bytes in total. */
async function originGot(o: RecordingOrigin, n: number, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (originBytes(o) >= n) return true;
    await sleep(20);
  }
  return false;
}

interface DenyCase {
  name: string;
  payload: () => Uint8Array;
  drip?: number;
  /** A TLS alert is expected back (not TLS: maybe a 403, maybe nothing). */
  alert?: boolean;
  reason: RegExp;
}

const denyCases: DenyCase[] = [
  {
    name: "SNI names a denied host",
    payload: () => tlsRecords(clientHello({ sni: ["denied.test"] })),
    alert: true,
    reason: /SNI "denied\.test" does not match the CONNECT host allowed\.test/,
  },
  {
    name: "SNI names an unknown host",
    payload: () => tlsRecords(clientHello({ sni: ["evil.example"] })),
    alert: true,
    reason: /does not match/,
  },
  {
    name: "no SNI for a name target",
    payload: () => tlsRecords(clientHello({})),
    alert: true,
    reason: /without SNI/,
  },
  {
    name: "two host_name entries (allowed, denied)",
    payload: () => tlsRecords(clientHello({ sni: ["allowed.test", "denied.test"] })),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "two server_name extensions (allowed, then denied)",
    payload: () =>
      tlsRecords(clientHello({ sni: ["allowed.test"], secondSniExtension: ["denied.test"] })),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "SNI with a NUL byte (allowed.test\\0.denied.test)",
    payload: () => tlsRecords(clientHello({ sni: ["allowed.test\0.denied.test"] })),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "SNI with the allowed name as a prefix label",
    payload: () => tlsRecords(clientHello({ sni: ["allowed.test.denied.test"] })),
    alert: true,
    reason: /does not match/,
  },
  {
    name: "SNI as a percent-encoded name",
    payload: () => tlsRecords(clientHello({ sni: ["%61llowed.test"] })),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "denied SNI in a ClientHello split into 7-byte TLS records",
    payload: () => tlsRecords(clientHello({ sni: ["denied.test"] }), 7),
    alert: true,
    reason: /does not match/,
  },
  {
    name: "denied SNI in a ClientHello sent one byte per write",
    payload: () => tlsRecords(clientHello({ sni: ["denied.test"] })),
    drip: 1,
    alert: true,
    reason: /does not match/,
  },
  {
    name: "an allowed SNI in a ClientHello split into 1-byte TLS records (too many)",
    // Re-parsed on every read, 1-byte records cost the proxy quadratic CPU.
    payload: () => tlsRecords(clientHello({ sni: ["allowed.test"] }), 1),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "plain HTTP request smuggled inside the tunnel",
    payload: () => latin1("GET http://denied.test/secret HTTP/1.1\r\nHost: denied.test\r\n\r\n"),
    reason: /tunnel traffic is not TLS/,
  },
  {
    name: "origin-form HTTP inside the tunnel",
    payload: () => latin1("GET /secret HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
    reason: /not TLS/,
  },
  {
    name: "SSH banner inside the tunnel",
    payload: () => latin1("SSH-2.0-OpenSSH_9.6\r\n"),
    reason: /not TLS/,
  },
  {
    name: "a TLS application-data record first",
    payload: () => new Uint8Array([23, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
    reason: /not TLS|malformed/,
  },
  {
    name: "a handshake record that is not a ClientHello (ServerHello)",
    payload: () => {
      const m = clientHello({ sni: ["allowed.test"] });
      m[0] = 2;
      return tlsRecords(m);
    },
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "ClientHello followed by a second handshake message in the same record",
    payload: () =>
      tlsRecords(
        concat(clientHello({ sni: ["allowed.test"] }), clientHello({ sni: ["denied.test"] })),
      ),
    alert: true,
    reason: /malformed TLS ClientHello/,
  },
  {
    name: "nothing at all (ClientHello timeout)",
    payload: () => new Uint8Array(0),
    reason: /did not start with a TLS ClientHello/,
  },
];

Deno.test("attack connect: SNI and non-TLS tricks in an allowed tunnel relay nothing", async (t) => {
  const env = await startEnv();
  try {
    for (const c of denyCases) {
      await t.step(c.name, async () => {
        const before = env.proxy.records.length;
        const got = originBytes(env.origin);
        const r = await tunnel(env.proxy.port, `allowed.test:${env.p}`, c.payload(), {
          drip: c.drip,
        });
        assert.equal(r.status, 200, "the CONNECT itself is allowed");
        assert.ok(r.closed, "the proxy closes the tunnel");
        if (c.alert) {
          assert.equal(r.after[0], TLS_ALERT, `a TLS alert, got ${JSON.stringify(r.after)}`);
        }
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.deepEqual([rec.method, rec.decision, rec.source], ["CONNECT", "deny", "policy"]);
        assert.match(rec.reason, c.reason);
        assert.equal(originBytes(env.origin), got, "not one byte reached the origin");
      });
    }
  } finally {
    await env.close();
  }
});

/** A raw client whose CONNECT to allowed.test was answered 200. */
async function allowedTunnel(env: { proxy: { port: number }; p: number }): Promise<RawClient> {
  const c = await RawClient.connect(env.proxy.port);
  await c.send(`CONNECT allowed.test:${env.p} HTTP/1.1\r\nHost: allowed.test:${env.p}\r\n\r\n`);
  assert.equal((await c.response({ head: true })).status, 200);
  return c;
}

Deno.test("attack connect: equivalent SNI spellings and fragmented hellos are relayed intact", async (t) => {
  const env = await startEnv();
  const variants: [string, Uint8Array, number | undefined][] = [
    ["SNI with a trailing dot", tlsRecords(clientHello({ sni: ["allowed.test."] })), undefined],
    ["SNI in upper case", tlsRecords(clientHello({ sni: ["ALLOWED.TEST"] })), undefined],
    ["hello in 1-byte writes", tlsRecords(clientHello({ sni: ["allowed.test"] })), 1],
    [
      "hello in 5-byte TLS records",
      tlsRecords(clientHello({ sni: ["allowed.test"] }), 5),
      undefined,
    ],
  ];
  try {
    for (const [name, hello, drip] of variants) {
      await t.step(name, async () => {
        const got = originBytes(env.origin);
        const before = env.proxy.records.length;
        const c = await allowedTunnel(env);
        try {
          for (let o = 0; o < hello.length; o += drip ?? hello.length) {
            await c.send(hello.subarray(o, o + (drip ?? hello.length)));
          }
          assert.ok(
            await originGot(env.origin, got + hello.length),
            "the hello reached the origin",
          );
          const last = env.origin.received[env.origin.received.length - 1];
          assert.deepEqual(last, hello, "relayed byte for byte");
        } finally {
          c.close();
        }
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.deepEqual([rec.decision, rec.source, rec.status], ["allow", "rule", 200]);
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: a denied CONNECT with a pipelined ClientHello relays nothing", async () => {
  const env = await startEnv();
  try {
    const hello = tlsRecords(clientHello({ sni: ["denied.test"] }));
    const r = await tunnel(env.proxy.port, `denied.test:${env.p}`, hello, { pipelined: true });
    assert.equal(r.status, 403);
    assert.ok(r.closed);
    const [rec] = await newRecords(env.proxy, 0, 1);
    assert.deepEqual([rec.method, rec.decision, rec.source, rec.status], [
      "CONNECT",
      "deny",
      "rule",
      403,
    ]);
    assert.equal(env.origin.accepted, 0, "a denied CONNECT does not even dial");
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: an allowed CONNECT with a pipelined ClientHello for a denied SNI relays nothing", async () => {
  const env = await startEnv();
  try {
    const hello = tlsRecords(clientHello({ sni: ["denied.test"] }));
    const r = await tunnel(env.proxy.port, `allowed.test:${env.p}`, hello, { pipelined: true });
    assert.equal(r.status, 200);
    assert.equal(r.after[0], TLS_ALERT);
    const [rec] = await newRecords(env.proxy, 0, 1);
    assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
    assert.equal(originBytes(env.origin), 0);
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: malformed CONNECT targets get 400 and dial nothing", async (t) => {
  const env = await startEnv();
  const p = env.p;
  const targets = [
    `allowed.test:${p}/path`,
    `http://allowed.test:${p}/`,
    `allowed.test`,
    `allowed.test:`,
    `allowed.test:0`,
    `allowed.test:65536`,
    `allowed.test:99999`,
    `allowed.test:-1`,
    `allowed.test:+${p}`,
    `allowed.test:${p}:${p}`,
    `allowed.test:${p}#x`,
    `allowed.test:${p}?x`,
    `user@allowed.test:${p}`,
    `allowed.test@denied.test:${p}`,
    `allowed.test\\@denied.test:${p}`,
    `%61llowed.test:${p}`,
    `*:${p}`,
    `[::1:${p}`,
    `::1:${p}`,
    `/`,
    `*`,
  ];
  try {
    for (const target of targets) {
      await t.step(target, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(env.proxy.port, `CONNECT ${target} HTTP/1.1\r\n\r\n`, {
          closeMs: 2000,
        });
        assert.equal(a.responses[0].status, 400, `${target}: ${a.responses[0].text}`);
        assert.ok(a.closed);
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.deepEqual([rec.method, rec.decision, rec.status], ["CONNECT", "error", 400]);
      });
    }
    assert.equal(env.origin.accepted, 0, "no malformed CONNECT dialled anything");
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: CONNECT with a body, a mismatched Host, or to a denied host", async (t) => {
  const env = await startEnv();
  const p = env.p;
  const cases: [string, string, number, string][] = [
    [
      "with a Content-Length body",
      `CONNECT allowed.test:${p} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello`,
      400,
      "error",
    ],
    [
      "with a chunked body",
      `CONNECT allowed.test:${p} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      400,
      "error",
    ],
    [
      "Host names the denied host",
      `CONNECT allowed.test:${p} HTTP/1.1\r\nHost: denied.test:${p}\r\n\r\n`,
      403,
      "policy",
    ],
    [
      "two Host headers",
      `CONNECT allowed.test:${p} HTTP/1.1\r\nHost: allowed.test:${p}\r\nHost: denied.test:${p}\r\n\r\n`,
      400,
      "error",
    ],
    [
      "denied host, upper case, trailing dot",
      `CONNECT DENIED.TEST.:${p} HTTP/1.1\r\n\r\n`,
      403,
      "rule",
    ],
    ["denied host in HTTP/1.0", `CONNECT denied.test:${p} HTTP/1.0\r\n\r\n`, 403, "rule"],
  ];
  try {
    for (const [name, req, status, source] of cases) {
      await t.step(name, async () => {
        const before = env.proxy.records.length;
        const a = await attempt(env.proxy.port, req, { closeMs: 2000 });
        assert.equal(a.responses[0].status, status, `${name}: ${a.responses[0].text}`);
        assert.ok(a.closed, "the connection is closed");
        const [rec] = await newRecords(env.proxy, before, 1);
        assert.equal(rec.source, source, JSON.stringify(rec));
        assert.equal(rec.status, status);
      });
    }
    assert.equal(originBytes(env.origin), 0);
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: plain text after a valid ClientHello is not relayed", async (t) => {
  const env = await startEnv();
  const hello = tlsRecords(clientHello({ sni: ["allowed.test"] }));
  const cases: [string, Uint8Array][] = [
    [
      "in the same write",
      concat(hello, latin1("GET /secret HTTP/1.1\r\nHost: allowed.test\r\n\r\n")),
    ],
    ["in a later write", latin1("GET /secret HTTP/1.1\r\nHost: allowed.test\r\n\r\n")],
    [
      "after a valid application-data record",
      concat(new Uint8Array([23, 3, 3, 0, 2, 9, 9]), latin1("GET /x")),
    ],
  ];
  try {
    for (const [name, tail] of cases) {
      await t.step(name, async () => {
        const got = originBytes(env.origin);
        const before = env.proxy.records.length;
        const c = await allowedTunnel(env);
        try {
          if (name !== "in the same write") {
            await c.send(hello);
            assert.ok(await originGot(env.origin, got + hello.length), "the hello went through");
          }
          await c.send(tail);
          const [rec] = await newRecords(env.proxy, before, 1);
          assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
          assert.match(rec.reason, /after the ClientHello is not TLS/);
          assert.match(rec.error ?? "", /not a TLS record at byte \d+ of the tunnel/);
        } finally {
          c.close();
        }
        const sent = new TextDecoder("latin1").decode(
          env.origin.received[env.origin.received.length - 1],
        );
        assert.equal(sent.includes("GET "), false, "no plain text reached the origin");
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: a tunnel that turns passthrough after its CONNECT checks its first bytes too", async () => {
  // The interceptor was going to decrypt it, then declines (a passthrough rule
  // arrived meanwhile): the ClientHello and what came with it are relayed by
  // the same checked path as any tunnel.
  const origin = startRecordingOrigin();
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "allowed.test": "allow" },
    resolve: [["allowed.test", p, "127.0.0.1"]],
    intercept: { intercepts: () => true, intercept: () => Promise.resolve(null) },
  });
  const hello = tlsRecords(clientHello({ sni: ["allowed.test"] }));
  try {
    const c = await allowedTunnel({ proxy, p });
    try {
      await c.send(concat(hello, latin1("GET /secret HTTP/1.1\r\nHost: allowed.test\r\n\r\n")));
      const [rec] = await proxy.waitRecords(1);
      assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
      assert.match(rec.reason, /after the ClientHello is not TLS/);
      assert.match(rec.error ?? "", new RegExp(`not a TLS record at byte ${hello.length} of`));
    } finally {
      c.close();
    }
    const sent = new TextDecoder("latin1").decode(concat(...origin.received.filter((b) => b)));
    assert.equal(sent.includes("GET "), false, "no plain text reached the origin");
    // A well-behaved tunnel through the same path still works.
    const before = originBytes(origin);
    const ok = await allowedTunnel({ proxy, p });
    try {
      await ok.send(hello);
      assert.ok(await originGot(origin, before + hello.length), "the hello went through");
    } finally {
      ok.close();
    }
  } finally {
    await proxy.close();
    await origin.close();
  }
});

Deno.test("attack connect: a tunnel that turns passthrough after its CONNECT is logged as refused when its destination is protected", async () => {
  // Decided as a decrypted tunnel (nothing dialled), then relayed after all:
  // its dial to a name DNS points at loopback is refused, and the record
  // must say so, not "allow".
  const dns = await startDnsServer({ "rebind.test": ["127.0.0.1"] });
  const origin = startRecordingOrigin();
  const p = origin.port;
  const proxy = await startTestProxy({
    rules: { "*": "allow" },
    nameServer: dns.nameServer,
    intercept: { intercepts: () => true, intercept: () => Promise.resolve(null) },
  });
  try {
    const c = await RawClient.connect(proxy.port);
    try {
      await c.send(`CONNECT rebind.test:${p} HTTP/1.1\r\nHost: rebind.test:${p}\r\n\r\n`);
      assert.equal((await c.response({ head: true })).status, 200);
      await c.send(tlsRecords(clientHello({ sni: ["rebind.test"] })));
      const [rec] = await proxy.waitRecords(1);
      assert.deepEqual([rec.method, rec.decision, rec.source], ["CONNECT", "deny", "policy"]);
      assert.match(rec.reason, /destination protection: rebind\.test \(127\.0\.0\.1\)/);
    } finally {
      c.close();
    }
    assert.equal(origin.accepted, 0, "loopback was not dialled");
  } finally {
    await proxy.close();
    await origin.close();
    await dns.close();
  }
});

// ------------------------------------------------ a second ClientHello

/** A ServerHello record (a HelloRetryRequest when `hrr`), then a change_cipher_spec record. */
function serverHello(hrr: boolean): Uint8Array {
  const random = hrr ? HRR_RANDOM : new Array(32).fill(0x42);
  // version, random, empty session id, TLS_AES_128_GCM_SHA256, null compression,
  // supported_versions 0x0304, key_share x25519 (an HRR names the group only).
  const body = [3, 3, ...random, 0, 0x13, 0x01, 0, 0, 12, 0, 43, 0, 2, 3, 4, 0, 51, 0, 2, 0, 0x1d];
  const msg = [2, 0, 0, body.length, ...body];
  return new Uint8Array([22, 3, 3, 0, msg.length, ...msg, 20, 3, 3, 0, 1, 1]);
}

const CCS = new Uint8Array([20, 3, 3, 0, 1, 1]);

/** True when `needle` occurs in what the origin received. */
function originSaw(o: RecordingOrigin, needle: string): boolean {
  return new TextDecoder("latin1").decode(concat(...o.received.filter((b) => b))).includes(needle);
}

/** Reads from `c` until `n` bytes arrived after the CONNECT response (bounded). */
async function serverBytes(c: RawClient, n: number): Promise<Uint8Array> {
  return await Promise.race([
    c.take(n),
    sleep(3000).then(() => {
      throw new Error(`the server's ${n} bytes did not come through the tunnel`);
    }),
  ]);
}

Deno.test("attack connect: a second ClientHello sent behind the checked one relays nothing of it", async (t) => {
  // A TLS 1.3 server reads a second ClientHello after its HelloRetryRequest and
  // picks its virtual host and certificate from that one's SNI (OpenSSL 3.0's
  // s_server does), so a client that sends it without waiting, in the same
  // write or the next, would reach a host the SNI check never saw.
  const env = await startEnv();
  const first = tlsRecords(clientHello({ sni: ["allowed.test"] }));
  const second = tlsRecords(clientHello({ sni: ["denied.test"] }));
  try {
    for (const together of [true, false]) {
      await t.step(together ? "in the same write" : "in a later write", async () => {
        const before = env.proxy.records.length;
        const c = await allowedTunnel(env);
        try {
          if (together) {
            await c.send(concat(first, CCS, second));
          } else {
            const got = originBytes(env.origin);
            await c.send(first);
            assert.ok(await originGot(env.origin, got + first.length), "the hello went through");
            await c.send(concat(CCS, second)).catch(() => {});
          }
          const [rec] = await newRecords(env.proxy, before, 1);
          assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
          assert.match(rec.reason, /before the server answered/);
        } finally {
          c.close();
        }
        assert.equal(originSaw(env.origin, "denied.test"), false, "the second hello was relayed");
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: after a HelloRetryRequest the second ClientHello is checked like the first", async (t) => {
  const env = await startEnv((first) => first[0] === 22 ? serverHello(true) : undefined);
  const first = tlsRecords(clientHello({ sni: ["allowed.test"] }));
  const cases: [string, Uint8Array, RegExp | undefined][] = [
    [
      "SNI naming another host",
      tlsRecords(clientHello({ sni: ["denied.test"] })),
      /does not match/,
    ],
    ["no SNI", tlsRecords(clientHello({})), /without SNI/],
    [
      "not a ClientHello",
      tlsRecords(new Uint8Array([16, 0, 0, 4, 1, 2, 3, 4])),
      /malformed TLS ClientHello/,
    ],
    [
      "SNI naming another host, in 7-byte records",
      tlsRecords(clientHello({ sni: ["denied.test"] }), 7),
      /does not match/,
    ],
    ["the same SNI", tlsRecords(clientHello({ sni: ["allowed.test"] })), undefined],
  ];
  try {
    for (const [name, second, reason] of cases) {
      await t.step(name, async () => {
        const before = env.proxy.records.length;
        const got = originBytes(env.origin);
        const c = await allowedTunnel(env);
        try {
          await c.send(first);
          const hrr = serverHello(true);
          assert.deepEqual(
            await serverBytes(c, hrr.length),
            hrr,
            "the HelloRetryRequest came back",
          );
          await c.send(concat(CCS, second)).catch(() => {});
          if (reason) {
            const [rec] = await newRecords(env.proxy, before, 1);
            assert.deepEqual([rec.decision, rec.source], ["deny", "policy"]);
            assert.match(rec.reason, /second TLS ClientHello/);
            assert.match(rec.reason, reason);
            assert.equal(
              originBytes(env.origin) - got < first.length + CCS.length + second.length,
              true,
              "the second hello was not relayed whole",
            );
            assert.equal(originSaw(env.origin, "denied.test"), false);
          } else {
            const all = first.length + CCS.length + second.length;
            assert.ok(await originGot(env.origin, got + all), "the second hello went through");
            assert.deepEqual(
              env.origin.received[env.origin.received.length - 1],
              concat(first, CCS, second),
            );
          }
        } finally {
          c.close();
        }
        if (!reason) {
          const [rec] = await newRecords(env.proxy, before, 1);
          assert.deepEqual([rec.decision, rec.source, rec.status], ["allow", "rule", 200]);
        }
      });
    }
  } finally {
    await env.close();
  }
});

Deno.test("attack connect: after a real ServerHello the client's handshake records are relayed", async () => {
  // TLS 1.2: the client's second flight (ClientKeyExchange, Finished) is
  // handshake records, sent once the server answered.
  const env = await startEnv((first) => first[0] === 22 ? serverHello(false) : undefined);
  const first = tlsRecords(clientHello({ sni: ["allowed.test"] }));
  const flight = concat(tlsRecords(new Uint8Array([16, 0, 0, 4, 1, 2, 3, 4])), CCS);
  try {
    const before = env.proxy.records.length;
    const got = originBytes(env.origin);
    const c = await allowedTunnel(env);
    try {
      await c.send(first);
      const sh = serverHello(false);
      assert.deepEqual(await serverBytes(c, sh.length), sh);
      await c.send(flight);
      assert.ok(await originGot(env.origin, got + first.length + flight.length));
    } finally {
      c.close();
    }
    const [rec] = await newRecords(env.proxy, before, 1);
    assert.deepEqual([rec.decision, rec.source, rec.status], ["allow", "rule", 200]);
  } finally {
    await env.close();
  }
});
