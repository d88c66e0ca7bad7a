/**
 * network-rules.json on disk: load, edit safely from several processes at
 * once, and watch for edits made elsewhere.
 * @module
 */

import { basename, dirname } from "node:path";
import { appendProperty, removeProperty, replaceProperty, replaceValue } from "./_edit.ts";
import { withFileLock } from "../file_lock.ts";
import { readTextLimited, writeFileAtomic } from "./_fs.ts";
import { describeIoError, RuleError, RulesFileError } from "./errors.ts";
import { type ParsedRulesText, parseRulesText, type RuleEntry } from "./parse.ts";
import { parsePattern, patternIdentity } from "./pattern.ts";
import { makeParsedRule, RuleSet } from "./rule_set.ts";
import type { Rule, StoredAction } from "./types.ts";

/** Options of {@linkcode RulesStore.add}. */
export interface AddOptions {
  /**
   * Never replace a deny rule with an allow rule: when the file holds a deny
   * rule that this allow rule would replace (the same host pattern; for a URL,
   * a deny URL rule for the same URL in any spelling), the file is left alone
   * and the add fails with {@linkcode DenyRuleKeptError}. For the proxy
   * saving a prompt answer: a deny added meanwhile by someone else must win.
   * Without it (`netmonitor rules add`), the action is replaced.
   */
  keepDeny?: boolean;
}

/**
 * An allow rule was not saved because the rules file holds a deny rule it
 * would have replaced ({@linkcode AddOptions.keepDeny}). `current` holds the
 * file's rules, that deny rule included.
 */
export class DenyRuleKeptError extends Error {
  override name = "DenyRuleKeptError";
  /** The rules file. */
  readonly file: string;
  /** The deny rule in the file, which stays. */
  readonly rule: Rule;
  /** The allow rule that was not saved. */
  readonly refused: Rule;
  constructor(file: string, rule: Rule, refused: Rule) {
    super(
      `rule ${JSON.stringify(refused.pattern)}: ${refused.action} not saved: the deny rule ` +
        `${JSON.stringify(rule.pattern)}: ${rule.action} in "${file}" stays`,
    );
    this.file = file;
    this.rule = rule;
    this.refused = refused;
  }
}

/** Options of the {@linkcode RulesStore} constructor. */
export interface StoreOptions {
  /**
   * How long an edit waits before reading again a rules file that is missing,
   * empty or holds no object (an editor rewriting it in place truncates it
   * first) while the store knows it had rules, ms. Default 500, as the
   * watcher's `settleMs`.
   */
  settleMs?: number;
  /**
   * How long, at most, an edit waits for such a file to get its rules back,
   * ms. When it does not, the edit is refused if rules are still in force
   * (see {@linkcode RulesStore}). Default 5000: an editor that truncates the
   * file and writes it a few seconds later still finds its text kept.
   */
  emptyWaitMs?: number;
}

/** What {@linkcode RulesStore.add} did. */
export interface AddResult {
  /**
   * The rule as now stored (an existing equivalent pattern keeps its
   * spelling, unless that spelling would not mean this rule; see `add`).
   */
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
  /** The rules the new text must hold ([pattern, action], any order), checked before writing. */
  expect?: Array<[string, StoredAction]>;
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
 *
 * Nor is a file that an editor is rewriting in place: one that is missing,
 * empty or holds no object while this store knows it had rules is read again
 * every `settleMs` for up to `emptyWaitMs`, and if it is still so while rules
 * are in force (`current` is not empty) the edit fails with
 * {@linkcode RulesFileError}. A file deliberately deleted or emptied is
 * edited normally once `emptyWaitMs` has passed since this store first saw it
 * so (by then the watcher has let it take effect: no rules in force); `rules
 * clear` leaves `{}`, which is edited at once.
 */
export class RulesStore {
  /** The rules file. */
  readonly path: string;
  #current: RuleSet = RuleSet.empty;
  /** Text behind `current`; null when that was "no file". Undefined before any load. */
  #lastText: string | null | undefined;
  /** Serialises this process's edits and reloads (the file lock does it across processes). */
  #queue: Promise<unknown> = Promise.resolve();
  readonly #settleMs: number;
  readonly #emptyWaitMs: number;
  /**
   * When this store first found the file missing, empty or without an object
   * after it had rules (undefined while the file looks normal): such a file
   * may be an editor's rewrite in progress.
   */
  #blankSince: number | undefined;

  constructor(path: string, options: StoreOptions = {}) {
    this.path = path;
    this.#settleMs = Math.max(1, options.settleMs ?? 500);
    this.#emptyWaitMs = Math.max(0, options.emptyWaitMs ?? 5000);
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
      const parsed = text === null ? undefined : parseRulesText(text);
      this.#observe(text, parsed);
      if (text === null) return this.#accept(null, []);
      if (parsed!.problems.length > 0) throw new RulesFileError(this.path, parsed!.problems);
      return this.#accept(text, parsed!.rules);
    });
  }

  /**
   * Adds a rule, or replaces the action of the rule with the same meaning
   * (`GitHub.com.` is `github.com`), which keeps its spelling and position.
   *
   * URL rules: an allow URL rule matches one forwarded form exactly, so
   * `https://h/a/b` and `https://h/a//b` are two allow rules. A deny URL rule
   * for the same URL in any spelling (same canonical form) is the rule an
   * allow URL rule replaces, and the other way round: one would make the
   * other useless. A replaced rule whose spelling would not mean the new rule
   * (a deny `https://h/a//b` becoming an allow for `https://h/a/b`) takes the
   * new spelling.
   *
   * @throws {RuleError} when the pattern or action is invalid.
   * @throws {RulesFileError} when the file on disk is invalid (it is left alone),
   *   or is empty while rules are in force (see the class documentation).
   * @throws {DenyRuleKeptError} with `keepDeny`, when a deny rule would be replaced.
   */
  async add(pattern: string, action: StoredAction, options: AddOptions = {}): Promise<AddResult> {
    makeParsedRule(pattern, action); // validate before locking anything
    return await this.#edit((text, doc) => {
      const r = setRule(text, doc, pattern, action, options.keepDeny === true, this.path);
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
      let expect = currentRules(doc);
      for (const [pattern, action] of rules) {
        const r = setRule(cur, curDoc, pattern, action, false, this.path);
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
   * @returns the rule removed, as the file had it; undefined when there was
   *   no such rule (the file is not touched).
   * @throws {RulesFileError} when the file on disk is invalid (it is left alone).
   */
  remove(pattern: string): Promise<Rule | undefined> {
    return this.#edit((text, doc) => {
      const entry = findEntry(doc, pattern);
      if (!entry) return { result: undefined };
      const expect = currentRules(doc);
      expect.splice(doc.entries.indexOf(entry), 1);
      return { text: removeProperty(text, doc.root!, entry.node), expect, result: entry.rule };
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
      // Remove what is not wanted, or is wanted under another spelling. From
      // the last one: the entries before it keep their index.
      for (let i = doc.entries.length - 1; i >= 0; i--) {
        const entry = doc.entries[i];
        const w = wanted.get(entry.identity);
        if (w && w[0] === entry.rule.pattern) continue;
        cur = removeProperty(cur, curDoc.root!, curDoc.entries[i].node);
        curDoc = reparse(cur);
      }
      for (const [pattern, action] of wanted.values()) {
        const r = putRule(cur, curDoc, pattern, action);
        if (r !== undefined) {
          cur = r;
          curDoc = reparse(cur);
        }
      }
      const expect = [...wanted.values()].map(([p, a]) => [p, a] as [string, StoredAction]);
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
    const settleMs = options.settleMs ?? this.#settleMs;
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
      this.#observe(text, parsed);
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

  /** Notes whether the file, just read, looks like a rewrite in progress (see `#blankSince`). */
  #observe(text: string | null, parsed: ParsedRulesText | undefined): void {
    if (!isBlank(text, parsed)) this.#blankSince = undefined;
    else if (this.#blankSince === undefined && this.#current.rules.length > 0) {
      this.#blankSince = Date.now();
    }
  }

  /**
   * Reads the file for an edit (under the lock). A file that is missing,
   * empty or holds no object while this store knows it had rules (they are in
   * force, or it had them moments ago) may be an editor's rewrite caught
   * half-way: the editor truncated it and still writes through its open
   * handle, and replacing the file now would orphan what it writes. So it is
   * read again every `settleMs` for up to `emptyWaitMs`; if it is still so
   * and rules are in force, the edit is refused. Once the file has been seen
   * so for `emptyWaitMs` (the watcher has let it take effect meanwhile: no
   * rules in force; or an edit waited and was refused), it is edited as it
   * is: a file deliberately deleted or emptied.
   */
  async #readForEdit(): Promise<{ raw: string | null; doc: ParsedRulesText }> {
    let raw = await this.#read();
    let doc = parseRulesText(raw ?? "");
    this.#observe(raw, doc);
    if (!isBlank(raw, doc)) return { raw, doc };
    // No rules known (`netmonitor rules add`), or seen so for longer than
    // emptyWaitMs already (an edit waited and was refused): it is what it is.
    const since = this.#blankSince;
    const now = Date.now();
    if (since === undefined || now - since >= this.#emptyWaitMs) return { raw, doc };
    // With rules in force, wait the full time; without (the watcher let the
    // emptied file take effect), until emptyWaitMs after it was first seen so.
    const until = this.#current.rules.length > 0
      ? now + this.#emptyWaitMs
      : since + this.#emptyWaitMs;
    const rounds = Math.min(1000, Math.ceil(this.#emptyWaitMs / this.#settleMs) + 1);
    for (let i = 0; i < rounds && Date.now() < until; i++) {
      await new Promise((r) => setTimeout(r, Math.min(this.#settleMs, until - Date.now())));
      raw = await this.#read();
      doc = parseRulesText(raw ?? "");
      this.#observe(raw, doc);
      if (!isBlank(raw, doc)) return { raw, doc };
    }
    const n = this.#current.rules.length;
    if (n > 0) {
      // (trim() takes a byte-order mark too.)
      const state = raw === null
        ? "missing"
        : raw.trim() === ""
        ? "empty"
        : "without a rules object";
      throw new RulesFileError(
        this.path,
        [],
        "update",
        new Error(
          `the file is ${state} while ${n} ${n === 1 ? "rule is" : "rules are"} in force; ` +
            `not overwriting it (an editor may be rewriting it)`,
        ),
      );
    }
    return { raw, doc };
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** The file's text, or null when it does not exist. */
  async #read(): Promise<string | null> {
    try {
      return await readTextLimited(this.path);
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
    return await withRulesLock(this.path, async () => {
      const { raw, doc } = await this.#readForEdit();
      const text = raw ?? "";
      if (doc.problems.length > 0) throw new RulesFileError(this.path, doc.problems, "update");
      let p: Plan<T>;
      try {
        p = plan(text, doc);
      } catch (e) {
        // The file is valid: its rules (the deny that was kept) are in force now.
        if (e instanceof DenyRuleKeptError) this.#accept(raw, doc.rules);
        throw e;
      }
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
      this.#blankSince = undefined;
      this.#accept(p.text, after.rules);
      return p.result;
    });
  }
}

/**
 * Holds the rules file's lock (`<file>.lock`) while `fn` runs. A symlinked
 * file (README: edits through a symlink are seen) is also locked at the file
 * it resolves to: another data dir whose rules file is that file, or a link
 * to it, locks there, and two editors holding two different locks would
 * both read the file and the second rename would drop the first's rule.
 * The link's own lock is taken first, the target's second, so every process
 * ends at the same last lock and none can wait on another in a cycle.
 */
async function withRulesLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const own = `${path}.lock`;
  return await withFileLock(own, async () => {
    let real: string;
    try {
      real = await Deno.realPath(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return await fn(); // nothing there to share
      throw e;
    }
    // The same lock file by another name (the data dir is a symlink, say) is
    // held already: a second flock on it would wait for ourselves.
    if (await sameFile(own, `${real}.lock`)) return await fn();
    return await withFileLock(`${real}.lock`, fn);
  });
}

/** Whether `a` and `b` both exist and are one file (same device and inode). */
async function sameFile(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  let x: Deno.FileInfo, y: Deno.FileInfo;
  try {
    [x, y] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  return x.ino !== null && x.dev === y.dev && x.ino === y.ino;
}

function reparse(text: string): ParsedRulesText {
  const doc = parseRulesText(text);
  if (doc.problems.length > 0) throw new Error("internal error: an edit produced an invalid file");
  return doc;
}

/**
 * True for a file that holds no rules object: missing, empty, or only
 * whitespace and comments (what a rewrite looks like half-way).
 */
function isBlank(text: string | null, parsed: ParsedRulesText | undefined): boolean {
  return text === null || parsed === undefined ||
    (parsed.root === undefined && parsed.problems.length === 0);
}

/** The rules of `doc` as [pattern, action], in file order (aligned with `doc.entries`). */
function currentRules(doc: ParsedRulesText): Array<[string, StoredAction]> {
  return doc.rules.map((r) => [r.pattern, r.action]);
}

/** True when `doc` holds exactly the rules `expect` lists, in any order. */
function sameRules(doc: ParsedRulesText, expect: Array<[string, StoredAction]>): boolean {
  if (doc.rules.length !== expect.length) return false;
  const key = (p: string, a: string) => JSON.stringify([p, a]);
  const have = doc.rules.map((r) => key(r.pattern, r.action)).sort();
  const want = expect.map(([p, a]) => key(p, a)).sort();
  return have.every((k, i) => k === want[i]);
}

/** A URL rule's canonical identity: the URL in any spelling (what a deny URL rule matches). */
function canonicalIdentity(pattern: string): string {
  return patternIdentity(parsePattern(pattern));
}

/**
 * The URL entries of `doc` for the same scheme, host and port as the URL
 * whose canonical identity is `canonical` (cheap: no pattern is parsed).
 */
function sameOrigin(doc: ParsedRulesText, canonical: string): RuleEntry[] {
  // An identity is scheme://host:port/path...: the origin ends before the path's "/".
  const prefix = canonical.slice(0, canonical.indexOf("/", canonical.indexOf("//") + 2) + 1);
  return doc.entries.filter((e) => e.rule.kind === "url" && e.identity.startsWith(prefix));
}

/**
 * The entry `pattern` names, for `remove`: the one with exactly that key;
 * else the one meaning the same (an allow URL rule: the same forwarded form;
 * any other rule: the same canonical form); else, for a URL, a rule for the
 * same URL in another spelling.
 */
function findEntry(doc: ParsedRulesText, pattern: string): RuleEntry | undefined {
  const exact = doc.entries.find((e) => e.rule.pattern === pattern);
  if (exact) return exact;
  let canonical: string;
  try {
    canonical = canonicalIdentity(pattern);
  } catch {
    return undefined; // not a valid pattern: only an identical key can match
  }
  // Undefined for a URL no allow rule can name (a backslash): it names denies only.
  const asAllow = identityAs(pattern, "allow");
  const own = (e: RuleEntry) => e.rule.kind === "url" && e.rule.verdict === "allow";
  return doc.entries.find((e) => e.identity === (own(e) ? asAllow : canonical)) ??
    (canonical.includes("://")
      ? sameOrigin(doc, canonical).find((e) =>
        own(e) && canonicalIdentity(e.rule.pattern) === canonical
      )
      : undefined);
}

/**
 * The identity `pattern` has as a rule with `action`, or undefined when it
 * cannot be one (an allow URL rule with a backslash).
 */
function identityAs(pattern: string, action: StoredAction): string | undefined {
  try {
    return patternIdentity(makeParsedRule(pattern, action).parsed);
  } catch (e) {
    if (e instanceof RuleError) return undefined;
    throw e;
  }
}

/** What {@linkcode setRule} does to a text. */
interface SetRule {
  /** The new text; undefined when nothing changes. */
  text?: string;
  expect: Array<[string, StoredAction]>;
  rule: Rule;
  previous?: Rule;
}

/**
 * Adds `pattern: action`, or changes the rule it replaces (see
 * `RulesStore.add`): the rule with the same identity, else, for a URL rule,
 * a rule of the other verdict for the same URL in any spelling (a deny URL
 * rule matches every spelling and beats an allow URL rule, so the two cannot
 * both be meant).
 */
function setRule(
  text: string,
  doc: ParsedRulesText,
  pattern: string,
  action: StoredAction,
  keepDeny: boolean,
  file: string,
): SetRule {
  const { rule: wanted, parsed } = makeParsedRule(pattern, action);
  const identity = patternIdentity(parsed);
  const same = doc.entries.find((e) => e.identity === identity);
  let other: RuleEntry | undefined;
  if (wanted.kind === "url") {
    const canonical = canonicalIdentity(pattern);
    const verdict = wanted.verdict === "allow" ? "deny" : "allow";
    const candidates = sameOrigin(doc, canonical).filter((e) =>
      e !== same && e.rule.verdict === verdict &&
      (verdict === "deny" ? e.identity : canonicalIdentity(e.rule.pattern)) === canonical
    );
    other = candidates.find((e) => e.rule.pattern === pattern) ?? candidates[0];
  }
  if (keepDeny && wanted.verdict === "allow") {
    const deny = same?.rule.verdict === "deny"
      ? same
      : other?.rule.verdict === "deny"
      ? other
      : undefined;
    if (deny) throw new DenyRuleKeptError(file, deny.rule, wanted);
  }
  const expect = currentRules(doc);
  if (same && other && wanted.verdict === "allow") {
    // The allow is there already, and a deny for the same URL that would
    // make it useless: the deny goes, the allow is kept (updated if needed).
    const gone = doc.entries.indexOf(other);
    const at = doc.entries.indexOf(same) - (gone < doc.entries.indexOf(same) ? 1 : 0);
    expect.splice(gone, 1);
    const cur = removeProperty(text, doc.root!, other.node);
    const entry = reparse(cur).entries[at];
    if (identityAs(entry.rule.pattern, action) !== identity) {
      // A deny spelled as no allow can be (`https://h/a\\b`): the allow's spelling.
      return respelled(cur, entry, at, expect, wanted, action, other.rule);
    }
    const rule = makeParsedRule(entry.rule.pattern, action).rule;
    expect[at] = [entry.rule.pattern, action];
    const updated = entry.rule.action === action ? cur : replaceValue(cur, entry.node, action);
    return { text: updated, expect, rule, previous: other.rule };
  }
  const entry = same ?? other;
  if (!entry) {
    expect.push([pattern, action]);
    return { text: appendProperty(text, doc.root, pattern, action), expect, rule: wanted };
  }
  const index = doc.entries.indexOf(entry);
  // The entry keeps its spelling when that spelling, with the new action, is
  // still this rule (not so for a deny `https://h/a//b` becoming an allow of
  // `/a/b`, nor for a deny `https://h/a\\b`, a spelling no allow rule can have).
  if (identityAs(entry.rule.pattern, action) !== identity) {
    return respelled(text, entry, index, expect, wanted, action, entry.rule);
  }
  const rule = makeParsedRule(entry.rule.pattern, action).rule;
  if (entry.rule.action === action) return { expect, rule, previous: entry.rule };
  expect[index] = [entry.rule.pattern, action];
  return { text: replaceValue(text, entry.node, action), expect, rule, previous: entry.rule };
}

/** `setRule`'s edit that writes the rule at `index` as `wanted` is spelled, with `action`. */
function respelled(
  text: string,
  entry: RuleEntry,
  index: number,
  expect: [string, StoredAction][],
  wanted: Rule,
  action: StoredAction,
  previous: Rule,
): SetRule {
  expect[index] = [wanted.pattern, action];
  return {
    text: replaceProperty(text, entry.node, wanted.pattern, action),
    expect,
    rule: wanted,
    previous,
  };
}

/**
 * `replaceAll`'s edit: sets the action of the rule with the same identity
 * (kept only when spelled as `pattern`), or appends the rule. The new text,
 * or undefined when nothing changes.
 */
function putRule(
  text: string,
  doc: ParsedRulesText,
  pattern: string,
  action: StoredAction,
): string | undefined {
  const identity = patternIdentity(makeParsedRule(pattern, action).parsed);
  const entry = doc.entries.find((e) => e.identity === identity && e.rule.pattern === pattern);
  if (!entry) return appendProperty(text, doc.root, pattern, action);
  return entry.rule.action === action ? undefined : replaceValue(text, entry.node, action);
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
