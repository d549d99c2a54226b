import { closeSync, constants, openSync } from "node:fs";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { nativeAddon } from "../util/native.js";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const POLL_MS = 50;

function flockOrThrow(): (fd: number, op: number) => void {
  const flock = nativeAddon()?.flock;
  if (!flock)
    throw new FailedPreconditionError("file locks need ctrexec's native addon (it is not built): run npm run build, which needs a C compiler");
  return flock;
}

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
  const flock = flockOrThrow();
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

/**
 * Runs `fn` holding an exclusive flock(2) on `path` (created 0600 if missing) for as long as its promise takes:
 * for long holds (a daemon's start), where withFileLock's blocking wait would stop the event loop. The wait is
 * polled with LOCK_NB, at most `waitMs`, then `busy()` is thrown. flock excludes open file descriptions, so a
 * second holder in this very process waits as another process's would.
 */
export async function withFileLockWaiting<T>(path: string, waitMs: number, fn: () => Promise<T>, busy: () => Error): Promise<T> {
  const flock = flockOrThrow();
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        flock(fd, LOCK_EX | LOCK_NB);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "EAGAIN" && code !== "EWOULDBLOCK") throw err;
        if (Date.now() >= deadline) throw busy();
        await sleep(POLL_MS);
      }
    }
    return await fn();
  } finally {
    closeSync(fd); // releases the lock
  }
}
