/**
 * The control socket's wire protocol: newline-delimited JSON, one message per
 * line, UTF-8. Pure code (no sockets): encoders, validating parsers, and a
 * line splitter that refuses oversized lines.
 *
 * Server to client:
 * - `{"type":"hello","version":1,"name":"prompt#1","pid":123,"listen":"127.0.0.1:8080","prompts":true,
 *   "prompting":{"terminal":true,"clients":1,"default":"deny","timeoutMs":60000}}`
 *   once, on connect (`listen` once the proxy listens; `prompts` false when it
 *   answers by itself, `--non-interactive`; `prompting`: who answers its
 *   prompts right now, left out by older proxies);
 * - `{"type":"pending","request":PendingRequest}` when a prompt is shown;
 * - `{"type":"resolved","id":"7","outcome":"answered","by":"terminal","answer":"allow-once"}`
 *   when a prompt this client was shown closes (also after its own answer);
 * - `{"type":"rule","pattern":"github.com","action":"allow-domain","saved":true}`
 *   when an "always" answer's rule was saved, or `"saved":false,"error":"..."`
 *   when it could not be (the answer was then applied once; unless `"kept"` names
 *   a deny rule added meanwhile, which decides instead);
 * - `{"type":"error","message":"...","id"?:"7"}` for a bad client message.
 *
 * Client to server: `{"type":"answer","id":"7","answer":"allow-domain"}`.
 *
 * @module
 */

import {
  isPromptAnswer,
  type PendingRequest,
  type PromptAnswer,
  type PromptOutcome,
} from "./types.ts";

/** Protocol version in `hello`; bumped on incompatible changes. */
export const PROTOCOL_VERSION = 1;

/** Longest line the server accepts from a client (bytes, newline excluded). */
export const MAX_CLIENT_LINE = 64 * 1024;
/** Longest line a client accepts from the server (a pending request carries a URL). */
export const MAX_SERVER_LINE = 1024 * 1024;

export interface HelloMessage {
  type: "hello";
  version: number;
  /** This client's prompter name, as it appears in `resolved.by`. */
  name: string;
  /** The proxy's process id. */
  pid: number;
  /** Where the proxy listens, `ADDR:PORT` (IPv6 in brackets); absent until it does. */
  listen?: string;
  /** False when the proxy answers by itself (`--non-interactive`): no prompt will come. */
  prompts?: boolean;
  /** Who answers the proxy's prompts right now; absent from older proxies. */
  prompting?: PromptingState;
}

/** Who answers a proxy's prompts right now, and what decides when nobody does. */
export interface PromptingState {
  /** The proxy's own terminal asks (its standard input answers). */
  terminal: boolean;
  /** `netmonitor prompt` clients attached to its control socket. */
  clients: number;
  /**
   * What a request no rule covers gets from `--default`: every such request
   * when the proxy never prompts, else one that nobody answers in `timeoutMs`.
   */
  default: "allow" | "deny";
  /** How long a prompt waits for an answer, ms; absent when the proxy never prompts. */
  timeoutMs?: number;
}
export interface PendingMessage {
  type: "pending";
  request: PendingRequest;
}
export interface ResolvedMessage {
  type: "resolved";
  id: string;
  outcome: PromptOutcome["kind"];
  by?: string;
  answer?: PromptAnswer;
}
export interface RuleMessage {
  type: "rule";
  pattern: string;
  action: string;
  saved: boolean;
  error?: string;
  /** Not saved because a deny rule for the same thing was added meanwhile: it decides instead. */
  kept?: { pattern: string; action: string };
}
export interface ErrorMessage {
  type: "error";
  message: string;
  id?: string;
}
export type ServerMessage =
  | HelloMessage
  | PendingMessage
  | ResolvedMessage
  | RuleMessage
  | ErrorMessage;

export interface AnswerMessage {
  type: "answer";
  id: string;
  answer: PromptAnswer;
}
export type ClientMessage = AnswerMessage;

/** Encodes one message as a line (with its newline). */
export function encodeMessage(m: ServerMessage | ClientMessage): string {
  return JSON.stringify(m) + "\n";
}

/** A protocol violation; the message says what was wrong. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(message: string, readonly id?: string) {
    super(message);
  }
}

function parseObject(line: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new ProtocolError(`invalid JSON: ${err instanceof Error ? err.message : err}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("expected a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * Parses and validates one client line.
 * @throws {ProtocolError} naming what is wrong.
 */
export function parseClientMessage(line: string): ClientMessage {
  const o = parseObject(line);
  if (o.type !== "answer") {
    throw new ProtocolError(`unknown message type ${JSON.stringify(o.type)} (expected "answer")`);
  }
  if (typeof o.id !== "string" || o.id === "" || o.id.length > 64) {
    throw new ProtocolError(`"id" must be a non-empty string`);
  }
  if (!isPromptAnswer(o.answer)) {
    throw new ProtocolError(
      `unknown answer ${JSON.stringify(o.answer)} (expected one of allow-once, deny-once, ` +
        `allow-domain, deny-domain, allow-url, deny-url)`,
      o.id,
    );
  }
  return { type: "answer", id: o.id, answer: o.answer };
}

const str = (v: unknown): v is string => typeof v === "string";
const int = (v: unknown): v is number => Number.isInteger(v);

function parsePending(v: unknown): PendingRequest {
  const r = v as Record<string, unknown> | null;
  if (
    typeof r !== "object" || r === null || !str(r.id) || !str(r.host) || !int(r.port) ||
    (r.scheme !== "http" && r.scheme !== "https") || !str(r.method) || !str(r.client) ||
    !str(r.reason) || !int(r.waiting) || (r.path !== undefined && !str(r.path)) ||
    (r.url !== undefined && !str(r.url))
  ) {
    throw new ProtocolError("malformed pending request");
  }
  const req: PendingRequest = {
    id: r.id,
    host: r.host,
    port: r.port,
    scheme: r.scheme,
    method: r.method,
    client: r.client,
    reason: r.reason,
    waiting: r.waiting,
  };
  if (r.path !== undefined) req.path = r.path as string;
  if (r.url !== undefined) req.url = r.url as string;
  return req;
}

const OUTCOMES = new Set(["answered", "timeout", "withdrawn", "shutdown", "detached"]);

/**
 * Parses and validates one server line (what `netmonitor prompt` receives).
 * @throws {ProtocolError} naming what is wrong.
 */
export function parseServerMessage(line: string): ServerMessage {
  const o = parseObject(line);
  switch (o.type) {
    case "hello":
      if (!int(o.version) || !str(o.name) || !int(o.pid)) {
        throw new ProtocolError("malformed hello");
      }
      if (
        (o.listen !== undefined && !str(o.listen)) ||
        (o.prompts !== undefined && typeof o.prompts !== "boolean")
      ) {
        throw new ProtocolError("malformed hello");
      }
      return {
        type: "hello",
        version: o.version,
        name: o.name,
        pid: o.pid,
        ...(o.listen !== undefined ? { listen: o.listen as string } : {}),
        ...(o.prompts !== undefined ? { prompts: o.prompts as boolean } : {}),
        ...withPrompting(o.prompting),
      };
    case "pending":
      return { type: "pending", request: parsePending(o.request) };
    case "resolved": {
      if (!str(o.id) || !str(o.outcome) || !OUTCOMES.has(o.outcome)) {
        throw new ProtocolError("malformed resolved message");
      }
      const m: ResolvedMessage = {
        type: "resolved",
        id: o.id,
        outcome: o.outcome as PromptOutcome["kind"],
      };
      if (str(o.by)) m.by = o.by;
      if (isPromptAnswer(o.answer)) m.answer = o.answer;
      return m;
    }
    case "rule": {
      if (!str(o.pattern) || !str(o.action) || typeof o.saved !== "boolean") {
        throw new ProtocolError("malformed rule message");
      }
      const m: RuleMessage = { type: "rule", pattern: o.pattern, action: o.action, saved: o.saved };
      if (str(o.error)) m.error = o.error;
      const k = o.kept as { pattern?: unknown; action?: unknown } | undefined;
      if (k && typeof k === "object" && str(k.pattern) && str(k.action)) {
        m.kept = { pattern: k.pattern, action: k.action };
      }
      return m;
    }
    case "error": {
      if (!str(o.message)) throw new ProtocolError("malformed error message");
      const m: ErrorMessage = { type: "error", message: o.message };
      if (str(o.id)) m.id = o.id;
      return m;
    }
    default:
      throw new ProtocolError(`unknown message type ${JSON.stringify(o.type)}`);
  }
}

/**
 * `{ prompting }` when `v` is a well-formed {@linkcode PromptingState}, else
 * nothing. Unlike the rest of hello it is only shown, never acted on, so a
 * shape this client does not know (a later proxy's) is left out rather than
 * failing the whole greeting.
 */
function withPrompting(v: unknown): { prompting?: PromptingState } {
  const p = v as Record<string, unknown> | null;
  if (
    typeof p !== "object" || p === null || typeof p.terminal !== "boolean" ||
    !int(p.clients) || p.clients < 0 || (p.default !== "allow" && p.default !== "deny") ||
    (p.timeoutMs !== undefined && (!int(p.timeoutMs) || p.timeoutMs < 1))
  ) {
    return {};
  }
  return {
    prompting: {
      terminal: p.terminal,
      clients: p.clients,
      default: p.default,
      ...(p.timeoutMs !== undefined ? { timeoutMs: p.timeoutMs as number } : {}),
    },
  };
}

/** A line longer than the limit arrived. */
export class LineTooLongError extends Error {
  override name = "LineTooLongError";
}

/**
 * Splits a byte stream into lines. `push` returns the complete lines (decoded
 * as UTF-8, `\r\n` accepted) and keeps the rest; it throws
 * {@linkcode LineTooLongError} once the unfinished line exceeds `maxBytes`.
 */
export class LineSplitter {
  #buf = new Uint8Array(0);
  readonly #dec = new TextDecoder();
  constructor(readonly maxBytes: number) {}

  push(chunk: Uint8Array): string[] {
    const buf = new Uint8Array(this.#buf.length + chunk.length);
    buf.set(this.#buf);
    buf.set(chunk, this.#buf.length);
    const lines: string[] = [];
    let start = 0;
    for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, start)) {
      if (i - start > this.maxBytes) throw new LineTooLongError(`line over ${this.maxBytes} bytes`);
      let end = i;
      if (end > start && buf[end - 1] === 13) end--;
      lines.push(this.#dec.decode(buf.subarray(start, end)));
      start = i + 1;
    }
    this.#buf = buf.slice(start);
    if (this.#buf.length > this.maxBytes) {
      throw new LineTooLongError(`line over ${this.maxBytes} bytes`);
    }
    return lines;
  }

  /** Bytes of an unfinished line still buffered. */
  get buffered(): number {
    return this.#buf.length;
  }
}
