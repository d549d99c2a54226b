import { closeSync, readlinkSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { fdPath, isErrno, O, openAt, openRoot } from "./in-root.js";
import { fdKind } from "./in-root-fallback.js";

/** Symlinks followed while resolving one path, as in continuity's fs.RootPath and runc's securejoin. */
export const MAX_SYMLINKS = 255;

function components(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

/**
 * Resolves `path` (a path inside the container) to a host path inside `root`, following symlinks as the
 * container would see them: `..` never climbs above the root and absolute link targets restart at the root,
 * so the result is always `root` or below it, and none of its existing components is a symlink. Components
 * that do not exist are kept as they are (the path may be about to be created).
 *
 * A path string only: something that swaps a component for a symlink after we looked can redirect any later
 * use of it. So it is a plan, never the operand of a host-side operation on a tree a container can write (a
 * shared root, a mount source): those go through fds (in-root.ts: openat2 RESOLVE_IN_ROOT, mkdirat, unlinkat,
 * mounts from /proc/self/fd/N). Callers use the result to decide what to do (does the cwd exist, where will the
 * runtime put a mount stub) and then act fd-relative, where a swapped component costs at most a failed step.
 */
export function resolveInRoot(root: string, path: string): string {
  return resolveInRootDetailed(root, path).path;
}

/** An existing component: its name in its parent and an O_PATH fd of it (not a symlink). */
interface Opened {
  name: string;
  fd: number;
  isDir: boolean;
}

/**
 * `resolveInRoot`, also telling whether the resolved path exists (saves the caller another look). Synchronous:
 * a lookup is far cheaper than a round trip through libuv's thread pool, which waits behind other work on a busy
 * machine, and runs resolve several paths on their way to the container (docs/architecture.md, the executor,
 * step 4; docs/performance.md has the figures).
 *
 * Looked up fd-relative, one component at a time: each name is opened O_PATH|O_NOFOLLOW in its parent's fd and
 * a symlink's target is read in that same directory, so the kernel never follows anything. A container that
 * swaps a component for a symlink (even to `/`) while we look changes at most the answer, never where we look:
 * no host path outside the root is ever looked up (no existence oracle, no automount, no hang on a dead
 * network mount of the host).
 */
export function resolveInRootDetailed(root: string, path: string): { path: string; exists: boolean } {
  const base = resolve(root);
  let rootFd: number;
  try {
    rootFd = openRoot(base);
  } catch (err) {
    if (!isErrno(err, "ENOENT", "ENOTDIR")) throw err;
    // No root (yet): nothing below it exists; `..` still stops at it.
    const parts: string[] = [];
    for (const c of components(path)) c === ".." ? parts.pop() : parts.push(c);
    return { path: join(base, ...parts), exists: false };
  }
  /** The existing components below the root, outermost first. */
  const opened: Opened[] = [];
  /** Names below the deepest existing component: nothing below a missing one exists, nothing is looked up. */
  const missing: string[] = [];
  const queue = components(path);
  let links = 0;
  try {
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === "..") {
        if (missing.length > 0) missing.pop();
        else if (opened.length > 0) closeSync(opened.pop()!.fd);
        continue;
      }
      const parent = opened[opened.length - 1];
      if (missing.length > 0 || (parent && !parent.isDir)) {
        missing.push(c);
        continue;
      }
      const dirFd = parent?.fd ?? rootFd;
      let fd: number;
      try {
        fd = openAt(dirFd, c, O.PATH | O.NOFOLLOW);
      } catch (err) {
        if (!isErrno(err, "ENOENT", "ENOTDIR")) throw err;
        missing.push(c);
        continue;
      }
      const { isLink, isDir } = fdKind(fd);
      if (!isLink) {
        opened.push({ name: c, fd, isDir });
        continue;
      }
      closeSync(fd);
      if (++links > MAX_SYMLINKS) {
        throw new InvalidArgumentError(`too many levels of symbolic links resolving ${path} inside ${base}`);
      }
      let target: string;
      try {
        // The link named `c` in the directory fd: /proc/self/fd/N reaches that very directory.
        target = readlinkSync(`${fdPath(dirFd)}/${c}`);
      } catch (err) {
        // Replaced since it was opened: look at the name again (bounded by the link count).
        if (!isErrno(err, "EINVAL", "ENOENT")) throw err;
        queue.unshift(c);
        continue;
      }
      if (isAbsolute(target)) while (opened.length > 0) closeSync(opened.pop()!.fd);
      queue.unshift(...components(target));
    }
  } finally {
    for (const o of opened) closeSync(o.fd);
    closeSync(rootFd);
  }
  const names = [...opened.map((o) => o.name), ...missing];
  return { path: names.length === 0 ? base : join(base, ...names), exists: missing.length === 0 };
}

/** True when `hostPath` is `root` itself or below it (lexically). */
export function isInside(root: string, hostPath: string): boolean {
  const base = resolve(root);
  const p = resolve(hostPath);
  return p === base || p.startsWith(base.endsWith("/") ? base : `${base}/`);
}
