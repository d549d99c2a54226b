import { fstatSync, futimesSync, type Stats } from "node:fs";
import { posix, relative, resolve } from "node:path";
import { isErrno, O, openAt, openInRoot, openRoot, unlinkAt, withFd } from "../fs/in-root.js";
import { resolveInRootDetailed } from "../fs/root-path.js";
import { type Logger, silentLogger } from "../util/logger.js";

/**
 * The runtime creates empty files and directories in the rootfs as mount points for bind and tmpfs mounts;
 * they must not end up in a committed layer (reference §7). Record, before the run, which mount points do not
 * exist yet; after it, remove those that are still empty stubs, restoring the parents' times.
 *
 * What is recorded is where the runtime will create the stub: the destination resolved inside the root (runc
 * resolves it the same way), so `/var/run/x` with `/var/run -> ../run` is recorded as `/run/x`. Removal is
 * fd-relative: the recorded parent is opened inside the root with no symlink allowed on the way (a component
 * swapped for a symlink during the run leaves the stub alone), and the name is removed in that directory with
 * unlinkat, never through a symlink.
 */
export class MountStubsCleaner {
  readonly #rootfs: string;
  readonly #stubs: string[];
  readonly #logger: Logger;

  private constructor(rootfs: string, stubs: string[], logger: Logger) {
    this.#rootfs = resolve(rootfs);
    this.#stubs = stubs;
    this.#logger = logger;
  }

  /** A cleaner for stubs recorded earlier (root-stubs.ts: by the runs on one root). */
  static of(rootfs: string, stubs: readonly string[], logger: Logger = silentLogger): MountStubsCleaner {
    return new MountStubsCleaner(rootfs, [...stubs], logger);
  }

  /** The container paths that will be removed if they are still stubs after the run, children first. */
  get recorded(): readonly string[] {
    return this.#stubs;
  }

  /**
   * Looks at /etc/resolv.conf, /etc/hosts and each mount destination now, before anything runs. With
   * `recursive`, missing parents are recorded too (after their child), so `/a/b/c` with only `/a` existing
   * records `/a/b/c` then `/a/b`. Paths that exist now are never recorded.
   */
  static async prepare(
    rootfs: string,
    destinations: readonly string[],
    options: { recursive?: boolean; logger?: Logger } = {},
  ): Promise<MountStubsCleaner> {
    return MountStubsCleaner.prepareSync(rootfs, destinations, options);
  }

  /** prepare, synchronously: for work that must run on this thread as another fsuid (fs/idmap.ts withFsIds). */
  static prepareSync(rootfs: string, destinations: readonly string[], options: { recursive?: boolean; logger?: Logger } = {}): MountStubsCleaner {
    const stubs: string[] = [];
    const seen = new Set<string>();
    for (const d of ["/etc/resolv.conf", "/etc/hosts", ...destinations]) {
      let p = posix.normalize(posix.join("/", d));
      while (p !== "/") {
        let resolved: { path: string; exists: boolean };
        try {
          resolved = resolveInRootDetailed(rootfs, p);
        } catch {
          break;
        }
        if (resolved.exists) break; // exists before the run: never ours to remove
        // Where the stub will be: symlinks before it resolved (a resolved path's parent is resolved too).
        p = posix.join("/", relative(resolve(rootfs), resolved.path));
        if (p === "/" || seen.has(p)) break;
        seen.add(p);
        stubs.push(p);
        if (!options.recursive) break;
        p = posix.dirname(p);
      }
    }
    return new MountStubsCleaner(rootfs, stubs, options.logger ?? silentLogger);
  }

  /** Removes recorded stubs that are still empty. Never follows a symlink; never fails (problems are logged). */
  async clean(): Promise<void> {
    this.cleanSync();
  }

  /** clean, synchronously (see prepareSync). */
  cleanSync(): void {
    // Deepest first, so a created parent shared by two stubs (/etc for resolv.conf and hosts) is empty by the
    // time its turn comes.
    const depth = (p: string) => p.split("/").length;
    const ordered = [...this.#stubs].sort((a, b) => depth(b) - depth(a));
    let rootFd: number;
    try {
      rootFd = openRoot(this.#rootfs);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) this.#logger.warn("failed to open the root to remove mount stubs", { root: this.#rootfs, error: err });
      return;
    }
    withFd(rootFd, () => {
      for (const p of ordered) {
        try {
          this.#remove(rootFd, p);
        } catch (err) {
          this.#logger.warn("failed to remove mount stub", { path: p, error: err });
        }
      }
    });
  }

  #remove(rootFd: number, p: string): void {
    let parentFd: number;
    try {
      // No symlink on the way: the run may have replaced a component with one (GHSA-4v98-7qmw-rqr8).
      parentFd = openInRoot(rootFd, posix.dirname(p), O.RDONLY | O.DIRECTORY, { noSymlinks: true });
    } catch (err) {
      if (isErrno(err, "ELOOP", "EXDEV")) this.#logger.debug("mount stub path now goes through a symlink; left alone", { path: p });
      else if (!isErrno(err, "ENOENT", "ENOTDIR")) throw err;
      return;
    }
    withFd(parentFd, () => {
      const name = posix.basename(p);
      let st: Stats;
      try {
        st = withFd(openAt(parentFd, name, O.PATH | O.NOFOLLOW), (fd) => fstatSync(fd));
      } catch (err) {
        if (isErrno(err, "ENOENT")) return;
        throw err;
      }
      // An empty directory (rmdir refuses any other) or an empty regular file; never a symlink or anything else.
      if (!st.isDirectory() && !(st.isFile() && st.size === 0)) return;
      const parent = fstatSync(parentFd);
      try {
        unlinkAt(parentFd, name, st.isDirectory());
      } catch (err) {
        if (isErrno(err, "ENOTEMPTY", "EEXIST", "ENOENT", "EBUSY")) return; // has content now, or in use
        throw err;
      }
      try {
        futimesSync(parentFd, parent.atime, parent.mtime);
      } catch {
        // the times are cosmetic
      }
    });
  }
}
