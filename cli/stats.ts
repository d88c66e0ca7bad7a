/**
 * `netmonitor stats`: the original design's statistics dashboard. Totals, a
 * sparkline of requests per minute, a bar chart of the top hosts, the
 * per-host table, the most recent requests and the active rules; `--json`
 * for scripts, `--since`/`--last` to narrow the range, `--watch` to refresh.
 *
 * @module
 */

import { type Command, InvalidArgumentError } from "commander";
import { basename } from "node:path";
import type { AccessRecord } from "../lib/log/record.ts";
import type { LogTail } from "../lib/log/reader.ts";
import {
  type StatsAccumulator,
  summariseLog,
  summariseMore,
  type Summary,
} from "../lib/stats/mod.ts";
import { toStatsJson } from "../lib/stats/json.ts";
import { type Rule, RulesStore } from "../lib/rules/mod.ts";
import { checkDataDir } from "../lib/paths.ts";
import {
  barChart,
  colorEnabled,
  type Column,
  decisionLabel,
  formatBytes,
  formatClock,
  formatCount,
  formatDateTime,
  formatDuration,
  makeStyle,
  renderTable,
  safeText,
  sparkline,
  type Style,
  terminalWidth,
  truncate,
  visibleWidth,
  wrap,
} from "./_render.ts";
import { UsageError } from "./_errors.ts";
import type { CliContext } from "./mod.ts";

/** A `--since` value that is neither a duration nor a time. */
export class SinceError extends Error {
  override name = "SinceError";
}

const UNITS: Record<string, number> = {
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/**
 * Resolves `--since`: a duration back from `now` (`90s`, `30m`, `1h`, `2d`,
 * `1w`, `1.5h`) or a time (`2026-11-28T10:00:00Z`, `2026-11-28`).
 * @throws {SinceError} with a message that says what is accepted.
 */
export function parseSince(text: string, now: Date = new Date()): Date {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$/i.exec(t);
  if (m) return new Date(now.getTime() - Number(m[1]) * UNITS[m[2].toLowerCase()]);
  if (/^\d{4}-\d{2}-\d{2}/.test(t)) {
    const ms = Date.parse(t);
    if (!Number.isNaN(ms)) return new Date(ms);
  }
  throw new SinceError(
    `Invalid --since "${text}": expected a duration like 30m, 1h or 2d, or a time like 2026-11-28T10:00:00Z`,
  );
}

/** What `netmonitor stats` was asked for. */
export interface StatsOptions {
  /** network-access.log */
  logFile: string;
  /** network-rules.json */
  rulesFile: string;
  json?: boolean;
  /** Raw `--since` (a duration is re-resolved at each `--watch` refresh). */
  since?: string;
  last?: number;
  watch?: boolean;
  /** Seconds between `--watch` refreshes. Default 2. */
  interval?: number;
  /** Host rows shown (0: all). Default 15. */
  hosts?: number;
  /** Recent requests shown. Default 10. */
  recent?: number;
}

/** Where `netmonitor stats` writes, and how it looks. */
export interface StatsIO {
  write(text: string): void;
  /** ANSI colours. */
  color: boolean;
  /** Current terminal width. */
  width(): number;
  /** Current terminal height, when known (to fit a `--watch` frame). */
  height?(): number | undefined;
  /** Output is a terminal: `--watch` redraws in place. */
  isTerminal: boolean;
  /** Stops `--watch`. */
  signal?: AbortSignal;
  /** The clock (tests pin it). */
  now?(): Date;
}

const SPARK_MINUTES = 60;

/** Everything one frame shows. */
interface Frame {
  summary: Summary;
  rules: readonly Rule[];
  rulesError?: string;
  rulesMissing: boolean;
  since?: Date;
}

async function loadRules(
  file: string,
): Promise<{ rules: readonly Rule[]; error?: string; missing: boolean }> {
  try {
    await Deno.stat(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { rules: [], missing: true };
  }
  try {
    return { rules: (await new RulesStore(file).load()).rules, missing: false };
  } catch (e) {
    return { rules: [], error: (e as Error).message, missing: false };
  }
}

function titleLine(label: string, style: Style, extra = ""): string {
  return `${style.bold(label)}${extra ? `  ${style.gray(extra)}` : ""}`;
}

/** Lays out `items` on as few lines as fit `width`, separated by wide gaps. */
function flow(items: string[], width: number, indent = "  "): string[] {
  const lines: string[] = [];
  let cur = "";
  for (const item of items) {
    const next = cur === "" ? item : `${cur}    ${item}`;
    if (cur !== "" && visibleWidth(indent + next) > width) {
      lines.push(indent + cur);
      cur = item;
    } else {
      cur = next;
    }
  }
  if (cur !== "") lines.push(indent + cur);
  return lines;
}

function seen(iso: string, now: Date): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? formatClock(iso) : formatDateTime(iso).slice(0, 16);
}

function actionText(action: string, style: Style): string {
  return action.startsWith("allow") ? style.green(action) : style.red(action);
}

/** Renders one stats screen as text (no trailing newline). */
export function renderStats(
  frame: Frame,
  opts: {
    logFile: string;
    rulesFile: string;
    width: number;
    style: Style;
    now: Date;
    hosts: number;
    recent: number;
    last?: number;
  },
): string {
  const { style, width } = opts;
  const s = frame.summary;
  const t = s.totals;
  const out: string[] = [];
  const range = s.first === null
    ? "no requests"
    : `${formatDateTime(s.first)} → ${
      formatDateTime(s.last!).slice(0, 10) === formatDateTime(s.first).slice(0, 10)
        ? formatClock(s.last!)
        : formatDateTime(s.last!)
    }`;
  const narrowed = [
    frame.since ? `since ${formatDateTime(frame.since.toISOString())}` : "",
    opts.last !== undefined ? `last ${formatCount(opts.last)}` : "",
  ].filter(Boolean).join(", ");
  out.push(titleLine("Network statistics", style, truncate(opts.logFile, width - 20)));
  const rangeLine = `  ${style.gray("Range")}  ${range}`;
  if (!narrowed) out.push(rangeLine);
  else if (visibleWidth(rangeLine) + narrowed.length + 4 <= width) {
    out.push(`${rangeLine}  ${style.gray(`(${narrowed})`)}`);
  } else out.push(rangeLine, `         ${style.gray(`(${narrowed})`)}`);
  out.push("");

  if (t.requests === 0) {
    out.push(`  No requests logged${narrowed ? " in this range" : " yet"}.`);
  } else {
    const n = (v: number, color: (s: string) => string) => color(style.bold(formatCount(v)));
    out.push(
      ...flow([
        `Requests ${style.bold(formatCount(t.requests))}`,
        `Allowed ${n(t.allowed, style.green)}`,
        `Denied ${n(t.denied, style.red)}`,
        `Prompted ${n(t.prompted, style.cyan)}`,
        `Timed out ${n(t.timedOut, style.magenta)}`,
        `Errors ${n(t.errors, t.errors ? style.yellow : (x) => x)}`,
      ], width),
      ...flow([
        `Sent ${style.bold(formatBytes(t.bytesUp))}`,
        `Received ${style.bold(formatBytes(t.bytesDown))}`,
      ], width),
    );
  }
  if (s.badLines > 0) {
    const where = s.firstBadLine
      ? ` First: ${basename(s.firstBadLine.file)}${
        s.firstBadLine.line ? ` line ${s.firstBadLine.line}` : ""
      }: ${s.firstBadLine.reason}.`
      : "";
    const text = `! ${formatCount(s.badLines)} log line${
      s.badLines === 1 ? " was" : "s were"
    } not readable (corrupt, or cut short by a crash) and skipped.${where}`;
    out.push(...wrap(text, width).map(style.yellow));
  }

  if (t.requests > 0) {
    // Requests per minute: as many minutes as fit, newest on the right.
    const counts = s.perMinute.counts;
    const shown = Math.max(10, Math.min(counts.length, width - 4));
    const series = counts.slice(-shown);
    const startMs = Date.parse(s.perMinute.start) + (counts.length - series.length) * 60_000;
    const endIso = new Date(startMs + (series.length - 1) * 60_000).toISOString();
    const peak = Math.max(...series);
    out.push("");
    out.push(titleLine("Requests per minute", style, `peak ${formatCount(peak)}/min`));
    out.push(`  ${style.cyan(sparkline(series))}`);
    const left = formatClock(new Date(startMs).toISOString()).slice(0, 5);
    const right = formatClock(endIso).slice(0, 5);
    out.push(`  ${style.gray(left + " ".repeat(Math.max(1, series.length - 10)) + right)}`);

    const top = s.hosts.slice(0, 8);
    out.push("");
    out.push(titleLine("Top hosts", style, "by requests"));
    out.push(
      ...barChart(
        top.map((h) => ({
          label: safeText(h.host),
          value: h.requests,
          color: h.denied === 0 && h.errors === 0
            ? style.green
            : h.allowed === 0
            ? style.red
            : style.yellow,
        })),
        { width, style },
      ),
    );

    const limit = opts.hosts === 0 ? s.hosts.length : opts.hosts;
    const hostCols: Column[] = [
      { header: "HOST", flexible: true, minWidth: 12 },
      { header: "REQS", align: "right" },
      { header: "ALLOW", align: "right", dropOrder: 1 },
      { header: "DENY", align: "right", dropOrder: 2 },
      { header: "ERR", align: "right", dropOrder: 3 },
      { header: "SENT", align: "right", dropOrder: 5 },
      { header: "RECEIVED", align: "right", dropOrder: 4 },
      { header: "LAST SEEN", align: "left", dropOrder: 6 },
    ];
    const hostRows = s.hosts.slice(0, limit).map((h) => [
      safeText(h.host),
      formatCount(h.requests),
      h.allowed ? style.green(formatCount(h.allowed)) : style.gray("0"),
      h.denied ? style.red(formatCount(h.denied)) : style.gray("0"),
      h.errors ? style.yellow(formatCount(h.errors)) : style.gray("0"),
      formatBytes(h.bytesUp),
      formatBytes(h.bytesDown),
      seen(h.lastSeen, opts.now),
    ]);
    out.push("");
    out.push(titleLine("Hosts", style, `${formatCount(s.hosts.length)} total`));
    for (const l of renderTable(hostCols, hostRows, { width, style })) out.push(l);
    if (s.hosts.length > limit) {
      out.push(
        style.gray(`  … and ${formatCount(s.hosts.length - limit)} more (--hosts 0 shows all)`),
      );
    }

    const recent = s.recent.slice(-opts.recent).reverse();
    out.push("");
    out.push(titleLine("Recent requests", style, "newest first"));
    const recentRows = recent.map((r) => recentRow(r, style, opts.now));
    for (const l of renderTable(recentColumns, recentRows, { width, style })) out.push(l);
  }

  out.push("");
  const rulesTitle = `Active rules (${frame.rules.length})`;
  out.push(titleLine(rulesTitle, style, truncate(opts.rulesFile, width - rulesTitle.length - 2)));
  if (frame.rulesError) {
    for (const line of frame.rulesError.split("\n")) out.push(...wrap(line, width).map(style.red));
  } else if (frame.rules.length === 0) {
    out.push(
      ...wrap(
        `${
          frame.rulesMissing ? "No rules file yet" : "No rules"
        }: every request is asked about (or, where the proxy does not ask, gets its --default).`,
        width,
      ),
    );
  } else {
    const table = renderTable(
      [{ header: "PATTERN", flexible: true, minWidth: 16 }, { header: "ACTION" }],
      frame.rules.map((r) => [safeText(r.pattern), actionText(r.action, style)]),
      { width, style },
    );
    for (const l of table) out.push(l);
  }
  return out.join("\n");
}

// On a narrow terminal the details go first; the time, the decision and the
// URL stay (the URL cut short rather than dropped).
const recentColumns: Column[] = [
  { header: "TIME" },
  { header: "DECISION" },
  { header: "METHOD", dropOrder: 1 },
  { header: "STATUS", align: "right", dropOrder: 0 },
  { header: "URL", flexible: true, minWidth: 30 },
  { header: "SIZE", align: "right", dropOrder: 3 },
  { header: "TOOK", align: "right", dropOrder: 4 },
  { header: "REASON", flexible: true, minWidth: 12, dropOrder: 2 },
];

function recentRow(r: AccessRecord, style: Style, now: Date): string[] {
  return [
    seen(r.time, now),
    decisionLabel(r.decision, style, false),
    safeText(r.method),
    r.status === 0 ? "---" : String(r.status),
    safeText(r.url),
    formatBytes(r.bytesDown),
    formatDuration(r.durationMs),
    style.gray(safeText(r.error ? `${r.reason}: ${r.error}` : r.reason)),
  ];
}

/** The data source of one `stats` run: re-read or followed between refreshes. */
class Source {
  #tail?: LogTail;
  #stats?: StatsAccumulator;
  constructor(readonly opts: StatsOptions, readonly recent: number) {}

  /** True when the range slides (relative --since, --last): each refresh re-reads. */
  get #rereads(): boolean {
    return this.opts.last !== undefined || this.opts.since !== undefined;
  }

  async read(now: Date, follow: boolean): Promise<{ summary: Summary; since?: Date }> {
    const since = this.opts.since !== undefined ? parseSince(this.opts.since, now) : undefined;
    const until = follow ? now : undefined;
    if (follow && !this.#rereads && this.#tail && this.#stats) {
      await summariseMore(this.#tail, this.#stats);
      return { summary: this.#stats.summary({ until }) };
    }
    const { stats, tail } = await summariseLog(this.opts.logFile, {
      since,
      last: this.opts.last,
      recent: this.recent,
      minutes: SPARK_MINUTES,
      follow,
    });
    this.#stats = stats;
    this.#tail = tail;
    return { summary: stats.summary({ until }), since };
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const id = setTimeout(done, ms);
    function done() {
      clearTimeout(id);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Runs `netmonitor stats`. Returns the exit code.
 * @throws {SinceError} for a bad `--since` (a usage error).
 */
export async function runStats(opts: StatsOptions, io: StatsIO): Promise<number> {
  const clock = io.now ?? (() => new Date());
  if (opts.since !== undefined) parseSince(opts.since, clock()); // fail early
  if (opts.last !== undefined && (!Number.isInteger(opts.last) || opts.last < 1)) {
    throw new SinceError(
      `Invalid --last "${opts.last}": expected a whole number of requests, 1 or more`,
    );
  }
  const recent = opts.recent ?? 10;
  const source = new Source(opts, Math.max(recent, 20));
  const style = makeStyle(io.color);

  const frame = async (follow: boolean): Promise<string> => {
    const now = clock();
    const { summary, since } = await source.read(now, follow);
    const rules = await loadRules(opts.rulesFile);
    if (opts.json) {
      return JSON.stringify(
        toStatsJson({
          summary,
          logFile: opts.logFile,
          since,
          last: opts.last,
          rules: rules.rules,
          rulesError: rules.error,
          now,
        }),
        null,
        opts.watch ? undefined : 2,
      );
    }
    return renderStats(
      { summary, rules: rules.rules, rulesError: rules.error, rulesMissing: rules.missing, since },
      {
        logFile: opts.logFile,
        rulesFile: opts.rulesFile,
        width: io.width(),
        style,
        now,
        hosts: opts.hosts ?? 15,
        recent,
        last: opts.last,
      },
    );
  };

  if (!opts.watch) {
    io.write((await frame(false)) + "\n");
    return 0;
  }

  const interval = Math.max(0.2, opts.interval ?? 2) * 1000;
  const redraw = io.isTerminal && !opts.json;
  if (redraw) io.write("\x1b[?1049h\x1b[?25l"); // alternate screen, hide the cursor
  try {
    while (!io.signal?.aborted) {
      const body = await frame(true);
      if (redraw) {
        const status = style.gray(
          `Refreshing every ${interval / 1000}s · updated ${
            formatClock(clock().toISOString())
          } · Ctrl-C quits`,
        );
        let lines = [...body.split("\n"), "", status];
        const rows = io.height?.();
        if (rows !== undefined && lines.length > rows) {
          lines = [...lines.slice(0, rows - 2), style.gray("  …"), status];
        }
        // Home, then each line cleared to its end, then everything below cleared.
        io.write(`\x1b[H${lines.map((l) => `${l}\x1b[K`).join("\n")}\x1b[J`);
      } else {
        io.write(body + "\n");
      }
      await sleep(interval, io.signal);
    }
  } finally {
    if (redraw) io.write("\x1b[?25h\x1b[?1049l");
  }
  return 0;
}

/** Parses a whole-number option value; commander turns the error into a usage error. */
function wholeNumber(name: string, min: number): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v.trim()) || Number(v) < min) {
      throw new InvalidArgumentError(`${name} must be a whole number, ${min} or more.`);
    }
    return Number(v);
  };
}

/** Registers `netmonitor stats`. */
export function registerStatsCommand(program: Command, ctx: CliContext): void {
  program
    .command("stats")
    .description(
      "show what the container reached: totals, requests per minute, top hosts, " +
        "per-host table, recent requests and active rules",
    )
    .option("--json", "print JSON for scripts (schemaVersion 1, see the README)")
    .option(
      "--since <when>",
      "only requests since a duration ago (90s, 30m, 1h, 2d, 1w) or a time (2026-11-28T10:00Z)",
      (v: string) => {
        try {
          parseSince(v);
        } catch (e) {
          throw new InvalidArgumentError(
            (e as Error).message.replace(/^Invalid --since "[^"]*": /, ""),
          );
        }
        return v;
      },
    )
    .option("--last <n>", "only the last N requests", wholeNumber("--last", 1))
    .option("-w, --watch", "refresh until Ctrl-C")
    .option(
      "--interval <seconds>",
      "seconds between --watch refreshes (default: 2)",
      (v: string) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0.2) {
          throw new InvalidArgumentError("--interval must be a number of seconds, 0.2 or more.");
        }
        return n;
      },
    )
    .option("--hosts <n>", "host rows to show, 0 for all (default: 15)", wholeNumber("--hosts", 0))
    .option("--recent <n>", "recent requests to show (default: 10)", wholeNumber("--recent", 0))
    .action(async (opts: {
      json?: boolean;
      since?: string;
      last?: number;
      watch?: boolean;
      interval?: number;
      hosts?: number;
      recent?: number;
    }) => {
      if (opts.interval !== undefined && !opts.watch) {
        // Silently showing one summary would look like a refresh that never comes.
        throw new UsageError("--interval only applies with --watch", {
          hint: `Run "netmonitor stats --watch --interval ${opts.interval}" to refresh.`,
        });
      }
      const paths = ctx.paths;
      // Refuses an unsafe data dir; a missing one means no log yet.
      await checkDataDir(paths);
      ctx.exitCode = await statsCommand(
        { ...opts, logFile: paths.log, rulesFile: paths.rules },
        { write: ctx.stdout, isTerminal: ctx.stdoutIsTerminal },
      );
    });
}

/** The real terminal: stdout, its width and height, colours unless piped or NO_COLOR. */
export function terminalStatsIO(
  signal?: AbortSignal,
  out: { write?: (text: string) => void; isTerminal?: boolean } = {},
): StatsIO {
  const encoder = new TextEncoder();
  const isTerminal = out.isTerminal ?? Deno.stdout.isTerminal();
  return {
    write: out.write ?? ((text: string) => {
      const bytes = encoder.encode(text);
      let off = 0;
      while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
    }),
    color: colorEnabled({ isTerminal: () => isTerminal }),
    width: () => terminalWidth(100, isTerminal),
    height: () => {
      try {
        return isTerminal ? Deno.consoleSize().rows : undefined;
      } catch {
        return undefined;
      }
    },
    isTerminal,
    signal,
  };
}

/**
 * `netmonitor stats` from the command line: wires Ctrl-C to stop `--watch`
 * cleanly (the screen is restored and the exit code is 0).
 */
export async function statsCommand(
  opts: StatsOptions,
  out: { write?: (text: string) => void; isTerminal?: boolean } = {},
): Promise<number> {
  const ac = new AbortController();
  const stop = () => ac.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  if (opts.watch) { for (const s of signals) Deno.addSignalListener(s, stop); }
  try {
    return await runStats(opts, terminalStatsIO(ac.signal, out));
  } catch (e) {
    if (e instanceof SinceError) throw new UsageError(e.message);
    throw e;
  } finally {
    if (opts.watch) { for (const s of signals) Deno.removeSignalListener(s, stop); }
  }
}
