import assert from "node:assert/strict";
import { Batcher } from "../../cli/run.ts";
import { coarseNow, Deadline } from "../../lib/proxy/reader.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `done()` (a loaded machine may run timers late), at most 5 s. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await sleep(10);
}

Deno.test("batcher: a burst is handed over once, in order, after the delay", async () => {
  const batches: number[][] = [];
  const b = new Batcher<number>((items) => batches.push(items), 30);
  for (let i = 0; i < 100; i++) b.push(i);
  assert.deepEqual(batches, [], "nothing before the delay");
  await until(() => batches.length > 0);
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0], Array.from({ length: 100 }, (_, i) => i));
  b.push(100);
  await until(() => batches.length > 1);
  assert.deepEqual(batches[1], [100], "a later item starts a new batch");
  b.close();
});

Deno.test("batcher: flush hands over at once; after close every item goes out at once", () => {
  const batches: string[][] = [];
  const b = new Batcher<string>((items) => batches.push(items), 10_000);
  b.push("a");
  b.push("b");
  b.flush();
  assert.deepEqual(batches, [["a", "b"]]);
  b.push("c");
  b.close(); // flushes "c", and leaves no timer behind (the test would leak one)
  b.push("d");
  assert.deepEqual(batches, [["a", "b"], ["c"], ["d"]]);
});

Deno.test("coarse clock: follows performance.now() by ticks, never ahead of it", async () => {
  const before = performance.now();
  const idle = coarseNow(); // no deadline pending: read fresh
  assert.ok(idle >= before && idle <= performance.now());
  const d = new Deadline(10_000, "x"); // the ticker runs now
  try {
    await until(() => coarseNow() > idle);
    const c = coarseNow();
    const now = performance.now();
    assert.ok(c <= now, "never ahead");
    assert.ok(c > idle, "the ticker moved it on");
  } finally {
    d.clear();
  }
  await sleep(60); // let the ticker stop
});
