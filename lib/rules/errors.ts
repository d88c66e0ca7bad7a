/**
 * Typed errors of the rules engine. Their messages are user-ready: the CLI
 * prints them verbatim, without a stack trace.
 * @module
 */

/** One thing wrong with a rules file, with its 1-based position. */
export interface RuleProblem {
  /** The pattern (JSON key) the problem is about, when there is one. */
  key?: string;
  line: number;
  column: number;
  message: string;
  /** What would have been valid there, e.g. the list of actions. */
  expected?: string;
}

/** `message at L:C (expected ...)` */
export function formatProblem(p: RuleProblem): string {
  return `${p.message} at ${p.line}:${p.column}${p.expected ? ` (expected ${p.expected})` : ""}`;
}

/** A pattern or action that cannot be a rule (`rules add`, the menu, one entry of a file). */
export class RuleError extends Error {
  override name = "RuleError";
  /** Which half of the rule is wrong: decides where a file problem points. */
  readonly part: "pattern" | "action";
  /** The problem without the `expected` list. */
  readonly problem: string;
  /** What would have been valid, when a short list says it. */
  readonly expected?: string;
  constructor(problem: string, part: "pattern" | "action", expected?: string) {
    super(expected ? `${problem} (expected ${expected})` : problem);
    this.problem = problem;
    this.part = part;
    this.expected = expected;
  }
}

/**
 * A rules file that cannot be used: it does not parse, an entry is invalid,
 * or it cannot be read. Such a file is never overwritten.
 *
 * The message names the file and every problem with line:column, e.g.
 * `Cannot load rules "/x/network-rules.json": unknown action "alow" for "github.com" at 3:14`.
 */
export class RulesFileError extends Error {
  override name = "RulesFileError";
  readonly file: string;
  readonly problems: RuleProblem[];

  /**
   * @param file the path as the user should see it
   * @param problems content problems; empty when the file could not be read (pass `cause`)
   * @param verb what we were doing: `load` (default), `import`, `check`, ...
   */
  constructor(file: string, problems: RuleProblem[], verb = "load", cause?: unknown) {
    super(formatMessage(file, problems, verb, cause), cause === undefined ? undefined : { cause });
    this.file = file;
    this.problems = problems;
  }
}

function formatMessage(
  file: string,
  problems: RuleProblem[],
  verb: string,
  cause: unknown,
): string {
  const head = `Cannot ${verb} rules "${file}"`;
  if (problems.length === 0) {
    const why = cause instanceof Error ? describeIoError(cause) : String(cause ?? "unknown error");
    return `${head}: ${why}`;
  }
  if (problems.length === 1) {
    return `${head}: ${formatProblem(problems[0])}`;
  }
  const lines = problems.map((p) => `  ${formatProblem(p)}`);
  return `${head}: ${problems.length} problems:\n${lines.join("\n")}`;
}

/** A short, stack-free description of a file-system error. */
export function describeIoError(err: Error): string {
  if (err instanceof Deno.errors.NotFound) return "file not found";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.IsADirectory) return "is a directory";
  if (err instanceof Deno.errors.NotADirectory) return "a part of the path is not a directory";
  if (err instanceof Deno.errors.AlreadyExists) return "a file is in the way of a directory";
  if (err instanceof TypeError && /invalid data|utf-8/i.test(err.message)) {
    return "not a UTF-8 text file";
  }
  // Deno messages look like "Permission denied (os error 13): open '/x'"; keep the first part.
  return err.message.replace(/\s*\(os error \d+\).*$/s, "").replace(/:\s*$/, "");
}
