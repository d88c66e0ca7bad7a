import assert from "node:assert/strict";
// @ts-types="@types/node-forge"
import forge from "node-forge";
import { HostError } from "../../lib/net/host.ts";
import { type CertificateAuthority, createCa } from "../../lib/tls/ca.ts";
import { LeafIssuer } from "../../lib/tls/leaf.ts";
import { generateRsaKey, ipAddressBytes } from "../../lib/tls/_x509.ts";

const DAY = 86_400_000;
// One CA and one leaf key for the file: key generation is the slow part.
const ca = await createCa({ hostname: "test" });
const leafKey = await generateRsaKey();

type AltName = { type: number; value: string; ip?: string };
function altNames(cert: forge.pki.Certificate): AltName[] {
  return (cert.getExtension("subjectAltName") as { altNames: AltName[] }).altNames;
}

async function issuer(
  options: { ca?: CertificateAuthority; now?: () => Date; maxEntries?: number } = {},
) {
  return await LeafIssuer.create(options.ca ?? ca, { key: leafKey, ...options });
}

Deno.test("leaf for a DNS name: SAN, CN, usages, key ids, SHA-256, signed by the CA", async () => {
  const leaves = await issuer();
  const leaf = await leaves.get("API.Example.test.");
  assert.equal(leaf.host, "api.example.test");
  const cert = forge.pki.certificateFromPem(leaf.certPem);
  assert.ok(ca.cert.verify(cert), "signature verifies with the CA's key");
  assert.equal(
    (cert as unknown as { signatureOid: string }).signatureOid,
    forge.pki.oids.sha256WithRSAEncryption,
  );
  assert.deepEqual(altNames(cert).map((a) => [a.type, a.value]), [[2, "api.example.test"]]);
  assert.equal(cert.subject.getField("CN").value, "api.example.test");
  assert.equal(cert.issuer.hash, ca.cert.subject.hash);
  const eku = cert.getExtension("extKeyUsage") as { serverAuth: boolean };
  assert.equal(eku.serverAuth, true);
  const ku = cert.getExtension("keyUsage") as Record<string, boolean>;
  assert.ok(ku.digitalSignature && ku.keyEncipherment && !ku.keyCertSign);
  const bc = cert.getExtension("basicConstraints") as { cA: boolean };
  assert.equal(bc.cA, false);
  // authorityKeyIdentifier = the CA's subjectKeyIdentifier (raw extension value).
  const aki = cert.getExtension("authorityKeyIdentifier") as { value: string };
  const akiAsn1 = forge.asn1.fromDer(aki.value);
  const keyId = (akiAsn1.value as forge.asn1.Asn1[])[0].value as string;
  assert.equal(forge.util.bytesToHex(keyId), forge.util.bytesToHex(ca.subjectKeyId));
});

Deno.test("leaf validity: a day back, under 398 days, inside the CA's", async () => {
  const now = new Date("2026-06-01T00:00:00Z");
  const young = await createCa({ now: new Date("2026-05-01T00:00:00Z") });
  const leaves = await issuer({ ca: young, now: () => now });
  const leaf = await leaves.get("a.test");
  const cert = forge.pki.certificateFromPem(leaf.certPem);
  assert.equal(cert.validity.notBefore.getTime(), now.getTime() - DAY);
  const days = (cert.validity.notAfter.getTime() - cert.validity.notBefore.getTime()) / DAY;
  assert.ok(days < 398, `validity ${days} days`);
  assert.ok(days >= 390);
  assert.ok(cert.validity.notBefore >= young.notBefore);
  assert.ok(cert.validity.notAfter <= young.notAfter);

  // A CA that ends in 30 days bounds the leaf's end; one valid only since 12 h
  // (its own notBefore is a day before its creation) bounds the leaf's start.
  const ending = await createCa({ now: new Date(now.getTime() - 3620 * DAY) });
  const clamped = await (await issuer({ ca: ending, now: () => now })).get("a.test");
  assert.equal(clamped.notAfter.getTime(), ending.notAfter.getTime());
  const fresh = await createCa({ now: new Date(now.getTime() + 12 * 3_600_000) });
  const late = await (await issuer({ ca: fresh, now: () => now })).get("a.test");
  assert.equal(late.notBefore.getTime(), fresh.notBefore.getTime());
});

Deno.test("leaf for IP literals: iPAddress SAN with 4 or 16 bytes, never a dNSName", async () => {
  const leaves = await issuer();
  const cases: [string, string, string][] = [
    ["10.1.2.3", "10.1.2.3", "0a010203"],
    ["0x7f.1", "127.0.0.1", "7f000001"], // any IPv4 spelling, normalised
    ["::1", "[::1]", "00000000000000000000000000000001"],
    ["[2001:DB8::FF00:42:8329]", "[2001:db8::ff00:42:8329]", "20010db8000000000000ff0000428329"],
    ["[64:ff9b::192.0.2.1]", "[64:ff9b::c000:201]", "0064ff9b0000000000000000c0000201"],
    ["[::ffff:192.0.2.1]", "192.0.2.1", "c0000201"], // IPv4-mapped: normalised to IPv4
  ];
  for (const [input, host, hex] of cases) {
    const leaf = await leaves.get(input);
    assert.equal(leaf.host, host);
    const sans = altNames(forge.pki.certificateFromPem(leaf.certPem));
    assert.equal(sans.length, 1, input);
    assert.equal(sans[0].type, 7, `${input}: iPAddress`);
    assert.equal(forge.util.bytesToHex(sans[0].value), hex, input);
  }
});

Deno.test("ipAddressBytes: only canonical IP literals", () => {
  assert.deepEqual(ipAddressBytes("1.2.3.4"), new Uint8Array([1, 2, 3, 4]));
  assert.equal(ipAddressBytes("256.1.1.1"), undefined);
  assert.equal(ipAddressBytes("example.test"), undefined);
  assert.deepEqual(ipAddressBytes("[::]"), new Uint8Array(16));
  assert.deepEqual(ipAddressBytes("[1::]")!.slice(0, 2), new Uint8Array([0, 1]));
  const full = ipAddressBytes("[1:2:3:4:5:6:7:8]")!;
  assert.deepEqual([...full], [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
  assert.equal(ipAddressBytes("[1:2:3:4:5:6:7:8:9]"), undefined);
  assert.equal(ipAddressBytes("[1::2::3]"), undefined);
  assert.equal(ipAddressBytes("[1:2:3:4:5:6:7::8]"), undefined);
  assert.equal(ipAddressBytes("[12345::]"), undefined);
  assert.equal(ipAddressBytes("::1"), undefined, "brackets required, as normaliseHost writes it");
});

Deno.test("leaves share one key; serials are random and positive", async () => {
  const leaves = await issuer();
  const a = await leaves.get("a.test");
  const b = await leaves.get("b.test");
  assert.equal(a.keyPem, b.keyPem);
  assert.equal(a.keyPem, leafKey.privateKeyPem);
  const ca1 = forge.pki.certificateFromPem(a.certPem);
  const cb = forge.pki.certificateFromPem(b.certPem);
  const na = (ca1.publicKey as forge.pki.rsa.PublicKey).n;
  assert.equal(na.compareTo((cb.publicKey as forge.pki.rsa.PublicKey).n), 0);
  assert.notEqual(
    na.compareTo((ca.cert.publicKey as forge.pki.rsa.PublicKey).n),
    0,
    "not the CA key",
  );
  const serials = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const s = forge.pki.certificateFromPem((await leaves.get(`s${i}.test`)).certPem).serialNumber;
    assert.match(s, /^(0[1-9a-f]|[1-7][0-9a-f])[0-9a-f]{30}$/, "16 bytes, positive, minimal");
    serials.add(s);
  }
  assert.equal(serials.size, 20);
});

Deno.test("leaf cache: one generation per host, shared by concurrent requests, bounded LRU", async () => {
  const leaves = await issuer({ maxEntries: 2 });
  const p1 = leaves.get("a.test");
  const p2 = leaves.get("A.TEST");
  assert.equal(p1, p2, "concurrent requests share one in-flight generation");
  const a = await p1;
  assert.equal(await leaves.get("a.test"), a, "cached");
  await leaves.get("b.test");
  await leaves.get("a.test"); // a is now most recent
  await leaves.get("c.test"); // evicts b
  assert.equal(leaves.size, 2);
  assert.equal(await leaves.get("a.test"), a);
  const b2 = await leaves.get("b.test");
  assert.equal(b2.host, "b.test");
  assert.notEqual(await leaves.get("c.test"), undefined);
});

Deno.test("leaf cache: a leaf close to its end is reissued", async () => {
  let now = new Date("2026-01-10T00:00:00Z");
  const leaves = await issuer({ now: () => now });
  const first = await leaves.get("a.test");
  now = new Date(first.notAfter.getTime() - 2 * DAY);
  const second = await leaves.get("a.test");
  assert.notEqual(second, first);
  assert.ok(second.notAfter > first.notAfter);
});

Deno.test("leaf: hosts that are not hosts are refused; long names go in the SAN only", async () => {
  const leaves = await issuer();
  assert.throws(() => leaves.get("exa mple.test"), HostError);
  assert.throws(() => leaves.get(""), HostError);
  const long = `${"a".repeat(60)}.${"b".repeat(60)}.test`;
  const cert = forge.pki.certificateFromPem((await leaves.get(long)).certPem);
  assert.equal(cert.subject.getField("CN"), null);
  assert.equal(altNames(cert)[0].value, long);
});
