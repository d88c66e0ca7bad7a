import assert from "node:assert/strict";
import {
  bar,
  barChart,
  formatBytes,
  formatDuration,
  formatRecordLine,
  makeStyle,
  renderTable,
  safeText,
  sparkline,
  stripAnsi,
  visibleWidth,
  wrap,
} from "../../cli/_render.ts";
import { parseSince } from "../../cli/stats.ts";
import type { AccessRecord } from "../../lib/log/record.ts";

const plain = makeStyle(false);
const colour = makeStyle(true);

const REC: AccessRecord = {
  time: "2026-11-28T10:11:17.123Z",
  client: "127.0.0.1:5555",
  method: "GET",
  url: "http://example.test/some/long/path?x=1",
  host: "example.test",
  decision: "allow",
  source: "rule",
  reason: 'rule "example.test": allow-domain',
  status: 200,
  bytesUp: 0,
  bytesDown: 12345,
  durationMs: 12.3,
};

Deno.test("render: formatRecordLine, plain, coloured and fitted", () => {
  const line = formatRecordLine(REC, { color: false });
  assert.match(
    line,
    /^\d\d:\d\d:17\.123 ALLOW GET {5}200 http:\/\/example\.test\/some\/long\/path\?x=1 {2}12\.1 KiB 12ms {2}rule "example\.test": allow-domain$/,
  );
  const c = formatRecordLine({ ...REC, decision: "deny", status: 403 }, { color: true });
  assert.ok(c.includes("\x1b[31mDENY \x1b[39m"));
  assert.equal(stripAnsi(c).replace("DENY ", "ALLOW").replace("403", "200"), line);
  for (const width of [60, 80, 120]) {
    assert.ok(visibleWidth(formatRecordLine(REC, { color: true, width })) <= width, `${width}`);
  }
  assert.match(
    formatRecordLine({ ...REC, url: "http://x.test/?api_key=abc&q=1" }, { color: false }),
    /http:\/\/x\.test\/\?api_key=REDACTED&q=1 /,
  );
  const hostile = formatRecordLine({ ...REC, url: "http://x.test/\x1b[2J", method: "G\x07T" }, {
    color: false,
  });
  assert.ok(![...hostile].some((ch) => ch.charCodeAt(0) < 0x20), "no control characters");
  assert.match(hostile, /\\u\{1b\}\[2J/);
});

Deno.test("render: a record line cuts a long error and URL at 2,000 characters, also without a width", () => {
  // The 400 for a Host header of 60,000 '"' quotes it, JSON-escaped: an
  // error of 120 KB. The log keeps 2,000 characters of it; the line printed
  // for it went out whole when stdout is not a terminal (run-monitored.sh
  // sends it to a file in the data dir that is never rotated): 120 KB per
  // request, 28 times the log line.
  const error = `invalid Host header ${JSON.stringify('"'.repeat(60000))}: invalid host`;
  const rec: AccessRecord = {
    ...REC,
    decision: "error",
    source: "error",
    reason: "malformed request",
    status: 400,
    error,
  };
  for (const color of [false, true]) {
    const line = stripAnsi(formatRecordLine(rec, { color }));
    assert.ok(line.length < 2600, `${line.length} characters`);
    assert.match(line, /malformed request: invalid Host header "\\"/);
    assert.match(line, /\.\.\. \(\d+ more characters\)$/);
  }
  // A denied 8 KiB target of '"' is logged (and was printed) as a 24 KiB URL.
  const url = "http://denied.test/" + "%22".repeat(8150);
  const line = formatRecordLine({ ...REC, url, decision: "deny", status: 403 }, { color: false });
  assert.ok(line.length < 2600, `${line.length} characters`);
  assert.match(line, /\.\.\. \(\d+ more characters\) {2}12\.1 KiB/);
});

Deno.test("render: tables fit the width, shrink the widest flexible column, then drop columns", () => {
  const cols = [
    { header: "HOST", flexible: true, minWidth: 10 },
    { header: "REQS", align: "right" as const },
    { header: "NOTE", flexible: true, minWidth: 6, dropOrder: 1 },
  ];
  const rows = [["a-very-long-host-name.example.test", "12", "some longer note here"], [
    "b.test",
    colour.green("3"),
    "x",
  ]];
  const wide = renderTable(cols, rows, { width: 100, style: plain });
  assert.deepEqual(wide, [
    "  HOST                                REQS  NOTE",
    "  a-very-long-host-name.example.test    12  some longer note here",
    `  ${"b.test".padEnd(34)}     ${colour.green("3")}  x`,
  ]);
  const mid = renderTable(cols, rows, { width: 50, style: plain });
  for (const l of mid) assert.ok(visibleWidth(l) <= 50, l);
  assert.match(mid[1], /…/);
  assert.equal(mid[0].split(/ +/).filter(Boolean).length, 3);
  const narrow = renderTable(cols, rows, { width: 24, style: plain });
  assert.deepEqual(narrow.map((l) => l.split(/ +/).filter(Boolean).length), [2, 2, 2]);
  for (const l of narrow) assert.ok(visibleWidth(l) <= 24, l);
  for (const l of renderTable(cols, rows, { width: 100, style: plain })) {
    assert.equal(l, l.trimEnd(), "no trailing spaces");
  }
});

Deno.test("render: the flexible column a table is about shrinks before the last fixed ones go", () => {
  const cols = [
    { header: "TIME" },
    { header: "DECISION" },
    { header: "STATUS", align: "right" as const, dropOrder: 0 },
    { header: "URL", flexible: true, minWidth: 30 },
    { header: "SIZE", align: "right" as const, dropOrder: 1 },
  ];
  const rows = [["10:08:00", "ALLOW", "200", "http://example.test/some/long/path?x=1", "2 KiB"]];
  const at = (width: number) => renderTable(cols, rows, { width, style: plain });
  // Room for everything but SIZE and STATUS at the URL's minWidth: those go first.
  assert.equal(at(52)[0], "  TIME      DECISION  URL");
  // Narrower: the URL is cut below its minWidth rather than dropped.
  assert.deepEqual(at(40), [
    "  TIME      DECISION  URL",
    "  10:08:00  ALLOW     http://example.te…",
  ]);
  // Narrower still: the rightmost fixed column goes before the URL.
  assert.deepEqual(at(24), ["  TIME      URL", "  10:08:00  http://exam…"]);
  assert.deepEqual(at(12), ["  URL", "  http://ex…"]);
  for (const w of [52, 40, 24, 12]) for (const l of at(w)) assert.ok(visibleWidth(l) <= w, l);
});

Deno.test("render: cells of 64 KB and 200,000 rows still fit, column for column", () => {
  const cols = [
    { header: "METHOD", flexible: true, minWidth: 6 },
    { header: "URL", flexible: true, minWidth: 10 },
    { header: "REASON", flexible: true, minWidth: 6, dropOrder: 1 },
  ];
  const huge = ["M".repeat(65536), "http://h.test/" + "u".repeat(65536), "r".repeat(65536)];
  const out = renderTable(cols, [huge, ...Array(200_000).fill(["GET", "/", "x"])], {
    width: 80,
    style: plain,
  });
  assert.equal(out.length, 200_002);
  for (const l of out.slice(0, 3)) assert.ok(visibleWidth(l) <= 80, l);
  assert.equal(out[0].split(/ +/).filter(Boolean).length, 3);
});

Deno.test("render: bars, charts, sparklines", () => {
  assert.equal(bar(0, 10, 10), "");
  assert.equal(bar(10, 10, 10), "██████████");
  assert.equal(bar(5, 10, 10), "█████");
  assert.equal(bar(1, 100, 10), "▏"); // tiny but visible
  const chart = barChart([{ label: "a.test", value: 4 }, { label: "b.test", value: 1 }], {
    width: 40,
    style: plain,
  });
  assert.equal(chart.length, 2);
  for (const l of chart) assert.ok(visibleWidth(l) <= 40, l);
  assert.match(chart[0], /^ {2}a\.test {2}█+ {2}4$/);
  assert.equal(sparkline([0, 1, 2, 4, 8]), "▁▂▃▅█");
  assert.equal(sparkline([0, 0]), "▁▁");
  assert.equal(sparkline([]), "");
});

Deno.test("render: numbers, wrapping and safe text", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(5 * 1024 ** 3), "5.0 GiB");
  assert.equal(formatDuration(850), "850ms");
  assert.equal(formatDuration(1200), "1.2s");
  assert.equal(formatDuration(125_000), "2m05s");
  assert.deepEqual(wrap("one two three four", 12), ["  one two", "  three four"]);
  assert.equal(safeText("ok"), "ok");
  assert.equal(safeText("a\u202eb\x9b"), "a\\u{202e}b\\u{9b}");
});

Deno.test("stats: --since accepts durations and times, and says what it wants", () => {
  const now = new Date("2026-11-28T12:00:00Z");
  assert.equal(parseSince("1h", now).toISOString(), "2026-11-28T11:00:00.000Z");
  assert.equal(parseSince("30m", now).toISOString(), "2026-11-28T11:30:00.000Z");
  assert.equal(parseSince("90s", now).toISOString(), "2026-11-28T11:58:30.000Z");
  assert.equal(parseSince("2d", now).toISOString(), "2026-11-26T12:00:00.000Z");
  assert.equal(parseSince("1w", now).toISOString(), "2026-11-21T12:00:00.000Z");
  assert.equal(parseSince("1.5h", now).toISOString(), "2026-11-28T10:30:00.000Z");
  assert.equal(parseSince("2026-11-28T10:00:00Z").toISOString(), "2026-11-28T10:00:00.000Z");
  for (const bad of ["yesterday", "1y", "", "-1h", "2026-13-45"]) {
    assert.throws(() => parseSince(bad, now), /expected a duration like 30m, 1h or 2d/, bad);
  }
});
