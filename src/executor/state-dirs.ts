import { constants as fsc } from "node:fs";
import { access, mkdir, realpath } from "node:fs/promises";
import { FailedPreconditionError } from "../errors.js";
import { runsDir } from "./run-dirs.js";

/**
 * Makes the state dir (this namespace's runs under it) and the FIFO root, checks that both are writable, and
 * returns the state dir's real path: runc refuses a rootfs path through a symlink, and mount points are
 * compared as mountinfo shows them.
 */
export async function openStateDirs(root: string, fifoRoot: string, namespace: string): Promise<string> {
  for (const [what, dir] of [
    ["state dir", runsDir(root, namespace)],
    ["FIFO root", fifoRoot],
  ] as const) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await access(dir, fsc.W_OK);
    } catch (err) {
      throw new FailedPreconditionError(`the ${what} ${dir} is not usable: ${(err as Error).message}; choose a writable directory`, { cause: err });
    }
  }
  return realpath(root);
}
