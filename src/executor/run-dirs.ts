import { mkdir, readFile, rm, rmdir, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ownerId } from "../util/owner.js";

/**
 * Per-run state lives in `<state>/runs/<namespace>/<id>/`: the run's own hosts file and local mount point,
 * plus an `owner` file naming the process that made it, so prune can tell a dead run's leftovers from a live
 * run that has not created its container yet.
 */
export function runsDir(stateDir: string, namespace: string): string {
  return join(stateDir, "runs", namespace);
}

export async function createRunDir(stateDir: string, namespace: string, id: string): Promise<string> {
  const dir = join(runsDir(stateDir, namespace), id);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, "owner"), ownerId(), { mode: 0o600 });
  return dir;
}

/**
 * Removes a run dir. Usually it holds only the owner file by now (mount points and hosts files are gone), and
 * two calls do it; `rm -r` walks it with a thread-pool round trip per lstat, readdir and retry (1.2 ms a run).
 */
export async function removeRunDir(dir: string): Promise<void> {
  await unlink(join(dir, "owner")).catch(() => {});
  try {
    await rmdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    await rm(dir, { recursive: true, force: true });
  }
}

export async function readRunOwner(dir: string): Promise<string | undefined> {
  try {
    return (await readFile(join(dir, "owner"), "utf8")).trim();
  } catch {
    return undefined;
  }
}

/** FIFO directories of one namespace, so that namespaces sharing a FIFO root never see each other's. */
export function fifoDir(fifoRoot: string, namespace: string): string {
  return join(fifoRoot, namespace);
}
