/**
 * Leaf certificates for intercepted hosts, signed by the local CA.
 *
 * As mitmproxy does, every leaf shares one RSA key (generated once per
 * process), so a host never seen before costs one signature (~1 ms with
 * WebCrypto), not a key generation. Certificates are cached per host (LRU,
 * bounded); concurrent requests for the same host share one generation.
 *
 * @module
 */

import { normaliseHost } from "../net/host.ts";
import type { CertificateAuthority } from "./ca.ts";
import {
  generateRsaKey,
  ipAddressBytes,
  loadForge,
  randomSerial,
  type RsaKey,
  signCertificate,
} from "./_x509.ts";

const DAY_MS = 86_400_000;
/** Total validity stays under the 398-day limit browsers and Apple clients enforce. */
const LEAF_VALIDITY_DAYS = 397;
/** A cached leaf this close to its end is reissued. */
const RENEW_MARGIN_MS = 7 * DAY_MS;
/** RFC 5280 ub-common-name: a longer host goes in the SAN only. */
const MAX_CN_LENGTH = 64;

/** A leaf certificate for one host. */
export interface LeafCertificate {
  /** Normalised host it was issued for (`example.test`, `10.0.0.1`, `[::1]`). */
  host: string;
  /** Certificate PEM (leaf only; clients trust the CA directly). */
  certPem: string;
  /** The shared leaf private key, PKCS#8 PEM. */
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

/** Options for {@linkcode LeafIssuer.create}. */
export interface LeafIssuerOptions {
  /** Most hosts kept in the cache. Default: 1000. */
  maxEntries?: number;
  /** Clock, for tests. Default: `() => new Date()`. */
  now?: () => Date;
  /** The shared leaf key. Default: a new RSA 2048 key. */
  key?: RsaKey;
}

/** Issues and caches leaf certificates signed by one CA. */
export class LeafIssuer {
  readonly #ca: CertificateAuthority;
  readonly #key: RsaKey;
  readonly #max: number;
  readonly #now: () => Date;
  /** Insertion order is recency order: a hit is deleted and re-set. */
  readonly #cache = new Map<
    string,
    { pending: Promise<LeafCertificate>; leaf?: LeafCertificate }
  >();

  private constructor(ca: CertificateAuthority, key: RsaKey, options: LeafIssuerOptions) {
    this.#ca = ca;
    this.#key = key;
    this.#max = Math.max(1, options.maxEntries ?? 1000);
    this.#now = options.now ?? (() => new Date());
  }

  /** Creates an issuer; generates the shared leaf key unless one is given. */
  static async create(
    ca: CertificateAuthority,
    options: LeafIssuerOptions = {},
  ): Promise<LeafIssuer> {
    return new LeafIssuer(ca, options.key ?? await generateRsaKey(), options);
  }

  /** The CA this issuer signs with. */
  get ca(): CertificateAuthority {
    return this.#ca;
  }

  /** Number of cached hosts. */
  get size(): number {
    return this.#cache.size;
  }

  /**
   * The leaf certificate for `host` (any spelling {@linkcode normaliseHost}
   * accepts), from the cache or freshly signed.
   * @throws {import("../net/host.ts").HostError} for an unusable host.
   */
  get(host: string): Promise<LeafCertificate> {
    const key = normaliseHost(host);
    const hit = this.#cache.get(key);
    if (hit && (!hit.leaf || this.#fresh(hit.leaf))) {
      this.#cache.delete(key);
      this.#cache.set(key, hit);
      return hit.pending;
    }
    return this.#issue(key);
  }

  #fresh(leaf: LeafCertificate): boolean {
    return leaf.notAfter.getTime() - this.#now().getTime() > RENEW_MARGIN_MS;
  }

  #issue(host: string): Promise<LeafCertificate> {
    const entry: { pending: Promise<LeafCertificate>; leaf?: LeafCertificate } = {
      pending: this.#sign(host),
    };
    this.#cache.delete(host);
    this.#cache.set(host, entry);
    entry.pending.then(
      (leaf) => (entry.leaf = leaf),
      // A failed signature must not be cached; later requests try again.
      () => {
        if (this.#cache.get(host) === entry) this.#cache.delete(host);
      },
    );
    while (this.#cache.size > this.#max) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    return entry.pending;
  }

  #sign(host: string): Promise<LeafCertificate> {
    const now = this.#now().getTime();
    const notBefore = new Date(Math.max(now - DAY_MS, this.#ca.notBefore.getTime()));
    const notAfter = new Date(
      Math.min(notBefore.getTime() + LEAF_VALIDITY_DAYS * DAY_MS, this.#ca.notAfter.getTime()),
    );
    return issueLeafCertificate(this.#ca, this.#key, host, { notBefore, notAfter });
  }
}

/**
 * Signs a server certificate for `host` with `ca`: SAN dNSName (or iPAddress
 * for an IP literal), CN = host, serverAuth, SHA-256, random serial. The
 * dates are used as given (no clamping), so tests can make expired ones.
 * {@linkcode LeafIssuer} is the cached, clamped way to get one.
 *
 * @throws {import("../net/host.ts").HostError} for an unusable host.
 */
export async function issueLeafCertificate(
  ca: CertificateAuthority,
  key: RsaKey,
  host: string,
  validity: { notBefore: Date; notAfter: Date },
): Promise<LeafCertificate> {
  host = normaliseHost(host);
  const ip = ipAddressBytes(host);
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  const { pki } = await loadForge();
  const cert = pki.createCertificate();
  cert.publicKey = key.publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = validity.notBefore;
  cert.validity.notAfter = validity.notAfter;
  cert.setSubject(
    bare.length <= MAX_CN_LENGTH
      ? [{ name: "commonName", value: bare }, { name: "organizationName", value: "netmonitor" }]
      : [{ name: "organizationName", value: "netmonitor" }],
  );
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: "basicConstraints", cA: false },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      // An IP literal goes in as iPAddress (7), never as a dNSName (2).
      altNames: ip ? [{ type: 7, value: String.fromCharCode(...ip) }] : [{ type: 2, value: host }],
    },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: ca.subjectKeyId },
  ]);
  const certPem = await signCertificate(cert, ca.key.privateKey);
  return {
    host,
    certPem,
    keyPem: key.privateKeyPem,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
  };
}
