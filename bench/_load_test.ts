/** Tests of the benchmark's output parsers and table, on output captured from wrk 4.1.0 and hey 0.1.4. */

import assert from "node:assert/strict";
import { parseHey, parseWrk, wrkDurationMs } from "./_load.ts";
import { addProblem, addSample, median, renderTable, type Row, val, verdict } from "./_table.ts";

const WRK_TINYPROXY =
  "Running 3s test @ http://127.0.0.1:18888/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency    11.07ms    6.84ms  55.66ms   65.27%\n    Req/Sec     2.70k   578.01     4.09k    76.67%\n  Latency Distribution\n     50%   11.61ms\n     75%   15.24ms\n     90%   19.07ms\n     99%   29.82ms\n  8072 requests in 3.01s, 9.65MB read\n  Socket errors: connect 0, read 8070, write 0, timeout 0\nRequests/sec:   2678.82\nTransfer/sec:      3.20MB\n";
const WRK_404 =
  "Running 1s test @ http://127.0.0.1:18777/missing\n  1 threads and 2 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     0.96ms  640.84us   8.25ms   92.62%\n    Req/Sec     2.01k   250.95     2.28k    72.73%\n  Latency Distribution\n     50%  834.00us\n     75%    1.10ms\n     90%    1.39ms\n     99%    4.15ms\n  2199 requests in 1.10s, 1.09MB read\n  Non-2xx or 3xx responses: 2199\nRequests/sec:   1999.51\nTransfer/sec:      0.99MB\n";
const HEY_404 =
  "\nSummary:\n  Total:\t0.0242 secs\n  Slowest:\t0.0154 secs\n  Fastest:\t0.0011 secs\n  Average:\t0.0077 secs\n  Requests/sec:\t247.7084\n  \n  Total data:\t2010 bytes\n  Size/request:\t335 bytes\n\nResponse time histogram:\n  0.001 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.002 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.004 [0]\t|\n  0.005 [0]\t|\n  0.007 [2]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.008 [0]\t|\n  0.010 [0]\t|\n  0.011 [0]\t|\n  0.013 [0]\t|\n  0.014 [0]\t|\n  0.015 [2]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n\n\nLatency distribution:\n  10% in 0.0024 secs\n  25% in 0.0060 secs\n  50% in 0.0065 secs\n  75% in 0.0154 secs\n  0% in 0.0000 secs\n  0% in 0.0000 secs\n  0% in 0.0000 secs\n\nDetails (average, fastest, slowest):\n  DNS+dialup:\t0.0004 secs, 0.0011 secs, 0.0154 secs\n  DNS-lookup:\t0.0000 secs, 0.0000 secs, 0.0000 secs\n  req write:\t0.0001 secs, 0.0000 secs, 0.0003 secs\n  resp wait:\t0.0070 secs, 0.0007 secs, 0.0142 secs\n  resp read:\t0.0002 secs, 0.0001 secs, 0.0006 secs\n\nStatus code distribution:\n  [404]\t6 responses\n\n\n\n";
const HEY_200 =
  "\nSummary:\n  Total:\t0.0056 secs\n  Slowest:\t0.0029 secs\n  Fastest:\t0.0012 secs\n  Average:\t0.0017 secs\n  Requests/sec:\t1069.7126\n  \n  Total data:\t1122 bytes\n  Size/request:\t187 bytes\n\nResponse time histogram:\n  0.001 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.001 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.002 [2]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.002 [0]\t|\n  0.002 [0]\t|\n  0.002 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n  0.002 [0]\t|\n  0.002 [0]\t|\n  0.003 [0]\t|\n  0.003 [0]\t|\n  0.003 [1]\t|\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\u25a0\n\n\nLatency distribution:\n  10% in 0.0012 secs\n  25% in 0.0015 secs\n  50% in 0.0015 secs\n  75% in 0.0029 secs\n  0% in 0.0000 secs\n  0% in 0.0000 secs\n  0% in 0.0000 secs\n\nDetails (average, fastest, slowest):\n  DNS+dialup:\t0.0004 secs, 0.0012 secs, 0.0029 secs\n  DNS-lookup:\t0.0000 secs, 0.0000 secs, 0.0000 secs\n  req write:\t0.0002 secs, 0.0000 secs, 0.0004 secs\n  resp wait:\t0.0010 secs, 0.0008 secs, 0.0013 secs\n  resp read:\t0.0001 secs, 0.0001 secs, 0.0002 secs\n\nStatus code distribution:\n  [200]\t6 responses\n\n\n\n";
const HEY_REFUSED =
  '\nSummary:\n  Total:\t0.0009 secs\n  Slowest:\t0.0000 secs\n  Fastest:\t0.0000 secs\n  Average:\t NaN secs\n  Requests/sec:\t6982.8745\n  \n\nResponse time histogram:\n\n\nLatency distribution:\n\nDetails (average, fastest, slowest):\n  DNS+dialup:\t NaN secs, 0.0000 secs, 0.0000 secs\n  DNS-lookup:\t NaN secs, 0.0000 secs, 0.0000 secs\n  req write:\t NaN secs, 0.0000 secs, 0.0000 secs\n  resp wait:\t NaN secs, 0.0000 secs, 0.0000 secs\n  resp read:\t NaN secs, 0.0000 secs, 0.0000 secs\n\nStatus code distribution:\n\nError distribution:\n  [6]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused\n\n';

Deno.test("wrkDurationMs converts every unit wrk prints", () => {
  assert.equal(wrkDurationMs("834.00us"), 0.834);
  assert.equal(wrkDurationMs("4.15ms"), 4.15);
  assert.equal(wrkDurationMs("1.10s"), 1100);
  assert.equal(wrkDurationMs("1.50m"), 90_000);
  assert.throws(() => wrkDurationMs("fast"), /Cannot parse wrk duration "fast"/);
});

Deno.test("parseWrk reads requests, percentiles and socket errors", () => {
  const r = parseWrk(WRK_TINYPROXY);
  assert.equal(r.requests, 8072);
  assert.equal(r.non2xx, 0);
  assert.equal(r.errors, 8070);
  assert.deepEqual(r.latencyMs, { 50: 11.61, 75: 15.24, 90: 19.07, 99: 29.82 });
  assert.ok(Math.abs(r.rps - 8072 / 3.01) < 1e-9);
});

Deno.test("parseWrk does not count error responses as throughput", () => {
  const r = parseWrk(WRK_404);
  assert.equal(r.requests, 2199);
  assert.equal(r.non2xx, 2199);
  assert.equal(r.rps, 0);
  assert.equal(r.latencyMs[50], 0.834);
});

Deno.test("parseHey reads statuses and percentiles, and counts only 2xx/3xx as throughput", () => {
  const ok = parseHey(HEY_200);
  assert.deepEqual(ok.statuses, { "200": 6 });
  assert.equal(ok.requests, 6);
  assert.equal(ok.non2xx, 0);
  assert.equal(ok.errors, 0);
  assert.ok(ok.rps > 0);
  assert.ok(ok.latencyMs[50] > 0);
  const notFound = parseHey(HEY_404);
  assert.deepEqual(notFound.statuses, { "404": 6 });
  assert.equal(notFound.non2xx, 6);
  assert.equal(notFound.rps, 0);
  assert.equal(notFound.latencyMs[75], 15.4);
});

Deno.test("parseHey counts transport errors, which hey's own Requests/sec includes", () => {
  const r = parseHey(HEY_REFUSED);
  assert.equal(r.errors, 6);
  assert.equal(r.requests, 0);
  assert.equal(r.rps, 0);
  assert.deepEqual(r.statuses, {});
  assert.throws(() => parseHey("nothing"), /Cannot parse hey output/);
});

Deno.test("median of odd, even and empty lists", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

Deno.test("table rows: medians, annotations, problems and verdicts", () => {
  const row: Row = {
    id: "x",
    metric: "req/s",
    cells: {},
    target: ">= 10x mitmdump",
    judge: (r) => (val(r, "netmonitor") ?? 0) >= 10 * (val(r, "mitmdump") ?? Infinity),
  };
  for (const v of [100, 300, 200]) addSample(row, "mitmdump", v);
  for (const v of [1900, 2100]) addSample(row, "netmonitor", v);
  assert.equal(val(row, "mitmdump"), 200);
  assert.equal(val(row, "netmonitor"), 2000);
  assert.equal(verdict(row), "PASS");
  addSample(row, "netmonitor", 1000);
  assert.equal(verdict(row), "FAIL");
  addProblem(row, "netmonitor", "12 non-2xx");
  const table = renderTable([row]).split("\n");
  assert.equal(table.length, 3);
  assert.match(table[0], /\| metric +\| +direct \| +tinyproxy \| +mitmdump \| +netmonitor \|/);
  assert.match(
    table[2],
    /\| req\/s +\| +– \| +– \| +200 \| +1,900 ! \| +>= 10x mitmdump \| +FAIL \|/,
  );
  const info: Row = { id: "i", metric: "info", cells: {}, target: "" };
  assert.equal(verdict(info), "info");
});
