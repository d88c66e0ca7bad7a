import assert from "node:assert/strict";
import {
  type BrokerEvent,
  type DecideInput,
  DecisionBroker,
  DEFAULT_MAX_PROMPTS_PER_CLIENT,
  timeoutReason,
} from "../../lib/decide/broker.ts";
import {
  type PendingRequest,
  type PromptAnswer,
  PromptClosedError,
  type PromptOutcome,
} from "../../lib/decide/types.ts";
import { RulesStore } from "../../lib/rules/mod.ts";
import type { StoreOptions } from "../../lib/rules/store.ts";
import type { RuleDecision, StoredAction } from "../../lib/rules/types.ts";

/**
 * The real rules store on a temp file. `saved()` is what the file holds now;
 * `breakFile()` makes the file invalid so the next save fails for real;
 * `otherTerminal()` is another process's store on the same file (`netmonitor
 * rules add`), whose edits this store sees only when it reads the file.
 */
async function tempRules(initial: Record<string, StoredAction> = {}, options?: StoreOptions) {
  const dir = await Deno.makeTempDir({ prefix: "nm-broker-" });
  const path = `${dir}/network-rules.json`;
  await Deno.writeTextFile(path, JSON.stringify(initial, null, 2));
  const store = new RulesStore(path, options);
  await store.load();
  return {
    store,
    path,
    otherTerminal: () => new RulesStore(path),
    async onFile(): Promise<[string, StoredAction][]> {
      return Object.entries(JSON.parse(await Deno.readTextFile(path)));
    },
    async saved(): Promise<[string, StoredAction][]> {
      const text = await Deno.readTextFile(path);
      return Object.entries(JSON.parse(text)).filter(([k]) => !(k in initial)) as [
        string,
        StoredAction,
      ][];
    },
    breakFile: () => Deno.writeTextFile(path, '{ "x.test": "alow" }'),
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

interface Ask {
  request: PendingRequest;
  signal: AbortSignal;
  answer(a: PromptAnswer): void;
}

/** A prompter the test answers by hand; records every ask in order. */
class HandPrompter {
  readonly asks: Ask[] = [];
  #waiters: ((a: Ask) => void)[] = [];
  constructor(readonly name: string) {}
  ask(request: PendingRequest, signal: AbortSignal): Promise<PromptAnswer> {
    return new Promise((resolve, reject) => {
      const a: Ask = { request, signal, answer: resolve };
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      this.asks.push(a);
      this.#waiters.shift()?.(a);
    });
  }
  /** The n-th ask (0-based), waiting for it if needed. */
  async nth(n: number): Promise<Ask> {
    while (this.asks.length <= n) await new Promise<Ask>((r) => this.#waiters.push(r));
    return this.asks[n];
  }
}

function get(host: string, path: string | undefined, port = 80, method = "GET"): DecideInput {
  const scheme = port === 443 || path === undefined ? "https" : "http";
  return {
    target: { scheme, host, port, ...(path === undefined ? {} : { path }) },
    method,
    client: "127.0.0.1:40000",
  };
}

/** Lets queued promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
}

function outcomeOf(signal: AbortSignal): PromptOutcome {
  assert.ok(signal.aborted, "signal should be aborted");
  assert.ok(signal.reason instanceof PromptClosedError);
  return signal.reason.outcome;
}

Deno.test("rules decide first; no prompt for covered requests", async () => {
  await using r = await tempRules({ "ok.test": "allow-domain", "http://bad.test/x": "deny-url" });
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const ok = await broker.decide(get("ok.test", "/"));
  assert.deepEqual([ok.action, ok.source, ok.reason, ok.rule?.pattern], [
    "allow",
    "rule",
    'rule "ok.test": allow-domain',
    "ok.test",
  ]);
  const d = await broker.decide(get("bad.test", "/x"));
  assert.equal(d.action, "deny");
  assert.equal(d.source, "rule");
  assert.equal(p.asks.length, 0);
  broker.close();
});

const sixAnswers: {
  answer: PromptAnswer;
  action: "allow" | "deny";
  saved?: [string, StoredAction];
}[] = [
  { answer: "allow-once", action: "allow" },
  { answer: "deny-once", action: "deny" },
  { answer: "allow-domain", action: "allow", saved: ["api.example.test", "allow-domain"] },
  { answer: "deny-domain", action: "deny", saved: ["api.example.test", "deny-domain"] },
  {
    answer: "allow-url",
    action: "allow",
    saved: ["http://api.example.test/repos/u/r?q=1", "allow-url"],
  },
  {
    answer: "deny-url",
    action: "deny",
    saved: ["http://api.example.test/repos/u/r?q=1", "deny-url"],
  },
];

for (const c of sixAnswers) {
  Deno.test(`answer ${c.answer}`, async () => {
    await using r = await tempRules();
    const rules = r.store;
    const events: BrokerEvent[] = [];
    const broker = new DecisionBroker({ rules, onEvent: (e) => events.push(e) });
    const p = new HandPrompter("t");
    broker.addPrompter(p);
    const pending = broker.decide(get("api.example.test", "/repos/u/r?q=1"));
    const ask = await p.nth(0);
    assert.deepEqual(ask.request, {
      id: ask.request.id,
      host: "api.example.test",
      port: 80,
      scheme: "http",
      method: "GET",
      path: "/repos/u/r?q=1",
      url: "http://api.example.test/repos/u/r?q=1",
      client: "127.0.0.1:40000",
      reason: "no rule",
      waiting: 1,
    });
    ask.answer(c.answer);
    const d = await pending;
    assert.equal(d.action, c.action);
    assert.equal(d.source, "prompt");
    if (c.saved) {
      assert.deepEqual(await r.saved(), [c.saved]);
      assert.equal(d.reason, `prompt: ${c.answer} (saved rule ${JSON.stringify(c.saved[0])})`);
      assert.ok(events.some((e) => e.type === "rule-saved" && e.pattern === c.saved![0]));
      // The next request to it is decided by the saved rule, without a prompt.
      const again = await broker.decide(get("api.example.test", "/repos/u/r?q=1"));
      assert.equal(again.source, "rule");
      assert.equal(again.action, c.action);
    } else {
      assert.deepEqual(await r.saved(), []);
      assert.equal(d.reason, `prompt: ${c.answer}`);
    }
    assert.deepEqual(events.map((e) => e.type).slice(0, 2), ["prompt-shown", "prompt-closed"]);
    const closed = events[1] as Extract<BrokerEvent, { type: "prompt-closed" }>;
    assert.deepEqual(closed.outcome, { kind: "answered", by: "t", answer: c.answer });
    assert.equal(p.asks.length, 1);
    assert.deepEqual(broker.pending(), []);
    broker.close();
  });
}

Deno.test("allow-domain on a non-default port saves host:port", async () => {
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("svc.test", "/", 8443));
  (await p.nth(0)).answer("allow-domain");
  assert.equal((await d).reason, 'prompt: allow-domain (saved rule "svc.test:8443")');
  assert.deepEqual(await r.saved(), [["svc.test:8443", "allow-domain"]]);
  broker.close();
});

Deno.test("identical concurrent requests share one prompt; one answer releases all", async () => {
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const ds = [
    broker.decide(get("shared.test", "/a")),
    broker.decide(get("shared.test", "/a")),
    broker.decide({ ...get("shared.test", "/a"), client: "127.0.0.1:40001" }),
  ];
  const ask = await p.nth(0);
  assert.equal(ask.request.path, "/a");
  assert.equal(broker.pending().length, 1);
  assert.equal(broker.pending()[0].waiting, 3);
  ask.answer("allow-once");
  const all = await Promise.all(ds);
  assert.deepEqual(all.map((d) => [d.action, d.source, d.reason]), [
    ["allow", "prompt", "prompt: allow-once"],
    ["allow", "prompt", "prompt: allow-once"],
    ["allow", "prompt", "prompt: allow-once"],
  ]);
  await settle();
  assert.equal(p.asks.length, 1);
  broker.close();
});

Deno.test("allow once releases only what was shown: requests sent after the prompt ask again", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const shown = broker.decide(get("site.test", "/index.html"));
  const ask = await p.nth(0);
  assert.deepEqual([ask.request.method, ask.request.path], ["GET", "/index.html"]);
  assert.equal(ask.request.waiting, 1);
  // Sent after the prompt is on screen, to ride on the operator's answer:
  // even an identical GET was not counted in what the operator saw.
  const upload = broker.decide(get("site.test", "/upload?data=secret", 80, "POST"));
  const samePathPost = broker.decide(get("site.test", "/index.html", 80, "POST"));
  const twin = broker.decide(get("site.test", "/index.html"));
  await settle();
  ask.answer("allow-once");
  assert.deepEqual(await shown, {
    action: "allow",
    source: "prompt",
    reason: "prompt: allow-once",
  });
  // The others are asked about again, first in line, one prompt for the host.
  const again = await p.nth(1);
  assert.notEqual(again.request.id, ask.request.id);
  assert.deepEqual([again.request.method, again.request.path, again.request.waiting], [
    "POST",
    "/upload?data=secret",
    1,
  ]);
  again.answer("deny-once");
  // deny-once denies everything still waiting on the host.
  assert.deepEqual(await upload, { action: "deny", source: "prompt", reason: "prompt: deny-once" });
  assert.equal((await samePathPost).action, "deny");
  assert.equal((await twin).action, "deny");
  await settle();
  assert.equal(p.asks.length, 2);
  assert.deepEqual(broker.pending(), []);
  broker.close();
});

Deno.test("deny once and the host answers release every request waiting on the host", async () => {
  for (const answer of ["deny-once", "allow-domain", "deny-domain"] as const) {
    await using r = await tempRules();
    const broker = new DecisionBroker({ rules: r.store });
    const p = new HandPrompter("t");
    broker.addPrompter(p);
    const a = broker.decide(get("many.test", "/a"));
    await p.nth(0);
    const b = broker.decide(get("many.test", "/b", 80, "POST"));
    const c = broker.decide({ ...get("many.test", "/c", 80, "PUT"), client: "10.0.0.9:1" });
    await settle();
    p.asks[0].answer(answer);
    const verdict = answer.startsWith("allow") ? "allow" : "deny";
    for (const d of await Promise.all([a, b, c])) {
      assert.deepEqual([d.action, d.source], [verdict, "prompt"], answer);
    }
    await settle();
    assert.equal(p.asks.length, 1, answer);
    broker.close();
  }
});

Deno.test("tunnels: identical CONNECTs share an allow once; a plain request to that port asks again", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const t1 = broker.decide(get("tun.test", undefined, 443, "CONNECT"));
  const t2 = broker.decide(get("tun.test", undefined, 443, "CONNECT"));
  const ask = await p.nth(0);
  assert.equal(ask.request.waiting, 2);
  const plain = broker.decide({
    target: { scheme: "http", host: "tun.test", port: 443, path: "/x" },
    method: "GET",
    client: "127.0.0.1:40000",
  });
  await settle();
  assert.equal(broker.pending()[0].waiting, 2);
  ask.answer("allow-once");
  assert.equal((await t1).action, "allow");
  assert.equal((await t2).action, "allow");
  const again = await p.nth(1);
  assert.deepEqual([again.request.method, again.request.url], ["GET", "http://tun.test:443/x"]);
  again.answer("deny-once");
  assert.equal((await plain).action, "deny");
  broker.close();
});

Deno.test("a deny URL rule added while the prompt is open beats a later always-allow-host", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const secret = broker.decide(get("race.test", "/secret"));
  const other = broker.decide(get("race.test", "/other"));
  const ask = await p.nth(0);
  // Another terminal: `netmonitor rules add http://race.test/secret deny`.
  await r.store.add("http://race.test/secret", "deny");
  ask.answer("allow-domain");
  const s = await secret;
  assert.deepEqual([s.action, s.source, s.reason], [
    "deny",
    "rule",
    'rule "http://race.test/secret": deny',
  ]);
  assert.equal((await other).action, "allow");
  assert.equal((await other).source, "prompt");
  broker.close();
});

Deno.test("an always-allow-host answer is not saved over a deny rule for the host added meanwhile; the deny decides", async () => {
  await using r = await tempRules({ "other.test": "allow-domain" });
  const events: BrokerEvent[] = [];
  const broker = new DecisionBroker({ rules: r.store, onEvent: (e) => events.push(e) });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const shown = broker.decide(get("h.test", "/a", 47082));
  const other = broker.decide(get("h.test", "/b", 47082));
  const ask = await p.nth(0);
  // Another terminal: `netmonitor rules add h.test:47082 deny-domain` ("Added").
  assert.equal((await r.otherTerminal().add("h.test:47082", "deny-domain")).previous, undefined);
  ask.answer("allow-domain");
  for (const d of [await shown, await other]) {
    assert.deepEqual([d.action, d.source, d.reason, d.rule?.pattern], [
      "deny",
      "rule",
      'rule "h.test:47082": deny-domain',
      "h.test:47082",
    ]);
  }
  // The deny stays in the file, and nothing was added.
  assert.deepEqual(await r.onFile(), [
    ["other.test", "allow-domain"],
    ["h.test:47082", "deny-domain"],
  ]);
  const failed = events.find((e) => e.type === "rule-save-failed");
  assert.ok(failed?.type === "rule-save-failed");
  assert.deepEqual([failed.pattern, failed.action, failed.kept], [
    "h.test:47082",
    "allow-domain",
    { pattern: "h.test:47082", action: "deny-domain" },
  ]);
  assert.equal(
    failed.error,
    'the deny rule "h.test:47082": deny-domain was added meanwhile; it stays and decides',
  );
  assert.ok(!events.some((e) => e.type === "rule-saved"));
  // The next request is decided by the deny rule, without a prompt.
  assert.equal((await broker.decide(get("h.test", "/a", 47082))).source, "rule");
  assert.equal(p.asks.length, 1);
  broker.close();
});

Deno.test("an always-allow-URL answer is not saved over a deny URL rule for that URL added meanwhile", async () => {
  // The same spelling, and other spellings of the same URL (a deny matches them all).
  for (
    const deny of ["http://h.test:47082/a", "http://h.test:47082//a", "http://H.test:47082/./a?"]
  ) {
    await using r = await tempRules();
    const events: BrokerEvent[] = [];
    const broker = new DecisionBroker({ rules: r.store, onEvent: (e) => events.push(e) });
    const p = new HandPrompter("t");
    broker.addPrompter(p);
    const shown = broker.decide(get("h.test", "/a", 47082));
    const twin = broker.decide(get("h.test", "/a", 47082));
    const ask = await p.nth(0);
    await r.otherTerminal().add(deny, "deny-url");
    ask.answer("allow-url");
    for (const d of [await shown, await twin]) {
      assert.deepEqual([d.action, d.source, d.reason], [
        "deny",
        "rule",
        `rule "${deny}": deny-url`,
      ]);
    }
    assert.deepEqual(await r.onFile(), [[deny, "deny-url"]], deny);
    const failed = events.find((e) => e.type === "rule-save-failed");
    assert.ok(failed?.type === "rule-save-failed");
    assert.match(failed.error, /^the deny rule .* was added meanwhile; it stays and decides$/);
    broker.close();
  }
});

Deno.test("an always-allow-URL answer is saved next to a deny rule for the host added meanwhile: the exact URL wins", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const shown = broker.decide(get("h.test", "/a", 47082));
  const other = broker.decide(get("h.test", "/b", 47082));
  const ask = await p.nth(0);
  await r.otherTerminal().add("h.test:47082", "deny-domain");
  ask.answer("allow-url");
  // Precedence: an exact URL rule beats a host rule.
  assert.deepEqual(await shown, {
    action: "allow",
    source: "prompt",
    reason: 'prompt: allow-url (saved rule "http://h.test:47082/a")',
  });
  // The answer covers only the URL shown: the host's deny decides the rest.
  assert.equal((await other).reason, 'rule "h.test:47082": deny-domain');
  assert.deepEqual(await r.onFile(), [
    ["h.test:47082", "deny-domain"],
    ["http://h.test:47082/a", "allow-url"],
  ]);
  broker.close();
});

Deno.test("always-allow-URL for a spelling an equivalent allow rule does not cover saves a rule that covers it", async () => {
  await using r = await tempRules({ "http://h.test:47082/a/b": "allow-url" });
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  // Allow URL rules are exact: /a//b is not covered, so it asks.
  const d = broker.decide(get("h.test", "/a//b", 47082));
  const ask = await p.nth(0);
  assert.equal(ask.request.url, "http://h.test:47082/a//b");
  ask.answer("allow-url");
  assert.equal((await d).reason, 'prompt: allow-url (saved rule "http://h.test:47082/a//b")');
  assert.deepEqual(await r.saved(), [["http://h.test:47082/a//b", "allow-url"]]);
  // The same request again is allowed by the new rule, without a prompt.
  const again = await broker.decide(get("h.test", "/a//b", 47082));
  assert.deepEqual([again.action, again.source, again.rule?.pattern], [
    "allow",
    "rule",
    "http://h.test:47082/a//b",
  ]);
  const old = await broker.decide(get("h.test", "/a/b", 47082));
  assert.equal(old.rule?.pattern, "http://h.test:47082/a/b");
  assert.equal(p.asks.length, 1);
  broker.close();
});

const THREE_RULES: Record<string, StoredAction> = {
  "a.test": "allow-domain",
  "evil.test": "deny-domain",
  "b.test": "allow-domain",
};

/** An editor rewriting the rules file in place: truncate now, write `text` after `ms`. */
async function editInPlace(path: string, text: string | undefined, ms: number): Promise<void> {
  const f = await Deno.open(path, { write: true, truncate: true });
  try {
    await new Promise((res) => setTimeout(res, ms));
    if (text !== undefined) await f.write(new TextEncoder().encode(text));
  } finally {
    f.close();
  }
}

Deno.test("an always answer saved while an editor rewrites the file keeps the editor's rules", async () => {
  await using r = await tempRules(THREE_RULES, { settleMs: 50, emptyWaitMs: 2000 });
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("h.test", "/a", 47082));
  const ask = await p.nth(0);
  const four = JSON.stringify({ ...THREE_RULES, "c.test": "allow-domain" }, null, 2);
  const editor = editInPlace(r.path, four, 400);
  await new Promise((res) => setTimeout(res, 50));
  ask.answer("allow-domain");
  assert.equal((await d).reason, 'prompt: allow-domain (saved rule "h.test:47082")');
  await editor;
  assert.deepEqual(await r.onFile(), [
    ["a.test", "allow-domain"],
    ["evil.test", "deny-domain"],
    ["b.test", "allow-domain"],
    ["c.test", "allow-domain"],
    ["h.test:47082", "allow-domain"],
  ]);
  broker.close();
});

Deno.test("an always answer is not saved over a file that stays empty while rules are in force", async () => {
  await using r = await tempRules(THREE_RULES, { settleMs: 50, emptyWaitMs: 300 });
  const events: BrokerEvent[] = [];
  const broker = new DecisionBroker({ rules: r.store, onEvent: (e) => events.push(e) });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("h.test", "/a", 47082));
  const ask = await p.nth(0);
  await editInPlace(r.path, undefined, 0);
  ask.answer("allow-domain");
  // Applied once, reported as not saved; the file is left for its editor.
  assert.deepEqual(await d, {
    action: "allow",
    source: "prompt",
    reason: `prompt: allow-domain (rule not saved: Cannot update rules "${r.path}": the file ` +
      `is empty while 3 rules are in force; not overwriting it (an editor may be rewriting it))`,
  });
  assert.ok(events.some((e) => e.type === "rule-save-failed"));
  assert.equal(await Deno.readTextFile(r.path), "");
  broker.close();
});

Deno.test("close waits for an always answer still being saved", async () => {
  await using r = await tempRules();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const slow = {
    get current() {
      return r.store.current;
    },
    add: async (pattern: string, action: StoredAction) => {
      await gate;
      return r.store.add(pattern, action);
    },
  };
  const events: string[] = [];
  const broker = new DecisionBroker({ rules: slow, onEvent: (e) => events.push(e.type) });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("late.test", "/"));
  (await p.nth(0)).answer("allow-domain");
  await settle();
  let closed = false;
  const closing = broker.close().then(() => (closed = true));
  // The waiting request is answered at once; the save is waited for.
  assert.equal((await d).action, "deny");
  await settle();
  assert.equal(closed, false, "close waits for the save");
  release();
  await closing;
  assert.ok(events.includes("rule-saved"));
  assert.equal(
    r.store.current.decide({ scheme: "http", host: "late.test", port: 80 }).action,
    "allow",
  );
});

Deno.test("a deny rule added while the prompt is open beats a later allow once", async () => {
  for (const pattern of ["edit.test", "http://edit.test/a"]) {
    await using r = await tempRules();
    const rules = r.store;
    const broker = new DecisionBroker({ rules });
    const p = new HandPrompter("t");
    broker.addPrompter(p);
    const d = broker.decide(get("edit.test", "/a"));
    const ask = await p.nth(0);
    // Another terminal runs `netmonitor rules add` meanwhile.
    await rules.add(pattern, pattern.includes("/") ? "deny-url" : "deny-domain");
    ask.answer("allow-once");
    const decision = await d;
    assert.equal(decision.action, "deny", pattern);
    assert.equal(decision.source, "rule", pattern);
    assert.equal(decision.rule?.pattern, pattern);
    broker.close();
  }
});

Deno.test("a host answer for an IP literal or a localhost name saves host:port, even on the default port", async () => {
  const cases: { input: DecideInput; answer: PromptAnswer; saved: string }[] = [
    { input: get("127.0.0.1", "/"), answer: "allow-domain", saved: "127.0.0.1:80" },
    { input: get("10.1.2.3", "/", 8080), answer: "deny-domain", saved: "10.1.2.3:8080" },
    {
      input: get("[::1]", undefined, 443, "CONNECT"),
      answer: "allow-domain",
      saved: "[::1]:443",
    },
    // "Always allow localhost" would open every port of the host's loopback.
    { input: get("localhost", "/"), answer: "allow-domain", saved: "localhost:80" },
    { input: get("app.localhost", "/", 3000), answer: "allow-domain", saved: "app.localhost:3000" },
    // Names keep the short form.
    { input: get("name.test", "/"), answer: "allow-domain", saved: "name.test" },
  ];
  for (const c of cases) {
    await using r = await tempRules();
    const broker = new DecisionBroker({ rules: r.store });
    const p = new HandPrompter("t");
    broker.addPrompter(p);
    const d = broker.decide(c.input);
    (await p.nth(0)).answer(c.answer);
    assert.equal((await d).reason, `prompt: ${c.answer} (saved rule ${JSON.stringify(c.saved)})`);
    assert.deepEqual(await r.saved(), [[c.saved, c.answer]]);
    // The rule covers that port only: another port of the same IP still asks.
    if (c.saved.startsWith("127.")) {
      const other = broker.decide(get("127.0.0.1", "/", 8080));
      const ask = await p.nth(1);
      assert.equal(ask.request.port, 8080);
      ask.answer("deny-once");
      assert.equal((await other).source, "prompt");
    }
    broker.close();
  }
});

Deno.test("a client flooding distinct hosts is capped; others still get prompts", async () => {
  assert.equal(DEFAULT_MAX_PROMPTS_PER_CLIENT, 20);
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store, maxPromptsPerClient: 3 });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const from = (client: string, host: string, path = "/") => ({ ...get(host, path), client });
  const flood = ["f0", "f1", "f2"].map((h) => broker.decide(from("172.18.0.2:1000", `${h}.test`)));
  await p.nth(0);
  // A fourth prompt from that IP (another source port too) is refused at once.
  assert.deepEqual(await broker.decide(from("172.18.0.2:2000", "f3.test")), {
    action: "deny",
    source: "policy",
    reason: "too many pending prompts from 172.18.0.2",
  });
  // Joining an open prompt is not a new prompt; other clients are not affected.
  const joins = broker.decide(from("172.18.0.2:3000", "f1.test", "/other"));
  const other = broker.decide(from("172.18.0.3:1000", "g.test"));
  const v6 = [0, 1, 2, 3].map((i) => broker.decide(from(`[fd00::1]:${i + 1}`, `v${i}.test`)));
  assert.deepEqual(await v6[3], {
    action: "deny",
    source: "policy",
    reason: "too many pending prompts from [fd00::1]",
  });
  assert.deepEqual(broker.pending().map((q) => q.host), [
    "f0.test",
    "f1.test",
    "f2.test",
    "g.test",
    "v0.test",
    "v1.test",
    "v2.test",
  ]);
  // Once one of its prompts is answered, the client may queue another.
  p.asks[0].answer("deny-once");
  await flood[0];
  const later = broker.decide(from("172.18.0.2:4000", "f4.test"));
  await settle();
  assert.equal(broker.pending().at(-1)?.host, "f4.test");
  broker.close();
  for (const d of [...flood.slice(1), joins, other, later, ...v6.slice(0, 3)]) {
    assert.equal((await d).reason, "shutting down");
  }
});

Deno.test("same host on another port gets its own prompt", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const a = broker.decide(get("h.test", "/", 80));
  const b = broker.decide(get("h.test", "/", 8080));
  (await p.nth(0)).answer("deny-once");
  assert.equal((await a).action, "deny");
  const second = await p.nth(1);
  assert.equal(second.request.port, 8080);
  second.answer("allow-once");
  assert.equal((await b).action, "allow");
  broker.close();
});

Deno.test("prompts are shown one at a time, first come first served", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const a = broker.decide(get("a.test", "/"));
  const b = broker.decide(get("b.test", "/"));
  const c = broker.decide(get("c.test", "/"));
  await p.nth(0);
  await settle();
  assert.equal(p.asks.length, 1, "only one prompt shown at a time");
  assert.deepEqual(broker.pending().map((r) => r.host), ["a.test", "b.test", "c.test"]);
  p.asks[0].answer("allow-once");
  assert.equal((await p.nth(1)).request.host, "b.test");
  p.asks[1].answer("deny-once");
  assert.equal((await p.nth(2)).request.host, "c.test");
  p.asks[2].answer("allow-once");
  assert.deepEqual([(await a).action, (await b).action, (await c).action], [
    "allow",
    "deny",
    "allow",
  ]);
  broker.close();
});

Deno.test("no answer within the timeout: denied once with source timeout", async () => {
  const events: BrokerEvent[] = [];
  await using r = await tempRules();
  const broker = new DecisionBroker({
    rules: r.store,
    promptTimeoutMs: 30,
    onEvent: (e) => events.push(e),
  });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("slow.test", "/"));
  const next = broker.decide(get("next.test", "/"));
  const ask = await p.nth(0);
  assert.deepEqual(await d, {
    action: "deny",
    source: "timeout",
    reason: "no answer within 30ms",
  });
  assert.equal(outcomeOf(ask.signal).kind, "timeout");
  assert.ok(
    events.some((e) => e.type === "prompt-closed" && e.outcome.kind === "timeout"),
  );
  // The next prompt is shown after the timed-out one; it timed out too (its
  // deadline counts from its arrival) unless answered.
  const d2 = await next;
  assert.equal(d2.source, "timeout");
  broker.close();
});

Deno.test("timeoutAction allow: an unanswered request is allowed once, and says why", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({
    rules: r.store,
    promptTimeoutMs: 20,
    timeoutAction: "allow",
  });
  assert.deepEqual(await broker.decide(get("lenient.test", "/")), {
    action: "allow",
    source: "timeout",
    reason: "no answer within 20ms, default: allow",
  });
  assert.deepEqual(await r.saved(), []);
  broker.close();
});

Deno.test("timeout reasons read naturally", () => {
  assert.equal(timeoutReason(60_000), "no answer within 60s");
  assert.equal(timeoutReason(1500), "no answer within 1500ms");
  assert.equal(timeoutReason(30), "no answer within 30ms");
});

Deno.test("with no prompter attached, the request waits until one attaches", async () => {
  const events: BrokerEvent[] = [];
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store, onEvent: (e) => events.push(e) });
  const d = broker.decide(get("late.test", "/x"));
  await settle();
  assert.equal(broker.pending().length, 1);
  assert.deepEqual(events.map((e) => e.type), ["prompt-shown"]);
  const p = new HandPrompter("late");
  broker.addPrompter(p);
  const ask = await p.nth(0);
  assert.equal(ask.request.host, "late.test");
  ask.answer("allow-once");
  assert.equal((await d).action, "allow");
  broker.close();
});

Deno.test("with no prompter attached, the timeout denies", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store, promptTimeoutMs: 20 });
  const d = await broker.decide(get("nobody.test", "/"));
  assert.equal(d.source, "timeout");
  assert.equal(d.action, "deny");
  assert.deepEqual(broker.pending(), []);
  broker.close();
});

Deno.test("non-interactive answers with the default, never prompts", async () => {
  const p = new HandPrompter("t");
  for (const def of ["allow", "deny"] as const) {
    await using r = await tempRules();
    const broker = new DecisionBroker({
      rules: r.store,
      nonInteractive: { default: def },
    });
    broker.addPrompter(p);
    assert.deepEqual(await broker.decide(get("x.test", "/")), {
      action: def,
      source: "default",
      reason: `no rule, non-interactive default: ${def}`,
    });
    broker.close();
  }
  assert.equal(p.asks.length, 0);
});

Deno.test("two prompters: the first answer wins, the other is aborted", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p1 = new HandPrompter("terminal");
  const p2 = new HandPrompter("prompt#1");
  broker.addPrompter(p1);
  broker.addPrompter(p2);
  const d = broker.decide(get("race.test", "/"));
  const [a1, a2] = [await p1.nth(0), await p2.nth(0)];
  assert.equal(a1.request.id, a2.request.id);
  a2.answer("deny-once");
  a1.answer("allow-once"); // too late: ignored
  assert.deepEqual(await d, { action: "deny", source: "prompt", reason: "prompt: deny-once" });
  assert.deepEqual(outcomeOf(a1.signal), { kind: "answered", by: "prompt#1", answer: "deny-once" });
  assert.equal(a2.signal.aborted, false);
  broker.close();
});

Deno.test("a prompter attached while a prompt is shown is asked it too", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p1 = new HandPrompter("one");
  broker.addPrompter(p1);
  const d = broker.decide(get("mid.test", "/"));
  await p1.nth(0);
  const p2 = new HandPrompter("two");
  broker.addPrompter(p2);
  (await p2.nth(0)).answer("allow-once");
  assert.equal((await d).action, "allow");
  assert.equal(outcomeOf(p1.asks[0].signal).by, "two");
  broker.close();
});

Deno.test("detaching a prompter aborts its ask; another can still answer", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p1 = new HandPrompter("one");
  const detach = broker.addPrompter(p1);
  const d = broker.decide(get("det.test", "/"));
  const a1 = await p1.nth(0);
  detach();
  assert.equal(outcomeOf(a1.signal).kind, "detached");
  const p2 = new HandPrompter("two");
  broker.addPrompter(p2);
  (await p2.nth(0)).answer("deny-once");
  assert.equal((await d).action, "deny");
  broker.close();
});

Deno.test("a client that disconnects is withdrawn; an empty prompt is withdrawn", async () => {
  const events: BrokerEvent[] = [];
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store, onEvent: (e) => events.push(e) });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const ac1 = new AbortController();
  const ac2 = new AbortController();
  const d1 = broker.decide(get("gone.test", "/1"), ac1.signal);
  const d2 = broker.decide(get("gone.test", "/1"), ac2.signal);
  const other = broker.decide(get("other.test", "/"));
  const ask = await p.nth(0);
  ac1.abort();
  assert.deepEqual(await d1, {
    action: "deny",
    source: "error",
    reason: "client disconnected while waiting for an answer",
  });
  await settle();
  assert.equal(ask.signal.aborted, false, "still one request waiting on it");
  assert.equal(broker.pending()[0].waiting, 1);
  ac2.abort();
  assert.equal((await d2).source, "error");
  assert.equal(outcomeOf(ask.signal).kind, "withdrawn");
  assert.ok(
    events.some((e) => e.type === "prompt-closed" && e.outcome.kind === "withdrawn"),
  );
  // The queue moves on.
  const next = await p.nth(1);
  assert.equal(next.request.host, "other.test");
  next.answer("allow-once");
  assert.equal((await other).action, "allow");
  // Already-aborted signals are not queued at all.
  const ac3 = new AbortController();
  ac3.abort();
  assert.equal((await broker.decide(get("x.test", "/"), ac3.signal)).source, "error");
  assert.deepEqual(broker.pending(), []);
  broker.close();
});

Deno.test("a queued request whose client disconnects never gets a prompt", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const first = broker.decide(get("first.test", "/"));
  const ac = new AbortController();
  const queued = broker.decide(get("queued.test", "/"), ac.signal);
  const third = broker.decide(get("third.test", "/"));
  await p.nth(0);
  ac.abort();
  assert.equal((await queued).source, "error");
  p.asks[0].answer("allow-once");
  await first;
  assert.equal((await p.nth(1)).request.host, "third.test");
  p.asks[1].answer("allow-once");
  await third;
  broker.close();
});

Deno.test("a prompt that closes before its prompters are asked is never shown to them", async () => {
  // Two clients leave in the same turn (a container stopped): the first's
  // leaving shows the second's prompt, the second's leaving closes it before
  // the prompters were asked. None may be asked a closed prompt: a socket
  // prompter would show it and never hear that it closed.
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const asked: { host: string; aborted: boolean }[] = [];
  broker.addPrompter({
    name: "t",
    ask(request, signal) {
      asked.push({ host: request.host, aborted: signal.aborted });
      return new Promise((_, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
    },
  });
  const a = new AbortController();
  const b = new AbortController();
  const da = broker.decide(get("a.test", "/"), a.signal);
  const db = broker.decide(get("b.test", "/"), b.signal);
  await settle();
  a.abort();
  b.abort();
  assert.equal((await da).source, "error");
  assert.equal((await db).source, "error");
  await settle();
  assert.deepEqual(asked, [{ host: "a.test", aborted: false }]);
  assert.deepEqual(broker.pending(), []);
  broker.close();
});

Deno.test("a failed save still applies the answer once and is reported", async () => {
  await using r = await tempRules();
  const rules = r.store;
  await r.breakFile();
  const events: BrokerEvent[] = [];
  const broker = new DecisionBroker({ rules, onEvent: (e) => events.push(e) });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const d = broker.decide(get("ro.test", "/"));
  (await p.nth(0)).answer("allow-domain");
  const decision = await d;
  assert.equal(decision.action, "allow");
  assert.equal(decision.source, "prompt");
  assert.match(
    decision.reason,
    /^prompt: allow-domain \(rule not saved: Cannot update rules ".*network-rules\.json": unknown action "alow"/,
  );
  const failed = events.find((e) => e.type === "rule-save-failed");
  assert.ok(failed && failed.type === "rule-save-failed");
  assert.equal(failed.pattern, "ro.test");
  assert.equal(failed.action, "allow-domain");
  assert.match(failed.error, /unknown action "alow"/);
  // Not saved, so the next request asks again.
  const again = broker.decide(get("ro.test", "/"));
  (await p.nth(1)).answer("deny-once");
  assert.equal((await again).action, "deny");
  broker.close();
});

Deno.test("a save stuck behind another process's lock is applied once, reported late", async () => {
  await using r = await tempRules();
  const events: BrokerEvent[] = [];
  const broker = new DecisionBroker({
    rules: r.store,
    saveTimeoutMs: 50,
    onEvent: (e) => events.push(e),
  });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  // Hold the rules file's lock, as a stuck `netmonitor rules` process would.
  const lock = await Deno.open(`${r.store.path}.lock`, { write: true, create: true });
  await lock.lock(true);
  try {
    const d = broker.decide(get("stuck.test", "/"));
    (await p.nth(0)).answer("allow-domain");
    assert.deepEqual(await d, {
      action: "allow",
      source: "prompt",
      reason: "prompt: allow-domain (rule not saved: still saving after 50ms)",
    });
    assert.ok(events.some((e) => e.type === "rule-save-failed"));
  } finally {
    await lock.unlock();
    lock.close();
  }
  // Once the lock is free the save completes, and that is reported too.
  while (!events.some((e) => e.type === "rule-saved")) {
    await new Promise((res) => setTimeout(res, 5));
  }
  assert.deepEqual(await r.saved(), [["stuck.test", "allow-domain"]]);
  broker.close();
});

Deno.test("allow-url: the shown URL is allowed, the others are decided again", async () => {
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const a = broker.decide(get("u.test", "/a"));
  const aTwin = broker.decide(get("u.test", "/a"));
  const b = broker.decide(get("u.test", "/b"));
  const ask = await p.nth(0);
  assert.equal(ask.request.path, "/a");
  ask.answer("allow-url");
  const expected = 'prompt: allow-url (saved rule "http://u.test/a")';
  assert.equal((await a).reason, expected);
  assert.equal((await aTwin).action, "allow");
  // /b is not covered by the new rule: it is asked again.
  const askB = await p.nth(1);
  assert.equal(askB.request.path, "/b");
  assert.notEqual(askB.request.id, ask.request.id);
  askB.answer("deny-once");
  assert.equal((await b).action, "deny");
  broker.close();
});

Deno.test("deny-url: another request now covered by a rule is decided by it", async () => {
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const a = broker.decide(get("v.test", "/a"));
  const b = broker.decide(get("v.test", "/b"));
  const ask = await p.nth(0);
  // Another terminal adds a host rule meanwhile.
  await rules.add("v.test", "allow-domain");
  ask.answer("deny-url");
  assert.equal((await a).action, "deny");
  const db = await b;
  assert.deepEqual([db.action, db.source, db.reason], [
    "allow",
    "rule",
    'rule "v.test": allow-domain',
  ]);
  assert.equal(p.asks.length, 1);
  broker.close();
});

Deno.test("a queued prompt is decided by rules added while it waited", async () => {
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const first = broker.decide(get("one.test", "/"));
  const second = broker.decide(get("two.test", "/"));
  await p.nth(0);
  await rules.add("two.test", "deny-domain");
  p.asks[0].answer("allow-once");
  await first;
  const d2 = await second;
  assert.deepEqual([d2.action, d2.source, d2.reason], [
    "deny",
    "rule",
    'rule "two.test": deny-domain',
  ]);
  await settle();
  assert.equal(p.asks.length, 1);
  broker.close();
});

Deno.test("tunnels: no path, URL answers are refused and the prompt stays", async () => {
  const events: BrokerEvent[] = [];
  await using r = await tempRules();
  const rules = r.store;
  const broker = new DecisionBroker({ rules, onEvent: (e) => events.push(e) });
  const bad = new HandPrompter("buggy");
  const good = new HandPrompter("t");
  broker.addPrompter(bad);
  broker.addPrompter(good);
  const d = broker.decide(get("tls.test", undefined, 443, "CONNECT"));
  const a = await bad.nth(0);
  assert.equal(a.request.path, undefined);
  assert.equal(a.request.url, undefined);
  assert.equal(a.request.scheme, "https");
  a.answer("allow-url");
  await settle();
  assert.ok(events.some((e) => e.type === "prompter-failed" && e.prompter === "buggy"));
  assert.equal(broker.pending().length, 1, "prompt still open");
  (await good.nth(0)).answer("allow-domain");
  assert.equal((await d).reason, 'prompt: allow-domain (saved rule "tls.test")');
  broker.close();
});

Deno.test("a prompter that throws is reported and ignored for that prompt", async () => {
  const events: BrokerEvent[] = [];
  await using r = await tempRules();
  const broker = new DecisionBroker({
    rules: r.store,
    onEvent: (e) => events.push(e),
  });
  broker.addPrompter({ name: "eof", ask: () => Promise.reject(new Error("stdin closed")) });
  const good = new HandPrompter("t");
  broker.addPrompter(good);
  const d = broker.decide(get("e.test", "/"));
  (await good.nth(0)).answer("deny-once");
  assert.equal((await d).action, "deny");
  assert.deepEqual(events.find((e) => e.type === "prompter-failed"), {
    type: "prompter-failed",
    prompter: "eof",
    error: "stdin closed",
  });
  broker.close();
});

Deno.test("a rules engine error denies (fail closed)", async () => {
  const rules = {
    current: {
      decide(): never {
        throw new Error("boom");
      },
    },
    add: () => Promise.resolve(),
  };
  const broker = new DecisionBroker({ rules });
  assert.deepEqual(await broker.decide(get("x.test", "/")), {
    action: "deny",
    source: "error",
    reason: "rules error: boom",
  });
  broker.close();
});

Deno.test("close denies everything pending and aborts prompters", async () => {
  await using r = await tempRules();
  const broker = new DecisionBroker({ rules: r.store });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const a = broker.decide(get("a.test", "/"));
  const b = broker.decide(get("b.test", "/"));
  const ask = await p.nth(0);
  broker.close();
  for (const d of [await a, await b]) {
    assert.deepEqual(d, { action: "deny", source: "default", reason: "shutting down" });
  }
  assert.equal(outcomeOf(ask.signal).kind, "shutdown");
  assert.equal((await broker.decide(get("c.test", "/"))).reason, "shutting down");
  assert.deepEqual(broker.pending(), []);
});

Deno.test("queued requests are decided again only when the rules changed", async () => {
  let calls = 0;
  const rulesSaying = (action: RuleDecision["action"]) => ({
    decide(): RuleDecision {
      calls++;
      return { action, reason: action === "ask" ? "no rule" : `rule "*": ${action}` };
    },
  });
  const rules = { current: rulesSaying("ask"), add: () => Promise.resolve() };
  const broker = new DecisionBroker({ rules, maxPromptsPerClient: 10 });
  const p = new HandPrompter("t");
  broker.addPrompter(p);
  const first = broker.decide(get("a.test", "/"));
  const queued = Array.from({ length: 100 }, (_, i) => broker.decide(get("b.test", `/${i}`)));
  const a = await p.nth(0);
  assert.equal(calls, 101, "each request was decided once when it came");
  a.answer("deny-once");
  assert.equal((await first).action, "deny");
  const b = await p.nth(1);
  assert.equal(b.request.host, "b.test");
  assert.equal(calls, 101, "showing b.test's prompt did not decide its 100 requests again");
  // "Once" releases only what was shown; the other 99 are asked about again,
  // still without deciding them again: the rules are the same.
  b.answer("allow-once");
  const c = await p.nth(2);
  assert.equal(calls, 101);
  // New rules (a reload is a new object): now each is decided again, and the
  // deny rule beats the one-off allow.
  rules.current = rulesSaying("deny");
  c.answer("allow-once");
  const all = await Promise.all(queued);
  assert.deepEqual(all.map((d) => d.source), ["prompt", ...Array(99).fill("rule")]);
  assert.equal(calls, 101 + 99);
  broker.close();
});
