/**
 * Parsing and validation of network-rules.json (JSONC: comments and trailing
 * commas allowed). Content problems are collected, never thrown, so
 * `rules check` can report all of them at once.
 * @module
 */

import { type Node, type ParseError, parseTree, printParseErrorCode } from "jsonc-parser";
import { RuleError, type RuleProblem } from "./errors.ts";
import { patternIdentity } from "./pattern.ts";
import { ACTION_LIST, makeParsedRule, RuleSet } from "./rule_set.ts";
import type { Rule } from "./types.ts";

/** One valid entry of a rules file, with where it is. */
export interface RuleEntry {
  rule: Rule;
  /** Equal for patterns that mean the same thing. */
  identity: string;
  /** The property node (key and value) in the parsed tree. */
  node: Node;
}

/** Everything the store needs to know about a rules text. */
export interface ParsedRulesText {
  rules: Rule[];
  problems: RuleProblem[];
  entries: RuleEntry[];
  /** The root object node; undefined for an empty document. */
  root?: Node;
}

const SYNTAX_MESSAGES: Record<string, string> = {
  InvalidNumberFormat: "invalid number",
  PropertyNameExpected: "expected a pattern in double quotes",
  ValueExpected: "expected a value",
  ColonExpected: `expected ":" after the pattern`,
  CommaExpected: `expected "," or "}"`,
  CloseBraceExpected: `expected "}" to close the object`,
  CloseBracketExpected: `expected "]"`,
  EndOfFileExpected: 'expected the end of the file after the closing "}"',
  InvalidCommentToken: "invalid comment",
  UnexpectedEndOfComment: `unterminated comment: expected "*/"`,
  UnexpectedEndOfString: "unterminated string: expected a closing double quote",
  UnexpectedEndOfNumber: "unexpected end of number",
  InvalidUnicode: "invalid unicode escape",
  InvalidEscapeCharacter: "invalid escape character",
  InvalidCharacter: "invalid character in string",
};

function syntaxMessage(e: ParseError, src: string): string {
  const code = printParseErrorCode(e.error);
  if (code !== "InvalidSymbol") return SYNTAX_MESSAGES[code] ?? code;
  const symbol = src.slice(e.offset, e.offset + Math.min(e.length, 40));
  const hint = /^['\w]/.test(symbol) ? " (strings need double quotes)" : "";
  return `unexpected ${JSON.stringify(symbol)}${hint}`;
}

/**
 * Parses and validates a JSONC rules text. Never throws for content problems:
 * it returns them all, each with its 1-based line and column. `rules` holds
 * the valid entries in file order; use it only when `problems` is empty.
 */
export function parseRules(text: string): { rules: Rule[]; problems: RuleProblem[] } {
  const { rules, problems } = parseRulesText(text);
  return { rules, problems };
}

/**
 * Valid rule combinations of a rules text that do not do what they seem to
 * (see `RuleSet.warnings`), each at the key of the rule concerned, in file
 * order. They never make the file unusable; entries with problems are left
 * out (see {@linkcode parseRules} for those).
 */
export function ruleWarnings(text: string): RuleProblem[] {
  const parsed = parseRulesText(text);
  if (parsed.rules.length === 0) return [];
  const warnings = new RuleSet(parsed.rules).warnings();
  if (warnings.length === 0) return [];
  // Offsets are unchanged by the byte-order mark handling of parseRulesText.
  const at = positionFinder(text);
  return warnings.map((w) => {
    const keyNode = parsed.entries.find((e) => e.rule === w.rule)?.node.children?.[0];
    return { key: w.rule.pattern, ...at(keyNode?.offset ?? 0), message: w.message };
  }).sort((a, b) => a.line - b.line || a.column - b.column);
}

/**
 * True when `text` holds a JSON value (normally the rules object); false for
 * an empty text, or one of only white space and comments, which
 * {@linkcode parseRules} reads as no rules.
 */
export function hasRulesValue(text: string): boolean {
  const parsed = parseRulesText(text);
  return parsed.root !== undefined || parsed.problems.length > 0;
}

/** {@linkcode parseRules} plus the tree positions the store edits. */
export function parseRulesText(text: string): ParsedRulesText {
  // A byte-order mark would trip the parser; a space keeps every offset.
  const src = text.startsWith("\uFEFF") ? ` ${text.slice(1)}` : text;
  const at = positionFinder(src);
  const problems: RuleProblem[] = [];
  const errors: ParseError[] = [];
  let root: Node | undefined;
  try {
    root = parseTree(src, errors, {
      allowTrailingComma: true,
      disallowComments: false,
      allowEmptyContent: true,
    });
  } catch (e) {
    // The parser recurses: thousands of nested brackets overflow the stack.
    if (!(e instanceof RangeError)) throw e;
    const message = "nested too deeply to read (a rules file is one flat object)";
    return { rules: [], problems: [{ line: 1, column: 1, message }], entries: [] };
  }
  let lastSyntaxLine = 0;
  for (const e of errors) {
    const pos = at(e.offset);
    // Later errors on the same line are nearly always echoes of the first.
    if (pos.line === lastSyntaxLine) continue;
    lastSyntaxLine = pos.line;
    problems.push({ ...pos, message: syntaxMessage(e, src) });
  }
  const entries: RuleEntry[] = [];
  if (root === undefined) return { rules: [], problems, entries };
  if (root.type !== "object") {
    problems.push({
      ...at(root.offset),
      message: 'expected a JSON object mapping patterns to actions, like {"github.com": "allow"}',
    });
    return { rules: [], problems, entries };
  }

  const seen = new Map<string, { key: string; line: number; column: number }>();
  for (const prop of root.children ?? []) {
    const [keyNode, valueNode] = prop.children ?? [];
    if (keyNode?.type !== "string") continue; // a syntax error, already reported
    const key = keyNode.value as string;
    const keyAt = at(keyNode.offset);
    if (valueNode === undefined) continue; // "key": missing value, already reported
    if (valueNode.type !== "string") {
      problems.push({
        key,
        ...at(valueNode.offset),
        message: `the action for "${key}" must be a string`,
        expected: ACTION_LIST,
      });
      continue;
    }
    try {
      const { rule, parsed } = makeParsedRule(key, valueNode.value as string);
      const identity = patternIdentity(parsed);
      const first = seen.get(identity);
      if (first) {
        problems.push({
          key,
          ...keyAt,
          message: first.key === key
            ? `duplicate pattern "${key}" (first at ${first.line}:${first.column})`
            : `duplicate pattern "${key}" (same as "${first.key}", first at ${first.line}:${first.column})`,
        });
        continue;
      }
      seen.set(identity, { key, ...keyAt });
      entries.push({ rule, identity, node: prop });
    } catch (e) {
      if (!(e instanceof RuleError)) throw e;
      problems.push({
        key,
        ...(e.part === "action" ? at(valueNode.offset) : keyAt),
        message: e.problem,
        ...(e.expected ? { expected: e.expected } : {}),
      });
    }
  }
  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  return { rules: entries.map((e) => e.rule), problems, entries, root };
}

/** Maps a string offset to a 1-based line and column. */
function positionFinder(text: string): (offset: number) => { line: number; column: number } {
  const starts = [0];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) starts.push(i + 1);
    else if (c === 13 && text.charCodeAt(i + 1) !== 10) starts.push(i + 1);
  }
  return (offset) => {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - starts[lo] + 1 };
  };
}
