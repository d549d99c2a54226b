import { closeSync, constants as fsc, fstatSync, mkdirSync, openSync, readlinkSync, rmdirSync, unlinkSync } from "node:fs";

/** Whether an O_PATH fd is a symlink or a directory; the fd is closed if fstat fails (the caller owns it otherwise). */
export function fdKind(fd: number): { isLink: boolean; isDir: boolean } {
  try {
    const st = fstatSync(fd);
    return { isLink: st.isSymbolicLink(), isDir: st.isDirectory() };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/*
 * The fd-relative operations of in-root.ts without the native addon (not built: no C compiler), in plain Node:
 * a path through /proc/self/fd/N/<name> reaches <name> in the directory fd N refers to, whatever happened to
 * that directory's own path, so it is openat/mkdirat/unlinkat with a few more path lookups. openat2's
 * RESOLVE_IN_ROOT is done as the addon's fallback walk does it: one component at a time with O_PATH|O_NOFOLLOW,
 * each symlink read and resolved inside the root by us, never by the kernel. Slower (a few µs per component),
 * same guarantees.
 */

const O_PATH = 0o10000000;
const RESOLVE_NO_SYMLINKS = 0x04;
const AT_REMOVEDIR = 0x200;
const MAX_LINKS = 255;
/** Directories held open at once, as in the addon's walk (native/safe-fs.c). */
const MAX_DEPTH = 256;

const at = (dirFd: number, name: string) => `/proc/self/fd/${dirFd}/${name}`;

/**
 * A path's components, the last one keeping a trailing `/` ("a/b/" → ["a", "b/"]): `b/` must be a directory, as
 * for the kernel. `.` and `..` are kept (a `..` after a trailing-slash name is just `..`).
 */
function components(path: string): string[] {
  const parts = path.split("/");
  const out: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const c = parts[i]!;
    if (c === "") continue;
    const trailing = parts.slice(i + 1).every((x) => x === "") && i < parts.length - 1;
    out.push(trailing && c !== "." && c !== ".." ? `${c}/` : c);
  }
  return out;
}

function errno(code: string, syscall: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${syscall} '${path}'`), { code, syscall, path });
}

/** One name in a directory, as the addon requires: no `/`, not `.` or `..` (which would leave the directory). */
function checkName(name: string, syscall: string): void {
  if (name === "" || name.includes("/") || name === "." || name === "..") throw errno("EINVAL", syscall, name);
}

export function openat(dirFd: number, name: string, flags: number, mode: number): number {
  checkName(name, "openat");
  return openSync(at(dirFd, name), flags | fsc.O_NOFOLLOW, mode);
}

export function mkdirat(dirFd: number, name: string, mode: number): void {
  checkName(name, "mkdirat");
  mkdirSync(at(dirFd, name), mode);
}

export function unlinkat(dirFd: number, name: string, flags: number): void {
  checkName(name, "unlinkat");
  if (flags & AT_REMOVEDIR) rmdirSync(at(dirFd, name));
  else unlinkSync(at(dirFd, name));
}

/** openat2(rootFd, path, flags, RESOLVE_IN_ROOT [| RESOLVE_NO_SYMLINKS]); magic links are never followed. */
export function openat2(rootFd: number, path: string, flags: number, _mode: number, resolve: number): number {
  if (flags & fsc.O_CREAT) throw errno("ENOSYS", "openat2", path);
  const stack = [openSync(at(rootFd, "."), O_PATH | fsc.O_DIRECTORY)];
  const top = () => stack[stack.length - 1]!;
  const queue = components(path);
  let links = 0;
  let final: number | undefined;
  try {
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === ".") continue;
      if (c === "..") {
        if (stack.length > 1) closeSync(stack.pop()!);
        continue;
      }
      const last = queue.length === 0;
      // `name/` at the end: as the kernel does, a symlink there is followed and the result must be a directory.
      // (Before the end, a link target's `x/` is just a component that must be a directory anyway.)
      const mustDir = last && c.endsWith("/");
      const name = c.endsWith("/") ? c.slice(0, -1) : c;
      const fd = openSync(at(top(), name), O_PATH | fsc.O_NOFOLLOW);
      const { isLink, isDir } = fdKind(fd);
      if (isLink && !(last && flags & fsc.O_NOFOLLOW && !mustDir)) {
        closeSync(fd);
        if (resolve & RESOLVE_NO_SYMLINKS || ++links > MAX_LINKS) throw errno("ELOOP", "openat2", path);
        let target: string;
        try {
          target = readlinkSync(at(top(), name));
        } catch (err) {
          // Replaced by a non-link since we looked: look at it again (bounded by the link count).
          if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
          queue.unshift(c);
          continue;
        }
        if (target.startsWith("/")) while (stack.length > 1) closeSync(stack.pop()!);
        const parts = components(target);
        // The link's own trailing slash, or the one after it, demands a directory of what it points to.
        const end = parts[parts.length - 1];
        if (mustDir && end !== undefined && !end.endsWith("/") && end !== "." && end !== "..") parts[parts.length - 1] = `${end}/`;
        queue.unshift(...parts);
        continue;
      }
      if (last) {
        if (mustDir && !isDir) {
          closeSync(fd);
          throw errno("ENOTDIR", "openat2", path);
        }
        final = fd;
        break;
      }
      if (!isDir) {
        closeSync(fd);
        throw errno("ENOTDIR", "openat2", path);
      }
      if (stack.length >= MAX_DEPTH) {
        closeSync(fd);
        throw errno("ENAMETOOLONG", "openat2", path);
      }
      stack.push(fd);
    }
    final ??= openSync(at(top(), "."), O_PATH);
  } finally {
    for (const fd of stack) closeSync(fd);
  }
  try {
    const st = fstatSync(final);
    if (flags & fsc.O_DIRECTORY && !st.isDirectory()) throw errno(st.isSymbolicLink() ? "ELOOP" : "ENOTDIR", "openat2", path);
    if (flags & O_PATH) {
      const fd = final;
      final = undefined;
      return fd;
    }
    if (st.isSymbolicLink()) throw errno("ELOOP", "openat2", path);
    // A real open of exactly the object found, through its own fd.
    return openSync(`/proc/self/fd/${final}`, flags & ~fsc.O_NOFOLLOW);
  } finally {
    if (final !== undefined) closeSync(final);
  }
}
