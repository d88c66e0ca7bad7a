/**
 * `netmonitor manage`: the original design's interactive firewall menu
 * (`docker/manage-firewall.sh`). A numbered menu read line by line, so it
 * works on a terminal, through tmux, and with answers piped in.
 *
 * Every rule change goes through {@linkcode RulesStore}, exactly like
 * `netmonitor rules`: the same validation, the inter-process lock, atomic
 * writes; a running proxy picks the change up through its watch.
 *
 * @module
 */

import type { Command } from "commander";
import { dirname, resolve } from "node:path";
import { readLastRecords } from "../lib/log/reader.ts";
import {
  hasRulesValue,
  makeRule,
  parsePattern,
  parseRules,
  type Rule,
  RuleError,
  RulesFileError,
  RulesStore,
  STORED_ACTIONS,
  type StoredAction,
} from "../lib/rules/mod.ts";
import {
  colorEnabled,
  formatCount,
  formatRecordLine,
  makeStyle,
  renderTable,
  safeText,
  type Style,
  terminalWidth,
} from "./_render.ts";
import { readTextLimited, writeFileAtomic } from "../lib/rules/_fs.ts";
import type { CliContext } from "./mod.ts";
import { ensureDataDir } from "../lib/paths.ts";
import { runStats } from "./stats.ts";
import { type LineReader, printable, StdinLineReader } from "./terminal_prompt.ts";

/** Where the menu reads and writes. Tests inject lines and collect the text. */
export interface ManageIO {
  lines: LineReader;
  write(text: string): void;
  color: boolean;
  width(): number;
}

/** The files the menu works on. */
export interface ManagePaths {
  rulesFile: string;
  logFile: string;
}

/** The menu, in the original design's order: export is option 6. */
export const MENU_ITEMS = [
  "View statistics",
  "View recent requests",
  "Add a rule",
  "Remove a rule",
  "List rules",
  "Export rules",
  "Import rules",
  "Clear all rules",
  "Quit",
] as const;

const BANNER = "=".repeat(80);
const MAX_RECENT = 10_000;

/** Input ended (Ctrl-D or a closed pipe): leave the menu. */
class EndOfInput extends Error {}

class Menu {
  readonly #style: Style;
  readonly #store: RulesStore;
  constructor(
    readonly paths: ManagePaths,
    readonly io: ManageIO,
    readonly cwd: string,
  ) {
    this.#style = makeStyle(io.color);
    this.#store = new RulesStore(paths.rulesFile);
  }

  say(text = ""): void {
    this.io.write(text + "\n");
  }

  problem(text: string): void {
    this.say(`${this.#style.red("✗")} ${text}`);
  }

  done(text: string): void {
    this.say(`${this.#style.green("✓")} ${text}`);
  }

  /** Asks one question; throws EndOfInput at end of input. */
  async ask(question: string): Promise<string> {
    this.io.write(question);
    const line = await this.io.lines.readLine();
    if (line === null) {
      this.io.write("\n");
      throw new EndOfInput();
    }
    return line.trim();
  }

  /** Asks until the answer is a whole number in [min, max]; empty returns `empty`. */
  async askNumber(
    question: string,
    min: number,
    max: number,
    empty: number | null,
  ): Promise<number | null> {
    for (;;) {
      const a = await this.ask(question);
      if (a === "") return empty;
      if (/^\d+$/.test(a) && Number(a) >= min && Number(a) <= max) return Number(a);
      this.problem(`"${printable(a, 40)}" is not a number from ${min} to ${max}. Try again.`);
    }
  }

  async confirm(question: string): Promise<boolean> {
    for (;;) {
      const a = (await this.ask(`${question} [y/N]: `)).toLowerCase();
      if (a === "" || a === "n" || a === "no") return false;
      if (a === "y" || a === "yes") return true;
      this.problem('Please answer "y" or "n".');
    }
  }

  /** Loads the rules; on a broken file says why and returns null. */
  async rules(): Promise<readonly Rule[] | null> {
    try {
      return (await this.#store.load()).rules;
    } catch (e) {
      if (e instanceof RulesFileError) {
        this.problem(e.message);
        this.say("  Fix the file (netmonitor rules check shows every problem), then try again.");
        return null;
      }
      throw e;
    }
  }

  showMenu(): void {
    const s = this.#style;
    this.say();
    this.say(BANNER);
    this.say(s.bold("Network Firewall Management"));
    this.say(BANNER);
    MENU_ITEMS.forEach((item, i) => this.say(`  ${i + 1}. ${item}`));
    this.say();
  }

  async run(): Promise<number> {
    try {
      for (;;) {
        this.showMenu();
        const choice = await this.askNumber(
          `Your choice [1-${MENU_ITEMS.length}]: `,
          1,
          MENU_ITEMS.length,
          null,
        );
        if (choice === null) continue;
        this.say();
        try {
          if (!(await this.act(choice))) break;
        } catch (e) {
          if (e instanceof EndOfInput) throw e;
          // A rule or file error the action did not expect: report, keep the menu.
          if (e instanceof RuleError || e instanceof RulesFileError) this.problem(e.message);
          else throw e;
        }
      }
    } catch (e) {
      if (!(e instanceof EndOfInput)) throw e;
    }
    this.say("Bye.");
    return 0;
  }

  /** Runs one menu action. Returns false to quit. */
  async act(choice: number): Promise<boolean> {
    switch (choice) {
      case 1:
        await this.viewStats();
        return true;
      case 2:
        await this.viewRecent();
        return true;
      case 3:
        await this.addRule();
        return true;
      case 4:
        await this.removeRule();
        return true;
      case 5:
        await this.listRules();
        return true;
      case 6:
        await this.exportRules();
        return true;
      case 7:
        await this.importRules();
        return true;
      case 8:
        await this.clearRules();
        return true;
      default:
        return false;
    }
  }

  async viewStats(): Promise<void> {
    await runStats(
      { logFile: this.paths.logFile, rulesFile: this.paths.rulesFile, recent: 5, hosts: 10 },
      {
        write: (t) => this.io.write(t),
        color: this.io.color,
        width: () => this.io.width(),
        isTerminal: false,
      },
    );
  }

  async viewRecent(): Promise<void> {
    const n = await this.askNumber(
      "How many recent requests? [20]: ",
      1,
      MAX_RECENT,
      20,
    );
    const { records, badLines } = await readLastRecords(this.paths.logFile, n!);
    if (records.length === 0) {
      this.say(`No requests logged yet in ${this.paths.logFile}.`);
    } else {
      this.say(this.#style.bold(`Last ${formatCount(records.length)} requests, newest last:`));
      for (const r of records) {
        this.say(formatRecordLine(r, { color: this.io.color, width: this.io.width() }));
      }
    }
    if (badLines > 0) {
      this.say(this.#style.yellow(`${badLines} unreadable log line(s) skipped.`));
    }
  }

  async addRule(): Promise<void> {
    this.say("Patterns: a host (github.com), a wildcard (*.github.com), * for everything,");
    this.say("or an exact URL (https://host/path).");
    let pattern: string;
    let kind: Rule["kind"];
    for (;;) {
      pattern = await this.ask("Pattern (empty to cancel): ");
      if (pattern === "") return this.say("Cancelled.");
      try {
        kind = parsePattern(pattern).kind;
        break;
      } catch (e) {
        if (!(e instanceof RuleError)) throw e;
        this.problem(`${e.message}. Try again.`);
      }
    }
    const choices = actionChoices(kind);
    choices.forEach((c, i) => this.say(`  ${i + 1}. ${c.action}${c.note ? ` (${c.note})` : ""}`));
    const numbers = choices.map((_, i) => String(i + 1));
    let action: StoredAction;
    for (;;) {
      const a = (await this.ask("Action [1]: ")).toLowerCase();
      const n = a === "" ? 1 : numbers.includes(a) ? Number(a) : 0;
      if (n === 0 && /^\d+$/.test(a)) {
        this.problem(`"${a}" is not a number from 1 to ${choices.length}. Try again.`);
        continue;
      }
      try {
        action = makeRule(pattern, n > 0 ? choices[n - 1].action : a).action;
        break;
      } catch (e) {
        if (!(e instanceof RuleError)) throw e;
        // Name only what works for this pattern (allow and deny work for any).
        const names = choices.map((c) => c.action).join(", ");
        const reason = (STORED_ACTIONS as readonly string[]).includes(a)
          ? `${e.message}.`
          : `"${a}" is not an action.`;
        this.problem(`${reason} Type ${orList(numbers)}, or one of: ${names}.`);
      }
    }
    const { rule, previous } = await this.#store.add(pattern, action);
    if (previous && previous.action === rule.action) {
      this.done(`Already there: ${rule.pattern} ${rule.action}`);
    } else if (previous) {
      this.done(`Updated: ${rule.pattern} ${previous.action} -> ${rule.action}`);
    } else {
      this.done(`Added: ${rule.pattern} ${rule.action}`);
    }
    // As `netmonitor rules add` does: a passthrough host next to a deny URL
    // rule (or an allow URL rule it makes useless) does not do what it seems.
    for (const w of this.#store.current.warnings()) {
      if (w.rule.pattern === rule.pattern || w.related?.pattern === rule.pattern) {
        this.say(`${this.#style.yellow("warning:")} ${safeText(w.message)}`);
      }
    }
  }

  rulesTable(rules: readonly Rule[]): void {
    const s = this.#style;
    this.say(s.bold(`Rules (${rules.length})`) + s.gray(`  ${this.paths.rulesFile}`));
    for (
      const line of renderTable(
        [
          { header: "#", align: "right" },
          { header: "PATTERN", flexible: true, minWidth: 16 },
          { header: "ACTION" },
        ],
        rules.map((r, i) => [
          String(i + 1),
          safeText(r.pattern),
          r.verdict === "allow" ? s.green(r.action) : s.red(r.action),
        ]),
        { width: this.io.width(), style: s },
      )
    ) this.say(line);
  }

  async listRules(): Promise<void> {
    const rules = await this.rules();
    if (rules === null) return;
    if (rules.length === 0) return this.say("No rules yet.");
    this.rulesTable(rules);
  }

  async removeRule(): Promise<void> {
    const rules = await this.rules();
    if (rules === null) return;
    if (rules.length === 0) return this.say("No rules to remove.");
    this.rulesTable(rules);
    const n = await this.askNumber(
      `Rule to remove [1-${rules.length}] (empty to cancel): `,
      1,
      rules.length,
      null,
    );
    if (n === null) return this.say("Cancelled.");
    const rule = rules[n - 1];
    if (await this.#store.remove(rule.pattern)) {
      this.done(`Removed: ${rule.pattern} ${rule.action}`);
    } else this.problem(`"${rule.pattern}" was already gone (changed by someone else).`);
  }

  async exportRules(): Promise<void> {
    if ((await this.rules()) === null) return;
    for (;;) {
      const name = await this.ask("Export to file (empty to cancel): ");
      if (name === "") return this.say("Cancelled.");
      const target = filePath(this.cwd, name);
      if (target === resolve(this.paths.rulesFile)) {
        this.problem("That is the rules file itself. Choose another name.");
        continue;
      }
      try {
        const info = await Deno.stat(target);
        if (info.isDirectory) {
          this.problem(`"${name}" is a folder. Give a file name.`);
          continue;
        }
        if (!(await this.confirm(`"${name}" exists. Overwrite it?`))) continue;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        try {
          if (!(await Deno.stat(dirname(target))).isDirectory) throw new Deno.errors.NotFound();
        } catch {
          this.problem(`The folder "${dirname(target)}" does not exist. Try again.`);
          continue;
        }
      }
      // The rules file's own text: the same format, comments and order kept.
      let text: string;
      try {
        text = await readTextLimited(this.paths.rulesFile);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        text = "{}\n";
      }
      const count = parseRules(text).rules.length;
      try {
        // Owner-only, as the rules file: exact-URL rules hold URLs, tokens and all.
        await writeFileAtomic(target, text, 0o600);
      } catch (e) {
        this.problem(`Cannot write "${name}": ${(e as Error).message}. Try again.`);
        continue;
      }
      return this.done(`Exported ${count} rule${count === 1 ? "" : "s"} to ${target}`);
    }
  }

  async importRules(): Promise<void> {
    let rules: Rule[];
    let source: string;
    for (;;) {
      const name = await this.ask("Import from file (empty to cancel): ");
      if (name === "") return this.say("Cancelled.");
      source = filePath(this.cwd, name);
      let text: string;
      try {
        text = await readTextLimited(source);
      } catch (e) {
        const why = e instanceof Deno.errors.NotFound
          ? "file not found"
          : e instanceof Deno.errors.IsADirectory
          ? "it is a folder"
          : (e as Error).message;
        this.problem(`Cannot import "${name}": ${why}. Try again.`);
        continue;
      }
      if (!hasRulesValue(text)) {
        this.problem(
          `Cannot import "${name}": it holds no rules object (it is empty, or only comments). ` +
            `Try again; option 8 clears all rules.`,
        );
        continue;
      }
      const parsed = parseRules(text);
      if (parsed.problems.length > 0) {
        this.problem(new RulesFileError(name, parsed.problems, "import").message);
        this.say("  Nothing was changed. Fix the file or choose another.");
        continue;
      }
      rules = parsed.rules;
      break;
    }
    const current = await this.rules();
    if (current === null) return;
    this.say(`"${source}" holds ${rules.length} rule${rules.length === 1 ? "" : "s"}.`);
    let mode: "merge" | "replace";
    for (;;) {
      const a = (await this.ask(
        `Merge them into the ${current.length} current rules, or replace them? [M/r]: `,
      )).toLowerCase();
      if (a === "" || a === "m" || a === "merge") mode = "merge";
      else if (a === "r" || a === "replace") mode = "replace";
      else {
        this.problem('Please answer "m" (merge) or "r" (replace).');
        continue;
      }
      break;
    }
    const pairs = rules.map((r) => [r.pattern, r.action] as const);
    if (mode === "replace") {
      await this.#store.replaceAll(pairs);
      this.done(`Replaced the rules with ${rules.length} imported rule(s).`);
    } else {
      const r = await this.#store.merge(pairs);
      this.done(`Imported: ${r.added} added, ${r.updated} updated, ${r.unchanged} unchanged.`);
    }
  }

  async clearRules(): Promise<void> {
    const rules = await this.rules();
    if (rules === null) return;
    if (rules.length === 0) return this.say("There are no rules to clear.");
    const which = rules.length === 1 ? "the only rule" : `all ${rules.length} rules`;
    if (!(await this.confirm(`Delete ${which}?`))) {
      return this.say("Nothing was changed.");
    }
    await this.#store.replaceAll([]);
    this.done(`Cleared ${rules.length} rule${rules.length === 1 ? "" : "s"}.`);
  }
}

/** One action the menu offers; `note` says what it does when its name does not. */
interface ActionChoice {
  action: StoredAction;
  note?: string;
}

/**
 * The actions offered for a pattern of `kind`, in menu order. `passthrough`
 * only for hosts and wildcards: a URL cannot be relayed undecrypted on its
 * own, and `*` would turn interception off for everything.
 */
export function actionChoices(kind: Rule["kind"]): ActionChoice[] {
  if (kind === "url") return [{ action: "allow-url" }, { action: "deny-url" }];
  const host: ActionChoice[] = [{ action: "allow-domain" }, { action: "deny-domain" }];
  if (kind === "any") return host;
  return [...host, {
    action: "passthrough",
    note: "allow, and relay its HTTPS without decrypting it: for clients that pin certificates",
  }];
}

/** "1 or 2", "1, 2 or 3". */
function orList(items: string[]): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
}

/**
 * A file name typed at the menu, as a shell would read it: relative to `cwd`,
 * and `~` or `~/...` in the home folder (no shell sees what the menu reads).
 */
export function filePath(cwd: string, name: string): string {
  const home = Deno.env.get("HOME");
  if (home && (name === "~" || name.startsWith("~/"))) return resolve(home, name.slice(2));
  return resolve(cwd, name);
}

/**
 * Runs the menu until Quit or end of input. Returns the exit code (0).
 * @param cwd where relative export/import file names are resolved. Default: the current folder.
 */
export function runManage(paths: ManagePaths, io: ManageIO, cwd = Deno.cwd()): Promise<number> {
  return new Menu(paths, io, cwd).run();
}

/** Registers `netmonitor manage`. */
export function registerManageCommand(program: Command, ctx: CliContext): void {
  program
    .command("manage")
    .description(
      "interactive menu (the original manage-firewall.sh): statistics, recent requests, " +
        "add/remove/list rules, export and import rules, clear all rules",
    )
    .action(async () => {
      const paths = ctx.paths;
      // The menu edits the rules: the data dir is made (or checked) as `run` does.
      await ensureDataDir(paths);
      ctx.exitCode = await manageCommand(
        { rulesFile: paths.rules, logFile: paths.log },
        { write: ctx.stdout, isTerminal: ctx.stdoutIsTerminal },
      );
    });
}

/** `netmonitor manage` on the real terminal (or with answers piped to stdin). */
export async function manageCommand(
  paths: ManagePaths,
  out: { write?: (text: string) => void; isTerminal?: boolean } = {},
): Promise<number> {
  const interactive = Deno.stdin.isTerminal();
  // Piped answers are all read ahead; keep them for the questions to come.
  const lines = new StdinLineReader({ discardUnread: interactive });
  const encoder = new TextEncoder();
  const write = out.write ?? ((text: string) => {
    const bytes = encoder.encode(text);
    let off = 0;
    while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
  });
  const isTerminal = out.isTerminal ?? Deno.stdout.isTerminal();
  const onInterrupt = () => {
    // Leave the terminal as we found it, then exit like a shell program does.
    void lines.close();
    write("\n");
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    return await runManage(paths, {
      lines,
      write,
      color: colorEnabled({ isTerminal: () => isTerminal }),
      width: () => terminalWidth(100, isTerminal),
    });
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    await lines.close();
  }
}
