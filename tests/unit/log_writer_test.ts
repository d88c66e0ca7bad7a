import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AccessLog,
  type AccessRecord,
  DEFAULT_MAX_QUEUED_BYTES,
  rotatedPath,
  serialiseRecord,
} from "../../lib/log/mod.ts";

function rec(i: number, extra: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: new Date(Date.UTC(2026, 10, 28, 0, 0, 0, i)).toISOString(),
    client: "127.0.0.1:40000",
    method: "GET",
    url: `http://example.test/item/${i}`,
    host: "example.test",
    decision: "allow",
    source: "rule",
    reason: 'rule "example.test": allow-domain',
    status: 200,
    bytesUp: 0,
    bytesDown: i,
    durationMs: 1,
    ...extra,
  };
}

async function readLines(path: string): Promise<string[]> {
  try {
    const text = await Deno.readTextFile(path);
    return text === "" ? [] : text.replace(/\n$/, "").split("\n");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** All lines, oldest rotated file first. */
async function readAll(path: string, keep: number): Promise<string[]> {
  const out: string[] = [];
  for (let n = keep; n >= 1; n--) out.push(...await readLines(rotatedPath(path, n)));
  out.push(...await readLines(path));
  return out;
}

Deno.test("writer: keeps order under many concurrent writers and creates the folder", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "nested", "network-access.log");
    const errors: Error[] = [];
    const log = new AccessLog(path, { onError: (e) => errors.push(e) });
    // Many async "requests" interleaving their writes with awaits in between.
    let next = 0;
    await Promise.all(Array.from({ length: 50 }, async () => {
      for (let j = 0; j < 40; j++) {
        log.write(rec(next++));
        if (j % 7 === 0) await new Promise((r) => setTimeout(r, 0));
      }
    }));
    await log.close();
    const lines = await readLines(path);
    assert.equal(lines.length, 2000);
    lines.forEach((line, i) => assert.equal(JSON.parse(line).url, `http://example.test/item/${i}`));
    assert.deepEqual(errors, []);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: rotation keeps N files, never exceeds maxBytes and loses no lines", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lineBytes = serialiseRecord(rec(100)).length + 1;
    const maxBytes = lineBytes * 10 + 5; // 10 lines per file
    const log = new AccessLog(path, { maxBytes, keep: 3 });
    for (let i = 100; i < 135; i++) log.write(rec(i));
    await log.close();
    // 35 lines, 10 per file: current holds 5, .1 .2 .3 hold 10 each, the oldest 0 are gone.
    assert.equal((await readLines(path)).length, 5);
    for (const n of [1, 2, 3]) {
      assert.equal((await readLines(rotatedPath(path, n))).length, 10);
      assert.ok((await Deno.stat(rotatedPath(path, n))).size <= maxBytes);
    }
    await assert.rejects(Deno.stat(rotatedPath(path, 4)), Deno.errors.NotFound);
    const all = (await readAll(path, 3)).map((l) => JSON.parse(l).bytesDown);
    assert.deepEqual(all, Array.from({ length: 35 }, (_, i) => i + 100));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: a restarted writer continues the same files and rotates them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lineBytes = serialiseRecord(rec(100)).length + 1;
    let log = new AccessLog(path, { maxBytes: lineBytes * 4 });
    for (let i = 100; i < 106; i++) log.write(rec(i));
    await log.close();
    // A second process (or a restart) continues the same files.
    log = new AccessLog(path, { maxBytes: lineBytes * 4 });
    for (let i = 106; i < 110; i++) log.write(rec(i));
    await log.close();
    const all = (await readAll(path, 5)).map((l) => JSON.parse(l).bytesDown);
    assert.deepEqual(all, Array.from({ length: 10 }, (_, i) => i + 100));
    assert.equal((await readLines(path)).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: a reader holding the old file keeps reading it across a rotation", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const lineBytes = serialiseRecord(rec(100)).length + 1;
    const log = new AccessLog(path, { maxBytes: lineBytes * 3, keep: 2 });
    log.write(rec(100));
    await log.flush();
    using reader = await Deno.open(path);
    for (let i = 101; i < 105; i++) log.write(rec(i));
    await log.close();
    const buf = new Uint8Array(lineBytes * 4);
    let n = 0;
    for (;;) {
      const r = await reader.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    const lines = new TextDecoder().decode(buf.subarray(0, n)).trim().split("\n");
    assert.deepEqual(lines.map((l) => JSON.parse(l).bytesDown), [100, 101, 102]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: flush resolves only after earlier lines are on disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const log = new AccessLog(path);
    await log.flush(); // nothing queued: resolves at once
    log.write(rec(1));
    log.write(rec(2));
    assert.equal(log.pending, 2);
    await log.flush();
    assert.equal(log.pending, 0);
    assert.equal((await readLines(path)).length, 2);
    log.write(rec(3));
    await log.flush();
    assert.equal((await readLines(path)).length, 3);
    await log.close();
    await log.close(); // idempotent
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: writes after close are reported, not thrown", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const errors: Error[] = [];
    const log = new AccessLog(path, { onError: (e) => errors.push(e) });
    log.write(rec(1));
    await log.close();
    log.write(rec(2));
    log.write(rec(3));
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /closed/);
    assert.equal((await readLines(path)).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: a failing disk is reported and retried; lines arrive once it recovers", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.makeTempDir();
  try {
    // The log's folder is a plain file at first, so opening the log fails.
    const blocker = join(dir, "data");
    await Deno.writeTextFile(blocker, "not a folder");
    const path = join(blocker, "network-access.log");
    const errors: Error[] = [];
    let recovered = false;
    const log = new AccessLog(path, {
      onError: (e) => {
        errors.push(e);
        if (errors.length === 2 && !recovered) {
          recovered = true;
          Deno.removeSync(blocker);
        }
      },
    });
    for (let i = 0; i < 5; i++) log.write(rec(i));
    await log.close();
    assert.ok(errors.length >= 2);
    assert.match(errors[0].message, /Cannot write access log .*will retry/);
    const lines = await readLines(path);
    assert.deepEqual(lines.map((l) => JSON.parse(l).bytesDown), [0, 1, 2, 3, 4]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: close gives up on a dead disk after closeTimeoutMs and says how many were lost", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.makeTempDir();
  try {
    const blocker = join(dir, "data");
    await Deno.writeTextFile(blocker, "x");
    const errors: Error[] = [];
    const log = new AccessLog(join(blocker, "a.log"), {
      onError: (e) => errors.push(e),
      closeTimeoutMs: 50,
    });
    log.write(rec(1));
    log.write(rec(2));
    await log.close();
    assert.match(errors.at(-1)!.message, /closed with 2 record\(s\) not written/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: maxQueued bounds memory and reports drops", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.makeTempDir();
  try {
    const blocker = join(dir, "data");
    await Deno.writeTextFile(blocker, "x");
    const errors: Error[] = [];
    const log = new AccessLog(join(blocker, "a.log"), {
      onError: (e) => errors.push(e),
      maxQueued: 3,
      closeTimeoutMs: 30,
    });
    for (let i = 0; i < 5; i++) log.write(rec(i));
    assert.equal(log.pending, 3);
    assert.ok(errors.some((e) => /1 record\(s\) dropped after 3 queued/.test(e.message)));
    await log.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: the queue of a refusing disk is bounded by bytes too, not only by lines", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.makeTempDir();
  try {
    const blocker = join(dir, "data");
    await Deno.writeTextFile(blocker, "x");
    const errors: Error[] = [];
    // Defaults, as `netmonitor run` uses them. A denied request whose 8 KiB
    // target is all '"' or stray '%' is logged with a 24 KiB URL (each
    // becomes %22 or %25): 100,000 such lines held 2.5 GB while the disk
    // (full: the container can fill a bind-mounted workspace) refused them.
    const log = new AccessLog(join(blocker, "a.log"), {
      onError: (e) => errors.push(e),
      closeTimeoutMs: 30,
    });
    const url = "http://denied.test/" + "%22".repeat(8150);
    const lineBytes = serialiseRecord(rec(0, { url })).length + 1;
    const n = 4000; // ~100 MB of lines
    for (let i = 0; i < n; i++) log.write(rec(i, { url }));
    assert.ok(
      log.pending * lineBytes <= DEFAULT_MAX_QUEUED_BYTES,
      `${log.pending} lines of ${lineBytes} bytes queued`,
    );
    assert.ok(log.pending > 0);
    assert.ok(errors.some((e) => /record\(s\) dropped after .* queued/.test(e.message)));
    await log.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: lines are canonical JSON with redaction and one record per line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const log = new AccessLog(path);
    const r: AccessRecord = {
      durationMs: 3, // keys deliberately out of order
      bytesDown: 2,
      bytesUp: 1,
      status: 502,
      reason: 'rule "https://api.test/x?token=abc": allow-url',
      source: "rule",
      decision: "allow",
      host: "api.test",
      url: "https://bob:hunter2@api.test/x?token=abc&page=2",
      method: "GET",
      client: "127.0.0.1:1",
      time: "2026-11-28T00:11:17.123Z",
      error: "connect to https://api.test/?api_key=zzz failed\nsecond line",
    };
    log.write(r);
    await log.close();
    const text = await Deno.readTextFile(path);
    assert.equal(text.split("\n").length, 2); // one line plus the final newline
    assert.ok(!text.includes("hunter2") && !text.includes("abc") && !text.includes("zzz"));
    const back = JSON.parse(text);
    assert.deepEqual(Object.keys(back), [
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
    assert.equal(back.url, "https://REDACTED@api.test/x?token=REDACTED&page=2");
    assert.equal(back.reason, 'rule "https://api.test/x?token=REDACTED": allow-url');
    assert.equal(back.error, "connect to https://api.test/?api_key=REDACTED failed\nsecond line");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: a line cut by a crash is ended before new lines are appended", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const whole = serialiseRecord(rec(1));
    await Deno.writeTextFile(path, `${whole}\n${whole.slice(0, 40)}`);
    const log = new AccessLog(path);
    log.write(rec(2));
    await log.close();
    const lines = await readLines(path);
    assert.equal(lines.length, 3);
    assert.equal(lines[1], whole.slice(0, 40));
    assert.equal(JSON.parse(lines[2]).bytesDown, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: two processes sharing one log lose no line across rotations", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const maxBytes = (serialiseRecord(rec(100)).length + 1) * 3 + 5; // 3 lines per file
    const mod = new URL("../../lib/log/mod.ts", import.meta.url).href;
    const writer = (from: number) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `import { AccessLog } from "${mod}";
           const log = new AccessLog(${JSON.stringify(path)}, { maxBytes: ${maxBytes}, keep: 400 });
           for (let i = 0; i < 300; i++) {
             log.write({ time: new Date().toISOString(), client: "c", method: "GET",
               url: "http://x.test/", host: "x.test", decision: "allow", source: "rule",
               reason: "r", status: 200, bytesUp: 0, bytesDown: ${from} + i, durationMs: 1 });
             if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1));
           }
           await log.close();`,
        ],
        stdout: "null",
        stderr: "inherit",
      }).output();
    const results = await Promise.all([writer(1000), writer(2000)]);
    assert.deepEqual(results.map((r) => r.code), [0, 0]);
    const values = (await readAll(path, 400)).map((l) => JSON.parse(l).bytesDown).sort();
    const want = [
      ...Array.from({ length: 300 }, (_, i) => 1000 + i),
      ...Array.from({ length: 300 }, (_, i) => 2000 + i),
    ].sort();
    assert.deepEqual(values, want);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: a quiet writer sharing the log follows the busy one's rotations", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const line = serialiseRecord(rec(100)).length + 1;
    // The busy writer rotates every few lines; the quiet one writes too little to rotate.
    const busy = new AccessLog(path, { maxBytes: line * 5, keep: 3 });
    const quiet = new AccessLog(path, { maxBytes: line * 5, keep: 3 });
    for (let i = 0; i < 200; i++) {
      busy.write(rec(1000 + i));
      await busy.flush();
      if (i === 0) {
        quiet.write(rec(5000));
        await quiet.flush();
      }
    }
    quiet.write(rec(9999));
    await quiet.flush();
    await busy.close();
    await quiet.close();
    // Its last line is in the file everyone reads, not in a rotated (or deleted) one.
    const current = (await Deno.readTextFile(path)).trim().split("\n").map((l) =>
      JSON.parse(l).bytesDown
    );
    assert.ok(current.includes(9999), `current file holds ${JSON.stringify(current)}`);
    // And the sizes held: no file over maxBytes.
    for (const f of [path, `${path}.1`, `${path}.2`, `${path}.3`]) {
      const size = await Deno.stat(f).then((s) => s.size, () => 0);
      assert.ok(size <= line * 5, `${f}: ${size} bytes`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serialiseRecord: a long error is cut after redaction, saying how much was left out", () => {
  const base: AccessRecord = {
    time: "2026-11-29T00:00:00.000Z",
    client: "127.0.0.1:1",
    method: "GET",
    url: "http://e.test/",
    host: "e.test",
    decision: "error",
    source: "error",
    reason: "bad request",
    status: 400,
    bytesUp: 0,
    bytesDown: 0,
    durationMs: 0,
  };
  // A bad Host header of 64 KiB is quoted whole in its error; its secret sits across the cut.
  const error = `invalid host ${
    JSON.stringify("a".repeat(1990) + "/x?token=hunter2" + "b".repeat(65_000))
  }`;
  const line = serialiseRecord({ ...base, error });
  const back = JSON.parse(line) as AccessRecord;
  assert.equal(line.includes("hunter2"), false);
  assert.equal(back.error!.length < 2100, true);
  assert.match(back.error!, /\.\.\. \(\d+ more characters\)$/);
  // A short error is kept whole.
  assert.equal(JSON.parse(serialiseRecord({ ...base, error: "short" })).error, "short");
});
