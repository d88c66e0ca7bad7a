/**
 * How the rules store saves a rule next to what is already in the file: an
 * allow never replaces a deny with `keepDeny`, an allow URL rule is saved for
 * the exact URL it was asked for, and a file caught empty mid-rewrite is not
 * overwritten.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  parseRules,
  type RuleSet,
  RulesFileError,
  RulesStore,
  type StoredAction,
} from "../../lib/rules/mod.ts";
import { DenyRuleKeptError, type StoreOptions } from "../../lib/rules/store.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netmonitor-save-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A store on `rules` (written as one rule per line), loaded. */
async function loaded(
  dir: string,
  rules: Record<string, StoredAction>,
  options?: StoreOptions,
): Promise<RulesStore> {
  const store = new RulesStore(join(dir, "network-rules.json"), options);
  await Deno.writeTextFile(store.path, JSON.stringify(rules, null, 2) + "\n");
  await store.load();
  return store;
}

const pairs = (rules: RuleSet) => rules.rules.map((r) => [r.pattern, r.action]);
/** The rules in the file now, as [pattern, action] (comments allowed). */
const onFile = async (store: RulesStore) =>
  parseRules(await Deno.readTextFile(store.path)).rules.map((r) => [r.pattern, r.action]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function at(set: RuleSet, url: string) {
  const u = new URL(url);
  // URL would normalise the path; the rules must see it as sent.
  const path = url.slice(url.indexOf("/", u.protocol.length + 2));
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const scheme = u.protocol === "https:" ? "https" : "http";
  return set.decide({ scheme, host: u.hostname, port, path });
}

Deno.test("keepDeny: an allow is not saved over a deny rule of the same host or URL; the file stays", async () => {
  const cases: Array<{ file: Record<string, StoredAction>; add: [string, StoredAction] }> = [
    { file: { "h.test:47082": "deny-domain" }, add: ["h.test:47082", "allow-domain"] },
    { file: { "H.test:47082": "deny" }, add: ["h.test.:47082", "allow"] },
    { file: { "*.h.test": "deny-domain" }, add: ["*.h.test", "passthrough"] },
    { file: { "http://h.test:47082/a": "deny-url" }, add: ["http://h.test:47082/a", "allow-url"] },
    // The same URL in another spelling: the deny matches every spelling.
    {
      file: { "http://h.test:47082/a//b": "deny-url" },
      add: ["http://h.test:47082/a/b", "allow-url"],
    },
    {
      file: { "http://h.test:47082/a/b": "deny-url" },
      add: ["http://h.test:47082/a//b", "allow-url"],
    },
    {
      file: { "https://h.test/s?q=a+b": "deny-url" },
      add: ["https://h.test/s?q=a+b", "allow-url"],
    },
    { file: { "https://h.test/s?q=a%20b": "deny" }, add: ["https://h.test/s?q=a+b", "allow"] },
  ];
  for (const { file, add } of cases) {
    await withTempDir(async (dir) => {
      const store = await loaded(dir, {});
      const before = JSON.stringify(file, null, 2) + "\n";
      // Another process adds the deny: this store has not seen it.
      await Deno.writeTextFile(store.path, before);
      const err = await store.add(add[0], add[1], { keepDeny: true }).then(
        () => assert.fail(`${add} replaced the deny rule`),
        (e) => e,
      );
      assert.ok(err instanceof DenyRuleKeptError, `${add}: ${err}`);
      const [pattern, action] = Object.entries(file)[0];
      assert.deepEqual([err.rule.pattern, err.rule.action], [pattern, action]);
      assert.deepEqual([err.refused.pattern, err.refused.action], add);
      assert.match(err.message, /not saved: the deny rule .* stays/);
      assert.equal(await Deno.readTextFile(store.path), before, `${add}: the file is unchanged`);
      // The rules in force are the file's, the deny included.
      assert.deepEqual(pairs(store.current), [[pattern, action]]);

      // `netmonitor rules add` (no keepDeny) replaces it, as asked.
      const r = await store.add(add[0], add[1]);
      assert.equal(r.previous?.action, action);
      assert.equal((await onFile(store)).length, 1);
      assert.equal(store.current.rules[0].action, add[1]);
    });
  }
});

Deno.test("keepDeny: other rules are added, replaced or left as without it", async () => {
  await withTempDir(async (dir) => {
    const store = await loaded(dir, {
      "h.test": "deny-domain",
      "*.w.test": "deny-domain",
      "https://u.test/x": "allow-url",
      "x.test": "allow-domain",
    });
    const keep = { keepDeny: true };
    // Another pattern than the deny's: precedence decides (a port beats no port).
    assert.equal((await store.add("h.test:47082", "allow-domain", keep)).previous, undefined);
    assert.equal((await store.add("a.w.test", "allow-domain", keep)).previous, undefined);
    // An allow over an allow, a deny over anything.
    assert.equal(
      (await store.add("https://u.test/x", "allow", keep)).previous?.action,
      "allow-url",
    );
    assert.equal((await store.add("x.test", "deny-domain", keep)).previous?.action, "allow-domain");
    assert.deepEqual(pairs(store.current), [
      ["h.test", "deny-domain"],
      ["*.w.test", "deny-domain"],
      ["https://u.test/x", "allow"],
      ["x.test", "deny-domain"],
      ["h.test:47082", "allow-domain"],
      ["a.w.test", "allow-domain"],
    ]);
  });
});

Deno.test("allow-url: a rule is saved for the exact URL asked, next to an equivalent one that does not cover it", async () => {
  await withTempDir(async (dir) => {
    const store = await loaded(dir, { "http://h.test:47082/a/b": "allow-url" });
    assert.equal(at(store.current, "http://h.test:47082/a//b").action, "ask");
    const r = await store.add("http://h.test:47082/a//b", "allow-url");
    assert.equal(r.previous, undefined, "a new rule, not the existing one");
    assert.equal(r.rule.pattern, "http://h.test:47082/a//b");
    assert.deepEqual(await onFile(store), [
      ["http://h.test:47082/a/b", "allow-url"],
      ["http://h.test:47082/a//b", "allow-url"],
    ]);
    // The file is valid and both URLs are allowed, each by its own rule.
    const reread = new RulesStore(store.path);
    await reread.load();
    for (const set of [store.current, reread.current]) {
      assert.equal(at(set, "http://h.test:47082/a//b").rule?.pattern, "http://h.test:47082/a//b");
      assert.equal(at(set, "http://h.test:47082/a/b").rule?.pattern, "http://h.test:47082/a/b");
      assert.equal(at(set, "http://h.test:47082//a/b").action, "ask");
    }
    // A spelling forwarded the same way is the same rule: nothing changes.
    const same = await store.add("http://H.test:47082/a/./%62", "allow-url");
    assert.equal(same.previous?.pattern, "http://h.test:47082/a/b");
    assert.equal(same.rule.pattern, "http://h.test:47082/a/b");
    assert.equal((await onFile(store)).length, 2);

    // rm: each by its own spelling; any other spelling still removes a rule for that URL.
    assert.equal(
      (await store.remove("http://h.test:47082/a//b"))?.pattern,
      "http://h.test:47082/a//b",
    );
    assert.deepEqual(await onFile(store), [["http://h.test:47082/a/b", "allow-url"]]);
    await store.add("http://h.test:47082/a//b", "allow-url");
    assert.equal(
      (await store.remove("http://h.test:47082/a/%62"))?.pattern,
      "http://h.test:47082/a/b",
    );
    assert.deepEqual(await onFile(store), [["http://h.test:47082/a//b", "allow-url"]]);
    assert.equal(
      (await store.remove("http://h.test:47082/a///b"))?.pattern,
      "http://h.test:47082/a//b",
    );
    assert.deepEqual(await onFile(store), []);
  });
});

Deno.test("URL rules: an allow and a deny for the same URL are one rule, whatever the spelling", async () => {
  await withTempDir(async (dir) => {
    // A deny replaced by an allow for another spelling takes the allow's
    // spelling, so the rule covers what was asked.
    const store = await loaded(dir, { "http://h.test/a//b": "deny-url", "h.test": "deny" });
    const r = await store.add("http://h.test/a/b", "allow-url");
    assert.equal(r.previous?.pattern, "http://h.test/a//b");
    assert.equal(r.rule.pattern, "http://h.test/a/b");
    assert.deepEqual(await onFile(store), [["http://h.test/a/b", "allow-url"], ["h.test", "deny"]]);
    assert.equal(at(store.current, "http://h.test/a/b").action, "allow");

    // A deny replaces the allow with the same meaning, which keeps its place and spelling...
    await store.add("http://h.test/a//b", "allow-url");
    const d = await store.add("http://h.test/a/./b", "deny-url");
    assert.equal(d.previous?.pattern, "http://h.test/a/b");
    assert.deepEqual(await onFile(store), [
      ["http://h.test/a/b", "deny-url"],
      ["h.test", "deny"],
      ["http://h.test/a//b", "allow-url"],
    ]);
    // ...and denies every spelling: the other allow no longer matches anything.
    assert.equal(at(store.current, "http://h.test/a//b").action, "deny");

    // The same key for both verdicts is never written twice.
    await store.add("https://h.test/s?q=a+b", "allow-url");
    await store.add("https://h.test/s?q=a+b", "deny-url");
    const keys = (await onFile(store)).map(([k]) => k);
    assert.equal(keys.filter((k) => k === "https://h.test/s?q=a+b").length, 1);
    await store.add("https://h.test/s?q=a+b", "allow-url");
    assert.equal(at(store.current, "https://h.test/s?q=a+b").action, "allow");

    // A file holding an allow and a deny for one URL (hand-made): adding the
    // allow removes the deny that would make it useless.
    await Deno.writeTextFile(
      store.path,
      '{\n  "http://h.test/x//y": "allow-url",\n  "http://h.test/x/y": "deny-url"\n}\n',
    );
    const both = await store.add("http://h.test/x//y", "allow-url");
    assert.equal(both.previous?.action, "deny-url");
    assert.deepEqual(await onFile(store), [["http://h.test/x//y", "allow-url"]]);
    assert.equal(at(store.current, "http://h.test/x//y").action, "allow");
  });
});

Deno.test("import --replace and merge keep two allow URL rules that differ only in slashes", async () => {
  await withTempDir(async (dir) => {
    const store = await loaded(dir, { "x.test": "allow" });
    const rules: Array<[string, StoredAction]> = [
      ["http://h.test/a/b", "allow-url"],
      ["http://h.test/a//b", "allow-url"],
    ];
    await store.replaceAll(rules);
    assert.deepEqual(await onFile(store), rules);
    await store.replaceAll([]);
    assert.deepEqual(await onFile(store), []);
    assert.deepEqual(await store.merge(rules), { added: 2, updated: 0, unchanged: 0 });
    assert.deepEqual(await onFile(store), rules);
  });
});

/**
 * An editor rewriting the file in place: opens it with truncate now, writes
 * `text` through that same handle after `ms`.
 */
async function editInPlace(path: string, text: string, ms: number): Promise<void> {
  const f = await Deno.open(path, { write: true, truncate: true });
  try {
    await sleep(ms);
    const bytes = new TextEncoder().encode(text);
    for (let done = 0; done < bytes.length;) done += await f.write(bytes.subarray(done));
  } finally {
    f.close();
  }
}

const THREE: Record<string, StoredAction> = {
  "a.test": "allow-domain",
  "evil.test": "deny-domain",
  "b.test": "allow-domain",
};
const FOUR = '{\n  "a.test": "allow-domain",\n  "evil.test": "deny-domain",\n' +
  '  "b.test": "allow-domain",\n  "c.test": "allow-domain"\n}\n';

Deno.test("an edit waits for a file an editor is rewriting in place, then keeps what it wrote", async () => {
  await withTempDir(async (dir) => {
    const store = await loaded(dir, THREE, { settleMs: 50, emptyWaitMs: 2000 });
    const editor = editInPlace(store.path, FOUR, 400);
    await sleep(50); // the file is empty now
    assert.equal(await Deno.readTextFile(store.path), "");
    const r = await store.add("h.test:47082", "allow-domain");
    await editor;
    assert.equal(r.previous, undefined);
    assert.deepEqual((await onFile(store)).map(([k]) => k), [
      "a.test",
      "evil.test",
      "b.test",
      "c.test",
      "h.test:47082",
    ]);
    assert.equal(store.current.rules.length, 5);
  });
});

Deno.test("an edit refuses to overwrite a file that stays empty, missing or without an object while rules are in force", async () => {
  for (const blank of ["", "// being rewritten\n", null]) {
    await withTempDir(async (dir) => {
      const store = await loaded(dir, THREE, { settleMs: 50, emptyWaitMs: 300 });
      if (blank === null) await Deno.remove(store.path);
      else await Deno.writeTextFile(store.path, blank);
      const started = Date.now();
      const err = await store.add("h.test:47082", "allow-domain").then(
        () => assert.fail(`${JSON.stringify(blank)} was overwritten`),
        (e) => e,
      );
      assert.ok(Date.now() - started >= 300, "it waited for the file to come back");
      assert.ok(err instanceof RulesFileError, String(err));
      const state = blank === null ? "missing" : blank === "" ? "empty" : "without a rules object";
      assert.equal(
        err.message,
        `Cannot update rules "${store.path}": the file is ${state} while 3 rules are in force; ` +
          `not overwriting it (an editor may be rewriting it)`,
      );
      if (blank === null) await assert.rejects(Deno.stat(store.path), Deno.errors.NotFound);
      else assert.equal(await Deno.readTextFile(store.path), blank);
      assert.equal(store.current.rules.length, 3, "the rules in force stay");
      // Still so after the wait, it was meant (no watcher told this store): the next edit proceeds.
      await store.add("h.test:47082", "allow-domain");
      assert.deepEqual(await onFile(store), [["h.test:47082", "allow-domain"]]);
    });
  }
});

Deno.test("a file deliberately emptied, deleted or cleared is edited once no rules are in force", async () => {
  for (const how of ["empty", "delete", "clear"] as const) {
    await withTempDir(async (dir) => {
      const options = { settleMs: 20, emptyWaitMs: 400 };
      const store = await loaded(dir, THREE, options);
      const reloads: number[] = [];
      const watcher = store.watch({ onReload: (s) => reloads.push(s.rules.length) }, {
        debounceMs: 20,
        pollMs: 50,
        settleMs: 100,
      });
      try {
        if (how === "empty") await Deno.writeTextFile(store.path, "");
        else if (how === "delete") await Deno.remove(store.path);
        // `netmonitor rules clear` in another process: the file keeps `{}`.
        else await new RulesStore(store.path).replaceAll([]);
        for (let i = 0; i < 200 && !reloads.includes(0); i++) await sleep(20);
        assert.deepEqual(reloads, [0], `${how}: the watcher let it take effect`);
        const started = Date.now();
        const r = await store.add("h.test:47082", "allow-domain");
        assert.equal(r.previous, undefined);
        assert.deepEqual(await onFile(store), [["h.test:47082", "allow-domain"]]);
        // A cleared file is edited at once; an emptied one once the moment has passed.
        if (how === "clear") assert.ok(Date.now() - started < 300, `${how} waited`);
      } finally {
        await watcher.close();
      }
    });
  }
});

Deno.test("a store that never had rules edits an empty or missing file at once (netmonitor rules add)", async () => {
  for (const blank of ["", null]) {
    await withTempDir(async (dir) => {
      const path = join(dir, "network-rules.json");
      if (blank !== null) await Deno.writeTextFile(path, blank);
      const store = new RulesStore(path, { settleMs: 50, emptyWaitMs: 60_000 });
      const started = Date.now();
      await store.add("h.test", "deny-domain");
      assert.ok(Date.now() - started < 10_000);
      assert.deepEqual(await onFile(store), [["h.test", "deny-domain"]]);
    });
  }
});

Deno.test("URL rules: adding or removing /x//../admin leaves a rule for /admin alone", async () => {
  await withTempDir(async (dir) => {
    // /x//../admin is /x/admin (RFC 3986 5.2.4; the proxy forwards that),
    // another URL than /admin: the allow must not replace the deny.
    const store = await loaded(dir, { "https://h.test/admin": "deny-url", "h.test": "allow" });
    const r = await store.add("https://h.test/x//../admin", "allow-url");
    assert.equal(r.previous, undefined);
    assert.deepEqual(await onFile(store), [
      ["https://h.test/admin", "deny-url"],
      ["h.test", "allow"],
      ["https://h.test/x//../admin", "allow-url"],
    ]);
    assert.equal(at(store.current, "https://h.test/admin").action, "deny");
    assert.equal(at(store.current, "https://h.test/x/admin").action, "allow");
    assert.equal((await store.remove("https://h.test/x//../admin"))?.action, "allow-url");
    assert.equal(await store.remove("https://h.test/x//../admin"), undefined);
    assert.deepEqual(await onFile(store), [["https://h.test/admin", "deny-url"], [
      "h.test",
      "allow",
    ]]);
  });
});

Deno.test("URL rules: no allow rule names a URL with a backslash (the proxy refuses it)", async () => {
  await withTempDir(async (dir) => {
    // It would never match, and it used to replace the deny for /a/b.
    const store = await loaded(dir, { "https://h.test/a/b": "deny-url", "h.test": "allow" });
    await assert.rejects(
      store.add("https://h.test/a\\b", "allow-url"),
      /an allow URL rule cannot contain a backslash/,
    );
    await assert.rejects(store.add("https://h.test/a?x=\\", "allow"), /cannot contain a backslash/);
    assert.deepEqual(await onFile(store), [["https://h.test/a/b", "deny-url"], [
      "h.test",
      "allow",
    ]]);
    assert.equal(at(store.current, "https://h.test/a/b").action, "deny");
    const parsed = parseRules('{"https://h.test/a\\\\b": "allow"}');
    assert.match(parsed.problems[0]?.message ?? "", /cannot contain a backslash/);

    // A deny may be spelled with one (it matches every spelling): an allow
    // for that URL replaces it under its own spelling, and rm finds it.
    await Deno.writeTextFile(store.path, '{"https://h.test/a\\\\b": "deny", "h.test": "deny"}');
    const r = await store.add("https://h.test/a/b", "allow-url");
    assert.equal(r.previous?.pattern, "https://h.test/a\\b");
    assert.deepEqual(await onFile(store), [["https://h.test/a/b", "allow-url"], [
      "h.test",
      "deny",
    ]]);
    assert.equal(at(store.current, "https://h.test/a/b").action, "allow");
    await Deno.writeTextFile(store.path, '{"https://h.test/a/b": "deny", "h.test": "deny"}');
    assert.equal((await store.remove("https://h.test/a\\b"))?.pattern, "https://h.test/a/b");
    assert.deepEqual(await onFile(store), [["h.test", "deny"]]);
  });
});
