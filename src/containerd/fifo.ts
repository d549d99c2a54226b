import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { nativeAddon } from "../util/native.js";

/**
 * mkfifo for Node, which has no binding for it. The primary path is a ~60-line N-API addon (native/fifo.c,
 * built by scripts/build.mjs with node-gyp): one syscall per FIFO, microseconds. Spawning mkfifo(1) instead
 * costs ~10 ms per run (~20 ms under load), about 5% of a whole run, so it is only the fallback for installs
 * where the addon could not be built, and it creates a whole FIFO set with one spawn.
 */

/** Which implementation makeFifos uses by default: "native" (the addon) or "spawn" (mkfifo(1)). */
export function fifoImplementation(): "native" | "spawn" {
  return nativeAddon() ? "native" : "spawn";
}

const execFileAsync = promisify(execFile);

/** Creates a FIFO at each path (mode 0600 unless given). Fails if any path exists. */
export async function makeFifos(paths: readonly string[], options: { mode?: number; implementation?: "native" | "spawn" } = {}): Promise<void> {
  const mode = options.mode ?? 0o600;
  const impl = options.implementation ?? fifoImplementation();
  const addon = impl === "native" ? nativeAddon() : null;
  if (impl === "native" && !addon) throw new Error("the native mkfifo addon is not built (run npm run build)");
  if (addon) {
    for (const p of paths) addon.mkfifo(p, mode);
    return;
  }
  if (paths.length === 0) return;
  await execFileAsync("mkfifo", ["-m", mode.toString(8), "--", ...paths]);
}

/**
 * Grows a FIFO's buffer (default 64 KiB) so the shim can hand over bulk output in fewer, larger writes.
 * Best effort: without the addon, or past the limit in /proc/sys/fs/pipe-max-size, the size stays as it was.
 * Returns the size in effect, or 0 when unknown.
 */
export function growPipe(fd: number, bytes: number): number {
  const got = nativeAddon()?.setPipeSize?.(fd, bytes) ?? -1;
  return Math.max(got, 0);
}
