import { execFile } from "node:child_process";
import { open, rm } from "node:fs/promises";
import { promisify } from "node:util";
import { UnknownError } from "../errors.js";
import { unmountDetached } from "../fs/mount.js";

const run = promisify(execFile);

/**
 * A named network namespace: an empty file with the namespace's nsfs bind-mounted on it (what `ip netns add`
 * does under /run/netns, here under our state dir). Node cannot unshare a namespace for a path itself without
 * poisoning one of its threads, so util-linux's unshare(1) makes it: a process spawn, which the bridge provider's
 * pool of ready namespaces keeps off the run's path.
 */
export async function createNetns(path: string): Promise<void> {
  const fh = await open(path, "wx", 0o600);
  await fh.close();
  try {
    await run("unshare", [`--net=${path}`, "true"]);
  } catch (err) {
    await rm(path, { force: true });
    const detail = (err as { stderr?: string }).stderr?.trim() || (err as Error).message;
    throw new UnknownError(`failed to create a network namespace at ${path}: ${detail}`, { cause: err });
  }
}

/** Unmounts (lazily: a process may still hold it) and removes a named network namespace. Idempotent. */
export async function destroyNetns(path: string): Promise<void> {
  await unmountDetached(path).catch(() => {});
  await rm(path, { force: true });
}
