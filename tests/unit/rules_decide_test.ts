import assert from "node:assert/strict";
import { makeRule, parseRules, type RequestTarget, RuleSet } from "../../lib/rules/mod.ts";
import { canonicalPathQuery, loosePath } from "../../lib/rules/pattern.ts";

const DATA = new URL("../testdata/rules/", import.meta.url);

function ruleSet(obj: Record<string, string>): RuleSet {
  return new RuleSet(Object.entries(obj).map(([p, a]) => makeRule(p, a)));
}

/** Parses "https://host:port/path" (or "host:port" for a tunnel without a path) into a target. */
function target(spec: string): RequestTarget {
  const m = /^(?:(https?):\/\/)?([^/]+?)(?::(\d+))?(\/.*)?$/.exec(spec);
  if (!m) throw new Error(`bad target ${spec}`);
  const scheme = (m[1] ?? "https") as "http" | "https";
  const port = m[3] ? Number(m[3]) : scheme === "https" ? 443 : 80;
  return { scheme, host: m[2], port, path: m[4] };
}

/** [target, expected action, expected matching pattern or undefined for "no rule"] */
type Case = [string, "allow" | "deny" | "ask", string | undefined];

function check(rules: RuleSet, cases: Case[]) {
  for (const [spec, action, pattern] of cases) {
    const d = rules.decide(target(spec));
    const want = pattern === undefined
      ? "no rule"
      : `rule "${pattern}": ${rules.rules.find((r) => r.pattern === pattern)!.action}`;
    assert.deepEqual({ action: d.action, reason: d.reason }, { action, reason: want }, spec);
    assert.equal(d.rule?.pattern, pattern, spec);
  }
}

Deno.test("precedence: every step, most specific first", () => {
  const rules = ruleSet({
    "*": "deny",
    "*.example.com": "allow",
    "*.api.example.com": "deny",
    "host.api.example.com": "allow",
    "https://host.api.example.com/secret": "deny",
    "https://www.example.com/open": "allow",
  });
  check(rules, [
    // 1. exact URL beats exact host
    ["https://host.api.example.com/secret", "deny", "https://host.api.example.com/secret"],
    // 2. exact host beats every wildcard
    ["https://host.api.example.com/other", "allow", "host.api.example.com"],
    // 3. longest wildcard beats a shorter one
    ["https://x.api.example.com/", "deny", "*.api.example.com"],
    ["https://a.b.api.example.com/", "deny", "*.api.example.com"],
    ["https://www.example.com/", "allow", "*.example.com"],
    // an exact URL beats a wildcard and "*" as well
    ["https://www.example.com/open", "allow", "https://www.example.com/open"],
    // 4. "*" when nothing else matches; a wildcard never matches its apex
    ["https://example.com/", "deny", "*"],
    ["https://api.example.com/", "allow", "*.example.com"],
    ["https://other.test/", "deny", "*"],
    // a tunnel without a path cannot match URL rules: host rules decide
    ["host.api.example.com:443", "allow", "host.api.example.com"],
  ]);
  // 5. no rule at all: ask
  check(ruleSet({ "*.example.com": "allow" }), [["https://other.test/", "ask", undefined]]);
  check(RuleSet.empty, [["https://github.com/", "ask", undefined]]);
});

Deno.test("precedence: ports", () => {
  const rules = ruleSet({
    "example.com": "allow",
    "example.com:8443": "deny",
    "*.example.com:8080": "deny",
    "*.example.com": "allow",
    "*:25": "deny",
    "[::1]:8080": "allow",
  });
  check(rules, [
    ["https://example.com/", "allow", "example.com"],
    ["http://example.com:8080/", "allow", "example.com"], // port-less host matches any port
    ["https://example.com:8443/", "deny", "example.com:8443"],
    ["http://a.example.com:8080/", "deny", "*.example.com:8080"],
    ["http://a.example.com:8081/", "allow", "*.example.com"],
    ["http://mail.test:25/", "deny", "*:25"],
    ["http://mail.test:26/", "ask", undefined],
    ["http://[::1]:8080/", "allow", "[::1]:8080"],
    ["http://[::1]:8081/", "ask", undefined],
  ]);
});

Deno.test("normalisation: a request in any spelling meets the rule", () => {
  const rules = ruleSet({
    "github.com": "deny",
    "*.bücher.de": "deny",
    "127.0.0.1": "deny",
    "[::1]": "deny",
    "Example.ORG.": "deny",
  });
  check(rules, [
    ["https://GitHub.com/", "deny", "github.com"],
    ["https://github.com./", "deny", "github.com"],
    ["https://GITHUB.COM./", "deny", "github.com"],
    ["https://shop.xn--bcher-kva.de/", "deny", "*.bücher.de"],
    ["https://shop.BÜCHER.de/", "deny", "*.bücher.de"],
    ["http://0x7f.1/", "deny", "127.0.0.1"],
    ["http://2130706433/", "deny", "127.0.0.1"],
    ["http://0177.0.0.1/", "deny", "127.0.0.1"],
    ["http://[::ffff:127.0.0.1]/", "deny", "127.0.0.1"],
    ["http://[0:0:0:0:0:0:0:1]/", "deny", "[::1]"],
    ["https://example.org/", "deny", "Example.ORG."],
  ]);
});

Deno.test("an IPv6 address carrying a denied IPv4 one is denied; allows are not widened", () => {
  const rules = ruleSet({
    "*": "allow",
    "10.0.0.1": "deny",
    "10.0.0.2": "allow",
    "[64:ff9b::a00:3]": "allow",
    "10.0.0.3": "deny",
  });
  check(rules, [
    ["http://[64:ff9b::10.0.0.1]/", "deny", "10.0.0.1"], // NAT64
    ["http://[::10.0.0.1]/", "deny", "10.0.0.1"], // IPv4-compatible
    ["http://[::ffff:0:10.0.0.1]/", "deny", "10.0.0.1"], // IPv4-translated
    ["http://[2002:a00:1::]/", "deny", "10.0.0.1"], // 6to4
    ["http://[64:ff9b::10.0.0.9]/", "allow", "*"],
    ["http://[64:ff9b::a00:3]/", "deny", "10.0.0.3"], // deny wins over an allow of the other reading
  ]);
  const strict = ruleSet({ "10.0.0.2": "allow" });
  // An allow for the IPv4 host does not allow its IPv6 spellings.
  check(strict, [["http://[64:ff9b::10.0.0.2]/", "ask", undefined]]);
});

Deno.test("an IPv6 address carrying an IPv4 one is denied by that host's deny URL rules too", () => {
  const rules = ruleSet({
    "*": "allow",
    "http://10.0.0.1/admin": "deny",
    "https://10.0.0.1/admin": "allow",
    "https://10.0.0.2/ok": "allow",
    "[64:ff9b::a00:1]": "passthrough",
  });
  check(rules, [
    ["http://10.0.0.1/admin", "deny", "http://10.0.0.1/admin"],
    ["http://[64:ff9b::10.0.0.1]/admin", "deny", "http://10.0.0.1/admin"], // NAT64
    ["http://[::10.0.0.1]/admin", "deny", "http://10.0.0.1/admin"], // IPv4-compatible
    ["http://[2002:a00:1::]/admin", "deny", "http://10.0.0.1/admin"], // 6to4
    ["http://[2002:a00:1::]/x/../admin?q", "deny", "http://10.0.0.1/admin"],
    ["http://[2002:a00:1::]/other", "allow", "*"],
    // Allows are not widened.
    ["https://[2002:a00:2::]/ok", "allow", "*"],
  ]);
  // Its tunnels stay decrypted so that the deny is enforced (the https twin of the http deny).
  assert.equal(rules.isPassthrough("[64:ff9b::a00:1]", 443), false);
  assert.equal(rules.denyUrlRuleFor("[64:ff9b::a00:1]", 443)?.pattern, "http://10.0.0.1/admin");
  assert.equal(rules.denyUrlRuleFor("[64:ff9b::a00:1]", 8443), undefined);
});

Deno.test("wildcards never match by plain suffix, nor the apex", () => {
  const rules = ruleSet({ "*.github.com": "allow" });
  check(rules, [
    ["https://api.github.com/", "allow", "*.github.com"],
    ["https://a.b.c.github.com/", "allow", "*.github.com"],
    ["https://github.com/", "ask", undefined],
    ["https://evilgithub.com/", "ask", undefined],
    ["https://github.com.evil.com/", "ask", undefined],
    ["https://api.github.com.evil.com/", "ask", undefined],
    ["https://xgithub.com/", "ask", undefined],
  ]);
});

Deno.test("URL rules: default ports, host case, exact path and query", () => {
  const rules = ruleSet({
    "https://API.example.com:443/v1/items?id=1": "allow-url",
    "https://api.example.com/v1/Admin": "deny-url",
    "http://api.example.com:8080/x": "allow",
  });
  check(rules, [
    ["https://api.example.com/v1/items?id=1", "allow", "https://API.example.com:443/v1/items?id=1"],
    [
      "https://api.example.com:443/v1/items?id=1",
      "allow",
      "https://API.example.com:443/v1/items?id=1",
    ],
    // allow is exact: another query, no query or another path is not covered
    ["https://api.example.com/v1/items?id=2", "ask", undefined],
    ["https://api.example.com/v1/items", "ask", undefined],
    ["https://api.example.com/v1/items/", "ask", undefined],
    // a deny URL rule ignores letter case (Express routes, IIS paths do)
    ["https://api.example.com/v1/Admin", "deny", "https://api.example.com/v1/Admin"],
    ["https://api.example.com/v1/admin", "deny", "https://api.example.com/v1/Admin"],
    // explicit non-default port
    ["http://api.example.com:8080/x", "allow", "http://api.example.com:8080/x"],
    ["http://api.example.com/x", "ask", undefined],
    ["https://api.example.com:8080/x", "ask", undefined],
  ]);
  assert.equal(rules.hasUrlRulesFor("api.example.com", 443), true);
  assert.equal(rules.hasUrlRulesFor("API.Example.com.", 443), true);
  assert.equal(rules.hasUrlRulesFor("api.example.com", 8080), true);
  assert.equal(rules.hasUrlRulesFor("api.example.com", 8443), false);
  assert.equal(rules.hasUrlRulesFor("example.com", 443), false);
  // The deny on https's default port also covers plain http on port 80.
  assert.equal(rules.hasUrlRulesFor("api.example.com", 80), true);
});

Deno.test("URL rules: a deny-url cannot be dodged by another spelling", () => {
  const rules = ruleSet({
    "github.com": "allow",
    "https://github.com/api/sensitive": "deny",
  });
  const deny = "https://github.com/api/sensitive";
  check(rules, [
    ["https://github.com/api/sensitive", "deny", deny],
    ["https://github.com//api//sensitive", "deny", deny],
    ["https://github.com/api/./sensitive", "deny", deny],
    ["https://github.com/api/x/../sensitive", "deny", deny],
    ["https://github.com/api/x/%2e%2e/sensitive", "deny", deny],
    ["https://github.com/api/x/%2E./sensitive", "deny", deny],
    ["https://github.com/api/%2e/sensitive", "deny", deny],
    ["https://github.com/api/x//../sensitive", "deny", deny],
    ["https://github.com/api\\sensitive", "deny", deny],
    ["https://github.com/api/%73ensitive", "deny", deny],
    ["https://github.com/%61pi/SENSITIVE", "deny", deny], // case-insensitive servers
    ["https://github.com/api/sensitive?", "deny", deny],
    ["https://github.com/api/sensitive#frag", "deny", deny],
    ["https://github.com/api/sensitive?any=thing", "deny", deny],
    ["http://github.com/api/sensitive", "deny", deny],
    ["https://GITHUB.com./api/sensitive", "deny", deny],
    ["https://github.com/api/sensitive/", "deny", deny], // a trailing slash: Express, Rails
    ["https://github.com/api/sensitive2", "allow", "github.com"],
    // nginx decodes %2F (and %5C) before merging slashes and resolving dot segments.
    ["https://github.com/api%2Fsensitive", "deny", deny],
    ["https://github.com/%2Fapi/sensitive", "deny", deny],
    ["https://github.com/x%2F..%2Fapi/sensitive", "deny", deny],
    ["https://github.com/x/..%2fapi/sensitive", "deny", deny],
    ["https://github.com/api%5Csensitive?q=1", "deny", deny],
    ["https://github.com/api%2Fsensitive2", "allow", "github.com"],
    ["https://github.com/api/sensitive2?x=%2Fapi%2Fsensitive", "allow", "github.com"], // query: no
  ]);
});

Deno.test("URL rules: a deny-url also matches what servers other than nginx serve as it", () => {
  const rules = ruleSet({
    "h.test": "allow",
    "https://h.test/manager/html": "deny",
    "https://h.test/Dir/": "deny",
    "https://h.test/api?x=1": "deny",
    "https://h.test/api?x=1&safe": "allow",
  });
  const deny = "https://h.test/manager/html";
  check(rules, [
    // Tomcat, Jetty, Spring: path parameters end a segment, before `..` is resolved.
    ["https://h.test/manager/html;jsessionid=1", "deny", deny],
    ["https://h.test/manager;x/html", "deny", deny],
    ["https://h.test/x/..;/manager/html", "deny", deny],
    ["https://h.test/x/..;x/manager/html", "deny", deny],
    ["https://h.test/a/b/..;/..;/manager/html", "deny", deny],
    ["https://h.test/x/..%3B/manager/html", "deny", deny], // %3B is ; (an over-match)
    ["https://h.test/manager/html%00.jsp", "deny", deny],
    // Trailing slashes (Express, Rails, ASP.NET Core; Python's http.server for %2F).
    ["https://h.test/manager/html/", "deny", deny],
    ["https://h.test/manager/html%2F", "deny", deny],
    ["https://h.test/manager/html%2F.", "deny", deny],
    ["https://h.test/manager/html//", "deny", deny],
    ["https://h.test/Dir", "deny", "https://h.test/Dir/"],
    // Letter case (Express, IIS), trailing dots and white space (Windows, IIS).
    ["https://h.test/MANAGER/Html", "deny", deny],
    ["https://h.test/dir/", "deny", "https://h.test/Dir/"],
    ["https://h.test/manager/html.", "deny", deny],
    ["https://h.test/manager/html%20", "deny", deny],
    ["https://h.test/manager./html%09", "deny", deny],
    ["https://h.test/x/..%20/manager/html", "deny", deny],
    // The query is still compared as before; an exact allow still wins.
    ["https://h.test/API/?x=1", "deny", "https://h.test/api?x=1"],
    ["https://h.test/API/?x=2", "allow", "h.test"],
    ["https://h.test/api?x=1&safe", "allow", "https://h.test/api?x=1&safe"],
    ["https://h.test/API?x=1&safe", "allow", "h.test"],
    // Other resources stay other resources.
    ["https://h.test/manager/html2", "allow", "h.test"],
    ["https://h.test/manager/html/x", "allow", "h.test"],
    ["https://h.test/manager/.html", "allow", "h.test"],
    ["https://h.test/manager/ht;ml", "allow", "h.test"],
    ["https://h.test/x/...;/manager/html", "allow", "h.test"],
  ]);
  // Plain http on port 80 too, and in the reading with %2F decoded.
  check(rules, [
    ["http://h.test/Manager/HTML/", "deny", deny],
    ["http://h.test/x%2F..;%2Fmanager/html", "deny", deny],
  ]);
  // An allow URL rule stays exact.
  const allow = ruleSet({ "https://h.test/a": "allow-url" });
  check(allow, [
    ["https://h.test/a", "allow", "https://h.test/a"],
    ["https://h.test/A", "ask", undefined],
    ["https://h.test/a/", "ask", undefined],
    ["https://h.test/a;x", "ask", undefined],
  ]);
});

Deno.test("URL rules: loosePath is idempotent and keeps a path a path", () => {
  for (const p of ["/;x/admin", "/..;/..;/a", "/a/.;/b", "/x/...;/a", "/%C3%A4/", "/", "/;x"]) {
    const once = loosePath(canonicalPathQuery(p).path);
    assert.equal(loosePath(once), once, p);
    assert.ok(once.startsWith("/") && !once.startsWith("//"), `${p}: ${once}`);
  }
  assert.equal(loosePath("/;x/admin"), "/admin");
  assert.equal(loosePath("//evil.test/Admin/"), "/evil.test/admin");
});

Deno.test("URL rules: percent-escapes compare canonically on both sides", () => {
  const rules = ruleSet({
    "https://h.test/~user/a%2fb?q=a+b&x=%7e": "deny",
    "https://h.test/caf%C3%A9": "allow",
  });
  const deny = "https://h.test/~user/a%2fb?q=a+b&x=%7e";
  check(rules, [
    ["https://h.test/%7Euser/a%2Fb?q=a%20b&x=~", "deny", deny],
    ["https://h.test/%7euser/a%2fb?q=a+b&x=%7E", "deny", deny],
    // %2F in a deny rule reads as / too (as nginx reads it): fail closed.
    ["https://h.test/~user/a/b?q=a+b&x=~", "deny", deny],
    ["https://h.test/~user/a%2Fb?q=a%2Bb&x=~", "ask", undefined], // %2B is a literal plus
    ["https://h.test/café", "allow", "https://h.test/caf%C3%A9"],
    ["https://h.test/caf%c3%a9", "allow", "https://h.test/caf%C3%A9"],
  ]);
});

Deno.test("URL rules: the most exact rule wins over a widened deny", () => {
  const rules = ruleSet({
    "https://h.test/api": "deny",
    "https://h.test/api?safe=1": "allow",
    "http://h.test/page": "allow",
    "https://h.test/page": "deny",
  });
  check(rules, [
    ["https://h.test/api?safe=1", "allow", "https://h.test/api?safe=1"],
    ["https://h.test/api?safe=1&more", "deny", "https://h.test/api"],
    ["https://h.test/api", "deny", "https://h.test/api"],
    ["http://h.test/page", "allow", "http://h.test/page"],
    ["https://h.test/page", "deny", "https://h.test/page"],
  ]);
});

Deno.test("invalid request hosts and ports are denied", () => {
  const rules = ruleSet({ "*": "allow" });
  for (const host of ["", "a b", "exa%6dple.com", "a..b"]) {
    const d = rules.decide({ scheme: "https", host, port: 443, path: "/" });
    assert.equal(d.action, "deny", host);
    assert.match(d.reason, /invalid host/);
  }
  for (const port of [0, 65536, 1.5, NaN]) {
    assert.equal(rules.decide({ scheme: "https", host: "a.test", port }).action, "deny");
  }
});

Deno.test("the original design's rules files load and decide as it says", async () => {
  const load = async (name: string) => {
    const { rules, problems } = parseRules(await Deno.readTextFile(new URL(name, DATA)));
    assert.deepEqual(problems, [], name);
    return new RuleSet(rules);
  };

  // The combined example.
  check(await load("design_issue.json"), [
    ["https://github.com/user/repo", "allow", "github.com"],
    ["https://api.github.com/repos/user/repo", "allow", "*.github.com"],
    ["https://suspicious-site.com/", "deny", "suspicious-site.com"],
    [
      "https://specific-endpoint.com/api/sensitive",
      "deny",
      "https://specific-endpoint.com/api/sensitive",
    ],
    ["https://specific-endpoint.com/api/other", "deny", "*"],
    ["https://anything-else.test/", "deny", "*"],
  ]);

  // "Rules File Format".
  check(await load("design_format.json"), [
    ["https://github.com/", "allow", "github.com"],
    ["https://api.openai.com/v1/chat", "allow", "api.openai.com"],
    ["https://suspicious-site.com/x", "deny", "suspicious-site.com"],
    [
      "https://specific-endpoint.com/api/sensitive",
      "deny",
      "https://specific-endpoint.com/api/sensitive",
    ],
    ["https://specific-endpoint.com/api/public", "ask", undefined],
    ["https://api.github.com/", "ask", undefined], // github.com does not cover subdomains
  ]);

  // "Whitelist Common Services".
  check(await load("design_whitelist.json"), [
    ["https://github.com/", "allow", "github.com"],
    ["https://raw.github.com/", "allow", "*.github.com"],
    ["https://pypi.org/simple/requests/", "allow", "pypi.org"],
    ["https://files.pythonhosted.org/packages/x.whl", "allow", "files.pythonhosted.org"],
    ["https://registry.npmjs.org/left-pad", "allow", "registry.npmjs.org"],
    ["https://npmjs.org/", "allow", "npmjs.org"],
    ["https://www.npmjs.org/", "ask", undefined],
    ["https://example.com/", "ask", undefined],
  ]);

  // "Block Telemetry/Analytics".
  check(await load("design_telemetry.json"), [
    ["https://analytics.google.com/collect", "deny", "analytics.google.com"],
    ["https://region1.analytics.google.com/g/collect", "deny", "*.analytics.google.com"],
    ["https://telemetry.microsoft.com/", "deny", "telemetry.microsoft.com"],
    ["https://v10.events.telemetry.microsoft.com/", "deny", "*.telemetry.microsoft.com"],
    ["https://google.com/", "ask", undefined],
  ]);

  // Example 2: "only GitHub and PyPI allowed".
  check(await load("design_restrict.json"), [
    ["https://github.com/", "allow", "github.com"],
    ["https://pypi.org/", "allow", "pypi.org"],
    ["https://files.pythonhosted.org/", "deny", "*"],
    ["https://api.github.com/", "deny", "*"],
  ]);
});

Deno.test("makeRule: short forms take their kind from the pattern", () => {
  assert.deepEqual(makeRule("github.com", "allow"), {
    pattern: "github.com",
    action: "allow",
    kind: "host",
    verdict: "allow",
  });
  assert.equal(makeRule("*.github.com", "deny").kind, "wildcard");
  assert.equal(makeRule("*", "deny").kind, "any");
  assert.equal(makeRule("https://h.test/x", "deny").kind, "url");
  assert.equal(makeRule("https://h.test/x", "allow-url").verdict, "allow");
  assert.equal(makeRule("10.0.0.1", "deny-domain").kind, "host");
});

Deno.test("URL rules: an allow matches only the URL as forwarded; a deny matches every spelling", () => {
  // [rule path, request path, allow-url decision, deny-url decision]
  const table: Array<[string, string, "allow" | "ask", ("deny" | "allow")?]> = [
    ["/a/b", "/a/b", "allow"],
    ["/a/b", "/a//b", "ask"],
    ["/a/b", "//a/b", "ask"],
    ["/a/b", "/a/b/", "ask"], // a deny ignores a trailing slash (Express, Rails, ...)
    ["/a/b", "/a/./b", "allow"], // forwarded as /a/b
    ["/a/b", "/a/x/../b", "allow"], // forwarded as /a/b
    ["/a/b", "/%61/b", "allow"], // unreserved escapes are decoded before forwarding
    ["/a;b", "/a;b", "allow"],
    ["/a;b", "/a%3Bb", "ask"],
    ["/a;b", "/a%3bb", "ask"],
    ["/a%3Bb", "/a%3bb", "allow"],
    ["/a%3Bb", "/a;b", "ask"],
    ["/s?q=a%20b", "/s?q=a%20b", "allow"],
    ["/s?q=a%20b", "/s?q=a+b", "ask"],
    ["/s?q=a+b", "/s?q=a+b", "allow"],
    ["/s?q=a+b", "/s?q=a%20b", "ask"],
    ["/s?q=a+b", "/s?q=a+b&more", "ask", "allow"], // a deny with a query names that query
    ["/~u", "/%7eu", "allow"],
    ["/caf%C3%A9", "/café", "allow"],
  ];
  for (const [rulePath, reqPath, want, wantDeny = "deny"] of table) {
    const url = `https://h.test${rulePath}`;
    const allow = ruleSet({ [url]: "allow-url" });
    const a = allow.decide({ scheme: "https", host: "h.test", port: 443, path: reqPath });
    assert.equal(a.action, want, `allow-url ${rulePath} vs ${reqPath}`);
    const deny = ruleSet({ [url]: "deny-url", "h.test": "allow" });
    const d = deny.decide({ scheme: "https", host: "h.test", port: 443, path: reqPath });
    assert.deepEqual(
      [d.action, d.rule?.pattern],
      [wantDeny, wantDeny === "deny" ? url : "h.test"],
      `deny-url ${rulePath} vs ${reqPath}`,
    );
  }
});

Deno.test("URL rules: a host rule decides what an allow-url does not match exactly", () => {
  const rules = ruleSet({
    "https://h.test/a/b": "allow-url",
    "h.test": "deny",
    "https://g.test/x": "allow",
    "g.test": "allow",
  });
  check(rules, [
    ["https://h.test/a/b", "allow", "https://h.test/a/b"],
    ["https://h.test/a//b", "deny", "h.test"],
    ["https://h.test//a/b", "deny", "h.test"],
    ["https://g.test//x", "allow", "g.test"],
  ]);
});

Deno.test("URL rules: of an allow and a deny with the same meaning, the later wins", () => {
  const denyLast = new RuleSet([
    makeRule("https://h.test/a/b", "allow-url"),
    makeRule("https://h.test/a//b", "deny-url"),
  ]);
  assert.equal(denyLast.decide(target("https://h.test/a/b")).action, "deny");
  assert.equal(denyLast.decide(target("https://h.test/a//b")).action, "deny");
  const allowLast = new RuleSet([
    makeRule("https://h.test/a//b", "deny-url"),
    makeRule("https://h.test/a/b", "allow-url"),
  ]);
  assert.equal(allowLast.decide(target("https://h.test/a/b")).action, "allow");
  // The deny's widening (any query) still covers other spellings.
  assert.equal(allowLast.decide(target("https://h.test/a//b")).action, "deny");
});

Deno.test("a deny URL rule spelled with %2F also denies the slashed path (servers decode it)", () => {
  const set = new RuleSet([makeRule("https://h.test/p%2Fq", "deny"), makeRule("h.test", "allow")]);
  const at = (path: string) =>
    set.decide({ scheme: "https", host: "h.test", port: 443, path }).action;
  for (const p of ["/p/q", "/p%2Fq", "/p%5Cq", "/p//q", "/p/q?x=1"]) assert.equal(at(p), "deny", p);
  // Its plain-http twin too.
  for (const p of ["/p/q", "/p%5Cq", "/p%2Fq"]) {
    assert.equal(
      set.decide({ scheme: "http", host: "h.test", port: 80, path: p }).action,
      "deny",
      p,
    );
  }
  for (const p of ["/p", "/p/r", "/q"]) assert.equal(at(p), "allow", p);
});

Deno.test("a URL rule means the URL a client requests for it: dot segments before slashes", () => {
  // RFC 3986 5.2.4 (and every client, and the proxy) read /x//../admin as
  // /x/admin: the empty segment is a segment. The rule denies that URL, the
  // one requested and forwarded, not /admin.
  const set = new RuleSet([
    makeRule("https://h.test/x//../admin", "deny"),
    makeRule("h.test", "allow"),
  ]);
  assert.equal(new URL("https://h.test/x//../admin").pathname, "/x/admin");
  check(set, [
    ["https://h.test/x/admin", "deny", "https://h.test/x//../admin"],
    ["https://h.test/x//admin", "deny", "https://h.test/x//../admin"],
    ["https://h.test/admin", "allow", "h.test"],
  ]);
});

Deno.test("a deny URL rule is read with %2F decoded and %5C kept, as nginx and Python on Unix do", () => {
  // nginx (on Unix) and Python's http.server decode %2F to "/" but %5C to a
  // plain backslash, which separates nothing: to both, /a%5Cb/..%2Fadmin is
  // /admin. Reading %5C as "/" too gave /a/admin, and the deny was dodged.
  const rules = ruleSet({ "h.test": "allow", "https://h.test/admin": "deny" });
  const deny = "https://h.test/admin";
  check(rules, [
    ["https://h.test/a%5Cb/..%2Fadmin", "deny", deny],
    ["https://h.test/a%5cb/..%2fadmin?x=1", "deny", deny],
    ["https://h.test/%25~%5Cx//..%2Fadmin", "deny", deny],
    ["https://h.test/x%5Cy%2F..%2Fadmin", "deny", deny],
    ["http://h.test/a%5Cb/..%2Fadmin", "deny", deny],
    // Servers that read %5C as a separator but keep %2F: a%2Fb is one segment.
    ["https://h.test/a%2Fb%5C..%5Cadmin", "deny", deny],
    // Still not over-reading: the backslash reading alone leaves a/admin here.
    ["https://h.test/a%5Cb/admin", "allow", "h.test"],
  ]);
  // A deny rule spelled with both escapes is read each way too.
  const both = ruleSet({ "h.test": "allow", "https://h.test/a%5Cb%2Fc": "deny" });
  const rule = "https://h.test/a%5Cb%2Fc";
  check(both, [
    ["https://h.test/a%5Cb/c", "deny", rule],
    ["https://h.test/a/b%2Fc", "deny", rule],
    ["https://h.test/a/b/c", "deny", rule],
  ]);
});
