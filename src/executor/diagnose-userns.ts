import { existsSync, readFileSync, realpathSync } from "node:fs";
import { dirname } from "node:path";
import { probeIdmap } from "../fs/idmap.js";
import { type MountInfo, readMountinfo } from "../fs/mountinfo.js";

/** Whether idmapped mounts work on the filesystem holding one directory a userns run maps. */
export interface IdmapCheck {
  /** What the directory is for: "state dir", "default rootfs", "snapshotter overlayfs"… */
  what: string;
  path: string;
  /** The existing directory probed: `path`, or its nearest existing parent when `path` is not made yet. */
  probed: string;
  /** The filesystem type of the mount holding `probed` ("ext4", "xfs"…), "?" when not found in mountinfo. */
  fsType: string;
  supported: boolean;
  /** Why not (errno name and the probe's reason) when not supported. */
  errno?: string;
  reason?: string;
}

/** What `userns: "auto"` or explicit maps need from the host, as `ctrexec info` shows it. */
export interface UsernsDiagnosis {
  /** The kernel can make user namespaces: built with them and not limited to 0 (/proc/sys/user/max_user_namespaces). */
  supported: boolean;
  /** That limit; null where the file does not exist (a kernel without user namespaces). */
  maxUserNamespaces: number | null;
  /** Each directory a userns run mounts idmapped, and whether its filesystem allows it. */
  idmap: IdmapCheck[];
}

function maxUserNamespaces(): number | null {
  try {
    return Number(readFileSync("/proc/sys/user/max_user_namespaces", "utf8").trim());
  } catch {
    return null;
  }
}

/** The nearest existing directory at or above `path`. */
function nearestExisting(path: string): string {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** The type of the filesystem mounted at the deepest mount point holding `path` (symlinks resolved). */
export function filesystemOf(path: string, mounts: readonly MountInfo[]): string {
  let real = path;
  try {
    real = realpathSync(path);
  } catch {
    // Keep the path as given: the longest prefix still names its mount.
  }
  let best: MountInfo | undefined;
  for (const m of mounts) {
    const under = m.mountPoint === "/" || real === m.mountPoint || real.startsWith(`${m.mountPoint}/`);
    // Of mounts stacked on one point, the later line is the one on top.
    if (under && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best?.fsType ?? "?";
}

async function check(what: string, path: string, mounts: readonly MountInfo[]): Promise<IdmapCheck> {
  const probed = nearestExisting(path);
  const base = { what, path, probed, fsType: filesystemOf(probed, mounts) };
  try {
    const r = await probeIdmap(probed);
    return r.supported ? { ...base, supported: true } : { ...base, supported: false, errno: r.errno, reason: r.reason };
  } catch (err) {
    // A diagnosis reports what failed instead of failing (e.g. the native addon is missing).
    const e = err as NodeJS.ErrnoException;
    const errno = typeof e.code === "string" && /^E[A-Z0-9]+$/.test(e.code) ? e.code : "?";
    return { ...base, supported: false, errno, reason: e.message ?? String(err) };
  }
}

/**
 * Whether user namespaces and idmapped mounts work for the directories a userns run maps: `dirs` is what to
 * check, e.g. the state dir (runs' upper dirs, generated files), the default rootfs and snapshotter roots.
 */
export async function diagnoseUserns(dirs: readonly { what: string; path: string }[]): Promise<UsernsDiagnosis> {
  const max = maxUserNamespaces();
  const supported = existsSync("/proc/self/ns/user") && max !== null && max > 0;
  let mounts: MountInfo[] = [];
  try {
    mounts = readMountinfo();
  } catch {
    // No /proc/self/mountinfo: types show as "?".
  }
  const idmap = await Promise.all(dirs.map((d) => check(d.what, d.path, mounts)));
  return { supported, maxUserNamespaces: max, idmap };
}
