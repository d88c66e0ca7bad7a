/**
 * Validated rules and the decision for one request.
 * @module
 */

import { embeddedIPv4, parseIPv6 } from "../net/guard.ts";
import { isIpLiteral, normaliseHost } from "../net/host.ts";
import { RuleError } from "./errors.ts";
import {
  canonicalPathQuery,
  forwardedPathQuery,
  loosePath,
  type ParsedPattern,
  parsePattern,
  patternIdentity,
  slashReadings,
} from "./pattern.ts";
import {
  type RequestTarget,
  type Rule,
  type RuleDecision,
  STORED_ACTIONS,
  type StoredAction,
} from "./types.ts";

/** The valid actions, for messages. */
export const ACTION_LIST =
  "allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough";

/** Something worth telling the user about a valid rule set; never an error. */
export interface RuleWarning {
  /** The rule the warning is about (where `rules check` points). */
  rule: Rule;
  /** The other rule involved, if any. */
  related?: Rule;
  message: string;
}

/**
 * Validates one pattern/action pair and returns the rule.
 *
 * The short forms `allow`/`deny` take their kind from the pattern. A long form
 * must agree with it: `allow-url`/`deny-url` need a URL pattern, and
 * `allow-domain`/`deny-domain` need a host, wildcard or `*` pattern; anything
 * else is rejected rather than guessed. `passthrough` needs a host or wildcard
 * pattern (optionally with a port): a URL cannot be relayed undecrypted on its
 * own, and `*` would silently turn interception off for everything.
 *
 * @throws {RuleError} naming the pattern and what is wrong.
 */
export function makeRule(pattern: string, action: string): Rule {
  return makeParsedRule(pattern, action).rule;
}

/**
 * {@linkcode makeRule} that also returns the parsed pattern.
 *
 * The parsed pattern is what the rule means, so `patternIdentity` of it says
 * which rules are the same rule (a rules file holds one of each). For an
 * allow URL rule (`allow-url`, `allow` on a URL) `path` and `query` are not
 * canonical but the forwarded form the rule matches exactly
 * (`forwarded`, split at the first `?`): `https://h/a/b` and `https://h/a//b`
 * allow different requests, so they are two rules. A deny URL rule keeps the
 * canonical form it matches every spelling with. An allow and a deny URL rule
 * are the same rule when the allow's forwarded form is the deny's canonical
 * form.
 */
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
  if (stored === "passthrough") passthroughProblem(pattern, parsed);
  const rule: Rule = {
    pattern,
    action: stored,
    kind: parsed.kind,
    verdict: stored === "passthrough" || stored.startsWith("allow") ? "allow" : "deny",
  };
  if (parsed.kind === "url" && rule.verdict === "allow") {
    // The proxy refuses such requests (400), so the rule would never match;
    // and with the identity of the slashed URL it would replace a deny rule
    // for that URL ("https://h/a\\b" allow replacing "https://h/a/b" deny).
    if (parsed.forwarded === undefined) {
      throw new RuleError(
        `invalid pattern "${pattern}": an allow URL rule cannot contain a backslash: ` +
          `the proxy refuses such requests, so it would never match (write "/")`,
        "pattern",
      );
    }
    return { rule, parsed: { ...parsed, ...splitForwarded(parsed.forwarded) } };
  }
  return { rule, parsed };
}

/**
 * An allow URL rule's `path` and `query`: its forwarded form, split at the
 * first `?` (an empty query stays `""`: `/a?` is forwarded as is, so it is
 * another URL than `/a`).
 */
function splitForwarded(forwarded: string): { path: string; query?: string } {
  const q = forwarded.indexOf("?");
  return q < 0
    ? { path: forwarded }
    : { path: forwarded.slice(0, q), query: forwarded.slice(q + 1) };
}

/** Rejects `passthrough` on a pattern it cannot apply to. */
function passthroughProblem(pattern: string, parsed: ParsedPattern): void {
  if (parsed.kind === "url") {
    throw new RuleError(
      `action "passthrough" for "${pattern}" needs a host pattern like "${parsed.host}": ` +
        `HTTPS is relayed undecrypted per host, never per URL`,
      "action",
    );
  }
  if (parsed.kind === "any") {
    throw new RuleError(
      `action "passthrough" cannot apply to "${pattern}": it would allow everything and ` +
        `decrypt nothing; name the hosts ("*.example.com": "passthrough"), or run with ` +
        `--no-intercept`,
      "action",
    );
  }
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

/** Key of an allow URL rule: the path and query as forwarded (`forwardedPathQuery`). */
function allowKey(scheme: string, host: string, port: number, forwarded: string): string {
  return `${scheme}://${host}:${port}${forwarded}`;
}

function hostPortKey(host: string, port: number): string {
  return `${host}:${port}`;
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
 * URL rules compare scheme, host and port, then the path and query:
 * - a deny URL rule compares them loosely, after canonicalising both sides
 *   (`canonicalPathQuery`: merged slashes, `%3B` is `;`, `+` is `%20` in a
 *   query, ...), so no other spelling of the URL dodges it; the path is also
 *   read with `%2F` decoded to `/` (as nginx and Python read it), `%5C`, and
 *   both (`slashReadings`);
 * - an allow URL rule compares them exactly as the proxy forwards them
 *   (`forwardedPathQuery`, i.e. `normalisePath`: dot segments resolved,
 *   unreserved escapes decoded, other escapes upper-cased), so it allows only what it
 *   names and the origin receives exactly that: `https://h/a/b` does not
 *   allow `/a//b` or `//a/b`, `https://h/a;b` does not allow `/a%3Bb`,
 *   `https://h/s?q=a%20b` does not allow `?q=a+b` (servers may treat those
 *   differently); such requests fall through to host rules or are asked about.
 *
 * Deliberate widenings make a `deny` harder still to dodge:
 * - a deny URL rule without a query also denies that path with any query;
 * - a deny URL rule on the scheme's default port also denies the same URL
 *   over the other scheme on its default port (`https://h/x` denies `http://h/x`);
 * - last, a deny URL rule also matches when the `loosePath` of the path
 *   matches its own: what servers other than nginx serve as that path
 *   (`;params` and `..;` as Tomcat reads them, trailing slashes, dots and
 *   white space, letter case).
 * A deny that matches exactly (same scheme, same canonical query) comes
 * first; then an allow that matches the forwarded form; then a widened deny.
 * (A deny and an allow that mean the same URL, the allow's forwarded form
 * being the deny's canonical form, are one rule: the later one. Two allows
 * are one rule only when their forwarded forms are equal.)
 *
 * A `passthrough` rule is a host-level rule that allows, like `allow-domain`,
 * and takes part in the same precedence. {@linkcode RuleSet.isPassthrough}
 * says whether a CONNECT tunnel is relayed undecrypted: when the most specific
 * host-level rule for its host and port is a `passthrough` rule, and no deny
 * URL rule names that host and port (a deny must stay enforceable, so it
 * keeps the tunnel decrypted: fail closed).
 */
export class RuleSet {
  /** No rules: every request is `ask`. */
  static readonly empty: RuleSet = new RuleSet([]);

  /** The rules in file order. */
  readonly rules: readonly Rule[];

  #hosts = new Map<string, PortRules>();
  #wildcards = new Map<string, PortRules>();
  #any: PortRules = { byPort: new Map() };
  /** Deny URL rules by urlKey (canonical form), query "" for no query. */
  #urlExact = new Map<string, Rule>();
  /** Allow URL rules by allowKey (the forwarded form). */
  #urlAllow = new Map<string, Rule>();
  /**
   * Where each URL rule is indexed, by its `patternIdentity` (see
   * {@linkcode makeParsedRule}): the later of two rules with the same identity wins.
   */
  #urlByIdentity = new Map<string, { exact?: string; allow?: string }>();
  /** Widened deny URL rules (see class doc) by urlKey, query ANY_QUERY for any query. */
  #urlDeny = new Map<string, Rule>();
  /** Deny URL rules by urlKey of their `loosePath`, query ANY_QUERY for any query. */
  #urlLoose = new Map<string, Rule>();
  /** `host:port` pairs that some URL rule names. */
  #urlHostPorts = new Set<string>();
  /** `host:port` pairs where a deny URL rule (or its widening) can match an https request. */
  #httpsDenyHostPorts = new Map<string, Rule>();
  /** Whether any rule is a passthrough rule (the common case, none, stays cheap). */
  #hasPassthrough = false;
  /** https URL rules (and widened http denies) with the host and port they apply to. */
  #httpsUrlRules: Array<{ rule: Rule; host: string; port: number }> = [];
  /** Allow URL rules with the request each one allows (for `warnings`). */
  #allowUrlRules: Array<{ rule: Rule; target: RequestTarget & { path: string } }> = [];

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
      if (rule.action === "passthrough") this.#hasPassthrough = true;
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
          const { scheme, host, port, path, query, forwarded } = parsed;
          const identity = patternIdentity(parsed);
          // The later of two rules with the same meaning wins, whatever their verdicts.
          const earlier = this.#urlByIdentity.get(identity);
          if (earlier?.exact !== undefined) this.#urlExact.delete(earlier.exact);
          if (earlier?.allow !== undefined) this.#urlAllow.delete(earlier.allow);
          this.#urlByIdentity.delete(identity);
          if (rule.verdict === "deny") {
            const key = urlKey(scheme, host, port, path, query ?? "");
            this.#urlExact.set(key, rule);
            this.#urlByIdentity.set(identity, { exact: key });
          } else if (forwarded !== undefined) {
            const key = allowKey(scheme, host, port, forwarded);
            this.#urlAllow.set(key, rule);
            this.#allowUrlRules.push({ rule, target: { scheme, host, port, path: forwarded } });
            this.#urlByIdentity.set(identity, { allow: key });
          }
          this.#urlHostPorts.add(`${host}:${port}`);
          if (scheme === "https") this.#httpsUrlRules.push({ rule, host, port });
          if (rule.verdict === "deny") {
            this.#urlDeny.set(urlKey(scheme, host, port, path, query ?? ANY_QUERY), rule);
            // `%2F`/`%5C` in the rule: servers that decode them (nginx) serve
            // the slashed path for it, so that is denied too.
            for (const p of slashedPaths(path)) {
              const k = urlKey(scheme, host, port, p, query ?? ANY_QUERY);
              if (!this.#urlDeny.has(k)) this.#urlDeny.set(k, rule);
            }
            this.#noteLoose(scheme, host, port, path, query, rule);
            // An `http://` one too: its port's CONNECT tunnels could carry
            // plain HTTP after a token ClientHello unless they are decrypted.
            this.#noteHttpsDeny(host, port, rule);
            if (port === DEFAULT_PORT[scheme]) crossScheme.push([parsed, rule]);
          }
          break;
        }
      }
    }
    // Registered after all same-scheme entries so those win the reason.
    for (const [{ scheme, host, path, query }, rule] of crossScheme) {
      const other = OTHER_SCHEME[scheme];
      for (const p of [path, ...slashedPaths(path)]) {
        const key = urlKey(other, host, DEFAULT_PORT[other], p, query ?? ANY_QUERY);
        if (!this.#urlDeny.has(key)) this.#urlDeny.set(key, rule);
      }
      this.#noteLoose(other, host, DEFAULT_PORT[other], path, query, rule);
      this.#urlHostPorts.add(`${host}:${DEFAULT_PORT[other]}`);
      if (other === "https") {
        this.#httpsUrlRules.push({ rule, host, port: DEFAULT_PORT.https });
        this.#noteHttpsDeny(host, DEFAULT_PORT.https, rule);
      }
    }
  }

  /**
   * Indexes a deny URL rule by the `loosePath` of its path and of its
   * slashed reading (the first rule for a key keeps it).
   */
  #noteLoose(
    scheme: string,
    host: string,
    port: number,
    path: string,
    query: string | undefined,
    rule: Rule,
  ): void {
    for (const p of [path, ...slashedPaths(path)]) {
      const key = urlKey(scheme, host, port, loosePath(p), query ?? ANY_QUERY);
      if (!this.#urlLoose.has(key)) this.#urlLoose.set(key, rule);
    }
  }

  #noteHttpsDeny(host: string, port: number, rule: Rule): void {
    const key = hostPortKey(host, port);
    if (!this.#httpsDenyHostPorts.has(key)) this.#httpsDenyHostPorts.set(key, rule);
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
    if (target.path !== undefined && this.#urlHostPorts.size > 0) {
      let rule: Rule | undefined;
      try {
        if (this.#urlHostPorts.has(`${host}:${port}`)) {
          rule = this.#matchUrl(target.scheme, host, port, target.path);
        }
        // An IPv6 address that carries an IPv4 one reaches that host (see
        // below): a deny URL rule for the IPv4 host denies the URL there too.
        if (rule?.verdict !== "deny" && host.startsWith("[")) {
          const v4 = embeddedIPv4Host(host);
          if (v4 !== undefined && this.#urlHostPorts.has(`${v4}:${port}`)) {
            const v4Rule = this.#matchUrl(target.scheme, v4, port, target.path);
            if (v4Rule?.verdict === "deny") rule = v4Rule;
          }
        }
      } catch {
        return { action: "deny", reason: `invalid path "${target.path.slice(0, 100)}"` };
      }
      if (rule) return decision(rule);
    }
    // 2-4. Exact host, longest wildcard, catch-all.
    const rule = this.#hostRule(host, port);
    // An IPv6 address that carries an IPv4 one (NAT64 `64:ff9b::a.b.c.d`,
    // 6to4, IPv4-compatible) reaches that IPv4 host on networks that route
    // it: a rule naming the IPv4 host and denying it denies it too.
    if (host.startsWith("[") && rule?.verdict !== "deny") {
      const v4 = embeddedIPv4Host(host);
      const v4Rule = v4 === undefined ? undefined : pick(this.#hosts.get(v4), port);
      if (v4Rule?.verdict === "deny") return decision(v4Rule);
    }
    if (rule) return decision(rule);
    // 5. Nobody said anything: ask.
    return { action: "ask", reason: "no rule" };
  }

  /** Steps 2-4 of the precedence: the most specific host-level rule for a normalised host. */
  #hostRule(host: string, port: number): Rule | undefined {
    // 2. Exact host.
    const exact = pick(this.#hosts.get(host), port);
    if (exact) return exact;
    // 3. Longest wildcard: try suffixes from the longest (drop one label at a time).
    //    The apex itself is never tried, and IP literals have no subdomains.
    if (this.#wildcards.size > 0 && !isIpLiteral(host)) {
      for (let dot = host.indexOf("."); dot >= 0; dot = host.indexOf(".", dot + 1)) {
        const rule = pick(this.#wildcards.get(host.slice(dot + 1)), port);
        if (rule) return rule;
      }
    }
    // 4. Catch-all.
    return pick(this.#any, port);
  }

  /**
   * True when CONNECT tunnels to `host:port` are relayed without decryption
   * because of a `passthrough` rule: the most specific host-level rule for
   * them (exact host, then longest wildcard; a port-specific rule before a
   * port-less one) is a `passthrough` rule, and no deny URL rule names
   * `host:port` (see {@linkcode RuleSet.hasDenyUrlRulesFor}). So an exact
   * `"a.example.com": "deny-domain"` beats `"*.example.com": "passthrough"`,
   * and the tunnel is decided (denied) like any other.
   * An unusable host or port is never passthrough.
   */
  isPassthrough(host: string, port: number): boolean {
    if (!this.#hasPassthrough) return false;
    const h = normaliseOrUndefined(host);
    if (h === undefined || !Number.isInteger(port) || port < 1 || port > 65535) return false;
    return this.#hostRule(h, port)?.action === "passthrough" &&
      this.#httpsDenyFor(h, port) === undefined;
  }

  /**
   * True when a deny URL rule can match a request carried by a CONNECT tunnel
   * to `host:port`: an `https://` deny URL rule, the `https` twin of an
   * `http://` one on the default port, or an `http://` one on that very port
   * (an undecrypted tunnel relays whatever follows the ClientHello, plain
   * HTTP included). Such tunnels must be decrypted to enforce it, so they are
   * never passthrough: not by a rule, and not by `--passthrough`.
   */
  hasDenyUrlRulesFor(host: string, port: number): boolean {
    return this.denyUrlRuleFor(host, port) !== undefined;
  }

  /** A deny URL rule {@linkcode RuleSet.hasDenyUrlRulesFor} counts for `host:port`, if any. */
  denyUrlRuleFor(host: string, port: number): Rule | undefined {
    if (this.#httpsDenyHostPorts.size === 0) return undefined;
    const h = normaliseOrUndefined(host);
    return h === undefined ? undefined : this.#httpsDenyFor(h, port);
  }

  /**
   * The deny URL rule for a normalised `host:port` that keeps its tunnels
   * decrypted: one naming it, or, for an IPv6 address carrying an IPv4 one,
   * naming that IPv4 host (its deny URL rules apply there too, see `decide`).
   */
  #httpsDenyFor(host: string, port: number): Rule | undefined {
    if (this.#httpsDenyHostPorts.size === 0) return undefined;
    const rule = this.#httpsDenyHostPorts.get(hostPortKey(host, port));
    if (rule || !host.startsWith("[")) return rule;
    const v4 = embeddedIPv4Host(host);
    return v4 === undefined ? undefined : this.#httpsDenyHostPorts.get(hostPortKey(v4, port));
  }

  /**
   * Rule combinations that do not do what they seem to, for `rules check`,
   * `rules add` and the running proxy. The set stays valid and usable:
   * - a deny URL rule on a host:port whose host-level rule is `passthrough`:
   *   the deny wins, so that host:port is decrypted after all;
   * - an allow URL rule on a host:port that is passthrough: it never matches
   *   HTTPS (the tunnel is not decrypted), and the host is allowed anyway.
   */
  warnings(): RuleWarning[] {
    const out: RuleWarning[] = [];
    // An allow URL rule that a deny URL rule for the same URL in another
    // spelling (`/a%2Fb` next to a deny of `/a/b`) always beats.
    for (const { rule, target } of this.#allowUrlRules) {
      const d = this.decide(target);
      if (d.action !== "deny" || d.rule?.kind !== "url") continue;
      out.push({
        rule,
        related: d.rule,
        message:
          `URL rule "${rule.pattern}" never matches: the deny URL rule "${d.rule.pattern}" ` +
          `denies that URL too (a deny URL rule matches every spelling)`,
      });
    }
    if (!this.#hasPassthrough) return out;
    const seen = new Set<string>();
    for (const { rule, host, port } of this.#httpsUrlRules) {
      const hostRule = this.#hostRule(host, port);
      if (hostRule?.action !== "passthrough") continue;
      const where = hostPortKey(host, port);
      let message: string;
      if (rule.verdict === "deny") {
        message = `rule "${hostRule.pattern}": passthrough does not apply to ${where}: the deny ` +
          `URL rule "${rule.pattern}" needs its HTTPS decrypted, so ${where} is intercepted`;
      } else if (this.#httpsDenyFor(host, port) !== undefined) {
        continue; // intercepted for a deny: this allow can match
      } else {
        message = `URL rule "${rule.pattern}" never matches HTTPS: rule "${hostRule.pattern}": ` +
          `passthrough relays ${where} undecrypted (and allows every request to it)`;
      }
      if (seen.has(message)) continue;
      seen.add(message);
      out.push({ rule, related: hostRule, message });
    }
    return out;
  }

  /**
   * Deny URL rules whose host and port {@linkcode RuleSet.hasDenyUrlRulesFor}
   * reports, one per host:port, e.g. to explain why `--passthrough` does not
   * apply there.
   */
  httpsDenyTargets(): Array<{ host: string; port: number; rule: Rule }> {
    return [...this.#httpsDenyHostPorts].map(([key, rule]) => {
      const colon = key.lastIndexOf(":");
      return { host: key.slice(0, colon), port: Number(key.slice(colon + 1)), rule };
    });
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

  /** Step 1 of the precedence; see the class documentation for the order. */
  #matchUrl(scheme: "http" | "https", host: string, port: number, raw: string): Rule | undefined {
    // Deny rules see every reading of the path a server may have: the
    // canonical one, and those with `%2F`, `%5C` or both decoded (nginx's
    // and Python's on Unix is `%2F` alone).
    const readings = [canonicalPathQuery(raw)];
    for (const decoded of slashReadings(raw)) readings.push(canonicalPathQuery(decoded));
    for (const { path, query } of readings) {
      const denied = this.#urlExact.get(urlKey(scheme, host, port, path, query ?? ""));
      if (denied) return denied;
    }
    if (this.#urlAllow.size > 0) {
      // What the proxy forwards (it normalises the target once, the same way).
      const forwarded = forwardedPathQuery(raw);
      const allowed = forwarded === undefined
        ? undefined
        : this.#urlAllow.get(allowKey(scheme, host, port, forwarded));
      if (allowed) return allowed;
    }
    for (const { path, query } of readings) {
      const denied = this.#urlDeny.get(urlKey(scheme, host, port, path, query ?? "")) ??
        this.#urlDeny.get(urlKey(scheme, host, port, path, ANY_QUERY));
      if (denied) return denied;
    }
    // Last, the loosest reading other servers have (`loosePath`: `;params`,
    // trailing slashes and dots, letter case).
    if (this.#urlLoose.size > 0) {
      for (const { path, query } of readings) {
        const loose = loosePath(path);
        const denied = this.#urlLoose.get(urlKey(scheme, host, port, loose, query ?? "")) ??
          this.#urlLoose.get(urlKey(scheme, host, port, loose, ANY_QUERY));
        if (denied) return denied;
      }
    }
    return undefined;
  }
}

/**
 * A deny rule's canonical path with `%2F`, `%5C` or both read as `/`, when it
 * has them: servers that decode them (nginx) serve those paths for it.
 */
function slashedPaths(path: string): string[] {
  return [...new Set(slashReadings(path).map((p) => canonicalPathQuery(p).path))]
    .filter((p) => p !== path);
}

/** The IPv4 address (dotted) inside a normalised IPv6 literal, if it carries one. */
function embeddedIPv4Host(host: string): string | undefined {
  const b = parseIPv6(host);
  const n = b && embeddedIPv4(b);
  return n === undefined
    ? undefined
    : `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function normaliseOrUndefined(host: string): string | undefined {
  try {
    return normaliseHost(host);
  } catch {
    return undefined;
  }
}

function decision(rule: Rule): RuleDecision {
  return { action: rule.verdict, reason: `rule "${rule.pattern}": ${rule.action}`, rule };
}
