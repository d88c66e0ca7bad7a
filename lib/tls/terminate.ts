/**
 * Server-side TLS on a connection the proxy already accepted (and already
 * read the ClientHello from).
 *
 * Deno's public API cannot upgrade an accepted connection to server TLS
 * (`Deno.startTls` is client-only), so this uses node:tls: a `TLSSocket` in
 * server mode over a node Duplex that replays the peeked bytes, then reads
 * the rest from the connection. The alternative, a loopback `Deno.listenTls`
 * per certificate with the bytes piped to it, measured 4-8x slower for the
 * first request to a new host (its accepted sockets have Nagle on, +40 ms),
 * ~3.5x fewer keep-alive requests/s, ~2x the memory and 2.5x the file
 * descriptors per tunnel (bench/tls_approaches.ts).
 *
 * @module
 */

import tls from "node:tls";
import { Duplex as NodeDuplex } from "node:stream";
import type { Duplex } from "../proxy/types.ts";
import type { LeafCertificate } from "./leaf.ts";

/** How a client handshake failed. */
export type ClientTlsFailure =
  /** A TLS alert such as unknown_ca or bad_certificate: the client refused our certificate. */
  | "rejected-certificate"
  /** The client closed the connection mid-handshake (some clients do that instead of an alert). */
  | "closed"
  | "timeout"
  | "aborted"
  /** Anything else: not TLS, no common version, cipher or ALPN protocol. */
  | "failed";

/** The TLS handshake with the client failed; `failure` says how. */
export class ClientTlsError extends Error {
  override name = "ClientTlsError";
  /**
   * @param alert the TLS alert the client sent, as rustls names it (`UnknownCA`).
   */
  constructor(
    message: string,
    readonly failure: ClientTlsFailure,
    readonly alert?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  /**
   * True when the client refused our certificate: it does not trust the
   * netmonitor CA, or it pins the real certificate.
   */
  get rejectedCertificate(): boolean {
    return this.failure === "rejected-certificate";
  }
}

/** Options for {@linkcode terminateTls}. */
export interface TerminateOptions {
  /** The certificate to present. */
  leaf: LeafCertificate;
  /** ALPN protocols to select from, in preference order. Default: `["http/1.1"]`. */
  alpnProtocols?: string[];
  /** The handshake must finish within this time. Default: 10000 ms. */
  handshakeTimeoutMs?: number;
  /** Aborting closes the connection (before or after the handshake). */
  signal?: AbortSignal;
}

/** A decrypted client stream. */
export interface TerminatedTls extends Duplex {
  /** The ALPN protocol selected, or null when the client offered none. */
  readonly alpnProtocol: string | null;
  /** The SNI the client sent, or null. */
  readonly servername: string | null;
}

/** Alerts that mean "I do not accept your certificate". */
const CERTIFICATE_ALERTS = new Set([
  "UnknownCA",
  "BadCertificate",
  "CertificateUnknown",
  "UnsupportedCertificate",
  "CertificateRevoked",
  "CertificateExpired",
  "AccessDenied",
]);

const contexts = new WeakMap<LeafCertificate, tls.SecureContext>();

/**
 * Completes a server-side TLS handshake on `conn` with `leaf`'s certificate.
 * `prefix` holds the bytes already read from `conn` (the ClientHello and
 * anything after it); they are consumed first. Owns `conn` from now on:
 * closes it on failure, and `close()` on the result closes it.
 *
 * @throws {ClientTlsError} when the handshake fails, times out or is aborted.
 */
export function terminateTls(
  conn: Duplex,
  prefix: Uint8Array,
  options: TerminateOptions,
): Promise<TerminatedTls> {
  let context = contexts.get(options.leaf);
  if (!context) {
    context = tls.createSecureContext({ cert: options.leaf.certPem, key: options.leaf.keyPem });
    contexts.set(options.leaf, context);
  }
  let onEof = () => {};
  const gate = new ReadGate();
  const transport = nodeDuplexOver(conn, prefix, gate, () => onEof());
  const socket = new tls.TLSSocket(transport as unknown as import("node:net").Socket, {
    isServer: true,
    secureContext: context,
    ALPNProtocols: options.alpnProtocols ?? ["http/1.1"],
  });
  const { signal } = options;
  return new Promise<TerminatedTls>((resolve, reject) => {
    let settled = false;
    const fail = (err: ClientTlsError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      closeQuietly(conn);
      reject(err);
    };
    const onAbort = () => fail(new ClientTlsError("TLS handshake aborted", "aborted"));
    const timer = setTimeout(
      () =>
        fail(new ClientTlsError("client did not complete the TLS handshake in time", "timeout")),
      options.handshakeTimeoutMs ?? 10_000,
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("error", (e: Error) => fail(classifyHandshakeError(e)));
    // A client that gives up on our certificate without an alert just closes.
    onEof = () =>
      fail(
        new ClientTlsError(
          "client closed the connection during the TLS handshake (does it trust netmonitor's CA?)",
          "closed",
        ),
      );
    socket.once("close", onEof);
    socket.once("secure", () => {
      if (settled) return;
      settled = true;
      onEof = () => {};
      clearTimeout(timer);
      socket.removeAllListeners("error");
      socket.removeAllListeners("close");
      resolve(new DecryptedStream(socket, conn, gate, signal, onAbort));
    });
  });
}

/** Turns a node:tls handshake error into a {@linkcode ClientTlsError}. */
function classifyHandshakeError(e: Error): ClientTlsError {
  const alert = /received fatal alert: (\w+)/.exec(e.message)?.[1];
  const cause = { cause: e };
  if (alert && CERTIFICATE_ALERTS.has(alert)) {
    return new ClientTlsError(
      `client rejected netmonitor's certificate (TLS alert ${alert}): ` +
        `it does not trust the netmonitor CA, or it pins the real certificate`,
      "rejected-certificate",
      alert,
      cause,
    );
  }
  if (alert) {
    return new ClientTlsError(
      `client aborted the TLS handshake (TLS alert ${alert})`,
      "failed",
      alert,
      cause,
    );
  }
  return new ClientTlsError(
    `TLS handshake with the client failed: ${e.message}`,
    "failed",
    undefined,
    cause,
  );
}

/**
 * Holds reads from the client while the decrypted side is full. node:tls in
 * Deno 2.9 keeps pulling from a JS transport whatever its own readable side
 * holds (pause() does not propagate), so without this a client could make
 * the proxy buffer an upload of any size while the origin is slow.
 */
class ReadGate {
  #open = true;
  #waiters: (() => void)[] = [];

  /** Undefined when open; otherwise resolves when opened. */
  wait(): Promise<void> | undefined {
    return this.#open ? undefined : new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  set(open: boolean): void {
    this.#open = open;
    if (open) { for (const wake of this.#waiters.splice(0)) wake(); }
  }
}

/** Read at most this much per `conn.read`; a TLS record is at most ~16 KiB. */
const READ_SIZE = 16 * 1024 + 512;

/**
 * A node Duplex that yields `prefix`, then what `conn` reads; writes go to
 * `conn`. `onEof` runs when `conn` ends (node:tls does not report an EOF
 * during the handshake by itself).
 */
function nodeDuplexOver(
  conn: Duplex,
  prefix: Uint8Array,
  gate: ReadGate,
  onEof: () => void,
): NodeDuplex {
  let pending: Uint8Array | undefined = prefix.length > 0 ? prefix : undefined;
  const scratch = new Uint8Array(READ_SIZE);
  return new NodeDuplex({
    read() {
      if (pending) {
        const chunk = pending;
        pending = undefined;
        // Not before the TLSSocket started (it starts on the next tick): in
        // Deno 2.9, bytes buffered before start() that fail the handshake
        // (not TLS, no common version or cipher) make start() destroy the
        // socket and then dereference its null handle: an uncaught
        // TypeError that would end the whole process.
        setTimeout(() => this.push(chunk), 0);
        return;
      }
      const read = () =>
        conn.read(scratch).then(
          (n) => {
            if (n === null) onEof();
            this.push(n === null ? null : scratch.slice(0, n));
          },
          (e) => this.destroy(e),
        );
      const closed = gate.wait();
      if (closed) closed.then(read);
      else read();
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(conn, chunk).then(() => callback(), callback);
    },
    // Records encrypted while a write was in flight go out in one write.
    writev(chunks: { chunk: Uint8Array }[], callback) {
      const total = chunks.reduce((n, c) => n + c.chunk.length, 0);
      const joined = new Uint8Array(total);
      let off = 0;
      for (const { chunk } of chunks) {
        joined.set(chunk, off);
        off += chunk.length;
      }
      writeAll(conn, joined).then(() => callback(), callback);
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), () => callback());
    },
    destroy(err, callback) {
      closeQuietly(conn);
      callback(err);
    },
  });
}

function closeQuietly(conn: Duplex): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

async function writeAll(conn: Duplex, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(off === 0 ? data : data.subarray(off));
}

/** Stop reading from the client when this much decrypted data waits to be read. */
const HIGH_WATER = 64 * 1024;

/** The decrypted side of a terminated TLS connection, as a {@linkcode Duplex}. */
class DecryptedStream implements TerminatedTls {
  readonly alpnProtocol: string | null;
  readonly servername: string | null;
  readonly #socket: tls.TLSSocket;
  readonly #conn: Duplex;
  readonly #gate: ReadGate;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  #signal: AbortSignal | undefined;
  #onAbort: () => void;

  constructor(
    socket: tls.TLSSocket,
    conn: Duplex,
    gate: ReadGate,
    signal: AbortSignal | undefined,
    onAbort: () => void,
  ) {
    this.#socket = socket;
    this.#conn = conn;
    this.#gate = gate;
    this.#signal = signal;
    this.alpnProtocol = typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : null;
    const sni = (socket as unknown as { servername?: string | false | null }).servername;
    this.servername = typeof sni === "string" ? sni : null;
    // Handshake-phase abort handler is replaced by one that closes the stream.
    signal?.removeEventListener("abort", onAbort);
    this.#onAbort = () => this.close();
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= HIGH_WATER) gate.set(false);
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (e: Error) => {
      this.#error ??= e;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended || this.#closed) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const head = this.#chunks[0];
    const n = Math.min(p.length, head.length);
    p.set(n === head.length ? head : head.subarray(0, n));
    if (n === head.length) this.#chunks.shift();
    else this.#chunks[0] = head.subarray(n);
    this.#queued -= n;
    if (this.#queued < HIGH_WATER) this.#gate.set(true);
    return n;
  }

  async write(p: Uint8Array): Promise<number> {
    if (this.#error) throw this.#error;
    if (this.#closed || this.#socket.destroyed) {
      throw new Deno.errors.BadResource("TLS stream closed");
    }
    // node may keep the chunk until it is encrypted; the caller may reuse p.
    if (!this.#socket.write(p.slice())) await this.#drained();
    return p.length;
  }

  #drained(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        this.#socket.off("drain", done);
        this.#socket.off("close", done);
        if (this.#error) reject(this.#error);
        else resolve();
      };
      this.#socket.on("drain", done);
      this.#socket.on("close", done);
    });
  }

  closeWrite(): Promise<void> {
    if (this.#closed || this.#socket.writableEnded) return Promise.resolve();
    return new Promise<void>((resolve) => this.#socket.end(() => resolve()));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#socket.destroy();
    closeQuietly(this.#conn);
    this.#gate.set(true); // a held read proceeds, and fails on the closed conn
    this.#notify();
  }
}
