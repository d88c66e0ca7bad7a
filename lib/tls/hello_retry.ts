/**
 * A pure check that a relayed TLS tunnel carries no ClientHello other than
 * the one the proxy checked, except the second one TLS 1.3 allows after a
 * HelloRetryRequest, which must pass the same check.
 *
 * A TLS 1.3 server that answers a ClientHello with a HelloRetryRequest reads
 * a second ClientHello, and servers pick their virtual host and certificate
 * from that one's SNI (OpenSSL 3.0 does: its servername callback runs again).
 * A client could send a first ClientHello naming the CONNECT host, which the
 * proxy checks, and a second one naming any other host, which it would not.
 * So, after the checked ClientHello:
 * - until the server's first handshake message arrived, the client may send
 *   no handshake record (TLS never has it speak before the server answers;
 *   change_cipher_spec and early application data are records of other types);
 * - after a HelloRetryRequest, the client's next handshake records must be a
 *   ClientHello that passes the same check as the first;
 * - after any other ServerHello, the handshake goes on under keys the proxy
 *   cannot see, and nothing more is checked here.
 *
 * Sans-io: {@linkcode TunnelHelloGuard.client} and
 * {@linkcode TunnelHelloGuard.server} take each direction's bytes in the
 * order they flow (the server's before they are passed to the client),
 * split anywhere. `client` throws {@linkcode TunnelHelloError} at the first
 * record that must not be relayed, before the bytes that complete it are
 * passed on.
 *
 * @module
 */

import { type ClientHello, ClientHelloError, parseClientHello } from "./client_hello.ts";

/** The client sent a handshake record the tunnel policy refuses. */
export class TunnelHelloError extends Error {
  override name = "TunnelHelloError";
  /**
   * @param reason why, for the record's reason
   * @param detail the parser's message, when there is one
   */
  constructor(readonly reason: string, readonly detail?: string) {
    super(detail === undefined ? reason : `${reason}: ${detail}`);
  }
}

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_SERVER_HELLO = 2;
/** SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest (RFC 8446 4.1.3). */
const HRR_RANDOM = Uint8Array.from(
  "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c".match(/../g)!,
  (h) => parseInt(h, 16),
);
/** Handshake type, length, legacy_version, random: what tells a HelloRetryRequest apart. */
const SERVER_HELLO_HEAD = 4 + 2 + 32;

type ServerState = "waiting" | "retry" | "done";

/** Options for the second ClientHello's parser (as for the first). */
export interface TunnelHelloGuardOptions {
  maxLength?: number;
  maxRecords?: number;
}

/** Follows both directions of a relayed TLS tunnel, from the checked ClientHello on. */
export class TunnelHelloGuard {
  readonly #check: (hello: ClientHello) => string | undefined;
  readonly #options: TunnelHelloGuardOptions;
  /** Bytes of the checked ClientHello still to skip on the client side. */
  #skip: number;
  #server: ServerState = "waiting";
  /** The client side is past every check. */
  #clientDone = false;
  readonly #client = new RecordCursor();
  readonly #serverRecords = new RecordCursor();
  /** The server's bytes are not TLS records: nothing more is read from them. */
  #serverBroken = false;
  /** The first bytes of the server's first handshake message. */
  readonly #serverHead = new Uint8Array(SERVER_HELLO_HEAD);
  #serverHave = 0;
  /** Raw records of the second ClientHello so far (from its first record header). */
  #hello: Uint8Array | undefined;
  #helloLength = 0;

  /**
   * @param firstHelloLength bytes the checked ClientHello's records take
   *   (`ClientHello.length`); the client's bytes start with them.
   * @param check why a ClientHello may not go on, or undefined when it may.
   */
  constructor(
    firstHelloLength: number,
    check: (hello: ClientHello) => string | undefined,
    options: TunnelHelloGuardOptions = {},
  ) {
    this.#skip = firstHelloLength;
    this.#check = check;
    this.#options = options;
  }

  /**
   * Takes the client's next bytes.
   * @throws {TunnelHelloError} when they must not be relayed.
   */
  client(chunk: Uint8Array): void {
    if (this.#clientDone) return;
    let i = 0;
    if (this.#skip > 0) {
      i = Math.min(this.#skip, chunk.length);
      this.#skip -= i;
    }
    const c = this.#client;
    while (i < chunk.length && !this.#clientDone) {
      if (c.left === 0) {
        // Inside a record header.
        const start = i;
        i = c.header(chunk, i);
        if (this.#hello) this.#collect(chunk.subarray(start, i));
        if (c.have < 5) continue;
        if (!this.#hello) {
          if (c.type !== RECORD_HANDSHAKE) continue;
          if (this.#server === "waiting") {
            throw new TunnelHelloError(
              "TLS handshake record after the ClientHello before the server answered (fail closed)",
            );
          }
          if (this.#server === "done") {
            this.#clientDone = true;
            return;
          }
          // After a HelloRetryRequest: the second ClientHello starts here.
          this.#hello = new Uint8Array(1024);
          this.#collect(c.headerBytes);
        }
        if (c.left === 0) this.#tryHello(); // an empty record: the parser refuses it
        continue;
      }
      const k = Math.min(c.left, chunk.length - i);
      if (this.#hello) this.#collect(chunk.subarray(i, i + k));
      c.left -= k;
      i += k;
      if (c.left === 0 && this.#hello) this.#tryHello();
    }
  }

  /** Takes the server's next bytes (before they are passed to the client). Never throws. */
  server(chunk: Uint8Array): void {
    if (this.#server !== "waiting" || this.#serverBroken) return;
    const c = this.#serverRecords;
    let i = 0;
    while (i < chunk.length && this.#server === "waiting") {
      if (c.left === 0) {
        i = c.header(chunk, i);
        if (c.have === 5 && c.broken) {
          // Not TLS: the client's handshake records stay refused (fail closed).
          this.#serverBroken = true;
          return;
        }
        continue;
      }
      const k = Math.min(c.left, chunk.length - i);
      if (c.type === RECORD_HANDSHAKE) {
        const take = Math.min(k, SERVER_HELLO_HEAD - this.#serverHave);
        this.#serverHead.set(chunk.subarray(i, i + take), this.#serverHave);
        this.#serverHave += take;
        if (this.#serverHave === SERVER_HELLO_HEAD) this.#classify();
      }
      c.left -= k;
      i += k;
    }
  }

  #classify(): void {
    const h = this.#serverHead;
    if (h[0] !== HANDSHAKE_SERVER_HELLO) return; // not a ServerHello: stay held (fail closed)
    const retry = HRR_RANDOM.every((b, j) => h[6 + j] === b);
    this.#server = retry ? "retry" : "done";
  }

  #collect(bytes: Uint8Array): void {
    let buf = this.#hello!;
    if (this.#helloLength + bytes.length > buf.length) {
      const bigger = new Uint8Array(Math.max(buf.length * 2, this.#helloLength + bytes.length));
      bigger.set(buf.subarray(0, this.#helloLength));
      this.#hello = buf = bigger;
    }
    buf.set(bytes, this.#helloLength);
    this.#helloLength += bytes.length;
  }

  /** At the end of a record of the second ClientHello: check it once it is whole. */
  #tryHello(): void {
    const reason = "second TLS ClientHello after a HelloRetryRequest";
    let hello: ClientHello | undefined;
    try {
      hello = parseClientHello(this.#hello!.subarray(0, this.#helloLength), this.#options);
    } catch (e) {
      if (!(e instanceof ClientHelloError)) throw e;
      throw new TunnelHelloError(`${reason}: malformed TLS ClientHello`, e.message);
    }
    if (!hello) return;
    const problem = this.#check(hello);
    if (problem) throw new TunnelHelloError(`${reason}: ${problem}`);
    this.#hello = undefined;
    this.#clientDone = true;
  }
}

/** Record framing of one direction: the current record's type and what is left of it. */
class RecordCursor {
  readonly headerBytes = new Uint8Array(5);
  have = 0;
  left = 0;

  get type(): number {
    return this.headerBytes[0];
  }

  /** True when the header just read cannot start a TLS record. */
  get broken(): boolean {
    const h = this.headerBytes;
    return h[0] < 20 || h[0] > 24 || h[1] !== 3;
  }

  /** Reads header bytes from `chunk` at `i`; returns the new index. */
  header(chunk: Uint8Array, i: number): number {
    if (this.have === 5) this.have = 0;
    while (this.have < 5 && i < chunk.length) this.headerBytes[this.have++] = chunk[i++];
    if (this.have === 5) this.left = (this.headerBytes[3] << 8) | this.headerBytes[4];
    return i;
  }
}
