import { closeSync, realpathSync } from "node:fs";
import { getSystemErrorName } from "node:util";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { type NativeAddon, nativeAddon } from "../util/native.js";
import { type MountSource, parseMountOptions } from "./mount.js";
import { readMountinfo } from "./mountinfo.js";

/*
 * User namespaces and idmapped mounts for runs in a user namespace, through the native addon (native/idmap.c):
 * util-linux 2.38 and runc 1.1.5 ignore their idmap options, and nothing else gives a mount a user namespace's
 * view of ownership. Everything here needs root and the addon; without the addon it throws
 * FailedPreconditionError, never falls back to a mount that would show the wrong owners.
 */

/** One line of a uid or gid map: `size` ids from `containerId` in the container are `hostId`.. on the host. */
export interface IdMapEntry {
  containerId: number;
  hostId: number;
  size: number;
}

/** A user namespace's maps. The same shape as oci/userns.ts's IdMapping, declared here to keep fs/ a leaf. */
export interface IdMapping {
  uidMap: readonly IdMapEntry[];
  gidMap: readonly IdMapEntry[];
}

/** An open user namespace: `fd` (O_CLOEXEC) is what idmapped mounts are made with. */
export interface UserNamespace {
  /** Throws FailedPreconditionError once closed. */
  readonly fd: number;
  /** Closes the fd; again: nothing. Mounts made with it keep their idmapping. */
  close(): void;
}

/** A host uid and gid to act as (fsuid/fsgid). */
export interface FsIds {
  uid: number;
  gid: number;
}

export interface IdmapMountOptions {
  readonly?: boolean;
  nosuid?: boolean;
  nodev?: boolean;
  noexec?: boolean;
  /** Also the mounts below `source` (each must support idmapping). Default false. */
  recursive?: boolean;
}

/** statvfs(2)'s flags of the mount a path is on. */
export interface MountFlags {
  readonly: boolean;
  nosuid: boolean;
  nodev: boolean;
  noexec: boolean;
}

export type IdmapSupport = { supported: true } | { supported: false; errno: string; reason: string };

/** mount_setattr's MOUNT_ATTR_* (linux/mount.h) and statvfs's ST_* flags: the same four bits. */
const ATTR = { RDONLY: 0x1, NOSUID: 0x2, NODEV: 0x4, NOEXEC: 0x8 } as const;
/** The kernel's limit on lines in a uid_map or gid_map. */
const MAX_MAP_LINES = 340;
const MAX_ID = 0xffff_fffe;

type Addon<K extends keyof NativeAddon> = NativeAddon & Required<Pick<NativeAddon, K>>;

function addonWith<K extends keyof NativeAddon>(...names: K[]): Addon<K> {
  const addon = nativeAddon();
  if (addon && names.every((n) => typeof addon[n] === "function")) return addon as Addon<K>;
  throw new FailedPreconditionError(
    `user namespaces need ctrexec's native addon (${addon ? `it lacks ${names.join(", ")}: rebuild it` : "it is not built"}): run npm run build, which needs a C compiler`,
  );
}

function checkId(value: number, field: string, min = 0): void {
  if (!Number.isInteger(value) || value < min || value > MAX_ID) {
    throw new InvalidArgumentError(`${field} must be an integer from ${min} to ${MAX_ID}, not ${value}`, { field });
  }
}

function checkIds(ids: FsIds, field: string): void {
  checkId(ids.uid, `${field}.uid`);
  checkId(ids.gid, `${field}.gid`);
}

/** A map as the addon's flat triples, checked (the kernel checks overlaps: its refusal is mapped below). */
function flatMap(map: readonly IdMapEntry[], field: string): number[] {
  if (!Array.isArray(map) || map.length === 0 || map.length > MAX_MAP_LINES) {
    throw new InvalidArgumentError(`${field} must have 1 to ${MAX_MAP_LINES} entries`, { field });
  }
  return map.flatMap((e, i) => {
    checkId(e.containerId, `${field}[${i}].containerId`);
    checkId(e.hostId, `${field}[${i}].hostId`);
    checkId(e.size, `${field}[${i}].size`, 1);
    if (e.containerId + e.size - 1 > MAX_ID || e.hostId + e.size - 1 > MAX_ID) {
      throw new InvalidArgumentError(`${field}[${i}] runs past id ${MAX_ID}`, { field: `${field}[${i}].size` });
    }
    return [e.containerId, e.hostId, e.size];
  });
}

function errnoOf(err: unknown): { code?: string; syscall?: string; path?: string } {
  return typeof err === "object" && err !== null ? (err as { code?: string; syscall?: string; path?: string }) : {};
}

/**
 * A new user namespace with these maps, for idmapped mounts. The short-lived process that made it is gone (and
 * reaped) when this resolves. Close it when the mounts are made.
 */
export async function openUserNamespace(mapping: IdMapping): Promise<UserNamespace> {
  const uidMap = flatMap(mapping.uidMap, "uidMap");
  const gidMap = flatMap(mapping.gidMap, "gidMap");
  let fd: number;
  try {
    fd = await addonWith("openUserns").openUserns(uidMap, gidMap);
  } catch (err) {
    const e = errnoOf(err);
    if (e.code === "EINVAL" && e.syscall === "write") {
      const field = e.path?.endsWith("gid_map") ? "gidMap" : "uidMap";
      throw new InvalidArgumentError(`the kernel refused ${field} (overlapping ranges?): ${(err as Error).message}`, { field, cause: err });
    }
    throw err;
  }
  let open = true;
  return {
    get fd() {
      if (!open) throw new FailedPreconditionError("the user namespace was closed");
      return fd;
    },
    close() {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** The filesystem type of the mount `path` is on, from this process's mountinfo; undefined if unknown. */
function fsTypeOf(path: string): string | undefined {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return undefined;
  }
  let best: { len: number; fsType: string } | undefined;
  for (const m of readMountinfo()) {
    const p = m.mountPoint;
    const under = real === p || p === "/" || real.startsWith(`${p}/`);
    // The last of equal length wins: a later mount on the same point hides the earlier.
    if (under && (!best || p.length >= best.len)) best = { len: p.length, fsType: m.fsType };
  }
  return best?.fsType;
}

/** Why an idmapped mount of `path` failed with `code`, in words. */
function idmapRefusal(code: string, path: string): string {
  switch (code) {
    case "ENOSYS":
      return "the kernel has no idmapped mounts (needs Linux 5.12)";
    case "EINVAL":
      // EINVAL also comes from a mount that is idmapped already (the kernel idmaps a mount once).
      return `the filesystem at ${path} (${fsTypeOf(path) ?? "unknown type"}) does not support idmapped mounts, or ${path} is on an idmapped mount already`;
    case "EPERM":
      return `an idmapped mount of ${path} is not permitted (it needs root in the host's user namespace, and a mount not idmapped already)`;
    case "ENOENT":
      return `${path} does not exist`;
    default:
      return `an idmapped mount of ${path} failed with ${code}`;
  }
}

/**
 * Bind-mounts `source` (a directory or a file) on `target` (an existing directory or file), idmapped through
 * `userns`'s maps: an on-disk owner that is a container id of the map shows as its host id (on-disk 0 as the
 * host id of container root), and what is written through it as the map's host ids lands on disk as the
 * container ids. Owners outside the map show as the overflow id (nobody). A filesystem or kernel that refuses
 * idmapped mounts: FailedPreconditionError naming it and why.
 */
export async function mountIdmapped(
  userns: Pick<UserNamespace, "fd">,
  source: string,
  target: string,
  options: IdmapMountOptions = {},
): Promise<void> {
  const attrs =
    (options.readonly ? ATTR.RDONLY : 0) | (options.nosuid ? ATTR.NOSUID : 0) | (options.nodev ? ATTR.NODEV : 0) | (options.noexec ? ATTR.NOEXEC : 0);
  const addon = addonWith("idmapMount");
  try {
    await addon.idmapMount(userns.fd, source, target, attrs, options.recursive ?? false);
  } catch (err) {
    const e = errnoOf(err);
    // ENOSYS from open_tree (< 5.2) or mount_setattr (< 5.12); EINVAL from mount_setattr: the filesystem's no.
    if (e.code === "ENOSYS" || (e.syscall === "mount_setattr" && e.code === "EINVAL")) {
      throw new FailedPreconditionError(`cannot make an idmapped mount of ${source}: ${idmapRefusal(e.code, source)}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Mounts `m` (not a bind: mountIdmapped or mountAt make those) on `target` as a thread whose fsuid/fsgid are
 * `ids`, with its capabilities. An overlay keeps its mounter's credentials for everything it does in its upper
 * and work dirs: on an idmapped upper, host root (fsuid 0, unmapped there) gets EOVERFLOW and the overlay comes
 * up read-only, so one on idmapped layers is mounted as the namespace's root (its host id). Paths in the
 * options must be absolute (mount(2) would resolve relative ones against this process's working directory).
 */
export async function mountAsIds(ids: FsIds, m: MountSource, target: string): Promise<void> {
  checkIds(ids, "ids");
  if (m.type === "bind" || m.type === "rbind" || m.options.includes("bind") || m.options.includes("rbind")) {
    throw new InvalidArgumentError("mountAsIds makes filesystem mounts, not binds", { field: "type" });
  }
  const { flags, data } = parseMountOptions(m.options);
  await addonWith("mountAsIds").mountAsIds(ids.uid, ids.gid, m.source, target, m.type, flags, data || null);
}

function isThenable(v: unknown): boolean {
  return (typeof v === "object" || typeof v === "function") && v !== null && typeof (v as { then?: unknown }).then === "function";
}

/**
 * Runs `fn` on this thread as fsuid/fsgid `ids` with the thread's capabilities (host-side work on an idmapped
 * view: creating a cwd or a mount point through an overlay on idmapped layers, which host root cannot), and
 * puts the thread's ids back before returning or rethrowing. `fn` must be synchronous: code after an await
 * would run later with the process's own ids, so a promise returned is refused (after fn ran).
 */
export function withFsIds<T>(ids: FsIds, fn: () => T): T {
  checkIds(ids, "ids");
  const result = addonWith("withFsIds").withFsIds(ids.uid, ids.gid, fn);
  if (isThenable(result)) {
    throw new InvalidArgumentError("withFsIds takes a synchronous function: what follows an await runs without the ids", { field: "fn" });
  }
  return result;
}

/** The flags of the mount `path` is on, for repeating them on a bind (a user namespace cannot clear them). */
export function mountFlagsOf(path: string): MountFlags {
  const f = addonWith("mountFlags").mountFlags(path);
  return { readonly: (f & ATTR.RDONLY) !== 0, nosuid: (f & ATTR.NOSUID) !== 0, nodev: (f & ATTR.NODEV) !== 0, noexec: (f & ATTR.NOEXEC) !== 0 };
}

/**
 * Whether an idmapped mount of `path` can be made: one is made and dropped before it is attached anywhere. The
 * reason names the filesystem, or the kernel.
 */
export async function probeIdmap(path: string): Promise<IdmapSupport> {
  const errno = await addonWith("probeIdmap").probeIdmap(path);
  if (errno === 0) return { supported: true };
  const code = getSystemErrorName(-errno);
  return { supported: false, errno: code, reason: idmapRefusal(code, path) };
}
