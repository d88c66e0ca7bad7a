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

/** Creates the data directory (and parents) with mode 0700 when it is missing. */
export async function ensureDataDir(paths: DataPaths): Promise<void> {
  await Deno.mkdir(paths.dir, { recursive: true, mode: 0o700 });
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
