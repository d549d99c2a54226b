import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { nativeAddon } from "../util/native.js";

const run = promisify(execFile);

/** Linux mount flags (linux/mount.h). */
const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  REC: 0x4000,
  SILENT: 0x8000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
} as const;
const MNT_DETACH = 2;
const UMOUNT_NOFOLLOW = 8;

/** mount(8)'s flag options: [flag, set (true) or clear (false)]; everything else is filesystem data. */
const FLAG_OPTIONS: Record<string, [number, boolean]> = {
  async: [MS.SYNCHRONOUS, false],
  atime: [MS.NOATIME, false],
  bind: [MS.BIND, true],
  defaults: [0, true],
  dev: [MS.NODEV, false],
  diratime: [MS.NODIRATIME, false],
  dirsync: [MS.DIRSYNC, true],
  exec: [MS.NOEXEC, false],
  mand: [MS.MANDLOCK, true],
  noatime: [MS.NOATIME, true],
  nodev: [MS.NODEV, true],
  nodiratime: [MS.NODIRATIME, true],
  noexec: [MS.NOEXEC, true],
  nomand: [MS.MANDLOCK, false],
  norelatime: [MS.RELATIME, false],
  nosymfollow: [MS.NOSYMFOLLOW, true],
  symfollow: [MS.NOSYMFOLLOW, false],
  silent: [MS.SILENT, true],
  loud: [MS.SILENT, false],
  nostrictatime: [MS.STRICTATIME, false],
  nosuid: [MS.NOSUID, true],
  rbind: [MS.BIND | MS.REC, true],
  relatime: [MS.RELATIME, true],
  ro: [MS.RDONLY, true],
  rw: [MS.RDONLY, false],
  strictatime: [MS.STRICTATIME, true],
  suid: [MS.NOSUID, false],
  sync: [MS.SYNCHRONOUS, true],
};

/** What mountAt needs of a mount: the shape of containerd's Mount, declared here so that fs/ stays free of containerd. */
export interface MountSource {
  type: string;
  source: string;
  options: readonly string[];
}

/** Propagation options need mount(8)'s separate call; we never pass them, but fall back if someone does. */
const PROPAGATION = /^r?(shared|slave|private|unbindable)$/;

/** Splits mount(8)-style options into mount(2) flags and the filesystem's data string. */
export function parseMountOptions(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAG_OPTIONS[o];
    if (!f) data.push(o);
    else if (f[1]) flags |= f[0];
    else flags &= ~f[0];
  }
  return { flags, data: data.join(",") };
}

/**
 * Mounts `m` on `target`: with mount(2) through the addon when it is built (no process spawned), else with
 * mount(8). `cwd` (relative overlay lowerdirs, see local-mount.ts) always goes through mount(8), since mount(2)
 * would resolve them against this process's working directory.
 */
export async function mountAt(m: MountSource, target: string, cwd?: string): Promise<void> {
  const addon = nativeAddon();
  const isBind = m.type === "bind" || m.type === "rbind";
  const recursive = m.type === "rbind" || m.options.includes("rbind");
  if (addon?.mount && !cwd && !m.options.some((o) => PROPAGATION.test(o))) {
    const { flags, data } = parseMountOptions(m.options);
    if (isBind) {
      await addon.mount(m.source, target, null, MS.BIND | (recursive ? MS.REC : 0), null);
      // A bind mount takes its other flags (ro, nosuid...) only from a remount.
      const rest = flags & ~(MS.BIND | MS.REC);
      if (rest !== 0) await addon.mount(null, target, null, MS.REMOUNT | MS.BIND | rest, null);
    } else {
      await addon.mount(m.source, target, m.type, flags, data || null);
    }
    return;
  }
  const opts = m.options.filter((o) => o !== "rbind" && o !== "bind");
  const args = isBind ? [recursive ? "--rbind" : "--bind"] : ["-t", m.type];
  if (opts.length) args.push("-o", opts.join(","));
  await run("mount", [...args, m.source, target], cwd ? { cwd } : {});
  if (isBind && opts.includes("ro")) await run("mount", ["-o", "remount,bind,ro", target]);
}

/** Detaches the mount on `target` (umount -l): gone from the tree now, freed when no longer busy. */
export async function unmountDetached(target: string): Promise<void> {
  const addon = nativeAddon();
  // UMOUNT_NOFOLLOW: a mount point is never a symlink; one found there was planted, and is not followed.
  if (addon?.umount) await addon.umount(target, MNT_DETACH | UMOUNT_NOFOLLOW);
  else await run("umount", ["-l", target]);
}
