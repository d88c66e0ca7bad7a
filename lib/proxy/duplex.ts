/**
 * Byte-stream helpers around {@linkcode Duplex}: writing fully, adapting web
 * streams, counting bytes.
 *
 * @module
 */

import type { Duplex } from "./types.ts";

/** Writes all of `data`, looping over partial writes. */
export async function writeAll(d: Duplex, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) {
    off += await d.write(off === 0 ? data : data.subarray(off));
  }
}

/** Closes a Duplex, ignoring "already closed". */
export function closeQuietly(d: Duplex | undefined | null): void {
  if (!d) return;
  try {
    d.close();
  } catch {
    // already closed
  }
}

/**
 * Adapts a pair of web streams (for example a node TLS socket converted
 * with `Duplex.toWeb`, or a `Deno.TlsConn`'s streams) to {@linkcode Duplex}.
 *
 * @param onClose called once by `close()`, after both streams were cancelled.
 */
export function duplexFromStreams(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
  onClose?: () => void,
): Duplex {
  const reader = readable.getReader();
  const writer = writable.getWriter();
  let pending: Uint8Array | undefined;
  let closed = false;
  return {
    async read(p: Uint8Array): Promise<number | null> {
      if (!pending || pending.length === 0) {
        const r = await reader.read();
        if (r.done) return null;
        pending = r.value;
      }
      const n = Math.min(p.length, pending.length);
      p.set(n === pending.length ? pending : pending.subarray(0, n));
      pending = n === pending.length ? undefined : pending.subarray(n);
      return n;
    },
    async write(p: Uint8Array): Promise<number> {
      // The writer may keep the chunk: hand it a copy-free view only when the
      // caller will not reuse the buffer, which we cannot know; copy.
      await writer.write(p.slice());
      return p.length;
    },
    async closeWrite(): Promise<void> {
      await writer.close();
    },
    close(): void {
      if (closed) return;
      closed = true;
      reader.cancel().catch(() => {});
      writer.abort().catch(() => {});
      onClose?.();
    },
  };
}

/** Byte counters for a {@linkcode countingDuplex}. */
export interface ByteCounts {
  /** Bytes read from the wrapped stream. */
  read: number;
  /** Bytes written to it. */
  written: number;
}

/** Wraps a Duplex so every byte read and written is counted in `counts`. */
export function countingDuplex(inner: Duplex, counts: ByteCounts): Duplex {
  return {
    async read(p) {
      const n = await inner.read(p);
      if (n !== null) counts.read += n;
      return n;
    },
    async write(p) {
      const n = await inner.write(p);
      counts.written += n;
      return n;
    },
    closeWrite: () => inner.closeWrite(),
    close: () => inner.close(),
  };
}
