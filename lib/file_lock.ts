/**
 * An inter-process lock on a file, shared by the rules store, the access log
 * and the CA (several `netmonitor` processes may use one data directory).
 *
 * @module
 */

/**
 * Holds an exclusive advisory lock (flock/LockFileEx) on `lockPath` while `fn`
 * runs. The OS drops the lock when the holder dies, so a crashed process never
 * leaves a stale lock behind. The lock file itself is left in place: deleting
 * it would let two processes lock two different files.
 */
export async function withFileLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  const file = await Deno.open(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  try {
    await file.lock(true);
    try {
      return await fn();
    } finally {
      await file.unlock();
    }
  } finally {
    file.close();
  }
}
