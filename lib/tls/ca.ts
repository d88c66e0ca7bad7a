/**
 * netmonitor's local certificate authority: created on the first `run`, kept
 * in the data dir (`netmonitor-ca.pem`, `netmonitor-ca-key.pem`), used to sign
 * the leaf certificates of intercepted hosts.
 *
 * The private key is written with mode 0600 from the moment the file exists
 * (temporary file created 0600, then renamed over the target), and the data
 * dir is created 0700.
 *
 * @module
 */

import { withFileLock } from "../file_lock.ts";
// @ts-types="@types/node-forge"
import type forge from "node-forge";
import {
  type Forge,
  generateRsaKey,
  loadForge,
  randomSerial,
  type RsaKey,
  rsaKeyFromPem,
  signCertificate,
} from "./_x509.ts";

const DAY_MS = 86_400_000;

/** Where the CA lives; the same field names as `dataPaths()` in lib/paths.ts. */
export interface CaFiles {
  /** The certificate, PEM (`<data dir>/netmonitor-ca.pem`); this is what clients trust. */
  caCert: string;
  /** The private key, PKCS#8 PEM, mode 0600 (`<data dir>/netmonitor-ca-key.pem`). */
  caKey: string;
}

/** The CA cannot be created, read or used; the message says which file and what to do. */
export class CaError extends Error {
  override name = "CaError";
  /** The CLI shows the message without a stack trace. */
  readonly userFacing = true;
}

/** A loaded or freshly created CA. */
export interface CertificateAuthority {
  /** The certificate as forge parsed it. */
  cert: forge.pki.Certificate;
  /** The certificate, PEM, `\n` line ends. */
  certPem: string;
  /** The CA key (WebCrypto, for signing leaf certificates). */
  key: RsaKey;
  /** The subject key identifier (binary string), the leaves' authorityKeyIdentifier. */
  subjectKeyId: string;
  /** The subject common name, e.g. `netmonitor CA (devbox 2026-01-31)`. */
  commonName: string;
  notBefore: Date;
  notAfter: Date;
}

/** Options for {@linkcode createCa}. */
export interface CreateCaOptions {
  /** Machine name in the CA's name. Default: `Deno.hostname()`, or `localhost`. */
  hostname?: string;
  /** Creation time. Default: now. */
  now?: Date;
  /** Validity in days. Default: 3650 (10 years). */
  validityDays?: number;
}

/** Creates a new CA in memory (RSA 2048, SHA-256, 10 years). Save it with {@linkcode saveCa}. */
export async function createCa(options: CreateCaOptions = {}): Promise<CertificateAuthority> {
  const now = options.now ?? new Date();
  const f = await loadForge();
  const pki = f.pki;
  const key = await generateRsaKey();
  const commonName = `netmonitor CA (${options.hostname ?? machineName()} ${
    now.toISOString().slice(0, 10)
  })`;
  const cert = pki.createCertificate();
  cert.publicKey = key.publicKey;
  cert.serialNumber = randomSerial();
  // One day back so a container whose clock lags the host's still accepts it.
  cert.validity.notBefore = new Date(now.getTime() - DAY_MS);
  cert.validity.notAfter = new Date(now.getTime() + (options.validityDays ?? 3650) * DAY_MS);
  // The random unit keeps two CAs made on the same day distinguishable: with
  // equal names, a client trusting both may pick the wrong issuer.
  const name = [
    { name: "commonName", value: commonName },
    { name: "organizationName", value: "netmonitor" },
    { name: "organizationalUnitName", value: `ca ${randomSerial().slice(0, 12)}` },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  const certPem = await signCertificate(cert, key.privateKey);
  return fromParts(f, pki.certificateFromPem(certPem), certPem, key);
}

/**
 * Writes the CA to `files`: the key first (0600), then the certificate
 * (0644), each atomically. Creates the parent directory with mode 0700 when
 * it does not exist (an existing directory's mode is left alone).
 */
export async function saveCa(ca: CertificateAuthority, files: CaFiles): Promise<void> {
  for (const path of new Set([dirname(files.caKey), dirname(files.caCert)])) {
    await Deno.mkdir(path, { recursive: true, mode: 0o700 });
  }
  await writeFileAtomic(files.caKey, ca.key.privateKeyPem, 0o600);
  await writeFileAtomic(files.caCert, ca.certPem, 0o644);
}

/**
 * Reads and checks the CA: both files parse, the key matches the certificate,
 * it is a CA, and it is valid now.
 *
 * @throws {CaError} naming the file and the fix (`netmonitor ca regenerate`).
 *   `Deno.errors.NotFound` passes through as the cause when a file is missing.
 */
export async function loadCa(
  files: CaFiles,
  options: { now?: Date } = {},
): Promise<CertificateAuthority> {
  const fix = `run "netmonitor ca regenerate" to make a new CA`;
  const certPem = await readText(files.caCert, "certificate", fix);
  const keyPem = await readText(files.caKey, "private key", fix);
  const f = await loadForge();
  let cert: forge.pki.Certificate;
  try {
    cert = f.pki.certificateFromPem(certPem);
  } catch (e) {
    throw new CaError(`Cannot load CA certificate "${files.caCert}": ${message(e)}; ${fix}`);
  }
  let key: RsaKey;
  try {
    key = await rsaKeyFromPem(keyPem);
  } catch (e) {
    throw new CaError(`Cannot load CA private key "${files.caKey}": ${message(e)}; ${fix}`);
  }
  const certKey = cert.publicKey as forge.pki.rsa.PublicKey;
  if (!certKey.n || certKey.n.compareTo(key.publicKey.n) !== 0) {
    throw new CaError(
      `Cannot load CA: key "${files.caKey}" does not match certificate "${files.caCert}"; ${fix}`,
    );
  }
  const bc = cert.getExtension("basicConstraints") as { cA?: boolean } | undefined;
  if (!bc?.cA) {
    throw new CaError(`Cannot load CA certificate "${files.caCert}": not a CA certificate; ${fix}`);
  }
  const ca = fromParts(f, cert, certPem.replaceAll("\r\n", "\n"), key);
  const now = options.now ?? new Date();
  if (now > ca.notAfter) {
    throw new CaError(
      `CA certificate "${files.caCert}" expired on ${ca.notAfter.toISOString()}; ${fix}`,
    );
  }
  if (now < ca.notBefore) {
    throw new CaError(
      `CA certificate "${files.caCert}" is not valid before ${ca.notBefore.toISOString()} ` +
        `(is the clock right?)`,
    );
  }
  return ca;
}

/**
 * Loads the CA, or creates and saves one when neither file exists (first run).
 * @throws {CaError} when only one of the two files exists, or on a bad CA.
 */
export async function ensureCa(
  files: CaFiles,
  options: CreateCaOptions = {},
): Promise<{ ca: CertificateAuthority; created: boolean }> {
  let [hasCert, hasKey] = await Promise.all([exists(files.caCert), exists(files.caKey)]);
  if (!hasCert && !hasKey) {
    // Two processes starting at once must not each write a CA: the key of
    // one could end up next to the certificate of the other.
    await Deno.mkdir(dirname(files.caKey), { recursive: true, mode: 0o700 });
    const created = await withFileLock(`${files.caKey}.lock`, async () => {
      [hasCert, hasKey] = await Promise.all([exists(files.caCert), exists(files.caKey)]);
      if (hasCert || hasKey) return undefined;
      const ca = await createCa(options);
      await saveCa(ca, files);
      return ca;
    });
    if (created) return { ca: created, created: true };
  }
  if (!hasCert || !hasKey) {
    const [present, missing] = hasCert ? [files.caCert, files.caKey] : [files.caKey, files.caCert];
    throw new CaError(
      `Cannot load CA: "${present}" exists but "${missing}" is missing; ` +
        `run "netmonitor ca regenerate" to make a new CA`,
    );
  }
  return { ca: await loadCa(files, { now: options.now }), created: false };
}

/** Replaces the CA with a new one. Clients that trusted the old one must trust the new one. */
export async function regenerateCa(
  files: CaFiles,
  options: CreateCaOptions = {},
): Promise<CertificateAuthority> {
  const ca = await createCa(options);
  await Deno.mkdir(dirname(files.caKey), { recursive: true, mode: 0o700 });
  await withFileLock(`${files.caKey}.lock`, () => saveCa(ca, files));
  return ca;
}

/** SHA-256 fingerprint of the CA certificate, `AB:CD:...`, as browsers and openssl show it. */
export async function caFingerprint(ca: CertificateAuthority): Promise<string> {
  const f = await loadForge();
  const der = f.asn1.toDer(f.pki.certificateToAsn1(ca.cert)).getBytes();
  const bytes = Uint8Array.from(der, (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
}

function fromParts(
  forge: Forge,
  cert: forge.pki.Certificate,
  certPem: string,
  key: RsaKey,
): CertificateAuthority {
  const ski = cert.getExtension("subjectKeyIdentifier") as
    | { subjectKeyIdentifier?: string }
    | undefined;
  const subjectKeyId = ski?.subjectKeyIdentifier
    ? forge.util.hexToBytes(ski.subjectKeyIdentifier)
    : forge.pki.getPublicKeyFingerprint(cert.publicKey, { type: "RSAPublicKey" }).getBytes();
  const cn = cert.subject.getField("CN") as { value?: string } | null;
  return {
    cert,
    certPem,
    key,
    subjectKeyId,
    commonName: cn?.value ?? "",
    notBefore: cert.validity.notBefore,
    notAfter: cert.validity.notAfter,
  };
}

async function readText(path: string, what: string, fix: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new CaError(`Cannot read CA ${what} "${path}": ${message(e)}; ${fix}`, { cause: e });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Writes via a temporary file created with `mode`, then renames it over `path`. */
async function writeFileAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(tmp, text, { mode, createNew: true });
    await Deno.chmod(tmp, mode); // umask may have removed bits we want (0644)
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new CaError(`Cannot write "${path}": ${message(e)}`, { cause: e });
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}

function machineName(): string {
  try {
    return Deno.hostname() || "localhost";
  } catch {
    return "localhost";
  }
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\.$/, "");
}
