import assert from "node:assert/strict";
import { join } from "node:path";
import {
  readTextLimited,
  RuleError,
  type RuleSet,
  RulesFileError,
  RulesStore,
  type StoredAction,
} from "../../lib/rules/mod.ts";

const DATA = new URL("../testdata/rules/", import.meta.url);

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netmonitor-rules-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function storeWith(dir: string, text?: string): Promise<RulesStore> {
  const store = new RulesStore(join(dir, "network-rules.json"));
  if (text !== undefined) await Deno.writeTextFile(store.path, text);
  return store;
}

const pairs = (rules: RuleSet) => rules.rules.map((r) => [r.pattern, r.action]);

Deno.test("load: a missing file is no rules and is not created", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir);
    const rules = await store.load();
    assert.deepEqual(rules.rules, []);
    assert.equal(store.current, rules);
    await assert.rejects(Deno.stat(store.path), Deno.errors.NotFound);
  });
});

Deno.test("load: the original design's file", async () => {
  await withTempDir(async (dir) => {
    const text = await Deno.readTextFile(new URL("design_format.json", DATA));
    const store = await storeWith(dir, text);
    const rules = await store.load();
    assert.equal(rules.rules.length, 4);
    assert.equal(store.current, rules);
    assert.equal(
      rules.decide({ scheme: "https", host: "api.openai.com", port: 443, path: "/v1" }).action,
      "allow",
    );
  });
});

Deno.test("a corrupt file is refused with file:line:col and left byte-for-byte unchanged", async () => {
  for (const name of ["corrupt_invalid.json", "corrupt_syntax.json", "corrupt_truncated.json"]) {
    await withTempDir(async (dir) => {
      const original = await Deno.readFile(new URL(name, DATA));
      const store = await storeWith(dir);
      await Deno.writeFile(store.path, original);
      const isFileError = (e: unknown) => {
        assert.ok(e instanceof RulesFileError, String(e));
        assert.equal(e.file, store.path);
        assert.ok(e.problems.length > 0);
        assert.match(
          e.message,
          new RegExp(`^Cannot (load|update) rules "${store.path}": .* \\d+:\\d+`, "s"),
        );
        return true;
      };
      await assert.rejects(store.load(), isFileError);
      await assert.rejects(store.add("new.test", "allow"), isFileError);
      await assert.rejects(store.remove("github.com"), isFileError);
      await assert.rejects(store.replaceAll([]), isFileError);
      await assert.rejects(store.merge([["new.test", "deny"]]), isFileError);
      assert.deepEqual(await Deno.readFile(store.path), original, name);
      assert.deepEqual(store.current.rules, []);
    });
  }
});

Deno.test("load: a file that became invalid keeps the last good rules in `current`", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, '{"a.test": "allow"}');
    const good = await store.load();
    await Deno.writeTextFile(store.path, '{"a.test": "allow",');
    await assert.rejects(store.load(), RulesFileError);
    assert.equal(store.current, good);
  });
});

Deno.test("load: an unreadable path is a RulesFileError without a stack in the message", async () => {
  await withTempDir(async (dir) => {
    const store = new RulesStore(dir); // a directory
    await assert.rejects(store.load(), (e: unknown) => {
      assert.ok(e instanceof RulesFileError);
      assert.equal(e.message, `Cannot read rules "${dir}": is a directory`);
      return true;
    });
  });
});

Deno.test("load: an endless or oversized file is refused, not read into memory", async () => {
  const store = new RulesStore("/dev/zero");
  await assert.rejects(store.load(), (e: unknown) => {
    assert.ok(e instanceof RulesFileError);
    assert.equal(
      e.message,
      'Cannot read rules "/dev/zero": larger than 64 MiB, the most a rules file may be',
    );
    return true;
  });
  await withTempDir(async (dir) => {
    const path = join(dir, "r.json");
    // Read as Deno.readTextFile reads: a BOM kept, invalid bytes replaced.
    await Deno.writeFile(path, new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0xff, 0x7d]));
    assert.equal(await readTextLimited(path, 6), "\ufeff{\ufffd}");
    await assert.rejects(readTextLimited(path, 5), RangeError);
    const stream = new Blob(["{}", "\n"]).stream();
    assert.equal(await readTextLimited(stream), "{}\n");
  });
});

Deno.test("add: creates the directory and file, appends, replaces an equal pattern's action", async () => {
  await withTempDir(async (dir) => {
    const store = new RulesStore(join(dir, "sub", "network-rules.json"));
    const first = await store.add("github.com", "allow-domain");
    assert.deepEqual(first.previous, undefined);
    assert.equal(
      await Deno.readTextFile(store.path),
      '{\n  "github.com": "allow-domain"\n}\n',
    );
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(join(dir, "sub"))).mode! & 0o777, 0o700);
    }
    await store.add("*.github.com", "allow");
    const replaced = await store.add("GitHub.COM.", "deny");
    assert.equal(replaced.previous?.action, "allow-domain");
    assert.equal(replaced.rule.pattern, "github.com"); // keeps the stored spelling
    assert.equal(
      await Deno.readTextFile(store.path),
      '{\n  "github.com": "deny",\n  "*.github.com": "allow"\n}\n',
    );
    assert.deepEqual(pairs(store.current), [["github.com", "deny"], ["*.github.com", "allow"]]);
    // Same rule again: nothing to write.
    const before = await Deno.stat(store.path);
    const same = await store.add("github.com", "deny");
    assert.equal(same.previous?.action, "deny");
    assert.equal((await Deno.stat(store.path)).mtime?.getTime(), before.mtime?.getTime());
  });
});

Deno.test("add: invalid input throws RuleError before touching anything", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir);
    await assert.rejects(() => store.add("*bob.com", "allow"), RuleError);
    await assert.rejects(() => store.add("github.com", "alow" as StoredAction), RuleError);
    await assert.rejects(() => store.add("github.com", "allow-url"), RuleError);
    await assert.rejects(Deno.stat(store.path), Deno.errors.NotFound);
  });
});

Deno.test("comments, key order and layout survive add and remove", async () => {
  await withTempDir(async (dir) => {
    const original = await Deno.readTextFile(new URL("commented.jsonc", DATA));
    const store = await storeWith(dir, original);
    await store.add("example.com", "deny");
    await store.add("pypi.org", "deny-domain"); // change an action in the middle
    assert.equal(
      await Deno.readTextFile(store.path),
      `{
  // Code hosting: the apex and every subdomain.
  "github.com": "allow-domain",
  "*.github.com": "allow-domain", // api, raw, objects...
  /* Package registries */
  "pypi.org": "deny-domain",
  "registry.npmjs.org": "allow-domain",
  // Never.
  "suspicious-site.com": "deny-domain",
  "example.com": "deny",
}
`,
    );
    assert.deepEqual(await store.remove("*.github.com"), {
      pattern: "*.github.com",
      action: "allow-domain",
      kind: "wildcard",
      verdict: "allow",
    });
    assert.equal((await store.remove("example.com"))?.action, "deny");
    assert.equal(await store.remove("nothing.test"), undefined);
    assert.equal(
      await Deno.readTextFile(store.path),
      `{
  // Code hosting: the apex and every subdomain.
  "github.com": "allow-domain",
  /* Package registries */
  "pypi.org": "deny-domain",
  "registry.npmjs.org": "allow-domain",
  // Never.
  "suspicious-site.com": "deny-domain",
}
`,
    );
  });
});

/** [before, edit, after] */
type EditCase = [string, (s: RulesStore) => Promise<unknown>, string];

Deno.test("edits in other layouts stay valid and minimal", async () => {
  const add = (p: string, a: StoredAction = "allow") => (s: RulesStore) => s.add(p, a);
  const rm = (p: string) => (s: RulesStore) => s.remove(p);
  const cases: EditCase[] = [
    ["", add("a.test"), '{\n  "a.test": "allow"\n}\n'],
    ["// my rules\n", add("a.test"), '// my rules\n{\n  "a.test": "allow"\n}\n'],
    ["{}", add("a.test"), '{\n  "a.test": "allow"\n}'],
    ["{}\n", add("a.test"), '{\n  "a.test": "allow"\n}\n'],
    ["{\n  // none yet\n}\n", add("a.test"), '{\n  // none yet\n  "a.test": "allow"\n}\n'],
    ['{"a.test": "allow"}', add("b.test"), '{\n  "a.test": "allow",\n  "b.test": "allow"\n}'],
    ['{\n\t"a.test": "allow"\n}', add("b.test"), '{\n\t"a.test": "allow",\n\t"b.test": "allow"\n}'],
    [
      '{\r\n  "a.test": "allow" // why\r\n}\r\n',
      add("b.test"),
      '{\r\n  "a.test": "allow", // why\r\n  "b.test": "allow"\r\n}\r\n',
    ],
    [
      // Old Mac line ends stay what they were.
      '{\r  "a.test": "allow"\r}\r',
      add("b.test"),
      '{\r  "a.test": "allow",\r  "b.test": "allow"\r}\r',
    ],
    [
      '{\n    "a.test": "allow",\n    "b.test": "deny"\n}\n',
      rm("b.test"),
      '{\n    "a.test": "allow"\n}\n',
    ],
    [
      '{\n  "a.test": "allow", // keep me\n  "b.test": "deny" // and me? no: my rule is gone\n}\n',
      rm("b.test"),
      '{\n  "a.test": "allow" // keep me\n}\n',
    ],
    [
      '{\n  // first\n  "a.test": "allow",\n  // second\n  "b.test": "deny"\n}\n',
      rm("a.test"),
      '{\n  // first\n  // second\n  "b.test": "deny"\n}\n',
    ],
    ['{"a.test": "allow", "b.test": "deny"}', rm("a.test"), '{"b.test": "deny"}'],
    ['{"a.test": "allow", "b.test": "deny"}', rm("b.test"), '{"a.test": "allow"}'],
    ['{ "a.test": "allow" }', rm("a.test"), "{}"],
    ['{\n  "a.test": "allow"\n}\n', rm("A.TEST."), "{\n}\n"],
    [
      '{\n  "https://h.test/%7eapi": "deny"\n}\n',
      rm("https://H.test:443/~api"),
      "{\n}\n",
    ],
    [
      '{\n  // keep\n  "a.test": "allow",\n  "b.test": "deny",\n}\n',
      (s) => s.replaceAll([["c.test", "deny"], ["b.test", "allow"]]),
      '{\n  // keep\n  "b.test": "allow",\n  "c.test": "deny",\n}\n',
    ],
    ['{\n  // keep\n  "a.test": "allow"\n}\n', (s) => s.replaceAll([]), "{\n  // keep\n}\n"],
  ];
  await withTempDir(async (dir) => {
    for (const [before, edit, after] of cases) {
      const store = await storeWith(dir, before);
      await edit(store);
      assert.equal(await Deno.readTextFile(store.path), after, JSON.stringify(before));
    }
  });
});

Deno.test("merge: one locked edit, counted", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, '{\n  "a.test": "allow",\n  "b.test": "deny"\n}\n');
    const result = await store.merge([["a.test", "allow"], ["B.test", "allow"], [
      "c.test",
      "deny",
    ]]);
    assert.deepEqual(result, { added: 1, updated: 1, unchanged: 1 });
    assert.deepEqual(pairs(store.current), [
      ["a.test", "allow"],
      ["b.test", "allow"],
      ["c.test", "deny"],
    ]);
    await assert.rejects(() => store.merge([["d.test", "allow"], ["*x", "deny"]]), RuleError);
    assert.equal(store.current.rules.length, 3);
  });
});

Deno.test("writes are atomic: no temporary files are left, the mode is kept", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, "{}\n");
    if (Deno.build.os !== "windows") await Deno.chmod(store.path, 0o640);
    for (let i = 0; i < 5; i++) await store.add(`h${i}.test`, "allow");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names.sort(), ["network-rules.json", "network-rules.json.lock"]);
    if (Deno.build.os !== "windows") {
      assert.equal((await Deno.stat(store.path)).mode! & 0o777, 0o640);
    }
  });
});

Deno.test({
  name: "a symlinked rules file stays a symlink; its target is updated",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withTempDir(async (dir) => {
      const real = join(dir, "dotfiles-rules.json");
      await Deno.writeTextFile(real, "{}\n");
      const link = join(dir, "network-rules.json");
      await Deno.symlink(real, link);
      await new RulesStore(link).add("a.test", "allow");
      assert.ok((await Deno.lstat(link)).isSymlink);
      assert.match(await Deno.readTextFile(real), /"a\.test": "allow"/);
    }),
});

Deno.test("concurrent adds in one process lose nothing", async () => {
  await withTempDir(async (dir) => {
    const a = await storeWith(dir);
    const b = new RulesStore(a.path); // a second store on the same file
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).add(`h${i}.test`, "allow")),
    );
    const rules = await new RulesStore(a.path).load();
    assert.equal(rules.rules.length, 20);
  });
});

Deno.test("concurrent adds from two processes lose nothing", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "network-rules.json");
    await Deno.writeTextFile(path, '{\n  // shared\n  "start.test": "deny"\n}\n');
    const worker = new URL("add_worker.ts", DATA).pathname;
    const run = (prefix: string) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-check", worker, path, prefix, "20"],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const results = await Promise.all([run("one"), run("two")]);
    for (const r of results) {
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
    }
    const text = await Deno.readTextFile(path);
    assert.match(text, /\/\/ shared/);
    const rules = (await new RulesStore(path).load()).rules.map((r) => r.pattern).sort();
    const want = ["start.test"];
    for (const p of ["one", "two"]) for (let i = 0; i < 20; i++) want.push(`${p}-${i}.test`);
    assert.deepEqual(rules, want.sort());
  });
});

Deno.test({
  name:
    "concurrent adds through a symlink and at its target (two data dirs, one rules file) lose nothing",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withTempDir(async (dir) => {
      // Two data dirs share one rules file: the second links to the first's.
      // Each edits under its own path, so each takes the lock next to that path.
      const first = join(dir, "first");
      const second = join(dir, "second");
      await Deno.mkdir(first);
      await Deno.mkdir(second);
      const real = join(first, "network-rules.json");
      await Deno.writeTextFile(real, '{\n  // shared\n  "start.test": "deny"\n}\n');
      const link = join(second, "network-rules.json");
      await Deno.symlink(real, link);
      const worker = new URL("add_worker.ts", DATA).pathname;
      const run = (path: string, prefix: string) =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "--no-check", worker, path, prefix, "20"],
          stdout: "piped",
          stderr: "piped",
        }).output();
      const results = await Promise.all([run(real, "one"), run(link, "two")]);
      for (const r of results) {
        assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      }
      assert.ok((await Deno.lstat(link)).isSymlink);
      const rules = (await new RulesStore(real).load()).rules.map((r) => r.pattern).sort();
      const want = ["start.test"];
      for (const p of ["one", "two"]) for (let i = 0; i < 20; i++) want.push(`${p}-${i}.test`);
      assert.deepEqual(rules, want.sort());
    }),
});

Deno.test({
  name: "a rules file reached through a symlinked folder is edited (its one lock is taken once)",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withTempDir(async (dir) => {
      const real = join(dir, "data");
      await Deno.mkdir(real);
      const linked = join(dir, "data-link");
      await Deno.symlink(real, linked);
      await Deno.writeTextFile(join(real, "network-rules.json"), "{}\n");
      const store = new RulesStore(join(linked, "network-rules.json"));
      await store.add("a.test", "allow");
      await new RulesStore(join(real, "network-rules.json")).add("b.test", "deny");
      await store.add("c.test", "allow");
      assert.deepEqual(pairs(await store.load()), [
        ["a.test", "allow"],
        ["b.test", "deny"],
        ["c.test", "allow"],
      ]);
    }),
});

/** Collects watch callbacks; `next()` waits for the next one. */
function recorder() {
  const events: Array<
    | { kind: "reload"; rules: RuleSet }
    | { kind: "error"; err: RulesFileError }
    | { kind: "warning"; message: string }
  > = [];
  let wake: (() => void) | undefined;
  const push = (e: (typeof events)[number]) => {
    events.push(e);
    wake?.();
  };
  return {
    handlers: {
      onReload: (rules: RuleSet) => push({ kind: "reload", rules }),
      onError: (err: RulesFileError) => push({ kind: "error", err }),
      onWarning: (message: string) => push({ kind: "warning", message }),
    },
    async next(): Promise<(typeof events)[number]> {
      const deadline = Date.now() + 10_000;
      while (events.length === 0) {
        if (Date.now() > deadline) throw new Error("no watch event within 10 s");
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, 200);
        });
        clearTimeout(timer);
        wake = undefined;
      }
      return events.shift()!;
    },
    get pending() {
      return events.length;
    },
  };
}

Deno.test("watch: valid edits reload, invalid keep the last good, delete/recreate, rename-over", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, '{"a.test": "allow"}');
    await store.load();
    const rec = recorder();
    const watcher = store.watch(rec.handlers, { debounceMs: 30 });
    try {
      // An in-place edit by another program.
      await Deno.writeTextFile(store.path, '{"a.test": "deny"}');
      let e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["a.test", "deny"]]);

      // An invalid edit: error, and the last good rules stay in force.
      const good = store.current;
      await Deno.writeTextFile(store.path, '{"a.test": "deny",\n "b.test": "alow"}');
      e = await rec.next();
      assert.equal(e.kind, "error");
      if (e.kind === "error") {
        assert.match(e.err.message, /^Cannot reload rules ".*": unknown action "alow" .* at 2:12 /);
      }
      assert.equal(store.current, good);

      // Fixed again.
      await Deno.writeTextFile(store.path, '{"b.test": "allow"}');
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["b.test", "allow"]]);

      // Deleted: no rules. Re-created: picked up.
      await Deno.remove(store.path);
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(store.current.rules, []);
      await Deno.writeTextFile(store.path, '{"c.test": "deny"}');
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["c.test", "deny"]]);

      // Atomic rename-over (editors, `netmonitor rules add` in another process).
      const tmp = join(dir, "incoming.tmp");
      await Deno.writeTextFile(tmp, '{"d.test": "allow-domain"}');
      await Deno.rename(tmp, store.path);
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["d.test", "allow-domain"]]);

      // Another store (another process) adding a rule.
      await new RulesStore(store.path).add("e.test", "deny");
      e = await rec.next();
      assert.equal(e.kind, "reload");
      if (e.kind === "reload") assert.equal(e.rules, store.current);
      assert.deepEqual(pairs(store.current), [["d.test", "allow-domain"], ["e.test", "deny"]]);

      // This store's own edit: `current` is already up to date, no callback.
      await store.add("f.test", "allow");
      assert.equal(store.current.rules.length, 3);
      // Other files in the directory are ignored.
      await Deno.writeTextFile(join(dir, "network-access.log"), "x\n");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(rec.pending, 0);
    } finally {
      await watcher.close();
    }
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Grace time for an emptied file in the tests: long enough that a slow machine cannot outrun it. */
const SETTLE = 1500;

Deno.test("watch: a symlinked rules file edited at its target elsewhere is picked up", async () => {
  await withTempDir(async (dir) => {
    const elsewhere = join(dir, "elsewhere");
    const data = join(dir, "data");
    await Deno.mkdir(elsewhere);
    await Deno.mkdir(data);
    const target = join(elsewhere, "rules.json");
    await Deno.writeTextFile(target, '{"a.test": "allow"}');
    const store = new RulesStore(join(data, "network-rules.json"));
    await Deno.symlink(target, store.path);
    await store.load();
    assert.deepEqual(pairs(store.current), [["a.test", "allow"]]);
    const rec = recorder();
    const watcher = store.watch(rec.handlers, { debounceMs: 20, pollMs: 50 });
    try {
      // The data directory sees no event for this: only polling can notice.
      await Deno.writeTextFile(target, '{"a.test": "deny"}');
      let e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["a.test", "deny"]]);
      // Same size, written again in place: still seen (the mtime is too recent to trust).
      await Deno.writeTextFile(target, '{"b.test": "deny"}');
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["b.test", "deny"]]);
      // An atomic rename-over at the target.
      await Deno.writeTextFile(join(elsewhere, "tmp"), "{}");
      await Deno.rename(join(elsewhere, "tmp"), target);
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(store.current.rules, []);
    } finally {
      await watcher.close();
    }
  });
});

Deno.test("watch: a file-system watcher that ends is reported, and polling still reloads", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, '{"a.test": "allow"}');
    await store.load();
    const rec = recorder();
    let real: Deno.FsWatcher | undefined;
    const watcher = store.watch(rec.handlers, {
      debounceMs: 20,
      pollMs: 50,
      openWatcher: (d) => real = Deno.watchFs(d, { recursive: false }),
    });
    try {
      real!.close(); // the watcher ends underneath the store
      let e = await rec.next();
      assert.equal(e.kind, "warning");
      if (e.kind === "warning") {
        assert.match(
          e.message,
          /file-system watcher on .* stopped; checking the file .* every 50 ms/,
        );
      }
      // The operator removes the allow rule: it must not stay in force.
      await Deno.writeTextFile(store.path, '{"a.test": "deny"}');
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(pairs(store.current), [["a.test", "deny"]]);
      await new RulesStore(store.path).remove("a.test");
      e = await rec.next();
      assert.equal(e.kind, "reload");
      assert.deepEqual(store.current.rules, []);
    } finally {
      await watcher.close();
    }
  });
});

Deno.test("watch: without onWarning, a watcher that cannot start is reported through onError", async () => {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, '{"a.test": "allow"}');
    await store.load();
    const errors: RulesFileError[] = [];
    const reloads: RuleSet[] = [];
    const watcher = store.watch({
      onReload: (r) => reloads.push(r),
      onError: (e) => errors.push(e),
    }, {
      debounceMs: 20,
      pollMs: 50,
      openWatcher: () => {
        throw new Deno.errors.PermissionDenied("too many inotify instances (os error 24)");
      },
    });
    try {
      await Deno.writeTextFile(store.path, '{"a.test": "deny"}');
      const end = Date.now() + 10_000;
      while ((errors.length === 0 || reloads.length === 0) && Date.now() < end) await sleep(20);
      assert.equal(errors.length, 1);
      assert.match(
        errors[0].message,
        /^Cannot watch rules ".*": the file-system watcher on .* could not start: permission denied; checking/,
      );
      assert.deepEqual(pairs(reloads.at(-1)!), [["a.test", "deny"]]);
    } finally {
      await watcher.close();
    }
  });
});

/** A store loaded from `text` in a temp dir, watched with a quick debounce, poll and settle time. */
async function withWatchedStore(
  text: string,
  fn: (store: RulesStore, rec: ReturnType<typeof recorder>) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const store = await storeWith(dir, text);
    await store.load();
    const rec = recorder();
    const watcher = store.watch(rec.handlers, { debounceMs: 20, pollMs: 50, settleMs: SETTLE });
    try {
      await fn(store, rec);
    } finally {
      await watcher.close();
    }
  });
}

Deno.test("watch: a rewrite caught after only its leading comment, blank line or BOM keeps the rules", async () => {
  const full = '// my rules\n{"evil.test": "deny", "*": "allow"}';
  await withWatchedStore(full, async (store, rec) => {
    for (const [i, partial] of ["// my rules\n", "\n", "\uFEFF", "/* header */  "].entries()) {
      await Deno.writeTextFile(store.path, partial);
      await sleep(150);
      assert.equal(rec.pending, 0, `${JSON.stringify(partial)} is not applied at once`);
      assert.equal(
        store.current.decide({ scheme: "https", host: "evil.test", port: 443 }).action,
        "deny",
      );
      await Deno.writeTextFile(store.path, full + " ".repeat(i + 1));
      // On a loaded machine the partial file can outlast the settle time and be
      // reported as an error first; the last good rules stay until the reload.
      let e = await rec.next();
      while (e.kind === "error") {
        assert.equal(
          store.current.decide({ scheme: "https", host: "evil.test", port: 443 }).action,
          "deny",
        );
        e = await rec.next();
      }
      assert.equal(e.kind, "reload");
    }
  });
});

Deno.test("watch: a file nested too deeply is a reload error; the last good rules stay", async () => {
  await withWatchedStore('{"a.test": "deny"}', async (store, rec) => {
    await Deno.writeTextFile(store.path, `{"a.com": ${"[".repeat(20000)}${"]".repeat(20000)}}`);
    const e = await rec.next();
    assert.equal(e.kind, "error");
    assert.match(e.kind === "error" ? e.err.message : "", /nested too deeply to read .* at 1:1/);
    assert.deepEqual(pairs(store.current), [["a.test", "deny"]]);
  });
});

Deno.test("watch: a file truncated mid-rewrite keeps its rules; an empty or missing file that stays so means no rules", async () => {
  await withWatchedStore('{"a.test": "deny"}', async (store, rec) => {
    // A non-atomic editor: truncate, pause, write.
    await Deno.writeTextFile(store.path, "");
    await sleep(150);
    assert.equal(rec.pending, 0, "an empty file is not applied at once");
    assert.deepEqual(pairs(store.current), [["a.test", "deny"]]);
    await Deno.writeTextFile(store.path, '{"a.test": "deny", "b.test": "deny"}');
    let e = await rec.next();
    assert.equal(e.kind, "reload");
    assert.deepEqual(pairs(store.current), [["a.test", "deny"], ["b.test", "deny"]]);
    await sleep(SETTLE + 300); // the pending re-check finds the same text: no second callback
    assert.equal(rec.pending, 0);

    // Truly emptied: after the grace time, no rules.
    await Deno.writeTextFile(store.path, "");
    e = await rec.next();
    assert.equal(e.kind, "reload");
    assert.deepEqual(store.current.rules, []);

    // Deleted while holding rules: the same grace, then no rules.
    await Deno.writeTextFile(store.path, '{"c.test": "allow"}');
    e = await rec.next();
    assert.equal(e.kind, "reload");
    await Deno.remove(store.path);
    await sleep(150);
    assert.deepEqual(pairs(store.current), [["c.test", "allow"]]);
    e = await rec.next();
    assert.equal(e.kind, "reload");
    assert.deepEqual(store.current.rules, []);
  });
});
