import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { ContainerdClient } from "../containerd/client.js";
import { deleteContainerRecord, deleteTask } from "../containerd/run-task.js";
import { jsonAny, SPEC_TYPE_URL } from "../containerd/types.js";
import { removeTree } from "../fs/remove-tree.js";
import { defaultSpec } from "../oci/defaults.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { LABEL, ownerAlive } from "./labels.js";
import { rootRegistriesDir, settleRootRegistry } from "./root-stubs.js";
import { fifoDir, readRunOwner, runsDir } from "./run-dirs.js";

export interface PruneOptions {
  client: ContainerdClient;
  stateDir: string;
  fifoRoot: string;
  logger?: Logger;
  runtime?: string;
}

/**
 * Removes what runs of dead ctrexec processes left in this namespace: their tasks (resumed, killed, deleted),
 * containers, FIFO directories, run dirs and local mounts, leases (and so active snapshots), and tasks whose
 * container record is gone but whose run dir says they were ours (reference: containerd-from-node §8), and the
 * mount stubs of roots whose last run died (these are per state dir, not per namespace). Runs whose owner is
 * alive, or lives on another host, are never touched. Returns what it removed, one line each.
 */
export async function prune(options: PruneOptions): Promise<string[]> {
  const { client } = options;
  const logger = options.logger ?? silentLogger;
  const ns = client.namespace;
  const removed: string[] = [];
  const fifos = fifoDir(options.fifoRoot, ns);
  const runs = runsDir(options.stateDir, ns);

  const containers = await client.containers.list();
  const known = new Set(containers.map((c) => c.id));
  for (const c of containers) {
    const owner = c.labels[LABEL.owner];
    if (!owner || ownerAlive(owner) !== false) continue;
    if (await deleteTask(client, c.id, logger).catch(() => false)) {
      await deleteContainerRecord(client, c.id);
      known.delete(c.id);
      removed.push(`container ${c.id}`);
    }
    const runDir = c.labels[LABEL.runDir];
    if (runDir && runDir.startsWith(runs + "/")) {
      await removeTree(runDir);
      removed.push(`run dir ${runDir}`);
    }
  }

  // Tasks without a container record (orphaned): ours if our run dir for that id has a dead owner.
  for (const t of await client.tasks.list()) {
    if (known.has(t.id)) continue;
    const owner = await readRunOwner(join(runs, t.id));
    if (!owner || ownerAlive(owner) !== false) continue;
    // containerd answers every Tasks call for an orphan with NOT_FOUND; a container record with the same id
    // makes the task reachable again.
    const spec = defaultSpec(ns, t.id);
    await client.containers.create({
      id: t.id,
      runtime: { name: options.runtime ?? "io.containerd.runc.v2" },
      spec: jsonAny(SPEC_TYPE_URL, spec),
      labels: { [LABEL.owner]: owner },
    });
    if (await deleteTask(client, t.id, logger).catch(() => false)) await deleteContainerRecord(client, t.id).catch(() => {});
    removed.push(`orphaned task ${t.id}`);
  }

  for (const id of await readdir(runs).catch(() => [] as string[])) {
    const dir = join(runs, id);
    const owner = await readRunOwner(dir);
    if (owner !== undefined && ownerAlive(owner) !== false) continue;
    if (owner === undefined && known.has(id)) continue;
    await removeTree(dir);
    removed.push(`run dir ${dir}`);
  }

  // Roots whose runs all ended without removing their mount stubs (the last one died).
  for (const name of await readdir(rootRegistriesDir(options.stateDir)).catch(() => [] as string[])) {
    const dir = join(rootRegistriesDir(options.stateDir), name);
    if (await settleRootRegistry(dir, logger)) removed.push(`mount stubs recorded in ${dir}`);
  }

  // Leases of dead owners: deleting them lets containerd's GC take the active snapshots they held.
  for (const lease of await client.leases.list().catch(() => [])) {
    const owner = lease.labels[LABEL.owner];
    if (!owner || ownerAlive(owner) !== false) continue;
    await client.leases.delete(lease.id, { sync: true }).catch((err: unknown) => logger.warn("deleting a lease failed", { lease: lease.id, error: err }));
    removed.push(`lease ${lease.id}`);
  }

  // A FIFO dir belongs to a live run while its container exists, or (the FIFOs are made while containerd
  // stores the record) while the run's dir names a live owner.
  const live = new Set((await client.containers.list()).map((c) => c.id));
  for (const name of await readdir(fifos).catch(() => [] as string[])) {
    // "<id>[.exec<16 hex>]-<12 hex>" (older versions: mkdtemp's "-XXXXXX").
    const id = name.replace(/-(?:[0-9a-f]{12}|[A-Za-z0-9]{6})$/, "").replace(/\.exec[0-9a-f]{16}$/, "");
    if (live.has(id)) continue;
    const owner = await readRunOwner(join(runs, id));
    if (owner !== undefined && ownerAlive(owner) !== false) continue;
    await rm(join(fifos, name), { recursive: true, force: true });
    removed.push(`FIFO dir ${join(fifos, name)}`);
  }
  return removed;
}
