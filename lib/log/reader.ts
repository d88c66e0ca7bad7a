/**
 * Streaming access-log reader: rotated files oldest first, then the current
 * file, in fixed-size chunks, so memory stays bounded whatever the log's size.
 *
 * A line that is not a record (a crash cut it short, someone edited the file)
 * is counted and reported through `onBadLine`, never fatal.
 *
 * {@linkcode LogTail} reads incrementally: each `read()` continues where the
 * previous one stopped, following rotations, which is what `stats --watch`
 * uses. {@linkcode readLastRecords} reads backwards, so `--last 20` on a 1 GB
 * log touches only its end.
 *
 * @module
 */

import type { AccessRecord } from "./record.ts";
import { DEFAULT_KEEP, rotatedPath } from "./mod.ts";

/** A line that could not be read as an {@linkcode AccessRecord}. */
export interface BadLine {
  /** The file it is in. */
  file: string;
  /** 1-based line number in that file (0 when unknown: found reading backwards or mid-file). */
  line: number;
  /** What is wrong, e.g. `not JSON (truncated?)`. */
  reason: string;
  /** The line's first 120 characters. */
  excerpt: string;
}

/** Options shared by the readers. */
export interface ReadLogOptions {
  /** Only records at or after this time. */
  since?: Date;
  /** Called for each line that is not a valid record. */
  onBadLine?(bad: BadLine): void;
  /** Lines longer than this are bad and skipped without being held in memory. Default 1 MiB. */
  maxLineBytes?: number;
  /** Read size. Default 256 KiB. */
  chunkBytes?: number;
  /**
   * Rotated files looked for: every `.N` up to this, and beyond it until the
   * first missing number. Default 5 (the writer's default keep).
   */
  maxRotated?: number;
}

const DECISIONS = new Set(["allow", "deny", "error"]);
const TIME_PREFIX = '{"time":"';

/** Thrown by {@linkcode parseRecordLine}. */
export class LogLineError extends Error {
  override name = "LogLineError";
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

function str(v: unknown): string {
  return typeof v === "string" ? v : v === undefined || v === null ? "" : String(v);
}

/**
 * Parses one log line. Tolerates missing optional fields (numbers default to
 * 0, strings to ""), but a line must be a JSON object with a parseable `time`,
 * a `host` and a known `decision`.
 *
 * @throws {LogLineError} naming what is wrong.
 */
export function parseRecordLine(line: string): AccessRecord {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new LogLineError(line.trimEnd().endsWith("}") ? "not JSON" : "not JSON (truncated?)");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new LogLineError("not a JSON object");
  }
  const o = v as Record<string, unknown>;
  if (typeof o.time !== "string" || Number.isNaN(Date.parse(o.time))) {
    throw new LogLineError('missing or invalid "time"');
  }
  if (typeof o.host !== "string") throw new LogLineError('missing "host"');
  if (typeof o.decision !== "string" || !DECISIONS.has(o.decision)) {
    throw new LogLineError('missing or unknown "decision"');
  }
  if (
    typeof o.status === "number" && typeof o.bytesUp === "number" &&
    typeof o.bytesDown === "number" && typeof o.durationMs === "number" &&
    typeof o.url === "string" && typeof o.method === "string" && typeof o.client === "string" &&
    typeof o.reason === "string" && typeof o.source === "string" &&
    (o.error === undefined || typeof o.error === "string")
  ) {
    return o as unknown as AccessRecord; // the writer's own lines: no copy needed
  }
  const rec: AccessRecord = {
    time: o.time,
    client: str(o.client),
    method: str(o.method),
    url: str(o.url),
    host: o.host,
    decision: o.decision as AccessRecord["decision"],
    source: str(o.source) as AccessRecord["source"],
    reason: str(o.reason),
    status: num(o.status),
    bytesUp: num(o.bytesUp),
    bytesDown: num(o.bytesDown),
    durationMs: num(o.durationMs),
  };
  if (o.error !== undefined) rec.error = str(o.error);
  return rec;
}

/**
 * The log's files that exist, oldest first: `.N` ... `.1`, then the current
 * file (even when missing, so a tail can wait for it).
 */
export async function logFiles(path: string, maxRotated?: number): Promise<string[]> {
  const rotated: string[] = [];
  // Rotation keeps .1 .. .keep without gaps, but a user may have deleted one:
  // look at every number up to the expected keep, then stop at the first gap.
  const expected = maxRotated ?? DEFAULT_KEEP;
  for (let n = 1; n <= 1000; n++) {
    const p = rotatedPath(path, n);
    try {
      await Deno.stat(p);
      rotated.push(p);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (n >= expected) break;
    }
  }
  return [...rotated.reverse(), path];
}

/** True when `s` takes more than `max` bytes in UTF-8; cheap when it cannot. */
function utf8Longer(s: string, max: number): boolean {
  if (s.length * 3 <= max) return false;
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
    if (bytes > max) return true;
  }
  return false;
}

function excerpt(line: string): string {
  return line.length > 120 ? `${line.slice(0, 119)}…` : line;
}

/** The per-file state of a forward read. */
interface FileCursor {
  path: string;
  /** Identity of the file (inode), null where the platform has none. */
  ino: number | null;
  /** Byte offset just past the last complete line consumed. */
  offset: number;
  /** Lines consumed so far (for bad-line numbers); -1 when unknown. */
  lineNo: number;
}

/**
 * Reads the access log forwards, incrementally. The first `read()` yields
 * every record in the rotated files and the current file; each later `read()`
 * yields only what was appended since, following rotations by inode.
 *
 * Records come in batches (arrays), in file order, one batch per chunk read.
 */
export class LogTail {
  readonly path: string;
  /** Lines that were not valid records, so far. */
  badLines = 0;
  /** Records yielded so far. */
  records = 0;
  readonly #opts: ReadLogOptions;
  readonly #sinceIso: string | undefined;
  readonly #sinceMs: number;
  readonly #maxLine: number;
  readonly #chunk: number;
  readonly #decoder = new TextDecoder();
  #cursor: FileCursor | null = null;
  /** Inodes of rotated files read to their end. */
  readonly #done = new Set<number>();

  constructor(path: string, opts: ReadLogOptions = {}) {
    this.path = path;
    this.#opts = opts;
    this.#sinceIso = opts.since?.toISOString();
    this.#sinceMs = opts.since?.getTime() ?? -Infinity;
    this.#maxLine = opts.maxLineBytes ?? 1024 * 1024;
    this.#chunk = opts.chunkBytes ?? 256 * 1024;
  }

  /**
   * Yields batches of records appended since the previous call. An
   * unterminated last line is held back (it may be being written) and read
   * once its newline arrives; {@linkcode LogTail.readAll} counts it as bad.
   */
  async *read(): AsyncGenerator<AccessRecord[]> {
    yield* this.#read(false);
  }

  /** Like `read()`, but an unterminated last line is final (cut by a crash). */
  async *readAll(): AsyncGenerator<AccessRecord[]> {
    yield* this.#read(true);
  }

  async *#read(final: boolean): AsyncGenerator<AccessRecord[]> {
    const files = await openLogFiles(this.path, this.#opts.maxRotated);
    try {
      const present = new Set<number>();
      for (const f of files) if (f.ino !== null) present.add(f.ino);
      const cur = this.#cursor;
      // Where to resume: the file we stopped in, found by identity (it may
      // have been renamed to .1, .2 ... by rotations since).
      let start = 0;
      let lost = false;
      if (cur) {
        const i = cur.ino === null
          ? (files.at(-1)?.current && files.at(-1)!.size >= cur.offset ? files.length - 1 : -1)
          : files.findIndex((f) => f.ino === cur.ino);
        if (i >= 0) start = i;
        else if (cur.ino === null) start = Math.max(0, files.length - 1);
        else lost = true;
      }
      for (let i = start; i < files.length; i++) {
        const f = files[i];
        // Rotated files already read to their end, when we lost our place.
        // Not otherwise: the files after ours are newer, never read, and one
        // may have the inode number of a read file rotation deleted (ext4
        // hands it to the file created next).
        if (lost && f.ino !== null && this.#done.has(f.ino)) continue;
        const resuming = cur !== null && i === start &&
          (f.ino === null ? f.current : f.ino === cur.ino);
        const isNewest = i === files.length - 1;
        // A rotated file whose last record ended before `since` holds nothing
        // we want (records are written as requests end, so a long tunnel's
        // start time can be older than those of the records before it).
        if (!isNewest && !resuming && this.#sinceIso !== undefined) {
          const lastEnd = await lastRecordEnd(f.file, f.size);
          if (lastEnd !== null && lastEnd + ORDER_SLACK_MS < this.#sinceMs) {
            if (f.ino !== null) this.#done.add(f.ino);
            continue;
          }
        }
        let cursor: FileCursor = { path: f.path, ino: f.ino, offset: 0, lineNo: 0 };
        if (resuming && f.size >= cur!.offset) cursor = { ...cur!, path: f.path };
        yield* this.#readFile(f.file, cursor, final || !isNewest);
        if (isNewest) this.#cursor = cursor;
        else if (f.ino !== null) this.#done.add(f.ino);
      }
      if (files.length === 0) this.#cursor = null;
      for (const ino of this.#done) if (!present.has(ino)) this.#done.delete(ino);
    } finally {
      for (const f of files) f.file.close();
    }
  }

  #bad(cursor: FileCursor, reason: string, line: string): void {
    this.badLines++;
    this.#opts.onBadLine?.({
      file: cursor.path,
      line: cursor.lineNo < 0 ? 0 : cursor.lineNo,
      reason,
      excerpt: excerpt(line),
    });
  }

  /** Parses the complete lines in `text`, appending kept records to `out`. */
  #lines(text: string, cursor: FileCursor, out: AccessRecord[]): void {
    let pos = 0;
    const sinceIso = this.#sinceIso;
    while (pos < text.length) {
      let nl = text.indexOf("\n", pos);
      if (nl < 0) nl = text.length;
      const line = text.slice(pos, nl);
      pos = nl + 1;
      if (cursor.lineNo >= 0) cursor.lineNo++;
      this.#line(line, cursor, out, sinceIso);
    }
  }

  #line(line: string, cursor: FileCursor, out: AccessRecord[], sinceIso: string | undefined): void {
    if (line.length === 0 || line === "\r") return;
    // The limit is in bytes, as the chunked read and readLastRecords count it
    // (a line of 600 characters can be 1,800 bytes).
    if (line.length > this.#maxLine || utf8Longer(line, this.#maxLine)) {
      this.#bad(cursor, `line longer than ${this.#maxLine} bytes`, "");
      return;
    }
    // Cheap range check on the canonical prefix before paying for JSON.parse.
    if (
      sinceIso !== undefined && line.startsWith(TIME_PREFIX) && line.charCodeAt(33) === 34 &&
      line.charCodeAt(32) === 90 && line.slice(9, 33) < sinceIso
    ) return;
    let rec: AccessRecord;
    try {
      rec = parseRecordLine(line);
    } catch (e) {
      // A crash may glue a cut line to the next whole one: keep the whole one.
      const glued = line.lastIndexOf(TIME_PREFIX);
      if (glued > 0) {
        this.#bad(cursor, (e as Error).message, line.slice(0, glued));
        this.#line(line.slice(glued), cursor, out, sinceIso);
        return;
      }
      this.#bad(cursor, (e as Error).message, line);
      return;
    }
    if (sinceIso !== undefined && Date.parse(rec.time) < this.#sinceMs) return;
    out.push(rec);
    this.records++;
  }

  async *#readFile(
    file: Deno.FsFile,
    cursor: FileCursor,
    final: boolean,
  ): AsyncGenerator<AccessRecord[]> {
    await file.seek(cursor.offset, Deno.SeekMode.Start);
    const buf = new Uint8Array(this.#chunk);
    let carry: Uint8Array | null = null;
    let skipping = false; // inside an over-long line, discarding until its newline
    for (;;) {
      const n = await file.read(buf);
      if (n === null) break;
      const data = buf.subarray(0, n);
      const lastNl = data.lastIndexOf(10);
      if (lastNl < 0) {
        if (skipping) {
          cursor.offset += n;
          continue;
        }
        const size: number = (carry?.length ?? 0) + n;
        if (size > this.#maxLine) {
          if (cursor.lineNo >= 0) cursor.lineNo++;
          this.#bad(cursor, `line longer than ${this.#maxLine} bytes`, "");
          skipping = true;
          cursor.offset += size;
          carry = null;
        } else {
          carry = carry ? concat(carry, data) : data.slice();
        }
        continue;
      }
      let head = data.subarray(0, lastNl + 1);
      const consumed = (carry?.length ?? 0) + head.length;
      if (skipping) {
        head = head.subarray(head.indexOf(10) + 1);
        skipping = false;
      }
      const text = this.#decoder.decode(carry ? concat(carry, head) : head);
      carry = lastNl + 1 < n ? data.slice(lastNl + 1) : null;
      const out: AccessRecord[] = [];
      // `text` ends with "\n": drop it so the split sees no empty last line.
      this.#lines(text.slice(0, -1), cursor, out);
      cursor.offset += consumed;
      if (out.length > 0) yield out;
    }
    if (carry && final && !skipping) {
      // An unterminated last line: cut by a crash, unless it happens to be whole.
      const out: AccessRecord[] = [];
      const line = this.#decoder.decode(carry);
      if (cursor.lineNo >= 0) cursor.lineNo++;
      this.#line(line, cursor, out, this.#sinceIso);
      cursor.offset += carry.length;
      if (out.length > 0) yield out;
    }
  }
}

/** The time (ms) of the last valid record in an open file, from its last 64 KiB; null if none. */
/**
 * Records are written in batches as their requests end, so their end times
 * are in file order give or take a batch, or a few seconds when a writer
 * retried after a disk error while another shared the log: scans by time
 * allow this much.
 */
const ORDER_SLACK_MS = 10_000;

/** When a record's request ended, ms since the epoch. */
function recordEnd(rec: AccessRecord): number {
  return Date.parse(rec.time) + (rec.durationMs > 0 ? rec.durationMs : 0);
}

async function lastRecordEnd(f: Deno.FsFile, size: number): Promise<number | null> {
  try {
    const len = Math.min(size, 64 * 1024);
    await f.seek(size - len, Deno.SeekMode.Start);
    const buf = new Uint8Array(len);
    let got = 0;
    while (got < len) {
      const r = await f.read(buf.subarray(got));
      if (r === null) break;
      got += r;
    }
    const lines = new TextDecoder().decode(buf.subarray(0, got)).split("\n");
    for (let i = lines.length - 1; i >= (len < size ? 1 : 0); i--) {
      try {
        return recordEnd(parseRecordLine(lines[i]));
      } catch {
        // not a record; try the line before
      }
    }
  } catch {
    // unreadable: let the full read report it
  }
  return null;
}

/** One log file, opened. */
interface OpenLogFile {
  path: string;
  file: Deno.FsFile;
  ino: number | null;
  size: number;
  /** Opened as the current file (not a rotated one). */
  current: boolean;
}

/**
 * Opens the log's files, oldest first. The current file is opened first and
 * then `.1`, `.2`, ...: a rotation in between can only make a file show up
 * twice (dropped by inode), never make one be missed.
 */
async function openLogFiles(path: string, maxRotated?: number): Promise<OpenLogFile[]> {
  const out: OpenLogFile[] = [];
  const seen = new Set<number>();
  const expected = maxRotated ?? DEFAULT_KEEP;
  try {
    for (let n = 0; n <= 1000; n++) {
      const p = n === 0 ? path : rotatedPath(path, n);
      let file: Deno.FsFile;
      try {
        file = await Deno.open(p, { read: true });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        if (n >= expected) break;
        continue;
      }
      const info = await file.stat();
      if (info.ino !== null && seen.has(info.ino)) {
        file.close();
        continue;
      }
      if (info.ino !== null) seen.add(info.ino);
      out.push({ path: p, file, ino: info.ino, size: info.size, current: n === 0 });
    }
  } catch (e) {
    for (const f of out) f.file.close();
    throw e;
  }
  return out.reverse();
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/**
 * Every record in the log, oldest first (rotated files, then the current
 * one), streamed. An unterminated last line counts as bad.
 */
export async function* readAccessLog(
  path: string,
  opts: ReadLogOptions = {},
): AsyncGenerator<AccessRecord> {
  const tail = new LogTail(path, opts);
  for await (const batch of tail.readAll()) yield* batch;
}

/**
 * The last `n` records (at or after `since`, if given), oldest first, read
 * backwards from the end of the newest file so only the tail is touched.
 * Bad lines met on the way are reported (with line number 0: unknown).
 */
export async function readLastRecords(
  path: string,
  n: number,
  opts: ReadLogOptions = {},
): Promise<{ records: AccessRecord[]; badLines: number }> {
  const found: AccessRecord[] = []; // newest first
  let badLines = 0;
  if (n <= 0) return { records: [], badLines };
  const sinceMs = opts.since?.getTime() ?? -Infinity;
  const maxLine = opts.maxLineBytes ?? 1024 * 1024;
  const chunk = opts.chunkBytes ?? 64 * 1024;
  const decoder = new TextDecoder();
  const files = (await openLogFiles(path, opts.maxRotated)).reverse(); // newest first
  let done = false;

  const take = (bytes: Uint8Array, file: string): void => {
    if (bytes.length > maxLine) {
      badLines++;
      opts.onBadLine?.({ file, line: 0, reason: `line longer than ${maxLine} bytes`, excerpt: "" });
      return;
    }
    takeLine(decoder.decode(bytes), file);
  };

  const takeLine = (line: string, file: string): void => {
    if (line.length === 0 || line === "\r") return;
    let rec: AccessRecord;
    try {
      rec = parseRecordLine(line);
    } catch (e) {
      // A crash may glue a cut line to the next whole one: keep the whole
      // one, as the forward reader does.
      const glued = line.lastIndexOf(TIME_PREFIX);
      const cut = glued > 0 ? line.slice(0, glued) : line;
      badLines++;
      opts.onBadLine?.({ file, line: 0, reason: (e as Error).message, excerpt: excerpt(cut) });
      if (glued > 0) takeLine(line.slice(glued), file);
      return;
    }
    if (Date.parse(rec.time) < sinceMs) {
      // Started before `since`. Those before it in the file ended earlier
      // still: once one ended before `since` too, none of them is wanted.
      if (recordEnd(rec) + ORDER_SLACK_MS < sinceMs) done = true;
      return;
    }
    found.push(rec);
    if (found.length >= n) done = true;
  };

  try {
    for (const { file: f, path: file, size } of files) {
      if (done) break;
      let pos = size;
      let tail: Uint8Array = new Uint8Array(0); // bytes after the last newline seen so far
      let skipping = false;
      while (pos > 0 && !done) {
        const len = Math.min(chunk, pos);
        pos -= len;
        await f.seek(pos, Deno.SeekMode.Start);
        const buf = new Uint8Array(len);
        let got = 0;
        while (got < len) {
          const r = await f.read(buf.subarray(got));
          if (r === null) break;
          got += r;
        }
        let end = got;
        let tailOwned = tail;
        for (let i = got - 1; i >= 0 && !done; i--) {
          if (buf[i] !== 10) continue;
          if (!skipping) take(concat(buf.subarray(i + 1, end), tailOwned), file);
          skipping = false;
          tailOwned = new Uint8Array(0);
          end = i;
        }
        if (done) break;
        if (skipping) {
          tail = new Uint8Array(0);
        } else {
          tail = concat(buf.subarray(0, end), tailOwned);
          if (tail.length > maxLine) {
            badLines++;
            opts.onBadLine?.({
              file,
              line: 0,
              reason: `line longer than ${maxLine} bytes`,
              excerpt: "",
            });
            skipping = true;
            tail = new Uint8Array(0);
          }
        }
      }
      if (!done && !skipping && tail.length > 0) take(tail, file);
    }
  } finally {
    for (const f of files) f.file.close();
  }
  return { records: found.reverse(), badLines };
}
