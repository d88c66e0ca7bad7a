/**
 * A pure parser for the first flight of a TLS client: the ClientHello.
 *
 * The proxy peeks at it after answering a CONNECT, to check that the server
 * name the client asks for (SNI) is the host that was decided on. It never
 * changes the bytes; they are relayed (or handed to the interceptor) as read.
 *
 * Sans-io: {@linkcode parseClientHello} takes the bytes read so far and
 * returns `undefined` when it needs more, a {@linkcode ClientHello} when the
 * whole handshake message is there, and throws {@linkcode ClientHelloError}
 * when the bytes are not (or no longer can be) a valid ClientHello. The
 * message may be split over several TLS records and several TCP segments.
 *
 * @module
 */

/** The bytes are not a TLS ClientHello, or a malformed one. */
export class ClientHelloError extends Error {
  override name = "ClientHelloError";
  /**
   * @param notTls true when the very first bytes are not a TLS handshake
   *   record at all (plain text, SSH, ...), false when a TLS record is malformed.
   */
  constructor(message: string, readonly notTls = false) {
    super(message);
  }
}

/** What the proxy needs from a ClientHello. */
export interface ClientHello {
  /**
   * The `host_name` from the server_name extension, lower-cased, exactly as
   * sent otherwise (no IDN or trailing-dot processing: compare with
   * `normaliseHost`). Undefined when the extension is absent.
   */
  serverName?: string;
  /** Protocols offered in the ALPN extension, in the client's order. */
  alpn: string[];
  /** The legacy_version field (0x0303 for TLS 1.2 and 1.3). */
  version: number;
  /** True when the supported_versions extension offers TLS 1.3 (0x0304). */
  offersTls13: boolean;
  /**
   * Number of bytes the ClientHello occupies in the input: the TLS records
   * that carry it, headers included. Bytes after it belong to the client's
   * next records and must be relayed as well.
   */
  length: number;
}

/** Options for {@linkcode parseClientHello}. */
export interface ParseClientHelloOptions {
  /**
   * Largest ClientHello handshake message accepted, in bytes. Real ones are
   * below 2 KiB (a few KiB with post-quantum key shares).
   * @default {65536}
   */
  maxLength?: number;
  /**
   * Most TLS records the ClientHello may be split over. Clients send one,
   * rarely two; more is an attempt to get past inspection, or to make the
   * proxy parse the same bytes again and again (every call starts over).
   * @default {64}
   */
  maxRecords?: number;
}

const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const EXT_SUPPORTED_VERSIONS = 43;
/** A TLS record's fragment is at most 2^14 bytes (plus expansion we do not allow for plaintext). */
const MAX_RECORD = 16384;

/**
 * Parses a ClientHello from the first bytes a client sent.
 *
 * @returns the parsed hello, or `undefined` when more bytes are needed.
 * @throws {ClientHelloError} when the bytes are not a well-formed ClientHello.
 */
export function parseClientHello(
  input: Uint8Array,
  options: ParseClientHelloOptions = {},
): ClientHello | undefined {
  const maxLength = options.maxLength ?? 65536;
  const maxRecords = options.maxRecords ?? 64;
  // Reassemble the handshake message from consecutive handshake records.
  let offset = 0;
  let message: Uint8Array | undefined;
  let messageLength = -1;
  let collected = 0;
  const parts: Uint8Array[] = [];
  while (true) {
    if (input.length - offset < 5) {
      if (input.length > offset) checkRecordPrefix(input.subarray(offset), offset === 0);
      return undefined;
    }
    checkRecordPrefix(input.subarray(offset), offset === 0);
    const len = (input[offset + 3] << 8) | input[offset + 4];
    if (len === 0 || len > MAX_RECORD) {
      throw new ClientHelloError(`invalid TLS record length ${len}`);
    }
    if (parts.length === maxRecords) {
      throw new ClientHelloError(`ClientHello split over more than ${maxRecords} TLS records`);
    }
    if (input.length - offset - 5 < len) return undefined;
    const fragment = input.subarray(offset + 5, offset + 5 + len);
    offset += 5 + len;
    parts.push(fragment);
    collected += fragment.length;
    if (messageLength < 0 && collected >= 4) {
      const head = collected === fragment.length ? fragment : concat(parts, 4);
      if (head[0] !== HANDSHAKE_CLIENT_HELLO) {
        throw new ClientHelloError(
          `first TLS handshake message is type ${head[0]}, not ClientHello`,
        );
      }
      messageLength = (head[1] << 16) | (head[2] << 8) | head[3];
      if (messageLength > maxLength) {
        throw new ClientHelloError(`ClientHello of ${messageLength} bytes is too large`);
      }
    }
    if (messageLength >= 0 && collected >= 4 + messageLength) {
      if (collected > 4 + messageLength) {
        // Another handshake message follows in the same flight; a client must
        // not send one before the server answers.
        throw new ClientHelloError("unexpected data after ClientHello in its records");
      }
      message = parts.length === 1 ? parts[0] : concat(parts, collected);
      break;
    }
  }
  const hello = parseHelloBody(message.subarray(4));
  return { ...hello, length: offset };
}

/** Checks a (possibly partial) record header; `first` marks the client's very first bytes. */
function checkRecordPrefix(b: Uint8Array, first: boolean): void {
  if (b[0] !== RECORD_HANDSHAKE) {
    throw new ClientHelloError(
      first
        ? `first byte 0x${hex(b[0])} is not a TLS handshake record`
        : `TLS record type ${b[0]} inside the ClientHello`,
      first,
    );
  }
  // Record-layer version: 0x0301 (TLS 1.0 compatible), 0x0302, 0x0303. Some
  // clients send 0x0300 in the very first record.
  if (b.length > 1 && b[1] !== 3) {
    throw new ClientHelloError(`TLS record version 0x${hex(b[1])}.. is not TLS`, first);
  }
  if (b.length > 2 && b[2] > 4) {
    throw new ClientHelloError(`unknown TLS record version 0x03${hex(b[2])}`);
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let o = 0;
  for (const p of parts) {
    const take = Math.min(p.length, length - o);
    out.set(p.subarray(0, take), o);
    o += take;
    if (o === length) break;
  }
  return out;
}

/** A bounds-checked cursor over the ClientHello body. */
class Cursor {
  pos = 0;
  constructor(readonly b: Uint8Array, readonly end = b.length) {}
  need(n: number, what: string): void {
    if (this.pos + n > this.end) throw new ClientHelloError(`ClientHello truncated in ${what}`);
  }
  u8(what: string): number {
    this.need(1, what);
    return this.b[this.pos++];
  }
  u16(what: string): number {
    this.need(2, what);
    const v = (this.b[this.pos] << 8) | this.b[this.pos + 1];
    this.pos += 2;
    return v;
  }
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  /** A sub-cursor over a length-prefixed vector. */
  vector(lenBytes: 1 | 2, what: string): Cursor {
    const n = lenBytes === 1 ? this.u8(what) : this.u16(what);
    const start = this.pos;
    this.need(n, what);
    this.pos += n;
    const c = new Cursor(this.b, start + n);
    c.pos = start;
    return c;
  }
  get done(): boolean {
    return this.pos === this.end;
  }
}

function parseHelloBody(body: Uint8Array): Omit<ClientHello, "length"> {
  const c = new Cursor(body);
  const version = c.u16("version");
  if (version >> 8 !== 3) {
    throw new ClientHelloError(`ClientHello version 0x${version.toString(16)}`);
  }
  c.bytes(32, "random");
  const sessionId = c.vector(1, "session id");
  if (sessionId.end - sessionId.pos > 32) throw new ClientHelloError("session id longer than 32");
  const suites = c.vector(2, "cipher suites");
  if ((suites.end - suites.pos) % 2 !== 0 || suites.end === suites.pos) {
    throw new ClientHelloError("malformed cipher suite list");
  }
  const compression = c.vector(1, "compression methods");
  if (compression.end === compression.pos) throw new ClientHelloError("no compression methods");

  let serverName: string | undefined;
  const alpn: string[] = [];
  let offersTls13 = false;
  if (c.done) return { version, alpn, offersTls13 }; // no extensions at all (SSL-era client)

  const exts = c.vector(2, "extensions");
  if (!c.done) throw new ClientHelloError("trailing bytes after ClientHello extensions");
  const seen = new Set<number>();
  while (!exts.done) {
    const type = exts.u16("extension type");
    const ext = exts.vector(2, "extension");
    if (seen.has(type)) throw new ClientHelloError(`duplicate TLS extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      serverName = parseServerName(ext);
    } else if (type === EXT_ALPN) {
      const list = ext.vector(2, "ALPN list");
      while (!list.done) {
        const name = list.vector(1, "ALPN protocol");
        if (name.end === name.pos) throw new ClientHelloError("empty ALPN protocol name");
        alpn.push(latin1(name.b.subarray(name.pos, name.end)));
      }
      if (!ext.done) throw new ClientHelloError("trailing bytes in ALPN extension");
    } else if (type === EXT_SUPPORTED_VERSIONS) {
      const list = ext.vector(1, "supported versions");
      while (!list.done) if (list.u16("supported version") === 0x0304) offersTls13 = true;
    }
  }
  return { serverName, alpn, version, offersTls13 };
}

function parseServerName(ext: Cursor): string | undefined {
  // RFC 6066: a list of (type, name); at most one host_name (type 0).
  const list = ext.vector(2, "server name list");
  if (!ext.done) throw new ClientHelloError("trailing bytes in server_name extension");
  let name: string | undefined;
  while (!list.done) {
    const type = list.u8("server name type");
    const value = list.vector(2, "server name");
    if (type !== 0) continue; // unknown name types are skipped (RFC 6066 3.)
    if (name !== undefined) throw new ClientHelloError("more than one host_name in SNI");
    const bytes = value.b.subarray(value.pos, value.end);
    if (bytes.length === 0) throw new ClientHelloError("empty SNI host_name");
    for (const b of bytes) {
      // DNS names are ASCII letters, digits, '-', '.', '_'; anything else is
      // an attempt to confuse a name comparison.
      const ok = (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) ||
        b === 0x2d || b === 0x2e || b === 0x5f;
      if (!ok) throw new ClientHelloError(`invalid character 0x${hex(b)} in SNI host_name`);
    }
    name = latin1(bytes).toLowerCase();
  }
  return name;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}
