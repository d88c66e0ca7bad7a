/**
 * `useSystemRootStore()`: Deno reads DENO_TLS_CA_STORE when the first TLS
 * connection is made, so setting it at start-up makes origins signed by a CA
 * in the system store verifiable. Each case runs in a fresh `deno` process
 * (the root store is built once per process), pointing the "system store" at
 * a test CA with SSL_CERT_FILE, and connects to a local TLS origin.
 */
import assert from "node:assert/strict";
import { createCa } from "../../lib/tls/ca.ts";
import { issueLeafCertificate } from "../../lib/tls/leaf.ts";
import { generateRsaKey } from "../../lib/tls/_x509.ts";

const DAY = 86_400_000;
const UPSTREAM = new URL("../../lib/tls/upstream.ts", import.meta.url).href;

/** Runs `deno eval` with `env`: optionally useSystemRootStore(), then a verified TLS connect. */
async function probe(
  port: number,
  env: Record<string, string>,
  options: { useSystem: boolean; caCerts?: string },
): Promise<{ store: string; result: string }> {
  const code = `
    import { useSystemRootStore } from ${JSON.stringify(UPSTREAM)};
    const store = ${options.useSystem} ? useSystemRootStore() : "untouched";
    let result = "ok";
    try {
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: ${port} });
      const caCerts = ${
    options.caCerts ? `[Deno.readTextFileSync(${JSON.stringify(options.caCerts)})]` : "undefined"
  };
      const tls = await Deno.startTls(tcp, { hostname: "origin.test", caCerts });
      await tls.handshake();
      tls.close();
    } catch (e) {
      result = e.message;
    }
    console.log(JSON.stringify({ store, result }));
  `;
  const cleanEnv: Record<string, string> = { PATH: Deno.env.get("PATH") ?? "", ...env };
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    env: cleanEnv,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
    cwd: new URL("../..", import.meta.url).pathname,
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(text);
}

Deno.test("useSystemRootStore: origins signed by a CA in the system store verify; a broken store is skipped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-trust-" });
  const systemCa = await createCa({ hostname: "system-ca" });
  const leaf = await issueLeafCertificate(systemCa, await generateRsaKey(), "origin.test", {
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + DAY),
  });
  const caFile = `${dir}/system-bundle.pem`;
  await Deno.writeTextFile(caFile, systemCa.certPem);
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert: leaf.certPem,
    key: leaf.keyPem,
  });
  const serving = (async () => {
    for await (const c of listener) c.handshake().catch(() => {}).finally(() => c.close());
  })();
  const port = listener.addr.port;
  try {
    // Control: Deno's default store (bundled Mozilla roots) does not know the CA.
    const before = await probe(port, { SSL_CERT_FILE: caFile }, { useSystem: false });
    assert.match(before.result, /UnknownIssuer/);

    // Switched at start-up: the system store (here: SSL_CERT_FILE) is used.
    const after = await probe(port, { SSL_CERT_FILE: caFile }, { useSystem: true });
    assert.deepEqual(after, { store: "system,mozilla", result: "ok" });

    // A system store that cannot be loaded would fail every connection: not used.
    const broken = await probe(port, { SSL_CERT_FILE: `${dir}/missing.pem` }, {
      useSystem: true,
      caCerts: caFile,
    });
    assert.deepEqual(broken, { store: "mozilla", result: "ok" });

    // The user's own choice stands.
    const chosen = await probe(port, { DENO_TLS_CA_STORE: "mozilla", SSL_CERT_FILE: caFile }, {
      useSystem: true,
    });
    assert.equal(chosen.store, "mozilla");
    assert.match(chosen.result, /UnknownIssuer/);
  } finally {
    listener.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
});
