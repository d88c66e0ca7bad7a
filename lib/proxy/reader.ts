/**
 * A growable read buffer over a {@linkcode Duplex}, and deadlines for reads.
 *
 * One buffer per connection side serves heads, bodies and relays, so the hot
 * path allocates nothing per request. Buffers start small (idle keep-alive
 * connections and tunnels are cheap), switch to a large one while data
 * streams in bulk, and give it back once reads turn small again: a tunnel
 * that downloaded something and then sits idle holds a few KiB, not 256.
 *
 * @module
 */

import type { Duplex } from "./types.ts";
import { coarseNow, schedule, TimedEntry, unschedule } from "./ticker.ts";

/** A read did not complete before its deadline. */
export class DeadlineError extends Error {
  override name = "DeadlineError";
}

export { coarseNow } from "./ticker.ts";

/**
 * A point in time after which waiting reads fail. Create one per phase
 * (a whole request head, say), so a client dribbling one byte at a time
 * cannot extend it.
 *
 * Deadlines share one coarse ticker instead of a timer each: a request
 * creates two or three of them, and per-request timers showed up in
 * profiles. They fire up to one tick late (ticker.ts).
 */
export class Deadline extends TimedEntry {
  /** When it expires, {@linkcode coarseNow} time. */
  override readonly at: number;
  #promise: Promise<never> | undefined;
  #reject: ((e: Error) => void) | undefined;
  #expired = false;
  readonly #message: string;

  constructor(ms: number, message: string) {
    super();
    this.at = coarseNow() + ms;
    this.#message = message;
    schedule(this);
  }

  /** Rejects with {@linkcode DeadlineError} when the deadline passes. */
  get promise(): Promise<never> {
    if (!this.#promise) {
      this.#promise = new Promise<never>((_, r) => (this.#reject = r));
      this.#promise.catch(() => {});
      if (this.#expired) this.#reject!(new DeadlineError(this.#message));
    }
    return this.#promise;
  }

  get expired(): boolean {
    return this.#expired;
  }

  /** @internal called by the ticker. */
  override expire(): void {
    unschedule(this);
    this.#expired = true;
    this.#reject?.(new DeadlineError(this.#message));
  }

  clear(): void {
    unschedule(this);
  }
}

/** Options of {@linkcode BufferedReader}. */
export interface BufferedReaderOptions {
  /** First buffer size. @default {4096} */
  initialSize?: number;
  /** The buffer never grows beyond this. @default {131072} */
  maxSize?: number;
}

/** The buffer size a tunnel relay grows to: fewer, larger reads and writes for bulk data. */
export const RELAY_STREAM_SIZE = 262144;

/** The buffer size a tunnel relay waits with while no data moves (see {@linkcode BufferedReader.quietSize}). */
export const RELAY_QUIET_SIZE = 1024;

const STREAM_SIZE = 131072;

/**
 * Large buffers given back by readers whose stream went quiet, by size, so a
 * stream that alternates between bursts and pauses does not allocate (and
 * zero) 256 KiB per burst. Bounded: at most this many per size are kept.
 */
const POOL_MAX = 8;
const pool = new Map<number, Uint8Array[]>();

function acquire(size: number): Uint8Array {
  return pool.get(size)?.pop() ?? new Uint8Array(size);
}

function release(buf: Uint8Array): void {
  if (buf.length !== STREAM_SIZE && buf.length !== RELAY_STREAM_SIZE) return;
  let free = pool.get(buf.length);
  if (!free) pool.set(buf.length, free = []);
  if (free.length >= POOL_MAX) return;
  // The next owner only ever sees bytes it read itself; zero anyway, so one
  // connection's data never sits in another's buffer.
  buf.fill(0);
  free.push(buf);
}

/** Number of large buffers in the shared pool (for tests). */
export function pooledBuffers(): number {
  let n = 0;
  for (const free of pool.values()) n += free.length;
  return n;
}

/** A read below 1/QUIET_FRACTION of a large buffer means its stream is no longer streaming. */
const QUIET_FRACTION = 16;

/** Buffered reads with explicit consumption. */
export class BufferedReader {
  buf: Uint8Array;
  /** Unconsumed bytes are `buf[start, end)`. */
  start = 0;
  end = 0;
  /** The source reached end of stream. */
  eof = false;
  readonly #src: Duplex;
  readonly #max: number;
  #inflight: Promise<boolean> | undefined;
  #fullReads = 0;
  /** The buffer used while the stream is quiet (the first one, unless {@linkcode quietSize} changed it). */
  #quiet: Uint8Array;
  /** Size of the last read, bytes. */
  #lastRead = 0;
  /**
   * The size the buffer grows to once reads keep filling it (data is
   * streaming). A relay raises it to {@linkcode RELAY_STREAM_SIZE}.
   */
  streamSize = STREAM_SIZE;

  constructor(src: Duplex, options: BufferedReaderOptions = {}) {
    this.#src = src;
    this.buf = this.#quiet = new Uint8Array(options.initialSize ?? 4096);
    this.#max = options.maxSize ?? 131072;
  }

  /**
   * Size of the buffer a quiet stream waits with. A relay lowers it: an idle
   * tunnel then holds two 1 KiB buffers instead of two 4 KiB ones, and
   * traffic that arrives switches to a large buffer after two full reads.
   */
  set quietSize(size: number) {
    if (size !== this.#quiet.length) this.#quiet = new Uint8Array(size);
  }

  /** Number of unconsumed bytes. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** True while a read is pending (see {@linkcode watch}). */
  get reading(): boolean {
    return this.#inflight !== undefined;
  }

  /** The unconsumed bytes (a view; valid until the next fill). */
  view(): Uint8Array {
    return this.buf.subarray(this.start, this.end);
  }

  /** Marks `n` bytes as consumed. */
  consume(n: number): void {
    this.start += n;
    if (this.start === this.end && this.#inflight === undefined) this.start = this.end = 0;
  }

  /** Removes and returns a copy of all unconsumed bytes. */
  take(): Uint8Array {
    const out = this.buf.slice(this.start, this.end);
    this.consume(out.length);
    return out;
  }

  /**
   * Reads more bytes into the buffer. Resolves false at end of stream (and
   * from then on), true when bytes were added. Shares a read already in
   * flight. Rejects with {@linkcode DeadlineError} when `deadline` passes
   * first (the read stays pending; close the source to end it).
   *
   * @param limit grow the buffer up to this many unconsumed bytes when it is
   *   full (heads); by default only streaming growth applies.
   */
  fill(deadline?: Deadline, limit?: number): Promise<boolean> {
    const p = this.#inflight ?? this.#startRead(limit);
    return deadline ? Promise.race([p, deadline.promise]) : p;
  }

  /**
   * Starts a read without waiting for it, so an end of stream is noticed
   * while the caller waits on something else (a decision). Resolves false at
   * end of stream; bytes that arrive stay buffered.
   */
  watch(): Promise<boolean> {
    return this.#inflight ?? this.#startRead();
  }

  #startRead(limit?: number): Promise<boolean> {
    if (this.eof) return Promise.resolve(false);
    this.#makeRoom(limit);
    const target = this.buf.subarray(this.end);
    const p = this.#src.read(target).then(
      (n) => {
        this.#inflight = undefined;
        if (n === null) {
          this.eof = true;
          return false;
        }
        // #makeRoom never runs while a read is in flight, so `target` is
        // still the free tail of this.buf.
        this.end += n;
        this.#lastRead = n;
        if (n === target.length) this.#fullReads++;
        return true;
      },
      (e) => {
        this.#inflight = undefined;
        throw e;
      },
    );
    this.#inflight = p;
    return p;
  }

  #makeRoom(limit?: number): void {
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.#fullReads >= 2 && this.buf.length < this.streamSize) {
        // Reads kept filling the buffer: data is streaming, use a bigger one.
        if (this.buf !== this.#quiet) release(this.buf);
        this.buf = acquire(this.streamSize);
        this.#fullReads = 0;
      } else if (
        this.buf !== this.#quiet &&
        this.#lastRead < Math.max(this.#quiet.length, this.buf.length / QUIET_FRACTION)
      ) {
        // The stream went quiet: the next read may wait for a long time, so
        // wait with the small buffer and let the large one serve others.
        release(this.buf);
        this.buf = this.#quiet;
        this.#fullReads = 0;
      }
      return;
    }
    if (this.end < this.buf.length) return;
    if (this.start > 0) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
      return;
    }
    // Full of unconsumed bytes (a large head): grow up to the caller's limit.
    const cap = Math.min(Math.max(limit ?? 0, this.buf.length), this.#max);
    if (this.buf.length >= cap) throw new RangeError("read buffer full");
    const next = new Uint8Array(Math.min(this.buf.length * 2, cap));
    next.set(this.buf.subarray(0, this.end));
    this.buf = next;
  }
}
