/**
 * The decider interface: anything that can answer a pending request (the
 * terminal prompt, `netmonitor prompt` in another terminal, tests).
 * @module
 */

/** The original design's six answers, in menu order (1-6). */
export type PromptAnswer =
  | "allow-once"
  | "deny-once"
  | "allow-domain"
  | "deny-domain"
  | "allow-url"
  | "deny-url";

export const PROMPT_ANSWERS: readonly PromptAnswer[] = [
  "allow-once",
  "deny-once",
  "allow-domain",
  "deny-domain",
  "allow-url",
  "deny-url",
];

/** A request that no rule covers, as shown to the operator. */
export interface PendingRequest {
  /** Unique per prompt. */
  id: string;
  /** Normalised host, port omitted (the prompt's `Host:` line). */
  host: string;
  port: number;
  scheme: "http" | "https";
  method: string;
  /** Path and query, or undefined for a tunnel that is not intercepted. */
  path?: string;
  /** The exact URL an allow-url/deny-url answer would save (redaction-free). */
  url?: string;
  client: string;
  /** Why we ask, e.g. `no rule`. */
  reason: string;
  /**
   * How many waiting requests are identical to this one (same method and URL;
   * for a tunnel, same method, host and port), counting itself: the requests
   * an allow-once answer releases. Other requests to the host may wait on the
   * prompt too; see `DecisionBroker` for what each answer does with them.
   */
  waiting: number;
}

/**
 * Answers pending requests. `ask` resolves with the operator's answer, or
 * rejects/never resolves; the broker enforces the timeout and aborts `signal`
 * when another prompter answered first or the request was withdrawn.
 */
export interface Prompter {
  ask(request: PendingRequest, signal: AbortSignal): Promise<PromptAnswer>;
}

/**
 * Optional identity of a prompter, used in "answered elsewhere (by X)" and in
 * the control socket's `resolved` message. Additive to {@linkcode Prompter}.
 */
export interface NamedPrompter extends Prompter {
  readonly name?: string;
}

/** Why a prompt closed, as seen by a prompter that did not (or could not) answer it. */
export interface PromptOutcome {
  /**
   * `answered`: a prompter answered (see `by`, `answer`); `timeout`: every
   * waiting request timed out; `withdrawn`: every waiting request's client went
   * away or rules now decide them; `shutdown`: the proxy is stopping;
   * `detached`: this prompter was detached from the broker.
   */
  kind: "answered" | "timeout" | "withdrawn" | "shutdown" | "detached";
  /** Name of the prompter that answered (kind `answered`). */
  by?: string;
  answer?: PromptAnswer;
}

/**
 * The `reason` of the AbortSignal a prompter receives when its prompt closes
 * without its own answer.
 */
export class PromptClosedError extends Error {
  override name = "PromptClosedError";
  constructor(readonly outcome: PromptOutcome) {
    super(describePromptOutcome(outcome));
  }
}

/** Short human-readable text for a prompt outcome, e.g. `answered elsewhere (by terminal): allow-once`. */
export function describePromptOutcome(o: PromptOutcome): string {
  switch (o.kind) {
    case "answered":
      return `answered elsewhere${o.by ? ` (by ${o.by})` : ""}${o.answer ? `: ${o.answer}` : ""}`;
    case "timeout":
      return "no answer in time";
    case "withdrawn":
      return "request withdrawn (client disconnected or a rule now decides it)";
    case "shutdown":
      return "the proxy is shutting down";
    case "detached":
      return "prompter detached";
  }
}

/**
 * The answers a prompt offers: allow-url and deny-url need the request's exact
 * URL, which a tunnel relayed without interception does not have.
 */
export function answerAvailable(request: PendingRequest, answer: PromptAnswer): boolean {
  if (answer === "allow-url" || answer === "deny-url") return request.url !== undefined;
  return PROMPT_ANSWERS.includes(answer);
}

/** Type guard for a value received from outside (control socket, prompter bugs). */
export function isPromptAnswer(value: unknown): value is PromptAnswer {
  return typeof value === "string" && (PROMPT_ANSWERS as readonly string[]).includes(value);
}
