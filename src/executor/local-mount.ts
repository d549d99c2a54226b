import { mkdtempSync } from "node:fs";
import { rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Mount } from "../containerd/types.js";
import { UnknownError } from "../errors.js";
import { mountAt, unmountDetached } from "../fs/mount.js";

/** Mount options beyond ~3.5 KiB (each option plus a comma) no longer fit the page the kernel copies them into. */
export function tooLongForTheKernel(m: { type: string; options: readonly string[] }): boolean {
  return m.type === "overlay" && m.options.reduce((n, o) => n + o.length + 1, 0) >= 4096 - 512;
}

/**
 * Long overlay lowerdir chains do not fit the one page the kernel copies mount options into. Like containerd's
 * mounter, mount from the lowerdirs' common parent with relative paths (mount(8) runs with that cwd).
 */
export function compactLowerdirs(options: readonly string[]): { options: string[]; cwd?: string } {
  const i = options.findIndex((o) => o.startsWith("lowerdir="));
  if (i < 0) return { options: [...options] };
  const dirs = options[i]!.slice("lowerdir=".length).split(":");
  if (dirs.length < 2 || !dirs.every((d) => d.startsWith("/"))) return { options: [...options] };
  let common = dirname(dirs[0]!);
  while (common !== "/" && !dirs.every((d) => d.startsWith(`${common}/`))) common = dirname(common);
  if (common === "/") return { options: [...options] };
  const out = [...options];
  out[i] = `lowerdir=${dirs.map((d) => d.slice(common.length + 1)).join(":")}`;
  return { options: out, cwd: common };
}

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
  const dir = mkdtempSync(join(tmpRoot, "mount-"));
  const mounted: string[] = [];
  const unmount = async () => {
    let failure: unknown;
    for (const target of mounted.reverse()) await unmountDetached(target).catch((err: unknown) => (failure ??= err));
    mounted.length = 0;
    // Still mounted: the directory is the root's own tree, and a recursive removal would empty it. Left for
    // prune, which detaches before it removes (remove-tree.ts).
    if (failure !== undefined) throw new UnknownError(`failed to unmount ${dir}: ${(failure as Error).message}`, { cause: failure });
    await rmdir(dir).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    });
  };
  try {
    for (const m of mounts) {
      // Only what would not fit is compacted: relative lowerdirs need mount(8) run in their parent directory.
      const { options, cwd } = tooLongForTheKernel(m) ? compactLowerdirs(m.options) : { options: [...m.options], cwd: undefined };
      await mountAt({ ...m, options }, dir, cwd);
      mounted.push(dir);
    }
  } catch (err) {
    await unmount();
    const detail = (err as { stderr?: string }).stderr?.trim() || (err as Error).message;
    throw new UnknownError(`failed to mount ${dir}: ${detail}`, { cause: err });
  }
  return { path: dir, inPlace: false, unmount };
}
