import { spawn } from "node:child_process";
import { realpath } from "node:fs/promises";
import { resolve } from "node:path";
import { UnknownError } from "../errors.js";
import { nativeAddon } from "../util/native.js";
import { unmountDetached } from "./mount.js";
import { mountPointsUnder } from "./mountinfo.js";

/**
 * The outermost mount points at or below `dir` (mountinfo's escapes decoded: a path may hold a space). Only
 * those are detached: MNT_DETACH takes every mount below them along, and their paths are ones ctrexec or
 * containerd made in host-only directories. A deeper mount point's path runs through the mounted trees, which a
 * container may write: unmounting it by path, a container that swapped a directory on the way for a symlink
 * would have ctrexec detach a host mount.
 */
function outermostMountsBelow(dir: string): string[] {
  const all = [...new Set(mountPointsUnder(dir))];
  return all.filter((m) => !all.some((o) => o !== m && m.startsWith(o === "/" ? o : `${o}/`)));
}

interface RemoveTreeAddon {
  removeTree(path: string): Promise<void>;
}

let forceRm = false;

/** Tests: remove with rm(1), as where the addon is not built. */
export function useRmForRemoveTreeForTests(on: boolean): void {
  forceRm = on;
}

/**
 * Without the addon (no C compiler at install): GNU rm. Its removal (gnulib fts) walks with openat/unlinkat on
 * directory fds and O_NOFOLLOW, never by re-resolving a full path, so a container swapping a directory for a
 * symlink cannot redirect it; `--one-file-system` leaves anything mounted below alone (and fails for it).
 */
function removeWithRm(dir: string): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn("rm", ["-rf", "--one-file-system", "--", dir], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-2000)));
    child.on("error", fail);
    child.on("close", (code) => (code === 0 ? done() : fail(new Error(stderr.trim() || `rm exited with ${code}`))));
  });
}

/**
 * The removal alone, without removeTree's check for mounts below (tests: what the walk itself does with a mount
 * it finds). Node-style errors (`code`).
 */
export async function removeTreeFdRelative(dir: string): Promise<void> {
  const addon = nativeAddon() as Partial<RemoveTreeAddon> | null;
  if (!forceRm && addon?.removeTree) await addon.removeTree(resolve(dir));
  else await removeWithRm(resolve(dir));
}

/**
 * Removes a directory a dead process left, whatever it holds, including trees a container may still be writing
 * (an overlay's upper dir whose task could not be deleted). What is still mounted below it is detached first,
 * so the removal never reaches into a filesystem mounted there (a rootfs, a host directory). The removal itself
 * is fd-relative (native/remove-tree.c, on the threadpool): a directory swapped for a symlink between two steps
 * is unlinked as a link, never followed; a mount it finds below anyway is left and reported; any depth; bounded
 * against a live writer. Throws UnknownError when something stays. `detach`: tests make it fail, a fault the
 * kernel gives only in states a test cannot set up on demand.
 */
export async function removeTree(path: string, detach: (target: string) => Promise<void> = unmountDetached): Promise<void> {
  // mountinfo shows real paths: a state dir named through a symlink or relatively would match no mount, and the
  // removal would then reach into a bind mount of the same filesystem (rm's --one-file-system compares devices).
  let dir: string;
  try {
    dir = await realpath(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new UnknownError(`${path} was not removed: ${(err as Error).message}`, { cause: err });
  }
  // Stacked mounts on one point come off one per detach: a few rounds.
  for (let round = 0; round < 8; round++) {
    const outer = outermostMountsBelow(dir);
    if (outer.length === 0) break;
    for (const m of outer) await detach(m).catch(() => {});
  }
  // A mount that would not go (EBUSY, EPERM) must not be walked into: the recursive removal would empty the
  // filesystem mounted there. The directory stays for a later prune.
  const left = mountPointsUnder(dir);
  if (left.length > 0) {
    throw new UnknownError(`${dir} was not removed: ${left.join(", ")} could not be unmounted; unmount it and run ctrexec prune`);
  }
  try {
    await removeTreeFdRelative(dir);
  } catch (err) {
    throw new UnknownError(
      `${dir} was not (entirely) removed: ${(err as Error).message}; if a container still writes to it, stop it; if a mount is left below it, unmount it; then run ctrexec prune`,
      { cause: err },
    );
  }
}
