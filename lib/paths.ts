/**
 * Where netmonitor keeps its files (the original design's `~/docker-agent-data/`).
 * @module
 */

import { dirname, join, resolve } from "node:path";

/** The data directory and the files in it. All paths are absolute. */
export interface DataPaths {
  dir: string;
  /** network-rules.json */
  rules: string;
  /** network-access.log */
  log: string;
  /** netmonitor-ca.pem */
  caCert: string;
  /** netmonitor-ca-key.pem */
  caKey: string;
  /** netmonitor.sock: prompts, for the proxy that asks (`netmonitor prompt`) */
  controlSocket: string;
  /** proxies/: one status socket per running proxy, `PID.sock` (`netmonitor status`) */
  proxiesDir: string;
}

/** The directory name under the home directory, as in the original design. */
export const DEFAULT_DATA_DIR_NAME = "docker-agent-data";

/**
 * Resolves the data directory: `explicitDir` (from `--data-dir`), else the
 * `NETMONITOR_DATA_DIR` environment variable, else `~/docker-agent-data`.
 * A leading `~/` is expanded (a shell does not expand `--data-dir=~/x`).
 */
export function dataPaths(explicitDir?: string): DataPaths {
  const home = homeDir();
  const chosen = nonEmpty(explicitDir) ?? nonEmpty(env("NETMONITOR_DATA_DIR")) ??
    join(home ?? ".", DEFAULT_DATA_DIR_NAME);
  const expanded = home !== undefined && (chosen === "~" || /^~[/\\]/.test(chosen))
    ? join(home, chosen.slice(1))
    : chosen;
  const dir = resolve(expanded);
  return {
    dir,
    rules: join(dir, "network-rules.json"),
    log: join(dir, "network-access.log"),
    caCert: join(dir, "netmonitor-ca.pem"),
    caKey: join(dir, "netmonitor-ca-key.pem"),
    controlSocket: join(dir, "netmonitor.sock"),
    proxiesDir: join(dir, "proxies"),
  };
}

/**
 * The data directory cannot be used safely: not a directory, someone else's,
 * writable by other users, or in a folder that others could move it out of.
 * `userFacing`: the CLI shows the message as `error: ...` (exit 1), without a
 * stack.
 */
export class DataDirError extends Error {
  override name = "DataDirError";
  readonly userFacing = true;
  /** The data directory. */
  readonly dir: string;
  /** The folder that is wrong: the data directory itself, or a folder above it. */
  readonly path: string;
  constructor(dir: string, message: string, path: string = dir) {
    super(message);
    this.dir = dir;
    this.path = path;
  }
}

/**
 * Makes sure the data directory is this user's alone, and creates it (and
 * missing parents) with mode 0700, whatever the umask, when it is missing.
 * Group and world read access is taken away from an existing one. For the
 * commands that write in it (`run`, `rules add`, `ca`, `manage`...).
 *
 * Whoever else can write in it could change the rules, or plant a symlink
 * where netmonitor (or a Docker script run as root) writes; whoever can write
 * in a folder above it could move it away and put one of their own in its
 * place. So, on systems with owners and modes (not Windows):
 *
 * @throws {DataDirError} when it is not a directory, belongs to another user
 *   (root included), or is group- or world-writable: fixing that is the
 *   owner's decision, after checking what others may have put there. Also
 *   when a folder above it is unsafe (see {@linkcode checkDataDir}); then
 *   nothing is created.
 */
export async function ensureDataDir(paths: DataPaths): Promise<void> {
  const dir = paths.dir;
  const uid = currentUid();
  let created = false;
  let info = await statIfExists(dir);
  if (info === undefined) {
    // Nothing is made in a folder that others could swap.
    if (uid !== null) await checkAncestors(dir, uid);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    created = true;
    // Checked like any other: someone may have made it first.
    info = await Deno.stat(dir);
  }
  const mode = await checkDir(dir, info, uid);
  if (mode === undefined) return;
  // New: 0700 whatever the umask took away. Existing: no group or world access.
  const wanted = created ? 0o700 : mode & ~0o077;
  if (wanted !== mode) await Deno.chmod(dir, wanted);
}

/**
 * The check of {@linkcode ensureDataDir} for commands that only read the data
 * directory (`stats`, `rules list`, `status`, `prompt`...): it creates and
 * changes nothing. Returns false when the directory does not exist (the
 * command then finds no rules, no log, no proxy), true when it exists and is
 * safe.
 *
 * Safe means, on systems with owners and modes (not Windows), in the spirit
 * of OpenSSH's StrictModes: the directory is a directory, the user's own and
 * not writable by group or others; and every folder above it is owned by root
 * or the user and is not writable by group or others unless it has the
 * sticky bit (as /tmp has). The folders checked are those above the
 * directory's real path and, when the given path goes through a symlink,
 * those the given path is looked up in (where the symlink lives).
 *
 * @throws {DataDirError} when it is not safe; the message names the folder
 *   that is wrong and how to fix it.
 */
export async function checkDataDir(paths: DataPaths): Promise<boolean> {
  const info = await statIfExists(paths.dir);
  if (info === undefined) return false;
  await checkDir(paths.dir, info, currentUid());
  return true;
}

/** The current user's uid where files have owners and modes; null elsewhere. */
function currentUid(): number | null {
  return Deno.build.os === "windows" ? null : Deno.uid();
}

async function statIfExists(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}

/**
 * Checks the data directory (`info`: its stat, through symlinks) and the
 * folders above it. Returns its mode, or undefined when the system has no
 * owners and modes.
 */
async function checkDir(
  dir: string,
  info: Deno.FileInfo,
  uid: number | null,
): Promise<number | undefined> {
  if (!info.isDirectory) {
    throw new DataDirError(dir, `data dir "${dir}" is not a directory`);
  }
  if (uid === null || info.uid === null || info.mode === null) return undefined;
  const mode = info.mode & 0o7777;
  if (info.uid !== uid) {
    throw new DataDirError(
      dir,
      `data dir "${dir}" belongs to uid ${info.uid}, not to you (uid ${uid}); its rules, ` +
        `CA key and log must be yours alone, and its owner could plant files that netmonitor ` +
        `would use. Use a data dir of your own (--data-dir DIR or NETMONITOR_DATA_DIR)`,
    );
  }
  if ((mode & 0o022) !== 0) {
    // A sticky folder (/tmp, /var/tmp) is shared on purpose: making it private
    // would break everyone else who uses it. A folder of one's own inside it is fine.
    const fix = (mode & 0o1000) !== 0
      ? `It is a shared folder (sticky bit, like /tmp), so do not make it private: use a ` +
        `folder of your own inside it, e.g. --data-dir "${join(dir, "netmonitor")}"`
      : `Check what is in it, then make it private: chmod 700 "${dir}"`;
    throw new DataDirError(
      dir,
      `data dir "${dir}" (mode ${octal(mode)}) can be written by other users: they could have ` +
        `changed its rules or planted files in it. ${fix}`,
    );
  }
  await checkAncestors(dir, uid);
  return mode;
}

/** The folders above `path` (absolute), nearest first; the root last. */
function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  for (let p = dirname(path); !out.includes(p); p = dirname(p)) out.push(p);
  return out;
}

/**
 * Checks the folders above the data directory `dir`: those above its real
 * path (lstat: none is a symlink there), and, when `dir` is not its own real
 * path (or does not exist yet), those its given path is looked up in (stat,
 * through symlinks; missing ones are skipped). One stat per folder. Then
 * every symlink on the way, and the folder it is in ({@linkcode checkLinks}).
 */
async function checkAncestors(dir: string, uid: number): Promise<void> {
  let real: string | undefined;
  try {
    real = await Deno.realPath(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const checked = new Set<string>();
  if (real !== undefined) {
    for (const folder of ancestorsOf(real)) {
      checked.add(folder);
      checkAncestor(dir, folder, await Deno.lstat(folder), uid);
    }
  }
  if (real !== dir) {
    for (const folder of ancestorsOf(dir)) {
      if (checked.has(folder)) continue;
      const info = await statIfExists(folder);
      if (info?.isDirectory) checkAncestor(dir, folder, info, uid);
    }
  }
  await checkLinks(dir, uid);
}

/** Most symlinks followed on the way to the data dir (Linux's limit). */
const MAX_LINKS = 40;

/**
 * Follows the path `dir` as the system does, one name at a time: every
 * symlink met on the way (the data dir itself included, and links that a
 * link's target goes through) must belong to the user or root, and the
 * folder it is in must be safe ({@linkcode checkAncestor}). Whoever owns a
 * link can point it at a folder of their own after the check, even in a
 * sticky folder like /tmp. Every folder looked up in is checked the same
 * way, so nothing is created through a link into an unsafe folder. Stops at
 * the first missing name.
 */
async function checkLinks(dir: string, uid: number): Promise<void> {
  const names = (p: string) => p.split("/").filter((n) => n !== "" && n !== ".");
  const todo = names(dir);
  let at = "/"; // a real path: no symlink in it
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === "..") {
      at = dirname(at);
      continue;
    }
    const path = join(at, name);
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
      throw e;
    }
    if (!info.isSymlink) {
      // A folder the lookup goes through (above the data dir, or a link's target's).
      if (todo.length > 0 && info.isDirectory) checkAncestor(dir, path, info, uid);
      at = path;
      continue;
    }
    if (++links > MAX_LINKS) {
      throw new DataDirError(dir, `too many symlinks on the way to the data dir "${dir}"`, path);
    }
    if (info.uid !== null && info.uid !== 0 && info.uid !== uid) {
      const notYours = uid === 0 ? "not to root (you)" : `neither to you (uid ${uid}) nor to root`;
      throw new DataDirError(
        dir,
        `symlink "${path}" on the way to the data dir "${dir}" belongs to uid ${info.uid}, ` +
          `${notYours}: its owner could point it at a folder of their own. Use a data dir ` +
          `whose path goes through no one else's symlinks (--data-dir DIR or NETMONITOR_DATA_DIR)`,
        path,
      );
    }
    checkAncestor(dir, at, await Deno.lstat(at), uid);
    const target = await Deno.readLink(path);
    if (target.startsWith("/")) at = "/";
    todo.unshift(...names(target));
  }
}

function checkAncestor(dir: string, folder: string, info: Deno.FileInfo, uid: number): void {
  if (info.uid === null || info.mode === null) return;
  const above = `folder "${folder}" above the data dir "${dir}"`;
  const risk = `could move the data dir away and put one of their own in its place`;
  if (info.uid !== 0 && info.uid !== uid) {
    const notYours = uid === 0 ? "not to root (you)" : `neither to you (uid ${uid}) nor to root`;
    throw new DataDirError(
      dir,
      `${above} belongs to uid ${info.uid}, ${notYours}: its owner ${risk}. Use a data dir ` +
        `in folders that only you or root own (--data-dir DIR or NETMONITOR_DATA_DIR)`,
      folder,
    );
  }
  const mode = info.mode & 0o7777;
  if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0) {
    throw new DataDirError(
      dir,
      `${above} (mode ${octal(mode)}) can be written by other users and has no sticky bit: ` +
        `they ${risk}. Take their write access away: chmod go-w "${folder}" (for a shared ` +
        `folder like /tmp: chmod +t "${folder}"), or use a data dir elsewhere ` +
        `(--data-dir DIR or NETMONITOR_DATA_DIR)`,
      folder,
    );
  }
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s.trim() === "" ? undefined : s;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

function homeDir(): string | undefined {
  return nonEmpty(env("HOME")) ?? nonEmpty(env("USERPROFILE"));
}
