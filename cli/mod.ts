/**
 * The `netmonitor` command line: global options, error handling and exit
 * codes, and the list of commands.
 *
 * Adding a command: write `registerXCommand(program, ctx)` in cli/x.ts, then
 * add one import and one entry to {@linkcode COMMANDS} below. Inside actions,
 * use `ctx` for paths and output (never Deno.exit, never console.log), throw
 * {@linkcode UsageError} for a wrong command line and {@linkcode CliError} for
 * an expected failure, and set `ctx.exitCode` for a non-zero result.
 *
 * @module
 */

import { Command, CommanderError, type Option } from "commander";
import denoJson from "../deno.json" with { type: "json" };
import { type DataPaths, dataPaths } from "../lib/paths.ts";
import { RulesFileError } from "../lib/rules/mod.ts";
import { type Confirmer, terminalConfirmer } from "./_confirm.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, isUserFacing, UsageError } from "./_errors.ts";
import { safeLines } from "./_render.ts";
import { registerRulesCommand } from "./rules.ts";
import { registerStatsCommand } from "./stats.ts";
import { registerManageCommand } from "./manage.ts";
import { registerPromptCommand } from "./prompt.ts";
import { registerRunCommand } from "./run.ts";
import { registerStatusCommand } from "./status.ts";
import { registerCaCommand } from "./ca.ts";

export { CliError, UsageError } from "./_errors.ts";
export type { Confirmer } from "./_confirm.ts";

/** The version in deno.json (embedded at build time; compile-safe). */
export const VERSION: string = denoJson.version;

/** Where a command's output goes, and what it may ask. Injectable for tests. */
export interface CliIo {
  /** Writes to standard output, as is (add "\n" yourself). */
  stdout(text: string): void;
  /** Writes to standard error, as is. */
  stderr(text: string): void;
  /** Standard input is a terminal (a person can answer). */
  stdinIsTerminal: boolean;
  /** Standard output is a terminal (colours, tables). */
  stdoutIsTerminal: boolean;
  /** Answers yes/no questions. */
  confirmer: Confirmer;
}

/** Shared state of one CLI run, handed to every command's register function. */
export interface CliContext extends CliIo {
  /**
   * The data directory and its files: `--data-dir`, else NETMONITOR_DATA_DIR,
   * else ~/docker-agent-data. Resolved when first read, inside an action.
   */
  readonly paths: DataPaths;
  /** The full name of the running command, e.g. `netmonitor rules add`. */
  readonly commandName: string;
  /** The process exit code when the action returns normally. Default 0. */
  exitCode: number;
}

/** A command's register function: adds it (and its subcommands) to `program`. */
export type RegisterCommand = (program: Command, ctx: CliContext) => void;

/** Every command, in help order. */
const COMMANDS: RegisterCommand[] = [
  registerRunCommand,
  registerRulesCommand,
  registerStatsCommand,
  registerManageCommand,
  registerPromptCommand,
  registerStatusCommand,
  registerCaCommand,
];

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
}

/** The real terminal. */
export function processIo(): CliIo {
  const stderr = (text: string) => writeAll(Deno.stderr, text);
  return {
    stdout: (text) => writeAll(Deno.stdout, text),
    stderr,
    stdinIsTerminal: Deno.stdin.isTerminal(),
    stdoutIsTerminal: Deno.stdout.isTerminal(),
    confirmer: terminalConfirmer(stderr),
  };
}

/** `netmonitor rules add` for the `rules add` subcommand. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/**
 * An option's help line: its description, then its choices and default as a
 * person types them (`choices: allow, deny`, `default: 60s`, not JSON), and
 * no `default: []` for repeatable options.
 */
export function optionHelp(option: Option): string {
  const extra: string[] = [];
  if (option.argChoices) extra.push(`choices: ${option.argChoices.join(", ")}`);
  const value = option.defaultValue;
  const shown = option.defaultValueDescription ??
    (Array.isArray(value) ? (value.length > 0 ? value.join(", ") : undefined) : value);
  if ((option.required || option.optional) && shown !== undefined && shown !== "") {
    extra.push(`default: ${shown}`);
  }
  return extra.length > 0 ? `${option.description} (${extra.join("; ")})` : option.description;
}

/** Builds the program with every command registered. */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command("netmonitor")
    .description(
      "Network monitor and egress firewall for Docker development containers.\n" +
        "Data (rules, log, CA) lives in ~/docker-agent-data unless --data-dir or\n" +
        "NETMONITOR_DATA_DIR says otherwise.",
    )
    .version(`netmonitor ${VERSION}`, "-V, --version", "print the version and exit")
    .helpOption("-h, --help", "show help for a command")
    .option(
      "--data-dir <dir>",
      "data directory (default: $NETMONITOR_DATA_DIR or ~/docker-agent-data)",
    )
    .showSuggestionAfterError(true)
    .helpCommand("help [command]", "show help for a command");
  for (const register of COMMANDS) register(program, ctx);

  // Every command: throw instead of exiting, write through ctx, and hint at its own help.
  const configure = (cmd: Command) => {
    cmd.exitOverride();
    cmd.configureHelp({ optionDescription: optionHelp });
    cmd.configureOutput({
      writeOut: (s) => ctx.stdout(s),
      writeErr: (s) => ctx.stderr(s),
      outputError: (s, write) => write(s),
    });
    cmd.showHelpAfterError(`Run "${commandPath(cmd)} --help" for usage.`);
    cmd.commands.forEach(configure);
  };
  configure(program);
  return program;
}

/**
 * Runs the CLI with `args` (without the program name) and returns the exit
 * code: 0 success, 1 failure, 2 usage error. Never exits the process itself.
 */
export async function main(args: string[], io: Partial<CliIo> = {}): Promise<number> {
  const full: CliIo = { ...processIo(), ...io };
  let paths: DataPaths | undefined;
  let running: Command | undefined;
  const ctx: CliContext = {
    ...full,
    exitCode: EXIT_OK,
    get paths() {
      return paths ??= dataPaths(program.opts<{ dataDir?: string }>().dataDir);
    },
    get commandName() {
      return running ? commandPath(running) : "netmonitor";
    },
  };
  const program = buildProgram(ctx);
  program.hook("preAction", (_root, actionCommand) => {
    running = actionCommand;
  });
  try {
    // Commander answers `help NAME` for a NAME it does not know with the main
    // help and no word on why: say it, like `netmonitor NAME` does.
    unknownHelpTopic(program, args);
    await program.parseAsync(args, { from: "user" });
    return ctx.exitCode;
  } catch (err) {
    return report(err, ctx);
  }
}

/** Throws commander's usage error for `[command...] help NAME` naming no subcommand. */
function unknownHelpTopic(program: Command, args: string[]): void {
  let cmd = program;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "help" && i + 1 < args.length && cmd.commands.length > 0) {
      if (args[i + 1] === "help" || findCommand(cmd, args[i + 1])) return;
      cmd.error(`error: unknown command '${args[i + 1]}'`, { code: "commander.unknownCommand" });
    }
    const next = findCommand(cmd, args[i]);
    if (!next) return;
    cmd = next;
  }
}

/** The subcommand of `cmd` called `name` (or by that alias). */
function findCommand(cmd: Command, name: string): Command | undefined {
  return cmd.commands.find((c) => c.name() === name || c.aliases().includes(name));
}

function report(err: unknown, ctx: CliContext): number {
  if (err instanceof CommanderError) {
    // Commander already printed help, the version or the error. Asked-for help
    // and the version exit 0; parse errors and help shown for them are usage errors.
    return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  // Messages quote rules files, arguments and requests: never their control characters.
  if (err instanceof UsageError) {
    ctx.stderr(`error: ${safeLines(err.message)}\n`);
    ctx.stderr(`${safeLines(err.hint ?? `Run "${ctx.commandName} --help" for usage.`)}\n`);
    return EXIT_USAGE;
  }
  if (isUserFacing(err)) {
    ctx.stderr(`error: ${safeLines(err.message)}\n`);
    if (err instanceof RulesFileError && err.problems.length > 0 && err.file === ctx.paths.rules) {
      // Only a command that edits the rules could have changed the file.
      const edits = /^netmonitor (rules (add|rm|remove|import|clear)|manage)$/.test(
        ctx.commandName,
      );
      ctx.stderr(
        `${edits ? "The file was not changed. " : ""}Fix it by hand; "netmonitor rules check" ` +
          `lists every problem.\n`,
      );
    }
    const code = (err as { exitCode?: unknown }).exitCode;
    return typeof code === "number" && code > 0 ? code : EXIT_FAILURE;
  }
  const detail = err instanceof Error ? (err.stack ?? String(err)) : String(err);
  ctx.stderr(`error: unexpected failure (a bug in netmonitor ${VERSION}; please report it):\n`);
  ctx.stderr(`${detail}\n`);
  return EXIT_FAILURE;
}
