import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { removeDir } from "../fs/remove-dir.js";
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

/** Removes a run dir; by now it usually holds only the owner file (mount points and hosts files are gone). */
export function removeRunDir(dir: string): Promise<void> {
  return removeDir(dir, [join(dir, "owner")]);
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
