import { closeSync, constants, mkdirSync, openSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DeadlineExceededError } from "../errors.js";
import type { Logger } from "../util/logger.js";
import { nativeAddon } from "../util/native.js";
import type { RootlessLayout } from "./layout.js";

const LOCK_EX = 2;
const LOCK_NB = 4;
const POLL_MS = 50;

/**
 * The lock that makes one start or stop at a time for a user. Without it two starts would both find no daemon,
 * and the second would remove the first's fresh socket and child_pid before its own rootlesskit failed on
 * rootlesskit's lock. Not in rootlesskit's state dir: rootlesskit removes that dir when it exits, and a lock
 * file removed while held no longer excludes anyone.
 */
export function lockPath(layout: RootlessLayout): string {
  return join(layout.runtimeDir, "ctrexec", "rootless.lock");
}

function wouldBlock(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "EAGAIN" || code === "EWOULDBLOCK";
}

/**
 * Runs `fn` holding an flock on `path`, waiting at most `waitMs` for another holder (polled with LOCK_NB, so
 * the event loop keeps running). Without the native addon there is no flock: `fn` runs unlocked, as before the
 * lock existed. The fd is O_CLOEXEC (Node opens every file so): the rootlesskit spawned meanwhile never holds it.
 */
export async function withRootlessLock<T>(path: string, waitMs: number, log: Logger, fn: () => Promise<T>): Promise<T> {
  const flock = nativeAddon()?.flock;
  if (!flock) {
    log.debug("no native addon: rootless start and stop run without their lock");
    return fn();
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        flock(fd, LOCK_EX | LOCK_NB);
        break;
      } catch (err) {
        if (!wouldBlock(err)) throw err;
        if (Date.now() >= deadline) {
          throw new DeadlineExceededError(`another 'ctrexec rootless start' or 'stop' of this user still runs (it holds ${path}); try again later`);
        }
        await sleep(POLL_MS);
      }
    }
    return await fn();
  } finally {
    closeSync(fd); // releases the lock
  }
}
