/**
 * The one coarse ticker behind every read deadline and idle watch.
 *
 * A request creates two to four timed things (a head deadline, a response
 * deadline, write and body watches), so they share one `setInterval` instead
 * of a timer each, and fire up to {@linkcode TICK_MS} late.
 *
 * The pending ones are kept in an intrusive doubly linked list, not a `Set`:
 * adding and removing a node allocates nothing. With a `Set`, the thousands
 * of adds and deletes per second resized its hash table over and over; the
 * tables that lived long enough to reach V8's old generation kept their stale
 * entries (young deadlines, and through them promises and closures of whole
 * requests) alive past every minor collection, and a proxy could fall into a
 * state where it promoted about 1.3 KB per request, doubling the scavenge
 * pauses and forcing a full collection every few seconds (measured on
 * 2026-11-29: 160 KB promoted per scavenge after a saturating load, none
 * with the list).
 *
 * @module
 */

/** How often pending entries are checked, ms: their resolution. */
export const TICK_MS = 25;

/**
 * Something the ticker checks: {@linkcode TimedEntry.expire} is called once
 * `at` has passed (it should {@linkcode unschedule} itself, or it is called
 * again on every tick).
 */
export abstract class TimedEntry {
  /** When it expires, {@linkcode coarseNow} time (may move later). */
  abstract readonly at: number;
  /** Called by the ticker once `at` has passed. */
  abstract expire(): void;
  /** @internal the ticker's list links; null while not scheduled. */
  prevTimed: TimedEntry | null = null;
  /** @internal */
  nextTimed: TimedEntry | null = null;
  /** @internal */
  scheduled = false;
}

let head: TimedEntry | null = null;
let ticker: ReturnType<typeof setInterval> | undefined;

/**
 * The ticker's clock: `performance.now()` read once per tick while the ticker
 * runs, and on every call while it does not. Deadlines and idle watches are
 * created and stamped several times per request, and each `performance.now()`
 * is a call into the runtime; they only need the ticker's resolution anyway.
 */
let coarse = 0;

/** `performance.now()`, up to {@linkcode TICK_MS} old while entries are pending. */
export function coarseNow(): number {
  return ticker === undefined ? (coarse = performance.now()) : coarse;
}

function tick(): void {
  const now = coarse = performance.now();
  // Collected first and expired after: an expiry may run code (an idle
  // watch's handler) that unschedules other entries, which would cut a walk
  // of the list short. One unscheduled meanwhile is skipped.
  let due: TimedEntry[] | undefined;
  for (let t = head; t !== null; t = t.nextTimed) {
    if (t.at <= now) (due ??= []).push(t);
  }
  if (due) {
    for (const t of due) {
      if (!t.scheduled) continue;
      try {
        t.expire();
      } catch {
        // an expiry only rejects a promise or closes connections; one that
        // throws must not stop the others
      }
    }
  }
  if (head === null && ticker !== undefined) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

/**
 * Adds `t` to the ticker (no-op when already there); it stays until
 * {@linkcode unschedule}. The ticker stops on the tick after the last one left.
 */
export function schedule(t: TimedEntry): void {
  if (t.scheduled) return;
  t.scheduled = true;
  t.prevTimed = null;
  t.nextTimed = head;
  if (head !== null) head.prevTimed = t;
  head = t;
  if (ticker === undefined) {
    coarse = performance.now();
    ticker = setInterval(tick, TICK_MS);
  }
}

/** Removes `t` from the ticker (no-op when not there). */
export function unschedule(t: TimedEntry): void {
  if (!t.scheduled) return;
  t.scheduled = false;
  const { prevTimed: prev, nextTimed: next } = t;
  if (prev !== null) prev.nextTimed = next;
  else head = next;
  if (next !== null) next.prevTimed = prev;
  // A removed entry references nothing: a dead one in the old generation
  // then keeps no young neighbour alive.
  t.prevTimed = t.nextTimed = null;
}

let moved = 0;

/**
 * Counts that bytes moved somewhere (a body or tunnel chunk: what stamps an
 * idle watch). Transfers make no records while they run, so this is how a
 * long download tells the memory reducer that the proxy is not idle.
 */
export function noteActivity(): void {
  moved++;
}

/** How many times {@linkcode noteActivity} was called; compare two readings. */
export function activityCount(): number {
  return moved;
}

/** Entries scheduled now (for tests). */
export function scheduledCount(): number {
  let n = 0;
  for (let t = head; t !== null; t = t.nextTimed) n++;
  return n;
}
