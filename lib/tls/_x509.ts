/**
 * Glue between WebCrypto (fast, native RSA) and node-forge (certificate
 * structure). forge builds the TBSCertificate; WebCrypto generates keys and
 * signs, because forge's pure-JS RSA costs ~20 ms per signature and seconds
 * per key, which would dominate the first request to every new host.
 *
 * @module
 */

// @ts-types="@types/node-forge"
import type forge from "node-forge";

/** The node-forge module. */
export type Forge = typeof forge;

let loaded: Promise<Forge> | undefined;

/**
 * Loads node-forge on first use: ~13 MiB of heap that a proxy relaying
 * tunnels without a CA never needs. (A static specifier, so `deno compile`
 * still bundles it.)
 */
export function loadForge(): Promise<Forge> {
  loaded ??= import("node-forge").then((m) => (m as unknown as { default: Forge }).default);
  return loaded;
}

/** RSA modulus size for the CA and the shared leaf key. */
export const RSA_BITS = 2048;

const RSA_ALGORITHM: RsaHashedKeyGenParams = {
  name: "RSASSA-PKCS1-v1_5",
  modulusLength: RSA_BITS,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: "SHA-256",
};

/** An RSA key pair usable both by WebCrypto (signing) and forge (certificate fields). */
export interface RsaKey {
  /** WebCrypto private key, RSASSA-PKCS1-v1_5 with SHA-256, for signing. */
  privateKey: CryptoKey;
  /** forge public key, for `cert.publicKey`. */
  publicKey: forge.pki.rsa.PublicKey;
  /** PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). */
  privateKeyPem: string;
}

/** Generates an RSA key with WebCrypto (native, off the event loop). */
export async function generateRsaKey(): Promise<RsaKey> {
  const pair = await crypto.subtle.generateKey(RSA_ALGORITHM, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return await rsaKeyFromPkcs8(pkcs8);
}

/**
 * Imports a PEM private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
 * @throws {Error} when the PEM is not an RSA private key.
 */
export async function rsaKeyFromPem(pem: string): Promise<RsaKey> {
  const forge = await loadForge();
  const { pki, asn1 } = forge;
  let messages: forge.pem.ObjectPEM[];
  try {
    messages = forge.pem.decode(pem);
  } catch {
    messages = [];
  }
  const block = messages.find((m) => m.type === "PRIVATE KEY" || m.type === "RSA PRIVATE KEY");
  if (!block) throw new Error("no PEM PRIVATE KEY block");
  if (block.procType?.type === "ENCRYPTED") throw new Error("encrypted keys are not supported");
  let der = block.body;
  if (block.type === "RSA PRIVATE KEY") {
    const key = pki.privateKeyFromAsn1(asn1.fromDer(der));
    der = asn1.toDer(pki.wrapRsaPrivateKey(pki.privateKeyToAsn1(key))).getBytes();
  }
  return await rsaKeyFromPkcs8(binaryToBytes(der));
}

async function rsaKeyFromPkcs8(pkcs8: Uint8Array): Promise<RsaKey> {
  const forge = await loadForge();
  const pki = forge.pki;
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8 as Uint8Array<ArrayBuffer>,
    RSA_ALGORITHM,
    true,
    ["sign"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  if (!jwk.n || !jwk.e) throw new Error("not an RSA key");
  const publicKey = pki.setRsaPublicKey(
    new forge.jsbn.BigInteger(bytesToHex(base64UrlToBytes(jwk.n)), 16),
    new forge.jsbn.BigInteger(bytesToHex(base64UrlToBytes(jwk.e)), 16),
  );
  const privateKeyPem = forge.pem.encode({ type: "PRIVATE KEY", body: bytesToBinary(pkcs8) });
  return { privateKey, publicKey, privateKeyPem: privateKeyPem.replaceAll("\r\n", "\n") };
}

/**
 * Signs `cert` with SHA-256/RSA using a WebCrypto key; equivalent to forge's
 * `cert.sign(key, sha256)` but native. Returns the certificate's PEM.
 */
export async function signCertificate(
  cert: forge.pki.Certificate,
  key: CryptoKey,
): Promise<string> {
  const { pki, asn1 } = await loadForge();
  // Field names forge's own cert.sign() sets; certificateToAsn1 reads them.
  const c = cert as forge.pki.Certificate & {
    signatureOid: string;
    siginfo: { algorithmOid: string };
    tbsCertificate: forge.asn1.Asn1;
    signature: string;
  };
  c.signatureOid = c.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption;
  // getTBSCertificate exists in forge but is missing from @types/node-forge.
  const getTbs = (pki as unknown as {
    getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1;
  }).getTBSCertificate;
  c.tbsCertificate = getTbs(cert);
  const tbs = binaryToBytes(asn1.toDer(c.tbsCertificate).getBytes());
  const signature = await crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, tbs);
  c.signature = bytesToBinary(new Uint8Array(signature));
  return pki.certificateToPem(cert).replaceAll("\r\n", "\n");
}

/**
 * A random positive serial number, 16 bytes, as forge's hex string. The first
 * byte is 0x01-0x7f so the DER INTEGER is positive and minimally encoded.
 */
export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] % 0x7f) + 1;
  return bytesToHex(bytes);
}

/**
 * The iPAddress SAN bytes for an IP literal as {@linkcode normaliseHost}
 * spells it (`1.2.3.4` or `[::1]`, hex groups only, no embedded dotted
 * quad), or undefined when `host` is not one. Written here because forge's
 * IPv6 parser does not validate its input.
 */
export function ipAddressBytes(host: string): Uint8Array | undefined {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    return parts.every((p) => p <= 255) ? new Uint8Array(parts) : undefined;
  }
  const v6 = /^\[([0-9a-f:]+)\]$/i.exec(host);
  if (!v6) return undefined;
  const halves = v6[1].split("::");
  if (halves.length > 2) return undefined;
  const groups = halves.map((h) => (h === "" ? [] : h.split(":")));
  if (groups.flat().some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  const [head, rest = []] = groups;
  const fill = 8 - head.length - rest.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const all = [...head, ...Array(halves.length === 2 ? fill : 0).fill("0"), ...rest];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  return out;
}

/** forge's "binary string" (one char per byte) to bytes. */
export function binaryToBytes(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Bytes to forge's "binary string". */
export function bytesToBinary(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return s;
}

function bytesToHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64UrlToBytes(s: string): Uint8Array {
  const b64 = s.replaceAll("-", "+").replaceAll("_", "/");
  return binaryToBytes(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
}
