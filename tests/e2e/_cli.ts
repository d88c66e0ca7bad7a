/**
 * Runs the real CLI (`deno run -A main.ts ...`) as a person would, with its
 * own data directory, and captures what it printed and its exit code.
 *
 * ```ts
 * await withDataDir(async (dir) => {
 *   const r = await runCli(["rules", "add", "github.com", "allow"], { dataDir: dir });
 *   assert.equal(r.code, 0);
 * });
 * ```
 *
 * The data directory is passed through NETMONITOR_DATA_DIR (so the arguments
 * are exactly what a user types); the real ~/docker-agent-data is never used.
 *
 * @module
 */

import { join } from "node:path";

/** The repository's main.ts. */
export const MAIN_TS: string = new URL("../../main.ts", import.meta.url).pathname;

/** What a CLI run produced. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode runCli} and {@linkcode cliCommand}. */
export interface CliOptions {
  /** Data directory (NETMONITOR_DATA_DIR). Required: tests must not touch the user's. */
  dataDir: string;
  /** Text for standard input; default: no input (stdin is /dev/null, not a terminal). */
  stdin?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory; default: the data directory. */
  cwd?: string;
  /** Kills the process when aborted. */
  signal?: AbortSignal;
}

/** A `Deno.Command` for `deno run -A main.ts ...args`, for tests that drive the process themselves. */
export function cliCommand(
  args: string[],
  opts: CliOptions,
  io: Pick<Deno.CommandOptions, "stdin" | "stdout" | "stderr"> = {},
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", MAIN_TS, ...args],
    cwd: opts.cwd ?? opts.dataDir,
    env: { NETMONITOR_DATA_DIR: opts.dataDir, NO_COLOR: "1", ...opts.env },
    stdin: io.stdin ?? "null",
    stdout: io.stdout ?? "piped",
    stderr: io.stderr ?? "piped",
    signal: opts.signal,
  });
}

/** Runs the CLI to completion. */
export async function runCli(args: string[], opts: CliOptions): Promise<CliResult> {
  const decoder = new TextDecoder();
  if (opts.stdin === undefined) {
    const out = await cliCommand(args, opts).output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  }
  const child = cliCommand(args, opts, { stdin: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(opts.stdin));
  await writer.close();
  const out = await child.output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs `fn` with a fresh temporary data directory, removed afterwards. */
export async function withDataDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "netmonitor-e2e-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The rules file in a data directory. */
export function rulesFile(dataDir: string): string {
  return join(dataDir, "network-rules.json");
}
