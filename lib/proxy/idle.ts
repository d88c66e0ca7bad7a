/**
 * Idle watches: "no byte moved for N ms" timers for message bodies and
 * tunnels.
 *
 * A transfer stamps its watch after every read and write (a number
 * assignment: no timer or promise per chunk, so bulk transfers pay nothing
 * measurable), and the coarse ticker that already checks read deadlines
 * (reader.ts) checks the watches too, so a response with a body adds no
 * timer of its own either.
 *
 * @module
 */

import { coarseNow, noteActivity, schedule, TimedEntry, unschedule } from "./ticker.ts";

/**
 * Fires `onIdle` once when no activity was stamped for `ms`. `ms` 0 (or less)
 * never fires. Call {@linkcode stop} when the transfer ends.
 */
export class IdleWatch extends TimedEntry {
  /** Last activity, {@linkcode coarseNow} time. */
  last: number;
  /**
   * What the transfer waits for now: a read from its source or a write to
   * its sink. When the watch fires, this says which side stalled.
   */
  waiting: "read" | "write" = "read";
  /** True once `onIdle` was called. */
  fired = false;

  constructor(readonly ms: number, readonly onIdle: (w: IdleWatch) => void) {
    super();
    this.last = coarseNow();
    if (ms > 0) schedule(this);
  }

  /** When the watch fires unless activity is stamped first (for the ticker). */
  override get at(): number {
    return this.last + this.ms;
  }

  /** Stamps activity now. */
  touch(): void {
    this.last = coarseNow();
    noteActivity();
  }

  /** Fires now if the timeout has passed; true once fired. */
  poll(now: number = coarseNow()): boolean {
    if (this.fired || this.ms <= 0 || now - this.last < this.ms) return this.fired;
    this.fired = true;
    unschedule(this);
    try {
      this.onIdle(this);
    } catch {
      // a handler only closes connections; there is nobody to tell
    }
    return true;
  }

  /** @internal called by the ticker once `at` has passed. */
  override expire(): void {
    this.poll();
  }

  /** Stops watching; `onIdle` will not be called any more. */
  stop(): void {
    unschedule(this);
  }
}
