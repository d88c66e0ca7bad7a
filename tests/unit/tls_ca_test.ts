import assert from "node:assert/strict";
// @ts-types="@types/node-forge"
import forge from "node-forge";
import {
  CaError,
  type CaFiles,
  caFingerprint,
  createCa,
  ensureCa,
  loadCa,
  regenerateCa,
  saveCa,
} from "../../lib/tls/ca.ts";

const DAY = 86_400_000;

async function withDir(fn: (dir: string, files: CaFiles) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "nm-ca-" });
  const dir = `${root}/data`;
  try {
    await fn(dir, { caCert: `${dir}/netmonitor-ca.pem`, caKey: `${dir}/netmonitor-ca-key.pem` });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("createCa: a CA certificate with the fields clients check", async () => {
  const now = new Date("2026-03-01T12:00:00Z");
  const ca = await createCa({ hostname: "devbox", now });
  const cert = ca.cert;
  assert.equal(ca.commonName, "netmonitor CA (devbox 2026-03-01)");
  assert.equal(cert.subject.getField("CN").value, ca.commonName);
  assert.equal(cert.issuer.hash, cert.subject.hash, "self-issued");
  assert.ok(cert.verify(cert), "self-signed signature verifies");
  assert.equal(
    (cert as unknown as { signatureOid: string }).signatureOid,
    forge.pki.oids.sha256WithRSAEncryption,
  );
  const bc = cert.getExtension("basicConstraints") as { cA: boolean; critical: boolean };
  assert.equal(bc.cA, true);
  assert.equal(bc.critical, true);
  const ku = cert.getExtension("keyUsage") as Record<string, boolean>;
  assert.equal(ku.critical, true);
  assert.equal(ku.keyCertSign, true);
  assert.equal(ku.cRLSign, true);
  assert.ok(!ku.digitalSignature);
  const ski = cert.getExtension("subjectKeyIdentifier") as { subjectKeyIdentifier: string };
  assert.match(ski.subjectKeyIdentifier, /^[0-9a-f]{40}$/);
  assert.equal(forge.util.bytesToHex(ca.subjectKeyId), ski.subjectKeyIdentifier);
  assert.equal((cert.publicKey as forge.pki.rsa.PublicKey).n.bitLength(), 2048);
  // Valid from a day back (clock skew in containers) for about ten years.
  assert.equal(ca.notBefore.getTime(), now.getTime() - DAY);
  assert.equal(ca.notAfter.getTime(), now.getTime() + 3650 * DAY);
  // Serial: positive, minimally encoded (first byte 0x01-0x7f), random.
  const other = await createCa({ hostname: "devbox", now });
  assert.match(cert.serialNumber, /^[0-7][0-9a-f]{31}$/);
  assert.notEqual(cert.serialNumber.slice(0, 2), "00");
  assert.notEqual(cert.serialNumber, other.cert.serialNumber);
  // Two CAs made the same day still have different subjects (issuer lookup by name).
  assert.notEqual(cert.subject.hash, other.cert.subject.hash);
  assert.match(await caFingerprint(ca), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
});

Deno.test("ensureCa: creates the CA once, key 0600, cert 0644, data dir 0700", async () => {
  await withDir(async (dir, files) => {
    const first = await ensureCa(files);
    assert.equal(first.created, true);
    assert.equal((await Deno.stat(files.caKey)).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(files.caCert)).mode! & 0o777, 0o644);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    // The lock that keeps two processes from creating two CAs stays (as the rules' does).
    assert.deepEqual(
      names,
      ["netmonitor-ca-key.pem", "netmonitor-ca-key.pem.lock", "netmonitor-ca.pem"],
      "no temp files left",
    );
    assert.match(await Deno.readTextFile(files.caKey), /^-----BEGIN PRIVATE KEY-----\n/);

    const second = await ensureCa(files);
    assert.equal(second.created, false);
    assert.equal(second.ca.certPem, first.ca.certPem);
    assert.equal(second.ca.key.privateKeyPem, first.ca.key.privateKeyPem);
    // The reloaded key signs what the certificate's public key verifies.
    const data = new TextEncoder().encode("x");
    const sig = await crypto.subtle.sign("RSASSA-PKCS1-v1_5", second.ca.key.privateKey, data);
    const pub = second.ca.cert.publicKey as forge.pki.rsa.PublicKey;
    const md = forge.md.sha256.create().update("x");
    assert.ok(pub.verify(md.digest().bytes(), String.fromCharCode(...new Uint8Array(sig))));
  });
});

Deno.test("saveCa: the key file is 0600 even under a permissive umask", async () => {
  await withDir(async (_dir, files) => {
    const old = Deno.umask(0o000);
    try {
      await saveCa(await createCa(), files);
    } finally {
      Deno.umask(old);
    }
    assert.equal((await Deno.stat(files.caKey)).mode! & 0o777, 0o600);
  });
});

Deno.test("regenerateCa: a new CA replaces the old one", async () => {
  await withDir(async (_dir, files) => {
    const { ca: old } = await ensureCa(files);
    const fresh = await regenerateCa(files);
    assert.notEqual(fresh.certPem, old.certPem);
    const loaded = await loadCa(files);
    assert.equal(loaded.certPem, fresh.certPem);
    assert.equal((await Deno.stat(files.caKey)).mode! & 0o777, 0o600);
  });
});

Deno.test("loadCa: a corrupt certificate file gives a clear error", async () => {
  await withDir(async (_dir, files) => {
    await ensureCa(files);
    await Deno.writeTextFile(files.caCert, "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    await assert.rejects(
      () => loadCa(files),
      (e: Error) => {
        assert.ok(e instanceof CaError);
        assert.match(e.message, /^Cannot load CA certificate ".*netmonitor-ca\.pem": /);
        assert.match(e.message, /netmonitor ca regenerate/);
        return true;
      },
    );
    await assert.rejects(() => ensureCa(files), CaError);
  });
});

Deno.test("loadCa: a corrupt key, a key of another CA, a missing file", async () => {
  await withDir(async (_dir, files) => {
    await ensureCa(files);
    const goodKey = await Deno.readTextFile(files.caKey);
    await Deno.writeTextFile(files.caKey, "garbage");
    await assert.rejects(
      () => loadCa(files),
      /Cannot load CA private key ".*": no PEM PRIVATE KEY block/,
    );

    await Deno.writeTextFile(files.caKey, (await createCa()).key.privateKeyPem);
    await assert.rejects(() => loadCa(files), /key ".*" does not match certificate/);

    await Deno.writeTextFile(files.caKey, goodKey);
    await loadCa(files);
    await Deno.remove(files.caCert);
    await assert.rejects(
      () => ensureCa(files),
      (e: Error) =>
        e instanceof CaError && /exists but ".*netmonitor-ca\.pem" is missing/.test(e.message),
    );
    await assert.rejects(() => loadCa(files), /Cannot read CA certificate/);
  });
});

Deno.test("loadCa: an expired CA or a leaf certificate is refused", async () => {
  await withDir(async (_dir, files) => {
    const old = await createCa({ now: new Date(Date.now() - 30 * DAY), validityDays: 10 });
    await saveCa(old, files);
    await assert.rejects(() => loadCa(files), /expired on .*netmonitor ca regenerate/);
  });
  await withDir(async (_dir, files) => {
    // A certificate without CA:true, signed with the right key, is not a CA.
    const ca = await createCa();
    const cert = forge.pki.certificateFromPem(ca.certPem);
    cert.setExtensions([{ name: "basicConstraints", cA: false }]);
    const pem = forge.pem.decode(ca.key.privateKeyPem)[0];
    const key = forge.pki.privateKeyFromAsn1(forge.asn1.fromDer(pem.body));
    cert.sign(key as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
    await saveCa({ ...ca, certPem: forge.pki.certificateToPem(cert) }, files);
    await assert.rejects(() => loadCa(files), /not a CA certificate/);
  });
});

Deno.test("ensureCa: two starting at once make one CA, and both use it", async () => {
  await withDir(async (_dir, files) => {
    const [a, b] = await Promise.all([ensureCa(files), ensureCa(files)]);
    assert.deepEqual([a.created, b.created].sort(), [false, true]);
    assert.equal(a.ca.certPem, b.ca.certPem);
    const loaded = await loadCa(files);
    assert.equal(loaded.certPem, a.ca.certPem);
  });
});
