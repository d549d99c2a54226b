import { randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { withFileLock } from "../fs/file-lock.js";
import { ID_LIMIT, RANGE_SIZE } from "../oci/userns.js";
import type { Logger } from "../util/logger.js";
import { ownerAlive, ownerId } from "../util/owner.js";

/*
 * "auto" user namespace ranges: 65536 uids and 65536 gids per run, from a pool, never the same ids to two live
 * runs, across executors and processes on the host (whatever their state dirs), and never ids that a run with
 * explicit maps holds (claimMapping records those too). The table is `<base>/userns/ranges.json` (the executor's
 * base is HOST_RANGES_BASE); every read-modify-write holds an flock on `<base>/userns/lock`, and every write
 * replaces the file by a rename, so a reader without the lock (listRanges) sees a whole table. A range is
 * released by its run (RangeClaim.release) or, when its process died, by prune once the run can no longer be
 * running (pruneRanges).
 */

/** A pool of host ids (uids or gids): ranges are taken from `start` in steps of 65536. */
export interface RangePool {
  start: number;
  size: number;
}

export interface ResolvedPools {
  uid: RangePool;
  gid: RangePool;
  /**
   * For `{ subuid: user }`: the names that user's /etc/subuid and /etc/subgid lines go by (its name and uid). The
   * pool is that user's on purpose; any other user's range overlapping it is refused (checkAgainstAccounts).
   */
  delegatedTo?: readonly string[];
}

/** 1024 ranges from 0x10000000 (268435456): far above any id useradd hands out (or /etc/subuid's 100000…). */
export const DEFAULT_POOL: RangePool = Object.freeze({ start: 0x10000000, size: RANGE_SIZE * 1024 });

const FIELD = "userns.pool";

/**
 * No range may include a host id below 65536: that is where systems keep root, service accounts, login users
 * (login.defs' UID_MAX is 60000) and nobody (65534). A container whose ids were theirs would be those accounts
 * on the host: its files theirs, its processes able to signal theirs. So a pool starts at 65536 at the lowest,
 * and ends before 2^32-1, the invalid id -1.
 */
function checkPool(pool: RangePool, what: string, exact: boolean): RangePool {
  const { start, size } = pool;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(size)) {
    throw new InvalidArgumentError(`${what}: start and size must be whole numbers, not ${JSON.stringify(pool)}`, { field: FIELD });
  }
  if (start < RANGE_SIZE) {
    throw new InvalidArgumentError(
      `${what}: start ${start} is below 65536: the host's own accounts (root, services, users, nobody) live there, and a run's ids must never be theirs`,
      { field: FIELD },
    );
  }
  if (size < RANGE_SIZE || (exact && size % RANGE_SIZE !== 0)) {
    throw new InvalidArgumentError(`${what}: size ${size} must be ${exact ? "a multiple of 65536 and " : ""}at least 65536 (one run's range)`, {
      field: FIELD,
    });
  }
  if (start + size > ID_LIMIT) {
    throw new InvalidArgumentError(`${what}: start + size (${start + size}) passes ${ID_LIMIT}: the last usable id is ${ID_LIMIT - 1}`, {
      field: FIELD,
    });
  }
  return { start, size };
}

function readText(path: string, why: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidArgumentError(`${path} cannot be read (${(err as Error).message}): ${why}`, { field: FIELD, cause: err });
  }
}

/** The names an /etc/subuid line may give the user by: its name, and its uid when /etc/passwd knows the user. */
function userKeys(user: string, passwdPath: string): Set<string> {
  const keys = new Set([user]);
  let passwd = "";
  try {
    passwd = readFileSync(passwdPath, "utf8");
  } catch {
    // No passwd file: the user is named as given.
  }
  for (const line of passwd.split("\n")) {
    const [name, , uid] = line.split(":");
    if (name === undefined || uid === undefined || !/^\d+$/.test(uid)) continue;
    if (name === user) keys.add(uid);
    else if (uid === user) keys.add(name); // given as a uid: its name's lines count too
  }
  return keys;
}

/**
 * A number of a subuid/subgid line as shadow reads it (strtoul, base 0; newuidmap and libsubid go by that reading):
 * leading blanks and a `+`, then `0x` hex, `0` octal or decimal digits; what follows the digits is ignored.
 */
function subidNumber(field: string): number | undefined {
  const m = /^\s*\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))/.exec(field);
  if (!m) return undefined;
  const n = m[1] !== undefined ? Number.parseInt(m[1], 16) : m[2] !== undefined ? Number.parseInt(m[2], 8) : Number(m[3]);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** An /etc/subuid or /etc/subgid line: `owner:start:count` (a fourth field is ignored, as shadow ignores it). */
function subidLine(line: string): { owner: string; start: number; size: number } | undefined {
  if (/^\s*(#|$)/.test(line)) return undefined;
  const [owner, start, size] = line.split(":");
  if (!owner || start === undefined || size === undefined) return undefined;
  const s = subidNumber(start);
  const n = subidNumber(size);
  return s === undefined || n === undefined ? undefined : { owner, start: s, size: n };
}

/** The user's largest range in a subuid/subgid file, as a pool of whole 65536-id ranges. */
function subordinatePool(path: string, user: string, keys: Set<string>): RangePool {
  const text = readText(path, `it must give user ${JSON.stringify(user)} a range of at least 65536 ids (usermod --add-subuids / --add-subgids)`);
  let best: RangePool | undefined;
  for (const line of text.split("\n")) {
    const e = subidLine(line);
    if (!e || !keys.has(e.owner)) continue;
    if (!best || e.size > best.size) best = { start: e.start, size: e.size };
  }
  if (!best) {
    throw new InvalidArgumentError(
      `${path} has no range for user ${JSON.stringify(user)}: add one of at least 65536 ids (usermod --add-subuids / --add-subgids)`,
      {
        field: FIELD,
      },
    );
  }
  const end = best.start + best.size - 1;
  if (best.size < RANGE_SIZE) {
    throw new InvalidArgumentError(
      `${path}: the largest range of user ${JSON.stringify(user)} is ${best.size} ids (${best.start}-${end}); a run needs 65536: give the user a larger one`,
      { field: FIELD },
    );
  }
  // Whole ranges only: the tail short of 65536 ids is never used.
  return checkPool(
    { start: best.start, size: best.size - (best.size % RANGE_SIZE) },
    `${path}: the range ${best.start}-${end} of user ${JSON.stringify(user)}`,
    false,
  );
}

/**
 * The uid and gid pools of an executor's `userns.pool` option: the default pool; `{ start, size }` for both
 * uids and gids; or `{ subuid: user }`, the user's largest range in /etc/subuid and in /etc/subgid (lines by
 * name, or by uid when /etc/passwd has the user). Throws InvalidArgumentError (field `userns.pool`) naming the
 * value or the file. `files` lets tests use other files.
 */
export function resolvePools(
  option: { start: number; size: number } | { subuid: string } | undefined,
  files: { subuid: string; subgid: string; passwd?: string } = { subuid: "/etc/subuid", subgid: "/etc/subgid" },
): ResolvedPools {
  if (option === undefined) return { uid: { ...DEFAULT_POOL }, gid: { ...DEFAULT_POOL } };
  if (typeof option !== "object" || option === null) {
    throw new InvalidArgumentError(`userns.pool must be { start, size } or { subuid: user }, not ${JSON.stringify(option)}`, { field: FIELD });
  }
  if ("subuid" in option) {
    const user = option.subuid;
    if (typeof user !== "string" || user === "" || /[:\s]/.test(user)) {
      throw new InvalidArgumentError(`userns.pool.subuid must be a user name or uid, not ${JSON.stringify(user)}`, { field: FIELD });
    }
    const keys = userKeys(user, files.passwd ?? "/etc/passwd");
    return { uid: subordinatePool(files.subuid, user, keys), gid: subordinatePool(files.subgid, user, keys), delegatedTo: [...keys] };
  }
  const pool = checkPool({ start: option.start, size: option.size }, "userns.pool", true);
  return { uid: pool, gid: { ...pool } };
}

/** One held range in the table. */
export interface RangeEntry {
  /** [first host uid, count]. */
  uid: [number, number];
  /** [first host gid, count]. */
  gid: [number, number];
  /** The process that claimed it (util/owner.ts). */
  owner: string;
  namespace: string;
  id: string;
  /** The run's dir: while it exists, the run may be going, whatever its owner. */
  runDir: string;
  /**
   * Explicit maps (claimMapping): `uid`/`gid` are their spans, these the host intervals of each line, and `maps`
   * the maps themselves, which other runs with the very same maps may share (docker's userns-remap style).
   */
  uids?: [number, number][];
  gids?: [number, number][];
  maps?: string;
}

/** The host intervals an entry holds, one side. */
function held(e: RangeEntry, side: "uid" | "gid"): [number, number][] {
  return (side === "uid" ? e.uids : e.gids) ?? [e[side]];
}

export interface RangeClaim {
  uidStart: number;
  gidStart: number;
  size: number;
  /** Gives the range back. Idempotent; never throws (a failure is logged, and prune frees it once this process is gone). */
  release(): void;
}

/**
 * Where the executor keeps its table: host-wide, not in a state dir, so that executors and processes with
 * different state dirs never hand one range to two live runs. Beside the default FIFO root, ctrexec's own
 * runtime directory. (The functions below take the directory holding `userns/`, so tests can use their own.)
 */
export const HOST_RANGES_BASE = "/run/ctrexec";

interface Paths {
  dir: string;
  table: string;
  lock: string;
}

function paths(stateDir: string): Paths {
  const dir = join(stateDir, "userns");
  return { dir, table: join(dir, "ranges.json"), lock: join(dir, "lock") };
}

function corrupt(table: string, reason: string): FailedPreconditionError {
  return new FailedPreconditionError(
    `the user namespace range table ${table} is unreadable (${reason}). It may record ranges that running containers still use, so no range is ` +
      "handed out or freed until it is fixed: stop the user-namespace runs of every ctrexec using this state dir (or make sure none is left), then remove the file",
  );
}

function isRange(v: unknown): v is [number, number] {
  return Array.isArray(v) && v.length === 2 && v.every((n) => Number.isSafeInteger(n) && n >= 0) && v[1] >= 1;
}

function isEntry(v: unknown): v is RangeEntry {
  if (typeof v !== "object" || v === null) return false;
  const e = v as Record<string, unknown>;
  const ranges = (k: string) => e[k] === undefined || (Array.isArray(e[k]) && (e[k] as unknown[]).every(isRange));
  return (
    isRange(e["uid"]) &&
    isRange(e["gid"]) &&
    ["owner", "namespace", "id", "runDir"].every((k) => typeof e[k] === "string") &&
    ranges("uids") &&
    ranges("gids") &&
    (e["maps"] === undefined || typeof e["maps"] === "string")
  );
}

/**
 * The table's entries; none when there is no file. A file that cannot be read or parsed is an error, never an
 * empty table: starting over would hand a range that a live run may hold to another run (two containers with
 * the same host ids can reach each other's files and processes). Failing says so and how to fix it.
 */
function readTable(table: string): RangeEntry[] {
  let text: string;
  try {
    text = readFileSync(table, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw corrupt(table, (err as Error).message);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw corrupt(table, `not JSON: ${(err as Error).message}`);
  }
  const doc = parsed as { version?: unknown; ranges?: unknown } | null;
  if (typeof doc !== "object" || doc === null || doc.version !== 1 || !Array.isArray(doc.ranges)) throw corrupt(table, "not a version 1 range table");
  const bad = doc.ranges.findIndex((e) => !isEntry(e));
  if (bad >= 0) throw corrupt(table, `entry ${bad} is malformed`);
  return doc.ranges as RangeEntry[];
}

/** Replaces the table by a rename (a temp file beside it first): readers see the old table or the new, whole. */
function writeTable(p: Paths, entries: readonly RangeEntry[]): void {
  const tmp = `${p.table}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    writeFileSync(tmp, `${JSON.stringify({ version: 1, ranges: entries })}\n`, { mode: 0o600 });
    renameSync(tmp, p.table);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function locked<T>(p: Paths, fn: () => T): T {
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  return withFileLock(p.lock, fn);
}

interface Interval {
  start: number;
  end: number;
}

/** Sorted, overlapping or touching intervals merged: disjoint, with increasing ends. */
function merged(ranges: readonly [number, number][]): Interval[] {
  const sorted = ranges.map(([start, size]) => ({ start, end: start + size })).sort((a, b) => a.start - b.start);
  const out: Interval[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/**
 * The lowest slot i whose uid range (uid.start + i*65536) and gid range (gid.start + i*65536) overlap no held
 * range: compared as intervals, so pools that differ between executors sharing the state dir never overlap.
 */
function firstFreeSlot(pools: ResolvedPools, entries: readonly RangeEntry[]): number | undefined {
  const slots = Math.floor(Math.min(pools.uid.size, pools.gid.size) / RANGE_SIZE);
  const sides = [
    { pool: pools.uid, busy: merged(entries.flatMap((e) => held(e, "uid"))), at: 0 },
    { pool: pools.gid, busy: merged(entries.flatMap((e) => held(e, "gid"))), at: 0 },
  ];
  let i = 0;
  next: while (i < slots) {
    for (const side of sides) {
      const start = side.pool.start + i * RANGE_SIZE;
      // Slots only move up, so intervals that end at or below this one never matter again.
      while (side.at < side.busy.length && side.busy[side.at]!.end <= start) side.at++;
      const hit = side.busy[side.at];
      if (hit && hit.start < start + RANGE_SIZE) {
        i = Math.max(i + 1, Math.ceil((hit.end - side.pool.start) / RANGE_SIZE));
        continue next;
      }
    }
    return i;
  }
  return undefined;
}

function overlaps(r: [number, number], pool: RangePool): boolean {
  return r[0] < pool.start + pool.size && pool.start < r[0] + r[1];
}

function exhausted(pools: ResolvedPools, entries: readonly RangeEntry[]): FailedPreconditionError {
  const inPool = entries.filter((e) => held(e, "uid").some((r) => overlaps(r, pools.uid)) || held(e, "gid").some((r) => overlaps(r, pools.gid)));
  const dead = inPool.filter((e) => ownerAlive(e.owner) === false).length;
  const show = (p: RangePool) => `${p.start}-${p.start + p.size - 1}`;
  const slots = Math.floor(Math.min(pools.uid.size, pools.gid.size) / RANGE_SIZE);
  return new FailedPreconditionError(
    `no free user namespace range in the pool (uids ${show(pools.uid)}, gids ${show(pools.gid)}: ${slots} range(s) of 65536): ` +
      `${inPool.length - dead} held by live runs, ${dead} by runs of processes that died (ctrexec prune frees those once their containers are gone). ` +
      "Wait for runs to end, or configure a larger userns.pool",
  );
}

/**
 * Takes a free range for `run` from `pools` and records it (see the top of this file). The lowest free slot is
 * taken; a range held by a process that died is not free (its container may still run): only pruneRanges frees
 * it. Throws FailedPreconditionError when the pool is exhausted (or the table unreadable); errors.ts has no
 * RESOURCE_EXHAUSTED class, and this is not an UnavailableError, which callers read as "may have happened".
 * Call it before anything is made with the range, and give `run.runDir` as the run dir that exists while the
 * run may be going.
 */
export function claimRange(
  stateDir: string,
  pools: ResolvedPools,
  run: { namespace: string; id: string; runDir: string },
  logger: Logger,
): RangeClaim {
  return claimWith(stateDir, run, logger, (entries) => {
    const i = firstFreeSlot(pools, entries);
    if (i === undefined) throw exhausted(pools, entries);
    return { uid: [pools.uid.start + i * RANGE_SIZE, RANGE_SIZE], gid: [pools.gid.start + i * RANGE_SIZE, RANGE_SIZE] };
  });
}

/** The smallest interval of host ids that holds every line of `map`. */
function hostHull(map: readonly { hostId: number; size: number }[]): [number, number] {
  const start = Math.min(...map.map((e) => e.hostId));
  const end = Math.max(...map.map((e) => e.hostId + e.size));
  return [start, end - start];
}

/**
 * Records explicit maps of `run` like a claimed range, so that no "auto" run is given their ids while it lives;
 * refuses them (FailedPreconditionError) when they overlap ids a live run holds, unless that run has the very
 * same maps: runs may share one mapping on purpose (an executor's default maps, docker's userns-remap).
 */
export function claimMapping(
  stateDir: string,
  mapping: { uidMap: readonly { hostId: number; size: number }[]; gidMap: readonly { hostId: number; size: number }[] },
  run: { namespace: string; id: string; runDir: string },
  logger: Logger,
): RangeClaim {
  const uids = mapping.uidMap.map((e): [number, number] => [e.hostId, e.size]);
  const gids = mapping.gidMap.map((e): [number, number] => [e.hostId, e.size]);
  const maps = JSON.stringify([uids, gids]);
  return claimWith(stateDir, run, logger, (entries) => {
    const clash = entries.find(
      (e) =>
        e.maps !== maps &&
        (held(e, "uid").some((a) => uids.some((b) => intersects(a, b))) || held(e, "gid").some((a) => gids.some((b) => intersects(a, b)))),
    );
    if (clash) {
      throw new FailedPreconditionError(
        `userns: the maps' host ids overlap those of run ${clash.namespace}/${clash.id} (uids from ${clash.uid[0]}), which has other maps: two containers sharing host ids can reach each other's files and processes; choose other ids, use the very same maps on purpose, or wait for that run to end`,
      );
    }
    return { uid: hostHull(mapping.uidMap), gid: hostHull(mapping.gidMap), uids, gids, maps };
  });
}

function intersects(a: [number, number], b: [number, number]): boolean {
  return a[0] < b[0] + b[1] && b[0] < a[0] + a[1];
}

function claimWith(
  stateDir: string,
  run: { namespace: string; id: string; runDir: string },
  logger: Logger,
  pick: (entries: readonly RangeEntry[]) => Pick<RangeEntry, "uid" | "gid" | "uids" | "gids" | "maps">,
): RangeClaim {
  if (!isAbsolute(run.runDir)) throw new InvalidArgumentError(`run dir ${JSON.stringify(run.runDir)} must be an absolute path`, { field: "runDir" });
  const p = paths(stateDir);
  const owner = ownerId();
  const entry = locked(p, () => {
    const entries = readTable(p.table);
    const e: RangeEntry = { ...pick(entries), owner, namespace: run.namespace, id: run.id, runDir: run.runDir };
    writeTable(p, [...entries, e]);
    return e;
  });
  let released = false;
  return {
    uidStart: entry.uid[0],
    gidStart: entry.gid[0],
    size: entry.uid[1],
    release() {
      if (released) return;
      try {
        locked(p, () => {
          const entries = readTable(p.table);
          const rest = entries.filter(
            (e) => !(e.uid[0] === entry.uid[0] && e.gid[0] === entry.gid[0] && e.owner === owner && e.namespace === run.namespace && e.id === run.id),
          );
          if (rest.length !== entries.length) writeTable(p, rest);
        });
        released = true;
      } catch (error) {
        // Kept: a later release may succeed, and prune frees it once this process is gone.
        logger.warn("user namespace range: release failed; it stays held until released again or pruned", {
          error,
          namespace: run.namespace,
          id: run.id,
          uid: entry.uid[0],
        });
      }
    },
  };
}

/** Whether a path is certainly gone; anything but ENOENT/ENOTDIR (EACCES, EIO) counts as still there. */
function gone(path: string): boolean {
  try {
    lstatSync(path);
    return false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ENOTDIR";
  }
}

/**
 * Frees the ranges of runs that can no longer be going: their owner is dead (ownerAlive false, never merely
 * unknown) and their run dir is gone (prune removes a dead run's dir only once its task is gone). With `scope`,
 * only the entries of that containerd namespace whose id `hasTask` says has no task: what prune knows of that
 * namespace. Also removes temp files a writer that died left. Returns how many were freed; throws when the
 * table is unreadable (see readTable).
 */
export function pruneRanges(stateDir: string, logger: Logger, scope?: { namespace: string; hasTask: (id: string) => boolean }): number {
  const p = paths(stateDir);
  if (gone(p.dir)) return 0;
  return withFileLock(p.lock, () => {
    // Under the lock no write is in progress: a temp file is a dead writer's.
    for (const name of readdirSync(p.dir)) {
      if (/^ranges\.json\.[0-9a-f]{12}\.tmp$/.test(name)) rmSync(join(p.dir, name), { force: true });
    }
    const entries = readTable(p.table);
    const freed: RangeEntry[] = [];
    const rest = entries.filter((e) => {
      if (scope && (e.namespace !== scope.namespace || scope.hasTask(e.id))) return true;
      if (ownerAlive(e.owner) !== false || !gone(e.runDir)) return true;
      freed.push(e);
      return false;
    });
    if (freed.length === 0) return 0;
    writeTable(p, rest);
    for (const e of freed) {
      logger.info("prune: freed the user namespace range of a dead run", {
        namespace: e.namespace,
        id: e.id,
        uid: e.uid[0],
        gid: e.gid[0],
        owner: e.owner,
      });
    }
    return freed.length;
  });
}

/** The ranges held now (a snapshot of the table; no lock needed: it is only ever replaced whole). */
/**
 * Removes the entries `which` selects, whoever holds them: for a caller that knows their runs are over (a test
 * tearing down its own namespace). Returns how many went.
 */
export function dropRanges(stateDir: string, which: (e: RangeEntry) => boolean): number {
  const p = paths(stateDir);
  if (gone(p.table)) return 0;
  return locked(p, () => {
    const entries = readTable(p.table);
    const rest = entries.filter((e) => !which(e));
    if (rest.length !== entries.length) writeTable(p, rest);
    return entries.length - rest.length;
  });
}

export function listRanges(stateDir: string): RangeEntry[] {
  return readTable(paths(stateDir).table);
}

/** Host ids: [start, count] intervals of uids and of gids. */
export interface HostIds {
  uids: readonly [number, number][];
  gids: readonly [number, number][];
}

const ACCOUNT_FILES = { passwd: "/etc/passwd", group: "/etc/group", subuid: "/etc/subuid", subgid: "/etc/subgid" };

function readLines(file: string): string[] {
  try {
    return readFileSync(file, "utf8").split("\n");
  } catch {
    return [];
  }
}

/**
 * Host ids a run's user namespace would get must belong to no account of the host (/etc/passwd users and their
 * primary groups, /etc/group): the run's root would own that account's files. Directory services (LDAP, SSSD)
 * are not looked at: keep pools and maps out of their ranges. `field` names the option in the error.
 */
export function checkAgainstAccounts(ids: HostIds, field: string, files: { passwd: string; group: string } = ACCOUNT_FILES): void {
  const within = (n: number, ranges: readonly [number, number][]) => ranges.some(([start, size]) => n >= start && n < start + size);
  const refuse = (file: string, name: string, kind: string, n: number) =>
    new InvalidArgumentError(
      `${field}: ${file} has ${JSON.stringify(name)} with ${kind} ${n}, among the host ids a run would get: its root would own that account's files; choose ids outside the host's accounts`,
      { field },
    );
  for (const line of readLines(files.passwd)) {
    const [name, , uid, gid] = line.split(":");
    if (!name) continue;
    if (within(Number(uid), ids.uids)) throw refuse(files.passwd, name, "uid", Number(uid));
    if (within(Number(gid), ids.gids)) throw refuse(files.passwd, name, "gid", Number(gid));
  }
  for (const line of readLines(files.group)) {
    const [name, , gid] = line.split(":");
    if (name && within(Number(gid), ids.gids)) throw refuse(files.group, name, "gid", Number(gid));
  }
}

/**
 * The first range /etc/subuid or /etc/subgid delegates to a user (but the users named in `except`) that overlaps
 * `ids`: that user's own user namespaces (rootless containers, newuidmap) run as those host ids, and would share
 * them with the runs, each side able to signal the other's processes and own its files. Lines are read as
 * shadow reads them.
 */
export function delegatedOverlap(
  ids: HostIds,
  except: readonly string[] = [],
  files: { subuid: string; subgid: string } = ACCOUNT_FILES,
): { file: string; owner: string; start: number; size: number } | undefined {
  for (const [file, ranges] of [
    [files.subuid, ids.uids],
    [files.subgid, ids.gids],
  ] as const) {
    for (const line of readLines(file)) {
      const e = subidLine(line);
      if (!e || e.size === 0 || except.includes(e.owner)) continue;
      if (ranges.some(([s, n]) => e.start < s + n && s < e.start + e.size)) return { file, ...e };
    }
  }
  return undefined;
}

/** delegatedOverlap's finding as words: who has which ids in which file. */
export function describeOverlap(o: { file: string; owner: string; start: number; size: number }): string {
  return `${o.file} gives ${JSON.stringify(o.owner)} the ids ${o.start}-${o.start + o.size - 1}`;
}
