/**
 * Test-time detection of external tools (curl, tmux, openssl, docker, ...).
 *
 * The README promises that `npx -y deno@2.9.6 task test` works on a machine
 * with only Node.js and npm, so a test that needs another program must be
 * skipped, loudly, when it is missing: `Deno.test({ ignore: !has("curl") })`.
 *
 * @module
 */

const cache = new Map<string, boolean>();

/** True when `name` is an executable on PATH. Prints a skip notice once when it is not. */
export function has(name: string): boolean {
  let found = cache.get(name);
  if (found !== undefined) return found;
  found = false;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) {
        found = true;
        break;
      }
    } catch { /* not in this directory */ }
  }
  cache.set(name, found);
  if (!found) console.error(`SKIP: "${name}" is not installed; tests that need it are ignored.`);
  return found;
}

/** True when every tool is available. */
export function hasAll(...names: string[]): boolean {
  return names.map(has).every(Boolean);
}
