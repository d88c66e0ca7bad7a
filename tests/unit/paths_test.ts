/**
 * lib/paths.ts: where the data lives, and ensureDataDir, which makes sure the
 * data directory is the user's alone (created 0700, never someone else's or
 * writable by others), with a clean CLI error when it is not.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { DataDirError, dataPaths, ensureDataDir } from "../../lib/paths.ts";

const POSIX = Deno.build.os !== "windows";
const ROOT = POSIX && Deno.uid() === 0;

async function withTemp(fn: (tmp: string) => Promise<void>) {
  const tmp = await Deno.makeTempDir({ prefix: "netmonitor-paths-" });
  try {
    await fn(tmp);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o7777;
}

/**
 * `netmonitor ARGS...` as a process (killed after 30 s: a proxy that started
 * would run on), output captured.
 */
async function cli(args: string[]) {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("paths: --data-dir wins, ~/ is expanded, every path is absolute", () => {
  const home = Deno.env.get("HOME");
  const p = dataPaths("~/nm-data");
  if (home) assert.equal(p.dir, join(home, "nm-data"));
  assert.equal(p.rules, join(p.dir, "network-rules.json"));
  assert.equal(p.controlSocket, join(p.dir, "netmonitor.sock"));
  assert.ok(dataPaths("rel").dir.startsWith("/") || !POSIX);
});

Deno.test({
  name: "ensureDataDir: creates the data dir and its parents 0700, whatever the umask",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "a", "data");
      // umask 000 (what made the Docker script's data dir drwxrwxrwx) for this process.
      const old = Deno.umask(0);
      try {
        await ensureDataDir(dataPaths(dir));
      } finally {
        Deno.umask(old);
      }
      assert.equal(await modeOf(dir), 0o700);
      assert.equal(await modeOf(join(tmp, "a")) & 0o077, 0, "a parent was made for others");
      await ensureDataDir(dataPaths(dir)); // idempotent
      assert.equal(await modeOf(dir), 0o700);
    });
  },
});

Deno.test({
  name: "ensureDataDir: group and world read access is taken away from an existing dir",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      await Deno.chmod(tmp, 0o755);
      await ensureDataDir(dataPaths(tmp));
      assert.equal(await modeOf(tmp), 0o700);
    });
  },
});

Deno.test({
  name: "ensureDataDir: refuses a dir that others can write to, and leaves it as it is",
  ignore: !POSIX,
  async fn() {
    for (const mode of [0o777, 0o770, 0o702, 0o1777]) {
      await withTemp(async (tmp) => {
        await Deno.writeTextFile(join(tmp, "network-rules.json"), `{ "*": "allow" }`);
        await Deno.chmod(tmp, mode);
        await assert.rejects(ensureDataDir(dataPaths(tmp)), (e: unknown) => {
          assert.ok(e instanceof DataDirError);
          assert.equal(e.dir, tmp);
          assert.equal(e.userFacing, true);
          const shown = `0${mode.toString(8).padStart(3, "0")}`;
          assert.match(
            e.message,
            new RegExp(`data dir "${tmp}" \\(mode ${shown}\\) can be written`),
          );
          assert.match(e.message, new RegExp(`chmod 700 "${tmp}"`));
          return true;
        });
        assert.equal(await modeOf(tmp), mode, "the mode was changed");
      });
    }
  },
});

Deno.test({
  name: "ensureDataDir: refuses a dir that belongs to another user (root too)",
  ignore: !ROOT,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "data");
      await Deno.mkdir(dir, { mode: 0o700 });
      await Deno.chown(dir, 65534, 65534); // nobody
      await assert.rejects(ensureDataDir(dataPaths(dir)), (e: unknown) => {
        assert.ok(e instanceof DataDirError);
        assert.match(
          e.message,
          new RegExp(`data dir "${dir}" belongs to uid 65534, not to you \\(uid 0\\)`),
        );
        assert.match(e.message, /--data-dir DIR or NETMONITOR_DATA_DIR/);
        return true;
      });
      // Through a symlink of the caller's own: the directory it names counts.
      const link = join(tmp, "link");
      await Deno.symlink(dir, link);
      await assert.rejects(ensureDataDir(dataPaths(link)), DataDirError);
      assert.equal(await modeOf(dir), 0o700);
    });
  },
});

Deno.test({
  name: "ensureDataDir: a file where the data dir should be is refused",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const file = join(tmp, "data");
      await Deno.writeTextFile(file, "");
      await assert.rejects(ensureDataDir(dataPaths(file)), /data dir ".*" is not a directory/);
    });
  },
});

Deno.test({
  name: "netmonitor run: an unsafe data dir is a clean error (exit 1, no stack), nothing started",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      await Deno.chmod(tmp, 0o777);
      const res = await cli([
        "run",
        "--data-dir",
        tmp,
        "--port",
        "0",
        "--non-interactive",
      ]);
      assert.equal(res.code, 1, res.stderr);
      assert.match(
        res.stderr,
        new RegExp(`^error: data dir "${tmp}" \\(mode 0777\\) can be written`),
      );
      assert.doesNotMatch(res.stderr, /unexpected failure|at .*\.ts:\d+/);
      assert.equal(res.stdout, "");
      assert.deepEqual(await Array.fromAsync(Deno.readDir(tmp)), [], "files were created");
    });
  },
});
