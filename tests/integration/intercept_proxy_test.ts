/**
 * HTTPS interception through the real proxy (lib/proxy) with the real
 * interceptor (lib/tls/intercept.ts): curl, Python urllib and Node.js clients
 * that trust the netmonitor CA fetch from a local TLS origin (test CA,
 * trusted with upstreamCaCerts); URL rules decide each request; a Host that
 * is not the tunnel's, an origin with a bad certificate, a client that
 * rejects our certificate, an h2-only client and passthrough.
 */
import assert from "node:assert/strict";
import { hasAll } from "../_helpers/tools.ts";
import type { DecideInput, FinalDecision } from "../../lib/proxy/mod.ts";
import { makeRule, RuleSet } from "../../lib/rules/mod.ts";
import { createCa } from "../../lib/tls/ca.ts";
import { createInterceptor, PassthroughList } from "../../lib/tls/intercept.ts";
import { issueLeafCertificate, LeafIssuer } from "../../lib/tls/leaf.ts";
import { generateRsaKey } from "../../lib/tls/_x509.ts";
import { type Origin, startOrigin, TEST_CA_PATH, TEST_CA_PEM } from "../_helpers/origin.ts";
import { startTestProxy, type TestProxy } from "../_helpers/proxy.ts";

const ca = await createCa({ hostname: "test" });
const leaves = await LeafIssuer.create(ca);
const dir = await Deno.makeTempDir({ prefix: "nm-intercept-" });
const caPath = `${dir}/netmonitor-ca.pem`;
await Deno.writeTextFile(caPath, ca.certPem);
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** What `netmonitor run` does for CONNECTs it will decrypt: deny only what a host rule denies. */
function tunnelDecider(rules: Record<string, string>) {
  const set = new RuleSet(Object.entries(rules).map(([p, a]) => makeRule(p, a)));
  return (input: DecideInput): Promise<FinalDecision> => {
    const d = set.decide(input.target);
    if (!set.hasUrlRulesFor(input.target.host, input.target.port) && d.action !== "ask") {
      return Promise.resolve({ action: d.action, source: "rule", reason: d.reason, rule: d.rule });
    }
    return Promise.resolve({ action: "allow", source: "policy", reason: "HTTPS intercepted" });
  };
}

interface Setup {
  origin: Origin;
  proxy: TestProxy;
  /** `https://origin.test:PORT` */
  base: string;
  close(): Promise<void>;
}

async function setup(
  rules: Record<string, string> | ((port: number) => Record<string, string>),
  options: { passthrough?: string[]; upstreamCa?: boolean } = {},
): Promise<Setup> {
  const origin = await startOrigin({ tls: true, name: "origin" });
  const r = typeof rules === "function" ? rules(origin.port) : rules;
  const intercept = await createInterceptor({
    ca,
    leaves,
    upstreamCaCerts: options.upstreamCa === false ? undefined : [TEST_CA_PEM],
    passthrough: new PassthroughList(options.passthrough ?? []),
    handshakeTimeoutMs: 5000,
  });
  const proxy = await startTestProxy({
    rules: r,
    resolve: [["origin.test", origin.port, "127.0.0.1"]],
    intercept,
    decideTunnel: tunnelDecider(r),
  });
  return {
    origin,
    proxy,
    base: `https://origin.test:${origin.port}`,
    async close() {
      await proxy.close();
      await origin.close();
    },
  };
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", env }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function curl(s: Setup, args: string[]) {
  return run("curl", ["-sS", "--noproxy", "", "-x", s.proxy.url, ...args]);
}

Deno.test(
  "intercept: curl trusting the CA fetches an HTTPS origin; each request logged with its URL",
  { ignore: !hasAll("curl") },
  async () => {
    const s = await setup({ "origin.test": "allow-domain" });
    try {
      const r = await curl(s, [
        "--cacert",
        caPath,
        `${s.base}/hello`,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        `${s.base}/echo?x=1`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const [first, echo] = r.stdout.split("\n");
      assert.equal(first, "200");
      const seen = JSON.parse(echo.replace(/200$/, ""));
      assert.equal(seen.path, "/echo?x=1");
      const records = await s.proxy.waitRecords(3);
      const urls = records.map((rec) => `${rec.method} ${rec.url} ${rec.status}`).sort();
      assert.deepEqual(urls, [
        `CONNECT origin.test:${s.origin.port} 200`,
        `GET ${s.base}/echo?x=1 200`,
        `GET ${s.base}/hello 200`,
      ]);
      // The CONNECT was decided by decideTunnel; each request by the decider, on its URL.
      assert.deepEqual(s.proxy.decided.map((d) => d.url), [
        `${s.base}/hello`,
        `${s.base}/echo?x=1`,
      ]);
    } finally {
      await s.close();
    }
  },
);

Deno.test("intercept: Python urllib and Node.js clients trusting the CA", {
  ignore: !hasAll("node", "python3"),
}, async () => {
  const s = await setup({ "origin.test": "allow-domain" });
  try {
    const py = await run("python3", [
      "-c",
      `import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"https": sys.argv[2]}),
    urllib.request.HTTPSHandler(context=ctx))
print(opener.open(sys.argv[3]).read().decode())`,
      caPath,
      s.proxy.url,
      `${s.base}/hello`,
    ]);
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.trim(), "hello from origin");

    // Node 20 has no proxy support of its own: CONNECT by hand, then TLS over
    // the tunnel, trusting the CA the documented way (NODE_EXTRA_CA_CERTS).
    const node = await run("node", [
      "-e",
      `const http = require("http"), https = require("https");
const [proxy, host, port] = process.argv.slice(1);
const p = new URL(proxy);
const target = host + ":" + port;
http.request({ host: p.hostname, port: p.port, method: "CONNECT", path: target, headers: { host: target } })
  .on("connect", (res, socket) => {
    if (res.statusCode !== 200) { console.error("CONNECT", res.statusCode); process.exit(1); }
    https.get({ host, port, path: "/hello", socket, agent: false }, (r) => {
      let body = "";
      r.on("data", (d) => body += d).on("end", () => { console.log(r.statusCode, body); socket.destroy(); });
    }).on("error", (e) => { console.error(e.message); process.exit(1); });
  }).end();`,
      s.proxy.url,
      "origin.test",
      String(s.origin.port),
    ], { NODE_EXTRA_CA_CERTS: caPath });
    assert.equal(node.code, 0, node.stderr);
    assert.equal(node.stdout.trim(), "200 hello from origin");
    const records = await s.proxy.waitRecords(4);
    assert.equal(records.filter((r) => r.url === `${s.base}/hello` && r.status === 200).length, 2);
  } finally {
    await s.close();
  }
});

Deno.test("intercept: URL rules allow and deny HTTPS requests inside one tunnel", {
  ignore: !hasAll("curl"),
}, async () => {
  const s = await setup((port) => ({
    [`https://origin.test:${port}/hello`]: "allow-url",
    [`https://origin.test:${port}/echo`]: "deny-url",
  }));
  try {
    const r = await curl(s, [
      "--cacert",
      caPath,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{num_connects}\n",
      `${s.base}/hello`,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{num_connects}\n",
      `${s.base}/echo`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "200 1\n403 0\n", "one tunnel, two decisions");
    const records = await s.proxy.waitRecords(3);
    const denied = records.find((rec) => rec.url === `${s.base}/echo`)!;
    assert.equal(denied.decision, "deny");
    assert.equal(denied.status, 403);
    assert.match(denied.reason, /deny-url/);
    assert.equal(s.origin.requests.filter((q) => q.path === "/echo").length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("intercept: a Host that is not the tunnel's host is denied inside the tunnel", {
  ignore: !hasAll("curl"),
}, async () => {
  const s = await setup({ "origin.test": "allow-domain", "other.test": "allow-domain" });
  try {
    const r = await curl(s, [
      "--cacert",
      caPath,
      "-H",
      "Host: other.test",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `${s.base}/hello`,
    ]);
    assert.equal(r.stdout, "403", r.stderr);
    assert.equal(s.origin.requests.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test("intercept: an origin whose certificate is invalid gives a 502 with the reason", {
  ignore: !hasAll("curl"),
}, async () => {
  const key = await generateRsaKey();
  const DAY = 86_400_000;
  const testCa = await createCa({ hostname: "origin-ca" });
  const cases = [
    {
      name: "expired",
      leaf: await issueLeafCertificate(testCa, key, "bad.test", {
        notBefore: new Date(Date.now() - 30 * DAY),
        notAfter: new Date(Date.now() - DAY),
      }),
      reason: /has expired/,
    },
    {
      name: "wrong host",
      leaf: await issueLeafCertificate(testCa, key, "elsewhere.test", {
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + DAY),
      }),
      reason: /is not valid for name bad\.test/,
    },
  ];
  for (const c of cases) {
    const listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: c.leaf.certPem,
      key: c.leaf.keyPem,
    });
    const serving = (async () => {
      for await (const conn of listener) {
        conn.handshake().catch(() => {}).finally(() => conn.close());
      }
    })();
    const port = listener.addr.port;
    const intercept = await createInterceptor({ ca, leaves, upstreamCaCerts: [testCa.certPem] });
    const proxy = await startTestProxy({
      rules: { "bad.test": "allow-domain" },
      resolve: [["bad.test", port, "127.0.0.1"]],
      intercept,
    });
    try {
      const r = await run("curl", [
        "-sS",
        "-x",
        proxy.url,
        "--cacert",
        caPath,
        `https://bad.test:${port}/`,
        "-w",
        "\n%{http_code}",
      ]);
      const [, body, status] = /^(.*)\n(\d+)$/s.exec(r.stdout) ?? [];
      assert.equal(status, "502", `${c.name}: ${r.stdout} ${r.stderr}`);
      assert.match(body, c.reason, c.name);
      const rec = (await proxy.waitRecords(2)).find((x) => x.method === "GET")!;
      assert.equal(rec.status, 502);
      assert.match(rec.error ?? "", c.reason);
    } finally {
      await proxy.close();
      listener.close();
      await serving;
    }
  }
  // An unknown root: without the origin's CA in upstreamCaCerts.
  const s = await setup({ "origin.test": "allow-domain" }, { upstreamCa: false });
  try {
    const r = await curl(s, ["--cacert", caPath, `${s.base}/hello`, "-w", "\n%{http_code}"]);
    assert.match(r.stdout, /unknown issuer.*\n502$/s);
  } finally {
    await s.close();
  }
});

Deno.test("intercept: a client that rejects our certificate is logged with a passthrough hint", {
  ignore: !hasAll("curl"),
}, async () => {
  const s = await setup({ "origin.test": "allow-domain" });
  try {
    // curl trusting only the origin's real CA: as if it pinned it.
    const r = await curl(s, ["--cacert", TEST_CA_PATH, `${s.base}/hello`]);
    assert.notEqual(r.code, 0);
    const [tunnel] = await s.proxy.waitRecords(1);
    assert.equal(tunnel.method, "CONNECT");
    assert.match(
      tunnel.error ?? "",
      /client rejected netmonitor's certificate \(TLS alert UnknownCA\)/,
    );
    assert.match(tunnel.error ?? "", /add --passthrough origin\.test/);
    assert.equal(s.origin.requests.length, 0);
  } finally {
    await s.close();
  }
});

Deno.test(
  "intercept: passthrough hosts are relayed undecrypted",
  { ignore: !hasAll("curl") },
  async () => {
    const s = await setup({ "origin.test": "allow-domain" }, { passthrough: ["origin.test"] });
    try {
      // The client sees the origin's own certificate (test CA), not ours.
      const r = await curl(s, ["--cacert", TEST_CA_PATH, `${s.base}/hello`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "hello from origin");
      const records = await s.proxy.waitRecords(1);
      assert.equal(records.length, 1);
      assert.equal(records[0].method, "CONNECT");
      assert.equal(s.proxy.decided.length, 1);
    } finally {
      await s.close();
    }
  },
);

Deno.test("intercept: a client offering only h2 gets no tunnel, and a hint", async () => {
  const s = await setup({ "origin.test": "allow-domain" });
  try {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.port });
    const target = `origin.test:${s.origin.port}`;
    await tcp.write(
      new TextEncoder().encode(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`),
    );
    const buf = new Uint8Array(1024);
    const n = await tcp.read(buf);
    assert.match(new TextDecoder().decode(buf.subarray(0, n!)), /^HTTP\/1\.1 200/);
    const tls = await Deno.startTls(tcp, {
      hostname: "origin.test",
      caCerts: [ca.certPem],
      alpnProtocols: ["h2"],
    });
    await assert.rejects(() => tls.handshake());
    tls.close();
    const [tunnel] = await s.proxy.waitRecords(1);
    assert.match(tunnel.error ?? "", /offers only h2 by ALPN.*--passthrough origin\.test/);
  } finally {
    await s.close();
  }
});

Deno.test("intercept: a CONNECT to a protected address is refused at once, not opened", async () => {
  const s = await setup({ "*": "allow", "[::1]": "allow", "origin.test": "allow" });
  const p = s.origin.port;
  try {
    const targets = ["127.0.0.1", "0x7f.1", "localhost", "169.254.169.254", "[::ffff:7f00:1]"];
    for (const t of targets) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.port });
      try {
        const req = `CONNECT ${t}:${p} HTTP/1.1\r\nHost: ${t}:${p}\r\n\r\n`;
        await c.write(new TextEncoder().encode(req));
        const buf = new Uint8Array(4096);
        const n = await c.read(buf);
        const text = new TextDecoder().decode(buf.subarray(0, n ?? 0));
        assert.match(text, /^HTTP\/1\.1 403 /, t);
        assert.match(text, /destination protection/, t);
      } finally {
        c.close();
      }
    }
    const recs = await s.proxy.waitRecords(targets.length);
    for (const rec of recs) {
      assert.deepEqual([rec.method, rec.decision, rec.source, rec.status], [
        "CONNECT",
        "deny",
        "policy",
        403,
      ]);
      assert.match(rec.reason, /^destination protection: /);
    }
    // An exact rule for the address, or a --resolve name, still opens the tunnel.
    const named = await curl(s, ["--cacert", caPath, `${s.base}/hello`]);
    assert.equal(named.stdout, "hello from origin", named.stderr);
    const c = await Deno.connect({ hostname: "127.0.0.1", port: s.proxy.port });
    try {
      await c.write(
        new TextEncoder().encode(`CONNECT [::1]:${p} HTTP/1.1\r\nHost: [::1]:${p}\r\n\r\n`),
      );
      const buf = new Uint8Array(4096);
      const n = await c.read(buf);
      assert.match(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200 /);
    } finally {
      c.close();
    }
  } finally {
    await s.close();
  }
});

Deno.test("intercept: an allow URL rule naming an exact IP reaches it over HTTPS", async () => {
  const s = await setup((p) => ({ [`https://127.0.0.1:${p}/hello`]: "allow" }));
  try {
    const url = `https://127.0.0.1:${s.origin.port}`;
    const ok = await curl(s, ["--cacert", caPath, `${url}/hello`]);
    assert.equal(ok.stdout, "hello from origin", ok.stderr);
    // Another path on the same address: no rule names it, so protection holds.
    const no = await curl(s, [
      "--cacert",
      caPath,
      "-w",
      "%{http_code}",
      "-o",
      "/dev/null",
      `${url}/echo`,
    ]);
    assert.equal(no.stdout, "403");
    assert.equal(s.origin.requests.length, 1);
  } finally {
    await s.close();
  }
});
