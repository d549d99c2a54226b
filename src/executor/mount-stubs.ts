import { lstat, readdir, rm, rmdir, stat, utimes } from "node:fs/promises";
import { dirname, join, posix, resolve } from "node:path";
import { resolveInRoot, resolveInRootDetailed } from "../fs/root-path.js";
import { type Logger, silentLogger } from "../util/logger.js";

/**
 * The runtime creates empty files and directories in the rootfs as mount points for bind and tmpfs mounts;
 * they must not end up in a committed layer (reference §7). Record, before the run, which mount points do not
 * exist yet; after it, remove those that are still empty stubs, restoring the parents' times.
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
    const stubs: string[] = [];
    const seen = new Set<string>();
    for (const d of ["/etc/resolv.conf", "/etc/hosts", ...destinations]) {
      let p = posix.normalize(posix.join("/", d));
      while (p !== "/" && !seen.has(p)) {
        let exists: boolean;
        try {
          ({ exists } = resolveInRootDetailed(rootfs, p));
        } catch {
          break;
        }
        if (exists) break; // exists before the run: never ours to remove
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
    // Deepest first, so a created parent shared by two stubs (/etc for resolv.conf and hosts) is empty by the
    // time its turn comes.
    const depth = (p: string) => p.split("/").length;
    const ordered = [...this.#stubs].sort((a, b) => depth(b) - depth(a));
    for (const p of ordered) {
      const expected = join(this.#rootfs, p);
      let host: string;
      try {
        // Re-resolve now: the run may have replaced a component with a symlink (GHSA-4v98-7qmw-rqr8).
        host = resolveInRoot(this.#rootfs, p);
      } catch {
        continue;
      }
      if (host !== expected) {
        this.#logger.debug("mount stub path now goes through a symlink; left alone", { path: p });
        continue;
      }
      try {
        const st = await lstat(host);
        if (st.isDirectory()) {
          if ((await readdir(host)).length > 0) continue;
        } else if (!st.isFile() || st.size !== 0) continue;
        const parent = dirname(host);
        let times: { atime: Date; mtime: Date } | undefined;
        try {
          const ps = await stat(parent);
          times = { atime: ps.atime, mtime: ps.mtime };
        } catch {
          // restore nothing
        }
        if (st.isDirectory()) await rmdir(host);
        else await rm(host);
        if (times) await utimes(parent, times.atime, times.mtime).catch(() => {});
      } catch (err) {
        this.#logger.warn("failed to remove mount stub", { path: p, error: err });
      }
    }
  }
}
