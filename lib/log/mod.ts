/**
 * The access log writer: network-access.log, one JSON line per request.
 *
 * `write()` is synchronous and never throws, so the proxy never waits on the
 * disk. One writer task drains the queue in order, batching whatever piled up
 * while the previous write was in flight. A line leaves the queue only after it
 * reached the file: a failed write is reported through `onError` and retried
 * with backoff, never silently dropped.
 *
 * Rotation is by rename (`.4` -> `.5`, ..., current -> `.1`), so a reader that
 * has the old file open (`netmonitor stats --watch`) keeps reading it to the end.
 *
 * @module
 */

import { withFileLock } from "../file_lock.ts";
import { dirname } from "node:path";
import type { AccessRecord } from "./record.ts";
import { capText, REDACTED, redactText, redactUrl } from "./redact.ts";

export * from "./record.ts";
export {
  capText,
  isSecretParamName,
  looksLikeSecret,
  MAX_ERROR_CHARS,
  REDACTED,
  redactText,
  redactUrl,
} from "./redact.ts";

/** Options for {@linkcode AccessLog}. */
export interface AccessLogOptions {
  /** Rotate before the file would grow past this many bytes. Default 10 MiB. */
  maxBytes?: number;
  /** Rotated files kept (`network-access.log.1` .. `.keep`); 0 keeps none. Default 5. */
  keep?: number;
  /**
   * Called (never thrown) on a write, rotation or serialisation failure. The
   * writer keeps the lines and retries; see `maxQueued` for the only case where
   * lines are given up, which is reported here too.
   */
  onError?(err: Error): void;
  /**
   * Lines held in memory while the disk refuses writes. Beyond this, new lines
   * are counted and dropped (reported via `onError`) rather than growing memory
   * without bound. Default 100,000.
   */
  maxQueued?: number;
  /**
   * The same bound in bytes (UTF-16 units of the queued lines): a client
   * controls how long its lines are (a 8 KiB request target is logged as a
   * URL of up to 24 KiB), so 100,000 of them could hold gigabytes. Default
   * {@linkcode DEFAULT_MAX_QUEUED_BYTES}.
   */
  maxQueuedBytes?: number;
  /** How long `close()` keeps retrying a failing disk before giving up. Default 5,000 ms. */
  closeTimeoutMs?: number;
}

/** Default rotation size: 10 MiB. */
export const DEFAULT_MAX_BYTES = 10 * 1024 * 1024;
/** Default number of rotated files kept. */
export const DEFAULT_KEEP = 5;
/** Default for {@linkcode AccessLogOptions.maxQueuedBytes}: 64 MiB. */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;

const MAX_BATCH_BYTES = 1024 * 1024;
const RETRY_MIN_MS = 20;
const RETRY_MAX_MS = 2000;

const CANONICAL_KEYS = new Set([
  "time",
  "client",
  "method",
  "url",
  "host",
  "decision",
  "source",
  "reason",
  "status",
  "bytesUp",
  "bytesDown",
  "durationMs",
  "error",
]);

/**
 * Returns the record as its log line (without the newline): keys in the
 * canonical order of {@linkcode AccessRecord}, secrets redacted from the URL,
 * the reason and the error. Unknown extra keys (additive extensions) follow.
 */
export function serialiseRecord(rec: AccessRecord): string {
  const out: Record<string, unknown> = {
    time: rec.time,
    client: rec.client,
    method: rec.method,
    url: redactUrl(String(rec.url)),
    host: rec.host,
    decision: rec.decision,
    source: rec.source,
    reason: redactText(String(rec.reason)),
    status: rec.status,
    bytesUp: rec.bytesUp,
    bytesDown: rec.bytesDown,
    durationMs: rec.durationMs,
  };
  if (rec.error !== undefined) out.error = capText(redactText(String(rec.error)));
  for (const key of Object.keys(rec)) {
    if (!CANONICAL_KEYS.has(key)) out[key] = (rec as unknown as Record<string, unknown>)[key];
  }
  return JSON.stringify(out);
}

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The path of the n-th rotated file (`network-access.log.1` is the newest). */
export function rotatedPath(path: string, n: number): string {
  return `${path}.${n}`;
}

/** Appends {@linkcode AccessRecord}s to a JSON Lines file, with rotation and redaction. */
export class AccessLog {
  readonly path: string;
  readonly #maxBytes: number;
  readonly #keep: number;
  readonly #maxQueued: number;
  readonly #maxQueuedBytes: number;
  readonly #closeTimeoutMs: number;
  readonly #onError: (err: Error) => void;
  readonly #encoder = new TextEncoder();

  /** Pending lines, each ending in "\n"; `#head` is the first not yet written. */
  #queue: string[] = [];
  #head = 0;
  /** Total length of the lines from `#head` on. */
  #queuedBytes = 0;
  /** Unwritten bytes of the line at `#head` after a partial write. */
  #partial: Uint8Array | null = null;
  /** `#partial` is a newline ending someone else's cut line, not part of our queue. */
  #partialIsSeparator = false;
  #enqueued = 0;
  #settled = 0;
  #dropped = 0;
  #waiters: { target: number; resolve: () => void }[] = [];

  #file: Deno.FsFile | null = null;
  #size = 0;
  #drain: Promise<void> | null = null;
  #closing = false;
  #closed = false;
  #closeDeadline = 0;
  #reportedWriteAfterClose = false;

  /**
   * @param path the log file (created with mode 0600 with its folder if missing).
   * @param opts see {@linkcode AccessLogOptions}.
   */
  constructor(path: string, opts: AccessLogOptions = {}) {
    this.path = path;
    this.#maxBytes = Math.max(1, opts.maxBytes ?? DEFAULT_MAX_BYTES);
    this.#keep = Math.max(0, Math.floor(opts.keep ?? DEFAULT_KEEP));
    this.#maxQueued = Math.max(1, opts.maxQueued ?? 100_000);
    this.#maxQueuedBytes = Math.max(1, opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES);
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? 5000;
    this.#onError = (err) => {
      try {
        opts.onError?.(err);
      } catch {
        // A faulty error callback must not break the writer.
      }
    };
  }

  /** Lines queued but not yet written. */
  get pending(): number {
    return this.#queue.length - this.#head;
  }

  /**
   * Queues one record (redacted, serialised now, written soon in order).
   * Never throws and never waits.
   */
  write(rec: AccessRecord): void {
    if (this.#closing) {
      if (!this.#reportedWriteAfterClose) {
        this.#reportedWriteAfterClose = true;
        this.#onError(new Error(`Cannot write to access log "${this.path}": it is closed`));
      }
      return;
    }
    let line: string;
    try {
      line = serialiseRecord(rec);
    } catch (e) {
      // Keep the record, without what could not be made safe to write.
      const why = `record cut short: ${toError(e).message}`;
      try {
        line = serialiseRecord({ ...rec, url: REDACTED, reason: REDACTED, error: why });
      } catch {
        this.#onError(new Error(`Cannot serialise access record: ${toError(e).message}`));
        return;
      }
      this.#onError(new Error(`Access record of ${rec.method} ${rec.host}: ${why}`));
    }
    this.#enqueued++;
    const pending = this.pending;
    if (
      pending >= this.#maxQueued ||
      (pending > 0 && this.#queuedBytes + line.length + 1 > this.#maxQueuedBytes)
    ) {
      this.#dropped++;
      this.#settled++;
      if (this.#dropped === 1 || this.#dropped % 1000 === 0) {
        this.#onError(
          new Error(
            `Access log "${this.path}" is not writable: ${this.#dropped} record(s) dropped ` +
              `after ${pending} queued (${this.#queuedBytes} bytes)`,
          ),
        );
      }
      return;
    }
    this.#queuedBytes += line.length + 1;
    this.#queue.push(line + "\n");
    this.#drain ??= this.#run();
  }

  /** Resolves once every record written before this call is in the file. */
  flush(): Promise<void> {
    if (this.#settled >= this.#enqueued) return Promise.resolve();
    const target = this.#enqueued;
    return new Promise((resolve) => this.#waiters.push({ target, resolve }));
  }

  /**
   * Flushes, syncs and closes the file. Later writes are reported, not queued.
   * If the disk keeps failing for `closeTimeoutMs`, the remaining lines are
   * reported as lost and close completes anyway, so shutdown cannot hang.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closing = true;
    this.#closeDeadline = Date.now() + this.#closeTimeoutMs;
    await this.flush();
    await this.#drain;
    this.#closed = true;
    if (this.#file) {
      try {
        await this.#file.syncData();
      } catch (e) {
        this.#onError(toError(e));
      }
      try {
        this.#file.close();
      } catch {
        // already closed
      }
      this.#file = null;
    }
  }

  #settle(n: number): void {
    this.#settled += n;
    if (this.#waiters.length === 0) return;
    const still = [];
    for (const w of this.#waiters) {
      if (w.target <= this.#settled) w.resolve();
      else still.push(w);
    }
    this.#waiters = still;
  }

  async #run(): Promise<void> {
    let backoff = RETRY_MIN_MS;
    while (this.pending > 0) {
      try {
        await this.#writeBatch();
        backoff = RETRY_MIN_MS;
      } catch (e) {
        this.#onError(
          new Error(`Cannot write access log "${this.path}": ${toError(e).message} (will retry)`),
        );
        this.#dropFile();
        if (this.#closing && Date.now() >= this.#closeDeadline) {
          const lost = this.pending;
          this.#queue = [];
          this.#head = 0;
          this.#queuedBytes = 0;
          this.#partial = null;
          this.#partialIsSeparator = false;
          this.#onError(
            new Error(`Access log "${this.path}" closed with ${lost} record(s) not written`),
          );
          this.#settle(lost);
          break;
        }
        await delay(backoff);
        backoff = Math.min(RETRY_MAX_MS, backoff * 2);
      }
    }
    this.#drain = null;
  }

  #dropFile(): void {
    if (!this.#file) return;
    try {
      this.#file.close();
    } catch {
      // already closed
    }
    this.#file = null;
  }

  async #open(): Promise<void> {
    const options = { append: true, create: true, mode: 0o600 } as const;
    try {
      this.#file = await Deno.open(this.path, options);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      await Deno.mkdir(dirname(this.path), { recursive: true });
      this.#file = await Deno.open(this.path, options);
    }
    this.#size = (await this.#file.stat()).size;
    if (
      this.#partial === null && this.#size > 0 && !(await endsWithNewline(this.path, this.#size))
    ) {
      // A crash cut the last line short: end it, so our first line stays whole
      // and the reader counts only the cut one as bad.
      this.#partial = new Uint8Array([10]);
      this.#partialIsSeparator = true;
    }
  }

  /** Writes the lines at the head of the queue that fit before the next rotation. */
  async #writeBatch(): Promise<void> {
    if (!this.#file) await this.#open();
    else if (!this.#partial) await this.#follow();
    if (this.#partial) {
      // The tail of a line whose head reached the file before a failure.
      const rest = this.#partial;
      let off = 0;
      try {
        while (off < rest.length) off += await this.#file!.write(rest.subarray(off));
      } finally {
        this.#size += off;
        this.#partial = off < rest.length ? rest.subarray(off) : null;
      }
      if (this.#partialIsSeparator) {
        this.#partialIsSeparator = false;
      } else {
        this.#advance(1);
        this.#settle(1);
        this.#compact();
      }
      if (this.pending === 0) return;
    }
    const first = this.#encoder.encode(this.#queue[this.#head]);
    if (this.#size > 0 && this.#size + first.length > this.#maxBytes) {
      await this.#rotate(first.length);
      if (this.#partial) return; // reopened a cut file: end its line first
    }
    const chunks = [first];
    let bytes = first.length;
    for (let i = this.#head + 1; i < this.#queue.length && bytes < MAX_BATCH_BYTES; i++) {
      const b = this.#encoder.encode(this.#queue[i]);
      if (this.#size + bytes + b.length > this.#maxBytes) break;
      chunks.push(b);
      bytes += b.length;
    }
    const buf = chunks.length === 1 ? first : concat(chunks, bytes);
    let off = 0;
    try {
      while (off < buf.length) off += await this.#file!.write(buf.subarray(off));
    } catch (e) {
      if (off > 0) this.#keepUnwritten(chunks, off);
      throw e;
    }
    this.#size += bytes;
    this.#advance(chunks.length);
    this.#settle(chunks.length);
    this.#compact();
  }

  /**
   * Another process may share the log (one proxy per Docker network): take
   * the file's size from the file, not from our own writes, and if the path
   * names another file now (it rotated ours away), reopen. Otherwise a
   * writer that logs little would never rotate, and so never notice, and
   * append to a rotated file until rotation deleted it.
   */
  async #follow(): Promise<void> {
    const [ours, current] = await Promise.all([
      this.#file!.stat(),
      Deno.stat(this.path).catch((e) => {
        if (e instanceof Deno.errors.NotFound) return null;
        throw e;
      }),
    ]);
    if (current === null || (ours.ino !== null && current.ino !== ours.ino)) {
      this.#dropFile();
      await this.#open();
    } else {
      this.#size = ours.size;
    }
  }

  /**
   * Moves `#head` past `n` written lines, letting go of their text at once:
   * the array keeps its slots until {@linkcode #compact}, and they would
   * otherwise keep up to 4,096 written lines (of up to ~25 KB each) alive.
   */
  #advance(n: number): void {
    for (let i = this.#head; i < this.#head + n; i++) {
      this.#queuedBytes -= this.#queue[i].length;
      this.#queue[i] = "";
    }
    this.#head += n;
  }

  #compact(): void {
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * Part of a batch reached the file before a failure: settle the whole lines,
   * and keep the rest of a cut line as raw bytes, so that a retry neither
   * duplicates nor loses anything.
   */
  #keepUnwritten(chunks: Uint8Array[], written: number): void {
    this.#size += written;
    let done = 0;
    let rest = written;
    while (done < chunks.length && rest >= chunks[done].length) {
      rest -= chunks[done].length;
      done++;
    }
    this.#advance(done);
    this.#settle(done);
    if (rest > 0) this.#partial = chunks[done].subarray(rest);
  }

  /**
   * Renames current -> .1 -> .2 ... -> .keep. If another process rotated the
   * file under us (the path now names a different file), reopen instead.
   * Processes sharing the log take turns (a lock next to it): two rename
   * chains at once would overwrite each other's files.
   */
  #rotate(nextLineBytes: number): Promise<void> {
    return withFileLock(`${this.path}.lock`, () => this.#rotateLocked(nextLineBytes));
  }

  async #rotateLocked(nextLineBytes: number): Promise<void> {
    const ours = await this.#file!.stat();
    let current: Deno.FileInfo | null = null;
    try {
      current = await Deno.stat(this.path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (current === null || (ours.ino !== null && current.ino !== ours.ino)) {
      this.#dropFile();
      await this.#open();
      if (this.#size === 0 || this.#size + nextLineBytes <= this.#maxBytes) return;
    }
    this.#dropFile();
    if (this.#keep === 0) {
      await removeIfExists(this.path);
    } else {
      await removeIfExists(rotatedPath(this.path, this.#keep));
      for (let n = this.#keep - 1; n >= 1; n--) {
        await renameIfExists(rotatedPath(this.path, n), rotatedPath(this.path, n + 1));
      }
      await renameIfExists(this.path, rotatedPath(this.path, 1));
    }
    await this.#open();
  }
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

async function endsWithNewline(path: string, size: number): Promise<boolean> {
  try {
    using f = await Deno.open(path, { read: true });
    await f.seek(size - 1, Deno.SeekMode.Start);
    const b = new Uint8Array(1);
    return (await f.read(b)) !== 1 || b[0] === 10;
  } catch {
    return true; // cannot tell; appending as usual is the best we can do
  }
}

async function renameIfExists(from: string, to: string): Promise<void> {
  try {
    await Deno.rename(from, to);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
