import { closeSync, constants as fsc, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { nativeAddon } from "../util/native.js";
import * as jsFallback from "./in-root-fallback.js";

/*
 * fd-relative file operations on trees a container can write while ctrexec works on them (a rootfs shared by
 * concurrent runs, a mount source shared with another container). A path string checked and then used can be
 * redirected in between by swapping a component for a symlink; an fd cannot. So every host-side operation on
 * such a tree starts from an fd of the root, resolves inside it with openat2(RESOLVE_IN_ROOT) (symlinks,
 * absolute or climbing with `..`, stay inside the root; magic links are never followed), and acts on the name
 * in an opened parent (mkdirat, unlinkat) or on the object's own fd (fstat, fchmod, fchown, a mount from
 * /proc/self/fd/N). Nothing is opened for reading before its type is known (O_PATH first): a device node or a
 * FIFO in a rootfs is never opened by this root process.
 *
 * Synchronous, like the rest of the run path's small file work (root-path.ts): these are syscalls of
 * microseconds. The errors are Node-style (`code`: "ENOENT", "ELOOP"...), for the callers to map to their own.
 */

/** open(2) flags Node's constants lack. */
export const O_PATH = 0o10000000;
export const O = {
  RDONLY: fsc.O_RDONLY,
  PATH: O_PATH,
  DIRECTORY: fsc.O_DIRECTORY,
  NOFOLLOW: fsc.O_NOFOLLOW,
  NONBLOCK: fsc.O_NONBLOCK,
  NOCTTY: fsc.O_NOCTTY,
  CREAT: fsc.O_CREAT,
  EXCL: fsc.O_EXCL,
  WRONLY: fsc.O_WRONLY,
} as const;

/** openat2's resolve flags (linux/openat2.h). */
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_IN_ROOT = 0x10;
const AT_REMOVEDIR = 0x200;

interface SafeFsAddon {
  openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number;
  openat(dirfd: number, path: string, flags: number, mode: number): number;
  mkdirat(dirfd: number, name: string, mode: number): void;
  unlinkat(dirfd: number, name: string, flags: number): void;
  setOpenat2Walk(on: boolean): void;
  openat2EagainCount(): number;
}

/** The addon's functions, or their plain-Node equivalents (in-root-fallback.ts) where it is not built. */
const fallback: SafeFsAddon = { ...jsFallback, setOpenat2Walk: () => {}, openat2EagainCount: () => 0 };
let forceFallback = false;

function addon(): SafeFsAddon {
  const a = nativeAddon() as Partial<SafeFsAddon> | null;
  if (forceFallback || !a?.openat2 || !a.openat || !a.mkdirat || !a.unlinkat || !a.setOpenat2Walk || !a.openat2EagainCount) {
    return fallback;
  }
  return a as SafeFsAddon;
}

/** Whether an error is a system error with this errno name. */
export function isErrno(err: unknown, ...codes: string[]): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && codes.includes(code);
}

/** An O_PATH fd of the root directory itself (the caller's path: the root is chosen by the host, not a container). */
export function openRoot(root: string): number {
  return openSync(root, O_PATH | fsc.O_DIRECTORY);
}

/**
 * Opens `path` below the directory `rootFd` as if it were `/`: symlinks resolve inside it, `..` stops at it,
 * magic links (/proc/…/fd) are refused. Without openat2 (Linux < 5.6, or refused by a seccomp filter; also for
 * a call where openat2 keeps failing with EAGAIN, which it does for `..` while anything renames on the host) the
 * addon walks the path with O_PATH|O_NOFOLLOW fds, resolving each symlink itself, with the same result (so does
 * in-root-fallback.ts without the addon). `noSymlinks`: any symlink on the way is an error (ELOOP), for paths
 * that must be exactly what was recorded.
 */
export function openInRoot(rootFd: number, path: string, flags: number, options: { noSymlinks?: boolean } = {}): number {
  const resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (options.noSymlinks ? RESOLVE_NO_SYMLINKS : 0);
  return addon().openat2(rootFd, path === "" ? "." : path, flags, 0, resolve);
}

/**
 * openat(2) of one name in an opened directory, always O_NOFOLLOW (a symlink there is ELOOP, or the link itself
 * with O_PATH). A name with `/`, or `.`/`..`, is EINVAL: it would reach beyond that directory.
 */
export function openAt(dirFd: number, name: string, flags: number, mode = 0): number {
  return addon().openat(dirFd, name, flags | O.NOFOLLOW, mode);
}

/** mkdirat(2) of one name (EINVAL for `/`, `.`, `..`, as openAt). */
export function mkdirAt(dirFd: number, name: string, mode: number): void {
  addon().mkdirat(dirFd, name, mode);
}

/** unlinkat(2): removes the name in `dirFd` itself, never what a symlink there points to (one name, as openAt). */
export function unlinkAt(dirFd: number, name: string, isDir: boolean): void {
  addon().unlinkat(dirFd, name, isDir ? AT_REMOVEDIR : 0);
}

/**
 * Tests: "openat2" (the default where the addon is built), "walk" (the addon's fd walk, for kernels without
 * openat2), or "node" (no addon: in-root-fallback.ts).
 */
export function useInRootImplementationForTests(which: "openat2" | "walk" | "node"): void {
  forceFallback = false;
  addon().setOpenat2Walk(which === "walk");
  forceFallback = which === "node";
}

/** Tests: how many openat2 calls met EAGAIN (and were retried or walked), to know a rename race was met. */
export function openat2EagainCountForTests(): number {
  return addon().openat2EagainCount();
}

/** Runs `fn` with `fd` and closes it however `fn` ends. */
export function withFd<T>(fd: number, fn: (fd: number) => T): T {
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** The path through which the kernel reaches exactly the object `fd` refers to (for a mount or a reopen). */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** Thrown by readRegularFile for a file larger than its limit. */
export class FileTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`larger than ${limit} bytes`);
  }
}

/**
 * Reads the regular file an O_PATH fd refers to, which the caller has fstat'ed: reopened through
 * /proc/self/fd/N for reading, which reaches that very inode (O_NONBLOCK|O_NOCTTY all the same, and the type
 * and identity are checked again on the new fd). At most `maxBytes`, else FileTooLargeError.
 */
export function readRegularFile(pathFd: number, checked: Stats, maxBytes: number): Buffer {
  if (!checked.isFile()) throw Object.assign(new Error("not a regular file"), { code: "EINVAL" });
  return withFd(openSync(fdPath(pathFd), fsc.O_RDONLY | fsc.O_NOCTTY | fsc.O_NONBLOCK), (fd) => {
    const st = fstatSync(fd);
    if (!st.isFile() || st.ino !== checked.ino || st.dev !== checked.dev) {
      throw Object.assign(new Error("the file changed while it was opened"), { code: "ESTALE" });
    }
    if (st.size > maxBytes) throw new FileTooLargeError(maxBytes);
    let buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
      if (n > maxBytes) throw new FileTooLargeError(maxBytes);
      // Grown since the fstat: read on, up to the limit.
      if (n === buf.length) buf = Buffer.concat([buf, Buffer.alloc(Math.min(buf.length, maxBytes + 1 - n))]);
    }
    return buf.subarray(0, n);
  });
}
