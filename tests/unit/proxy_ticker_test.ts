import assert from "node:assert/strict";
import {
  schedule,
  scheduledCount,
  TICK_MS,
  TimedEntry,
  unschedule,
} from "../../lib/proxy/ticker.ts";
import { Deadline, DeadlineError } from "../../lib/proxy/reader.ts";
import { IdleWatch } from "../../lib/proxy/idle.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `done()` (a loaded machine may run timers late), at most 5 s. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await sleep(10);
}

class Probe extends TimedEntry {
  fired = 0;
  constructor(public at: number, readonly onExpire: (p: Probe) => void = (p) => unschedule(p)) {
    super();
  }
  override expire(): void {
    this.fired++;
    this.onExpire(this);
  }
}

Deno.test("ticker: entries are added once, removed in any order, and leave no links behind", () => {
  const before = scheduledCount();
  const far = performance.now() + 60_000;
  const probes = Array.from({ length: 6 }, () => new Probe(far));
  for (const p of probes) schedule(p);
  schedule(probes[2]); // twice: still once
  assert.equal(scheduledCount(), before + 6);
  // middle, head (the last added), tail (the first added), then the rest
  for (const i of [3, 5, 0, 1, 4, 2]) {
    unschedule(probes[i]);
    unschedule(probes[i]); // twice: no-op
    assert.equal(probes[i].scheduled, false);
    assert.equal(probes[i].prevTimed, null);
    assert.equal(probes[i].nextTimed, null);
  }
  assert.equal(scheduledCount(), before);
});

Deno.test("ticker: due entries expire, later ones wait; an expiry may unschedule others", async () => {
  const now = performance.now();
  const later = new Probe(now + 60_000);
  const victim = new Probe(now - 1);
  // A due entry that removes another due one before its turn: that one
  // does not expire.
  const killer = new Probe(now - 1, (p) => {
    unschedule(p);
    unschedule(victim);
  });
  const thrower = new Probe(now - 1, (p) => {
    unschedule(p);
    throw new Error("a buggy expiry");
  });
  // Added last, so the tick reaches it first (new entries go to the head).
  for (const p of [later, victim, thrower, killer]) schedule(p);
  try {
    await until(() => killer.fired > 0 && thrower.fired > 0);
    assert.equal(killer.fired, 1);
    assert.equal(victim.fired, 0, "unscheduled by another expiry before its turn");
    assert.equal(thrower.fired, 1, "a throwing expiry does not stop the tick");
    assert.equal(later.fired, 0);
    assert.equal(later.scheduled, true);
    assert.equal(victim.scheduled, false);
  } finally {
    unschedule(later);
  }
});

Deno.test("ticker: a Deadline rejects once it passes; a cleared one never does", async () => {
  const d = new Deadline(TICK_MS, "too slow");
  const kept = new Deadline(TICK_MS, "cleared");
  kept.clear();
  assert.equal(kept.scheduled, false);
  await assert.rejects(
    d.promise,
    (e: unknown) => e instanceof DeadlineError && e.message === "too slow",
  );
  assert.equal(d.expired, true);
  assert.equal(d.scheduled, false);
  await sleep(3 * TICK_MS);
  assert.equal(kept.expired, false);
});

Deno.test("ticker: an IdleWatch fires after its quiet spell, not while stamped", async () => {
  let fired = 0;
  const w = new IdleWatch(4 * TICK_MS, () => fired++);
  try {
    for (let i = 0; i < 6; i++) {
      await sleep(TICK_MS);
      w.touch();
    }
    assert.equal(fired, 0, "stamped every tick: never idle");
    await until(() => fired > 0);
    assert.equal(fired, 1);
    assert.equal(w.fired, true);
    assert.equal(w.scheduled, false);
  } finally {
    w.stop();
  }
});
