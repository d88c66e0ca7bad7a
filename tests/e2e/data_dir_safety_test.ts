/**
 * Every command that uses the data dir refuses an unsafe one, as `netmonitor
 * run` does: one that others can write to, or one in a folder that others can
 * write to (without the sticky bit) or that belongs to another user, since
 * they could move it away and put their own (rules, a fake prompt socket, a
 * fake CA) in its place. The error names the folder and the fix; exit 1.
 * Commands that only read do not create a missing data dir; those that write
 * create it 0700.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type CliResult, rulesFile, runCli } from "./_cli.ts";

const POSIX = Deno.build.os !== "windows";
const ROOT = POSIX && Deno.uid() === 0;

const RULES = `{\n  // mine\n  "a.test": "allow"\n}\n`;

/** Commands that only read the data dir. */
const READERS: string[][] = [
  ["rules", "list"],
  ["rules", "check"],
  ["rules", "export", "-"],
  ["rules", "test", "a.test"],
  ["stats"],
  ["status"],
  ["prompt"],
];

/** Commands that write in it (with their standard input). */
const WRITERS: { args: string[]; stdin?: string }[] = [
  { args: ["rules", "add", "b.test", "deny"] },
  { args: ["rules", "rm", "a.test"] },
  { args: ["rules", "import", "-"], stdin: `{ "c.test": "allow" }` },
  { args: ["rules", "clear", "--yes"] },
  { args: ["ca", "path"] },
  { args: ["manage"], stdin: "9\n" },
];

const ALL = [...READERS.map((args) => ({ args, stdin: undefined })), ...WRITERS];

/** A temporary folder (mode 0700 in /tmp), removed afterwards. */
async function withTemp(fn: (tmp: string) => Promise<void>) {
  const tmp = await Deno.makeTempDir({ prefix: "netmonitor-safety-" });
  try {
    await fn(tmp);
  } finally {
    await Deno.chmod(tmp, 0o700);
    await Deno.remove(tmp, { recursive: true });
  }
}

/** Runs every command in `cmds` (in parallel) with `dataDir`, from `cwd`. */
function runAll(cmds: { args: string[]; stdin?: string }[], dataDir: string, cwd: string) {
  return Promise.all(cmds.map(async ({ args, stdin }) => ({
    args,
    r: await runCli(args, { dataDir, cwd, ...(stdin !== undefined ? { stdin } : {}) }),
  })));
}

/** A clean refusal: exit 1, `error: ...` matching every pattern, no stack, nothing on stdout. */
function assertRefused(args: string[], r: CliResult, ...patterns: string[]) {
  const what = `netmonitor ${args.join(" ")}: ${r.stdout}${r.stderr}`;
  assert.equal(r.code, 1, what);
  assert.equal(r.stdout, "", what);
  assert.match(r.stderr, /^error: /, what);
  for (const p of patterns) assert.ok(r.stderr.includes(p), `${what}\nexpected: ${p}`);
  assert.doesNotMatch(r.stderr, /unexpected failure|\s+at .*:\d+:\d+/, what);
}

async function listing(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir), (e) => e.name)).sort();
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o7777;
}

Deno.test({
  name: "data dir safety: a data dir that others can write to is refused by every command, " +
    "and left as it is",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "data");
      await Deno.mkdir(dir);
      await Deno.writeTextFile(rulesFile(dir), RULES);
      await Deno.chmod(dir, 0o770);
      for (const { args, r } of await runAll(ALL, dir, tmp)) {
        assertRefused(
          args,
          r,
          `error: data dir "${dir}" (mode 0770) can be written by other users`,
          `chmod 700 "${dir}"`,
        );
      }
      assert.deepEqual(await listing(dir), ["network-rules.json"]);
      assert.equal(await Deno.readTextFile(rulesFile(dir)), RULES);
      assert.equal(await modeOf(dir), 0o770);
    });
  },
});

Deno.test({
  name: "data dir safety: a data dir in a folder that others can write to (no sticky bit) is " +
    "refused by every command, naming the folder; fixed, or sticky, it works",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const open = join(tmp, "open");
      const dir = join(open, "data");
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(rulesFile(dir), RULES);
      await Deno.chmod(open, 0o777);
      for (const { args, r } of await runAll(ALL, dir, tmp)) {
        assertRefused(
          args,
          r,
          `error: folder "${open}" above the data dir "${dir}" (mode 0777) can be written by ` +
            `other users and has no sticky bit`,
          `chmod go-w "${open}"`,
        );
      }
      assert.deepEqual(await listing(dir), ["network-rules.json"]);
      assert.equal(await Deno.readTextFile(rulesFile(dir)), RULES);
      assert.equal(await modeOf(open), 0o777);

      for (const mode of [0o755, 0o1777]) {
        await Deno.chmod(open, mode);
        const list = await runCli(["rules", "list"], { dataDir: dir, cwd: tmp });
        assert.equal(list.code, 0, list.stderr);
        assert.match(list.stdout, /^1 rule in .*\n {2}a\.test {2}allow\n$/);
      }
    });
  },
});

Deno.test({
  name: "data dir safety: a folder above the data dir that belongs to another user is refused",
  ignore: !ROOT,
  async fn() {
    await withTemp(async (tmp) => {
      const theirs = join(tmp, "theirs");
      const dir = join(theirs, "data");
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(theirs, 0o755);
      await Deno.chown(theirs, 65534, 65534); // nobody; the data dir is still ours
      for (const { args, r } of await runAll(READERS.map((args) => ({ args })), dir, tmp)) {
        assertRefused(
          args,
          r,
          `error: folder "${theirs}" above the data dir "${dir}" belongs to uid 65534, ` +
            `not to root (you)`,
        );
      }
      const add = await runCli(["rules", "add", "b.test", "deny"], { dataDir: dir, cwd: tmp });
      assertRefused(["rules", "add"], add, `folder "${theirs}"`);
      assert.deepEqual(await listing(dir), []);
    });
  },
});

Deno.test({
  name: "data dir safety: a missing data dir is not created by the commands that only read; " +
    "those that write create it 0700; a safe one (or a symlink to one) works",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "new", "data");
      const byArgs = new Map(
        (await runAll(READERS.map((args) => ({ args })), dir, tmp)).map((
          { args, r },
        ) => [args.join(" "), r]),
      );
      const out = (args: string) => {
        const r = byArgs.get(args)!;
        return [r.code, r.stdout, r.stderr];
      };
      assert.deepEqual(out("rules list"), [0, `No rules in ${rulesFile(dir)}\n`, ""]);
      assert.deepEqual(out("rules check"), [
        0,
        `${rulesFile(dir)}: no such file yet (no rules)\n`,
        "",
      ]);
      assert.deepEqual(out("rules export -"), [0, "{\n}\n", ""]);
      assert.deepEqual(out("rules test a.test"), [0, "ask: no rule\n", ""]);
      assert.deepEqual(out("status"), [3, `No netmonitor proxy is running for ${dir}\n`, ""]);
      assert.equal(byArgs.get("stats")!.code, 0, byArgs.get("stats")!.stderr);
      assert.match(byArgs.get("stats")!.stdout, /No requests logged yet/);
      assert.equal(byArgs.get("prompt")!.code, 1);
      assert.match(byArgs.get("prompt")!.stderr, /^error: No netmonitor proxy is running/);
      await assert.rejects(Deno.lstat(join(tmp, "new")), Deno.errors.NotFound, "created");

      const add = await runCli(["rules", "add", "a.test", "allow"], { dataDir: dir, cwd: tmp });
      assert.deepEqual([add.code, add.stdout, add.stderr], [0, `Added rule "a.test": allow\n`, ""]);
      assert.equal(await modeOf(dir), 0o700);

      // Through a symlink to it (in a safe folder), as before.
      const link = join(tmp, "link");
      await Deno.symlink(dir, link);
      const list = await runCli(["rules", "list"], { dataDir: link, cwd: tmp });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^1 rule in .*\n {2}a\.test {2}allow\n$/);
      const stats = await runCli(["stats", "--json"], { dataDir: link, cwd: tmp });
      assert.equal(stats.code, 0, stats.stderr);
      assert.deepEqual(JSON.parse(stats.stdout).rules, [{ pattern: "a.test", action: "allow" }]);
    });
  },
});

Deno.test({
  name: "data dir safety: nothing is created under a folder that others can write to; " +
    "the commands that only read still find nothing there",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const open = join(tmp, "open");
      await Deno.mkdir(open);
      await Deno.chmod(open, 0o777);
      const dir = join(open, "data");
      const add = await runCli(["rules", "add", "a.test", "allow"], { dataDir: dir, cwd: tmp });
      assertRefused(["rules", "add"], add, `folder "${open}" above`, `chmod go-w "${open}"`);
      const list = await runCli(["rules", "list"], { dataDir: dir, cwd: tmp });
      assert.deepEqual([list.code, list.stdout], [0, `No rules in ${rulesFile(dir)}\n`]);
      assert.deepEqual(await listing(open), []);
    });
  },
});
