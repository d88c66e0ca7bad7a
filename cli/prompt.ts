/**
 * `netmonitor prompt`: answer a running proxy's prompts from another terminal,
 * through the control socket in the data dir.
 *
 * @module
 */

import type { Command } from "commander";
import { connectControl, NoProxyError } from "../lib/decide/control.ts";
import type { CliContext } from "./mod.ts";
import { checkDataDir } from "../lib/paths.ts";
import type { ResolvedMessage } from "../lib/decide/protocol.ts";
import { listProxies } from "./status.ts";
import { PromptClosedError } from "../lib/decide/types.ts";
import {
  createTerminalPrompter,
  InputClosedError,
  type LineReader,
  printable,
  StdinLineReader,
} from "./terminal_prompt.ts";

/** Registers `netmonitor prompt`. */
export function registerPromptCommand(program: Command, ctx: CliContext): void {
  program
    .command("prompt")
    .description(
      "answer a running proxy's prompts from this terminal (through the control socket " +
        "in the data dir); several may be attached, the first answer wins",
    )
    .addHelpText(
      "after",
      "\nType a choice (1-6) and Enter; Enter alone allows once. Keys typed in the first\n" +
        "0.4 s after a prompt appears are ignored (they were meant for the one before).\n" +
        "Ctrl-C detaches.\n" +
        "Exits 0 when detached or when the proxy stops, 1 when no proxy is running or it\n" +
        "runs non-interactively (--non-interactive, or started without a terminal; start it\n" +
        "with --prompt-via socket to answer here).",
    )
    .action(async () => {
      // Answers go only to a socket in a safe data dir; a missing one means no proxy.
      await checkDataDir(ctx.paths);
      ctx.exitCode = await promptCommand(ctx.paths.controlSocket, ctx, ctx.paths.proxiesDir);
    });
}

/**
 * Runs `netmonitor prompt` on the real console: stdin, and Ctrl-C (SIGINT) or
 * SIGTERM to detach; output through `out`. Returns the exit code.
 */
export async function promptCommand(
  socketPath: string,
  out: { stdout(text: string): void; stderr(text: string): void },
  proxiesDir?: string,
): Promise<number> {
  // Typed-ahead lines are dropped on a terminal (a stray Enter must not answer
  // a future prompt), kept when answers are piped in.
  const lines = new StdinLineReader({ discardUnread: Deno.stdin.isTerminal() });
  const ac = new AbortController();
  const stop = () => ac.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    return await promptLoop(
      socketPath,
      {
        lines,
        write: out.stdout,
        error: out.stderr,
      },
      ac.signal,
      proxiesDir,
    );
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    await lines.close();
  }
}

/** Where `netmonitor prompt` reads and writes. */
export interface PromptCommandIO {
  lines: LineReader;
  /** Normal output (stdout). */
  write(text: string): void;
  /** Errors (stderr). */
  error(text: string): void;
}

/**
 * Attaches to the proxy at `socketPath` and answers its prompts until the
 * proxy goes away, input ends, or `signal` aborts (Ctrl-C). Returns the exit
 * code: 0 after a clean detach, 1 when no proxy is running or it never prompts
 * (`proxiesDir`: where to look for one that never prompts, to say so).
 */
export async function promptLoop(
  socketPath: string,
  io: PromptCommandIO,
  signal?: AbortSignal,
  proxiesDir?: string,
): Promise<number> {
  let client;
  try {
    client = await connectControl(socketPath);
  } catch (err) {
    if (err instanceof NoProxyError) {
      const quiet = proxiesDir === undefined
        ? []
        : (await listProxies(proxiesDir).catch(() => [])).filter((p) => p.prompts === false);
      if (quiet.length > 0) {
        io.error(
          `error: the netmonitor proxy (pid ${quiet.map((p) => p.pid).join(", ")}) runs ` +
            `non-interactively (--non-interactive, or no terminal on its standard input): it ` +
            `answers every request by itself, so no prompt will come.\n`,
        );
        io.error(
          "Restart it with --prompt-via socket to answer its requests here (and without " +
            "--non-interactive, if it has that).\n",
        );
        return 1;
      }
      io.error(`error: ${err.message}\n`);
      io.error("Start one with `netmonitor run` (or docker/run-monitored.sh), then try again.\n");
      return 1;
    }
    throw err;
  }
  const me = client.hello.name;
  io.write(
    `Attached to the netmonitor proxy (pid ${client.hello.pid}) as ${me}. ` +
      `Waiting for requests; Ctrl-C to quit.\n`,
  );
  const prompter = createTerminalPrompter(io, me);
  /** Prompts being asked (or answered and not yet confirmed), by id. */
  const asking = new Map<string, { ac: AbortController; sent?: string }>();
  let ending: "input" | "user" | undefined;

  const stop = (why: "input" | "user") => {
    ending ??= why;
    client.close();
  };
  // Answers piped in as a script: once they are used up and nothing is left
  // to hear about (an open prompt, the rule an "always" answer saves), done.
  let exhausted = false;
  /** Actions of this prompter's "always" answers whose rule message has not come yet. */
  const rulesDue: string[] = [];
  const doneIfExhausted = () => {
    if (exhausted && asking.size === 0 && rulesDue.length === 0) stop("input");
  };
  io.lines.whenExhausted?.().then(() => {
    exhausted = true;
    doneIfExhausted();
  });
  const onAbort = () => stop("user");
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) stop("user");

  try {
    for await (const m of client.messages()) {
      if (m.type === "pending") {
        // Nothing left to answer it with: not shown (the rule still due is awaited).
        if (exhausted) continue;
        const req = m.request;
        const ac = new AbortController();
        const entry: { ac: AbortController; sent?: string } = { ac };
        asking.set(req.id, entry);
        prompter.ask(req, ac.signal).then(
          (answer) => {
            entry.sent = answer;
            return client.answer(req.id, answer);
          },
          (err) => {
            if (err instanceof InputClosedError) {
              // Input ended: leave once the rule of an earlier "always" answer
              // is reported (the next prompt comes before it is saved).
              asking.delete(req.id);
              exhausted = true;
              doneIfExhausted();
            }
            // An abort already printed its line.
          },
        ).catch(() => {/* the proxy went away while sending; the loop ends */});
      } else if (m.type === "resolved") {
        const entry = asking.get(m.id);
        asking.delete(m.id);
        if (!entry) continue;
        if (m.by === me) {
          io.write(`Answer accepted: ${m.answer}.\n`);
          if (m.answer !== undefined && !m.answer.endsWith("-once")) rulesDue.push(m.answer);
        } else if (entry.sent !== undefined) {
          io.write(`Too late: ${describe(m)}.\n`);
        } else {
          entry.ac.abort(new PromptClosedError(outcomeOf(m)));
        }
      } else if (m.type === "rule") {
        const due = rulesDue.indexOf(m.action);
        if (due >= 0) rulesDue.splice(due, 1);
        const pattern = printable(JSON.stringify(m.pattern), 300);
        io.write(
          m.saved
            ? `Saved rule ${pattern}: ${m.action}.\n`
            : `Could not save rule ${pattern}: ${m.action} (${
              printable(m.error ?? "unknown error", 300)
            }); ${
              m.kept
                ? `the deny rule ${printable(JSON.stringify(m.kept.pattern), 300)} decided instead`
                : "the answer was applied once"
            }.\n`,
        );
      } else if (m.type === "error") {
        io.error(`The proxy refused that: ${printable(m.message, 300)}\n`);
      }
      doneIfExhausted();
    }
  } catch (err) {
    io.error(`Control socket error: ${err instanceof Error ? err.message : err}\n`);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    client.close();
  }
  for (const { ac } of asking.values()) {
    ac.abort(new PromptClosedError({ kind: ending ? "detached" : "shutdown" }));
  }
  if (ending === "user") io.write("Detached from the netmonitor proxy.\n");
  else if (ending === "input") io.write("Input closed; detached from the netmonitor proxy.\n");
  else io.write("The netmonitor proxy went away; exiting.\n");
  return 0;
}

function outcomeOf(m: ResolvedMessage) {
  return {
    kind: m.outcome,
    ...(m.by !== undefined ? { by: m.by } : {}),
    ...(m.answer !== undefined ? { answer: m.answer } : {}),
  };
}

function describe(m: ResolvedMessage): string {
  return new PromptClosedError(outcomeOf(m)).message;
}
