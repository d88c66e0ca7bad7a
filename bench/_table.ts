/**
 * Result rows, medians and the markdown table the benchmark prints.
 *
 * @module
 */

import type { Contender } from "./_proxies.ts";

/** Column order of the table. */
export const CONTENDERS: readonly Contender[] = ["direct", "tinyproxy", "mitmdump", "netmonitor"];

/** One cell: a number (median of samples) and how to show it. */
export interface Cell {
  /** Median of the samples, in the row's unit. Undefined when not measured. */
  value?: number;
  /** All samples, in run order. */
  samples: number[];
  /** Text shown instead of / after the value ("n/a", "(94%)", "ERR"). */
  text?: string;
  /** Problems seen while measuring (errors, non-2xx responses). */
  problems: string[];
}

/** One metric. */
export interface Row {
  id: string;
  metric: string;
  /** Digits after the decimal point. Default 0. */
  digits?: number;
  cells: Partial<Record<Contender, Cell>>;
  /** Human-readable target for netmonitor. */
  target: string;
  /** Decide pass/fail from the cells; undefined means "not judged". */
  judge?: (row: Row) => boolean | undefined;
  /** Extra text for a cell, computed from the row (e.g. ratio to direct). */
  annotate?: (c: Contender, row: Row) => string | undefined;
}

/** Median of a non-empty list (mean of the middle two for even lengths). */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The cell for `c` in `row`, created on first use. */
export function cell(row: Row, c: Contender): Cell {
  return row.cells[c] ??= { samples: [], problems: [] };
}

/** Record one sample. */
export function addSample(row: Row, c: Contender, v: number): void {
  const x = cell(row, c);
  x.samples.push(v);
  x.value = median(x.samples);
}

/** Record a problem; the cell is flagged with "!" in the table. */
export function addProblem(row: Row, c: Contender, problem: string): void {
  const x = cell(row, c);
  if (!x.problems.includes(problem)) x.problems.push(problem);
}

/** Median value of a cell, or undefined. */
export function val(row: Row, c: Contender): number | undefined {
  const v = row.cells[c]?.value;
  return v === undefined || Number.isNaN(v) ? undefined : v;
}

/** Format a number with thousands separators. */
export function fmt(v: number, digits = 0): string {
  return v.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function showCell(row: Row, c: Contender): string {
  const x = row.cells[c];
  if (!x) return "–";
  let s = x.value !== undefined && !Number.isNaN(x.value) ? fmt(x.value, row.digits ?? 0) : "";
  const extra = x.value !== undefined ? row.annotate?.(c, row) : undefined;
  if (extra) s += ` ${extra}`;
  if (x.text) s = s ? `${s} ${x.text}` : x.text;
  if (x.problems.length) s += " !";
  return s || "–";
}

/** Pass/fail text for a row. */
export function verdict(row: Row): string {
  const j = row.judge?.(row);
  return j === undefined ? (row.judge ? "–" : "info") : j ? "PASS" : "FAIL";
}

/** Render rows as a markdown table. */
export function renderTable(rows: Row[]): string {
  const header = ["metric", ...CONTENDERS, "target (netmonitor)", "pass/fail"];
  const body = rows.map((
    r,
  ) => [r.metric, ...CONTENDERS.map((c) => showCell(r, c)), r.target, verdict(r)]);
  const all = [header, ...body];
  const widths = header.map((_, i) => Math.max(...all.map((line) => line[i].length)));
  const line = (cells: string[]) =>
    "| " +
    cells.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join(" | ") +
    " |";
  const sep = "|" +
    widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") +
    "|";
  return [line(header), sep, ...body.map(line)].join("\n");
}

/** Problems and samples per cell, as markdown bullet lines. */
export function renderDetails(rows: Row[]): string {
  const out: string[] = [];
  for (const r of rows) {
    for (const c of CONTENDERS) {
      const x = r.cells[c];
      if (!x) continue;
      const samples = x.samples.length > 1
        ? `samples ${x.samples.map((v) => fmt(v, r.digits ?? 0)).join(", ")}`
        : "";
      const problems = x.problems.length ? `problems: ${x.problems.join("; ")}` : "";
      if (samples || problems) {
        out.push(`- ${r.id} / ${c}: ${[samples, problems].filter(Boolean).join("; ")}`);
      }
    }
  }
  return out.join("\n");
}
