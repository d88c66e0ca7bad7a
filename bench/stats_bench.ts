/**
 * Benchmark: summarise a 1,000,000-line access log (the "one million
 * log lines in a few seconds"), plus `--last 20` on the same log, which reads
 * backwards and touches only the end.
 *
 *   deno run -A bench/stats_bench.ts [--lines N]
 *
 * bench/run.ts imports {@linkcode runStatsBench} and prints the result in its table.
 *
 * @module
 */

import { join } from "node:path";
import { type AccessRecord, serialiseRecord } from "../lib/log/mod.ts";
import { summariseLog } from "../lib/stats/mod.ts";

/** One benchmark result. */
export interface StatsBenchResult {
  lines: number;
  /** Size of the generated log in bytes. */
  bytes: number;
  /** Seconds to summarise every line (rotated files included). */
  summariseSeconds: number;
  /** Lines per second. */
  linesPerSecond: number;
  /** Seconds for `--last 20`. */
  lastSeconds: number;
  /** Peak resident set size seen during the summary, in bytes. */
  peakRssBytes: number;
  /** Resident set size just before the summary (after generating the log), in bytes. */
  baselineRssBytes: number;
}

const HOSTS = [
  "api.github.test",
  "registry.npmjs.test",
  "pypi.test",
  "files.pythonhosted.test",
  "telemetry.test",
  "objects.githubusercontent.test",
  "example.test",
  "cdn.jsdelivr.test",
];

/** Writes a realistic log of `lines` records (10 MiB files, rotated like the writer does). */
export async function writeBenchLog(dir: string, lines: number): Promise<string> {
  const path = join(dir, "network-access.log");
  const t0 = Date.UTC(2026, 10, 1);
  const encoder = new TextEncoder();
  // One file per 200,000 lines, named like rotated files: .N oldest.
  const perFile = 200_000;
  const files = Math.ceil(lines / perFile);
  let i = 0;
  for (let f = files - 1; f >= 0; f--) {
    const name = f === 0 ? path : `${path}.${f}`;
    using file = await Deno.open(name, { write: true, create: true, truncate: true });
    const end = Math.min(lines, i + perFile);
    let batch: string[] = [];
    for (; i < end; i++) {
      const host = HOSTS[i % 7 === 0 ? 4 : (i * 2654435761) % HOSTS.length >>> 0];
      const denied = host === "telemetry.test";
      const rec: AccessRecord = {
        time: new Date(t0 + i * 250).toISOString(),
        client: `172.18.0.2:${30000 + (i % 30000)}`,
        method: i % 5 === 0 ? "CONNECT" : "GET",
        url: i % 5 === 0 ? `${host}:443` : `https://${host}/packages/${i % 977}/file-${i}.tgz`,
        host,
        decision: denied ? "deny" : "allow",
        source: i % 101 === 0 ? "prompt" : "rule",
        reason: denied ? `rule "${host}": deny-domain` : `rule "*.test": allow-domain`,
        status: denied ? 403 : 200,
        bytesUp: 120 + (i % 300),
        bytesDown: denied ? 60 : 1000 + (i % 50_000),
        durationMs: 3 + (i % 40),
      };
      batch.push(serialiseRecord(rec));
      if (batch.length === 10_000) {
        await file.write(encoder.encode(batch.join("\n") + "\n"));
        batch = [];
      }
    }
    if (batch.length) await file.write(encoder.encode(batch.join("\n") + "\n"));
  }
  return path;
}

/** Generates a log of `lines` lines in a temporary folder, summarises it, removes it. */
export async function runStatsBench(lines = 1_000_000): Promise<StatsBenchResult> {
  const dir = await Deno.makeTempDir({ prefix: "netmonitor-stats-bench-" });
  try {
    const path = await writeBenchLog(dir, lines);
    let bytes = 0;
    for await (const e of Deno.readDir(dir)) bytes += (await Deno.stat(join(dir, e.name))).size;
    const baseline = Deno.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, Deno.memoryUsage().rss);
    }, 20);
    const t0 = performance.now();
    const { stats } = await summariseLog(path);
    const summariseSeconds = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, Deno.memoryUsage().rss);
    if (stats.totals.requests !== lines) {
      throw new Error(`summarised ${stats.totals.requests} of ${lines} lines`);
    }
    const t1 = performance.now();
    const last = await summariseLog(path, { last: 20 });
    const lastSeconds = (performance.now() - t1) / 1000;
    if (last.stats.totals.requests !== Math.min(20, lines)) throw new Error("--last 20 is wrong");
    return {
      lines,
      bytes,
      summariseSeconds,
      linesPerSecond: lines / summariseSeconds,
      lastSeconds,
      peakRssBytes: peak,
      baselineRssBytes: baseline,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--lines");
  const lines = i >= 0 ? Number(Deno.args[i + 1]) : 1_000_000;
  const r = await runStatsBench(lines);
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MiB`;
  console.log(`stats: summarise ${r.lines.toLocaleString("en-US")} lines (${mib(r.bytes)})`);
  console.log(
    `  full summary   ${r.summariseSeconds.toFixed(2)} s  (${
      Math.round(r.linesPerSecond).toLocaleString("en-US")
    } lines/s)`,
  );
  console.log(`  --last 20      ${(r.lastSeconds * 1000).toFixed(1)} ms`);
  console.log(`  peak RSS       ${mib(r.peakRssBytes)} (${mib(r.baselineRssBytes)} before)`);
}
