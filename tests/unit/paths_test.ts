/**
 * lib/paths.ts: where the data lives, and ensureDataDir, which makes sure the
 * data directory is the user's alone (created 0700, never someone else's or
 * writable by others, never in a folder that others could move it out of),
 * with a clean CLI error when it is not; checkDataDir, the same check for the
 * commands that only read (it creates and changes nothing).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { checkDataDir, DataDirError, dataPaths, ensureDataDir } from "../../lib/paths.ts";

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
          if (mode & 0o1000) {
            // Shared on purpose, like /tmp: never advise making it private.
            assert.doesNotMatch(e.message, /chmod/);
            assert.match(e.message, /a shared folder \(sticky bit, like \/tmp\)/);
            assert.match(e.message, new RegExp(`--data-dir "${join(tmp, "netmonitor")}"`));
          } else assert.match(e.message, new RegExp(`chmod 700 "${tmp}"`));
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

/** Both checks refuse `dir` with a DataDirError about `folder` matching `message`. */
async function refusedBoth(dir: string, folder: string, message: RegExp) {
  for (const check of [ensureDataDir, checkDataDir]) {
    await assert.rejects(check(dataPaths(dir)), (e: unknown) => {
      assert.ok(e instanceof DataDirError, String(e));
      assert.equal(e.dir, dir);
      assert.equal(e.path, folder);
      assert.equal(e.userFacing, true);
      assert.match(e.message, message);
      return true;
    }, check.name);
  }
}

/** A RegExp that matches `text` literally. */
function literal(text: string): RegExp {
  return new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
}

Deno.test({
  name: "checkDataDir: a missing dir is false and is not created; a safe one is left as it is",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "a", "data");
      assert.equal(await checkDataDir(dataPaths(dir)), false);
      await assert.rejects(Deno.lstat(join(tmp, "a")), Deno.errors.NotFound);
      await Deno.mkdir(dir, { recursive: true });
      await Deno.chmod(dir, 0o750);
      assert.equal(await checkDataDir(dataPaths(dir)), true);
      assert.equal(await modeOf(dir), 0o750, "a read-only check changed the mode");
    });
  },
});

Deno.test({
  name: "checkDataDir: refuses what ensureDataDir refuses, and changes nothing",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const dir = join(tmp, "data");
      await Deno.mkdir(dir);
      for (const mode of [0o770, 0o702, 0o1777]) {
        await Deno.chmod(dir, mode);
        await refusedBoth(dir, dir, literal(`data dir "${dir}" (mode 0${mode.toString(8)})`));
        assert.equal(await modeOf(dir), mode);
      }
      await Deno.remove(dir);
      await Deno.writeTextFile(dir, "");
      await refusedBoth(dir, dir, /is not a directory/);
    });
  },
});

Deno.test({
  name: "data dir ancestors: a folder above that others can write to, without the sticky bit, " +
    "is refused by name with the chmod that fixes it",
  ignore: !POSIX,
  async fn() {
    for (const mode of [0o777, 0o775, 0o757, 0o2777]) {
      await withTemp(async (tmp) => {
        const open = join(tmp, "open");
        const dir = join(open, "mid", "data");
        await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
        await Deno.chmod(open, mode);
        await refusedBoth(
          dir,
          open,
          literal(
            `folder "${open}" above the data dir "${dir}" (mode 0${mode.toString(8)}) can be ` +
              `written by other users and has no sticky bit`,
          ),
        );
        await assert.rejects(ensureDataDir(dataPaths(dir)), literal(`chmod go-w "${open}"`));
        assert.equal(await modeOf(open), mode, "the folder's mode was changed");
        // Fixed as the message says: accepted.
        await Deno.chmod(open, mode & ~0o022);
        await ensureDataDir(dataPaths(dir));
        assert.equal(await checkDataDir(dataPaths(dir)), true);
      });
    }
  },
});

Deno.test({
  name: "data dir ancestors: a sticky world-writable folder (like /tmp) is fine",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const shared = join(tmp, "shared");
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o1777);
      const dir = join(shared, "data");
      await ensureDataDir(dataPaths(dir));
      assert.equal(await modeOf(dir), 0o700);
      assert.equal(await checkDataDir(dataPaths(dir)), true);
    });
  },
});

Deno.test({
  name: "data dir ancestors: ensureDataDir creates nothing under an unsafe folder; " +
    "checkDataDir says a missing dir there is missing",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const open = join(tmp, "open");
      await Deno.mkdir(open);
      await Deno.chmod(open, 0o777);
      const dir = join(open, "a", "data");
      await assert.rejects(ensureDataDir(dataPaths(dir)), (e: unknown) => {
        assert.ok(e instanceof DataDirError);
        assert.equal(e.path, open);
        return true;
      });
      assert.deepEqual(await Array.fromAsync(Deno.readDir(open)), [], "something was created");
      assert.equal(await checkDataDir(dataPaths(dir)), false);
    });
  },
});

Deno.test({
  name: "data dir ancestors: a folder above that belongs to another user is refused (root too)",
  ignore: !ROOT,
  async fn() {
    await withTemp(async (tmp) => {
      const theirs = join(tmp, "theirs");
      const dir = join(theirs, "data");
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(theirs, 0o755);
      await Deno.chown(theirs, 65534, 65534); // nobody; the data dir itself is root's
      await refusedBoth(
        dir,
        theirs,
        literal(
          `folder "${theirs}" above the data dir "${dir}" belongs to uid 65534, ` +
            `not to root (you): its owner could move the data dir away`,
        ),
      );
      await Deno.chown(theirs, 0, 0);
      assert.equal(await checkDataDir(dataPaths(dir)), true);
    });
  },
});

Deno.test({
  name: "data dir symlinks: a link to a safe dir works; the folders above its target, " +
    "and the folder the link is in, are checked",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const real = join(tmp, "real", "data");
      await Deno.mkdir(real, { recursive: true, mode: 0o700 });
      const link = join(tmp, "link");
      await Deno.symlink(real, link);
      await ensureDataDir(dataPaths(link));
      assert.equal(await checkDataDir(dataPaths(link)), true);

      // The target's folder is open: refused, by its real name.
      await Deno.chmod(join(tmp, "real"), 0o777);
      await refusedBoth(link, join(tmp, "real"), literal(`folder "${join(tmp, "real")}" above`));
      await Deno.chmod(join(tmp, "real"), 0o755);

      // The link lives in an open folder: whoever can write there can point it elsewhere.
      const open = join(tmp, "open");
      await Deno.mkdir(open);
      await Deno.chmod(open, 0o777);
      const inOpen = join(open, "link");
      await Deno.symlink(real, inOpen);
      await refusedBoth(inOpen, open, literal(`chmod go-w "${open}"`));

      // A folder on the way that is a symlink: what it points to is checked.
      const via = join(tmp, "via");
      await Deno.symlink(open, via);
      await Deno.mkdir(join(open, "d"), { mode: 0o700 });
      await refusedBoth(join(via, "d"), open, literal(`folder "${open}" above`));
    });
  },
});

Deno.test({
  name: "data dir symlinks: a link that belongs to another user is refused, even in a sticky " +
    "folder; so is a link in an open folder that another link leads through",
  ignore: !ROOT,
  async fn() {
    await withTemp(async (tmp) => {
      const real = join(tmp, "real", "data");
      await Deno.mkdir(real, { recursive: true, mode: 0o700 });
      const shared = join(tmp, "shared");
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o1777);
      // Planted by someone else in a folder like /tmp: they can repoint it at any time.
      const theirs = join(shared, "data");
      await Deno.symlink(real, theirs);
      const chown = await new Deno.Command("chown", { args: ["-h", "65534:65534", theirs] })
        .output();
      assert.equal(chown.code, 0);
      await refusedBoth(
        theirs,
        theirs,
        literal(`symlink "${theirs}" on the way to the data dir "${theirs}" belongs to uid 65534`),
      );
      const below = join(theirs, "sub");
      await assert.rejects(ensureDataDir(dataPaths(below)), literal(`symlink "${theirs}"`));
      await assert.rejects(Deno.lstat(join(real, "sub")), Deno.errors.NotFound);

      // Ours, and in a sticky folder: fine.
      const mine = join(shared, "mine");
      await Deno.symlink(real, mine);
      await ensureDataDir(dataPaths(mine));
      assert.equal(await checkDataDir(dataPaths(mine)), true);

      // Ours, to a link (relative) in an open folder that is neither above
      // the given path nor above the real one: whoever can write there can
      // replace that link.
      const open = join(tmp, "open");
      await Deno.mkdir(open);
      await Deno.chmod(open, 0o777);
      await Deno.symlink("../real/data", join(open, "hop"));
      const entry = join(tmp, "entry");
      await Deno.symlink(join(open, "hop"), entry);
      await refusedBoth(entry, open, literal(`folder "${open}" above the data dir "${entry}"`));
      await Deno.chmod(open, 0o755);
      assert.equal(await checkDataDir(dataPaths(entry)), true);
    });
  },
});

Deno.test({
  name: "data dir symlinks: ensureDataDir creates nothing through a link into an unsafe folder",
  ignore: !POSIX,
  async fn() {
    await withTemp(async (tmp) => {
      const open = join(tmp, "open");
      await Deno.mkdir(join(open, "sub"), { recursive: true });
      await Deno.chmod(open, 0o777);
      const home = join(tmp, "home");
      await Deno.mkdir(home, { mode: 0o700 });
      await Deno.symlink(join(open, "sub"), join(home, "link"));
      const dir = join(home, "link", "data");
      await assert.rejects(ensureDataDir(dataPaths(dir)), (e: unknown) => {
        assert.ok(e instanceof DataDirError, String(e));
        assert.equal(e.path, open);
        return true;
      });
      await assert.rejects(Deno.lstat(join(open, "sub", "data")), Deno.errors.NotFound);
    });
  },
});
