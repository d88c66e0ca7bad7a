import assert from "node:assert/strict";
import { join } from "node:path";
import type { AccessRecord } from "../../lib/log/record.ts";
import { AccessLog } from "../../lib/log/mod.ts";
import { OTHER_HOSTS, StatsAccumulator, summariseLog, summariseMore } from "../../lib/stats/mod.ts";

const FIXTURE = new URL("../testdata/logs/network-access.log", import.meta.url).pathname;

function rec(time: string, host: string, extra: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time,
    client: "127.0.0.1:1",
    method: "GET",
    url: `http://${host}/`,
    host,
    decision: "allow",
    source: "rule",
    reason: "r",
    status: 200,
    bytesUp: 1,
    bytesDown: 10,
    durationMs: 1,
    ...extra,
  };
}

Deno.test("stats: the fixture log's numbers", async () => {
  const { stats } = await summariseLog(FIXTURE, { recent: 3, minutes: 10 });
  const s = stats.summary();
  assert.deepEqual(s.totals, {
    requests: 12,
    allowed: 7,
    denied: 4,
    prompted: 2,
    timedOut: 1,
    errors: 2,
    bytesUp: 600,
    bytesDown: 31010,
  });
  assert.equal(s.badLines, 2);
  assert.deepEqual(s.firstBadLine, {
    file: `${FIXTURE}.1`,
    line: 3,
    reason: "not JSON (truncated?)",
  });
  assert.equal(s.first, "2026-11-28T10:00:05.000Z");
  assert.equal(s.last, "2026-11-28T10:08:00.000Z");
  assert.deepEqual(
    s.hosts.map((h) => [h.host, h.requests, h.allowed, h.denied, h.errors]),
    [
      ["api.github.test", 3, 3, 0, 0],
      ["pypi.test", 3, 3, 0, 0],
      ["evil.test", 2, 0, 2, 0],
      ["[::1]", 1, 0, 1, 0],
      ["bad.test", 1, 0, 0, 1],
      ["down.test", 1, 1, 0, 1],
      ["telemetry.test", 1, 0, 1, 0],
    ],
  );
  const gh = s.hosts[0];
  assert.equal(gh.bytesUp, 500);
  assert.equal(gh.bytesDown, 21700);
  assert.equal(gh.firstSeen, "2026-11-28T10:00:05.000Z");
  assert.equal(gh.lastSeen, "2026-11-28T10:05:10.000Z");
  assert.deepEqual(s.recent.map((r) => r.host), ["[::1]", "bad.test", "pypi.test"]);
  // Ten minutes ending at 10:08: 09:59 .. 10:08.
  assert.equal(s.perMinute.start, "2026-11-28T09:59:00.000Z");
  assert.deepEqual(s.perMinute.counts, [0, 2, 1, 2, 2, 0, 2, 1, 1, 1]);
});

Deno.test("stats: since and last narrow the range", async () => {
  const since = await summariseLog(FIXTURE, { since: new Date("2026-11-28T10:03:00Z") });
  assert.equal(since.stats.totals.requests, 7);
  // Both bad lines are in files that hold records in range (a bad line has no time of its own).
  assert.equal(since.stats.badLines, 2);
  const later = await summariseLog(FIXTURE, { since: new Date("2026-11-28T10:04:00Z") });
  assert.equal(later.stats.totals.requests, 5);
  assert.equal(later.stats.badLines, 1); // .1 ends before 10:04 and is skipped whole
  const last = await summariseLog(FIXTURE, { last: 4 });
  assert.equal(last.stats.totals.requests, 4);
  assert.equal(last.stats.first, "2026-11-28T10:05:10.000Z");
  assert.equal(last.tail, undefined);
});

Deno.test("stats: follow mode continues with what is appended", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "network-access.log");
    const log = new AccessLog(path);
    log.write(rec("2026-11-28T10:00:00.000Z", "a.test"));
    await log.flush();
    const { stats, tail } = await summariseLog(path, { follow: true });
    assert.equal(stats.totals.requests, 1);
    log.write(rec("2026-11-28T10:00:01.000Z", "b.test", { decision: "deny", status: 403 }));
    log.write(rec("2026-11-28T10:00:02.000Z", "a.test"));
    await log.close();
    assert.equal(await summariseMore(tail!, stats), 2);
    const s = stats.summary();
    assert.deepEqual([s.totals.requests, s.totals.denied], [3, 1]);
    assert.deepEqual(s.hosts.map((h) => [h.host, h.requests]), [["a.test", 2], ["b.test", 1]]);
    assert.equal(await summariseMore(tail!, stats), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stats: the series ends at `until`; old minutes are pruned without changing it", () => {
  const acc = new StatsAccumulator({ minutes: 3 });
  // Ten hours of one request per minute: the minute map must stay small.
  const t0 = Date.UTC(2026, 10, 28, 0, 0, 30);
  for (let m = 0; m < 600; m++) acc.add(rec(new Date(t0 + m * 60_000).toISOString(), "a.test"));
  acc.add(rec(new Date(t0 + 599 * 60_000).toISOString(), "a.test"));
  const s = acc.summary();
  assert.equal(s.perMinute.start, "2026-11-28T09:57:00.000Z");
  assert.deepEqual(s.perMinute.counts, [1, 1, 2]);
  const later = acc.summary({ until: new Date("2026-11-28T10:00:30Z") });
  assert.deepEqual(later.perMinute.counts, [1, 2, 0]);
  // Non-canonical but valid times still count.
  const b = new StatsAccumulator({ minutes: 1 });
  b.add(rec("2026-11-28T10:00:00Z", "x.test"));
  assert.deepEqual(b.summary().perMinute.counts, [1]);
});

Deno.test("stats: hosts beyond the cap are pooled, not dropped", () => {
  const acc = new StatsAccumulator({ maxHosts: 2 });
  for (const h of ["a.test", "b.test", "c.test", "d.test", "c.test"]) {
    acc.add(rec("2026-11-28T10:00:00.000Z", h));
  }
  const s = acc.summary();
  assert.equal(s.totals.requests, 5);
  assert.deepEqual(
    s.hosts.map((h) => [h.host, h.requests]),
    [[OTHER_HOSTS, 3], ["a.test", 1], ["b.test", 1]],
  );
  assert.equal(s.hostsPooled, 2);
});

Deno.test("stats: an empty log", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { stats } = await summariseLog(join(dir, "none.log"), { minutes: 5 });
    const s = stats.summary({ until: new Date("2026-11-28T10:00:00Z") });
    assert.equal(s.totals.requests, 0);
    assert.deepEqual(s.hosts, []);
    assert.deepEqual(s.perMinute.counts, [0, 0, 0, 0, 0]);
    assert.equal(s.first, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
