/**
 * Verified TLS to the origin over a TCP connection the proxy already dialled.
 *
 * Destination protection dials the exact IP it checked, so the certificate
 * must be verified against the origin's *name*, not that IP:
 * `Deno.startTls(tcp, { hostname: name })` does exactly that (SNI = name,
 * verification against name; for an IP literal, no SNI and an iPAddress SAN
 * match).
 *
 * Trust: `caCerts` in Deno is *added* to the root store, it does not replace
 * it. The root store is Deno's bundled Mozilla roots unless
 * `DENO_TLS_CA_STORE` says otherwise; Deno reads that variable when the first
 * TLS connection is made, so {@linkcode useSystemRootStore} can still switch
 * to "system,mozilla" at start-up.
 *
 * @module
 */

/** Why an upstream TLS connection failed. */
export type UpstreamTlsFailure =
  | "certificate-expired"
  | "certificate-not-yet-valid"
  | "certificate-wrong-name"
  | "unknown-issuer"
  | "invalid-certificate"
  | "handshake-failed"
  | "timeout";

/** The origin's TLS could not be verified or established; the message is the 502 body. */
export class UpstreamTlsError extends Error {
  override name = "UpstreamTlsError";
  constructor(message: string, readonly failure: UpstreamTlsFailure, options?: ErrorOptions) {
    super(message, options);
  }
}

/** An `--upstream-ca` file cannot be used. */
export class UpstreamCaError extends Error {
  override name = "UpstreamCaError";
  /** The CLI shows the message without a stack trace. */
  readonly userFacing = true;
}

/** Options for {@linkcode connectUpstreamTls}. */
export interface UpstreamTlsOptions {
  /** Extra trusted roots, PEM (from `--upstream-ca`); added to the root store. */
  caCerts?: string[];
  /** ALPN offers. Default: `["http/1.1"]`. */
  alpnProtocols?: string[];
  /** The handshake must finish within this time. Default: 10000 ms. */
  handshakeTimeoutMs?: number;
}

/**
 * Runs a TLS client handshake on `tcp`, verifying the certificate for `host`
 * (normalised: a name, `1.2.3.4` or `[v6]`). Owns `tcp`: closes it on
 * failure. Resolves once the handshake completed, so a bad certificate is
 * reported here and never reaches the client.
 *
 * @throws {UpstreamTlsError} with a message naming host, port and reason.
 */
export async function connectUpstreamTls(
  tcp: Deno.TcpConn,
  host: string,
  port: number,
  options: UpstreamTlsOptions = {},
): Promise<Deno.TlsConn> {
  const hostname = host.startsWith("[") ? host.slice(1, -1) : host;
  const where = `${host}:${port}`;
  try {
    tcp.setNoDelay(true);
  } catch {
    // closed already: startTls reports it
  }
  let conn: Deno.TlsConn | undefined;
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new UpstreamTlsError(`TLS handshake with ${where} timed out`, "timeout"));
    }, options.handshakeTimeoutMs ?? 10_000);
  });
  const handshake = (async () => {
    conn = await Deno.startTls(tcp, {
      hostname,
      caCerts: options.caCerts,
      alpnProtocols: options.alpnProtocols ?? ["http/1.1"],
    });
    if (timedOut) closeQuietly(conn);
    await conn.handshake();
    return conn;
  })();
  handshake.catch(() => {}); // the race below reports it
  try {
    return await Promise.race([handshake, timeout]);
  } catch (e) {
    closeQuietly(conn ?? tcp);
    throw e instanceof UpstreamTlsError ? e : describeUpstreamTlsError(e, host, port);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Maps a Deno (rustls) TLS error to an {@linkcode UpstreamTlsError} with a
 * plain reason, e.g. `certificate of example.com:443 has expired`.
 */
export function describeUpstreamTlsError(
  error: unknown,
  host: string,
  port: number,
): UpstreamTlsError {
  const where = `${host}:${port}`;
  const text = error instanceof Error ? error.message : String(error);
  const cause = { cause: error };
  if (/certificate expired/i.test(text)) {
    const after = /not valid after (\d+)/.exec(text)?.[1];
    const when = after ? ` (expired ${new Date(Number(after) * 1000).toISOString()})` : "";
    return new UpstreamTlsError(
      `certificate of ${where} has expired${when}`,
      "certificate-expired",
      cause,
    );
  }
  if (/certificate not valid yet/i.test(text)) {
    return new UpstreamTlsError(
      `certificate of ${where} is not valid yet (is the clock right?)`,
      "certificate-not-yet-valid",
      cause,
    );
  }
  const wrongName =
    /certificate not valid for name "([^"]*)"(?:; certificate is only valid for (.*))?/i
      .exec(text);
  if (wrongName) {
    const validFor = wrongName[2] ? `: it is valid for ${describeNames(wrongName[2])}` : "";
    return new UpstreamTlsError(
      `certificate of ${where} is not valid for name ${host}${validFor}`,
      "certificate-wrong-name",
      cause,
    );
  }
  if (/UnknownIssuer/.test(text)) {
    return new UpstreamTlsError(
      `certificate of ${where} has an unknown issuer (not signed by a trusted CA; ` +
        `trust a private CA with --upstream-ca FILE)`,
      "unknown-issuer",
      cause,
    );
  }
  if (/invalid peer certificate/i.test(text)) {
    return new UpstreamTlsError(
      `certificate of ${where} ${invalidReason(text)}`,
      "invalid-certificate",
      cause,
    );
  }
  return new UpstreamTlsError(
    `TLS handshake with ${where} failed: ${text}`,
    "handshake-failed",
    cause,
  );
}

/**
 * Why rustls found a certificate invalid, in words for the common cases; its
 * own name otherwise (without the list of algorithms some of them carry).
 */
function invalidReason(text: string): string {
  const what = text.replace(/^.*invalid peer certificate:\s*/i, "");
  if (/CaUsedAsEndEntity/.test(what)) {
    return "is a CA certificate, not a server's (a self-signed certificate made with CA:TRUE, " +
      "as openssl req -x509 does by default?): the server needs a certificate of its own, " +
      "issued by a CA (trust a private one with --upstream-ca FILE)";
  }
  if (/UnsupportedSignatureAlgorithm/.test(what)) {
    return "is signed with an algorithm that is no longer accepted (such as SHA-1)";
  }
  if (/EndEntityUsedAsCa/.test(what)) {
    return "was issued by a certificate that is not a CA's";
  }
  const name = /^(?:Other\(OtherError\()?(\w+)/.exec(what)?.[1];
  return `is invalid: ${name && what.length > 200 ? name : what}`;
}

/** `DnsName("a.test"), IpAddress(10.0.0.1)` -> `a.test, 10.0.0.1`. */
function describeNames(list: string): string {
  const names = [...list.matchAll(/(?:DnsName|IpAddress)\(([^)]*)\)/g)].map((m) =>
    m[1].replace(/^"|"$/g, "")
  );
  return names.length > 0 ? names.join(", ") : list;
}

/** Where Linux distributions keep their trust store (as openssl-probe looks). */
const LINUX_TRUST_STORES = [
  "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch
  "/etc/pki/tls/certs/ca-bundle.crt", // Fedora, RHEL
  "/etc/ssl/ca-bundle.pem", // openSUSE
  "/etc/pki/tls/cacert.pem",
  "/etc/ssl/cert.pem",
  "/etc/ssl/certs",
];

/**
 * Makes Deno verify upstream certificates against the operating system's
 * trust store as well as its bundled Mozilla roots, unless the user already
 * chose with `DENO_TLS_CA_STORE`. Call before the first TLS connection of the
 * process (Deno builds its root store then).
 *
 * Deno fails every TLS connection when the system store cannot be loaded,
 * so on Linux the store is only added when `SSL_CERT_FILE`/`SSL_CERT_DIR`
 * (if set) exist, and otherwise one of the usual bundle locations does.
 *
 * @returns the store in effect, e.g. `system,mozilla`.
 */
export function useSystemRootStore(): string {
  try {
    const chosen = Deno.env.get("DENO_TLS_CA_STORE");
    if (chosen) return chosen;
    if (Deno.build.os === "linux" && !linuxTrustStoreLoadable()) return "mozilla";
    Deno.env.set("DENO_TLS_CA_STORE", "system,mozilla");
    return "system,mozilla";
  } catch {
    return "mozilla"; // no env or read permission: Deno's default
  }
}

function linuxTrustStoreLoadable(): boolean {
  const file = Deno.env.get("SSL_CERT_FILE");
  const dir = Deno.env.get("SSL_CERT_DIR");
  if (file !== undefined || dir !== undefined) {
    return (file === undefined || exists(file)) && (dir === undefined || exists(dir));
  }
  return LINUX_TRUST_STORES.some(exists);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads `--upstream-ca` files: PEM bundles of one or more certificates.
 * @throws {UpstreamCaError} `Cannot read --upstream-ca "x.pem": ...` when a file is
 *   missing or holds no certificate.
 */
export async function loadUpstreamCaCerts(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new UpstreamCaError(
        `Cannot read --upstream-ca "${path}": ${e instanceof Error ? e.message : e}`,
        { cause: e },
      );
    }
    const blocks = text.match(
      /-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----/g,
    );
    if (!blocks) {
      throw new UpstreamCaError(
        `Cannot read --upstream-ca "${path}": no PEM CERTIFICATE block found`,
      );
    }
    for (const block of blocks) {
      try {
        // Decoding catches a truncated or corrupted body here, not per connection.
        atob(block.replace(/-----[A-Z ]+-----|\s/g, ""));
      } catch {
        throw new UpstreamCaError(
          `Cannot read --upstream-ca "${path}": a certificate is not valid base64`,
        );
      }
      out.push(block.replaceAll("\r\n", "\n") + "\n");
    }
  }
  return out;
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}
