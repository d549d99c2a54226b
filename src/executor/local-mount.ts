import { execFile } from "node:child_process";
import { mkdtemp, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Mount } from "../containerd/types.js";
import { UnknownError } from "../errors.js";

const run = promisify(execFile);

/** Where a root's mounts can be read and written from the host, and how to let go of it. */
export interface LocalMount {
  path: string;
  /** True when `path` is the mount source itself (nothing was mounted). */
  inPlace: boolean;
  unmount(): Promise<void>;
}

/**
 * Makes a root's mounts visible on the host (to read /etc/passwd, create the cwd, clean stubs). A single
 * writable bind mount is used in place; anything else is mounted on a private temp dir under `tmpRoot` and always unmounted
 * (lazily) and removed.
 */
export async function mountLocally(mounts: readonly Mount[], tmpRoot: string): Promise<LocalMount> {
  const only = mounts.length === 1 ? mounts[0] : undefined;
  if (only && (only.type === "bind" || only.type === "rbind") && !only.options.includes("ro")) {
    return { path: only.source, inPlace: true, unmount: async () => {} };
  }
  const dir = await mkdtemp(join(tmpRoot, "mount-"));
  const mounted: string[] = [];
  const unmount = async () => {
    for (const target of mounted.reverse()) await run("umount", ["-l", target]).catch(() => {});
    mounted.length = 0;
    await rmdir(dir).catch(() => rm(dir, { recursive: true, force: true }));
  };
  try {
    for (const m of mounts) {
      const opts = m.options.filter((o) => o !== "rbind" && o !== "bind");
      const args = m.type === "bind" || m.type === "rbind" ? ["--rbind"] : ["-t", m.type];
      if (opts.length) args.push("-o", opts.join(","));
      await run("mount", [...args, m.source, dir]);
      mounted.push(dir);
      if ((m.type === "bind" || m.type === "rbind") && opts.includes("ro")) {
        await run("mount", ["-o", "remount,bind,ro", dir]);
      }
    }
  } catch (err) {
    await unmount();
    const detail = (err as { stderr?: string }).stderr?.trim() || (err as Error).message;
    throw new UnknownError(`failed to mount ${dir}: ${detail}`, { cause: err });
  }
  return { path: dir, inPlace: false, unmount };
}
