/**
 * The documented `netmonitor stats --json` output. Scripts may rely on it:
 * fields are only ever added; a change that removes or redefines one bumps
 * `schemaVersion`.
 *
 * @module
 */

import type { AccessRecord } from "../log/record.ts";
import type { HostStats, Summary, Totals } from "./mod.ts";

/** `netmonitor stats --json` (one document; with `--watch`, one per line per refresh). */
export interface StatsJson {
  /** 1 for this layout. */
  schemaVersion: 1;
  /** When this was computed (ISO 8601, UTC). */
  generatedAt: string;
  /** The access log read (its rotated files `.1`, `.2`, ... were read too). */
  logFile: string;
  /** The range asked for and the range found. */
  range: {
    /** `--since` resolved to a time, or null. */
    since: string | null;
    /** `--last`, or null. */
    last: number | null;
    /** Time of the first and latest record counted, or null when none. */
    first: string | null;
    latest: string | null;
  };
  totals: Totals;
  /** Lines that were not valid records (corrupt, or cut by a crash): skipped and counted. */
  badLines: number;
  /** Where the first bad line is (`line` is 0 when unknown), or null when there are none. */
  firstBadLine: { file: string; line: number; reason: string } | null;
  /** Every host, most requests first. */
  hosts: HostStats[];
  /** Hosts beyond the tracking cap (50,000) pooled into the host `(other hosts)`; normally 0. */
  hostsPooled: number;
  /** Requests per minute: `counts[i]` is the minute `start + i`. */
  requestsPerMinute: { start: string; counts: number[] };
  /** The most recent requests, oldest first, as written in the log. */
  recent: AccessRecord[];
  /** The rules in network-rules.json, in file order. */
  rules: { pattern: string; action: string }[];
  /** Why `rules` is empty when the rules file cannot be read, else absent. */
  rulesError?: string;
}

/** Builds the `--json` document. */
export function toStatsJson(input: {
  summary: Summary;
  logFile: string;
  since?: Date;
  last?: number;
  rules: readonly { pattern: string; action: string }[];
  rulesError?: string;
  now?: Date;
}): StatsJson {
  const s = input.summary;
  const out: StatsJson = {
    schemaVersion: 1,
    generatedAt: (input.now ?? new Date()).toISOString(),
    logFile: input.logFile,
    range: {
      since: input.since?.toISOString() ?? null,
      last: input.last ?? null,
      first: s.first,
      latest: s.last,
    },
    totals: s.totals,
    badLines: s.badLines,
    firstBadLine: s.firstBadLine,
    hosts: s.hosts,
    hostsPooled: s.hostsPooled,
    requestsPerMinute: s.perMinute,
    recent: s.recent,
    rules: input.rules.map((r) => ({ pattern: r.pattern, action: r.action })),
  };
  if (input.rulesError !== undefined) out.rulesError = input.rulesError;
  return out;
}
