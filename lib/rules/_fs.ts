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

/** The largest rules file read, bytes: far above any real one, and it bounds a hostile or endless input (`/dev/zero`). */
export const MAX_RULES_FILE_BYTES = 64 * 1024 * 1024;

/**
 * Reads a rules text from a file path or a stream, as `Deno.readTextFile`
 * would (UTF-8, invalid bytes replaced, a BOM kept), but at most `maxBytes`.
 *
 * @throws {RangeError} `larger than 64 MiB ...` beyond `maxBytes`; the
 *   file-system errors of `Deno.open` (NotFound, ...) for a path.
 */
export async function readTextLimited(
  source: string | ReadableStream<Uint8Array>,
  maxBytes = MAX_RULES_FILE_BYTES,
): Promise<string> {
  const file = typeof source === "string" ? await Deno.open(source, { read: true }) : undefined;
  const reader = (file ? file.readable : source as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > maxBytes) {
        throw new RangeError(
          `larger than ${maxBytes / (1024 * 1024)} MiB, the most a rules file may be`,
        );
      }
      chunks.push(value);
    }
  } finally {
    // Cancelling also closes the file (its readable owns it).
    await reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}
