/**
 * File-system helpers for the rules store: atomic replace and an
 * inter-process lock.
 * @module
 */

import { basename, dirname, join } from "node:path";

/**
 * Replaces `path` with `text` atomically: a temporary file in the same
 * directory is written, fsync'ed and renamed over the target, then the
 * directory is fsync'ed (where the platform allows), so a reader sees the old
 * or the new content, never a mix, even after a crash.
 *
 * A symlinked target is followed: the file it points to is replaced, the link
 * stays. The file mode is kept (new files get `mode`).
 */
export async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  let target = path;
  try {
    target = await Deno.realPath(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  let fileMode = mode;
  try {
    fileMode = (await Deno.stat(target)).mode! & 0o7777;
  } catch { /* new file, or no modes on this platform */ }
  const dir = dirname(target);
  const tmp = join(
    dir,
    `.${basename(target)}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`,
  );
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: fileMode });
  try {
    try {
      const bytes = new TextEncoder().encode(text);
      // write() may write less than asked.
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      await file.sync();
    } finally {
      file.close();
    }
    if (Deno.build.os !== "windows") await Deno.chmod(tmp, fileMode);
    await Deno.rename(tmp, target);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* not supported here: the rename is still atomic */ }
}
