/**
 * Where netmonitor keeps its files (the original design's `~/docker-agent-data/`).
 * @module
 */

import { join, resolve } from "node:path";

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
 * or writable by other users. `userFacing`: the CLI shows the message as
 * `error: ...` (exit 1), without a stack.
 */
export class DataDirError extends Error {
  override name = "DataDirError";
  readonly userFacing = true;
  /** The data directory. */
  readonly dir: string;
  constructor(dir: string, message: string) {
    super(message);
    this.dir = dir;
  }
}

/**
 * Makes sure the data directory is this user's alone, and creates it (and
 * missing parents) with mode 0700, whatever the umask, when it is missing.
 * Group and world read access is taken away from an existing one.
 *
 * Whoever else can write in it could change the rules, or plant a symlink
 * where netmonitor (or a Docker script run as root) writes. So, on systems
 * with owners and modes (not Windows):
 *
 * @throws {DataDirError} when it is not a directory, belongs to another user
 *   (root included), or is group- or world-writable: fixing that is the
 *   owner's decision, after checking what others may have put there.
 */
export async function ensureDataDir(paths: DataPaths): Promise<void> {
  const dir = paths.dir;
  let created = false;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    created = true;
    // Checked like any other: someone may have made it first.
    info = await Deno.stat(dir);
  }
  if (!info.isDirectory) {
    throw new DataDirError(dir, `data dir "${dir}" is not a directory`);
  }
  const uid = Deno.build.os === "windows" ? null : Deno.uid();
  if (uid === null || info.uid === null || info.mode === null) return;
  const mode = info.mode & 0o7777;
  const shown = `0${mode.toString(8).padStart(3, "0")}`;
  if (info.uid !== uid) {
    throw new DataDirError(
      dir,
      `data dir "${dir}" belongs to uid ${info.uid}, not to you (uid ${uid}); its rules, ` +
        `CA key and log must be yours alone, and its owner could plant files that netmonitor ` +
        `would use. Use a data dir of your own (--data-dir DIR or NETMONITOR_DATA_DIR)`,
    );
  }
  if ((mode & 0o022) !== 0) {
    throw new DataDirError(
      dir,
      `data dir "${dir}" (mode ${shown}) can be written by other users: they could have ` +
        `changed its rules or planted files in it. Check what is in it, then make it ` +
        `private: chmod 700 "${dir}"`,
    );
  }
  // New: 0700 whatever the umask took away. Existing: no group or world access.
  const wanted = created ? 0o700 : mode & ~0o077;
  if (wanted !== mode) await Deno.chmod(dir, wanted);
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
