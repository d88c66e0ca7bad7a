/**
 * Gives memory back once the proxy goes quiet.
 *
 * V8 collects garbage when it needs room, not when the program is idle, so a
 * proxy that served a burst of requests can sit at twice its live heap for
 * hours. Chrome's "memory reducer" fixes this with a full collection once a
 * tab stops allocating; this is the same idea for a proxy: after a quiet
 * spell (for `quietMs`, no new connection or request, and no body or tunnel
 * bytes moved), if the heap grew by at least `minGrowthBytes` since the last
 * collection, collect once.
 *
 * Growth alone misses one case: memory that was live at the last collection
 * and became garbage since, without the heap growing. A burst of clients
 * that each held a large half-sent request head, collected while they were
 * still connected, then closed: nothing grows, and 200 MB stays. So the
 * connections say how much they held when they close ({@linkcode freed}),
 * and that counts like growth.
 *
 * After collecting, the C allocator is asked to return its free pages to the
 * system (glibc's `malloc_trim`, through FFI when permitted): array buffers
 * are allocated with malloc, and glibc keeps freed 64 KiB blocks in its
 * arena, so without the trim a collection freed them for the process but the
 * RSS stayed.
 *
 * It needs a way to collect: V8's `gc()`, present when the process runs with
 * `--v8-flags=--expose-gc` (deno.json's tasks and the compiled binary do).
 * Without it the reducer does nothing.
 *
 * @module
 */

import { activityCount } from "./ticker.ts";

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
  /**
   * The JavaScript heap's size now, array buffers (V8's "external" memory)
   * included. @default {from Deno.memoryUsage()}
   */
  heap?: () => HeapSize;
  /**
   * Returns freed memory to the system after a collection.
   * @default {glibc's malloc_trim when FFI is permitted, else nothing}
   */
  trim?: () => void;
  /**
   * A count that grows while bytes move (bodies, tunnels): a change between
   * two ticks is activity, like {@linkcode MemoryReducer.touch}.
   * @default {the ticker's activityCount}
   */
  activity?: () => number;
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
  readonly #trim: (() => void) | undefined;
  #busy = false;
  /** Bytes that closed connections held, since the last collection. */
  #freed = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #baseline: HeapSize;
  #collections = 0;
  readonly #activity: () => number;
  #lastActivity: number;

  constructor(options: MemoryReducerOptions = {}) {
    this.#quietMs = options.quietMs ?? 250;
    this.#minGrowth = options.minGrowthBytes ?? 4 * 2 ** 20;
    this.#gc = options.gc ?? exposedGc();
    this.#heap = options.heap ?? denoHeap;
    this.#trim = "trim" in options ? options.trim : this.#gc ? mallocTrim() : undefined;
    this.#baseline = this.#gc ? this.#heap() : { used: 0, total: 0 };
    this.#activity = options.activity ?? activityCount;
    this.#lastActivity = this.#activity();
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

  /**
   * A connection that held `bytes` (its buffers) closed: they are garbage
   * now, worth a collection like growth of the heap.
   */
  freed(bytes: number): void {
    this.#freed += bytes;
    this.touch();
  }

  /** Stops watching. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    // A download or a tunnel in full flow makes no record until it ends: a
    // collection then (tens of ms with the allocator's trim) would stall it.
    const activity = this.#activity();
    if (this.#busy || activity !== this.#lastActivity) {
      this.#busy = false;
      this.#lastActivity = activity;
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
    if (
      now.used - base.used < this.#minGrowth && now.total - base.total < this.#minGrowth &&
      this.#freed < this.#minGrowth
    ) return;
    this.#gc!();
    this.#collections++;
    this.#freed = 0;
    try {
      this.#trim?.();
    } catch {
      // only an optimisation
    }
    this.#baseline = this.#heap();
  }
}

function denoHeap(): HeapSize {
  const m = Deno.memoryUsage();
  return { used: m.heapUsed + m.external, total: m.heapTotal + m.external };
}

/**
 * glibc's `malloc_trim(0)` through FFI, or undefined where it cannot be
 * had: not Linux, no glibc (musl has none), or no FFI permission. The
 * permission is queried, never requested: a request would prompt on the
 * terminal in the middle of the proxy's output.
 */
export function mallocTrim(): (() => void) | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
    const libc = Deno.dlopen("libc.so.6", {
      malloc_trim: { parameters: ["usize"], result: "i32" },
    });
    return () => void libc.symbols.malloc_trim(0n);
  } catch {
    return undefined;
  }
}

function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  // "last-resort" is V8's collect-all-available-garbage: repeated full
  // collections that also shrink the young generation and return free pages.
  return typeof gc === "function"
    ? () => gc({ type: "major", execution: "sync", flavor: "last-resort" })
    : undefined;
}
