/**
 * The rules engine: patterns, validation, precedence, and the rules file.
 *
 * ```ts
 * const store = new RulesStore(dataPaths().rules);
 * const rules = await store.load();
 * rules.decide({ scheme: "https", host: "api.github.com", port: 443, path: "/" });
 * // -> { action: "allow", reason: 'rule "*.github.com": allow-domain', rule }
 * ```
 *
 * Precedence (see {@linkcode RuleSet}): exact URL > exact host > longest
 * matching wildcard > `*` > ask. A `passthrough` host rule allows, and
 * {@linkcode RuleSet.isPassthrough} says which CONNECT tunnels are relayed
 * undecrypted.
 *
 * @module
 */

export * from "./types.ts";
export { describeIoError, formatProblem, RuleError, RulesFileError } from "./errors.ts";
export type { RuleProblem } from "./errors.ts";
export { hasRulesValue, parseRules, ruleWarnings } from "./parse.ts";
export {
  canonicalPathQuery,
  type ParsedPattern,
  parsePattern,
  patternIdentity,
} from "./pattern.ts";
export { ACTION_LIST, makeRule, RuleSet } from "./rule_set.ts";
export type { RuleWarning } from "./rule_set.ts";
export { DenyRuleKeptError, RulesStore } from "./store.ts";
export { MAX_RULES_FILE_BYTES, readTextLimited, writeFileAtomic } from "./_fs.ts";
export type {
  AddOptions,
  AddResult,
  MergeResult,
  RulesWatcher,
  StoreOptions,
  WatchHandlers,
  WatchOptions,
} from "./store.ts";
