/**
 * `netmonitor manage` driven through its I/O interface: every menu option,
 * with the bad inputs the issue names (invalid pattern, missing file, number
 * out of range). The same menu is driven on a real terminal in
 * tests/e2e/manage_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runManage } from "../../cli/manage.ts";
import type { LineReader } from "../../cli/terminal_prompt.ts";
import { RulesStore } from "../../lib/rules/mod.ts";

const FIXTURE_LOG = new URL("../testdata/logs/network-access.log", import.meta.url).pathname;

/** Answers the menu's questions from a list; the end of the list is Ctrl-D. */
class ScriptedLines implements LineReader {
  readonly asked: number[] = [];
  constructor(readonly answers: string[]) {}
  readLine(): Promise<string | null> {
    return Promise.resolve(this.answers.length ? this.answers.shift()! : null);
  }
}

async function drive(
  answers: string[],
  setup: (dir: string) => Promise<void> = async () => {},
): Promise<{ out: string; code: number; dir: string; rulesFile: string }> {
  const dir = await Deno.makeTempDir({ prefix: "nm-manage-" });
  await setup(dir);
  const rulesFile = join(dir, "network-rules.json");
  let out = "";
  const lines = new ScriptedLines(answers);
  const code = await runManage(
    { rulesFile, logFile: FIXTURE_LOG },
    { lines, write: (t) => (out += t), color: false, width: () => 100 },
    dir,
  );
  assert.deepEqual(lines.answers, [], "every scripted answer was asked for");
  return { out, code, dir, rulesFile };
}

async function withDrive(
  answers: string[],
  check: (r: { out: string; code: number; dir: string; rulesFile: string }) => void | Promise<void>,
  setup?: (dir: string) => Promise<void>,
): Promise<void> {
  const r = await drive(answers, setup);
  try {
    await check(r);
  } finally {
    await Deno.remove(r.dir, { recursive: true });
  }
}

const RULES = `{
  // trusted
  "github.com": "allow-domain",
  "*.github.com": "allow-domain",
  "evil.test": "deny-domain"
}
`;

const withRules = (dir: string) => Deno.writeTextFile(join(dir, "network-rules.json"), RULES);

Deno.test("manage: the menu, a bad choice, and quit (option 9)", async () => {
  await withDrive(["42", "abc", "", "9"], ({ out, code }) => {
    assert.equal(code, 0);
    assert.match(out, /Network Firewall Management/);
    for (const [i, item] of ["View statistics", "Export rules", "Quit"].entries()) {
      assert.ok(out.includes(item), item + String(i));
    }
    assert.match(out, / {2}6\. Export rules/);
    assert.match(out, /"42" is not a number from 1 to 9\. Try again\./);
    assert.match(out, /"abc" is not a number from 1 to 9/);
    assert.match(out, /Bye\.\n$/);
  });
});

Deno.test("manage: end of input (Ctrl-D) leaves cleanly", async () => {
  await withDrive([], ({ out, code }) => {
    assert.equal(code, 0);
    assert.match(out, /Bye\./);
  });
});

Deno.test("manage: 1 views statistics from the log and the rules", async () => {
  await withDrive(["1", "9"], ({ out }) => {
    assert.match(out, /Requests 12 {4}Allowed 7 {4}Denied 4 {4}Prompted 2 {4}Timed out 1/);
    assert.match(out, /api\.github\.test +3 +3 +0 +0/);
    assert.match(out, /2 log lines were not readable/);
    assert.match(out, /Active rules \(3\)/);
    assert.match(out, /\*\.github\.com +allow-domain/);
  }, withRules);
});

Deno.test("manage: 2 views recent requests; a bad count asks again", async () => {
  await withDrive(["2", "0", "many", "3", "9"], ({ out }) => {
    assert.match(out, /"0" is not a number from 1 to 10000/);
    assert.match(out, /"many" is not a number/);
    assert.match(out, /Last 3 requests, newest last:/);
    const shown = out.split("\n").filter((l) => / (ALLOW|DENY |ERROR) /.test(l));
    assert.equal(shown.length, 3);
    assert.match(shown[0], /DENY +GET +403 http:\/\/\[::1\]:8080\//);
    assert.match(shown[2], /ALLOW GET +200 http:\/\/pypi\.test\/simple\//);
    assert.match(out, /1 unreadable log line\(s\) skipped/);
  });
});

Deno.test("manage: 3 adds a rule; invalid pattern and action ask again", async () => {
  await withDrive(
    [
      "3",
      "*bob.com",
      "a.*.com",
      "pypi.test",
      "7",
      "alow",
      "allow-url",
      "2",
      "3",
      "https://x.test/api",
      "",
      "9",
    ],
    async ({ out, rulesFile }) => {
      assert.match(out, /✗ .*\*bob\.com.*Try again\./);
      assert.match(out, /✗ .*a\.\*\.com.*Try again\./);
      // A number out of range is named as such, once, with the numbers that work.
      assert.match(out, /✗ "7" is not a number from 1 to 3\. Try again\.\n/);
      assert.doesNotMatch(out, /unknown action "7"/);
      assert.match(
        out,
        /✗ "alow" is not an action\. Type 1, 2 or 3, or one of: allow-domain, deny-domain, passthrough\.\n/,
      );
      assert.match(out, /✗ action "allow-url" for "pypi\.test" needs a URL pattern/);
      assert.match(out, /✓ Added: pypi\.test deny-domain/);
      assert.match(out, /1\. allow-url\n {2}2\. deny-url/);
      assert.match(out, /✓ Added: https:\/\/x\.test\/api allow-url/);
      const text = await Deno.readTextFile(rulesFile);
      assert.match(text, /\/\/ trusted/, "comments survive");
      const rules = (await new RulesStore(rulesFile).load()).rules;
      assert.deepEqual(rules.map((r) => [r.pattern, r.action]), [
        ["github.com", "allow-domain"],
        ["*.github.com", "allow-domain"],
        ["evil.test", "deny-domain"],
        ["pypi.test", "deny-domain"],
        ["https://x.test/api", "allow-url"],
      ]);
    },
    withRules,
  );
});

Deno.test("manage: 3 offers passthrough for a host or wildcard, never for * or a URL", async () => {
  await withDrive(
    [
      "3",
      "*.pinned.test",
      "3",
      "3",
      "*",
      "3",
      "passthrough",
      "2",
      "3",
      "https://x.test/a",
      "passthrough",
      "2",
      "9",
    ],
    async ({ out, rulesFile }) => {
      const passthrough = "3. passthrough (allow, and relay its HTTPS without decrypting it: " +
        "for clients that pin certificates)";
      // The list before each first "Action [1]: " (an action asked again shows none).
      const menus = out.split("Action [1]: ").slice(0, -1)
        .filter((m) => m.includes("  1."))
        .map((m) => m.slice(m.lastIndexOf("  1.")));
      assert.deepEqual(menus, [
        `  1. allow-domain\n  2. deny-domain\n  ${passthrough}\n`,
        "  1. allow-domain\n  2. deny-domain\n",
        "  1. allow-url\n  2. deny-url\n",
      ]);
      assert.match(out, /✓ Added: \*\.pinned\.test passthrough/);
      assert.match(out, /✗ "3" is not a number from 1 to 2\. Try again\./);
      assert.match(
        out,
        /✗ action "passthrough" cannot apply to "\*".*\. Type 1 or 2, or one of: allow-domain, deny-domain\.\n/,
      );
      assert.match(out, /✓ Added: \* deny-domain/);
      assert.match(out, /✗ action "passthrough" for "https:\/\/x\.test\/a" needs a host pattern/);
      assert.match(out, /✓ Added: https:\/\/x\.test\/a deny-url/);
      const rules = (await new RulesStore(rulesFile).load()).rules;
      assert.deepEqual(rules.map((r) => [r.pattern, r.action]), [
        ["*.pinned.test", "passthrough"],
        ["*", "deny-domain"],
        ["https://x.test/a", "deny-url"],
      ]);
    },
  );
});

Deno.test("manage: 3 warns, as rules add does, when a deny URL rule overrides a passthrough", async () => {
  await withDrive(["3", "pinned.test", "3", "9"], async ({ out, rulesFile }) => {
    assert.match(out, /✓ Added: pinned\.test passthrough/);
    assert.match(
      out,
      /warning: rule "pinned\.test": passthrough does not apply to pinned\.test:443: the deny URL rule "https:\/\/pinned\.test\/admin" needs its HTTPS decrypted/,
    );
    const rules = (await new RulesStore(rulesFile).load()).rules;
    assert.equal(rules.find((r) => r.pattern === "pinned.test")?.action, "passthrough");
  }, (dir) =>
    Deno.writeTextFile(
      join(dir, "network-rules.json"),
      '{ "https://pinned.test/admin": "deny-url" }\n',
    ));
});

Deno.test("manage: 3 on an existing pattern updates it; empty pattern cancels", async () => {
  await withDrive(["3", "GitHub.com", "2", "3", "", "9"], async ({ out, rulesFile }) => {
    assert.match(out, /✓ Updated: github\.com allow-domain -> deny-domain/);
    assert.match(out, /Cancelled\./);
    const rules = (await new RulesStore(rulesFile).load()).rules;
    assert.equal(rules.find((r) => r.pattern === "github.com")?.action, "deny-domain");
    assert.equal(rules.length, 3);
  }, withRules);
});

Deno.test("manage: 4 removes a rule picked from the list; out of range asks again", async () => {
  await withDrive(["4", "0", "4", "x", "2", "9"], async ({ out, rulesFile }) => {
    assert.match(out, /# {2}PATTERN +ACTION\n +1 {2}github\.com +allow-domain/);
    assert.match(out, /"0" is not a number from 1 to 3/);
    assert.match(out, /"4" is not a number from 1 to 3/);
    assert.match(out, /✓ Removed: \*\.github\.com allow-domain/);
    const rules = (await new RulesStore(rulesFile).load()).rules;
    assert.deepEqual(rules.map((r) => r.pattern), ["github.com", "evil.test"]);
  }, withRules);
});

Deno.test("manage: 4 and 8 with no rules say so", async () => {
  await withDrive(["4", "8", "5", "9"], ({ out }) => {
    assert.match(out, /No rules to remove\./);
    assert.match(out, /There are no rules to clear\./);
    assert.match(out, /No rules yet\./);
  });
});

Deno.test("manage: 5 lists the rules", async () => {
  await withDrive(["5", "9"], ({ out }) => {
    assert.match(out, /Rules \(3\)/);
    assert.match(out, / 3 {2}evil\.test +deny-domain/);
  }, withRules);
});

Deno.test("manage: 6 exports to a file name; a missing folder asks again", async () => {
  await withDrive(
    ["6", "no/such/folder/rules.json", "backup.json", "6", "backup.json", "n", "", "9"],
    async ({ out, dir }) => {
      assert.match(out, /The folder ".*no\/such\/folder" does not exist\. Try again\./);
      assert.match(out, /✓ Exported 3 rules to .*backup\.json/);
      assert.match(out, /"backup\.json" exists\. Overwrite it\? \[y\/N\]/);
      assert.match(out, /Cancelled\./);
      // The same format: the rules file's text, comments included.
      assert.equal(await Deno.readTextFile(join(dir, "backup.json")), RULES);
      // As private as the rules file: exact-URL rules hold the URLs, tokens and all.
      if (Deno.build.os !== "windows") {
        assert.equal((await Deno.stat(join(dir, "backup.json"))).mode! & 0o077, 0);
      }
    },
    withRules,
  );
});

Deno.test("manage: 7 imports (merge or replace); missing and invalid files ask again", async () => {
  await withDrive(
    [
      "7",
      "missing.json",
      "bad.json",
      "more.json",
      "x",
      "m",
      "7",
      "more.json",
      "r",
      "9",
    ],
    async ({ out, rulesFile }) => {
      assert.match(out, /✗ Cannot import "missing\.json": file not found\. Try again\./);
      assert.match(out, /✗ Cannot import rules "bad\.json": unknown action "alow".* at 2:/);
      assert.match(out, /Nothing was changed\./);
      assert.match(out, /holds 2 rules/);
      assert.match(out, /Please answer "m" \(merge\) or "r" \(replace\)\./);
      assert.match(out, /✓ Imported: 1 added, 1 updated, 0 unchanged\./);
      assert.match(out, /✓ Replaced the rules with 2 imported rule\(s\)\./);
      const rules = (await new RulesStore(rulesFile).load()).rules;
      assert.deepEqual(rules.map((r) => [r.pattern, r.action]), [
        ["evil.test", "allow-domain"],
        ["pypi.test", "allow"],
      ]);
    },
    async (dir) => {
      await withRules(dir);
      await Deno.writeTextFile(join(dir, "bad.json"), '{\n  "github.com": "alow"\n}\n');
      await Deno.writeTextFile(
        join(dir, "more.json"),
        '{ "evil.test": "allow-domain", "pypi.test": "allow" }',
      );
    },
  );
});

Deno.test("manage: 7 refuses an empty file (no rules object) and asks again", async () => {
  await withDrive(
    ["7", "empty.json", "", "9"],
    async ({ out, rulesFile }) => {
      assert.match(out, /✗ Cannot import "empty\.json": it holds no rules object \(it is empty/);
      assert.doesNotMatch(out, /holds 0 rules/);
      assert.equal(await Deno.readTextFile(rulesFile), RULES);
    },
    async (dir) => {
      await withRules(dir);
      await Deno.writeTextFile(join(dir, "empty.json"), "\n");
    },
  );
});

Deno.test("manage: 8 with one rule asks about the only rule", async () => {
  await withDrive(["8", "y", "9"], ({ out }) => {
    assert.match(out, /Delete the only rule\? \[y\/N\]/);
    assert.match(out, /✓ Cleared 1 rule\./);
  }, async (dir) => {
    await Deno.writeTextFile(join(dir, "network-rules.json"), '{ "a.test": "allow" }\n');
  });
});

Deno.test("manage: 8 clears all rules only after confirmation", async () => {
  await withDrive(["8", "maybe", "n", "8", "y", "9"], async ({ out, rulesFile }) => {
    assert.match(out, /Delete all 3 rules\? \[y\/N\]/);
    assert.match(out, /Please answer "y" or "n"\./);
    assert.match(out, /Nothing was changed\./);
    assert.match(out, /✓ Cleared 3 rules\./);
    assert.equal((await new RulesStore(rulesFile).load()).rules.length, 0);
    assert.match(await Deno.readTextFile(rulesFile), /\/\/ trusted/);
  }, withRules);
});

Deno.test("manage: a broken rules file is reported, never overwritten, and the menu goes on", async () => {
  const broken = '{ "github.com": "allow-domain", }\n{';
  await withDrive(["5", "3", "x.test", "1", "8", "9"], async ({ out, rulesFile }) => {
    assert.match(out, /✗ Cannot load rules ".*network-rules\.json"/);
    assert.match(out, /netmonitor rules check/);
    assert.match(out, /✗ Cannot .*rules/);
    assert.equal(await Deno.readTextFile(rulesFile), broken);
    assert.match(out, /Bye\./);
  }, (dir) => Deno.writeTextFile(join(dir, "network-rules.json"), broken));
});

Deno.test("manage: 6 and 7 read ~/ in a file name as the home folder, as a shell would", async () => {
  const home = await Deno.makeTempDir({ prefix: "nm-manage-home-" });
  const saved = Deno.env.get("HOME");
  Deno.env.set("HOME", home);
  try {
    await withDrive(
      ["6", "~/backup.json", "7", "~/backup.json", "m", "9"],
      async ({ out }) => {
        assert.doesNotMatch(out, /does not exist|Cannot import/);
        assert.match(out, /✓ Exported 3 rules to .*nm-manage-home-[^/]*\/backup\.json/);
        assert.equal(await Deno.readTextFile(join(home, "backup.json")), RULES);
        assert.match(out, /✓ Imported: 0 added, 0 updated, 3 unchanged\./);
      },
      withRules,
    );
  } finally {
    if (saved === undefined) Deno.env.delete("HOME");
    else Deno.env.set("HOME", saved);
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("manage: 7 refuses a file too large to be rules (and a folder), and asks again", async () => {
  await withDrive(
    ["7", "huge.json", "sub", "", "9"],
    ({ out }) => {
      assert.match(
        out,
        /✗ Cannot import "huge\.json": larger than 64 MiB, the most a rules file may be\. Try again\./,
      );
      assert.match(out, /✗ Cannot import "sub": it is a folder\. Try again\./);
      assert.match(out, /Cancelled\./);
    },
    async (dir) => {
      await withRules(dir);
      await Deno.mkdir(join(dir, "sub"));
      // Sparse: no disk used. An endless one (/dev/zero) ran out of memory and crashed.
      const f = await Deno.open(join(dir, "huge.json"), { write: true, create: true });
      await f.truncate(65 * 1024 * 1024);
      f.close();
    },
  );
});
