/**
 * Types shared by the rules engine, the proxy, the log and the CLI.
 * @module
 */

/**
 * An action as written in network-rules.json: the original design's words,
 * plus `passthrough` (netmonitor's): allow a host, wildcard or host:port and
 * relay its HTTPS tunnels without decrypting them.
 */
export type StoredAction =
  | "allow-domain"
  | "deny-domain"
  | "allow-url"
  | "deny-url"
  | "allow"
  | "deny"
  | "passthrough";

export const STORED_ACTIONS: readonly StoredAction[] = [
  "allow-domain",
  "deny-domain",
  "allow-url",
  "deny-url",
  "allow",
  "deny",
  "passthrough",
];

/** What a request is checked against: the normalised destination. */
export interface RequestTarget {
  /** "http" or "https". A CONNECT tunnel that is not intercepted uses "https". */
  scheme: "http" | "https";
  /** Normalised with `normaliseHost` (lib/net/host.ts). */
  host: string;
  port: number;
  /**
   * Path plus query, starting with "/". Undefined when only the host is known
   * (a CONNECT tunnel relayed without interception): URL rules cannot match then.
   */
  path?: string;
}

/** A validated rule. */
export interface Rule {
  /** The key exactly as written in the file (used to edit or remove it). */
  pattern: string;
  /** The action exactly as written in the file. */
  action: StoredAction;
  /** "url" for exact-URL patterns, "host" for hosts, wildcards and `*`. */
  kind: "url" | "host" | "wildcard" | "any";
  /** allow or deny, with the short forms resolved (`passthrough` allows). */
  verdict: "allow" | "deny";
}

/**
 * The rules engine's answer for one request. `reason` is human readable and
 * goes verbatim into the prompt, the terminal line, the log and stats, e.g.
 * `rule "*.github.com": allow-domain` or `no rule`.
 */
export interface RuleDecision {
  action: "allow" | "deny" | "ask";
  reason: string;
  rule?: Rule;
}
