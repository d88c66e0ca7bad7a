import assert from "node:assert/strict";
import { join } from "node:path";
import { type CliIo, main } from "../../cli/mod.ts";
import { portLikeIPv6 } from "../../cli/rules.ts";

/** Runs the CLI in this process with captured output and an injected confirmer. */
async function run(args: string[], io: Partial<CliIo> = {}) {
  let stdout = "";
  let stderr = "";
  const questions: string[] = [];
  const code = await main(args, {
    stdout: (s) => void (stdout += s),
    stderr: (s) => void (stderr += s),
    stdinIsTerminal: false,
    stdoutIsTerminal: false,
    confirmer: {
      confirm: (q) => {
        questions.push(q);
        return Promise.resolve(false);
      },
    },
    ...io,
  });
  return { code, stdout, stderr, questions };
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "netmonitor-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("rules clear asks through the injected confirmer", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "network-rules.json");
    await Deno.writeTextFile(file, '{"a.test": "allow", "b.test": "deny"}');
    const answers: boolean[] = [false, true];
    const asked: string[] = [];
    const confirmer = {
      confirm: (q: string) => {
        asked.push(q);
        return Promise.resolve(answers.shift()!);
      },
    };
    const no = await run(["--data-dir", dir, "rules", "clear"], {
      stdinIsTerminal: true,
      confirmer,
    });
    assert.equal(no.code, 1);
    assert.equal(no.stderr, "Aborted; no rules were removed.\n");
    assert.equal(await Deno.readTextFile(file), '{"a.test": "allow", "b.test": "deny"}');

    const yes = await run(["--data-dir", dir, "rules", "clear"], {
      stdinIsTerminal: true,
      confirmer,
    });
    assert.deepEqual([yes.code, yes.stdout, yes.stderr], [0, "Removed 2 rules\n", ""]);
    assert.deepEqual(asked, [
      `Remove all 2 rules from ${file}?`,
      `Remove all 2 rules from ${file}?`,
    ]);
    assert.equal(await Deno.readTextFile(file), "{}");
  });
});

Deno.test("rules clear without a terminal never asks", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "network-rules.json"), '{"a.test": "allow"}');
    const r = await run(["--data-dir", dir, "rules", "clear"]);
    assert.equal(r.code, 2);
    assert.deepEqual(r.questions, []);
  });
});

Deno.test("an unexpected failure is a bug: exit 1 with the stack", async () => {
  await withDir(async (dir) => {
    const r = await run(["--data-dir", dir, "rules", "list"], {
      stdout: () => {
        throw new Error("boom");
      },
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: unexpected failure \(a bug in netmonitor .*\):\nError: boom\n\s+at /,
    );
  });
});

Deno.test("user-facing errors from lib/ are shown without a stack", async () => {
  await withDir(async (dir) => {
    const r = await run(["--data-dir", join(dir, "network-rules.json"), "rules", "list"]);
    // The data dir is a path under a file name that does not exist: no rules, exit 0.
    assert.equal(r.code, 0);
    await Deno.writeTextFile(join(dir, "f"), "");
    const r2 = await run(["--data-dir", join(dir, "f"), "rules", "add", "a.test", "allow"]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /^error: .*\n$/);
    assert.doesNotMatch(r2.stderr, /\s+at /);
  });
});

Deno.test("portLikeIPv6: a bare IPv6 address ending in a port-like group gets a hint", () => {
  assert.match(portLikeIPv6("::1:8080") ?? "", /is the IPv6 address \[::1:8080\].*"\[::1\]:8080"/);
  assert.match(portLikeIPv6("2001:db8::1:443") ?? "", /"\[2001:db8::1\]:443"/);
  assert.match(portLikeIPv6("::8080") ?? "", /is the IPv6 address \[::8080\].*"\[::\]:8080"/);
  for (
    const quiet of ["::1", "fe80::1", "2001:db8::10", "[::1]:8080", "1:2:3:4:5:6:7:80", "a.test"]
  ) {
    assert.equal(portLikeIPv6(quiet), undefined, quiet);
  }
});

Deno.test("rules test decides the request the proxy decides: the path as forwarded, no #fragment", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "network-rules.json"),
      JSON.stringify({
        "https://h.test/admin": "deny",
        "https://h.test/a/b/": "deny",
        "https://h.test/ok": "allow",
        "*": "deny",
        "h.test": "allow",
      }),
    );
    const test = async (target: string) => {
      const r = await run(["--data-dir", dir, "rules", "test", target]);
      return r.code === 0 ? r.stdout.split("\n")[0] : `${r.code} ${r.stderr.split("\n")[0]}`;
    };
    // The proxy resolves dot segments (RFC 3986 5.2.4) without merging slashes
    // first: /x//../admin is forwarded, and decided, as /x/admin.
    assert.equal(await test("https://h.test/x//../admin"), 'allow: rule "h.test": allow');
    // ... and /a/b//.. as /a/b/, which the deny rule names.
    assert.equal(await test("https://h.test/a/b//.."), 'deny: rule "https://h.test/a/b/": deny');
    // Clients never send the fragment: the request is /ok, which the allow rule names.
    assert.equal(await test("https://h.test/ok#top"), 'allow: rule "https://h.test/ok": allow');
    assert.equal(await test("https://h.test/admin#top"), 'deny: rule "https://h.test/admin": deny');
    // What the proxy refuses (400) is not a request it could decide.
    assert.equal(
      await test("https://h.test/a\\admin"),
      '2 error: "https://h.test/a\\admin" is not a URL the proxy accepts: backslash in request target',
    );
    assert.equal(await test("https://h.test/%61dmin?"), 'deny: rule "https://h.test/admin": deny');
  });
});

Deno.test("rules test names the rule that decides a relayed tunnel, not a URL rule it never sees", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "network-rules.json"),
      JSON.stringify({ "p.test": "passthrough", "https://p.test/api": "allow", "*": "deny" }),
    );
    const r = await run(["--data-dir", dir, "rules", "test", "https://p.test/api"]);
    assert.equal(
      r.stdout,
      'allow: rule "p.test": passthrough\n' +
        "(HTTPS tunnels to p.test:443 are relayed without decryption)\n",
    );
    // Plain HTTP is decided per request, passthrough or not.
    const h = await run(["--data-dir", dir, "rules", "test", "http://p.test/api"]);
    assert.equal(h.stdout, 'allow: rule "p.test": passthrough\n');
  });
});

Deno.test("rules check and rules add warn about an allow URL rule a deny URL rule always beats", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "network-rules.json");
    await Deno.writeTextFile(
      file,
      '{\n  "https://h.test/a/b": "deny",\n  "https://h.test/a%2Fb": "allow",\n' +
        '  "https://h.test/a/b?x=1": "allow",\n  "http://h.test/a/b": "allow"\n}\n',
    );
    const check = await run(["--data-dir", dir, "rules", "check"]);
    assert.equal(check.code, 0);
    assert.equal(
      check.stdout,
      `${file}:3:3: warning: URL rule "https://h.test/a%2Fb" never matches: the deny URL rule ` +
        `"https://h.test/a/b" denies that URL too (a deny URL rule matches every spelling)\n` +
        `${file}: OK, 4 rules\n`,
    );
    // It is allowed nowhere: the proxy forwards /a%2Fb, which the deny reads as /a/b.
    const t = await run(["--data-dir", dir, "rules", "test", "https://h.test/a%2Fb"]);
    assert.equal(t.stdout, 'deny: rule "https://h.test/a/b": deny\n');
    const add = await run(["--data-dir", dir, "rules", "add", "https://h.test/a%5Cb", "allow"]);
    assert.equal(add.code, 0);
    assert.match(add.stderr, /^warning: URL rule "https:\/\/h\.test\/a%5Cb" never matches: /);
  });
});

Deno.test("rules test takes a bare IPv6 address, as patterns do", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "network-rules.json"), '{"2001:db8::1": "deny"}');
    for (const t of ["2001:db8::1", "[2001:db8::1]", "[2001:DB8::1]:443"]) {
      const r = await run(["--data-dir", dir, "rules", "test", t]);
      assert.deepEqual([r.code, r.stdout], [0, 'deny: rule "2001:db8::1": deny\n'], t);
    }
  });
});

Deno.test("terminal escapes in a rules file or an argument never reach the terminal raw", async () => {
  await withDir(async (dir) => {
    // Valid rules whose URL paths hold ESC, a C1 CSI and a bidi override.
    const file = join(dir, "network-rules.json");
    await Deno.writeTextFile(
      file,
      '{"https://h.test/a\\u001b[2J": "deny", "https://h.test/b\\u009b31m": "deny", ' +
        '"https://h.test/c\\u202eevil": "allow"}',
    );
    // An invalid file to import: problems quote its keys and actions.
    const hostile = join(dir, "hostile.json");
    await Deno.writeTextFile(
      hostile,
      '{"\\u001b]0;pwned\\u0007": 5, "a\\u001b[2J.test": "allow", "b.test": "\\u001b[31mallow"}',
    );
    const runs = [
      await run(["--data-dir", dir, "rules", "list"]),
      await run(["--data-dir", dir, "rules", "rm", "https://h.test/a\x1b[2J"]),
      await run(["--data-dir", dir, "rules", "check"]),
      await run(["--data-dir", dir, "rules", "check", hostile]),
      await run(["--data-dir", dir, "rules", "import", hostile]),
      await run(["--data-dir", dir, "rules", "add", "\x1b[31mX", "allow"]),
      await run(["--data-dir", dir, "rules", "rm", "\x1b[31mX"]),
    ];
    for (const r of runs) {
      const out = r.stdout + r.stderr;
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(out, /[\x1b\x07\u009b\u202e]/, JSON.stringify(out));
    }
    // They are shown escaped instead.
    assert.match(runs[0].stdout, /\\u\{1b\}\[2J/);
    assert.match(runs[4].stderr, /\\u\{1b\}\]0;pwned\\u\{7\}/);
  });
});

Deno.test("rules list --json escapes C1 controls and bidi overrides and stays the same JSON", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(
      join(dir, "network-rules.json"),
      '{"https://h.test/b\\u009b31m": "deny", "https://h.test/c\\u202eevil": "allow"}',
    );
    const r = await run(["--data-dir", dir, "rules", "list", "--json"]);
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stdout, /[\u009b\u202e]/);
    assert.deepEqual(
      JSON.parse(r.stdout).map((x: { pattern: string }) => x.pattern),
      ["https://h.test/b\u009b31m", "https://h.test/c\u202eevil"],
    );
  });
});

Deno.test({
  name:
    "rules export writes a new file owner-only, as the rules file is (exact-URL rules hold tokens)",
  ignore: Deno.build.os === "windows",
  fn: () =>
    withDir(async (dir) => {
      const url = "https://api.test/cb?code=SECRETCODE";
      await Deno.writeTextFile(join(dir, "network-rules.json"), `{"${url}": "allow"}\n`, {
        mode: 0o600,
      });
      const out = join(dir, "exported.json");
      const r = await run(["--data-dir", dir, "rules", "export", out]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(await Deno.readTextFile(out), /SECRETCODE/);
      assert.equal((await Deno.stat(out)).mode! & 0o077, 0);
      // An existing file keeps its mode (the user chose it).
      await Deno.chmod(out, 0o640);
      assert.equal((await run(["--data-dir", dir, "rules", "export", out])).code, 0);
      assert.equal((await Deno.stat(out)).mode! & 0o777, 0o640);
    }),
});

Deno.test("rules check and export read an oversized rules file no further than 64 MiB", async () => {
  await withDir(async (dir) => {
    const file = join(dir, "network-rules.json");
    const f = await Deno.open(file, { write: true, create: true, mode: 0o600 });
    await f.truncate(65 * 1024 * 1024); // sparse
    f.close();
    for (const args of [["rules", "check"], ["rules", "export", join(dir, "out.json")]]) {
      const r = await run(["--data-dir", dir, ...args]);
      assert.notEqual(r.code, 0, args.join(" "));
      assert.match(r.stderr, /larger than 64 MiB, the most a rules file may be/, args.join(" "));
    }
  });
});
