import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import { ownerId } from "../util/owner.js";

export const LEASE_OWNER_LABEL = "ctrexec.owner";

/** Leases of ours live a day at most, so a crash cannot pin content or snapshots forever. */
const LEASE_TTL_MS = 24 * 3600 * 1000;

/** Deleting a lease is cleanup: bounded, and never on the caller's (maybe already fired) signal. */
const LEASE_DELETE_TIMEOUT_MS = 10_000;

/**
 * A new lease for work whose results containerd's GC must not take before they are referenced (an unpack, a
 * run's snapshot, a pull). The owner label lets `prune` drop the lease of a process that died, without waiting
 * for it to expire.
 */
export async function createLease(client: ContainerdClient, purpose: string): Promise<string> {
  const lease = `ctrexec-${purpose ? `${purpose}-` : ""}${randomBytes(8).toString("hex")}`;
  await client.leases.create(lease, {
    "containerd.io/gc.expire": new Date(Date.now() + LEASE_TTL_MS).toISOString(),
    [LEASE_OWNER_LABEL]: ownerId(),
  });
  return lease;
}

/** Drops a lease; what it alone held becomes garbage. Errors are the caller's to log, not to throw over another. */
export async function deleteLease(client: ContainerdClient, lease: string): Promise<void> {
  await client.leases.delete(lease, { timeoutMs: LEASE_DELETE_TIMEOUT_MS });
}
