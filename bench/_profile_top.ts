/**
 * Summarise a V8 .cpuprofile (from `deno run --cpu-prof`): the functions with
 * the most self time and the most total (inclusive) time.
 *
 *   deno run -A bench/_profile_top.ts PROFILE.cpuprofile [--top 25] [--filter lib/]
 *
 * Start netmonitor with a profiler through the benchmark:
 *
 *   deno task bench --only http --netmonitor-cmd \
 *     "deno run -A --cpu-prof --cpu-prof-dir=/tmp/nm-prof main.ts"
 *
 * @module
 */

import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
/** The parts of the V8 CPU profile format this reads. */
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One line of the summary. */
export interface Hot {
  name: string;
  /** Milliseconds with this function on top of the stack. */
  selfMs: number;
  /** Milliseconds with this function anywhere on the stack. */
  totalMs: number;
}

function label(f: CallFrame, root: string): string {
  const name = f.functionName || "(anonymous)";
  if (!f.url) return name;
  const where = f.url.replace(/^file:\/\//, "").replace(root, "");
  return `${name} ${where}:${f.lineNumber + 1}`;
}

/** Self and total time per function, biggest self time first. */
export function summarise(p: CpuProfile, root = ""): { hot: Hot[]; totalMs: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let totalMs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the following delta to it.
    const ms = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000;
    totalMs += ms;
    let id: number | undefined = p.samples[i];
    const top = byId.get(id)!;
    const topName = label(top.callFrame, root);
    self.set(topName, (self.get(topName) ?? 0) + ms);
    const seen = new Set<string>();
    while (id !== undefined) {
      const name = label(byId.get(id)!.callFrame, root);
      if (!seen.has(name)) {
        seen.add(name);
        total.set(name, (total.get(name) ?? 0) + ms);
      }
      id = parent.get(id);
    }
  }
  const hot = [...total.keys()].map((name) => ({
    name,
    selfMs: self.get(name) ?? 0,
    totalMs: total.get(name) ?? 0,
  }));
  hot.sort((a, b) => b.selfMs - a.selfMs);
  return { hot, totalMs };
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { top: { type: "string", default: "25" }, filter: { type: "string" } },
  });
  if (positionals.length !== 1) {
    console.error(
      "Usage: deno run -A bench/_profile_top.ts PROFILE.cpuprofile [--top N] [--filter TEXT]",
    );
    Deno.exit(2);
  }
  const root = new URL("..", import.meta.url).pathname;
  const p = JSON.parse(await Deno.readTextFile(positionals[0])) as CpuProfile;
  const { hot, totalMs } = summarise(p, root);
  const n = Number(values.top);
  const keep = (h: Hot) => !values.filter || h.name.includes(values.filter);
  const pct = (ms: number) => `${((100 * ms) / totalMs).toFixed(1).padStart(5)}%`;
  console.log(`profile: ${(totalMs / 1000).toFixed(1)} s sampled`);
  console.log("\nby self time:");
  for (const h of hot.filter(keep).slice(0, n)) {
    console.log(`  ${pct(h.selfMs)} ${pct(h.totalMs)}  ${h.name}`);
  }
  console.log("\nby total time:");
  const byTotal = [...hot].sort((a, b) => b.totalMs - a.totalMs).filter(keep);
  for (const h of byTotal.slice(0, n)) {
    console.log(`  ${pct(h.selfMs)} ${pct(h.totalMs)}  ${h.name}`);
  }
}
