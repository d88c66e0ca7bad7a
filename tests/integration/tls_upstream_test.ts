/**
 * Verified upstream TLS (lib/tls/upstream.ts) against local TLS origins whose
 * certificates this test makes: a good one, an unknown root, a wrong name, an
 * expired one; always dialling the IP and verifying the name.
 */
import assert from "node:assert/strict";
import { createCa } from "../../lib/tls/ca.ts";
import { issueLeafCertificate, type LeafCertificate } from "../../lib/tls/leaf.ts";
import {
  connectUpstreamTls,
  loadUpstreamCaCerts,
  UpstreamTlsError,
} from "../../lib/tls/upstream.ts";
import { generateRsaKey, loadForge, randomSerial } from "../../lib/tls/_x509.ts";

const DAY = 86_400_000;
const originCa = await createCa({ hostname: "origin-ca" });
const strangerCa = await createCa({ hostname: "stranger-ca" });
const key = await generateRsaKey();
const now = Date.now();
const valid = { notBefore: new Date(now - DAY), notAfter: new Date(now + 30 * DAY) };

interface Origin {
  port: number;
  hostname: string;
  /** Handshake results the origin saw (error messages, or "ok"). */
  seen: string[];
  close(): Promise<void>;
}

/** A TLS origin on loopback that answers one line per connection. */
function startOrigin(leaf: LeafCertificate, hostname = "127.0.0.1"): Origin {
  const listener = Deno.listenTls({
    hostname,
    port: 0,
    cert: leaf.certPem,
    key: leaf.keyPem,
    alpnProtocols: ["http/1.1"],
  });
  const seen: string[] = [];
  const tasks: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      tasks.push((async () => {
        try {
          await conn.handshake();
          seen.push("ok");
          await conn.write(new TextEncoder().encode("hello over tls\n"));
        } catch (e) {
          seen.push(e instanceof Error ? e.message : String(e));
        } finally {
          conn.close();
        }
      })());
    }
  })();
  return {
    port: listener.addr.port,
    hostname,
    seen,
    async close() {
      listener.close();
      await loop.catch(() => {});
      await Promise.allSettled(tasks);
    },
  };
}

async function dial(origin: Origin): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: origin.hostname, port: origin.port });
}

async function readLine(conn: Deno.TlsConn): Promise<string> {
  const buf = new Uint8Array(100);
  const n = await conn.read(buf);
  return new TextDecoder().decode(buf.subarray(0, n ?? 0));
}

Deno.test("upstream: dial the checked IP, verify the certificate against the name", async () => {
  const origin = startOrigin(await issueLeafCertificate(originCa, key, "origin.test", valid));
  try {
    const tls = await connectUpstreamTls(await dial(origin), "origin.test", origin.port, {
      caCerts: [originCa.certPem],
    });
    const info = await tls.handshake();
    assert.equal(info.alpnProtocol, "http/1.1");
    assert.equal(await readLine(tls), "hello over tls\n");
    tls.close();
  } finally {
    await origin.close();
  }
});

Deno.test("upstream: an unknown root is refused with a plain reason", async () => {
  const origin = startOrigin(await issueLeafCertificate(strangerCa, key, "origin.test", valid));
  try {
    for (const caCerts of [undefined, [originCa.certPem]]) {
      const tcp = await dial(origin);
      const err = await connectUpstreamTls(tcp, "origin.test", origin.port, { caCerts }).then(
        () => assert.fail("connected"),
        (e) => e,
      );
      assert.ok(err instanceof UpstreamTlsError);
      assert.equal(err.failure, "unknown-issuer");
      assert.match(
        err.message,
        new RegExp(
          `^certificate of origin\\.test:${origin.port} has an unknown issuer .*--upstream-ca`,
        ),
      );
      assert.throws(
        () => tcp.close(),
        Deno.errors.BadResource,
        "the TCP conn was consumed and closed",
      );
    }
  } finally {
    await origin.close();
  }
});

Deno.test("upstream: a certificate for another name is refused", async () => {
  const origin = startOrigin(await issueLeafCertificate(originCa, key, "other.test", valid));
  try {
    const err = await connectUpstreamTls(await dial(origin), "origin.test", origin.port, {
      caCerts: [originCa.certPem],
    }).catch((e) => e);
    assert.ok(err instanceof UpstreamTlsError);
    assert.equal(err.failure, "certificate-wrong-name");
    assert.equal(
      err.message,
      `certificate of origin.test:${origin.port} is not valid for name origin.test: it is valid for other.test`,
    );
  } finally {
    await origin.close();
  }
  // The IP we dial is not a name the certificate must carry, nor one it may use instead.
  const byIp = startOrigin(await issueLeafCertificate(originCa, key, "127.0.0.1", valid));
  try {
    const err = await connectUpstreamTls(await dial(byIp), "origin.test", byIp.port, {
      caCerts: [originCa.certPem],
    }).catch((e) => e);
    assert.ok(err instanceof UpstreamTlsError);
    assert.equal(err.failure, "certificate-wrong-name");
    assert.match(err.message, /it is valid for 127\.0\.0\.1$/);
  } finally {
    await byIp.close();
  }
});

Deno.test("upstream: expired and not-yet-valid certificates are refused", async () => {
  const cases = [
    {
      validity: { notBefore: new Date(now - 30 * DAY), notAfter: new Date(now - DAY) },
      failure: "certificate-expired",
      message: /^certificate of origin\.test:\d+ has expired \(expired \d{4}-\d\d-\d\dT/,
    },
    {
      validity: { notBefore: new Date(now + DAY), notAfter: new Date(now + 30 * DAY) },
      failure: "certificate-not-yet-valid",
      message: /is not valid yet/,
    },
  ];
  for (const c of cases) {
    const origin = startOrigin(
      await issueLeafCertificate(originCa, key, "origin.test", c.validity),
    );
    try {
      const err = await connectUpstreamTls(await dial(origin), "origin.test", origin.port, {
        caCerts: [originCa.certPem],
      }).catch((e) => e);
      assert.ok(err instanceof UpstreamTlsError, String(err));
      assert.equal(err.failure, c.failure);
      assert.match(err.message, c.message);
    } finally {
      await origin.close();
    }
  }
});

Deno.test("upstream: IP literal hosts verify against iPAddress SANs (IPv4 and IPv6)", async () => {
  const v4 = startOrigin(await issueLeafCertificate(originCa, key, "127.0.0.1", valid));
  try {
    const tls = await connectUpstreamTls(await dial(v4), "127.0.0.1", v4.port, {
      caCerts: [originCa.certPem],
    });
    assert.equal(await readLine(tls), "hello over tls\n");
    tls.close();
  } finally {
    await v4.close();
  }
  let v6: Origin;
  try {
    v6 = startOrigin(await issueLeafCertificate(originCa, key, "[::1]", valid), "::1");
  } catch {
    return; // no IPv6 loopback on this machine
  }
  try {
    const tls = await connectUpstreamTls(await dial(v6), "[::1]", v6.port, {
      caCerts: [originCa.certPem],
    });
    assert.equal(await readLine(tls), "hello over tls\n");
    tls.close();
  } finally {
    await v6.close();
  }
});

Deno.test("upstream: an origin that never answers the handshake times out", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) held.push(c);
  })();
  try {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const err = await connectUpstreamTls(tcp, "silent.test", listener.addr.port, {
      handshakeTimeoutMs: 200,
    }).catch((e) => e);
    assert.ok(err instanceof UpstreamTlsError);
    assert.equal(err.failure, "timeout");
    assert.equal(err.message, `TLS handshake with silent.test:${listener.addr.port} timed out`);
    // (Deno 2.9 keeps the TCP socket of a TlsConn closed mid-handshake open
    // until the peer closes it; the origin's close below releases it.)
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const c of held) c.close();
  }
});

Deno.test("loadUpstreamCaCerts: PEM bundles, clear errors for missing or empty files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-upstream-ca-" });
  try {
    const bundle = `${dir}/bundle.pem`;
    await Deno.writeTextFile(bundle, `# comment\n${originCa.certPem}\r\n${strangerCa.certPem}`);
    const certs = await loadUpstreamCaCerts([bundle]);
    assert.equal(certs.length, 2);
    assert.equal(certs[0], originCa.certPem);
    await assert.rejects(
      () => loadUpstreamCaCerts([`${dir}/missing.pem`]),
      /^UpstreamCaError: Cannot read --upstream-ca ".*missing\.pem": /,
    );
    await Deno.writeTextFile(`${dir}/empty.pem`, "not a certificate");
    await assert.rejects(
      () => loadUpstreamCaCerts([`${dir}/empty.pem`]),
      /no PEM CERTIFICATE block found/,
    );
    // A bundle added with --upstream-ca makes its origins verifiable.
    const origin = startOrigin(await issueLeafCertificate(strangerCa, key, "origin.test", valid));
    try {
      const tls = await connectUpstreamTls(await dial(origin), "origin.test", origin.port, {
        caCerts: certs,
      });
      assert.equal(await readLine(tls), "hello over tls\n");
      tls.close();
    } finally {
      await origin.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("upstream: a CA certificate as the server's and a SHA-1 signature are refused with a plain reason", async () => {
  // `openssl req -x509` makes self-signed certificates with CA:TRUE by default.
  const caAsLeaf: LeafCertificate = {
    host: "origin.test",
    certPem: strangerCa.certPem,
    keyPem: strangerCa.key.privateKeyPem,
    notBefore: strangerCa.notBefore,
    notAfter: strangerCa.notAfter,
  };
  // A leaf for origin.test signed by the trusted CA, but with SHA-1.
  const { pki, md } = await loadForge();
  const cert = pki.createCertificate();
  cert.publicKey = key.publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = valid.notBefore;
  cert.validity.notAfter = valid.notAfter;
  cert.setSubject([{ name: "commonName", value: "origin.test" }]);
  cert.setIssuer(originCa.cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "extKeyUsage", serverAuth: true },
    { name: "subjectAltName", altNames: [{ type: 2, value: "origin.test" }] },
  ]);
  cert.sign(pki.privateKeyFromPem(originCa.key.privateKeyPem), md.sha1.create());
  const sha1: LeafCertificate = {
    ...caAsLeaf,
    certPem: pki.certificateToPem(cert),
    keyPem: key.privateKeyPem,
  };
  const cases = [
    {
      leaf: caAsLeaf,
      message: /^certificate of origin\.test:\d+ is a CA certificate, not a server's/,
    },
    {
      leaf: sha1,
      message:
        /^certificate of origin\.test:\d+ is signed with an algorithm that is no longer accepted \(such as SHA-1\)$/,
    },
  ];
  for (const c of cases) {
    const origin = startOrigin(c.leaf);
    try {
      const err = await connectUpstreamTls(await dial(origin), "origin.test", origin.port, {
        caCerts: [originCa.certPem, strangerCa.certPem],
      }).catch((e) => e);
      assert.ok(err instanceof UpstreamTlsError, String(err));
      assert.equal(err.failure, "invalid-certificate");
      assert.match(err.message, c.message);
    } finally {
      await origin.close();
    }
  }
});
