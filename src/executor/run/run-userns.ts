import { chmodSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../../errors.js";
import { openUserNamespace } from "../../fs/idmap.js";
import { checkExplicitMaps, hostRoot, type IdMapping, mapToHost, rangeMapping } from "../../oci/userns.js";
import type { ExecutorContext } from "../context.js";
import type { UsernsMode } from "../types.js";
import {
  checkAgainstAccounts,
  claimMapping,
  claimRange,
  delegatedOverlap,
  describeOverlap,
  HOST_RANGES_BASE,
  type HostIds,
  type RangeClaim,
} from "../userns-ranges.js";
import type { RunUserNamespace } from "../userns-root.js";
import type { RunDisposal } from "./disposal.js";

/** A run's user namespace once prepared: its maps, and the namespace its idmapped mounts are made from. */
export interface PreparedUserns extends RunUserNamespace {
  mapping: IdMapping;
}

/** The mode a run asked for, or the executor's default. */
export function usernsMode(ctx: ExecutorContext, requested: UsernsMode | undefined): UsernsMode {
  return requested ?? ctx.options.userns.default;
}

/**
 * Executors' pools found to hold no host account and no user's delegated range (each executor resolves its own
 * pools object once), with the account files as they were then: a change to one (a user added) checks again.
 */
const checkedPools = new WeakMap<object, string>();

/** The four account files' identities and mtimes: what a pool's check depends on. */
function accountFilesStamp(): string {
  return ["/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid"]
    .map((f) => {
      try {
        const st = statSync(f, { bigint: true });
        return `${st.ino}:${st.mtimeNs}:${st.size}`;
      } catch {
        return "-";
      }
    })
    .join(" ");
}

/** Explicit maps already warned of, per executor (a warning per run would repeat itself). */
const warnedMaps = new WeakMap<object, Set<string>>();

/**
 * Checks the mode without side effects; returns maps the spec can be checked with (for "auto", the pool's first
 * range: the run's own is claimed later), or undefined for "host".
 */
export function checkUserns(ctx: ExecutorContext, mode: UsernsMode): IdMapping | undefined {
  if (mode === "host") return undefined;
  if (ctx.options.rootless) {
    throw new InvalidArgumentError('userns: a rootless containerd already runs every container in its user namespace; use userns "host"', {
      field: "userns",
    });
  }
  if (mode === "auto") {
    const pools = ctx.options.userns.pools;
    // At an executor's first "auto" run, and again when an account file changed: four stats per run, not four reads.
    const stamp = accountFilesStamp();
    if (checkedPools.get(pools) !== stamp) {
      const ids = { uids: [[pools.uid.start, pools.uid.size]], gids: [[pools.gid.start, pools.gid.size]] } satisfies HostIds;
      checkAgainstAccounts(ids, "userns.pool");
      // Ids ctrexec hands out itself must never be a user's: only the user whose range the pool is on purpose.
      const overlap = delegatedOverlap(ids, pools.delegatedTo);
      if (overlap) {
        throw new InvalidArgumentError(
          `userns.pool: ${describeOverlap(overlap)}, which overlap the pool's (uids ${pools.uid.start}-${pools.uid.start + pools.uid.size - 1}, gids ${pools.gid.start}-${pools.gid.start + pools.gid.size - 1}): that user's own containers would run as the same ids as these runs; give the pool ids outside every /etc/subuid and /etc/subgid range, or make it that user's (userns.pool { subuid: user })`,
          { field: "userns.pool" },
        );
      }
      checkedPools.set(pools, stamp);
    }
    return rangeMapping(pools.uid.start, pools.gid.start);
  }
  if (typeof mode !== "object" || mode === null) {
    throw new InvalidArgumentError(`userns must be "host", "auto" or { uidMap, gidMap }, not ${JSON.stringify(mode)}`, { field: "userns" });
  }
  const m = checkExplicitMaps(mode, "userns");
  const lines = (map: IdMapping["uidMap"]) => map.map((e): [number, number] => [e.hostId, e.size]);
  const ids = { uids: lines(m.uidMap), gids: lines(m.gidMap) };
  checkAgainstAccounts(ids, "userns");
  // Explicit host ids are the caller's choice, and may be a range delegated for the purpose (docker's dockremap
  // style): said, not refused.
  const overlap = delegatedOverlap(ids, ctx.options.userns.pools.delegatedTo);
  if (overlap) {
    const key = JSON.stringify([m, overlap]);
    const warned = warnedMaps.get(ctx.options) ?? new Set<string>();
    warnedMaps.set(ctx.options, warned);
    if (!warned.has(key)) {
      if (warned.size >= 256) warned.clear(); // bounded: a caller with ever new maps is warned again, not remembered
      warned.add(key);
      ctx.logger.warn(
        `userns: ${describeOverlap(overlap)}, which overlap the run's explicit maps: that user's own containers run as the same host ids as this run`,
      );
    }
  }
  return m;
}

/**
 * The run's maps ("auto": a range claimed for it, released once its task is gone) and a user namespace that
 * holds them, for its idmapped mounts; each release registered right after its acquire.
 */
export async function prepareUserns(
  ctx: ExecutorContext,
  id: string,
  mode: UsernsMode,
  runDir: string,
  disposal: RunDisposal,
  task: { readonly gone: boolean },
): Promise<PreparedUserns | undefined> {
  if (mode === "host") return undefined;
  const run = { namespace: ctx.client.namespace, id, runDir };
  // Explicit maps are recorded too, so that no "auto" run gets their ids while this one lives.
  const explicit = mode === "auto" ? undefined : checkExplicitMaps(mode, "userns");
  const claim: RangeClaim = explicit
    ? claimMapping(HOST_RANGES_BASE, explicit, run, ctx.logger)
    : claimRange(HOST_RANGES_BASE, ctx.options.userns.pools, run, ctx.logger);
  // Its ids must not go to another run while a process of this one may live: not before the task is gone, or
  // its exit was seen (its pid namespace, and every process in it, ended with it).
  disposal.defer("release user namespace range", {
    now: () => (task.gone ? claim.release() : ctx.retirements.whenOrphanGone(id, async () => claim.release())),
    background: () => claim.release(),
  });
  const mapping = explicit ?? rangeMapping(claim.uidStart, claim.gidStart, claim.size);
  openPathToRunDir(ctx.root, runDir);
  const userns = await openUserNamespace(mapping);
  disposal.defer("close user namespace", () => userns.close());
  return { mapping, userns, hostRoot: hostRoot(mapping) };
}

/** A container user's ids on the host: how files the host makes for it (its cwd) must be owned. */
export function hostIds(ns: PreparedUserns, user: { uid: number; gid: number }): { uid: number; gid: number } {
  const uid = mapToHost(ns.mapping.uidMap, user.uid);
  const gid = mapToHost(ns.mapping.gidMap, user.gid);
  if (uid === undefined || gid === undefined) {
    throw new InvalidArgumentError(`user ${user.uid}:${user.gid} is not mapped by the run's user namespace`, { field: "user" });
  }
  return { uid, gid };
}

/**
 * runc mounts the root from inside the run's user namespace, by its path: the container's root must be able to
 * search every directory on the way. The state dir's own directories down to the run dir get o+x (never r: their
 * names cannot be listed); the last step, the run's root dir, lets only the run's root group through
 * (userns-root.ts). Directories above the state dir are the host's: one without o+x is an error, not changed.
 */
export function openPathToRunDir(stateDir: string, runDir: string): void {
  for (let d = runDir; ; d = dirname(d)) {
    const mode = statSync(d).mode & 0o7777;
    if ((mode & 0o011) !== 0o011) chmodSync(d, mode | 0o011);
    if (d === stateDir || d === "/") break;
  }
  for (let d = dirname(stateDir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw new FailedPreconditionError(
        `a run in a user namespace needs the state dir ${stateDir} reachable by other users, and ${d} is not searchable by them: chmod o+x ${d}, or choose another state dir`,
      );
    }
    if (d === "/") break;
  }
}
