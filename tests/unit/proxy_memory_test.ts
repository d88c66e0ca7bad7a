import assert from "node:assert/strict";
import { type HeapSize, mallocTrim, MemoryReducer } from "../../lib/proxy/memory.ts";
import { BufferedReader, pooledBuffers, RELAY_STREAM_SIZE } from "../../lib/proxy/reader.ts";
import type { Duplex } from "../../lib/proxy/types.ts";

const MiB = 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A reducer over a fake heap, counting collections; a collection empties the heap to `live`. */
function fakeReducer(quietMs = 50) {
  const heap: HeapSize & { live: number } = { used: 10 * MiB, total: 20 * MiB, live: 10 * MiB };
  let gcs = 0;
  let trims = 0;
  const reducer = new MemoryReducer({
    trim: () => void trims++,
    quietMs,
    minGrowthBytes: 4 * MiB,
    gc: () => {
      gcs++;
      heap.used = heap.live;
      heap.total = heap.live + 8 * MiB;
    },
    heap: () => ({ used: heap.used, total: heap.total }),
  });
  return { reducer, heap, gcs: () => gcs, trims: () => trims };
}

Deno.test("memory reducer: collects once after a busy spell, not during it", async () => {
  const { reducer, heap, gcs } = fakeReducer();
  try {
    // Busy: a touch every 5 ms for about four quiet intervals, while garbage piles up.
    for (let i = 0; i < 40; i++) {
      reducer.touch();
      heap.used += MiB;
      await sleep(5);
    }
    assert.equal(gcs(), 0, "no collection while requests keep coming");
    await sleep(200);
    assert.equal(gcs(), 1, "one collection once quiet");
    assert.equal(reducer.collections, 1);
    await sleep(200);
    assert.equal(gcs(), 1, "and no more while nothing happens");
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: bytes moving count as activity (a long download is not a quiet spell)", async () => {
  const heap = { used: 10 * MiB, total: 20 * MiB };
  let gcs = 0;
  let moved = 0;
  const reducer = new MemoryReducer({
    trim: () => {},
    quietMs: 50,
    minGrowthBytes: 4 * MiB,
    gc: () => {
      gcs++;
      heap.used = 10 * MiB;
    },
    heap: () => ({ ...heap }),
    activity: () => moved,
  });
  try {
    // One request opened the transfer; then only its chunks move, for about
    // six quiet intervals, while garbage piles up.
    reducer.touch();
    for (let i = 0; i < 60; i++) {
      moved++;
      heap.used += MiB;
      await sleep(5);
    }
    assert.equal(gcs, 0, "no collection while the transfer runs");
    await sleep(250);
    assert.equal(gcs, 1, "one once it stopped");
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: a spell that left little garbage is not worth a collection", async () => {
  const { reducer, heap, gcs } = fakeReducer();
  try {
    reducer.touch();
    heap.used += MiB;
    await sleep(200);
    assert.equal(gcs(), 0);
    // The next spell starts from the same baseline: growth adds up.
    reducer.touch();
    heap.used += 4 * MiB;
    await sleep(200);
    assert.equal(gcs(), 1);
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: a heap that reserved more memory is collected too", async () => {
  const { reducer, heap, gcs } = fakeReducer();
  try {
    reducer.touch();
    heap.total += 6 * MiB; // the young generation grew; objects died in it
    await sleep(200);
    assert.equal(gcs(), 1);
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: growth counts from V8's own collections", async () => {
  const { reducer, heap, gcs } = fakeReducer();
  try {
    heap.used = 6 * MiB; // V8 collected by itself below the baseline
    reducer.touch();
    await sleep(200);
    assert.equal(gcs(), 0);
    reducer.touch();
    heap.used += 4 * MiB; // 10 MiB: back at the old baseline, but 4 MiB above the new one
    await sleep(200);
    assert.equal(gcs(), 1);
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: buffers of closed connections count like growth, and memory is trimmed after", async () => {
  const { reducer, heap, gcs, trims } = fakeReducer();
  try {
    // Clients held large buffers while a collection ran, then closed: the
    // heap did not grow since, but what they held is garbage now.
    heap.live = heap.used = 200 * MiB;
    reducer.touch();
    await sleep(200);
    assert.equal(gcs(), 1, "collected while they were connected");
    heap.live = 10 * MiB;
    for (let i = 0; i < 3; i++) reducer.freed(MiB);
    await sleep(200);
    assert.equal(gcs(), 1, "3 MiB freed: not worth it yet");
    reducer.freed(MiB);
    await sleep(200);
    assert.equal(gcs(), 2, "4 MiB freed: collected");
    assert.equal(trims(), 2, "the allocator was trimmed after each collection");
    reducer.freed(MiB);
    await sleep(200);
    assert.equal(gcs(), 2, "the count starts over after a collection");
  } finally {
    reducer.stop();
  }
});

Deno.test("memory reducer: glibc's malloc_trim is found on Linux with FFI permitted", () => {
  const trim = mallocTrim();
  if (Deno.build.os !== "linux") return;
  assert.ok(trim, "malloc_trim through FFI");
  trim();
});

Deno.test("memory reducer: without a collector it is disabled and harmless", () => {
  const reducer = new MemoryReducer({ gc: undefined, heap: () => ({ used: 0, total: 0 }) });
  // The test runner has no --expose-gc, so the default finds no collector.
  assert.equal(reducer.enabled, typeof (globalThis as { gc?: unknown }).gc === "function");
  reducer.touch();
  reducer.stop();
});

/** A Duplex that hands out scripted reads: a number is that many bytes, null is end of stream. */
function scripted(reads: (number | null)[]): Duplex {
  let i = 0;
  return {
    read(p) {
      const n = reads[i++];
      if (n === null || n === undefined) return Promise.resolve(null);
      const k = Math.min(n, p.length);
      p.fill(7, 0, k);
      return Promise.resolve(k);
    },
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
}

async function drain(r: BufferedReader): Promise<number[]> {
  const sizes: number[] = [];
  while (await r.fill()) {
    sizes.push(r.buf.length);
    r.consume(r.buffered);
  }
  return sizes;
}

Deno.test("reader: streams with a large buffer, then waits with the quiet one again", async () => {
  const big = RELAY_STREAM_SIZE;
  const r = new BufferedReader(scripted([1024, 1024, big, big, 100, 10, null]), {
    initialSize: 4096,
  });
  r.streamSize = big;
  r.quietSize = 1024;
  const sizes = await drain(r);
  // The first read already waits with the quiet 1 KiB buffer; two full reads
  // switch to the large one; the small read after it hands it back, so the
  // next wait holds 1 KiB again.
  assert.deepEqual(sizes, [1024, 1024, big, big, big, 1024]);
  assert.ok(pooledBuffers() >= 1, "the large buffer went back to the pool");
});

Deno.test("reader: a pooled buffer is reused, zeroed, by the next stream", async () => {
  const big = RELAY_STREAM_SIZE;
  const first = new BufferedReader(scripted([1024, 1024, big, 10, null]), { initialSize: 1024 });
  first.streamSize = big;
  await drain(first);
  const pooled = pooledBuffers();
  assert.ok(pooled >= 1);
  const second = new BufferedReader(scripted([1024, 1024, null]), { initialSize: 1024 });
  second.streamSize = big;
  await second.fill();
  second.consume(second.buffered);
  await second.fill();
  second.consume(second.buffered);
  // The end of stream read runs with the large buffer, taken from the pool.
  await second.fill();
  assert.equal(second.buf.length, big);
  assert.equal(pooledBuffers(), pooled - 1);
  assert.ok(second.buf.every((b) => b === 0), "no bytes of the earlier stream");
});

Deno.test("reader: a head that grew the buffer does not keep it once the connection idles", async () => {
  const r = new BufferedReader(scripted([4096, 4096, 200, 50, null]), {
    initialSize: 4096,
    maxSize: 65536,
  });
  await r.fill();
  await r.fill(undefined, 65536); // full: the head needs more room, the buffer doubles
  assert.equal(r.buf.length, 8192);
  assert.equal(r.buffered, 8192);
  r.consume(r.buffered);
  await r.fill(); // 200 bytes: a quiet read
  r.consume(r.buffered);
  await r.fill();
  assert.equal(r.buf.length, 4096);
});
