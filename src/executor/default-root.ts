import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { FailedPreconditionError } from "../errors.js";
import type { MountRef } from "./types.js";

/**
 * The built-in rootfs is shared by every run that names no root, of every executor and process with this state
 * dir, so no run writes to it: a run gets an overlay whose upper layer lives in its run dir (its cwd, mount
 * points and whatever its command writes) and goes with it. Otherwise one run's `rm -rf /bin`, or a planted
 * `/bin/sh`, would be every later run's root. A run that wants its writes kept names a root of its own.
 */
export function defaultRootOverlay(rootfs: string, runDir: string): MountRef {
  // overlayfs splits its options at ',' and its lower dirs at ':'.
  if (/[,:]/.test(rootfs + runDir)) {
    throw new FailedPreconditionError(`the state dir ${runDir} has a ',' or ':' in its path, which overlayfs cannot take; choose another state dir`);
  }
  const upper = join(runDir, "upper");
  const work = join(runDir, "work");
  mkdirSync(upper, { mode: 0o755 });
  mkdirSync(work, { mode: 0o700 });
  return {
    mounts: [{ type: "overlay", source: "overlay", options: [`lowerdir=${rootfs}`, `upperdir=${upper}`, `workdir=${work}`] }],
    release: async () => {},
  };
}
