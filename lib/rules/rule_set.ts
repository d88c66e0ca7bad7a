/**
 * Validated rules and the decision for one request.
 * @module
 */

import { isIpLiteral, normaliseHost } from "../net/host.ts";
import { RuleError } from "./errors.ts";
import { canonicalPathQuery, type ParsedPattern, parsePattern } from "./pattern.ts";
import {
  type RequestTarget,
  type Rule,
  type RuleDecision,
  STORED_ACTIONS,
  type StoredAction,
} from "./types.ts";

/** The valid actions, for messages. */
export const ACTION_LIST = "allow-domain, deny-domain, allow-url, deny-url, allow or deny";

/**
 * Validates one pattern/action pair and returns the rule.
 *
 * The short forms `allow`/`deny` take their kind from the pattern. A long form
 * must agree with it: `allow-url`/`deny-url` need a URL pattern, and
 * `allow-domain`/`deny-domain` need a host, wildcard or `*` pattern; anything
 * else is rejected rather than guessed.
 *
 * @throws {RuleError} naming the pattern and what is wrong.
 */
export function makeRule(pattern: string, action: string): Rule {
  return makeParsedRule(pattern, action).rule;
}

/** {@linkcode makeRule} that also returns the parsed pattern. */
export function makeParsedRule(
  pattern: string,
  action: string,
): { rule: Rule; parsed: ParsedPattern } {
  if (!(STORED_ACTIONS as readonly string[]).includes(action)) {
    throw new RuleError(`unknown action "${action}" for "${pattern}"`, "action", ACTION_LIST);
  }
  const parsed = parsePattern(pattern);
  const stored = action as StoredAction;
  const isUrl = parsed.kind === "url";
  if (!isUrl && (stored === "allow-url" || stored === "deny-url")) {
    const verb = stored.slice(0, stored.indexOf("-"));
    throw new RuleError(
      `action "${stored}" for "${pattern}" needs a URL pattern like "https://${
        pattern.replace(/^\*\.?/, "") || "example.com"
      }/path"; use "${verb}-domain" or "${verb}" for a host`,
      "action",
    );
  }
  if (isUrl && (stored === "allow-domain" || stored === "deny-domain")) {
    const verb = stored.slice(0, stored.indexOf("-"));
    throw new RuleError(
      `action "${stored}" for "${pattern}" needs a host pattern like "${parsed.host}"; use "${verb}-url" or "${verb}" for a URL`,
      "action",
    );
  }
  const rule: Rule = {
    pattern,
    action: stored,
    kind: parsed.kind,
    verdict: stored.startsWith("allow") ? "allow" : "deny",
  };
  return { rule, parsed };
}

/** Host-level rules of one pattern: the port-less one and port-specific ones. */
interface PortRules {
  any?: Rule;
  byPort: Map<number, Rule>;
}

function pick(rules: PortRules | undefined, port: number): Rule | undefined {
  if (rules === undefined) return undefined;
  return rules.byPort.get(port) ?? rules.any;
}

function put(map: Map<string, PortRules>, key: string, port: number | undefined, rule: Rule) {
  let entry = map.get(key);
  if (entry === undefined) map.set(key, entry = { byPort: new Map() });
  if (port === undefined) entry.any = rule;
  else entry.byPort.set(port, rule);
}

const OTHER_SCHEME = { http: "https", https: "http" } as const;
const DEFAULT_PORT = { http: 80, https: 443 } as const;

function urlKey(scheme: string, host: string, port: number, path: string, query: string): string {
  return `${scheme}://${host}:${port}${path}?${query}`;
}

/** Query part of a loose key that matches any query. */
const ANY_QUERY = "\0any";

/**
 * An immutable, indexed set of validated rules.
 *
 * {@linkcode RuleSet.decide} applies the precedence, most specific first:
 *
 * 1. an exact URL rule (only when the request's path is known);
 * 2. an exact host rule (`github.com`, `10.0.0.1`, `[::1]`);
 * 3. the longest matching wildcard (`*.api.github.com` before `*.github.com`);
 * 4. the catch-all `*`;
 * 5. no rule: the answer is `ask`.
 *
 * Within steps 2-4, a rule with a port (`example.com:8443`) beats the same
 * pattern without one; a pattern without a port matches every port.
 *
 * URL rules compare scheme, host, port, path and query after canonicalising
 * both sides (see `canonicalPathQuery`). Two deliberate widenings make a
 * `deny` hard to dodge, while an `allow` stays exact:
 * - a deny URL rule without a query also denies that path with any query;
 * - a deny URL rule on the scheme's default port also denies the same URL
 *   over the other scheme on its default port (`https://h/x` denies `http://h/x`).
 * A rule that matches exactly (same scheme, same query) wins over a widened deny.
 */
export class RuleSet {
  /** No rules: every request is `ask`. */
  static readonly empty: RuleSet = new RuleSet([]);

  /** The rules in file order. */
  readonly rules: readonly Rule[];

  #hosts = new Map<string, PortRules>();
  #wildcards = new Map<string, PortRules>();
  #any: PortRules = { byPort: new Map() };
  /** Exact URL rules by urlKey, query "" for no query. */
  #urlExact = new Map<string, Rule>();
  /** Widened deny URL rules (see class doc) by urlKey, query ANY_QUERY for any query. */
  #urlDeny = new Map<string, Rule>();
  /** `host:port` pairs that some URL rule names. */
  #urlHostPorts = new Set<string>();

  /**
   * Indexes rules. Each rule is validated again, so a hand-built rule cannot
   * smuggle in an unparsed pattern. When two rules have the same meaning, the
   * later wins (`parseRules` reports such duplicates as problems).
   *
   * @throws {RuleError} when a rule is invalid.
   */
  constructor(rules: readonly Rule[]) {
    this.rules = Object.freeze([...rules]);
    const crossScheme: Array<[Extract<ParsedPattern, { kind: "url" }>, Rule]> = [];
    for (const rule of rules) {
      const { parsed } = makeParsedRule(rule.pattern, rule.action);
      switch (parsed.kind) {
        case "any":
          if (parsed.port === undefined) this.#any.any = rule;
          else this.#any.byPort.set(parsed.port, rule);
          break;
        case "host":
          put(this.#hosts, parsed.host, parsed.port, rule);
          break;
        case "wildcard":
          put(this.#wildcards, parsed.suffix, parsed.port, rule);
          break;
        case "url": {
          const { scheme, host, port, path, query } = parsed;
          this.#urlExact.set(urlKey(scheme, host, port, path, query ?? ""), rule);
          this.#urlHostPorts.add(`${host}:${port}`);
          if (rule.verdict === "deny") {
            this.#urlDeny.set(urlKey(scheme, host, port, path, query ?? ANY_QUERY), rule);
            if (port === DEFAULT_PORT[scheme]) crossScheme.push([parsed, rule]);
          }
          break;
        }
      }
    }
    // Registered after all same-scheme entries so those win the reason.
    for (const [{ scheme, host, path, query }, rule] of crossScheme) {
      const other = OTHER_SCHEME[scheme];
      const key = urlKey(other, host, DEFAULT_PORT[other], path, query ?? ANY_QUERY);
      if (!this.#urlDeny.has(key)) this.#urlDeny.set(key, rule);
      this.#urlHostPorts.add(`${host}:${DEFAULT_PORT[other]}`);
    }
  }

  /**
   * Decides one request; see the class documentation for the precedence.
   * The host is normalised again here (cheap, and a caller that forgot cannot
   * open a hole); an unusable host or port is denied.
   */
  decide(target: RequestTarget): RuleDecision {
    let host: string;
    try {
      host = normaliseHost(target.host);
    } catch {
      return { action: "deny", reason: `invalid host "${target.host}"` };
    }
    const port = target.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return { action: "deny", reason: `invalid port ${port}` };
    }

    // 1. Exact URL.
    if (target.path !== undefined && this.#urlHostPorts.has(`${host}:${port}`)) {
      let rule: Rule | undefined;
      try {
        rule = this.#matchUrl(target.scheme, host, port, target.path);
      } catch {
        return { action: "deny", reason: `invalid path "${target.path.slice(0, 100)}"` };
      }
      if (rule) return decision(rule);
    }
    // 2. Exact host.
    const exact = pick(this.#hosts.get(host), port);
    if (exact) return decision(exact);
    // 3. Longest wildcard: try suffixes from the longest (drop one label at a time).
    //    The apex itself is never tried, and IP literals have no subdomains.
    if (this.#wildcards.size > 0 && !isIpLiteral(host)) {
      for (let dot = host.indexOf("."); dot >= 0; dot = host.indexOf(".", dot + 1)) {
        const rule = pick(this.#wildcards.get(host.slice(dot + 1)), port);
        if (rule) return decision(rule);
      }
    }
    // 4. Catch-all.
    const any = pick(this.#any, port);
    if (any) return decision(any);
    // 5. Nobody said anything: ask.
    return { action: "ask", reason: "no rule" };
  }

  /**
   * True when some URL rule names this host and port, so a CONNECT tunnel to it
   * must be intercepted to see the path instead of being decided by host alone.
   */
  hasUrlRulesFor(host: string, port: number): boolean {
    if (this.#urlHostPorts.size === 0) return false;
    let h: string;
    try {
      h = normaliseHost(host);
    } catch {
      return false;
    }
    return this.#urlHostPorts.has(`${h}:${port}`);
  }

  #matchUrl(scheme: "http" | "https", host: string, port: number, raw: string): Rule | undefined {
    const { path, query } = canonicalPathQuery(raw);
    const q = query ?? "";
    return this.#urlExact.get(urlKey(scheme, host, port, path, q)) ??
      this.#urlDeny.get(urlKey(scheme, host, port, path, q)) ??
      this.#urlDeny.get(urlKey(scheme, host, port, path, ANY_QUERY));
  }
}

function decision(rule: Rule): RuleDecision {
  return { action: rule.verdict, reason: `rule "${rule.pattern}": ${rule.action}`, rule };
}
