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
  /** How many requests are waiting on this prompt (shared prompt). */
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
