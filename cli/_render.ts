/**
 * Terminal presentation shared by the CLI commands: colours (off when piped or
 * NO_COLOR is set), byte/duration/time formatting, width-aware tables, bar
 * charts, sparklines and the one-line request summary `netmonitor run` prints.
 *
 * Everything here returns strings; callers decide where they go.
 *
 * @module
 */

import type { AccessRecord } from "../lib/log/record.ts";
import { capText, redactText, redactUrl } from "../lib/log/redact.ts";

/** Text styles; every function is the identity when colours are off. */
export interface Style {
  readonly enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  blue(s: string): string;
  magenta(s: string): string;
  cyan(s: string): string;
  gray(s: string): string;
}

function sgr(open: number, close: number): (s: string) => string {
  return (s) => `\x1b[${open}m${s}\x1b[${close}m`;
}

const identity = (s: string) => s;

/** Returns the styles, coloured or plain. */
export function makeStyle(enabled: boolean): Style {
  if (!enabled) {
    return {
      enabled,
      bold: identity,
      dim: identity,
      red: identity,
      green: identity,
      yellow: identity,
      blue: identity,
      magenta: identity,
      cyan: identity,
      gray: identity,
    };
  }
  return {
    enabled,
    bold: sgr(1, 22),
    dim: sgr(2, 22),
    red: sgr(31, 39),
    green: sgr(32, 39),
    yellow: sgr(33, 39),
    blue: sgr(34, 39),
    magenta: sgr(35, 39),
    cyan: sgr(36, 39),
    gray: sgr(90, 39),
  };
}

/**
 * Colours on a terminal, off when the stream is piped or NO_COLOR is set to
 * anything non-empty (https://no-color.org). FORCE_COLOR=1 forces them on.
 */
export function colorEnabled(stream: { isTerminal(): boolean } = Deno.stdout): boolean {
  const env = (name: string) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env
    }
  };
  const no = env("NO_COLOR");
  if (no !== undefined && no !== "") return false;
  const force = env("FORCE_COLOR");
  if (force !== undefined && force !== "" && force !== "0") return true;
  return stream.isTerminal();
}

/**
 * Columns available: the terminal's width on a TTY, else $COLUMNS, else `fallback`.
 * @param isTerminal whether stdout is a terminal (default: ask Deno).
 */
export function terminalWidth(fallback = 100, isTerminal?: boolean): number {
  try {
    if (isTerminal ?? Deno.stdout.isTerminal()) {
      const { columns } = Deno.consoleSize();
      if (columns > 0) return columns;
    }
  } catch {
    // not a console
  }
  try {
    const c = Number(Deno.env.get("COLUMNS"));
    if (Number.isInteger(c) && c > 0) return c;
  } catch {
    // no --allow-env
  }
  return fallback;
}

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

// deno-lint-ignore no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/**
 * Makes text from the log or a rules file safe to print: control characters
 * (C0, C1, DEL), bidi overrides and zero-width characters become `\u{..}`
 * escapes, so a hostile URL or host cannot rewrite the terminal.
 */
export function safeText(text: string): string {
  UNSAFE.lastIndex = 0;
  return UNSAFE.test(text)
    ? text.replace(UNSAFE, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`)
    : text;
}

/**
 * {@linkcode safeText} for text of several lines (messages that quote a rules
 * file, an argument or a request): line breaks stay, every other control
 * character is escaped.
 */
export function safeLines(text: string): string {
  return text.includes("\n") ? text.split("\n").map(safeText).join("\n") : safeText(text);
}

// What JSON.stringify leaves raw of UNSAFE (it escapes C0 itself; its own line breaks are layout).
const UNSAFE_IN_JSON = /[\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

/**
 * JSON text (from `JSON.stringify`, which leaves C1 controls, bidi overrides
 * and zero-width characters as they are) with those characters written as
 * `\uXXXX` escapes: the same JSON, safe to print.
 */
export function jsonEscapeUnsafe(json: string): string {
  UNSAFE_IN_JSON.lastIndex = 0;
  return UNSAFE_IN_JSON.test(json)
    ? json.replace(UNSAFE_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
    : json;
}

/** Removes colour codes. */
export function stripAnsi(s: string): string {
  return s.includes("\x1b") ? s.replace(ANSI, "") : s;
}

/** Columns a string occupies (colour codes excluded, one column per code point). */
export function visibleWidth(s: string): number {
  let n = 0;
  for (const _ of stripAnsi(s)) n++;
  return n;
}

/** Cuts a plain string to `width` columns, ending with "…" when cut. */
export function truncate(s: string, width: number): string {
  if (width <= 0) return "";
  const chars = [...s];
  if (chars.length <= width) return s;
  if (width === 1) return "…";
  return chars.slice(0, width - 1).join("") + "…";
}

/**
 * Word-wraps plain text to `width` columns, every line starting with `indent`;
 * a word longer than a line is cut.
 */
export function wrap(text: string, width: number, indent = "  "): string[] {
  const room = Math.max(10, width - indent.length);
  const lines: string[] = [];
  let cur = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (cur === "") cur = truncate(word, room);
    else if ([...cur].length + 1 + [...word].length <= room) cur += " " + word;
    else {
      lines.push(indent + cur);
      cur = truncate(word, room);
    }
  }
  if (cur !== "") lines.push(indent + cur);
  return lines;
}

/** Pads a (possibly coloured) string to `width` columns. */
export function pad(s: string, width: number, align: "left" | "right" = "left"): string {
  const fill = " ".repeat(Math.max(0, width - visibleWidth(s)));
  return align === "right" ? fill + s : s + fill;
}

/** `512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1024) return `${Math.max(0, Math.round(n || 0))} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/** `850ms`, `1.2s`, `2m05s`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "-";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  return `${m}m${String(s).padStart(2, "0")}s`;
}

/** `1,234,567`. */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function two(n: number): string {
  return String(n).padStart(2, "0");
}

/** Local wall-clock time of an ISO timestamp: `14:03:07`. */
export function formatClock(iso: string, withMs = false): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const base = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  return withMs ? `${base}.${String(d.getMilliseconds()).padStart(3, "0")}` : base;
}

/** Local date and time of an ISO timestamp: `2026-11-28 14:03:07`. */
export function formatDateTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${formatClock(iso)}`;
}

/** `5s ago`, `3m ago`, `2h ago`, `4d ago`, relative to `now`. */
export function formatAgo(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** The coloured word for a decision: ALLOW green, DENY red, ERROR yellow (padded to 5). */
export function decisionLabel(decision: string, style: Style, padded = true): string {
  switch (decision) {
    case "allow":
      return style.green("ALLOW");
    case "deny":
      return style.red(padded ? "DENY " : "DENY");
    default:
      return style.yellow("ERROR");
  }
}

function statusText(status: number, style: Style): string {
  const s = status === 0 ? "---" : String(status);
  if (status >= 500) return style.yellow(s);
  if (status >= 400) return style.red(s);
  if (status >= 300) return style.cyan(s);
  if (status >= 200) return style.green(s);
  return style.gray(s);
}

/** Options for {@linkcode formatRecordLine}. */
export interface RecordLineOptions {
  /** Use ANSI colours. */
  color: boolean;
  /** Fit the line to this many columns by shortening the URL (no limit when absent). */
  width?: number;
}

/**
 * One request as a compact terminal line, as `netmonitor run` prints it
 * (secrets redacted as in the log):
 *
 * `14:03:07.123 ALLOW GET     200 http://example.com/a  1.2 KiB 12ms  rule "example.com": allow-domain`
 */
export function formatRecordLine(rec: AccessRecord, opts: RecordLineOptions): string {
  const style = makeStyle(opts.color);
  const clock = formatClock(rec.time, true);
  const method = pad(safeText(rec.method), 7);
  const status = rec.status === 0 ? "---" : String(rec.status);
  const tail = `${formatBytes(rec.bytesDown)} ${formatDuration(rec.durationMs)}`;
  // Redacted and cut like the log: this output is often redirected to a
  // file too (run-monitored.sh's, never rotated), and an error may quote
  // 64 KiB that a client sent.
  const both = rec.error && rec.error !== rec.reason;
  const why = capText(safeText(
    redactText(both ? `${rec.reason}: ${rec.error}` : rec.reason || rec.error || ""),
  ));
  // The log keeps the URL whole (up to ~24 KiB: an 8 KiB target of '"' is
  // forwarded as %22s); a line gets its first 2,000 characters.
  let url = capText(safeText(redactUrl(rec.url)));
  let reason = why;
  if (opts.width !== undefined) {
    // time, decision, method, status, the two gaps and the size/duration.
    const fixed = clock.length + 1 + 5 + 1 + method.length + 1 + status.length + 1 + 2 +
      tail.length + 2;
    const room = Math.max(0, opts.width - fixed);
    // The URL matters most; the reason gets what is left, or up to a third.
    const reasonRoom = room < 40 ? 0 : Math.min([...why].length, Math.floor(room / 3));
    url = truncate(url, Math.max(12, room - reasonRoom));
    reason = truncate(why, Math.max(0, room - visibleWidth(url)));
  }
  const line = `${style.gray(clock)} ${decisionLabel(rec.decision, style)} ${style.bold(method)} ${
    statusText(rec.status, style)
  } ${url}  ${style.dim(tail)}`;
  return reason === "" ? line : `${line}  ${style.gray(reason)}`;
}

/** A table column. */
export interface Column {
  header: string;
  align?: "left" | "right";
  /** Shrinks (cells cut with "…") when the table is wider than the terminal. */
  flexible?: boolean;
  /** Narrowest a flexible column gets. Default 8. */
  minWidth?: number;
  /**
   * When even shrunk columns do not fit, columns are dropped: the highest
   * `dropOrder` first. Columns without one go last: before one of them is
   * dropped, flexible columns shrink below their `minWidth` (to their header,
   * at least 8), and then the rightmost that is not flexible goes first.
   */
  dropOrder?: number;
}

const GAP = 2;

/**
 * The largest of `values` (-Infinity for none). `Math.max(...values)` passes
 * each value as an argument, and a few hundred thousand (rules, hosts) are
 * more than a call takes.
 */
export function maxOf(values: Iterable<number>): number {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  return max;
}

/**
 * Renders an aligned table that fits `width` columns: flexible columns shrink
 * first (the widest first, cells cut with "…"); if that is not enough, whole
 * columns are dropped (see {@linkcode Column.dropOrder}) and the room they
 * leave goes back to the flexible ones. Cells may be coloured; alignment uses
 * their visible width. Lines carry no trailing spaces.
 */
export function renderTable(
  columns: Column[],
  rows: string[][],
  opts: { width: number; style: Style; indent?: number },
): string[] {
  const indent = " ".repeat(opts.indent ?? 2);
  // No column is shown wider than the screen: capping here keeps the
  // shrinking below (one column of width per step) short for 64 KB cells.
  const natural = columns.map((c, i) => {
    let w = visibleWidth(c.header);
    for (const r of rows) w = Math.max(w, visibleWidth(r[i] ?? ""));
    return Math.min(opts.width, w);
  });
  // Soft: down to minWidth. Hard (only columns without a dropOrder are left,
  // and one of them would go): down to the header, at least 8.
  const minOf = (i: number, hard: boolean) => {
    if (!columns[i].flexible) return natural[i];
    const header = visibleWidth(columns[i].header);
    const min = columns[i].minWidth ?? 8;
    return Math.min(natural[i], Math.max(header, hard ? Math.min(8, min) : min));
  };
  const fitWith = (shown: number[], hard: boolean): number[] => {
    const widths = shown.map((i) => natural[i]);
    let over = indent.length + widths.reduce((a, b) => a + b, 0) + GAP * (shown.length - 1) -
      opts.width;
    // Take one column at a time from the widest flexible column, so that
    // several flexible columns end up sharing the room evenly.
    while (over > 0) {
      let widest = -1;
      for (let k = 0; k < shown.length; k++) {
        if (widths[k] > minOf(shown[k], hard) && (widest < 0 || widths[k] > widths[widest])) {
          widest = k;
        }
      }
      if (widest < 0) break;
      widths[widest]--;
      over--;
    }
    return over > 0 ? [] : widths;
  };
  const ordered = (shown: number[]) => shown.some((i) => columns[i].dropOrder !== undefined);
  const fit = (shown: number[]): number[] => {
    const soft = fitWith(shown, false);
    return soft.length > 0 || ordered(shown) ? soft : fitWith(shown, true);
  };
  let shown = columns.map((_, i) => i);
  let widths = fit(shown);
  while (widths.length === 0 && shown.length > 1) {
    // Drop the column with the highest dropOrder; without any, the rightmost
    // that is not flexible (what is flexible is what the table is about: a
    // URL, a host), else the rightmost.
    let victim = shown.length - 1;
    if (!ordered(shown)) {
      const fixed = shown.findLastIndex((i) => !columns[i].flexible);
      if (fixed >= 0) victim = fixed;
    }
    for (let k = 0; k < shown.length; k++) {
      const d = columns[shown[k]].dropOrder ?? -1;
      if (d > (columns[shown[victim]].dropOrder ?? -1)) victim = k;
    }
    shown = shown.filter((_, k) => k !== victim);
    widths = fit(shown);
  }
  if (widths.length === 0) widths = [Math.max(1, opts.width - indent.length)];
  const line = (cells: string[], header: boolean) =>
    indent + shown.map((ci, k) => {
      const c = columns[ci];
      let cell = cells[ci] ?? "";
      if (visibleWidth(cell) > widths[k]) cell = truncate(stripAnsi(cell), widths[k]);
      if (header) cell = opts.style.bold(cell);
      return k === shown.length - 1 && c.align !== "right" ? cell : pad(cell, widths[k], c.align);
    }).join(" ".repeat(GAP));
  return [line(columns.map((c) => c.header), true), ...rows.map((r) => line(r, false))];
}

const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/** A horizontal bar of `value / max * width` columns, with eighth-block precision. */
export function bar(value: number, max: number, width: number): string {
  if (max <= 0 || width <= 0 || value <= 0) return "";
  const eighths = Math.max(1, Math.round((value / max) * width * 8));
  return "█".repeat(Math.floor(eighths / 8)) + EIGHTHS[eighths % 8];
}

/** A horizontal bar chart: `label  ████▌ value`, fitting `width`. */
export function barChart(
  items: { label: string; value: number; valueText?: string; color?: (s: string) => string }[],
  opts: { width: number; style: Style; indent?: number },
): string[] {
  if (items.length === 0) return [];
  const indent = " ".repeat(opts.indent ?? 2);
  const max = maxOf(items.map((i) => i.value));
  const texts = items.map((i) => i.valueText ?? formatCount(i.value));
  const textW = maxOf(texts.map((t) => t.length));
  let labelW = maxOf(items.map((i) => visibleWidth(i.label)));
  labelW = Math.min(labelW, Math.max(8, Math.floor(opts.width * 0.4)));
  const barW = Math.max(4, Math.min(50, opts.width - indent.length - labelW - textW - 4));
  return items.map((item, i) =>
    `${indent}${pad(truncate(item.label, labelW), labelW)}  ${
      (item.color ?? opts.style.cyan)(pad(bar(item.value, max, barW), barW))
    }  ${pad(texts[i], textW, "right")}`
  );
}

const SPARKS = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];

/**
 * A sparkline of the values scaled to their maximum: zero is the lowest bar
 * "▁", any non-zero value at least "▂", so quiet minutes and busy ones stay
 * distinguishable without colour.
 */
export function sparkline(values: number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => {
    if (max === 0 || v <= 0) return SPARKS[0];
    return SPARKS[Math.min(7, 1 + Math.floor((v / max) * 6.999))];
  }).join("");
}
