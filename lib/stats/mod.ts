/**
 * Access-log statistics, computed incrementally: feed records (in log order)
 * to a {@linkcode StatsAccumulator} and ask for a {@linkcode Summary} at any
 * time. Memory is bounded whatever the log's size: the per-minute series keeps
 * only its window, the per-host table is capped (overflow is pooled), and only
 * the most recent N records are kept.
 *
 * @module
 */

import type { AccessRecord } from "../log/record.ts";
import { type BadLine, LogTail, readLastRecords, type ReadLogOptions } from "../log/reader.ts";

/** Request counts over the whole range. */
export interface Totals {
  requests: number;
  /** decision "allow". */
  allowed: number;
  /** decision "deny" (rules, prompts, timeouts, policy). */
  denied: number;
  /** Decided by the operator at a prompt (source "prompt"). */
  prompted: number;
  /** Nobody answered the prompt in time (source "timeout"; `--default` decided, deny unless set). */
  timedOut: number;
  /** Failed requests: decision "error" (malformed) or status 5xx (upstream down, timeout). */
  errors: number;
  bytesUp: number;
  bytesDown: number;
}

/** One destination host. */
export interface HostStats {
  host: string;
  requests: number;
  allowed: number;
  denied: number;
  errors: number;
  bytesUp: number;
  bytesDown: number;
  /** Time of the first and latest request (ISO 8601). */
  firstSeen: string;
  lastSeen: string;
}

/** Requests per minute, oldest minute first. */
export interface MinuteSeries {
  /** The minute of `counts[0]`, ISO 8601 (`2026-11-28T10:05:00.000Z`). */
  start: string;
  counts: number[];
}

/** What `netmonitor stats` shows. */
export interface Summary {
  totals: Totals;
  /** Every host, most requests first (ties: by name). */
  hosts: HostStats[];
  /** The most recent records, oldest first. */
  recent: AccessRecord[];
  /** Requests per minute for the minutes ending at `until` (default: the latest record). */
  perMinute: MinuteSeries;
  /** Time of the first and latest record, or null when there are none. */
  first: string | null;
  last: string | null;
  /** Lines that were not valid records. */
  badLines: number;
  /** Where the first of them is, for the operator to look at; null when none. */
  firstBadLine: { file: string; line: number; reason: string } | null;
  /** Hosts beyond the tracking cap, pooled into the row `(other hosts)`; 0 normally. */
  hostsPooled: number;
}

/** Options for {@linkcode StatsAccumulator}. */
export interface StatsOptions {
  /** Recent records kept. Default 20. */
  recent?: number;
  /** Minutes the per-minute series covers. Default 60. */
  minutes?: number;
  /** Distinct hosts tracked; further hosts are pooled under `(other hosts)`. Default 50,000. */
  maxHosts?: number;
}

/** The row that pools hosts beyond {@linkcode StatsOptions.maxHosts}. */
export const OTHER_HOSTS = "(other hosts)";

const MINUTE_MS = 60_000;

/** `2026-11-28T10:05`: the minute of an ISO time, without parsing the canonical form. */
function minuteKey(time: string): string | null {
  if (time.length === 24 && time.charCodeAt(23) === 90 && time.charCodeAt(10) === 84) {
    return time.slice(0, 16);
  }
  const ms = Date.parse(time);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString().slice(0, 16);
}

function minuteKeyOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16);
}

/** Summarises access records incrementally. */
export class StatsAccumulator {
  readonly totals: Totals = {
    requests: 0,
    allowed: 0,
    denied: 0,
    prompted: 0,
    timedOut: 0,
    errors: 0,
    bytesUp: 0,
    bytesDown: 0,
  };
  badLines = 0;
  firstBadLine: { file: string; line: number; reason: string } | null = null;
  first: string | null = null;
  last: string | null = null;
  readonly #hosts = new Map<string, HostStats>();
  readonly #minutes = new Map<string, number>();
  readonly #recent: AccessRecord[] = [];
  #recentNext = 0;
  readonly #recentMax: number;
  readonly #window: number;
  readonly #maxHosts: number;
  #pooled = new Set<string>();
  #pooledCount = 0;

  constructor(opts: StatsOptions = {}) {
    this.#recentMax = Math.max(0, opts.recent ?? 20);
    this.#window = Math.max(1, opts.minutes ?? 60);
    this.#maxHosts = Math.max(1, opts.maxHosts ?? 50_000);
  }

  /** Adds one record (call in log order). */
  add(rec: AccessRecord): void {
    const t = this.totals;
    t.requests++;
    const allowed = rec.decision === "allow";
    const denied = rec.decision === "deny";
    const failed = rec.decision === "error" || rec.status >= 500;
    if (allowed) t.allowed++;
    else if (denied) t.denied++;
    if (failed) t.errors++;
    if (rec.source === "prompt") t.prompted++;
    else if (rec.source === "timeout") t.timedOut++;
    t.bytesUp += rec.bytesUp;
    t.bytesDown += rec.bytesDown;
    if (this.first === null || rec.time < this.first) this.first = rec.time;
    if (this.last === null || rec.time > this.last) this.last = rec.time;

    let hostName = rec.host;
    let h = this.#hosts.get(hostName);
    if (h === undefined) {
      if (this.#hosts.size >= this.#maxHosts) {
        if (!this.#pooled.has(hostName) && this.#pooled.size < 1_000_000) {
          this.#pooled.add(hostName);
        }
        this.#pooledCount = Math.max(this.#pooledCount, this.#pooled.size);
        hostName = OTHER_HOSTS;
        h = this.#hosts.get(hostName);
      }
      if (h === undefined) {
        h = {
          host: hostName,
          requests: 0,
          allowed: 0,
          denied: 0,
          errors: 0,
          bytesUp: 0,
          bytesDown: 0,
          firstSeen: rec.time,
          lastSeen: rec.time,
        };
        this.#hosts.set(hostName, h);
      }
    }
    h.requests++;
    if (allowed) h.allowed++;
    else if (denied) h.denied++;
    if (failed) h.errors++;
    h.bytesUp += rec.bytesUp;
    h.bytesDown += rec.bytesDown;
    if (rec.time > h.lastSeen) h.lastSeen = rec.time;
    if (rec.time < h.firstSeen) h.firstSeen = rec.time;

    const key = minuteKey(rec.time);
    if (key !== null) {
      this.#minutes.set(key, (this.#minutes.get(key) ?? 0) + 1);
      if (this.#minutes.size > this.#window * 4 + 64) this.#pruneMinutes();
    }

    if (this.#recentMax > 0) {
      if (this.#recent.length < this.#recentMax) this.#recent.push(rec);
      else this.#recent[this.#recentNext] = rec;
      this.#recentNext = (this.#recentNext + 1) % this.#recentMax;
    }
  }

  /** Adds records in order. */
  addAll(recs: Iterable<AccessRecord>): void {
    for (const r of recs) this.add(r);
  }

  /** Counts a line that was not a valid record (and remembers where the first one is). */
  addBadLine(bad?: BadLine): void {
    this.badLines++;
    if (bad && this.firstBadLine === null) {
      this.firstBadLine = { file: bad.file, line: bad.line, reason: bad.reason };
    }
  }

  /** Drops minutes too old to appear in any series ending at the latest record. */
  #pruneMinutes(): void {
    if (this.last === null) return;
    const latest = Math.floor(Date.parse(this.last) / MINUTE_MS) * MINUTE_MS;
    const cutoff = minuteKeyOf(latest - this.#window * MINUTE_MS);
    for (const k of this.#minutes.keys()) if (k < cutoff) this.#minutes.delete(k);
  }

  /**
   * The summary so far.
   * @param opts.until the series' last minute (default: the latest record's, else now).
   */
  summary(opts: { until?: Date } = {}): Summary {
    const hosts = [...this.#hosts.values()].map((h) => ({ ...h })).sort((a, b) =>
      b.requests - a.requests || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0)
    );
    const n = this.#recent.length;
    const recent = n < this.#recentMax
      ? [...this.#recent]
      : [...this.#recent.slice(this.#recentNext), ...this.#recent.slice(0, this.#recentNext)];
    const endMs = opts.until?.getTime() ??
      (this.last !== null ? Date.parse(this.last) : Date.now());
    const endMinute = Math.floor(endMs / MINUTE_MS) * MINUTE_MS;
    const startMinute = endMinute - (this.#window - 1) * MINUTE_MS;
    const counts: number[] = [];
    for (let m = startMinute; m <= endMinute; m += MINUTE_MS) {
      counts.push(this.#minutes.get(minuteKeyOf(m)) ?? 0);
    }
    return {
      totals: { ...this.totals },
      hosts,
      recent,
      perMinute: { start: new Date(startMinute).toISOString(), counts },
      first: this.first,
      last: this.last,
      badLines: this.badLines,
      firstBadLine: this.firstBadLine,
      hostsPooled: this.#pooledCount,
    };
  }
}

/** Options for {@linkcode summariseLog}. */
export interface SummariseOptions extends StatsOptions {
  /** Only records at or after this time. */
  since?: Date;
  /** Only the last N records (read backwards: cheap on a large log). */
  last?: number;
  /** Called for each bad line. */
  onBadLine?: ReadLogOptions["onBadLine"];
  /** Read size. */
  chunkBytes?: number;
  /**
   * Hold back an unterminated last line (it may be being written) instead of
   * counting it as bad; set when the returned tail will keep reading. Default false.
   */
  follow?: boolean;
}

/**
 * Streams the log (rotated files included) into a new accumulator. The
 * returned {@linkcode LogTail} (absent with `last`) can continue reading what
 * is appended later, for `--watch`.
 */
export async function summariseLog(
  path: string,
  opts: SummariseOptions = {},
): Promise<{ stats: StatsAccumulator; tail?: LogTail }> {
  const stats = new StatsAccumulator(opts);
  const readOpts: ReadLogOptions = {
    since: opts.since,
    chunkBytes: opts.chunkBytes,
    onBadLine: (bad) => {
      stats.addBadLine(bad);
      opts.onBadLine?.(bad);
    },
  };
  if (opts.last !== undefined) {
    const { records } = await readLastRecords(path, opts.last, readOpts);
    stats.addAll(records);
    return { stats };
  }
  const tail = new LogTail(path, readOpts);
  for await (const batch of opts.follow ? tail.read() : tail.readAll()) stats.addAll(batch);
  return { stats, tail };
}

/** Feeds what `tail` finds appended since its last read into `stats`. Returns how many records. */
export async function summariseMore(tail: LogTail, stats: StatsAccumulator): Promise<number> {
  let n = 0;
  for await (const batch of tail.read()) {
    stats.addAll(batch);
    n += batch.length;
  }
  return n;
}
