/**
 * Errors the CLI shows to people, and how each becomes an exit code.
 *
 * - {@linkcode UsageError}: the command line is wrong. `error: ...`, a hint
 *   line, exit 2. Commander's own parse errors are mapped to the same.
 * - {@linkcode CliError}, `RulesFileError`, file-system errors, and any error
 *   with `userFacing = true` (lets lib/ mark its errors without importing cli/):
 *   `error: ...`, exit 1, no stack trace.
 * - Anything else is a bug: the stack is printed, exit 1.
 *
 * @module
 */

import { RulesFileError } from "../lib/rules/mod.ts";

/** Exit codes. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The command line is wrong: exit 2 with a hint. */
export class UsageError extends Error {
  override name = "UsageError";
  /**
   * The line printed after the error. Undefined: `Run "netmonitor <command> --help" for usage.`
   * for the command that was running.
   */
  readonly hint?: string;
  constructor(message: string, options: { hint?: string } = {}) {
    super(message);
    this.hint = options.hint;
  }
}

/** An expected failure with a message for people (not found, refused, aborted): exit 1. */
export class CliError extends Error {
  override name = "CliError";
  readonly exitCode: number;
  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.exitCode = options.exitCode ?? EXIT_FAILURE;
  }
}

const FS_ERRORS = [
  Deno.errors.NotFound,
  Deno.errors.PermissionDenied,
  Deno.errors.AlreadyExists,
  Deno.errors.IsADirectory,
  Deno.errors.NotADirectory,
  Deno.errors.AddrInUse,
];

/** True for errors whose message is for people and whose stack is noise. */
export function isUserFacing(err: unknown): err is Error {
  if (!(err instanceof Error)) return false;
  if (err instanceof CliError || err instanceof RulesFileError) return true;
  if (FS_ERRORS.some((cls) => err instanceof cls)) return true;
  return (err as { userFacing?: unknown }).userFacing === true;
}
