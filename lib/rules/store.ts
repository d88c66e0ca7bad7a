/**
 * network-rules.json on disk: load, edit safely from several processes at
 * once, and watch for edits made elsewhere.
 * @module
 */

import { basename, dirname } from "node:path";
import { appendProperty, removeProperty, replaceValue } from "./_edit.ts";
import { withFileLock } from "../file_lock.ts";
import { writeFileAtomic } from "./_fs.ts";
import { describeIoError, RulesFileError } from "./errors.ts";
import { type ParsedRulesText, parseRulesText } from "./parse.ts";
import { patternIdentity } from "./pattern.ts";
import { makeParsedRule, RuleSet } from "./rule_set.ts";
import type { Rule, StoredAction } from "./types.ts";

/** What {@linkcode RulesStore.add} did. */
export interface AddResult {
  /** The rule as now stored (an existing equivalent pattern keeps its spelling). */
  rule: Rule;
  /** The rule it replaced, when the pattern was already there. */
  previous?: Rule;
}

/** What {@linkcode RulesStore.merge} did. */
export interface MergeResult {
  added: number;
  updated: number;
  unchanged: number;
}

/** Callbacks of {@linkcode RulesStore.watch}. */
export interface WatchHandlers {
  /** The file changed and is valid: `rules` are now in force (also `store.current`). */
  onReload?(rules: RuleSet): void;
  /**
   * The file changed and is invalid, or cannot be read: the last good rules
   * stay in force. Also the watch problems below when there is no `onWarning`.
   */
  onError?(err: RulesFileError): void;
  /**
   * Watching got worse but still works, e.g. the file-system watcher ended
   * unexpectedly and only polling is left. `message` is user-ready.
   */
  onWarning?(message: string): void;
}

/** A running watch. */
export interface RulesWatcher {
  /** Stops watching. The promise settles when no reload is in flight any more. */
  close(): Promise<void>;
}

/** Options of {@linkcode RulesStore.watch}. */
export interface WatchOptions {
  /** Quiet time after the last file event before the file is read again. Default 100 ms. */
  debounceMs?: number;
  /**
   * How often the file is stat'ed (following a symlink) as a backstop for
   * missed or absent file-system events, ms. Default 2000.
   */
  pollMs?: number;
  /**
   * How long a file that is missing or empty (0 bytes) after having rules is
   * given to come back before its rules are dropped, ms: a non-atomic editor
   * truncates or deletes it before writing it again. Default 500.
   */
  settleMs?: number;
  /**
   * Opens the file-system watcher on the directory (tests replace or end it).
   * Default `Deno.watchFs(dir, { recursive: false })`.
   */
  openWatcher?: (dir: string) => Deno.FsWatcher;
}

interface Plan<T> {
  /** The new text, or undefined to leave the file alone. */
  text?: string;
  /** The rules the new text must hold (pattern -> action), checked before writing. */
  expect?: Map<string, StoredAction>;
  result: T;
}

/**
 * The rules file of one data directory.
 *
 * Every edit takes an inter-process lock (`<file>.lock`), re-reads the file,
 * applies a minimal text edit that keeps comments and key order, checks the
 * result parses to exactly the intended rules, and replaces the file
 * atomically. So concurrent editors (several `netmonitor rules add`, the proxy
 * saving a prompt answer) never lose each other's rules, and an invalid file is
 * never overwritten: the edit fails with {@linkcode RulesFileError} instead.
 */
export class RulesStore {
  /** The rules file. */
  readonly path: string;
  #current: RuleSet = RuleSet.empty;
  /** Text behind `current`; null when that was "no file". Undefined before any load. */
  #lastText: string | null | undefined;
  /** Serialises this process's edits and reloads (the file lock does it across processes). */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(path: string) {
    this.path = path;
  }

  /** The last successfully loaded (or written) rules; empty before the first load. */
  get current(): RuleSet {
    return this.#current;
  }

  /**
   * Loads the file. A missing file means no rules (it is not created).
   * @throws {RulesFileError} when the file is invalid or unreadable; `current` is unchanged.
   */
  load(): Promise<RuleSet> {
    return this.#serial(async () => {
      const text = await this.#read();
      if (text === null) return this.#accept(null, []);
      const parsed = parseRulesText(text);
      if (parsed.problems.length > 0) throw new RulesFileError(this.path, parsed.problems);
      return this.#accept(text, parsed.rules);
    });
  }

  /**
   * Adds a rule, or replaces the action of the rule with the same meaning
   * (`GitHub.com.` is `github.com`), which keeps its spelling and position.
   * @throws {RuleError} when the pattern or action is invalid.
   * @throws {RulesFileError} when the file on disk is invalid (it is left alone).
   */
  async add(pattern: string, action: StoredAction): Promise<AddResult> {
    makeParsedRule(pattern, action); // validate before locking anything
    return await this.#edit((text, doc) => {
      const r = setRule(text, doc, pattern, action);
      return { text: r.text, expect: r.expect, result: { rule: r.rule, previous: r.previous } };
    });
  }

  /**
   * Adds several rules in one locked edit, like {@linkcode add} for each.
   * @throws {RuleError} when any of them is invalid (nothing is changed).
   */
  async merge(rules: ReadonlyArray<readonly [string, StoredAction]>): Promise<MergeResult> {
    for (const [p, a] of rules) makeParsedRule(p, a);
    return await this.#edit((text, doc) => {
      const result: MergeResult = { added: 0, updated: 0, unchanged: 0 };
      let cur = text;
      let curDoc = doc;
      let expect = currentMap(doc);
      for (const [pattern, action] of rules) {
        const r = setRule(cur, curDoc, pattern, action);
        if (!r.previous) result.added++;
        else if (r.previous.action === action) result.unchanged++;
        else result.updated++;
        if (r.text !== undefined) {
          cur = r.text;
          curDoc = reparse(cur);
          expect = r.expect!;
        }
      }
      return { text: cur === text ? undefined : cur, expect, result };
    });
  }

  /**
   * Removes the rule with the same meaning as `pattern` (or exactly that key).
   * @returns false when there was no such rule (the file is not touched).
   * @throws {RulesFileError} when the file on disk is invalid (it is left alone).
   */
  remove(pattern: string): Promise<boolean> {
    return this.#edit((text, doc) => {
      const entry = findEntry(doc, pattern);
      if (!entry) return { result: false };
      const expect = currentMap(doc);
      expect.delete(entry.rule.pattern);
      return { text: removeProperty(text, doc.root!, entry.node), expect, result: true };
    });
  }

  /**
   * Makes the file hold exactly `rules` (import --replace; `[]` clears).
   * Comments stay; kept rules keep their place; new ones are appended.
   * When two given rules mean the same, the later wins.
   * @throws {RuleError} when any rule is invalid (nothing is changed).
   */
  async replaceAll(rules: ReadonlyArray<readonly [string, StoredAction]>): Promise<void> {
    const wanted = new Map<string, [string, StoredAction]>();
    for (const [p, a] of rules) {
      const id = patternIdentity(makeParsedRule(p, a).parsed);
      wanted.delete(id); // the later one also takes the later position
      wanted.set(id, [p, a]);
    }
    await this.#edit((text, doc) => {
      let cur = text;
      let curDoc = doc;
      // Remove what is not wanted, or is wanted under another spelling.
      for (const entry of [...doc.entries].reverse()) {
        const w = wanted.get(entry.identity);
        if (w && w[0] === entry.rule.pattern) continue;
        cur = removeProperty(cur, curDoc.root!, findEntry(curDoc, entry.rule.pattern)!.node);
        curDoc = reparse(cur);
      }
      for (const [pattern, action] of wanted.values()) {
        const r = setRule(cur, curDoc, pattern, action);
        if (r.text !== undefined) {
          cur = r.text;
          curDoc = reparse(cur);
        }
      }
      const expect = new Map([...wanted.values()].map(([p, a]) => [p, a]));
      return { text: cur === text ? undefined : cur, expect, result: undefined };
    });
  }

  /**
   * Watches the file for edits made by anyone (another `netmonitor`, an
   * editor, `cp`): in-place writes, atomic rename-over, delete and re-create.
   *
   * Two mechanisms, so an edit is never missed silently (a removed allow rule
   * that stayed in force would be a hole):
   * - the directory is watched, not the file, so a replaced file is still
   *   seen; events are debounced, and an event without paths (the kernel's
   *   queue overflowed) reloads too;
   * - the file is stat'ed every `pollMs` (following a symlink, whose target
   *   may live outside the watched directory), and read again when its
   *   modification time, change time, size, inode or device changed, or its
   *   modification time is too recent to trust (an edit within the same
   *   clock tick). When the file-system watcher ends unexpectedly, polling
   *   carries on and `onWarning` (else `onError`) is told once.
   *
   * Then the file is read: a valid change updates `current` and calls
   * `onReload`, an invalid one keeps the last good rules and calls `onError`
   * (once per distinct bad content). A file that is deleted or becomes empty
   * is given `settleMs` to come back (an editor rewriting it in place); if it
   * stays so, it means no rules. This process's own edits do not trigger
   * callbacks.
   */
  watch(handlers: WatchHandlers, options: WatchOptions = {}): RulesWatcher {
    const debounceMs = options.debounceMs ?? 100;
    const pollMs = Math.max(10, options.pollMs ?? 2000);
    const settleMs = options.settleMs ?? 500;
    const dir = dirname(this.path);
    const name = basename(this.path);
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const open = options.openWatcher ?? ((d: string) => Deno.watchFs(d, { recursive: false }));
    let watcher: Deno.FsWatcher | undefined;
    let openFailure: unknown;
    try {
      watcher = open(dir);
    } catch (e) {
      // Out of inotify instances, say: polling alone still sees every edit.
      openFailure = e;
    }
    let closed = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settleTimer: ReturnType<typeof setTimeout> | undefined;
    let pollTimer: ReturnType<typeof setTimeout> | undefined;
    let polling: Promise<unknown> = Promise.resolve();
    let lastBad: string | undefined;
    let inFlight: Promise<unknown> = Promise.resolve();
    let lastStat = statSignature(this.path);

    const warn = (message: string, cause?: unknown) => {
      if (closed) return;
      if (handlers.onWarning) return handlers.onWarning(message);
      const err = new Error(message, { cause });
      handlers.onError?.(new RulesFileError(this.path, [], "watch", err));
    };

    /** {@linkcode load}, with any failure reported: the last good rules stay, and the operator is told. */
    const reload = (settled: boolean) =>
      load(settled).catch((e) => {
        if (!closed) handlers.onError?.(new RulesFileError(this.path, [], "reload", e));
      });

    /** Reads the file and applies it; `settled`: a missing or empty file had its grace time. */
    const load = async (settled: boolean) => {
      if (closed) return;
      let text: string | null;
      try {
        text = await this.#read();
      } catch (e) {
        if (!closed && e instanceof RulesFileError) handlers.onError?.(e);
        return;
      }
      if (closed || text === this.#lastText) return;
      const parsed = text === null ? undefined : parseRulesText(text);
      // No root object at all (nothing, or only a comment so far): maybe a
      // rewrite caught half-way, as an editor that truncates and writes does.
      if (
        text === null || parsed === undefined ||
        (parsed.root === undefined && parsed.problems.length === 0)
      ) {
        const hadRules = this.#current.rules.length > 0;
        if (hadRules && !settled && settleMs > 0) {
          // Maybe mid-rewrite: look again before dropping every rule.
          settleTimer ??= setTimeout(() => {
            settleTimer = undefined;
            inFlight = this.#serial(() => reload(true));
          }, settleMs);
          return;
        }
        lastBad = undefined;
        handlers.onReload?.(this.#accept(text, []));
        return;
      }
      if (parsed.problems.length > 0) {
        if (text !== lastBad) {
          lastBad = text;
          handlers.onError?.(new RulesFileError(this.path, parsed.problems, "reload"));
        }
        return;
      }
      lastBad = undefined;
      handlers.onReload?.(this.#accept(text, parsed.rules));
    };

    const schedule = () => {
      if (closed) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = undefined;
        inFlight = this.#serial(() => reload(false));
      }, debounceMs);
    };

    const poll = async () => {
      const sig = await statSignatureAsync(this.path);
      if (closed) return;
      if (sig.key !== lastStat.key || sig.recentAt(Date.now(), pollMs)) schedule();
      lastStat = sig;
    };
    const nextPoll = () => {
      if (closed) return;
      pollTimer = setTimeout(() => {
        pollTimer = undefined;
        polling = poll().catch(() => {}).finally(nextPoll);
      }, pollMs);
    };
    nextPoll();

    const every = pollMs >= 1000 ? `${pollMs / 1000} s` : `${pollMs} ms`;
    const loop = (async () => {
      let failure: unknown = openFailure;
      if (watcher) {
        try {
          for await (const event of watcher) {
            if (closed) break;
            if (event.kind === "access") continue;
            // No paths (queue overflow) or a rescan request: anything may have changed.
            const unknown = event.paths.length === 0 || event.flag === "rescan";
            if (!unknown && !event.paths.some((p) => basename(p) === name)) continue;
            schedule();
          }
        } catch (e) {
          failure = e;
        }
      } else {
        await Promise.resolve(); // report after watch() has returned
      }
      if (!closed) {
        const why = failure instanceof Error ? `: ${describeIoError(failure)}` : "";
        warn(
          `the file-system watcher on ${dir} ${
            watcher ? "stopped" : "could not start"
          }${why}; checking the file for changes every ${every} instead`,
          failure,
        );
        schedule(); // whatever happened meanwhile
      }
    })();

    return {
      close: async () => {
        if (closed) return;
        closed = true;
        clearTimeout(timer);
        clearTimeout(settleTimer);
        clearTimeout(pollTimer);
        try {
          watcher?.close();
        } catch { /* already closed */ }
        await loop;
        await polling;
        await inFlight.catch(() => {});
      },
    };
  }

  #accept(text: string | null, rules: Rule[]): RuleSet {
    this.#lastText = text;
    this.#current = rules.length === 0 ? RuleSet.empty : new RuleSet(rules);
    return this.#current;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** The file's text, or null when it does not exist. */
  async #read(): Promise<string | null> {
    try {
      return await Deno.readTextFile(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw new RulesFileError(this.path, [], "read", e);
    }
  }

  #edit<T>(plan: (text: string, doc: ParsedRulesText) => Plan<T>): Promise<T> {
    return this.#serial(async () => {
      try {
        return await this.#lockedEdit(plan);
      } catch (e) {
        // File-system failures (no permission, a file where the directory should be) are
        // the user's to fix: say so without a stack.
        if (Object.values(Deno.errors).some((cls) => e instanceof cls)) {
          throw new RulesFileError(this.path, [], "update", e);
        }
        throw e;
      }
    });
  }

  async #lockedEdit<T>(plan: (text: string, doc: ParsedRulesText) => Plan<T>): Promise<T> {
    await Deno.mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    return await withFileLock(`${this.path}.lock`, async () => {
      const raw = await this.#read();
      const text = raw ?? "";
      const doc = parseRulesText(text);
      if (doc.problems.length > 0) throw new RulesFileError(this.path, doc.problems, "update");
      const p = plan(text, doc);
      if (p.text === undefined) {
        this.#accept(raw, doc.rules);
        return p.result;
      }
      const after = parseRulesText(p.text);
      if (after.problems.length > 0 || (p.expect && !sameRules(after, p.expect))) {
        // A bug in the editor, never the user's fault; the file is untouched.
        throw new Error(
          `internal error: editing ${this.path} would produce ${
            after.problems.length > 0 ? "an invalid file" : "the wrong rules"
          }; the file was not changed`,
        );
      }
      await writeFileAtomic(this.path, p.text);
      this.#accept(p.text, after.rules);
      return p.result;
    });
  }
}

function reparse(text: string): ParsedRulesText {
  const doc = parseRulesText(text);
  if (doc.problems.length > 0) throw new Error("internal error: an edit produced an invalid file");
  return doc;
}

function currentMap(doc: ParsedRulesText): Map<string, StoredAction> {
  return new Map(doc.rules.map((r) => [r.pattern, r.action]));
}

function sameRules(doc: ParsedRulesText, expect: Map<string, StoredAction>): boolean {
  return doc.rules.length === expect.size &&
    doc.rules.every((r) => expect.get(r.pattern) === r.action);
}

/** The entry meaning the same as `pattern`, or with exactly that key when it cannot be parsed. */
function findEntry(doc: ParsedRulesText, pattern: string) {
  let identity: string | undefined;
  try {
    identity = patternIdentity(makeParsedRule(pattern, "allow").parsed);
  } catch { /* not a valid pattern: only an identical key can match */ }
  return doc.entries.find((e) => e.identity === identity || e.rule.pattern === pattern);
}

function setRule(text: string, doc: ParsedRulesText, pattern: string, action: StoredAction) {
  const { parsed } = makeParsedRule(pattern, action);
  const identity = patternIdentity(parsed);
  const entry = doc.entries.find((e) => e.identity === identity);
  const expect = currentMap(doc);
  if (entry) {
    const rule = makeParsedRule(entry.rule.pattern, action).rule;
    if (entry.rule.action === action) {
      return { text: undefined, expect, rule, previous: entry.rule };
    }
    expect.set(entry.rule.pattern, action);
    return { text: replaceValue(text, entry.node, action), expect, rule, previous: entry.rule };
  }
  expect.set(pattern, action);
  const rule = makeParsedRule(pattern, action).rule;
  return {
    text: appendProperty(text, doc.root, pattern, action),
    expect,
    rule,
    previous: undefined,
  };
}

/** What the polling backstop compares between two looks at the file. */
interface StatSignature {
  /** Equal for two looks exactly when nothing visible changed. */
  key: string;
  /**
   * True when the modification time is too close to `now` to rule out a
   * later edit in the same clock tick with the same size (git's "racy clean").
   */
  recentAt(now: number, windowMs: number): boolean;
}

function signatureOf(info: Deno.FileInfo | undefined, err?: unknown): StatSignature {
  if (!info) {
    const key = err instanceof Deno.errors.NotFound ? "missing" : `error:${String(err)}`;
    return { key, recentAt: () => false };
  }
  const mtime = info.mtime?.getTime() ?? 0;
  const key = [mtime, info.ctime?.getTime() ?? 0, info.size, info.ino ?? 0, info.dev].join(":");
  return { key, recentAt: (now, windowMs) => now - mtime < windowMs + 1000 };
}

/** `Deno.stat` (following symlinks) as a signature. */
function statSignature(path: string): StatSignature {
  try {
    return signatureOf(Deno.statSync(path));
  } catch (e) {
    return signatureOf(undefined, e);
  }
}

async function statSignatureAsync(path: string): Promise<StatSignature> {
  try {
    return signatureOf(await Deno.stat(path));
  } catch (e) {
    return signatureOf(undefined, e);
  }
}
