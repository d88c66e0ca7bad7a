/**
 * Gives memory back once the proxy goes quiet.
 *
 * V8 collects garbage when it needs room, not when the program is idle, so a
 * proxy that served a burst of requests can sit at twice its live heap for
 * hours. Chrome's "memory reducer" fixes this with a full collection once a
 * tab stops allocating; this is the same idea for a proxy: after a quiet
 * spell (no new connection or request for `quietMs`), if the heap grew by at
 * least `minGrowthBytes` since the last collection, collect once.
 *
 * It needs a way to collect: V8's `gc()`, present when the process runs with
 * `--v8-flags=--expose-gc` (deno.json's tasks and the compiled binary do).
 * Without it the reducer does nothing.
 *
 * @module
 */

/** Options of {@linkcode MemoryReducer}. */
export interface MemoryReducerOptions {
  /** How long nothing must happen before collecting, ms. @default {250} */
  quietMs?: number;
  /**
   * Collect only when the heap (what it holds, or the memory it reserved)
   * grew by this much since the last collection. @default {4 MiB}
   */
  minGrowthBytes?: number;
  /** A full, synchronous collection. @default {globalThis.gc, if exposed} */
  gc?: () => void;
  /** The JavaScript heap's size now. @default {from Deno.memoryUsage()} */
  heap?: () => HeapSize;
}

/** Bytes of the JavaScript heap. */
export interface HeapSize {
  /** Held by objects, live or not yet collected. */
  used: number;
  /** Reserved by the heap, used or free. */
  total: number;
}

/** Collects garbage once after each busy spell (see the module docs). */
export class MemoryReducer {
  readonly #quietMs: number;
  readonly #minGrowth: number;
  readonly #gc: (() => void) | undefined;
  readonly #heap: () => HeapSize;
  #busy = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #baseline: HeapSize;
  #collections = 0;

  constructor(options: MemoryReducerOptions = {}) {
    this.#quietMs = options.quietMs ?? 250;
    this.#minGrowth = options.minGrowthBytes ?? 4 * 2 ** 20;
    this.#gc = options.gc ?? exposedGc();
    this.#heap = options.heap ?? denoHeap;
    this.#baseline = this.#gc ? this.#heap() : { used: 0, total: 0 };
  }

  /** False when there is no way to collect (no `--expose-gc`). */
  get enabled(): boolean {
    return this.#gc !== undefined;
  }

  /** Full collections made so far. */
  get collections(): number {
    return this.#collections;
  }

  /** Something happened (a connection, a request): the quiet spell starts over. */
  touch(): void {
    this.#busy = true;
    if (this.#timer === undefined && this.#gc) {
      const timer = setInterval(() => this.#tick(), this.#quietMs);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Stops watching. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    if (this.#busy) {
      this.#busy = false;
      return;
    }
    // A whole interval without activity: collect if it is worth it, then
    // sleep until the next touch.
    this.stop();
    const now = this.#heap();
    // V8 may have collected on its own meanwhile: measure growth from there.
    const base = this.#baseline;
    base.used = Math.min(base.used, now.used);
    base.total = Math.min(base.total, now.total);
    if (now.used - base.used < this.#minGrowth && now.total - base.total < this.#minGrowth) return;
    this.#gc!();
    this.#collections++;
    this.#baseline = this.#heap();
  }
}

function denoHeap(): HeapSize {
  const m = Deno.memoryUsage();
  return { used: m.heapUsed, total: m.heapTotal };
}

function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  // "last-resort" is V8's collect-all-available-garbage: repeated full
  // collections that also shrink the young generation and return free pages.
  return typeof gc === "function"
    ? () => gc({ type: "major", execution: "sync", flavor: "last-resort" })
    : undefined;
}
