/**
 * `netmonitor rules ...`: list, add, rm, export, import, clear, check, test.
 * @module
 */

import type { Command } from "commander";
import { jsonEscapeUnsafe, maxOf, safeLines } from "./_render.ts";
import { parseIPv6 } from "../lib/net/guard.ts";
import { HostError, parseAuthority } from "../lib/net/host.ts";
import { parseAbsoluteForm, TargetError } from "../lib/net/url.ts";
import {
  describeIoError,
  hasRulesValue,
  makeRule,
  parseRules,
  readTextLimited,
  type RequestTarget,
  RuleError,
  RulesFileError,
  RulesStore,
  ruleWarnings,
  STORED_ACTIONS,
  type StoredAction,
  writeFileAtomic,
} from "../lib/rules/mod.ts";
import { checkDataDir, ensureDataDir } from "../lib/paths.ts";
import { CliError, EXIT_FAILURE, UsageError } from "./_errors.ts";
import type { CliContext } from "./mod.ts";

const PATTERN_HELP = `
Patterns:
  github.com            that host only (any port)
  example.com:8443      that host on that port only
  *.github.com          every subdomain at any depth, not github.com itself
  *                     everything not matched by a more specific rule
  10.0.0.1, [::1]       IP literals (IPv6 in brackets)
  https://host/path?q   that exact URL (scheme, host, port, path, query)

Actions:
  allow-domain, deny-domain   for host, wildcard and * patterns
  allow-url, deny-url         for URL patterns
  allow, deny                 either; the kind comes from the pattern
  passthrough                 for host and wildcard patterns: allow, and relay
                              HTTPS undecrypted (for clients that pin certificates)

Precedence, most specific first: exact URL, exact host, longest wildcard, *,
then no rule (netmonitor asks). Quote patterns with * in the shell.`;

/** Registers `rules` and its subcommands. */
export function registerRulesCommand(program: Command, ctx: CliContext): void {
  const rules = program
    .command("rules")
    .description("list and edit the firewall rules (network-rules.json)")
    .addHelpText("after", PATTERN_HELP);
  const store = () => new RulesStore(ctx.paths.rules);
  // The data dir is checked before anything in it is used: commands that read
  // it refuse an unsafe one (and do not create a missing one), those that
  // write also create it.
  const reading = () => checkDataDir(ctx.paths);
  const writing = () => ensureDataDir(ctx.paths);
  // Patterns come from rules files and arguments: never print their control
  // characters raw (a hostile file could rewrite the terminal). Exported
  // rules are data, and are written as they are.
  const out = (text: string) => ctx.stdout(safeLines(text));
  const err = (text: string) => ctx.stderr(safeLines(text));

  rules
    .command("list")
    .alias("ls")
    .description("show the rules, in file order")
    .option("--json", "print a JSON array of {pattern, action, kind, verdict}")
    .action(async (opts: { json?: boolean }) => {
      await reading();
      const set = await store().load();
      if (opts.json) {
        // Valid JSON still: control characters as JSON escapes.
        ctx.stdout(`${jsonEscapeUnsafe(JSON.stringify(set.rules, null, 2))}\n`);
        return;
      }
      if (set.rules.length === 0) {
        out(`No rules in ${ctx.paths.rules}\n`);
        return;
      }
      const width = Math.min(60, maxOf(set.rules.map((r) => r.pattern.length)));
      out(`${plural(set.rules.length, "rule")} in ${ctx.paths.rules}:\n`);
      for (const r of set.rules) out(`  ${r.pattern.padEnd(width)}  ${r.action}\n`);
    });

  rules
    .command("add")
    .description("add a rule, or change the action of an existing one")
    .argument("<pattern>", "host, *.domain, *, IP, or http(s)://host/path URL")
    .argument("<action>", STORED_ACTIONS.join(" | "))
    .addHelpText("after", PATTERN_HELP)
    .action(async (pattern: string, action: string) => {
      try {
        makeRule(pattern, action);
      } catch (e) {
        if (e instanceof RuleError) throw new UsageError(e.message);
        throw e;
      }
      await writing();
      const s = store();
      const { rule, previous } = await s.add(pattern, action as StoredAction);
      if (!previous) out(`Added rule "${rule.pattern}": ${rule.action}\n`);
      else if (previous.action === rule.action) {
        out(`Rule "${rule.pattern}": ${rule.action} already exists; nothing changed\n`);
      } else {
        out(`Changed rule "${rule.pattern}": ${previous.action} -> ${rule.action}\n`);
      }
      for (const w of s.current.warnings()) {
        if (w.rule.pattern === rule.pattern || w.related?.pattern === rule.pattern) {
          err(`warning: ${w.message}\n`);
        }
      }
      const ambiguous = portLikeIPv6(pattern);
      if (ambiguous) err(`warning: ${ambiguous}\n`);
    });

  rules
    .command("rm")
    .alias("remove")
    .description("remove a rule (any spelling of the same pattern matches)")
    .argument("<pattern>", "the pattern to remove")
    .action(async (pattern: string) => {
      await writing();
      const removed = await store().remove(pattern);
      if (!removed) throw new CliError(`no rule "${pattern}" in ${ctx.paths.rules}`);
      // The rule as the file had it: another spelling may have named it.
      const named = removed.pattern === pattern ? "" : ` (named by "${pattern}")`;
      out(`Removed rule "${removed.pattern}": ${removed.action}${named}\n`);
    });

  rules
    .command("export")
    .description("write the rules to a file (- for standard output), comments included")
    .argument("<file>", "destination file, or - for standard output")
    .action(async (file: string) => {
      // Export the file's own text (comments included), after validating it.
      await reading();
      let text: string;
      try {
        text = await readTextLimited(ctx.paths.rules);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          throw new RulesFileError(ctx.paths.rules, [], "read", e);
        }
        text = "{\n}\n";
      }
      const { rules: exported, problems } = parseRules(text);
      if (problems.length > 0) throw new RulesFileError(ctx.paths.rules, problems);
      // An emptied rules file means no rules: export it as such, so it imports again.
      if (!hasRulesValue(text)) text = "{\n}\n";
      if (file === "-") {
        ctx.stdout(text); // data, as it is
        return;
      }
      try {
        // Owner-only, as the rules file: exact-URL rules hold URLs, tokens and all.
        await writeFileAtomic(file, text, 0o600);
      } catch (e) {
        const why = e instanceof Deno.errors.NotFound
          ? "its directory does not exist"
          : describeIoError(e as Error);
        throw new CliError(`Cannot write "${file}": ${why}`);
      }
      out(`Exported ${plural(exported.length, "rule")} to ${file}\n`);
    });

  rules
    .command("import")
    .description("add the rules of a file (- for standard input); --replace replaces all")
    .argument("<file>", "a rules file in the same format, or - for standard input")
    .option("--replace", "replace every current rule instead of merging")
    .action(async (file: string, opts: { replace?: boolean }) => {
      const text = await readInput(file, "import");
      // Empty input is a failed download or a wrong file, never a request to
      // drop every rule: `{}` says that, and so does `rules clear`.
      if (!hasRulesValue(text)) {
        throw new CliError(
          `Cannot import rules "${displayName(file)}": it holds no rules object ` +
            `(it is empty, or only comments); nothing was changed. A rules file is a JSON ` +
            `object such as {"github.com": "allow"}; to remove every rule, use ` +
            `"netmonitor rules clear".`,
        );
      }
      const { rules: incoming, problems } = parseRules(text);
      if (problems.length > 0) throw new RulesFileError(displayName(file), problems, "import");
      const pairs = incoming.map((r) => [r.pattern, r.action] as const);
      await writing();
      const s = store();
      if (opts.replace) {
        const before = (await s.load()).rules.length;
        await s.replaceAll(pairs);
        out(
          `Replaced ${plural(before, "rule")} with ${plural(incoming.length, "rule")} from ${
            displayName(file)
          }\n`,
        );
      } else {
        const r = await s.merge(pairs);
        out(
          `Imported ${plural(incoming.length, "rule")} from ${displayName(file)}: ` +
            `${r.added} added, ${r.updated} changed, ${r.unchanged} unchanged\n`,
        );
      }
    });

  rules
    .command("clear")
    .description("remove every rule (asks first; comments stay)")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (opts: { yes?: boolean }) => {
      await writing();
      const s = store();
      const count = (await s.load()).rules.length;
      if (count === 0) {
        out(`No rules to clear in ${ctx.paths.rules}\n`);
        return;
      }
      if (!opts.yes) {
        if (!ctx.stdinIsTerminal) {
          throw new UsageError(
            `refusing to remove ${
              plural(count, "rule")
            } without confirmation: standard input is not a terminal`,
            { hint: `Run "netmonitor rules clear --yes" to clear without asking.` },
          );
        }
        const ok = await ctx.confirmer.confirm(
          `Remove all ${plural(count, "rule")} from ${ctx.paths.rules}?`,
        );
        if (!ok) {
          err("Aborted; no rules were removed.\n");
          ctx.exitCode = EXIT_FAILURE;
          return;
        }
      }
      await s.replaceAll([]);
      out(`Removed ${plural(count, "rule")}\n`);
    });

  rules
    .command("check")
    .description("validate a rules file and report every problem (exit 1 if any)")
    .argument("[file]", "the file to check (default: the rules file in the data directory)")
    .action(async (file: string | undefined) => {
      const path = file ?? ctx.paths.rules;
      let text: string;
      if (file === undefined) {
        await reading();
        try {
          text = await readTextLimited(path);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) {
            throw new RulesFileError(path, [], "check", e);
          }
          out(`${path}: no such file yet (no rules)\n`);
          return;
        }
      } else {
        text = await readInput(file, "check");
      }
      const name = file === undefined ? path : displayName(file);
      const { rules, problems } = parseRules(text);
      // Warnings explain rules that do not do what they seem to; they never fail the check.
      for (const w of problems.length === 0 ? ruleWarnings(text) : []) {
        out(`${name}:${w.line}:${w.column}: warning: ${w.message}\n`);
      }
      if (problems.length === 0) {
        out(`${name}: OK, ${plural(rules.length, "rule")}\n`);
        return;
      }
      for (const p of problems) {
        // The location leads the line; the message keeps the ones it names (a duplicate's first).
        const expected = p.expected ? ` (expected ${p.expected})` : "";
        out(`${name}:${p.line}:${p.column}: ${p.message}${expected}\n`);
      }
      out(`${plural(problems.length, "problem")} in ${name}\n`);
      ctx.exitCode = EXIT_FAILURE;
    });

  rules
    .command("test")
    .description("show which rule decides a URL or host, and why")
    .argument("<target>", "a URL (https://host/path?q) or host[:port]")
    .action(async (target: string) => {
      const t = parseTarget(target);
      await reading();
      const set = await store().load();
      // A relayed tunnel is decided on its host: the proxy never sees the URL.
      const relayed = t.scheme === "https" && set.isPassthrough(t.host, t.port);
      const d = set.decide(relayed ? { scheme: t.scheme, host: t.host, port: t.port } : t);
      out(`${d.action}: ${d.reason}\n`);
      if (relayed) {
        out(`(HTTPS tunnels to ${t.host}:${t.port} are relayed without decryption)\n`);
      } else if (t.path === undefined && set.hasUrlRulesFor(t.host, t.port)) {
        out(`(URL rules exist for ${t.host}:${t.port}; give a full URL to check them)\n`);
      }
    });
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function displayName(file: string): string {
  return file === "-" ? "standard input" : file;
}

async function readInput(file: string, verb: string): Promise<string> {
  try {
    return await readTextLimited(file === "-" ? Deno.stdin.readable : file);
  } catch (e) {
    throw new RulesFileError(displayName(file), [], verb, e);
  }
}

/**
 * The request the proxy would decide for `target`: a URL is read as a client
 * sends it (without its `#fragment`) and as the proxy reads it
 * (`parseAbsoluteForm`: the path normalised as it is forwarded and decided,
 * so `/x//../admin` is `/x/admin`), or a `host[:port]` (port 443 when none).
 *
 * @throws {UsageError} for anything else, or a URL the proxy refuses.
 */
export function parseTarget(target: string): RequestTarget {
  if (/^https?:\/\//i.test(target)) {
    const hash = target.indexOf("#");
    try {
      const { scheme, host, port, path } = parseAbsoluteForm(
        hash < 0 ? target : target.slice(0, hash),
      );
      return { scheme, host, port, path };
    } catch (e) {
      if (!(e instanceof TargetError)) throw e;
      throw new UsageError(`"${target}" is not a URL the proxy accepts: ${e.message}`);
    }
  }
  try {
    if (/[/?#]/.test(target)) throw new HostError("");
    // A bare IPv6 address (two or more colons) has no port, as in a pattern.
    const bare = !target.startsWith("[") && (target.match(/:/g)?.length ?? 0) >= 2;
    const { host, port } = parseAuthority(bare ? `[${target}]` : target, 443);
    return { scheme: port === 80 ? "http" : "https", host, port };
  } catch (e) {
    if (!(e instanceof HostError)) throw e;
    throw new UsageError(
      `"${target}" is not a URL (http(s)://host/path) or a host[:port]`,
    );
  }
}

/**
 * A bare IPv6 address whose last group reads like a port (`::1:8080`) is an
 * address: the port form needs brackets. Says so, or undefined.
 */
export function portLikeIPv6(pattern: string): string | undefined {
  if (pattern.startsWith("[") || !/^[0-9a-f:.]+$/i.test(pattern)) return undefined;
  if ((pattern.match(/:/g) ?? []).length < 2) return undefined;
  // "::8080" splits as "::" and 8080: the colon before the port is the
  // second colon of "::".
  const m = /^(::)(\d{2,5})$/.exec(pattern) ?? /^(.*[^:]|::?):(\d{2,5})$/.exec(pattern);
  if (!m || Number(m[2]) > 65535 || parseIPv6(m[1]) === undefined) return undefined;
  return `"${pattern}" is the IPv6 address [${pattern}], not ${m[1]} with a port; ` +
    `for port ${m[2]} write "[${m[1]}]:${m[2]}"`;
}
