import { createRequire } from "node:module";

/**
 * The small N-API addon (native/*.c, built by scripts/build-native.mjs): syscalls Node has no binding for.
 * Every function but the user-namespace ones has a slower fallback where it is used, so a missing addon costs
 * speed; a run in a user namespace needs it (idmapped mounts have no command-line tool here), and says so.
 */
export interface NativeAddon {
  mkfifo(path: string, mode: number): void;
  /** fcntl(F_SETPIPE_SZ): the size granted, or -errno. */
  setPipeSize?(fd: number, bytes: number): number;
  /** malloc_trim(0) where glibc has it. */
  trimHeap?(): boolean;
  /** mount(2) on the threadpool. */
  mount?(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  /** umount2(2) on the threadpool. */
  umount?(target: string, flags: number): Promise<void>;
  /**
   * A new user namespace with these maps (flat [containerId, hostId, size, ...] triples), made by a short-lived
   * child that is reaped before this settles: its fd (O_CLOEXEC, the caller closes it). Threadpool.
   */
  openUserns?(uidMap: number[], gidMap: number[]): Promise<number>;
  /** open_tree(CLONE) + mount_setattr(MOUNT_ATTR_IDMAP | attrs) + move_mount on the threadpool. `attrs`: MOUNT_ATTR_RDONLY|NOSUID|NODEV|NOEXEC. */
  idmapMount?(usernsFd: number, source: string, target: string, attrs: number, recursive: boolean): Promise<void>;
  /** mount(2) by a threadpool thread with this fsuid/fsgid and its effective capabilities raised; put back after. */
  mountAsIds?(
    uid: number,
    gid: number,
    source: string | null,
    target: string,
    fstype: string | null,
    flags: number,
    data: string | null,
  ): Promise<void>;
  /** Calls `fn` (synchronous) on this thread with this fsuid/fsgid and its effective capabilities raised; put back after, also on a throw. */
  withFsIds?<T>(uid: number, gid: number, fn: () => T): T;
  /** statvfs(2)'s ST_RDONLY (1) | ST_NOSUID (2) | ST_NODEV (4) | ST_NOEXEC (8) bits of `path`'s mount. */
  mountFlags?(path: string): number;
  /** flock(2), blocking unless LOCK_NB. */
  flock?(fd: number, op: number): void;
  /** 0 when `path` can be idmapped, else the errno that refused it (ENOSYS, EINVAL, EPERM...). Threadpool. */
  probeIdmap?(path: string): Promise<number>;
}

let addon: NativeAddon | null | undefined;

/** The addon, or null when it is not built. Loaded once. */
export function nativeAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  try {
    const require = createRequire(import.meta.url);
    // dist/src/util/native.js → build/Release at the package root.
    addon = require("../../../build/Release/ctrexec_fifo.node") as NativeAddon;
  } catch {
    addon = null;
  }
  return addon;
}
