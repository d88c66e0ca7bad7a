import assert from "node:assert/strict";
import {
  canonicalPathQuery,
  makeRule,
  parsePattern,
  parseRules,
  patternIdentity,
  RuleError,
  RulesFileError,
} from "../../lib/rules/mod.ts";

const DATA = new URL("../testdata/rules/", import.meta.url);

Deno.test("parsePattern: every kind of pattern", () => {
  const cases: Array<[string, unknown]> = [
    ["*", { kind: "any" }],
    ["*:25", { kind: "any", port: 25 }],
    ["github.com", { kind: "host", host: "github.com", port: undefined }],
    ["GitHub.com.", { kind: "host", host: "github.com", port: undefined }],
    ["example.com:8443", { kind: "host", host: "example.com", port: 8443 }],
    ["10.0.0.1", { kind: "host", host: "10.0.0.1", port: undefined }],
    ["10.1:80", { kind: "host", host: "10.0.0.1", port: 80 }],
    ["[::1]", { kind: "host", host: "[::1]", port: undefined }],
    ["[::1]:8080", { kind: "host", host: "[::1]", port: 8080 }],
    ["::1", { kind: "host", host: "[::1]", port: undefined }],
    ["*.github.com", { kind: "wildcard", suffix: "github.com", port: undefined }],
    ["*.Bücher.DE.", { kind: "wildcard", suffix: "xn--bcher-kva.de", port: undefined }],
    ["*.com", { kind: "wildcard", suffix: "com", port: undefined }],
    ["*.example.com:8080", { kind: "wildcard", suffix: "example.com", port: 8080 }],
    [
      "https://specific-endpoint.com/api/sensitive",
      {
        kind: "url",
        scheme: "https",
        host: "specific-endpoint.com",
        port: 443,
        path: "/api/sensitive",
        query: undefined,
        forwarded: "/api/sensitive",
      },
    ],
    [
      "HTTP://Example.com:8080?x=1",
      {
        kind: "url",
        scheme: "http",
        host: "example.com",
        port: 8080,
        path: "/",
        query: "x=1",
        forwarded: "/?x=1",
      },
    ],
    [
      "https://[::1]:8443/a?",
      {
        kind: "url",
        scheme: "https",
        host: "[::1]",
        port: 8443,
        path: "/a",
        query: undefined,
        forwarded: "/a?",
      },
    ],
    [
      "https://h.test//a/./b/%7e%3b?q=a+b",
      {
        kind: "url",
        scheme: "https",
        host: "h.test",
        port: 443,
        path: "/a/b/~;",
        query: "q=a%20b",
        forwarded: "//a/b/~%3B?q=a+b",
      },
    ],
    [
      "https://h.test/a\\b",
      {
        kind: "url",
        scheme: "https",
        host: "h.test",
        port: 443,
        path: "/a/b",
        query: undefined,
        forwarded: undefined,
      },
    ],
  ];
  for (const [pattern, want] of cases) assert.deepEqual(parsePattern(pattern), want, pattern);
});

Deno.test("parsePattern: malformed patterns are rejected with the key named", () => {
  const cases: Array<[string, RegExp]> = [
    ["", /the pattern is empty/],
    ["   ", /the pattern is empty/],
    ["*bob.com", /wildcard is "\*\." followed by a domain, like "\*\.bob\.com"/],
    ["a.*.com", /only allowed as the whole first label/],
    ["*.*.com", /only one "\*"/],
    ["*.", /not a valid host/],
    ["*.1.2.3.4", /cannot be applied to an IP address/],
    ["*.10", /cannot be applied to an IP address/],
    ["https://", /the URL has no host/],
    ["https:///x", /the URL has no host/],
    ["https://:443/x", /not a valid host/],
    ["https://u:p@h.test/", /user name or password/],
    ["https://h.test/#frag", /#fragment/],
    ["https://*.h.test/x", /wildcards are not allowed in URL patterns/],
    ["https://h.test:/x", /port after ":" is missing/],
    ["https://h.test:99999/x", /outside 1-65535/],
    ["ftp://h.test/x", /only http:\/\/ and https:\/\//],
    ["https:/h.test/x", /starts with "http:\/\/" or "https:\/\/"/],
    ["github.com/foo", /needs a scheme, like "https:\/\/github.com\/foo"/],
    ["github.com:0", /outside 1-65535/],
    ["github.com:http", /not a port number/],
    ["user@github.com", /"@" is not allowed/],
    ["exa mple.com", /not a valid host/],
    ["a..b", /not a valid host/],
    ["[::1", /expected a host|not a valid host/],
  ];
  for (const [pattern, re] of cases) {
    assert.throws(
      () => parsePattern(pattern),
      (e: unknown) => {
        assert.ok(e instanceof RuleError, pattern);
        assert.equal(e.part, "pattern");
        assert.ok(e.message.startsWith(`invalid pattern "${pattern}": `), e.message);
        assert.match(e.message, re, pattern);
        return true;
      },
    );
  }
});

Deno.test("makeRule: action and pattern kind must agree", () => {
  assert.throws(() => makeRule("github.com", "alow"), {
    name: "RuleError",
    message: 'unknown action "alow" for "github.com" (expected allow-domain, deny-domain, ' +
      "allow-url, deny-url, allow, deny or passthrough)",
  });
  assert.throws(
    () => makeRule("github.com", "allow-url"),
    /action "allow-url" for "github.com" needs a URL pattern like "https:\/\/github.com\/path"; use "allow-domain" or "allow" for a host/,
  );
  assert.throws(() => makeRule("*.github.com", "deny-url"), /needs a URL pattern/);
  assert.throws(
    () => makeRule("https://h.test/x", "deny-domain"),
    /action "deny-domain" for "https:\/\/h.test\/x" needs a host pattern like "h.test"; use "deny-url" or "deny" for a URL/,
  );
  assert.throws(() => makeRule("https://h.test/x", "Allow"), /unknown action "Allow"/);
});

Deno.test("patternIdentity: same meaning, same identity", () => {
  const same: Array<[string, string]> = [
    ["github.com", "GitHub.COM."],
    ["*.bücher.de", "*.xn--bcher-kva.de"],
    ["127.0.0.1", "0x7f.1"],
    ["[::1]", "[0:0::1]"],
    ["https://h.test/a", "HTTPS://H.test:443/a"],
    ["https://h.test/~a?", "https://h.test/%7ea"],
    ["https://h.test/a/./b", "https://h.test/a//b"],
  ];
  for (const [a, b] of same) {
    assert.equal(patternIdentity(parsePattern(a)), patternIdentity(parsePattern(b)), `${a} ${b}`);
  }
  const different: Array<[string, string]> = [
    ["github.com", "*.github.com"],
    ["github.com", "github.com:443"],
    ["https://h.test/a", "http://h.test/a"],
    ["https://h.test/a", "https://h.test/A"],
    ["https://h.test/a", "https://h.test/a?x"],
  ];
  for (const [a, b] of different) {
    assert.notEqual(
      patternIdentity(parsePattern(a)),
      patternIdentity(parsePattern(b)),
      `${a} ${b}`,
    );
  }
});

Deno.test("canonicalPathQuery: table", () => {
  const cases: Array<[string, { path: string; query?: string }]> = [
    ["", { path: "/" }],
    ["/", { path: "/" }],
    ["/a/b", { path: "/a/b" }],
    ["//a///b", { path: "/a/b" }],
    ["/a\\b", { path: "/a/b" }],
    ["/a/./b/../c", { path: "/a/c" }],
    ["/a/%2e/b/%2E%2e/c", { path: "/a/c" }],
    ["/a//../b", { path: "/b" }], // slashes merged first, like nginx
    ["/../../etc", { path: "/etc" }],
    ["/%7e%41", { path: "/~A" }],
    ["/%2f%3f%25%5c", { path: "/%2F%3F%25%5C" }],
    ["/%c3%a9", { path: "/%C3%A9" }],
    ["/é", { path: "/%C3%A9" }],
    ["/a b", { path: "/a%20b" }],
    ["/a?", { path: "/a" }],
    ["/a?#x", { path: "/a" }],
    ["/a#x?y", { path: "/a" }],
    ["/a?b=1&c=%7e", { path: "/a", query: "b=1&c=~" }],
    ["/a?q=a+b", { path: "/a", query: "q=a%20b" }],
    ["/a?q=a%20b", { path: "/a", query: "q=a%20b" }],
    ["/a?q=a%2bb&x=%26%3d", { path: "/a", query: "q=a%2Bb&x=%26%3D" }],
    ["/a?q='", { path: "/a", query: "q='" }],
    ["/a?q=%27", { path: "/a", query: "q='" }],
    ["/A", { path: "/A" }],
  ];
  for (const [raw, want] of cases) assert.deepEqual(canonicalPathQuery(raw), want, raw);
});

Deno.test("parseRules: JSONC with comments and trailing commas", async () => {
  const text = await Deno.readTextFile(new URL("commented.jsonc", DATA));
  const { rules, problems } = parseRules(text);
  assert.deepEqual(problems, []);
  assert.deepEqual(rules.map((r) => [r.pattern, r.action]), [
    ["github.com", "allow-domain"],
    ["*.github.com", "allow-domain"],
    ["pypi.org", "allow-domain"],
    ["registry.npmjs.org", "allow-domain"],
    ["suspicious-site.com", "deny-domain"],
  ]);
});

Deno.test("parseRules: empty documents are no rules", () => {
  for (const text of ["", "  \n", "// nothing yet\n", "{}", "\uFEFF{}", "{ /* none */ }"]) {
    assert.deepEqual(parseRules(text), { rules: [], problems: [] }, JSON.stringify(text));
  }
});

Deno.test("parseRules: every problem, with its key and line:column", () => {
  const text = [
    "{",
    '  "github.com": "alow",', // 2
    '  "*bob.com": "allow",',
    '  "a.*.com": "deny",',
    '  "": "allow",',
    '  "https:///x": "deny",',
    '  "x.test": 3,',
    '  "GitHub.com.": "deny",', // valid: github.com above was invalid
    '  "github.com.": "allow",', // duplicate of the line above
    '  "h.test": "allow-url"',
    "}",
  ].join("\n");
  const { problems } = parseRules(text);
  assert.deepEqual(problems, [
    {
      key: "github.com",
      line: 2,
      column: 17,
      message: 'unknown action "alow" for "github.com"',
      expected: "allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough",
    },
    {
      key: "*bob.com",
      line: 3,
      column: 3,
      message:
        'invalid pattern "*bob.com": a wildcard is "*." followed by a domain, like "*.bob.com"',
    },
    {
      key: "a.*.com",
      line: 4,
      column: 3,
      message:
        'invalid pattern "a.*.com": "*" is only allowed as the whole first label, like "*.example.com"',
    },
    { key: "", line: 5, column: 3, message: 'invalid pattern "": the pattern is empty' },
    {
      key: "https:///x",
      line: 6,
      column: 3,
      message: 'invalid pattern "https:///x": the URL has no host',
    },
    {
      key: "x.test",
      line: 7,
      column: 13,
      message: 'the action for "x.test" must be a string',
      expected: "allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough",
    },
    {
      key: "github.com.",
      line: 9,
      column: 3,
      message: 'duplicate pattern "github.com." (same as "GitHub.com.", first at 8:3)',
    },
    {
      key: "h.test",
      line: 10,
      column: 13,
      message:
        'action "allow-url" for "h.test" needs a URL pattern like "https://h.test/path"; use "allow-domain" or "allow" for a host',
    },
  ]);
});

Deno.test("parseRules: syntax errors say what was expected", async () => {
  const missingComma = parseRules(
    await Deno.readTextFile(new URL("corrupt_syntax.json", DATA)),
  ).problems;
  assert.deepEqual(missingComma[0], { line: 3, column: 3, message: 'expected "," or "}"' });

  const truncated = parseRules(
    await Deno.readTextFile(new URL("corrupt_truncated.json", DATA)),
  ).problems;
  assert.deepEqual(truncated, [
    { line: 4, column: 1, message: 'expected "}" to close the object' },
  ]);

  assert.deepEqual(parseRules('["github.com"]').problems, [{
    line: 1,
    column: 1,
    message: 'expected a JSON object mapping patterns to actions, like {"github.com": "allow"}',
  }]);
  assert.deepEqual(parseRules('{"a.test": "allow"} {}').problems[0], {
    line: 1,
    column: 21,
    message: 'expected the end of the file after the closing "}"',
  });
  assert.deepEqual(parseRules('{"a.test": allow}').problems[0], {
    line: 1,
    column: 12,
    message: 'unexpected "allow" (strings need double quotes)',
  });
  assert.equal(
    parseRules('{"a.test": "allow}').problems[0].message,
    "unterminated string: expected a closing double quote",
  );
  assert.equal(
    parseRules('{"a.test" "allow"}').problems[0].message,
    'expected ":" after the pattern',
  );
  assert.equal(parseRules("{/* x").problems[0].message, 'unterminated comment: expected "*/"');
  assert.deepEqual(parseRules("{'a': 'allow'}").problems, [
    { line: 1, column: 2, message: `unexpected "'a'" (strings need double quotes)` },
  ]);
  assert.equal(
    parseRules('{"a.test": "allow",,}').problems[0].message,
    "expected a pattern in double quotes",
  );
  // Independent syntax errors on different lines are all reported.
  assert.deepEqual(
    parseRules('{\n "a.test": "allow"\n "b.test": "allow"\n "c.test": "allow"\n}').problems.map(
      (p) => `${p.line}:${p.column} ${p.message}`,
    ),
    ['3:2 expected "," or "}"', '4:2 expected "," or "}"'],
  );
});

Deno.test("RulesFileError: user-ready message with file and position", () => {
  const { problems } = parseRules('{\n  "github.com": "alow"\n}');
  const one = new RulesFileError("/x/network-rules.json", problems);
  assert.equal(
    one.message,
    'Cannot load rules "/x/network-rules.json": unknown action "alow" for "github.com" at 2:17 ' +
      "(expected allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough)",
  );
  assert.equal(one.file, "/x/network-rules.json");
  const two = new RulesFileError(
    "r.json",
    parseRules('{"*x": "allow", "y": "no"}').problems,
    "import",
  );
  assert.equal(
    two.message,
    'Cannot import rules "r.json": 2 problems:\n' +
      '  invalid pattern "*x": a wildcard is "*." followed by a domain, like "*.x" at 1:2\n' +
      '  unknown action "no" for "y" at 1:22 (expected allow-domain, deny-domain, allow-url, ' +
      "deny-url, allow, deny or passthrough)",
  );
  const io = new RulesFileError("r.json", [], "read", new Deno.errors.PermissionDenied("x"));
  assert.equal(io.message, 'Cannot read rules "r.json": permission denied');
});
