/**
 * The original design's terminal prompt: rendering, choice parsing, and a
 * {@linkcode Prompter} that asks on a terminal (`netmonitor run` and
 * `netmonitor prompt` both use it).
 *
 * Input comes from one shared {@linkcode LineReader}, so nothing else reading
 * the console fights the prompt for lines, and tests inject lines.
 *
 * A keystroke meant for one prompt must never answer another (Enter alone is
 * "allow once"): keys typed while no prompt is open are thrown away, and on a
 * terminal so are keys typed within {@linkcode DEFAULT_INPUT_GUARD_MS} of a new
 * prompt appearing (a client can withdraw the request the operator is
 * answering, so that the next one takes its place under the cursor).
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
import { formatAuthority, isFixedAddressHost } from "../lib/net/host.ts";

const BAR = "=".repeat(80);

/** The question line; the cursor waits after it. */
export const CHOICE_QUESTION = "Your choice [1]: ";

/** Default for {@linkcode PromptIO.inputGuardMs}: keys typed this soon after a new prompt are ignored. */
export const DEFAULT_INPUT_GUARD_MS = 400;

/** Printed when the input guard threw away keys typed as a new prompt appeared. */
export const INPUT_IGNORED_LINE =
  "(input ignored: typed as this request appeared; read it and choose again)";

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
      req.path === undefined ? "(unknown: HTTPS tunnel, not intercepted)" : printable(req.path, 400)
    }`,
    `Client: ${printable(req.client, 80)}`,
  ];
  if (req.reason !== "no rule") lines.push(`Reason: ${printable(req.reason, 200)}`);
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

/**
 * Parses what the operator typed: a digit 1-6, empty for the default (1), or
 * an answer's name (`allow-domain`). Returns the answer or a message that
 * says what to type instead.
 */
export function parseChoice(
  input: string,
  req: PendingRequest,
): { answer: PromptAnswer } | { error: string } {
  const text = input.trim().toLowerCase();
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

/**
 * Makes text safe to print: control characters (C0, C1, DEL), bidi overrides
 * and zero-width characters become `\u{..}` escapes, and text over `max`
 * characters is cut with a note of how much was left out.
 */
export function printable(text: string, max = 200): string {
  const cleaned = text.replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g,
    (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`,
  );
  const chars = [...cleaned];
  if (chars.length <= max) return cleaned;
  return `${chars.slice(0, max).join("")}... (${chars.length - max} more characters)`;
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
}

/** A source of typed lines. */
export interface LineReader {
  /**
   * Resolves with the next line completed after this call (without its line
   * end), or null at end of input. Rejects with `signal.reason` when aborted.
   */
  readLine(signal?: AbortSignal, opts?: ReadLineOptions): Promise<string | null>;
  /** What has been typed of the line being read (terminal mode), to redraw it. */
  readonly partial?: string;
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
   * question waits, the line goes above it and the question and what was
   * typed so far are redrawn (on a terminal), so the two never mix.
   */
  printLine(text: string): void;
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
  const printLine = (text: string): void => {
    if (!asking) io.write(`${text}\n`);
    else if (io.ansi) {
      io.write(`\r\x1b[2K${text}\n${CHOICE_QUESTION}${io.lines.partial ?? ""}`);
    } else io.write(`\n${text}\n${CHOICE_QUESTION}`);
  };
  return {
    name,
    printLine,
    async ask(req: PendingRequest, signal: AbortSignal): Promise<PromptAnswer> {
      io.write("\n" + renderPrompt(req));
      // Only the first read of a new prompt is guarded: a choice asked again
      // after an invalid one is about the same request.
      let guard: ReadLineOptions | undefined = guardMs > 0
        ? { guardMs, onIgnored: () => printLine(INPUT_IGNORED_LINE) }
        : undefined;
      for (;;) {
        io.write(CHOICE_QUESTION);
        let line: string | null;
        asking = true;
        try {
          line = await io.lines.readLine(signal, guard);
          guard = undefined;
        } catch (err) {
          if (signal.aborted) io.write(`\n${closedLine(signal.reason)}\n`);
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
        io.write(`${parsed.error}\n`);
      }
    },
  };
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
): { close(): Promise<void>; printLine(text: string): void } {
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
    printLine: (text) => inner.printLine(text),
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
    case "rule-saved":
      return `Saved rule ${JSON.stringify(e.pattern)}: ${e.action}`;
    case "rule-save-failed":
      return `Could not save rule ${JSON.stringify(e.pattern)}: ${e.action} (${e.error}); ` +
        `the answer was applied once`;
    case "prompter-failed":
      return `Prompt ${e.prompter} failed: ${e.error}`;
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
}

/**
 * The one shared reader of the console. On a terminal it switches to raw
 * mode (keeping Ctrl-C as SIGINT) while it runs and restores the terminal on
 * {@linkcode StdinLineReader.close} and on exit; it edits the line itself
 * (printable characters, Backspace, Ctrl-U; Enter ends a line; Ctrl-D on an
 * empty line ends input) and starts every read with an empty line.
 */
export class StdinLineReader implements LineReader {
  readonly #input: ReadableStream<Uint8Array>;
  readonly #term?: { setRaw(on: boolean): void; echo(text: string): void };
  readonly #discard: boolean;
  readonly #now: () => number;
  readonly #waiters: LineWaiter[] = [];
  readonly #unread: string[] = [];
  #reader?: ReadableStreamDefaultReader<Uint8Array>;
  #eof = false;
  #raw = false;
  #line = "";
  #escape = 0;
  readonly #restore = () => this.#setRaw(false);

  /** What has been typed of the line being read (terminal mode only; else ""). */
  get partial(): string {
    return this.#term && this.#waiters.length > 0 ? this.#line : "";
  }

  constructor(opts: StdinLineReaderOptions = {}) {
    this.#input = opts.input ?? Deno.stdin.readable;
    const terminal = opts.terminal ?? (opts.input === undefined && Deno.stdin.isTerminal());
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
  }

  readLine(signal?: AbortSignal, opts: ReadLineOptions = {}): Promise<string | null> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#unread.length > 0) return Promise.resolve(this.#unread.shift()!);
    if (this.#eof) return Promise.resolve(null);
    this.#start();
    // A new question starts with an empty line: keys typed for an earlier one are dropped.
    if (this.#term) this.#line = "";
    return new Promise((resolve, reject) => {
      const w: LineWaiter = { resolve, reject, signal };
      if (this.#term && opts.guardMs && opts.guardMs > 0) {
        w.guardUntil = this.#now() + opts.guardMs;
        w.onIgnored = opts.onIgnored;
      }
      if (signal) {
        w.onAbort = () => {
          const i = this.#waiters.indexOf(w);
          if (i >= 0) this.#waiters.splice(i, 1);
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
    if (this.#reader) return;
    this.#reader = this.#input.getReader();
    if (this.#term) {
      this.#setRaw(true);
      globalThis.addEventListener("unload", this.#restore);
    }
    this.#pump(this.#reader);
  }

  #setRaw(on: boolean): void {
    if (!this.#term || this.#raw === on) return;
    try {
      this.#term.setRaw(on);
      this.#raw = on;
    } catch {
      // Not a terminal after all (or already gone): nothing to restore.
    }
  }

  async #pump(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const text = dec.decode(value, { stream: true });
        if (this.#term ? this.#keys(text) : this.#chunk(text)) break;
      }
    } catch {
      // A read error ends input like EOF does.
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
    const reading = this.#waiters.length > 0;
    const head = this.#waiters[0];
    const guarded = head?.guardUntil !== undefined && this.#now() < head.guardUntil;
    let ignored = false;
    for (const ch of text) {
      const code = ch.codePointAt(0)!;
      if (this.#escape > 0) {
        // Skip escape sequences (arrow keys...): ESC [ params final, or ESC O x.
        if (this.#escape === 1) this.#escape = ch === "[" ? 2 : ch === "O" ? 3 : 0;
        else if (this.#escape === 3 || (code >= 0x40 && code <= 0x7e)) this.#escape = 0;
        continue;
      }
      if (guarded && code !== 0x1b && code !== 0x04) {
        // Typed as the prompt appeared: meant for whatever was there before.
        if (ch === "\r" || ch === "\n" || code >= 0x20) ignored = true;
        continue;
      }
      if (ch === "\r" || ch === "\n") {
        if (!reading) continue;
        this.#term!.echo("\r\n");
        const line = this.#line;
        this.#line = "";
        this.#deliver(line);
        continue;
      }
      if (code === 0x1b) this.#escape = 1;
      else if (code === 0x7f || code === 0x08) {
        if (this.#line !== "") {
          this.#line = [...this.#line].slice(0, -1).join("");
          if (reading) this.#term!.echo("\b \b");
        }
      } else if (code === 0x15) {
        if (reading) this.#term!.echo("\b \b".repeat([...this.#line].length));
        this.#line = "";
      } else if (code === 0x04) {
        if (this.#line === "") return true;
      } else if (code >= 0x20 && reading && this.#line.length < MAX_LINE) {
        this.#line += ch;
        this.#term!.echo(ch);
      }
    }
    if (ignored && head && !head.told && this.#waiters[0] === head) {
      head.told = true;
      head.onIgnored?.();
    }
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
    this.#eof = true;
    this.#setRaw(false);
    globalThis.removeEventListener("unload", this.#restore);
    for (const w of this.#waiters.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
      w.resolve(null);
    }
  }
}
