/**
 * The original design's terminal prompt: rendering, choice parsing, and a
 * {@linkcode Prompter} that asks on a terminal (`netmonitor run` and
 * `netmonitor prompt` both use it).
 *
 * Input comes from one shared {@linkcode LineReader}, so nothing else reading
 * the console fights the prompt for lines, and tests inject lines.
 *
 * A keystroke meant for one prompt must never answer another (Enter alone is
 * "allow once"; a client can withdraw the request the operator is answering,
 * so that the next one takes its place under the cursor). On a terminal, keys
 * typed within {@linkcode DEFAULT_INPUT_GUARD_MS} of a new prompt appearing
 * are thrown away, and a line that was begun for a prompt that has closed
 * since, or while no prompt was open, or inside that window, is thrown away
 * whole, up to and including its Enter: only a line typed entirely for the
 * prompt on screen answers it.
 *
 * A process in the background of its terminal is stopped by the kernel when
 * it reads the terminal or changes its mode (SIGTTIN, SIGTTOU): the reader
 * touches the terminal only in the foreground (Linux; see
 * {@linkcode inTerminalForeground}), and a prompt shown in the background
 * waits for `fg` (or another prompter) instead.
 *
 * @module
 */

import {
  answerAvailable,
  describePromptOutcome,
  type NamedPrompter,
  type PendingRequest,
  PROMPT_ANSWERS,
  type PromptAnswer,
  PromptClosedError,
} from "../lib/decide/types.ts";
import type { BrokerEvent } from "../lib/decide/broker.ts";
import { formatAuthority, isFixedAddressHost, isIpLiteral } from "../lib/net/host.ts";
import { DestinationGuard, type ProtectedClass } from "../lib/net/guard.ts";
import { redactText } from "../lib/log/redact.ts";

const BAR = "=".repeat(80);

/** The question line; the cursor waits after it. */
export const CHOICE_QUESTION = "Your choice [1]: ";

/** Default for {@linkcode PromptIO.inputGuardMs}: keys typed this soon after a new prompt are ignored. */
export const DEFAULT_INPUT_GUARD_MS = 400;

/** Printed when the input guard threw away keys typed as a new prompt appeared. */
export const INPUT_IGNORED_LINE =
  "(input ignored: typed as this request appeared; read it and choose again)";

/**
 * Printed under `Prompt closed: ...` when the operator had typed keys for the
 * prompt that closed: the rest of that line, up to and including its Enter,
 * is thrown away, so it cannot answer the next prompt.
 */
export const INPUT_DISCARDED_ON_CLOSE_LINE =
  "Input discarded: the prompt it was for closed. Keys typed up to the next Enter are ignored.";

/**
 * Printed when an Enter ended a line that was begun before this prompt
 * appeared (for a prompt that closed, while none was open, or inside the input
 * guard): the line was thrown away and did not answer this prompt.
 */
export const INPUT_DISCARDED_LINE =
  "(input discarded: it was begun before this request appeared; read it and choose again)";

/**
 * Most lines of other output ({@linkcode TerminalPrompter.printLine}) held
 * while a question is open; they are printed when it closes, and the rest are
 * only counted ({@linkcode heldLinesDroppedLine}).
 */
export const MAX_HELD_LINES = 200;

/** Printed after the held lines when more were printed while a question was open. */
export function heldLinesDroppedLine(n: number): string {
  return `(${n} more line${n === 1 ? "" : "s"} printed while the prompt was open ${
    n === 1 ? "is" : "are"
  } not shown; every request is in the access log)`;
}

/** How often a prompt shown in the background checks whether the process is back in the foreground. */
export const FOREGROUND_POLL_MS = 250;

/**
 * Renders a pending request as the original design's prompt, up to and
 * including the blank line before `Your choice [1]:` (which
 * {@linkcode CHOICE_QUESTION} adds). The design's lines are verbatim; a
 * `Client:` line, and a `Waiting:` line when several identical requests
 * wait on the prompt, are added inside the banner. For an IP literal,
 * choices 3 and 4 name the port too (that is the rule they save). Every value from the request is made
 * printable, so a hostile URL cannot rewrite the terminal.
 */
export function renderPrompt(req: PendingRequest): string {
  const host = printable(formatAuthority(req.host, req.port, req.scheme), 260);
  // What choices 3 and 4 save: an IP literal always with its port (see the broker).
  const ruleHost = isFixedAddressHost(req.host)
    ? printable(formatAuthority(req.host, req.port), 260)
    : host;
  const tunnel = req.url === undefined;
  const lines = [
    BAR,
    "Network Access Request",
    `Host: ${host}`,
    `Method: ${printable(req.method, 40)}`,
    `Path: ${
      req.path === undefined
        ? "(unknown: HTTPS tunnel, not intercepted)"
        : printable(req.path, PATH_SHOWN, "; type v and Enter to see all of it")
    }`,
    `Client: ${printable(req.client, 80)}`,
  ];
  if (req.reason !== "no rule") lines.push(`Reason: ${printable(req.reason, 200)}`);
  const shielded = protectedNote(req);
  if (shielded) lines.push(shielded);
  if (req.waiting > 1) {
    lines.push(`Waiting: ${req.waiting} identical requests (this answer applies to all of them)`);
  }
  const noUrl = tunnel ? " (not available: a tunnel has no URL)" : "";
  lines.push(
    BAR,
    "",
    "Choose action:",
    "  1. Allow this request once",
    "  2. Deny this request once",
    `  3. Always allow ${ruleHost}`,
    `  4. Always deny ${ruleHost}`,
    `  5. Always allow this exact URL${noUrl}`,
    `  6. Always deny this exact URL${noUrl}`,
    "",
  );
  return lines.join("\n") + "\n";
}

/** Destination protection as the proxy applies it, without knowing where it listens. */
let promptGuard: DestinationGuard | undefined;

/**
 * For an IP literal that destination protection refuses (loopback,
 * link-local, metadata, an address of this host or of another container on
 * it...), says that allow once will still get a 403: only a rule naming the
 * address lifts the protection. Names are not resolved here, and the proxy's
 * own listening address is not known: a missing note promises nothing.
 *
 * @param guard the protection to ask; default: this host's interfaces, as the proxy reads them
 */
export function protectedNote(
  req: PendingRequest,
  guard: DestinationGuard = promptGuard ??= new DestinationGuard(),
): string | undefined {
  if (!isIpLiteral(req.host)) return undefined;
  const address = req.host.startsWith("[") ? req.host.slice(1, -1) : req.host;
  const cls = guard.check(address, req.port, false);
  if (cls === undefined) return undefined;
  const choices = req.url === undefined ? "3" : "3 or 5";
  return `Protected: ${protectedWhat(cls)}; allow once still gets a 403, only a rule naming it ` +
    `(${choices}) lets it through`;
}

function protectedWhat(cls: ProtectedClass): string {
  switch (cls) {
    case "metadata":
      return "a cloud metadata address";
    case "unspecified":
      return "an unspecified address";
    case "host":
      return "an address of this host";
    case "container":
      return "an address in a container network of this host (another container)";
    case "proxy":
      return "the proxy's own address";
    default:
      return `a ${cls} address`;
  }
}

/** Characters of a path the prompt shows; `v` shows the rest. */
export const PATH_SHOWN = 400;

/** The whole path of a request whose prompt cut it, for `v`. */
export function renderFullPath(req: PendingRequest): string {
  return `Full path:\n${printable(req.path ?? "", Infinity)}\n`;
}

/**
 * Parses what the operator typed: a digit 1-6, empty for the default (1), or
 * an answer's name (`allow-domain`); `v` (or `view`) asks to see a path the
 * prompt cut. Returns the answer, the view request, or a message that says
 * what to type instead.
 */
export function parseChoice(
  input: string,
  req: PendingRequest,
): { answer: PromptAnswer } | { view: true } | { error: string } {
  const text = input.trim().toLowerCase();
  if ((text === "v" || text === "view") && pathCut(req)) return { view: true };
  let answer: PromptAnswer | undefined;
  if (text === "") answer = "allow-once";
  else if (/^[1-6]$/.test(text)) answer = PROMPT_ANSWERS[Number(text) - 1];
  else if ((PROMPT_ANSWERS as readonly string[]).includes(text)) answer = text as PromptAnswer;
  const range = req.url === undefined ? "1 to 4" : "1 to 6";
  if (answer === undefined) {
    return {
      error: `Invalid choice "${printable(input.trim(), 40)}": type a number from ${range} ` +
        `and press Enter.`,
    };
  }
  if (!answerAvailable(req, answer)) {
    return {
      error: `Options 5 and 6 need a URL, and a tunnel has none: type a number from ${range}.`,
    };
  }
  return { answer };
}

/** True when the prompt shows only part of the request's path. */
function pathCut(req: PendingRequest): boolean {
  return req.path !== undefined && [...printable(req.path, Infinity)].length > PATH_SHOWN;
}

/**
 * Makes text safe to print: control characters (C0, C1, DEL), bidi overrides
 * and zero-width characters become `\u{..}` escapes, and text over `max`
 * characters is cut with a note of how much was left out (and `hint`, when
 * given, inside the same parentheses).
 */
export function printable(text: string, max = 200, hint = ""): string {
  const cleaned = text.replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g,
    (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`,
  );
  const chars = [...cleaned];
  if (chars.length <= max) return cleaned;
  return `${chars.slice(0, max).join("")}... (${chars.length - max} more characters${hint})`;
}

/** Options for one {@linkcode LineReader.readLine}. */
export interface ReadLineOptions {
  /**
   * Ignore keys that arrive within this many milliseconds of the call: they
   * are neither echoed nor part of the line (terminal mode; piped input is a
   * script, and is not guarded). Default 0.
   */
  guardMs?: number;
  /** Called once per read when the guard ignored Enter or a printable key. */
  onIgnored?(): void;
  /**
   * Called when Enter ended a line that was thrown away during this read: a
   * line begun for a read that was aborted, while no read was open, or inside
   * the guard (terminal mode).
   */
  onDiscarded?(): void;
}

/** A source of typed lines. */
export interface LineReader {
  /**
   * Resolves with the next line completed after this call (without its line
   * end), or null at end of input. Rejects with `signal.reason` when aborted.
   */
  readLine(signal?: AbortSignal, opts?: ReadLineOptions): Promise<string | null>;
  /**
   * Resolves once input has ended and every line it brought was read (pipe
   * mode: answers given as a script); starts reading. Never settles for a
   * terminal, where input ends only with Ctrl-D at a prompt.
   */
  whenExhausted?(): Promise<void>;
  /** What has been typed of the line being read (terminal mode), to redraw it. */
  readonly partial?: string;
  /**
   * Keys are being thrown away up to and including the next Enter (terminal
   * mode): the line was begun for a prompt that closed.
   */
  readonly discarding?: boolean;
  /**
   * Whether the process is in its terminal's foreground, where it may read the
   * terminal: false in the background, undefined when unknown (taken as yes).
   */
  inForeground?(): boolean | undefined;
  /**
   * Resolves once the process is in the foreground (at once when it is, or
   * when that is unknown, or input has ended); rejects with `signal.reason`
   * when aborted first.
   */
  untilForeground?(signal?: AbortSignal): Promise<void>;
}

/** Where the terminal prompter reads and writes. */
export interface PromptIO {
  lines: LineReader;
  write(text: string): void;
  /** Output is a terminal: {@linkcode TerminalPrompter.printLine} may redraw the question line. */
  ansi?: boolean;
  /**
   * Keys typed within this many milliseconds of a new prompt being drawn are
   * thrown away (by a terminal-mode reader), with {@linkcode INPUT_IGNORED_LINE}
   * printed when they could have answered it. Default
   * {@linkcode DEFAULT_INPUT_GUARD_MS}; 0 turns the guard off.
   */
  inputGuardMs?: number;
}

/** A prompter on a terminal, which can also print other lines without garbling its question. */
export interface TerminalPrompter extends NamedPrompter {
  readonly name: string;
  /**
   * Prints one line of other output (e.g. `run`'s per-request line). While a
   * question waits, the line is held and printed once the prompt closes (at
   * most {@linkcode MAX_HELD_LINES} of them), so that no output can push the
   * prompt off the screen. An `urgent` line (about the operator's own
   * answers: a rule saved or not saved; a client cannot make many) goes above
   * the open question at once instead.
   */
  printLine(text: string, opts?: PrintLineOptions): void;
}

/** Options for {@linkcode TerminalPrompter.printLine}. */
export interface PrintLineOptions {
  /** Shown at once, above an open question, instead of held until it closes. */
  urgent?: boolean;
}

/** The operator's input ended (Ctrl-D, or stdin closed). */
export class InputClosedError extends Error {
  override name = "InputClosedError";
}

/**
 * A prompter that shows the original design's prompt on `io` and reads the
 * choice. An invalid choice is asked again. When the prompt closes without
 * this prompter's answer (answered elsewhere, withdrawn, timed out) it prints
 * one line saying so and stops reading. Rejects with
 * {@linkcode InputClosedError} at end of input.
 */
export function createTerminalPrompter(io: PromptIO, name = "terminal"): TerminalPrompter {
  let asking = false;
  const guardMs = io.inputGuardMs ?? DEFAULT_INPUT_GUARD_MS;
  /** The prompter's own notes about an open question: above it, at once. */
  const above = (text: string): void => {
    if (!asking) io.write(`${text}\n`);
    else if (io.ansi) {
      io.write(`\r\x1b[2K${text}\n${CHOICE_QUESTION}${io.lines.partial ?? ""}`);
    } else io.write(`\n${text}\n${CHOICE_QUESTION}`);
  };
  // Other output waits while a question is open: a client that makes lines
  // (requests a rule denies) could otherwise scroll the prompt, and the line
  // saying the one before closed, off the screen, leaving the operator to
  // answer a request they never saw under a bare "Your choice [1]:".
  let held: string[] = [];
  let dropped = 0;
  const printLine = (text: string, opts?: PrintLineOptions): void => {
    if (!asking) {
      io.write(`${text}\n`);
      return;
    }
    if (opts?.urgent) {
      above(text);
      return;
    }
    for (const line of text.split("\n")) {
      if (held.length < MAX_HELD_LINES) held.push(line);
      else dropped++;
    }
  };
  const release = (): void => {
    if (held.length === 0) return;
    const text = held.join("\n") + "\n" + (dropped > 0 ? `${heldLinesDroppedLine(dropped)}\n` : "");
    held = [];
    dropped = 0;
    io.write(text);
  };
  return {
    name,
    printLine,
    async ask(req: PendingRequest, signal: AbortSignal): Promise<PromptAnswer> {
      try {
        return await askOnce(req, signal);
      } finally {
        release();
      }
    },
  };

  async function askOnce(req: PendingRequest, signal: AbortSignal): Promise<PromptAnswer> {
    if (io.lines.inForeground?.() === false && io.lines.untilForeground) {
      // Reading the terminal now would stop the whole process (SIGTTIN):
      // say so in one line, and show the prompt once it is back in front.
      io.write(`\n${backgroundLine(req)}\n`);
      try {
        await io.lines.untilForeground(signal);
      } catch (err) {
        if (signal.aborted) io.write(`${closedLine(signal.reason)}\n`);
        throw err;
      }
    }
    io.write("\n" + renderPrompt(req));
    const onDiscarded = () => above(INPUT_DISCARDED_LINE);
    // Only the first read of a new prompt is guarded: a choice asked again
    // after an invalid one is about the same request.
    let opts: ReadLineOptions = guardMs > 0
      ? { guardMs, onIgnored: () => above(INPUT_IGNORED_LINE), onDiscarded }
      : { onDiscarded };
    for (;;) {
      io.write(CHOICE_QUESTION);
      let line: string | null;
      asking = true;
      try {
        line = await io.lines.readLine(signal, opts);
        opts = { onDiscarded };
      } catch (err) {
        if (signal.aborted) {
          io.write(`\n${closedLine(signal.reason)}\n`);
          if (io.lines.discarding) io.write(`${INPUT_DISCARDED_ON_CLOSE_LINE}\n`);
        }
        throw err;
      } finally {
        asking = false;
      }
      if (line === null) {
        io.write("\n");
        throw new InputClosedError("input closed");
      }
      const parsed = parseChoice(line, req);
      if ("answer" in parsed) return parsed.answer;
      io.write("view" in parsed ? renderFullPath(req) : `${parsed.error}\n`);
    }
  }
}

/** Options for {@linkcode attachTerminal}. */
export interface AttachTerminalOptions {
  /** Where the prompt is printed. Default: stdout. */
  write?(text: string): void;
  /** Where choices are read. Default: a new {@linkcode StdinLineReader} (closed by `close`). */
  lines?: LineReader;
  /** Called once when input ends (Ctrl-D, stdin closed); the prompter has detached itself. */
  onInputClosed?(): void;
  /** Output is a terminal (redraw the question around other lines). Default: stdout is a terminal. */
  ansi?: boolean;
  /** See {@linkcode PromptIO.inputGuardMs}. Default {@linkcode DEFAULT_INPUT_GUARD_MS}. */
  inputGuardMs?: number;
}

/**
 * Attaches the terminal prompt to a broker (what `netmonitor run` does when
 * stdin is a terminal). When input ends the prompter detaches itself, so
 * prompts still go to `netmonitor prompt` clients and otherwise time out.
 * `close` detaches and restores the terminal. Print other console lines
 * through `printLine` so they never mix with an open question.
 */
export function attachTerminal(
  broker: { addPrompter(p: NamedPrompter): () => void },
  opts: AttachTerminalOptions = {},
): { close(): Promise<void>; printLine(text: string, opts?: PrintLineOptions): void } {
  const own = opts.lines ? undefined : new StdinLineReader();
  const lines = opts.lines ?? own!;
  const enc = new TextEncoder();
  const write = opts.write ?? ((t: string) => void Deno.stdout.writeSync(enc.encode(t)));
  const inner = createTerminalPrompter({
    lines,
    write,
    ansi: opts.ansi ?? (opts.write === undefined && Deno.stdout.isTerminal()),
    ...(opts.inputGuardMs !== undefined ? { inputGuardMs: opts.inputGuardMs } : {}),
  });
  let detached = false;
  const detach = broker.addPrompter({
    name: inner.name,
    async ask(req, signal) {
      try {
        return await inner.ask(req, signal);
      } catch (err) {
        if (err instanceof InputClosedError && !detached) {
          detached = true;
          detach();
          opts.onInputClosed?.();
        }
        throw err;
      }
    },
  });
  return {
    printLine: (text, printOpts) => inner.printLine(text, printOpts),
    async close() {
      if (!detached) {
        detached = true;
        detach();
      }
      await own?.close();
    },
  };
}

/**
 * One line for the `run` console about a broker event, or undefined when the
 * prompters already said it (shown and closed prompts).
 */
export function formatBrokerEvent(e: BrokerEvent): string | undefined {
  switch (e.type) {
    case "prompt-shown":
      if (e.prompters > 0) return undefined;
      return `Waiting for an answer about ${
        printable(formatAuthority(e.request.host, e.request.port, e.request.scheme), 260)
      }: no prompt is attached (run \`netmonitor prompt\` in another terminal)`;
    case "prompt-closed":
      return undefined;
    // The pattern of an exact-URL answer is the request's URL, secrets and
    // all: redacted as the record lines are (this output is often a file:
    // run-monitored.sh keeps it in netmonitor-proxy-*.out).
    case "rule-saved":
      return redactText(`Saved rule ${JSON.stringify(e.pattern)}: ${e.action}`);
    case "rule-save-failed":
      return redactText(
        `Could not save rule ${JSON.stringify(e.pattern)}: ${e.action} (${e.error}); ` +
          (e.kept
            ? `the deny rule ${JSON.stringify(e.kept.pattern)} decided instead`
            : `the answer was applied once`),
      );
    case "prompter-failed":
      return redactText(`Prompt ${e.prompter} failed: ${e.error}`);
  }
}

/** The line printed instead of a prompt while the process is in the background of its terminal. */
export function backgroundLine(req: PendingRequest): string {
  const host = printable(formatAuthority(req.host, req.port, req.scheme), 260);
  return `Waiting for an answer about ${host}: this process is in the background, where ` +
    "reading the terminal would stop it. Bring it back with `fg` to answer here, or answer " +
    "with `netmonitor prompt` in another terminal.";
}

/**
 * Parses Linux's `/proc/PID/stat`: whether the process is in the foreground
 * process group of its controlling terminal (pgrp, field 5, equals tpgid,
 * field 8). Undefined when it has no controlling terminal or the text is not
 * understood. The fields are counted after the last `)`: the command name
 * before it may hold spaces and parentheses.
 */
export function foregroundFromStat(stat: string): boolean | undefined {
  const end = stat.lastIndexOf(")");
  if (end < 0) return undefined;
  // fields[0] is field 3 (state).
  const fields = stat.slice(end + 1).trim().split(/\s+/);
  if (fields.length < 6) return undefined;
  const [pgrp, ttyNr, tpgid] = [fields[2], fields[4], fields[5]].map(Number);
  if (![pgrp, ttyNr, tpgid].every(Number.isInteger)) return undefined;
  if (ttyNr === 0 || tpgid <= 0 || pgrp <= 0) return undefined;
  return pgrp === tpgid;
}

/**
 * Whether this process is in the foreground of its controlling terminal, from
 * `/proc/self/stat`: true or false on Linux, undefined elsewhere, without a
 * controlling terminal, or without permission to read it (never asked for).
 */
export function inTerminalForeground(): boolean | undefined {
  if (Deno.build.os !== "linux") return undefined;
  const path = "/proc/self/stat";
  try {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return undefined;
    return foregroundFromStat(Deno.readTextFileSync(path));
  } catch {
    return undefined;
  }
}

/**
 * Makes terminal use from the background fail instead of stopping the whole
 * process: SIGTTIN and SIGTTOU are ignored (through FFI, on Linux x86_64 and
 * aarch64 with glibc and the FFI permission; the permission is queried, never
 * requested). A read of the terminal in the background then fails with EIO,
 * which {@linkcode StdinLineReader} waits out, and output lines go through
 * even with `stty tostop`. The reader never changes the terminal's mode in the
 * background by itself. Returns whether the signals are now ignored. For a
 * server (`netmonitor run`): interactive commands keep the usual job control.
 */
export function ignoreTerminalStopSignals(): boolean {
  if (Deno.build.os !== "linux") return false;
  if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") return false;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return false;
    const libc = Deno.dlopen("libc.so.6", {
      signal: { parameters: ["i32", "pointer"], result: "pointer" },
    });
    try {
      const SIG_IGN = Deno.UnsafePointer.create(1n);
      const SIG_ERR = -1n;
      const SIGTTIN = 21, SIGTTOU = 22;
      let ok = true;
      for (const sig of [SIGTTIN, SIGTTOU]) {
        const old = libc.symbols.signal(sig, SIG_IGN);
        const value = old === null ? 0n : BigInt(Deno.UnsafePointer.value(old));
        if (BigInt.asIntN(64, value) === SIG_ERR) ok = false;
      }
      return ok;
    } finally {
      libc.close();
    }
  } catch {
    return false;
  }
}

/** The line printed when a prompt closes under the operator. */
export function closedLine(reason: unknown): string {
  const text = reason instanceof PromptClosedError
    ? describePromptOutcome(reason.outcome)
    : reason instanceof Error
    ? reason.message
    : String(reason);
  return `Prompt closed: ${text}.`;
}

/** Options for {@linkcode StdinLineReader}. */
export interface StdinLineReaderOptions {
  /** Bytes to read. Default `Deno.stdin.readable`. */
  input?: ReadableStream<Uint8Array>;
  /**
   * Terminal mode: read key by key with echo done here, so input typed for a
   * prompt that closed never leaks into the next one. Default: whether stdin
   * is a terminal. Give an object to control the terminal in tests.
   */
  terminal?: boolean | { setRaw(on: boolean): void; echo(text: string): void };
  /**
   * Discard lines completed while nobody is reading (a stray Enter must not
   * answer a future prompt). Default true; set false for scripted input.
   */
  discardUnread?: boolean;
  /** Clock for {@linkcode ReadLineOptions.guardMs}, in milliseconds. Default `performance.now`. */
  now?(): number;
  /**
   * Terminal mode: whether the process is in its terminal's foreground
   * (false: in the background; undefined: unknown, taken as yes). In the
   * background the terminal is not read and its mode is neither set nor
   * restored: either would stop the process. Default: for the real terminal
   * {@linkcode inTerminalForeground}, else always unknown.
   */
  foreground?(): boolean | undefined;
  /** How often to check for the foreground while waiting for it. Default {@linkcode FOREGROUND_POLL_MS}. */
  foregroundPollMs?: number;
}

const MAX_LINE = 4096;

interface LineWaiter {
  resolve(line: string | null): void;
  reject(err: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
  /** Keys arriving before this time (per the reader's clock) are ignored. */
  guardUntil?: number;
  onIgnored?(): void;
  /** onIgnored was called. */
  told?: boolean;
  onDiscarded?(): void;
}

/**
 * The one shared reader of the console. On a terminal it switches to raw
 * mode (keeping Ctrl-C as SIGINT) while it runs and restores the terminal on
 * {@linkcode StdinLineReader.close} and on exit; it edits the line itself
 * (printable characters, Backspace, Ctrl-U; Enter ends a line; Ctrl-D on an
 * empty line ends input) and starts every read with an empty line.
 *
 * On a terminal, a line counts only when it was typed entirely for the read
 * it answers: keys typed for a read that is aborted (its prompt closed),
 * while no read is open, or inside a read's guard make the reader throw away
 * everything up to and including the next Enter.
 *
 * In the background of its terminal (see
 * {@linkcode StdinLineReaderOptions.foreground}) it does not read the
 * terminal or change its mode; a read that fails there (EIO, with SIGTTIN
 * ignored: {@linkcode ignoreTerminalStopSignals}) is tried again in the
 * foreground, and raw mode is set again after the process is continued
 * (SIGCONT: the shell resets the mode when a job stops).
 */
export class StdinLineReader implements LineReader {
  readonly #input?: ReadableStream<Uint8Array>;
  readonly #term?: { setRaw(on: boolean): void; echo(text: string): void };
  /** Read the real stdin with `Deno.stdin.read`, which can be tried again after an error. */
  readonly #realTerminal: boolean;
  readonly #discard: boolean;
  readonly #now: () => number;
  readonly #foreground: () => boolean | undefined;
  readonly #pollMs: number;
  readonly #waiters: LineWaiter[] = [];
  readonly #unread: string[] = [];
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #started = false;
  #eof = false;
  #raw = false;
  #line = "";
  #escape = 0;
  /** The keys of the escape sequence being read, after its ESC. */
  #sequence: string[] = [];
  /** Keys were typed for the read at the head since it began. */
  #typed = false;
  /** Throw keys away up to and including the next Enter. */
  #discarding = false;
  #exhausted?: PromiseWithResolvers<void>;
  readonly #restore = () => this.#setRaw(false);
  readonly #onContinue = () => {
    // Stopped and continued (Ctrl-Z, then fg or bg): the shell has put the
    // terminal back in its own mode; take raw mode again if in front.
    if (this.#eof || !this.#started) return;
    this.#raw = false;
    this.#setRaw(true);
  };

  /** What has been typed of the line being read (terminal mode only; else ""). */
  get partial(): string {
    return this.#term && this.#waiters.length > 0 ? this.#line : "";
  }

  /** Keys are being thrown away up to and including the next Enter (terminal mode). */
  get discarding(): boolean {
    return this.#discarding;
  }

  constructor(opts: StdinLineReaderOptions = {}) {
    this.#input = opts.input;
    const terminal = opts.terminal ?? (opts.input === undefined && Deno.stdin.isTerminal());
    this.#realTerminal = terminal === true && opts.input === undefined;
    if (terminal === true) {
      const enc = new TextEncoder();
      this.#term = {
        setRaw: (on) => Deno.stdin.setRaw(on, { cbreak: true }),
        echo: (text) => void Deno.stdout.writeSync(enc.encode(text)),
      };
    } else if (terminal) {
      this.#term = terminal;
    }
    this.#discard = opts.discardUnread ?? true;
    this.#now = opts.now ?? (() => performance.now());
    this.#foreground = opts.foreground ??
      (terminal === true ? inTerminalForeground : () => undefined);
    this.#pollMs = opts.foregroundPollMs ?? FOREGROUND_POLL_MS;
  }

  /** Whether the process is in its terminal's foreground (terminal mode; else undefined). */
  inForeground(): boolean | undefined {
    return this.#term ? this.#foreground() : undefined;
  }

  untilForeground(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        finish();
        reject(signal!.reason);
      };
      const check = () => {
        if (this.#eof || this.inForeground() !== false) {
          finish();
          resolve();
        } else {
          timer = setTimeout(check, this.#pollMs);
        }
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      check();
    });
  }

  whenExhausted(): Promise<void> {
    if (this.#term) return new Promise(() => {});
    this.#exhausted ??= Promise.withResolvers<void>();
    this.#start();
    this.#checkExhausted();
    return this.#exhausted.promise;
  }

  #checkExhausted(): void {
    if (this.#eof && this.#unread.length === 0) this.#exhausted?.resolve();
  }

  readLine(signal?: AbortSignal, opts: ReadLineOptions = {}): Promise<string | null> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#unread.length > 0) {
      const line = this.#unread.shift()!;
      this.#checkExhausted();
      return Promise.resolve(line);
    }
    if (this.#eof) return Promise.resolve(null);
    this.#start();
    // A new question starts with an empty line: keys typed for an earlier one are dropped.
    if (this.#term) {
      this.#line = "";
      this.#typed = false;
    }
    return new Promise((resolve, reject) => {
      const w: LineWaiter = { resolve, reject, signal, onDiscarded: opts.onDiscarded };
      if (this.#term && opts.guardMs && opts.guardMs > 0) {
        w.guardUntil = this.#now() + opts.guardMs;
        w.onIgnored = opts.onIgnored;
      }
      if (signal) {
        w.onAbort = () => {
          const i = this.#waiters.indexOf(w);
          if (i === 0 && this.#term && (this.#typed || this.#line !== "")) {
            // The operator was typing an answer to the prompt that closed: the
            // rest of that line, Enter included, must not answer the next one.
            this.#discarding = true;
          }
          if (i >= 0) this.#waiters.splice(i, 1);
          if (i === 0) this.#typed = false;
          if (this.#term && this.#waiters.length === 0) this.#line = "";
          reject(signal.reason);
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.#waiters.push(w);
    });
  }

  /** Stops reading, restores the terminal, and ends every pending read with null. */
  async close(): Promise<void> {
    this.#end();
    const reader = this.#reader;
    this.#reader = undefined;
    await reader?.cancel().catch(() => {});
  }

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    let read: () => Promise<Uint8Array | null>;
    if (this.#realTerminal) {
      const buf = new Uint8Array(4096);
      read = async () => {
        const n = await Deno.stdin.read(buf);
        return n === null ? null : buf.slice(0, n);
      };
      if (Deno.build.os !== "windows") Deno.addSignalListener("SIGCONT", this.#onContinue);
    } else {
      const reader = this.#reader = (this.#input ?? Deno.stdin.readable).getReader();
      read = async () => {
        const r = await reader.read();
        return r.done ? null : r.value;
      };
    }
    if (this.#term) globalThis.addEventListener("unload", this.#restore);
    this.#pump(read);
  }

  #setRaw(on: boolean): void {
    if (!this.#term || this.#raw === on) return;
    // In the background, changing the mode would stop the process (SIGTTOU),
    // and the shell owns the terminal's mode there anyway.
    if (this.#foreground() === false) {
      this.#raw = false;
      return;
    }
    try {
      this.#term.setRaw(on);
      this.#raw = on;
    } catch {
      // Not a terminal after all (or already gone): nothing to restore.
    }
  }

  async #pump(read: () => Promise<Uint8Array | null>): Promise<void> {
    const dec = new TextDecoder();
    for (;;) {
      if (this.#term) {
        // Reading the terminal from the background would stop the process.
        await this.untilForeground();
        if (this.#eof) break;
        this.#setRaw(true);
      }
      let value: Uint8Array | null;
      try {
        value = await read();
      } catch {
        // The process went to the background during the read and SIGTTIN is
        // ignored (EIO): read again once it is back in front. Any other read
        // error ends input like EOF does.
        if (this.#realTerminal && !this.#eof && this.#foreground() === false) {
          this.#raw = false;
          continue;
        }
        break;
      }
      if (value === null || this.#eof) break;
      const text = dec.decode(value, { stream: true });
      if (this.#term ? this.#keys(text) : this.#chunk(text)) break;
    }
    if (!this.#term && this.#line !== "") this.#deliver(this.#line);
    this.#end();
  }

  /** Pipe mode: split on newlines. Returns true when input should end. */
  #chunk(text: string): boolean {
    for (const ch of text) {
      if (ch === "\n") {
        this.#deliver(this.#line.endsWith("\r") ? this.#line.slice(0, -1) : this.#line);
        this.#line = "";
      } else if (this.#line.length < MAX_LINE) {
        this.#line += ch;
      }
    }
    return false;
  }

  /** Terminal mode: a tiny line editor. Returns true on Ctrl-D at an empty line. */
  #keys(text: string): boolean {
    let reading = this.#waiters.length > 0;
    let head = this.#waiters[0];
    let guarded = head?.guardUntil !== undefined && this.#now() < head.guardUntil;
    let ignored = false;
    let discarded = false;
    const chars = [...text];
    for (let i = 0; i < chars.length; i++) {
      const ch = chars[i];
      const code = ch.codePointAt(0)!;
      if (this.#escape > 0) {
        // Skip escape sequences (arrow keys...): ESC [ params final, or ESC O x.
        // Anything else after ESC (Esc pressed on its own, Alt-2), or a control
        // key inside a sequence (Enter: a terminal never sends one there), ends
        // it, and the keys it held are typed: a swallowed 2 would turn the
        // operator's "2, Enter" into Enter alone, allow once.
        if (
          code < 0x20 || code === 0x7f || (this.#escape === 1 && ch !== "[" && ch !== "O")
        ) {
          chars.splice(i, 0, ...this.#sequence);
          this.#escape = 0;
          this.#sequence = [];
          i--;
          continue;
        }
        if (this.#escape === 1) this.#escape = ch === "[" ? 2 : 3;
        else if (this.#escape === 3 || (code >= 0x40 && code <= 0x7e)) this.#escape = 0;
        this.#sequence = this.#escape === 0 ? [] : [...this.#sequence, ch];
        continue;
      }
      const enter = ch === "\r" || ch === "\n";
      // Keys that make or edit a line (Enter aside).
      const editing = code >= 0x20 || code === 0x08 || code === 0x15;
      if (guarded && code !== 0x1b && code !== 0x04) {
        // Typed as the prompt appeared: meant for whatever was there before,
        // and so is the rest of the line they begin.
        if (enter || code >= 0x20) ignored = true;
        if (enter) this.#discarding = false;
        else if (editing) this.#discarding = true;
        continue;
      }
      if (this.#discarding && code !== 0x1b && code !== 0x04) {
        // The rest of a line begun for a prompt that closed (or for none).
        if (enter) {
          this.#discarding = false;
          if (reading) discarded = true;
        }
        continue;
      }
      if (enter) {
        if (!reading) continue;
        this.#term!.echo("\r\n");
        const line = this.#line;
        this.#line = "";
        this.#typed = false;
        this.#deliver(line);
        // Keys after it in this chunk (a paste, or keys batched over ssh)
        // were typed for whatever reads next, if anything does.
        reading = this.#waiters.length > 0;
        if (this.#waiters[0] !== head) {
          head = this.#waiters[0];
          guarded = head?.guardUntil !== undefined && this.#now() < head.guardUntil;
        }
        continue;
      }
      if (!reading && editing) {
        // Typed while no prompt is open: this line answers no prompt.
        this.#discarding = true;
        continue;
      }
      if (code === 0x1b) this.#escape = 1;
      else if (code === 0x7f || code === 0x08) {
        this.#typed = true;
        if (this.#line !== "") {
          this.#line = [...this.#line].slice(0, -1).join("");
          this.#term!.echo("\b \b");
        }
      } else if (code === 0x15) {
        this.#typed = true;
        this.#term!.echo("\b \b".repeat([...this.#line].length));
        this.#line = "";
      } else if (code === 0x04) {
        if (this.#line === "") return true;
      } else if (code >= 0x20 && this.#line.length < MAX_LINE) {
        this.#typed = true;
        this.#line += ch;
        this.#term!.echo(ch);
      }
    }
    if (ignored && head && !head.told && this.#waiters[0] === head) {
      head.told = true;
      head.onIgnored?.();
    }
    if (discarded) this.#waiters[0]?.onDiscarded?.();
    return false;
  }

  #deliver(line: string): void {
    const w = this.#waiters.shift();
    if (w) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.resolve(line);
    } else if (!this.#discard) {
      this.#unread.push(line);
    }
  }

  #end(): void {
    if (!this.#eof && this.#realTerminal && this.#started && Deno.build.os !== "windows") {
      Deno.removeSignalListener("SIGCONT", this.#onContinue);
    }
    this.#eof = true;
    this.#setRaw(false);
    globalThis.removeEventListener("unload", this.#restore);
    for (const w of this.#waiters.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.resolve(null);
    }
    this.#checkExhausted();
  }
}
