/**
 * Property-based tests of the rules engine: the JSONC rules file
 * (lib/rules/parse.ts), patterns (lib/rules/pattern.ts) and decisions
 * (lib/rules/rule_set.ts). Deterministic: seeded, bounded iterations.
 */
import assert from "node:assert/strict";
import {
  formatProblem,
  makeRule,
  parsePattern,
  parseRules,
  patternIdentity,
  type RequestTarget,
  type Rule,
  RuleError,
  RuleSet,
  RulesFileError,
} from "../../lib/rules/mod.ts";
import { makeParsedRule } from "../../lib/rules/rule_set.ts";
import { forwardedPathQuery, type ParsedPattern } from "../../lib/rules/pattern.ts";
import { normaliseHost } from "../../lib/net/host.ts";
import { forAll, type Rng } from "../_helpers/fuzz.ts";

// ---------------------------------------------------------------------------
// Random rules.

/** Hosts that overlap on purpose: subdomains of each other, IPs in several spellings. */
const HOSTS = [
  "a.test",
  "b.a.test",
  "c.b.a.test",
  "x.test",
  "xn--bcher-kva.test",
  "10.0.0.1",
  "10.0.0.2",
  "[::1]",
  "[64:ff9b::a00:1]", // NAT64: carries 10.0.0.1
  "[2001:db8::5]",
];

/** Other spellings of a normalised host that mean the same host. */
function spellHost(r: Rng, host: string): string {
  const alt: Record<string, string[]> = {
    "10.0.0.1": ["10.0.0.1", "10.1", "0x0a.0.0.1", "167772161", "012.0.0.1", "[::ffff:10.0.0.1]"],
    "10.0.0.2": ["10.0.0.2", "10.2", "167772162"],
    "[::1]": ["[::1]", "[0:0::1]", "[0000:0:0:0:0:0:0:1]"],
    "[64:ff9b::a00:1]": ["[64:ff9b::a00:1]", "[64:ff9b::10.0.0.1]", "[64:FF9B:0::A00:1]"],
    "xn--bcher-kva.test": ["xn--bcher-kva.test", "bücher.test", "BÜCHER.test"],
  };
  let s = r.pick(alt[host] ?? [host]);
  if (!s.startsWith("[") && r.bool(0.3)) {
    s = Array.from(s, (c) => r.bool(0.5) ? c.toUpperCase() : c).join("");
  }
  if (!s.startsWith("[") && !/^[\d.x]+$/i.test(s) && r.bool(0.2)) s += ".";
  return s;
}

const PORTS = [80, 443, 8080, 8443];
const SEGMENTS = ["admin", "api", "v1", "Login", "a.b", "x;y", "%7Euser", "q", "data.json"];
const QUERIES = ["a=1", "q=hello%20world", "x=1&y=2", "token=t", "k=%2F"];

function randomPath(r: Rng): string {
  const segs = Array.from({ length: r.range(0, 3) }, () => r.pick(SEGMENTS));
  let p = "/" + segs.join("/");
  if (r.bool(0.15)) p += "/";
  return p;
}

const HOST_ACTIONS = ["allow-domain", "deny-domain", "allow", "deny", "passthrough"];
const ANY_ACTIONS = ["allow-domain", "deny-domain", "allow", "deny"];
const URL_ACTIONS = ["allow-url", "deny-url", "allow", "deny"];

/** A random valid [pattern, action] (pattern spelled in any of its ways). */
function randomEntry(r: Rng): [string, string] {
  const port = () => r.bool(0.3) ? `:${r.pick(PORTS)}` : "";
  switch (r.int(10)) {
    case 0:
      return [`*${port()}`, r.pick(ANY_ACTIONS)];
    case 1:
    case 2: {
      const suffix = r.pick(HOSTS.filter((h) => !/^[\d[]/.test(h)));
      return [`*.${spellHost(r, suffix)}${port()}`, r.pick(HOST_ACTIONS)];
    }
    case 3:
    case 4:
    case 5:
      return [`${spellHost(r, r.pick(HOSTS))}${port()}`, r.pick(HOST_ACTIONS)];
    default: {
      const scheme = r.pick(["https", "http", "HTTPS"]);
      const query = r.bool(0.3) ? `?${r.pick(QUERIES)}` : "";
      return [
        `${scheme}://${spellHost(r, r.pick(HOSTS))}${port()}${randomPath(r)}${query}`,
        r.pick(
          URL_ACTIONS,
        ),
      ];
    }
  }
}

/** Random entries with distinct meanings (a rules file holds one of each). */
function randomEntries(r: Rng, max = 12): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const seen = new Set<string>();
  for (let n = r.range(0, max); n > 0; n--) {
    const [pattern, action] = randomEntry(r);
    let identity: string;
    try {
      identity = patternIdentity(makeParsedRule(pattern, action).parsed);
    } catch (e) {
      if (e instanceof RuleError) continue; // e.g. an allow URL rule with a backslash
      throw e;
    }
    if (seen.has(identity)) continue;
    seen.add(identity);
    out.push([pattern, action]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// JSONC decoration: comments, whitespace, escapes, trailing commas.

const COMMENT_TEXT = [
  " note",
  ' "evil.test": "allow",',
  " { } [ ] , : ",
  " // nested",
  " /* not closing here",
  " * star",
  " 日本語 é 😀",
  ' "x": "deny" } {',
  "\t",
  "",
  " https://a.test/x?y=1#z",
  " \\ backslash \\",
];

function lineComment(r: Rng): string {
  return `//${r.pick(COMMENT_TEXT)}${r.pick(["\n", "\r\n", "\r"])}`;
}

function blockComment(r: Rng): string {
  let text = Array.from({ length: r.int(3) }, () => r.pick([...COMMENT_TEXT, "\n", "\r\n"]))
    .join("");
  text = text.replaceAll("*/", "* /");
  if (text.endsWith("*")) text += " ";
  return `/*${text}*/`;
}

/** Whitespace and comments, any mix (none at all too). */
function gap(r: Rng): string {
  let s = "";
  for (let n = r.bool(0.4) ? 0 : r.range(1, 3); n > 0; n--) {
    s += r.pick([" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n  "]);
    if (r.bool(0.25)) s += r.bool() ? lineComment(r) : blockComment(r);
  }
  return s;
}

/** A JSON string literal for `s`, with random (valid) escapes. */
function jsonString(r: Rng, s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\" || c < 0x20) out += JSON.stringify(ch).slice(1, -1);
    else if (ch === "/" && r.bool(0.2)) out += "\\/";
    else if (c < 0x10000 && r.bool(0.08)) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return out + '"';
}

function decorate(r: Rng, entries: Array<[string, string]>): string {
  let s = r.bool(0.1) ? "\uFEFF" : "";
  s += gap(r) + "{";
  entries.forEach(([k, v], i) => {
    s += gap(r) + jsonString(r, k) + gap(r) + ":" + gap(r) + jsonString(r, v) + gap(r);
    if (i < entries.length - 1 || r.bool(0.3)) s += ",";
  });
  s += gap(r) + "}" + gap(r);
  // A line comment may end the file without a newline.
  if (r.bool(0.1)) s += `// end`;
  return s;
}

function plainJson(entries: Array<[string, string]>): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`;
}

function view(rules: readonly Rule[]) {
  return rules.map((x) => ({ ...x }));
}

/**
 * An independent reading of a JSONC rules text: comments and trailing commas
 * removed by a small scanner, then `JSON.parse`. Returns the entries, or
 * undefined when the text is not one JSON object of strings.
 */
function referenceEntries(text: string): Array<[string, string]> | undefined {
  const src = text.startsWith("\uFEFF") ? text.slice(1) : text;
  let out = "";
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === '"') {
      let j = i + 1;
      while (j < src.length && src[j] !== '"') j += src[j] === "\\" ? 2 : 1;
      if (j >= src.length) return undefined;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else if (src.startsWith("//", i)) {
      while (i < src.length && src[i] !== "\n" && src[i] !== "\r") i++;
      out += " ";
    } else if (src.startsWith("/*", i)) {
      const end = src.indexOf("*/", i + 2);
      if (end < 0) return undefined;
      i = end + 2;
      out += " ";
    } else {
      out += c;
      i++;
    }
  }
  // Trailing commas: a comma before a closing brace (outside strings).
  let json = "";
  for (let k = 0; k < out.length; k++) {
    const c = out[k];
    if (c === '"') {
      let j = k + 1;
      while (out[j] !== '"') j += out[j] === "\\" ? 2 : 1;
      json += out.slice(k, j + 1);
      k = j;
      continue;
    }
    if (c === ",") {
      // After a value (not `{,}`), before a closing bracket.
      const next = out.slice(k + 1).search(/\S/);
      const before = json.trimEnd().at(-1);
      const trailing = next >= 0 && (out[k + 1 + next] === "}" || out[k + 1 + next] === "]");
      if (trailing && before !== undefined && !"{[,:".includes(before)) continue;
    }
    json += c;
  }
  if (/^[ \t\n\r]*$/.test(json)) return []; // JSON white space only (not String.trim's)
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return undefined;
  if (Object.values(v as Record<string, unknown>).some((a) => typeof a !== "string")) {
    return undefined;
  }
  // Valid JSON, one object of strings: its string tokens are key, value,
  // key, value... in file order, duplicates included (JSON.parse keeps one).
  const strings = json.match(/"(?:[^"\\]|\\.)*"/g) ?? [];
  const entries: Array<[string, string]> = [];
  for (let k = 0; k < strings.length; k += 2) {
    entries.push([JSON.parse(strings[k]), JSON.parse(strings[k + 1])]);
  }
  return entries;
}

/** The lines of a text as parse.ts counts them (LF, CRLF or a lone CR ends one). */
function linesOf(text: string): string[] {
  return text.split(/\r\n|\r|\n/);
}

function mutateText(r: Rng, text: string): string {
  let s = text;
  for (let n = r.range(1, 3); n > 0; n--) {
    const at = r.int(s.length + 1);
    switch (r.int(7)) {
      case 0:
        s = s.slice(0, at) + s.slice(at + r.range(1, 5));
        break;
      case 1:
        s = s.slice(0, at) +
          r.pick([
            '"',
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "/",
            "*",
            "//",
            "/*",
            "*/",
            "\\",
            "\n",
            "\r",
          ]) +
          s.slice(at);
        break;
      case 2:
        s = s.slice(0, at) + r.pick(["'", "\0", "\u2028", "\uFEFF", "é", "\t", "1", "true"]) +
          s.slice(at);
        break;
      case 3:
        s = s.slice(0, at); // truncated
        break;
      case 4: {
        const lines = s.split("\n");
        const k = r.int(lines.length);
        lines.splice(k, 0, lines[k]); // a duplicated line
        s = lines.join("\n");
        break;
      }
      case 5:
        s = s.slice(0, at) + r.pick(['"a.test": "allow",', '"*": "deny"', '"": ""', "{}"]) +
          s.slice(at);
        break;
      default:
        if (at > 0 && at < s.length) s = s.slice(0, at - 1) + s[at] + s[at - 1] + s.slice(at + 1);
    }
  }
  return s;
}

// ---------------------------------------------------------------------------

Deno.test("fuzz rules file: comments, whitespace, escapes and trailing commas change nothing", () => {
  forAll("decorated", { seed: 0xc0de, runs: 1500 }, (r) => {
    const entries = randomEntries(r);
    const plain = parseRules(plainJson(entries));
    assert.deepEqual(plain.problems, []);
    assert.deepEqual(plain.rules.map((x) => [x.pattern, x.action]), entries);
    const text = decorate(r, entries);
    const decorated = parseRules(text);
    assert.deepEqual(decorated.problems, [], text);
    assert.deepEqual(view(decorated.rules), view(plain.rules), text);
  });
});

Deno.test("fuzz rules file: a damaged file gives rules or problems at positions inside it, never a throw", () => {
  forAll("mutated", { seed: 0xda4a6e, runs: 3000 }, (r) => {
    const text = mutateText(r, decorate(r, randomEntries(r, 6)));
    let parsed: ReturnType<typeof parseRules>;
    try {
      parsed = parseRules(text);
    } catch (e) {
      throw new Error(`parseRules threw ${e} for ${JSON.stringify(text)}`, { cause: e });
    }
    const lines = linesOf(text);
    for (const p of parsed.problems) {
      assert.ok(p.line >= 1 && p.line <= lines.length, `line ${p.line} of ${lines.length}`);
      const len = lines[p.line - 1].length;
      assert.ok(p.column >= 1 && p.column <= len + 1, `column ${p.column} of a ${len}-long line`);
      assert.ok(p.message.length > 0);
      assert.match(formatProblem(p), / at \d+:\d+/);
    }
    if (parsed.problems.length > 0) {
      const e = new RulesFileError("/x/network-rules.json", parsed.problems);
      assert.match(e.message, / at \d+:\d+/);
    }
    // Fail closed: a file is usable only when it is one JSON object of valid,
    // distinct rules, read the same way by an independent reader.
    const ref = referenceEntries(text);
    if (parsed.problems.length === 0) {
      assert.ok(ref !== undefined, `accepted a file that is not JSONC: ${JSON.stringify(text)}`);
      assert.deepEqual(parsed.rules.map((x) => [x.pattern, x.action]), ref, JSON.stringify(text));
      new RuleSet(parsed.rules); // and it builds
    } else if (ref !== undefined) {
      // Problems in valid JSONC: only the rules themselves can be wrong.
      const valid = ref.every(([k, v]) => {
        try {
          makeRule(k, v);
          return true;
        } catch {
          return false;
        }
      });
      const ids = new Set(ref.map(([k, v]) => {
        try {
          return patternIdentity(makeParsedRule(k, v).parsed);
        } catch {
          return `invalid ${k}`;
        }
      }));
      const duplicates = ids.size < ref.length;
      assert.ok(
        !valid || duplicates,
        `refused valid JSONC ${JSON.stringify(text)}: ${parsed.problems.map(formatProblem)}`,
      );
    }
  });
});

Deno.test("fuzz rules file: deep nesting and huge inputs are problems, not crashes", () => {
  forAll("nesting", { seed: 0x2e57, runs: 30 }, (r) => {
    const depth = r.pick([10, 1000, 20_000, 100_000]);
    const open = r.pick(["[", "{", '{"a":']);
    const text = `{"a.test": ${open.repeat(depth)}`;
    const { problems } = parseRules(text);
    assert.ok(problems.length > 0);
    for (const p of problems) assert.equal(p.line, 1);
  });
});

// ---------------------------------------------------------------------------
// Decisions.

interface Indexed {
  rule: Rule;
  parsed: ParsedPattern;
}

function index(rules: readonly Rule[]): Indexed[] {
  return rules.map((rule) => ({ rule, parsed: makeParsedRule(rule.pattern, rule.action).parsed }));
}

function isIp(host: string): boolean {
  return host.startsWith("[") || /^\d+\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The documented host-level precedence, as a linear scan: exact host, then
 * the longest matching wildcard, then `*`; within each, a rule with the
 * request's port before one without a port.
 */
function referenceHostRule(rules: Indexed[], host: string, port: number): Rule | undefined {
  const pick = (match: (p: ParsedPattern) => boolean) =>
    rules.find((x) => match(x.parsed) && x.parsed.port === port)?.rule ??
      rules.find((x) => match(x.parsed) && x.parsed.port === undefined)?.rule;
  const exact = pick((p) => p.kind === "host" && p.host === host);
  if (exact) return exact;
  if (!isIp(host)) {
    const labels = host.split(".");
    for (let i = 1; i < labels.length; i++) {
      const suffix = labels.slice(i).join(".");
      const w = pick((p) => p.kind === "wildcard" && p.suffix === suffix);
      if (w) return w;
    }
  }
  return pick((p) => p.kind === "any");
}

/** The IPv4 host a NAT64 address carries (the only embedding HOSTS use). */
function nat64(host: string): string | undefined {
  const m = /^\[64:ff9b::([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(host);
  if (!m) return undefined;
  const hi = parseInt(m[1], 16);
  const lo = parseInt(m[2], 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** The documented decision for a request without a path (a tunnel). */
function referenceTunnelDecision(rules: Indexed[], host: string, port: number) {
  const rule = referenceHostRule(rules, host, port);
  if (rule?.verdict !== "deny") {
    const v4 = nat64(host);
    if (v4 !== undefined) {
      const v4Rule = rules.find((x) =>
        x.parsed.kind === "host" && x.parsed.host === v4 && x.parsed.port === port
      )?.rule ??
        rules.find((x) =>
          x.parsed.kind === "host" && x.parsed.host === v4 && x.parsed.port === undefined
        )?.rule;
      if (v4Rule?.verdict === "deny") {
        return { action: "deny", rule: v4Rule };
      }
    }
  }
  return rule ? { action: rule.verdict, rule } : { action: "ask", rule: undefined };
}

function randomRuleSet(r: Rng): { rules: Rule[]; set: RuleSet } {
  const { rules, problems } = parseRules(plainJson(randomEntries(r, 16)));
  assert.deepEqual(problems, []);
  return { rules, set: new RuleSet(rules) };
}

Deno.test("fuzz decide: host-level decisions follow the documented precedence", () => {
  forAll("host precedence", { seed: 0xdec1de, runs: 2000 }, (r) => {
    const { rules, set } = randomRuleSet(r);
    const indexed = index(rules);
    for (let k = 0; k < 10; k++) {
      const host = r.pick(HOSTS);
      const port = r.pick([...PORTS, r.range(1, 65535)]);
      const target: RequestTarget = { scheme: "https", host: spellHost(r, host), port };
      const got = set.decide(target);
      const want = referenceTunnelDecision(indexed, host, port);
      assert.equal(
        got.action,
        want.action,
        `${target.host}:${port} in ${rules.map((x) => `${x.pattern}=${x.action}`)}`,
      );
      assert.equal(got.rule?.pattern, want.rule?.pattern, `${target.host}:${port}`);
      // A deny-domain host stays denied unless a more specific rule allows.
      const denyHost = indexed.find((x) =>
        x.parsed.kind === "host" && x.parsed.host === host && x.rule.verdict === "deny" &&
        (x.parsed.port === undefined || x.parsed.port === port)
      );
      if (denyHost && got.action !== "deny") {
        const p = makeParsedRule(got.rule!.pattern, got.rule!.action).parsed;
        assert.ok(
          p.kind === "host" && p.host === host && p.port === port &&
            denyHost.parsed.port === undefined,
          `${host}:${port} denied by "${denyHost.rule.pattern}" but allowed by "${got.rule?.pattern}"`,
        );
      }
    }
  });
});

/**
 * Spellings of a deny URL rule's URL that the README says it also denies.
 * `dotSegments`: the spelling has `.`/`..` segments, which the proxy resolves
 * (RFC 3986) before it decides and forwards, in a way that may differ from
 * how nginx reads the raw spelling (`/x//../a`, `/x%2F../a`): the URL then
 * forwarded is another one, which need not be denied.
 */
function denySpelling(
  r: Rng,
  p: Extract<ParsedPattern, { kind: "url" }>,
): RequestTarget & { path: string; dotSegments: boolean } {
  let path = p.path;
  let dots = false;
  const steps = r.range(0, 3);
  for (let n = 0; n < steps; n++) {
    const segs = path.split("/");
    const i = r.range(1, segs.length - 1);
    switch (r.int(9)) {
      case 0: // doubled slashes
        segs[i] = "/" + segs[i];
        break;
      case 1: // dot segments
        segs.splice(i, 0, r.pick([".", "%2e", "zz/..", "zz/%2E%2e"]));
        dots = true;
        break;
      case 2: // an escaped letter, in either case of escape
        if (segs[i].includes("%")) break;
        segs[i] = segs[i].replace(/[a-z]/i, (c) => {
          const hex = c.charCodeAt(0).toString(16);
          return `%${r.bool() ? hex : hex.toUpperCase()}`;
        });
        break;
      case 3: // %2F for a slash (nginx decodes it)
        if (i < segs.length - 1) {
          segs.splice(i, 2, `${segs[i]}%2F${segs[i + 1]}`);
        }
        break;
      case 4: // letter case (Express, IIS)
        segs[i] = segs[i].toUpperCase();
        break;
      case 5: // a trailing slash
        segs.push("");
        break;
      case 6: // ;params (Tomcat)
        segs[i] += r.pick([";jsessionid=1", ";x"]);
        break;
      case 7: // trailing dots and white space (IIS)
        // (Not on a dot segment, `%2F..` included: `...` is no dot segment.)
        if (!/^(?:\.|%2e)*$/i.test(segs[i].split(/%2f|%5c/i).at(-1)!)) {
          segs[i] += r.pick([".", "%20", "%09", "."]);
        }
        break;
      default:
        break;
    }
    path = segs.join("/").replace(/^\/*/, "/");
  }
  let query = p.query;
  if (query === undefined) {
    if (r.bool(0.3)) query = r.pick(QUERIES); // any query
  } else if (r.bool(0.3)) {
    query = query.replaceAll("%20", "+");
  }
  // The plain-http twin on the default port.
  let scheme = p.scheme;
  let port = p.port;
  if (r.bool(0.2) && port === (scheme === "https" ? 443 : 80)) {
    scheme = scheme === "https" ? "http" : "https";
    port = scheme === "https" ? 443 : 80;
  }
  return {
    scheme,
    host: spellHost(r, p.host),
    port,
    path: query === undefined ? path : `${path}?${query}`,
    dotSegments: dots,
  };
}

Deno.test("fuzz decide: a deny URL rule is beaten only by an allow URL rule naming that exact URL", () => {
  forAll("deny URL", { seed: 0xde4, runs: 2000 }, (r) => {
    const { rules, set } = randomRuleSet(r);
    const denies = index(rules).filter((x) => x.parsed.kind === "url" && x.rule.verdict === "deny");
    for (const d of denies) {
      const p = d.parsed as Extract<ParsedPattern, { kind: "url" }>;
      for (let k = 0; k < 4; k++) {
        const target = k === 0
          ? {
            scheme: p.scheme,
            host: p.host,
            port: p.port,
            path: `${p.path}${p.query ? `?${p.query}` : ""}`,
            dotSegments: false,
          }
          : denySpelling(r, p);
        // The proxy decides on (and forwards) the normalised target; a target
        // it cannot normalise is refused before any rule. The raw spelling is
        // denied too (decide canonicalises whatever it is given).
        const forwarded = forwardedPathQuery(target.path);
        const paths = forwarded === undefined || target.dotSegments
          ? [target.path]
          : [target.path, forwarded];
        for (const path of paths) {
          const got = set.decide({ ...target, path });
          if (got.action === "deny") continue;
          // Documented exception: an allow URL rule for exactly what is forwarded.
          const a = got.rule && makeParsedRule(got.rule.pattern, got.rule.action).parsed;
          const host = normaliseHost(target.host);
          assert.ok(
            a?.kind === "url" && got.rule!.verdict === "allow" && a.scheme === target.scheme &&
              a.host === host && a.port === target.port && a.forwarded === forwardedPathQuery(path),
            `${target.scheme}://${target.host}:${target.port}${path} (raw ${target.path}, a spelling of deny ` +
              `"${d.rule.pattern}") got ${got.action} by ${got.reason}; rules: ` +
              rules.map((x) => `${x.pattern}=${x.action}`).join(" "),
          );
        }
      }
    }
  });
});

Deno.test("fuzz decide: the order of the rules in the file changes no decision", () => {
  forAll("order", { seed: 0x0bde, runs: 1000 }, (r) => {
    const entries = randomEntries(r, 16);
    const a = new RuleSet(parseRules(plainJson(entries)).rules);
    const b = new RuleSet(parseRules(plainJson(r.shuffle(entries))).rules);
    const indexed = index(a.rules);
    for (let k = 0; k < 20; k++) {
      const host = spellHost(r, r.pick(HOSTS));
      const urlRule = indexed.filter((x) => x.parsed.kind === "url");
      let path: string | undefined;
      if (r.bool(0.2)) path = undefined;
      else if (urlRule.length > 0 && r.bool(0.6)) {
        const p = r.pick(urlRule).parsed as Extract<ParsedPattern, { kind: "url" }>;
        path = denySpelling(r, p).path;
      } else path = randomPath(r);
      const target: RequestTarget = {
        scheme: r.pick(["http", "https"] as const),
        host,
        port: r.pick(PORTS),
        path,
      };
      const da = a.decide(target);
      const db = b.decide(target);
      assert.equal(da.action, db.action, `${JSON.stringify(target)}: ${da.reason} / ${db.reason}`);
      // Host-level reasons too (several deny URL rules may share a reading).
      if (da.rule?.kind !== "url") assert.equal(da.reason, db.reason);
      assert.equal(
        a.isPassthrough(host, target.port),
        b.isPassthrough(host, target.port),
        `passthrough ${host}:${target.port}`,
      );
    }
  });
});

Deno.test("fuzz decide: a host:port that a deny URL rule names is never passthrough", () => {
  forAll("passthrough", { seed: 0x9a55, runs: 1500 }, (r) => {
    const { rules, set } = randomRuleSet(r);
    const indexed = index(rules);
    for (const host of HOSTS) {
      for (const port of PORTS) {
        const passthrough = set.isPassthrough(spellHost(r, host), port);
        const hostRule = referenceHostRule(indexed, host, port);
        // (The tunnel is decided first: a NAT64 address whose IPv4 host is
        // denied is refused before passthrough matters.)
        if (passthrough) assert.equal(hostRule?.action, "passthrough", `${host}:${port}`);
        // Deny URL rules whose requests could travel in a tunnel to host:port.
        const v4 = nat64(host);
        const needsDecryption = indexed.some((x) => {
          if (x.parsed.kind !== "url" || x.rule.verdict !== "deny") return false;
          const p = x.parsed;
          if (p.host !== host && p.host !== v4) return false;
          return p.port === port || (p.scheme === "http" && p.port === 80 && port === 443);
        });
        if (needsDecryption) {
          assert.equal(passthrough, false, `${host}:${port} passthrough despite a deny URL rule`);
          assert.ok(set.hasDenyUrlRulesFor(host, port), `${host}:${port}`);
        }
      }
    }
  });
});

Deno.test("fuzz patterns: every accepted pattern is stable under its own spellings", () => {
  forAll("pattern identity", { seed: 0x1d, runs: 2000 }, (r) => {
    const [pattern, action] = randomEntry(r);
    let parsed: ParsedPattern;
    try {
      parsed = parsePattern(pattern);
    } catch (e) {
      assert.ok(e instanceof RuleError, `${pattern}: ${e}`);
      return;
    }
    // Surrounding white space and the host's case do not change the meaning.
    const again = parsePattern(
      ` ${pattern.replace(/^[a-z]+:\/\/[^/?]*/i, (m) => m.toUpperCase())}\t`,
    );
    assert.equal(patternIdentity(again), patternIdentity(parsed), pattern);
    makeRule(pattern, action);
  });
});
