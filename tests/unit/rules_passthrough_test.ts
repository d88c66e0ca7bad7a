/**
 * The `passthrough` action: validation, decisions, `RuleSet.isPassthrough`
 * precedence, deny URL rules overriding it, warnings, and how `netmonitor run`
 * combines it with `--passthrough` (TunnelPassthrough, decideInterceptedTunnel).
 */
import assert from "node:assert/strict";
import { decideInterceptedTunnel, decideUndecrypted, TunnelPassthrough } from "../../cli/run.ts";
import type { DecideInput } from "../../lib/proxy/mod.ts";
import {
  ACTION_LIST,
  makeRule,
  parseRules,
  RuleError,
  RuleSet,
  ruleWarnings,
  STORED_ACTIONS,
} from "../../lib/rules/mod.ts";
import { PassthroughList } from "../../lib/tls/intercept.ts";

function ruleSet(obj: Record<string, string>): RuleSet {
  return new RuleSet(Object.entries(obj).map(([p, a]) => makeRule(p, a)));
}

/** A live-rules stand-in: what RulesStore offers (`current`), swappable like a reload. */
function liveRules(obj: Record<string, string>): { current: RuleSet } {
  return { current: ruleSet(obj) };
}

function connectInput(host: string, port = 443): DecideInput {
  return { method: "CONNECT", target: { scheme: "https", host, port }, client: "127.0.0.1:50000" };
}

Deno.test("passthrough: a stored action for host, wildcard, IP and host:port patterns", () => {
  assert.ok(STORED_ACTIONS.includes("passthrough"));
  assert.equal(
    ACTION_LIST,
    "allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough",
  );
  const cases: Array<[string, string]> = [
    ["pinned.test", "host"],
    ["*.googleapis.com", "wildcard"],
    ["pinned.test:8443", "host"],
    ["*.example.com:8443", "wildcard"],
    ["10.0.0.1", "host"],
    ["[::1]:8443", "host"],
  ];
  for (const [pattern, kind] of cases) {
    assert.deepEqual(makeRule(pattern, "passthrough"), {
      pattern,
      action: "passthrough",
      kind,
      verdict: "allow",
    }, pattern);
  }
});

Deno.test("passthrough: URL patterns and the catch-all are rejected with a clear message", () => {
  assert.throws(() => makeRule("https://pinned.test/api", "passthrough"), {
    name: "RuleError",
    message: 'action "passthrough" for "https://pinned.test/api" needs a host pattern like ' +
      '"pinned.test": HTTPS is relayed undecrypted per host, never per URL',
  });
  for (const star of ["*", "*:443"]) {
    assert.throws(() => makeRule(star, "passthrough"), (e: unknown) => {
      assert.ok(e instanceof RuleError);
      assert.equal(e.part, "action");
      assert.equal(
        e.message,
        `action "passthrough" cannot apply to "${star}": it would allow everything and decrypt ` +
          `nothing; name the hosts ("*.example.com": "passthrough"), or run with --no-intercept`,
      );
      return true;
    });
  }
  // Malformed patterns are still rejected as patterns.
  assert.throws(() => makeRule("*pinned.test", "passthrough"), /invalid pattern "\*pinned\.test"/);
  // Case matters for actions, as for the others.
  assert.throws(() => makeRule("pinned.test", "Passthrough"), {
    message: `unknown action "Passthrough" for "pinned.test" (expected ${ACTION_LIST})`,
  });
});

Deno.test("passthrough: a rules file with it loads; problems point at the action", () => {
  const text = `{
  // the original design's entries load unchanged next to ours
  "github.com": "allow-domain",
  "pinned.test": "passthrough",
  "*.googleapis.com": "passthrough",
  "https://pinned.test/x": "passthrough",
  "*": "passthrough"
}`;
  const { rules, problems } = parseRules(text);
  assert.deepEqual(rules.map((r) => [r.pattern, r.action, r.verdict]), [
    ["github.com", "allow-domain", "allow"],
    ["pinned.test", "passthrough", "allow"],
    ["*.googleapis.com", "passthrough", "allow"],
  ]);
  assert.deepEqual(problems.map((p) => [p.key, p.line, p.column]), [
    ["https://pinned.test/x", 6, 28],
    ["*", 7, 8],
  ]);
  assert.match(problems[0].message, /needs a host pattern like "pinned\.test"/);
  assert.match(problems[1].message, /cannot apply to "\*"/);
});

Deno.test("passthrough: decide() allows by the rule, with its reason", () => {
  const set = ruleSet({ "pinned.test": "passthrough", "*.g.test": "passthrough", "*": "deny" });
  for (const [host, pattern] of [["pinned.test", "pinned.test"], ["a.b.g.test", "*.g.test"]]) {
    for (const path of [undefined, "/any/path?q=1"]) {
      const d = set.decide({ scheme: "https", host, port: 443, path });
      assert.equal(d.action, "allow");
      assert.equal(d.reason, `rule "${pattern}": passthrough`);
      assert.equal(d.rule?.action, "passthrough");
    }
  }
  // Plain HTTP to a passthrough host is allowed by the same host rule.
  assert.equal(
    set.decide({ scheme: "http", host: "pinned.test", port: 80, path: "/" }).action,
    "allow",
  );
  assert.equal(set.decide({ scheme: "https", host: "g.test", port: 443 }).reason, 'rule "*": deny');
});

Deno.test("isPassthrough: the most specific host-level rule decides, as in decide()", () => {
  const set = ruleSet({
    "*.example.com": "passthrough",
    "a.example.com": "deny-domain",
    "b.example.com": "allow-domain",
    "*.x.example.com": "deny",
    "*.y.example.com": "allow",
    "p.test:8443": "passthrough",
    "q.test": "passthrough",
    "q.test:9443": "allow",
    "10.0.0.1": "passthrough",
    "[::1]:8443": "passthrough",
    "*": "deny",
  });
  const cases: Array<[string, number, boolean]> = [
    ["c.example.com", 443, true],
    ["deep.c.example.com", 8443, true],
    ["C.Example.COM.", 443, true], // normalised
    ["example.com", 443, false], // a wildcard never covers its apex: "*" denies
    ["evilexample.com", 443, false],
    ["example.com.evil.test", 443, false],
    ["a.example.com", 443, false], // exact deny-domain beats the wildcard passthrough
    ["b.example.com", 443, false], // exact allow-domain too: it is intercepted
    ["z.x.example.com", 443, false], // the longer wildcard wins
    ["z.y.example.com", 443, false],
    ["p.test", 8443, true],
    ["p.test", 443, false], // a port-specific passthrough covers that port only
    ["q.test", 443, true],
    ["q.test", 9443, false], // a port-specific rule beats the port-less passthrough
    ["10.0.0.1", 443, true],
    ["167772161", 443, true], // the same IP in another spelling
    ["[::1]", 8443, true],
    ["::1", 8443, true],
    ["[::1]", 443, false],
    ["other.test", 443, false],
    ["", 443, false], // unusable hosts and ports are never passthrough
    ["a b", 443, false],
    ["c.example.com", 0, false],
    ["c.example.com", 70000, false],
  ];
  for (const [host, port, want] of cases) {
    assert.equal(set.isPassthrough(host, port), want, `${host}:${port}`);
  }
  // The tunnel the exact deny-domain beats is denied, not relayed.
  assert.deepEqual(
    set.decide({ scheme: "https", host: "a.example.com", port: 443 }).reason,
    'rule "a.example.com": deny-domain',
  );
  assert.equal(RuleSet.empty.isPassthrough("c.example.com", 443), false);
  assert.equal(ruleSet({ "*": "allow" }).isPassthrough("c.example.com", 443), false);
});

Deno.test("isPassthrough: a deny URL rule keeps its host:port decrypted (fail closed)", () => {
  const set = ruleSet({
    "*.example.com": "passthrough",
    "https://g.example.com/secret": "deny",
    "http://h.example.com/x": "deny-url", // its https twin on 443 is denied too
    "http://k.example.com:8080/x": "deny", // plain HTTP on 8080: its tunnels are decrypted too
    "https://ok.example.com/fine": "allow", // an allow does not need decryption
  });
  const cases: Array<[string, number, boolean, boolean]> = [
    // host, port, isPassthrough, hasDenyUrlRulesFor
    ["g.example.com", 443, false, true],
    ["G.EXAMPLE.COM.", 443, false, true],
    ["g.example.com", 8443, true, false],
    ["h.example.com", 443, false, true],
    // A tunnel to an http:// deny URL rule's port could carry plain HTTP.
    ["h.example.com", 80, false, true],
    ["k.example.com", 8080, false, true],
    ["k.example.com", 8081, true, false],
    ["ok.example.com", 443, true, false],
    ["other.example.com", 443, true, false],
  ];
  for (const [host, port, pass, deny] of cases) {
    assert.equal(set.isPassthrough(host, port), pass, `isPassthrough ${host}:${port}`);
    assert.equal(set.hasDenyUrlRulesFor(host, port), deny, `hasDenyUrlRulesFor ${host}:${port}`);
  }
  // Decrypted, the deny applies and the rest is allowed by the passthrough rule.
  const at = (host: string, path: string) => set.decide({ scheme: "https", host, port: 443, path });
  assert.equal(at("g.example.com", "/secret").reason, 'rule "https://g.example.com/secret": deny');
  assert.equal(at("g.example.com", "/other").reason, 'rule "*.example.com": passthrough');
  assert.equal(at("h.example.com", "/x").action, "deny");
  assert.deepEqual(
    set.httpsDenyTargets().map((t) => `${t.host}:${t.port} ${t.rule.pattern}`).sort(),
    [
      "g.example.com:443 https://g.example.com/secret",
      "h.example.com:443 http://h.example.com/x",
      "h.example.com:80 http://h.example.com/x",
      "k.example.com:8080 http://k.example.com:8080/x",
    ],
  );
});

Deno.test("warnings: URL rules that a passthrough rule affects", () => {
  const set = ruleSet({
    "*.example.com": "passthrough",
    "https://g.example.com/secret": "deny",
    "https://g.example.com/open": "allow", // g is decrypted for the deny: this can match
    "https://ok.example.com/fine": "allow",
    "https://ok.example.com/also": "allow-url",
    "http://ok.example.com/plain": "allow", // plain HTTP is never relayed blind
    "a.example.com": "allow",
    "https://a.example.com/x": "allow", // a's host rule is not passthrough
  });
  assert.deepEqual(set.warnings().map((w) => [w.rule.pattern, w.related?.pattern, w.message]), [
    [
      "https://g.example.com/secret",
      "*.example.com",
      'rule "*.example.com": passthrough does not apply to g.example.com:443: the deny URL rule ' +
      '"https://g.example.com/secret" needs its HTTPS decrypted, so g.example.com:443 is intercepted',
    ],
    [
      "https://ok.example.com/fine",
      "*.example.com",
      'URL rule "https://ok.example.com/fine" never matches HTTPS: rule "*.example.com": ' +
      "passthrough relays ok.example.com:443 undecrypted (and allows every request to it)",
    ],
    [
      "https://ok.example.com/also",
      "*.example.com",
      'URL rule "https://ok.example.com/also" never matches HTTPS: rule "*.example.com": ' +
      "passthrough relays ok.example.com:443 undecrypted (and allows every request to it)",
    ],
  ]);
  assert.deepEqual(ruleSet({ "https://x.test/a": "deny", "x.test": "allow" }).warnings(), []);
});

Deno.test("ruleWarnings: at the key of the rule concerned, valid entries only", () => {
  const text = `{
  "pinned.test": "passthrough",
  // conflicts with the passthrough above
    "https://pinned.test/admin": "deny",
  "https://pinned.test/x": "nonsense"
}`;
  assert.equal(parseRules(text).problems.length, 1);
  const warnings = ruleWarnings(text);
  assert.equal(warnings.length, 1);
  assert.deepEqual(
    { key: warnings[0].key, line: warnings[0].line, column: warnings[0].column },
    { key: "https://pinned.test/admin", line: 4, column: 5 },
  );
  assert.match(warnings[0].message, /passthrough does not apply to pinned\.test:443/);
  assert.deepEqual(ruleWarnings('{"pinned.test": "passthrough"}'), []);
  assert.deepEqual(ruleWarnings("not json"), []);
});

Deno.test("TunnelPassthrough: --passthrough and live rules, deny URL rules override both", () => {
  const rules = liveRules({ "pinned.test": "passthrough", "*.flag.test": "deny" });
  const p = new TunnelPassthrough(new PassthroughList(["flagged.test", "*.flag.test"]), rules);
  assert.equal(p.isPassthrough("pinned.test", 443), true); // by rule
  assert.equal(p.isPassthrough("flagged.test", 443), true); // by flag
  assert.equal(p.isPassthrough("a.flag.test", 443), true); // by flag (its rule denies the CONNECT)
  assert.equal(p.isPassthrough("other.test", 443), false);

  // A reload applies to the next call.
  rules.current = ruleSet({
    "other.test": "passthrough",
    "https://flagged.test/secret": "deny",
    "https://pinned.test/admin": "deny",
  });
  assert.equal(p.isPassthrough("other.test", 443), true);
  assert.equal(p.isPassthrough("pinned.test", 443), false); // no longer a passthrough rule
  assert.equal(p.isPassthrough("flagged.test", 443), false); // the deny URL rule wins over the flag
  assert.equal(p.isPassthrough("flagged.test", 8443), true);
  assert.deepEqual(p.warnings(rules.current), [
    '--passthrough does not apply to flagged.test:443: the deny URL rule "https://flagged.test/secret" ' +
    "needs its tunnels decrypted, so flagged.test:443 is intercepted",
  ]);
  rules.current = ruleSet({ "*.example.com": "passthrough", "https://a.example.com/x": "deny" });
  assert.equal(p.warnings(rules.current).length, 1);
  assert.match(
    p.warnings(rules.current)[0],
    /^rule "\*\.example\.com": passthrough does not apply/,
  );
});

Deno.test("TunnelPassthrough.mayRelayDecided: relays only what the rules allow at host level", () => {
  const rules = liveRules({ "pinned.test": "passthrough", "denied.test": "deny" });
  const p = new TunnelPassthrough(new PassthroughList(["flagged.test", "denied.test"]), rules);
  assert.equal(p.mayRelayDecided("pinned.test", 443), true);
  // A flagged host no rule allows: a tunnel decided as a decrypted one stays decrypted.
  assert.equal(p.mayRelayDecided("flagged.test", 443), false);
  assert.equal(p.mayRelayDecided("denied.test", 443), false);
  rules.current = ruleSet({ "flagged.test": "allow" });
  assert.equal(p.mayRelayDecided("flagged.test", 443), true);
  assert.equal(p.mayRelayDecided("pinned.test", 443), false);
});

Deno.test("decideInterceptedTunnel: a passthrough host is decided by its rule, not per request", () => {
  const rules = liveRules({
    "*.example.com": "passthrough",
    "a.example.com": "deny-domain",
    "https://ok.example.com/fine": "allow",
    "https://g.example.com/secret": "deny",
  });
  const decide = (host: string) => decideInterceptedTunnel(rules, connectInput(host));
  // URL rules exist for ok.example.com, but it is passthrough: the host rule decides.
  assert.deepEqual(
    (({ action, source, reason }) => ({ action, source, reason }))(decide("ok.example.com")),
    { action: "allow", source: "rule", reason: 'rule "*.example.com": passthrough' },
  );
  assert.equal(decide("ok.example.com").rule?.action, "passthrough");
  assert.deepEqual([decide("a.example.com").action, decide("a.example.com").reason], [
    "deny",
    'rule "a.example.com": deny-domain',
  ]);
  // g.example.com is decrypted for its deny URL rule: each request is decided on its own.
  assert.deepEqual([decide("g.example.com").action, decide("g.example.com").source], [
    "allow",
    "policy",
  ]);
});

Deno.test("decideUndecrypted (--no-intercept): a deny URL rule that lands while a CONNECT waits still denies it", async () => {
  const rules = liveRules({});
  const input = connectInput("pinned.test");
  // The CONNECT waits for a prompt; meanwhile a deny URL rule for its host is added.
  const answered = await decideUndecrypted(rules, input, () => {
    rules.current = ruleSet({ "https://pinned.test/secret": "deny" });
    return Promise.resolve({ action: "allow", source: "prompt", reason: "allowed once" });
  });
  assert.equal(answered.action, "deny");
  assert.equal(answered.source, "policy");
  assert.match(
    answered.reason,
    /deny URL rule "https:\/\/pinned\.test\/secret" needs HTTPS decrypted/,
  );
  // Without such a rule the answer stands; a rule there from the start denies without asking.
  rules.current = ruleSet({});
  const allowed = await decideUndecrypted(
    rules,
    input,
    () => Promise.resolve({ action: "allow", source: "prompt", reason: "allowed once" }),
  );
  assert.equal(allowed.action, "allow");
  rules.current = ruleSet({ "https://pinned.test/secret": "deny" });
  let asked = false;
  const refused = await decideUndecrypted(rules, input, () => {
    asked = true;
    return Promise.resolve({ action: "allow", source: "prompt", reason: "allowed once" });
  });
  assert.deepEqual([refused.action, asked], ["deny", false]);
});
