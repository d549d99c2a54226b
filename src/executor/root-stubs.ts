import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmdirSync, unlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Logger, silentLogger } from "../util/logger.js";
import { ownerAlive, ownerId } from "../util/owner.js";
import { MountStubsCleaner } from "./mount-stubs.js";

/*
 * Runs on one writable root share its mount points. A stub that one run's container got (runc made the mount
 * point) may be a mount point of another run's container too, of this executor or of another executor or
 * process with the same state dir, and removing a directory that is a mount point in another mount namespace
 * silently detaches that mount there (Linux ≥ 3.18): the other run would lose its bind mount mid-run. So the
 * stubs of a root are recorded in the state dir with one entry per run in progress on that root, and the last
 * run to leave removes them all:
 *
 *   <state>/roots/<hash of the root's path>/users/<run>   the run's owner (host/pid/starttime)
 *                                           stubs/<hash>  the root's path and a recorded stub's path in it
 *
 * Runs without stubs of their own enter only when the root has a registry (someone's stubs may be their mount
 * points): they check after looking for their own stubs, and a run writes its registry entry before anything
 * of it runs, so a stub that exists by then was made for a run that is registered. Entries of dead owners do
 * not count. Left open: a process stalled for longer than another run's whole creation between its last
 * check and removing a stub.
 *
 * The file operations are synchronous, as everywhere on a run's path (run-dirs.ts): small local files.
 */

/** The registry of a root, by its real path: a root given through a symlink is the same root. */
export function rootRegistryDir(stateDir: string, rootfs: string): string {
  let real: string;
  try {
    real = realpathSync.native(rootfs);
  } catch {
    real = resolve(rootfs);
  }
  return join(rootRegistriesDir(stateDir), createHash("sha256").update(real).digest("hex").slice(0, 16));
}

export function rootRegistriesDir(stateDir: string): string {
  return join(stateDir, "roots");
}

/** A record's file name: the path's hash (paths can be longer than a file name may be). */
const recordName = (p: string) => createHash("sha256").update(p).digest("hex").slice(0, 32);

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // gone already
  }
}

/** Whether a run of a live owner is registered on the root (entries of dead owners are removed on the way). */
function hasLiveUsers(dir: string): boolean {
  let live = false;
  let names: string[];
  try {
    names = readdirSync(join(dir, "users"));
  } catch {
    return false;
  }
  for (const name of names) {
    const path = join(dir, "users", name);
    const owner = readOr(path);
    if (owner !== undefined && ownerAlive(owner.trim()) !== false) live = true;
    else unlinkQuiet(path);
  }
  return live;
}

/** A stub record: the root's path (for prune, which knows no root) and the stub's path in the container. */
function parseRecord(text: string | undefined): { root: string; path: string } | undefined {
  const i = text?.indexOf("\0") ?? -1;
  return text !== undefined && i > 0 ? { root: text.slice(0, i), path: text.slice(i + 1) } : undefined;
}

/**
 * Removes the recorded stubs of a root with no live run on it, then its registry. A run that enters meanwhile
 * keeps the records (it, or whoever leaves last, removes them). Returns whether the registry is gone.
 */
export async function settleRootRegistry(dir: string, logger: Logger = silentLogger): Promise<boolean> {
  if (hasLiveUsers(dir)) return false;
  let names: string[] = [];
  try {
    names = readdirSync(join(dir, "stubs"));
  } catch {
    // no stubs recorded
  }
  const records = names.map((n) => parseRecord(readOr(join(dir, "stubs", n)))).filter((r) => r !== undefined);
  const root = records[0]?.root;
  if (root !== undefined) await MountStubsCleaner.of(root, [...new Set(records.map((r) => r.path))], logger).clean();
  if (hasLiveUsers(dir)) return false;
  for (const n of names) unlinkQuiet(join(dir, "stubs", n));
  try {
    rmdirSync(join(dir, "stubs"));
    rmdirSync(join(dir, "users"));
    rmdirSync(dir);
    return true;
  } catch {
    return false; // a run entered meanwhile: its entries stay, and so does the registry
  }
}

/** A run's entry on a root: `leave()` after the run, which removes the stubs if it was the last run there. */
export interface RootEntry {
  leave(): Promise<void>;
}

/**
 * Registers a run on `rootfs` with the stubs it found (`stubs.recorded`). Returns undefined when there is
 * nothing to protect: no stubs of its own and no registry for the root.
 */
export function enterRoot(stateDir: string, rootfs: string, stubs: MountStubsCleaner, logger: Logger = silentLogger): RootEntry | undefined {
  const dir = rootRegistryDir(stateDir, rootfs);
  if (stubs.recorded.length === 0 && !existsSync(dir)) return undefined;
  const me = join(dir, "users", `${process.pid}-${randomBytes(6).toString("hex")}`);
  // A last run leaving may remove the registry between our mkdir and our writes: try again.
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(join(dir, "users"), { recursive: true, mode: 0o700 });
      mkdirSync(join(dir, "stubs"), { recursive: true, mode: 0o700 });
      writeFileSync(me, ownerId(), { mode: 0o600 });
      for (const p of stubs.recorded) writeFileSync(join(dir, "stubs", recordName(p)), `${resolve(rootfs)}\0${p}`, { mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || attempt >= 3) throw err;
    }
  }
  let left = false;
  return {
    async leave() {
      if (left) return;
      left = true;
      unlinkQuiet(me);
      await settleRootRegistry(dir, logger);
    },
  };
}
