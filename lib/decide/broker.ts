/**
 * The decision broker: rules first, then the operator.
 *
 * The proxy calls {@linkcode DecisionBroker.decide} for every request. A rule
 * answers at once; a request no rule covers waits for a prompt. Requests to the
 * same host and port share one prompt; prompts are shown one at a time in
 * arrival order; any number of prompters (the terminal, `netmonitor prompt`
 * clients, tests) may be attached and the first answer wins. Each waiting
 * request is denied once when no answer arrives within `promptTimeoutMs` of its
 * arrival (or allowed, with `timeoutAction: "allow"`), so a client never waits
 * longer than that, however long the queue.
 *
 * What an answer releases is never more than the operator saw:
 * - allow-once and allow-url/deny-url release only the requests identical to
 *   the one shown (same method and URL; for a tunnel, same method, host and
 *   port). Every other request waiting on the host is decided again by the
 *   rules, and asked about again if still uncovered (a client cannot slip a
 *   `POST /upload` in behind a shown `GET /index.html`);
 * - deny-once denies every request waiting on the host (denying is safe);
 * - allow-domain/deny-domain release every request waiting on the host (the
 *   operator chose the whole host).
 *
 * A deny rule added while the prompt was open (another terminal ran
 * `netmonitor rules add`) beats an allow answer: the requests an allow
 * answer releases are checked against the rules in force once the answer is
 * applied, and one a rule denies is denied. An "always allow" answer is never
 * saved over a deny rule (`keepDeny`): when the file holds a deny rule for the
 * same host pattern, or for the same URL in any spelling, that rule stays and
 * decides, and the answer is reported as not saved. (A saved rule more
 * specific than a deny rule, e.g. an exact URL or `host:port` next to a deny
 * for the host or for `*.domain`, wins by precedence, as any rule would.)
 *
 * A client cannot bury the operator in prompts: beyond
 * `maxPromptsPerClient` open prompts for one client IP, its new uncovered
 * requests are denied once (source "policy").
 *
 * Nothing here touches the terminal: the CLI learns what happens through
 * {@linkcode BrokerEvent}s.
 *
 * @module
 */

import type { DecideInput, FinalDecision } from "../proxy/types.ts";
import { formatAuthority, isFixedAddressHost } from "../net/host.ts";
import { DenyRuleKeptError } from "../rules/store.ts";
import type { RequestTarget, Rule, RuleDecision, StoredAction } from "../rules/types.ts";
import {
  answerAvailable,
  isPromptAnswer,
  type NamedPrompter,
  type PendingRequest,
  type PromptAnswer,
  PromptClosedError,
  type Prompter,
  type PromptOutcome,
} from "./types.ts";

// The proxy defines what it asks and what it expects back; the broker is one
// implementation of that contract.
export type { DecideInput, FinalDecision };

/** The part of the rules engine the broker uses (satisfied by `RuleSet`). */
export interface RuleDecider {
  decide(target: RequestTarget): RuleDecision;
}

/** The part of the rules store the broker uses (satisfied by `RulesStore`). */
export interface BrokerRules {
  /**
   * The rules in force now (hot-reloaded by the store). A change of rules is
   * a new object: a decision is re-checked only when `current` is another
   * object than the one it was made with.
   */
  readonly current: RuleDecider;
  /**
   * Saves a rule; `current` reflects it once the promise resolves. May resolve
   * with `{ rule: { pattern } }` when an equivalent rule kept its own spelling
   * (as `RulesStore.add` does); the reason then quotes that spelling.
   *
   * The broker passes `keepDeny: true` for an allow rule: a deny rule it would
   * replace must stay, and the promise rejects with `DenyRuleKeptError`
   * (`current` then holds that deny rule).
   */
  add(pattern: string, action: StoredAction, options?: { keepDeny?: boolean }): Promise<unknown>;
}

/** Something the CLI may want to print. */
export type BrokerEvent =
  /** A prompt became the one shown (whether or not a prompter is attached). */
  | { type: "prompt-shown"; request: PendingRequest; prompters: number }
  /** A shown prompt closed: answered, timed out, withdrawn or shutdown. */
  | { type: "prompt-closed"; request: PendingRequest; outcome: PromptOutcome }
  /** An "always" answer was saved as a rule. */
  | { type: "rule-saved"; pattern: string; action: StoredAction }
  /**
   * An "always" answer could not be saved; it was applied once anyway, except
   * when `kept` is set: an allow answer met a deny rule it would have replaced
   * (added meanwhile); that rule stays and decides the waiting requests.
   */
  | {
    type: "rule-save-failed";
    pattern: string;
    action: StoredAction;
    error: string;
    kept?: { pattern: string; action: StoredAction };
  }
  /** A prompter failed (threw, or gave an answer the prompt does not offer); it is ignored for that prompt. */
  | { type: "prompter-failed"; prompter: string; error: string };

/** Options for {@linkcode DecisionBroker}. */
export interface BrokerOptions {
  rules: BrokerRules;
  /** How long a request waits for an answer before it is decided once by `timeoutAction`. Default 60_000. */
  promptTimeoutMs?: number;
  /**
   * What a request that nobody answered in time gets (source "timeout").
   * Default "deny"; `run --default allow` may pass "allow".
   */
  timeoutAction?: "allow" | "deny";
  /**
   * How long an answer waits for its rule to be saved before it is applied
   * anyway, reported as not saved (a stuck lock holder must not hold requests
   * forever); a save that completes later is still reported. Default 10_000.
   */
  saveTimeoutMs?: number;
  /**
   * Most prompts (queued or shown) that requests from one client IP may hold
   * open. A further uncovered request from that IP that would need a prompt
   * of its own is denied once (source "policy", reason
   * `too many pending prompts from IP`); requests joining an open prompt are
   * not limited. Keeps one flooding client from pushing everybody else's
   * prompts into their timeout. Default {@linkcode DEFAULT_MAX_PROMPTS_PER_CLIENT}.
   */
  maxPromptsPerClient?: number;
  /** Answer every uncovered request with this default instead of prompting (source "default"). */
  nonInteractive?: { default: "allow" | "deny" };
  /** Receives every {@linkcode BrokerEvent}; more listeners via {@linkcode DecisionBroker.subscribe}. */
  onEvent?(e: BrokerEvent): void;
}

/** Default for {@linkcode BrokerOptions.promptTimeoutMs}. */
export const DEFAULT_PROMPT_TIMEOUT_MS = 60_000;

/** Default for {@linkcode BrokerOptions.maxPromptsPerClient}. */
export const DEFAULT_MAX_PROMPTS_PER_CLIENT = 20;

interface Waiter {
  input: DecideInput;
  url?: string;
  /** The rules' reason for asking, e.g. `no rule`. */
  askReason: string;
  /** The rules `askReason` came from. */
  askedBy: RuleDecider;
  deadline: number;
  timer?: ReturnType<typeof setTimeout>;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve(d: FinalDecision): void;
  done: boolean;
}

interface Group {
  id: string;
  key: string;
  waiters: Waiter[];
  state: "queued" | "shown" | "settling";
  /** The request shown to prompters (fixed when the prompt is shown). */
  request?: PendingRequest;
  asks: Map<Prompter, AbortController>;
  /** Per prompter, the waiters identical to the request when it was asked: what it saw counted. */
  seen: Map<Prompter, Set<Waiter>>;
}

/**
 * Decides requests from rules, and asks attached prompters when no rule
 * applies. See the module documentation for the semantics.
 */
export class DecisionBroker {
  readonly #rules: BrokerRules;
  readonly #timeoutMs: number;
  readonly #timeoutAction: "allow" | "deny";
  readonly #saveTimeoutMs: number;
  readonly #nonInteractive?: { default: "allow" | "deny" };
  readonly #maxPerClient: number;
  readonly #listeners = new Set<(e: BrokerEvent) => void>();
  readonly #prompters = new Set<Prompter>();
  /** Open groups by host:port key (queued, shown or settling). */
  readonly #groups = new Map<string, Group>();
  /** Groups waiting to be shown, oldest first. */
  readonly #queue: Group[] = [];
  #active?: Group;
  #seq = 0;
  #closed = false;
  /** Answers being applied (their rule being saved); shutdown waits for them. */
  readonly #settling = new Set<Promise<void>>();
  #closing: Promise<void> | undefined;

  constructor(opts: BrokerOptions) {
    this.#rules = opts.rules;
    this.#timeoutMs = opts.promptTimeoutMs ?? DEFAULT_PROMPT_TIMEOUT_MS;
    if (!(this.#timeoutMs > 0)) throw new RangeError("promptTimeoutMs must be positive");
    this.#nonInteractive = opts.nonInteractive;
    this.#timeoutAction = opts.timeoutAction ?? "deny";
    this.#saveTimeoutMs = opts.saveTimeoutMs ?? 10_000;
    this.#maxPerClient = opts.maxPromptsPerClient ?? DEFAULT_MAX_PROMPTS_PER_CLIENT;
    if (!(this.#maxPerClient >= 1)) throw new RangeError("maxPromptsPerClient must be at least 1");
    if (opts.onEvent) this.#listeners.add(opts.onEvent);
  }

  /** Adds an event listener; returns a function that removes it. */
  subscribe(listener: (e: BrokerEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Decides one request. Never rejects: rule errors deny (source "error"), and
   * a request whose `signal` aborts while it waits is withdrawn from its
   * prompt and resolved as denied with source "error".
   */
  decide(input: DecideInput, signal?: AbortSignal): Promise<FinalDecision> {
    const rules = this.#rules.current;
    const ruled = this.#byRules(input);
    if ("final" in ruled) return Promise.resolve(ruled.final);
    if (this.#nonInteractive) {
      const action = this.#nonInteractive.default;
      return Promise.resolve({
        action,
        source: "default",
        reason: `${ruled.askReason}, non-interactive default: ${action}`,
      });
    }
    if (this.#closed) return Promise.resolve(shuttingDown());
    if (signal?.aborted) return Promise.resolve(clientGone());
    const flood = this.#overPromptCap(input);
    if (flood) return Promise.resolve(flood);
    return new Promise((resolve) => {
      const w: Waiter = {
        input,
        url: input.url ?? urlOf(input.target),
        askReason: ruled.askReason,
        askedBy: rules,
        deadline: Date.now() + this.#timeoutMs,
        signal,
        resolve,
        done: false,
      };
      if (signal) {
        w.onAbort = () => this.#withdraw(w, clientGone(), "withdrawn");
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.#armTimer(w);
      this.#join(w, false);
      this.#pump();
    });
  }

  /**
   * Attaches a prompter. It is asked the prompt being shown right away, and
   * every later one. Returns a function that detaches it (aborting its open
   * ask with outcome `detached`).
   */
  addPrompter(p: NamedPrompter): () => void {
    if (this.#closed) return () => {};
    this.#prompters.add(p);
    const g = this.#active;
    if (g && g.state === "shown") this.#ask(g, p);
    return () => {
      if (!this.#prompters.delete(p)) return;
      for (const grp of this.#groups.values()) {
        const ac = grp.asks.get(p);
        if (ac) {
          grp.asks.delete(p);
          ac.abort(new PromptClosedError({ kind: "detached" }));
        }
      }
    };
  }

  /** The prompts not yet answered, the one shown first, then the queue in order. */
  pending(): PendingRequest[] {
    const out: PendingRequest[] = [];
    if (this.#active?.state === "shown" && this.#active.request) {
      out.push({ ...this.#active.request, waiting: identicalCount(this.#active) });
    }
    for (const g of this.#queue) {
      if (g.waiters.length > 0) out.push(this.#snapshot(g, g.waiters[0]));
    }
    return out;
  }

  /**
   * Denies everything pending (source "default", reason "shutting down") and
   * stops prompting. Resolves once the answers being applied have saved
   * their rules (or given up, after `saveTimeoutMs`): an "always" answer
   * given just before shutdown is not lost.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    const groups = [...this.#groups.values()];
    this.#groups.clear();
    this.#queue.length = 0;
    this.#active = undefined;
    for (const g of groups) {
      if (g.state === "shown") this.#closePrompt(g, { kind: "shutdown" }, undefined);
      for (const w of [...g.waiters]) this.#finish(w, shuttingDown());
      g.waiters.length = 0;
    }
    this.#prompters.clear();
    this.#closing = Promise.allSettled([...this.#settling]).then(() => {});
    return this.#closing;
  }

  // --- internals ---------------------------------------------------------

  #emit(e: BrokerEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // A listener's bug must not break decisions.
      }
    }
  }

  /** The rules' final decision, or their reason for asking. */
  #byRules(input: DecideInput): { final: FinalDecision } | { askReason: string } {
    let d: RuleDecision;
    try {
      d = this.#rules.current.decide(input.target);
    } catch (err) {
      // Fail closed: a rules engine bug never lets a request through.
      return { final: { action: "deny", source: "error", reason: `rules error: ${message(err)}` } };
    }
    if (d.action === "ask") return { askReason: d.reason };
    const final: FinalDecision = { action: d.action, source: "rule", reason: d.reason };
    if (d.rule) final.rule = d.rule;
    return { final };
  }

  /**
   * {@linkcode #byRules} for a waiter, again only when the rules changed
   * since it was last decided: requests pile up behind a prompt (thousands,
   * from a hostile client), and deciding each again on every prompt shown
   * and every answer cost up to milliseconds apiece on the one thread.
   */
  #recheck(w: Waiter): { final: FinalDecision } | { askReason: string } {
    const rules = this.#rules.current;
    if (w.askedBy === rules) return { askReason: w.askReason };
    const ruled = this.#byRules(w.input);
    if ("askReason" in ruled) {
      w.askReason = ruled.askReason;
      w.askedBy = rules;
    }
    return ruled;
  }

  /**
   * The policy denial for a request that would open one prompt too many for
   * its client IP, or undefined when it may wait (it joins an open prompt, or
   * its client is under the cap).
   */
  #overPromptCap(input: DecideInput): FinalDecision | undefined {
    if (this.#groups.has(keyOf(input.target))) return undefined;
    const ip = clientIp(input.client);
    let open = 0;
    for (const g of this.#groups.values()) {
      if (g.state === "settling") continue;
      if (g.waiters.some((w) => !w.done && clientIp(w.input.client) === ip)) open++;
    }
    if (open < this.#maxPerClient) return undefined;
    return { action: "deny", source: "policy", reason: `too many pending prompts from ${ip}` };
  }

  #armTimer(w: Waiter): void {
    clearTimeout(w.timer);
    const left = Math.max(0, w.deadline - Date.now());
    w.timer = setTimeout(() => this.#withdraw(w, this.#timedOut(), "timeout"), left);
  }

  #timedOut(): FinalDecision {
    const action = this.#timeoutAction;
    const reason = timeoutReason(this.#timeoutMs) + (action === "allow" ? ", default: allow" : "");
    return { action, source: "timeout", reason };
  }

  /** Puts a waiter into its host:port group, creating (and queueing) the group if needed. */
  #join(w: Waiter, front: boolean): void {
    const key = keyOf(w.input.target);
    let g = this.#groups.get(key);
    if (!g) {
      g = {
        id: String(++this.#seq),
        key,
        waiters: [],
        state: "queued",
        asks: new Map(),
        seen: new Map(),
      };
      this.#groups.set(key, g);
      if (front) this.#queue.unshift(g);
      else this.#queue.push(g);
    }
    g.waiters.push(w);
  }

  #groupOf(w: Waiter): Group | undefined {
    const g = this.#groups.get(keyOf(w.input.target));
    return g && g.waiters.includes(w) ? g : undefined;
  }

  /** Resolves one waiter and removes it from its group; closes the prompt if nobody is left. */
  #withdraw(w: Waiter, d: FinalDecision, kind: "timeout" | "withdrawn"): void {
    if (w.done) return;
    const g = this.#groupOf(w);
    this.#finish(w, d);
    if (!g) return;
    g.waiters.splice(g.waiters.indexOf(w), 1);
    if (g.waiters.length > 0 || g.state === "settling") return;
    this.#groups.delete(g.key);
    if (g.state === "queued") {
      this.#queue.splice(this.#queue.indexOf(g), 1);
      return;
    }
    this.#active = undefined;
    this.#closePrompt(g, { kind }, undefined);
    this.#pump();
  }

  #finish(w: Waiter, d: FinalDecision): void {
    if (w.done) return;
    w.done = true;
    clearTimeout(w.timer);
    if (w.onAbort) w.signal?.removeEventListener("abort", w.onAbort);
    w.resolve(d);
  }

  /** Shows the next queued prompt unless one is shown already. */
  #pump(): void {
    while (!this.#closed && !this.#active && this.#queue.length > 0) {
      const g = this.#queue.shift()!;
      // Rules may have changed while it queued (another terminal ran `rules add`),
      // and a request whose time is up is not worth showing.
      const now = Date.now();
      for (const w of [...g.waiters]) {
        const ruled = this.#recheck(w);
        if ("final" in ruled || w.deadline <= now) {
          const final = "final" in ruled ? ruled.final : this.#timedOut();
          this.#finish(w, final);
          g.waiters.splice(g.waiters.indexOf(w), 1);
        }
      }
      if (g.waiters.length === 0) {
        this.#groups.delete(g.key);
        continue;
      }
      g.state = "shown";
      g.request = this.#snapshot(g, g.waiters[0]);
      this.#active = g;
      this.#emit({ type: "prompt-shown", request: g.request, prompters: this.#prompters.size });
      for (const p of this.#prompters) this.#ask(g, p);
    }
  }

  #snapshot(g: Group, w: Waiter): PendingRequest {
    const t = w.input.target;
    const req: PendingRequest = {
      id: g.id,
      host: t.host,
      port: t.port,
      scheme: t.scheme,
      method: w.input.method,
      client: w.input.client,
      reason: w.askReason,
      waiting: 0,
    };
    if (t.path !== undefined) req.path = t.path;
    if (w.url !== undefined) req.url = w.url;
    req.waiting = g.waiters.filter((o) => sameAs(o, req)).length;
    return req;
  }

  #ask(g: Group, p: Prompter): void {
    if (g.asks.has(p)) return;
    const ac = new AbortController();
    g.asks.set(p, ac);
    Promise.resolve()
      .then(() => {
        // Closed before this turn came (its last client left in the same turn
        // as the prompt before it): never shown, as a socket prompter would
        // not hear that it closed.
        if (ac.signal.aborted) throw ac.signal.reason;
        // What the prompter is told is counted now, and that is what an
        // "allow once" from it releases.
        const request = { ...g.request!, waiting: identicalCount(g) };
        g.seen.set(p, new Set(g.waiters.filter((w) => !w.done && sameAs(w, g.request!))));
        return p.ask(request, ac.signal);
      })
      .then(
        (answer) => {
          if (ac.signal.aborted || this.#active !== g || g.state !== "shown") return;
          if (!isPromptAnswer(answer) || !answerAvailable(g.request!, answer)) {
            g.asks.delete(p);
            this.#emit({
              type: "prompter-failed",
              prompter: nameOf(p),
              error: `answer ${JSON.stringify(answer)} is not offered for this request`,
            });
            return;
          }
          const settling = this.#settle(g, p, answer);
          this.#settling.add(settling);
          settling.finally(() => this.#settling.delete(settling));
        },
        (err) => {
          if (ac.signal.aborted) return;
          if (g.asks.get(p) === ac) g.asks.delete(p);
          this.#emit({ type: "prompter-failed", prompter: nameOf(p), error: message(err) });
        },
      );
  }

  /** Aborts every open ask of a prompt except the winner's, and tells listeners. */
  #closePrompt(g: Group, outcome: PromptOutcome, winner: Prompter | undefined): void {
    const reason = new PromptClosedError(outcome);
    for (const [p, ac] of g.asks) if (p !== winner) ac.abort(reason);
    g.asks.clear();
    for (const p of g.seen.keys()) if (p !== winner) g.seen.delete(p);
    if (g.request) this.#emit({ type: "prompt-closed", request: g.request, outcome });
  }

  /**
   * `rules.add`, bounded by `saveTimeoutMs`; a late save is still reported.
   * An allow rule never replaces a deny rule (`keepDeny`).
   */
  #save(pattern: string, action: StoredAction): Promise<unknown> {
    const saving = this.#rules.add(pattern, action, { keepDeny: action.startsWith("allow") });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        saving.then(
          () => this.#emit({ type: "rule-saved", pattern, action }),
          () => {},
        );
        reject(new Error(`still saving after ${this.#saveTimeoutMs}ms`));
      }, this.#saveTimeoutMs);
    });
    return Promise.race([saving, late]).finally(() => clearTimeout(timer));
  }

  /**
   * Applies an answer to the requests waiting on the prompt: see the module
   * documentation for which requests each answer releases.
   */
  async #settle(g: Group, winner: Prompter, answer: PromptAnswer): Promise<void> {
    g.state = "settling";
    this.#active = undefined;
    // Answered requests are no longer subject to the timeout.
    for (const w of g.waiters) clearTimeout(w.timer);
    this.#closePrompt(g, { kind: "answered", by: nameOf(winner), answer }, winner);
    this.#pump();

    const req = g.request!;
    const verdict = answer.startsWith("allow") ? "allow" : "deny";
    let reason = `prompt: ${answer}`;
    /** A deny rule the answer's rule would have replaced: it stays, and decides. */
    let kept: Rule | undefined;
    if (answer !== "allow-once" && answer !== "deny-once") {
      const pattern = answer.endsWith("-url") ? req.url! : rulePattern(req);
      try {
        const result = await this.#save(pattern, answer);
        const stored = (result as { rule?: { pattern?: unknown } } | undefined)?.rule?.pattern;
        const saved = typeof stored === "string" ? stored : pattern;
        reason += ` (saved rule ${JSON.stringify(saved)})`;
        this.#emit({ type: "rule-saved", pattern: saved, action: answer });
      } catch (err) {
        if (err instanceof DenyRuleKeptError) {
          kept = err.rule;
          const error = `the deny rule ${JSON.stringify(kept.pattern)}: ${kept.action} was ` +
            `added meanwhile; it stays and decides`;
          this.#emit({
            type: "rule-save-failed",
            pattern,
            action: answer,
            error,
            kept: { pattern: kept.pattern, action: kept.action },
          });
        } else {
          reason += ` (rule not saved: ${message(err)})`;
          this.#emit({ type: "rule-save-failed", pattern, action: answer, error: message(err) });
        }
      }
    }
    // Requests that joined while the rule was being saved are in g.waiters too.
    if (this.#groups.get(g.key) === g) this.#groups.delete(g.key);
    const waiters = g.waiters.splice(0).filter((w) => !w.done);
    const decision: FinalDecision = { action: verdict, source: "prompt", reason };
    if (answer === "deny-once" || answer === "deny-domain") {
      // Denying is always safe.
      for (const w of waiters) this.#finish(w, decision);
      return;
    }
    /**
     * What an allow answer gives a request it covers: the answer, unless a
     * rule in force now denies the request (perhaps added by another terminal
     * while the prompt was open: an exact URL rule beats a host rule just
     * saved). When the answer's rule was not saved because of a deny rule,
     * the rules decide, and that deny rule if they still ask.
     */
    const allowed = (w: Waiter): FinalDecision => {
      const ruled = this.#recheck(w);
      if (kept) return "final" in ruled ? ruled.final : ruleDecision(kept);
      return "final" in ruled && ruled.final.action === "deny" ? ruled.final : decision;
    };
    if (answer === "allow-domain") {
      // The operator's choice for every request to the host.
      for (const w of waiters) this.#finish(w, allowed(w));
      return;
    }
    // allow-once and the URL answers cover only what the operator saw; every
    // other request is decided again against the (possibly updated) rules, and
    // asks again if still uncovered. "Once" covers only the identical requests
    // the winning prompter was shown (counted): later ones are asked about.
    const shown = answer === "allow-once" ? g.seen.get(winner) : undefined;
    const again: Waiter[] = [];
    for (const w of waiters) {
      if (sameAs(w, req) && (!shown || shown.has(w))) {
        this.#finish(w, answer === "deny-url" ? decision : allowed(w));
        continue;
      }
      const ruled = this.#recheck(w);
      if ("final" in ruled) this.#finish(w, ruled.final);
      else if (this.#closed) this.#finish(w, shuttingDown());
      else again.push(w);
    }
    // They have waited longest: their new prompt goes to the front of the queue.
    for (const w of again) {
      this.#armTimer(w);
      this.#join(w, true);
    }
    this.#pump();
  }
}

/** The reason of a timeout decision, e.g. `no answer within 60s`. */
export function timeoutReason(timeoutMs: number): string {
  const text = timeoutMs % 1000 === 0 ? `${timeoutMs / 1000}s` : `${timeoutMs}ms`;
  return `no answer within ${text}`;
}

/** The group key: one prompt per host and port. */
function keyOf(t: RequestTarget): string {
  return `${t.host}:${t.port}`;
}

/**
 * True when a waiting request is identical to the one shown, as far as the
 * operator could see: same method, scheme and URL (a tunnel has no URL, and
 * its host and port are the group's).
 */
function sameAs(w: Waiter, shown: PendingRequest): boolean {
  return w.input.method === shown.method && w.input.target.scheme === shown.scheme &&
    w.url === shown.url;
}

/** How many requests waiting on a group are identical to its shown request. */
function identicalCount(g: Group): number {
  const shown = g.request;
  if (!shown) return g.waiters.length;
  return g.waiters.filter((w) => !w.done && sameAs(w, shown)).length;
}

/**
 * The pattern an allow-domain/deny-domain answer saves: the host as shown,
 * with its port when not the scheme's default. An IP literal or a localhost
 * name always gets its port: a rule naming one lifts destination protection,
 * and that exemption must be no wider than the destination the operator saw.
 */
function rulePattern(req: PendingRequest): string {
  return isFixedAddressHost(req.host)
    ? formatAuthority(req.host, req.port)
    : formatAuthority(req.host, req.port, req.scheme);
}

/** The IP of a client address `ip:port` or `[ipv6]:port`. */
function clientIp(client: string): string {
  if (client.startsWith("[")) {
    const end = client.indexOf("]");
    return end > 0 ? client.slice(0, end + 1) : client;
  }
  const colon = client.lastIndexOf(":");
  return colon > 0 && client.indexOf(":") === colon ? client.slice(0, colon) : client;
}

function urlOf(t: RequestTarget): string | undefined {
  if (t.path === undefined) return undefined;
  return `${t.scheme}://${formatAuthority(t.host, t.port, t.scheme)}${t.path}`;
}

function nameOf(p: Prompter): string {
  return (p as NamedPrompter).name ?? "prompter";
}

/** The decision of a rule, worded as the rules engine words it. */
function ruleDecision(rule: Rule): FinalDecision {
  return {
    action: rule.verdict,
    source: "rule",
    reason: `rule "${rule.pattern}": ${rule.action}`,
    rule,
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function shuttingDown(): FinalDecision {
  return { action: "deny", source: "default", reason: "shutting down" };
}

function clientGone(): FinalDecision {
  return {
    action: "deny",
    source: "error",
    reason: "client disconnected while waiting for an answer",
  };
}
