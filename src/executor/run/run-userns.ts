import { chmodSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../../errors.js";
import { openUserNamespace } from "../../fs/idmap.js";
import { checkExplicitMaps, hostRoot, type IdMapping, mapToHost, rangeMapping } from "../../oci/userns.js";
import type { ExecutorContext } from "../context.js";
import type { UsernsMode } from "../types.js";
import { checkAgainstAccounts, claimMapping, claimRange, HOST_RANGES_BASE, type RangeClaim } from "../userns-ranges.js";
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

/** Executors' pools found to hold no host account (each executor resolves its own pools object once). */
const checkedPools = new WeakSet<object>();

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
    // Once per executor, at its first "auto" run, not on every run's path (two files read).
    if (!checkedPools.has(pools)) {
      checkAgainstAccounts(
        { uids: [[pools.uid.start, pools.uid.size]], gids: [[pools.gid.start, pools.gid.size]] },
        "userns.pool",
        undefined,
        pools.delegatedTo,
      );
      checkedPools.add(pools);
    }
    return rangeMapping(pools.uid.start, pools.gid.start);
  }
  if (typeof mode !== "object" || mode === null) {
    throw new InvalidArgumentError(`userns must be "host", "auto" or { uidMap, gidMap }, not ${JSON.stringify(mode)}`, { field: "userns" });
  }
  const m = checkExplicitMaps(mode, "userns");
  const lines = (map: IdMapping["uidMap"]) => map.map((e): [number, number] => [e.hostId, e.size]);
  checkAgainstAccounts({ uids: lines(m.uidMap), gids: lines(m.gidMap) }, "userns");
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
