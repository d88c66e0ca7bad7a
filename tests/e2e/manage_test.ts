/**
 * `netmonitor manage` end to end: once on a real terminal through tmux, typed
 * as a person would (with a rules watcher standing in for a running proxy),
 * and once with answers piped to stdin. Every menu option is also driven
 * through the I/O interface in tests/unit/stats_manage_menu_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AccessLog } from "../../lib/log/mod.ts";
import { type RuleSet, RulesStore } from "../../lib/rules/mod.ts";
import { has } from "../_helpers/tools.ts";
import { TmuxSession } from "./_tmux.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = join(REPO, "main.ts");

async function seedLog(dir: string): Promise<void> {
  const log = new AccessLog(join(dir, "network-access.log"));
  for (const [i, host] of ["pypi.test", "pypi.test", "evil.test"].entries()) {
    log.write({
      time: new Date(Date.UTC(2026, 10, 28, 9, 0, i)).toISOString(),
      client: "172.18.0.2:40000",
      method: "GET",
      url: `https://${host}/simple/`,
      host,
      decision: host === "evil.test" ? "deny" : "allow",
      source: "prompt",
      reason: host === "evil.test" ? "prompt: deny-once" : "prompt: allow-once",
      status: host === "evil.test" ? 403 : 200,
      bytesUp: 0,
      bytesDown: 1234,
      durationMs: 9,
    });
  }
  await log.close();
}

Deno.test({
  name: "e2e manage: a person drives the menu on a terminal; a watching proxy sees each change",
  ignore: !has("tmux"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nm-manage-e2e-" });
    const rulesFile = join(dir, "network-rules.json");
    await Deno.writeTextFile(rulesFile, '{\n  // kept\n  "evil.test": "deny-domain"\n}\n');
    await seedLog(dir);
    // What a running proxy does: watch the rules file through the store.
    const proxyView = new RulesStore(rulesFile);
    await proxyView.load();
    const reloads: RuleSet[] = [];
    const watcher = proxyView.watch({ onReload: (r) => reloads.push(r) }, { debounceMs: 50 });
    const patterns = () => proxyView.current.rules.map((r) => `${r.pattern} ${r.action}`);
    const until = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 20_000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      await using tmux = await TmuxSession.start({
        cmd: [Deno.execPath(), "run", "-A", MAIN, "--data-dir", dir, "manage"],
        cwd: dir,
        env: { TZ: "UTC" },
        width: 100,
        height: 50,
      });
      // Offset just past the last thing matched: each wait looks only at newer output.
      let seen = 0;
      const find = async (pattern: RegExp | string): Promise<string> => {
        const screen = await tmux.waitFor(pattern, 30_000, seen);
        const rest = screen.slice(seen);
        if (typeof pattern === "string") seen += rest.indexOf(pattern) + pattern.length;
        else {
          const m = pattern.exec(rest)!;
          seen += m.index + m[0].length;
        }
        return screen;
      };
      const answer = async (pattern: RegExp | string, text: string) => {
        await find(pattern);
        if (text !== "") await tmux.type(text);
        await tmux.press("Enter");
      };
      await find("Network Firewall Management");
      const menu = await tmux.screen();
      assert.match(menu, / {2}6\. Export rules\n/);
      assert.match(menu, / {2}9\. Quit\n/);

      // 3: add a rule, with an invalid pattern first.
      await answer("Your choice [1-9]: ", "3");
      await answer("Pattern (empty to cancel): ", "*bob.com");
      await find(/✗ invalid pattern "\*bob\.com".*Try again\./);
      await answer("Pattern (empty to cancel): ", "github.com");
      await answer("Action [1]: ", "1");
      await find("✓ Added: github.com allow-domain");
      await until(() => patterns().includes("github.com allow-domain"), "the proxy to see the add");

      // 4: remove one picked from the list, with an out-of-range number first.
      await answer("Your choice [1-9]: ", "4");
      await answer("Rule to remove [1-2] (empty to cancel): ", "7");
      await find('"7" is not a number from 1 to 2. Try again.');
      await answer("Rule to remove [1-2] (empty to cancel): ", "1");
      await find("✓ Removed: evil.test deny-domain");
      await until(() => !patterns().includes("evil.test deny-domain"), "the proxy to see the rm");

      // 6: export, asking for the file name; a missing folder first.
      await answer("Your choice [1-9]: ", "6");
      await answer("Export to file (empty to cancel): ", "nope/rules.json");
      await find("does not exist. Try again.");
      await answer("Export to file (empty to cancel): ", "exported.json");
      await find(/✓ Exported 1 rule to .*exported\.json/);
      assert.equal(
        await Deno.readTextFile(join(dir, "exported.json")),
        await Deno.readTextFile(rulesFile),
      );

      // 7: import, a missing file first, then merge.
      await Deno.writeTextFile(join(dir, "team.json"), '{ "pypi.test": "allow-domain" }');
      await answer("Your choice [1-9]: ", "7");
      await answer("Import from file (empty to cancel): ", "missing.json");
      await find('Cannot import "missing.json": file not found. Try again.');
      await answer("Import from file (empty to cancel): ", "team.json");
      await answer("or replace them? [M/r]: ", "m");
      await find("✓ Imported: 1 added, 0 updated, 0 unchanged.");
      await until(
        () => patterns().includes("pypi.test allow-domain"),
        "the proxy to see the import",
      );

      // 5: list; 1: statistics; 2: recent requests.
      await answer("Your choice [1-9]: ", "5");
      await find(/1 {2}github\.com +allow-domain\n +2 {2}pypi\.test +allow-domain/);
      await answer("Your choice [1-9]: ", "1");
      await find(/Requests 3 {4}Allowed 2 {4}Denied 1 {4}Prompted 3/);
      await answer("Your choice [1-9]: ", "2");
      await answer("How many recent requests? [20]: ", "");
      await find(/Last 3 requests, newest last:\n.*ALLOW GET +200 https:\/\/pypi\.test\/simple\//);

      // 8: clear after confirmation.
      await answer("Your choice [1-9]: ", "8");
      await answer("Delete all 2 rules? [y/N]: ", "y");
      await find("✓ Cleared 2 rules.");
      await until(() => patterns().length === 0, "the proxy to see the clear");
      assert.match(await Deno.readTextFile(rulesFile), /\/\/ kept/);

      // 9: quit.
      await answer("Your choice [1-9]: ", "9");
      assert.equal(await tmux.exitCode(), 0);
      assert.ok(reloads.length >= 4, `reloads: ${reloads.length}`);
    } finally {
      await watcher.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("e2e manage: answers piped to stdin", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nm-manage-e2e-" });
  try {
    await seedLog(dir);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "--data-dir", dir, "manage"],
      cwd: dir,
      env: { TZ: "UTC", NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(
      new TextEncoder().encode(
        "3\nregistry.npmjs.test\n1\n3\nhttps://x.test/a\n2\n3\n*.pinned.test\n3\n5\n",
      ),
    );
    await writer.close(); // end of input after option 5 leaves the menu
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(stdout, /✓ Added: registry\.npmjs\.test allow-domain/);
    assert.match(stdout, /1\. allow-url\n {2}2\. deny-url/);
    assert.match(stdout, /✓ Added: https:\/\/x\.test\/a deny-url/);
    assert.match(
      stdout,
      /1\. allow-domain\n {2}2\. deny-domain\n {2}3\. passthrough \(allow, and relay its HTTPS without decrypting it: for clients that pin certificates\)\n/,
    );
    assert.match(stdout, /✓ Added: \*\.pinned\.test passthrough/);
    assert.match(stdout, /Rules \(3\)/);
    assert.match(stdout, /Bye\.\n$/);
    const rules = (await new RulesStore(join(dir, "network-rules.json")).load()).rules;
    assert.deepEqual(rules.map((r) => [r.pattern, r.action]), [
      ["registry.npmjs.test", "allow-domain"],
      ["https://x.test/a", "deny-url"],
      ["*.pinned.test", "passthrough"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
