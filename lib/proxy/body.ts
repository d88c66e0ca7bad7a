/**
 * Streaming message bodies and tunnel relays between buffered readers and
 * duplex streams. Each step awaits the write before reading more, so a slow
 * receiver slows the sender (backpressure) and memory stays bounded by one
 * buffer per side.
 *
 * @module
 */

import { ChunkedDecoder, writeChunkHeader } from "../http1/chunked.ts";
import { HttpParseError } from "../http1/errors.ts";
import type { BodyFraming } from "../http1/framing.ts";
import type { BufferedReader } from "./reader.ts";
import type { Duplex } from "./types.ts";
import { writeAll } from "./duplex.ts";
import type { IdleWatch } from "./idle.ts";

/** Where a body transfer failed. */
export class BodyError extends Error {
  override name = "BodyError";
  /**
   * @param side "source" (read failed, ended early, bad framing) or "sink"
   *   (write failed).
   */
  constructor(
    message: string,
    readonly side: "source" | "sink",
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** How the body is written out. */
export type BodyOutput = "same" | "chunked" | "raw";

const CRLF_LAST = new TextEncoder().encode("\r\n0\r\n\r\n");

/**
 * Copies one message body from `src` to `dst`.
 *
 * @param output "same": as framed (length/close bodies); "chunked":
 *   re-encode a chunked body canonically; "raw": write a chunked body's data
 *   only (for HTTP/1.0 receivers, delimited by close).
 * @param fromServer the body comes from an upstream (framing errors are 502).
 * @param watch stamped after every read and write, and told which one is
 *   pending, so a stalled transfer can be stopped and blamed on its side.
 * @returns the number of body data bytes copied.
 * @throws {BodyError}
 */
export async function copyBody(
  src: BufferedReader,
  dst: Duplex,
  framing: BodyFraming,
  output: BodyOutput,
  fromServer: boolean,
  onProgress?: (n: number) => void,
  watch?: IdleWatch,
): Promise<number> {
  switch (framing.kind) {
    case "none":
      return 0;
    case "length":
      return await copyLength(src, dst, framing.length, onProgress, watch);
    case "close":
      return await copyUntilEof(src, dst, onProgress, watch);
    case "chunked":
      return await copyChunked(src, dst, output === "raw", fromServer, onProgress, watch);
  }
}

async function fill(src: BufferedReader, watch: IdleWatch | undefined): Promise<boolean> {
  if (watch) watch.waiting = "read";
  try {
    const more = await src.fill();
    watch?.touch();
    return more;
  } catch (e) {
    throw new BodyError("read failed", "source", e);
  }
}

async function write(dst: Duplex, data: Uint8Array, watch: IdleWatch | undefined): Promise<void> {
  if (watch) watch.waiting = "write";
  try {
    await writeAll(dst, data);
    watch?.touch();
  } catch (e) {
    throw new BodyError("write failed", "sink", e);
  }
}

async function copyLength(
  src: BufferedReader,
  dst: Duplex,
  length: number,
  onProgress: ((n: number) => void) | undefined,
  watch: IdleWatch | undefined,
): Promise<number> {
  let remaining = length;
  while (remaining > 0) {
    if (src.buffered === 0 && !(await fill(src, watch))) {
      throw new BodyError(
        `connection closed after ${length - remaining} of ${length} body bytes`,
        "source",
      );
    }
    const n = Math.min(src.buffered, remaining);
    await write(dst, src.buf.subarray(src.start, src.start + n), watch);
    src.consume(n);
    remaining -= n;
    onProgress?.(n);
  }
  return length;
}

async function copyUntilEof(
  src: BufferedReader,
  dst: Duplex,
  onProgress: ((n: number) => void) | undefined,
  watch: IdleWatch | undefined,
): Promise<number> {
  let total = 0;
  while (true) {
    if (src.buffered > 0) {
      const n = src.buffered;
      await write(dst, src.view(), watch);
      src.consume(n);
      total += n;
      onProgress?.(n);
    }
    if (!(await fill(src, watch))) return total;
  }
}

/** Per-call scratch for the chunked copier (one per copy; reused across reads). */
class ChunkedScratch {
  pieces: Uint8Array[] = [];
  out: Uint8Array = new Uint8Array(0);
  collect = (d: Uint8Array): void => {
    this.pieces.push(d);
  };
}

async function copyChunked(
  src: BufferedReader,
  dst: Duplex,
  raw: boolean,
  fromServer: boolean,
  onProgress: ((n: number) => void) | undefined,
  watch: IdleWatch | undefined,
): Promise<number> {
  const decoder = new ChunkedDecoder({ fromServer });
  const scratch = new ChunkedScratch();
  let total = 0;
  while (!decoder.done) {
    if (src.buffered === 0 && !(await fill(src, watch))) {
      throw new BodyError("connection closed in the middle of a chunked body", "source");
    }
    let consumed: number;
    try {
      consumed = decoder.decode(src.buf, src.start, src.end, scratch.collect);
    } catch (e) {
      if (e instanceof HttpParseError) throw new BodyError(e.message, "source", e);
      throw e;
    }
    const pieces = scratch.pieces;
    let size = 0;
    for (const p of pieces) size += p.length;
    total += size;
    if (raw) {
      for (const p of pieces) await write(dst, p, watch);
    } else {
      // One write per read: "hex CRLF data" for everything decoded now, then
      // the CRLF that ends the chunk, plus the last-chunk when the body ended.
      let need = size + 24 + (decoder.done ? CRLF_LAST.length : 2);
      if (size === 0) need = decoder.done ? 5 : 0;
      if (need > 0) {
        if (scratch.out.length < need) scratch.out = new Uint8Array(Math.max(need, 16384));
        const out = scratch.out;
        let o = 0;
        if (size > 0) {
          o = writeChunkHeader(out, 0, size);
          for (const p of pieces) {
            out.set(p, o);
            o += p.length;
          }
          if (decoder.done) {
            out.set(CRLF_LAST, o);
            o += CRLF_LAST.length;
          } else {
            out[o++] = 13;
            out[o++] = 10;
          }
        } else {
          out.set(CRLF_LAST.subarray(2), 0);
          o = 5;
        }
        await write(dst, out.subarray(0, o), watch);
      }
    }
    pieces.length = 0;
    src.consume(consumed);
    if (size > 0) onProgress?.(size);
  }
  return total;
}

/** Byte counts of a relay. */
export interface RelayCounts {
  /** a -> b */
  up: number;
  /** b -> a */
  down: number;
}

/**
 * Relays bytes both ways until both directions ended (each end of stream is
 * passed on as a half-close) or one side failed (then both are closed).
 * Bytes already buffered in either reader are relayed first. `watch` is
 * stamped by every read and write in either direction (its `onIdle` closes
 * `a` and `b` to end an idle relay). `checkUp` sees the bytes from `a`
 * before they are sent to `b`, and `checkDown` those from `b` before they
 * are sent to `a`; when one throws, the relay ends (both closed).
 */
export async function relay(
  aReader: BufferedReader,
  a: Duplex,
  bReader: BufferedReader,
  b: Duplex,
  counts: RelayCounts,
  watch?: IdleWatch,
  checkUp?: (bytes: Uint8Array) => void,
  checkDown?: (bytes: Uint8Array) => void,
): Promise<void> {
  let failed = false;
  const pump = async (src: BufferedReader, dst: Duplex, up: boolean): Promise<void> => {
    try {
      while (true) {
        const n = src.buffered;
        if (n > 0) {
          // Throws (ending the relay) before anything it refuses is sent on.
          if (up) checkUp?.(src.view());
          else checkDown?.(src.view());
          await writeAll(dst, src.view());
          watch?.touch();
          src.consume(n);
          if (up) counts.up += n;
          else counts.down += n;
        }
        if (!(await src.fill())) break;
        watch?.touch();
      }
      await dst.closeWrite().catch(() => {});
    } catch {
      if (!failed) {
        failed = true;
        try {
          a.close();
        } catch { /* closed */ }
        try {
          b.close();
        } catch { /* closed */ }
      }
    }
  };
  await Promise.all([pump(aReader, b, true), pump(bReader, a, false)]);
}
