import assert from "node:assert/strict";
import { join } from "node:path";
import { has } from "../_helpers/tools.ts";
import { MAIN_TS, rulesFile, runCli, withDataDir } from "./_cli.ts";
import { TmuxSession } from "./_tmux.ts";

const DATA = new URL("../testdata/rules/", import.meta.url);
const VERSION = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)))
  .version;

/** Asserts a usage error: exit 2, `error: ...` then a hint line, nothing on stdout, no stack. */
function assertUsage(
  r: { code: number; stdout: string; stderr: string },
  error: RegExp,
  hint: string,
) {
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assert.match(lines[0], /^error: /);
  assert.match(lines[0], error);
  assert.equal(lines.at(-1), hint);
  assert.doesNotMatch(r.stderr, /\s+at .*:\d+:\d+/); // no stack trace
}

function assertCleanFailure(r: { code: number; stdout: string; stderr: string }, error: RegExp) {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: /);
  assert.match(r.stderr, error);
  assert.doesNotMatch(r.stderr, /\s+at .*:\d+:\d+/);
}

Deno.test("netmonitor --version, --help, <command> --help", async () => {
  await withDataDir(async (dataDir) => {
    const v = await runCli(["--version"], { dataDir });
    assert.deepEqual(v, { code: 0, stdout: `netmonitor ${VERSION}\n`, stderr: "" });
    assert.equal((await runCli(["-V"], { dataDir })).stdout, `netmonitor ${VERSION}\n`);

    const help = await runCli(["--help"], { dataDir });
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: netmonitor \[options\] \[command\]/);
    assert.match(help.stdout, /--data-dir <dir>/);
    assert.match(help.stdout, /\n {2}rules /);

    for (const args of [["rules", "--help"], ["help", "rules"], ["rules", "add", "--help"]]) {
      const r = await runCli(args, { dataDir });
      assert.equal(r.code, 0, args.join(" "));
      assert.match(
        r.stdout,
        /Precedence, most specific first: exact URL, exact host, longest wildcard/,
      );
    }
    const add = await runCli(["rules", "add", "-h"], { dataDir });
    assert.match(add.stdout, /^Usage: netmonitor rules add \[options\] <pattern> <action>/);
  });
});

Deno.test("usage errors exit 2 with the error and a hint", async () => {
  await withDataDir(async (dataDir) => {
    const cases: Array<[string[], RegExp, string]> = [
      [["bogus"], /unknown command 'bogus'/, 'Run "netmonitor --help" for usage.'],
      [["--bogus"], /unknown option '--bogus'/, 'Run "netmonitor --help" for usage.'],
      [["rules", "lst"], /unknown command 'lst'/, 'Run "netmonitor rules --help" for usage.'],
      [["help", "bogus"], /unknown command 'bogus'/, 'Run "netmonitor --help" for usage.'],
      [
        ["rules", "help", "lst"],
        /unknown command 'lst'/,
        'Run "netmonitor rules --help" for usage.',
      ],
      [
        ["rules", "list", "--jsn"],
        /unknown option '--jsn'/,
        'Run "netmonitor rules list --help" for usage.',
      ],
      [
        ["rules", "add", "x.test"],
        /missing required argument 'action'/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "a", "allow", "extra"],
        /too many arguments/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "rm"],
        /missing required argument 'pattern'/,
        'Run "netmonitor rules rm --help" for usage.',
      ],
      [
        ["rules", "import"],
        /missing required argument 'file'/,
        'Run "netmonitor rules import --help" for usage.',
      ],
      [
        ["--data-dir"],
        /option '--data-dir <dir>' argument missing/,
        'Run "netmonitor --help" for usage.',
      ],
      [
        ["rules", "add", "github.com", "alow"],
        /^error: unknown action "alow" for "github.com" \(expected allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough\)$/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "*bob.com", "deny"],
        /invalid pattern "\*bob.com"/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "a.*.com", "deny"],
        /invalid pattern "a.\*.com"/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "", "deny"],
        /invalid pattern "": the pattern is empty/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "https:///x", "deny"],
        /the URL has no host/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "add", "github.com", "allow-url"],
        /needs a URL pattern/,
        'Run "netmonitor rules add --help" for usage.',
      ],
      [
        ["rules", "test", "not a url"],
        /is not a URL/,
        'Run "netmonitor rules test --help" for usage.',
      ],
    ];
    for (const [args, error, hint] of cases) {
      assertUsage(await runCli(args, { dataDir }), error, hint);
    }
    // Bare `netmonitor` and `netmonitor rules` show help on stderr: a usage error too.
    for (const args of [[], ["rules"]]) {
      const r = await runCli(args, { dataDir });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /^Usage: netmonitor/);
    }
    // None of this created a rules file.
    await assert.rejects(Deno.stat(rulesFile(dataDir)), Deno.errors.NotFound);
  });
});

Deno.test("rules add, list, list --json, rm, test", async () => {
  await withDataDir(async (dataDir) => {
    const empty = await runCli(["rules", "list"], { dataDir });
    assert.deepEqual(empty, { code: 0, stdout: `No rules in ${rulesFile(dataDir)}\n`, stderr: "" });

    const steps: Array<[string[], string]> = [
      [["rules", "add", "github.com", "allow-domain"], 'Added rule "github.com": allow-domain\n'],
      [["rules", "add", "*.github.com", "allow"], 'Added rule "*.github.com": allow\n'],
      [
        ["rules", "add", "https://github.com/api/secret", "deny"],
        'Added rule "https://github.com/api/secret": deny\n',
      ],
      [["rules", "add", "*", "deny"], 'Added rule "*": deny\n'],
      [
        ["rules", "add", "GitHub.com.", "deny-domain"],
        'Changed rule "github.com": allow-domain -> deny-domain\n',
      ],
      [
        ["rules", "add", "github.com", "deny-domain"],
        'Rule "github.com": deny-domain already exists; nothing changed\n',
      ],
      [
        ["rules", "rm", "GITHUB.com"],
        'Removed rule "github.com": deny-domain (named by "GITHUB.com")\n',
      ],
      [["rules", "add", "github.com", "allow"], 'Added rule "github.com": allow\n'],
    ];
    for (const [args, out] of steps) {
      assert.deepEqual(
        await runCli(args, { dataDir }),
        { code: 0, stdout: out, stderr: "" },
        args.join(" "),
      );
    }

    const list = await runCli(["rules", "list"], { dataDir });
    assert.equal(list.code, 0);
    assert.equal(
      list.stdout,
      `4 rules in ${rulesFile(dataDir)}:\n` +
        "  *.github.com                   allow\n" +
        "  https://github.com/api/secret  deny\n" +
        "  *                              deny\n" +
        "  github.com                     allow\n",
    );
    const json = await runCli(["rules", "ls", "--json"], { dataDir });
    assert.deepEqual(JSON.parse(json.stdout), [
      { pattern: "*.github.com", action: "allow", kind: "wildcard", verdict: "allow" },
      { pattern: "https://github.com/api/secret", action: "deny", kind: "url", verdict: "deny" },
      { pattern: "*", action: "deny", kind: "any", verdict: "deny" },
      { pattern: "github.com", action: "allow", kind: "host", verdict: "allow" },
    ]);

    const decisions: Array<[string, string]> = [
      ["https://github.com/api/secret", 'deny: rule "https://github.com/api/secret": deny\n'],
      [
        "https://github.com//api/./secret?x=1",
        'deny: rule "https://github.com/api/secret": deny\n',
      ],
      ["https://github.com/", 'allow: rule "github.com": allow\n'],
      ["api.github.com", 'allow: rule "*.github.com": allow\n'],
      ["evilgithub.com", 'deny: rule "*": deny\n'],
      [
        "github.com:443",
        'allow: rule "github.com": allow\n(URL rules exist for github.com:443; give a full URL to check them)\n',
      ],
    ];
    for (const [t, out] of decisions) {
      assert.deepEqual(await runCli(["rules", "test", t], { dataDir }), {
        code: 0,
        stdout: out,
        stderr: "",
      }, t);
    }

    assertCleanFailure(
      await runCli(["rules", "rm", "nothing.test"], { dataDir }),
      new RegExp(`^error: no rule "nothing.test" in ${rulesFile(dataDir)}\n$`),
    );
  });
});

Deno.test("--data-dir and NETMONITOR_DATA_DIR choose the data directory", async () => {
  await withDataDir(async (dataDir) => {
    const other = join(dataDir, "other");
    let r = await runCli(["--data-dir", other, "rules", "add", "a.test", "deny"], { dataDir });
    assert.equal(r.code, 0, r.stderr);
    r = await runCli(["rules", "list", `--data-dir=${other}`], { dataDir });
    assert.match(r.stdout, /1 rule in .*other\/network-rules.json:\n {2}a\.test {2}deny\n/);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(other)).mode! & 0o777, 0o700);
    // The environment's directory was not touched.
    await assert.rejects(Deno.stat(rulesFile(dataDir)), Deno.errors.NotFound);
  });
});

Deno.test("a corrupt rules file is refused with file:line:col and left byte-for-byte unchanged", async () => {
  await withDataDir(async (dataDir) => {
    const original = await Deno.readFile(new URL("corrupt_invalid.json", DATA));
    await Deno.writeFile(rulesFile(dataDir), original);
    const file = rulesFile(dataDir);
    for (
      const args of [
        ["rules", "add", "new.test", "allow"],
        ["rules", "rm", "github.com"],
        ["rules", "list"],
        ["rules", "clear", "--yes"],
        ["rules", "import", new URL("design_whitelist.json", DATA).pathname],
        ["rules", "export", join(dataDir, "out.json")],
      ]
    ) {
      const r = await runCli(args, { dataDir });
      assertCleanFailure(
        r,
        new RegExp(`^error: Cannot (load|update) rules "${file}": 2 problems:\n`),
      );
      assert.match(
        r.stderr,
        /unknown action "alow" for "example.com" at 3:18 \(expected allow-domain/,
      );
      assert.match(r.stderr, /invalid pattern "\*bob.com": .* at 4:3/);
      // Said by the commands that edit the file; the others never write it.
      const edits = !["list", "export"].includes(args[1]);
      assert.equal(
        /The file was not changed\. Fix it by hand/.test(r.stderr),
        edits,
        args.join(" "),
      );
      assert.match(r.stderr, /Fix it by hand; "netmonitor rules check" lists every problem/);
      assert.deepEqual(await Deno.readFile(file), original, args.join(" "));
    }
    await assert.rejects(Deno.stat(join(dataDir, "out.json")), Deno.errors.NotFound);

    const check = await runCli(["rules", "check"], { dataDir });
    assert.equal(check.code, 1);
    assert.equal(
      check.stdout,
      `${file}:3:18: unknown action "alow" for "example.com" (expected allow-domain, deny-domain, allow-url, deny-url, allow, deny or passthrough)\n` +
        `${file}:4:3: invalid pattern "*bob.com": a wildcard is "*." followed by a domain, like "*.bob.com"\n` +
        `2 problems in ${file}\n`,
    );
    assert.deepEqual(await Deno.readFile(file), original);
  });
});

Deno.test("rules check [file]", async () => {
  await withDataDir(async (dataDir) => {
    let r = await runCli(["rules", "check"], { dataDir });
    assert.deepEqual(r, {
      code: 0,
      stdout: `${rulesFile(dataDir)}: no such file yet (no rules)\n`,
      stderr: "",
    });

    const good = new URL("commented.jsonc", DATA).pathname;
    r = await runCli(["rules", "check", good], { dataDir });
    assert.deepEqual(r, { code: 0, stdout: `${good}: OK, 5 rules\n`, stderr: "" });

    const syntax = new URL("corrupt_syntax.json", DATA).pathname;
    r = await runCli(["rules", "check", syntax], { dataDir });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, `${syntax}:3:3: expected "," or "}"\n1 problem in ${syntax}\n`);

    r = await runCli(["rules", "check", "-"], { dataDir, stdin: '{"a.test": "deny-url"}' });
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^standard input:1:12: action "deny-url" for "a.test" needs a URL pattern/,
    );

    // A duplicate is reported where it is, and names where the first one is.
    r = await runCli(["rules", "check", "-"], {
      dataDir,
      stdin: '{"a.test": "allow",\n "A.TEST.": "deny",\n "a.test": "deny"}',
    });
    assert.equal(r.code, 1);
    assert.equal(
      r.stdout,
      'standard input:2:2: duplicate pattern "A.TEST." (same as "a.test", first at 1:2)\n' +
        'standard input:3:2: duplicate pattern "a.test" (first at 1:2)\n' +
        "2 problems in standard input\n",
    );

    assertCleanFailure(
      await runCli(["rules", "check", "missing.json"], { dataDir }),
      /^error: Cannot check rules "missing.json": file not found\n$/,
    );
  });
});

Deno.test("rules export and import (merge and --replace), comments kept", async () => {
  await withDataDir(async (dataDir) => {
    const commented = await Deno.readTextFile(new URL("commented.jsonc", DATA));
    await Deno.writeTextFile(rulesFile(dataDir), commented);

    // export writes the same format, comments included; "-" is stdout.
    const out = join(dataDir, "exported.json");
    let r = await runCli(["rules", "export", out], { dataDir });
    assert.deepEqual(r, { code: 0, stdout: `Exported 5 rules to ${out}\n`, stderr: "" });
    assert.equal(await Deno.readTextFile(out), commented);
    r = await runCli(["rules", "export", "-"], { dataDir });
    assert.equal(r.stdout, commented);

    // import merges: new rules are added, equal patterns take the file's action.
    const incoming = join(dataDir, "incoming.json");
    await Deno.writeTextFile(
      incoming,
      '{ "pypi.org": "deny", "files.pythonhosted.org": "allow-domain", "github.com": "allow-domain" }',
    );
    r = await runCli(["rules", "import", incoming], { dataDir });
    assert.deepEqual(r, {
      code: 0,
      stdout: `Imported 3 rules from ${incoming}: 1 added, 1 changed, 1 unchanged\n`,
      stderr: "",
    });
    const merged = await Deno.readTextFile(rulesFile(dataDir));
    assert.match(merged, /\/\/ Code hosting: the apex and every subdomain\./);
    assert.match(merged, /"\*\.github\.com": "allow-domain", \/\/ api, raw, objects\.\.\./);
    assert.match(merged, /"pypi\.org": "deny",/);
    assert.match(merged, /"files\.pythonhosted\.org": "allow-domain",\n}\n$/);

    // An invalid import changes nothing.
    const bad = new URL("corrupt_invalid.json", DATA).pathname;
    r = await runCli(["rules", "import", bad], { dataDir });
    assertCleanFailure(r, new RegExp(`^error: Cannot import rules "${bad}": 2 problems:\n`));
    assert.doesNotMatch(r.stderr, /The file was not changed/); // that hint is for the rules file
    assert.equal(await Deno.readTextFile(rulesFile(dataDir)), merged);
    assertCleanFailure(
      await runCli(["rules", "import", "nope.json"], { dataDir }),
      /^error: Cannot import rules "nope.json": file not found\n$/,
    );

    // --replace: exactly the file's rules; comments in our file stay.
    r = await runCli(["rules", "import", "--replace", "-"], {
      dataDir,
      stdin: '{\n  "*": "deny",\n  "github.com": "allow"\n}\n',
    });
    assert.deepEqual(r, {
      code: 0,
      stdout: "Replaced 6 rules with 2 rules from standard input\n",
      stderr: "",
    });
    r = await runCli(["rules", "list", "--json"], { dataDir });
    assert.deepEqual(
      JSON.parse(r.stdout).map((x: { pattern: string; action: string }) => [x.pattern, x.action]),
      [["github.com", "allow"], ["*", "deny"]],
    );
    assert.match(await Deno.readTextFile(rulesFile(dataDir)), /\/\/ Never\./);

    // Round trip: export then import --replace into a fresh directory gives the same rules.
    await withDataDir(async (fresh) => {
      await runCli(["rules", "export", join(fresh, "x.json")], { dataDir });
      r = await runCli(["rules", "import", "--replace", join(fresh, "x.json")], { dataDir: fresh });
      assert.equal(r.code, 0, r.stderr);
      const a = await runCli(["rules", "list", "--json"], { dataDir });
      const b = await runCli(["rules", "list", "--json"], { dataDir: fresh });
      assert.equal(a.stdout, b.stdout);
    });
  });
});

Deno.test("rules import refuses empty input: a failed download never wipes the rules", async () => {
  await withDataDir(async (dataDir) => {
    const rules = '{\n  "github.com": "allow",\n  "*": "deny"\n}\n';
    await Deno.writeTextFile(rulesFile(dataDir), rules);
    const empty = join(dataDir, "empty.json");
    await Deno.writeTextFile(empty, "\n  // nothing yet\n");
    // `curl ... | netmonitor rules import - --replace` whose download failed, or an empty file.
    for (
      const [args, stdin, name] of [
        [["rules", "import", "--replace", "-"], "", "standard input"],
        [["rules", "import", "-"], "  \n", "standard input"],
        [["rules", "import", "--replace", empty], undefined, empty],
      ] as const
    ) {
      const r = await runCli([...args], { dataDir, stdin });
      assertCleanFailure(
        r,
        new RegExp(`^error: Cannot import rules "${name}": it holds no rules object \\(`),
      );
      assert.match(r.stderr, /netmonitor rules clear/);
      assert.equal(r.stdout, "");
      assert.equal(await Deno.readTextFile(rulesFile(dataDir)), rules);
    }
    // An explicit empty object still replaces everything, as asked.
    const r = await runCli(["rules", "import", "--replace", "-"], { dataDir, stdin: "{}" });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "Replaced 2 rules with 0 rules from standard input\n");
  });
});

Deno.test("rules export of an emptied rules file writes {} (it imports again)", async () => {
  await withDataDir(async (dataDir) => {
    await Deno.writeTextFile(rulesFile(dataDir), "");
    const out = join(dataDir, "exported.json");
    let r = await runCli(["rules", "export", out], { dataDir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await Deno.readTextFile(out), "{\n}\n");
    r = await runCli(["rules", "import", out], { dataDir });
    assert.equal(r.code, 0, r.stderr);
  });
});
Deno.test("rules clear: --yes, and no silent clearing without a terminal", async () => {
  await withDataDir(async (dataDir) => {
    let r = await runCli(["rules", "clear"], { dataDir });
    assert.deepEqual(r, {
      code: 0,
      stdout: `No rules to clear in ${rulesFile(dataDir)}\n`,
      stderr: "",
    });

    await Deno.writeTextFile(
      rulesFile(dataDir),
      '{\n  // mine\n  "a.test": "allow",\n  "b.test": "deny"\n}\n',
    );
    r = await runCli(["rules", "clear"], { dataDir });
    assertUsage(
      r,
      /^error: refusing to remove 2 rules without confirmation: standard input is not a terminal$/,
      'Run "netmonitor rules clear --yes" to clear without asking.',
    );
    r = await runCli(["rules", "clear"], { dataDir, stdin: "y\n" }); // piped "y" is not a person
    assert.equal(r.code, 2);
    assert.equal(
      (await runCli(["rules", "list", "--json"], { dataDir })).stdout.includes("a.test"),
      true,
    );

    r = await runCli(["rules", "clear", "--yes"], { dataDir });
    assert.deepEqual(r, { code: 0, stdout: "Removed 2 rules\n", stderr: "" });
    assert.equal(await Deno.readTextFile(rulesFile(dataDir)), "{\n  // mine\n}\n");
  });
});

Deno.test({
  name: "rules clear asks on a terminal: no keeps the rules, yes clears them",
  ignore: !has("tmux"),
  fn: async () => {
    await withDataDir(async (dataDir) => {
      await Deno.writeTextFile(rulesFile(dataDir), '{"a.test": "allow"}');
      const start = () =>
        TmuxSession.start({
          cmd: [Deno.execPath(), "run", "-A", MAIN_TS, "rules", "clear"],
          env: { NETMONITOR_DATA_DIR: dataDir, NO_COLOR: "1" },
          cwd: dataDir,
        });
      {
        await using tty = await start();
        await tty.waitFor(`Remove all 1 rule from ${rulesFile(dataDir)}? (y/N)`);
        await tty.type("n");
        await tty.press("Enter");
        assert.equal(await tty.exitCode(), 1);
        assert.match(await tty.screen(), /Aborted; no rules were removed\./);
        assert.equal(await Deno.readTextFile(rulesFile(dataDir)), '{"a.test": "allow"}');
      }
      {
        await using tty = await start();
        await tty.waitFor("(y/N)");
        await tty.type("yes");
        await tty.press("Enter");
        assert.equal(await tty.exitCode(), 0);
        assert.match(await tty.screen(), /Removed 1 rule\n/);
        assert.equal(await Deno.readTextFile(rulesFile(dataDir)), "{}");
      }
    });
  },
});

Deno.test("concurrent `rules add` processes lose no rule", async () => {
  await withDataDir(async (dataDir) => {
    await Deno.writeTextFile(
      rulesFile(dataDir),
      '{\n  // shared file\n  "start.test": "deny"\n}\n',
    );
    // Two waves of 2 x 6 simultaneous processes: two "users" adding at once.
    const added: string[] = [];
    for (let wave = 0; wave < 2; wave++) {
      const runs = [];
      for (const who of ["alice", "bob"]) {
        for (let i = 0; i < 6; i++) {
          const host = `${who}-${wave}-${i}.test`;
          added.push(host);
          runs.push(
            runCli(["rules", "add", host, who === "alice" ? "allow" : "deny"], { dataDir }),
          );
        }
      }
      for (const r of await Promise.all(runs)) assert.equal(r.code, 0, r.stderr);
    }
    const r = await runCli(["rules", "list", "--json"], { dataDir });
    const patterns = JSON.parse(r.stdout).map((x: { pattern: string }) => x.pattern).sort();
    assert.deepEqual(patterns, ["start.test", ...added].sort());
    assert.match(await Deno.readTextFile(rulesFile(dataDir)), /\/\/ shared file/);
  });
});

Deno.test("rules: the passthrough action (add, list --json, test, check, warnings)", async () => {
  await withDataDir(async (dataDir) => {
    const ok = async (args: string[], stdout: string, stderr = "") =>
      assert.deepEqual(
        await runCli(args, { dataDir }),
        { code: 0, stdout, stderr },
        args.join(" "),
      );

    await ok(
      ["rules", "add", "pinned.test", "passthrough"],
      'Added rule "pinned.test": passthrough\n',
    );
    await ok(
      ["rules", "add", "*.googleapis.test", "passthrough"],
      'Added rule "*.googleapis.test": passthrough\n',
    );
    // A deny URL rule on a passthrough host: accepted, with a warning that it wins.
    await ok(
      ["rules", "add", "https://pinned.test/admin", "deny"],
      'Added rule "https://pinned.test/admin": deny\n',
      'warning: rule "pinned.test": passthrough does not apply to pinned.test:443: the deny URL ' +
        'rule "https://pinned.test/admin" needs its HTTPS decrypted, so pinned.test:443 is intercepted\n',
    );
    assertUsage(
      await runCli(["rules", "add", "*", "passthrough"], { dataDir }),
      /^error: action "passthrough" cannot apply to "\*": it would allow everything and decrypt nothing; name the hosts \("\*\.example\.com": "passthrough"\), or run with --no-intercept$/,
      'Run "netmonitor rules add --help" for usage.',
    );
    assertUsage(
      await runCli(["rules", "add", "https://pinned.test/x", "passthrough"], { dataDir }),
      /^error: action "passthrough" for "https:\/\/pinned\.test\/x" needs a host pattern like "pinned\.test"/,
      'Run "netmonitor rules add --help" for usage.',
    );

    const json = await runCli(["rules", "list", "--json"], { dataDir });
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), [
      { pattern: "pinned.test", action: "passthrough", kind: "host", verdict: "allow" },
      { pattern: "*.googleapis.test", action: "passthrough", kind: "wildcard", verdict: "allow" },
      { pattern: "https://pinned.test/admin", action: "deny", kind: "url", verdict: "deny" },
    ]);
    await ok(
      ["rules", "list"],
      `3 rules in ${rulesFile(dataDir)}:\n` +
        "  pinned.test                passthrough\n" +
        "  *.googleapis.test          passthrough\n" +
        "  https://pinned.test/admin  deny\n",
    );

    await ok(
      ["rules", "test", "https://a.b.googleapis.test/v1"],
      'allow: rule "*.googleapis.test": passthrough\n' +
        "(HTTPS tunnels to a.b.googleapis.test:443 are relayed without decryption)\n",
    );
    await ok(
      ["rules", "test", "a.googleapis.test:8443"],
      'allow: rule "*.googleapis.test": passthrough\n' +
        "(HTTPS tunnels to a.googleapis.test:8443 are relayed without decryption)\n",
    );
    // pinned.test:443 is decrypted for its deny URL rule.
    await ok(
      ["rules", "test", "https://pinned.test/admin"],
      'deny: rule "https://pinned.test/admin": deny\n',
    );
    await ok(["rules", "test", "https://pinned.test/"], 'allow: rule "pinned.test": passthrough\n');

    // check: the warning does not fail it.
    const file = rulesFile(dataDir);
    const check = await runCli(["rules", "check"], { dataDir });
    assert.equal(check.code, 0, check.stderr);
    assert.match(
      check.stdout,
      new RegExp(
        `^${
          file.replaceAll(".", "\\.")
        }:\\d+:\\d+: warning: rule "pinned\\.test": passthrough does not apply to pinned\\.test:443`,
      ),
    );
    assert.match(check.stdout, /: OK, 3 rules\n$/);

    const bad = await runCli(["rules", "check", "-"], {
      dataDir,
      stdin: '{\n  "*": "passthrough",\n  "ok.test": "passthrough"\n}',
    });
    assert.equal(bad.code, 1);
    assert.equal(
      bad.stdout,
      'standard input:2:8: action "passthrough" cannot apply to "*": it would allow everything ' +
        'and decrypt nothing; name the hosts ("*.example.com": "passthrough"), or run with ' +
        "--no-intercept\n1 problem in standard input\n",
    );
  });
});
