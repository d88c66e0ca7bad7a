import assert from "node:assert/strict";
import { join } from "node:path";
import { AccessLog, type AccessRecord, rotatedPath, serialiseRecord } from "../../lib/log/mod.ts";
import {
  type BadLine,
  LogTail,
  parseRecordLine,
  readAccessLog,
  readLastRecords,
} from "../../lib/log/reader.ts";

const FIXTURE = new URL("../testdata/logs/network-access.log", import.meta.url).pathname;

function rec(i: number, extra: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: new Date(Date.UTC(2026, 10, 28, 0, 0, i)).toISOString(),
    client: "127.0.0.1:40000",
    method: "GET",
    url: `http://example.test/${i}`,
    host: "example.test",
    decision: "allow",
    source: "rule",
    reason: "r",
    status: 200,
    bytesUp: 0,
    bytesDown: i,
    durationMs: 1,
    ...extra,
  };
}

async function collect(path: string, opts = {}): Promise<{ recs: AccessRecord[]; bad: BadLine[] }> {
  const bad: BadLine[] = [];
  const recs: AccessRecord[] = [];
  for await (const r of readAccessLog(path, { ...opts, onBadLine: (b) => bad.push(b) })) {
    recs.push(r);
  }
  return { recs, bad };
}

Deno.test("reader: rotated files oldest first, corrupt and truncated lines counted", async () => {
  const { recs, bad } = await collect(FIXTURE);
  assert.equal(recs.length, 12);
  const times = recs.map((r) => r.time);
  assert.deepEqual(times, [...times].sort());
  assert.equal(recs[0].url, "https://api.github.test/repos/a/b");
  assert.equal(recs[11].url, "http://pypi.test/simple/");
  assert.equal(bad.length, 2);
  assert.equal(bad[0].file, rotatedPath(FIXTURE, 1));
  assert.equal(bad[0].line, 3);
  assert.equal(bad[0].excerpt, "this is not json");
  assert.equal(bad[1].file, FIXTURE);
  assert.equal(bad[1].line, 6);
  assert.match(bad[1].reason, /truncated/);
});

Deno.test("reader: since skips older records (and whole rotated files)", async () => {
  const { recs, bad } = await collect(FIXTURE, { since: new Date("2026-11-28T10:05:00Z") });
  assert.equal(recs.length, 5);
  assert.equal(recs[0].host, "down.test");
  assert.equal(bad.length, 1); // only the truncated line is in range
});

Deno.test("reader: readLastRecords reads backwards across rotated files", async () => {
  const bad: BadLine[] = [];
  const last7 = await readLastRecords(FIXTURE, 7, { onBadLine: (b) => bad.push(b) });
  assert.deepEqual(
    last7.records.map((r) => r.time.slice(11, 19)),
    ["10:03:00", "10:03:30", "10:05:00", "10:05:10", "10:06:00", "10:07:00", "10:08:00"],
  );
  // Only the truncated last line lies in the part read; the corrupt line is further back.
  assert.equal(last7.badLines, 1);
  assert.equal(bad.length, 1);
  assert.equal((await readLastRecords(FIXTURE, 8)).badLines, 2);
  const all = await readLastRecords(FIXTURE, 1000);
  assert.equal(all.records.length, 12);
  const sinceAndLast = await readLastRecords(FIXTURE, 1000, {
    since: new Date("2026-11-28T10:06:00Z"),
  });
  assert.equal(sinceAndLast.records.length, 3);
  assert.deepEqual((await readLastRecords(FIXTURE, 0)).records, []);
});

Deno.test("reader: small chunks, multi-byte text and over-long lines", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lines = [
      serialiseRecord(rec(1, { url: "http://bücher.test/ünïcødé/€" })),
      "x".repeat(5000),
      serialiseRecord(rec(2)),
      "",
      serialiseRecord(rec(3, { reason: "日本語".repeat(50) })),
    ];
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    for (const chunkBytes of [7, 64, 1000, 1 << 20]) {
      const { recs, bad } = await collect(path, { chunkBytes, maxLineBytes: 1000 });
      assert.deepEqual(recs.map((r) => r.bytesDown), [1, 2, 3], `chunk ${chunkBytes}`);
      assert.equal(recs[0].url, "http://bücher.test/ünïcødé/€");
      assert.equal(recs[2].reason, "日本語".repeat(50));
      assert.equal(bad.length, 1, `chunk ${chunkBytes}`);
      assert.match(bad[0].reason, /longer than 1000 bytes/);
      assert.equal(bad[0].line, 2);
      const back = await readLastRecords(path, 10, { chunkBytes, maxLineBytes: 1000 });
      assert.deepEqual(back.records.map((r) => r.bytesDown), [1, 2, 3], `back chunk ${chunkBytes}`);
      assert.equal(back.badLines, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader: the line limit is in bytes, forwards and backwards, whatever the chunking", async () => {
  // Found by tests/unit/fuzz_log_test.ts: a line of 1,300 bytes but 500
  // characters passed a 1,000-byte limit when read forwards in one chunk,
  // and was refused by readLastRecords and by smaller chunks.
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const wide = serialiseRecord(rec(2, { reason: "中".repeat(400) }));
    assert.ok(wide.length < 1000 && new TextEncoder().encode(wide).length > 1000);
    await Deno.writeTextFile(
      path,
      [serialiseRecord(rec(1)), wide, serialiseRecord(rec(3))].join("\n") + "\n",
    );
    for (const chunkBytes of [7, 64, 1000, 1 << 20]) {
      const { recs, bad } = await collect(path, { chunkBytes, maxLineBytes: 1000 });
      assert.deepEqual(recs.map((r) => r.bytesDown), [1, 3], `chunk ${chunkBytes}`);
      assert.equal(bad.length, 1, `chunk ${chunkBytes}`);
      assert.match(bad[0].reason, /longer than 1000 bytes/);
      const back = await readLastRecords(path, 10, { chunkBytes, maxLineBytes: 1000 });
      assert.deepEqual(back.records.map((r) => r.bytesDown), [1, 3], `back chunk ${chunkBytes}`);
      assert.equal(back.badLines, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader: a cut line glued to the next whole one loses only the cut one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const a = serialiseRecord(rec(1));
    const b = serialiseRecord(rec(2));
    await Deno.writeTextFile(path, `${a.slice(0, 50)}${b}\n`);
    const { recs, bad } = await collect(path);
    assert.deepEqual(recs.map((r) => r.bytesDown), [2]);
    assert.equal(bad.length, 1);
    // Read backwards (stats --last) too.
    const last = await readLastRecords(path, 10);
    assert.deepEqual(last.records.map((r) => r.bytesDown), [2]);
    assert.equal(last.badLines, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader: a missing log reads as empty", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { recs, bad } = await collect(join(dir, "nope.log"));
    assert.deepEqual([recs, bad], [[], []]);
    assert.deepEqual((await readLastRecords(join(dir, "nope.log"), 5)).records, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader: parseRecordLine validates and fills defaults", () => {
  assert.throws(() => parseRecordLine("[1,2]"), /not a JSON object/);
  assert.throws(() => parseRecordLine('{"time":"x","host":"h","decision":"allow"}'), /time/);
  assert.throws(
    () => parseRecordLine('{"time":"2026-11-28T00:00:00Z","decision":"allow"}'),
    /host/,
  );
  assert.throws(
    () => parseRecordLine('{"time":"2026-11-28T00:00:00Z","host":"h","decision":"maybe"}'),
    /decision/,
  );
  assert.throws(() => parseRecordLine('{"time":"2026-11-'), /truncated/);
  const r = parseRecordLine('{"time":"2026-11-28T00:00:00Z","host":"h","decision":"deny"}');
  assert.equal(r.status, 0);
  assert.equal(r.url, "");
});

Deno.test("tail: reads only what was appended, across rotations, holding back a partial line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lineBytes = serialiseRecord(rec(10)).length + 1;
    const log = new AccessLog(path, { maxBytes: lineBytes * 3, keep: 3 });
    const tail = new LogTail(path);
    const next = async () => {
      const got: number[] = [];
      for await (const batch of tail.read()) got.push(...batch.map((r) => r.bytesDown));
      return got;
    };
    assert.deepEqual(await next(), []); // no file yet
    log.write(rec(10));
    log.write(rec(11));
    await log.flush();
    assert.deepEqual(await next(), [10, 11]);
    assert.deepEqual(await next(), []);
    // Three more: one fills the file, then a rotation, then two in the new file.
    for (let i = 12; i < 15; i++) log.write(rec(i));
    await log.flush();
    assert.deepEqual(await next(), [12, 13, 14]);
    // Two rotations between reads.
    for (let i = 15; i < 22; i++) log.write(rec(i));
    await log.close();
    assert.deepEqual(await next(), [15, 16, 17, 18, 19, 20, 21]);
    // A partial line is held back until its newline arrives.
    const extra = serialiseRecord(rec(22));
    await Deno.writeTextFile(path, extra.slice(0, 30), { append: true });
    assert.deepEqual(await next(), []);
    await Deno.writeTextFile(path, extra.slice(30) + "\n", { append: true });
    assert.deepEqual(await next(), [22]);
    assert.equal(tail.badLines, 0);
    // The file is truncated by hand: start again from its beginning.
    await Deno.writeTextFile(path, serialiseRecord(rec(23)) + "\n");
    assert.deepEqual(await next(), [23]);
    assert.equal(tail.records, 14);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tail: a reader polling while the writer rotates sees every line once, in order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lineBytes = serialiseRecord(rec(1000)).length + 1;
    // Small files and enough of them to hold everything: any loss is the reader's.
    const log = new AccessLog(path, { maxBytes: lineBytes * 37, keep: 200 });
    const tail = new LogTail(path, { maxRotated: 200 });
    const seen: number[] = [];
    let writing = true;
    const poller = (async () => {
      while (writing) {
        for await (const batch of tail.read()) seen.push(...batch.map((r) => r.bytesDown));
        await new Promise((r) => setTimeout(r, 1));
      }
      for await (const batch of tail.read()) seen.push(...batch.map((r) => r.bytesDown));
    })();
    for (let i = 0; i < 3000; i++) {
      log.write(rec(i));
      if (i % 97 === 0) await new Promise((r) => setTimeout(r, 0));
    }
    await log.close();
    writing = false;
    await poller;
    assert.equal(tail.badLines, 0);
    assert.equal(seen.length, 3000);
    assert.deepEqual(seen, Array.from({ length: 3000 }, (_, i) => i));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tail: a new file that reuses the inode of a rotated file read before is read", async () => {
  // Rotation deletes the oldest file and then creates the current one: on
  // ext4 the new file usually gets the deleted one's inode number.
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lines = (a: number, b: number) =>
      Array.from({ length: b - a }, (_, i) => serialiseRecord(rec(a + i)) + "\n").join("");
    await Deno.writeTextFile(rotatedPath(path, 1), lines(0, 2));
    await Deno.writeTextFile(path, lines(2, 4));
    const tail = new LogTail(path, { maxRotated: 1 });
    const next = async () => {
      const got: number[] = [];
      for await (const batch of tail.read()) got.push(...batch.map((r) => r.bytesDown));
      return got;
    };
    assert.deepEqual(await next(), [0, 1, 2, 3]);
    // A rotation with --log-keep 1, the deleted .1's inode coming back as the new file.
    const oldRotated = rotatedPath(path, 1);
    await Deno.rename(path, join(dir, "moving"));
    await Deno.writeTextFile(oldRotated, lines(4, 6)); // same inode, new contents
    await Deno.rename(oldRotated, path);
    await Deno.rename(join(dir, "moving"), rotatedPath(path, 1));
    assert.equal((await Deno.stat(path)).ino !== null, true);
    assert.deepEqual(await next(), [4, 5]);
    await Deno.writeTextFile(path, lines(6, 7), { append: true });
    assert.deepEqual(await next(), [6]);
    assert.equal(tail.badLines, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader: since counts records by start, though a long tunnel is written when it ends", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    // Written in order of ending: in the rotated file, 20 requests from 00:30 on,
    // then a tunnel that started at 00:00 and ended at 00:59; then the current file.
    const rotated = [
      ...Array.from({ length: 20 }, (_, i) => rec(1800 + i)),
      rec(0, { method: "CONNECT", durationMs: 3_540_000 }),
    ];
    await Deno.writeTextFile(rotatedPath(path, 1), rotated.map(serialiseRecord).join("\n") + "\n");
    await Deno.writeTextFile(path, [rec(3600), rec(3601)].map(serialiseRecord).join("\n") + "\n");
    const since = new Date(Date.UTC(2026, 10, 28, 0, 15));
    const { recs } = await collect(path, { since });
    assert.equal(recs.length, 22, "the 20 requests of the rotated file are in range");
    const last = await readLastRecords(path, 100, { since });
    assert.equal(last.records.length, 22);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
