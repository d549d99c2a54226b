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
 * The temporary name a run dir is made under: `.new.<owner, base64url>.<12 hex>`. The owner is in the name, so
 * the directory names its owner from the instant it exists: prune, which removes what dead owners left, can
 * never take a live creator's directory for an ownerless leftover in the moment before its owner file is
 * written. (An owner id is at most ~175 bytes: hostname ≤ 64, numbers, a boot id and two `dev:ino`; the name
 * stays within NAME_MAX. Names of older versions, `.new-<id>-<hex>`, are judged by their owner file.)
 */
function stagingName(owner: string): string {
  return `.new.${Buffer.from(owner, "utf8").toString("base64url")}.${hex()}`;
}

const STAGING = /^\.new\.([A-Za-z0-9_-]+)\.[0-9a-f]{12}$/;

/**
 * The owner of an entry of a runs dir: of a run dir being made, the one its name gives (see stagingName);
 * otherwise the one its owner file names; undefined when there is none (or it cannot be read).
 */
export async function runEntryOwner(runs: string, name: string): Promise<string | undefined> {
  const staged = STAGING.exec(name);
  if (staged) return Buffer.from(staged[1]!, "base64url").toString("utf8");
  return readRunOwner(join(runs, name));
}

/** Tests: called between the steps of createRunDir, where a concurrent prune may look. */
export interface RunDirHooks {
  /** The temporary dir exists, its owner file not yet. */
  staged?(tmp: string): void | Promise<void>;
}

/**
 * Makes the run dir of `id`, whole: it is made under a temporary name that names its owner, gets its owner
 * file and is renamed into place, so it never exists without an owner and is never made twice. A run dir of
 * `id` whose owner is alive (a run of another executor or process with the same id) is theirs:
 * AlreadyExistsError, before anything else is made. One whose owner is dead, a crash's leftover, is removed
 * first.
 *
 * The common path is synchronous, as are the other small file operations on a run's way to its container
 * (user lookup, resolv.conf, cwd): each is far cheaper than a thread-pool round trip (the worker's wake-up),
 * and a run makes a dozen of them (docs/performance.md has the figures).
 */
export async function createRunDir(stateDir: string, namespace: string, id: string, hooks?: RunDirHooks): Promise<string> {
  const runs = runsDir(stateDir, namespace);
  const dir = join(runs, id);
  const owner = ownerId();
  // Container ids never start with a dot, so these names never collide with a run's; prune finds them too.
  const tmp = join(runs, stagingName(owner));
  try {
    mkdirSync(tmp, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(runs, { recursive: true, mode: 0o700 });
    mkdirSync(tmp, { mode: 0o700 });
  }
  try {
    if (hooks?.staged) await hooks.staged(tmp);
    writeFileSync(join(tmp, "owner"), owner, { mode: 0o600 });
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(tmp, dir);
        return dir;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOTEMPTY" && code !== "EEXIST") || attempt > 0) throw err;
      }
      const theirs = await readRunOwner(dir);
      if (theirs !== undefined && ownerAlive(theirs) !== false) {
        throw new AlreadyExistsError(`container ${id} already exists: its run dir ${dir} belongs to a run of process ${theirs}`);
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
