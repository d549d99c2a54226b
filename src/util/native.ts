import { createRequire } from "node:module";

/**
 * The small N-API addon (native/*.c, built by scripts/build-native.mjs): syscalls Node has no binding for.
 * Every function has a slower fallback where it is used, so a missing addon costs speed, never function.
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
