import { randomBytes } from "node:crypto";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { AlreadyExistsError } from "../errors.js";
import { removeDir } from "../fs/remove-dir.js";
import { removeTree } from "../fs/remove-tree.js";
import { ownerAlive, ownerId } from "../util/owner.js";

/**
 * Per-run state lives in `<state>/runs/<namespace>/<id>/`: the run's own hosts file and local mount point,
 * plus an `owner` file naming the process that made it, so prune can tell a dead run's leftovers from a live
 * run that has not created its container yet.
 */
export function runsDir(stateDir: string, namespace: string): string {
  return join(stateDir, "runs", namespace);
}

const hex = () => randomBytes(6).toString("hex");

/**
 * Makes the run dir of `id`, whole: it is made under a temporary name with its owner file and renamed into
 * place, so it never exists without an owner and is never made twice. A run dir of `id` whose owner is alive
 * (a run of another executor or process with the same id) is theirs: AlreadyExistsError, before anything else
 * is made. One whose owner is dead, a crash's leftover, is removed first.
 *
 * The common path is synchronous, as are the other small file operations on a run's way to its container
 * (user lookup, resolv.conf, cwd): each takes microseconds, while a thread-pool round trip takes 0.3–0.6 ms
 * on a busy machine (the worker's wake-up), and a run makes a dozen of them (docs/performance.md).
 */
export async function createRunDir(stateDir: string, namespace: string, id: string): Promise<string> {
  const runs = runsDir(stateDir, namespace);
  const dir = join(runs, id);
  // Container ids never start with a dot, so these names never collide with a run's; prune finds them too.
  const tmp = join(runs, `.new-${id}-${hex()}`);
  try {
    mkdirSync(tmp, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(runs, { recursive: true, mode: 0o700 });
    mkdirSync(tmp, { mode: 0o700 });
  }
  try {
    writeFileSync(join(tmp, "owner"), ownerId(), { mode: 0o600 });
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(tmp, dir);
        return dir;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOTEMPTY" && code !== "EEXIST") || attempt > 0) throw err;
      }
      const owner = await readRunOwner(dir);
      if (owner !== undefined && ownerAlive(owner) !== false) {
        throw new AlreadyExistsError(`container ${id} already exists: its run dir ${dir} belongs to a run of process ${owner}`);
      }
      await removeTree(dir);
    }
  } catch (err) {
    await removeDir(tmp, [join(tmp, "owner")]);
    throw err;
  }
}

/** Removes a run dir; by now it usually holds only the owner file (mount points and hosts files are gone). */
export function removeRunDir(dir: string): Promise<void> {
  return removeDir(dir, [join(dir, "owner")]);
}

/**
 * Moves a finished run's dir out of its id's way (one rename, so the id can be used again at once) and
 * returns where it went, for removal off the run's path; undefined when it was gone already.
 */
export function retireRunDir(dir: string): string | undefined {
  const to = join(dirname(dir), `.retired-${basename(dir)}-${hex()}`);
  try {
    renameSync(dir, to);
    return to;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
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
