/**
 * `passthrough` rules in a real `netmonitor run` proxy (runProxy in-process,
 * interception on, its own data directory and CA) in front of a local TLS
 * origin signed by the test CA (tests/testdata/tls), reached through
 * --resolve. A TLS client trusting only the origin's CA gets through a
 * passthrough tunnel (it sees the origin's own certificate); one trusting only
 * netmonitor's CA gets through an intercepted tunnel. Rules added while the
 * proxy runs apply to the next tunnel.
 */
import assert from "node:assert/strict";
import { type RunConfig, runProxy } from "../../cli/run.ts";
import { parseResolveEntry } from "../../lib/net/resolve.ts";
import { dataPaths } from "../../lib/paths.ts";
import type { AccessRecord } from "../../lib/proxy/mod.ts";
import { RulesStore } from "../../lib/rules/mod.ts";
import { startOrigin, TEST_CA_PATH, TEST_CA_PEM } from "../_helpers/origin.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a client saw through one CONNECT tunnel. */
type Outcome =
  | { kind: "connect-refused"; status: number; head: string }
  | { kind: "tls-failed"; error: string }
  | { kind: "response"; status: number; text: string };

async function readHead(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(1);
  // Byte by byte: nothing after the head may be consumed (TLS follows it).
  while (!text.endsWith("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += dec.decode(buf.subarray(0, n));
  }
  return text;
}

async function readResponse(tls: Deno.TlsConn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(65536);
  for (;;) {
    const h = text.indexOf("\r\n\r\n");
    if (h >= 0) {
      const len = /content-length: (\d+)/i.exec(text.slice(0, h));
      if (text.length >= h + 4 + (len ? Number(len[1]) : 0)) return text;
    }
    const n = await tls.read(buf);
    if (n === null) return text;
    text += dec.decode(buf.subarray(0, n));
  }
}

/**
 * CONNECT host:port through the proxy, TLS trusting only `caPem`, then
 * `GET path`. A handshake failure means the certificate was not signed by
 * that CA.
 */
async function fetchThrough(
  proxyPort: number,
  host: string,
  port: number,
  caPem: string,
  path = "/hello",
): Promise<Outcome> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  const authority = `${host}:${port}`;
  try {
    await conn.write(enc.encode(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    const head = await readHead(conn);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
    if (status !== 200) {
      conn.close();
      return { kind: "connect-refused", status, head };
    }
  } catch (e) {
    conn.close();
    throw e;
  }
  const tls = await Deno.startTls(conn, { hostname: host, caCerts: [caPem] });
  try {
    try {
      await tls.handshake();
    } catch (e) {
      return { kind: "tls-failed", error: String(e) };
    }
    await tls.write(enc.encode(`GET ${path} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    const text = await readResponse(tls);
    return { kind: "response", status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text };
  } finally {
    tls.close();
  }
}

async function waitUntil(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

Deno.test("passthrough rules in netmonitor run: relayed vs intercepted, precedence, hot reload", async (t) => {
  const origin = await startOrigin({ tls: true, name: "origin" });
  const p = origin.port;
  const dir = await Deno.makeTempDir({ prefix: "nm-passthrough-" });
  const paths = dataPaths(dir);
  await Deno.writeTextFile(
    paths.rules,
    `{
  // netmonitor's own action next to the original design's
  "pinned.origin.test": "passthrough",
  "open.origin.test": "allow-domain",
  "later.origin.test": "allow-domain",
  "*.origin.test": "passthrough",
  "blocked.origin.test": "deny-domain",
  "https://guarded.origin.test:${p}/secret": "deny",
  "a.test": "allow"
}
`,
  );
  const hosts = [
    "pinned.origin.test",
    "open.origin.test",
    "later.origin.test",
    "a.origin.test",
    "blocked.origin.test",
    "guarded.origin.test",
    "a.test",
  ];
  const config: RunConfig = {
    listen: "127.0.0.1",
    port: 0,
    resolve: new Map(hosts.map((h) => {
      const { key, address } = parseResolveEntry(`${h}:${p}:127.0.0.1`);
      return [key, address] as const;
    })),
    promptTimeoutMs: 2000,
    mode: "non-interactive",
    defaultAction: "deny",
    logMaxBytes: 1 << 20,
    logKeep: 1,
    intercept: true,
    passthrough: ["a.test"],
    upstreamCa: [TEST_CA_PATH],
  };
  const out = { stdout: "", stderr: "" };
  const stop = new AbortController();
  const running = runProxy(config, {
    paths,
    stdout: (s) => (out.stdout += s),
    stderr: (s) => (out.stderr += s),
    stdoutIsTerminal: false,
  }, stop.signal);
  let code: number | undefined;
  try {
    await waitUntil("Listening", () => /Listening on http:\/\/127\.0\.0\.1:\d+\n/.test(out.stdout));
    const port = Number(/Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out.stdout)![1]);
    const netmonitorCa = await Deno.readTextFile(paths.caCert);
    const viaOrigin = (host: string, path?: string) =>
      fetchThrough(port, host, p, TEST_CA_PEM, path);
    const viaNetmonitor = (host: string, path?: string) =>
      fetchThrough(port, host, p, netmonitorCa, path);

    await t.step("a passthrough host shows the origin's own certificate", async () => {
      const r = await viaOrigin("pinned.origin.test");
      assert.equal(r.kind, "response", JSON.stringify(r));
      assert.match((r as { text: string }).text, /^HTTP\/1\.1 200 [^]*hello from origin$/);
      // netmonitor did not decrypt it: a client trusting only netmonitor's CA fails.
      assert.equal((await viaNetmonitor("pinned.origin.test")).kind, "tls-failed");
      // Wildcard passthrough too (no exact rule for a.origin.test).
      assert.equal((await viaOrigin("a.origin.test")).kind, "response");
      assert.equal((await viaNetmonitor("a.origin.test")).kind, "tls-failed");
      // --passthrough still works next to the rules.
      assert.equal((await viaOrigin("a.test")).kind, "response");
    });

    await t.step(
      "an exact allow-domain beats the wildcard passthrough: netmonitor's certificate",
      async () => {
        const r = await viaNetmonitor("open.origin.test");
        assert.equal(r.kind, "response", JSON.stringify(r));
        assert.match((r as { text: string }).text, /hello from origin$/);
        assert.equal((await viaOrigin("open.origin.test")).kind, "tls-failed");
      },
    );

    await t.step(
      "an exact deny-domain beats the wildcard passthrough: the CONNECT is denied",
      async () => {
        const r = await viaOrigin("blocked.origin.test");
        assert.equal(r.kind, "connect-refused");
        assert.equal((r as { status: number }).status, 403);
        assert.match(
          (r as { head: string }).head,
          /rule \\?"blocked\.origin\.test\\?": deny-domain/,
        );
      },
    );

    await t.step(
      "a deny URL rule keeps its host decrypted; the rest is allowed by passthrough",
      async () => {
        assert.equal((await viaOrigin("guarded.origin.test")).kind, "tls-failed");
        const denied = await viaNetmonitor("guarded.origin.test", "/secret");
        assert.equal((denied as { status: number }).status, 403, JSON.stringify(denied));
        const allowed = await viaNetmonitor("guarded.origin.test", "/hello");
        assert.equal((allowed as { status: number }).status, 200, JSON.stringify(allowed));
        // The conflict was reported when the proxy started.
        assert.match(
          out.stderr,
          /warning: rule "\*\.origin\.test": passthrough does not apply to guarded\.origin\.test:\d+/,
        );
      },
    );

    await t.step("a rule added while running applies to the next tunnel", async () => {
      assert.equal((await viaNetmonitor("later.origin.test")).kind, "response");
      const editor = new RulesStore(paths.rules); // as `netmonitor rules add` in another process
      const reloads = out.stdout.split("Rules reloaded").length;
      await editor.add("later.origin.test", "passthrough");
      await waitUntil("the reload", () => out.stdout.split("Rules reloaded").length > reloads);
      const r = await viaOrigin("later.origin.test");
      assert.equal(r.kind, "response", JSON.stringify(r));
      assert.equal((await viaNetmonitor("later.origin.test")).kind, "tls-failed");

      // And back: a deny URL rule for it turns decryption on again, with a warning.
      const again = out.stdout.split("Rules reloaded").length;
      await editor.add(`https://later.origin.test:${p}/secret`, "deny");
      await waitUntil("the reload", () => out.stdout.split("Rules reloaded").length > again);
      assert.equal((await viaOrigin("later.origin.test")).kind, "tls-failed");
      const denied = await viaNetmonitor("later.origin.test", "/secret");
      assert.equal((denied as { status: number }).status, 403, JSON.stringify(denied));
      await waitUntil(
        "the warning",
        () => /passthrough does not apply to later\.origin\.test/.test(out.stderr),
      );
    });
  } finally {
    stop.abort();
    code = await running;
    await origin.close();
  }
  assert.equal(code, 0);

  // The log: relayed tunnels are decided by their passthrough rule; nothing inside them is seen.
  const records: AccessRecord[] = (await Deno.readTextFile(paths.log)).trim().split("\n").map((
    l,
  ) => JSON.parse(l));
  await Deno.remove(dir, { recursive: true });
  const pinned = records.filter((r) => r.host === "pinned.origin.test");
  assert.ok(pinned.length >= 2);
  for (const r of pinned) {
    assert.equal(r.method, "CONNECT");
    assert.deepEqual([r.decision, r.source, r.reason], [
      "allow",
      "rule",
      'rule "pinned.origin.test": passthrough',
    ]);
  }
  const wildcard = records.find((r) => r.host === "a.origin.test" && r.method === "CONNECT");
  assert.equal(wildcard?.reason, 'rule "*.origin.test": passthrough');
  assert.ok(
    !records.some((r) => r.method === "GET" && /pinned\.origin\.test|a\.origin\.test/.test(r.url)),
  );
  // Intercepted hosts have their requests logged with full URLs.
  assert.ok(
    records.some((r) => r.method === "GET" && r.url === `https://open.origin.test:${p}/hello`),
  );
  const secret = records.find((r) => r.url === `https://guarded.origin.test:${p}/secret`);
  assert.deepEqual([secret?.decision, secret?.reason], [
    "deny",
    `rule "https://guarded.origin.test:${p}/secret": deny`,
  ]);
  const hello = records.find((r) => r.url === `https://guarded.origin.test:${p}/hello`);
  assert.deepEqual([hello?.decision, hello?.reason], [
    "allow",
    'rule "*.origin.test": passthrough',
  ]);
});
