import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Mount } from "../containerd/types.js";
import { FailedPreconditionError } from "../errors.js";
import { mountAt, unmountDetached } from "../fs/mount.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { type LocalMount, mountLocally } from "./local-mount.js";

/*
 * The built-in rootfs is shared by every run that names no root, of every executor and process with this state
 * dir, so no run writes to it: a run gets an overlay whose upper layer lives in its run dir (its cwd, mount
 * points and whatever its command writes) and goes with it. Otherwise one run's `rm -rf /bin`, or a planted
 * `/bin/sh`, would be every later run's root. A run that wants its writes kept names a root of its own.
 */

function overlay(rootfs: string, layers: string): Mount {
  const upper = join(layers, "upper");
  const work = join(layers, "work");
  mkdirSync(upper, { mode: 0o755 });
  mkdirSync(work, { mode: 0o700 });
  return { type: "overlay", source: "overlay", options: [`lowerdir=${rootfs}`, `upperdir=${upper}`, `workdir=${work}`] };
}

/** Mounts the built-in rootfs for one run, copy-on-write, in `runDir`; unmount() undoes all of it. */
export async function mountDefaultRoot(rootfs: string, runDir: string, logger: Logger = silentLogger): Promise<LocalMount> {
  // overlayfs splits its options at ',' and its lower dirs at ':'.
  if (/[,:]/.test(rootfs + runDir)) {
    throw new FailedPreconditionError(`the state dir ${runDir} has a ',' or ':' in its path, which overlayfs cannot take; choose another state dir`);
  }
  try {
    return await mountLocally([overlay(rootfs, runDir)], runDir);
  } catch (err) {
    // overlayfs takes no upper layer on some filesystems (overlayfs itself, as in a container; NFS).
    logger.debug("the state dir cannot hold an overlay's upper layer; using a tmpfs", { dir: runDir, error: err });
  }
  const layers = join(runDir, "layers");
  mkdirSync(layers, { mode: 0o700 });
  await mountAt({ type: "tmpfs", source: "tmpfs", options: ["mode=700"] }, layers);
  try {
    const local = await mountLocally([overlay(rootfs, layers)], runDir);
    return {
      ...local,
      unmount: async () => {
        await local.unmount();
        await unmountDetached(layers).catch(() => {});
      },
    };
  } catch (err) {
    await unmountDetached(layers).catch(() => {});
    throw new FailedPreconditionError(
      `the built-in rootfs runs through an overlay, and overlayfs took neither the state dir nor a tmpfs for its upper layer (${(err as Error).message}); give a root of your own (--rootfs DIR)`,
      { cause: err },
    );
  }
}
