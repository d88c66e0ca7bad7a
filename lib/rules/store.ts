/**
 * network-rules.json on disk: load, edit safely from several processes at
 * once, and watch for edits made elsewhere.
 * @module
 */

import { basename, dirname } from "node:path";
import { appendProperty, removeProperty, replaceValue } from "./_edit.ts";
import { withFileLock, writeFileAtomic } from "./_fs.ts";
import { RulesFileError } from "./errors.ts";
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
  /** The file changed and is invalid: the last good rules stay in force. */
  onError?(err: RulesFileError): void;
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
   * The directory is watched, not the file, so a replaced file is still seen.
   * Events are debounced; then the file is read: a valid change updates
   * `current` and calls `onReload`, an invalid one keeps the last good rules
   * and calls `onError` (once per distinct bad content). A deleted file means
   * no rules. This process's own edits do not trigger callbacks.
   */
  watch(handlers: WatchHandlers, options: WatchOptions = {}): RulesWatcher {
    const debounceMs = options.debounceMs ?? 100;
    const dir = dirname(this.path);
    const name = basename(this.path);
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const watcher = Deno.watchFs(dir, { recursive: false });
    let closed = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let lastBad: string | undefined;
    let inFlight: Promise<unknown> = Promise.resolve();

    const reload = async () => {
      if (closed) return;
      let text: string | null;
      try {
        text = await this.#read();
      } catch (e) {
        if (!closed && e instanceof RulesFileError) handlers.onError?.(e);
        return;
      }
      if (closed || text === this.#lastText) return;
      if (text === null) {
        lastBad = undefined;
        handlers.onReload?.(this.#accept(null, []));
        return;
      }
      const parsed = parseRulesText(text);
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

    const loop = (async () => {
      try {
        for await (const event of watcher) {
          if (closed) break;
          if (event.kind === "access") continue;
          if (!event.paths.some((p) => basename(p) === name)) continue;
          clearTimeout(timer);
          timer = setTimeout(() => {
            timer = undefined;
            inFlight = this.#serial(reload);
          }, debounceMs);
        }
      } catch { /* the watcher was closed */ }
    })();

    return {
      close: async () => {
        if (closed) return;
        closed = true;
        clearTimeout(timer);
        try {
          watcher.close();
        } catch { /* already closed */ }
        await loop;
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
