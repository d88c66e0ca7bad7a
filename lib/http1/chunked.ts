/**
 * Chunked transfer coding (RFC 9112 7.1): a strict streaming decoder and the
 * framing bytes for re-encoding.
 *
 * The proxy decodes what it receives and re-encodes what it sends, so chunk
 * extensions and trailer fields (validated, then dropped) never reach the
 * other side, and both sides always agree where the body ends.
 *
 * @module
 */

import { HttpParseError } from "./errors.ts";

const enum S {
  SizeStart,
  Size,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerName,
  TrailerValue,
  TrailerLf,
  FinalLf,
  Done,
}

const CR = 13;
const LF = 10;
const MAX_SIZE_DIGITS = 16;
const MAX_EXT_BYTES = 4096;

/** Token characters (RFC 9110 5.6.2), indexed by byte. */
const TOKEN_CHARS = (() => {
  const t = new Uint8Array(256);
  for (const c of "!#$%&'*+-.^_`|~") t[c.charCodeAt(0)] = 1;
  for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
  for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  return t;
})();

/** Hex digit values, -1 for non-digits. */
const HEX = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let i = 0; i < 10; i++) t[0x30 + i] = i;
  for (let i = 0; i < 6; i++) t[0x41 + i] = t[0x61 + i] = 10 + i;
  return t;
})();

/** Options of {@linkcode ChunkedDecoder}. */
export interface ChunkedDecoderOptions {
  /** The bytes come from an upstream server: errors carry status 502 instead of 400. */
  fromServer?: boolean;
  /** Largest trailer section accepted, bytes. @default {65536} */
  maxTrailerBytes?: number;
}

/**
 * Decodes a chunked body incrementally. Feed it every byte after the head;
 * it stops exactly at the end of the body, so bytes after it (the next
 * pipelined request) stay with the caller.
 */
export class ChunkedDecoder {
  #state = S.SizeStart;
  #size = 0;
  #digits = 0;
  #extBytes = 0;
  #extSemicolon = false;
  #remaining = 0;
  #trailerBytes = 0;
  readonly #status: 400 | 502;
  readonly #maxTrailer: number;

  constructor(options: ChunkedDecoderOptions = {}) {
    this.#status = options.fromServer ? 502 : 400;
    this.#maxTrailer = options.maxTrailerBytes ?? 65536;
  }

  /** True once the last chunk and the trailer section were consumed. */
  get done(): boolean {
    return this.#state === S.Done;
  }

  /**
   * Consumes bytes from `buf[start, end)`, calling `onData` with each piece of
   * body data (a view into `buf`: copy or use it before returning).
   *
   * @returns how many bytes were consumed; less than `end - start` only when
   *   the body ended.
   * @throws {HttpParseError} on any framing error.
   */
  decode(
    buf: Uint8Array,
    start: number,
    end: number,
    onData: (data: Uint8Array) => void,
  ): number {
    let i = start;
    while (i < end) {
      switch (this.#state) {
        case S.Data: {
          const n = Math.min(this.#remaining, end - i);
          onData(buf.subarray(i, i + n));
          i += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = S.DataCr;
          continue;
        }
        case S.SizeStart:
        case S.Size: {
          const b = buf[i];
          const d = HEX[b];
          if (d >= 0) {
            if (
              ++this.#digits > MAX_SIZE_DIGITS || this.#size > (Number.MAX_SAFE_INTEGER - d) / 16
            ) {
              throw this.#error("chunk size too large");
            }
            this.#size = this.#size * 16 + d;
            this.#state = S.Size;
          } else if (this.#state === S.SizeStart) {
            throw this.#error(`invalid chunk size (byte 0x${b.toString(16)})`);
          } else if (b === CR) {
            this.#state = S.SizeLf;
          } else if (b === 0x3b || b === 0x20 || b === 0x09) {
            this.#state = S.Ext;
            this.#extBytes = 1;
            this.#extSemicolon = b === 0x3b;
          } else {
            throw this.#error(`invalid chunk size (byte 0x${b.toString(16)})`);
          }
          i++;
          continue;
        }
        case S.Ext: {
          const b = buf[i++];
          if (b === CR) {
            if (!this.#extSemicolon) throw this.#error("whitespace after chunk size");
            this.#state = S.SizeLf;
          } else if (++this.#extBytes > MAX_EXT_BYTES) {
            throw this.#error("chunk extension too long");
          } else if (b === 0x3b) {
            this.#extSemicolon = true;
          } else if (b === 0x20 || b === 0x09) {
            // optional whitespace
          } else if (!this.#extSemicolon || b < 0x20 || b >= 0x7f) {
            throw this.#error("invalid chunk extension");
          }
          continue;
        }
        case S.SizeLf: {
          if (buf[i++] !== LF) throw this.#error("chunk size line not ended by CRLF");
          if (this.#size === 0) {
            this.#state = S.TrailerStart;
          } else {
            this.#remaining = this.#size;
            this.#state = S.Data;
          }
          this.#size = 0;
          this.#digits = 0;
          continue;
        }
        case S.DataCr:
          if (buf[i++] !== CR) throw this.#error("chunk data not followed by CRLF");
          this.#state = S.DataLf;
          continue;
        case S.DataLf:
          if (buf[i++] !== LF) throw this.#error("chunk data not followed by CRLF");
          this.#state = S.SizeStart;
          continue;
        case S.TrailerStart: {
          const b = buf[i++];
          this.#countTrailer();
          if (b === CR) this.#state = S.FinalLf;
          else if (TOKEN_CHARS[b]) this.#state = S.TrailerName;
          else throw this.#error("invalid trailer field");
          continue;
        }
        case S.TrailerName: {
          const b = buf[i++];
          this.#countTrailer();
          if (b === 0x3a) this.#state = S.TrailerValue;
          else if (!TOKEN_CHARS[b]) throw this.#error("invalid trailer field name");
          continue;
        }
        case S.TrailerValue: {
          const b = buf[i++];
          this.#countTrailer();
          if (b === CR) this.#state = S.TrailerLf;
          else if ((b < 0x20 && b !== 0x09) || b === 0x7f) {
            throw this.#error("control character in trailer field");
          }
          continue;
        }
        case S.TrailerLf:
          this.#countTrailer();
          if (buf[i++] !== LF) throw this.#error("trailer line not ended by CRLF");
          this.#state = S.TrailerStart;
          continue;
        case S.FinalLf:
          if (buf[i++] !== LF) throw this.#error("chunked body not ended by CRLF");
          this.#state = S.Done;
          return i - start;
        case S.Done:
          return i - start;
      }
    }
    return i - start;
  }

  #countTrailer(): void {
    if (++this.#trailerBytes > this.#maxTrailer) throw this.#error("trailer section too large");
  }

  #error(message: string): HttpParseError {
    return new HttpParseError(
      this.#status === 502 ? `upstream sent a bad chunked body: ${message}` : message,
      this.#status,
    );
  }
}

const encoder = new TextEncoder();

/** The last-chunk and empty trailer section that end a chunked body. */
export const LAST_CHUNK: Uint8Array = encoder.encode("0\r\n\r\n");

/**
 * Writes the chunk header for `size` data bytes (`hex CRLF`) into `out` at
 * `offset`; returns the new offset. The data follows, then CRLF.
 */
export function writeChunkHeader(out: Uint8Array, offset: number, size: number): number {
  const hex = size.toString(16);
  for (let i = 0; i < hex.length; i++) out[offset++] = hex.charCodeAt(i);
  out[offset++] = CR;
  out[offset++] = LF;
  return offset;
}
