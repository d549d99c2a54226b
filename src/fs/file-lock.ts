import { closeSync, constants, openSync } from "node:fs";
import { resolve } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { nativeAddon } from "../util/native.js";

const LOCK_EX = 2;
const LOCK_UN = 8;

/** Paths this process holds locked: flock locks belong to an open file, so a nested lock of one would wait forever. */
const held = new Set<string>();

/**
 * Runs `fn` holding an exclusive flock(2) on `path` (created 0600 if missing): across processes on the host, one
 * holder at a time. Synchronous, and it blocks this thread until the lock is free, so every holder must keep it
 * for a short synchronous step only (read, decide, write a small file); a promise returned by `fn` is refused,
 * since what follows its await would run unlocked. Not reentrant: locking a path this process holds throws.
 * The lock goes with the fd, so a holder that dies releases it.
 */
export function withFileLock<T>(path: string, fn: () => T): T {
  const flock = nativeAddon()?.flock;
  if (!flock)
    throw new FailedPreconditionError("file locks need ctrexec's native addon (it is not built): run npm run build, which needs a C compiler");
  const key = resolve(path);
  if (held.has(key)) throw new FailedPreconditionError(`${key} is already locked by this process: a nested lock would wait forever`);
  // Node opens every file O_CLOEXEC: a child spawned meanwhile never holds the lock.
  const fd = openSync(key, constants.O_RDWR | constants.O_CREAT, 0o600);
  held.add(key);
  try {
    flock(fd, LOCK_EX);
    let result: T;
    try {
      result = fn();
    } finally {
      // The close below releases it as well, so a failed unlock changes nothing.
      try {
        flock(fd, LOCK_UN);
      } catch {}
    }
    if (typeof (result as { then?: unknown } | null)?.then === "function") {
      throw new InvalidArgumentError("withFileLock takes a synchronous function: what follows an await runs unlocked", { field: "fn" });
    }
    return result;
  } finally {
    held.delete(key);
    closeSync(fd);
  }
}
