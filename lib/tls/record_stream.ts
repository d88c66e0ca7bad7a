/**
 * A pure check that a byte stream is a sequence of TLS records.
 *
 * A tunnel that is relayed without decryption is allowed because it carries
 * TLS to the host that was decided on. Its ClientHello is checked, but what
 * follows is opaque: without this check, a client could send a token
 * ClientHello and then plain text (an HTTP request a deny URL rule would
 * refuse) to a lenient server. Only the record framing is checked, never the
 * contents, so it costs a few operations per record.
 *
 * Sans-io: {@linkcode TlsRecordStream.push} takes the bytes in the order they
 * flow, split anywhere, and throws {@linkcode TlsRecordError} at the first
 * byte that cannot be part of a TLS record stream.
 *
 * @module
 */

/** The stream is not (or no longer) TLS records. */
export class TlsRecordError extends Error {
  override name = "TlsRecordError";
}

/** Content types: change_cipher_spec, alert, handshake, application_data, heartbeat. */
const FIRST_TYPE = 20;
const LAST_TYPE = 24;
/** A record's fragment: at most 2^14 bytes plus the expansion TLS 1.2 allows. */
const MAX_FRAGMENT = 16384 + 2048;

/** Follows the record framing of one direction of a TLS connection. */
export class TlsRecordStream {
  /** Fragment bytes still to come in the current record. */
  #left = 0;
  readonly #header = new Uint8Array(5);
  #have = 0;
  #records = 0;
  #offset = 0;

  /** Records whose header has been seen so far. */
  get records(): number {
    return this.#records;
  }

  /**
   * Takes the next bytes of the stream.
   *
   * @throws {TlsRecordError} at a record header that is not TLS.
   */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.#left > 0) {
        const k = Math.min(this.#left, chunk.length - i);
        this.#left -= k;
        i += k;
        continue;
      }
      this.#header[this.#have++] = chunk[i++];
      if (this.#have < 5) continue;
      this.#have = 0;
      this.#left = this.#check(this.#header, this.#offset + i - 5);
      this.#records++;
    }
    this.#offset += chunk.length;
  }

  #check(h: Uint8Array, at: number): number {
    const where = `at byte ${at} of the tunnel`;
    if (h[0] < FIRST_TYPE || h[0] > LAST_TYPE) {
      throw new TlsRecordError(`not a TLS record ${where} (content type ${h[0]})`);
    }
    if (h[1] !== 3 || h[2] > 4) {
      throw new TlsRecordError(`not a TLS record ${where} (version 0x${hex(h[1])}${hex(h[2])})`);
    }
    const len = (h[3] << 8) | h[4];
    if (len > MAX_FRAGMENT) throw new TlsRecordError(`TLS record of ${len} bytes ${where}`);
    return len;
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}
